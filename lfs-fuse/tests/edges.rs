//! Data safety at the edges, on a real mount with default options: a disk filled through the
//! kernel's writeback cache answers ENOSPC at write(2) and keeps every byte it acknowledged;
//! `umount` returns with the image durable and free (a kill -9 right after loses nothing);
//! `auto_unmount` works daemonized; `noexec`/`nosuid`/`nodev` do what mount(8) promises;
//! an image is not writable twice through a loop device; a log file that cannot be opened
//! fails the mount.
#![allow(clippy::unwrap_used)]

use lfs_tests::mount::*;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 7 + k / 4093) as u8).collect()
}

fn umount(mnt: &Path) {
    let st = Command::new("umount").arg(mnt).status().unwrap();
    assert!(st.success(), "umount {}", mnt.display());
}

fn fsck(img: &Path) -> std::process::Output {
    Command::new(bin("fsck-lfs"))
        .args(["-n", "-f"])
        .arg(img)
        .output()
        .unwrap()
}

/// dd-like: 1 MiB write(2)s on the default mount (writeback cache on) until one fails. It
/// must fail with ENOSPC, soon; what write(2) acknowledged must all be there after a
/// remount; deleting the file makes room at once.
#[test]
fn a_full_disk_answers_enospc_at_write_and_keeps_what_it_acknowledged() {
    let (_d, img, mnt) = setup("128M");
    let m = Mounted::new(&img, &mnt, &[]);
    let chunk = pattern(1 << 20);
    let path = mnt.join("fill");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut acked = 0u64;
    let t = Instant::now();
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => acked += n as u64,
            Err(e) => break e,
        }
        // A guard against the old livelock (the write never failing), not a speed check.
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "still writing after {acked} bytes"
        );
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(acked > 64 << 20, "ENOSPC after only {acked} bytes");
    // Closing must not report a lost writeback either.
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), acked);
    m.stop(); // SIGTERM, exit 0, fsck clean
    let m = Mounted::new(&img, &mnt, &[]);
    let back = std::fs::read(&path).unwrap();
    assert_eq!(back.len() as u64, acked, "acknowledged bytes lost");
    for (i, c) in back.chunks(1 << 20).enumerate() {
        assert!(c == &chunk[..c.len()], "MiB {i} differs");
    }
    // Space comes back with the delete, and writing works again at once.
    std::fs::remove_file(&path).unwrap();
    let mut g = std::fs::File::create(mnt.join("again")).unwrap();
    for _ in 0..32 {
        g.write_all(&chunk).unwrap();
    }
    g.sync_all().unwrap();
    drop(g);
    m.stop();
}

/// Five rounds of: write, `umount` (or `fusermount3 -u`), kill -9 of the daemon at once. The
/// image must be free and clean the moment umount returns, and hold everything.
#[test]
fn umount_returns_with_the_image_durable_and_free() {
    let (_d, img, mnt) = setup("64M");
    for round in 0..5 {
        let mut m = Mounted::new(&img, &mnt, &[]);
        let dir = mnt.join(format!("d{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), pattern(100_000 + round)).unwrap();
        if round % 2 == 0 {
            umount(&mnt);
        } else {
            let st = Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .status()
                .unwrap();
            assert!(st.success());
        }
        m.kill9();
        let out = fsck(&img);
        assert_eq!(out.status.code(), Some(0), "round {round}: {out:?}");
        drop(m);
    }
    let m = Mounted::new(&img, &mnt, &[]);
    for round in 0..5 {
        let back = std::fs::read(mnt.join(format!("d{round}/f"))).unwrap();
        assert!(back == pattern(100_000 + round), "round {round} lost");
    }
    m.stop();
}

/// `-o auto_unmount` daemonized: the command returns once mounted, and when the daemon is
/// killed the mount goes away by itself.
#[test]
fn auto_unmount_returns_and_cleans_up_after_a_killed_daemon() {
    let (_d, img, mnt) = setup("64M");
    let mut c = Command::new(bin("lfs-fuse"))
        .arg(&img)
        .arg(&mnt)
        .args(["-o", "auto_unmount"])
        .spawn()
        .unwrap();
    let st = wait_timeout(&mut c, Duration::from_secs(30));
    if st.is_none() {
        let _ = c.kill();
    }
    assert_eq!(st, Some(0), "lfs-fuse -o auto_unmount did not return");
    assert!(is_mounted(&mnt));
    // The daemon is the process holding the image's lock.
    let pid = daemon_pid(&img).expect("the daemon's pid");
    // SAFETY: the daemon our command started, by pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    while is_mounted(&mnt) {
        assert!(t.elapsed() < Duration::from_secs(20), "still mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the process that holds `img` open for writing (our daemon), from /proc.
fn daemon_pid(img: &Path) -> Option<i32> {
    let want = std::fs::canonicalize(img).ok()?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        if !exe.ends_with("lfs-fuse") {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == want))
        {
            return Some(pid);
        }
    }
    None
}

/// exec/noexec, suid/nosuid, dev/nodev: ext4's root defaults, and the `no` forms refuse.
#[test]
fn exec_suid_and_dev_are_honoured() {
    let (_d, img, mnt) = setup("64M");
    let script = mnt.join("hello.sh");
    let node = mnt.join("null");
    let flags = |mnt: &Path| -> String {
        let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let want = mnt.to_str().unwrap().to_string();
        m.lines()
            .find(|l| l.split(' ').nth(4) == Some(&want))
            .map(|l| l.split(' ').nth(5).unwrap().to_string())
            .unwrap()
    };
    for noes in [false, true] {
        let opts: &[&str] = if noes {
            &["-o", "noexec,nosuid,nodev"]
        } else {
            &[]
        };
        let m = Mounted::new(&img, &mnt, opts);
        if !noes {
            std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
            // SAFETY: mknod of a character device (1,3: /dev/null) at a path of ours.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            assert_eq!(rc, 0);
            assert!(std::fs::metadata(&node)
                .unwrap()
                .file_type()
                .is_char_device());
        }
        // findmnt, df and xfstests find the mount by the image's absolute path and our type.
        let out = Command::new("findmnt")
            .args(["-rn", "-o", "TARGET,FSTYPE", "-S"])
            .arg(std::fs::canonicalize(&img).unwrap())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{} fuseblk.lfs-fuse", mnt.display())
        );
        let ran = Command::new(&script).output();
        let wrote = std::fs::OpenOptions::new()
            .write(true)
            .open(&node)
            .and_then(|mut f| f.write_all(b"x"));
        let f = flags(&mnt);
        if noes {
            let e = ran.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EACCES), "noexec: {e}");
            assert_eq!(
                wrote.unwrap_err().raw_os_error(),
                Some(libc::EACCES),
                "nodev"
            );
            for w in ["noexec", "nosuid", "nodev"] {
                assert!(f.split(',').any(|x| x == w), "{w} not in {f}");
            }
        } else {
            let out = ran.unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
            wrote.unwrap();
            for w in ["noexec", "nosuid", "nodev"] {
                assert!(!f.split(',').any(|x| x == w), "{w} in {f} by default");
            }
        }
        m.stop();
    }
}

/// One writer per image, whatever path leads to it: the image file, a loop device over it
/// (set up by hand), or the loop device our own mount set up.
#[test]
fn a_loop_device_over_a_mounted_image_is_refused() {
    let (d, img, mnt) = setup("64M");
    let mnt2 = d.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let refused = |src: &Path| {
        let out = Command::new(bin("lfs-fuse"))
            .arg(src)
            .arg(&mnt2)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} mounted twice",
            src.display()
        );
        assert!(!is_mounted(&mnt2));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // Our mount's own anchor.
    let m = Mounted::new(&img, &mnt, &[]);
    let anchor = loop_devices_of(&img);
    assert_eq!(anchor.len(), 1, "one loop device anchors the mount");
    let e = refused(&anchor[0]);
    assert!(e.contains("in use"), "{e}");
    // A loop device of the user's over the mounted image.
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "losetup: {out:?}");
    let user_loop = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    struct Detach(std::path::PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _detach = Detach(user_loop.clone());
    let e = refused(&user_loop);
    assert!(e.contains("in use"), "{e}");
    m.stop();
    // And the other way round: mounted through the user's loop device, the file is refused.
    let m = Mounted::new(&user_loop, &mnt, &[]);
    let e = refused(&img);
    assert!(e.contains("in use"), "{e}");
    m.stop();
}

/// Loop devices whose backing file is `img`.
fn loop_devices_of(img: &Path) -> Vec<std::path::PathBuf> {
    let out = Command::new("losetup").arg("-j").arg(img).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(std::path::PathBuf::from)
        .collect()
}

#[test]
fn a_log_file_that_cannot_be_opened_fails_the_mount() {
    let (d, img, mnt) = setup("64M");
    let bad = d.path().join("no/such/dir/lfs.log");
    let out = Command::new(bin("lfs-fuse"))
        .arg(&img)
        .arg(&mnt)
        .arg("-o")
        .arg(format!("logfile={}", bad.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("logfile") && e.contains("lfs.log"), "{e}");
    assert!(!is_mounted(&mnt));
}

/// What makes data durable without an fsync of one's own, then kill -9: `sync MNT` (coreutils
/// fsyncs the directory, which reaches us and covers everything) and, since `sync` and
/// `syncfs` never reach a FUSE daemon, the commit interval (`-o commit=1` here).
#[test]
fn sync_of_the_mountpoint_and_the_commit_interval_make_data_durable() {
    let (_d, img, mnt) = setup("64M");
    for (round, how) in ["sync MNT", "commit"].iter().enumerate() {
        let mut m = Mounted::new(&img, &mnt, &["-o", "commit=1,checkpoint_interval=3600"]);
        let dir = mnt.join(format!("d{round}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), pattern(300_000 + round)).unwrap();
        if *how == "sync MNT" {
            let st = Command::new("sync").arg(&mnt).status().unwrap();
            assert!(st.success());
        } else {
            // Two commit intervals and the daemon's one-second tick.
            std::thread::sleep(Duration::from_millis(3500));
        }
        m.kill9();
        drop(m); // lazily detaches the dead mount
        let m = Mounted::new(&img, &mnt, &[]);
        let back = std::fs::read(dir.join("f")).unwrap_or_default();
        assert!(back == pattern(300_000 + round), "{how}: data lost");
        m.stop();
    }
}

#[test]
fn sync_after_deleting_a_file_just_written_succeeds() {
    // The kernel writes back the times it cached for the file after the unlink freed it;
    // that SETATTR failed, and `sync -f` reported "Stale file handle".
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    for i in 0..3 {
        let f = mnt.join(format!("f{i}"));
        std::fs::write(&f, pattern(5000 + i)).unwrap();
        std::fs::remove_file(&f).unwrap();
        let out = Command::new("sync").arg("-f").arg(&mnt).output().unwrap();
        assert!(
            out.status.success(),
            "sync -f after rm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    m.stop();
}

/// `fallocate -l 8M f`, fill the disk with another file through the cache until ENOSPC,
/// then write f's whole range: no ENOSPC (posix_fallocate's promise), and all of it is
/// there after a remount.
#[test]
fn fallocated_space_survives_a_full_disk() {
    use std::os::unix::io::AsRawFd;
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let f = std::fs::File::create(mnt.join("pre")).unwrap();
    // SAFETY: posix_fallocate on a descriptor we own.
    assert_eq!(
        unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, 8 << 20) },
        0
    );
    let mut hog = std::fs::File::create(mnt.join("hog")).unwrap();
    let chunk = pattern(1 << 20);
    let err = loop {
        if let Err(e) = hog.write(&chunk) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    hog.sync_all().unwrap();
    drop(hog);
    let mut f = f;
    let data = pattern(8 << 20);
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    assert!(std::fs::read(mnt.join("pre")).unwrap() == data);
    m.stop();
}

/// A write past the largest file size (16 TiB) gets EFBIG at write(2), as on ext4, when
/// the kernel asks us for each write (`nowriteback`, and every file opened while space is
/// tight). With the writeback cache the kernel accepts it without asking — FUSE gives a
/// filesystem no way to state its size limit — and the next fsync or close reports EIO
/// (docs/RECOVERY.md); nothing else is lost.
#[test]
fn a_write_past_the_size_limit_gets_efbig() {
    use std::os::unix::fs::FileExt;
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &["-o", "nowriteback"]);
    let f = std::fs::File::create(mnt.join("big")).unwrap();
    let e = f.write_at(b"x", 1 << 44).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    f.write_at(b"y", (1 << 44) - 1).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 44);
    drop(f);
    m.stop();
}

/// `umount & mount` (xfstests generic/604): the new mount waits for the old daemon's final
/// checkpoint instead of failing on the image's lock; a mount over a live one still fails
/// at once.
#[test]
fn a_mount_racing_the_previous_unmount_waits_for_it() {
    let (d, img, mnt) = setup("64M");
    let mut m = Mounted::new(&img, &mnt, &[]);
    for i in 0..300 {
        std::fs::write(mnt.join(format!("f{i}")), b"x").unwrap();
    }
    let mut um = Command::new("umount").arg(&mnt).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    let mut old = m.child.take().unwrap();
    drop(m);
    let m2 = Mounted::new(&img, &mnt, &[]);
    assert!(um.wait().unwrap().success());
    assert_eq!(wait_timeout(&mut old, Duration::from_secs(30)), Some(0));
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 300);
    // A second mount of the live image elsewhere is refused at once.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let t = Instant::now();
    let out = Command::new(bin("lfs-fuse"))
        .arg(&img)
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited on a live mount"
    );
    m2.stop();
}
