//! The inode map, whole in memory: inode number → where its current copy lives, its version
//! and flags. Its blocks are written into the log at checkpoints and found again through the
//! checkpoint's address array.

use crate::dirty::DirtyBlocks;
use crate::format::table::{ImapEntry, IMAP_ALLOCATED, IMAP_ORPHAN, TABLE_ENTRIES};
use crate::format::{BlockAddr, Ino, ROOT_INO};

pub struct Imap {
    entries: Vec<ImapEntry>,
    /// Per table block: must be written at the next checkpoint.
    dirty: DirtyBlocks,
    /// Lowest inode number that may be free.
    hint: u64,
    allocated: u64,
}

impl Imap {
    pub fn new(nblocks: usize) -> Imap {
        Imap {
            entries: vec![ImapEntry::default(); nblocks * TABLE_ENTRIES],
            dirty: DirtyBlocks::new(nblocks, false),
            hint: ROOT_INO.get() + 1,
            allocated: 0,
        }
    }

    /// Install one decoded table block (mount).
    pub fn load_block(&mut self, index: usize, block: &[ImapEntry]) {
        // Counted per entry replaced: recounting the whole map per block made mounting a
        // filesystem of a million inodes quadratic (seconds).
        let base = index * TABLE_ENTRIES;
        for (i, e) in block.iter().enumerate() {
            if let Some(slot) = self.entries.get_mut(base + i) {
                self.allocated -= slot.allocated() as u64;
                self.allocated += e.allocated() as u64;
                *slot = *e;
            }
        }
    }

    pub fn capacity(&self) -> u64 {
        self.entries.len() as u64
    }
    pub fn allocated_count(&self) -> u64 {
        self.allocated
    }
    pub fn get(&self, ino: Ino) -> Option<&ImapEntry> {
        self.entries.get(ino.index())
    }

    pub fn set(&mut self, ino: Ino, e: ImapEntry) {
        if let Some(slot) = self.entries.get_mut(ino.index()) {
            if slot.allocated() != e.allocated() {
                if e.allocated() {
                    self.allocated += 1;
                } else {
                    self.allocated -= 1;
                }
            }
            *slot = e;
            self.dirty.mark(ino.index() / TABLE_ENTRIES);
        }
    }

    pub fn set_orphan(&mut self, ino: Ino, orphan: bool) {
        if let Some(mut e) = self.get(ino).copied() {
            if orphan {
                e.flags |= IMAP_ORPHAN;
            } else {
                e.flags &= !IMAP_ORPHAN;
            }
            self.set(ino, e);
        }
    }

    /// Take the lowest free inode number; returns (ino, version to use).
    pub fn allocate(&mut self) -> Option<(Ino, u32)> {
        let start = self.hint.max(ROOT_INO.get() + 1) as usize;
        let found = (start..self.entries.len()).find(|&i| !self.entries[i].allocated())?;
        let version = self.entries[found].version.wrapping_add(1).max(1);
        self.set(
            Ino(found as u64),
            ImapEntry {
                addr: BlockAddr::NONE,
                version,
                slot: 0,
                flags: IMAP_ALLOCATED,
            },
        );
        self.hint = found as u64 + 1;
        Some((Ino(found as u64), version))
    }

    /// Free an inode number, keeping its version so the next user gets a new one.
    pub fn free(&mut self, ino: Ino) {
        if let Some(e) = self.get(ino).copied() {
            self.set(
                ino,
                ImapEntry {
                    addr: BlockAddr::NONE,
                    version: e.version,
                    slot: 0,
                    flags: 0,
                },
            );
            self.hint = self.hint.min(ino.get());
        }
    }

    pub fn dirty_blocks(&self) -> Vec<usize> {
        self.dirty.list()
    }
    pub fn dirty_count(&self) -> usize {
        self.dirty.count()
    }
    pub fn block(&self, index: usize) -> &[ImapEntry] {
        let base = index * TABLE_ENTRIES;
        &self.entries[base..base + TABLE_ENTRIES]
    }
    /// Table block `index` must be written at the next checkpoint (the cleaner moves it).
    pub fn mark_block_dirty(&mut self, index: usize) {
        self.dirty.mark(index);
    }
    pub fn clear_dirty(&mut self, index: usize) {
        self.dirty.clear(index);
    }

    /// Inode numbers with the ORPHAN flag (freed at mount).
    pub fn orphans(&self) -> Vec<Ino> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.allocated() && e.flags & IMAP_ORPHAN != 0)
            .map(|(i, _)| Ino(i as u64))
            .collect()
    }

    /// Iterate over allocated inodes.
    pub fn iter_allocated(&self) -> impl Iterator<Item = (Ino, &ImapEntry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.allocated())
            .map(|(i, e)| (Ino(i as u64), e))
    }
}
