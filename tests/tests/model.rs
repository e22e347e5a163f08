//! Model-based random test: seeded operation sequences run against lfs-core on an in-memory
//! device and against a plain in-memory model; results are compared after every operation
//! and the whole tree (contents and metadata) after every remount and at the end.
//!
//! Reproduce a failure with `LFS_SEED=<seed> cargo test -p lfs-tests --test model`.
//! More operations: `LFS_MODEL_OPS=100000`.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, MemDevice};
use lfs_core::format::inode::FileKind;
use lfs_core::format::Ino;
use lfs_core::fs::{
    SetAttr, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, RENAME_EXCHANGE, RENAME_NOREPLACE,
};
use lfs_core::{mkfs, Fs, FsError, MkfsOptions, MountOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lfs_tests::engine::{C, ROOT};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File {
        data: Vec<u8>,
    },
    Dir {
        entries: BTreeMap<Vec<u8>, Ino>,
        parent: Ino,
    },
    Symlink {
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct MInode {
    node: Node,
    nlink: u32,
    mode: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Default)]
struct Model {
    inodes: HashMap<Ino, MInode>,
}

/// Errors compared by kind only.
fn kind(r: &Result<(), FsError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("{:?}", std::mem::discriminant(e)),
    }
}

impl Model {
    fn dir(&self, ino: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.inodes[&ino].node {
            Node::Dir { entries, .. } => entries,
            _ => panic!("not a dir"),
        }
    }
    fn dir_mut(&mut self, ino: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.inodes.get_mut(&ino).unwrap().node {
            Node::Dir { entries, .. } => entries,
            _ => panic!("not a dir"),
        }
    }
    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.inodes[&ino].node, Node::Dir { .. })
    }
    fn parent(&self, ino: Ino) -> Ino {
        match &self.inodes[&ino].node {
            Node::Dir { parent, .. } => *parent,
            _ => Ino(0),
        }
    }
    fn drop_link(&mut self, ino: Ino) {
        let i = self.inodes.get_mut(&ino).unwrap();
        i.nlink -= 1;
        if i.nlink == 0 || matches!(i.node, Node::Dir { .. }) && i.nlink <= 1 {
            self.inodes.remove(&ino);
        }
    }
    fn is_ancestor(&self, a: Ino, mut x: Ino) -> bool {
        loop {
            if x == a {
                return true;
            }
            if x == ROOT {
                return false;
            }
            x = self.parent(x);
        }
    }

    fn rename(&mut self, p: Ino, n: &[u8], np: Ino, nn: &[u8], flags: u32) -> Result<(), FsError> {
        let src = *self.dir(p).get(n).ok_or(FsError::NotFound)?;
        let dst = self.dir(np).get(nn).copied();
        let sdir = self.is_dir(src);
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(FsError::NotFound)?;
            if dst == src {
                return Ok(());
            }
            let ddir = self.is_dir(dst);
            if p != np
                && ((sdir && self.is_ancestor(src, np)) || (ddir && self.is_ancestor(dst, p)))
            {
                return Err(FsError::Invalid(""));
            }
            self.dir_mut(p).insert(n.to_vec(), dst);
            self.dir_mut(np).insert(nn.to_vec(), src);
            if p != np {
                if sdir {
                    self.set_parent(src, np);
                    self.inodes.get_mut(&p).unwrap().nlink -= 1;
                    self.inodes.get_mut(&np).unwrap().nlink += 1;
                }
                if ddir {
                    self.set_parent(dst, p);
                    self.inodes.get_mut(&np).unwrap().nlink -= 1;
                    self.inodes.get_mut(&p).unwrap().nlink += 1;
                }
            }
            return Ok(());
        }
        if let Some(d) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if d == src {
                return Ok(());
            }
        }
        if sdir && p != np && self.is_ancestor(src, np) {
            return Err(FsError::Invalid(""));
        }
        if let Some(d) = dst {
            match (sdir, self.is_dir(d)) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !self.dir(d).is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            if self.is_dir(d) {
                self.inodes.remove(&d);
                self.inodes.get_mut(&np).unwrap().nlink -= 1;
            } else {
                self.drop_link(d);
            }
        }
        self.dir_mut(p).remove(n);
        self.dir_mut(np).insert(nn.to_vec(), src);
        if sdir && p != np {
            self.set_parent(src, np);
            self.inodes.get_mut(&p).unwrap().nlink -= 1;
            self.inodes.get_mut(&np).unwrap().nlink += 1;
        }
        Ok(())
    }
    fn set_parent(&mut self, ino: Ino, np: Ino) {
        if let Node::Dir { parent, .. } = &mut self.inodes.get_mut(&ino).unwrap().node {
            *parent = np;
        }
    }
}

/// Compare the whole tree under `dir`.
fn compare(fs: &Fs, m: &Model, dir: Ino, path: &str) {
    let listed: BTreeMap<Vec<u8>, (Ino, FileKind)> = fs
        .readdir(dir, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| (e.name, (e.ino, e.kind)))
        .collect();
    let want = m.dir(dir);
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "entries of {path}"
    );
    for (name, &ino) in want {
        let p = format!("{path}/{}", String::from_utf8_lossy(name));
        assert_eq!(listed[name].0, ino, "{p}: inode number");
        let a = fs.getattr(ino).unwrap();
        let mi = &m.inodes[&ino];
        assert_eq!(a.nlink, mi.nlink, "{p}: nlink");
        assert_eq!(a.perm, mi.mode, "{p}: mode");
        let xs: Vec<Vec<u8>> = fs.listxattr(ino).unwrap();
        assert_eq!(
            xs,
            mi.xattrs.keys().cloned().collect::<Vec<_>>(),
            "{p}: xattr names"
        );
        for (k, v) in &mi.xattrs {
            assert_eq!(&fs.getxattr(ino, k).unwrap(), v, "{p}: xattr value");
        }
        match &mi.node {
            Node::File { data } => {
                assert_eq!(a.kind, FileKind::Regular, "{p}");
                assert_eq!(a.size, data.len() as u64, "{p}: size");
                let got = fs.read(ino, 0, data.len() as u32 + 10).unwrap();
                assert!(got == *data, "{p}: contents differ");
            }
            Node::Symlink { target } => assert_eq!(&fs.readlink(ino).unwrap(), target, "{p}"),
            Node::Dir { parent, .. } => {
                assert_eq!(a.kind, FileKind::Directory);
                assert_eq!(fs.lookup(ino, b"..").unwrap().ino, *parent, "{p}: ..");
                compare(fs, m, ino, &p);
            }
        }
    }
}

fn pick<'a, T>(rng: &mut SmallRng, v: &'a [T]) -> Option<&'a T> {
    if v.is_empty() {
        None
    } else {
        Some(&v[rng.gen_range(0..v.len())])
    }
}

fn run(seed: u64, ops: usize) {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(256 << 20));
    mkfs(
        dev.clone(),
        &MkfsOptions {
            seg_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    // Small writeback threshold so data reaches the log between flushes too, and a tiny
    // inode cache so inodes are dropped and read back between operations all the time.
    let opts = MountOptions {
        writeback_blocks: 64,
        checkpoint_blocks: 4096,
        inode_cache: 4,
        ..Default::default()
    };
    let mut fs = Fs::mount(dev.clone(), opts.clone()).unwrap();
    let mut m = Model::default();
    m.inodes.insert(
        ROOT,
        MInode {
            node: Node::Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
            },
            nlink: 2,
            mode: 0o755,
            xattrs: BTreeMap::new(),
        },
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let names: Vec<Vec<u8>> = (0..12).map(|i| format!("n{i}").into_bytes()).collect();
    let (mut oks, mut errs, mut remounts) = (0usize, 0usize, 0usize);
    let mut enospc_at = None;
    let mut skipped = 0usize;
    for step in 0..ops {
        let dirs: Vec<Ino> = m
            .inodes
            .iter()
            .filter(|(_, i)| matches!(i.node, Node::Dir { .. }))
            .map(|(k, _)| *k)
            .collect();
        let files: Vec<Ino> = m
            .inodes
            .iter()
            .filter(|(_, i)| matches!(i.node, Node::File { .. }))
            .map(|(k, _)| *k)
            .collect();
        let mut dirs = dirs;
        dirs.sort();
        let mut files = files;
        files.sort();
        let d = *pick(&mut rng, &dirs).unwrap();
        let name = pick(&mut rng, &names).unwrap().clone();
        let op = rng.gen_range(0..100);
        // Operations the model applies before knowing the result save the inode here.
        let mut undo: Option<(Ino, MInode)> = None;
        let ctx = format!("seed {seed} step {step} op {op}");
        let (got, want): (Result<(), FsError>, Result<(), FsError>) = match op {
            0..=11 => {
                let want = if m.dir(d).contains_key(&name) {
                    Err(FsError::Exists)
                } else {
                    Ok(())
                };
                let got = fs.create(d, &name, 0o644, C).map(|a| {
                    m.inodes.insert(
                        a.ino,
                        MInode {
                            node: Node::File { data: vec![] },
                            nlink: 1,
                            mode: 0o644,
                            xattrs: BTreeMap::new(),
                        },
                    );
                    m.dir_mut(d).insert(name.clone(), a.ino);
                });
                (got, want)
            }
            12..=17 => {
                let want = if m.dir(d).contains_key(&name) {
                    Err(FsError::Exists)
                } else {
                    Ok(())
                };
                let got = fs.mkdir(d, &name, 0o755, C).map(|a| {
                    m.inodes.insert(
                        a.ino,
                        MInode {
                            node: Node::Dir {
                                entries: BTreeMap::new(),
                                parent: d,
                            },
                            nlink: 2,
                            mode: 0o755,
                            xattrs: BTreeMap::new(),
                        },
                    );
                    m.dir_mut(d).insert(name.clone(), a.ino);
                    m.inodes.get_mut(&d).unwrap().nlink += 1;
                });
                (got, want)
            }
            18..=37 => {
                let Some(&f) = pick(&mut rng, &files) else {
                    skipped += 1;
                    continue;
                };
                let big = rng.gen_bool(0.1);
                let off = if big {
                    rng.gen_range(0..3_000_000)
                } else {
                    rng.gen_range(0..20_000)
                };
                let len = if big {
                    rng.gen_range(1..300_000)
                } else {
                    rng.gen_range(1..9000)
                };
                let fill: u8 = rng.gen();
                let buf: Vec<u8> = (0..len)
                    .map(|i| fill.wrapping_add((i % 251) as u8))
                    .collect();
                let got = fs.write(f, off, &buf).map(|_| ());
                undo = Some((f, m.inodes[&f].clone()));
                if let Node::File { data } = &mut m.inodes.get_mut(&f).unwrap().node {
                    let end = off as usize + len;
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[off as usize..end].copy_from_slice(&buf);
                }
                (got, Ok(()))
            }
            38..=43 => {
                let Some(&f) = pick(&mut rng, &files) else {
                    skipped += 1;
                    continue;
                };
                let size = rng.gen_range(0..40_000u64);
                let got = fs
                    .setattr(
                        f,
                        &SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .map(|_| ());
                if let Node::File { data } = &mut m.inodes.get_mut(&f).unwrap().node {
                    data.resize(size as usize, 0);
                }
                (got, Ok(()))
            }
            44..=47 => {
                let Some(&f) = pick(&mut rng, &files) else {
                    skipped += 1;
                    continue;
                };
                let off = rng.gen_range(0..30_000u64);
                let len = rng.gen_range(1..20_000u64);
                let got = fs.fallocate(f, off, len, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
                if let Node::File { data } = &mut m.inodes.get_mut(&f).unwrap().node {
                    let s = (off as usize).min(data.len());
                    let e = ((off + len) as usize).min(data.len());
                    data[s..e].fill(0);
                }
                (got, Ok(()))
            }
            48..=52 => {
                let Some(&f) = pick(&mut rng, &files) else {
                    skipped += 1;
                    continue;
                };
                let want = if m.dir(d).contains_key(&name) {
                    Err(FsError::Exists)
                } else {
                    Ok(())
                };
                let got = fs.link(f, d, &name).map(|_| ());
                if want.is_ok() {
                    m.dir_mut(d).insert(name.clone(), f);
                    m.inodes.get_mut(&f).unwrap().nlink += 1;
                }
                (got, want)
            }
            53..=62 => {
                let want = match m.dir(d).get(&name).copied() {
                    None => Err(FsError::NotFound),
                    Some(t) if m.is_dir(t) => Err(FsError::IsDir),
                    Some(t) => {
                        m.dir_mut(d).remove(&name);
                        m.drop_link(t);
                        Ok(())
                    }
                };
                (fs.unlink(d, &name), want)
            }
            63..=67 => {
                let want = match m.dir(d).get(&name).copied() {
                    None => Err(FsError::NotFound),
                    Some(t) if !m.is_dir(t) => Err(FsError::NotDir),
                    Some(t) if !m.dir(t).is_empty() => Err(FsError::NotEmpty),
                    Some(t) => {
                        m.dir_mut(d).remove(&name);
                        m.inodes.remove(&t);
                        m.inodes.get_mut(&d).unwrap().nlink -= 1;
                        Ok(())
                    }
                };
                (fs.rmdir(d, &name), want)
            }
            68..=79 => {
                let d2 = *pick(&mut rng, &dirs).unwrap();
                let name2 = pick(&mut rng, &names).unwrap().clone();
                let flags = match rng.gen_range(0..6) {
                    0 => RENAME_NOREPLACE,
                    1 => RENAME_EXCHANGE,
                    _ => 0,
                };
                let want = m.rename(d, &name, d2, &name2, flags);
                (fs.rename(d, &name, d2, &name2, flags), want)
            }
            80..=83 => {
                let want = if m.dir(d).contains_key(&name) {
                    Err(FsError::Exists)
                } else {
                    Ok(())
                };
                let target = format!("target-{}", rng.gen_range(0..1000)).into_bytes();
                let got = fs.symlink(d, &name, &target, C).map(|a| {
                    m.inodes.insert(
                        a.ino,
                        MInode {
                            node: Node::Symlink {
                                target: target.clone(),
                            },
                            nlink: 1,
                            mode: 0o777,
                            xattrs: BTreeMap::new(),
                        },
                    );
                    m.dir_mut(d).insert(name.clone(), a.ino);
                });
                (got, want)
            }
            84..=87 => {
                let Some(&f) = pick(&mut rng, &files) else {
                    skipped += 1;
                    continue;
                };
                let k = format!("user.k{}", rng.gen_range(0..4)).into_bytes();
                if rng.gen_bool(0.7) {
                    let v = vec![rng.gen::<u8>(); rng.gen_range(0..200)];
                    undo = Some((f, m.inodes[&f].clone()));
                    m.inodes
                        .get_mut(&f)
                        .unwrap()
                        .xattrs
                        .insert(k.clone(), v.clone());
                    (fs.setxattr(f, &k, &v, 0), Ok(()))
                } else {
                    let want = if m.inodes.get_mut(&f).unwrap().xattrs.remove(&k).is_some() {
                        Ok(())
                    } else {
                        Err(FsError::NoAttr)
                    };
                    (fs.removexattr(f, &k), want)
                }
            }
            88..=91 => {
                let all: Vec<Ino> = m.inodes.keys().copied().collect();
                let mut all = all;
                all.sort();
                let t = *pick(&mut rng, &all).unwrap();
                let mode = rng.gen_range(0..0o1000);
                m.inodes.get_mut(&t).unwrap().mode = mode;
                (
                    fs.setattr(
                        t,
                        &SetAttr {
                            mode: Some(mode),
                            ..Default::default()
                        },
                    )
                    .map(|_| ()),
                    Ok(()),
                )
            }
            92..=94 => (fs.checkpoint(), Ok(())),
            _ => {
                fs.unmount().unwrap();
                fs = Fs::mount(dev.clone(), opts.clone()).unwrap();
                compare(&fs, &m, ROOT, "");
                let findings = fs.verify().unwrap();
                assert!(findings.is_empty(), "{ctx}: {findings:#?}");
                remounts += 1;
                (Ok(()), Ok(()))
            }
        };
        if matches!(got, Err(FsError::NoSpace))
            && want.is_ok()
            && (op < 53 || (80..=87).contains(&op))
        {
            // Until the cleaner exists, overwrites leave partly dead segments nothing
            // reclaims, and a long run fills the disk. A refused operation must leave no
            // trace: undo the model's side and end the run with a full comparison.
            if let Some((ino, saved)) = undo.take() {
                m.inodes.insert(ino, saved);
            }
            enospc_at = Some(step);
            break;
        }
        assert_eq!(
            kind(&got),
            kind(&want),
            "{ctx}: got {got:?}, model says {want:?}"
        );
        if got.is_ok() {
            oks += 1;
        } else {
            errs += 1;
        }
    }
    let nfiles = m
        .inodes
        .values()
        .filter(|i| matches!(i.node, Node::File { .. }))
        .count();
    let ended = enospc_at
        .map(|s| format!(", ended by ENOSPC at step {s}"))
        .unwrap_or_default();
    eprintln!(
        "model: seed {seed}: {oks} ok, {errs} expected errors, {skipped} skipped, {remounts} remounts, {} inodes ({nfiles} files) at the end{ended}",
        m.inodes.len()
    );
    let done = oks + errs;
    assert!(
        enospc_at.is_none_or(|s| s >= 10_000),
        "seed {seed}: ENOSPC after only {done} operations"
    );
    // The test means something only if it did a lot of both.
    assert!(
        done > enospc_at.unwrap_or(ops) * 9 / 10
            && oks > done / 2
            && errs > done / 50
            && (remounts > 0 || done < 200),
        "seed {seed}: too few operations took effect"
    );
    fs.unmount().unwrap();
    let fs = Fs::mount(dev.clone(), opts).unwrap();
    compare(&fs, &m, ROOT, "");
    let st = fs.stats();
    assert_eq!(
        st.usage_underflows, 0,
        "segment usage accounting went negative"
    );
    fs.unmount().unwrap();
    assert_eq!(
        lfs_core::fsck::findings(dev.clone()).unwrap(),
        vec![],
        "seed {seed}: fsck"
    );
}

#[test]
fn model_random_sequences() {
    let ops: usize = std::env::var("LFS_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seeds: Vec<u64> = match std::env::var("LFS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (1..=6).collect(),
    };
    for seed in seeds {
        eprintln!("model: seed {seed}, {ops} operations");
        run(seed, ops);
    }
}
