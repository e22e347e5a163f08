//! Command line and `-o` options, validated into a typed `Options`.
//!
//! `lfs-fuse IMAGE MOUNTPOINT [-o opt[,opt]]... [-f] [-d]`, as sshfs and fuse2fs. `-o` may
//! repeat and stand anywhere. The generic options mount(8) and mount.fuse3 add are accepted
//! (dev/suid/exec and their no- forms honoured, the rest ignored); an unknown option is refused with its name.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub debug: bool,
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub fsname: Option<String>,
    pub nogc: bool,
    /// Cleaner settings from `-o gc_*` options, as config-file (key, value) pairs: applied
    /// over the config file's, so an option wins.
    pub gc: Vec<(String, String)>,
    /// The cleaner's config file (`gc_config=`); None: /etc/lfs-cleaner.conf if present.
    pub gc_config: Option<PathBuf>,
    pub norecovery: bool,
    pub nonempty: bool,
    pub direct_io: bool,
    pub checkpoint_interval: Duration,
    /// Everything durable at most this long after it changed (ext4's `commit`).
    pub commit_interval: Duration,
    pub workers: usize,
    /// Inodes kept in memory between requests (`inode_cache=`).
    pub inode_cache: usize,
    pub writeback: bool,
    pub logfile: Option<PathBuf>,
    /// Mount flags mount(8) users rely on, with the defaults of a root ext4 mount (device
    /// files, set-ID bits and execution allowed): `nodev`, `nosuid`, `noexec`.
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    /// `-o remount,…` (mount(8) through mount.fuse3): change the flags of the live mount on
    /// MOUNTPOINT instead of mounting.
    pub remount: bool,
}

pub const USAGE: &str = "usage: lfs-fuse IMAGE MOUNTPOINT [-o opt[,opt]...] [-f] [-d]

options:
  -f                       stay in the foreground
  -d                       debug: foreground, verbose logging
  -o ro | rw               read-only / read-write (default rw)
  -o allow_other           let other users access the mount
  -o allow_root            let root access the mount
  -o auto_unmount          unmount if the daemon dies
  -o default_permissions   (always on: the kernel checks permissions)
  -o fsname=NAME           name shown in /proc/mounts (default: the image path)
  -o nogc                  no background cleaner (a writer out of space still cleans)
  -o gc_policy=NAME        cost-benefit (default) or greedy
  -o gc_low=PERCENT        start cleaning when fewer segments are clean (default 5)
  -o gc_high=PERCENT       stop once this many are clean (default 10)
  -o gc_segments=N         segments per cleaning pass (default 8)
  -o gc_interval=SECS      pause between passes while cleaning (default 0)
  -o gc_protection=SECS    spare segments written this recently (default 0)
  -o gc_idle               clean only after 2 s without writes (an out-of-space writer
                           still cleans)
  -o gc_config=PATH        cleaner config file (default /etc/lfs-cleaner.conf if present;
                           format in docs/CLEANER.md); -o gc_* options override it
  -o norecovery            do not recover after a crash (implies ro)
  -o nonempty              allow mounting over a non-empty directory
  -o nodirect              do not open the image with O_DIRECT
  -o checkpoint_interval=SECS   checkpoint at least this often (default 30)
  -o commit=SECS           make every change durable within this time (default 5; sync(1)
                           does not reach FUSE filesystems: see docs/RECOVERY.md)
  -o workers=N             threads serving reads, writes and fsync (default 1; 0: none)
  -o inode_cache=N         inodes kept in memory between requests (default 16384; those
                           with unwritten changes or open handles always stay)
  -o writeback | nowriteback    kernel writeback cache for writes (default on)
  -o logfile=PATH          when daemonized, log here instead of syslog
  -o nodev | dev           refuse / allow device files (default dev, as ext4 for root)
  -o nosuid | suid         ignore / honour set-ID bits (default suid)
  -o noexec | exec         refuse / allow execution (default exec)
  -o remount,ro | remount,rw    change the live mount on MOUNTPOINT (also the flags above)
generic options from mount(8) / fstab (defaults, atime, nofail, _netdev, x-*, ...) are
accepted and ignored.";

/// Options mount(8), mount.fuse3 and fstab pass that mean nothing to us.
fn generic(o: &str) -> bool {
    const G: &[&str] = &[
        "rw",
        "defaults",
        "user",
        "users",
        "nouser",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nodiratime",
        "diratime",
        "sync",
        "async",
        "dirsync",
        "lazytime",
        "nolazytime",
        "silent",
        "loud",
        "default_permissions",
    ];
    G.contains(&o) || o.starts_with("x-") || o.starts_with("comment=") || o.starts_with("subtype=")
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut pos: Vec<&String> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let (mut foreground, mut debug) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => foreground = true,
            "-d" => {
                debug = true;
                foreground = true;
            }
            "-o" => {
                let v = it.next().ok_or("-o needs an argument")?;
                opts.extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            s if s.starts_with("-o") => opts.extend(
                s[2..]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown flag '{s}'")),
            _ => pos.push(a),
        }
    }
    let [image, mountpoint] = pos.as_slice() else {
        return Err(format!(
            "expected IMAGE and MOUNTPOINT, got {} argument(s)\n{USAGE}",
            pos.len()
        ));
    };
    let mut o = Options {
        image: PathBuf::from(image),
        mountpoint: PathBuf::from(mountpoint),
        foreground,
        debug,
        read_only: false,
        allow_other: false,
        allow_root: false,
        auto_unmount: false,
        fsname: None,
        nogc: false,
        gc: Vec::new(),
        gc_config: None,
        norecovery: false,
        nonempty: false,
        direct_io: true,
        checkpoint_interval: Duration::from_secs(30),
        commit_interval: Duration::from_secs(5),
        workers: 1,
        inode_cache: lfs_core::MountOptions::default().inode_cache,
        writeback: true,
        logfile: None,
        nodev: false,
        nosuid: false,
        noexec: false,
        remount: false,
    };
    for opt in opts {
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (k, v) {
            ("ro", None) => o.read_only = true,
            ("rw", None) => o.read_only = false,
            ("allow_other", None) => o.allow_other = true,
            ("allow_root", None) => o.allow_root = true,
            ("auto_unmount", None) => o.auto_unmount = true,
            ("fsname", Some(v)) => o.fsname = Some(v.to_string()),
            ("nogc", None) => o.nogc = true,
            ("gc_config", Some(v)) => o.gc_config = Some(PathBuf::from(v)),
            ("gc_idle", None) => o.gc.push(("idle_only".into(), "yes".into())),
            (k, Some(v)) if k.starts_with("gc_") => {
                let (key, value) = match k {
                    "gc_policy" => ("policy", v.to_string()),
                    "gc_low" => ("low_watermark", format!("{}%", v.trim_end_matches('%'))),
                    "gc_high" => ("high_watermark", format!("{}%", v.trim_end_matches('%'))),
                    "gc_segments" => ("segments_per_pass", v.to_string()),
                    "gc_interval" => ("pass_interval", v.to_string()),
                    "gc_protection" => ("protection_period", v.to_string()),
                    _ => return Err(format!("unknown option '{opt}'")),
                };
                // Checked now, so a typo fails the mount before anything is opened.
                lfs_cleaner::Config::default()
                    .set(key, &value)
                    .map_err(|e| format!("{k}={v}: {e}"))?;
                o.gc.push((key.into(), value));
            }
            ("norecovery", None) => {
                o.norecovery = true;
                o.read_only = true;
            }
            ("nonempty", None) => o.nonempty = true,
            ("nodirect", None) => o.direct_io = false,
            ("direct", None) => o.direct_io = true,
            ("writeback", None) => o.writeback = true,
            ("nowriteback", None) => o.writeback = false,
            ("inode_cache", Some(v)) => {
                o.inode_cache = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (64..=1 << 26).contains(n))
                    .ok_or_else(|| format!("inode_cache={v}: not a number from 64 to 67108864"))?;
            }
            ("workers", Some(v)) => {
                o.workers = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 64)
                    .ok_or_else(|| format!("workers={v}: not a number from 0 to 64"))?;
            }
            ("checkpoint_interval", Some(v)) => {
                let s: u64 = v
                    .parse()
                    .map_err(|_| format!("checkpoint_interval={v}: not a number of seconds"))?;
                if s == 0 {
                    return Err("checkpoint_interval must be at least 1 second".into());
                }
                o.checkpoint_interval = Duration::from_secs(s);
            }
            ("commit", Some(v)) => {
                let s: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| format!("commit={v}: not a number of seconds from 1 to 3600"))?;
                o.commit_interval = Duration::from_secs(s);
            }
            ("logfile", Some(v)) => o.logfile = Some(PathBuf::from(v)),
            ("dev", None) => o.nodev = false,
            ("nodev", None) => o.nodev = true,
            ("suid", None) => o.nosuid = false,
            ("nosuid", None) => o.nosuid = true,
            ("exec", None) => o.noexec = false,
            ("noexec", None) => o.noexec = true,
            ("remount", None) => o.remount = true,
            _ if generic(&opt) => {}
            _ => return Err(format!("unknown option '{opt}' (see lfs-fuse --help)")),
        }
    }
    Ok(o)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Options, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn fstab_style_and_ours() {
        let o = p("img /mnt -o rw,nosuid,nodev,noatime,x-systemd.automount,_netdev -o allow_other,checkpoint_interval=5,nogc -f").unwrap();
        assert!(o.allow_other && o.nogc && o.foreground && !o.read_only);
        assert_eq!(o.checkpoint_interval, Duration::from_secs(5));
        assert!(p("-oro img /mnt").unwrap().read_only);
        let g = p("img /mnt -o gc_policy=greedy,gc_low=20,gc_idle,gc_protection=5").unwrap();
        let mut c = lfs_cleaner::Config::default();
        for (k, v) in &g.gc {
            c.set(k, v).unwrap();
        }
        assert_eq!(c.policy, "greedy");
        assert_eq!(c.low, lfs_cleaner::daemon::Watermark::Percent(20));
        assert!(c.idle_only);
        assert_eq!(c.protection, Duration::from_secs(5));
        assert!(p("img /mnt").unwrap().gc.is_empty());
        assert!(p("img /mnt -o gc_policy=lru")
            .unwrap_err()
            .contains("gc_policy=lru"));
        assert!(p("img /mnt -o gc_low=96").is_err());
        assert!(p("img /mnt -o gc_frob=1").unwrap_err().contains("gc_frob"));
        assert!(p("img /mnt -o norecovery").unwrap().read_only);
        let o = p("img /mnt").unwrap();
        assert!(o.writeback && o.workers == 1);
        let o = p("img /mnt -o nowriteback,workers=0").unwrap();
        assert!(!o.writeback && o.workers == 0);
        assert_eq!(p("img /mnt -o inode_cache=1000").unwrap().inode_cache, 1000);
        assert!(p("img /mnt -o inode_cache=10")
            .unwrap_err()
            .contains("inode_cache=10"));
        let o = p("img /mnt").unwrap();
        assert!(!o.nodev && !o.nosuid && !o.noexec);
        let o = p("img /mnt -o nodev,nosuid,noexec").unwrap();
        assert!(o.nodev && o.nosuid && o.noexec);
        let o = p("img /mnt -o noexec,exec,nosuid,suid,nodev,dev").unwrap();
        assert!(!o.nodev && !o.nosuid && !o.noexec);
        assert_eq!(
            p("img /mnt").unwrap().commit_interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            p("img /mnt -o commit=1").unwrap().commit_interval,
            Duration::from_secs(1)
        );
        assert!(p("img /mnt -o commit=0").unwrap_err().contains("commit=0"));
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(p("img /mnt -o bogus").unwrap_err().contains("'bogus'"));
        assert!(p("img")
            .unwrap_err()
            .contains("expected IMAGE and MOUNTPOINT"));
        assert!(p("img /mnt -x").unwrap_err().contains("'-x'"));
        assert!(p("img /mnt -o checkpoint_interval=0").is_err());
        assert!(p("img /mnt -o workers=65")
            .unwrap_err()
            .contains("workers=65"));
        assert!(p("img /mnt -o workers=x").is_err());
        assert!(p("img /mnt -o").is_err());
    }
}
