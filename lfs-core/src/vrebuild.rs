//! Rebuilding format version 2's maps from the log alone (docs/FORMAT-V2.md §12), for
//! fsck's repair of a damaged DAT: every summary entry names its block completely, so the
//! newest entry for each virtual block (by sequence number, among the units of groups that
//! were applied) gives its address, checksum and first era — the original era for a block
//! the cleaner moved, which its entry keeps. Ends and frees come after, from what the kept
//! checkpoints reach (the caller's, over the rebuilt map). Not used by fsck yet (issue 20,
//! step 4).

use crate::format::v2::dat::{DatEntry, FLAG_DUP};
use crate::format::v2::summary::{Summary, ENTRY_DUP};
use crate::format::{BlockAddr, Cno, VBlock};
use std::collections::BTreeMap;

/// Where a unit's payload block `i` is.
fn payload_addr(g: &crate::vscan::Geometry, s: &Summary, i: usize) -> BlockAddr {
    g.seg_addr(s.segment) + u64::from(s.offset) + 1 + i as u64
}

/// The DAT's current entries as the log states them. `applied` says whether a unit (by its
/// sequence number) belongs to a group that was applied — never one a crash cut off.
pub fn dat_from_units(
    g: &crate::vscan::Geometry,
    units: &[&Summary],
    applied: &dyn Fn(u64) -> bool,
) -> BTreeMap<VBlock, DatEntry> {
    // vblock -> (seq of the newest write, entry)
    let mut newest: BTreeMap<VBlock, (u64, DatEntry)> = BTreeMap::new();
    for s in units.iter().filter(|s| applied(s.seq)) {
        for (i, e) in s.entries.iter().enumerate() {
            if e.vblock.is_none() {
                continue;
            }
            let addr = payload_addr(g, s, i);
            let slot = newest.entry(e.vblock).or_insert((
                0,
                DatEntry {
                    addr: BlockAddr::NONE,
                    addr2: BlockAddr::NONE,
                    start: e.start,
                    end: Cno::CURRENT,
                    crc: e.crc,
                    flags: 0,
                },
            ));
            if s.seq < slot.0 {
                continue;
            }
            let second = e.flags & ENTRY_DUP != 0;
            if s.seq > slot.0 && !second {
                // A newer write of the block: a new place (its DUP copy, if any, follows
                // in the same unit and fills addr2).
                slot.1.addr = addr;
                slot.1.addr2 = BlockAddr::NONE;
                slot.1.flags &= !FLAG_DUP;
            } else if second {
                slot.1.addr2 = addr;
                slot.1.flags |= FLAG_DUP;
            }
            slot.0 = s.seq;
            slot.1.crc = e.crc;
            slot.1.start = e.start;
        }
    }
    newest.into_iter().map(|(v, (_, e))| (v, e)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::{Device, MemDevice};
    use crate::format::v2::summary::{Entry, Kind};
    use crate::format::{Ino, SegNo, BLOCK_SIZE};
    use crate::vlog::testutil::{read_back, root, Segs};
    use crate::vlog::VLog;
    use crate::vscan::Geometry;

    const G: Geometry = Geometry {
        seg_base: BlockAddr(16),
        seg_blocks: 32,
        nsegs: 32,
    };

    fn entry(v: u64, start: u64, dup: bool) -> Entry {
        Entry {
            kind: if dup { Kind::Ifile } else { Kind::Data },
            height: 0,
            flags: if dup { ENTRY_DUP } else { 0 },
            crc: (v * 10 + start) as u32,
            generation: 1,
            ino: Ino(if dup { 2 } else { 30 }),
            index: v,
            vblock: VBlock(v),
            start: Cno(start),
        }
    }

    #[test]
    fn the_newest_applied_write_wins_and_a_move_keeps_its_start() {
        let dev = MemDevice::new((16 + 32 * 32 + 16) * BLOCK_SIZE as u64);
        let heads = [(SegNo(0), 0, 1), (SegNo(1), 0, 1)];
        let mut segs = Segs { next: 2 };
        let mut log = VLog::open(G, &heads, 100, 5, 6, Cno(4));
        let b = vec![9u8; BLOCK_SIZE];
        let mut addr = BTreeMap::new();
        // Group 1 (era 4): vblocks 1..=3, and an ifile block (2 copies) as vblock 9.
        for v in 1..=3 {
            addr.insert(v, log.append(&mut segs, 1, entry(v, 4, false), &b).unwrap());
        }
        let first_copy = log.append(&mut segs, 0, entry(9, 4, false), &b).unwrap();
        let mut second = entry(9, 4, true);
        second.kind = Kind::Data;
        second.ino = Ino(30);
        let second_copy = log.append(&mut segs, 0, second, &b).unwrap();
        log.end_group(&mut segs, root()).unwrap();
        // Group 2: the cleaner moves vblock 2 (start stays 4); vblock 3 rewritten (era 4).
        let moved = log.append(&mut segs, 1, entry(2, 4, false), &b).unwrap();
        let rewritten = log.append(&mut segs, 1, entry(3, 4, false), &b).unwrap();
        log.end_group(&mut segs, root()).unwrap();
        // Group 3, cut off by a crash: vblock 1 rewritten; must not be adopted.
        log.append(&mut segs, 1, entry(1, 4, false), &b).unwrap();
        let (cut_first, _) = log.end_group(&mut segs, root()).unwrap();
        let sealed = log.take_sealed();
        for (seq, at, bytes) in &sealed {
            if *seq != cut_first {
                dev.write_at(bytes, at.byte_offset()).unwrap();
            }
        }
        let (p, _, units) = read_back(&dev, &G, &heads, Cno(4));
        assert_eq!(p.groups.len(), 2);
        let summaries: Vec<&Summary> = units.iter().map(|u| &u.summary).collect();
        let applied = |seq: u64| seq < p.next_seq;
        let dat = dat_from_units(&G, &summaries, &applied);
        assert_eq!(
            dat[&VBlock(1)].addr,
            addr[&1],
            "the cut-off rewrite is not adopted"
        );
        assert_eq!(
            (dat[&VBlock(2)].addr, dat[&VBlock(2)].start),
            (moved, Cno(4)),
            "moved, lifetime kept"
        );
        assert_eq!(dat[&VBlock(3)].addr, rewritten);
        let nine = dat[&VBlock(9)];
        assert_eq!(
            (nine.addr, nine.addr2, nine.flags),
            (first_copy, second_copy, FLAG_DUP)
        );
    }
}
