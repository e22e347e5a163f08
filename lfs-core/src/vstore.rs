//! The store of format version 2 (docs/FORMAT-V2.md): what the engine's inode layer will
//! stand on after the switch (issue 20, step 3) — the log of streams and flush groups
//! (`vlog`), the DAT (`vdat`), the segment table (`vsufile`), the block cache and the
//! back-end writer, behind one struct whose API speaks of virtual blocks:
//!
//! - `read_virtual(v)`: the bytes of virtual block `v`, verified against the checksum its
//!   DAT entry holds (a DUP block's second copy if the first is bad), never bytes that do
//!   not match;
//! - `write_virtual`: a block written into a stream under the number it had (or a new one
//!   when a kept checkpoint still needs the old version: the lifetime rule, §5), its DAT
//!   entry pointed at the new place and the old place counted dead;
//! - `free_virtual`, `begin_group` / `end_group` (the group's root block, with the virtual
//!   blocks it ended and freed), `sync`;
//! - `flush_maps`: a checkpoint's steps 2–3, the DAT and then the sufile to a fixed point;
//!   `checkpointed`: step 6's consequences.
//!
//! The DAT and the segment table read their own blocks through [`Io`], which also takes
//! their writes into the log. Segment counts cannot change while the segment table is
//! itself being read or written, so appends and deaths are recorded as deltas in `Io` and
//! applied right after each step, and the log's next segments come from a few clean ones
//! set aside beforehand (`spares`), whose hand-out is applied the same way.
//!
//! Built and tested on its own; not used by the engine yet.

use crate::cache::BlockCache;
use crate::device::Device;
use crate::error::{Damage, FsError, Result};
use crate::format::v2::ptr::PhysPtr;
use crate::format::v2::root::{self, GroupRoot};
use crate::format::v2::summary::{Entry, Kind, ENTRY_DUP};
use crate::format::{BlockAddr, Cno, Ino, SegNo, VBlock, BLOCK_SIZE};
use crate::radix::BlockStore;
use crate::vdat::{must_preserve, Dat};
use crate::vlog::{SegmentSource, VLog};
use crate::vscan::Geometry;
use crate::vsufile::SegTable;
use crate::writer::BackEnd;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Rounds of writing the segment table before its entries stop changing; more means
/// something keeps changing them, which is a bug (reported, not looped on).
const SUFILE_ROUNDS: usize = 8;

/// A file's tree nodes (format 2: virtual blocks, which keep their number when rewritten)
/// go through the store, on stream 0.
impl crate::bmap::Sink<VBlock> for VStore {
    fn read_meta(&mut self, v: VBlock) -> Result<Vec<u8>> {
        Ok(self.read_virtual(v)?.as_ref().clone())
    }
    fn write_node(&mut self, id: crate::bmap::NodeId, old: VBlock, data: &[u8]) -> Result<VBlock> {
        let owner = Owner {
            kind: Kind::TreeNode,
            height: id.height,
            ino: id.ino,
            generation: id.version,
            index: id.first,
        };
        self.write_virtual(0, owner, old, data, false)
    }
    fn kill(&mut self, v: VBlock) -> Result<()> {
        self.free_virtual(v)
    }
}

/// Where a stream continues: segment, block offset, the stream's next unit number.
pub type Head = (SegNo, u32, u32);

/// What a virtual block is, for its summary entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub kind: Kind,
    pub height: u8,
    pub ino: Ino,
    pub generation: u32,
    pub index: u64,
}

/// A change to the segment table waiting to be applied (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Live(SegNo, i64),
    /// A spare was given to a stream as its next segment.
    Taken(SegNo),
    /// A stream filled the first and went on in the second.
    MovedOn(u8, SegNo, SegNo),
}

/// The device side: reads through the log's memory, the writer's held buffers, the cache
/// and the device; appends into the log; and the changes to the segment table they make.
pub struct Io {
    g: Geometry,
    dev: Arc<dyn Device>,
    cache: BlockCache,
    log: Option<VLog>,
    backend: Option<BackEnd>,
    /// Clean segments set aside for the log's next segments.
    spares: VecDeque<SegNo>,
    changes: Vec<Change>,
    /// Kind of the tree being flushed, for the summary entries of its blocks.
    tree_kind: Kind,
}

/// The log's source of next segments: the spares, and a record of what it took.
struct SpareSource<'a> {
    spares: &'a mut VecDeque<SegNo>,
    changes: &'a mut Vec<Change>,
    cache: &'a mut BlockCache,
    g: Geometry,
}

impl SegmentSource for SpareSource<'_> {
    fn next_clean(&mut self, _stream: u8, _after: SegNo) -> Option<SegNo> {
        let s = self.spares.pop_front()?;
        // Whatever was cached of the segment's previous life is gone now.
        for a in self.g.seg_addr(s).run(u64::from(self.g.seg_blocks)) {
            self.cache.remove(a);
        }
        self.changes.push(Change::Taken(s));
        Some(s)
    }
    fn moved_on(&mut self, stream: u8, from: SegNo, to: SegNo) {
        self.changes.push(Change::MovedOn(stream, from, to));
    }
}

impl Io {
    fn log_mut(&mut self) -> Result<&mut VLog> {
        self.log.as_mut().ok_or(FsError::ReadOnly)
    }

    /// Run `f` on the log, with the spares as its source of next segments.
    fn with_log<T>(
        &mut self,
        f: impl FnOnce(&mut VLog, &mut SpareSource<'_>) -> Result<T>,
    ) -> Result<T> {
        let Io {
            g,
            log,
            spares,
            changes,
            cache,
            ..
        } = self;
        let log = log.as_mut().ok_or(FsError::ReadOnly)?;
        let mut src = SpareSource {
            spares,
            changes,
            cache,
            g: *g,
        };
        f(log, &mut src)
    }

    /// Append `data` to `stream`; the new place counts live.
    fn append(&mut self, stream: u8, entry: Entry, data: &[u8]) -> Result<BlockAddr> {
        let addr = self.with_log(|log, src| log.append(src, stream, entry, data))?;
        self.live(addr, 1);
        Ok(addr)
    }

    fn live(&mut self, addr: BlockAddr, d: i64) {
        if let Some(s) = self.g.seg_of(addr) {
            self.changes.push(Change::Live(s, d));
        }
    }
}

impl BlockStore for Io {
    fn read(&mut self, addr: BlockAddr) -> Result<Arc<Vec<u8>>> {
        if self.g.seg_of(addr).is_none() {
            return Err(Damage::AddrOutsideLog { addr }.into());
        }
        if let Some(b) = self.log.as_ref().and_then(|l| l.read_cached(addr)) {
            return Ok(Arc::new(b));
        }
        if let Some(b) = self.backend.as_ref().and_then(|w| w.held_block(addr)) {
            return Ok(Arc::new(b));
        }
        Ok(self.cache.read_through(self.dev.as_ref(), addr)?)
    }
    fn write(&mut self, height: u8, index: u64, data: &[u8]) -> Result<BlockAddr> {
        let entry = Entry {
            kind: self.tree_kind,
            height,
            flags: 0,
            crc: crate::format::v2::block_crc(data),
            generation: 0,
            ino: Ino(0),
            index,
            vblock: VBlock::NONE,
            start: Cno(0),
        };
        self.append(0, entry, data)
    }
    fn kill(&mut self, addr: BlockAddr) {
        self.live(addr, -1);
    }
}

/// Where a store starts: a checkpoint's roots and heads (or mkfs's).
#[derive(Debug, Clone)]
pub struct Roots {
    pub dat_root: PhysPtr,
    pub dat_height: u8,
    pub next_vblock: u64,
    pub sufile_root: PhysPtr,
    pub sufile_height: u8,
    pub nclean: u64,
    /// The newest checkpoint's number; the era of new writes is the one after it.
    pub cno: Cno,
}

impl Roots {
    /// An empty filesystem's (mkfs's): no DAT, every segment clean, checkpoint 1.
    pub fn empty(g: &Geometry) -> Roots {
        Roots {
            dat_root: PhysPtr::default(),
            dat_height: 0,
            next_vblock: 1,
            sufile_root: PhysPtr::default(),
            sufile_height: 0,
            nclean: g.nsegs,
            cno: Cno(1),
        }
    }
}

/// What cleaning one segment did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub blocks_read: u64,
    /// Virtual blocks copied.
    pub moved: u64,
    /// DAT and segment-table blocks marked for the next checkpoint to write elsewhere.
    pub relocated: u64,
}

/// What the group under way ended and freed, for its root block.
#[derive(Debug, Default)]
struct GroupLists {
    ended: Vec<(VBlock, Cno)>,
    freed: Vec<VBlock>,
    /// `freed` as a set (a large delete frees many).
    freeing: std::collections::HashSet<VBlock>,
}

pub struct VStore {
    io: Io,
    dat: Dat,
    segs: SegTable,
    /// Kept checkpoints (snapshots, protected ones): the lifetime rule's `kept`.
    kept: Vec<Cno>,
    /// Segments named as a stream's next (in a summary already) but not entered yet: clean
    /// in the table — roll-forward enters only segments a checkpoint recorded clean — and
    /// never handed out again.
    reserved: std::collections::BTreeSet<SegNo>,
    /// Segments the checkpoint being written records clean, which stay unused until it is
    /// durable (`checkpointed`): until then the previous checkpoint, in which they still
    /// hold what it needs, is the one a crash falls back to.
    quarantine: std::collections::BTreeSet<SegNo>,
    fs_id: u32,
    era: Cno,
    group: GroupLists,
    in_group: bool,
}

impl VStore {
    /// The store a checkpoint describes. Reads nothing; writes nothing until `open_log`.
    pub fn open(g: Geometry, dev: Arc<dyn Device>, roots: &Roots, cache_blocks: usize) -> VStore {
        VStore {
            io: Io {
                g,
                dev,
                cache: BlockCache::new(cache_blocks),
                log: None,
                backend: None,
                spares: VecDeque::new(),
                changes: Vec::new(),
                tree_kind: Kind::Dat,
            },
            dat: Dat::open(roots.dat_root, roots.dat_height, roots.next_vblock),
            segs: SegTable::open(
                g.nsegs,
                g.seg_blocks,
                roots.sufile_root,
                roots.sufile_height,
                roots.nclean,
            ),
            kept: Vec::new(),
            reserved: Default::default(),
            quarantine: Default::default(),
            fs_id: 0,
            era: Cno(roots.cno.get() + 1),
            group: GroupLists::default(),
            in_group: false,
        }
    }

    /// Start writing: streams continue at `heads` (segment, offset, stream_seq), which the
    /// segment table must already have in use.
    pub fn open_log(
        &mut self,
        heads: &[(SegNo, u32, u32)],
        next_seq: u64,
        log_id: u64,
        fs_id: u32,
    ) -> Result<()> {
        self.fs_id = fs_id;
        let log = VLog::open(self.io.g, heads, next_seq, log_id, fs_id, self.era);
        self.io.log = Some(log);
        self.io.backend = Some(BackEnd::start(self.io.dev.clone()));
        Ok(())
    }

    /// Stop the writer after what is queued; nothing more is written.
    pub fn close_log(&mut self) {
        self.io.log = None;
        if let Some(mut b) = self.io.backend.take() {
            b.stop();
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.io.g
    }
    pub fn era(&self) -> Cno {
        self.era
    }
    pub fn next_vblock(&self) -> u64 {
        self.dat.next_vblock()
    }
    pub fn clean_count(&self) -> u64 {
        self.segs.clean_count()
    }
    /// Where each stream continues (segment, offset, stream_seq), and the next sequence
    /// number (for a checkpoint).
    pub fn heads(&self) -> Option<(Vec<Head>, u64)> {
        let l = self.io.log.as_ref()?;
        Some((l.heads(), l.next_seq()))
    }
    /// A write or flush of the log failed: nothing more may be written.
    pub fn poisoned(&self) -> bool {
        self.io.backend.as_ref().is_some_and(BackEnd::poisoned)
    }
    /// The checkpoints whose blocks must be kept (snapshots, protected ones).
    pub fn set_kept(&mut self, kept: Vec<Cno>) {
        self.kept = kept;
    }

    /// Apply the changes appends and deaths made to the segment table.
    fn settle(&mut self) -> Result<()> {
        let changes = std::mem::take(&mut self.io.changes);
        let mut live: BTreeMap<SegNo, i64> = BTreeMap::new();
        let now = crate::log::now_ns();
        for c in changes {
            match c {
                Change::Live(s, d) => *live.entry(s).or_default() += d,
                Change::Taken(s) => {
                    self.reserved.insert(s);
                }
                Change::MovedOn(stream, from, to) => {
                    // Count what was written into it before it is judged empty or not.
                    if let Some(d) = live.remove(&from) {
                        self.apply_live(from, d)?;
                    }
                    self.segs.seal(&mut self.io, from)?;
                    self.reserved.remove(&to);
                    self.segs.activate(&mut self.io, to, stream, now)?;
                }
            }
        }
        for (s, d) in live {
            self.apply_live(s, d)?;
        }
        Ok(())
    }

    fn apply_live(&mut self, s: SegNo, d: i64) -> Result<()> {
        let n = u32::try_from(d.unsigned_abs()).unwrap_or(u32::MAX);
        match d.signum() {
            1 => self.segs.add_live(&mut self.io, s, n),
            -1 => self.segs.kill(&mut self.io, s, n),
            _ => Ok(()),
        }
    }

    /// Set aside clean segments until there are `n` spares for the log. Applies the
    /// pending changes first, so a segment the log took is no longer clean in the table.
    fn refill(&mut self, n: usize) -> Result<()> {
        self.settle()?;
        let mut after = self
            .io
            .spares
            .back()
            .copied()
            .or_else(|| self.io.log.as_ref().and_then(|l| l.room(0)).map(|(s, _)| s));
        while self.io.spares.len() < n {
            let from = after.unwrap_or(SegNo(self.io.g.nsegs - 1));
            let mut found = None;
            // Spares, reserved successors and quarantined segments are clean in the table
            // but not free to take: skip them.
            let mut probe = from;
            let taken = |st: &VStore, s: &SegNo| {
                st.io.spares.contains(s) || st.reserved.contains(s) || st.quarantine.contains(s)
            };
            for _ in 0..=self.io.spares.len() + self.reserved.len() + self.quarantine.len() {
                match self.segs.pick_clean(&mut self.io, probe)? {
                    Some(s) if taken(self, &s) => probe = s,
                    other => {
                        found = other;
                        break;
                    }
                }
            }
            let Some(s) = found else {
                return Err(FsError::NoSpace);
            };
            self.io.spares.push_back(s);
            after = Some(s);
        }
        Ok(())
    }

    /// Clean segments the log may still take, the spares included (they are clean).
    pub fn free_segments(&self) -> u64 {
        self.segs.clean_count()
    }

    /// The bytes of virtual block `v`, verified (docs/FORMAT-V2.md §12).
    pub fn read_virtual(&mut self, v: VBlock) -> Result<Arc<Vec<u8>>> {
        self.dat.read_verified(&mut self.io, v)
    }

    /// A physical block (a DAT or sufile block, a group root) at `addr`, unverified: the
    /// caller checks it against its referrer.
    pub fn read_physical(&mut self, addr: BlockAddr) -> Result<Arc<Vec<u8>>> {
        self.io.read(addr)
    }

    pub fn begin_group(&mut self) -> Result<()> {
        self.io.log_mut()?;
        self.in_group = true;
        Ok(())
    }

    /// Write `data` (one block) as the new contents of `old` (`VBlock::NONE`: a new block),
    /// owned as `owner`, into `stream`; `dup` writes it twice (ifile and cpfile blocks).
    /// Returns the virtual block that now holds it: `old` itself unless a kept checkpoint
    /// needs the old version (then the caller's pointer must change).
    pub fn write_virtual(
        &mut self,
        stream: u8,
        owner: Owner,
        old: VBlock,
        data: &[u8],
        dup: bool,
    ) -> Result<VBlock> {
        if !self.in_group {
            return Err(FsError::Bug {
                what: "a virtual block written outside a flush group".into(),
                source: crate::format::FormatError::invalid("store", "no group"),
            });
        }
        if self.io.spares.len() < 2 {
            self.refill(2)?;
        }
        let prev = self.dat.get(&mut self.io, old)?;
        let keep = !prev.is_free() && !must_preserve(prev.start, self.era, &self.kept);
        let (v, start) = if keep {
            (old, prev.start)
        } else {
            (self.dat.allocate(&mut self.io, Some(old))?, self.era)
        };
        let crc = crate::format::v2::block_crc(data);
        let entry = Entry {
            kind: owner.kind,
            height: owner.height,
            flags: 0,
            crc,
            generation: owner.generation,
            ino: owner.ino,
            index: owner.index,
            vblock: v,
            start,
        };
        // The two copies of a DUP block may fall in different units: they are in one flush
        // group, which is recovered whole or not at all.
        let addr = self.io.append(stream, entry, data)?;
        let addr2 = if dup {
            let second = Entry {
                flags: ENTRY_DUP,
                ..entry
            };
            self.io.append(stream, second, data)?
        } else {
            BlockAddr::NONE
        };
        if keep {
            self.kill_places(prev.addr, prev.addr2);
        } else if !prev.is_free() {
            // The old version stays, for the kept checkpoints that reach it.
            self.dat.end(&mut self.io, old, self.era)?;
            self.group.ended.push((old, self.era));
            self.kill_places(prev.addr, prev.addr2);
        }
        self.dat
            .write(&mut self.io, v, addr, addr2, crc, self.era)?;
        Ok(v)
    }

    fn kill_places(&mut self, a: BlockAddr, a2: BlockAddr) {
        for x in [a, a2] {
            if !x.is_none() {
                self.io.live(x, -1);
            }
        }
    }

    /// `v` is no longer part of the current state: freed, or ended if a kept checkpoint
    /// still reaches it.
    pub fn free_virtual(&mut self, v: VBlock) -> Result<()> {
        // Freed already, waiting for its group to be written.
        if self.group.freeing.contains(&v) {
            return Ok(());
        }
        let e = self.dat.get(&mut self.io, v)?;
        if e.is_free() {
            return Ok(());
        }
        if e.is_current() {
            self.kill_places(e.addr, e.addr2);
            if must_preserve(e.start, self.era, &self.kept) {
                self.dat.end(&mut self.io, v, self.era)?;
                self.group.ended.push((v, self.era));
                return Ok(());
            }
        } else if must_preserve(e.start, e.end, &self.kept) {
            // Ended, and a kept checkpoint in its lifetime still reaches it.
            return Ok(());
        }
        // The entry itself is freed once the group's root is written (`end_group`): until
        // then the number cannot be handed out again, so no group both frees and reuses it
        // (roll-forward applies a group's writes before its root's frees).
        self.group.freed.push(v);
        self.group.freeing.insert(v);
        Ok(())
    }

    /// Close the group under way with its root block (carrying the inode table's and the
    /// checkpoint list's inodes after it), and hand its units to the writer. Returns the
    /// group's sequence range.
    pub fn end_group(&mut self, ifile_inode: &[u8], cpfile_inode: &[u8]) -> Result<(u64, u64)> {
        let GroupLists {
            mut ended,
            mut freed,
            ..
        } = std::mem::take(&mut self.group);
        self.in_group = false;
        // Freed in the DAT once the root (and its continuations) carry them.
        let all_freed = freed.clone();
        self.refill(2)?;
        // Lists longer than one root holds go first, in continuation root blocks (a large
        // delete frees many virtual blocks in one group).
        let mut conts = 0u32;
        while !GroupRoot::fits(ended.len(), freed.len()) {
            let e: Vec<_> = ended
                .drain(..ended.len().min(root::LIST_BYTES / root::ENDED_SIZE))
                .collect();
            let room = (root::LIST_BYTES - e.len() * root::ENDED_SIZE) / root::FREED_SIZE;
            let f: Vec<_> = freed.drain(..freed.len().min(room)).collect();
            let block = GroupRoot {
                seq_first: 0,
                seq_last: 0,
                era: self.era,
                next_vblock: self.dat.next_vblock(),
                cont: 0,
                ifile_inode: vec![0; root::INODE_BYTES],
                cpfile_inode: vec![0; root::INODE_BYTES],
                ended: e,
                freed: f,
            }
            .encode();
            let entry = Entry {
                kind: Kind::GroupRoot,
                height: 0,
                flags: 0,
                crc: crate::format::v2::block_crc(&block),
                generation: 0,
                ino: Ino(0),
                index: u64::from(conts) + 1,
                vblock: VBlock::NONE,
                start: Cno(0),
            };
            // Never counted live, as the group's root.
            self.io
                .with_log(|log, src| log.append(src, 0, entry, &block))?;
            conts += 1;
        }
        let root = GroupRoot {
            seq_first: 0,
            seq_last: 0,
            era: self.era,
            next_vblock: self.dat.next_vblock(),
            cont: conts,
            ifile_inode: ifile_inode.to_vec(),
            cpfile_inode: cpfile_inode.to_vec(),
            ended,
            freed,
        };
        let range = self.io.with_log(|log, src| log.end_group(src, root))?;
        for v in all_freed {
            self.dat.free(&mut self.io, v)?;
        }
        self.submit()?;
        self.settle()?;
        Ok(range)
    }

    fn submit(&mut self) -> Result<()> {
        let (Some(log), Some(backend)) = (self.io.log.as_mut(), self.io.backend.as_ref()) else {
            return Err(FsError::ReadOnly);
        };
        log.submit(backend)
    }

    /// Everything handed to the writer is durable when this returns.
    pub fn sync(&mut self) -> Result<()> {
        self.submit()?;
        let backend = self.io.backend.as_ref().ok_or(FsError::ReadOnly)?;
        backend.flush().map_err(|e| {
            tracing::error!(error = %e, "sync failed");
            FsError::Io(e)
        })
    }

    /// Before a group: room for `blocks` appended blocks, in spares for the log to take.
    pub fn prepare(&mut self, blocks: u64) -> Result<()> {
        let seg = u64::from(self.io.g.seg_blocks);
        let n = blocks.div_ceil(seg.saturating_sub(2).max(1)) + 2;
        self.refill(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A checkpoint's steps 2 and 3 (docs/FORMAT-V2.md §9): the DAT's dirty blocks, then
    /// the segment table's until writing it changes nothing more, in a group of their own
    /// (roll-forward ignores these kinds). Returns the new roots and counts as the
    /// checkpoint records them (`cno` is the checkpoint's number).
    pub fn flush_maps(
        &mut self,
        ifile_inode: &[u8],
        cpfile_inode: &[u8],
        cno: Cno,
    ) -> Result<Roots> {
        self.begin_group()?;
        self.prepare(self.dat.dirty_leaves() as u64 * 2 + 16)?;
        self.io.tree_kind = Kind::Dat;
        let (dat_root, dat_h) = self.dat.flush(&mut self.io)?;
        self.settle()?;
        let mut su = None;
        for _ in 0..SUFILE_ROUNDS {
            self.prepare(self.segs.dirty_leaves() as u64 * 2 + 16)?;
            // What is freed so far is recorded clean, and stays unused until the
            // checkpoint is durable.
            let released = self.segs.release_freed(&mut self.io)?;
            self.quarantine.extend(released);
            self.io.tree_kind = Kind::Sufile;
            let r = self.segs.flush(&mut self.io)?;
            self.settle()?;
            if self.segs.dirty_leaves() == 0 {
                su = Some(r);
                break;
            }
        }
        let (sufile_root, sufile_height) = su.ok_or_else(|| FsError::Bug {
            what: format!("the segment table still changes after {SUFILE_ROUNDS} rounds"),
            source: crate::format::FormatError::invalid("sufile", "no fixed point"),
        })?;
        let roots = Roots {
            dat_root,
            dat_height: dat_h,
            next_vblock: self.dat.next_vblock(),
            sufile_root,
            sufile_height,
            nclean: self.segs.clean_count(),
            cno,
        };
        // The root's own unit may take the head's successor: the table as written records
        // it clean, and the next checkpoint (or roll-forward from this one) records it taken.
        self.end_group(ifile_inode, cpfile_inode)?;
        Ok(roots)
    }

    /// Checkpoint `cno` is durable: segments freed before it are clean, and new writes
    /// belong to the era after it.
    pub fn checkpointed(&mut self, cno: Cno) -> Result<()> {
        self.quarantine.clear();
        self.era = Cno(cno.get() + 1);
        if let Some(l) = self.io.log.as_mut() {
            l.set_era(self.era);
        }
        Ok(())
    }

    /// Drop clean DAT and sufile blocks from memory (they are read again when needed).
    pub fn evict_clean(&mut self) {
        self.dat.evict_clean();
        self.segs.evict_clean();
    }

    /// Move what is live in segment `seg` into `stream`, inside the group under way (a
    /// cleaning pass): each virtual block whose DAT entry still points into the segment is
    /// copied and its entry pointed at the copy — the same number, the same `start`, so
    /// nothing above it changes; DAT and segment-table blocks the trees still point at are
    /// marked for the next checkpoint to write elsewhere; group roots are never live. The
    /// segment is freed when its last live block has gone (for tree blocks, at that
    /// checkpoint) and clean after the checkpoint that records it.
    pub fn clean_segment(&mut self, seg: SegNo, stream: u8) -> Result<Cleaned> {
        if !self.in_group {
            return Err(FsError::Bug {
                what: "a segment cleaned outside a flush group".into(),
                source: crate::format::FormatError::invalid("store", "no group"),
            });
        }
        let g = self.io.g;
        let first = g.seg_addr(seg);
        let n = u64::from(g.seg_blocks);
        // Units of this segment still queued are not on the device yet.
        if let Some(b) = self.io.backend.as_ref() {
            if b.holds_any(first, n) {
                b.flush()?;
            }
        }
        let mut buf = vec![0u8; n as usize * BLOCK_SIZE];
        self.io.dev.read_at(&mut buf, first.byte_offset())?;
        let units = crate::vscan::walk_segment(&buf, &g, seg, self.fs_id).units;
        let mut done = Cleaned {
            blocks_read: n,
            ..Cleaned::default()
        };
        for (off, u) in &units {
            for (k, e) in u.summary.entries.iter().enumerate() {
                let addr = first + u64::from(*off) + 1 + k as u64;
                let data = &u.payload[k * BLOCK_SIZE..(k + 1) * BLOCK_SIZE];
                let relocated = match e.kind {
                    Kind::GroupRoot => false,
                    Kind::Dat => self.dat.relocate(&mut self.io, e.height, e.index, addr)?,
                    Kind::Sufile => self.segs.relocate(&mut self.io, e.height, e.index, addr)?,
                    _ => {
                        if self.move_virtual(stream, e, addr, data)? {
                            done.moved += 1;
                        }
                        continue;
                    }
                };
                done.relocated += u64::from(relocated);
            }
        }
        Ok(done)
    }

    /// Copy the block at `addr` (summary entry `e`, contents `data`) into `stream` if its
    /// DAT entry still points there; true if it did.
    fn move_virtual(
        &mut self,
        stream: u8,
        e: &Entry,
        addr: BlockAddr,
        data: &[u8],
    ) -> Result<bool> {
        let cur = self.dat.get(&mut self.io, e.vblock)?;
        if cur.is_free() || (cur.addr != addr && cur.addr2 != addr) {
            return Ok(false);
        }
        if self.io.spares.len() < 2 {
            self.refill(2)?;
        }
        if crate::format::v2::block_crc(data) != cur.crc {
            // Moved as it is: its DAT entry keeps the checksum it had, so reads still fail
            // rather than return these bytes.
            tracing::warn!(
                vblock = e.vblock.get(),
                addr = addr.get(),
                "moving a block whose checksum does not match"
            );
        }
        let copy = Entry {
            start: cur.start,
            crc: cur.crc,
            ..*e
        };
        let new = self.io.append(stream, copy, data)?;
        self.io.live(addr, -1);
        let (a1, a2) = if cur.addr == addr {
            (new, cur.addr2)
        } else {
            (cur.addr, new)
        };
        self.dat.moved(&mut self.io, e.vblock, a1, a2)?;
        Ok(true)
    }

    /// Where each stream's next unit goes, moving a stream that has no room for a unit left
    /// in its segment on to its next one — so a checkpoint never names a head from which
    /// roll-forward could not go on (it follows a summary's `next_segment` only past a unit
    /// it has read).
    pub fn checkpoint_heads(&mut self) -> Result<(Vec<Head>, u64)> {
        self.refill(2)?;
        self.io.with_log(|log, src| log.move_full_heads(src))?;
        self.settle()?;
        self.heads().ok_or(FsError::ReadOnly)
    }

    // Roll-forward (vrecover.rs) applies what the log holds through these; they change the
    // maps directly, outside any group.

    /// Segment `seg` is the head of `stream` (after a checkpoint, or entered by the log
    /// roll-forward read): in use, whatever the table recorded.
    pub fn recover_head(&mut self, stream: u8, seg: SegNo) -> Result<()> {
        let u = self.segs.get(&mut self.io, seg)?;
        if u.state == crate::format::v2::sufile::SEG_CLEAN {
            self.segs
                .activate(&mut self.io, seg, stream, crate::log::now_ns())?;
        }
        Ok(())
    }

    /// `stream` filled `from` and went on in `to`.
    pub fn recover_moved_on(&mut self, stream: u8, from: SegNo, to: SegNo) -> Result<()> {
        self.segs.seal(&mut self.io, from)?;
        self.recover_head(stream, to)
    }

    /// The log wrote virtual block `v` at `addr` (checksum `crc`, lifetime from `start`);
    /// its previous places die.
    pub fn recover_write(
        &mut self,
        v: VBlock,
        addr: BlockAddr,
        crc: u32,
        start: Cno,
    ) -> Result<()> {
        let prev = self.dat.get(&mut self.io, v)?;
        if !prev.is_free() {
            self.kill_places(prev.addr, prev.addr2);
        }
        self.io.live(addr, 1);
        let e = crate::format::v2::dat::DatEntry {
            addr,
            addr2: BlockAddr::NONE,
            start,
            end: Cno::CURRENT,
            crc,
            flags: 0,
        };
        self.dat.set_entry(&mut self.io, v, e)?;
        self.settle()
    }

    /// The log wrote the second copy of DUP block `v` at `addr`.
    pub fn recover_second_copy(&mut self, v: VBlock, addr: BlockAddr) -> Result<()> {
        let mut e = self.dat.get(&mut self.io, v)?;
        if e.is_free() {
            return Err(Damage::VBlockFree { vblock: v.get() }.into());
        }
        if !e.addr2.is_none() {
            self.io.live(e.addr2, -1);
        }
        e.addr2 = addr;
        e.flags |= crate::format::v2::dat::FLAG_DUP;
        self.io.live(addr, 1);
        self.dat.set_entry(&mut self.io, v, e)?;
        self.settle()
    }

    /// A group root ended `v` in `era` (a kept checkpoint still reaches it).
    pub fn recover_end(&mut self, v: VBlock, era: Cno) -> Result<()> {
        let e = self.dat.get(&mut self.io, v)?;
        if e.is_current() {
            self.kill_places(e.addr, e.addr2);
            self.dat.end(&mut self.io, v, era)?;
        }
        self.settle()
    }

    /// A group root freed `v`.
    pub fn recover_free(&mut self, v: VBlock) -> Result<()> {
        let e = self.dat.get(&mut self.io, v)?;
        if !e.is_free() {
            if e.is_current() {
                self.kill_places(e.addr, e.addr2);
            }
            self.dat.free(&mut self.io, v)?;
        }
        self.settle()
    }

    /// A group root's `next_vblock`: numbers below it may be in use.
    pub fn recover_next_vblock(&mut self, next: u64) {
        self.dat.raise_next(next);
    }

    /// The DAT entry of `v` (for checks and tests).
    pub fn dat_entry(&mut self, v: VBlock) -> Result<crate::format::v2::dat::DatEntry> {
        self.dat.get(&mut self.io, v)
    }

    /// The device the store reads.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.io.dev
    }

    /// For checkers: every DAT and segment-table block as the trees reach them on the
    /// device (`(address, height, first key)`, DAT first then the table's, `tree` saying
    /// which), every DAT entry in use, and every segment that is not clean.
    pub fn walk_maps(
        &mut self,
        blocks: &mut dyn FnMut(Kind, BlockAddr, u8, u64),
        dat: &mut dyn FnMut(VBlock, &crate::format::v2::dat::DatEntry),
        segs: &mut dyn FnMut(SegNo, &crate::format::v2::sufile::SegUsage),
    ) -> Result<()> {
        self.dat
            .walk(&mut self.io, &mut |a, h, i| blocks(Kind::Dat, a, h, i), dat)?;
        self.segs.walk(
            &mut self.io,
            &mut |a, h, i| blocks(Kind::Sufile, a, h, i),
            segs,
        )
    }

    /// Whether the block at `addr`, one of `v`'s places, matches the checksum `v`'s DAT
    /// entry holds (fsck reads every copy, not only the first good one).
    pub fn read_place(&mut self, v: VBlock, addr: BlockAddr) -> Result<()> {
        let e = self.dat.get(&mut self.io, v)?;
        let b = self.io.read(addr)?;
        let computed = crate::format::v2::block_crc(&b);
        if computed != e.crc {
            return Err(Damage::BlockChecksum {
                vblock: v.get(),
                addr,
                stored: e.crc,
                computed,
                copies: 1,
            }
            .into());
        }
        Ok(())
    }

    /// Tests of the checkers: make segment `s`'s live count wrong by one.
    #[cfg(test)]
    pub(crate) fn skew_live(&mut self, s: SegNo) -> Result<()> {
        self.segs.add_live(&mut self.io, s, 1)
    }

    /// The segment table's entry for `s`.
    pub fn segment(&mut self, s: SegNo) -> Result<crate::format::v2::sufile::SegUsage> {
        self.segs.get(&mut self.io, s)
    }
}

/// What the tests of the store and of its users share: a store on a small in-memory
/// device, writing with one stream.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testutil {
    use super::*;
    use crate::device::MemDevice;
    pub use crate::vlog::testutil::G;

    pub fn device() -> Arc<MemDevice> {
        Arc::new(MemDevice::new(
            (16 + G.nsegs * u64::from(G.seg_blocks) + 16) * BLOCK_SIZE as u64,
        ))
    }

    pub fn empty_roots() -> Roots {
        Roots::empty(&G)
    }

    /// A store on an empty device, writing with one stream from segment 0.
    pub fn fresh(dev: &Arc<MemDevice>) -> VStore {
        let mut st = VStore::open(G, dev.clone(), &empty_roots(), 64);
        st.segs.activate(&mut st.io, SegNo(0), 0, 1).unwrap();
        st.open_log(&[(SegNo(0), 0, 1)], 100, 5, 6).unwrap();
        st
    }

    pub fn data(ino: u64, index: u64) -> Owner {
        Owner {
            kind: Kind::Data,
            height: 0,
            ino: Ino(ino),
            generation: 1,
            index,
        }
    }

    /// One flush group writing `block(x)` as the new contents of each `(owner, old, x)`.
    pub fn group(st: &mut VStore, writes: &[(Owner, VBlock, u64)], dup: bool) -> Vec<VBlock> {
        st.begin_group().unwrap();
        let vs = writes
            .iter()
            .map(|&(o, old, x)| st.write_virtual(0, o, old, &block(x), dup).unwrap())
            .collect();
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        vs
    }

    pub fn block(x: u64) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[..8].copy_from_slice(&x.to_le_bytes());
        b[BLOCK_SIZE - 1] = x as u8;
        b
    }

    /// A checkpoint of `st` (its maps and heads written, durable): the roots to reopen it.
    pub fn checkpoint(st: &mut VStore, cno: Cno) -> Roots {
        let roots = st.flush_maps(&[0; 256], &[0; 256], cno).unwrap();
        st.checkpoint_heads().unwrap();
        st.sync().unwrap();
        st.checkpointed(cno).unwrap();
        roots
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::format::v2::sufile::{SEG_ACTIVE, SEG_CLEAN, SEG_IN_USE};

    #[test]
    fn writes_read_back_verified_before_and_after_they_reach_the_device() {
        let dev = device();
        let mut st = fresh(&dev);
        st.begin_group().unwrap();
        let vs: Vec<VBlock> = (0..100)
            .map(|i| {
                st.write_virtual(0, data(20, i), VBlock::NONE, &block(i), false)
                    .unwrap()
            })
            .collect();
        // Still in memory: read from the log.
        assert_eq!(*st.read_virtual(vs[7]).unwrap(), block(7));
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        st.sync().unwrap();
        for (i, &v) in vs.iter().enumerate() {
            assert_eq!(*st.read_virtual(v).unwrap(), block(i as u64));
        }
        // 100 data blocks over several segments, counted live where they went; the group's
        // root is never counted (only roll-forward from the last checkpoint needs it).
        let mut live = 0;
        let mut used = 0;
        for s in 0..G.nsegs {
            let u = st.segment(SegNo(s)).unwrap();
            live += u.live;
            used += u64::from(u.state != SEG_CLEAN);
        }
        assert_eq!(live, 100);
        assert!(used >= 4, "100 blocks need four 32-block segments: {used}");
        st.close_log();
    }

    #[test]
    fn a_rewrite_keeps_its_number_and_the_old_place_dies() {
        let dev = device();
        let mut st = fresh(&dev);
        let v = group(&mut st, &[(data(20, 0), VBlock::NONE, 1)], false)[0];
        let (a1, ..) = st.dat.resolve(&mut st.io, v).unwrap();
        let v2 = group(&mut st, &[(data(20, 0), v, 2)], false)[0];
        assert_eq!(v2, v, "no kept checkpoint: the number stays");
        let (a2, ..) = st.dat.resolve(&mut st.io, v).unwrap();
        assert_ne!(a1, a2);
        assert_eq!(*st.read_virtual(v).unwrap(), block(2));

        // Checkpoint 2 made and kept: the block, written in era 2, rewritten in era 3 keeps
        // its old version under its number for checkpoint 2 and takes a new one.
        st.checkpointed(Cno(2)).unwrap();
        st.set_kept(vec![Cno(2)]);
        let v3 = group(&mut st, &[(data(20, 0), v, 3)], false)[0];
        assert_ne!(v3, v, "checkpoint 2 reaches the old version");
        assert_eq!(
            *st.read_virtual(v).unwrap(),
            block(2),
            "kept for checkpoint 2"
        );
        assert_eq!(*st.read_virtual(v3).unwrap(), block(3));
        st.close_log();
    }

    /// A number freed is not handed out again before the group that frees it is written:
    /// roll-forward applies a group's writes before its root's frees, so reuse inside the
    /// group would free the new block.
    #[test]
    fn a_freed_number_waits_for_its_group() {
        let dev = device();
        let mut st = fresh(&dev);
        let v = group(&mut st, &[(data(20, 0), VBlock::NONE, 1)], false)[0];
        st.begin_group().unwrap();
        st.free_virtual(v).unwrap();
        st.free_virtual(v).unwrap(); // twice: once counted
        let w = st
            .write_virtual(0, data(21, 0), VBlock::NONE, &block(2), false)
            .unwrap();
        assert_ne!(w, v, "reused inside the group that frees it");
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        assert!(st.dat_entry(v).unwrap().is_free(), "freed with its group");
        let problems = crate::vcheck::check_maps(&mut st, false).unwrap().problems;
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_damaged_block_is_an_error_and_a_dup_block_survives_one_bad_copy() {
        let dev = device();
        let mut st = fresh(&dev);
        let plain = group(&mut st, &[(data(20, 0), VBlock::NONE, 1)], false)[0];
        let ifile = Owner {
            kind: Kind::Ifile,
            ino: Ino(2),
            ..data(2, 1)
        };
        let dup = group(&mut st, &[(ifile, VBlock::NONE, 2)], true)[0];
        st.sync().unwrap();
        let (a, _, _) = st.dat.resolve(&mut st.io, plain).unwrap();
        let (d1, d2, _) = st.dat.resolve(&mut st.io, dup).unwrap();
        assert!(!d2.is_none(), "two copies");
        for x in [a, d1] {
            dev.write_at(&[0xee; 8], x.byte_offset() + 100).unwrap();
        }
        // A fresh cache, as after a remount: the damage is on the device.
        st.io.cache = BlockCache::new(64);
        match st.read_virtual(plain) {
            Err(FsError::Damaged(Damage::BlockChecksum { vblock, addr, .. })) => {
                assert_eq!((vblock, addr), (plain.get(), a));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(*st.read_virtual(dup).unwrap(), block(2), "the second copy");
        st.close_log();
    }

    #[test]
    fn maps_flushed_and_reopened_give_the_same_answers_and_the_table_settles() {
        let dev = device();
        let mut st = fresh(&dev);
        st.begin_group().unwrap();
        let vs: Vec<VBlock> = (0..300)
            .map(|i| {
                st.write_virtual(0, data(20 + i % 3, i), VBlock::NONE, &block(i), false)
                    .unwrap()
            })
            .collect();
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        // Free a third: their places die, their numbers are reusable.
        st.begin_group().unwrap();
        for &v in vs.iter().step_by(3) {
            st.free_virtual(v).unwrap();
        }
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        let roots = st.flush_maps(&[0; 256], &[0; 256], Cno(2)).unwrap();
        st.sync().unwrap();
        // Every segment as the table recorded it at the flush.
        let recorded: Vec<_> = (0..G.nsegs)
            .map(|s| st.segment(SegNo(s)).unwrap())
            .collect();
        st.close_log();

        let mut again = VStore::open(G, dev.clone(), &roots, 64);
        for (i, &v) in vs.iter().enumerate() {
            let r = again.read_virtual(v);
            if i % 3 == 0 {
                assert!(r.is_err(), "freed {v:?} must not read");
            } else {
                assert_eq!(*r.unwrap(), block(i as u64));
            }
        }
        let mut live = 0u64;
        let mut states = [0u64; 4];
        let mut differ = 0;
        for s in 0..G.nsegs {
            let u = again.segment(SegNo(s)).unwrap();
            // Writing the maps' own group root may move the head on after the table was
            // written: the old head and its successor may differ in state (the checkpoint
            // records the successor clean: roll-forward may enter it), nothing else.
            let r = recorded[s as usize];
            if u != r {
                assert_eq!(u.live, r.live, "segment {s}");
                differ += 1;
            }
            live += u64::from(u.live);
            match u.state {
                SEG_CLEAN => states[0] += 1,
                SEG_ACTIVE => states[1] += 1,
                SEG_IN_USE => states[2] += 1,
                _ => states[3] += 1,
            }
        }
        // 200 data blocks and the maps' own blocks.
        assert!(live > 200, "{live}");
        assert!(
            differ <= 2,
            "{differ} segments changed after the table was written"
        );
        assert_eq!(states[1], 1, "one head: {states:?}");
        assert_eq!(
            states[0], roots.nclean,
            "clean count as recorded: {states:?}"
        );
    }

    #[test]
    fn cleaning_moves_live_blocks_under_their_numbers_and_frees_the_victims() {
        let dev = device();
        let mut st = fresh(&dev);
        // 150 blocks over five segments, then most rewritten: the early segments hold a
        // few live blocks among dead ones.
        let mut vs: Vec<VBlock> = (0..150)
            .map(|i| group(&mut st, &[(data(20, i), VBlock::NONE, i)], false)[0])
            .collect();
        let mut want: Vec<u64> = (0..150).collect();
        for i in (0..150).filter(|i| i % 10 != 0) {
            vs[i as usize] = group(&mut st, &[(data(20, i), vs[i as usize], 1000 + i)], false)[0];
            want[i as usize] = 1000 + i;
        }
        checkpoint(&mut st, Cno(2));
        let head = st.heads().unwrap().0[0].0;
        let victims: Vec<SegNo> = (0..G.nsegs)
            .map(SegNo)
            .filter(|&s| {
                let u = st.segment(s).unwrap();
                s != head && u.state == SEG_IN_USE && u.live > 0
            })
            .collect();
        assert!(victims.len() >= 3, "{victims:?}");
        let live_before: u32 = victims.iter().map(|&s| st.segment(s).unwrap().live).sum();
        st.begin_group().unwrap();
        let mut moved = 0;
        let mut relocated = 0;
        for &v in &victims {
            let c = st.clean_segment(v, 0).unwrap();
            moved += c.moved;
            relocated += c.relocated;
        }
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        assert_eq!(
            moved + relocated,
            u64::from(live_before),
            "every live block moved once"
        );
        assert!(
            moved >= 15,
            "the old first writes of every tenth block: {moved}"
        );
        // The pass's checkpoint writes the relocated tree blocks elsewhere (freeing the
        // victims), the next one records them clean.
        checkpoint(&mut st, Cno(3));
        let roots = checkpoint(&mut st, Cno(4));
        for &v in &victims {
            assert_eq!(st.segment(v).unwrap().state, SEG_CLEAN, "victim {v}");
        }
        for (i, &v) in vs.iter().enumerate() {
            assert_eq!(*st.read_virtual(v).unwrap(), block(want[i]), "block {i}");
        }
        st.close_log();
        let mut again = VStore::open(G, dev.clone(), &roots, 64);
        for (i, &v) in vs.iter().enumerate() {
            assert_eq!(
                *again.read_virtual(v).unwrap(),
                block(want[i]),
                "block {i} reopened"
            );
        }
    }
}
