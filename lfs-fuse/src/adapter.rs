//! The FUSE adapter: each request becomes one `Fs` call, each error one errno (`errno.rs`).
//! No filesystem logic lives here.

use crate::errno::errno;
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, Notifier, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyStatx, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use lfs_core::format::inode::{
    FileKind, Timespec, FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_NOATIME, FL_NODUMP, FL_SYNC,
};
use lfs_core::format::Ino;
use lfs_core::fs::{self as lfs, Attr, Creds, SetAttr};
use lfs_core::Fs;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache attributes and entries. We are the only writer to the
/// image, so every change passes through us; one second keeps other views fresh enough.
const TTL: Duration = Duration::from_secs(1);
/// Largest write the kernel sends.
const MAX_WRITE: u32 = 1 << 20;
/// FUSE_WRITEBACK_CACHE (fuse_kernel.h, ABI 7.23): the kernel caches writes and sends them
/// back in batches; it then owns the file size and mtime while pages are dirty.
const FUSE_WRITEBACK_CACHE: u32 = 1 << 16;
/// FUSE_HANDLE_KILLPRIV_V2 (fuse_kernel.h, ABI 7.33): the filesystem, not the kernel, clears
/// set-user-ID and set-group-ID when a file is written, truncated or given away. In exchange
/// the kernel marks the superblock SB_NOSEC and asks for `security.capability` (one GETXATTR
/// round trip) only after refreshing an inode's attributes, not before every write(2):
/// random 4 KiB writes went from ~230 to ~540 MiB/s with it (see docs/BENCHMARKS.md and
/// "Privileges" in docs/DESIGN.md).
const FUSE_HANDLE_KILLPRIV_V2: u32 = 1 << 28;
/// FITRIM, _IOWR('X', 121, struct fstrim_range) (linux/fs.h).
const FITRIM: u32 = 0xc018_5879;
/// linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_FSETID: u32 = 4;

/// A caller's credentials as /proc/PID/status gives them: what FUSE does not pass (the
/// capabilities, the supplementary groups) and, under FUSE_ALLOW_IDMAP, what it passes as -1
/// on every request that creates nothing (the ids).
struct Credentials {
    /// The effective capability set.
    caps: u64,
    /// The filesystem group and the supplementary groups.
    groups: Vec<u32>,
}

impl Credentials {
    /// None if the process is gone (or its status unreadable).
    fn of(pid: u32) -> Option<Credentials> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let caps = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
        // Gid: real, effective, saved, filesystem.
        let fsgid = field("Gid:")?.split_whitespace().nth(3)?.parse().ok()?;
        let mut groups = vec![fsgid];
        groups.extend(
            field("Groups:")
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok()),
        );
        Some(Credentials { caps, groups })
    }

    fn has(&self, cap: u32) -> bool {
        self.caps & (1u64 << cap) != 0
    }
}

/// Whether process `pid` holds capability `cap`. A process that is gone holds nothing.
fn has_capability(pid: u32, cap: u32) -> bool {
    Credentials::of(pid).is_some_and(|c| c.has(cap))
}

/// In a WRITE's flags under FUSE_HANDLE_KILLPRIV_V2: the caller lacks CAP_FSETID, clear the
/// set-ID bits (FUSE_WRITE_KILL_SUIDGID).
const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// FUSE_POSIX_ACL (ABI 7.26): the kernel caches and enforces POSIX ACLs, read through
/// getxattr; keeping the mode in step and inheriting default ACLs is the engine's
/// (`lfs-core/src/fs/acl.rs`).
const FUSE_POSIX_ACL: u32 = 1 << 20;
/// FUSE_EXPORT_SUPPORT (ABI 7.10): the kernel may look an inode up by its number alone
/// (LOOKUP of "." and ".."), so file handles outlive the kernel's inode cache:
/// open_by_handle_at and NFS export work; a deleted inode answers ESTALE.
const FUSE_EXPORT_SUPPORT: u32 = 1 << 4;
/// FUSE_DONT_MASK (ABI 7.12): the kernel passes the create mode unmasked and the umask
/// beside it, for a directory's default ACL takes the umask's place.
const FUSE_DONT_MASK: u32 = 1 << 6;
/// In a WRITE's flags: the data comes from the page cache (writeback), not from a write(2)
/// waiting for the answer (FUSE_WRITE_CACHE).
const FUSE_WRITE_CACHE: u32 = 1 << 0;
/// In an OPEN or CREATE reply: bypass the page cache for this open file (FOPEN_DIRECT_IO).
const FOPEN_DIRECT_IO: u32 = 1 << 0;

/// Space for the kernel's writeback cache: how a full disk answers ENOSPC at the write(2)
/// that cannot be kept, although with the writeback cache the kernel accepts write(2)
/// without asking us and sends the data seconds later (docs/RECOVERY.md, "A full disk").
///
/// - The daemon bounds what the kernel may hold dirty for this mount (the bdi's
///   `max_bytes`), and the engine keeps twice that free for it: ordinary writes leave it
///   alone, writes from the cache (FUSE_WRITE_CACHE) may use it.
/// - While the disk has room to spare, nothing else happens. Once the headroom falls below
///   twice the reserve (`tight`), attributes are given with no cache time, so the kernel
///   asks for them (GETATTR with the file handle) before every write(2) through a cached
///   open file; that GETATTR answers ENOSPC when the reserve is no longer intact, and the
///   write(2) fails before it copies a byte. Entering that state invalidates the cached
///   attributes of every file open for writing, so no writer goes on unasked.
/// - Files opened for writing while tight bypass the cache (FOPEN_DIRECT_IO): each write(2)
///   is then a WRITE, answered ENOSPC exactly when the log cannot take it.
///
/// What a write(2) admitted by the GETATTR may add is not known to us; the reserve covers
/// the kernel's dirty bound once more for it. A single write(2) larger than that, or stores
/// through a shared writable mmap, on a disk that is full can still meet ENOSPC at
/// writeback, reported by the next fsync or close (docs/RECOVERY.md).
#[derive(Default)]
pub struct CacheGate {
    /// Blocks the engine keeps for the kernel's cache (0: no writeback cache, no gate).
    reserve_blocks: AtomicU64,
    tight: AtomicBool,
    /// Open files by handle.
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Handle {
    ino: Ino,
    /// Opened for writing, through the kernel's page cache.
    cached_writer: bool,
}

impl CacheGate {
    /// The engine keeps `bytes` for the kernel's cache (see `Fs::set_cache_reserve`).
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve_blocks
            .store(bytes.div_ceil(4096), Ordering::Relaxed);
    }

    fn is_tight(&self) -> bool {
        self.tight.load(Ordering::Relaxed)
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Look at the headroom after a change; on becoming tight, make every cached writer ask
    /// before its next write(2).
    fn refresh(&self, fs: &Fs, notifier: &OnceLock<Notifier>) {
        let reserve = self.reserve_blocks.load(Ordering::Relaxed);
        if reserve == 0 {
            return;
        }
        let tight = fs.headroom_blocks() < 2 * reserve;
        if self.tight.swap(tight, Ordering::Relaxed) || !tight {
            return;
        }
        tracing::info!("little free space left: writers are now checked at every write");
        let inos: Vec<u64> = self
            .handles()
            .values()
            .filter(|h| h.cached_writer)
            .map(|h| h.ino.get())
            .collect();
        if let Some(n) = notifier.get() {
            for ino in inos {
                // Offset -1: attributes only, no page invalidation (which could wait on
                // folios a write in progress holds).
                let _ = n.inval_inode(ino, -1, 0);
            }
        }
    }
}

pub struct Adapter {
    fs: Arc<Fs>,
    workers: Workers,
    writeback: bool,
    /// The kernel granted FUSE_HANDLE_KILLPRIV_V2: privileges are ours to kill.
    killpriv: bool,
    /// Set once the session runs: tells the kernel to drop cached attributes we changed
    /// behind its back (a mode whose set-ID bits a write cleared).
    notifier: Arc<OnceLock<Notifier>>,
    /// Run once at FUSE_DESTROY (or when the session ends without one): the daemon's
    /// orderly end — services stopped, final checkpoint, image released. On a fuseblk mount
    /// `umount` waits for the reply, which fuser sends when this returns.
    on_destroy: Option<Box<dyn FnOnce() + Send>>,
    gate: Arc<CacheGate>,
    /// Ask for FUSE_ALLOW_IDMAP (`allow_idmapped_mounts`).
    idmap: bool,
}

impl Adapter {
    /// `workers` threads serve reads, writes and fsyncs (0: the session thread does);
    /// `writeback` asks the kernel for its writeback cache.
    /// `notifier` is filled in by the caller once the session is up; `on_destroy` runs once,
    /// at FUSE_DESTROY or at the end of the session.
    pub fn new(
        fs: Arc<Fs>,
        workers: usize,
        writeback: bool,
        notifier: Arc<OnceLock<Notifier>>,
        on_destroy: Box<dyn FnOnce() + Send>,
        gate: Arc<CacheGate>,
    ) -> Adapter {
        Adapter {
            fs,
            workers: Workers::start(workers),
            writeback,
            killpriv: false,
            notifier,
            on_destroy: Some(on_destroy),
            gate,
            idmap: false,
        }
    }

    /// Let the mount be idmapped (mount_setattr(2), `mount --bind -o X-mount.idmap=`): ask
    /// for FUSE_ALLOW_IDMAP. The kernel then sends the caller's uid and gid only with the
    /// requests that create an inode (mapped through the mount's idmap) and -1 with all
    /// others; this adapter reads what else it needs of a caller from /proc
    /// (`Credentials`), and the session must not filter requests by uid (fuser's
    /// allow_root emulation does).
    pub fn allow_idmapped_mounts(&mut self) {
        self.idmap = true;
    }

    /// How long the kernel may keep what we answer: not at all while space is tight (see
    /// `CacheGate`).
    fn ttl(&self) -> Duration {
        if self.gate.is_tight() {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// A new open file: its handle, and FOPEN_DIRECT_IO for a writer while space is tight.
    fn open_handle(&self, ino: Ino, flags: i32) -> (u64, u32) {
        let writer = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let direct = writer && self.writeback && self.gate.is_tight();
        let fh = self.gate.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        self.gate.handles().insert(
            fh,
            Handle {
                ino,
                cached_writer: writer && self.writeback && !direct,
            },
        );
        (fh, if direct { FOPEN_DIRECT_IO } else { 0 })
    }

    fn refresh_gate(&self) {
        self.gate.refresh(&self.fs, &self.notifier);
    }

    /// What the engine's set-ID clearing needs of the caller of `req` on file `ino`
    /// (`Fs::kill_privileges`, `Fs::setxattr_by`): None if it holds CAP_FSETID (never when
    /// `unprivileged`: the kernel has said it does not), else a group that is the file's
    /// exactly when the caller is in the file's group, by its filesystem or a supplementary
    /// group (Linux's in_group_p). /proc is read only for a file with set-ID bits, where the
    /// answer matters; a caller gone by then counts as unprivileged and outside the group.
    fn unprivileged_group(&self, req: &Request<'_>, ino: u64, unprivileged: bool) -> Option<u32> {
        let file = self
            .fs
            .getattr(Ino(ino))
            .ok()
            .filter(|a| a.perm & 0o6000 != 0);
        let Some(file) = file else {
            // No set-ID bits: nothing depends on who asks (the ids only say whether to look).
            return (unprivileged || req.uid() != 0).then(|| req.gid());
        };
        let who = Credentials::of(req.pid());
        if !unprivileged && who.as_ref().is_some_and(|c| c.has(CAP_FSETID)) {
            return None;
        }
        let member = who.is_some_and(|c| c.groups.contains(&file.gid));
        Some(if member {
            file.gid
        } else {
            file.gid.wrapping_add(1)
        })
    }

    /// chattr/lsattr: the kernel turns FS_IOC_[GS]ETFLAGS and FS_IOC_FS[GS]ETXATTR into
    /// these ioctls for us, after its own checks (owner, CAP_LINUX_IMMUTABLE for i and a,
    /// read-only mount).
    fn fileattr(&self, ino: u64, cmd: u32, input: &[u8], reply: ReplyIoctl) {
        let word = |i: usize| {
            input
                .get(i * 4..i * 4 + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let set = match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
                return match self.fs.flags(Ino(ino)) {
                    Ok(f) => reply.ioctl(0, &f.to_ne_bytes()),
                    Err(e) => reply.error(errno(&e)),
                };
            }
            FS_IOC_FSGETXATTR => {
                return match self.fs.flags(Ino(ino)) {
                    Ok(f) => {
                        // struct fsxattr: xflags, then extent size, extents, project id and
                        // CoW extent size, none of which this filesystem has, and padding.
                        let mut out = [0u8; 28];
                        out[..4].copy_from_slice(&xflags_of(f).to_ne_bytes());
                        reply.ioctl(0, &out)
                    }
                    Err(e) => reply.error(errno(&e)),
                };
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => word(0),
            // The flags only xflags cannot say (D) stay as they are.
            _ => match (word(0), word(1), word(3), self.fs.flags(Ino(ino))) {
                (Some(x), Some(0), Some(0), Ok(f)) => {
                    flags_of_xflags(x).map(|n| n | f & FL_DIRSYNC)
                }
                (_, _, _, Err(e)) => return reply.error(errno(&e)),
                _ => None, // an extent size or project id: not kept here
            },
        };
        let Some(flags) = set else {
            return reply.error(libc::EOPNOTSUPP);
        };
        match self.fs.set_flags(Ino(ino), flags) {
            Ok(_) => {
                // The ctime changed; and cached writers of a file made immutable must ask
                // before their next write (`getattr`).
                if let Some(n) = self.notifier.get() {
                    let _ = n.inval_inode(ino, -1, 0);
                }
                reply.ioctl(0, &[])
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// linux/fs.h: chattr's ioctls (the kernel sends the 64-bit numbers).
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// STATX_ATTR_* (linux/stat.h) and the flags they report.
const STATX_ATTRS: [(u64, u32); 3] = [(0x10, FL_IMMUTABLE), (0x20, FL_APPEND), (0x40, FL_NODUMP)];
/// FS_XFLAG_* and the FS_*_FL they stand for.
const XFLAGS: [(u32, u32); 5] = [
    (0x08, FL_IMMUTABLE),
    (0x10, FL_APPEND),
    (0x20, FL_SYNC),
    (0x40, FL_NOATIME),
    (0x80, FL_NODUMP),
];

fn xflags_of(flags: u32) -> u32 {
    XFLAGS
        .iter()
        .filter(|(_, f)| flags & f != 0)
        .fold(0, |x, (b, _)| x | b)
}

/// None if `x` holds an xflag this filesystem does not keep.
fn flags_of_xflags(x: u32) -> Option<u32> {
    let known = XFLAGS.iter().fold(0, |a, (b, _)| a | b);
    (x & !known == 0).then(|| {
        XFLAGS
            .iter()
            .filter(|(b, _)| x & b != 0)
            .fold(0, |a, (_, f)| a | f)
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// Worker threads for the data path. fuser reads requests on one session thread; handing
/// reads, writes and fsyncs to workers lets that thread go back for the next request while
/// one is being served, so the kernel can keep several in flight (readahead, writeback).
/// A reply is sent only once its operation is done, so every request the kernel sends after
/// seeing a reply sees its effect — the same ordering multithreaded libfuse gives.
struct Workers {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(n: usize) -> Workers {
        if n == 0 {
            return Workers {
                tx: None,
                threads: Vec::new(),
            };
        }
        let (tx, rx) = crossbeam_channel::bounded::<Job>(4 * n);
        let threads = (0..n)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("lfs-worker-{i}"))
                    .spawn(move || rx.iter().for_each(|job| job()))
                    .map_err(|e| tracing::warn!(error = %e, "cannot start a worker thread"))
                    .ok()
            })
            .collect::<Vec<_>>();
        Workers {
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Run `job` on a worker, or here when there are none.
    fn run(&self, job: impl FnOnce() + Send + 'static) {
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(Box::new(job)) {
                    (e.into_inner())();
                }
            }
            None => job(),
        }
    }
}

impl Drop for Workers {
    /// Finish every queued job, then stop the threads.
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn to_system(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec as u64)
    }
}

fn from_system(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), 0u32);
            if d.subsec_nanos() > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - d.subsec_nanos();
            }
            Timespec { sec, nsec }
        }
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: a.ino.get(),
        size: a.size,
        blocks: a.blocks,
        atime: to_system(a.atime),
        mtime: to_system(a.mtime),
        ctime: to_system(a.ctime),
        crtime: to_system(a.crtime),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The attributes of a freed inode for a reply that must succeed: no links, no data, the
/// times asked for.
fn gone(ino: u64, mtime: Option<TimeOrNow>, ctime: Option<SystemTime>) -> FileAttr {
    let at = |t: Option<TimeOrNow>| match t {
        Some(TimeOrNow::SpecificTime(t)) => t,
        _ => SystemTime::now(),
    };
    let mtime = at(mtime);
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: mtime,
        mtime,
        ctime: ctime.unwrap_or(mtime),
        crtime: mtime,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: lfs_core::format::BLOCK_SIZE as u32,
        flags: 0,
    }
}

/// The caller, and the umask the engine applies to what it creates (unless a default ACL
/// takes its place).
fn creds(req: &Request<'_>, umask: u32) -> Creds {
    Creds {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

fn time(t: TimeOrNow) -> lfs::TimeOrNow {
    match t {
        TimeOrNow::Now => lfs::TimeOrNow::Now,
        TimeOrNow::SpecificTime(s) => lfs::TimeOrNow::At(from_system(s)),
    }
}

macro_rules! reply_entry {
    ($self:expr, $reply:expr, $r:expr) => {
        match $r {
            Ok(a) => $reply.entry(&$self.ttl(), &attr(&a), a.generation as u64),
            Err(e) => $reply.error(errno(&e)),
        }
    };
}

macro_rules! reply_empty {
    ($reply:expr, $r:expr) => {
        match $r {
            Ok(_) => $reply.ok(),
            Err(e) => $reply.error(errno(&e)),
        }
    };
}

/// getxattr/listxattr size protocol: size 0 asks for the length.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), libc::c_int> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        // More background requests (readahead, writeback) in flight than the default 12: with
        // 256/192 random 4 KiB writes went from ~142 to ~196 MiB/s (medians of 7; 64/48 before).
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(192);
        if self.writeback {
            if let Err(e) = config.add_capabilities(FUSE_WRITEBACK_CACHE) {
                tracing::warn!(unsupported = e, "kernel has no writeback cache for FUSE");
            }
        }
        // Without it the kernel kills privileges itself, at the price of a GETXATTR per write.
        self.killpriv = config.add_capabilities(FUSE_HANDLE_KILLPRIV_V2).is_ok();
        if let Err(e) = config.add_capabilities(FUSE_EXPORT_SUPPORT) {
            tracing::warn!(
                unsupported = e,
                "kernel without FUSE export support: no file handles"
            );
        }
        if let Err(e) = config.add_capabilities(FUSE_POSIX_ACL | FUSE_DONT_MASK) {
            tracing::warn!(
                unsupported = e,
                "kernel without POSIX ACLs for FUSE: ACLs are not enforced"
            );
        }
        // FUSE_ALLOW_IDMAP is bit 40 of the INIT flags (linux/fuse.h, 7.40); the kernel
        // grants it only with default_permissions, which FUSE_POSIX_ACL brings.
        if self.idmap {
            if let Err(e) = config.add_capabilities2(1 << (40 - 32)) {
                tracing::info!(unsupported = e, "kernel without idmapped FUSE mounts");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Every request the kernel sent before DESTROY has been answered (it waits for them),
        // but a worker may still be finishing the job behind an answer it already sent: let
        // the workers drain first, so nothing touches the filesystem after it shuts down.
        self.workers = Workers::start(0);
        if let Some(f) = self.on_destroy.take() {
            f();
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        reply_entry!(self, reply, self.fs.lookup(Ino(parent), name.as_bytes()))
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        // With a handle, from a file open for writing through the cache, while space is
        // tight: the kernel asks before a write(2) (`CacheGate`). Refuse it if the data could
        // not be kept.
        let writer = fh.and_then(|fh| self.gate.handles().get(&fh).copied());
        if writer.is_some_and(|h| h.cached_writer) && self.gate.is_tight() {
            if let Err(e) = self.fs.admit_cached_writer(Ino(ino)) {
                self.refresh_gate();
                return reply.error(errno(&e));
            }
        }
        // A file made immutable while open for writing through the cache: its writers'
        // write(2)s are refused here, where the kernel asks before each one (the flag's
        // change dropped the cached attributes, and they are not cached again while such a
        // writer is open). What write(2) took before the flag still reaches the file.
        let a = match self.fs.getattr(Ino(ino)) {
            Ok(a) => a,
            Err(e) => return reply.error(errno(&e)),
        };
        let open_writer = a.flags & FL_IMMUTABLE != 0
            && self
                .gate
                .handles()
                .values()
                .any(|h| h.ino == Ino(ino) && h.cached_writer);
        if open_writer && writer.is_some_and(|h| h.cached_writer) {
            return reply.error(libc::EPERM);
        }
        let ttl = if open_writer {
            Duration::ZERO
        } else {
            self.ttl()
        };
        reply.attr(&ttl, &attr(&a))
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Privileges die with a truncate, and on a SETATTR of nothing at all: what the kernel
        // sends where it would have killed them itself (fallocate(2), or a write, to a set-ID
        // file; the capability it removes itself). It decides with the caller's CAP_FSETID
        // and says so in FATTR_KILL_SUIDGID, which fuser does not pass on: the caller's
        // capabilities in /proc stand for it (`unprivileged_group`).
        let bare =
            (mode, uid, gid, size) == (None, None, None, None) && (atime, mtime) == (None, None);
        let kill = (self.killpriv && (size.is_some() || (bare && ctime.is_none())))
            .then(|| self.unprivileged_group(req, ino, false))
            .flatten();
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime: ctime.map(from_system),
            // chown(f, -1, -1) arrives, with the writeback cache on a regular file, as a
            // SETATTR of ctime alone: chown(2) always sets ctime, and nothing else sends it
            // alone (the kernel's own time updates carry mtime). With the kernel's help gone
            // (killpriv) it is ours to treat as a change of owner. Elsewhere it arrives
            // empty and, from root, cannot be told from the kernel's capability removal:
            // there root's chown(f, -1, -1) keeps the set-ID bits.
            chown: self.killpriv && bare && ctime.is_some(),
            kill_privileges: kill,
            // fuse_flush_times: mtime and ctime, with the handle of a writer through the
            // cache (futimens(2) on such a handle looks the same; it is let through too).
            cached_times: (mode, uid, gid, size, atime) == (None, None, None, None, None)
                && mtime.is_some()
                && ctime.is_some()
                && fh.is_some_and(|fh| {
                    self.gate
                        .handles()
                        .get(&fh)
                        .is_some_and(|h| h.ino == Ino(ino) && h.cached_writer)
                }),
        };
        let r = self.fs.setattr(Ino(ino), &set);
        if size.is_some() {
            self.refresh_gate();
        }
        let times_only = (mode, uid, gid, size, atime) == (None, None, None, None, None)
            && mtime.is_some()
            && ctime.is_some();
        match r {
            Ok(a) => reply.attr(&self.ttl(), &attr(&a)),
            // The kernel writing back the times it cached for a file already deleted (its
            // last name gone and no handle open, so the engine freed it; the kernel still
            // holds the inode until it forgets it): nothing to keep, and nothing went wrong
            // — an error here came back from the next sync(1) as "Stale file handle". The
            // kernel does not look at the attributes of this reply (fuse_flush_times).
            Err(lfs_core::FsError::Stale(_)) if times_only => {
                reply.attr(&self.ttl(), &gone(ino, mtime, ctime))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.fs.readlink(Ino(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry!(
            self,
            reply,
            self.fs.mknod(
                Ino(parent),
                name.as_bytes(),
                mode,
                rdev as u64,
                creds(req, umask)
            )
        )
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry!(
            self,
            reply,
            self.fs
                .mkdir(Ino(parent), name.as_bytes(), mode, creds(req, umask))
        )
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = self.fs.unlink(Ino(parent), name.as_bytes());
        self.refresh_gate();
        reply_empty!(reply, r)
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty!(reply, self.fs.rmdir(Ino(parent), name.as_bytes()))
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry!(
            self,
            reply,
            self.fs.symlink(
                Ino(parent),
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
                creds(req, 0)
            )
        )
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        // The kernel checks CAP_MKNOD for RENAME_WHITEOUT; the whiteout is the caller's.
        reply_empty!(
            reply,
            self.fs.rename_by(
                Ino(parent),
                name.as_bytes(),
                Ino(newparent),
                newname.as_bytes(),
                flags,
                creds(req, 0)
            )
        )
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry!(
            self,
            reply,
            self.fs.link(Ino(ino), Ino(newparent), newname.as_bytes())
        )
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        // chattr's i and a are ours to apply (open_with); S makes write(2) itself durable,
        // so its writes must reach us, not the page cache.
        match self.fs.open_with(Ino(ino), flags) {
            Ok(a) => {
                let (fh, mut fopen) = self.open_handle(Ino(ino), flags);
                if a.flags & FL_SYNC != 0 {
                    fopen |= FOPEN_DIRECT_IO;
                    if let Some(h) = self.gate.handles().get_mut(&fh) {
                        h.cached_writer = false;
                    }
                }
                reply.opened(fh, fopen)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        if offset < 0 {
            return reply.error(libc::EINVAL);
        }
        let fs = self.fs.clone();
        self.workers
            .run(move || match fs.read(Ino(ino), offset as u64, size) {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(errno(&e)),
            });
    }

    fn write(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        wf: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        if offset < 0 {
            return reply.error(libc::EINVAL);
        }
        let fs = self.fs.clone();
        let data = data.to_vec();
        let kill = (self.killpriv && wf & FUSE_WRITE_KILL_SUIDGID != 0).then(|| {
            (
                self.unprivileged_group(req, ino, true),
                self.notifier.clone(),
            )
        });
        let cached = wf & FUSE_WRITE_CACHE != 0;
        let (gate, notifier) = (self.gate.clone(), self.notifier.clone());
        self.workers.run(move || {
            let r = match kill {
                Some((gid, notifier)) => fs.kill_privileges(Ino(ino), gid).map(|changed| {
                    // The kernel keeps the old mode until its attributes time out; make
                    // stat(2) see the cleared bits at once, as on a local filesystem. The
                    // kernel flags every direct or write-through WRITE of a caller without
                    // CAP_FSETID, so only when something changed. Offset -1: attributes
                    // only; invalidating pages would wait on the folios this very write
                    // holds locked.
                    if changed {
                        if let Some(n) = notifier.get() {
                            let _ = n.inval_inode(ino, -1, 0);
                        }
                    }
                }),
                None => Ok(()),
            };
            let r = r.and_then(|()| {
                if cached {
                    fs.write_cached(Ino(ino), offset as u64, &data)
                } else {
                    fs.write(Ino(ino), offset as u64, &data)
                }
            });
            gate.refresh(&fs, &notifier);
            match r {
                Ok(n) => reply.written(n),
                Err(e) => {
                    if cached {
                        // Data a writer was told was written: say loudly that it is lost.
                        tracing::error!(ino, offset, len = data.len(), error = %e,
                            "writeback from the kernel's cache failed; the next fsync or close reports it");
                    }
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.gate.handles().remove(&fh);
        let r = self.fs.release(Ino(ino));
        self.refresh_gate();
        reply_empty!(reply, r)
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, datasync: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        let notifier = self.notifier.clone();
        self.workers.run(move || {
            let r = fs.fsync(Ino(ino), datasync);
            // The kernel's cached attributes predate the data it just handed us: let stat
            // see the blocks now (st_blocks was 0 after fsync for up to the cache time).
            if r.is_ok() {
                if let Some(n) = notifier.get() {
                    let _ = n.inval_inode(ino, -1, 0);
                }
            }
            reply_empty!(reply, r)
        });
    }

    /// The ioctls the kernel passes on to us (those that are not the VFS's own): FITRIM,
    /// which fstrim(8) sends to the mount point. Others: ENOTTY, as for any file system
    /// that does not know them.
    fn ioctl(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: u32,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS | FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS
            | FS_IOC_FSGETXATTR | FS_IOC_FSSETXATTR => {
                return self.fileattr(ino, cmd, in_data, reply)
            }
            FITRIM => {}
            _ => return reply.error(libc::ENOTTY),
        }
        // As ext4: CAP_SYS_ADMIN. The kernel tells us the caller's pid; its capabilities
        // are in /proc, read before the answer so that it cannot have changed meanwhile.
        if !has_capability(req.pid(), CAP_SYS_ADMIN) {
            return reply.error(libc::EPERM);
        }
        let Some(r) = in_data.get(..24) else {
            return reply.error(libc::EINVAL);
        };
        let field = |i: usize| u64::from_ne_bytes(r[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (start, len, minlen) = (field(0), field(1), field(2));
        match self.fs.trim(start, len, minlen) {
            Ok(t) => {
                // struct fstrim_range comes back with len = the bytes discarded.
                let mut out = r.to_vec();
                out[8..16].copy_from_slice(&t.bytes.to_ne_bytes());
                reply.ioctl(0, &out)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel asks only for these two; it seeks by itself otherwise.
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(libc::EINVAL),
        };
        if offset < 0 {
            return reply.error(libc::ENXIO);
        }
        // The kernel does not write its dirty pages back before asking: while the file is
        // open for writing through the cache, data may be there that we have not seen — and
        // a size: the kernel's end of file may lie past ours. Calling such data a hole could
        // make a sparse-aware copy (cp, tar) lose it, and ENXIO past our end would be wrong
        // (stress-ng's seek stressor caught that). Then every byte is data, and the next hole
        // is our end of file or the offset itself: never ENXIO, never a hole before data.
        let cached_writer = self
            .gate
            .handles()
            .values()
            .any(|h| h.ino == Ino(ino) && h.cached_writer);
        let r = if cached_writer {
            self.fs.getattr(Ino(ino)).map(|a| match data {
                true => offset as u64,
                false => a.size.max(offset as u64),
            })
        } else {
            self.fs.seek_data_or_hole(Ino(ino), offset as u64, data)
        };
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        // Counted as open, as files are: a directory removed (or renamed over) while open
        // lives on, empty with no links, until its last release (fstat works, as on ext4).
        match self.fs.getattr(Ino(ino)) {
            Ok(a) if a.kind == FileKind::Directory => match self.fs.open(Ino(ino)) {
                Ok(_) => reply.opened(0, 0),
                Err(e) => reply.error(errno(&e)),
            },
            Ok(_) => reply.error(libc::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(Ino(ino), offset.max(0) as u64, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        e.ino.get(),
                        e.cookie as i64,
                        file_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty!(reply, self.fs.release(Ino(ino)))
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // A device flush: on a worker, as fsync is, so the session thread is not held up.
        let fs = self.fs.clone();
        self.workers
            .run(move || reply_empty!(reply, fs.fsyncdir(Ino(ino))));
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_avail,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.block_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty!(
            reply,
            self.fs.setxattr_by(
                Ino(ino),
                name.as_bytes(),
                value,
                flags as u32,
                self.unprivileged_group(req, ino, false)
            )
        )
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        match self.fs.getxattr(Ino(ino), name.as_bytes()) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(Ino(ino)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        reply_empty!(reply, self.fs.removexattr(Ino(ino), name.as_bytes()))
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions is always on).
        reply_empty!(reply, self.fs.getattr(Ino(ino)))
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self
            .fs
            .mknod(Ino(parent), name.as_bytes(), mode, 0, creds(req, umask))
            .and_then(|a| self.fs.open(a.ino).map(|_| a));
        match r {
            Ok(a) => {
                let (fh, flags) = self.open_handle(a.ino, flags);
                reply.created(&self.ttl(), &attr(&a), a.generation as u64, fh, flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// open(2) with O_TMPFILE. The kernel drops the link count we report by one itself
    /// (d_tmpfile, as for a kernel filesystem's new inode), so it is reported as 1; the
    /// engine's count is 0 and the next attributes say so.
    fn tmpfile(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.tmpfile(Ino(parent), mode, creds(req, umask)) {
            Ok(a) => {
                let (fh, flags) = self.open_handle(a.ino, flags);
                let mut fa = attr(&a);
                fa.nlink = 1;
                reply.created(&self.ttl(), &fa, a.generation as u64, fh, flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// statx(2) asking for the birth time: crtime, and chattr's i, a and d as statx's
    /// attributes.
    fn statx(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: Option<u64>,
        _flags: u32,
        _mask: u32,
        reply: ReplyStatx,
    ) {
        match self.fs.getattr(Ino(ino)) {
            Ok(a) => {
                let attributes = STATX_ATTRS
                    .iter()
                    .filter(|(_, f)| a.flags & f != 0)
                    .fold(0, |x, (s, _)| x | s);
                let known = STATX_ATTRS.iter().fold(0, |x, (s, _)| x | s);
                reply.statx(&self.ttl(), &attr(&a), attributes, known)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if offset < 0 || length <= 0 {
            return reply.error(libc::EINVAL);
        }
        reply_empty!(
            reply,
            self.fs
                .fallocate(Ino(ino), offset as u64, length as u64, mode as u32)
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_proc() {
        // SAFETY: getegid and getgroups only read this process's credentials.
        let (egid, n) = unsafe { (libc::getegid(), libc::getgroups(0, std::ptr::null_mut())) };
        let mut supp = vec![0 as libc::gid_t; n.max(0) as usize];
        // SAFETY: room for `n` groups.
        unsafe { libc::getgroups(n, supp.as_mut_ptr()) };
        let c = Credentials::of(std::process::id()).unwrap();
        assert_eq!(
            c.groups[0], egid,
            "the filesystem group first (it follows the effective)"
        );
        assert!(supp.iter().all(|g| c.groups.contains(g)));
        // SAFETY: geteuid reads this process's credentials.
        let root = unsafe { libc::geteuid() } == 0;
        assert_eq!(
            c.has(CAP_FSETID),
            root,
            "root holds CAP_FSETID here, others not"
        );
        assert!(Credentials::of(u32::MAX).is_none(), "no such process");
    }

    #[test]
    fn xflags_and_flags_map_both_ways() {
        for f in [FL_IMMUTABLE, FL_APPEND, FL_SYNC, FL_NOATIME, FL_NODUMP] {
            assert_eq!(flags_of_xflags(xflags_of(f)), Some(f));
        }
        assert_eq!(flags_of_xflags(0x8000), None, "DAX is refused");
    }
}
