//! Cached inodes: loading from the inode map, dirty tracking, freeing, and the flush group
//! that writes every dirty inode with what it points to, in the order docs/FORMAT.md gives:
//! data, directory and xattr blocks, then indirect blocks bottom-up, then inode blocks.

use super::icache::Inode;
use super::inner::Inner;
use super::types::Attr;
use crate::dir::Dir;
use crate::error::Damage;
use crate::error::{FsError, Result};
use crate::format::dir::decode_dir_block;
use crate::format::inode::{
    decode_inode_block, encode_inode_block, DiskInode, FileKind, Timespec, INODES_PER_BLOCK,
    INODE_SIZE,
};
use crate::format::summary::SummaryEntry;
use crate::format::table::{ImapEntry, IMAP_ALLOCATED, IMAP_ORPHAN};
use crate::format::xattr::encode_xattrs;
use crate::format::BLOCK_BYTES;
use crate::format::{BlockAddr, Ino};

pub(crate) fn now() -> Timespec {
    Timespec::now()
}

impl Inner {
    /// Bring `ino` into the cache.
    pub(crate) fn load(&mut self, ino: Ino) -> Result<()> {
        if self.inodes.contains(ino) {
            return Ok(());
        }
        let e = self.imap.get(ino).copied().ok_or(FsError::Stale(ino))?;
        if !e.allocated() {
            return Err(FsError::Stale(ino));
        }
        let d = self.read_inode(ino, &e)?;
        self.inodes.insert(Inode::new(d));
        Ok(())
    }

    /// Inode `ino` from where the map entry `e` says it is stored, checked against it.
    pub(crate) fn read_inode(&mut self, ino: Ino, e: &ImapEntry) -> Result<DiskInode> {
        if e.addr.is_none() {
            return Err(Damage::InodeNeverWritten { ino }.into());
        }
        let b = self.st.read_block(e.addr)?;
        let slots = decode_inode_block(&b).map_err(FsError::corrupt("inode block", e.addr))?;
        let d = slots.into_iter().nth(e.slot as usize).ok_or_else(|| {
            FsError::from(Damage::InodeSlotMissing {
                ino,
                slot: e.slot,
                addr: e.addr,
            })
        })?;
        if d.ino != ino || d.version != e.version || d.is_tombstone() {
            return Err(Damage::InodeMismatch {
                ino,
                addr: e.addr,
                slot: e.slot,
            }
            .into());
        }
        Ok(d)
    }

    pub(crate) fn inode(&mut self, ino: Ino) -> Result<&mut Inode> {
        self.load(ino)?;
        self.inodes.get_mut(ino).ok_or(FsError::Stale(ino))
    }

    pub(crate) fn getattr(&mut self, ino: Ino) -> Result<Attr> {
        let mut a = self.inode(ino)?.attr();
        // Space fallocate granted counts as the file's, as on ext4 (its unwritten extents
        // are in i_blocks): writing into it then does not grow st_blocks, and du sees it.
        let reserved = self.reservations.unwritten(ino);
        a.blocks = a
            .blocks
            .saturating_add(reserved.saturating_mul(crate::format::BLOCK_BYTES / 512));
        Ok(a)
    }

    /// Mark an inode dirty and bring the cache's dirty counters up to date with it.
    pub(crate) fn touch(&mut self, ino: Ino) {
        self.inodes.touch(ino);
    }

    /// Load a directory's entries.
    pub(crate) fn dir(&mut self, ino: Ino) -> Result<&mut Dir> {
        let inode = self.inodes.get_mut(ino);
        let needs_load = match inode {
            None => true,
            Some(i) => i.dir.is_none(),
        };
        if needs_load {
            self.load(ino)?;
            let Inner { inodes, st, .. } = self;
            let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
            if i.kind() != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            // The size comes from disk: a directory cannot hold more blocks than the device.
            let nblocks = i.d.size / BLOCK_BYTES;
            if nblocks > st.sb().total_blocks {
                return Err(Damage::DirectoryTooLarge {
                    ino,
                    size: i.d.size,
                }
                .into());
            }
            let mut blocks = Vec::with_capacity(nblocks.min(4096) as usize);
            for l in 0..nblocks {
                let addr = i.bmap.get(st, l)?;
                if addr.is_none() {
                    blocks.push(Vec::new());
                    continue;
                }
                let b = st.read_block(addr)?;
                blocks
                    .push(decode_dir_block(&b).map_err(FsError::corrupt("directory block", addr))?);
            }
            i.dir = Some(Dir::from_blocks(blocks));
        }
        let i = self.inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        if i.kind() != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        i.dir.as_mut().ok_or(FsError::NotDir)
    }

    /// A new inode, cached and dirty.
    pub(crate) fn new_inode(
        &mut self,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
        parent: Ino,
    ) -> Result<Ino> {
        let (ino, version) = self.imap.allocate().ok_or(FsError::NoSpace)?;
        let t = now();
        let is_dir = mode & crate::format::inode::S_IFMT == crate::format::inode::S_IFDIR;
        // chattr flags a new inode takes from its directory, as on ext4.
        use crate::format::inode::{FL_DIRSYNC, FL_INHERITED};
        let from_dir = self.inodes.get(parent).map_or(0, |p| p.d.flags) & FL_INHERITED;
        let d = DiskInode {
            ino,
            version,
            mode,
            nlink: if is_dir { 2 } else { 1 },
            uid,
            gid,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev,
            parent: if is_dir { parent } else { Ino(0) },
            flags: if is_dir {
                from_dir
            } else {
                from_dir & !FL_DIRSYNC
            },
            ..Default::default()
        };
        let mut inode = Inode::new(d);
        if is_dir {
            inode.dir = Some(Dir::default());
        }
        self.inodes.insert(inode);
        self.touch(ino);
        Ok(ino)
    }

    /// The last link is gone: free now, or mark orphan while the file is open.
    pub(crate) fn drop_link(&mut self, ino: Ino) -> Result<()> {
        let i = self.inode(ino)?;
        if i.d.nlink > 0 {
            return Ok(());
        }
        if i.open > 0 {
            self.imap.set_orphan(ino, true);
            return Ok(());
        }
        self.free_inode(ino)
    }

    pub(crate) fn release(&mut self, ino: Ino) -> Result<()> {
        let Some(i) = self.inodes.get_mut(ino) else {
            return Ok(());
        };
        i.open = i.open.saturating_sub(1);
        if i.open == 0 && i.d.nlink == 0 && self.st.writable() {
            self.free_inode(ino)?;
        }
        Ok(())
    }

    /// Free an inode and every block it owns.
    pub(crate) fn free_inode(&mut self, ino: Ino) -> Result<()> {
        self.load(ino)?;
        let Inner { inodes, st, .. } = self;
        let Some(mut i) = inodes.remove(ino) else {
            return Ok(());
        };
        i.bmap.clear_range(st, 0, u64::MAX)?;
        i.bmap.flush(st)?;
        if !i.d.xattr.is_none() {
            st.kill_bytes(i.d.xattr, BLOCK_BYTES);
        }
        if let Some(e) = self.imap.get(ino).copied() {
            if !e.addr.is_none() {
                self.st.kill_bytes(e.addr, INODE_SIZE as u64);
                self.inodes.tombstone(ino, e.version);
            }
        }
        self.imap.free(ino);
        self.reservations.release_from(ino, 0);
        Ok(())
    }

    /// Write the dirty data, directory and xattr blocks of `ino` into the log.
    fn write_blocks(&mut self, ino: Ino) -> Result<()> {
        let Inner { inodes, st, .. } = self;
        let Some(i) = inodes.get_mut(ino) else {
            return Ok(());
        };
        let (v, data) = (i.d.version, i.take_data());
        for (l, buf) in data {
            let addr = st.append_counted(SummaryEntry::data(ino, v, l), &buf, BLOCK_BYTES)?;
            let old = i.bmap.set(st, l, addr)?;
            if !old.is_none() {
                crate::bmap::Sink::kill(st, old)?;
            }
        }
        if let Some(dir) = i.dir.as_mut() {
            for (l, blk) in dir.blocks.iter_mut().enumerate() {
                if !blk.dirty {
                    continue;
                }
                let bytes = crate::format::dir::encode_dir_block(&blk.slots).map_err(|source| {
                    FsError::Bug {
                        what: format!("directory {ino} block {l}"),
                        source,
                    }
                })?;
                let addr =
                    st.append_counted(SummaryEntry::data(ino, v, l as u64), &bytes, BLOCK_BYTES)?;
                let old = i.bmap.set(st, l as u64, addr)?;
                if !old.is_none() {
                    crate::bmap::Sink::kill(st, old)?;
                }
                blk.dirty = false;
            }
            i.d.size = dir.blocks.len() as u64 * BLOCK_BYTES;
        }
        if i.xattr_dirty {
            let x = i.xattrs.clone().unwrap_or_default();
            let old = i.d.xattr;
            i.d.xattr = if x.is_empty() {
                BlockAddr::NONE
            } else {
                let bytes = encode_xattrs(&x).map_err(|source| FsError::Bug {
                    what: format!("xattrs of inode {ino}"),
                    source,
                })?;
                st.append_counted(SummaryEntry::xattr(ino, v), &bytes, BLOCK_BYTES)?
            };
            if !old.is_none() {
                st.kill_bytes(old, BLOCK_BYTES);
            }
            i.xattr_dirty = false;
        }
        Ok(())
    }

    /// Write back dirty file data without the inodes (memory pressure). Roll-forward ignores
    /// such units until an inode that points at them follows.
    pub(crate) fn writeback(&mut self) -> Result<()> {
        self.st.begin_group(0)?;
        let inos = self.inodes.dirty_inos();
        let res = inos.iter().try_for_each(|&ino| {
            let r = self.write_blocks(ino);
            self.touch(ino);
            r
        });
        self.st.end_group()?;
        res
    }

    /// Write everything dirty as one flush group (see docs/FORMAT.md).
    pub(crate) fn flush_all(&mut self) -> Result<()> {
        if !self.inodes.has_dirty() {
            return Ok(());
        }
        self.st.begin_group(0)?;
        let res = self.flush_group(false);
        self.st.end_group()?;
        self.stats.flushes += 1;
        res
    }

    /// Write everything dirty into the open group, file by file in inode order, or for
    /// the cleaner (`oldest_first`) the least recently modified files first, so that cold
    /// data gathers with cold data while each file's blocks stay together (one tree node
    /// rewrite per file when a later pass moves them; see docs/CLEANER.md).
    pub(crate) fn flush_group(&mut self, oldest_first: bool) -> Result<()> {
        let mut inos = self.inodes.dirty_inos();
        if oldest_first {
            let inodes = &self.inodes;
            inos.sort_by_key(|&ino| (inodes.get(ino).map(|i| i.d.mtime), ino));
        }
        for &ino in &inos {
            self.write_blocks(ino)?;
        }
        let mut slots: Vec<DiskInode> = self
            .inodes
            .take_tombstones()
            .into_iter()
            .map(|(ino, v)| DiskInode::tombstone(ino, v))
            .collect();
        for &ino in &inos {
            let Inner { inodes, st, .. } = self;
            let Some(i) = inodes.written(ino) else {
                continue;
            };
            i.bmap.flush(st)?;
            let (direct, indirect) = i.bmap.pointers();
            i.d.direct = direct;
            i.d.indirect = indirect;
            i.d.blocks = i.bmap.blocks + (!i.d.xattr.is_none()) as u64;
            slots.push(i.d.clone());
        }
        for chunk in slots.chunks(INODES_PER_BLOCK) {
            let live =
                chunk.iter().filter(|d| !d.is_tombstone()).count() as u64 * INODE_SIZE as u64;
            let addr = self.st.append_counted(
                SummaryEntry::inode_block(),
                &encode_inode_block(chunk),
                live,
            )?;
            for (slot, d) in chunk.iter().enumerate() {
                if d.is_tombstone() {
                    continue;
                }
                let old = self.imap.get(d.ino).copied().unwrap_or_default();
                if !old.addr.is_none() {
                    self.st.kill_bytes(old.addr, INODE_SIZE as u64);
                }
                let orphan = old.flags & IMAP_ORPHAN;
                self.imap.set(
                    d.ino,
                    ImapEntry {
                        addr,
                        version: d.version,
                        slot: slot as u8,
                        flags: IMAP_ALLOCATED | orphan,
                    },
                );
            }
        }
        self.inodes.all_written();
        Ok(())
    }
}
