//! A radix tree of physical blocks, paged: the shape of format version 2's DAT and sufile
//! (docs/FORMAT-V2.md §5, §11). Nothing is read until asked for, only the nodes on the path
//! to a wanted leaf are loaded, clean nodes and leaves can be dropped at any time
//! (`evict_clean`), and a flush writes the dirty leaves and then their ancestors bottom-up,
//! each parent recording its child's new address and checksum — so memory and work grow
//! with what is used, never with the size of the key space (the disk).
//!
//! Not used by the engine yet (issue 20, step 3 switches to it); its tests run it against
//! an in-memory block store.

use crate::error::{FsError, Result};
use crate::format::v2::ptr::{PhysPtr, RadixNode, FANOUT};
use crate::format::v2::{block_crc, dat, sufile, Expect};
use crate::format::{BlockAddr, SegNo, VBlock};
use std::collections::BTreeMap;
use std::sync::Arc;

type FormatResult<T> = std::result::Result<T, crate::format::FormatError>;

fn vanished(what: &'static str) -> FsError {
    FsError::Bug {
        what: format!("a {what} block loaded a moment ago is gone"),
        source: crate::format::FormatError::invalid(what, "tree cache"),
    }
}

/// What a tree's leaves hold, and how they are stored.
pub trait LeafCodec {
    type Entry: Clone + PartialEq + std::fmt::Debug;
    /// Entries per leaf.
    const ENTRIES: usize;
    /// Magic of the tree's interior nodes.
    const NODE_MAGIC: u32;
    const WHAT: &'static str;
    /// An entry nobody has written (what a hole reads as).
    fn empty(&self) -> Self::Entry;
    fn encode(&self, leaf: u64, entries: &[Self::Entry]) -> Vec<u8>;
    fn decode(&self, b: &[u8], leaf: u64, crc: u32) -> FormatResult<Vec<Self::Entry>>;
    /// Entries that are free (for the pointers' `free` counts; 0 where not kept).
    fn free(&self, entries: &[Self::Entry]) -> u32;
}

/// Where the tree's blocks live.
pub trait BlockStore {
    fn read(&mut self, addr: BlockAddr) -> Result<Arc<Vec<u8>>>;
    /// Append a block of the tree (leaf if `height == 0`) covering keys from `index`.
    fn write(&mut self, height: u8, index: u64, data: &[u8]) -> Result<BlockAddr>;
    /// A block of the tree is no longer referenced.
    fn kill(&mut self, addr: BlockAddr);
}

/// Keys under one child of a node of height `h` (a leaf covers `E` keys).
fn span(e: usize, h: u8) -> u64 {
    (e as u64).saturating_mul((FANOUT as u64).saturating_pow(u32::from(h)))
}

struct Leaf<E> {
    entries: Vec<E>,
    dirty: bool,
}

struct Node {
    ptrs: Vec<PhysPtr>,
    dirty: bool,
}

/// The tree. Leaves are keyed by leaf number; nodes by (height, first key).
pub struct RadixTree<C: LeafCodec> {
    codec: C,
    root: PhysPtr,
    /// 0: empty; 1: the root is a leaf.
    height: u8,
    leaves: BTreeMap<u64, Leaf<C::Entry>>,
    nodes: BTreeMap<(u8, u64), Node>,
}

impl<C: LeafCodec> RadixTree<C> {
    /// The tree a checkpoint's root pointer and height describe. Reads nothing.
    pub fn open(codec: C, root: PhysPtr, height: u8) -> RadixTree<C> {
        RadixTree {
            codec,
            root,
            height,
            leaves: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> (PhysPtr, u8) {
        (self.root, self.height)
    }

    /// Leaves and nodes in memory (for the budget and the tests).
    pub fn loaded(&self) -> (usize, usize) {
        (self.leaves.len(), self.nodes.len())
    }

    pub fn dirty_leaves(&self) -> usize {
        self.leaves.values().filter(|l| l.dirty).count()
    }

    /// Keys a tree of height `h` covers.
    fn capacity(h: u8) -> u64 {
        if h == 0 {
            0
        } else {
            span(C::ENTRIES, h - 1)
        }
    }

    /// The pointer to the block covering `key` at height `h` (0 = its leaf), loading the
    /// nodes above it. A hole anywhere on the way answers `PhysPtr::default()`.
    fn ptr_to(&mut self, store: &mut dyn BlockStore, key: u64, h: u8) -> Result<PhysPtr> {
        if self.height == 0 || key >= Self::capacity(self.height) {
            return Ok(PhysPtr::default());
        }
        let mut ptr = self.root;
        let mut level = self.height - 1; // height of the block `ptr` points at
        while level > h {
            if ptr.is_none() && !self.nodes.contains_key(&(level, self.first(key, level))) {
                return Ok(PhysPtr::default());
            }
            let first = self.first(key, level);
            let node = self.node(store, level, first, ptr)?;
            let child = ((key - first) / span(C::ENTRIES, level - 1)) as usize;
            ptr = node.ptrs[child];
            level -= 1;
        }
        Ok(ptr)
    }

    /// First key covered by the block of height `h` that covers `key`.
    fn first(&self, key: u64, h: u8) -> u64 {
        let s = span(C::ENTRIES, h);
        key / s * s
    }

    fn node(
        &mut self,
        store: &mut dyn BlockStore,
        h: u8,
        first: u64,
        ptr: PhysPtr,
    ) -> Result<&mut Node> {
        use std::collections::btree_map::Entry;
        match self.nodes.entry((h, first)) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => {
                let ptrs = if ptr.is_none() {
                    vec![PhysPtr::default(); FANOUT]
                } else {
                    let b = store.read(ptr.addr)?;
                    let expect = Expect {
                        crc: ptr.crc,
                        height: h,
                        index: first,
                    };
                    RadixNode::decode(&b, C::WHAT, C::NODE_MAGIC, &expect)
                        .map_err(FsError::corrupt(C::WHAT, ptr.addr))?
                        .ptrs
                };
                Ok(v.insert(Node { ptrs, dirty: false }))
            }
        }
    }

    fn leaf(&mut self, store: &mut dyn BlockStore, n: u64) -> Result<&mut Leaf<C::Entry>> {
        if !self.leaves.contains_key(&n) {
            let key = n.saturating_mul(C::ENTRIES as u64);
            let ptr = self.ptr_to(store, key, 0)?;
            let entries = if ptr.is_none() {
                vec![self.codec.empty(); C::ENTRIES]
            } else {
                let b = store.read(ptr.addr)?;
                self.codec
                    .decode(&b, n, ptr.crc)
                    .map_err(FsError::corrupt(C::WHAT, ptr.addr))?
            };
            self.leaves.insert(
                n,
                Leaf {
                    entries,
                    dirty: false,
                },
            );
        }
        self.leaves.get_mut(&n).ok_or(vanished(C::WHAT))
    }

    pub fn get(&mut self, store: &mut dyn BlockStore, key: u64) -> Result<C::Entry> {
        let (n, i) = (key / C::ENTRIES as u64, (key % C::ENTRIES as u64) as usize);
        Ok(self.leaf(store, n)?.entries[i].clone())
    }

    pub fn set(&mut self, store: &mut dyn BlockStore, key: u64, e: C::Entry) -> Result<()> {
        let (n, i) = (key / C::ENTRIES as u64, (key % C::ENTRIES as u64) as usize);
        // Grow first: a key past the tree's capacity needs taller nodes above the old root.
        while key >= Self::capacity(self.height) {
            let new_height = self.height + 1;
            if new_height > crate::format::v2::checkpoint::MAX_HEIGHT {
                return Err(FsError::NoSpace);
            }
            if self.height >= 1 {
                // The old root becomes child 0 of a new root node. The node is made even when
                // the old root is only in memory (no pointer yet: a tree grown twice before a
                // flush), so the chain from the top to what is in memory is never broken.
                let mut ptrs = vec![PhysPtr::default(); FANOUT];
                ptrs[0] = self.root;
                self.nodes
                    .insert((self.height, 0), Node { ptrs, dirty: true });
            }
            self.root = PhysPtr::default();
            self.height = new_height;
        }
        let leaf = self.leaf(store, n)?;
        if leaf.entries[i] != e {
            leaf.entries[i] = e;
            leaf.dirty = true;
        }
        Ok(())
    }

    /// Write every dirty leaf, then every node above a written block, bottom-up. Returns the
    /// new root pointer and height (for the checkpoint).
    pub fn flush(&mut self, store: &mut dyn BlockStore) -> Result<(PhysPtr, u8)> {
        if self.height == 0 {
            return Ok((self.root, 0));
        }
        // Leaves first: load their parents so the new pointers have somewhere to go.
        let dirty: Vec<u64> = self
            .leaves
            .iter()
            .filter(|(_, l)| l.dirty)
            .map(|(&n, _)| n)
            .collect();
        for n in dirty {
            let key = n * C::ENTRIES as u64;
            let old = self.ptr_to(store, key, 0)?;
            let l = self.leaves.get_mut(&n).ok_or(vanished(C::WHAT))?;
            l.dirty = false;
            let empty = self.codec.empty();
            if l.entries.iter().all(|e| *e == empty) {
                // Nothing left in it: a hole, not a block of empty entries.
                self.leaves.remove(&n);
                if !old.is_none() {
                    store.kill(old.addr);
                }
                self.point(store, key, 1, PhysPtr::default())?;
                continue;
            }
            let (data, free) = (
                self.codec.encode(n, &l.entries),
                self.codec.free(&l.entries),
            );
            let addr = store.write(0, key, &data)?;
            if !old.is_none() {
                store.kill(old.addr);
            }
            self.point(
                store,
                key,
                1,
                PhysPtr {
                    addr,
                    crc: block_crc(&data),
                    free,
                },
            )?;
        }
        // Then nodes, lowest first; writing one dirties its parent.
        for h in 1..self.height {
            let dirty: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(&(nh, _), n)| nh == h && n.dirty)
                .map(|(&(_, f), _)| f)
                .collect();
            for first in dirty {
                let old = self.ptr_to(store, first, h)?;
                let node = self.nodes.get_mut(&(h, first)).ok_or(vanished(C::WHAT))?;
                node.dirty = false;
                if node.ptrs.iter().all(PhysPtr::is_none) {
                    // Nothing below it any more: a hole, not an empty block.
                    self.nodes.remove(&(h, first));
                    if !old.is_none() {
                        store.kill(old.addr);
                    }
                    self.point(store, first, h + 1, PhysPtr::default())?;
                    continue;
                }
                let free = node
                    .ptrs
                    .iter()
                    .map(|p| p.free)
                    .fold(0u32, u32::saturating_add);
                let data = RadixNode {
                    height: h,
                    index: first,
                    ptrs: node.ptrs.clone(),
                }
                .encode(C::NODE_MAGIC);
                let addr = store.write(h, first, &data)?;
                if !old.is_none() {
                    store.kill(old.addr);
                }
                self.point(
                    store,
                    first,
                    h + 1,
                    PhysPtr {
                        addr,
                        crc: block_crc(&data),
                        free,
                    },
                )?;
            }
        }
        if self.root.is_none() {
            // Everything was emptied: the empty tree.
            self.height = 0;
            self.nodes.clear();
        }
        Ok((self.root, self.height))
    }

    /// Record `ptr` as the pointer to the block covering `key` one level below `h`: in the
    /// node of height `h` above it, or as the root when that is the top.
    fn point(&mut self, store: &mut dyn BlockStore, key: u64, h: u8, ptr: PhysPtr) -> Result<()> {
        if h >= self.height {
            self.root = ptr;
            return Ok(());
        }
        let first = self.first(key, h);
        let above = self.ptr_to(store, key, h)?;
        let node = self.node(store, h, first, above)?;
        let child = ((key - first) / span(C::ENTRIES, h - 1)) as usize;
        node.ptrs[child] = ptr;
        node.dirty = true;
        Ok(())
    }

    /// The first leaf at or after leaf `from` that holds anything (on disk or in memory),
    /// skipping holes whole: walking a sparse tree costs what is in it, not its key space.
    pub fn next_present_leaf(
        &mut self,
        store: &mut dyn BlockStore,
        from: u64,
    ) -> Result<Option<u64>> {
        if self.height == 0 {
            return Ok(self.leaves.range(from..).next().map(|(&n, _)| n));
        }
        let e = C::ENTRIES as u64;
        let mut key = from.saturating_mul(e);
        let cap = Self::capacity(self.height);
        while key < cap {
            // Find the highest hole covering `key`, and skip it; or reach a present leaf.
            let mut skipped = false;
            for h in (0..self.height).rev() {
                let p = self.ptr_to(store, key, h)?;
                let (first, len) = (self.first(key, h), span(C::ENTRIES, h));
                let cached = if h == 0 {
                    self.leaves.contains_key(&(key / e))
                } else {
                    self.nodes.contains_key(&(h, first))
                        || self
                            .leaves
                            .range(first / e..(first + len) / e)
                            .next()
                            .is_some()
                };
                if p.is_none() && !cached {
                    key = first.saturating_add(len);
                    skipped = true;
                    break;
                }
            }
            if !skipped {
                return Ok(Some(key / e));
            }
        }
        // Leaves in memory past the tree's capacity cannot exist (set grows it first).
        Ok(None)
    }

    /// The cleaner found a block of this tree at `addr` that says it is the block of height
    /// `h` (0: a leaf) from key `index`: if the tree still points there, mark that block
    /// dirty so the next flush writes it elsewhere, and say so; else it is dead.
    pub fn relocate(
        &mut self,
        store: &mut dyn BlockStore,
        h: u8,
        index: u64,
        addr: BlockAddr,
    ) -> Result<bool> {
        if h >= self.height || addr.is_none() {
            return Ok(false);
        }
        let ptr = self.ptr_to(store, index, h)?;
        if ptr.addr != addr {
            return Ok(false);
        }
        if h == 0 {
            self.leaf(store, index / C::ENTRIES as u64)?.dirty = true;
        } else {
            let first = self.first(index, h);
            self.node(store, h, first, ptr)?.dirty = true;
        }
        Ok(true)
    }

    /// Every block of the tree as it stands on the device (what its pointers reach:
    /// leaves and nodes changed in memory since are reached at their old places), as
    /// `(address, height, first key)`, and every present leaf's entries (the in-memory
    /// ones where loaded) by leaf number. Reads the whole tree: for checkers, not the
    /// engine's paths.
    pub fn walk(
        &mut self,
        store: &mut dyn BlockStore,
        blocks: &mut dyn FnMut(BlockAddr, u8, u64),
        leaves: &mut dyn FnMut(u64, &[C::Entry]),
    ) -> Result<()> {
        if self.height == 0 {
            return Ok(());
        }
        // Nodes top-down: the root, then every child pointer of each node read.
        let mut todo = vec![(self.height - 1, 0u64, self.root)];
        while let Some((h, first, ptr)) = todo.pop() {
            if !ptr.is_none() {
                blocks(ptr.addr, h, first);
            }
            if h == 0 {
                continue;
            }
            let child_span = span(C::ENTRIES, h - 1);
            let ptrs = self.node(store, h, first, ptr)?.ptrs.clone();
            for (i, p) in ptrs.into_iter().enumerate() {
                let cf = first + i as u64 * child_span;
                if !p.is_none() || (h > 1 && self.nodes.contains_key(&(h - 1, cf))) {
                    todo.push((h - 1, cf, p));
                }
            }
        }
        let mut leaf = 0;
        while let Some(n) = self.next_present_leaf(store, leaf)? {
            let entries = self.leaf(store, n)?.entries.clone();
            leaves(n, &entries);
            leaf = n + 1;
        }
        Ok(())
    }

    /// Drop every clean leaf and node (they are read again when wanted).
    pub fn evict_clean(&mut self) {
        self.leaves.retain(|_, l| l.dirty);
        self.nodes.retain(|_, n| n.dirty);
    }
}

/// The DAT's leaves.
pub struct DatCodec;

impl LeafCodec for DatCodec {
    type Entry = dat::DatEntry;
    const ENTRIES: usize = dat::LEAF_ENTRIES;
    const NODE_MAGIC: u32 = dat::MAGIC_NODE;
    const WHAT: &'static str = "DAT";
    fn empty(&self) -> dat::DatEntry {
        dat::DatEntry::FREE
    }
    fn encode(&self, leaf: u64, entries: &[dat::DatEntry]) -> Vec<u8> {
        dat::DatLeaf {
            first: VBlock(leaf * dat::LEAF_ENTRIES as u64),
            entries: entries.to_vec(),
        }
        .encode()
    }
    fn decode(&self, b: &[u8], leaf: u64, crc: u32) -> FormatResult<Vec<dat::DatEntry>> {
        Ok(dat::DatLeaf::decode(b, leaf, crc)?.entries)
    }
    fn free(&self, entries: &[dat::DatEntry]) -> u32 {
        entries.iter().filter(|e| e.is_free()).count() as u32
    }
}

/// The sufile's leaves, for a filesystem of `nsegs` segments of `seg_blocks` blocks (the
/// bounds its decoder checks every entry against).
pub struct SufileCodec {
    pub nsegs: u64,
    pub seg_blocks: u32,
}

impl LeafCodec for SufileCodec {
    type Entry = sufile::SegUsage;
    const ENTRIES: usize = sufile::LEAF_ENTRIES;
    const NODE_MAGIC: u32 = sufile::MAGIC_NODE;
    const WHAT: &'static str = "sufile";
    fn empty(&self) -> sufile::SegUsage {
        sufile::SegUsage::default()
    }
    fn encode(&self, leaf: u64, entries: &[sufile::SegUsage]) -> Vec<u8> {
        sufile::SufileLeaf {
            first: SegNo(leaf * sufile::LEAF_ENTRIES as u64),
            entries: entries.to_vec(),
        }
        .encode()
    }
    fn decode(&self, b: &[u8], leaf: u64, crc: u32) -> FormatResult<Vec<sufile::SegUsage>> {
        Ok(sufile::SufileLeaf::decode(b, leaf, crc, self.nsegs, self.seg_blocks)?.entries)
    }
    fn free(&self, _: &[sufile::SegUsage]) -> u32 {
        0
    }
}

/// A block store in memory for the tests of the trees built on this one.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[derive(Default)]
    pub struct MemStore {
        pub blocks: HashMap<BlockAddr, Arc<Vec<u8>>>,
        pub next: u64,
        pub live: HashSet<BlockAddr>,
        pub reads: usize,
    }

    impl BlockStore for MemStore {
        fn read(&mut self, addr: BlockAddr) -> Result<Arc<Vec<u8>>> {
            self.reads += 1;
            self.blocks.get(&addr).cloned().ok_or(FsError::Damaged(
                crate::error::Damage::AddrOutsideLog { addr },
            ))
        }
        fn write(&mut self, _h: u8, _index: u64, data: &[u8]) -> Result<BlockAddr> {
            self.next += 1;
            let a = BlockAddr(1000 + self.next);
            self.blocks.insert(a, Arc::new(data.to_vec()));
            self.live.insert(a);
            Ok(a)
        }
        fn kill(&mut self, addr: BlockAddr) {
            assert!(
                self.live.remove(&addr),
                "block {addr} freed twice or never written"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::MemStore;
    use super::*;
    use crate::format::Cno;

    fn entry(v: u64) -> dat::DatEntry {
        dat::DatEntry {
            addr: BlockAddr(50_000 + v),
            addr2: BlockAddr::NONE,
            start: Cno(1 + v % 5),
            end: Cno::CURRENT,
            crc: v as u32,
            flags: 0,
        }
    }

    #[test]
    fn an_empty_tree_reads_nothing_and_a_far_key_costs_its_path() {
        let mut s = MemStore::default();
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, PhysPtr::default(), 0);
        assert_eq!(t.get(&mut s, 123_456_789).unwrap(), dat::DatEntry::FREE);
        assert_eq!(s.reads, 0);
        // One entry far out (a 16 TiB disk's worth of blocks): a path, not the key space.
        let far = 4u64 << 30;
        t.set(&mut s, far, entry(far)).unwrap();
        let (root, height) = t.flush(&mut s).unwrap();
        assert!(height >= 5, "height {height}");
        assert_eq!(s.live.len(), height as usize, "one block per level");
        let mut t2: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, height);
        assert_eq!(t2.get(&mut s, far).unwrap(), entry(far));
        assert_eq!(t2.get(&mut s, far - 1).unwrap(), dat::DatEntry::FREE);
        assert_eq!(t2.get(&mut s, 7).unwrap(), dat::DatEntry::FREE);
    }

    /// A tree on disk that grows two levels at once (a key far past it) keeps what it held
    /// and frees its old blocks when they are rewritten: found in the engine, where the
    /// DAT's first leaf was lost from the tree (its old copy never freed).
    #[test]
    fn growing_two_levels_at_once_keeps_the_old_tree() {
        let mut s = MemStore::default();
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, PhysPtr::default(), 0);
        for k in 0..300u64 {
            t.set(&mut s, k, entry(k)).unwrap();
        }
        let (root, height) = t.flush(&mut s).unwrap();
        assert_eq!(height, 2);
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, height);
        // Far enough for two more levels, and a change to the first leaf.
        let far = 102 * 255 * 255 + 5;
        t.set(&mut s, far, entry(far)).unwrap();
        t.set(&mut s, 3, entry(1000)).unwrap();
        let before = s.live.clone();
        let (root, height) = t.flush(&mut s).unwrap();
        assert_eq!(height, 4);
        let mut t2: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, height);
        for k in (0..300u64).filter(|&k| k != 3) {
            assert_eq!(t2.get(&mut s, k).unwrap(), entry(k), "key {k}");
        }
        assert_eq!(t2.get(&mut s, 3).unwrap(), entry(1000));
        assert_eq!(t2.get(&mut s, far).unwrap(), entry(far));
        // The first leaf's old copy and the old root were freed (rewritten elsewhere).
        let freed = before.difference(&s.live).count();
        assert_eq!(freed, 2, "the old first leaf and the old root");
    }

    #[test]
    fn set_flush_reopen_evict_and_rewrite() {
        let mut s = MemStore::default();
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, PhysPtr::default(), 0);
        let keys: Vec<u64> = (0..3000).map(|i| i * 37 % 70_000).collect();
        for &k in &keys {
            t.set(&mut s, k, entry(k)).unwrap();
        }
        let (root, height) = t.flush(&mut s).unwrap();
        assert_eq!(t.dirty_leaves(), 0);
        t.evict_clean();
        assert_eq!(t.loaded(), (0, 0));
        let mut t2: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, height);
        for &k in &keys {
            assert_eq!(t2.get(&mut s, k).unwrap(), entry(k), "key {k}");
        }
        // Rewrite a few: only their leaves and the path above are written, the old copies
        // die, and the free counts reach the root.
        let live_before = s.live.len();
        for k in [5u64, 70_001, 1_000_000] {
            t2.set(&mut s, k, entry(k + 1)).unwrap();
        }
        t2.set(&mut s, keys[1], dat::DatEntry::FREE).unwrap();
        let (root2, h2) = t2.flush(&mut s).unwrap();
        assert!(root2.free > 0);
        assert!(
            s.live.len() >= live_before,
            "old blocks replaced, not leaked or lost"
        );
        let mut t3: RadixTree<DatCodec> = RadixTree::open(DatCodec, root2, h2);
        assert_eq!(t3.get(&mut s, 1_000_000).unwrap(), entry(1_000_001));
        assert_eq!(t3.get(&mut s, keys[1]).unwrap(), dat::DatEntry::FREE);
        assert_eq!(t3.get(&mut s, keys[2]).unwrap(), entry(keys[2]));
        // A damaged block is an error naming the DAT, not wrong entries.
        let some = *s.live.iter().next().unwrap();
        let mut bad = (*s.blocks[&some]).clone();
        bad[100] ^= 1;
        s.blocks.insert(some, Arc::new(bad));
        let mut t4: RadixTree<DatCodec> = RadixTree::open(DatCodec, root2, h2);
        let errors = (0..1_000_001u64)
            .step_by(dat::LEAF_ENTRIES)
            .filter(|&k| t4.get(&mut s, k).is_err())
            .count();
        assert!(errors > 0, "the damaged block was never noticed");
    }

    #[test]
    fn emptied_leaves_and_nodes_become_holes_and_an_emptied_tree_is_empty() {
        let mut s = MemStore::default();
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, PhysPtr::default(), 0);
        let keys = [3u64, 500, 70_000, 9_000_000];
        for &k in &keys {
            t.set(&mut s, k, entry(k)).unwrap();
        }
        let (_, h) = t.flush(&mut s).unwrap();
        assert!(h >= 3);
        t.set(&mut s, 70_000, dat::DatEntry::FREE).unwrap();
        let (root, h) = t.flush(&mut s).unwrap();
        let mut t2: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, h);
        assert_eq!(t2.get(&mut s, 70_000).unwrap(), dat::DatEntry::FREE);
        assert_eq!(t2.get(&mut s, 500).unwrap(), entry(500));
        for &k in &keys {
            t2.set(&mut s, k, dat::DatEntry::FREE).unwrap();
        }
        assert_eq!(t2.flush(&mut s).unwrap(), (PhysPtr::default(), 0));
        assert!(s.live.is_empty(), "blocks left behind: {:?}", s.live);
    }

    #[test]
    fn present_leaves_are_found_and_holes_skipped() {
        let mut s = MemStore::default();
        let mut t: RadixTree<DatCodec> = RadixTree::open(DatCodec, PhysPtr::default(), 0);
        assert_eq!(t.next_present_leaf(&mut s, 0).unwrap(), None);
        let far = 3u64 << 30;
        for k in [5u64, 40_000, far] {
            t.set(&mut s, k, entry(k)).unwrap();
        }
        let leaves = |t: &mut RadixTree<DatCodec>, s: &mut MemStore| {
            let mut v = Vec::new();
            let mut n = 0;
            while let Some(l) = t.next_present_leaf(s, n).unwrap() {
                v.push(l);
                n = l + 1;
            }
            v
        };
        let e = dat::LEAF_ENTRIES as u64;
        let want = vec![0, 40_000 / e, far / e];
        assert_eq!(leaves(&mut t, &mut s), want, "in memory");
        let (root, h) = t.flush(&mut s).unwrap();
        let mut t2: RadixTree<DatCodec> = RadixTree::open(DatCodec, root, h);
        let before = s.reads;
        assert_eq!(leaves(&mut t2, &mut s), want, "on disk");
        assert!(
            s.reads - before < 40,
            "{} reads to find 3 leaves",
            s.reads - before
        );
    }

    #[test]
    fn the_sufile_tree_round_trips() {
        let codec = || SufileCodec {
            nsegs: 1 << 20,
            seg_blocks: 256,
        };
        let mut s = MemStore::default();
        let mut t = RadixTree::open(codec(), PhysPtr::default(), 0);
        let u = sufile::SegUsage {
            write_time_ns: 5,
            live: 100,
            held: 2,
            state: sufile::SEG_IN_USE,
            stream: 1,
            held_from: 0,
            held_until: 3,
        };
        t.set(&mut s, 900_000, u).unwrap();
        let (root, h) = t.flush(&mut s).unwrap();
        let mut t2 = RadixTree::open(codec(), root, h);
        assert_eq!(t2.get(&mut s, 900_000).unwrap(), u);
        assert!(t2.get(&mut s, 899_999).unwrap().is_clean());
    }
}
