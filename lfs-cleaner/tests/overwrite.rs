//! Sustained hot-and-cold overwrites at high utilization, in-process (the bounded cousin of
//! cleaner-bench): no ENOSPC, every block as last written, fsck clean — with the daemon
//! cleaning in the background and with foreground cleaning alone.
#![allow(clippy::unwrap_used)]

use lfs_cleaner::daemon::{Config, Daemon};
use lfs_cleaner::{CostBenefit, Greedy, Picker, Policy};
use lfs_core::device::{Device, MemDevice};
use lfs_core::fs::Creds;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use std::sync::Arc;
use std::time::Duration;

const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const BLOCK: usize = 4096;
const FILE_BLOCKS: u64 = 256;
const MIB_DEV: u64 = 64;

fn fill(buf: &mut [u8], f: u64, b: u64, v: u32) {
    let mut x = (f << 40) ^ (b << 20) ^ v as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for w in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

fn hot_cold(
    policy: Box<dyn Policy>,
    pct: u64,
    capacities: u64,
    daemon: bool,
) -> lfs_cleaner::Status {
    let dev: Arc<dyn Device> = Arc::new(MemDevice::new(MIB_DEV << 20));
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let name = policy.name().to_string();
    let fs = Arc::new(
        Fs::mount(
            dev.clone(),
            MountOptions {
                cleaner: Some(Arc::new(Picker { policy })),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let d = daemon.then(|| {
        let cfg = Config {
            policy: name,
            protection: Duration::ZERO,
            check_interval: Duration::from_millis(10),
            ..Config::default()
        };
        Daemon::start(fs.clone(), cfg, true).unwrap()
    });
    let sb = fs.superblock();
    // Utilization as df sees it: of the capacity less the cleaner's reserve.
    let capacity = (sb.nsegs - sb.reserved_segs as u64) * sb.seg_bytes();
    let files = capacity * pct / 100 / (FILE_BLOCKS * BLOCK as u64);
    let hot = (files / 10).max(1);
    let mut buf = vec![0u8; BLOCK];
    let mut inos = Vec::new();
    for f in 0..files {
        let a = fs
            .create(ROOT, format!("f{f}").as_bytes(), 0o644, C)
            .unwrap();
        for b in 0..FILE_BLOCKS {
            fill(&mut buf, f, b, 0);
            fs.write(a.ino, b * BLOCK as u64, &buf).unwrap();
        }
        inos.push(a.ino);
    }
    let mut version = vec![0u32; (files * FILE_BLOCKS) as usize];
    let mut x = 0x1234_5678_9abc_def1u64 ^ pct;
    let mut below = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x as u128 * n as u128) >> 64) as u64
    };
    let writes = capacity / BLOCK as u64 * capacities;
    for i in 0..writes {
        let f = if below(10) < 9 {
            below(hot)
        } else {
            hot + below(files - hot)
        };
        let b = below(FILE_BLOCKS);
        let v = &mut version[(f * FILE_BLOCKS + b) as usize];
        *v += 1;
        fill(&mut buf, f, b, *v);
        if let Err(e) = fs.write(inos[f as usize], b * BLOCK as u64, &buf) {
            let mut s = lfs_cleaner::Status::gather(&fs);
            s.mode = format!("write {i} of {writes}");
            panic!("{e}: {}", s.render());
        }
    }
    if let Some(d) = d {
        d.stop();
    }
    let st = lfs_cleaner::Status::gather(&fs);
    let mut want = vec![0u8; BLOCK];
    for f in 0..files {
        let got = fs
            .read(inos[f as usize], 0, (FILE_BLOCKS * BLOCK as u64) as u32)
            .unwrap();
        for (b, chunk) in got.chunks_exact(BLOCK).enumerate() {
            fill(
                &mut want,
                f,
                b as u64,
                version[(f * FILE_BLOCKS) as usize + b],
            );
            assert!(chunk == want.as_slice(), "f{f} block {b} differs");
        }
    }
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev).unwrap(), vec![]);
    st
}

#[test]
fn cost_benefit_at_75_percent_foreground_only() {
    let s = hot_cold(Box::new(CostBenefit), 75, 3, false);
    assert!(s.passes > 0, "{s:?}");
}

#[test]
fn greedy_at_90_percent_with_the_daemon() {
    let s = hot_cold(Box::new(Greedy), 90, 3, true);
    assert!(s.passes > 0, "{s:?}");
}
