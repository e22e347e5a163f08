//! A directory in memory: its blocks with their slots, and a name index over them, so lookups
//! stay O(1) at 100 000 entries and a change rewrites only the one block it touches.

use crate::format::dir::{slot_size, DirEntry, DIR_CAPACITY, SLOT_HEADER};
use crate::format::Ino;
use std::collections::{BTreeSet, HashMap};

/// Slots per block never exceed this, so `block * SLOTS_MAX + slot` is a unique cookie.
pub const SLOTS_MAX: u64 = (DIR_CAPACITY / SLOT_HEADER) as u64 + 1;
/// readdir cookies 1 and 2 are "." and ".."; entries start after them.
pub const FIRST_ENTRY_COOKIE: u64 = 3;

#[derive(Debug, Default)]
pub struct DirBlock {
    pub slots: Vec<Option<DirEntry>>,
    used: usize,
    pub dirty: bool,
}

impl DirBlock {
    fn new(slots: Vec<Option<DirEntry>>) -> DirBlock {
        let used = slots.iter().map(slot_size).sum();
        DirBlock {
            slots,
            used,
            dirty: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct Dir {
    pub blocks: Vec<DirBlock>,
    index: HashMap<Vec<u8>, (u32, u16)>,
    /// Blocks that lost an entry and may have room.
    with_room: BTreeSet<u32>,
}

impl Dir {
    /// Build from decoded blocks (in logical block order).
    pub fn from_blocks(blocks: Vec<Vec<Option<DirEntry>>>) -> Dir {
        let mut d = Dir::default();
        for (b, slots) in blocks.into_iter().enumerate() {
            for (s, e) in slots.iter().enumerate() {
                if let Some(e) = e {
                    d.index.insert(e.name.clone(), (b as u32, s as u16));
                }
            }
            let blk = DirBlock::new(slots);
            if blk.used + SLOT_HEADER + 32 <= DIR_CAPACITY {
                d.with_room.insert(b as u32);
            }
            d.blocks.push(blk);
        }
        d
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn get(&self, name: &[u8]) -> Option<&DirEntry> {
        let &(b, s) = self.index.get(name)?;
        self.blocks.get(b as usize)?.slots.get(s as usize)?.as_ref()
    }

    /// Insert a new entry; returns how many blocks became dirty (0 or 1). The caller has
    /// checked that the name is absent.
    pub fn insert(&mut self, e: DirEntry) -> u64 {
        let need = SLOT_HEADER + e.name.len();
        let candidates: Vec<u32> = self
            .with_room
            .iter()
            .copied()
            .chain(self.blocks.len().checked_sub(1).map(|b| b as u32))
            .collect();
        let mut target = None;
        for b in candidates {
            let blk = &self.blocks[b as usize];
            let reuse = blk.slots.iter().position(|s| s.is_none());
            let fits = match reuse {
                Some(_) => blk.used - SLOT_HEADER + need <= DIR_CAPACITY,
                None => blk.used + need <= DIR_CAPACITY && (blk.slots.len() as u64) < SLOTS_MAX,
            };
            if fits {
                target = Some((b, reuse));
                break;
            }
            self.with_room.remove(&b);
        }
        let (b, reuse) = target.unwrap_or_else(|| {
            self.blocks.push(DirBlock::default());
            ((self.blocks.len() - 1) as u32, None)
        });
        let blk = &mut self.blocks[b as usize];
        let name = e.name.clone();
        let s = match reuse {
            Some(s) => {
                blk.used = blk.used - SLOT_HEADER + need;
                blk.slots[s] = Some(e);
                s
            }
            None => {
                blk.used += need;
                blk.slots.push(Some(e));
                blk.slots.len() - 1
            }
        };
        self.index.insert(name, (b, s as u16));
        let newly = !blk.dirty;
        blk.dirty = true;
        newly as u64
    }

    /// Remove an entry; returns it and how many blocks became dirty.
    pub fn remove(&mut self, name: &[u8]) -> Option<(DirEntry, u64)> {
        let (b, s) = self.index.remove(name)?;
        let blk = self.blocks.get_mut(b as usize)?;
        let e = blk.slots.get_mut(s as usize)?.take()?;
        blk.used -= e.name.len();
        let newly = !blk.dirty;
        blk.dirty = true;
        self.with_room.insert(b);
        Some((e, newly as u64))
    }

    /// Change the inode an existing name points to (rename over, exchange).
    pub fn replace(&mut self, name: &[u8], ino: Ino, kind: crate::format::inode::FileKind) -> u64 {
        let Some(&(b, s)) = self.index.get(name) else {
            return 0;
        };
        let Some(blk) = self.blocks.get_mut(b as usize) else {
            return 0;
        };
        if let Some(Some(e)) = blk.slots.get_mut(s as usize) {
            e.ino = ino;
            e.kind = kind;
        }
        let newly = !blk.dirty;
        blk.dirty = true;
        newly as u64
    }

    /// Entries at or after `cookie`, each with the cookie of the entry after it.
    pub fn entries_from(&self, cookie: u64) -> impl Iterator<Item = (u64, &DirEntry)> {
        let start = cookie.saturating_sub(FIRST_ENTRY_COOKIE);
        let (b0, s0) = ((start / SLOTS_MAX) as usize, (start % SLOTS_MAX) as usize);
        self.blocks
            .iter()
            .enumerate()
            .skip(b0)
            .flat_map(move |(b, blk)| {
                let skip = if b == b0 { s0 } else { 0 };
                blk.slots
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .filter_map(move |(s, e)| {
                        e.as_ref()
                            .map(|e| (FIRST_ENTRY_COOKIE + b as u64 * SLOTS_MAX + s as u64 + 1, e))
                    })
            })
    }

    /// Dirty blocks: all of them, and those from index `deep` on.
    pub fn dirty_blocks(&self, deep: u64) -> (u64, u64) {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.dirty)
            .fold((0, 0), |(all, past), (i, _)| {
                (all + 1, past + u64::from(i as u64 >= deep))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::dir::{decode_dir_block, encode_dir_block};
    use crate::format::inode::FileKind;

    fn e(i: u64, name: String) -> DirEntry {
        DirEntry {
            ino: Ino(i),
            kind: FileKind::Regular,
            name: name.into_bytes(),
        }
    }

    #[test]
    fn many_entries_remove_reinsert_and_stable_cookies() {
        let mut d = Dir::default();
        for i in 0..5000u64 {
            d.insert(e(i + 10, format!("file-{i}")));
        }
        assert_eq!(d.len(), 5000);
        for blk in &d.blocks {
            assert!(encode_dir_block(&blk.slots).is_ok());
        }
        // readdir half way, delete something already returned, the rest comes exactly once.
        let first: Vec<(u64, Vec<u8>)> = d
            .entries_from(FIRST_ENTRY_COOKIE)
            .take(100)
            .map(|(c, e)| (c, e.name.clone()))
            .collect();
        let resume = first.last().map(|x| x.0).unwrap_or(0);
        d.remove(b"file-3").expect("present");
        let rest: Vec<Vec<u8>> = d
            .entries_from(resume)
            .map(|(_, e)| e.name.clone())
            .collect();
        assert_eq!(first.len() + rest.len(), 5000);
        for i in 0..2500u64 {
            assert!(d.remove(format!("file-{}", i * 2).as_bytes()).is_some() || i == 1);
        }
        let blocks_before = d.blocks.len();
        for i in 0..2000u64 {
            d.insert(e(i + 99_999, format!("new-{i}")));
        }
        assert_eq!(d.blocks.len(), blocks_before, "freed slots are reused");
        // Round trip through the on-disk encoding.
        let back = Dir::from_blocks(
            d.blocks
                .iter()
                .map(|b| {
                    decode_dir_block(&encode_dir_block(&b.slots).expect("fits")).expect("decodes")
                })
                .collect(),
        );
        assert_eq!(back.len(), d.len());
        assert_eq!(back.get(b"new-5").map(|e| e.ino), Some(Ino(99_999 + 5)));
    }
}
