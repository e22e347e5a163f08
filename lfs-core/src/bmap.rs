//! A file's block map: logical block → block address, through 12 direct pointers and four
//! indirect trees of height 1..=4 (fan-out 510), as in docs/FORMAT.md.
//!
//! Tree nodes are loaded lazily and kept while the inode is cached. Changing a pointer marks
//! the path to the root dirty; [`BlockMap::flush`] writes dirty nodes bottom-up (a node after
//! its children, so every pointer on disk refers to something already written). Every block
//! that stops being referenced is reported to the sink as dead, so segment usage stays exact.

use crate::error::{FsError, Result};
use crate::format::indirect::{decode_indirect, encode_indirect, FANOUT};
use crate::format::inode::{NDIRECT, NINDIRECT};
use crate::format::summary::SummaryEntry;
use crate::format::{BlockAddr, Ino, VBlock};
use std::collections::BTreeMap;

const F: u64 = FANOUT as u64;

/// What a file's block pointers hold: block addresses (format version 1) or virtual block
/// numbers (version 2). Zero is none (a hole).
pub trait Ptr: Copy + Eq + std::fmt::Debug {
    const NONE: Self;
    fn raw(self) -> u64;
    fn from_raw(raw: u64) -> Self;
    fn is_none(self) -> bool {
        self.raw() == 0
    }
}

impl Ptr for BlockAddr {
    const NONE: BlockAddr = BlockAddr(0);
    fn raw(self) -> u64 {
        self.get()
    }
    fn from_raw(raw: u64) -> BlockAddr {
        BlockAddr(raw)
    }
}

impl Ptr for VBlock {
    const NONE: VBlock = VBlock(0);
    fn raw(self) -> u64 {
        self.get()
    }
    fn from_raw(raw: u64) -> VBlock {
        VBlock(raw)
    }
}

/// A tree node of a file: whose, and where in its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub ino: Ino,
    pub version: u32,
    pub height: u8,
    pub first: u64,
}

/// What a block of a file's map is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Logical block `index`.
    Data { index: u64 },
    /// The tree node of `height` covering logical blocks from `first`.
    Node { height: u8, first: u64 },
}

impl Role {
    /// The version 1 summary entry a block of this role is written with.
    pub fn v1_entry(self, ino: Ino, version: u32) -> SummaryEntry {
        match self {
            Role::Data { index } => SummaryEntry::data(ino, version, index),
            Role::Node { height, first } => SummaryEntry::indirect(ino, version, height, first),
        }
    }
}

/// Where block writes and deaths go; implemented by the filesystem over the log.
pub trait Sink<P: Ptr = BlockAddr> {
    fn read_meta(&mut self, p: P) -> Result<Vec<u8>>;
    /// Write tree node `id` (its previous version is `old`, none for a new node); returns
    /// where it now is. Version 1 appends it at a new address; version 2 keeps its virtual
    /// block number unless a kept checkpoint needs the old version.
    fn write_node(&mut self, id: NodeId, old: P, data: &[u8]) -> Result<P>;
    /// A block is no longer referenced (format 2: its virtual number is freed, which reads
    /// the DAT and so can fail).
    fn kill(&mut self, p: P) -> Result<()>;
}

/// Number of logical blocks covered by a node of height `h`.
fn span(h: u8) -> u64 {
    F.pow(h as u32)
}

/// First logical block of the tree of height `h`.
fn tree_base(h: u8) -> u64 {
    NDIRECT as u64 + (1..h).map(span).sum::<u64>()
}

/// One past the largest logical block a file can have.
#[cfg(test)]
fn max_lblocks() -> u64 {
    tree_base(NINDIRECT as u8 + 1)
}

/// The first mapped logical block in `[from, to)` under `node`, which covers the blocks from
/// `first` on.
fn first_mapped<P: Ptr>(
    sink: &mut dyn Sink<P>,
    node: &mut Node<P>,
    first: u64,
    from: u64,
    to: u64,
) -> Result<Option<u64>> {
    let cs = node.child_span();
    let lo = ((from - first) / cs) as usize;
    let hi = (((to - 1 - first) / cs) as usize).min(FANOUT - 1);
    for idx in lo..=hi {
        let child_first = first + idx as u64 * cs;
        if node.height == 1 {
            if !node.ptrs[idx].is_none() {
                return Ok(Some(child_first));
            }
            continue;
        }
        if node.ptrs[idx].is_none() && !node.children.contains_key(&idx) {
            continue;
        }
        if let Some(c) = node.child(sink, idx, false)? {
            let range = (from.max(child_first), to.min(child_first + cs));
            if let Some(l) = first_mapped(sink, c, child_first, range.0, range.1)? {
                return Ok(Some(l));
            }
        }
    }
    Ok(None)
}

#[derive(Debug)]
struct Node<P> {
    addr: P,
    height: u8,
    first: u64,
    ptrs: Vec<P>,
    children: BTreeMap<usize, Node<P>>,
    dirty: bool,
}

impl<P: Ptr> Node<P> {
    fn empty(height: u8, first: u64) -> Node<P> {
        Node {
            addr: P::NONE,
            height,
            first,
            ptrs: vec![P::NONE; FANOUT],
            children: BTreeMap::new(),
            dirty: false,
        }
    }
    fn load(sink: &mut dyn Sink<P>, addr: P, height: u8, first: u64) -> Result<Node<P>> {
        let b = sink.read_meta(addr)?;
        let ptrs = decode_indirect(&b, height)
            .map_err(FsError::corrupt("indirect block", BlockAddr(addr.raw())))?
            .into_iter()
            .map(P::from_raw)
            .collect();
        Ok(Node {
            addr,
            height,
            first,
            ptrs,
            children: BTreeMap::new(),
            dirty: false,
        })
    }
    fn child_span(&self) -> u64 {
        span(self.height - 1)
    }
    /// The child node at `idx`, loaded or created.
    fn child(
        &mut self,
        sink: &mut dyn Sink<P>,
        idx: usize,
        create: bool,
    ) -> Result<Option<&mut Node<P>>> {
        if !self.children.contains_key(&idx) {
            let first = self.first + idx as u64 * self.child_span();
            let p = self.ptrs[idx];
            let node = if !p.is_none() {
                Node::load(sink, p, self.height - 1, first)?
            } else if create {
                Node::empty(self.height - 1, first)
            } else {
                return Ok(None);
            };
            self.children.insert(idx, node);
        }
        Ok(self.children.get_mut(&idx))
    }
}

#[derive(Debug)]
pub struct BlockMap<P: Ptr = BlockAddr> {
    ino: Ino,
    version: u32,
    direct: [P; NDIRECT],
    root_addrs: [P; NINDIRECT],
    roots: [Option<Node<P>>; NINDIRECT],
    /// Nodes marked dirty and not yet written.
    pub dirty_nodes: u64,
    /// Data and indirect blocks owned (for st_blocks).
    pub blocks: u64,
}

enum Loc {
    Direct(usize),
    Tree(u8, u64),
}

fn locate(l: u64) -> Option<Loc> {
    if l < NDIRECT as u64 {
        return Some(Loc::Direct(l as usize));
    }
    (1..=NINDIRECT as u8).find_map(|h| {
        let base = tree_base(h);
        (l >= base && l < base + span(h)).then(|| Loc::Tree(h, l - base))
    })
}

/// The tree nodes `(height, first block)` on the path to logical block `l`, from height
/// `from` (at least 1) up to the tree's root: what rewriting the block there, or the node
/// of height `from` covering it, dirties. Empty for a direct block.
pub fn path_nodes(l: u64, from: u8) -> impl Iterator<Item = (u8, u64)> {
    let tree = match locate(l) {
        Some(Loc::Tree(h, off)) => Some((h, off)),
        _ => None,
    };
    tree.into_iter().flat_map(move |(h, off)| {
        (from.max(1)..=h).map(move |k| (k, tree_base(h) + off / span(k) * span(k)))
    })
}

impl<P: Ptr> BlockMap<P> {
    pub fn new(
        ino: Ino,
        version: u32,
        direct: [P; NDIRECT],
        indirect: [P; NINDIRECT],
        blocks: u64,
    ) -> BlockMap<P> {
        BlockMap {
            ino,
            version,
            direct,
            root_addrs: indirect,
            roots: Default::default(),
            dirty_nodes: 0,
            blocks,
        }
    }

    /// Pointers as they should be stored in the inode. Valid after `flush`.
    pub fn pointers(&self) -> ([P; NDIRECT], [P; NINDIRECT]) {
        (self.direct, self.root_addrs)
    }

    fn root(
        &mut self,
        sink: &mut dyn Sink<P>,
        h: u8,
        create: bool,
    ) -> Result<Option<&mut Node<P>>> {
        let i = (h - 1) as usize;
        if self.roots[i].is_none() {
            let a = self.root_addrs[i];
            if !a.is_none() {
                self.roots[i] = Some(Node::load(sink, a, h, tree_base(h))?);
            } else if create {
                self.roots[i] = Some(Node::empty(h, tree_base(h)));
                self.blocks += 1;
            } else {
                return Ok(None);
            }
        }
        Ok(self.roots[i].as_mut())
    }

    /// The address of logical block `l` (`P::NONE` for a hole).
    pub fn get(&mut self, sink: &mut dyn Sink<P>, l: u64) -> Result<P> {
        match locate(l) {
            None => Ok(P::NONE),
            Some(Loc::Direct(i)) => Ok(self.direct[i]),
            Some(Loc::Tree(h, off)) => {
                let Some(mut node) = self.root(sink, h, false)? else {
                    return Ok(P::NONE);
                };
                let mut o = off;
                loop {
                    let cs = node.child_span();
                    let idx = (o / cs) as usize;
                    if node.height == 1 {
                        return Ok(node.ptrs[idx]);
                    }
                    o %= cs;
                    match node.child(sink, idx, false)? {
                        Some(c) => node = c,
                        None => return Ok(P::NONE),
                    }
                }
            }
        }
    }

    /// The first logical block in `[from, to)` that maps to a block (not a hole), if any.
    /// Empty subtrees are skipped whole, so a sparse file costs what its data costs.
    pub fn next_mapped(
        &mut self,
        sink: &mut dyn Sink<P>,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>> {
        for l in from..to.min(NDIRECT as u64) {
            if !self.direct[l as usize].is_none() {
                return Ok(Some(l));
            }
        }
        for h in 1..=NINDIRECT as u8 {
            let (base, end) = (tree_base(h), tree_base(h) + span(h));
            if end <= from || base >= to {
                continue;
            }
            if let Some(root) = self.root(sink, h, false)? {
                if let Some(l) = first_mapped(sink, root, base, from.max(base), to.min(end))? {
                    return Ok(Some(l));
                }
            }
        }
        Ok(None)
    }

    /// Point logical block `l` at `addr` (`P::NONE` makes a hole); returns the old
    /// address. The caller reports the old address dead.
    pub fn set(&mut self, sink: &mut dyn Sink<P>, l: u64, addr: P) -> Result<P> {
        let loc = locate(l).ok_or(FsError::FileTooBig)?;
        let old = match loc {
            Loc::Direct(i) => std::mem::replace(&mut self.direct[i], addr),
            Loc::Tree(h, off) => {
                let mut created = 0u64;
                let mut newly_dirty = 0u64;
                let old = {
                    let create = !addr.is_none();
                    let Some(mut node) = self.root(sink, h, create)? else {
                        return Ok(P::NONE);
                    };
                    created += 0;
                    let mut o = off;
                    loop {
                        if !node.dirty {
                            node.dirty = true;
                            newly_dirty += 1;
                        }
                        let cs = node.child_span();
                        let idx = (o / cs) as usize;
                        if node.height == 1 {
                            break std::mem::replace(&mut node.ptrs[idx], addr);
                        }
                        o %= cs;
                        let had = !node.ptrs[idx].is_none() || node.children.contains_key(&idx);
                        match node.child(sink, idx, create)? {
                            Some(c) => {
                                if !had {
                                    created += 1;
                                }
                                node = c;
                            }
                            None => break P::NONE,
                        }
                    }
                };
                self.blocks += created;
                self.dirty_nodes += newly_dirty;
                old
            }
        };
        match (!old.is_none(), !addr.is_none()) {
            (false, true) => self.blocks += 1,
            (true, false) => self.blocks = self.blocks.saturating_sub(1),
            _ => {}
        }
        Ok(old)
    }

    /// Make logical blocks `[from, to)` holes, reporting every freed data and indirect block
    /// dead. Nodes left empty are freed at the next flush.
    pub fn clear_range(&mut self, sink: &mut dyn Sink<P>, from: u64, to: u64) -> Result<()> {
        for i in 0..NDIRECT {
            let l = i as u64;
            if l >= from && l < to && !self.direct[i].is_none() {
                sink.kill(self.direct[i])?;
                self.direct[i] = P::NONE;
                self.blocks = self.blocks.saturating_sub(1);
            }
        }
        for h in 1..=NINDIRECT as u8 {
            let base = tree_base(h);
            let end = base + span(h);
            if to <= base || from >= end {
                continue;
            }
            let i = (h - 1) as usize;
            if from <= base && to >= end {
                // The whole tree goes.
                if self.root(sink, h, false)?.is_some() {
                    if let Some(mut root) = self.roots[i].take() {
                        let mut freed = 0;
                        let mut undirty = 0;
                        free_subtree(sink, &mut root, &mut freed, &mut undirty)?;
                        self.blocks = self.blocks.saturating_sub(freed);
                        self.dirty_nodes = self.dirty_nodes.saturating_sub(undirty);
                    }
                    self.root_addrs[i] = P::NONE;
                }
                continue;
            }
            let (mut freed, mut newly_dirty, mut undirty) = (0, 0, 0);
            if let Some(root) = self.root(sink, h, false)? {
                clear_in(
                    sink,
                    root,
                    from,
                    to,
                    &mut freed,
                    &mut newly_dirty,
                    &mut undirty,
                )?;
            }
            self.blocks = self.blocks.saturating_sub(freed);
            self.dirty_nodes =
                self.dirty_nodes + newly_dirty - undirty.min(self.dirty_nodes + newly_dirty);
        }
        Ok(())
    }

    /// Write dirty nodes bottom-up. Empty nodes are freed instead of written.
    pub fn flush(&mut self, sink: &mut dyn Sink<P>) -> Result<()> {
        for i in 0..NINDIRECT {
            let Some(root) = self.roots[i].as_mut() else {
                continue;
            };
            if !root.dirty {
                continue;
            }
            let mut written = 0;
            let mut freed = 0;
            let addr = flush_node(sink, root, self.ino, self.version, &mut written, &mut freed)?;
            self.dirty_nodes = self.dirty_nodes.saturating_sub(written + freed);
            self.blocks = self.blocks.saturating_sub(freed);
            self.root_addrs[i] = addr;
            if addr.is_none() {
                self.roots[i] = None;
            }
        }
        Ok(())
    }

    /// The cleaner: if the indirect node of `height` covering logical blocks from `first`
    /// is stored at `addr`, mark it (and the path above it) dirty, so the next flush writes
    /// it elsewhere and reports `addr` dead. Returns whether it was that node.
    pub fn relocate_node(
        &mut self,
        sink: &mut dyn Sink<P>,
        height: u8,
        first: u64,
        addr: P,
    ) -> Result<bool> {
        let Some(Loc::Tree(h, off)) = locate(first) else {
            return Ok(false);
        };
        if height == 0 || height > h {
            return Ok(false);
        }
        // Two walks: find it without changing anything, then dirty the path.
        for mark in [false, true] {
            let Some(mut node) = self.root(sink, h, false)? else {
                return Ok(false);
            };
            let mut o = off;
            let mut newly = 0;
            loop {
                if mark && !node.dirty {
                    node.dirty = true;
                    newly += 1;
                }
                if node.height == height {
                    if node.first != first || node.addr != addr {
                        return Ok(false);
                    }
                    break;
                }
                let cs = node.child_span();
                let idx = (o / cs) as usize;
                o %= cs;
                match node.child(sink, idx, false)? {
                    Some(c) => node = c,
                    None => return Ok(false),
                }
            }
            self.dirty_nodes += newly;
        }
        Ok(true)
    }

    /// Every block this map references: (address, entry it was written with).
    pub fn for_each_block(
        &mut self,
        sink: &mut dyn Sink<P>,
        f: &mut dyn FnMut(P, Role),
    ) -> Result<()> {
        for (i, &a) in self.direct.iter().enumerate() {
            if !a.is_none() {
                f(a, Role::Data { index: i as u64 });
            }
        }
        for h in 1..=NINDIRECT as u8 {
            if let Some(root) = self.root(sink, h, false)? {
                walk(sink, root, f)?;
            }
        }
        Ok(())
    }

    /// Drop loaded clean nodes to save memory (dirty paths stay).
    pub fn shrink(&mut self) {
        for r in self.roots.iter_mut() {
            if r.as_ref().is_some_and(|n| !n.dirty) {
                *r = None;
            }
        }
    }
}

fn walk<P: Ptr>(
    sink: &mut dyn Sink<P>,
    node: &mut Node<P>,
    f: &mut dyn FnMut(P, Role),
) -> Result<()> {
    if !node.addr.is_none() && !node.dirty {
        f(
            node.addr,
            Role::Node {
                height: node.height,
                first: node.first,
            },
        );
    }
    for idx in 0..FANOUT {
        if node.height == 1 {
            if !node.ptrs[idx].is_none() {
                f(
                    node.ptrs[idx],
                    Role::Data {
                        index: node.first + idx as u64,
                    },
                );
            }
        } else if let Some(c) = node.child(sink, idx, false)? {
            walk(sink, c, f)?;
        }
    }
    Ok(())
}

/// Free a whole subtree: data blocks and nodes.
fn free_subtree<P: Ptr>(
    sink: &mut dyn Sink<P>,
    node: &mut Node<P>,
    freed: &mut u64,
    undirty: &mut u64,
) -> Result<()> {
    for idx in 0..FANOUT {
        if node.height == 1 {
            if !node.ptrs[idx].is_none() {
                sink.kill(node.ptrs[idx])?;
                *freed += 1;
            }
        } else if let Some(c) = node.child(sink, idx, false)? {
            free_subtree(sink, c, freed, undirty)?;
        }
    }
    if !node.addr.is_none() {
        sink.kill(node.addr)?;
    }
    *freed += 1;
    if node.dirty {
        *undirty += 1;
    }
    Ok(())
}

fn clear_in<P: Ptr>(
    sink: &mut dyn Sink<P>,
    node: &mut Node<P>,
    from: u64,
    to: u64,
    freed: &mut u64,
    newly_dirty: &mut u64,
    undirty: &mut u64,
) -> Result<()> {
    let cs = node.child_span();
    let lo = from.saturating_sub(node.first) / cs;
    let hi = (to.saturating_sub(node.first)).div_ceil(cs).min(F);
    let mut changed = false;
    for idx in lo as usize..hi as usize {
        let cfirst = node.first + idx as u64 * cs;
        let cend = cfirst + cs;
        if cend <= from || cfirst >= to {
            continue;
        }
        if node.height == 1 {
            if !node.ptrs[idx].is_none() {
                sink.kill(node.ptrs[idx])?;
                node.ptrs[idx] = P::NONE;
                *freed += 1;
                changed = true;
            }
            continue;
        }
        let whole = cfirst >= from && cend <= to;
        if whole {
            if node.child(sink, idx, false)?.is_some() {
                if let Some(mut c) = node.children.remove(&idx) {
                    free_subtree(sink, &mut c, freed, undirty)?;
                }
                node.ptrs[idx] = P::NONE;
                changed = true;
            }
        } else if let Some(c) = node.child(sink, idx, false)? {
            clear_in(sink, c, from, to, freed, newly_dirty, undirty)?;
            changed |= c.dirty;
        }
    }
    if changed && !node.dirty {
        node.dirty = true;
        *newly_dirty += 1;
    }
    Ok(())
}

/// Write a dirty node after its dirty children; returns its new address (none if now empty).
fn flush_node<P: Ptr>(
    sink: &mut dyn Sink<P>,
    node: &mut Node<P>,
    ino: Ino,
    version: u32,
    written: &mut u64,
    freed: &mut u64,
) -> Result<P> {
    let dirty_children: Vec<usize> = node
        .children
        .iter()
        .filter(|(_, c)| c.dirty)
        .map(|(i, _)| *i)
        .collect();
    for idx in dirty_children {
        if let Some(c) = node.children.get_mut(&idx) {
            let a = flush_node(sink, c, ino, version, written, freed)?;
            node.ptrs[idx] = a;
            if a.is_none() {
                node.children.remove(&idx);
            }
        }
    }
    node.dirty = false;
    if node.ptrs.iter().all(|p| p.is_none()) {
        if !node.addr.is_none() {
            sink.kill(node.addr)?;
        }
        node.addr = P::NONE;
        *freed += 1;
        return Ok(P::NONE);
    }
    let raw: Vec<u64> = node.ptrs.iter().map(|p| p.raw()).collect();
    let data = encode_indirect(node.height, &raw);
    let id = NodeId {
        ino,
        version,
        height: node.height,
        first: node.first,
    };
    let a = sink.write_node(id, node.addr, &data)?;
    if a != node.addr && !node.addr.is_none() {
        sink.kill(node.addr)?;
    }
    node.addr = a;
    *written += 1;
    Ok(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[derive(Default)]
    struct MemSink {
        blocks: HashMap<BlockAddr, Vec<u8>>,
        next: u64,
        live: HashSet<BlockAddr>,
        dead_data: HashSet<BlockAddr>,
        appended: Vec<NodeId>,
    }
    impl Sink for MemSink {
        fn read_meta(&mut self, addr: BlockAddr) -> Result<Vec<u8>> {
            self.blocks.get(&addr).cloned().ok_or(FsError::Damaged(
                crate::error::Damage::AddrOutsideLog { addr },
            ))
        }
        fn write_node(&mut self, id: NodeId, _old: BlockAddr, data: &[u8]) -> Result<BlockAddr> {
            self.appended.push(id);
            self.next += 1;
            let a = BlockAddr(self.next + 1000);
            self.blocks.insert(a, data.to_vec());
            self.live.insert(a);
            Ok(a)
        }
        fn kill(&mut self, addr: BlockAddr) -> Result<()> {
            if !(1000..100_000).contains(&addr.get()) {
                assert!(self.dead_data.insert(addr), "data block {addr} freed twice");
            } else {
                assert!(self.live.remove(&addr), "double free of node {addr}");
            }
            Ok(())
        }
    }

    /// The cleaner's space bound relies on `path_nodes` naming exactly the nodes a flush
    /// writes after a block (or a node) is rewritten.
    #[test]
    fn path_nodes_are_the_nodes_a_rewrite_writes() {
        let mut ls = edge_lblocks();
        ls.push(tree_base(3) + 510 * 510 * 3 + 510 * 4 + 9);
        for &l in &ls {
            let mut s = MemSink::default();
            let mut m = BlockMap::new(
                Ino(5),
                1,
                [BlockAddr::NONE; NDIRECT],
                [BlockAddr::NONE; NINDIRECT],
                0,
            );
            m.set(&mut s, l, BlockAddr(7)).expect("set");
            m.flush(&mut s).expect("flush");
            let written: HashSet<(u8, u64)> =
                s.appended.iter().map(|e| (e.height, e.first)).collect();
            let want: HashSet<(u8, u64)> = path_nodes(l, 1).collect();
            assert_eq!(written, want, "lblock {l}");
            assert_eq!(
                s.appended.len(),
                want.len(),
                "lblock {l}: a node written twice"
            );
            // From a node's own height: that node and its ancestors.
            for &(h, first) in &want {
                let above: HashSet<(u8, u64)> = path_nodes(first, h).collect();
                let expect: HashSet<(u8, u64)> =
                    want.iter().copied().filter(|&(k, _)| k >= h).collect();
                assert_eq!(above, expect, "node ({h}, {first}) of lblock {l}");
            }
        }
    }

    /// Logical blocks at the edges of the direct pointers and of each tree.
    fn edge_lblocks() -> Vec<u64> {
        vec![
            0,
            11,
            12,
            521,
            522,
            522 + 510 * 510 - 1,
            tree_base(3) + 7,
            tree_base(4) + 123_456_789,
            max_lblocks() - 1,
        ]
    }

    #[test]
    fn set_get_flush_reload_across_all_heights() {
        let mut s = MemSink::default();
        let mut m = BlockMap::new(
            Ino(5),
            1,
            [BlockAddr::NONE; NDIRECT],
            [BlockAddr::NONE; NINDIRECT],
            0,
        );
        let ls = edge_lblocks();
        for (i, &l) in ls.iter().enumerate() {
            assert_eq!(
                m.set(&mut s, l, BlockAddr(10 + i as u64)).expect("set"),
                BlockAddr::NONE
            );
        }
        assert!(m.set(&mut s, max_lblocks(), BlockAddr(1)).is_err());
        m.flush(&mut s).expect("flush");
        assert_eq!(m.dirty_nodes, 0);
        let (d, r) = m.pointers();
        let mut m2 = BlockMap::new(Ino(5), 1, d, r, m.blocks);
        for (i, &l) in ls.iter().enumerate() {
            assert_eq!(
                m2.get(&mut s, l).expect("get"),
                BlockAddr(10 + i as u64),
                "lblock {l}"
            );
        }
        assert_eq!(m2.get(&mut s, 13).expect("get"), BlockAddr::NONE);
        let mut seen = 0;
        m2.for_each_block(&mut s, &mut |_, r| {
            if matches!(r, Role::Data { .. }) {
                seen += 1
            }
        })
        .expect("walk");
        assert_eq!(seen, ls.len());
        // Clear everything: every indirect node written must die, nothing twice.
        m2.clear_range(&mut s, 0, u64::MAX).expect("clear");
        m2.flush(&mut s).expect("flush");
        assert!(s.live.is_empty(), "leaked nodes: {:?}", s.live);
        assert_eq!(
            m2.pointers(),
            ([BlockAddr::NONE; NDIRECT], [BlockAddr::NONE; NINDIRECT])
        );
    }

    #[test]
    fn partial_clear_frees_empty_nodes() {
        let mut s = MemSink::default();
        let mut m = BlockMap::new(
            Ino(5),
            1,
            [BlockAddr::NONE; NDIRECT],
            [BlockAddr::NONE; NINDIRECT],
            0,
        );
        for l in 0..2000 {
            m.set(&mut s, l, BlockAddr(100_000 + l)).expect("set");
        }
        m.flush(&mut s).expect("flush");
        let nodes_before = s.live.len();
        m.clear_range(&mut s, 600, u64::MAX).expect("clear");
        m.flush(&mut s).expect("flush");
        for l in [0, 599, 600, 1999] {
            let want = BlockAddr(if l < 600 { 100_000 + l } else { 0 });
            assert_eq!(m.get(&mut s, l).expect("get"), want);
        }
        assert!(
            s.live.len() < nodes_before,
            "height-2 subtrees beyond 600 should be gone"
        );
        assert_eq!(
            s.dead_data.len(),
            1400,
            "every cleared data block reported dead once"
        );
    }

    /// Format version 2's sink: a node keeps its (virtual) number when rewritten.
    #[derive(Default)]
    struct VSink {
        blocks: HashMap<VBlock, Vec<u8>>,
        dead_data: HashSet<VBlock>,
        next: u64,
        writes: u64,
    }
    impl Sink<VBlock> for VSink {
        fn read_meta(&mut self, v: VBlock) -> Result<Vec<u8>> {
            self.blocks
                .get(&v)
                .cloned()
                .ok_or(FsError::Damaged(crate::error::Damage::VBlockFree {
                    vblock: v.get(),
                }))
        }
        fn write_node(&mut self, _id: NodeId, old: VBlock, data: &[u8]) -> Result<VBlock> {
            self.writes += 1;
            let v = if old.is_none() {
                self.next += 1;
                VBlock(self.next)
            } else {
                old
            };
            self.blocks.insert(v, data.to_vec());
            Ok(v)
        }
        fn kill(&mut self, v: VBlock) -> Result<()> {
            // A node this sink wrote, or a data block (the test's own numbers), once.
            if self.blocks.remove(&v).is_none() {
                assert!(self.dead_data.insert(v), "{v:?} freed twice");
            }
            Ok(())
        }
    }

    #[test]
    fn virtual_pointers_keep_their_numbers_across_rewrites() {
        let mut s = VSink::default();
        let mut m: BlockMap<VBlock> = BlockMap::new(
            Ino(5),
            1,
            [VBlock::NONE; NDIRECT],
            [VBlock::NONE; NINDIRECT],
            0,
        );
        let l = tree_base(3) + 510 * 7 + 3;
        m.set(&mut s, l, VBlock(1_000_000)).unwrap();
        m.flush(&mut s).unwrap();
        let nodes: Vec<VBlock> = s.blocks.keys().copied().collect();
        assert_eq!(nodes.len(), 3, "a height-3 path");
        let (d, r) = m.pointers();
        // A new pointer under the same path: the nodes are rewritten under their numbers,
        // nothing is freed, and the root pointer in the inode does not change.
        m.set(&mut s, l, VBlock(2_000_000)).unwrap();
        m.flush(&mut s).unwrap();
        assert_eq!(s.writes, 6);
        let mut after: Vec<VBlock> = s.blocks.keys().copied().collect();
        let mut before = nodes.clone();
        after.sort_by_key(|v| v.get());
        before.sort_by_key(|v| v.get());
        assert_eq!(after, before);
        assert_eq!(m.pointers(), (d, r));
        let mut again: BlockMap<VBlock> = BlockMap::new(Ino(5), 1, d, r, m.blocks);
        assert_eq!(again.get(&mut s, l).unwrap(), VBlock(2_000_000));
        // Cleared: every node freed once.
        again.clear_range(&mut s, 0, u64::MAX).unwrap();
        again.flush(&mut s).unwrap();
        assert!(s.blocks.is_empty(), "{:?}", s.blocks.keys());
        assert_eq!(s.dead_data, HashSet::from([VBlock(2_000_000)]));
    }
}
