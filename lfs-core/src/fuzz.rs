//! Entry points for the fuzz targets in `fuzz/` and for the stable replay of their corpus
//! (`lfs-core/tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must neither panic nor
//! hang; what the decoders and the mount answer is not judged here (the corruption sweep
//! does that), only that they answer.
#![doc(hidden)]

use crate::device::{Device, MemDevice};
use crate::format::checkpoint::Checkpoint;
use crate::format::dir::decode_dir_block;
use crate::format::indirect::decode_indirect;
use crate::format::inode::{decode_inode_block, FileKind};
use crate::format::summary::{self, Summary};
use crate::format::superblock::{LayoutRequest, Superblock};
use crate::format::table::{decode_imap_block, decode_usage_block};
use crate::format::xattr::decode_xattrs;
use crate::format::{seal, BLOCK_SIZE};
use crate::fs::Creds;
use crate::fsck::{fsck, FsckOptions, Mode};
use crate::{mkfs, Fs, MkfsOptions, MountOptions};
use std::sync::{Arc, OnceLock};

/// One block of `data` (zero-padded), its checksum made valid when `reseal`.
fn block_of(data: &[u8], reseal: bool) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE];
    let n = data.len().min(BLOCK_SIZE);
    b[..n].copy_from_slice(&data[..n]);
    if reseal {
        seal(&mut b);
    }
    b
}

/// Every decoder of a format version 2 structure (docs/FORMAT-V2.md). The first byte picks
/// the decoder and whether the checksum the referrer would hold is taken from the block
/// itself (so the fuzzer gets past it); the next byte gives a height or block index.
pub fn decode_v2(data: &[u8]) {
    use crate::format::v2::Expect;
    use crate::format::v2::{block_crc, checkpoint, cpfile, dat, ptr, root, sufile, summary};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&arg, rest)) = rest.split_first() else {
        return;
    };
    let own_crc = sel & 0x80 != 0;
    let mut b = vec![0u8; BLOCK_SIZE];
    let n = rest.len().min(BLOCK_SIZE);
    b[..n].copy_from_slice(&rest[..n]);
    let crc = if own_crc {
        block_crc(&b)
    } else {
        u32::from_le_bytes([arg, arg, 0, 0])
    };
    match sel % 6 {
        0 | 1 => {
            let magic = if sel % 6 == 0 {
                dat::MAGIC_NODE
            } else {
                sufile::MAGIC_NODE
            };
            let e = Expect {
                crc,
                height: arg % 6,
                index: crate::format::get_u64(&b, 8),
            };
            drop(ptr::RadixNode::decode(&b, "node", magic, &e));
        }
        2 => drop(dat::DatLeaf::decode(&b, u64::from(arg), crc)),
        3 => drop(sufile::SufileLeaf::decode(
            &b,
            u64::from(arg) % 4,
            crc,
            300,
            256,
        )),
        4 => drop(cpfile::decode_block(&b, u64::from(arg))),
        7 => drop(root::GroupRoot::decode(&b)),
        sel => {
            if own_crc {
                crate::format::seal(&mut b);
            }
            if sel == 5 {
                drop(summary::Summary::decode(&b));
            } else {
                let base = crate::format::BlockAddr(256);
                drop(checkpoint::Checkpoint::decode(&b, arg % 9, 100, 256, base));
            }
        }
    }
}

fn small_superblock() -> &'static Superblock {
    static SB: OnceLock<Superblock> = OnceLock::new();
    SB.get_or_init(|| {
        Superblock::layout(&LayoutRequest {
            total_bytes: 8 << 20,
            seg_bytes: 256 << 10,
            bytes_per_inode: 16 << 10,
            label: String::new(),
            uuid: [7; 16],
            created_ns: 1,
        })
        .unwrap_or_else(|e| panic!("the fuzz layout is valid: {e}"))
    })
}

/// Every decoder of an on-disk structure. The first byte picks the decoder (and whether the
/// block's checksum is made valid, so the fuzzer gets past it); the rest is the block.
pub fn decode(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let reseal = sel & 0x80 != 0;
    let arg = (sel >> 4) & 0x7;
    let b = block_of(rest, reseal);
    match sel % 10 {
        0 => drop(Superblock::decode(&b)),
        1 => {
            let _ = summary::peek(&b);
            drop(Summary::decode(&b));
        }
        2 => drop(decode_inode_block(&b)),
        3 => drop(decode_indirect(&b, arg % 5)),
        4 => drop(decode_dir_block(&b)),
        5 => drop(decode_imap_block(&b, u32::from(arg))),
        6 => drop(decode_usage_block(&b, u32::from(arg), 256 << 10)),
        7 => drop(decode_xattrs(&b)),
        _ => {
            // A whole checkpoint region: the input's blocks in turn, each resealed if asked.
            let sb = small_superblock();
            let n = sb.cp_blocks as usize;
            let mut region = Vec::with_capacity(n * BLOCK_SIZE);
            for i in 0..n {
                let from = (i * BLOCK_SIZE).min(rest.len());
                region.extend(block_of(&rest[from..], reseal));
            }
            drop(Checkpoint::decode(&region, sb));
        }
    }
}

const ROOT: crate::format::Ino = crate::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

/// A small populated image (8 MiB, 256 KiB segments) with a log tail after its checkpoint:
/// files small and large, a directory, a symlink, a hard link, xattrs, deleted data.
pub fn template_image() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let dev = Arc::new(MemDevice::new(8 << 20));
        let d: Arc<dyn Device> = dev.clone();
        let opts = MkfsOptions {
            seg_bytes: 256 << 10,
            ..Default::default()
        };
        let build = || -> crate::Result<()> {
            mkfs(d.clone(), &opts)?;
            let fs = Fs::mount(d.clone(), MountOptions::default())?;
            let dir = fs.mkdir(ROOT, b"dir", 0o755, C)?.ino;
            for i in 0..12u32 {
                let f = fs.create(dir, format!("f{i}").as_bytes(), 0o644, C)?.ino;
                fs.write(f, 0, &vec![i as u8; (i as usize) * 700])?;
            }
            let big = fs.create(ROOT, b"big", 0o644, C)?.ino;
            fs.write(big, 0, &vec![0x42; 300_000])?;
            fs.write(big, 5 << 20, b"far")?;
            fs.symlink(ROOT, b"ln", b"dir/f1", C)?;
            fs.link(big, dir, b"hard")?;
            fs.setxattr(big, b"user.k", b"value", 0)?;
            fs.unmount()?;
            let fs = Fs::mount(d.clone(), MountOptions::default())?;
            let late = fs.create(ROOT, b"late", 0o644, C)?.ino;
            fs.write(late, 0, &[0x6c; 9000])?;
            fs.unlink(dir, b"f3")?;
            fs.fsync(late, false)?;
            drop(fs);
            Ok(())
        };
        build().unwrap_or_else(|e| panic!("the fuzz template builds: {e}"));
        dev.image()
    })
}

/// The template image patched by `data`, then mounted read-only, walked (every directory,
/// attribute, link, xattr, and up to 64 KiB of each file), and checked by fsck. `data` is a
/// list of patches: block (u16, little-endian, modulo the image), offset in the block (u16),
/// length (u8, the bytes follow), flags (u8: bit 0 makes the block's checksum valid).
/// The template image with the patches `data` describes: records of (block u16, offset u16,
/// length u8, flags u8, bytes), flag bit 0 resealing the block's checksum afterwards.
fn patched_image(data: &[u8]) -> Vec<u8> {
    let mut img = template_image().to_vec();
    let blocks = img.len() / BLOCK_SIZE;
    let mut rest = data;
    while rest.len() >= 6 {
        let block = u16::from_le_bytes([rest[0], rest[1]]) as usize % blocks;
        let off = u16::from_le_bytes([rest[2], rest[3]]) as usize % BLOCK_SIZE;
        let len = rest[4] as usize;
        let flags = rest[5];
        rest = &rest[6..];
        let bytes = &rest[..len.min(rest.len())];
        rest = &rest[bytes.len()..];
        let b = &mut img[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE];
        let end = (off + bytes.len()).min(BLOCK_SIZE);
        b[off..end].copy_from_slice(&bytes[..end - off]);
        if flags & 1 != 0 {
            seal(b);
        }
    }
    img
}

fn fsck_check(dev: Arc<MemDevice>) {
    drop(fsck(
        dev,
        FsckOptions {
            mode: Mode::Check,
            force: true,
        },
    ));
}

pub fn mount_walk_fsck(data: &[u8]) {
    let dev = Arc::new(MemDevice::from_image(patched_image(data)));
    walk_read_only(dev.clone());
    fsck_check(dev);
}

/// The patched image mounted read-write: walked, then changed the ways that read and
/// rewrite damaged metadata (overwrites and extensions through the block map, truncate,
/// unlink, rename, xattrs, mkdir/rmdir), a cleaning pass over the emptiest segments, a
/// checkpoint and an unmount; then fsck, and a read-only mount walked again. Errors are
/// expected; a panic, a hang or an allocation the size of a damaged field is the bug.
pub fn mount_write_fsck(data: &[u8]) {
    let dev = Arc::new(MemDevice::from_image(patched_image(data)));
    let rw = MountOptions {
        cache_blocks: 64,
        ..Default::default()
    };
    if let Ok(fs) = Fs::mount(dev.clone(), rw) {
        walk(&fs);
        change(&fs);
        let _ = fs.unmount();
    }
    fsck_check(dev.clone());
    walk_read_only(dev);
}

/// Mount read-only (if it mounts at all) and walk.
fn walk_read_only(dev: Arc<MemDevice>) {
    let ro = MountOptions {
        read_only: true,
        cache_blocks: 64,
        ..Default::default()
    };
    if let Ok(fs) = Fs::mount(dev, ro) {
        walk(&fs);
    }
}

fn change(fs: &Fs) {
    if let Ok(n) = fs.create(ROOT, b"new", 0o644, C) {
        let _ = fs.write(n.ino, 0, &[0x4e; 5000]);
        let _ = fs.fsync(n.ino, false);
    }
    if let Ok(big) = fs.lookup(ROOT, b"big") {
        let _ = fs.write(big.ino, 3 * 4096, &[1; 4096]);
        let _ = fs.write(big.ino, 2 << 20, &[2; 100]);
        let _ = fs.setxattr(big.ino, b"user.k", &[3; 600], 0);
        let _ = fs.setattr(
            big.ino,
            &crate::fs::SetAttr {
                size: Some(100_000),
                ..Default::default()
            },
        );
    }
    if let Ok(dir) = fs.lookup(ROOT, b"dir") {
        let _ = fs.unlink(dir.ino, b"f1");
        let _ = fs.rename(dir.ino, b"f2", ROOT, b"moved", 0);
        let _ = fs.unlink(dir.ino, b"hard");
    }
    if let Ok(late) = fs.lookup(ROOT, b"late") {
        let _ = fs.removexattr(late.ino, b"user.none");
        let _ = fs.write(late.ino, 8000, &[5; 3000]);
    }
    if fs.mkdir(ROOT, b"d2", 0o755, C).is_ok() {
        let _ = fs.rmdir(ROOT, b"d2");
    }
    let _ = fs.unlink(ROOT, b"ln");
    let mut views = fs.segment_views();
    views.sort_by_key(|v| (v.live_bytes, v.segment));
    let victims: Vec<_> = views.iter().take(4).map(|v| v.segment).collect();
    let _ = fs.clean(&victims);
    let _ = fs.checkpoint();
}

/// Touch everything reachable, bounded (a damaged tree may loop or claim huge sizes).
fn walk(fs: &Fs) {
    let mut todo = vec![ROOT];
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir) || seen.len() > 500 {
            continue;
        }
        let mut cookie = 0;
        for _ in 0..64 {
            let Ok(ents) = fs.readdir(dir, cookie, 64) else {
                break;
            };
            let Some(last) = ents.last() else { break };
            if last.cookie <= cookie {
                break;
            }
            cookie = last.cookie;
            for e in ents {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let _ = fs.lookup(dir, &e.name);
                let Ok(a) = fs.getattr(e.ino) else { continue };
                if let Ok(names) = fs.listxattr(e.ino) {
                    for n in names.iter().take(64) {
                        let _ = fs.getxattr(e.ino, n);
                    }
                }
                match a.kind {
                    FileKind::Directory => todo.push(e.ino),
                    FileKind::Symlink => drop(fs.readlink(e.ino)),
                    FileKind::Regular => {
                        let _ = fs.read(e.ino, 0, 64 << 10);
                        let _ = fs.read(e.ino, a.size.saturating_sub(4096), 4096);
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = fs.statfs();
}
