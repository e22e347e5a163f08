//! Hostile names, offsets and sizes on a real mount, each answered with the right errno:
//! names empty, '.', '..', 255 and 256 bytes, non-UTF-8; offsets at and beyond 2^63 and at
//! the maximum file size; a directory tree deeper than PATH_MAX; xattrs at and past every
//! limit; symlink loops and over-long targets. What was accepted survives a remount, and
//! fsck finds the image clean.
#![allow(clippy::unwrap_used)]

use lfs_tests::mount::*;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Max file size of the format (lfs_core::format::inode::MAX_FILE_SIZE).
const MAX_FILE_SIZE: i64 = 1 << 44;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn cb(b: &[u8]) -> CString {
    CString::new(b).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno of a call returning -1 on failure, 0 if it worked.
fn err_of(r: i64) -> i32 {
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn create_at(dir: i32, name: &[u8]) -> i32 {
    // SAFETY: a valid C string; the fd is closed right away.
    let fd = unsafe {
        libc::openat(
            dir,
            cb(name).as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )
    };
    if fd < 0 {
        return errno();
    }
    unsafe { libc::close(fd) };
    0
}

fn open_dir(p: &Path) -> i32 {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c(p).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {}: errno {}", p.display(), errno());
    fd
}

fn names_and_links(mnt: &Path) {
    let root = open_dir(mnt);
    let n255 = vec![b'n'; 255];
    let n256 = vec![b'n'; 256];
    let odd: &[u8] = b"bad-\xff\xfe-utf8-\x01";
    let cases: [(&[u8], i32); 5] = [
        (b".", libc::EISDIR),
        (b"..", libc::EISDIR),
        (&n255, 0),
        (&n256, libc::ENAMETOOLONG),
        (odd, 0),
    ];
    for (name, want) in cases {
        let got = create_at(root, name);
        assert_eq!(got, want, "create {:?}", String::from_utf8_lossy(name));
    }
    // SAFETY: valid C strings for the calls below.
    unsafe {
        assert_eq!(
            err_of(libc::mkdirat(root, cb(b"").as_ptr(), 0o755) as i64),
            libc::ENOENT
        );
        assert_eq!(
            err_of(libc::mkdirat(root, cb(&n256).as_ptr(), 0o755) as i64),
            libc::ENAMETOOLONG
        );
        assert_eq!(
            err_of(libc::unlinkat(root, cb(&n256).as_ptr(), 0) as i64),
            libc::ENAMETOOLONG
        );
        assert_eq!(
            err_of(libc::unlinkat(root, cb(b"nothere").as_ptr(), 0) as i64),
            libc::ENOENT
        );
        assert_eq!(
            err_of(libc::unlinkat(root, cb(b".").as_ptr(), libc::AT_REMOVEDIR) as i64),
            libc::EINVAL
        );
        assert_eq!(
            err_of(libc::renameat(root, cb(&n255).as_ptr(), root, cb(&n256).as_ptr()) as i64),
            libc::ENAMETOOLONG
        );
        assert_eq!(
            err_of(libc::linkat(root, cb(&n255).as_ptr(), root, cb(&n256).as_ptr(), 0) as i64),
            libc::ENAMETOOLONG
        );
        // A '/' inside a name is a path: the directory does not exist.
        assert_eq!(
            err_of(libc::mkdirat(root, cb(b"no-such-dir/x").as_ptr(), 0o755) as i64),
            libc::ENOENT
        );
        // Symlinks: a loop, a target at the limit and past it.
        assert_eq!(
            libc::symlinkat(cb(b"loop-b").as_ptr(), root, cb(b"loop-a").as_ptr()),
            0
        );
        assert_eq!(
            libc::symlinkat(cb(b"loop-a").as_ptr(), root, cb(b"loop-b").as_ptr()),
            0
        );
        assert_eq!(
            err_of(libc::openat(root, cb(b"loop-a").as_ptr(), libc::O_RDONLY) as i64),
            libc::ELOOP
        );
        let t4095 = vec![b't'; 4095];
        assert_eq!(
            libc::symlinkat(cb(&t4095).as_ptr(), root, cb(b"long-link").as_ptr()),
            0
        );
        let t4096 = vec![b't'; 4096];
        assert_eq!(
            err_of(libc::symlinkat(cb(&t4096).as_ptr(), root, cb(b"too-long").as_ptr()) as i64),
            libc::ENAMETOOLONG
        );
        libc::close(root);
    }
    assert_eq!(
        std::fs::read_link(mnt.join("long-link"))
            .unwrap()
            .as_os_str()
            .len(),
        4095
    );
}

/// `writeback`: the mount uses the kernel's writeback cache. FUSE gives the kernel no way to
/// learn a filesystem's maximum file size (its s_maxbytes is fixed at 2^63 - 1), so with the
/// cache a write past ours lands in the page cache and fails at writeback: the error then
/// reaches fsync. Without the cache it fails at once.
fn offsets_and_sizes(mnt: &Path, name: &str, writeback: bool) {
    let p = mnt.join(name);
    std::fs::write(&p, b"start").unwrap();
    // SAFETY: valid C string and buffers; the fd is closed at the end.
    unsafe {
        let fd = libc::open(c(&p).as_ptr(), libc::O_RDWR);
        assert!(fd >= 0);
        let b = b"x";
        // At the maximum file size: the last byte can be written, the next cannot.
        assert_eq!(libc::pwrite(fd, b.as_ptr().cast(), 1, MAX_FILE_SIZE - 1), 1);
        assert_eq!(libc::fsync(fd), 0);
        let past = libc::pwrite(fd, b.as_ptr().cast(), 1, MAX_FILE_SIZE);
        if writeback && past == 1 {
            assert_eq!(
                err_of(libc::fsync(fd) as i64),
                libc::EFBIG,
                "the failed write-back reaches fsync"
            );
        } else {
            assert_eq!(err_of(past as i64), libc::EFBIG);
        }
        assert_eq!(
            err_of(libc::ftruncate(fd, MAX_FILE_SIZE + 1) as i64),
            libc::EFBIG
        );
        // At and beyond 2^63 (the end would overflow, or the offset is negative): EINVAL.
        assert_eq!(
            err_of(libc::pwrite(fd, b.as_ptr().cast(), 1, i64::MAX) as i64),
            libc::EINVAL
        );
        assert_eq!(
            err_of(libc::pwrite(fd, b.as_ptr().cast(), 1, -1) as i64),
            libc::EINVAL
        );
        assert_eq!(err_of(libc::ftruncate(fd, -1) as i64), libc::EINVAL);
        // Reading far past the end returns nothing.
        let mut buf = [0u8; 16];
        assert_eq!(libc::pread(fd, buf.as_mut_ptr().cast(), 16, 1 << 62), 0);
        assert_eq!(
            libc::pread(fd, buf.as_mut_ptr().cast(), 1, MAX_FILE_SIZE - 1),
            1
        );
        assert_eq!(buf[0], b'x');
        assert_eq!(err_of(libc::lseek(fd, -1, libc::SEEK_SET)), libc::EINVAL);
        libc::close(fd);
    }
    if !writeback {
        assert_eq!(std::fs::metadata(&p).unwrap().len(), MAX_FILE_SIZE as u64);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"start");
}

fn xattr_limits(mnt: &Path) {
    let p = mnt.join("xattrs");
    std::fs::write(&p, b"").unwrap();
    let set = |name: &[u8], v: &[u8]| -> i32 {
        // SAFETY: valid C strings and buffer.
        let r = unsafe {
            libc::setxattr(
                c(&p).as_ptr(),
                cb(name).as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0,
            )
        };
        err_of(r as i64)
    };
    assert_eq!(set(b"user.small", b"v"), 0);
    let long_name = [b"user.".as_slice(), &[b'k'; 250]].concat();
    assert_eq!(set(&long_name, b"v"), 0, "a 255-byte name");
    let too_long = [b"user.".as_slice(), &[b'k'; 251]].concat();
    assert_eq!(set(&too_long, b"v"), libc::ERANGE, "a 256-byte name");
    // More than one xattr block: ENOSPC (as ext4 without ea_inode); past 64 KiB: E2BIG.
    assert_eq!(set(b"user.big", &vec![1u8; 16 << 10]), libc::ENOSPC);
    assert_eq!(set(b"user.huge", &vec![1u8; 1 << 20]), libc::E2BIG);
    assert_eq!(set(b"nonamespace", b"v"), libc::EOPNOTSUPP);
    // Fill the block with many small ones until ENOSPC; every one set reads back.
    let mut n = 0;
    loop {
        let name = format!("user.many{n:05}");
        match set(name.as_bytes(), &[n as u8; 40]) {
            0 => n += 1,
            e => {
                assert_eq!(e, libc::ENOSPC, "xattr {n}");
                break;
            }
        }
        assert!(n < 10_000, "no limit on xattrs");
    }
    assert!(n > 10, "only {n} small xattrs fit");
    let mut buf = vec![0u8; 64];
    let name = cb(format!("user.many{:05}", n - 1).as_bytes());
    // SAFETY: valid C strings and buffer.
    let got = unsafe {
        libc::getxattr(
            c(&p).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(got, 40);
    // A buffer too small: ERANGE; listing sizes work.
    let got = unsafe { libc::getxattr(c(&p).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 3) };
    assert_eq!(err_of(got as i64), libc::ERANGE);
}

/// A tree deeper than PATH_MAX, built and removed with *at() calls one level at a time.
fn deep_tree(mnt: &Path, depth: usize) {
    let name = vec![b'd'; 200];
    let mut fds = vec![open_dir(mnt)];
    // SAFETY: valid C strings; every fd opened is closed below.
    unsafe {
        for level in 0..depth {
            let parent = *fds.last().unwrap();
            assert_eq!(
                libc::mkdirat(parent, cb(&name).as_ptr(), 0o755),
                0,
                "level {level}: errno {}",
                errno()
            );
            let fd = libc::openat(
                parent,
                cb(&name).as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            fds.push(fd);
        }
        assert_eq!(create_at(*fds.last().unwrap(), b"bottom"), 0);
        for fd in fds {
            libc::close(fd);
        }
    }
    // The whole path is longer than PATH_MAX: the kernel refuses it as one string.
    let mut long = mnt.to_path_buf();
    for _ in 0..depth {
        long.push(OsStr::from_bytes(&name));
    }
    assert!(long.as_os_str().len() > libc::PATH_MAX as usize);
    assert_eq!(
        errno_of(std::fs::metadata(long.join("bottom"))),
        libc::ENAMETOOLONG
    );
}

fn check_deep_tree(mnt: &Path, depth: usize, remove: bool) {
    let name = vec![b'd'; 200];
    let mut fds = vec![open_dir(mnt)];
    // SAFETY: valid C strings; every fd opened is closed below.
    unsafe {
        for level in 0..depth {
            let fd = libc::openat(
                *fds.last().unwrap(),
                cb(&name).as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0, "level {level} after remount: errno {}", errno());
            fds.push(fd);
        }
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(
            libc::fstatat(*fds.last().unwrap(), cb(b"bottom").as_ptr(), &mut st, 0),
            0
        );
        if remove {
            assert_eq!(
                libc::unlinkat(*fds.last().unwrap(), cb(b"bottom").as_ptr(), 0),
                0
            );
            while fds.len() > 1 {
                libc::close(fds.pop().unwrap());
                let parent = *fds.last().unwrap();
                assert_eq!(
                    libc::unlinkat(parent, cb(&name).as_ptr(), libc::AT_REMOVEDIR),
                    0
                );
            }
        }
        for fd in fds {
            libc::close(fd);
        }
    }
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn hostile_names_offsets_sizes_and_depths() {
    const DEPTH: usize = 40; // 40 x 201 bytes: twice PATH_MAX
    let (_d, img, mnt) = setup("64M");
    let m = Mounted::new(&img, &mnt, &[]);
    names_and_links(&mnt);
    offsets_and_sizes(&mnt, "offsets", true);
    xattr_limits(&mnt);
    deep_tree(&mnt, DEPTH);
    m.stop();
    // Everything accepted is there after a remount.
    let m = Mounted::new(&img, &mnt, &["-o", "nowriteback"]);
    offsets_and_sizes(&mnt, "offsets-nowriteback", false);
    let names: Vec<Vec<u8>> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert!(names.contains(&vec![b'n'; 255]));
    assert!(names.contains(&b"bad-\xff\xfe-utf8-\x01".to_vec()));
    for f in ["offsets", "offsets-nowriteback"] {
        assert_eq!(std::fs::read(mnt.join(f)).unwrap(), b"start");
    }
    let listed = xattr::count(&mnt.join("xattrs"));
    assert!(listed > 10, "{listed} xattrs after remount");
    check_deep_tree(&mnt, DEPTH, true);
    m.stop();
}

mod xattr {
    use super::*;
    /// How many xattrs the file lists.
    pub fn count(p: &Path) -> usize {
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: valid C string and buffer.
        let n = unsafe { libc::listxattr(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 0, "listxattr: errno {}", errno());
        buf[..n as usize]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .count()
    }
}
