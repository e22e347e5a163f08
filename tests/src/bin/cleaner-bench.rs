//! The cleaner on a real mount: a hot-and-cold overwrite workload (90% of the writes to 10%
//! of the data, 4 KiB blocks at random in 1 MiB files) on an lfs-fuse mount filled to a
//! given utilization, writing many times the disk's capacity. Prints the measured write
//! cost (from the daemon's own counters, through `lfs-cleaner --json status`) next to the
//! simulator's for the same disk, utilization and policy; fails on ENOSPC, on any content
//! mismatch at the end, or if fsck-lfs finds damage after the unmount.
//!
//! cleaner-bench [--mib 256] [--at 75,90] [--policies cost-benefit,greedy]
//!               [--capacities 10] [--warmup 2] [--dir /var/tmp]
//!
//! The tools (lfs-fuse, mkfs-lfs, lfs-cleaner, fsck-lfs) are taken from the directory of
//! this binary (cargo build --release puts them together).

use lfs_cleaner::sim::{self, Access, SimConfig};
use lfs_cleaner::{policy_by_name, Status};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const FILE_BYTES: u64 = 1 << 20;
const FILE_BLOCKS: u64 = FILE_BYTES / BLOCK as u64;

struct Args {
    mib: u64,
    at: Vec<u64>,
    policies: Vec<String>,
    capacities: f64,
    warmup: f64,
    dir: PathBuf,
    /// Extra -o options for lfs-fuse (gc_low=…, gc_high=…).
    gc: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        mib: 256,
        at: vec![75, 90],
        policies: vec!["cost-benefit".into(), "greedy".into()],
        capacities: 10.0,
        warmup: 2.0,
        dir: PathBuf::from("/var/tmp"),
        gc: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("{k} {v}: not a number");
        let badf = |_: std::num::ParseFloatError| format!("{k} {v}: not a number");
        match k.as_str() {
            "--mib" => a.mib = v.parse().map_err(bad)?,
            "--capacities" => a.capacities = v.parse().map_err(badf)?,
            "--warmup" => a.warmup = v.parse().map_err(badf)?,
            "--dir" => a.dir = PathBuf::from(v),
            "--gc" => a.gc = v,
            "--at" => {
                a.at = v
                    .split(',')
                    .map(|s| s.parse().ok().filter(|u| (1..=95).contains(u)))
                    .collect::<Option<_>>()
                    .ok_or(format!("--at {v}: percentages from 1 to 95"))?
            }
            "--policies" => {
                a.policies = v.split(',').map(String::from).collect();
                if let Some(p) = a.policies.iter().find(|p| policy_by_name(p).is_none()) {
                    return Err(format!("--policies: {p}: not greedy or cost-benefit"));
                }
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

fn tool(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A mount we made: unmounted and its daemon ended (by pid) however we leave.
struct Mount {
    dir: PathBuf,
    mnt: PathBuf,
    child: Option<Child>,
}

impl Mount {
    fn new(parent: &Path, mib: u64, policy: &str, extra: &str) -> Result<Mount, String> {
        let dir = parent.join(format!("cleaner-bench.{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mnt = dir.join("mnt");
        let mut m = Mount {
            dir,
            mnt,
            child: None,
        };
        std::fs::create_dir(&m.mnt).map_err(|e| e.to_string())?;
        let img = m.dir.join("img");
        run(Command::new(tool("mkfs-lfs"))
            .arg("-q")
            .arg(&img)
            .arg(format!("{mib}M")))?;
        let log = File::create(m.dir.join("daemon.log")).map_err(|e| e.to_string())?;
        let child = Command::new(tool("lfs-fuse"))
            .arg(&img)
            .arg(&m.mnt)
            .args(["-f", "-o"])
            .arg(format!(
                "nowriteback,gc_policy={policy}{}{extra}",
                if extra.is_empty() { "" } else { "," }
            ))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("lfs-fuse: {e}"))?;
        m.child = Some(child);
        let t = Instant::now();
        while !mounted(&m.mnt) {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("mount failed: {}", m.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(m)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn status(&self) -> Result<Status, String> {
        let out = Command::new(tool("lfs-cleaner"))
            .args(["--json", "status"])
            .arg(&self.mnt)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Unmount, wait for the daemon's clean exit, fsck the image.
    fn finish(mut self) -> Result<(), String> {
        run(Command::new("fusermount3").arg("-u").arg(&self.mnt))?;
        if let Some(mut c) = self.child.take() {
            let st = c.wait().map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("lfs-fuse exited with {st}: {}", self.log()));
            }
        }
        run(Command::new(tool("fsck-lfs"))
            .args(["-n", "-f"])
            .arg(self.dir.join("img")))
        .map_err(|e| format!("fsck after the run: {e}"))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mnt)
                .status();
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The contents of block `b` of file `f` at version `v`: 4 KiB no other triple gives.
fn fill(buf: &mut [u8], f: u64, b: u64, v: u32) {
    let mut x = (f << 40) ^ (b << 20) ^ v as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for w in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 as u128 * n as u128) >> 64) as u64
    }
}

struct Outcome {
    utilization: f64,
    /// File data as a fraction of the disk (what the simulator calls utilization).
    data: f64,
    low: u64,
    high: u64,
    reserved: u64,
    /// Segments a foreground burst cleans beyond the reserve: a pass's worth (8), at most
    /// a quarter of the dead space (as the engine does).
    burst: u64,
    write_cost: f64,
    cleaned_utilization: f64,
    written_mib: u64,
    secs: f64,
    segments: u64,
    seg_blocks: usize,
}

fn one(a: &Args, policy: &str, pct: u64) -> Result<Outcome, String> {
    let m = Mount::new(&a.dir, a.mib, policy, &a.gc)?;
    let out = workload(a, &m, pct).map_err(|e| {
        let log = m.log();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let st = m.status().map(|s| s.render()).unwrap_or_default();
        format!(
            "{e}\n{st}daemon log (last lines, newest first):\n  {}",
            tail.join("\n  ")
        )
    });
    let out = out?;
    m.finish()?;
    Ok(out)
}

fn workload(a: &Args, m: &Mount, pct: u64) -> Result<Outcome, String> {
    let s0 = m.status()?;
    let capacity = s0.segments * s0.segment_bytes;
    let files = (capacity * pct / 100 / FILE_BYTES).max(10);
    let hot = (files / 10).max(1);
    let mut version = vec![0u32; (files * FILE_BLOCKS) as usize];
    let mut buf = vec![0u8; BLOCK];
    let handles: Vec<File> = (0..files)
        .map(|f| {
            let fh = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(m.mnt.join(format!("f{f}")))
                .map_err(|e| format!("create f{f}: {e}"))?;
            let mut big = vec![0u8; FILE_BYTES as usize];
            for (b, chunk) in big.chunks_exact_mut(BLOCK).enumerate() {
                fill(chunk, f, b as u64, 0);
            }
            fh.write_all_at(&big, 0)
                .map_err(|e| format!("fill f{f}: {e}"))?;
            Ok(fh)
        })
        .collect::<Result<_, String>>()?;
    let blocks_per_capacity = capacity / BLOCK as u64;
    let warm = (blocks_per_capacity as f64 * a.warmup) as u64;
    let total = warm + (blocks_per_capacity as f64 * a.capacities) as u64;
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ pct);
    let mut s1 = None;
    let t0 = Instant::now();
    let mut t1 = t0;
    for i in 0..total {
        if i == warm {
            s1 = Some(m.status()?);
            t1 = Instant::now();
        }
        let f = if rng.below(10) < 9 {
            rng.below(hot)
        } else {
            hot + rng.below(files - hot)
        };
        let b = rng.below(FILE_BLOCKS);
        let v = &mut version[(f * FILE_BLOCKS + b) as usize];
        *v += 1;
        fill(&mut buf, f, b, *v);
        handles[f as usize]
            .write_all_at(&buf, b * BLOCK as u64)
            .map_err(|e| {
                format!(
                    "write {} of {total} (f{f} block {b}): {e}{}",
                    i + 1,
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        " — ENOSPC"
                    } else {
                        ""
                    }
                )
            })?;
    }
    let secs = t1.elapsed().as_secs_f64();
    let s2 = m.status()?;
    let s1 = s1.unwrap_or_else(|| s0.clone());
    // Every block as last written.
    let mut want = vec![0u8; BLOCK];
    for (f, fh) in handles.iter().enumerate() {
        let mut got = vec![0u8; FILE_BYTES as usize];
        fh.read_exact_at(&mut got, 0)
            .map_err(|e| format!("read f{f}: {e}"))?;
        for (b, chunk) in got.chunks_exact(BLOCK).enumerate() {
            fill(
                &mut want,
                f as u64,
                b as u64,
                version[f * FILE_BLOCKS as usize + b],
            );
            if chunk != want.as_slice() {
                return Err(format!(
                    "f{f} block {b}: content differs from the last write"
                ));
            }
        }
    }
    drop(handles);
    let new = s2.new_blocks - s1.new_blocks;
    if std::env::var_os("CLEANER_BENCH_DEBUG").is_some() {
        eprintln!(
            "user blocks {} new {} read {} written {} moved {} passes {} cleaned {}",
            total - warm,
            new,
            s2.blocks_read - s1.blocks_read,
            s2.blocks_written - s1.blocks_written,
            s2.blocks_moved - s1.blocks_moved,
            s2.passes - s1.passes,
            s2.segments_cleaned - s1.segments_cleaned
        );
        eprintln!("{}", s2.render());
    }
    let read = s2.blocks_read - s1.blocks_read;
    let written = s2.blocks_written - s1.blocks_written;
    let out = Outcome {
        utilization: s2.live_bytes as f64 / capacity as f64,
        data: (files * FILE_BYTES) as f64 / capacity as f64,
        low: s2.low_watermark,
        high: s2.high_watermark,
        reserved: s2.reserved_segments,
        burst: (s2.reclaimable_bytes / s2.segment_bytes / 4).clamp(1, 8),
        write_cost: (new + read + written) as f64 / new.max(1) as f64,
        cleaned_utilization: s2.cleaned_utilization.unwrap_or(0.0),
        written_mib: ((total - warm) * BLOCK as u64) >> 20,
        secs,
        segments: s0.segments,
        seg_blocks: (s0.segment_bytes / BLOCK as u64) as usize,
    };
    Ok(out)
}

fn main() {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cleaner-bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "hot-and-cold (90% of writes to 10% of the data), {} MiB image, {}x capacity measured \
         after {}x warm-up",
        a.mib, a.capacities, a.warmup
    );
    println!(
        "{:>5} {:>8} {:<13} {:>10} {:>10} {:>8} {:>9} {:>8} {:>10} {:>9}",
        "util",
        "live",
        "policy",
        "write cost",
        "simulated",
        "ratio",
        "eng.model",
        "ratio",
        "cleaned u",
        "MiB/s"
    );
    let mut failed = false;
    for &pct in &a.at {
        for policy in &a.policies {
            match one(&a, policy, pct) {
                Ok(o) => {
                    let p = policy_by_name(policy)
                        .unwrap_or_else(|| Box::new(lfs_cleaner::CostBenefit));
                    // The same disk, data and write-back buffer; cleaning starts at the
                    // engine's reserve (or the daemon's low watermark) and goes on for a
                    // burst of a pass (or to the daemon's high watermark), as in the mount.
                    let reserve = o.reserved.max(o.low).max(1);
                    let cfg = SimConfig {
                        segments: o.segments as usize,
                        seg_blocks: o.seg_blocks,
                        reserve: reserve as usize,
                        clean_target: (reserve + o.burst).max(o.high) as usize,
                        buffer_blocks: lfs_core::MountOptions::default().writeback_blocks as usize,
                        ..SimConfig::paper(o.data, Access::PAPER_HOT_COLD)
                    };
                    let simulated = sim::simulate(p.as_ref(), &cfg)
                        .map(|r| r.write_cost)
                        .unwrap_or(f64::NAN);
                    // The engine model: the same, plus the engine's metadata and its rule
                    // that buffered writes have room above the reserve.
                    let model = SimConfig {
                        admission: true,
                        metadata: Some(sim::Metadata {
                            file_blocks: FILE_BLOCKS as usize,
                            checkpoint_blocks: 3,
                            deferred_nodes: false,
                        }),
                        ..cfg
                    };
                    let modelled = sim::simulate(p.as_ref(), &model)
                        .map(|r| r.write_cost)
                        .unwrap_or(f64::NAN);
                    println!(
                        "{:>4}% {:>7.1}% {:<13} {:>10.2} {:>10.2} {:>8.2} {:>9.2} {:>8.2} {:>9.1}% {:>9.1}",
                        pct,
                        o.utilization * 100.0,
                        policy,
                        o.write_cost,
                        simulated,
                        o.write_cost / simulated,
                        modelled,
                        o.write_cost / modelled,
                        o.cleaned_utilization * 100.0,
                        o.written_mib as f64 / o.secs
                    );
                }
                Err(e) => {
                    println!("{pct:>4}% {policy}: FAILED: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
