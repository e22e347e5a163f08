//! fsck's check of format version 2's maps (docs/FORMAT-V2.md §12), over an opened store:
//!
//! - every DAT and segment-table block the trees reach decodes against the checksum its
//!   parent holds (reading the whole trees does that, or fails naming the block);
//! - every DAT entry in use points inside the log, and with `verify` its block (both
//!   copies of a DUP block) matches the checksum the entry holds;
//! - the segment table's `live` count of every segment equals what the maps put there:
//!   the current DAT entries' places and the trees' own blocks (group roots are never
//!   counted), so a count that drifted is found, whatever the cause.
//!
//! Built and tested on its own; fsck-lfs uses it from the switch (issue 20, step 4).

use crate::error::{FsError, Result};
use crate::format::v2::summary::Kind;
use crate::format::{BlockAddr, SegNo, VBlock};
use crate::vstore::VStore;
use std::collections::BTreeMap;

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapReport {
    /// DAT entries in use: current, and ended (kept for a checkpoint).
    pub current: u64,
    pub ended: u64,
    /// DAT and segment-table blocks reached.
    pub tree_blocks: u64,
    /// Places of blocks read and found to match their checksum (`verify`).
    pub verified: u64,
    /// Problems, each naming what and where.
    pub problems: Vec<MapProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapProblem {
    /// A DAT entry points outside the log.
    OutsideLog { vblock: VBlock, addr: BlockAddr },
    /// A block does not match (or cannot be read at) the place its DAT entry gives.
    BadBlock {
        vblock: VBlock,
        addr: BlockAddr,
        why: String,
    },
    /// The segment table counts `recorded` live blocks where the maps put `counted`.
    LiveCount {
        seg: SegNo,
        recorded: u32,
        counted: u32,
    },
}

impl std::fmt::Display for MapProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapProblem::OutsideLog { vblock, addr } => {
                write!(f, "virtual block {}: address {addr} is outside the log", vblock.get())
            }
            MapProblem::BadBlock { vblock, addr, why } => {
                write!(f, "virtual block {} at {addr}: {why}", vblock.get())
            }
            MapProblem::LiveCount {
                seg,
                recorded,
                counted,
            } => write!(
                f,
                "segment {seg}: the segment table counts {recorded} live blocks, the maps put {counted} there"
            ),
        }
    }
}

/// Check the maps of `st` (see the module comment). A tree block that does not decode is
/// the error (nothing below it can be checked); everything else is in the report.
pub fn check_maps(st: &mut VStore, verify: bool) -> Result<MapReport> {
    let g = st.geometry();
    let mut r = MapReport::default();
    let mut counted: BTreeMap<SegNo, u32> = BTreeMap::new();
    let mut recorded: BTreeMap<SegNo, u32> = BTreeMap::new();
    let mut places: Vec<(VBlock, BlockAddr)> = Vec::new();
    let mut count = |a: BlockAddr, r: &mut MapReport, v: Option<VBlock>| match g.seg_of(a) {
        Some(s) => *counted.entry(s).or_default() += 1,
        None => r.problems.push(MapProblem::OutsideLog {
            vblock: v.unwrap_or(VBlock::NONE),
            addr: a,
        }),
    };
    let mut blocks = Vec::new();
    let mut entries = Vec::new();
    st.walk_maps(
        &mut |kind: Kind, a, _h, _i| blocks.push((kind, a)),
        &mut |v, e| entries.push((v, *e)),
        &mut |s, u| {
            recorded.insert(s, u.live);
        },
    )?;
    for (_, a) in blocks {
        r.tree_blocks += 1;
        count(a, &mut r, None);
    }
    for (v, e) in entries {
        if !e.is_current() {
            r.ended += 1;
            continue;
        }
        r.current += 1;
        for a in [e.addr, e.addr2].into_iter().filter(|a| !a.is_none()) {
            count(a, &mut r, Some(v));
            places.push((v, a));
        }
    }
    if verify {
        for (v, a) in places {
            match st.read_place(v, a) {
                Ok(()) => r.verified += 1,
                Err(FsError::Io(e)) => r.problems.push(MapProblem::BadBlock {
                    vblock: v,
                    addr: a,
                    why: format!("unreadable: {e}"),
                }),
                Err(e) => r.problems.push(MapProblem::BadBlock {
                    vblock: v,
                    addr: a,
                    why: e.to_string(),
                }),
            }
        }
    }
    let segs: std::collections::BTreeSet<SegNo> =
        counted.keys().chain(recorded.keys()).copied().collect();
    for s in segs {
        let (c, rec) = (
            counted.get(&s).copied().unwrap_or(0),
            recorded.get(&s).copied().unwrap_or(0),
        );
        if c != rec {
            r.problems.push(MapProblem::LiveCount {
                seg: s,
                recorded: rec,
                counted: c,
            });
        }
    }
    Ok(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::format::Cno;
    use crate::vstore::testutil::*;

    /// Writes, rewrites, frees, DUP blocks, checkpoints and a cleaning pass: after each
    /// step the maps hold together (the table's counts are exactly what the maps place).
    #[test]
    fn the_maps_hold_together_through_writes_frees_checkpoints_and_cleaning() {
        let dev = device();
        let mut st = fresh(&dev);
        let clean = |st: &mut VStore, what: &str| {
            let r = check_maps(st, true).unwrap();
            assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
            r
        };
        let mut vs: Vec<VBlock> = (0..120)
            .map(|i| group(&mut st, &[(data(20, i), VBlock::NONE, i)], i % 7 == 0)[0])
            .collect();
        let r = clean(&mut st, "after writes");
        assert_eq!(r.current, 120);
        assert_eq!(r.verified, 120 + 120_u64.div_ceil(7), "every copy read");
        for i in (0..120).filter(|i| i % 3 != 0) {
            vs[i as usize] = group(&mut st, &[(data(20, i), vs[i as usize], 500 + i)], false)[0];
        }
        st.begin_group().unwrap();
        for &v in vs.iter().step_by(5) {
            st.free_virtual(v).unwrap();
        }
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        clean(&mut st, "after rewrites and frees");
        checkpoint(&mut st, Cno(2));
        let r = clean(&mut st, "after a checkpoint");
        assert!(r.tree_blocks > 0, "the DAT and the table are on the device");
        let head = st.heads().unwrap().0[0].0;
        st.begin_group().unwrap();
        for s in (0..G.nsegs).map(SegNo).filter(|&s| s != head) {
            if st.segment(s).unwrap().state == crate::format::v2::sufile::SEG_IN_USE {
                st.clean_segment(s, 0).unwrap();
            }
        }
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        clean(&mut st, "after cleaning");
        checkpoint(&mut st, Cno(3));
        checkpoint(&mut st, Cno(4));
        clean(&mut st, "after the cleaning's checkpoints");
        st.close_log();
    }

    #[test]
    fn a_damaged_block_and_a_wrong_count_are_reported() {
        let dev = device();
        let mut st = fresh(&dev);
        let vs: Vec<VBlock> = (0..10)
            .map(|i| group(&mut st, &[(data(20, i), VBlock::NONE, i)], false)[0])
            .collect();
        st.sync().unwrap();
        let a = st.dat_entry(vs[4]).unwrap().addr;
        dev.write_at(&[0x55; 16], a.byte_offset() + 64).unwrap();
        let seg = G.seg_of(a).unwrap();
        st.skew_live(seg).unwrap();
        // Blocks are read from the device, not the cache.
        let roots = checkpoint(&mut st, Cno(2));
        st.skew_live(seg).unwrap();
        let r = check_maps(&mut st, true).unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| matches!(p, MapProblem::LiveCount { seg: s, .. } if *s == seg)),
            "{:?}",
            r.problems
        );
        st.close_log();
        let mut again = VStore::open(G, dev.clone(), &roots, 64);
        let r = check_maps(&mut again, true).unwrap();
        let bad: Vec<(VBlock, BlockAddr)> = r
            .problems
            .iter()
            .filter_map(|p| match p {
                MapProblem::BadBlock { vblock, addr, .. } => Some((*vblock, *addr)),
                _ => None,
            })
            .collect();
        assert_eq!(bad, vec![(vs[4], a)], "{:?}", r.problems);
        assert_eq!(r.verified, 9);
    }
}
