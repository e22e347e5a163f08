//! The DAT as the engine will use it (docs/FORMAT-V2.md §5): virtual block numbers handed
//! out, resolved, moved, ended and freed, over the paged radix tree (`radix.rs`), so that it
//! costs memory for what is touched, not for the disk. Not used by the engine yet (issue 20,
//! step 3); its tests run it against an in-memory block store.

use crate::error::{Damage, FsError, Result};
use crate::format::v2::dat::{DatEntry, FLAG_DUP, LEAF_ENTRIES};
use crate::format::v2::ptr::PhysPtr;
use crate::format::{BlockAddr, Cno, VBlock};
use crate::radix::{BlockStore, DatCodec, RadixTree};
use std::collections::BTreeSet;

pub struct Dat {
    tree: RadixTree<DatCodec>,
    /// Where the DAT grows: every number at or past it is free.
    next: u64,
    /// Numbers handed out and not yet written (their entries still read free).
    pending: BTreeSet<u64>,
}

/// Whether rewriting a block written in era `start` during era `era` must keep the old
/// version under its own number (a new number for the new one) because a kept checkpoint
/// `k` (a snapshot, or a protected one) has `start <= k < era` (docs/FORMAT-V2.md §5). The
/// newest durable checkpoint is not in `kept` unless kept for itself.
pub fn must_preserve(start: Cno, era: Cno, kept: &[Cno]) -> bool {
    kept.iter().any(|&k| start <= k && k < era)
}

impl Dat {
    /// The DAT a checkpoint describes. Reads nothing.
    pub fn open(root: PhysPtr, height: u8, next_vblock: u64) -> Dat {
        Dat {
            tree: RadixTree::open(DatCodec, root, height),
            next: next_vblock.max(1),
            pending: BTreeSet::new(),
        }
    }

    pub fn next_vblock(&self) -> u64 {
        self.next
    }

    pub fn get(&mut self, store: &mut dyn BlockStore, v: VBlock) -> Result<DatEntry> {
        if v.is_none() || v.get() >= self.next {
            return Ok(DatEntry::FREE);
        }
        self.tree.get(store, v.get())
    }

    /// Where virtual block `v` is (and its second copy), and its checksum; an error if the
    /// number is free (a pointer to a block nobody wrote: damage, never zeros).
    pub fn resolve(
        &mut self,
        store: &mut dyn BlockStore,
        v: VBlock,
    ) -> Result<(BlockAddr, BlockAddr, u32)> {
        let e = self.get(store, v)?;
        if e.is_free() {
            return Err(Damage::VBlockFree { vblock: v.get() }.into());
        }
        Ok((e.addr, e.addr2, e.crc))
    }

    /// The bytes of virtual block `v`, verified against the checksum the DAT holds: the
    /// first copy, else (a DUP block) the second; else an error naming the block — never
    /// bytes that do not match (docs/FORMAT-V2.md §12).
    pub fn read_verified(
        &mut self,
        store: &mut dyn BlockStore,
        v: VBlock,
    ) -> Result<std::sync::Arc<Vec<u8>>> {
        let (addr, addr2, crc) = self.resolve(store, v)?;
        let mut first_bad = None;
        for (a, copies) in [(addr, 1u8), (addr2, 2)] {
            if a.is_none() {
                continue;
            }
            match store.read(a) {
                Ok(b) => {
                    let computed = crate::format::v2::block_crc(&b);
                    if computed == crc {
                        return Ok(b);
                    }
                    first_bad.get_or_insert((a, computed, copies));
                }
                // A copy that cannot be read is as bad as one that does not match, while
                // the other may be good.
                Err(e) if !addr2.is_none() && a == addr => {
                    tracing::warn!(vblock = v.get(), addr = a.get(), error = %e, "first copy unreadable; trying the second");
                }
                Err(e) => return Err(e),
            }
        }
        let (a, computed, _) = first_bad.unwrap_or((addr, 0, 1));
        Err(Damage::BlockChecksum {
            vblock: v.get(),
            addr: a,
            stored: crc,
            computed,
            copies: if addr2.is_none() { 1 } else { 2 },
        }
        .into())
    }

    /// A free number: one in `near`'s leaf when it has room (a file's blocks stay together
    /// in the DAT, so reading them touches few leaves), else where the DAT grows.
    pub fn allocate(&mut self, store: &mut dyn BlockStore, near: Option<VBlock>) -> Result<VBlock> {
        if let Some(near) = near.filter(|n| !n.is_none() && n.get() < self.next) {
            let first = near.get() / LEAF_ENTRIES as u64 * LEAF_ENTRIES as u64;
            let candidates = (first..first + LEAF_ENTRIES as u64)
                .filter(|&v| v != 0 && v < self.next && !self.pending.contains(&v));
            for v in candidates.collect::<Vec<_>>() {
                if self.tree.get(store, v)?.is_free() {
                    self.pending.insert(v);
                    return Ok(VBlock(v));
                }
            }
        }
        let v = self.next;
        self.next = v.checked_add(1).ok_or(FsError::NoSpace)?;
        self.pending.insert(v);
        Ok(VBlock(v))
    }

    /// `v` (newly allocated, or kept across a rewrite) now lives at `addr` (and `addr2` for
    /// a DUP block) with checksum `crc`; a new number starts its life in `era`.
    pub fn write(
        &mut self,
        store: &mut dyn BlockStore,
        v: VBlock,
        addr: BlockAddr,
        addr2: BlockAddr,
        crc: u32,
        era: Cno,
    ) -> Result<()> {
        let old = self.get(store, v)?;
        let start = if old.is_free() { era } else { old.start };
        self.pending.remove(&v.get());
        let e = DatEntry {
            addr,
            addr2,
            start,
            end: Cno::CURRENT,
            crc,
            flags: if addr2.is_none() { 0 } else { FLAG_DUP },
        };
        self.tree.set(store, v.get(), e)
    }

    /// The cleaner moved `v`'s block: the same number, a new place; nothing else changes.
    pub fn moved(
        &mut self,
        store: &mut dyn BlockStore,
        v: VBlock,
        addr: BlockAddr,
        addr2: BlockAddr,
    ) -> Result<()> {
        let mut e = self.get(store, v)?;
        if e.is_free() {
            return Err(Damage::VBlockFree { vblock: v.get() }.into());
        }
        e.addr = addr;
        e.addr2 = addr2;
        self.tree.set(store, v.get(), e)
    }

    /// `v` is no longer part of the current state from `era` on, but a kept checkpoint
    /// still reaches it.
    pub fn end(&mut self, store: &mut dyn BlockStore, v: VBlock, era: Cno) -> Result<()> {
        let mut e = self.get(store, v)?;
        if !e.is_current() {
            return Err(Damage::VBlockFree { vblock: v.get() }.into());
        }
        e.end = era.max(Cno(e.start.get() + 1));
        self.tree.set(store, v.get(), e)
    }

    /// Nobody needs `v` any more: its number may be handed out again.
    pub fn free(&mut self, store: &mut dyn BlockStore, v: VBlock) -> Result<()> {
        if v.is_none() || v.get() >= self.next {
            return Ok(());
        }
        self.tree.set(store, v.get(), DatEntry::FREE)
    }

    /// Roll-forward and rebuilds: entry `v` is `e`, as the log says (its `start` from the
    /// summary entry, so a block the cleaner moved keeps its lifetime).
    pub fn set_entry(&mut self, store: &mut dyn BlockStore, v: VBlock, e: DatEntry) -> Result<()> {
        if v.is_none() {
            return Err(Damage::VBlockFree { vblock: 0 }.into());
        }
        self.raise_next(v.get() + 1);
        self.pending.remove(&v.get());
        self.tree.set(store, v.get(), e)
    }

    /// Numbers below `next` may have been handed out (a group root's `next_vblock`).
    pub fn raise_next(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    /// Write the dirty leaves and the nodes above them (a checkpoint's step 2).
    pub fn flush(&mut self, store: &mut dyn BlockStore) -> Result<(PhysPtr, u8)> {
        self.tree.flush(store)
    }

    pub fn dirty_leaves(&self) -> usize {
        self.tree.dirty_leaves()
    }

    /// Every DAT block as it stands on the device (`(address, height, first key)`), and
    /// every entry that is not free, by virtual block number (see `RadixTree::walk`).
    pub fn walk(
        &mut self,
        store: &mut dyn BlockStore,
        blocks: &mut dyn FnMut(BlockAddr, u8, u64),
        entries: &mut dyn FnMut(VBlock, &DatEntry),
    ) -> Result<()> {
        self.tree.walk(store, blocks, &mut |leaf, es| {
            for (i, e) in es.iter().enumerate() {
                if !e.is_free() {
                    entries(VBlock(leaf * LEAF_ENTRIES as u64 + i as u64), e);
                }
            }
        })
    }

    /// The cleaner found the DAT block of height `h` from `index` at `addr`: if current,
    /// it is marked to be written elsewhere by the next checkpoint (see `RadixTree::relocate`).
    pub fn relocate(
        &mut self,
        store: &mut dyn BlockStore,
        h: u8,
        index: u64,
        addr: BlockAddr,
    ) -> Result<bool> {
        self.tree.relocate(store, h, index, addr)
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
    fn allocate_write_resolve_move_end_free_across_a_flush() {
        let mut s = MemStore::default();
        let mut d = Dat::open(PhysPtr::default(), 0, 1);
        let a = d.allocate(&mut s, None).unwrap();
        let b = d.allocate(&mut s, Some(a)).unwrap();
        assert_eq!((a, b), (VBlock(1), VBlock(2)));
        d.write(&mut s, a, BlockAddr(500), BlockAddr::NONE, 11, Cno(3))
            .unwrap();
        d.write(&mut s, b, BlockAddr(501), BlockAddr(601), 12, Cno(3))
            .unwrap();
        let (root, h) = d.flush(&mut s).unwrap();
        let mut d = Dat::open(root, h, d.next_vblock());
        assert_eq!(
            d.resolve(&mut s, a).unwrap(),
            (BlockAddr(500), BlockAddr::NONE, 11)
        );
        assert_eq!(
            d.resolve(&mut s, b).unwrap(),
            (BlockAddr(501), BlockAddr(601), 12)
        );
        // A move keeps the number and the lifetime.
        d.moved(&mut s, a, BlockAddr(900), BlockAddr::NONE).unwrap();
        let e = d.get(&mut s, a).unwrap();
        assert_eq!(
            (e.addr, e.start, e.end),
            (BlockAddr(900), Cno(3), Cno::CURRENT)
        );
        // A rewrite in place keeps the start; an end keeps it readable for the kept.
        d.write(&mut s, a, BlockAddr(901), BlockAddr::NONE, 13, Cno(5))
            .unwrap();
        assert_eq!(d.get(&mut s, a).unwrap().start, Cno(3));
        d.end(&mut s, b, Cno(6)).unwrap();
        assert_eq!(d.get(&mut s, b).unwrap().end, Cno(6));
        assert!(d.end(&mut s, b, Cno(7)).is_err(), "ended twice");
        // A freed number is handed out again, next to its neighbours.
        d.free(&mut s, b).unwrap();
        assert!(
            d.resolve(&mut s, b).is_err(),
            "a free number resolves to nothing"
        );
        assert_eq!(d.allocate(&mut s, Some(a)).unwrap(), b);
        assert!(d.resolve(&mut s, VBlock(77)).is_err(), "never allocated");
    }

    #[test]
    fn reads_are_verified_and_a_dup_block_survives_one_bad_copy() {
        use crate::format::v2::block_crc;
        let mut s = MemStore::default();
        let mut d = Dat::open(PhysPtr::default(), 0, 1);
        let good = vec![7u8; 4096];
        let a1 = s.write(0, 0, &good).unwrap();
        let a2 = s.write(0, 0, &good).unwrap();
        let (single, dup) = (
            d.allocate(&mut s, None).unwrap(),
            d.allocate(&mut s, None).unwrap(),
        );
        d.write(
            &mut s,
            single,
            a1,
            BlockAddr::NONE,
            block_crc(&good),
            Cno(1),
        )
        .unwrap();
        d.write(&mut s, dup, a1, a2, block_crc(&good), Cno(1))
            .unwrap();
        assert_eq!(*d.read_verified(&mut s, single).unwrap(), good);
        // One flipped bit in the shared first copy.
        let mut bad = good.clone();
        bad[1000] ^= 4;
        s.blocks.insert(a1, std::sync::Arc::new(bad));
        match d.read_verified(&mut s, single) {
            Err(FsError::Damaged(Damage::BlockChecksum {
                vblock,
                addr,
                copies,
                ..
            })) => {
                assert_eq!((vblock, addr, copies), (single.get(), a1, 1));
            }
            other => panic!("wrong bytes or the wrong error: {other:?}"),
        }
        assert_eq!(
            *d.read_verified(&mut s, dup).unwrap(),
            good,
            "the second copy"
        );
        // Both copies bad: an error, never bytes.
        let mut bad2 = good.clone();
        bad2[0] ^= 1;
        s.blocks.insert(a2, std::sync::Arc::new(bad2));
        assert!(matches!(
            d.read_verified(&mut s, dup),
            Err(FsError::Damaged(Damage::BlockChecksum { copies: 2, .. }))
        ));
    }

    #[test]
    fn the_lifetime_rule() {
        // Written in era 3, rewritten in era 7: a snapshot at 5 needs the old version.
        assert!(must_preserve(Cno(3), Cno(7), &[Cno(5)]));
        assert!(must_preserve(Cno(3), Cno(7), &[Cno(3)]));
        // None kept in between: the number is kept and the block remapped.
        assert!(!must_preserve(Cno(3), Cno(7), &[Cno(2), Cno(7), Cno(9)]));
        assert!(!must_preserve(Cno(3), Cno(7), &[]));
    }
}
