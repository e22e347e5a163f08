#!/usr/bin/env python3
"""The module graph of lfs-core, checked: no layer reaches upward, no cycle among files.

Reads every `use` and every inline `crate::`/`super::` path in lfs-core/src, resolves it to
the file (module) it names, and checks two rules:

1. Layers. Each top-level module has a rank (LAYERS below, bottom first); a file may name
   only modules of its own top-level module or of lower ranks.
2. No cycles among files, the files of one layer included (test modules excluded: a
   `#[cfg(test)] mod tests` may use anything of its parent).

  scripts/module-graph.py           check; exit 1 and say why on a violation
  scripts/module-graph.py --dot     print the file graph in Graphviz dot
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lfs-core", "src")

# Bottom first. A module may use those before it, never those after it.
LAYERS = [
    ["format"],          # pure encode/decode of the on-disk structures
    ["dirty", "cli"],    # a dirty-set; what every tool's main shares
    ["device"],          # the one narrow trait under everything
    ["cache"],           # the block cache, read through to a device
    ["error"],           # the error types (they carry FormatError)
    ["usage", "imap", "ifile"],  # the segment usage table, the inode map; v2's inode table
    ["dir", "bmap", "radix", "replay"],  # a directory's contents, one inode's block map, the paged radix tree of the DAT and sufile
    ["vdat", "vsufile", "vscan"],  # v2's DAT, segment table, and the reader of one stream
    ["writer"],          # the back-end thread that writes segments
    ["log"],             # the segment buffer and write units
    ["vlog"],            # v2's writer of streams and flush groups
    ["vstore"],          # v2's store: log, DAT, segment table, cache, writer
    ["vrecover", "vcheck", "vinodes"],  # v2's roll-forward into the store; fsck's check of its maps; the inode table over the ifile
    ["vmount"],          # v2's mkfs, mount and checkpoint
    ["vrebuild"],        # v2's maps rebuilt from the log (fsck's repair)
    ["fs"],              # the filesystem: state by layer, operations, Fs
    ["fsck"],            # the checker, over fs
    ["fuzz"],            # fuzz entry points (feature `testing`), over everything
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def files():
    for d, _, names in os.walk(ROOT):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(d, n)


def strip_tests(src):
    """Drop `#[cfg(test)] mod x { ... }` blocks (brace-matched)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(#\[[^\]]*\]\s*)*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        depth, j = 1, m.end()
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        i = j
    out.append(src[i:])
    return "".join(out)


def strip_comments(src):
    src = re.sub(r"//[^\n]*", "", src)
    return re.sub(r'"(\\.|[^"\\])*"', '""', src)


def use_tree(tree):
    """Flatten a use tree (`a::{b, c::{d}}`) into its paths."""
    tree = tree.strip()
    depth, brace = 0, -1
    for i, ch in enumerate(tree):
        if ch == "{" and depth == 0:
            brace = i
            break
    if brace < 0:
        return [tree.split(" as ")[0].strip().split("::")]
    prefix = [p for p in tree[:brace].split("::") if p]
    inner, depth, parts, cur = tree[brace + 1 : tree.rindex("}")], 0, [], ""
    for ch in inner:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip() == "self":
            out.append(prefix)
        elif part.strip():
            out.extend(prefix + sub for sub in use_tree(part))
    return out


def paths(src, children):
    """Every path into this crate: use trees flattened, and inline crate::/super:: paths. A
    use path that starts with a child module's name is relative to this module (`self::`)."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", src):
        for p in use_tree(m.group(1)):
            if p and p[0] in ("crate", "super", "self"):
                found.append(p)
            elif p and p[0] in children:
                found.append(["self"] + p)
    body = re.sub(r"\buse\s+[^;]+;", "", src)
    for m in re.finditer(r"\b((?:crate|super)(?:::(?:super|\w+))+)", body):
        found.append(m.group(1).split("::"))
    return found


def resolve(mod, path, modules):
    """The longest module prefix `path` names, from file module `mod`."""
    if path[0] == "crate":
        cur, rest = (), path[1:]
    elif path[0] == "self":
        cur, rest = mod, path[1:]
    else:
        cur, rest = mod, path
        while rest and rest[0] == "super":
            cur, rest = cur[:-1], rest[1:]
    target = cur
    for p in rest:
        if target + (p,) in modules:
            target = target + (p,)
        else:
            break
    return target


def main():
    modules = {}
    for f in files():
        modules[module_of(f)] = f
    edges = {}
    for mod, f in modules.items():
        src = strip_tests(strip_comments(open(f, encoding="utf-8").read()))
        children = {m[-1] for m in modules if len(m) == len(mod) + 1 and m[: len(mod)] == mod}
        for p in paths(src, children):
            t = resolve(mod, p, modules)
            # An item of an ancestor (its mod.rs) is an edge to that file too; the crate
            # root (lib.rs) only declares and re-exports.
            if mod and t and t != mod:
                edges.setdefault(mod, set()).add(t)
    if "--dot" in sys.argv:
        print("digraph lfs_core {")
        for a, bs in sorted(edges.items()):
            for b in sorted(bs):
                print(f'  "{"::".join(a)}" -> "{"::".join(b)}";')
        print("}")
        return 0
    bad = []
    for a, bs in edges.items():
        for b in bs:
            ra, rb = RANK.get(a[0]), RANK.get(b[0])
            if ra is None or rb is None:
                bad.append(f"{'::'.join(a)}: layer of {a[0] if ra is None else b[0]} not declared")
            elif a[0] != b[0] and rb > ra:
                bad.append(f"{'::'.join(a)} reaches upward to {'::'.join(b)}")
    # Cycles (Tarjan's strongly connected components).
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(modules):
        if v not in index:
            visit(v)
    for c in sccs:
        names = sorted("::".join(m) or "lib" for m in c)
        bad.append("cycle among " + ", ".join(names))
    nedges = sum(len(b) for b in edges.values())
    if bad:
        for b in sorted(bad):
            print("module-graph:", b, file=sys.stderr)
        return 1
    print(f"module graph: {len(modules)} modules, {nedges} edges, no upward reach, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
