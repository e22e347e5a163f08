//! The mount harness the FUSE tests share: a temporary image and mountpoint, the daemon as
//! our child (foreground), unmount by SIGTERM to its pid, fsck after, and a guard that
//! unmounts and stops the daemon whatever happens.
#![allow(clippy::unwrap_used)]

pub use crate::bin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn is_mounted(mnt: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mnt.to_str().unwrap();
    m.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// A mounted filesystem we own: its daemon (foreground, our child) and mountpoint.
pub struct Mounted {
    pub child: Option<Child>,
    pub img: PathBuf,
    pub mnt: PathBuf,
}

impl Mounted {
    pub fn new(img: &Path, mnt: &Path, extra: &[&str]) -> Mounted {
        let child = Command::new(bin("lfs-fuse"))
            .arg(img)
            .arg(mnt)
            .arg("-f")
            .args(extra)
            .spawn()
            .unwrap();
        let m = Mounted {
            child: Some(child),
            img: img.to_path_buf(),
            mnt: mnt.to_path_buf(),
        };
        let t = Instant::now();
        while !is_mounted(mnt) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// SIGTERM to our daemon; it must checkpoint, unmount and exit 0; then fsck-lfs -n -f
    /// must find the image clean.
    pub fn stop(mut self) {
        let mut c = self.child.take().unwrap();
        // SAFETY: signalling the process we spawned, by its pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut c, Duration::from_secs(30));
        assert_eq!(status, Some(0), "daemon exit status");
        assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
        let out = Command::new(bin("fsck-lfs"))
            .args(["-n", "-f"])
            .arg(&self.img)
            .output()
            .expect("fsck-lfs is built (cargo build --workspace)");
        assert_eq!(
            out.status.code(),
            Some(0),
            "fsck-lfs after the test: {out:?}"
        );
    }
}

impl Mounted {
    /// kill -9 of our daemon (a crash); the mount is left dead until the guard detaches it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

pub fn wait_timeout(c: &mut Child, d: Duration) -> Option<i32> {
    let t = Instant::now();
    while t.elapsed() < d {
        if let Ok(Some(s)) = c.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn setup(size: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("fs.img");
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new(bin("mkfs-lfs"))
        .arg("-q")
        .arg(&img)
        .arg(size)
        .status()
        .expect("mkfs-lfs is built (cargo build --workspace)");
    assert!(st.success());
    (d, img, mnt)
}
