//! The failing-device sweep: one fixed workload (files small and large, a directory, a
//! symlink, a hard link, xattrs, renames, truncates, deletes, fsyncs, checkpoints and a
//! cleaning pass) runs on a [`FaultyDevice`] over a [`CrashDevice`], once per fault: the
//! n-th read, write or flush fails with EIO, a write is torn, every write from the n-th on
//! fails, or the whole device dies. n sweeps the range the workload really uses. Then:
//!
//! - nothing panics or hangs, and every error an operation returns is the one it returns
//!   without the fault, or EIO (`Io` / `Poisoned`);
//! - after a failed write or flush, no fsync, checkpoint, cleaning pass or unmount reports
//!   success (the fsync-gate lesson: what was not written must never be called durable),
//!   and once an operation has failed, every later change is refused;
//! - a read error leaves the filesystem usable: the operation that saw it has no effect,
//!   the rest of the workload runs, and after unmount and mount the tree is exactly what
//!   the workload without that operation gives;
//! - the power is then cut (the device keeps only what was flushed, or everything that was
//!   written): the next mount works, fsck finds no damage, and the tree is the workload's
//!   state after some operation between the last successful sync and the failure — nothing
//!   durable is lost, nothing half-done appears.
//!
//! Faults while mounting are swept too (every read and write a read-write mount makes).
//! `LFS_FAULT_CASES=N` sets how many fault positions each kind tries (default 40, spread over
//! the range; `LFS_FAULT_CASES=0` tries every position).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use lfs_core::device::{CrashDevice, FaultyDevice, MemDevice};
use lfs_core::format::Ino;
use lfs_core::fs::{Creds, SetAttr};
use lfs_core::{Fs, FsError, MountOptions};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// One step of the workload, by path (inode numbers may differ between runs).
#[derive(Debug, Clone)]
enum Op {
    Mkdir(&'static str),
    Create(&'static str),
    /// Path, offset, length, byte seed.
    Write(&'static str, u64, usize, u8),
    Fsync(&'static str),
    Symlink(&'static str, &'static str),
    SetXattr(&'static str, &'static str, usize),
    RemoveXattr(&'static str, &'static str),
    Rename(&'static str, &'static str),
    Truncate(&'static str, u64),
    Link(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Fallocate(&'static str, u64, u64),
    /// Read the whole file (its digest is the step's outcome).
    Read(&'static str),
    Checkpoint,
    /// A cleaning pass over the two emptiest full segments.
    Clean,
}

impl Op {
    /// Operations after which everything before them is durable when they succeed.
    fn syncs(&self) -> bool {
        matches!(self, Op::Fsync(_) | Op::Checkpoint | Op::Clean)
    }
}

fn workload() -> Vec<Op> {
    use Op::*;
    let mut w = vec![
        Mkdir("/d"),
        Create("/d/a"),
        Write("/d/a", 0, 10_000, 1),
        Create("/b"),
        Write("/b", 0, 300_000, 2),
        Fsync("/b"),
        Read("/d/a"),
        Symlink("/l", "d/a"),
        SetXattr("/b", "user.small", 100),
        SetXattr("/d/a", "user.large", 3_000),
        Write("/b", 100_000, 50_000, 3),
        Create("/c"),
        Write("/c", 0, 1_200_000, 4),
        Rename("/d/a", "/a2"),
        Truncate("/b", 70_000),
        Link("/c", "/d/c2"),
        Unlink("/c"),
        Read("/b"),
        Checkpoint,
        Read("/d/c2"),
    ];
    for i in 0..12u8 {
        w.push(Create(FILES[i as usize]));
        w.push(Write(
            FILES[i as usize],
            0,
            5_000 * (i as usize + 1),
            10 + i,
        ));
    }
    // Overwrite the big file a few times: dead segments for the cleaner.
    for round in 0..4u8 {
        w.push(Write("/d/c2", 0, 1_200_000, 20 + round));
    }
    w.extend([
        Fsync("/d/c2"),
        Clean,
        Read("/d/c2"),
        Read("/d/f5"),
        Write("/d/c2", 4_000_000, 4096, 30),
        Mkdir("/d/sub"),
        Create("/d/sub/x"),
        Write("/d/sub/x", 0, 20_000, 31),
        Fallocate("/d/sub/x", 20_000, 100_000),
        RemoveXattr("/b", "user.small"),
        Fsync("/d/sub/x"),
        Unlink("/d/sub/x"),
        Rmdir("/d/sub"),
        Rename("/a2", "/d/a3"),
        Truncate("/d/c2", 5_000),
    ]);
    for f in FILES.iter().step_by(3) {
        w.push(Unlink(f));
    }
    w.extend([
        Write("/b", 1 << 20, 8_192, 40),
        Fsync("/b"),
        Clean,
        Read("/b"),
        Read("/d/a3"),
    ]);
    w
}

const FILES: [&str; 12] = [
    "/d/f0", "/d/f1", "/d/f2", "/d/f3", "/d/f4", "/d/f5", "/d/f6", "/d/f7", "/d/f8", "/d/f9",
    "/d/f10", "/d/f11",
];

fn resolve(fs: &Fs, path: &str) -> Result<Ino, FsError> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

fn parent_name(fs: &Fs, path: &'static str) -> Result<(Ino, &'static [u8]), FsError> {
    let (dir, name) = path.rsplit_once('/').unwrap();
    Ok((resolve(fs, dir)?, name.as_bytes()))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Run one step; `Some(digest)` for a read.
fn apply(fs: &Fs, op: &Op) -> Result<Option<u64>, FsError> {
    let Op::Read(p) = *op else {
        return change(fs, op).map(|()| None);
    };
    let ino = resolve(fs, p)?;
    let size = fs.getattr(ino)?.size;
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut off = 0;
    while off < size {
        let b = fs.read(ino, off, 1 << 20)?;
        if b.is_empty() {
            break;
        }
        fnv(&mut h, &b);
        off += b.len() as u64;
    }
    Ok(Some(h ^ off))
}

fn change(fs: &Fs, op: &Op) -> Result<(), FsError> {
    match *op {
        Op::Read(_) => Ok(()),
        Op::Mkdir(p) => {
            let (d, n) = parent_name(fs, p)?;
            fs.mkdir(d, n, 0o755, C).map(drop)
        }
        Op::Create(p) => {
            let (d, n) = parent_name(fs, p)?;
            fs.create(d, n, 0o644, C).map(drop)
        }
        Op::Write(p, off, len, seed) => {
            let ino = resolve(fs, p)?;
            let n = fs.write(ino, off, &pattern(len, seed))?;
            assert_eq!(n as usize, len, "short write without an error");
            Ok(())
        }
        Op::Fsync(p) => fs.fsync(resolve(fs, p)?, false),
        Op::Symlink(p, target) => {
            let (d, n) = parent_name(fs, p)?;
            fs.symlink(d, n, target.as_bytes(), C).map(drop)
        }
        Op::SetXattr(p, name, len) => {
            fs.setxattr(resolve(fs, p)?, name.as_bytes(), &pattern(len, 7), 0)
        }
        Op::RemoveXattr(p, name) => fs.removexattr(resolve(fs, p)?, name.as_bytes()),
        Op::Rename(from, to) => {
            let (d1, n1) = parent_name(fs, from)?;
            let (d2, n2) = parent_name(fs, to)?;
            fs.rename(d1, n1, d2, n2, 0)
        }
        Op::Truncate(p, size) => {
            let set = SetAttr {
                size: Some(size),
                ..Default::default()
            };
            fs.setattr(resolve(fs, p)?, &set).map(drop)
        }
        Op::Link(from, to) => {
            let ino = resolve(fs, from)?;
            let (d, n) = parent_name(fs, to)?;
            fs.link(ino, d, n).map(drop)
        }
        Op::Unlink(p) => {
            let (d, n) = parent_name(fs, p)?;
            fs.unlink(d, n)
        }
        Op::Rmdir(p) => {
            let (d, n) = parent_name(fs, p)?;
            fs.rmdir(d, n)
        }
        Op::Fallocate(p, off, len) => fs.fallocate(resolve(fs, p)?, off, len, 0),
        Op::Checkpoint => fs.checkpoint(),
        Op::Clean => {
            let mut views = fs.segment_views();
            views.sort_by_key(|v| (v.live_bytes, v.segment));
            let victims: Vec<_> = views.iter().take(2).map(|v| v.segment).collect();
            if victims.is_empty() {
                return Ok(());
            }
            fs.clean(&victims).map(drop)
        }
    }
}

/// Small caches and write-back limits, so that the workload reads and writes the device
/// often (a fault has many places to land).
fn opts() -> MountOptions {
    MountOptions {
        cache_blocks: 16,
        writeback_blocks: 32,
        checkpoint_blocks: 512,
        ..Default::default()
    }
}

fn fresh_image() -> Vec<u8> {
    formatted(16 << 20).image()
}

/// An operation's result as text, for comparing runs: "ok", a read's digest, or the error.
fn outcome(r: &Result<Option<u64>, FsError>) -> String {
    match r {
        Ok(None) => "ok".into(),
        Ok(Some(d)) => format!("read {d:x}"),
        Err(e) => e.to_string(),
    }
}

fn is_eio(e: &FsError) -> bool {
    matches!(e, FsError::Io(_) | FsError::Poisoned)
}

/// The workload on a plain device, skipping step `skip`: each step's outcome, and the tree
/// before the first step and after each one.
struct Reference {
    outcomes: Vec<String>,
    trees: Vec<Tree>,
}

fn reference(img: &[u8], ops: &[Op], skip: Option<usize>) -> Reference {
    let fs = Fs::mount(dev_of(img), opts()).unwrap();
    let mut r = Reference {
        outcomes: Vec::new(),
        trees: vec![walk(&fs)],
    };
    for (i, op) in ops.iter().enumerate() {
        let res = if Some(i) == skip {
            Ok(None)
        } else {
            apply(&fs, op)
        };
        r.outcomes.push(outcome(&res));
        r.trees.push(walk(&fs));
    }
    fs.unmount().unwrap();
    r
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Read(u64),
    Write(u64),
    Flush(u64),
    /// Write n keeps only its first 4 KiB blocks (`.1` of them).
    Tear(u64, usize),
    WritesFrom(u64),
    /// Everything fails from step n of the workload on.
    DeviceDies(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Read(n) => write!(f, "read {n} fails"),
            Fault::Write(n) => write!(f, "write {n} fails"),
            Fault::Flush(n) => write!(f, "flush {n} fails"),
            Fault::Tear(n, k) => write!(f, "write {n} torn after {k} blocks"),
            Fault::WritesFrom(n) => write!(f, "writes fail from {n} on"),
            Fault::DeviceDies(s) => write!(f, "device dies at step {s}"),
        }
    }
}

type Dev = FaultyDevice<CrashDevice>;

/// What one run under a fault did.
struct Run {
    results: Vec<Result<Option<u64>, FsError>>,
    /// Faults injected by the end of each step: all, and failed writes and flushes.
    injected: Vec<(u64, u64)>,
    unmount: Result<(), FsError>,
    dev: Arc<Dev>,
}

fn run(img: &[u8], ops: &[Op], fault: Fault) -> Run {
    let dev = Arc::new(FaultyDevice::new(CrashDevice::from_image(img.to_vec())));
    let fs = Fs::mount(dev.clone(), opts()).unwrap();
    match fault {
        Fault::Read(n) => dev.fail_read_at(n),
        Fault::Write(n) => dev.fail_write_at(n),
        Fault::Flush(n) => dev.fail_flush_at(n),
        Fault::Tear(n, k) => dev.tear_write_at(n, k * 4096),
        Fault::WritesFrom(n) => dev.fail_all_writes_from(n),
        Fault::DeviceDies(_) => {}
    }
    let mut results = Vec::new();
    let mut injected = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if matches!(fault, Fault::DeviceDies(s) if s == i) {
            dev.fail_all_from_now();
        }
        results.push(apply(&fs, op));
        injected.push((dev.faults_injected(), dev.write_faults_injected()));
    }
    let unmount = fs.unmount();
    Run {
        results,
        injected,
        unmount,
        dev,
    }
}

/// Mount a power-cut image, check it and walk it.
fn after_power_cut(img: Vec<u8>) -> Result<Tree, String> {
    let dev = Arc::new(MemDevice::from_image(img));
    let fs = Fs::mount(dev, MountOptions::default()).map_err(|e| format!("mount: {e}"))?;
    let damage = fs.verify().map_err(|e| format!("fsck: {e}"))?;
    if !damage.is_empty() {
        return Err(format!("fsck found damage: {damage:?}"));
    }
    let t = walk(&fs);
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    Ok(t)
}

/// Check one fault case; problems are pushed to `failures`.
fn check_case(
    img: &[u8],
    ops: &[Op],
    full: &Reference,
    fault: Fault,
    failures: &mut Vec<String>,
) -> &'static str {
    let case = fault.to_string();
    let (img2, ops2) = (img.to_vec(), ops.to_vec());
    let r = match guarded(&case, CASE_TIMEOUT, move || run(&img2, &ops2, fault)) {
        Ok(r) => r,
        Err(e) => {
            failures.push(e);
            return "hung or panicked";
        }
    };
    let mut fail = |what: String| failures.push(format!("{case}: {what}"));
    let write_fault = !matches!(fault, Fault::Read(_));
    // The step in which the first fault fired, and the first step that failed.
    let fired = r.injected.iter().position(|&(n, _)| n > 0);
    let write_fired = r.injected.iter().position(|&(_, w)| w > 0);
    let first_err = r.results.iter().position(|x| x.is_err());
    // Up to the first failure, errors are the workload's own or EIO (later steps may fail
    // for the earlier failure: a file that was not created is not found).
    for (i, res) in r
        .results
        .iter()
        .enumerate()
        .take(first_err.map_or(0, |e| e + 1))
    {
        if let Err(e) = res {
            if !is_eio(e) && outcome(res) != full.outcomes[i] {
                fail(format!(
                    "step {i} {:?}: {e} (without the fault: {})",
                    ops[i], full.outcomes[i]
                ));
            }
        }
    }
    if fired.is_none() {
        // The fault never fired (the run used fewer operations than the counting run):
        // everything must be as without it.
        for (i, res) in r.results.iter().enumerate() {
            if outcome(res) != full.outcomes[i] {
                fail(format!("step {i}: {} without a fault", outcome(res)));
            }
        }
        return "never fired";
    }
    if let Some(wf) = write_fired {
        // A write fault may fire in the background (a write is queued, then fails): from
        // the step it fired in, no sync may succeed; after the first error from then on,
        // no change may.
        for (i, res) in r.results.iter().enumerate().skip(wf) {
            if res.is_ok() && ops[i].syncs() {
                fail(format!("step {i} {:?} succeeded after the fault", ops[i]));
            }
        }
        let refused_from = r
            .results
            .iter()
            .enumerate()
            .skip(wf)
            .find(|(_, x)| x.is_err());
        if let Some((e, _)) = refused_from {
            for (i, res) in r.results.iter().enumerate().skip(e + 1) {
                let change = !matches!(ops[i], Op::Fsync(_) | Op::Read(_));
                if res.is_ok() && full.outcomes[i] == "ok" && change {
                    fail(format!(
                        "step {i} {:?} succeeded after step {e} failed",
                        ops[i]
                    ));
                }
            }
        }
        if r.unmount.is_ok() {
            fail("unmount succeeded after a failed write".into());
        }
    } else if let (false, Some(e)) = (write_fault, first_err) {
        // A read error: that step has no effect, the rest of the workload goes on.
        let without = reference(img, ops, Some(e));
        for (i, res) in r.results.iter().enumerate().skip(e + 1) {
            if outcome(res) != without.outcomes[i] {
                fail(format!(
                    "step {i} {:?} after a read error: {} (expected {})",
                    ops[i],
                    outcome(res),
                    without.outcomes[i]
                ));
            }
        }
        if let Err(err) = &r.unmount {
            fail(format!("unmount after a read error: {err}"));
        }
        match after_power_cut(r.dev.inner().live_image()) {
            Ok(t) if &t == without.trees.last().unwrap() => {}
            Ok(_) => fail(format!("tree differs from the workload without step {e}")),
            Err(err) => fail(err),
        }
        return "read error, went on";
    }
    // Power cut: the device keeps what was flushed, or everything written. The tree must be
    // the state after some step from the last successful sync up to the first failure.
    let last_sync = r
        .results
        .iter()
        .enumerate()
        .take(first_err.unwrap_or(ops.len()))
        .rfind(|(i, x)| x.is_ok() && ops[*i].syncs())
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    let last = first_err.map_or(ops.len(), |e| e + 1);
    for (name, img) in [
        ("durable", r.dev.inner().durable_image()),
        ("everything written", r.dev.inner().live_image()),
    ] {
        match after_power_cut(img) {
            Ok(t) => {
                if !full.trees[last_sync..=last].contains(&t) {
                    let near = full.trees.iter().position(|x| *x == t);
                    fail(format!(
                        "{name} image: tree is not a state between step {last_sync} and {last} \
                         (matches step {near:?}; errors {:?})",
                        t.errors
                    ));
                }
            }
            Err(e) => fail(format!("{name} image: {e}")),
        }
    }
    if first_err.is_some() {
        "failed, power cut"
    } else {
        "no step failed, power cut"
    }
}

/// `n` positions spread over `0..total` (all when `n` is 0 or covers them).
fn positions(total: u64, n: u64) -> Vec<u64> {
    if n == 0 || n >= total {
        return (0..total).collect();
    }
    (0..n).map(|i| i * total / n).collect()
}

#[test]
fn failing_device_sweep() {
    let img = fresh_image();
    let ops = workload();
    let full = reference(&img, &ops, None);
    assert!(
        full.outcomes
            .iter()
            .all(|o| o == "ok" || o.starts_with("read ")),
        "the workload runs cleanly: {:?}",
        full.outcomes
    );
    assert!(full.trees.last().unwrap().errors.is_empty());
    // Count what the workload does to the device, without faults.
    let dev = Arc::new(FaultyDevice::new(CrashDevice::from_image(img.clone())));
    let fs = Fs::mount(dev.clone(), opts()).unwrap();
    let (r0, w0, f0) = (dev.reads(), dev.writes(), dev.flushes());
    for op in &ops {
        apply(&fs, op).unwrap();
    }
    let (reads, writes, flushes) = (dev.reads() - r0, dev.writes() - w0, dev.flushes() - f0);
    fs.unmount().unwrap();
    assert!(
        reads > 20 && writes > 20 && flushes > 5,
        "the workload barely uses the device: {reads} reads, {writes} writes, {flushes} flushes"
    );
    let n = env_u64("LFS_FAULT_CASES", 40);
    let mut faults = Vec::new();
    faults.extend(positions(reads, n).into_iter().map(Fault::Read));
    faults.extend(positions(writes, n).into_iter().map(Fault::Write));
    faults.extend(positions(flushes, n).into_iter().map(Fault::Flush));
    faults.extend(
        positions(writes, n)
            .into_iter()
            .enumerate()
            .map(|(i, w)| Fault::Tear(w, 1 + i % 3)),
    );
    faults.extend(positions(writes, n / 2).into_iter().map(Fault::WritesFrom));
    faults.extend((0..ops.len()).step_by(3).map(Fault::DeviceDies));
    let mut failures = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for &fault in &faults {
        *seen
            .entry(check_case(&img, &ops, &full, fault, &mut failures))
            .or_default() += 1;
    }
    eprintln!(
        "failing-device sweep: {} faults over {reads} reads, {writes} writes, {flushes} flushes: \
         {seen:?}",
        faults.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Faults while mounting read-write (mount reads the superblocks, checkpoints, tables and
/// log tail, then writes two checkpoints): mount fails with EIO or works, and the image
/// mounts afterwards with everything there.
#[test]
fn faults_during_mount() {
    let img = fresh_image();
    let ops = workload();
    // A populated image with a log tail after its checkpoint.
    let base = {
        let dev = Arc::new(MemDevice::from_image(img));
        let fs = Fs::mount(dev.clone(), opts()).unwrap();
        for op in &ops[..ops.len() - 1] {
            apply(&fs, op).unwrap();
        }
        apply(&fs, &Op::Write("/b", 0, 9_000, 50)).unwrap();
        apply(&fs, &Op::Fsync("/b")).unwrap();
        drop(fs);
        dev.image()
    };
    let expected = after_power_cut(base.clone()).unwrap();
    let count = Arc::new(FaultyDevice::new(CrashDevice::from_image(base.clone())));
    Fs::mount(count.clone(), MountOptions::default()).unwrap();
    let (reads, writes, flushes) = (count.reads(), count.writes(), count.flushes());
    assert!(
        reads > 3 && writes > 1 && flushes > 1,
        "{reads} {writes} {flushes}"
    );
    let mut failures = Vec::new();
    let mut failed_mounts = 0;
    let kinds: [(&str, u64); 3] = [("read", reads), ("write", writes), ("flush", flushes)];
    for (kind, total) in kinds {
        for n in 0..total {
            let case = format!("mount, {kind} {n} fails");
            let base2 = base.clone();
            let res = guarded(&case, CASE_TIMEOUT, move || {
                let dev = Arc::new(FaultyDevice::new(CrashDevice::from_image(base2)));
                match kind {
                    "read" => dev.fail_read_at(n),
                    "write" => dev.fail_write_at(n),
                    _ => dev.fail_flush_at(n),
                }
                let m = Fs::mount(dev.clone(), MountOptions::default()).map(drop);
                (m, dev)
            });
            let (m, dev) = match res {
                Ok(x) => x,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            match &m {
                Err(e) if !is_eio(e) => failures.push(format!("{case}: {e}")),
                Err(_) => failed_mounts += 1,
                Ok(()) => {}
            }
            for (name, img) in [
                ("durable", dev.inner().durable_image()),
                ("everything written", dev.inner().live_image()),
            ] {
                match after_power_cut(img) {
                    Ok(t) if t == expected => {}
                    Ok(_) => failures.push(format!("{case}: {name} image: the tree changed")),
                    Err(e) => failures.push(format!("{case}: {name} image: {e}")),
                }
            }
        }
    }
    eprintln!(
        "faults during mount: {} cases, {failed_mounts} mounts failed with EIO",
        reads + writes + flushes
    );
    assert!(failed_mounts > 0, "no fault made a mount fail");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
