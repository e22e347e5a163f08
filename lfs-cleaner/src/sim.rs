//! The Sprite LFS cleaning simulator (Rosenblum & Ousterhout, TOCS 1992, section 3.5),
//! driven by the same `Policy` and `choose` the daemon uses.
//!
//! The model is the paper's: a disk of `segments` segments of `seg_blocks` blocks holds a
//! fixed number of one-block files, enough to fill it to `utilization`. Each step
//! overwrites one file (uniformly, or hot-and-cold: `hot_share` of the writes go to
//! `hot_fraction` of the files); the old copy dies, the new one is appended to the log.
//! When the log runs out of clean segments the cleaner runs until `clean_target` segments
//! are clean, choosing victims with the policy. Write cost counts every block moved by the
//! disk per new block: (blocks read by the cleaner + blocks it writes back + new blocks) /
//! new blocks; an empty victim is not read, as in the paper.
//!
//! Time is the step counter, one step to a millisecond of `SegmentView::write_time_ns`, so
//! cost-benefit sees ages in the same units the real mount does. A segment's write time is
//! when it was last appended to, and the cleaner's output counts as new (see `lib.rs`).

use crate::{choose, Policy};
use lfs_core::fs::SegmentView;
use std::fmt::Write as _;

/// What "age" cost-benefit sees for a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SegmentAge {
    /// Time since the segment was written; the cleaner's output counts as new. What the
    /// engine records (`SegmentView::write_time_ns`).
    Written,
    /// The youngest block's modification time, which a move keeps (Sprite's segment usage
    /// table). Shown for comparison.
    YoungestBlock,
}

/// Which files the workload overwrites.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    Uniform,
    /// `share` of the writes go to `fraction` of the files (the paper: 0.9 to 0.1).
    HotCold {
        fraction: f64,
        share: f64,
    },
}

impl Access {
    pub const PAPER_HOT_COLD: Access = Access::HotCold {
        fraction: 0.1,
        share: 0.9,
    };

    pub fn name(&self) -> String {
        match self {
            Access::Uniform => "uniform".into(),
            Access::HotCold { fraction, share } => {
                format!("hot-and-cold {:.0}/{:.0}", share * 100.0, fraction * 100.0)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub segments: usize,
    pub seg_blocks: usize,
    /// Live data as a fraction of the disk, 0 < u < 1.
    pub utilization: f64,
    pub access: Access,
    /// Clean until this many segments are clean.
    pub clean_target: usize,
    /// Most victims per `choose` call (the daemon's segments per pass).
    pub per_pass: usize,
    /// Clean segments new writes leave to the cleaner: cleaning starts when the log would
    /// take one of these.
    pub reserve: usize,
    /// Sort the live blocks of one pass's victims by their age (last overwrite) before
    /// writing them back, oldest first; otherwise they go in victim order.
    pub age_sort: bool,
    pub age: SegmentAge,
    /// A write-back buffer of this many blocks (0: none, the paper's model): an overwrite
    /// of a block still buffered never reaches the log, and the buffer is written out
    /// whole when it holds more — the engine's `writeback_blocks`.
    pub buffer_blocks: usize,
    /// Steps before measuring, as multiples of the disk's capacity in blocks.
    pub warmup_capacities: f64,
    /// Steps measured, as multiples of the disk's capacity.
    pub measure_capacities: f64,
    pub seed: u64,
}

impl SimConfig {
    /// The defaults the table in docs/CLEANER.md uses.
    pub fn paper(utilization: f64, access: Access) -> SimConfig {
        SimConfig {
            segments: 500,
            seg_blocks: 256,
            utilization,
            access,
            clean_target: 10,
            per_pass: 8,
            reserve: 2,
            age_sort: true,
            age: SegmentAge::Written,
            buffer_blocks: 0,
            warmup_capacities: 20.0,
            measure_capacities: 40.0,
            seed: 0x5eed_1fe5,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SimResult {
    pub write_cost: f64,
    /// Mean utilization of the segments cleaned (empty ones included).
    pub cleaned_utilization: f64,
    pub segments_cleaned: u64,
    /// Blocks the workload overwrote, and those that reached the log.
    pub writes: u64,
    pub new_blocks: u64,
    pub blocks_read: u64,
    pub blocks_written: u64,
}

const NONE: u32 = u32::MAX;
/// One simulated step is a millisecond of `SegmentView` time.
const STEP_NS: u64 = 1_000_000;

struct Disk {
    seg_blocks: usize,
    /// File in each block slot, or NONE.
    owner: Vec<u32>,
    live: Vec<u32>,
    written_at: Vec<u64>,
    clean: Vec<usize>,
    /// Each file's block (segment * seg_blocks + slot).
    loc: Vec<u32>,
    /// Each file's last overwrite (step), for sorting by age.
    mtime: Vec<u64>,
    head: usize,
    fill: usize,
}

impl Disk {
    /// Append `file`'s block; `stamp` is the time it gives the segment (see `SegmentAge`).
    fn append(&mut self, file: u32, stamp: u64) -> bool {
        if self.fill == self.seg_blocks {
            let Some(next) = self.clean.pop() else {
                return false;
            };
            self.head = next;
            self.fill = 0;
            self.written_at[next] = 0;
        }
        let old = self.loc[file as usize];
        if old != NONE {
            let (s, i) = (old as usize / self.seg_blocks, old as usize);
            self.owner[i] = NONE;
            self.live[s] -= 1;
        }
        let at = self.head * self.seg_blocks + self.fill;
        self.owner[at] = file;
        self.loc[file as usize] = at as u32;
        self.live[self.head] += 1;
        self.written_at[self.head] = self.written_at[self.head].max(stamp);
        self.fill += 1;
        true
    }
}

/// A small deterministic generator (xorshift64*): the simulator needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        (((self.next() >> 11) as u128 * n as u128) >> 53) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Run one simulation. Errors if the configuration cannot run (the disk too full for the
/// cleaner to make room, or a nonsensical size).
pub fn simulate(policy: &dyn Policy, cfg: &SimConfig) -> Result<SimResult, String> {
    let total = cfg.segments * cfg.seg_blocks;
    let files = (total as f64 * cfg.utilization) as usize;
    if !(cfg.utilization > 0.0 && cfg.utilization < 1.0)
        || cfg.seg_blocks == 0
        || cfg.reserve == 0
        || cfg.clean_target <= cfg.reserve
        || cfg.clean_target + 2 > cfg.segments
        || files + (cfg.clean_target + 1) * cfg.seg_blocks > total
        || total >= NONE as usize
    {
        return Err(format!(
            "cannot simulate {} segments of {} blocks at {:.0}% with {} kept clean",
            cfg.segments,
            cfg.seg_blocks,
            cfg.utilization * 100.0,
            cfg.clean_target
        ));
    }
    let mut d = Disk {
        seg_blocks: cfg.seg_blocks,
        owner: vec![NONE; total],
        live: vec![0; cfg.segments],
        written_at: vec![0; cfg.segments],
        clean: (1..cfg.segments).rev().collect(),
        loc: vec![NONE; files],
        mtime: vec![0; files],
        head: 0,
        fill: 0,
    };
    let mut rng = Rng(cfg.seed | 1);
    let mut now = 0u64;
    // Fill: every file written once, in order.
    for f in 0..files as u32 {
        if !d.append(f, now) {
            return Err("initial fill ran out of segments".into());
        }
    }
    let hot_files = match cfg.access {
        Access::HotCold { fraction, .. } => ((files as f64 * fraction) as u64).max(1),
        Access::Uniform => files as u64,
    };
    let warmup = (total as f64 * cfg.warmup_capacities) as u64;
    let steps = warmup + (total as f64 * cfg.measure_capacities) as u64;
    let mut r = SimResult::default();
    let mut cleaned_live = 0u64;
    let mut buffer: Vec<u32> = Vec::new();
    let mut buffered = vec![false; files];
    for step in 0..steps {
        if step == warmup {
            r = SimResult::default();
            cleaned_live = 0;
        }
        now += 1;
        let file = match cfg.access {
            Access::Uniform => rng.below(files as u64),
            Access::HotCold { share, .. } => {
                if rng.unit() < share {
                    rng.below(hot_files)
                } else {
                    hot_files + rng.below(files as u64 - hot_files)
                }
            }
        } as u32;
        d.mtime[file as usize] = now;
        r.writes += 1;
        if cfg.buffer_blocks > 0 {
            if !buffered[file as usize] {
                buffered[file as usize] = true;
                buffer.push(file);
            }
            if buffer.len() <= cfg.buffer_blocks {
                continue;
            }
            buffer.sort_unstable();
        } else {
            buffer.push(file);
        }
        for f in buffer.drain(..) {
            buffered[f as usize] = false;
            if d.fill == d.seg_blocks && d.clean.len() <= cfg.reserve {
                clean(policy, cfg, &mut d, now, &mut r, &mut cleaned_live)?;
            }
            if !d.append(f, now) {
                return Err("the log ran out of clean segments".into());
            }
            r.new_blocks += 1;
        }
    }
    r.write_cost = (r.new_blocks + r.blocks_read + r.blocks_written) as f64 / r.new_blocks as f64;
    r.cleaned_utilization = if r.segments_cleaned == 0 {
        0.0
    } else {
        cleaned_live as f64 / (r.segments_cleaned as f64 * cfg.seg_blocks as f64)
    };
    Ok(r)
}

fn clean(
    policy: &dyn Policy,
    cfg: &SimConfig,
    d: &mut Disk,
    now: u64,
    r: &mut SimResult,
    cleaned_live: &mut u64,
) -> Result<(), String> {
    let sb = cfg.seg_blocks as u64 * 4096;
    while d.clean.len() < cfg.clean_target {
        let views: Vec<SegmentView> = (0..cfg.segments)
            .filter(|&s| s != d.head && !d.clean.contains(&s))
            .map(|s| SegmentView {
                segment: s as u64,
                live_bytes: d.live[s] as u64 * 4096,
                seg_bytes: sb,
                write_time_ns: d.written_at[s] * STEP_NS,
            })
            .collect();
        // Take only what the free room can absorb: the head's rest plus the clean segments,
        // minus one kept for the pass itself.
        let room = (cfg.seg_blocks - d.fill) + d.clean.len() * cfg.seg_blocks;
        let mut victims = Vec::new();
        let mut need = 0usize;
        for v in choose(policy, &views, now * STEP_NS, cfg.per_pass, 0) {
            let l = d.live[v as usize] as usize;
            if need + l > room {
                continue;
            }
            need += l;
            victims.push(v as usize);
        }
        if victims.is_empty() {
            return Err(format!(
                "the cleaner found nothing it could clean at {:.0}% full",
                cfg.utilization * 100.0
            ));
        }
        let mut moving: Vec<u32> = Vec::new();
        for &v in &victims {
            let l = d.live[v] as u64;
            *cleaned_live += l;
            r.segments_cleaned += 1;
            if l > 0 {
                r.blocks_read += cfg.seg_blocks as u64;
            }
            let slots = &d.owner[v * cfg.seg_blocks..(v + 1) * cfg.seg_blocks];
            moving.extend(slots.iter().copied().filter(|&f| f != NONE));
        }
        if cfg.age_sort {
            moving.sort_by_key(|&f| d.mtime[f as usize]);
        }
        for f in moving {
            let stamp = match cfg.age {
                SegmentAge::Written => now,
                SegmentAge::YoungestBlock => d.mtime[f as usize],
            };
            if !d.append(f, stamp) {
                return Err("the cleaner ran out of room mid-pass".into());
            }
            r.blocks_written += 1;
        }
        for v in victims {
            debug_assert_eq!(d.live[v], 0);
            d.owner[v * cfg.seg_blocks..(v + 1) * cfg.seg_blocks].fill(NONE);
            d.clean.insert(0, v);
        }
    }
    Ok(())
}

/// One row of the reference table: the paper's figures (via the public
/// re-implementation) for hot-and-cold, greedy then cost-benefit.
pub const HOT_COLD_REFERENCE: [(f64, f64, f64); 4] = [
    (0.75, 4.54, 3.32),
    (0.80, 5.45, 3.75),
    (0.85, 7.28, 4.64),
    (0.90, 10.24, 6.23),
];

/// A curve for the plot: label, colour, dashed, and (utilization, write cost) points.
pub struct Curve {
    pub label: String,
    pub colour: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
    /// Draw marks only (reference points), no line.
    pub marks_only: bool,
}

/// Write cost against utilization as a self-contained SVG.
pub fn svg(title: &str, curves: &[Curve]) -> String {
    let (w, h, left, right, top, bottom) = (780.0, 460.0, 60.0, 250.0, 40.0, 50.0);
    let (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 14.0);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y.min(y1) - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>
"#,
        (left + w - right) / 2.0
    );
    for i in 0..=10 {
        let x = i as f64 / 10.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(x),
            py(y0),
            py(y1),
            py(y0) + 16.0,
            i * 10
        );
    }
    for i in 0..=7 {
        let y = i as f64 * 2.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{2}" x2="{1}" y2="{2}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            px(x0),
            px(x1),
            py(y),
            px(x0) - 6.0,
            py(y) + 4.0,
            y
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">disk utilization (%)</text><text transform="translate(16,{}) rotate(-90)" text-anchor="middle">write cost</text>"#,
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0
    );
    for (i, c) in curves.iter().enumerate() {
        if !c.marks_only {
            let pts: Vec<String> = c
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"/>"#,
                c.colour,
                if c.dashed {
                    r#" stroke-dasharray="6,4""#
                } else {
                    ""
                },
                pts.join(" ")
            );
        }
        for &(x, y) in &c.points {
            if c.marks_only {
                let _ = writeln!(
                    s,
                    r#"<path d="M{0:.1},{1:.1} m-5,-5 l10,10 m0,-10 l-10,10" stroke="{2}" stroke-width="2"/>"#,
                    px(x),
                    py(y),
                    c.colour
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                    px(x),
                    py(y),
                    c.colour
                );
            }
        }
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = w - right + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{}</text>"#,
            lx + 25.0,
            c.colour,
            if c.marks_only {
                r#" stroke-dasharray="2,3""#
            } else if c.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            },
            lx + 30.0,
            ly + 4.0,
            c.label
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{CostBenefit, Greedy};

    fn small(u: f64, access: Access) -> SimConfig {
        SimConfig {
            segments: 120,
            seg_blocks: 64,
            warmup_capacities: 4.0,
            measure_capacities: 6.0,
            clean_target: 6,
            ..SimConfig::paper(u, access)
        }
    }

    #[test]
    fn write_cost_is_two_over_one_minus_u_or_better() {
        // The paper's bound for a cleaner that reads whole segments: a victim at
        // utilization u costs 2 / (1 - u); the cleaner picks below-average segments, so
        // the measured cost sits between 1 and the bound for the disk's utilization.
        for u in [0.3, 0.6] {
            let r = simulate(&Greedy, &small(u, Access::Uniform)).unwrap();
            assert!(
                r.write_cost > 1.0 && r.write_cost < 2.0 / (1.0 - u),
                "{r:?}"
            );
            assert!(r.cleaned_utilization < u, "{r:?}");
            assert_eq!(
                r.write_cost,
                (r.new_blocks + r.blocks_read + r.blocks_written) as f64 / r.new_blocks as f64
            );
        }
    }

    #[test]
    fn cost_benefit_beats_greedy_on_hot_and_cold() {
        let g = simulate(&Greedy, &small(0.8, Access::PAPER_HOT_COLD)).unwrap();
        let c = simulate(&CostBenefit, &small(0.8, Access::PAPER_HOT_COLD)).unwrap();
        assert!(
            c.write_cost < g.write_cost,
            "greedy {g:?} cost-benefit {c:?}"
        );
    }

    #[test]
    fn a_write_back_buffer_absorbs_hot_overwrites() {
        let plain = simulate(&Greedy, &small(0.7, Access::PAPER_HOT_COLD)).unwrap();
        assert_eq!(plain.writes, plain.new_blocks);
        let cfg = SimConfig {
            buffer_blocks: 256,
            ..small(0.7, Access::PAPER_HOT_COLD)
        };
        let b = simulate(&Greedy, &cfg).unwrap();
        assert_eq!(b.writes, plain.writes);
        // The hot tenth is 538 blocks: a 256-block buffer catches many repeats.
        assert!(b.new_blocks < b.writes * 9 / 10, "{b:?}");
    }

    #[test]
    fn impossible_configurations_are_refused() {
        assert!(simulate(&Greedy, &small(0.99, Access::Uniform)).is_err());
        assert!(simulate(&Greedy, &small(0.0, Access::Uniform)).is_err());
    }

    #[test]
    fn same_seed_same_result() {
        let a = simulate(&CostBenefit, &small(0.7, Access::PAPER_HOT_COLD)).unwrap();
        let b = simulate(&CostBenefit, &small(0.7, Access::PAPER_HOT_COLD)).unwrap();
        assert_eq!(a, b);
    }
}
