//! The cleaner's mechanism: empty victim segments by rewriting what is still live in them.
//!
//! For each victim (in the policy's order, while the log has room for what it holds): read
//! the whole segment in one read, walk its units (the judge of `scan.rs`), and decide each block's liveness from its summary entry against the maps:
//!
//! - data / indirect / xattr `(ino, version, index)`: live iff the inode map has `ino`
//!   allocated with that version and the inode's block map (or xattr pointer) sends
//!   `index` (the node of that height covering `index`) to this address;
//! - inode block: each slot whose inode map entry points at this block and slot is live;
//! - inode-map block `i`: live iff the checkpoint's array points here; usage blocks are
//!   rewritten by the checkpoint whenever their segment is being cleaned.
//!
//! Live blocks are marked dirty in place (data blocks with their current contents, indirect
//! nodes and inodes as dirty, imap blocks for the next checkpoint) and written out in one
//! flush group flagged CLEANER per pass; the normal write path then reports the old
//! addresses dead, so the victim's live count reaches zero. Then a checkpoint moves the
//! inode-map blocks, victims with nothing left become Freed, and a second checkpoint, once
//! durable, makes them Clean. A crash anywhere in between leaves the previous checkpoint and
//! roll-forward, which never reuse a segment a durable checkpoint did not record clean
//! (docs/CLEANER.md).

use super::inner::Inner;
use super::scan::{SegmentScan, Source};
use super::types::SegmentView;
use crate::bmap::path_nodes;
use crate::error::Result;
use crate::format::inode::{decode_inode_block, DiskInode, INODES_PER_BLOCK};
use crate::format::summary::{BlockKind, SummaryEntry, FLAG_CLEANER, SUMMARY_MAX_ENTRIES};
use crate::format::table::TABLE_ENTRIES;
use crate::format::{BlockAddr, Ino, SegNo, BLOCK_BYTES, BLOCK_SIZE};
use crate::usage::SegState;
use serde::Serialize;
use std::collections::HashSet;

/// Live bytes one pass holds in memory at most (it stops taking victims past this).
const MAX_PASS_BYTES: u64 = 64 << 20;

/// What a pass has taken on: enough to bound, from above, the blocks its flush group will
/// append, so that a pass admitted by it never runs out of room half-way.
#[derive(Debug, Clone, Default)]
struct PassBudget {
    /// Live data, xattr and inode-map blocks to move.
    blocks: u64,
    /// Tree nodes dirtied, `(ino, height, first block)`: each written once per pass.
    nodes: HashSet<(Ino, u8, u64)>,
    inodes: HashSet<Ino>,
    /// Inode-map blocks the rewritten inodes dirty (written by the checkpoint after).
    imap_blocks: HashSet<u64>,
}

impl PassBudget {
    fn inode(&mut self, ino: Ino) {
        self.inodes.insert(ino);
        self.imap_blocks.insert(ino.get() / TABLE_ENTRIES as u64);
    }
    /// Block `l` of `ino` (or its node of height `from`) rewritten: the path above it too.
    fn path(&mut self, ino: Ino, l: u64, from: u8) {
        for (h, first) in path_nodes(l, from) {
            self.nodes.insert((ino, h, first));
        }
        self.inode(ino);
    }
    /// Blocks the pass may append: its blocks, nodes, inode blocks and inode-map blocks, a
    /// summary per unit (units also end at segment ends) and a skipped tail per segment.
    fn need(&self, seg_blocks: u64) -> u64 {
        let inode_blocks = (self.inodes.len() as u64).div_ceil(INODES_PER_BLOCK as u64);
        let body = self.blocks + self.nodes.len() as u64 + inode_blocks;
        let body = body + self.imap_blocks.len() as u64;
        body + body / SUMMARY_MAX_ENTRIES as u64 + 2 * (body / seg_blocks + 1)
    }
}

/// Segments by state (see `usage.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SegmentCounts {
    pub clean: u64,
    /// The log head (one per log).
    pub active: u64,
    pub full: u64,
    pub cleaning: u64,
    /// Nothing live; clean once the next checkpoint is durable.
    pub freed: u64,
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CleanReport {
    /// Victims taken (Full when the pass began).
    pub segments: Vec<SegNo>,
    /// Victims emptied (Clean now, or at the next checkpoint if a checkpoint table pins one).
    pub freed: u64,
    /// Live bytes found in the victims when the pass began.
    pub live_bytes: u64,
    /// Blocks read (whole victim segments) and blocks the pass appended to the log.
    pub blocks_read: u64,
    pub blocks_written: u64,
    /// Live data, indirect, xattr and directory blocks moved, and live inodes rewritten.
    pub blocks_moved: u64,
    pub inodes_moved: u64,
}

impl Inner {
    /// Full segments, as policies see them.
    pub(crate) fn segment_views(&self) -> Vec<SegmentView> {
        let seg_bytes = self.st.sb().seg_bytes();
        self.st
            .usage()
            .iter()
            .filter(|(_, s)| s.state == SegState::Full)
            .map(|(seg, s)| SegmentView {
                segment: seg,
                live_bytes: s.live_bytes,
                seg_bytes,
                write_time_ns: s.write_time_ns,
            })
            .collect()
    }

    pub(crate) fn segment_counts(&self) -> SegmentCounts {
        let mut c = SegmentCounts::default();
        for (_, s) in self.st.usage().iter() {
            *match s.state {
                SegState::Clean => &mut c.clean,
                SegState::Active => &mut c.active,
                SegState::Full => &mut c.full,
                SegState::Cleaning => &mut c.cleaning,
                SegState::Freed => &mut c.freed,
            } += 1;
        }
        c
    }

    /// Empty `victims` (see the module comment). Segments that are not Full are skipped.
    pub(crate) fn clean(&mut self, victims: &[SegNo]) -> Result<CleanReport> {
        let mut r = CleanReport::default();
        // Whatever users left dirty goes first, in its own group: the cleaner's groups carry
        // only moved blocks, and a half-done operation is never split (callers hold the lock
        // between operations).
        self.flush_all()?;
        let appended0 = self.st.appended();
        let sb = self.st.sb().clone();
        // Room the two checkpoints at the end need (table blocks, summaries, a segment tail).
        let tables = 2 * (self.st.usage().nblocks() as u64 + 8) + sb.seg_blocks as u64 / 4;
        let full: Vec<SegNo> = victims
            .iter()
            .copied()
            .filter(|&v| {
                self.st
                    .usage()
                    .get(v)
                    .is_some_and(|s| s.state == SegState::Full)
            })
            .collect();
        let moved = self.move_victims(full, tables, &mut r);
        // The checkpoint writes the inode-map blocks marked above elsewhere and rewrites any
        // usage block in a victim.
        if let Err(e) = moved.and_then(|()| self.checkpoint()) {
            // Victims go back to Full (or Freed if they did empty): never left Cleaning,
            // where no pass would take them again and their space would be lost.
            for &seg in &r.segments {
                self.st.usage_mut().end_cleaning(seg);
            }
            return Err(e);
        }
        for &seg in &r.segments {
            self.st.usage_mut().end_cleaning(seg);
            let s = self.st.usage().get(seg).copied();
            if s.is_some_and(|s| matches!(s.state, SegState::Freed | SegState::Clean)) {
                r.freed += 1;
            } else {
                let left = s.map_or(0, |s| s.live_bytes);
                tracing::warn!(seg = %seg, left, "cleaned segment still has live bytes");
            }
        }
        if r.freed > 0 {
            // Records the victims clean; once durable they are Clean.
            self.checkpoint()?;
        }
        r.blocks_written = self.st.appended() - appended0;
        self.stats.cleaner_passes += 1;
        self.stats.cleaner_segments += r.freed;
        self.stats.cleaner_victims += r.segments.len() as u64;
        self.stats.cleaner_victim_live_bytes += r.live_bytes;
        self.stats.cleaner_blocks_read += r.blocks_read;
        self.stats.cleaner_blocks_written += r.blocks_written;
        self.stats.cleaner_blocks_moved += r.blocks_moved;
        Ok(r)
    }

    /// Move the live blocks of the victims (taken while the log can hold them) in one flush
    /// group; victims taken are pushed to `r.segments` and left Cleaning. One group per
    /// pass, not per victim: a file with blocks in several victims has its indirect nodes
    /// and inode rewritten once, which at high utilization is the difference between a
    /// pass that gains segments and one that only churns.
    fn move_victims(&mut self, full: Vec<SegNo>, tables: u64, r: &mut CleanReport) -> Result<()> {
        let sb = self.st.sb().clone();
        let seg_blocks = sb.seg_blocks as u64;
        // The checkpoint after the group also writes what users left dirty in the map.
        let fixed = 8 + tables + self.imap.dirty_count() as u64;
        let mut budget = PassBudget::default();
        for seg in full {
            let Some(s) = self.st.usage().get(seg).copied() else {
                continue;
            };
            // A victim may die on its own meanwhile (its last live inode copy rewritten
            // because of another victim's blocks): then it is Freed already.
            if s.state == SegState::Freed {
                r.segments.push(seg);
                continue;
            }
            // Nothing is freed before the pass's checkpoints: take victims while the log
            // can hold everything they make the pass write (the next pass goes on from
            // there), and while the pass holds a sensible amount in memory.
            let free = self.st.free_blocks();
            let live = s.live_bytes.div_ceil(BLOCK_BYTES);
            if free < fixed + budget.need(seg_blocks) + live || r.live_bytes > MAX_PASS_BYTES {
                break;
            }
            let mut buf = Vec::new();
            self.st.read_run(sb.seg_addr(seg), seg_blocks, &mut buf)?;
            r.blocks_read += seg_blocks;
            let scan = self.scan_segment(Source::Segment(&buf), seg);
            let mut with = budget.clone();
            self.budget_victim(seg, &scan, &buf, &mut with)?;
            if free < fixed + with.need(seg_blocks) {
                break;
            }
            budget = with;
            self.st.usage_mut().begin_cleaning(seg);
            r.segments.push(seg);
            r.live_bytes += s.live_bytes;
            for u in &scan.units {
                for (k, e) in u.summary.entries.iter().enumerate() {
                    let off = u.offset as usize + 1 + k;
                    let addr = sb.seg_addr(seg) + off as u64;
                    let block = &buf[off * BLOCK_SIZE..(off + 1) * BLOCK_SIZE];
                    self.relocate(addr, e, block, r)?;
                }
            }
        }
        self.st.begin_group(FLAG_CLEANER)?;
        let res = self.flush_group(true);
        self.st.end_group()?;
        res?;
        self.stats.flushes += 1;
        Ok(())
    }

    /// Add to `b` what moving the live blocks of victim `seg` (contents `buf`, units `scan`)
    /// would make the pass write, judging liveness as `relocate` will.
    fn budget_victim(
        &mut self,
        seg: SegNo,
        scan: &SegmentScan,
        buf: &[u8],
        b: &mut PassBudget,
    ) -> Result<()> {
        let base = self.st.sb().seg_addr(seg);
        for u in &scan.units {
            for (k, e) in u.summary.entries.iter().enumerate() {
                let off = u.offset as usize + 1 + k;
                let addr = base + off as u64;
                match e.kind {
                    BlockKind::Data if self.data_live(addr, e)? => {
                        b.blocks += 1;
                        b.path(e.ino, e.index, 1);
                    }
                    // The node itself is on its path.
                    BlockKind::Indirect if self.alive(e) => b.path(e.ino, e.index, e.height),
                    BlockKind::Xattr if self.alive(e) => {
                        b.blocks += 1;
                        b.inode(e.ino);
                    }
                    BlockKind::InodeBlock => {
                        let block = &buf[off * BLOCK_SIZE..(off + 1) * BLOCK_SIZE];
                        for (slot, d) in decode_inode_block(block)
                            .unwrap_or_default()
                            .iter()
                            .enumerate()
                        {
                            if !d.is_tombstone() && self.inode_live(d, addr, slot) {
                                b.inode(d.ino);
                            }
                        }
                    }
                    BlockKind::Imap if self.cp.is_imap_block(e.index as usize, addr) => {
                        b.imap_blocks.insert(e.index);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The inode map has the entry's inode allocated, at the entry's version.
    fn alive(&self, e: &SummaryEntry) -> bool {
        self.imap
            .get(e.ino)
            .is_some_and(|m| m.allocated() && m.version == e.version)
    }

    /// The data block at `addr` (entry `e`) is the file's current copy of its block: not
    /// replaced on disk, nor by a newer copy waiting in memory.
    fn data_live(&mut self, addr: BlockAddr, e: &SummaryEntry) -> Result<bool> {
        if !self.alive(e) {
            return Ok(false);
        }
        self.load(e.ino)?;
        let Inner { inodes, st, .. } = self;
        let Some(i) = inodes.get_mut(e.ino) else {
            return Ok(false);
        };
        Ok(!i.data.contains_key(&e.index) && i.bmap.get(st, e.index)? == addr)
    }

    /// Slot `slot` of the inode block at `addr` holds the current copy of inode `d`.
    fn inode_live(&self, d: &DiskInode, addr: BlockAddr, slot: usize) -> bool {
        self.imap.get(d.ino).is_some_and(|m| {
            m.allocated() && m.addr == addr && m.slot as usize == slot && m.version == d.version
        })
    }

    /// Mark the block at `addr` (summary entry `e`, contents `block`) to be rewritten if it
    /// is live.
    fn relocate(
        &mut self,
        addr: BlockAddr,
        e: &SummaryEntry,
        block: &[u8],
        r: &mut CleanReport,
    ) -> Result<()> {
        match e.kind {
            BlockKind::Data | BlockKind::Indirect | BlockKind::Xattr => {
                let moved = if e.kind == BlockKind::Data {
                    let live = self.data_live(addr, e)?;
                    if let Some(i) = self.inodes.get_mut(e.ino).filter(|_| live) {
                        i.buffer(e.index, block.to_vec());
                    }
                    live
                } else {
                    if !self.alive(e) {
                        return Ok(());
                    }
                    self.load(e.ino)?;
                    let Inner { inodes, st, .. } = self;
                    let Some(i) = inodes.get_mut(e.ino) else {
                        return Ok(());
                    };
                    if e.kind == BlockKind::Indirect {
                        i.bmap.relocate_node(st, e.height, e.index, addr)?
                    } else {
                        i.d.xattr == addr
                    }
                };
                if moved {
                    if e.kind == BlockKind::Xattr {
                        self.rewrite_xattrs(e.ino)?;
                    }
                    self.touch(e.ino);
                    r.blocks_moved += 1;
                }
            }
            BlockKind::InodeBlock => {
                let Ok(slots) = decode_inode_block(block) else {
                    return Ok(());
                };
                for (slot, d) in slots.iter().enumerate() {
                    if !d.is_tombstone() && self.inode_live(d, addr, slot) {
                        self.load(d.ino)?;
                        self.touch(d.ino);
                        r.inodes_moved += 1;
                    }
                }
            }
            BlockKind::Imap => {
                let i = e.index as usize;
                if self.cp.is_imap_block(i, addr) {
                    self.imap.mark_block_dirty(i);
                    r.blocks_moved += 1;
                }
            }
            BlockKind::Usage => {}
        }
        Ok(())
    }
}
