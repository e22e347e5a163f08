//! What the engine's integration tests share: a bounded walk of the whole tree (what a
//! user would see), devices from images, a small seeded generator, a per-case watchdog.
#![allow(dead_code, clippy::unwrap_used)]

use lfs_core::device::MemDevice;
use lfs_core::format::inode::FileKind;
use lfs_core::format::Ino;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use std::collections::{BTreeMap, HashSet};
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
/// Reading stops here in a file (a damaged size may claim terabytes of holes).
pub const READ_LIMIT: u64 = 4 << 20;

/// What a walk saw at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { size: u64, hash: u64 },
    Link(Vec<u8>),
    Other(FileKind),
}

/// Extended attributes of a path: (name, value).
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, (Node, Xattrs)>,
    pub errors: Vec<String>,
}

pub fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

/// Every path from the root with what it holds; errors are collected, not fatal. Bounded:
/// a damaged directory may loop back or claim millions of entries.
pub fn walk(fs: &Fs) -> Tree {
    let mut t = Tree::default();
    let mut seen = HashSet::new();
    let mut todo = vec![(Vec::new(), ROOT)];
    while let Some((path, dir)) = todo.pop() {
        if !seen.insert(dir) || seen.len() > 5000 {
            continue;
        }
        let mut cookie = 0;
        loop {
            let ents = match fs.readdir(dir, cookie, 128) {
                Ok(e) => e,
                Err(e) => {
                    t.errors.push(format!("readdir {dir}: {e}"));
                    break;
                }
            };
            let Some(last) = ents.last() else { break };
            if last.cookie <= cookie {
                t.errors.push(format!("readdir {dir}: cookie went back"));
                break;
            }
            cookie = last.cookie;
            for e in ents {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                let node = match node_of(fs, e.ino, &mut t.errors) {
                    Some(n) => n,
                    None => continue,
                };
                if node == Node::Dir {
                    todo.push((p.clone(), e.ino));
                }
                let mut xattrs = Vec::new();
                match fs.listxattr(e.ino) {
                    Ok(names) => {
                        for n in names {
                            match fs.getxattr(e.ino, &n) {
                                Ok(v) => xattrs.push((n, v)),
                                Err(err) => t.errors.push(format!("getxattr {}: {err}", e.ino)),
                            }
                        }
                    }
                    Err(err) => t.errors.push(format!("listxattr {}: {err}", e.ino)),
                }
                t.nodes.insert(p, (node, xattrs));
            }
        }
    }
    t
}

pub fn node_of(fs: &Fs, ino: Ino, errors: &mut Vec<String>) -> Option<Node> {
    let a = match fs.getattr(ino) {
        Ok(a) => a,
        Err(e) => {
            errors.push(format!("getattr {ino}: {e}"));
            return None;
        }
    };
    Some(match a.kind {
        FileKind::Directory => Node::Dir,
        FileKind::Symlink => match fs.readlink(ino) {
            Ok(t) => Node::Link(t),
            Err(e) => {
                errors.push(format!("readlink {ino}: {e}"));
                return None;
            }
        },
        FileKind::Regular => {
            let mut hash = 0xcbf2_9ce4_8422_2325;
            let mut off = 0;
            while off < a.size.min(READ_LIMIT) {
                match fs.read(ino, off, 1 << 20) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => {
                        fnv(&mut hash, &b);
                        off += b.len() as u64;
                    }
                    Err(e) => {
                        errors.push(format!("read {ino} at {off}: {e}"));
                        break;
                    }
                }
            }
            Node::File { size: a.size, hash }
        }
        k => Node::Other(k),
    })
}

/// A fresh filesystem of `bytes` in memory, with small (256 KiB) segments so that a small
/// image has many.
pub fn formatted(bytes: u64) -> Arc<MemDevice> {
    let dev = Arc::new(MemDevice::new(bytes));
    mkfs(
        dev.clone(),
        &MkfsOptions {
            seg_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    dev
}

pub fn dev_of(img: &[u8]) -> Arc<MemDevice> {
    Arc::new(MemDevice::from_image(img.to_vec()))
}

pub fn ro() -> MountOptions {
    MountOptions {
        read_only: true,
        ..Default::default()
    }
}

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `f` on its own thread: a panic or a hang (no answer within `timeout`) becomes an
/// error naming `case`.
pub fn guarded<T: Send + 'static>(
    case: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(case.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(timeout) {
        Ok(o) => Ok(o),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("{case}: hung")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{case}: panicked")),
    }
}
