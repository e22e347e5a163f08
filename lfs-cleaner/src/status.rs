//! What the cleaner reports: space as live / reclaimable / free, the distribution of segment
//! utilizations, and the cleaner's work since mount with its write cost.

use lfs_core::Fs;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One snapshot of a filesystem's space and its cleaner, for `lfs-cleaner status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// "daemon" (a live mount's cleaner) or "offline" (an unmounted image).
    pub mode: String,
    /// "idle", "cleaning", "suspended", or "off" (nogc / offline).
    pub state: String,
    pub policy: String,
    pub low_watermark: u64,
    pub high_watermark: u64,
    pub segments_per_pass: u64,
    pub protection_secs: f64,
    pub idle_only: bool,

    pub segments: u64,
    pub segment_bytes: u64,
    /// Segments writers leave to the cleaner (and to deletes on a full disk).
    pub reserved_segments: u64,
    pub clean_segments: u64,
    /// Segments written and sealed: the ones the cleaner may take.
    pub dirty_segments: u64,
    /// The log head, and segments being cleaned.
    pub active_segments: u64,
    /// Emptied (by deletes, overwrites or the cleaner), clean once the next checkpoint is
    /// durable.
    pub freed_segments: u64,
    pub live_bytes: u64,
    /// Dead bytes in dirty segments: what cleaning would give back.
    pub reclaimable_bytes: u64,
    pub free_bytes: u64,
    /// Dirty segments by utilization, in tenths: [0, 10%), [10, 20%) … [90, 100%].
    pub utilization_histogram: [u64; 10],

    /// Since mount.
    pub passes: u64,
    pub segments_cleaned: u64,
    pub blocks_read: u64,
    pub blocks_written: u64,
    pub blocks_moved: u64,
    /// Blocks the log wrote for everything but cleaning.
    pub new_blocks: u64,
    /// (cleaner reads + cleaner writes + new blocks) / new blocks; None before any write.
    pub write_cost: Option<f64>,
    /// Mean utilization of the segments the cleaner took.
    pub cleaned_utilization: Option<f64>,
    /// Passes in a row that freed nothing (the daemon backs off meanwhile).
    pub fruitless_passes: u64,
}

impl Status {
    /// Space and counters of `fs`; the caller fills in mode, state and configuration.
    pub fn gather(fs: &Fs) -> Status {
        let sb = fs.superblock();
        let st = fs.stats();
        let views = fs.segment_views();
        let seg_bytes = sb.seg_bytes();
        let mut hist = [0u64; 10];
        let mut reclaimable = 0;
        for v in &views {
            hist[((v.utilization() * 10.0) as usize).min(9)] += 1;
            reclaimable += v.dead_bytes();
        }
        let new_blocks = st.blocks_appended.saturating_sub(st.cleaner_blocks_written);
        let dirty = views.len() as u64;
        let c = fs.segment_counts();
        Status {
            segments: sb.nsegs,
            segment_bytes: seg_bytes,
            reserved_segments: sb.reserved_segs as u64,
            clean_segments: st.clean_segments,
            dirty_segments: dirty,
            active_segments: c.active + c.cleaning,
            freed_segments: c.freed,
            live_bytes: st.live_bytes,
            reclaimable_bytes: reclaimable,
            free_bytes: st.clean_segments * seg_bytes,
            utilization_histogram: hist,
            passes: st.cleaner_passes,
            segments_cleaned: st.cleaner_segments,
            blocks_read: st.cleaner_blocks_read,
            blocks_written: st.cleaner_blocks_written,
            blocks_moved: st.cleaner_blocks_moved,
            new_blocks,
            write_cost: (new_blocks > 0).then(|| {
                (new_blocks + st.cleaner_blocks_read + st.cleaner_blocks_written) as f64
                    / new_blocks as f64
            }),
            cleaned_utilization: (st.cleaner_victims > 0).then(|| {
                st.cleaner_victim_live_bytes as f64 / (st.cleaner_victims * seg_bytes) as f64
            }),
            ..Status::default()
        }
    }

    /// The human form of `lfs-cleaner status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cleaner: {} ({}), policy {}, {} segments per pass",
            self.state, self.mode, self.policy, self.segments_per_pass
        );
        if self.mode == "daemon" {
            let _ = writeln!(
                s,
                "  cleans below {} clean segments, until {}; protection {} s{}",
                self.low_watermark,
                self.high_watermark,
                self.protection_secs,
                if self.idle_only {
                    "; only when idle"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            s,
            "segments: {} of {}: {} clean, {} dirty, {} being written, {} freed (clean at the \
             next checkpoint)",
            self.segments,
            size(self.segment_bytes),
            self.clean_segments,
            self.dirty_segments,
            self.active_segments,
            self.freed_segments
        );
        let _ = writeln!(
            s,
            "space: {} live, {} reclaimable (dead, not yet cleaned), {} free",
            size(self.live_bytes),
            size(self.reclaimable_bytes),
            size(self.free_bytes)
        );
        let _ = writeln!(s, "dirty segments by utilization:");
        let most = self
            .utilization_histogram
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        for (i, &n) in self.utilization_histogram.iter().enumerate() {
            let bar = (n * 40).div_ceil(most.max(1)) as usize;
            let _ = writeln!(
                s,
                "  {:>3}-{:<4} {:>8}  {}",
                i * 10,
                format!("{}%", (i + 1) * 10),
                n,
                "#".repeat(bar)
            );
        }
        let _ = write!(
            s,
            "since mount: {} passes, {} segments cleaned, {} blocks read, {} written, {} moved; \
             {} new blocks",
            self.passes,
            self.segments_cleaned,
            self.blocks_read,
            self.blocks_written,
            self.blocks_moved,
            self.new_blocks
        );
        if let Some(u) = self.cleaned_utilization {
            let _ = write!(
                s,
                "\n  cleaned segments were {:.1}% live on average",
                u * 100.0
            );
        }
        if let Some(w) = self.write_cost {
            let _ = write!(s, "\n  write cost {w:.2}");
        }
        if self.fruitless_passes > 0 {
            let _ = write!(
                s,
                "\n  last {} passes freed nothing (backing off)",
                self.fruitless_passes
            );
        }
        s.push('\n');
        s
    }
}

/// Bytes in binary units, one decimal.
pub fn size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
