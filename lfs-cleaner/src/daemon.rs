//! The cleaner daemon: a thread inside every read-write lfs-fuse mount, in the spirit of
//! nilfs_cleanerd. It wakes every `check_interval`; when clean segments fall below the low
//! watermark it cleans, pass after pass (`pass_interval` apart), until they reach the high
//! watermark. A pass that gains no clean segment (nothing to free, or victims so full of
//! live data that moving them fills as many segments as it frees) is logged and the daemon
//! backs off (doubling, up to a minute) instead of spinning. With `idle_only` it cleans only after the filesystem
//! has had no writes for `idle_time`; a writer that runs out of space still cleans in the
//! foreground (the engine's `VictimPicker`), so idle-only can never cause ENOSPC by itself.

use crate::status::Status;
use crate::{choose, policy_by_name, Policy};
use lfs_core::fs::CleanReport;
use lfs_core::Fs;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A watermark: a count of clean segments, or a percentage of all segments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    Segments(u64),
    Percent(u64),
}

impl Watermark {
    pub fn segments(&self, nsegs: u64) -> u64 {
        match *self {
            Watermark::Segments(n) => n.min(nsegs),
            Watermark::Percent(p) => nsegs * p / 100,
        }
    }

    /// "10%" or "25" (segments).
    pub fn parse(v: &str) -> Result<Watermark, String> {
        if let Some(p) = v.strip_suffix('%') {
            match p.trim().parse::<u64>() {
                Ok(p) if p <= 95 => Ok(Watermark::Percent(p)),
                _ => Err(format!("{v}: not a percentage from 0 to 95")),
            }
        } else {
            v.trim()
                .parse()
                .map(Watermark::Segments)
                .map_err(|_| format!("{v}: not a segment count or a percentage like 10%"))
        }
    }
}

/// The daemon's tunables. Mount options and the config file set them (config first, then
/// options, so a mount option wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub policy: String,
    pub low: Watermark,
    pub high: Watermark,
    pub segments_per_pass: usize,
    pub check_interval: Duration,
    pub pass_interval: Duration,
    pub protection: Duration,
    pub idle_only: bool,
    pub idle_time: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            policy: "cost-benefit".into(),
            low: Watermark::Percent(5),
            high: Watermark::Percent(10),
            segments_per_pass: 8,
            check_interval: Duration::from_millis(200),
            pass_interval: Duration::ZERO,
            protection: Duration::ZERO,
            idle_only: false,
            idle_time: Duration::from_secs(2),
        }
    }
}

/// Where lfs-fuse looks for a config file when no `gc_config=` option names one.
pub const DEFAULT_CONFIG: &str = "/etc/lfs-cleaner.conf";

impl Config {
    /// Set one key (config-file names; mount options map onto them).
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        let secs = |v: &str| -> Result<Duration, String> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{key} {v}: not a number of seconds (0 to 86400)"))
        };
        match key {
            "policy" | "selection_policy" => {
                if policy_by_name(v).is_none() {
                    return Err(format!("{key} {v}: not greedy or cost-benefit"));
                }
                self.policy = v.to_string();
            }
            "low_watermark" | "min_clean_segments" => self.low = Watermark::parse(v)?,
            "high_watermark" | "max_clean_segments" => self.high = Watermark::parse(v)?,
            "segments_per_pass" | "nsegments_per_clean" => {
                self.segments_per_pass = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| format!("{key} {v}: not a count from 1 to 1024"))?
            }
            "check_interval" | "clean_check_interval" => {
                self.check_interval = secs(v)?.max(Duration::from_millis(10))
            }
            "pass_interval" | "cleaning_interval" => self.pass_interval = secs(v)?,
            "protection_period" => self.protection = secs(v)?,
            "idle_only" => {
                self.idle_only = match v.trim() {
                    "1" | "yes" | "true" | "on" => true,
                    "0" | "no" | "false" | "off" => false,
                    _ => return Err(format!("{key} {v}: not yes or no")),
                }
            }
            "idle_time" => self.idle_time = secs(v)?,
            _ => return Err(format!("unknown setting {key}")),
        }
        Ok(())
    }

    /// A config file: `key value` lines, `#` comments (nilfs_cleanerd.conf's shape). Errors
    /// name the line.
    pub fn parse_file(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: `{line}` has no value", n + 1))?;
            self.set(k, v.trim())
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(())
    }

    fn policy(&self) -> Box<dyn Policy> {
        policy_by_name(&self.policy).unwrap_or_else(|| Box::new(crate::CostBenefit))
    }
}

#[derive(Debug, Default)]
struct State {
    suspended: bool,
    /// Below the low watermark since the last time the high one was reached.
    cleaning: bool,
    stop: bool,
    fruitless: u64,
    /// Writes seen (log blocks not the cleaner's) and when they last changed.
    writes_seen: u64,
    last_write: Option<Instant>,
    backoff_until: Option<Instant>,
}

struct Shared {
    fs: Arc<Fs>,
    cfg: Mutex<Config>,
    st: Mutex<State>,
    wake: Condvar,
    /// One pass at a time, the daemon's or a control request's.
    pass: Mutex<()>,
}

/// A handle on a running daemon: what the control socket talks to.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

/// The daemon thread; `stop` ends it and gives back nothing but the join.
pub struct Daemon {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    /// Start the daemon on `fs`. With `enabled` false (nogc) no thread runs, but the handle
    /// still answers status and explicit passes.
    pub fn start(fs: Arc<Fs>, cfg: Config, enabled: bool) -> std::io::Result<Daemon> {
        let handle = Handle(Arc::new(Shared {
            fs,
            cfg: Mutex::new(cfg),
            st: Mutex::new(State {
                suspended: !enabled,
                ..State::default()
            }),
            wake: Condvar::new(),
            pass: Mutex::new(()),
        }));
        let thread = if enabled {
            let h = handle.clone();
            Some(
                std::thread::Builder::new()
                    .name("lfs-cleaner".into())
                    .spawn(move || h.run())?,
            )
        } else {
            None
        };
        Ok(Daemon { handle, thread })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stop the thread (after the pass in progress) and wait for it.
    pub fn stop(mut self) {
        lock(&self.handle.0.st).stop = true;
        self.handle.0.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Handle {
    pub fn suspend(&self) {
        lock(&self.0.st).suspended = true;
    }

    pub fn resume(&self) {
        let mut st = lock(&self.0.st);
        st.suspended = false;
        st.backoff_until = None;
        drop(st);
        self.0.wake.notify_all();
    }

    pub fn status(&self) -> Status {
        let cfg = lock(&self.0.cfg).clone();
        let st = lock(&self.0.st);
        let mut s = Status::gather(&self.0.fs);
        s.mode = "daemon".into();
        s.state = if st.suspended {
            "suspended"
        } else if st.cleaning {
            "cleaning"
        } else {
            "idle"
        }
        .into();
        s.policy = cfg.policy.clone();
        (s.low_watermark, s.high_watermark) = watermarks(&self.0.fs, &cfg, s.clean_segments);
        s.segments_per_pass = cfg.segments_per_pass as u64;
        s.protection_secs = cfg.protection.as_secs_f64();
        s.idle_only = cfg.idle_only;
        s.fruitless_passes = st.fruitless;
        s
    }

    /// One pass now, whatever the watermarks say (suspended or not): `lfs-cleaner pass`.
    pub fn pass(
        &self,
        policy: Option<&str>,
        segments: Option<usize>,
    ) -> lfs_core::Result<CleanReport> {
        let cfg = lock(&self.0.cfg).clone();
        let p = policy
            .and_then(policy_by_name)
            .unwrap_or_else(|| cfg.policy());
        let n = segments.unwrap_or(cfg.segments_per_pass);
        let _one = lock(&self.0.pass);
        run_pass(&self.0.fs, p.as_ref(), n, cfg.protection)
    }

    fn run(&self) {
        let mut st = lock(&self.0.st);
        loop {
            let cfg = lock(&self.0.cfg).clone();
            let wait = if st.cleaning && !st.suspended && st.backoff_until.is_none() {
                cfg.pass_interval
            } else {
                cfg.check_interval
            };
            if !wait.is_zero() {
                st = self
                    .0
                    .wake
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if st.stop {
                return;
            }
            if st.suspended {
                continue;
            }
            let now = Instant::now();
            if st.backoff_until.is_some_and(|t| now < t) {
                continue;
            }
            st.backoff_until = None;
            let fs = &self.0.fs;
            let stats = fs.stats();
            let writes = stats
                .blocks_appended
                .saturating_sub(stats.cleaner_blocks_written);
            if writes != st.writes_seen {
                st.writes_seen = writes;
                st.last_write = Some(now);
            }
            let (low, high) = watermarks(fs, &cfg, stats.clean_segments);
            if stats.clean_segments < low {
                st.cleaning = true;
            }
            if stats.clean_segments >= high.max(low) {
                st.cleaning = false;
            }
            let busy = st.last_write.is_some_and(|t| now - t < cfg.idle_time);
            if !st.cleaning || (cfg.idle_only && busy) {
                continue;
            }
            drop(st);
            let before = stats.clean_segments;
            let r = {
                let _one = lock(&self.0.pass);
                run_pass(
                    fs,
                    cfg.policy().as_ref(),
                    cfg.segments_per_pass,
                    cfg.protection,
                )
            };
            // Progress is clean segments gained: victims nearly full of live data are freed
            // but fill as many new segments, and cleaning them again and again would only
            // burn the disk.
            let gained = fs.stats().clean_segments.saturating_sub(before);
            st = lock(&self.0.st);
            match r {
                Ok(r) if gained > 0 => {
                    st.fruitless = 0;
                    tracing::debug!(
                        gained,
                        freed = r.freed,
                        moved = r.blocks_moved,
                        "cleaning pass"
                    );
                }
                Ok(r) => {
                    st.fruitless += 1;
                    let secs = 1u64 << st.fruitless.min(6);
                    if r.segments.is_empty() {
                        tracing::debug!(
                            "nothing to clean (all segments live or protected); next try in {secs} s"
                        );
                    } else {
                        tracing::warn!(
                            victims = r.segments.len(),
                            freed = r.freed,
                            "cleaning pass gained no clean segment; next try in {secs} s"
                        );
                    }
                    st.backoff_until = Some(Instant::now() + Duration::from_secs(secs));
                }
                Err(e) => {
                    st.fruitless += 1;
                    tracing::error!(error = %e, "cleaning pass failed");
                    st.backoff_until = Some(Instant::now() + Duration::from_secs(10));
                }
            }
        }
    }
}

/// The watermarks in force, in segments: the configured ones, but the high one at most a
/// quarter of the space cleaning could ever make (clean segments plus the dead space in
/// dirty ones), and the low one at most the high one. Segments kept clean are space the
/// data cannot age in: on a disk 90% full, holding 10% of it clean meant cleaning segments
/// 94% live, at a write cost of 77 where foreground cleaning alone needs about 12.
pub fn watermarks(fs: &Fs, cfg: &Config, clean: u64) -> (u64, u64) {
    let sb = fs.superblock();
    let dead: u64 = fs.segment_views().iter().map(|v| v.dead_bytes()).sum();
    let cap = (clean + dead / sb.seg_bytes().max(1)) / 4;
    let high = cfg.high.segments(sb.nsegs).min(cap);
    (cfg.low.segments(sb.nsegs).min(high), high)
}

/// Choose up to `max` victims with `policy` (sparing segments younger than `protection`
/// unless nothing else is left) and clean them.
pub fn run_pass(
    fs: &Fs,
    policy: &dyn Policy,
    max: usize,
    protection: Duration,
) -> lfs_core::Result<CleanReport> {
    let views = fs.segment_views();
    let now = lfs_core::now_ns();
    let mut victims = choose(policy, &views, now, max, protection.as_nanos() as u64);
    if victims.is_empty() {
        victims = choose(policy, &views, now, max, 0);
    }
    if victims.is_empty() {
        return Ok(CleanReport::default());
    }
    fs.clean(&victims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_file_and_overrides() {
        let mut c = Config::default();
        c.parse_file(
            "# lfs-cleaner.conf\n\
             selection_policy greedy\n\
             min_clean_segments 5%   # start below\n\
             max_clean_segments 40\n\
             segments_per_pass 4\n\
             protection_period 0.5\n\
             idle_only yes\n",
        )
        .unwrap();
        assert_eq!(c.policy, "greedy");
        assert_eq!(c.low, Watermark::Percent(5));
        assert_eq!(c.high, Watermark::Segments(40));
        assert_eq!(c.segments_per_pass, 4);
        assert_eq!(c.protection, Duration::from_millis(500));
        assert!(c.idle_only);
        assert_eq!(c.low.segments(1000), 50);
        assert_eq!(c.high.segments(30), 30);
        let e = c.parse_file("policy lru\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("lru"), "{e}");
        assert!(c
            .parse_file("\n\nlow_watermark 99%")
            .unwrap_err()
            .contains("line 3"));
        assert!(c
            .parse_file("frobnicate 1")
            .unwrap_err()
            .contains("frobnicate"));
        assert!(c.parse_file("idle_only").unwrap_err().contains("no value"));
        assert!(c.set("check_interval", "-1").is_err());
    }
}
