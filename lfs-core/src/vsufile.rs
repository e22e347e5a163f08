//! The segment usage table as format version 2 keeps it (docs/FORMAT-V2.md §11): a paged
//! radix tree in which a hole is clean segments, so an empty disk of any size costs nothing
//! to open and answers "a clean segment" at once. Not used by the engine yet (issue 20,
//! step 3); its tests run it against an in-memory block store.

use crate::error::Result;
use crate::format::v2::ptr::PhysPtr;
use crate::format::v2::sufile::{
    SegUsage, LEAF_ENTRIES, SEG_ACTIVE, SEG_CLEAN, SEG_FREED, SEG_IN_USE,
};
use crate::format::SegNo;
use crate::radix::{BlockStore, RadixTree, SufileCodec};
use std::collections::BTreeSet;

pub struct SegTable {
    tree: RadixTree<SufileCodec>,
    nsegs: u64,
    nclean: u64,
    /// Segments emptied since the last checkpoint: clean once the next one is durable.
    freed: BTreeSet<SegNo>,
}

impl SegTable {
    /// The table a checkpoint describes (`nclean` is the checkpoint's count). Reads nothing.
    pub fn open(nsegs: u64, seg_blocks: u32, root: PhysPtr, height: u8, nclean: u64) -> SegTable {
        SegTable {
            tree: RadixTree::open(SufileCodec { nsegs, seg_blocks }, root, height),
            nsegs,
            nclean: nclean.min(nsegs),
            freed: BTreeSet::new(),
        }
    }

    pub fn clean_count(&self) -> u64 {
        self.nclean
    }

    pub fn get(&mut self, store: &mut dyn BlockStore, s: SegNo) -> Result<SegUsage> {
        self.tree.get(store, s.get())
    }

    fn put(&mut self, store: &mut dyn BlockStore, s: SegNo, u: SegUsage) -> Result<()> {
        let was_clean = self.get(store, s)?.state == SEG_CLEAN;
        let is_clean = u.state == SEG_CLEAN;
        self.nclean = match (was_clean, is_clean) {
            (true, false) => self.nclean.saturating_sub(1),
            (false, true) => self.nclean + 1,
            _ => self.nclean,
        };
        self.tree.set(store, s.get(), u)
    }

    /// A clean segment to write next, searching upward from `after` (wrapping), so the log
    /// sweeps the disk; holes answer at once, so an empty disk costs one look.
    pub fn pick_clean(
        &mut self,
        store: &mut dyn BlockStore,
        after: SegNo,
    ) -> Result<Option<SegNo>> {
        if self.nclean == 0 {
            return Ok(None);
        }
        let n = self.nsegs;
        let mut s = (after.get() + 1) % n;
        for _ in 0..n {
            // Look leaf by leaf; a leaf that is a hole is 127 clean segments.
            let leaf = s / LEAF_ENTRIES as u64;
            let next_present = self.tree.next_present_leaf(store, leaf)?;
            if next_present != Some(leaf) {
                return Ok(Some(SegNo(s)));
            }
            let end = ((leaf + 1) * LEAF_ENTRIES as u64).min(n);
            for c in s..end {
                if self.get(store, SegNo(c))?.state == SEG_CLEAN {
                    return Ok(Some(SegNo(c)));
                }
            }
            s = if end >= n { 0 } else { end };
        }
        Ok(None)
    }

    /// Clean → the head of `stream`.
    pub fn activate(
        &mut self,
        store: &mut dyn BlockStore,
        s: SegNo,
        stream: u8,
        now_ns: u64,
    ) -> Result<()> {
        let u = SegUsage {
            write_time_ns: now_ns,
            state: SEG_ACTIVE,
            stream,
            ..SegUsage::default()
        };
        self.put(store, s, u)
    }

    /// `blocks` written into `s` are live.
    pub fn add_live(&mut self, store: &mut dyn BlockStore, s: SegNo, blocks: u32) -> Result<()> {
        let mut u = self.get(store, s)?;
        u.live = u.live.saturating_add(blocks);
        self.put(store, s, u)
    }

    /// `blocks` in `s` died. A full segment left with nothing live or held is freed.
    pub fn kill(&mut self, store: &mut dyn BlockStore, s: SegNo, blocks: u32) -> Result<()> {
        let mut u = self.get(store, s)?;
        u.live = u.live.saturating_sub(blocks);
        if u.state == SEG_IN_USE && u.live == 0 && u.held == 0 {
            u.state = SEG_FREED;
            self.freed.insert(s);
        }
        self.put(store, s, u)
    }

    /// The head moved on: active → in use (or freed if nothing in it is live).
    pub fn seal(&mut self, store: &mut dyn BlockStore, s: SegNo) -> Result<()> {
        let mut u = self.get(store, s)?;
        if u.live == 0 && u.held == 0 {
            u.state = SEG_FREED;
            self.freed.insert(s);
        } else {
            u.state = SEG_IN_USE;
        }
        self.put(store, s, u)
    }

    /// The segments freed so far are clean in the table from now on; returns them. The
    /// store calls it while writing a checkpoint's table (which records them clean, true
    /// once that checkpoint is durable) and hands them out only after.
    pub fn release_freed(&mut self, store: &mut dyn BlockStore) -> Result<Vec<SegNo>> {
        let mut out = Vec::new();
        for s in std::mem::take(&mut self.freed) {
            if self.get(store, s)?.state == SEG_FREED {
                self.put(store, s, SegUsage::default())?;
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Segments holding something (the cleaner's candidates), from `from` on: only the
    /// leaves that are not holes are read.
    pub fn in_use_from(
        &mut self,
        store: &mut dyn BlockStore,
        from: SegNo,
        max: usize,
    ) -> Result<Vec<(SegNo, SegUsage)>> {
        let mut out = Vec::new();
        let mut leaf = from.get() / LEAF_ENTRIES as u64;
        while out.len() < max {
            let Some(l) = self.tree.next_present_leaf(store, leaf)? else {
                break;
            };
            let first = l * LEAF_ENTRIES as u64;
            for s in first.max(from.get())..(first + LEAF_ENTRIES as u64).min(self.nsegs) {
                let u = self.get(store, SegNo(s))?;
                if u.state != SEG_CLEAN && out.len() < max {
                    out.push((SegNo(s), u));
                }
            }
            leaf = l + 1;
        }
        Ok(out)
    }

    pub fn flush(&mut self, store: &mut dyn BlockStore) -> Result<(PhysPtr, u8)> {
        self.tree.flush(store)
    }

    /// Every block of the table as it stands on the device (`(address, height, first
    /// key)`), and every segment that is not clean with its entry (see `RadixTree::walk`).
    pub fn walk(
        &mut self,
        store: &mut dyn BlockStore,
        blocks: &mut dyn FnMut(crate::format::BlockAddr, u8, u64),
        entries: &mut dyn FnMut(SegNo, &SegUsage),
    ) -> Result<()> {
        let nsegs = self.nsegs;
        self.tree.walk(store, blocks, &mut |leaf, es| {
            for (i, u) in es.iter().enumerate() {
                let s = leaf * LEAF_ENTRIES as u64 + i as u64;
                if s < nsegs && *u != SegUsage::default() {
                    entries(SegNo(s), u);
                }
            }
        })
    }

    /// The cleaner found the table's block of height `h` from `index` at `addr`: if
    /// current, it is marked to be written elsewhere by the next checkpoint.
    pub fn relocate(
        &mut self,
        store: &mut dyn BlockStore,
        h: u8,
        index: u64,
        addr: crate::format::BlockAddr,
    ) -> Result<bool> {
        self.tree.relocate(store, h, index, addr)
    }

    /// Leaves changed since they were last written.
    pub fn dirty_leaves(&self) -> usize {
        self.tree.dirty_leaves()
    }

    pub fn evict_clean(&mut self) {
        self.tree.evict_clean();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::radix::testutil::MemStore;

    #[test]
    fn an_empty_16_tib_disk_opens_and_answers_at_once() {
        // 16 TiB of 1 MiB segments: 16 Mi segments, none of them recorded.
        let nsegs = 16u64 << 20;
        let mut s = MemStore::default();
        let mut t = SegTable::open(nsegs, 256, PhysPtr::default(), 0, nsegs);
        assert_eq!(t.pick_clean(&mut s, SegNo(0)).unwrap(), Some(SegNo(1)));
        assert_eq!(t.in_use_from(&mut s, SegNo(0), 10).unwrap(), vec![]);
        assert_eq!(s.reads, 0);
    }

    #[test]
    fn the_life_of_a_segment_across_a_flush() {
        let nsegs = 1000;
        let mut s = MemStore::default();
        let mut t = SegTable::open(nsegs, 256, PhysPtr::default(), 0, nsegs);
        t.activate(&mut s, SegNo(5), 1, 77).unwrap();
        t.add_live(&mut s, SegNo(5), 100).unwrap();
        t.activate(&mut s, SegNo(600), 0, 78).unwrap();
        assert_eq!(t.clean_count(), nsegs - 2);
        // The next clean one after 4 is 6 (5 is taken); after 999, wrapping, 0.
        assert_eq!(t.pick_clean(&mut s, SegNo(4)).unwrap(), Some(SegNo(6)));
        assert_eq!(t.pick_clean(&mut s, SegNo(999)).unwrap(), Some(SegNo(0)));
        t.seal(&mut s, SegNo(5)).unwrap();
        let (root, h) = t.flush(&mut s).unwrap();
        let mut t = SegTable::open(nsegs, 256, root, h, nsegs - 2);
        let used: Vec<u64> = t
            .in_use_from(&mut s, SegNo(0), 10)
            .unwrap()
            .iter()
            .map(|(s, _)| s.get())
            .collect();
        assert_eq!(used, vec![5, 600]);
        // Everything in 5 dies: freed, and clean only after the checkpoint.
        t.kill(&mut s, SegNo(5), 100).unwrap();
        assert_eq!(t.get(&mut s, SegNo(5)).unwrap().state, SEG_FREED);
        assert_eq!(t.clean_count(), nsegs - 2);
        t.release_freed(&mut s).unwrap();
        assert_eq!(t.clean_count(), nsegs - 1);
        assert!(t.get(&mut s, SegNo(5)).unwrap().is_clean());
    }

    #[test]
    fn a_full_disk_has_nothing_to_pick() {
        let mut s = MemStore::default();
        let mut t = SegTable::open(3, 256, PhysPtr::default(), 0, 3);
        for i in 0..3 {
            t.activate(&mut s, SegNo(i), 0, 1).unwrap();
        }
        assert_eq!(t.pick_clean(&mut s, SegNo(0)).unwrap(), None);
    }
}
