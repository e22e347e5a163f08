//! Mounting: our own mount(2) of a `fuseblk` filesystem, so that `umount` waits for us.
//!
//! Why not fuser's mount: for a plain `fuse` mount the kernel tears the connection down at
//! unmount without a word to the daemon, and `umount` returns at once — before the final
//! checkpoint is written and while the image is still locked (`umount m && fsck-lfs img`
//! fails; a kill -9 in that window loses everything since the last checkpoint). Only for a
//! `fuseblk` mount does the kernel send FUSE_DESTROY from `umount` and wait for its reply
//! (fs/fuse/inode.c: `fc->destroy` is set for fuseblk alone), so we mount that way: the
//! reply goes out once the filesystem is shut down (`Fs::shutdown`: final checkpoint, image
//! unlocked), and whatever unmounts us — `umount`, `fusermount3 -u`, shutdown scripts — then
//! returns with the image durable and free.
//!
//! A fuseblk mount names a block device: the image itself when it is one, else a loop device
//! set up over the image file with autoclear, so that it goes away with the mount. The loop
//! device only anchors the mount: the daemon does its I/O on the image file, and the kernel
//! reads nothing through it. The source the mount shows is the image's absolute path all the
//! same (so `findmnt -S IMAGE`, `df` and xfstests find it): the kernel records the source
//! string it was given and resolves it to the block device in the mounting thread's view of
//! the filesystem, so one thread, in a mount namespace of its own, bind-mounts the loop
//! device over the image's path, creates the mount there through the new mount API (fsopen,
//! fsconfig, fsmount) and attaches it in the daemon's namespace (move_mount); nobody else
//! ever sees the bind mount. Where that API is missing, the loop device is the source (as
//! for `mount -o loop`). /proc/mounts shows the type `fuseblk.lfs-fuse`.
//!
//! The same mount(2) honours `dev`/`suid`/`exec` and their `no` forms (fuser always adds
//! nodev,nosuid) and sets the subtype. Mounting like this needs CAP_SYS_ADMIN; without it the
//! daemon falls back to fuser's mount through fusermount3, where umount stays asynchronous
//! (docs/RECOVERY.md says what that means).

use crate::options::Options;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The FUSE type we mount, shown in /proc/mounts as `fuseblk.lfs-fuse`.
pub const FSTYPE: &str = "fuseblk.lfs-fuse";

/// A live mount made by [`mount`].
pub struct Mounted {
    /// The /dev/fuse descriptor the session serves.
    pub fuse: OwnedFd,
    /// The block device named as the mount's source.
    pub source: PathBuf,
    /// Set up by us over an image file (freed by the kernel when the mount goes).
    pub loop_device: bool,
}

/// Whether this process may mount by itself (CAP_SYS_ADMIN: we only ask for root).
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mount `image` (canonical path) on `mountpoint` as fuseblk, with the flags of `o`.
pub fn mount(o: &Options, image: &Path, mountpoint: &Path) -> io::Result<Mounted> {
    let meta = std::fs::metadata(image)?;
    // Held until the mount has its own reference; with autoclear the loop device goes away
    // when the last one is dropped, so a failed mount leaves nothing behind.
    let (source, anchor) = if meta.file_type().is_block_device() {
        (image.to_path_buf(), None)
    } else {
        let (path, dev) = loop_device_over(image, o.read_only)?;
        (path, Some(dev))
    };
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let params = params(o, root_mode);
    if anchor.is_some() {
        let fuse = open_fuse()?;
        match mount_named(&source, image, mountpoint, &fuse, &params, o) {
            Ok(()) => {
                return Ok(Mounted {
                    fuse: fuse.into(),
                    source: image.to_path_buf(),
                    loop_device: true,
                })
            }
            // That /dev/fuse may be tied to a superblock that went away: a fresh one below.
            Err(e) => tracing::debug!(error = %e,
                "cannot name the mount after the image; its source is the loop device"),
        }
    }
    let fuse = open_fuse()?;
    let mut data = format!("fd={}", fuse.as_raw_fd());
    for (k, v) in &params {
        data.push(',');
        data.push_str(k);
        if let Some(v) = v {
            data.push('=');
            data.push_str(v);
        }
    }
    let flags = mount_flags(o)
        .iter()
        .filter(|f| f.0)
        .fold(0, |acc, f| acc | f.1);
    let (c_source, c_target, c_type, c_data) = (
        cstr(source.as_os_str().as_bytes())?,
        cstr(mountpoint.as_os_str().as_bytes())?,
        cstr(FSTYPE.as_bytes())?,
        cstr(data.as_bytes())?,
    );
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mount(2): {e}")));
    }
    Ok(Mounted {
        fuse: fuse.into(),
        source,
        loop_device: anchor.is_some(),
    })
}

fn open_fuse() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {e}")))
}

/// The FUSE mount parameters other than the /dev/fuse descriptor, one list for both ways
/// of mounting (mount(2)'s data string, fsconfig calls).
fn params(o: &Options, root_mode: u32) -> Vec<(&'static str, Option<String>)> {
    let mut p = vec![
        ("rootmode", Some(format!("{root_mode:o}"))),
        ("user_id", Some("0".to_string())),
        ("group_id", Some("0".to_string())),
        ("default_permissions", None),
        ("blksize", Some("4096".to_string())),
    ];
    if o.allow_other || o.allow_root {
        // allow_root is allow_other in the kernel, narrowed by the session's ACL.
        p.push(("allow_other", None));
    }
    p
}

/// The mount flags of `o`: (wanted, mount(2) flag, fsmount attribute).
fn mount_flags(o: &Options) -> [(bool, libc::c_ulong, libc::c_uint); 4] {
    [
        (o.read_only, libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (o.nodev, libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (o.nosuid, libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (o.noexec, libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ]
}

// The new mount API (linux/mount.h), whose constants the libc crate does not carry.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a string"))
}

/// A raw system call's result as io::Result.
fn check(rc: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

/// The fuseblk mount of `device` on `mountpoint`, showing `image` as its source (see the
/// module comment): done on a thread of its own, which leaves the daemon's mount namespace
/// for a private one and dies with it.
fn mount_named(
    device: &Path,
    image: &Path,
    mountpoint: &Path,
    fuse: &File,
    params: &[(&'static str, Option<String>)],
    o: &Options,
) -> io::Result<()> {
    let (device, image) = (
        cstr(device.as_os_str().as_bytes())?,
        cstr(image.as_os_str().as_bytes())?,
    );
    // Named by a descriptor taken now: back in the daemon's namespace, setns has reset
    // the thread's root and working directory, and a path could resolve elsewhere (a
    // chroot whose root is a mount point).
    let target = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(mountpoint)?;
    let attrs = mount_flags(o)
        .iter()
        .filter(|f| f.0)
        .fold(0, |acc, f| acc | f.2);
    let mut params: Vec<(&str, Option<String>)> =
        params.iter().map(|(k, v)| (*k, v.clone())).collect();
    params.push(("fd", Some(fuse.as_raw_fd().to_string())));
    params.push(("subtype", Some("lfs-fuse".into())));
    if o.read_only {
        params.push(("ro", None));
    }
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<()> {
            // SAFETY: each call below passes NUL-terminated strings and descriptors that live
            // across it; the namespace changes affect this thread alone.
            unsafe {
                let home = File::open("/proc/thread-self/ns/mnt")?;
                check(
                    libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS).into(),
                    "unshare",
                )?;
                // Nothing done here may propagate back to the daemon's namespace.
                check(
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_SLAVE,
                        std::ptr::null(),
                    )
                    .into(),
                    "make the namespace a slave",
                )?;
                check(
                    libc::mount(
                        device.as_ptr(),
                        image.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                    .into(),
                    "bind the loop device over the image",
                )?;
                let fs = check(
                    libc::syscall(libc::SYS_fsopen, c"fuseblk".as_ptr(), FSOPEN_CLOEXEC),
                    "fsopen",
                )? as libc::c_int;
                let fs = OwnedFd::from_raw_fd(fs);
                let set = |key: &str, value: Option<&CString>| -> io::Result<()> {
                    let k = cstr(key.as_bytes())?;
                    let (cmd, v) = match value {
                        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
                        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
                    };
                    check(
                        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), v, 0),
                        &format!("fsconfig {key}"),
                    )
                    .map(|_| ())
                };
                set("source", Some(&image))?;
                for (k, v) in &params {
                    let v = v.as_deref().map(|v| cstr(v.as_bytes())).transpose()?;
                    set(k, v.as_ref())?;
                }
                check(
                    libc::syscall(
                        libc::SYS_fsconfig,
                        fs.as_raw_fd(),
                        FSCONFIG_CMD_CREATE,
                        std::ptr::null::<libc::c_char>(),
                        std::ptr::null::<libc::c_char>(),
                        0,
                    ),
                    "create the superblock",
                )?;
                let m = check(
                    libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs),
                    "fsmount",
                )? as libc::c_int;
                let m = OwnedFd::from_raw_fd(m);
                check(
                    libc::setns(home.as_raw_fd(), libc::CLONE_NEWNS).into(),
                    "back to the daemon's namespace",
                )?;
                check(
                    libc::syscall(
                        libc::SYS_move_mount,
                        m.as_raw_fd(),
                        c"".as_ptr(),
                        target.as_raw_fd(),
                        c"".as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                    ),
                    "move_mount",
                )?;
                Ok(())
            }
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the mounting thread panicked")))
    })
}

// The loop driver's interface (linux/loop.h), which the libc crate does not carry.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A free loop device bound to `image` with autoclear; returns its path and an open
/// descriptor (the device is freed once the last descriptor, ours or the mount's, closes).
fn loop_device_over(image: &Path, read_only: bool) -> io::Result<(PathBuf, File)> {
    let ctl = File::open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/loop-control: {e}")))?;
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = image.as_os_str().as_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    // Another process may take the device we were offered before we bind it: ask again.
    let mut last = io::Error::other("no free loop device");
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let nr = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if nr < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("no free loop device: {e}"),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{nr}"));
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(d) => d,
            Err(e) => {
                last = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                continue;
            }
        };
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 4096,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 },
                lo_file_name: name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one loop_config, which lives across the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if rc == 0 {
            return Ok((path, dev));
        }
        let e = io::Error::last_os_error();
        last = io::Error::new(e.kind(), format!("{}: LOOP_CONFIGURE: {e}", path.display()));
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}

/// Whether `image` is the source of a mount in this namespace (ours show the image's path;
/// a mount through a loop device shows the device, whose backing file is the image).
pub fn is_mounted_source(image: &Path) -> bool {
    let Ok(image) = std::fs::canonicalize(image) else {
        return false;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        // Fields after the " - " separator: type, source, options.
        let Some(source) = l.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1)) else {
            return false;
        };
        let source = PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(source)));
        let source = source.as_path();
        source == image
            || std::fs::metadata(source)
                .ok()
                .filter(|m| m.file_type().is_block_device())
                .and_then(|m| {
                    let (maj, min) = (libc::major(m.rdev()), libc::minor(m.rdev()));
                    std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/loop/backing_file"))
                        .ok()
                })
                .is_some_and(|b| Path::new(b.trim_end()) == image)
    })
}

/// mountinfo's escapes: a space, tab, newline or backslash in a path is written `\ooo`.
fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                let v = (d[0] - b'0') as u16 * 64 + (d[1] - b'0') as u16 * 8 + (d[2] - b'0') as u16;
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `mount -o remount,…` through mount.fuse3: the live mount on `o.mountpoint` takes the
/// flags of `o` (ro/rw, nodev, nosuid, noexec). The kernel lets a FUSE superblock change
/// only these; it writes the kernel's dirty pages to the daemon first, and the daemon's
/// commit interval makes them durable.
pub fn remount(o: &Options) -> io::Result<()> {
    let target = cstr(o.mountpoint.as_os_str().as_bytes())?;
    let flags = mount_flags(o)
        .iter()
        .filter(|f| f.0)
        .fold(libc::MS_REMOUNT, |acc, f| acc | f.1);
    // SAFETY: umount's sibling: a valid path, no source, type or data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmount `mountpoint`: a plain umount, which for fuseblk returns once our FUSE_DESTROY
/// handler has shut the filesystem down; if files are still open (EBUSY), a lazy one: the
/// mount disappears from the namespace now and the kernel sends FUSE_DESTROY when the last
/// file is closed.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    let c = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    // SAFETY: umount2 with a valid path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

/// The daemon's end of an auto_unmount watcher's pipe.
pub struct Watcher(File);

impl Watcher {
    /// The daemon unmounted and is ending normally: the watcher goes without touching the
    /// mountpoint (where a new mount may already be).
    pub fn ended_in_order(mut self) {
        let _ = std::io::Write::write_all(&mut self.0, b"x");
    }
}

/// `auto_unmount` for our own mounts (fusermount3 does it for its own): a small process that
/// waits for the daemon to die — the end of a pipe only the daemon holds — and then lazily
/// unmounts the mountpoint, if the same mount is still there. A daemon that ends normally
/// says so first (`Watcher::ended_in_order`), and the watcher leaves.
pub fn start_auto_unmount_watcher(mountpoint: &Path) -> io::Result<Watcher> {
    let target = CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let dev = std::fs::metadata(mountpoint)?.dev();
    let null = CString::new("/dev/null").map_err(|_| io::Error::other("NUL"))?;
    // SAFETY: sigset_t is plain data initialized by sigemptyset.
    let no_signals = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array. The read end stays open across fork, not exec.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the child only makes async-signal-safe system calls (close, read, stat,
    // umount2, _exit) on memory prepared before the fork, as required after fork in a
    // process with threads.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe {
            // Hold nothing of the daemon's: not /dev/fuse (the connection must die with the
            // daemon), not the image (nor its lock), not the pipe that tells the parent the
            // mount is live, not the daemon's stdout/stderr.
            let n = libc::open(null.as_ptr(), libc::O_RDWR);
            if n >= 0 {
                for std_fd in 0..3 {
                    libc::dup2(n, std_fd);
                }
            }
            libc::close(fds[1]);
            let keep = fds[0] as libc::c_uint;
            if libc::syscall(
                libc::SYS_close_range,
                keep + 1,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            ) != 0
            {
                for fd in keep + 1..4096 {
                    libc::close(fd as libc::c_int);
                }
            }
            for fd in 3..keep {
                libc::close(fd as libc::c_int);
            }
            // The daemon blocks SIGTERM and friends to take them in one thread; this process
            // must die of them.
            libc::sigprocmask(libc::SIG_SETMASK, &no_signals, std::ptr::null_mut());
            // Away from the daemon's session and signals (a Ctrl-C for the daemon in the
            // foreground must not kill the watcher first).
            libc::setsid();
            let mut b = 0u8;
            loop {
                let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    libc::_exit(0); // the daemon ended in order
                }
                if n == 0 || *libc::__errno_location() != libc::EINTR {
                    break; // the daemon died
                }
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(target.as_ptr(), &mut st) != 0
                && *libc::__errno_location() == libc::ENOTCONN
                || st.st_dev == dev
            {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
            libc::_exit(0)
        },
        _ => {
            // SAFETY: the read end is the child's now; the write end is the daemon's alone.
            unsafe {
                libc::close(fds[0]);
                Ok(Watcher(File::from_raw_fd(fds[1])))
            }
        }
    }
}

/// Whether this kernel lets us bound a mount's dirty data in bytes (`max_bytes`, 6.2+).
pub fn kernel_bounds_cache() -> bool {
    std::fs::read_dir("/sys/class/bdi")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .is_some_and(|e| e.path().join("max_bytes").exists())
}

/// What the kernel lets a FUSE mount hold dirty by default: 1% (its `max_ratio`) of the
/// global dirty threshold (`vm.dirty_bytes`, else `vm.dirty_ratio` of memory).
pub fn default_dirty_bound() -> u64 {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let threshold = match read("/proc/sys/vm/dirty_bytes") {
        Some(b) if b > 0 => b,
        _ => {
            let mem_kib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemTotal:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .unwrap_or(16 << 20);
            mem_kib * 1024 / 100 * read("/proc/sys/vm/dirty_ratio").unwrap_or(20)
        }
    };
    (threshold / 100).max(1 << 20)
}

/// Slack kept for the kernel's cache beyond twice its dirty bound: its dirty throttling lets a
/// writer run a little past the bound before it waits (per-task and per-CPU rate limits).
pub const CACHE_SLACK_BYTES: u64 = 4 << 20;

/// Bound the dirty data the kernel may hold for the mount on `mountpoint` — its backing
/// device info's `max_bytes` (Linux 6.2+; FUSE mounts use strict per-device limits) — to a
/// 64th of the filesystem's `capacity_bytes`, between 2 and 32 MiB. Returns the bound in
/// force: the one set, or, if it cannot be set (no such file, no permission), the one the
/// kernel reports, or else a generous guess.
pub fn bound_kernel_cache(mountpoint: &Path, capacity_bytes: u64) -> u64 {
    let want = (capacity_bytes / 64).clamp(2 << 20, 32 << 20);
    let guess = default_dirty_bound();
    let Ok(st) = std::fs::metadata(mountpoint) else {
        return guess;
    };
    let (major, minor) = (libc::major(st.dev()), libc::minor(st.dev()));
    let Some(dir) = ["-fuseblk", ""]
        .iter()
        .map(|s| PathBuf::from(format!("/sys/class/bdi/{major}:{minor}{s}")))
        .find(|p| p.is_dir())
    else {
        tracing::warn!(
            guess_kib = guess / 1024,
            "no backing device info for the mount; assuming the kernel's default bound"
        );
        return guess;
    };
    let file = dir.join("max_bytes");
    match std::fs::write(&file, want.to_string()) {
        Ok(()) => want,
        Err(e) => {
            let now = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|&b| b > 0);
            tracing::warn!(error = %e, file = %file.display(), kernel_bound = ?now,
                "cannot bound the kernel's writeback cache");
            now.unwrap_or(guess)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(super::unescape_octal(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(super::unescape_octal(r"/x\09"), b"/x\\09");
    }

    #[test]
    fn the_loop_structures_match_the_kernel() {
        // linux/loop.h: struct loop_info64 is 232 bytes, struct loop_config 304 (also checked
        // at compile time above); lo_flags sits at byte 52.
        let i: super::LoopInfo64 = unsafe { std::mem::zeroed() };
        let base = &i as *const _ as usize;
        assert_eq!(&i.lo_flags as *const _ as usize - base, 52);
        assert_eq!(&i.lo_file_name as *const _ as usize - base, 56);
    }
}
