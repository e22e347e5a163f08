//! recovery-bench: how long mount takes, after a crash and after a clean unmount.
//!
//!   recovery-bench [--dir DIR] [--files N] [--image-gib G] [--log-mib M] [--rounds R] [--cold]
//!
//! 1. A filesystem of `G` GiB holding `N` files (1 000 per directory, 1 KiB each) is built
//!    and unmounted; its clean mount is timed, read-only and read-write.
//! 2. On that filesystem `M` MiB (and a quarter of it) are written after a checkpoint — new
//!    files of 1 MiB and 4 KiB, fsync every 16 MiB — and the power is "cut" (the Fs dropped,
//!    nothing more written). The mount after the crash is timed: read-only (roll-forward in
//!    memory) and read-write (roll-forward and the recovery checkpoint).
//!
//! 3. Finally fsck -n -f checks the image all those crashes and recoveries left (timed once).
//!
//! Each figure is the median of R rounds; with --cold the page cache is dropped before each
//! mount (needs root: /proc/sys/vm/drop_caches), otherwise the image is warm in the host's
//! page cache. Prints figures only; the targets (under one second) are judged by a person.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::fs::Creds;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const MIB: u64 = 1 << 20;

struct Args {
    dir: PathBuf,
    files: u64,
    image_gib: u64,
    log_mib: u64,
    rounds: usize,
    cold: bool,
}

fn parse() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir(),
        files: 1_000_000,
        image_gib: 10,
        log_mib: 256,
        rounds: 3,
        cold: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let bad = || -> ! {
        eprintln!(
            "usage: recovery-bench [--dir DIR] [--files N] [--image-gib G] [--log-mib M] \
             [--rounds R] [--cold]"
        );
        std::process::exit(2)
    };
    while let Some(k) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| bad());
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(val()),
            "--files" => a.files = val().parse().unwrap_or_else(|_| bad()),
            "--image-gib" => a.image_gib = val().parse().unwrap_or_else(|_| bad()),
            "--log-mib" => a.log_mib = val().parse().unwrap_or_else(|_| bad()),
            "--rounds" => a.rounds = val().parse().unwrap_or_else(|_| bad()),
            "--cold" => a.cold = true,
            _ => bad(),
        }
    }
    a
}

fn open(path: &Path) -> Arc<dyn Device> {
    Arc::new(
        FileDevice::open(
            path,
            OpenOptions {
                read_only: false,
                direct: true,
                lock: true,
            },
        )
        .unwrap(),
    )
}

/// Mount options for the writers: no checkpoint but the ones we ask for.
fn no_auto_checkpoint() -> MountOptions {
    MountOptions {
        checkpoint_blocks: u64::MAX / 2,
        checkpoint_interval: Duration::from_secs(1 << 30),
        ..Default::default()
    }
}

fn drop_caches(cold: bool) {
    if cold {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn build(path: &Path, gib: u64, files: u64) {
    let _ = std::fs::remove_file(path);
    drop(FileDevice::create(path, gib << 30).unwrap());
    let dev = open(path);
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    let t = Instant::now();
    let body = [0x5au8; 1024];
    let mut d = ROOT;
    for i in 0..files {
        if i % 1000 == 0 {
            d = fs
                .mkdir(ROOT, format!("d{}", i / 1000).as_bytes(), 0o755, C)
                .unwrap()
                .ino;
        }
        let f = fs
            .create(d, format!("f{i}").as_bytes(), 0o644, C)
            .unwrap()
            .ino;
        fs.write(f, 0, &body).unwrap();
        if i > 0 && i % 100_000 == 0 {
            eprintln!("  {i} files, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    fs.unmount().unwrap();
    eprintln!(
        "built: {files} files in a {gib} GiB image in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Write `mib` MiB after a checkpoint, fsync'd, then cut the power (the image stays
/// as the device holds it).
fn crash_after(path: &Path, mib: u64, round: usize) {
    let fs = Fs::mount(open(path), no_auto_checkpoint()).unwrap();
    fs.checkpoint().unwrap();
    let dir = fs
        .mkdir(ROOT, format!("crash{round}-{mib}").as_bytes(), 0o755, C)
        .unwrap()
        .ino;
    let big = vec![0xa5u8; MIB as usize];
    let small = [0x3cu8; 4096];
    let mut written = 0u64;
    let mut n = 0;
    let mut last_sync = 0;
    while written < mib * MIB {
        // Three 1 MiB files, then sixty-four 4 KiB ones: about 3.25 MiB per turn.
        for _ in 0..3 {
            let f = fs
                .create(dir, format!("b{n}").as_bytes(), 0o644, C)
                .unwrap()
                .ino;
            fs.write(f, 0, &big).unwrap();
            n += 1;
            written += MIB;
        }
        for _ in 0..64 {
            let f = fs
                .create(dir, format!("s{n}").as_bytes(), 0o644, C)
                .unwrap()
                .ino;
            fs.write(f, 0, &small).unwrap();
            n += 1;
            written += 4096;
        }
        if written - last_sync >= 16 * MIB {
            fs.fsync(ROOT, false).unwrap();
            last_sync = written;
        }
    }
    fs.fsync(ROOT, false).unwrap();
    // The power cut: nothing after the last fsync reaches the disk (the Fs is dropped
    // without unmount; it writes nothing on drop).
    drop(fs);
}

fn time_mount(path: &Path, ro: bool, cold: bool) -> (f64, Fs) {
    drop_caches(cold);
    let t = Instant::now();
    let fs = Fs::mount(
        open(path),
        MountOptions {
            read_only: ro,
            ..no_auto_checkpoint()
        },
    )
    .unwrap();
    (t.elapsed().as_secs_f64() * 1000.0, fs)
}

fn main() {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let a = parse();
    let path = a
        .dir
        .join(format!("recovery-bench-{}.img", std::process::id()));
    build(&path, a.image_gib, a.files);
    let cache = if a.cold { "cold cache" } else { "warm cache" };

    let (mut ro, mut rw) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let (ms, fs) = time_mount(&path, true, a.cold);
        ro.push(ms);
        drop(fs);
        let (ms, fs) = time_mount(&path, false, a.cold);
        rw.push(ms);
        fs.unmount().unwrap();
    }
    println!(
        "clean mount, {} files in {} GiB ({cache}): read-only {:.0} ms, read-write {:.0} ms \
         (median of {})",
        a.files,
        a.image_gib,
        median(ro),
        median(rw),
        a.rounds
    );

    for (k, mib) in [a.log_mib / 4, a.log_mib].into_iter().enumerate() {
        let (mut ro, mut rw) = (Vec::new(), Vec::new());
        let mut units = 0;
        let mut blocks = 0;
        for r in 0..a.rounds {
            crash_after(&path, mib, k * 100 + r);
            let (ms, fs) = time_mount(&path, true, a.cold);
            ro.push(ms);
            drop(fs);
            let (ms, fs) = time_mount(&path, false, a.cold);
            rw.push(ms);
            let rf = fs.mount_report().roll_forward.clone().unwrap_or_default();
            (units, blocks) = (rf.units, rf.blocks);
            fs.unmount().unwrap();
        }
        println!(
            "mount after a crash, {mib} MiB of log since the checkpoint ({} MiB in {units} \
             units rolled forward; {cache}): read-only {:.0} ms, read-write {:.0} ms (median \
             of {})",
            blocks * 4096 / MIB,
            median(ro),
            median(rw),
            a.rounds
        );
    }
    // The image after all those crashes and recoveries: fsck -n -f, timed once.
    let t = Instant::now();
    let dev = open(&path);
    let findings = lfs_core::fsck::findings(dev).unwrap();
    println!(
        "fsck -n -f of the image afterwards: {} findings in {:.1} s",
        findings.len(),
        t.elapsed().as_secs_f64()
    );
    for f in findings.iter().take(10) {
        println!("  {f}");
    }
    let _ = std::fs::remove_file(&path);
}
