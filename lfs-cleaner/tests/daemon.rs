//! The daemon cleans between its watermarks and obeys suspend; the `lfs-cleaner` command
//! reaches it through the control socket (status, pass, suspend, resume, --json) and cleans
//! an unmounted image offline. The FUSE mount itself is exercised by
//! scripts/cleaner-bench.sh; here the daemon runs in-process on an image file, with a
//! temporary directory standing for the mountpoint.
#![allow(clippy::unwrap_used)]

use lfs_cleaner::control::{find_socket, Server};
use lfs_cleaner::daemon::{Config, Daemon, Watermark};
use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::format::Ino;
use lfs_core::fs::Creds;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const MIB: u64 = 1 << 20;

fn image(dir: &Path, bytes: u64) -> std::path::PathBuf {
    let p = dir.join("img");
    let dev = FileDevice::create(&p, bytes).unwrap();
    mkfs(Arc::new(dev), &MkfsOptions::default()).unwrap();
    p
}

fn mount(p: &Path) -> Arc<Fs> {
    let dev: Arc<dyn Device> = Arc::new(
        FileDevice::open(
            p,
            OpenOptions {
                read_only: false,
                direct: false,
                lock: true,
            },
        )
        .unwrap(),
    );
    Arc::new(Fs::mount(dev, MountOptions::default()).unwrap())
}

/// Write files of `size` bytes to disk, then delete all but every `keep`th: with `keep`
/// files to a segment, most of each segment dies and none entirely.
fn fill_and_punch(fs: &Fs, files: u64, size: u64, keep: usize) -> Vec<(Ino, Vec<u8>)> {
    let mut kept = Vec::new();
    for i in 0..files {
        let a = fs
            .create(ROOT, format!("f{i}").as_bytes(), 0o644, C)
            .unwrap();
        let data: Vec<u8> = (0..size).map(|j| (i * 7 + j * 13) as u8).collect();
        fs.write(a.ino, 0, &data).unwrap();
        kept.push((a.ino, data));
    }
    fs.checkpoint().unwrap();
    for i in 0..files {
        if !(i as usize).is_multiple_of(keep) {
            fs.unlink(ROOT, format!("f{i}").as_bytes()).unwrap();
        }
    }
    fs.checkpoint().unwrap();
    kept.into_iter().step_by(keep).collect()
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lfs-cleaner"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unmount_and_fsck(fs: Arc<Fs>, img: &Path) {
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    let dev: Arc<dyn Device> = Arc::new(FileDevice::open(img, OpenOptions::default()).unwrap());
    assert_eq!(lfs_core::fsck::findings(dev).unwrap(), vec![]);
}

#[test]
fn daemon_cleans_up_to_the_high_watermark_and_obeys_suspend() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 96 * MIB);
    let fs = mount(&img);
    let kept = fill_and_punch(&fs, 340, MIB / 4, 4);
    let clean0 = fs.stats().clean_segments;
    // Watermarks above what is clean now, and a high one reachable only by cleaning.
    let cfg = Config {
        low: Watermark::Segments(clean0 + 5),
        high: Watermark::Segments(clean0 + 15),
        protection: Duration::ZERO,
        check_interval: Duration::from_millis(20),
        ..Config::default()
    };
    let d = Daemon::start(fs.clone(), cfg, true).unwrap();
    let h = d.handle();
    h.suspend();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs.stats().cleaner_passes, 0, "suspended, yet it cleaned");
    assert_eq!(h.status().state, "suspended");
    // The high watermark in force is at most a quarter of clean plus dead space.
    let high = h.status().high_watermark;
    assert!(high > clean0 + 5 && high <= clean0 + 15, "{clean0} {high}");
    h.resume();
    let t0 = Instant::now();
    while fs.stats().clean_segments < high && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = h.status();
    assert!(s.clean_segments >= high, "{s:?}");
    assert!(s.passes > 0 && s.segments_cleaned > 0 && s.blocks_moved > 0);
    let wc = s.write_cost.unwrap();
    assert!(wc > 1.0, "cleaning costs something: {wc}");
    let u = s.cleaned_utilization.unwrap();
    assert!(u < 0.5, "victims were about a quarter live: {u}");
    // Reached the high watermark: it stops (a pass more at most).
    std::thread::sleep(Duration::from_millis(300));
    let passes = fs.stats().cleaner_passes;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fs.stats().cleaner_passes,
        passes,
        "cleaning past the high watermark"
    );
    drop(h);
    d.stop();
    for (ino, data) in &kept {
        assert!(fs.read(*ino, 0, data.len() as u32).unwrap() == *data);
    }
    unmount_and_fsck(fs, &img);
}

#[test]
fn cli_talks_to_the_daemon_through_the_control_socket() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 64 * MIB);
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = std::fs::canonicalize(&mnt).unwrap();
    let fs = mount(&img);
    let kept = fill_and_punch(&fs, 60, MIB / 2, 2);
    let cfg = Config {
        low: Watermark::Segments(0),
        protection: Duration::ZERO,
        ..Config::default()
    };
    let d = Daemon::start(fs.clone(), cfg, true).unwrap();
    let server = Server::start(&mnt, d.handle()).unwrap();
    assert_eq!(find_socket(&mnt).as_deref(), Some(server.path()));
    let m = mnt.to_str().unwrap();

    let (ok, out, err) = cli(&["status", m]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cleaner: idle (daemon), policy cost-benefit"),
        "{out}"
    );
    assert!(out.contains("reclaimable"), "{out}");
    let (ok, out, _) = cli(&["--json", "status", m]);
    assert!(ok);
    let s: lfs_cleaner::Status = serde_json::from_str(&out).unwrap();
    assert!(s.reclaimable_bytes >= 10 * MIB, "{s:?}");
    assert_eq!(s.passes, 0);

    let (ok, out, err) = cli(&["suspend", m]);
    assert!(ok && out.contains("suspended"), "{err}");
    assert_eq!(d.handle().status().state, "suspended");
    // An explicit pass runs even while suspended.
    let (ok, out, err) = cli(&["--policy", "greedy", "--json", "pass", m, "--segments", "4"]);
    assert!(ok, "{err}");
    let r: lfs_cleaner::control::PassReport = serde_json::from_str(&out).unwrap();
    assert_eq!((r.segments.len(), r.freed), (4, 4), "{r:?}");
    assert_eq!(fs.stats().cleaner_passes, 1);
    // 9 MiB of dead space is left: four more clean segments are within reach.
    let goal = (d.handle().status().clean_segments + 4).to_string();
    let (ok, out, err) = cli(&["run", m, "--until-clean", &goal, "--quiet"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("clean segments (goal {goal})")),
        "{out}"
    );
    let (ok, _, _) = cli(&["resume", m]);
    assert!(ok);
    assert_eq!(d.handle().status().state, "idle");

    // Bad requests get clear errors.
    let (ok, _, err) = cli(&["--policy", "lru", "status", m]);
    assert!(!ok && err.contains("lru"), "{err}");
    let (ok, _, err) = cli(&["status", t.path().to_str().unwrap()]);
    assert!(!ok && err.contains("no cleaner daemon"), "{err}");
    let (ok, _, err) = cli(&["status", img.to_str().unwrap()]);
    assert!(!ok && err.contains("in use"), "{err}");

    server.stop();
    d.stop();
    for (ino, data) in &kept {
        assert!(fs.read(*ino, 0, data.len() as u32).unwrap() == *data);
    }
    unmount_and_fsck(fs, &img);
    assert!(find_socket(&mnt).is_none(), "socket left behind");
}

#[test]
fn cli_cleans_an_unmounted_image() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), 64 * MIB);
    let fs = mount(&img);
    let kept = fill_and_punch(&fs, 60, MIB / 2, 2);
    let before = fs.stats().clean_segments;
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    let i = img.to_str().unwrap();
    let (ok, out, err) = cli(&["status", i]);
    assert!(ok, "{err}");
    assert!(out.contains("(offline)"), "{out}");
    let (ok, out, err) = cli(&[
        "--json",
        "run",
        i,
        "--until-clean",
        &(before + 10).to_string(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["clean_segments"].as_u64().unwrap() >= before + 10, "{v}");
    // Asking for more than the live data allows stops with a reason, not a loop.
    let (ok, _, err) = cli(&["run", i, "--until-clean", "100%"]);
    assert!(!ok && err.contains("short of"), "{err}");
    let fs = mount(&img);
    for (ino, data) in &kept {
        assert!(fs.read(*ino, 0, data.len() as u32).unwrap() == *data);
    }
    unmount_and_fsck(fs, &img);
}
