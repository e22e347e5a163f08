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
fn decode_v2_corpus() {
    let n = replay("decode_v2", lfs_core::fuzz::decode_v2);
    eprintln!("decode_v2: {n} inputs");
    assert!(n > 0, "no corpus for the decode_v2 target");
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

/// Writes the seed inputs of the decode_v2 target (one valid block of each structure, with
/// the selector that takes its checksum from the block): run with `-- --ignored` after a
/// version 2 layout changes, then `cargo fuzz cmin decode_v2`.
#[test]
#[ignore]
fn write_decode_v2_seeds() {
    use lfs_core::format::v2::{checkpoint, cpfile, dat, ptr, root, sufile, summary};
    use lfs_core::format::{BlockAddr, Cno, Ino, SegNo, VBlock};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_v2");
    std::fs::create_dir_all(&dir).unwrap();
    let mut node = ptr::RadixNode::empty(1, 0);
    node.ptrs[3] = ptr::PhysPtr {
        addr: BlockAddr(900),
        crc: 5,
        free: 2,
    };
    let mut leaf = dat::DatLeaf::empty(4);
    leaf.entries[1] = dat::DatEntry {
        addr: BlockAddr(77),
        addr2: BlockAddr::NONE,
        start: Cno(2),
        end: Cno::CURRENT,
        crc: 9,
        flags: 0,
    };
    let mut su = sufile::SufileLeaf::empty(1);
    su.entries[0] = sufile::SegUsage {
        write_time_ns: 1,
        live: 10,
        held: 0,
        state: sufile::SEG_IN_USE,
        stream: 1,
        held_from: 0,
        held_until: 0,
    };
    let mut cps = vec![cpfile::CpEntry::unused(); cpfile::ENTRIES_PER_BLOCK];
    cps[1] = cpfile::CpEntry {
        cno: Cno(17),
        flags: cpfile::CP_SNAPSHOT,
        created_ns: 5,
        nblocks_written: 1,
        ninodes: 2,
        name: "seed".into(),
        ifile_inode: vec![1; cpfile::INODE_BYTES],
        recovered_log_id: 0,
        recovered_seq: 0,
    };
    let sum = summary::Summary {
        flags: summary::FLAG_ROOT,
        seq: 1,
        stream_seq: 1,
        stream: 0,
        log_id: 1,
        segment: SegNo(0),
        offset: 0,
        next_segment: SegNo(1),
        timestamp_ns: 1,
        era: Cno(1),
        fs_id: 1,
        data_crc: 0,
        entries: vec![
            summary::Entry {
                kind: summary::Kind::Data,
                height: 0,
                flags: 0,
                crc: 1,
                generation: 1,
                ino: Ino(16),
                index: 0,
                vblock: VBlock(1),
                start: Cno(1),
            },
            summary::Entry {
                kind: summary::Kind::GroupRoot,
                height: 0,
                flags: 0,
                crc: 2,
                generation: 0,
                ino: Ino(0),
                index: 0,
                vblock: VBlock::NONE,
                start: Cno(0),
            },
        ],
    };
    let cp = checkpoint::Checkpoint {
        flags: 0,
        generation: 3,
        cno: Cno(2),
        timestamp_ns: 1,
        next_seq: 10,
        log_id: 5,
        next_vblock: 100,
        nclean: 90,
        ninodes: 2,
        nblocks_live: 12,
        nblocks_held: 0,
        heads: (0..4)
            .map(|i| checkpoint::Head {
                segment: SegNo(i),
                offset: 1,
                stream_seq: 1,
            })
            .collect(),
        dat_root: ptr::PhysPtr {
            addr: BlockAddr(300),
            crc: 1,
            free: 3,
        },
        dat_height: 1,
        sufile_root: ptr::PhysPtr::default(),
        sufile_height: 0,
        cpfile_inode: vec![0; checkpoint::INODE_BYTES],
        ifile_inode: vec![0; checkpoint::INODE_BYTES],
    };
    let group_root = root::GroupRoot {
        seq_first: 10,
        seq_last: 11,
        era: Cno(3),
        next_vblock: 104,
        cont: 0,
        ifile_inode: vec![0; root::INODE_BYTES],
        cpfile_inode: vec![0; root::INODE_BYTES],
        ended: vec![(VBlock(7), Cno(3))],
        freed: vec![VBlock(8)],
    };
    let seeds: [(&str, u8, u8, Vec<u8>); 8] = [
        ("dat-node", 0x80, 1, node.encode(dat::MAGIC_NODE)),
        ("sufile-node", 0x81, 1, node.encode(sufile::MAGIC_NODE)),
        ("dat-leaf", 0x82, 4, leaf.encode()),
        ("sufile-leaf", 0x83, 1, su.encode()),
        ("cpfile", 0x84, 2, cpfile::encode_block(&cps)),
        ("summary", 0x85, 0, sum.encode()),
        ("checkpoint", 0x86, 4, cp.encode()),
        ("group-root", 0x87, 0, group_root.encode()),
    ];
    for (name, sel, arg, block) in seeds {
        let mut data = vec![sel, arg];
        data.extend_from_slice(&block);
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}
