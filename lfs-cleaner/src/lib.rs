//! lfs-cleaner: which segments to clean, and when. The mechanism (reading victims, deciding
//! liveness from summaries, moving live blocks) is `lfs_core::Fs::clean`; this crate holds
//! the policies — pure scoring functions behind one interface — the daemon that runs inside
//! every read-write mount (`daemon`), its control socket (`control`), the status it reports
//! (`status`), the Sprite simulator that drives the same policies (`sim`), and the
//! `lfs-cleaner` command.
//!
//! - `greedy`: least utilized first (score 1 − u).
//! - `cost-benefit`: Sprite LFS's (1 − u) · age / (1 + u). Age is the time since the segment
//!   was last written, and a segment the cleaner writes counts as new: a public
//!   re-implementation of the Sprite simulator found that taking age from the youngest
//!   block's modification time (kept across moves) loses the gain over greedy, while this
//!   choice reproduces it. `lfs-cleaner simulate --age` measures both (docs/CLEANER.md).

pub mod control;
pub mod daemon;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;

pub use daemon::{run_pass, Config, Daemon, Handle};
pub use status::Status;

use lfs_core::format::SegNo;
use lfs_core::fs::{SegmentView, VictimPicker};
use std::fmt;

/// A cleaning policy: a score per segment, highest cleaned first.
pub trait Policy: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    /// Higher = clean sooner. `now_ns` and the segment's write time give its age.
    fn score(&self, seg: &SegmentView, now_ns: u64) -> f64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Greedy;

impl Policy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }
    fn score(&self, seg: &SegmentView, _now_ns: u64) -> f64 {
        1.0 - seg.utilization()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CostBenefit;

impl Policy for CostBenefit {
    fn name(&self) -> &'static str {
        "cost-benefit"
    }
    fn score(&self, seg: &SegmentView, now_ns: u64) -> f64 {
        let u = seg.utilization();
        // Age in seconds (at least a millisecond, so fresh segments still order by u).
        let age = (now_ns.saturating_sub(seg.write_time_ns) as f64 / 1e9).max(1e-3);
        (1.0 - u) * age / (1.0 + u)
    }
}

/// Parse a policy name as the mount option and the CLI spell it.
pub fn policy_by_name(name: &str) -> Option<Box<dyn Policy>> {
    match name {
        "greedy" => Some(Box::new(Greedy)),
        "cost-benefit" | "cost_benefit" | "costbenefit" => Some(Box::new(CostBenefit)),
        _ => None,
    }
}

/// Victims by score: segments with nothing to gain (fully live) or written within the
/// protection period are left alone; the chosen ones are returned best first, because the
/// mechanism takes them in order only while the log has room for their live blocks (when
/// space is short, the first few are all a pass can take). The pass writes all its live
/// blocks in one flush group, so the order does not decide where they land.
pub fn choose(
    policy: &dyn Policy,
    segs: &[SegmentView],
    now_ns: u64,
    max: usize,
    protection_ns: u64,
) -> Vec<SegNo> {
    let mut scored: Vec<(f64, &SegmentView)> = segs
        .iter()
        .filter(|s| s.live_bytes < s.seg_bytes)
        .filter(|s| now_ns.saturating_sub(s.write_time_ns) >= protection_ns)
        .map(|s| (policy.score(s, now_ns), s))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.segment.cmp(&b.1.segment)));
    scored
        .into_iter()
        .take(max)
        .map(|(_, s)| s.segment)
        .collect()
}

/// A policy as the engine's foreground cleaner (when a writer would get ENOSPC). No
/// protection period here: the segments it would shelter — just written, hot, dying fast —
/// are the very ones that free the most, and sheltering them let a writer get ENOSPC with
/// a quarter of the disk reclaimable.
#[derive(Debug)]
pub struct Picker {
    pub policy: Box<dyn Policy>,
}

impl VictimPicker for Picker {
    fn pick(&self, segs: &[SegmentView], now_ns: u64, max: usize) -> Vec<SegNo> {
        choose(self.policy.as_ref(), segs, now_ns, max, 0)
    }
    /// The greedy policy, whatever the configured one is.
    fn pick_emptiest(&self, segs: &[SegmentView], max: usize) -> Vec<SegNo> {
        choose(&Greedy, segs, 0, max, 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;
    const S: u64 = 1_000_000_000;

    fn nos(n: &[u64]) -> Vec<SegNo> {
        n.iter().copied().map(SegNo).collect()
    }

    fn seg(segment: u64, live: u64, written_s: u64) -> SegmentView {
        SegmentView {
            segment: SegNo(segment),
            live_bytes: live,
            seg_bytes: SEG,
            write_time_ns: written_s * S,
        }
    }

    #[test]
    fn out_of_space_the_emptiest_go_first_whatever_the_policy() {
        // Old, nearly full segments are what cost-benefit likes; a writer out of space
        // needs the emptiest, through the picker (and the engine's default agrees).
        let segs = [
            seg(0, SEG - 1, 0),
            seg(1, SEG / 2, 900),
            seg(2, SEG / 8, 1000),
            seg(3, SEG, 0),
        ];
        let p = Picker {
            policy: Box::new(CostBenefit),
        };
        assert_eq!(
            p.pick(&segs, 1000 * S, 2),
            nos(&[1, 2]),
            "cost-benefit weighs age; greedy would take 2 first"
        );
        assert_eq!(p.pick_emptiest(&segs, 2), nos(&[2, 1]));
        #[derive(Debug)]
        struct Default;
        impl VictimPicker for Default {
            fn pick(&self, _: &[SegmentView], _: u64, _: usize) -> Vec<SegNo> {
                vec![]
            }
        }
        assert_eq!(Default.pick_emptiest(&segs, 2), nos(&[2, 1]));
    }

    #[test]
    fn greedy_scores_by_utilization_only() {
        let g = Greedy;
        assert_eq!(g.score(&seg(0, 0, 0), 0), 1.0);
        assert_eq!(g.score(&seg(0, SEG / 4, 0), 0), 0.75);
        assert_eq!(g.score(&seg(0, SEG, 0), 0), 0.0);
        assert_eq!(
            g.score(&seg(0, SEG / 4, 0), 100 * S),
            g.score(&seg(0, SEG / 4, 90), 100 * S)
        );
    }

    #[test]
    fn cost_benefit_is_the_sprite_formula() {
        let c = CostBenefit;
        // u = 0.5, age 30 s: (1 - 0.5) * 30 / 1.5 = 10.
        let v = c.score(&seg(0, SEG / 2, 70), 100 * S);
        assert!((v - 10.0).abs() < 1e-9, "{v}");
        // u = 0.75, age 90 s: 0.25 * 90 / 1.75.
        let w = c.score(&seg(0, SEG * 3 / 4, 10), 100 * S);
        assert!((w - 0.25 * 90.0 / 1.75).abs() < 1e-9, "{w}");
        // An old, fuller segment beats a young, emptier one — greedy says the opposite.
        let old_full = seg(1, SEG * 3 / 4, 0);
        let young_empty = seg(2, SEG / 2, 99);
        let now = 100 * S;
        assert!(c.score(&old_full, now) > c.score(&young_empty, now));
        assert!(Greedy.score(&old_full, now) < Greedy.score(&young_empty, now));
    }

    #[test]
    fn choose_orders_by_score_best_first() {
        let segs = [
            seg(0, SEG, 0),       // full: never chosen
            seg(1, SEG / 2, 50),  // u .5
            seg(2, SEG / 8, 80),  // u .125, youngest
            seg(3, SEG / 4, 20),  // u .25
            seg(4, SEG / 10, 99), // u .1 but inside the protection period
        ];
        let now = 100 * S;
        let g = choose(&Greedy, &segs, now, 2, 5 * S);
        assert_eq!(g, nos(&[2, 3]), "the two least utilized, best first");
        let all = choose(&Greedy, &segs, now, 10, 0);
        assert_eq!(all, nos(&[4, 2, 3, 1]));
        let cb = choose(&CostBenefit, &segs, now, 1, 5 * S);
        // Scores: seg1 .5*50/1.5=16.7, seg2 .875*20/1.125=15.6, seg3 .75*80/1.25=48.
        assert_eq!(cb, nos(&[3]));
        assert!(policy_by_name("cost-benefit").is_some() && policy_by_name("lru").is_none());
    }
}
