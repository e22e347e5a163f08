//! A full disk, mounted for real with the background cleaner running: files of mixed sizes
//! (some rewritten, so the cleaner has dead space to reclaim while the disk fills) until
//! ENOSPC. Every write either succeeds or fails with ENOSPC; everything fsync'd before stays
//! intact; unlink, rmdir, rename and truncate work on the full disk; space comes back after
//! deletes and cleaning, and can be filled again. Then unmount, fsck, remount and compare.
#![allow(clippy::unwrap_used)]

use lfs_tests::mount::*;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SIZES: [usize; 8] = [0, 1, 4096, 37_000, 300_000, 1 << 20, 2_500_000, 9_000];

fn content(id: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| {
            (k as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(id as u32) as u8
                ^ (k >> 12) as u8
        })
        .collect()
}

/// (free blocks for users, block size) from statvfs.
fn free_bytes(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs into a zeroed struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail * s.f_frsize
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Write `data` to a new file at `p` and fsync it. `Err` carries the errno.
fn write_file(p: &Path, data: &[u8]) -> Result<(), i32> {
    let mut f = std::fs::File::create(p).map_err(|e| errno(&e))?;
    for chunk in data.chunks(128 << 10) {
        f.write_all(chunk).map_err(|e| errno(&e))?;
    }
    f.sync_all().map_err(|e| errno(&e))
}

/// Fill the disk with files (kept in `files`: path -> content id, length) until writes fail
/// with ENOSPC several times in a row. Returns how many bytes the files grew by.
fn fill(dirs: &[PathBuf], files: &mut BTreeMap<PathBuf, (usize, usize)>, first_id: usize) -> u64 {
    let mut id = first_id;
    let mut enospc_in_a_row = 0;
    let before: usize = files.values().map(|&(_, l)| l).sum();
    while enospc_in_a_row < 4 {
        id += 1;
        let len = SIZES[id % SIZES.len()];
        let dir = &dirs[id % dirs.len()];
        // Every fifth file rewrites an earlier one: dead blocks for the cleaner.
        let p = if id.is_multiple_of(5) && !files.is_empty() {
            files.keys().nth(id % files.len()).unwrap().clone()
        } else {
            dir.join(format!("f{id}"))
        };
        match write_file(&p, &content(id, len)) {
            Ok(()) => {
                enospc_in_a_row = 0;
                files.insert(p, (id, len));
            }
            Err(libc::ENOSPC) => {
                enospc_in_a_row += 1;
                // Whatever the file holds now is not known: drop it (unlink must work).
                files.remove(&p);
                if let Err(e) = std::fs::remove_file(&p) {
                    assert_eq!(
                        errno(&e),
                        libc::ENOENT,
                        "unlink {} on a full disk: {e}",
                        p.display()
                    );
                }
            }
            Err(e) => panic!("writing {}: errno {e}, not ENOSPC", p.display()),
        }
        assert!(id < first_id + 100_000, "the disk never filled");
    }
    let after: usize = files.values().map(|&(_, l)| l).sum();
    after.saturating_sub(before) as u64
}

fn verify(files: &BTreeMap<PathBuf, (usize, usize)>) {
    for (p, &(id, len)) in files {
        let got = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            got == content(id, len),
            "{} changed ({} bytes, expected {len})",
            p.display(),
            got.len()
        );
    }
}

#[test]
fn full_disk_with_the_cleaner_running() {
    let (_d, img, mnt) = setup("64M");
    // The cleaner starts early and stops late, so it works while the disk fills.
    let m = Mounted::new(&img, &mnt, &["-o", "gc_low=20,gc_high=40,gc_segments=4"]);
    let dirs: Vec<PathBuf> = (0..3).map(|i| mnt.join(format!("d{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let avail0 = free_bytes(&mnt);
    let mut files = BTreeMap::new();
    let stored = fill(&dirs, &mut files, 0);
    verify(&files);
    let free_full = free_bytes(&mnt);
    eprintln!("empty: df {avail0} bytes free; filled {stored} bytes; then df {free_full}");
    // df was honest: what it said was free could be written (a little goes to metadata).
    assert!(
        stored as f64 >= 0.9 * avail0 as f64,
        "df said {avail0} bytes free, {stored} fit"
    );

    // On the full disk: rename, truncate, unlink, rmdir.
    let (big, &(big_id, big_len)) = files.iter().find(|(_, &(_, l))| l >= 1 << 20).unwrap();
    let big = big.clone();
    let moved = dirs[0].join("renamed-on-a-full-disk");
    std::fs::rename(&big, &moved).unwrap();
    files.remove(&big);
    let half = big_len / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&moved)
        .unwrap()
        .set_len(half as u64)
        .unwrap();
    let mut want = content(big_id, big_len);
    want.truncate(half);
    assert_eq!(
        std::fs::read(&moved).unwrap(),
        want,
        "truncate on a full disk"
    );
    std::fs::remove_file(&moved).unwrap();
    // Empty one directory and remove it, then every other file.
    let mut deleted = big_len as u64;
    let victim_dir = dirs[2].clone();
    for e in std::fs::read_dir(&victim_dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::remove_file(&p).unwrap();
        deleted += files.remove(&p).map_or(0, |(_, l)| l as u64);
    }
    std::fs::remove_dir(&victim_dir).unwrap();
    let gone: Vec<PathBuf> = files.keys().step_by(2).cloned().collect();
    for p in &gone {
        std::fs::remove_file(p).unwrap();
        deleted += files.remove(p).map_or(0, |(_, l)| l as u64);
    }
    verify(&files);
    // Give the background cleaner a moment; df must show the space as free either way.
    std::thread::sleep(Duration::from_secs(2));
    let avail1 = free_bytes(&mnt);
    // Space comes back: what df now says is free can be written again (by cleaning).
    let again = fill(&dirs[..2], &mut files, 1_000_000);
    eprintln!("deleted {deleted} bytes: df {avail1} bytes free; filled {again} bytes");
    assert!(
        again as f64 >= 0.9 * deleted as f64,
        "deleted {deleted} bytes, only {again} fit again"
    );
    assert!(
        avail1 as f64 >= 0.8 * deleted as f64,
        "deleted {deleted} bytes, df says only {avail1} free"
    );
    assert!(
        again as f64 >= 0.9 * avail1 as f64,
        "df said {avail1} bytes free, {again} fit"
    );
    verify(&files);
    m.stop();

    let m = Mounted::new(&img, &mnt, &[]);
    verify(&files);
    m.stop();
}
