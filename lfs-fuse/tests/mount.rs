//! lfs-fuse mounted for real: a temporary image and mountpoint, real syscalls, unmount by
//! SIGTERM to the daemon we started (by its pid), remount and compare. The guard unmounts
//! and stops the daemon whatever happens.
#![allow(clippy::unwrap_used)]

use lfs_tests::mount::*;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn xattr_set(p: &Path, k: &str, v: &[u8]) -> i32 {
    let (p, k) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(k).unwrap(),
    );
    // SAFETY: valid C strings and buffer.
    unsafe { libc::setxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) }
}

fn xattr_get(p: &Path, k: &str) -> Option<Vec<u8>> {
    let (p, k) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(k).unwrap(),
    );
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn operations_survive_unmount_and_remount() {
    let (_d, img, mnt) = setup("256M");
    let m = Mounted::new(&img, &mnt, &[]);
    let f = mnt.join("file");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::hard_link(&f, mnt.join("dir/link")).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().nlink(), 2);
    std::os::unix::fs::symlink("file", mnt.join("sym")).unwrap();
    std::fs::write(mnt.join("old"), b"old").unwrap();
    std::fs::write(mnt.join("new"), b"new").unwrap();
    std::fs::rename(mnt.join("new"), mnt.join("old")).unwrap(); // rename over
    std::fs::set_permissions(mnt.join("old"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(xattr_set(&f, "user.color", b"blue"), 0);
    let sparse = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(mnt.join("sparse"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (5 << 30) - 3).unwrap();
    sparse.sync_all().unwrap();
    drop(sparse);
    // Errors come back with the right errno.
    assert_eq!(
        errno_of(std::fs::write(mnt.join("x".repeat(256)), b"")),
        libc::ENAMETOOLONG
    );
    std::fs::write(mnt.join("x".repeat(255)), b"").unwrap();
    assert_eq!(
        errno_of(std::fs::remove_dir(mnt.join("dir"))),
        libc::ENOTEMPTY
    );
    assert_eq!(errno_of(std::fs::create_dir(mnt.join("dir"))), libc::EEXIST);
    assert_eq!(errno_of(std::fs::read(mnt.join("nope"))), libc::ENOENT);
    assert_eq!(xattr_get(&f, "user.none"), None);
    // statfs is honest.
    let vfs = nix_statvfs(&mnt);
    assert!(
        vfs.0 > 0 && vfs.1 <= vfs.0,
        "blocks {} free {}",
        vfs.0,
        vfs.1
    );
    m.stop();

    let m = Mounted::new(&img, &mnt, &[]);
    assert_eq!(std::fs::read(&f).unwrap(), data);
    assert_eq!(std::fs::read(mnt.join("dir/link")).unwrap(), data);
    assert_eq!(
        std::fs::read_link(mnt.join("sym")).unwrap(),
        Path::new("file")
    );
    assert_eq!(std::fs::read(mnt.join("old")).unwrap(), b"new");
    assert!(!mnt.join("new").exists());
    assert_eq!(
        std::fs::metadata(mnt.join("old")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(xattr_get(&f, "user.color").as_deref(), Some(&b"blue"[..]));
    let sp = std::fs::metadata(mnt.join("sparse")).unwrap();
    assert_eq!(sp.len(), 5 << 30);
    assert!(
        sp.blocks() < 64,
        "sparse file allocated {} sectors",
        sp.blocks()
    );
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    m.stop();
}

#[test]
fn second_mount_is_refused_and_bad_arguments_say_why() {
    let (d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let mnt2 = d.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let o = Command::new(bin("lfs-fuse"))
        .arg(&img)
        .arg(&mnt2)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already mounted or in use"), "{err}");
    assert!(!is_mounted(&mnt2));
    m.stop();
    for (args, want) in [
        (
            vec![
                img.to_str().unwrap(),
                d.path().join("none").to_str().unwrap(),
            ],
            "mountpoint",
        ),
        (
            vec![img.to_str().unwrap(), mnt.to_str().unwrap(), "-o", "bogus"],
            "unknown option 'bogus'",
        ),
        (
            vec![d.path().to_str().unwrap(), mnt.to_str().unwrap()],
            "is a directory",
        ),
        (vec![img.to_str().unwrap()], "expected IMAGE and MOUNTPOINT"),
    ] {
        let o = Command::new(bin("lfs-fuse")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Daemon mode: returns 0 only once the mount is live; fusermount3 -u ends it.
    let st = Command::new(bin("lfs-fuse"))
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        is_mounted(&mnt),
        "daemon returned before the mount was live"
    );
    std::fs::write(mnt.join("f"), b"x").unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    // The daemon takes its final checkpoint and exits; then the image is free again.
    let t = Instant::now();
    let m = loop {
        let c = Command::new(bin("lfs-fuse"))
            .arg(&img)
            .arg(&mnt)
            .arg("-f")
            .spawn()
            .unwrap();
        let mut g = Mounted {
            child: Some(c),
            img: img.clone(),
            mnt: mnt.clone(),
        };
        std::thread::sleep(Duration::from_millis(300));
        if is_mounted(&mnt) {
            break g;
        }
        let _ = g.child.as_mut().unwrap().wait();
        g.child = None;
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "image stayed locked after unmount"
        );
    };
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"x");
    m.stop();
}

fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs into a zeroed struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_blocks, s.f_bfree)
}

/// Run a shell command as `nobody` (uid and gid 65534, no supplementary groups); returns its
/// exit status and stderr.
fn as_nobody(script: &str) -> (i32, String) {
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux) runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn another_user_gets_only_what_the_modes_allow() {
    let (d, img, mnt) = setup("64M");
    // Our temporary directory is 0700; the other user must be able to reach the mountpoint.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mounted::new(&img, &mnt, &[]);
    std::fs::write(mnt.join("public"), b"p").unwrap();
    // Without allow_other, FUSE keeps every other user out of the whole mount.
    let (rc, err) = as_nobody(&format!("cat {}/public", mnt.display()));
    assert_ne!(rc, 0, "another user read a mount without allow_other");
    assert!(err.contains("Permission denied"), "{err}");
    m.stop();

    let m = Mounted::new(&img, &mnt, &["-o", "allow_other"]);
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(mnt.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    std::fs::write(mnt.join("secret"), b"s").unwrap();
    mode("secret", 0o600);
    mode("public", 0o644);
    std::fs::create_dir(mnt.join("closed")).unwrap();
    mode("closed", 0o755);
    std::fs::create_dir(mnt.join("shared")).unwrap();
    mode("shared", 0o1777);
    std::fs::write(mnt.join("shared/roots"), b"r").unwrap();
    mode(".", 0o755);
    let m_ = mnt.display();
    for (script, should_succeed) in [
        (format!("cat {m_}/public"), true),
        (format!("cat {m_}/secret"), false),
        (format!("echo x >> {m_}/public"), false),
        (format!("touch {m_}/closed/mine"), false),
        (format!("rm -f {m_}/public"), false),
        (format!("chmod 666 {m_}/public"), false),
        (format!("chown 65534 {m_}/public"), false),
        // The sticky bit: others may create here, but not remove root's file.
        (format!("echo n > {m_}/shared/nobodys"), true),
        (format!("rm -f {m_}/shared/roots"), false),
        (format!("mv {m_}/shared/roots {m_}/shared/gone"), false),
        (format!("rm {m_}/shared/nobodys"), true),
        (format!("echo n > {m_}/shared/kept"), true),
    ] {
        let (rc, err) = as_nobody(&script);
        assert_eq!(rc == 0, should_succeed, "as nobody: {script}: {err}");
    }
    let kept = std::fs::metadata(mnt.join("shared/kept")).unwrap();
    assert_eq!((kept.uid(), kept.gid()), (65534, 65534));
    assert_eq!(std::fs::read(mnt.join("public")).unwrap(), b"p");
    assert!(mnt.join("shared/roots").exists());
    m.stop();
}

/// One operation of a table-driven test.
type Op<'a> = Box<dyn Fn() + 'a>;

/// Set-ID bits and file capabilities go as on Linux (the table was taken on ext4 here): the
/// kernel leaves killing them to us (FUSE_HANDLE_KILLPRIV_V2), and stat(2) must see the
/// result at once even when the write went through the writeback cache.
#[test]
fn writes_truncates_and_chown_kill_privileges_as_linux_does() {
    let (d, img, mnt) = setup("64M");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mounted::new(&img, &mnt, &["-o", "allow_other"]);
    std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = mnt.join("f");
    std::fs::write(&f, b"0").unwrap();
    let fs_ = f.display().to_string();
    let set = |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
    // statx(2) for the mode alone, as `stat -c %A` and ls ask: the kernel answers from its
    // cache when the mode is still valid there (a write invalidates only size and times), and
    // the point is what the kernel has cached.
    let mode = || {
        let c = CString::new(fs_.as_bytes()).unwrap();
        // SAFETY: a valid C string and a zeroed statx buffer.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MODE, &mut st) };
        assert_eq!(rc, 0);
        u32::from(st.stx_mode) & 0o7777
    };
    let chown = |uid: i32, gid: i32| {
        let c = CString::new(fs_.as_bytes()).unwrap();
        // SAFETY: a valid C string; -1 (as u32) leaves owner or group alone.
        assert_eq!(
            unsafe { libc::chown(c.as_ptr(), uid as u32, gid as u32) },
            0
        );
    };
    let root_append = || {
        use std::io::Write;
        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        h.write_all(b"r").unwrap();
        h.sync_all().unwrap();
    };
    let root_truncate = |len: u64| {
        let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        h.set_len(len).unwrap();
    };
    let nobody = |script: &str| {
        let (rc, err) = as_nobody(script);
        assert_eq!(rc, 0, "as nobody: {script}: {err}");
    };
    // (what, mode before, the operation, mode after)
    let cases: Vec<(&str, u32, Op, u32)> = vec![
        (
            "write by another user",
            0o6777,
            Box::new(|| nobody(&format!("echo n >> {fs_}"))),
            0o777,
        ),
        ("write by root", 0o6777, Box::new(root_append), 0o6777),
        (
            "truncate by another user",
            0o6777,
            Box::new(|| nobody(&format!("truncate -s 1 {fs_}"))),
            0o777,
        ),
        (
            "truncate by root",
            0o6777,
            Box::new(|| root_truncate(3)),
            0o6777,
        ),
        // Set-group-ID without group execute goes only for a caller outside the group.
        (
            "write by another user, no group execute",
            0o2767,
            Box::new(|| nobody(&format!("echo n >> {fs_}"))),
            0o767,
        ),
        (
            "fallocate by another user",
            0o6777,
            Box::new(|| nobody(&format!("fallocate -l 100000 {fs_}"))),
            0o777,
        ),
        (
            "chown to the same owner",
            0o6777,
            Box::new(|| chown(0, 0)),
            0o777,
        ),
        ("chown(-1, -1)", 0o6777, Box::new(|| chown(-1, -1)), 0o777),
        (
            "chown by root, no group execute",
            0o2767,
            Box::new(|| chown(0, 0)),
            0o2767,
        ),
    ];
    for (what, before, op, after) in &cases {
        set(*before);
        assert_eq!(mode(), *before, "{what}: set up");
        op();
        assert_eq!(mode(), *after, "{what}: mode {:o}, want {after:o}", mode());
    }
    // A file capability (a valid VFS_CAP_REVISION_2 value: cap_net_raw, effective) goes on
    // every write, truncate and chown, whoever makes it; a chmod keeps it. (Setting it makes
    // the kernel look again, and it removes what it finds itself; the engine's own removal
    // is tested in lfs-core/tests/basic.rs.)
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    let name = "security.capability";
    let cap_ops: Vec<(&str, Op, bool)> = vec![
        ("write", Box::new(root_append), false),
        ("truncate", Box::new(|| root_truncate(0)), false),
        ("chown(-1, -1)", Box::new(|| chown(-1, -1)), false),
        ("chmod", Box::new(|| set(0o755)), true),
    ];
    for (what, op, kept) in &cap_ops {
        assert_eq!(xattr_set(&f, name, &cap), 0, "{what}: set the capability");
        assert_eq!(xattr_get(&f, name).as_deref(), Some(&cap[..]));
        op();
        assert_eq!(xattr_get(&f, name).is_some(), *kept, "{what}");
    }
    // And all of it is on disk.
    set(0o6777);
    nobody(&format!("echo n >> {fs_}"));
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    assert_eq!(mode(), 0o777);
    assert_eq!(xattr_get(&f, name), None);
    m.stop();
}

#[test]
fn hundred_thousand_entries_in_one_directory() {
    const N: usize = 100_000;
    let (_d, img, mnt) = setup("2G");
    let m = Mounted::new(&img, &mnt, &[]);
    let dir = mnt.join("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..N {
        std::fs::File::create(dir.join(format!("entry-{i:06}"))).unwrap();
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().nlink(), 2);
    m.stop();

    let m = Mounted::new(&img, &mnt, &[]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), N, "readdir after remount");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N, "readdir returned duplicates");
    assert_eq!(names[0], "entry-000000");
    assert_eq!(names[N - 1], format!("entry-{:06}", N - 1));
    // Lookups by name find each entry without a listing.
    for i in (0..N).step_by(997) {
        assert!(dir.join(format!("entry-{i:06}")).exists());
    }
    // Delete every other entry while reading the directory: no entry is skipped or repeated.
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        seen += 1;
        let i: usize = name["entry-".len()..].parse().unwrap();
        if i.is_multiple_of(2) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    assert_eq!(seen, N);
    m.stop();

    let m = Mounted::new(&img, &mnt, &[]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), N / 2);
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::remove_dir(&dir).unwrap();
    m.stop();
}

#[test]
fn fsynced_data_survives_kill_9_of_the_daemon() {
    use std::io::Write;
    let (_d, img, mnt) = setup("256M");
    let mut m = Mounted::new(&img, &mnt, &[]);
    // Files written and fsync'd while a writer thread keeps appending without fsync.
    let mut synced: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    std::fs::create_dir(mnt.join("dir")).unwrap();
    for i in 0..40u32 {
        let p = mnt.join(format!("dir/f{i}"));
        let data: Vec<u8> = (0..(i * 7919) % 300_000).map(|j| (j ^ i) as u8).collect();
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        synced.push((p, data));
        // An unsynced neighbour: may or may not survive, must not break anything.
        std::fs::write(mnt.join(format!("dir/u{i}")), b"unsynced").unwrap();
    }
    // A rename made durable by fsync of the directory.
    std::fs::rename(mnt.join("dir/f0"), mnt.join("dir/renamed")).unwrap();
    std::fs::File::open(mnt.join("dir"))
        .unwrap()
        .sync_all()
        .unwrap();
    synced[0].0 = mnt.join("dir/renamed");
    // Power cut, as far as the daemon can tell: SIGKILL, no final checkpoint.
    let mut c = m.child.take().unwrap();
    // SAFETY: killing the daemon we spawned, by its pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(&mnt)
        .status();
    drop(m);

    let m = Mounted::new(&img, &mnt, &[]);
    for (p, data) in &synced {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            data,
            "{} after kill -9",
            p.display()
        );
    }
    assert!(!mnt.join("dir/f0").exists(), "the rename was fsync'd");
    m.stop();
}

fn sh(script: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// POSIX ACLs as ext4 keeps them, set with setfacl as users do: enforced for another user
/// (a deny on a readable file, an allow on a private one), kept in step with the mode
/// (chmod moves the mask; an ACL the mode says all of just sets the mode, as cp -a does),
/// inherited from a directory's default ACL (no umask then), and all of it after a remount.
#[test]
fn posix_acls_are_enforced_inherited_and_kept_in_step_with_the_mode() {
    let (d, img, mnt) = setup("64M");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mounted::new(&img, &mnt, &["-o", "allow_other"]);
    let m_ = mnt.display().to_string();
    sh(&format!(
        "cd {m_} && chmod 755 . && echo open > open && chmod 644 open && \
         echo private > private && chmod 600 private && \
         setfacl -m u:nobody:--- open && setfacl -m u:nobody:r private"
    ));
    let (rc, err) = as_nobody(&format!("cat {m_}/open"));
    assert_ne!(rc, 0, "a deny ACL entry was not enforced");
    assert!(err.contains("Permission denied"), "{err}");
    let (rc, err) = as_nobody(&format!("cat {m_}/private"));
    assert_eq!(rc, 0, "an allow ACL entry was not enforced: {err}");
    // chmod moves the mask: nobody's entry is masked off, the entry itself kept.
    sh(&format!("chmod 600 {m_}/private"));
    let (rc, _) = as_nobody(&format!("cat {m_}/private"));
    assert_ne!(rc, 0, "chmod 600 left nobody reading through the ACL");
    let acl = sh(&format!("getfacl -c {m_}/private"));
    assert!(
        acl.contains("user:nobody:r--") && acl.contains("mask::---"),
        "{acl}"
    );
    // An ACL equivalent to a mode becomes the mode, stored as no ACL (cp -a, tar, mv).
    sh(&format!(
        "cd {m_} && touch plain && chmod 600 plain && setfacl --set u::rwx,g::r-x,o::r-- plain"
    ));
    assert_eq!(
        std::fs::metadata(mnt.join("plain"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o754
    );
    assert!(xattr_get(&mnt.join("plain"), "system.posix_acl_access").is_none());
    // Inheritance: a default ACL replaces the umask and passes to files and subdirectories.
    sh(&format!(
        "cd {m_} && mkdir inherit && setfacl -d -m u:nobody:rwx,m::rwx inherit && \
         umask 077 && touch inherit/file && mkdir inherit/sub"
    ));
    let f = sh(&format!("getfacl -c {m_}/inherit/file"));
    assert!(
        f.contains("user:nobody:rwx") && f.contains("mask::rw-"),
        "{f}"
    );
    let s = sh(&format!("getfacl -c {m_}/inherit/sub"));
    assert!(s.contains("default:user:nobody:rwx"), "{s}");
    let (rc, err) = as_nobody(&format!("echo hi > {m_}/inherit/file"));
    assert_eq!(rc, 0, "the inherited ACL was not enforced: {err}");
    // The owner outside the file's group sets an ACL: the set-group-ID bit goes, as with
    // chmod (xfstests generic/375); inside the group it stays.
    for (gid, kept) in [(65534, true), (0, false)] {
        sh(&format!(
            "cd {m_} && rm -f sgid && touch sgid && chown 65534:{gid} sgid && chmod 2755 sgid"
        ));
        let (rc, err) = as_nobody(&format!("setfacl -m u::rwx,g::rwx,o::rwx {m_}/sgid"));
        assert_eq!(rc, 0, "{err}");
        let mode = std::fs::metadata(mnt.join("sgid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o2000 != 0, kept, "group {gid}: mode {mode:o}");
    }
    m.stop();
    // All of it survives a remount.
    let m = Mounted::new(&img, &mnt, &["-o", "allow_other"]);
    assert_eq!(sh(&format!("getfacl -c {m_}/inherit/file")), f);
    let (rc, _) = as_nobody(&format!("cat {m_}/open"));
    assert_ne!(rc, 0, "the deny entry was lost at remount");
    m.stop();
}

/// cp -a of a real tree keeps every mode (it sets them through an ACL equivalent to each
/// mode: every file came out 600 and every directory 700 before ACLs were understood).
#[test]
fn cp_a_keeps_modes() {
    let (_d, img, mnt) = setup("256M");
    let m = Mounted::new(&img, &mnt, &[]);
    let src = "/usr/share/doc";
    let dst = mnt.join("doc");
    sh(&format!("cp -a {src} {}", dst.display()));
    // Mode, owner, group, mtime, path, and the size of all but directories (whose size
    // is the filesystem's own business: ext4 says 4096, we say 0).
    let listing = |root: &str| -> Vec<String> {
        sh(&format!(
            "cd {root} && find . -printf '%M %U %G %T@ %p %s\\n' | sort"
        ))
        .lines()
        .map(|l| match l.starts_with('d') {
            true => l.rsplit_once(' ').map_or(l, |(a, _)| a).to_string(),
            false => l.to_string(),
        })
        .collect()
    };
    let (a, b) = (listing(src), listing(dst.to_str().unwrap()));
    assert!(a.len() > 100, "a small tree: {}", a.len());
    let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(5).collect();
    assert!(
        differ.is_empty() && a.len() == b.len(),
        "cp -a changed: {differ:?}"
    );
    m.stop();
}

/// A directory removed, or renamed over, while open lives on as ext4's does: fstat shows it
/// with no links, reading it gives nothing, and it is freed at its last close (or, after a
/// crash, at the next mount).
#[test]
fn an_open_directory_outlives_its_removal() {
    use std::os::unix::io::AsRawFd;
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    std::fs::create_dir(mnt.join("gone")).unwrap();
    std::fs::create_dir(mnt.join("old")).unwrap();
    std::fs::create_dir(mnt.join("new")).unwrap();
    let gone = std::fs::File::open(mnt.join("gone")).unwrap();
    let replaced = std::fs::File::open(mnt.join("old")).unwrap();
    std::fs::remove_dir(mnt.join("gone")).unwrap();
    std::fs::rename(mnt.join("new"), mnt.join("old")).unwrap();
    for f in [&gone, &replaced] {
        let md = f.metadata().expect("fstat of an open, removed directory");
        assert!(md.is_dir());
        assert_eq!(md.nlink(), 0);
        // getdents on it: nothing (Linux answers ENOENT for a dead directory).
        let mut buf = [0u8; 4096];
        // SAFETY: getdents64 into a local buffer on a descriptor we own.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                f.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n <= 0, "entries read from a removed directory");
    }
    drop(replaced);
    drop(gone);
    m.stop(); // fsck clean: both freed at their last close
              // A crash with a removed directory still open: freed at the next mount, fsck clean.
    let mut m = Mounted::new(&img, &mnt, &[]);
    std::fs::create_dir(mnt.join("orphan")).unwrap();
    let held = std::fs::File::open(mnt.join("orphan")).unwrap();
    std::fs::remove_dir(mnt.join("orphan")).unwrap();
    std::fs::File::open(mnt.join("."))
        .unwrap()
        .sync_all()
        .unwrap();
    m.kill9();
    drop(held);
    drop(m);
    let m = Mounted::new(&img, &mnt, &[]);
    assert!(!mnt.join("orphan").exists());
    m.stop();
}

/// name_to_handle_at / open_by_handle_at, across a remount (what an NFS server restarting
/// does): the handle opens the same file; a deleted file's handle gives ESTALE.
#[test]
fn file_handles_survive_a_remount_and_go_stale_with_the_file() {
    use std::io::Read;
    use std::os::unix::io::{AsRawFd, FromRawFd};
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; 128],
    }
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::write(mnt.join("dir/kept"), b"kept data").unwrap();
    std::fs::write(mnt.join("dir/doomed"), b"x").unwrap();
    let handle_of = |p: &Path| {
        let mut h = Handle {
            bytes: 128,
            kind: 0,
            data: [0; 128],
        };
        let mut mount_id = 0;
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a handle buffer of 128 bytes after its header, as `bytes` says.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c.as_ptr(),
                &mut h as *mut Handle,
                &mut mount_id as *mut i32,
                0,
            )
        };
        assert_eq!(
            rc,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        h
    };
    let mut kept = handle_of(&mnt.join("dir/kept"));
    let mut dir = handle_of(&mnt.join("dir"));
    let mut doomed = handle_of(&mnt.join("dir/doomed"));
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    std::fs::remove_file(mnt.join("dir/doomed")).unwrap();
    let root = std::fs::File::open(&mnt).unwrap();
    let open = |h: &mut Handle, flags: i32| -> Result<std::fs::File, i32> {
        // SAFETY: open_by_handle_at with a handle from name_to_handle_at.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                h as *mut Handle,
                flags,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: a descriptor the kernel just gave us.
        Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
    };
    let mut s = String::new();
    open(&mut kept, libc::O_RDONLY)
        .expect("the file's handle after a remount")
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "kept data");
    let d = open(&mut dir, libc::O_RDONLY | libc::O_DIRECTORY).expect("the directory's handle");
    assert!(d.metadata().unwrap().is_dir());
    // The deleted file: the kernel may still hold the inode (unlinked: ESTALE from it), or
    // ask us (a freed inode: ESTALE).
    assert_eq!(open(&mut doomed, libc::O_RDONLY).err(), Some(libc::ESTALE));
    drop(d);
    drop(root);
    m.stop();
}

/// With the writeback cache the data reaches us seconds after write(2); the times a file
/// shows must stay those of the writes, across a remount: one descriptor, two descriptors
/// writing in turn, truncate then write with the file held open.
#[test]
fn times_are_those_of_the_writes_not_of_the_flush() {
    use std::io::{Seek, Write};
    use std::os::unix::fs::FileExt;
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let times = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec())
    };
    let mut seen = Vec::new();
    // One descriptor.
    let p1 = mnt.join("one");
    let mut f = std::fs::File::create(&p1).unwrap();
    f.write_all(&vec![1u8; 8 << 20]).unwrap();
    seen.push((p1.clone(), times(&p1)));
    // Two descriptors writing in turn.
    let p2 = mnt.join("two");
    let a = std::fs::File::create(&p2).unwrap();
    let b = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
    a.write_at(&vec![2u8; 4 << 20], 0).unwrap();
    b.write_at(&vec![3u8; 4 << 20], 4 << 20).unwrap();
    seen.push((p2.clone(), times(&p2)));
    // Truncate, then write, the file held open.
    let p3 = mnt.join("three");
    let mut c = std::fs::File::create(&p3).unwrap();
    c.write_all(&[4u8; 80_000]).unwrap();
    c.set_len(1000).unwrap();
    c.seek(std::io::SeekFrom::End(0)).unwrap();
    c.write_all(&vec![5u8; 8 << 20]).unwrap();
    seen.push((p3.clone(), times(&p3)));
    // Let the flush come well after the writes, then close and unmount.
    std::thread::sleep(Duration::from_millis(2500));
    drop((f, a, b, c));
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    for (p, t) in &seen {
        assert_eq!(
            times(p),
            *t,
            "{} changed its times at the flush",
            p.display()
        );
    }
    m.stop();
}

/// SEEK_DATA / SEEK_HOLE as ext4 answers them (a sparse file's data and holes, block by
/// block; ENXIO at the end), and honest st_blocks right after fsync.
#[test]
fn seek_data_and_hole_and_blocks_after_fsync() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let p = mnt.join("sparse");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(&[1u8; 4096]).unwrap();
    f.write_at(&[2u8; 8192], 8 << 20).unwrap();
    f.set_len(16 << 20).unwrap(); // a hole to the end
    f.sync_all().unwrap();
    // Three data blocks (and the tree nodes that map them), counted at once.
    let blocks = f.metadata().unwrap().blocks();
    assert!(
        (3 * 8..=8 * 8).contains(&blocks),
        "st_blocks {blocks} right after fsync"
    );
    drop(f);
    let f = std::fs::File::open(&p).unwrap();
    let seek = |off: i64, whence: i32| -> Result<i64, i32> {
        // SAFETY: lseek on a descriptor we own.
        let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    };
    let (data, hole) = (libc::SEEK_DATA, libc::SEEK_HOLE);
    assert_eq!(seek(0, data), Ok(0));
    assert_eq!(seek(0, hole), Ok(4096));
    assert_eq!(seek(100, hole), Ok(4096));
    assert_eq!(seek(4096, data), Ok(8 << 20));
    assert_eq!(seek((8 << 20) + 5, data), Ok((8 << 20) + 5));
    assert_eq!(seek(8 << 20, hole), Ok((8 << 20) + 8192));
    assert_eq!(
        seek((8 << 20) + 8192, data),
        Err(libc::ENXIO),
        "only a hole to the end"
    );
    assert_eq!(seek((8 << 20) + 8192, hole), Ok((8 << 20) + 8192));
    assert_eq!(seek(16 << 20, data), Err(libc::ENXIO));
    assert_eq!(seek(16 << 20, hole), Err(libc::ENXIO));
    drop(f);
    // Open for writing through the cache, the kernel may hold data (and an end of file) we
    // have not seen: every byte is data then, never ENXIO inside the kernel's file, never a
    // hole before data (stress-ng's seek stressor checks the first).
    let w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    w.write_at(&[6u8; 4096], 20 << 20).unwrap(); // past our end, in the kernel's cache
    for off in [4096i64, 18 << 20, (20 << 20) + 100] {
        // SAFETY: lseek on a descriptor we own.
        let d = unsafe { libc::lseek(w.as_raw_fd(), off, libc::SEEK_DATA) };
        assert_eq!(d, off, "SEEK_DATA {off} with a cached writer");
        // SAFETY: as above.
        let h = unsafe { libc::lseek(w.as_raw_fd(), off, libc::SEEK_HOLE) };
        assert!(h >= off, "SEEK_HOLE {off} gave {h}");
    }
    drop(w);
    m.stop();
}

/// `mount -o remount,ro` and back, as on ext4: writes get EROFS in between, and work again.
#[test]
fn remount_read_only_and_back() {
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    std::fs::write(mnt.join("before"), b"1").unwrap();
    let remount = |how: &str| {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount -o remount,{how}");
    };
    remount("ro");
    let e = std::fs::write(mnt.join("during"), b"2").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert_eq!(std::fs::read(mnt.join("before")).unwrap(), b"1");
    remount("rw");
    std::fs::write(mnt.join("after"), b"3").unwrap();
    // The same through the mount helper's way: `lfs-fuse IMG MNT -o remount,ro`.
    for how in ["remount,ro", "remount,rw"] {
        let st = Command::new(bin("lfs-fuse"))
            .arg(&img)
            .arg(&mnt)
            .args(["-o", how])
            .status()
            .unwrap();
        assert!(st.success(), "lfs-fuse -o {how}");
        let e = std::fs::write(mnt.join("helper"), b"4");
        assert_eq!(e.is_err(), how.ends_with("ro"), "{how}: {e:?}");
    }
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    assert!(mnt.join("before").exists() && mnt.join("after").exists());
    assert!(!mnt.join("during").exists());
    m.stop();
}

#[test]
fn fstrim_gives_deleted_space_back_to_the_image() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (d, img, mnt) = setup("256M");
    let m = Mounted::new(&img, &mnt, &["-o", "allow_other"]);
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(mnt.join("big"), &data).unwrap();
    std::fs::write(mnt.join("small"), b"kept").unwrap();
    let st = Command::new("sync").arg(mnt.join("big")).status().unwrap();
    assert!(st.success());
    let used = || std::fs::metadata(&img).unwrap().blocks() * 512;
    assert!(used() >= 64 << 20, "the image holds the file: {}", used());
    std::fs::remove_file(mnt.join("big")).unwrap();
    // Another user may not (CAP_SYS_ADMIN, as on ext4).
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (rc, said) = as_nobody(&format!("fstrim {}", mnt.display()));
    assert!(rc != 0 && said.contains("not permitted"), "{rc} {said}");
    let out = Command::new("fstrim").arg("-v").arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("trimmed"));
    assert!(used() < 8 << 20, "the image still holds {} bytes", used());
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"kept");
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"kept");
    m.stop();
}

#[test]
fn chattr_immutable_and_append_only_hold_on_a_mount() {
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let sh = |script: &str| -> (bool, String) {
        let o = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&mnt)
            .output()
            .unwrap();
        let said =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        (o.status.success(), said)
    };
    assert!(sh("echo hi > f && mkdir d && chattr +i f && chattr +a d").0);
    let (_, attrs) = sh("lsattr -d f d");
    assert!(
        attrs.contains("----i") && attrs.contains("-----a"),
        "{attrs}"
    );
    // Each must fail with EPERM, as on ext4.
    for denied in [
        "echo x >> f",
        "rm f",
        "mv f g",
        "ln f g",
        "chmod 600 f",
        "touch f",
        "setfattr -n user.k -v v f",
        "truncate -s 0 f",
        "touch d/n && rm d/n",
    ] {
        let (ok, said) = sh(denied);
        assert!(!ok && said.contains("not permitted"), "{denied}: {said}");
    }
    assert!(
        sh("test -e d/n").0,
        "an append-only directory takes new names"
    );
    assert!(sh("chattr -i f && chattr +a f && echo more >> f && touch f").0);
    let (ok, said) = sh("echo over > f");
    assert!(!ok && said.contains("not permitted"), "{said}");
    // Flags this filesystem does not keep are refused, not silently dropped.
    let (ok, said) = sh("chattr +c f");
    assert!(!ok && said.contains("not supported"), "{said}");
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    let (_, attrs) = sh("lsattr f");
    assert!(attrs.contains("-----a"), "{attrs}");
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"hi\nmore\n");
    assert!(sh("chattr -a f d && rm f d/n && rmdir d").0);
    m.stop();
}

#[test]
fn o_tmpfile_and_birth_time() {
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    let named = mnt.join("named");
    // xfs_io -T opens the directory with O_TMPFILE; flink names the file (linkat with
    // AT_EMPTY_PATH). A second one is never named.
    let xfs_io_tmpfile = |cmds: &[&str]| {
        let mut c = Command::new("xfs_io");
        c.arg("-T");
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        let out = c.arg(&mnt).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    xfs_io_tmpfile(&[
        "pwrite -S 0x61 0 5000",
        &format!("flink {}", named.display()),
    ]);
    xfs_io_tmpfile(&["pwrite 0 100000"]);
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("named")]);
    assert_eq!(std::fs::read(&named).unwrap(), vec![b'a'; 5000]);
    // statx's birth time is the creation time, kept across a remount.
    // (The kernel stamps mtime from its coarse clock, the daemon crtime from a fine one:
    // they may be a tick apart either way.)
    let born = std::fs::metadata(&named).unwrap().created().unwrap();
    let modified = std::fs::metadata(&named).unwrap().modified().unwrap();
    let apart = born
        .duration_since(modified)
        .or(modified.duration_since(born))
        .unwrap();
    assert!(
        apart < Duration::from_secs(2),
        "born {born:?}, modified {modified:?}"
    );
    m.stop();
    let m = Mounted::new(&img, &mnt, &[]);
    assert_eq!(std::fs::metadata(&named).unwrap().created().unwrap(), born);
    m.stop();
    let out = Command::new(bin("fsck-lfs"))
        .args(["-n", "-f"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
