//! The inode table of format version 2 (docs/FORMAT-V2.md §6) over the store: the ifile is
//! a file (inode 2) whose blocks hold the groups' allocation bitmaps and the inodes, 16 to a
//! block, reached through its own block map of virtual pointers and read through the DAT
//! and the block cache like any file — so an inode costs memory when it is used, never for
//! being possible. Changed ifile blocks are kept until the flush group writes them (twice:
//! DUP) and the ifile's inode, which the group's root carries.
//!
//! A free slot is all zeros, or mode 0 keeping the generation of its last owner (the next
//! owner takes one more); `ifile::InodeAlloc` hands out numbers from the bitmaps. The orphan
//! list is a file of inode numbers (inode 4), written with the group like any file. Until the switch (issue 20, step 3) the engine's `DiskInode` stores virtual
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
/// The orphan file's inode number: a file of inode numbers (8 bytes each, 0 for an empty
/// entry) that have no name left but are still open; mount frees what it lists. ext4's
/// orphan file, rather than a list linked through the inodes: adding and removing touch one
/// block, and the list is written with the flush group like any file.
pub const ORPHAN_INO: Ino = Ino(4);
const ORPHANS_PER_BLOCK: usize = BLOCK_SIZE / 8;
/// Orphan file blocks at most (4 Mi orphans): a larger size on disk is damage.
const MAX_ORPHAN_BLOCKS: u64 = 8192;

/// The orphan file in memory (it is small: read whole on first use).
struct Orphans {
    d: DiskInode,
    map: BlockMap<VBlock>,
    blocks: Vec<Vec<u8>>,
    changed: std::collections::BTreeSet<u64>,
    /// Where each listed inode is: (block, entry).
    index: BTreeMap<Ino, (usize, usize)>,
}

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
    /// The orphan file, once used.
    orphans: Option<Orphans>,
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
            orphans: None,
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
        if d.is_tombstone() && d.ino == ino {
            return Ok(None);
        }
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

    /// Inode `ino` is gone: its slot free (mode 0, keeping its generation so the number's
    /// next owner gets a new one: a file handle of the old never opens the new), its
    /// number free.
    pub fn clear(&mut self, st: &mut VStore, ino: Ino) -> Result<()> {
        let (l, slot) = locate(ino);
        let (mut io, alloc) = self.blocks(st);
        if let Some(mut b) = io.read(l)? {
            let s = &mut b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE];
            let version = DiskInode::decode_from(s, slot).map_or(0, |d| d.version);
            s.fill(0);
            DiskInode::tombstone(ino, version).encode_into(s);
            io.changed.insert(l, b);
        }
        alloc.free(&mut io, ino)
    }

    /// A free inode number, near `near`'s (the parent directory's group), and the
    /// generation its new owner takes (one past the previous owner's).
    pub fn allocate(&mut self, st: &mut VStore, near: Option<Ino>) -> Result<(Ino, u32)> {
        let (mut io, alloc) = self.blocks(st);
        let ino = alloc.allocate(&mut io, near)?;
        let (l, slot) = locate(ino);
        let before = io.read(l)?.and_then(|b| {
            DiskInode::decode_from(&b[slot * INODE_SIZE..(slot + 1) * INODE_SIZE], slot).ok()
        });
        let version = before.map_or(1, |d| d.version.wrapping_add(1).max(1));
        Ok((ino, version))
    }

    fn orphan_file(&mut self, st: &mut VStore) -> Result<&mut Orphans> {
        if self.orphans.is_none() {
            let d = self.get(st, ORPHAN_INO)?.unwrap_or_else(|| DiskInode {
                ino: ORPHAN_INO,
                version: 1,
                mode: S_IFREG | 0o600,
                nlink: 1,
                ..Default::default()
            });
            let n = d.size / BLOCK_BYTES;
            if n > MAX_ORPHAN_BLOCKS {
                return Err(FsError::Corrupt {
                    what: "orphan file",
                    addr: BlockAddr::NONE,
                    source: crate::format::FormatError::invalid(
                        "orphan file",
                        format!("size {} is more than any orphan list", d.size),
                    ),
                });
            }
            let (direct, indirect) = vptrs(&d);
            let mut map = BlockMap::new(d.ino, d.version, direct, indirect, d.blocks);
            let mut blocks = Vec::new();
            let mut index = BTreeMap::new();
            for l in 0..n {
                let v = map.get(st, l)?;
                let b = if v.is_none() {
                    vec![0u8; BLOCK_SIZE]
                } else {
                    st.read_virtual(v)?.as_ref().clone()
                };
                for (k, e) in b.chunks(8).enumerate() {
                    let ino = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
                    if ino != 0 {
                        index.insert(Ino(ino), (l as usize, k));
                    }
                }
                blocks.push(b);
            }
            self.orphans = Some(Orphans {
                d,
                map,
                blocks,
                changed: Default::default(),
                index,
            });
        }
        self.orphans.as_mut().ok_or(FsError::NotFound)
    }

    /// The inodes on the orphan list.
    pub fn orphans(&mut self, st: &mut VStore) -> Result<Vec<Ino>> {
        Ok(self.orphan_file(st)?.index.keys().copied().collect())
    }

    /// Put `ino` on the orphan list (its last name is gone while it is open).
    pub fn add_orphan(&mut self, st: &mut VStore, ino: Ino) -> Result<()> {
        let o = self.orphan_file(st)?;
        if o.index.contains_key(&ino) {
            return Ok(());
        }
        let free = o.blocks.iter().enumerate().find_map(|(l, b)| {
            b.chunks(8)
                .position(|e| e.iter().all(|&x| x == 0))
                .map(|k| (l, k))
        });
        let (l, k) = match free {
            Some(at) => at,
            None => {
                o.blocks.push(vec![0u8; BLOCK_SIZE]);
                (o.blocks.len() - 1, 0)
            }
        };
        o.blocks[l][k * 8..k * 8 + 8].copy_from_slice(&ino.get().to_le_bytes());
        o.index.insert(ino, (l, k));
        o.changed.insert(l as u64);
        Ok(())
    }

    /// Take `ino` off the orphan list (named again, or freed).
    pub fn remove_orphan(&mut self, st: &mut VStore, ino: Ino) -> Result<()> {
        let o = self.orphan_file(st)?;
        if let Some((l, k)) = o.index.remove(&ino) {
            o.blocks[l][k * 8..k * 8 + 8].fill(0);
            o.changed.insert(l as u64);
        }
        Ok(())
    }

    /// Write the orphan file's changed blocks and its inode (into the ifile).
    fn flush_orphans(&mut self, st: &mut VStore) -> Result<()> {
        let Some(mut o) = self.orphans.take() else {
            return Ok(());
        };
        if !o.changed.is_empty() {
            for l in std::mem::take(&mut o.changed) {
                let old = o.map.get(st, l)?;
                let owner = Owner {
                    kind: Kind::Data,
                    height: 0,
                    ino: ORPHAN_INO,
                    generation: o.d.version,
                    index: l,
                };
                let v = st.write_virtual(0, owner, old, &o.blocks[l as usize], false)?;
                if v != old {
                    o.map.set(st, l, v)?;
                }
            }
            o.map.flush(st)?;
            let (direct, indirect) = o.map.pointers();
            o.d.direct = direct.map(|v| BlockAddr(v.get()));
            o.d.indirect = indirect.map(|v| BlockAddr(v.get()));
            o.d.blocks = o.map.blocks;
            o.d.size = o.blocks.len() as u64 * BLOCK_BYTES;
            let d = o.d.clone();
            self.orphans = Some(o);
            return self.put(st, &d);
        }
        self.orphans = Some(o);
        Ok(())
    }

    /// Write the changed ifile blocks (DUP) and the ifile's tree into the group under way;
    /// returns the ifile's inode as the group's root must carry it.
    pub fn flush(&mut self, st: &mut VStore) -> Result<Vec<u8>> {
        self.flush_orphans(st)?;
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

    /// Changed ifile and orphan file blocks waiting for the flush.
    pub fn changed_blocks(&self) -> usize {
        self.changed.len() + self.orphans.as_ref().map_or(0, |o| o.changed.len())
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
            let (ino, version) = t.allocate(&mut st, near).unwrap();
            assert!(ino.get() >= FIRST_USER_INO);
            assert_eq!(version, 1, "a number never used");
            t.put(&mut st, &inode(ino, S_IFREG | 0o644, i)).unwrap();
            inos.push(ino);
        }
        // A far group: the ifile's map reaches past its direct pointers.
        let far = Ino(GROUP_INODES * 5 + 7);
        t.put(&mut st, &inode(far, S_IFREG | 0o600, 77)).unwrap();
        let ifile = t.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
        assert_eq!(t.changed_blocks(), 0);
        let inos: Vec<Ino> = inos.into_iter().collect();

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
        assert_eq!(
            t2.allocate(&mut st2, Some(Ino(1))).unwrap(),
            (inos[3], 2),
            "the number again, with the next generation"
        );
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

    /// The orphan list survives a flush and a reopen, entries are reused, and removal
    /// takes an inode off for good.
    #[test]
    fn the_orphan_list_is_kept_in_its_file() {
        let dev = device();
        let mut st = fresh(&dev);
        let mut t = InodeTable::open(&[0; INODE_SIZE]).unwrap();
        st.begin_group().unwrap();
        t.put(&mut st, &inode(Ino(1), S_IFDIR | 0o755, 0)).unwrap();
        assert_eq!(t.orphans(&mut st).unwrap(), vec![]);
        // More than a block's worth: the file grows.
        let many: Vec<Ino> = (0..700).map(|i| Ino(100 + i)).collect();
        for &i in &many {
            t.add_orphan(&mut st, i).unwrap();
        }
        t.remove_orphan(&mut st, Ino(105)).unwrap();
        let ifile = t.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
        let mut again = InodeTable::open(&ifile).unwrap();
        let listed = again.orphans(&mut st).unwrap();
        assert_eq!(listed.len(), 699);
        assert!(!listed.contains(&Ino(105)) && listed.contains(&Ino(799)));
        st.begin_group().unwrap();
        again.add_orphan(&mut st, Ino(5000)).unwrap();
        for &i in &many {
            again.remove_orphan(&mut st, i).unwrap();
        }
        let ifile = again.flush(&mut st).unwrap();
        st.end_group(&ifile, &[0; 256]).unwrap();
        let mut third = InodeTable::open(&ifile).unwrap();
        assert_eq!(third.orphans(&mut st).unwrap(), vec![Ino(5000)]);
        let problems = crate::vcheck::check_maps(&mut st, true).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
    }
}
