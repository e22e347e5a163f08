//! lfs-fuse IMAGE MOUNTPOINT [-o opt[,opt]] [-f] [-d]
//!
//! Daemonizes by default and exits only once recovery finished and the mount is live (exit
//! 0), or with 1 and one line saying why. SIGINT, SIGTERM, SIGHUP, `umount` and
//! `fusermount3 -u` all end in a final checkpoint, a clean unmount and exit 0.
//!
//! Order matters: the daemon forks before any thread exists (the engine starts a writer
//! thread), and blocks the three signals before that too, so every thread inherits the mask
//! and the main thread alone receives them, in `sigtimedwait`, between ticks.

use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::{Fs, MountOptions};
use lfs_fuse::adapter::{Adapter, CacheGate};
use lfs_fuse::mount;
use lfs_fuse::options::{self, Options};
use std::io::Write;
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

fn fail(msg: &str) -> ExitCode {
    // Not eprintln!: it panics when stderr is a closed pipe.
    let _ = writeln!(std::io::stderr(), "lfs-fuse: {msg}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("lfs-fuse {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let o = match options::parse(&args) {
        Ok(o) => o,
        Err(e) if e == options::USAGE => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&e),
    };
    if o.remount {
        return match mount::remount(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("remount {}: {e}", o.mountpoint.display())),
        };
    }
    if let Err(e) = preflight(&o) {
        return fail(&e);
    }
    // A log file that cannot be opened is an error now, not a silent fall-back later.
    let logfile = match &o.logfile {
        None => None,
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => return fail(&format!("logfile {}: {e}", p.display())),
        },
    };
    if o.foreground {
        init_logging(&o, logfile, false);
        return match serve(&o, None) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // Daemon: the child reports "mounted" (or why not) through a pipe; the parent waits for
    // the end of it. Close-on-exec: a program the daemon starts (fusermount3 staying behind
    // for auto_unmount) must not inherit the write end, or the parent would wait forever.
    let mut fds = [0; 2];
    // SAFETY: plain pipe2(2) into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return fail(&format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: no threads exist yet in this process, so fork is safe.
    match unsafe { libc::fork() } {
        -1 => fail(&format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: closing our copy of the read end; setsid detaches from the terminal.
            unsafe {
                libc::close(fds[0]);
                libc::setsid();
            }
            init_logging(&o, logfile, true);
            // SAFETY: the write end is ours alone from here on.
            let report = unsafe { std::fs::File::from_raw_fd(fds[1]) };
            match serve(&o, Some(report)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        _child => {
            // SAFETY: closing our copy of the write end.
            unsafe { libc::close(fds[1]) };
            // SAFETY: the read end is ours alone.
            let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut r, &mut msg);
            match msg.strip_prefix("ok") {
                Some(_) => ExitCode::SUCCESS,
                None if msg.is_empty() => fail("the daemon exited before the mount was live"),
                None => fail(msg.trim_end()),
            }
        }
    }
}

/// Checks that need no mount: give one clear line for each.
fn preflight(o: &Options) -> Result<(), String> {
    let m = std::fs::metadata(&o.mountpoint)
        .map_err(|e| format!("mountpoint {}: {e}", o.mountpoint.display()))?;
    if !m.is_dir() {
        return Err(format!(
            "mountpoint {} is not a directory",
            o.mountpoint.display()
        ));
    }
    let im =
        std::fs::metadata(&o.image).map_err(|e| format!("image {}: {e}", o.image.display()))?;
    if im.is_dir() {
        return Err(format!("image {} is a directory", o.image.display()));
    }
    let (img, mnt) = (
        std::fs::canonicalize(&o.image).map_err(|e| e.to_string())?,
        std::fs::canonicalize(&o.mountpoint).map_err(|e| e.to_string())?,
    );
    if img.starts_with(&mnt) {
        return Err(format!(
            "image {} lies inside the mountpoint {}; that would deadlock",
            img.display(),
            mnt.display()
        ));
    }
    if !o.nonempty
        && std::fs::read_dir(&mnt)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err(format!(
            "mountpoint {} is not empty (use -o nonempty to mount over it)",
            mnt.display()
        ));
    }
    Ok(())
}

/// Logs go to the log file, else to syslog when daemonized, else to stderr. A failed log write
/// is dropped, never reported on stderr: `lfs-fuse -f IMG MNT 2>&1 | head -1` closes the pipe
/// under a live mount, and tracing-subscriber's own report of the failure (an `eprintln!`)
/// would panic the daemon and take the mount with it.
fn init_logging(o: &Options, logfile: Option<std::fs::File>, daemon: bool) {
    // fuser's own unmount on drop fails once we have detached the mount ourselves (see
    // lazy_unmount) and logs that as an error; it is expected, so its mount module is quiet.
    let level = if o.debug {
        "debug"
    } else {
        "info,fuser::mnt::fuse_pure=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .log_internal_errors(false);
    match (logfile, daemon) {
        (Some(f), _) => b.with_writer(std::sync::Mutex::new(f)).init(),
        (None, true) => b.without_time().with_writer(Syslog::default).init(),
        (None, false) => b.with_writer(std::io::stderr).init(),
    }
}

/// A tracing writer that sends each line to syslog(3).
#[derive(Default)]
struct Syslog(Vec<u8>);

impl Write for Syslog {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        let line: Vec<u8> = self
            .0
            .iter()
            .copied()
            .filter(|&c| c != 0 && c != b'\n')
            .collect();
        if let Ok(c) = std::ffi::CString::new(line) {
            // SAFETY: constant format string and a NUL-terminated argument.
            unsafe {
                libc::syslog(
                    libc::LOG_DAEMON | libc::LOG_INFO,
                    c"lfs-fuse: %s".as_ptr(),
                    c.as_ptr(),
                )
            };
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialized by sigemptyset.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Mount, serve until a signal or an unmount, then checkpoint and leave cleanly.
fn serve(o: &Options, mut report: Option<std::fs::File>) -> Result<(), String> {
    let set = signal_set();
    // SAFETY: blocking signals in this (the only) thread; threads started later inherit it.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let result = mount_and_run(o, &set, &mut report);
    if let (Err(e), Some(r)) = (&result, report.as_mut()) {
        let _ = r.write_all(e.as_bytes());
    }
    result
}

fn mount_and_run(
    o: &Options,
    set: &libc::sigset_t,
    report: &mut Option<std::fs::File>,
) -> Result<(), String> {
    let open = || {
        FileDevice::open(
            &o.image,
            OpenOptions {
                read_only: o.read_only,
                direct: o.direct_io,
                lock: true,
            },
        )
    };
    // An image locked but mounted nowhere is most likely being unmounted this very moment
    // (`umount & mount`, as xfstests generic/604 does, or a remount script): the final
    // checkpoint takes a moment. Wait for it, as a kernel filesystem's mount waits for the
    // old superblock, but not for a live mount (refused at once) nor forever.
    let started = std::time::Instant::now();
    let dev = loop {
        match open() {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && !mount::is_mounted_source(&o.image)
                    && started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => break r,
        }
    }
    .map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            format!(
                "{}: already mounted or in use by another process",
                o.image.display()
            )
        } else {
            e.to_string() // names the image
        }
    })?;
    let dev: Arc<dyn Device> = Arc::new(dev);
    // The cleaner: the policy also serves a writer that would get ENOSPC, nogc or not.
    let gc = cleaner_config(o)?;
    let picker = lfs_cleaner::Picker {
        policy: lfs_cleaner::policy_by_name(&gc.policy)
            .unwrap_or_else(|| Box::new(lfs_cleaner::CostBenefit)),
    };
    let mopts = MountOptions {
        read_only: o.read_only,
        no_recovery: o.norecovery,
        checkpoint_interval: o.checkpoint_interval,
        commit_interval: o.commit_interval,
        inode_cache: o.inode_cache,
        cleaner: Some(Arc::new(picker)),
        ..Default::default()
    };
    let fs = Arc::new(
        Fs::mount(dev, mopts).map_err(|e| format!("cannot mount {}: {e}", o.image.display()))?,
    );
    let r = fs.mount_report();
    let recovery = match &r.roll_forward {
        None => "roll-forward skipped (norecovery)".to_string(),
        Some(rf) if rf.units == 0 && rf.discarded == 0 => "nothing to roll forward".to_string(),
        Some(rf) => format!(
            "rolled forward {} units ({} flush groups, {} blocks, {} inodes, {} freed), \
             {} units of an unfinished group discarded, log ends: {}",
            rf.units,
            rf.groups,
            rf.blocks,
            rf.inodes,
            rf.freed,
            rf.discarded,
            rf.end
                .as_ref()
                .map_or_else(|| "not read".to_string(), |e| e.to_string())
        ),
    };
    tracing::info!(
        "{}: checkpoint {} (generation {}, {}); {}; {} orphans freed; {} ms",
        o.image.display(),
        r.region,
        r.generation,
        if r.clean_unmount {
            "clean unmount"
        } else {
            "not cleanly unmounted"
        },
        recovery,
        r.orphans_freed,
        r.elapsed.as_millis()
    );
    let img = std::fs::canonicalize(&o.image).map_err(|e| format!("{}: {e}", o.image.display()))?;
    let mnt = std::fs::canonicalize(&o.mountpoint)
        .map_err(|e| format!("{}: {e}", o.mountpoint.display()))?;
    // The cleaner and its control socket, started once the mount is live; the destroy hook
    // stops them before the final checkpoint, whoever ends the mount.
    let services: Arc<Mutex<Services>> = Arc::default();
    let on_destroy = {
        let (fs, services) = (fs.clone(), services.clone());
        Box::new(move || {
            stop_services(&services);
            match fs.shutdown() {
                Ok(()) => tracing::info!("final checkpoint written; image released"),
                Err(e) => tracing::error!(error = %e, "final checkpoint failed"),
            }
        })
    };
    // The writeback cache needs room kept for what the kernel may hold (adapter::CacheGate).
    // Where the kernel cannot be told a bound in bytes (before 6.2), its default may be too
    // much room to keep on a small disk: no writeback cache there.
    let capacity = fs.statfs().map_or(0, |s| s.blocks * s.block_size as u64);
    let writeback = o.writeback && !o.read_only && {
        let fits = mount::kernel_bounds_cache()
            || 2 * mount::default_dirty_bound() + mount::CACHE_SLACK_BYTES <= capacity / 8;
        if !fits {
            tracing::info!(
                "the kernel cannot bound its cache for this small filesystem; writeback cache off"
            );
        }
        fits
    };
    let notifier = Arc::new(std::sync::OnceLock::new());
    let gate = Arc::new(CacheGate::default());
    let mut adapter = Adapter::new(
        fs.clone(),
        o.workers,
        writeback,
        notifier.clone(),
        on_destroy,
        gate.clone(),
    );
    let own = if mount::can_mount() {
        match mount::mount(o, &img, &mnt) {
            Ok(m) => Some(m),
            // No loop devices (a container), no fuseblk: fusermount3 can still mount.
            Err(e) => {
                tracing::warn!(error = %e, "cannot mount as {}; mounting through fusermount3, \
                    where umount returns before the final checkpoint", mount::FSTYPE);
                None
            }
        }
    } else {
        None
    };
    let own_mount = own.is_some();
    // Until the mount is reported live, an error on the way unmounts it again.
    let mut undo = UnmountOnError(own_mount.then(|| mnt.clone()));
    let session = if let Some(m) = own {
        // Without allow_other the kernel itself keeps other users out, so fuser's check by
        // uid adds nothing — and it cannot work once idmapped mounts are allowed, the uid of
        // most requests being -1 then. allow_root is fuser's alone (the kernel sees
        // allow_other): it keeps the check, and idmapped mounts are not offered.
        let acl = if o.allow_root {
            fuser::SessionACL::RootAndOwner
        } else {
            adapter.allow_idmapped_mounts();
            fuser::SessionACL::All
        };
        tracing::info!(
            source = %m.source.display(),
            loop_device = m.loop_device,
            "mounted as {}",
            mount::FSTYPE
        );
        fuser::Session::from_fd(adapter, m.fuse, acl)
            .spawn()
            .map_err(|e| format!("cannot start the session: {e}"))?
    } else {
        // Without the right to mount, fusermount3 mounts a plain `fuse` filesystem, whose
        // unmount the kernel does not tell us about: umount returns before the final
        // checkpoint (docs/RECOVERY.md).
        let mut mo = vec![
            fuser::MountOption::FSName(
                o.fsname
                    .clone()
                    .unwrap_or_else(|| img.display().to_string()),
            ),
            fuser::MountOption::Subtype("lfs-fuse".into()),
            fuser::MountOption::DefaultPermissions,
            if o.read_only {
                fuser::MountOption::RO
            } else {
                fuser::MountOption::RW
            },
        ];
        for (no, neg, pos) in [
            (o.nodev, fuser::MountOption::NoDev, fuser::MountOption::Dev),
            (
                o.nosuid,
                fuser::MountOption::NoSuid,
                fuser::MountOption::Suid,
            ),
            (
                o.noexec,
                fuser::MountOption::NoExec,
                fuser::MountOption::Exec,
            ),
        ] {
            mo.push(if no { neg } else { pos });
        }
        if o.allow_other {
            mo.push(fuser::MountOption::AllowOther);
        }
        if o.allow_root {
            mo.push(fuser::MountOption::AllowRoot);
        }
        if o.auto_unmount {
            mo.push(fuser::MountOption::AutoUnmount);
        }
        fuser::spawn_mount2(adapter, &mnt, &mo)
            .map_err(|e| format!("cannot mount on {}: {e}", mnt.display()))?
    };
    let watcher = if own_mount && o.auto_unmount {
        Some(mount::start_auto_unmount_watcher(&mnt).map_err(|e| format!("auto_unmount: {e}"))?)
    } else {
        None
    };
    let _ = notifier.set(session.notifier());
    if writeback {
        let dirty = mount::bound_kernel_cache(&mnt, capacity);
        let reserve = 2 * dirty + mount::CACHE_SLACK_BYTES;
        fs.set_cache_reserve(reserve);
        gate.set_reserve(reserve);
        tracing::info!(
            dirty_bound_kib = dirty / 1024,
            reserve_kib = reserve / 1024,
            "space kept for the kernel's writeback cache"
        );
    }
    tracing::info!(mountpoint = %mnt.display(), "mounted");
    // The daemon (a thread; none with nogc) and its control socket, on read-write mounts.
    if !o.read_only {
        let d = lfs_cleaner::Daemon::start(fs.clone(), gc, !o.nogc)
            .map_err(|e| format!("cannot start the cleaner: {e}"))?;
        let c = match lfs_cleaner::control::Server::start(&mnt, d.handle()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no cleaner control socket (lfs-cleaner cannot reach this mount)");
                None
            }
        };
        *lock(&services) = Services {
            daemon: Some(d),
            control: c,
        };
    }
    undo.0 = None;
    if let Some(mut r) = report.take() {
        let _ = r.write_all(b"ok");
        drop(r);
        detach_stdio();
    }
    let why = loop {
        let ts = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: waits for one of the blocked signals for at most one second.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
        if sig > 0 {
            break format!("signal {sig}");
        }
        if session.guard.is_finished() || fs.is_shut_down() {
            break "unmounted".to_string();
        }
        if let Err(e) = fs.tick() {
            tracing::error!(error = %e, "periodic checkpoint failed");
        }
    };
    tracing::info!("stopping ({why})");
    if !session.guard.is_finished() {
        // Make everything durable first, whatever happens to the unmount (files held open
        // keep a lazily detached mount alive).
        if !o.read_only {
            if let Err(e) = fs.checkpoint() {
                tracing::error!(error = %e, "checkpoint before unmount failed");
            }
        }
        if own_mount {
            if let Err(e) = mount::unmount(&mnt) {
                tracing::error!(error = %e, "cannot unmount {}", mnt.display());
            }
        } else {
            lazy_unmount(&mnt);
        }
    }
    // The session ends when the kernel closes the connection; its end runs the destroy
    // hook if FUSE_DESTROY did not.
    let ended = session.guard.join();
    stop_services(&services);
    let fs = Arc::try_unwrap(fs).map_err(|_| {
        "internal error: filesystem still in use after the session ended".to_string()
    })?;
    fs.unmount()
        .map_err(|e| format!("final checkpoint failed: {e}"))?;
    if let Some(w) = watcher {
        w.ended_in_order();
    }
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the FUSE session ended with an error"),
        Err(_) => return Err("the FUSE session thread panicked".into()),
    }
    tracing::info!("clean unmount");
    Ok(())
}

/// Unmounts (lazily) a mount of ours that never went live, when mounting fails after it.
struct UnmountOnError(Option<PathBuf>);

impl Drop for UnmountOnError {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = mount::unmount(&m);
        }
    }
}

/// What runs beside the mount on a read-write filesystem.
#[derive(Default)]
struct Services {
    daemon: Option<lfs_cleaner::Daemon>,
    control: Option<lfs_cleaner::control::Server>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stop the cleaner's control socket, then the cleaner (after its pass in progress). Once.
fn stop_services(s: &Mutex<Services>) {
    let Services { daemon, control } = std::mem::take(&mut *lock(s));
    if let Some(c) = control {
        c.stop();
    }
    if let Some(d) = daemon {
        d.stop();
    }
}

/// Detach the mount even while files are open; the session ends when the last is closed.
fn lazy_unmount(mnt: &Path) {
    let ok = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 with a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// The cleaner's settings: defaults, then the config file, then `-o gc_*` options.
fn cleaner_config(o: &Options) -> Result<lfs_cleaner::Config, String> {
    let mut c = lfs_cleaner::Config::default();
    let (path, required) = match &o.gc_config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(lfs_cleaner::daemon::DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => c
            .parse_file(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if required || e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", path.display()))
        }
        Err(_) => {}
    }
    for (k, v) in &o.gc {
        c.set(k, v)?;
    }
    Ok(c)
}
