//! The inode table of format version 2 (docs/FORMAT-V2.md §6) over the store: the ifile is
//! a file (inode 2) whose blocks hold the groups' allocation bitmaps and the inodes, 16 to a
//! block, reached through its own block map of virtual pointers and read through the DAT
//! and the block cache like any file — so an inode costs memory when it is used, never for
//! being possible. Changed ifile blocks are kept until the flush group writes them (twice:
//! DUP) and the ifile's inode, which the group's root carries.
//!
//! An empty slot (all zeros) is a free inode; `ifile::InodeAlloc` hands out numbers from the
//! bitmaps. Until the switch (issue 20, step 3) the engine's `DiskInode` stores virtual
//! block numbers in its `BlockAddr` fields (the same 8 bytes); the switch retypes them.
//! Built and tested on its own; not used by the engine yet.

use crate::bmap::BlockMap;
use crate::error::{Damage, FsError, Result};
use crate::format::inode::{DiskInode, INODE_SIZE, NDIRECT, NINDIRECT, S_IFREG};
use crate::format::v2::summary::Kind;
use crate::format::{BlockAddr, Ino, VBlock, BLOCK_BYTES, BLOCK_SIZE};
use crate::ifile::{locate, IfileIo, InodeAlloc, GROUP_BLOCKS};
use crate::vstore::{Owner, VStore};
use std::collections::BTreeMap;

/// The ifile's own inode number.
pub const IFILE_INO: Ino = Ino(2);

/// Virtual pointers from an inode's pointer fields (see the module comment).
fn vptrs(d: &DiskInode) -> ([VBlock; NDIRECT], [VBlock; NINDIRECT]) {
    (
        d.direct.map(|a| VBlock(a.get())),
        d.indirect.map(|a| VBlock(a.get())),
    )
}

pub struct InodeTable {
    /// The ifile's inode (its pointers as of the last flush).
    ifile: DiskInode,
    map: BlockMap<VBlock>,
    alloc: InodeAlloc,
    /// Ifile blocks changed since the last flush, by logical block.
    changed: BTreeMap<u64, Vec<u8>>,
}

/// The ifile's blocks as `InodeAlloc` sees them: the changed ones, else through the map.
struct Blocks<'a> {
    map: &'a mut BlockMap<VBlock>,
    changed: &'a mut BTreeMap<u64, Vec<u8>>,
    st: &'a mut VStore,
}

impl Blocks<'_> {
    fn read(&mut self, l: u64) -> Result<Option<Vec<u8>>> {
        if let Some(b) = self.changed.get(&l) {
            return Ok(Some(b.clone()));
        }
        let v = self.map.get(self.st, l)?;
        if v.is_none() {
            return Ok(None);
        }
        Ok(Some(self.st.read_virtual(v)?.as_ref().clone()))
    }
}

impl IfileIo for Blocks<'_> {
    fn read(&mut self, l: u64) -> Result<Option<Vec<u8>>> {
        Blocks::read(self, l)
    }
    fn write(&mut self, l: u64, data: Vec<u8>) -> Result<()> {
        self.changed.insert(l, data);
        Ok(())
    }
}

impl InodeTable {
    /// The table whose ifile inode is `ifile` (a checkpoint's, or a group root's); all zeros
    /// is a new, empty table (mkfs).
    pub fn open(ifile: &[u8]) -> Result<InodeTable> {
        let d = if ifile.iter().all(|&b| b == 0) {
            DiskInode {
                ino: IFILE_INO,
                version: 1,
                mode: S_IFREG | 0o600,
                nlink: 1,
                ..Default::default()
            }
        } else {
            DiskInode::decode_from(ifile, 0).map_err(|source| FsError::Corrupt {
                what: "the ifile's inode",
                addr: BlockAddr::NONE,
                source,
            })?
        };
        if d.ino != IFILE_INO {
            return Err(Damage::InodeMismatch {
                ino: IFILE_INO,
                addr: BlockAddr::NONE,
                slot: 0,
            }
            .into());
        }
        let (direct, indirect) = vptrs(&d);
        let map = BlockMap::new(d.ino, d.version, direct, indirect, d.blocks);
        let groups = (d.size / BLOCK_BYTES).div_ceil(GROUP_BLOCKS).max(1);
        Ok(InodeTable {
            ifile: d,
            map,
            alloc: InodeAlloc::open(groups),
            changed: BTreeMap::new(),
        })
    }

    fn blocks<'a>(&'a mut self, st: &'a mut VStore) -> (Blocks<'a>, &'a mut InodeAlloc) {
        (
            Blocks {
                map: &mut self.map,
                changed: &mut self.changed,
                st,
            },
            &mut self.alloc,
        )
    }

    /// Inode `ino`, or `None` if its slot is free.
    pub fn get(&mut self, st: &mut VStore, ino: Ino) -> Result<Option<DiskInode>> {
        let (l, slot) = locate(ino);
        let Some(b) = self.blocks(st).0.read(l)? else {
            return Ok(None);
        };
        let s = &b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE];
        if s.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let d = DiskInode::decode_from(s, slot).map_err(|source| FsError::Corrupt {
            what: "ifile block",
            addr: BlockAddr::NONE,
            source,
        })?;
        if d.ino != ino {
            return Err(Damage::InodeMismatch {
                ino,
                addr: BlockAddr::NONE,
                slot: slot as u8,
            }
            .into());
        }
        Ok(Some(d))
    }

    /// Store `d` in its slot (written out by the next flush).
    pub fn put(&mut self, st: &mut VStore, d: &DiskInode) -> Result<()> {
        let (l, slot) = locate(d.ino);
        let mut b = self
            .blocks(st)
            .0
            .read(l)?
            .unwrap_or_else(|| vec![0; BLOCK_SIZE]);
        d.encode_into(&mut b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE]);
        self.changed.insert(l, b);
        Ok(())
    }

    /// Inode `ino` is gone: its slot empty, its number free.
    pub fn clear(&mut self, st: &mut VStore, ino: Ino) -> Result<()> {
        let (l, slot) = locate(ino);
        let (mut io, alloc) = self.blocks(st);
        if let Some(mut b) = io.read(l)? {
            b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE].fill(0);
            io.changed.insert(l, b);
        }
        alloc.free(&mut io, ino)
    }

    /// A free inode number, near `near`'s (the parent directory's group).
    pub fn allocate(&mut self, st: &mut VStore, near: Option<Ino>) -> Result<Ino> {
        let (mut io, alloc) = self.blocks(st);
        alloc.allocate(&mut io, near)
    }

    /// Write the changed ifile blocks (DUP) and the ifile's tree into the group under way;
    /// returns the ifile's inode as the group's root must carry it.
    pub fn flush(&mut self, st: &mut VStore) -> Result<Vec<u8>> {
        {
            let (mut io, alloc) = self.blocks(st);
            alloc.flush(&mut io)?;
        }
        let (ino, version) = (self.ifile.ino, self.ifile.version);
        for (l, b) in std::mem::take(&mut self.changed) {
            let old = self.map.get(st, l)?;
            let owner = Owner {
                kind: Kind::Ifile,
                height: 0,
                ino,
                generation: version,
                index: l,
            };
            let v = st.write_virtual(0, owner, old, &b, true)?;
            if v != old {
                self.map.set(st, l, v)?;
            }
            self.ifile.size = self.ifile.size.max((l + 1) * BLOCK_BYTES);
        }
        self.map.flush(st)?;
        let (direct, indirect) = self.map.pointers();
        self.ifile.direct = direct.map(|v| BlockAddr(v.get()));
        self.ifile.indirect = indirect.map(|v| BlockAddr(v.get()));
        self.ifile.blocks = self.map.blocks;
        Ok(self.inode_bytes())
    }

    /// The ifile's inode as of the last flush.
    pub fn inode_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; INODE_SIZE];
        self.ifile.encode_into(&mut b);
        b
    }

    /// Changed ifile blocks waiting for the flush.
    pub fn changed_blocks(&self) -> usize {
        self.changed.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::inode::{FileKind, S_IFDIR};
    use crate::format::Cno;
    use crate::ifile::{FIRST_USER_INO, GROUP_INODES};
    use crate::vstore::testutil::*;

    fn inode(ino: Ino, mode: u32, size: u64) -> DiskInode {
        DiskInode {
            ino,
            version: 1,
            mode,
            nlink: 1,
            size,
            ..Default::default()
        }
    }

    /// Inodes written across groups (so the ifile's tree is used), flushed in a group,
    /// read back through a table reopened from the ifile inode alone — after a checkpoint
    /// and reopening the store, too; freed ones read as free and their numbers come back.
    #[test]
    fn inodes_round_trip_through_the_ifile_and_numbers_are_reused() {
        let dev = device();
        let mut st = fresh(&dev);
        let mut t = InodeTable::open(&[0; INODE_SIZE]).unwrap();
        st.begin_group().unwrap();
        t.put(&mut st, &inode(Ino(1), S_IFDIR | 0o755, 4096))
            .unwrap();
        let mut inos = Vec::new();
        for i in 0..40u64 {
            let near = if i < 20 {
                Some(Ino(1))
            } else {
                Some(Ino(GROUP_INODES * 3 + 1))
            };
            let ino = t.allocate(&mut st, near).unwrap();
            assert!(ino.get() >= FIRST_USER_INO);
            t.put(&mut st, &inode(ino, S_IFREG | 0o644, i)).unwrap();
            inos.push(ino);
        }
        // A far group: the ifile's map reaches past its direct pointers.
        let far = Ino(GROUP_INODES * 5 + 7);
        t.put(&mut st, &inode(far, S_IFREG | 0o600, 77)).unwrap();
        let ifile = t.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
        assert_eq!(t.changed_blocks(), 0);

        let mut again = InodeTable::open(&ifile).unwrap();
        let root = again.get(&mut st, Ino(1)).unwrap().unwrap();
        assert_eq!(root.kind(), Some(FileKind::Directory));
        for (i, &ino) in inos.iter().enumerate() {
            assert_eq!(again.get(&mut st, ino).unwrap().unwrap().size, i as u64);
        }
        assert_eq!(again.get(&mut st, far).unwrap().unwrap().size, 77);
        assert_eq!(
            again.get(&mut st, Ino(GROUP_INODES * 9)).unwrap(),
            None,
            "a hole"
        );

        // Free one, flush; its slot reads free and its number is handed out again.
        st.begin_group().unwrap();
        again.clear(&mut st, inos[3]).unwrap();
        let ifile = again.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
        let roots = checkpoint(&mut st, Cno(2));
        st.close_log();
        let mut st2 = crate::vstore::VStore::open(G, dev.clone(), &roots, 64);
        let mut t2 = InodeTable::open(&ifile).unwrap();
        assert_eq!(t2.get(&mut st2, inos[3]).unwrap(), None);
        assert_eq!(t2.get(&mut st2, inos[4]).unwrap().unwrap().size, 4);
        assert_eq!(t2.allocate(&mut st2, Some(Ino(1))).unwrap(), inos[3]);
        let problems = crate::vcheck::check_maps(&mut st2, true).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_wrong_inode_in_a_slot_is_damage_not_a_file() {
        let dev = device();
        let mut st = fresh(&dev);
        let mut t = InodeTable::open(&[0; INODE_SIZE]).unwrap();
        st.begin_group().unwrap();
        // Inode 40's slot holding inode 41: a misplaced write, found on read.
        let mut d = inode(Ino(41), S_IFREG | 0o644, 1);
        let (l, slot) = locate(Ino(40));
        let mut b = vec![0u8; BLOCK_SIZE];
        d.encode_into(&mut b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE]);
        t.changed.insert(l, b);
        assert!(matches!(
            t.get(&mut st, Ino(40)),
            Err(FsError::Damaged(Damage::InodeMismatch { .. }))
        ));
        d.ino = Ino(40);
        t.put(&mut st, &d).unwrap();
        assert_eq!(t.get(&mut st, Ino(40)).unwrap().unwrap().ino, Ino(40));
        let ifile = t.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
    }
}
