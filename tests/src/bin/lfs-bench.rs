//! lfs-bench: benchmarks that print figures (never timed assertions), and a smoke check.
//!
//!   lfs-bench smoke IMAGE                 mount IMAGE in-process, write, read, unmount
//!   lfs-bench engine [--rounds N] [--dir DIR] [--quick]
//!
//! `engine` runs each workload in-process against an image file and, in the same run, the
//! raw peer on the same disk: a plain file written like `dd conv=fdatasync` (buffered, one
//! fdatasync) and with O_DIRECT, and random 4 KiB pwrites over a plain file (update in place).
//! It prints the median of the rounds and the ratios.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::fs::Creds;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fs::OpenOptions as StdOpen;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const MIB: u64 = 1 << 20;
const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn usage() -> ! {
    eprintln!(
        "usage: lfs-bench smoke IMAGE\n       lfs-bench engine [--rounds N] [--dir DIR] [--quick]"
    );
    std::process::exit(2)
}

fn main() {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("smoke") => smoke(Path::new(args.get(1).unwrap_or_else(|| usage()))),
        Some("fs") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let (mut files, mut mib, mut tarball) = (10_000u64, 256u64, None);
            let mut it = args.iter().skip(2);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--files" => {
                        files = it
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| usage())
                    }
                    "--mib" => {
                        mib = it
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| usage())
                    }
                    "--tarball" => {
                        tarball = Some(PathBuf::from(it.next().unwrap_or_else(|| usage())))
                    }
                    _ => usage(),
                }
            }
            fs_workloads(&dir, files, mib, tarball.as_deref());
        }
        Some("engine") => {
            let mut rounds = 3;
            let mut dir = std::env::temp_dir();
            let mut quick = false;
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--rounds" => {
                        rounds = it
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or_else(|| usage())
                    }
                    "--dir" => dir = PathBuf::from(it.next().unwrap_or_else(|| usage())),
                    "--quick" => quick = true,
                    _ => usage(),
                }
            }
            engine(rounds, &dir, quick);
        }
        _ => usage(),
    }
}

fn open_dev(path: &Path, direct: bool) -> Arc<dyn Device> {
    Arc::new(
        FileDevice::open(
            path,
            OpenOptions {
                read_only: false,
                direct,
                lock: true,
            },
        )
        .unwrap_or_else(|e| {
            eprintln!("lfs-bench: {}: {e}", path.display());
            std::process::exit(1)
        }),
    )
}

fn smoke(image: &Path) {
    let dev = open_dev(image, false);
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap_or_else(|e| {
        eprintln!("lfs-bench: mount {}: {e}", image.display());
        std::process::exit(1)
    });
    let r = fs.mount_report().clone();
    println!(
        "mounted {}: checkpoint region {} generation {}, clean unmount: {}",
        image.display(),
        r.region,
        r.generation,
        r.clean_unmount
    );
    let name = format!("smoke-{}", std::process::id());
    let a = fs.create(ROOT, name.as_bytes(), 0o644, C).unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    fs.write(a.ino, 0, &data).unwrap();
    fs.fsync(a.ino, false).unwrap();
    assert_eq!(fs.read(a.ino, 0, data.len() as u32).unwrap(), data);
    fs.unlink(ROOT, name.as_bytes()).unwrap();
    let st = fs.statfs().unwrap();
    fs.unmount().unwrap();
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    assert!(fs.lookup(ROOT, name.as_bytes()).is_err());
    fs.unmount().unwrap();
    println!(
        "smoke ok: wrote, fsync'd, read back and deleted 1 MB; {} of {} MiB free; unmounted cleanly",
        st.blocks_avail * 4096 / MIB,
        st.blocks * 4096 / MIB
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fresh_image(dir: &Path, size: u64, direct: bool) -> (PathBuf, Arc<dyn Device>) {
    let p = dir.join(format!("lfs-bench-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&p);
    FileDevice::create(&p, size).unwrap();
    let dev = open_dev(&p, direct);
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    (p, dev)
}

/// Peer: buffered write of `total` bytes in 1 MiB writes, then one fdatasync (dd conv=fdatasync).
fn raw_seq(dir: &Path, total: u64, direct: bool) -> f64 {
    let p = dir.join(format!("raw-{}.bin", std::process::id()));
    let mut o = StdOpen::new();
    o.write(true).create(true).truncate(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let mut f = o.open(&p).unwrap();
    let layout = std::alloc::Layout::from_size_align(MIB as usize, 4096).unwrap();
    // SAFETY: layout has non-zero size; the buffer is freed below and only used as bytes.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, MIB as usize) };
    buf.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    let t = Instant::now();
    for _ in 0..total / MIB {
        f.write_all(buf).unwrap();
    }
    f.sync_data().unwrap();
    let secs = t.elapsed().as_secs_f64();
    unsafe { std::alloc::dealloc(ptr, layout) };
    drop(f);
    let _ = std::fs::remove_file(&p);
    (total / MIB) as f64 / secs
}

/// Peer: random 4 KiB pwrites over a preallocated plain file, then fdatasync (update in place).
fn raw_random(dir: &Path, file_bytes: u64, writes: u64) -> f64 {
    let p = dir.join(format!("rawrand-{}.bin", std::process::id()));
    let f = StdOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let chunk = vec![7u8; MIB as usize];
    for i in 0..file_bytes / MIB {
        f.write_all_at(&chunk, i * MIB).unwrap();
    }
    f.sync_data().unwrap();
    let mut rng = SmallRng::seed_from_u64(42);
    let blk = vec![9u8; 4096];
    let t = Instant::now();
    for _ in 0..writes {
        let off = rng.gen_range(0..file_bytes / 4096) * 4096;
        f.write_all_at(&blk, off).unwrap();
    }
    f.sync_data().unwrap();
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&p);
    (writes * 4096) as f64 / MIB as f64 / secs
}

fn lfs_seq(dir: &Path, total: u64, direct: bool) -> f64 {
    let (p, dev) = fresh_image(dir, total * 2 + 512 * MIB, direct);
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    let a = fs.create(ROOT, b"big", 0o644, C).unwrap();
    let buf: Vec<u8> = (0..MIB as u32).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    for i in 0..total / MIB {
        fs.write(a.ino, i * MIB, &buf).unwrap();
    }
    fs.fsync(a.ino, false).unwrap();
    let secs = t.elapsed().as_secs_f64();
    fs.unmount().unwrap();
    let _ = std::fs::remove_file(&p);
    (total / MIB) as f64 / secs
}

fn lfs_small_files(dir: &Path, n: u64, direct: bool) -> (f64, f64, f64) {
    let (p, dev) = fresh_image(dir, 512 * MIB, direct);
    let fs = Fs::mount(dev.clone(), MountOptions::default()).unwrap();
    let d = fs.mkdir(ROOT, b"d", 0o755, C).unwrap();
    let data = vec![0x5au8; 1024];
    let t = Instant::now();
    let mut inos = Vec::with_capacity(n as usize);
    for i in 0..n {
        let a = fs
            .create(d.ino, format!("f{i}").as_bytes(), 0o644, C)
            .unwrap();
        fs.write(a.ino, 0, &data).unwrap();
        inos.push(a.ino);
    }
    fs.checkpoint().unwrap();
    let create = n as f64 / t.elapsed().as_secs_f64();
    // Read back from the device: remount so no dirty or cached state helps.
    fs.unmount().unwrap();
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let a = fs.lookup(d.ino, format!("f{i}").as_bytes()).unwrap();
        assert_eq!(fs.read(a.ino, 0, 4096).unwrap().len(), 1024);
    }
    let read = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        fs.unlink(d.ino, format!("f{i}").as_bytes()).unwrap();
    }
    fs.checkpoint().unwrap();
    let delete = n as f64 / t.elapsed().as_secs_f64();
    fs.unmount().unwrap();
    let _ = std::fs::remove_file(&p);
    (create, read, delete)
}

fn lfs_random(dir: &Path, file_bytes: u64, writes: u64, direct: bool) -> f64 {
    let (p, dev) = fresh_image(dir, file_bytes * 3 + 512 * MIB, direct);
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    let a = fs.create(ROOT, b"r", 0o644, C).unwrap();
    let chunk = vec![7u8; MIB as usize];
    for i in 0..file_bytes / MIB {
        fs.write(a.ino, i * MIB, &chunk).unwrap();
    }
    fs.fsync(a.ino, false).unwrap();
    let mut rng = SmallRng::seed_from_u64(42);
    let blk = vec![9u8; 4096];
    let t = Instant::now();
    for _ in 0..writes {
        let off = rng.gen_range(0..file_bytes / 4096) * 4096;
        fs.write(a.ino, off, &blk).unwrap();
    }
    fs.fsync(a.ino, false).unwrap();
    let secs = t.elapsed().as_secs_f64();
    fs.unmount().unwrap();
    let _ = std::fs::remove_file(&p);
    (writes * 4096) as f64 / MIB as f64 / secs
}

fn engine(rounds: usize, dir: &Path, quick: bool) {
    let seq = if quick { 256 * MIB } else { 1024 * MIB };
    let files = if quick { 2000 } else { 10_000 };
    let rfile = if quick { 64 * MIB } else { 256 * MIB };
    let rwrites = rfile / 4096;
    println!("lfs-bench engine: {rounds} rounds in {}, sequential {} MiB, {files} small files, {} random 4 KiB writes over {} MiB", dir.display(), seq / MIB, rwrites, rfile / MIB);
    let mut r: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        // Interleave peer and ours in each round so drift on a shared machine hits both.
        r.entry("raw_seq_buffered")
            .or_default()
            .push(raw_seq(dir, seq, false));
        r.entry("raw_seq_direct")
            .or_default()
            .push(raw_seq(dir, seq, true));
        r.entry("lfs_seq_direct")
            .or_default()
            .push(lfs_seq(dir, seq, true));
        r.entry("lfs_seq_buffered")
            .or_default()
            .push(lfs_seq(dir, seq, false));
        let (c, rd, d) = lfs_small_files(dir, files, true);
        r.entry("lfs_create").or_default().push(c);
        r.entry("lfs_read").or_default().push(rd);
        r.entry("lfs_delete").or_default().push(d);
        r.entry("raw_random")
            .or_default()
            .push(raw_random(dir, rfile, rwrites));
        r.entry("lfs_random")
            .or_default()
            .push(lfs_random(dir, rfile, rwrites, true));
    }
    let m = |k: &str| median(r[k].clone());
    println!("\nmedians of {rounds} rounds:");
    println!("  sequential write {} MiB + fsync:", seq / MIB);
    println!(
        "    raw file, buffered + fdatasync (dd conv=fdatasync): {:8.0} MiB/s",
        m("raw_seq_buffered")
    );
    println!(
        "    raw file, O_DIRECT + fdatasync:                    {:8.0} MiB/s",
        m("raw_seq_direct")
    );
    println!("    lfs, O_DIRECT image:                               {:8.0} MiB/s  ratio to dd conv=fdatasync {:.2}", m("lfs_seq_direct"), m("lfs_seq_direct") / m("raw_seq_buffered"));
    println!("    lfs, buffered image:                               {:8.0} MiB/s  ratio to dd conv=fdatasync {:.2}", m("lfs_seq_buffered"), m("lfs_seq_buffered") / m("raw_seq_buffered"));
    println!("  {files} files of 1 KiB (in-process, checkpoint after create and delete):");
    println!("    create+write: {:9.0} files/s", m("lfs_create"));
    println!(
        "    read back:    {:9.0} files/s (after remount)",
        m("lfs_read")
    );
    println!("    delete:       {:9.0} files/s", m("lfs_delete"));
    println!(
        "  random 4 KiB overwrites of a {} MiB file + fsync:",
        rfile / MIB
    );
    println!(
        "    raw file, pwrite in place + fdatasync: {:8.0} MiB/s",
        m("raw_random")
    );
    println!(
        "    lfs:                                   {:8.0} MiB/s  ratio {:.2}",
        m("lfs_random"),
        m("lfs_random") / m("raw_random")
    );
    println!("\nall rounds (MiB/s or files/s):");
    for (k, v) in &r {
        let s: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
        println!("  {k:18} {}", s.join(" "));
    }
}

/// Drop the kernel's page cache so reads go to the filesystem (root only; best effort).
fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn fsync_dir(d: &Path) {
    let f = std::fs::File::open(d).unwrap();
    f.sync_all().unwrap();
}

/// The workloads of issue 3 against any mounted directory; prints one `name value unit`
/// line each, for scripts/bench-fuse.sh to collect.
fn fs_workloads(dir: &Path, files: u64, mib: u64, tarball: Option<&Path>) {
    let d = dir.join("bench-small");
    std::fs::create_dir_all(&d).unwrap();
    let data = vec![0x5au8; 1024];
    let t = Instant::now();
    for i in 0..files {
        std::fs::write(d.join(format!("f{i}")), &data).unwrap();
    }
    fsync_dir(&d);
    println!(
        "small_create {:.0} files/s",
        files as f64 / t.elapsed().as_secs_f64()
    );
    drop_caches();
    let t = Instant::now();
    for i in 0..files {
        assert_eq!(std::fs::read(d.join(format!("f{i}"))).unwrap().len(), 1024);
    }
    println!(
        "small_read {:.0} files/s",
        files as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..files {
        std::fs::remove_file(d.join(format!("f{i}"))).unwrap();
    }
    fsync_dir(&d);
    println!(
        "small_delete {:.0} files/s",
        files as f64 / t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir(&d).unwrap();

    let big = dir.join("bench-seq");
    let buf: Vec<u8> = (0..MIB as u32).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..mib {
            f.write_all(&buf).unwrap();
        }
        f.sync_all().unwrap();
    }
    println!(
        "seq_write {:.0} MiB/s",
        mib as f64 / t.elapsed().as_secs_f64()
    );
    drop_caches();
    let t = Instant::now();
    let n = std::fs::read(&big).unwrap().len() as u64;
    assert_eq!(n, mib * MIB);
    println!(
        "seq_read {:.0} MiB/s",
        mib as f64 / t.elapsed().as_secs_f64()
    );

    // Random 4 KiB writes over the file just written, then fsync.
    let f = StdOpen::new().write(true).open(&big).unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let blk = vec![9u8; 4096];
    let writes = (mib * MIB / 4096 / 4).max(1);
    let t = Instant::now();
    for _ in 0..writes {
        let off = rng.gen_range(0..mib * MIB / 4096) * 4096;
        f.write_all_at(&blk, off).unwrap();
    }
    f.sync_all().unwrap();
    println!(
        "rand_write {:.1} MiB/s",
        (writes * 4096) as f64 / MIB as f64 / t.elapsed().as_secs_f64()
    );
    drop(f);
    std::fs::remove_file(&big).unwrap();

    // 4 KiB append + fsync, the latency of a durable small write.
    let log = dir.join("bench-append");
    let mut f = std::fs::File::create(&log).unwrap();
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&blk).unwrap();
        f.sync_data().unwrap();
    }
    println!(
        "append_fsync {:.0} ops/s",
        n as f64 / t.elapsed().as_secs_f64()
    );
    drop(f);
    std::fs::remove_file(&log).unwrap();

    if let Some(tb) = tarball {
        let u = dir.join("bench-untar");
        std::fs::create_dir_all(&u).unwrap();
        let t = Instant::now();
        let st = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(tb)
            .arg("-C")
            .arg(&u)
            .status()
            .unwrap();
        assert!(st.success());
        fsync_dir(&u);
        let mut bytes = 0u64;
        let mut stack = vec![u.clone()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else if e.file_type().unwrap().is_file() {
                    bytes += std::fs::read(e.path()).unwrap().len() as u64;
                }
            }
        }
        std::fs::remove_dir_all(&u).unwrap();
        fsync_dir(dir);
        println!(
            "untar_round {:.2} s ({} KiB read)",
            t.elapsed().as_secs_f64(),
            bytes / 1024
        );
    }
}
