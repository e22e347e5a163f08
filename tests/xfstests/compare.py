#!/usr/bin/env python3
"""Compare two xfstests campaigns: which tests pass on the peer (ext4) but not on lfs-fuse.

Usage: compare.py LFS_LOG EXT4_LOG [EXPECTED]
The logs are check's output (scripts/xfstests.sh writes them as $W/lfs.log and $W/ext4.log).
Prints every generic/shared test that passed on the peer and did not pass here, with how it
ended here and, from EXPECTED (tests/xfstests/expected-failures.txt by default), the reason
on record. Exit status 1 if any such test has no reason on record, else 0.
"""
import os
import re
import sys


def outcomes(path):
    text = open(path).read()

    def listed(word):
        m = re.findall(rf"^{word}: (.*)$", text, re.M)
        return set(m[-1].split()) if m else set()

    ran, notrun, failed = listed("Ran"), listed("Not run"), listed("Failures")
    out = {}
    for t in ran:
        out[t] = "failed" if t in failed else "not run" if t in notrun else "passed"
    return out


def reasons(path):
    """Test name -> the first line of its entry."""
    r = {}
    name = None
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^((?:generic|shared)/\d+)\s+(.*)$", line)
        if m:
            name = m.group(1)
            r[name] = m.group(2).strip()
        elif name:
            r[name] += " " + line.strip()
    return r


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    here = os.path.dirname(os.path.abspath(__file__))
    lfs, ext4 = outcomes(sys.argv[1]), outcomes(sys.argv[2])
    why = reasons(sys.argv[3] if len(sys.argv) > 3 else os.path.join(here, "expected-failures.txt"))
    gap = sorted(t for t, o in ext4.items()
                 if o == "passed" and lfs.get(t) != "passed" and not t.startswith("ext4/"))
    both = sum(1 for t, o in ext4.items() if o == "passed" and lfs.get(t) == "passed")
    extra = sorted(t for t, o in lfs.items() if o == "passed" and ext4.get(t) != "passed")
    unexplained = 0
    for t in gap:
        reason = why.get(t)
        unexplained += reason is None
        print(f"{t:14} {lfs.get(t, 'absent'):8} {reason or 'NO REASON ON RECORD'}")
    for name, o in (("lfs-fuse", lfs), ("ext4", ext4)):
        generic = [v for t, v in o.items() if not t.startswith("ext4/")]
        print(f"{name}: {generic.count('passed')} passed, {generic.count('failed')} failed, "
              f"{generic.count('not run')} not run (of {len(generic)} generic and shared tests)")
    print(f"passed on both: {both}; on ext4 only: {len(gap)} ({unexplained} without a reason); "
          f"on lfs only: {len(extra)} ({' '.join(extra)})")
    sys.exit(1 if unexplained else 0)


main()
