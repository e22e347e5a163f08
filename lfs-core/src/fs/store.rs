//! The store: everything below the inode layer that a filesystem operation touches — the
//! log, the segment usage table and a block cache — behind one struct, so inode code can
//! borrow it while holding an inode (the bmap `Sink`).

use crate::bmap::{NodeId, Sink};
use crate::cache::BlockCache;
use crate::device::Device;
use crate::error::Damage;
use crate::error::{FsError, Result};
use crate::format::summary::SummaryEntry;
use crate::format::superblock::Superblock;
use crate::format::{BlockAddr, SegNo, BLOCK_BYTES, BLOCK_SIZE};
use crate::log::Log;
use crate::usage::UsageTable;
use std::sync::Arc;

pub struct Store {
    sb: Arc<Superblock>,
    dev: Arc<dyn Device>,
    /// The log writer; None on a read-only mount (and before mount opens it).
    log: Option<Log>,
    usage: UsageTable,
    cache: BlockCache,
    /// Segment the last append went to; a change means a (re)used segment to purge.
    last_seg: Option<SegNo>,
    blocks_appended: u64,
}

impl Store {
    pub fn new(
        sb: Arc<Superblock>,
        dev: Arc<dyn Device>,
        usage: UsageTable,
        cache_blocks: usize,
    ) -> Store {
        Store {
            sb,
            dev,
            log: None,
            usage,
            cache: BlockCache::new(cache_blocks),
            last_seg: None,
            blocks_appended: 0,
        }
    }

    pub fn sb(&self) -> &Arc<Superblock> {
        &self.sb
    }
    pub fn dev(&self) -> &Arc<dyn Device> {
        &self.dev
    }
    pub fn usage(&self) -> &UsageTable {
        &self.usage
    }
    pub fn usage_mut(&mut self) -> &mut UsageTable {
        &mut self.usage
    }
    /// Blocks appended to the log since mount.
    pub fn appended(&self) -> u64 {
        self.blocks_appended
    }
    /// (hits, misses) of the block cache.
    pub fn cache_counts(&self) -> (u64, u64) {
        (self.cache.hits, self.cache.misses)
    }
    /// The log is open: the mount writes.
    pub fn writable(&self) -> bool {
        self.log.is_some()
    }
    /// The log, when the mount writes.
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }
    /// A write or flush of the log failed: nothing more may be written.
    pub fn poisoned(&self) -> bool {
        self.log.as_ref().is_some_and(|l| l.backend.poisoned())
    }
    /// Open the log (the head and sequence number recovered, a new log id) so the mount
    /// writes.
    pub fn open_log(
        &mut self,
        head_seg: SegNo,
        head_off: u32,
        seq: u64,
        log_id: u64,
    ) -> Result<()> {
        self.log = Some(Log::open(
            self.sb.clone(),
            self.dev.clone(),
            &mut self.usage,
            head_seg,
            head_off,
            seq,
            log_id,
        )?);
        Ok(())
    }
    /// Stop the log's writer (at unmount); nothing more is written.
    pub fn close_log(&mut self) {
        if let Some(mut log) = self.log.take() {
            log.backend.stop();
        }
    }
    /// Let go of the device (its lock, then the device itself: the last reference closes
    /// it); reads afterwards fail.
    pub fn release_device(&mut self) {
        self.dev.release();
        let len = self.dev.len_bytes();
        self.dev = Arc::new(crate::device::Released { len });
    }

    /// Read one block: from the log's memory, the cache, or the device.
    pub fn read_block(&mut self, addr: BlockAddr) -> Result<Arc<Vec<u8>>> {
        if self.sb.seg_of(addr).is_none() {
            return Err(Damage::AddrOutsideLog { addr }.into());
        }
        if let Some(b) = self.log.as_ref().and_then(|l| l.read_cached(addr)) {
            return Ok(Arc::new(b));
        }
        Ok(self.cache.read_through(self.dev.as_ref(), addr)?)
    }

    /// Read `n` blocks at consecutive addresses from `addr` in one device read when none of
    /// them is still in memory or the cache; otherwise block by block. Sequential file reads
    /// find their blocks contiguous in the log, so this turns them into large reads.
    pub fn read_run(&mut self, addr: BlockAddr, n: u64, out: &mut Vec<u8>) -> Result<()> {
        // Addresses come from disk: a damaged pointer may sit near u64::MAX.
        let Some(end) = addr.checked_add(n) else {
            return Err(Damage::RunBeyondDevice { addr, len: n }.into());
        };
        let seg = self.sb.seg_of(addr);
        let one_segment = n > 1 && seg.is_some() && seg == self.sb.seg_of(BlockAddr(end.get() - 1));
        // Blocks still in memory (the current segment, or one queued for writing) may not be
        // on disk yet. Cached blocks need no check: a block never changes at its address,
        // so the device holds the same bytes.
        let in_memory = |seg: SegNo| {
            self.log.as_ref().is_some_and(|l| {
                l.current_segment() == seg
                    || l.backend
                        .holds_any(self.sb.seg_addr(seg), self.sb.seg_blocks as u64)
            })
        };
        if !one_segment || in_memory(seg.unwrap_or_default()) {
            for a in addr.run(n) {
                out.extend_from_slice(&self.read_block(a)?);
            }
            return Ok(());
        }
        let start = out.len();
        out.resize(start + n as usize * BLOCK_SIZE, 0);
        self.dev.read_at(&mut out[start..], addr.byte_offset())?;
        self.cache.misses += n;
        Ok(())
    }

    pub fn log_mut(&mut self) -> Result<&mut Log> {
        self.log.as_mut().ok_or(FsError::ReadOnly)
    }

    /// Append a block counting `live_bytes` toward its segment.
    pub fn append_counted(
        &mut self,
        entry: SummaryEntry,
        data: &[u8],
        live_bytes: u64,
    ) -> Result<BlockAddr> {
        let log = self.log.as_mut().ok_or(FsError::ReadOnly)?;
        let addr = log.append(&mut self.usage, entry, data)?;
        let seg = self.sb.seg_of(addr).unwrap_or_default();
        if self.last_seg != Some(seg) {
            self.last_seg = Some(seg);
            let base = self.sb.seg_addr(seg);
            for a in base.run(self.sb.seg_blocks as u64) {
                self.cache.remove(a);
            }
        }
        if live_bytes > 0 {
            self.usage.add_live(seg, live_bytes);
        }
        self.blocks_appended += 1;
        Ok(addr)
    }

    pub fn kill_bytes(&mut self, addr: BlockAddr, bytes: u64) {
        if let Some(seg) = self.sb.seg_of(addr) {
            self.usage.kill(seg, bytes);
        }
    }

    pub fn begin_group(&mut self, flags: u16) -> Result<()> {
        self.log_mut()?.begin_group(flags);
        Ok(())
    }
    pub fn end_group(&mut self) -> Result<()> {
        let log = self.log.as_mut().ok_or(FsError::ReadOnly)?;
        log.end_group(&mut self.usage);
        Ok(())
    }
    pub fn sync(&mut self) -> Result<()> {
        let log = self.log.as_mut().ok_or(FsError::ReadOnly)?;
        log.sync(&mut self.usage)
    }

    /// Blocks the log can still write: clean segments and the rest of the current one.
    pub fn free_blocks(&self) -> u64 {
        // The log's reserved successor is not counted: stepping into it takes a clean
        // segment as the next successor, so with no clean segment left only the rest of
        // the current one can be written.
        let room = self.log.as_ref().map_or(0, |l| l.room_in_segment());
        self.usage.clean_count() * self.sb.seg_blocks as u64 + room
    }
}

impl Sink for Store {
    fn read_meta(&mut self, addr: BlockAddr) -> Result<Vec<u8>> {
        Ok(self.read_block(addr)?.as_ref().clone())
    }
    fn write_node(&mut self, id: NodeId, _old: BlockAddr, data: &[u8]) -> Result<BlockAddr> {
        let entry = SummaryEntry::indirect(id.ino, id.version, id.height, id.first);
        self.append_counted(entry, data, BLOCK_BYTES)
    }
    fn kill(&mut self, addr: BlockAddr) -> Result<()> {
        self.kill_bytes(addr, BLOCK_BYTES);
        Ok(())
    }
}
