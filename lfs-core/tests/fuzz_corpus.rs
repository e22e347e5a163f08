//! The fuzz corpus, replayed on stable Rust in the test suite: every input committed under
//! fuzz/corpus/<target>/ (kept small: `cargo fuzz cmin`) and every crash the fuzzers found,
//! frozen under fuzz/regressions/<target>/, goes through the same entry point the fuzz
//! target calls (lfs_core::fuzz). A panic fails the test naming the file.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for p in files {
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{} panicked", p.display());
            n += 1;
        }
    }
    n
}

#[test]
fn decode_corpus() {
    let n = replay("decode", lfs_core::fuzz::decode);
    eprintln!("decode: {n} inputs");
    assert!(n > 0, "no corpus for the decode target");
}

#[test]
fn mount_corpus() {
    let n = replay("mount", lfs_core::fuzz::mount_walk_fsck);
    eprintln!("mount: {n} inputs");
    assert!(n > 0, "no corpus for the mount target");
}

#[test]
fn mount_rw_corpus() {
    let n = replay("mount_rw", lfs_core::fuzz::mount_write_fsck);
    eprintln!("mount_rw: {n} inputs");
    assert!(n > 0, "no corpus for the mount_rw target");
}
