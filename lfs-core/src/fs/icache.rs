//! The inode cache: inodes in memory, which of them are dirty, the tombstones a flush owes,
//! and the running count of dirty blocks and tree nodes over all of them (what the writeback
//! threshold and space admission read). Its fields are its own: the rest of `fs` goes
//! through the methods below, so a reader of any other file knows that dirty accounting
//! happens here and nowhere else.

use super::types::Attr;
use crate::bmap::{path_nodes, BlockMap};
use crate::dir::Dir;
use crate::format::inode::{DiskInode, FileKind, NDIRECT, NINDIRECT};
use crate::format::xattr::Xattrs;
use crate::format::{Ino, BLOCK_BYTES, BLOCK_SIZE};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(crate) struct Inode {
    pub d: DiskInode,
    pub bmap: BlockMap,
    /// Dirty data blocks not yet in the log.
    pub data: BTreeMap<u64, Vec<u8>>,
    /// Dirty blocks that are holes on disk (they add to st_blocks once written).
    pub new_blocks: BTreeSet<u64>,
    pub dir: Option<Dir>,
    pub xattrs: Option<Xattrs>,
    pub xattr_dirty: bool,
    pub dirty: bool,
    pub open: u32,
    /// Tree nodes `(height, first block)` that writing `data` out will dirty (a bound:
    /// some may be dirty already, and blocks dropped from `data` leave theirs here).
    pending_nodes: BTreeSet<(u8, u64)>,
    /// What this inode contributes to the cache's dirty_blocks / dirty_nodes.
    counted_blocks: u64,
    counted_nodes: u64,
    /// The cache's clock when this inode was last asked for (least recently used goes).
    used: Cell<u64>,
}

impl Inode {
    pub fn new(d: DiskInode) -> Inode {
        let xblocks = (!d.xattr.is_none()) as u64;
        let bmap = BlockMap::new(
            d.ino,
            d.version,
            d.direct,
            d.indirect,
            d.blocks.saturating_sub(xblocks),
        );
        Inode {
            d,
            bmap,
            data: BTreeMap::new(),
            new_blocks: BTreeSet::new(),
            dir: None,
            xattrs: None,
            xattr_dirty: false,
            dirty: false,
            open: 0,
            pending_nodes: BTreeSet::new(),
            counted_blocks: 0,
            counted_nodes: 0,
            used: Cell::new(0),
        }
    }

    /// Hold `block` as the new contents of logical block `l`, to be written out later.
    pub fn buffer(&mut self, l: u64, block: Vec<u8>) {
        if self.data.insert(l, block).is_none() {
            self.pending_nodes.extend(path_nodes(l, 1));
        }
    }

    /// Blocks that buffering logical blocks `first..=last` would add to what writing this
    /// inode out takes: the blocks not buffered yet and the tree nodes they bring.
    pub fn buffering_cost(&self, first: u64, last: u64) -> u64 {
        let mut nodes = BTreeSet::new();
        let mut blocks = 0;
        for l in (first..=last).filter(|l| !self.data.contains_key(l)) {
            blocks += 1;
            nodes.extend(path_nodes(l, 1).filter(|n| !self.pending_nodes.contains(n)));
        }
        blocks + nodes.len() as u64
    }

    /// Dirty blocks, and the tree nodes writing them out will dirty at most: those of
    /// buffered file data, and for a directory a path's worth for each dirty block past the
    /// direct pointers (directories rarely have any). One pass over a directory's blocks.
    fn dirty_counts(&self) -> (u64, u64) {
        let (dir_blocks, dir_deep) = self
            .dir
            .as_ref()
            .map_or((0, 0), |d| d.dirty_blocks(NDIRECT as u64));
        (
            self.data.len() as u64 + dir_blocks,
            self.pending_nodes.len() as u64 + dir_deep.saturating_mul(NINDIRECT as u64),
        )
    }

    /// Take the buffered data blocks to write them out: what was dirty is then in hand, and
    /// the nodes it was to dirty are the block map's to count.
    pub fn take_data(&mut self) -> BTreeMap<u64, Vec<u8>> {
        self.new_blocks.clear();
        self.pending_nodes.clear();
        std::mem::take(&mut self.data)
    }

    /// Holds nothing that is not on disk, and nobody has it open: it can be dropped from
    /// memory and read again when asked for.
    fn evictable(&self) -> bool {
        !self.dirty
            && !self.xattr_dirty
            && self.open == 0
            && self.data.is_empty()
            && self.new_blocks.is_empty()
            && self.bmap.dirty_nodes == 0
            && self.dir.as_ref().is_none_or(|d| d.dirty_blocks(0).0 == 0)
    }

    pub fn kind(&self) -> FileKind {
        self.d.kind().unwrap_or(FileKind::Regular)
    }

    pub fn attr(&self) -> Attr {
        // The block count is read from disk: saturate rather than overflow on a damaged one.
        let blocks = self
            .bmap
            .blocks
            .saturating_add((!self.d.xattr.is_none()) as u64 + self.new_blocks.len() as u64);
        Attr {
            ino: self.d.ino,
            generation: self.d.version,
            size: self.d.size,
            blocks: blocks.saturating_mul(BLOCK_BYTES / 512),
            atime: self.d.atime,
            mtime: self.d.mtime,
            ctime: self.d.ctime,
            crtime: self.d.crtime,
            kind: self.kind(),
            perm: self.d.mode & 0o7777,
            nlink: self.d.nlink,
            uid: self.d.uid,
            gid: self.d.gid,
            rdev: self.d.rdev,
            blksize: BLOCK_SIZE as u32,
            flags: self.d.flags,
        }
    }
}

/// Inodes in memory and what flushing them owes. At most `budget` inodes stay cached
/// between operations: `trim` drops the least recently used of those that hold nothing
/// unwritten and are not open (they are read again when asked for), so memory follows the
/// working set, not the number of files ever touched.
pub(crate) struct InodeCache {
    map: HashMap<Ino, Inode>,
    budget: usize,
    clock: Cell<u64>,
    /// Inodes changed since the last flush group.
    dirty: BTreeSet<Ino>,
    /// Inodes freed since the last flush that had an on-disk copy: (ino, version).
    tombstones: Vec<(Ino, u32)>,
    /// Dirty data and directory blocks, and dirty indirect nodes, over all inodes.
    dirty_blocks: u64,
    dirty_nodes: u64,
}

impl InodeCache {
    pub fn new(budget: usize) -> InodeCache {
        InodeCache {
            map: HashMap::new(),
            budget: budget.max(1),
            clock: Cell::new(0),
            dirty: BTreeSet::new(),
            tombstones: Vec::new(),
            dirty_blocks: 0,
            dirty_nodes: 0,
        }
    }

    fn note_use(&self, i: &Inode) {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        i.used.set(t);
    }

    pub fn contains(&self, ino: Ino) -> bool {
        self.map.contains_key(&ino)
    }
    pub fn get(&self, ino: Ino) -> Option<&Inode> {
        let i = self.map.get(&ino)?;
        self.note_use(i);
        Some(i)
    }
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        let i = self.map.get_mut(&ino)?;
        let t = self.clock.get() + 1;
        self.clock.set(t);
        i.used.set(t);
        Some(i)
    }

    /// Inodes in memory.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Over budget: drop the least recently used inodes that can be dropped, down to seven
    /// eighths of the budget (so trimming is rare, and cheap when there is nothing to do).
    /// Called between operations only, when no inode is borrowed.
    pub fn trim(&mut self) {
        if self.map.len() <= self.budget {
            return;
        }
        let target = self.budget - self.budget / 8;
        let mut old: Vec<(u64, Ino)> = self
            .map
            .iter()
            .filter(|(ino, i)| i.evictable() && !self.dirty.contains(ino))
            .map(|(&ino, i)| (i.used.get(), ino))
            .collect();
        old.sort_unstable();
        let excess = self.map.len().saturating_sub(target);
        for (_, ino) in old.into_iter().take(excess) {
            self.map.remove(&ino);
        }
    }
    /// Cache `inode` (loaded, or new: a new one is then `touch`ed).
    pub fn insert(&mut self, inode: Inode) {
        self.note_use(&inode);
        self.map.insert(inode.d.ino, inode);
    }

    /// Take `ino` out of the cache (it is being freed), and its dirty counts with it.
    pub fn remove(&mut self, ino: Ino) -> Option<Inode> {
        let i = self.map.remove(&ino)?;
        self.dirty_blocks = self.dirty_blocks.saturating_sub(i.counted_blocks);
        self.dirty_nodes = self.dirty_nodes.saturating_sub(i.counted_nodes);
        self.dirty.remove(&ino);
        Some(i)
    }

    /// A freed inode whose on-disk copy the next flush group must void.
    pub fn tombstone(&mut self, ino: Ino, version: u32) {
        self.tombstones.push((ino, version));
    }

    /// Mark `ino` dirty and bring the dirty counters up to date with it.
    pub fn touch(&mut self, ino: Ino) {
        if let Some(i) = self.map.get_mut(&ino) {
            i.dirty = true;
            let (b, pending) = i.dirty_counts();
            let n = i.bmap.dirty_nodes + pending;
            self.dirty_blocks = self.dirty_blocks + b - i.counted_blocks.min(self.dirty_blocks + b);
            self.dirty_nodes = self.dirty_nodes + n - i.counted_nodes.min(self.dirty_nodes + n);
            i.counted_blocks = b;
            i.counted_nodes = n;
            self.dirty.insert(ino);
        }
    }

    /// The dirty inodes, in inode order.
    pub fn dirty_inos(&self) -> Vec<Ino> {
        self.dirty.iter().copied().collect()
    }

    /// Anything for a flush group to write: a dirty inode or a tombstone.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.tombstones.is_empty()
    }

    /// Dirty data and directory blocks over all inodes.
    pub fn dirty_blocks(&self) -> u64 {
        self.dirty_blocks
    }

    /// Blocks writing everything out takes, at most: dirty blocks with the tree nodes they
    /// dirty, and inode slots (dirty inodes and tombstones).
    pub fn pending(&self) -> (u64, u64) {
        (
            self.dirty_blocks + self.dirty_nodes,
            (self.dirty.len() + self.tombstones.len()) as u64,
        )
    }

    /// The tombstones, for the flush group that writes them.
    pub fn take_tombstones(&mut self) -> Vec<(Ino, u32)> {
        std::mem::take(&mut self.tombstones)
    }

    /// `ino` was written with the flush group under way: clean, and counted no more.
    pub fn written(&mut self, ino: Ino) -> Option<&mut Inode> {
        let i = self.map.get_mut(&ino)?;
        i.dirty = false;
        i.counted_blocks = 0;
        i.counted_nodes = 0;
        Some(i)
    }

    /// The flush group wrote every dirty inode.
    pub fn all_written(&mut self) {
        self.dirty.clear();
        self.dirty_blocks = 0;
        self.dirty_nodes = 0;
    }
}
