//! The inode table of format version 2 (docs/FORMAT-V2.md §6): where an inode lives in the
//! ifile, and inode numbers handed out from the groups' allocation bitmaps — in the parent
//! directory's group when it has room, so a directory's files share ifile blocks. There is
//! no limit set by mkfs: a new group is opened at the end when the last is full. Reading and
//! writing the ifile's blocks is the caller's (`IfileIo`: a hole reads as `None`). Not used
//! by the engine yet (issue 20, step 3).

use crate::error::{FsError, Result};
use crate::format::{Ino, BLOCK_SIZE, ROOT_INO};
use bitvec::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Inodes per group: one bitmap block's bits.
pub const GROUP_INODES: u64 = (BLOCK_SIZE * 8) as u64;
/// Inodes per ifile block (256 bytes each).
pub const INODES_PER_BLOCK: u64 = 16;
/// Ifile blocks per group: the bitmap, then the inode blocks.
pub const GROUP_BLOCKS: u64 = 1 + GROUP_INODES / INODES_PER_BLOCK;
/// Inode numbers below this are the filesystem's own (0 unused, 1 root, 2 ifile, 3 cpfile,
/// 4 DAT, 5 sufile, the rest reserved).
pub const FIRST_USER_INO: u64 = 16;

/// The ifile block and slot holding inode `ino`.
pub fn locate(ino: Ino) -> (u64, usize) {
    let (g, i) = (ino.get() / GROUP_INODES, ino.get() % GROUP_INODES);
    (
        g * GROUP_BLOCKS + 1 + i / INODES_PER_BLOCK,
        (i % INODES_PER_BLOCK) as usize,
    )
}

/// The ifile block holding group `g`'s bitmap.
pub fn bitmap_block(g: u64) -> u64 {
    g * GROUP_BLOCKS
}

/// Group 0's bitmap as mkfs writes it: the reserved numbers and the root taken.
pub fn first_bitmap() -> Vec<u8> {
    let mut bits: BitVec<u8, Lsb0> = BitVec::repeat(false, GROUP_INODES as usize);
    for i in 0..FIRST_USER_INO as usize {
        bits.set(i, true);
    }
    bits.into_vec()
}

/// The ifile's blocks, as the caller keeps them (through the DAT and the block cache).
pub trait IfileIo {
    fn read(&mut self, lblock: u64) -> Result<Option<Vec<u8>>>;
    fn write(&mut self, lblock: u64, data: Vec<u8>) -> Result<()>;
}

/// Hands out and takes back inode numbers.
pub struct InodeAlloc {
    /// Groups that exist (the ifile's size says so).
    groups: u64,
    /// Groups known to have a free number (learnt as bitmaps are read or numbers freed);
    /// the last group is always tried before a new one is opened.
    roomy: BTreeSet<u64>,
    /// Bitmaps read or changed since the last flush.
    bitmaps: BTreeMap<u64, (BitVec<u8, Lsb0>, bool)>,
}

impl InodeAlloc {
    pub fn open(groups: u64) -> InodeAlloc {
        InodeAlloc {
            groups: groups.max(1),
            roomy: BTreeSet::new(),
            bitmaps: BTreeMap::new(),
        }
    }

    pub fn groups(&self) -> u64 {
        self.groups
    }

    fn bitmap(&mut self, io: &mut dyn IfileIo, g: u64) -> Result<&mut (BitVec<u8, Lsb0>, bool)> {
        if !self.bitmaps.contains_key(&g) {
            let bits = match io.read(bitmap_block(g))? {
                Some(b) if b.len() == BLOCK_SIZE => BitVec::from_vec(b),
                Some(b) => {
                    return Err(FsError::Corrupt {
                        what: "inode bitmap",
                        addr: crate::format::BlockAddr::NONE,
                        source: crate::format::FormatError::WrongSize {
                            what: "inode bitmap",
                            len: b.len(),
                            expected: BLOCK_SIZE,
                        },
                    })
                }
                None if g == 0 => BitVec::from_vec(first_bitmap()),
                None => BitVec::repeat(false, GROUP_INODES as usize),
            };
            if bits.not_all() {
                self.roomy.insert(g);
            }
            self.bitmaps.insert(g, (bits, false));
        }
        self.bitmaps.get_mut(&g).ok_or(FsError::NotFound)
    }

    /// A free inode number: in `near`'s group (the parent directory's) if it has room, else
    /// in a group known to have room, else the last group, else a new group at the end.
    pub fn allocate(&mut self, io: &mut dyn IfileIo, near: Option<Ino>) -> Result<Ino> {
        let mut tries: Vec<u64> = Vec::new();
        if let Some(n) = near {
            tries.push((n.get() / GROUP_INODES).min(self.groups - 1));
        }
        tries.extend(self.roomy.iter().next().copied());
        tries.push(self.groups - 1);
        tries.push(self.groups);
        for g in tries {
            let (bits, dirty) = self.bitmap(io, g)?;
            let Some(i) = bits.first_zero() else {
                self.roomy.remove(&g);
                continue;
            };
            bits.set(i, true);
            *dirty = true;
            if bits.all() {
                self.roomy.remove(&g);
            }
            if g >= self.groups {
                self.groups = g + 1;
            }
            return Ok(Ino(g * GROUP_INODES + i as u64));
        }
        Err(FsError::NoSpace)
    }

    /// `ino` is free again.
    pub fn free(&mut self, io: &mut dyn IfileIo, ino: Ino) -> Result<()> {
        if ino.get() < FIRST_USER_INO || ino == ROOT_INO {
            return Err(FsError::Invalid("a reserved inode number cannot be freed"));
        }
        let g = ino.get() / GROUP_INODES;
        if g >= self.groups {
            return Ok(());
        }
        let (bits, dirty) = self.bitmap(io, g)?;
        bits.set((ino.get() % GROUP_INODES) as usize, false);
        *dirty = true;
        self.roomy.insert(g);
        Ok(())
    }

    /// Write the changed bitmaps (a flush group's ifile blocks) and forget the clean ones.
    pub fn flush(&mut self, io: &mut dyn IfileIo) -> Result<()> {
        for (&g, (bits, dirty)) in self.bitmaps.iter_mut() {
            if *dirty {
                io.write(bitmap_block(g), bits.as_raw_slice().to_vec())?;
                *dirty = false;
            }
        }
        self.bitmaps.retain(|_, (_, dirty)| *dirty);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        blocks: HashMap<u64, Vec<u8>>,
        reads: usize,
    }
    impl IfileIo for Mem {
        fn read(&mut self, lblock: u64) -> Result<Option<Vec<u8>>> {
            self.reads += 1;
            Ok(self.blocks.get(&lblock).cloned())
        }
        fn write(&mut self, lblock: u64, data: Vec<u8>) -> Result<()> {
            self.blocks.insert(lblock, data);
            Ok(())
        }
    }

    #[test]
    fn where_inodes_live() {
        assert_eq!(locate(ROOT_INO), (1, 1));
        assert_eq!(locate(Ino(16)), (2, 0));
        assert_eq!(locate(Ino(GROUP_INODES)), (GROUP_BLOCKS + 1, 0));
        assert_eq!(bitmap_block(2), 2 * 2049);
        assert_eq!(GROUP_BLOCKS, 2049);
    }

    #[test]
    fn numbers_from_the_parents_group_then_new_groups_and_freed_ones_again() {
        let mut io = Mem::default();
        let mut a = InodeAlloc::open(1);
        let first = a.allocate(&mut io, Some(ROOT_INO)).unwrap();
        assert_eq!(first, Ino(FIRST_USER_INO), "the reserved numbers are taken");
        for _ in 1..GROUP_INODES - FIRST_USER_INO {
            a.allocate(&mut io, None).unwrap();
        }
        // Group 0 is full: a new group opens at the end.
        let next = a.allocate(&mut io, Some(ROOT_INO)).unwrap();
        assert_eq!((next, a.groups()), (Ino(GROUP_INODES), 2));
        a.flush(&mut io).unwrap();
        // Reopened (the bitmaps read back), a freed number is handed out again, in the
        // group of the directory asking.
        let mut a = InodeAlloc::open(2);
        a.free(&mut io, Ino(500)).unwrap();
        assert_eq!(a.allocate(&mut io, Some(Ino(20))).unwrap(), Ino(500));
        assert_eq!(
            a.allocate(&mut io, Some(Ino(20))).unwrap(),
            Ino(GROUP_INODES + 1),
            "group 0 full again: the last group"
        );
        assert!(a.free(&mut io, ROOT_INO).is_err());
        assert!(a.free(&mut io, Ino(3)).is_err());
    }

    #[test]
    fn opening_costs_nothing_and_an_allocation_one_bitmap() {
        let mut io = Mem::default();
        let mut a = InodeAlloc::open(1);
        assert_eq!(io.reads, 0);
        a.allocate(&mut io, None).unwrap();
        assert_eq!(io.reads, 1);
    }
}
