//! The segment usage table and the life of a segment.
//!
//! A segment moves Clean → Active (the log is writing it) → Full → Freed (no live bytes left,
//! or emptied by the cleaner) → Clean. The step Freed → Clean happens only when a checkpoint
//! that records the segment as clean is durable: until then the previous checkpoint, which a
//! crash would fall back to, may still need the segment's old contents.

use crate::dirty::DirtyBlocks;
use crate::format::table::{UsageEntry, SEG_CLEAN, SEG_IN_USE, TABLE_ENTRIES};
use crate::format::SegNo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegState {
    Clean,
    Active,
    Full,
    /// Being emptied by the cleaner; its blocks are still where the maps say.
    Cleaning,
    /// Holds nothing live; becomes Clean after the next durable checkpoint.
    Freed,
}

#[derive(Debug, Clone, Copy)]
pub struct SegInfo {
    pub live_bytes: u64,
    pub state: SegState,
    pub write_time_ns: u64,
}

pub struct UsageTable {
    segs: Vec<SegInfo>,
    dirty: DirtyBlocks,
    seg_bytes: u64,
    clean: u64,
    /// Accounting errors seen (a live count that would go negative); fsck looks deeper.
    pub underflows: u64,
    /// Bytes that died since the mount, ever growing: a writer refused for want of space
    /// tries cleaning again only once more than it lacked has died (`check_space`).
    pub killed_bytes: u64,
    /// Bytes not live in Full, Cleaning and Freed segments: what cleaning (or a checkpoint)
    /// can give back, kept current so that asking costs nothing (`reclaimable_bytes`).
    dead: i64,
}

impl UsageTable {
    pub fn new(nsegs: u64, seg_bytes: u64) -> UsageTable {
        let nblocks = (nsegs as usize).div_ceil(TABLE_ENTRIES);
        UsageTable {
            segs: vec![
                SegInfo {
                    live_bytes: 0,
                    state: SegState::Clean,
                    write_time_ns: 0
                };
                nsegs as usize
            ],
            dirty: DirtyBlocks::new(nblocks, true),
            seg_bytes,
            clean: nsegs,
            underflows: 0,
            killed_bytes: 0,
            dead: 0,
        }
    }

    pub fn load_block(&mut self, index: usize, entries: &[UsageEntry]) {
        let base = index * TABLE_ENTRIES;
        for (i, e) in entries.iter().enumerate() {
            if let Some(s) = self.segs.get_mut(base + i) {
                s.live_bytes = e.live_bytes as u64;
                s.write_time_ns = e.write_time_ns;
                s.state = if e.state == SEG_IN_USE {
                    SegState::Full
                } else {
                    SegState::Clean
                };
            }
        }
        self.dirty.clear(index);
        self.clean = self
            .segs
            .iter()
            .filter(|s| s.state == SegState::Clean)
            .count() as u64;
        self.dead = self.segs.iter().map(|s| self.dead_in(s)).sum();
    }

    /// A segment's share of `dead`.
    fn dead_in(&self, s: &SegInfo) -> i64 {
        match s.state {
            SegState::Full | SegState::Cleaning | SegState::Freed => {
                self.seg_bytes.saturating_sub(s.live_bytes) as i64
            }
            _ => 0,
        }
    }

    /// Bytes in written segments that are not live: the most cleaning could reclaim (less
    /// what moving the live blocks costs). Cheap: kept as segments change.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.dead.max(0) as u64
    }

    /// Apply `change` to segment `seg`, keeping `dead` in step.
    fn update(&mut self, seg: SegNo, change: impl FnOnce(&mut SegInfo)) {
        let Some(s) = self.segs.get(seg.index()).copied() else {
            return;
        };
        let before = self.dead_in(&s);
        let mut after = s;
        change(&mut after);
        self.dead += self.dead_in(&after) - before;
        self.segs[seg.index()] = after;
    }

    pub fn get(&self, seg: SegNo) -> Option<&SegInfo> {
        self.segs.get(seg.index())
    }
    pub fn clean_count(&self) -> u64 {
        self.clean
    }

    fn touch(&mut self, seg: SegNo) {
        self.dirty.mark(seg.index() / TABLE_ENTRIES);
    }

    fn set_state(&mut self, seg: SegNo, state: SegState) {
        if let Some(s) = self.segs.get(seg.index()) {
            if s.state == SegState::Clean {
                self.clean -= 1;
            }
            if state == SegState::Clean {
                self.clean += 1;
            }
            self.update(seg, |s| s.state = state);
        }
        self.touch(seg);
    }

    pub fn add_live(&mut self, seg: SegNo, bytes: u64) {
        self.update(seg, |s| s.live_bytes += bytes);
        self.touch(seg);
    }

    /// `bytes` in `seg` died. A Full segment left with nothing live becomes Freed.
    pub fn kill(&mut self, seg: SegNo, bytes: u64) {
        let Some(s) = self.segs.get(seg.index()).copied() else {
            return;
        };
        self.killed_bytes += bytes;
        if s.live_bytes < bytes {
            self.underflows += 1;
            tracing::warn!(
                seg = seg.get(),
                live = s.live_bytes,
                bytes,
                "segment usage would go negative"
            );
        }
        self.update(seg, |s| s.live_bytes = s.live_bytes.saturating_sub(bytes));
        let empty_full = s.live_bytes <= bytes && s.state == SegState::Full;
        self.touch(seg);
        if empty_full {
            self.set_state(seg, SegState::Freed);
        }
    }

    /// Set a segment's live bytes to a recomputed count (fsck's repair): a segment with
    /// nothing live moves to Freed, one recorded clean or freed that holds live blocks to Full.
    pub fn set_live(&mut self, seg: SegNo, bytes: u64) {
        let Some(state) = self.segs.get(seg.index()).map(|s| s.state) else {
            return;
        };
        self.update(seg, |s| s.live_bytes = bytes);
        self.touch(seg);
        match state {
            SegState::Full if bytes == 0 => self.set_state(seg, SegState::Freed),
            SegState::Clean | SegState::Freed if bytes > 0 => self.set_state(seg, SegState::Full),
            _ => {}
        }
    }

    /// Full → Cleaning: the cleaner is emptying `seg`. False if it is not Full.
    pub fn begin_cleaning(&mut self, seg: SegNo) -> bool {
        if self.get(seg).map(|s| s.state) != Some(SegState::Full) {
            return false;
        }
        self.set_state(seg, SegState::Cleaning);
        true
    }

    /// The cleaner is done with `seg`: Freed if nothing live is left (Clean once a
    /// checkpoint recording that is durable), else Full again. Returns whether it was freed.
    pub fn end_cleaning(&mut self, seg: SegNo) -> bool {
        let Some(s) = self.get(seg).copied() else {
            return false;
        };
        if s.state != SegState::Cleaning {
            return false;
        }
        let freed = s.live_bytes == 0;
        self.set_state(
            seg,
            if freed {
                SegState::Freed
            } else {
                SegState::Full
            },
        );
        freed
    }

    /// Clean → Active: the log starts writing `seg`.
    pub fn activate(&mut self, seg: SegNo, now_ns: u64) {
        debug_assert_eq!(self.get(seg).map(|s| s.state), Some(SegState::Clean));
        self.set_state(seg, SegState::Active);
        self.update(seg, |s| {
            s.live_bytes = 0;
            s.write_time_ns = now_ns;
        });
    }

    /// Record that the log wrote into an Active segment now. This alone does not dirty the
    /// table block (the time reaches disk with the segment's next real change, at the latest
    /// when it is sealed), so writing usage blocks at a checkpoint settles.
    pub fn written(&mut self, seg: SegNo, now_ns: u64) {
        if let Some(s) = self.segs.get_mut(seg.index()) {
            s.write_time_ns = now_ns;
        }
    }

    /// Active → Full (or Freed if nothing in it is live any more).
    pub fn seal(&mut self, seg: SegNo) {
        debug_assert_eq!(self.get(seg).map(|s| s.state), Some(SegState::Active));
        let empty = self.get(seg).is_some_and(|s| s.live_bytes == 0);
        self.set_state(
            seg,
            if empty {
                SegState::Freed
            } else {
                SegState::Full
            },
        );
    }

    /// Mount: the segment the checkpoint's log head is in continues as Active.
    pub fn resume_active(&mut self, seg: SegNo) {
        self.set_state(seg, SegState::Active);
    }

    /// Mount: `seg` holds a table block the checkpoint points at. If it was recorded clean,
    /// treat it as Freed: not written until a checkpoint has moved the block elsewhere.
    pub fn hold(&mut self, seg: SegNo) {
        if self.get(seg).map(|s| s.state) == Some(SegState::Clean) {
            self.set_state(seg, SegState::Freed);
        }
    }

    /// Checkpoint durable: every segment freed before it was encoded is clean now.
    pub fn release(&mut self, segs: &[SegNo]) {
        for &seg in segs {
            if self.get(seg).map(|s| s.state) == Some(SegState::Freed) {
                self.set_state(seg, SegState::Clean);
            }
        }
    }

    pub fn freed(&self) -> Vec<SegNo> {
        self.segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == SegState::Freed)
            .map(|(i, _)| SegNo(i as u64))
            .collect()
    }

    /// A clean segment to write next, searching upward from `after` so the log sweeps the
    /// disk in order.
    pub fn pick_clean(&self, after: SegNo) -> Option<SegNo> {
        let n = self.segs.len() as u64;
        (1..=n)
            .map(|d| (after.get() + d) % n)
            .find(|&s| self.segs[s as usize].state == SegState::Clean)
            .map(SegNo)
    }

    /// The entries of table block `index`, as a checkpoint records them: Freed segments are
    /// recorded clean (they will be once this checkpoint is durable).
    pub fn block_entries(&self, index: usize) -> Vec<UsageEntry> {
        let base = index * TABLE_ENTRIES;
        (base..base + TABLE_ENTRIES)
            .map(|i| match self.segs.get(i) {
                Some(s) => UsageEntry {
                    live_bytes: s.live_bytes.min(self.seg_bytes) as u32,
                    // An Active segment with nothing live (the log's reserved successor) is
                    // recorded clean: roll-forward follows the log into it like any clean one.
                    state: match s.state {
                        SegState::Clean | SegState::Freed => SEG_CLEAN,
                        SegState::Active if s.live_bytes == 0 => SEG_CLEAN,
                        _ => SEG_IN_USE,
                    },
                    write_time_ns: s.write_time_ns,
                },
                None => UsageEntry::default(),
            })
            .collect()
    }

    pub fn nblocks(&self) -> usize {
        self.dirty.len()
    }
    pub fn dirty_blocks(&self) -> Vec<usize> {
        self.dirty.list()
    }
    pub fn clear_dirty(&mut self, index: usize) {
        self.dirty.clear(index);
    }
    pub fn mark_dirty(&mut self, index: usize) {
        self.dirty.mark(index);
    }
    pub fn total_live_bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.live_bytes).sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = (SegNo, &SegInfo)> {
        self.segs
            .iter()
            .enumerate()
            .map(|(i, s)| (SegNo(i as u64), s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn life_of_a_segment() {
        let mut u = UsageTable::new(300, 1 << 20);
        assert_eq!(u.clean_count(), 300);
        u.activate(SegNo(5), 10);
        u.add_live(SegNo(5), 8192);
        u.seal(SegNo(5));
        assert_eq!(u.get(SegNo(5)).map(|s| s.state), Some(SegState::Full));
        u.kill(SegNo(5), 4096);
        assert_eq!(u.get(SegNo(5)).map(|s| s.state), Some(SegState::Full));
        u.kill(SegNo(5), 4096);
        assert_eq!(u.get(SegNo(5)).map(|s| s.state), Some(SegState::Freed));
        // Recorded clean by the checkpoint, but not reusable until released.
        assert_eq!(u.block_entries(0)[5].state, SEG_CLEAN);
        assert_eq!(u.pick_clean(SegNo(4)), Some(SegNo(6)));
        assert_eq!(u.clean_count(), 299);
        u.release(&[SegNo(5)]);
        assert_eq!(u.clean_count(), 300);
        assert_eq!(u.pick_clean(SegNo(4)), Some(SegNo(5)));
        assert_eq!(u.underflows, 0);
        u.kill(SegNo(7), 1);
        assert_eq!(u.underflows, 1);
    }

    #[test]
    fn reclaimable_bytes_stay_in_step_with_the_segments() {
        let mut u = UsageTable::new(8, 1 << 20);
        let recount = |u: &UsageTable| -> u64 { u.segs.iter().map(|s| u.dead_in(s) as u64).sum() };
        u.activate(SegNo(1), 10);
        u.add_live(SegNo(1), 600 << 10);
        assert_eq!(
            u.reclaimable_bytes(),
            0,
            "an Active segment is not reclaimable"
        );
        u.seal(SegNo(1));
        assert_eq!(u.reclaimable_bytes(), 424 << 10);
        u.kill(SegNo(1), 100 << 10);
        assert!(u.begin_cleaning(SegNo(1)));
        u.kill(SegNo(1), 500 << 10);
        assert!(u.end_cleaning(SegNo(1)));
        assert_eq!(u.reclaimable_bytes(), 1 << 20, "Freed: all of it");
        u.release(&[SegNo(1)]);
        assert_eq!(u.reclaimable_bytes(), 0);
        u.set_live(SegNo(2), 4096);
        u.kill(SegNo(2), 8192); // an underflow saturates, and stays in step
        assert_eq!(u.reclaimable_bytes(), recount(&u));
    }
}
