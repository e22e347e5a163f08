//! The log: the segment being filled in memory and the write units in it.
//!
//! Blocks are appended to the current segment buffer and get their final address at once.
//! Appends are grouped into *flush groups* (see docs/FORMAT.md): a unit is sealed — its
//! summary encoded with a checksum of its payload — when it is full, when the segment is full
//! or when the group ends; every unit of a group but the last carries CONT. A full segment is
//! handed to the back-end writer in one write; `sync` writes the part of the current segment
//! not yet written and flushes.

use crate::device::Device;
use crate::error::{FsError, Result};
use crate::format::summary::{
    data_crc, fs_id, Summary, SummaryEntry, FLAG_CONT, SUMMARY_MAX_ENTRIES,
};
use crate::format::superblock::Superblock;
use crate::format::{BlockAddr, SegNo, BLOCK_SIZE};
use crate::usage::UsageTable;
use crate::writer::BackEnd;
use std::sync::Arc;

struct OpenUnit {
    start: u32,
    entries: Vec<SummaryEntry>,
}

pub struct Log {
    sb: Arc<Superblock>,
    pub backend: BackEnd,
    seg: SegNo,
    next_seg: SegNo,
    buf: Vec<u8>,
    /// Blocks of `buf` in use (sealed units, the open unit and its reserved summary).
    fill: u32,
    /// Blocks of `buf` already handed to the writer.
    written: u32,
    unit: Option<OpenUnit>,
    next_seq: u64,
    log_id: u64,
    fs_id: u32,
    in_group: bool,
    group_flags: u16,
    /// Units sealed since mount, for statistics.
    pub units_written: u64,
    pub segments_written: u64,
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// 16 random bytes (a filesystem's uuid; the source of log ids).
pub fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut u))
        .is_ok();
    if !ok {
        let seed = now_ns().to_le_bytes();
        u[..8].copy_from_slice(&seed);
        u[8..].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
    }
    u
}

/// A log id for a new mount: random, so that no two mounts (even two attempts to recover
/// from the same checkpoint) ever write units roll-forward could take for each other's.
/// A random log id, nonzero and other than `not` (the previous mount's).
pub fn new_log_id(not: u64) -> u64 {
    let u = random_uuid();
    let mut id = u64::from_le_bytes([u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]]);
    if id == not || id == 0 {
        id = not.wrapping_add(now_ns()) | 1;
    }
    id
}

/// The geometry `mkfs` would write on a device of `total_bytes` (for dry runs).
impl Log {
    /// Resume writing at `seg:offset` (a checkpoint's log head). `seg` must already be Active
    /// in `usage`; a successor is chosen now.
    pub fn open(
        sb: Arc<Superblock>,
        dev: Arc<dyn Device>,
        usage: &mut UsageTable,
        seg: SegNo,
        offset: u32,
        next_seq: u64,
        log_id: u64,
    ) -> Result<Log> {
        let seg_bytes = sb.seg_bytes() as usize;
        let mut buf = vec![0u8; seg_bytes];
        if offset > 0 {
            // Keep the segment's earlier blocks so reads of them can be served from memory.
            dev.read_at(
                &mut buf[..offset as usize * BLOCK_SIZE],
                sb.seg_addr(seg).byte_offset(),
            )?;
        }
        let next_seg = usage.pick_clean(seg).ok_or(FsError::NoSpace)?;
        usage.activate(next_seg, now_ns());
        let fs_id = fs_id(&sb.uuid);
        Ok(Log {
            sb,
            backend: BackEnd::start(dev),
            seg,
            next_seg,
            buf,
            fill: offset,
            written: offset,
            unit: None,
            next_seq,
            log_id,
            fs_id,
            in_group: false,
            group_flags: 0,
            units_written: 0,
            segments_written: 0,
        })
    }

    pub fn head(&self) -> (SegNo, u32) {
        (self.seg, self.fill)
    }
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn current_segment(&self) -> SegNo {
        self.seg
    }
    pub fn next_segment(&self) -> SegNo {
        self.next_seg
    }
    pub fn log_id(&self) -> u64 {
        self.log_id
    }
    /// Blocks still free in the current segment.
    pub fn room_in_segment(&self) -> u64 {
        (self.sb.seg_blocks - self.fill) as u64
    }

    pub fn begin_group(&mut self, flags: u16) {
        debug_assert!(!self.in_group);
        self.in_group = true;
        self.group_flags = flags;
    }

    pub fn end_group(&mut self, usage: &mut UsageTable) {
        self.seal_unit(false, usage);
        self.in_group = false;
        self.group_flags = 0;
    }

    /// Append one payload block; returns its address. `data` must be one block.
    pub fn append(
        &mut self,
        usage: &mut UsageTable,
        entry: SummaryEntry,
        data: &[u8],
    ) -> Result<BlockAddr> {
        if self.backend.poisoned() {
            return Err(FsError::Poisoned);
        }
        debug_assert_eq!(data.len(), BLOCK_SIZE);
        let unit_full = self
            .unit
            .as_ref()
            .is_some_and(|u| u.entries.len() >= SUMMARY_MAX_ENTRIES);
        if unit_full || (self.unit.is_some() && self.fill >= self.sb.seg_blocks) {
            self.seal_unit(self.in_group, usage);
        }
        if self.unit.is_none() {
            if self.fill + 2 > self.sb.seg_blocks {
                self.next_segment_now(usage)?;
            }
            self.unit = Some(OpenUnit {
                start: self.fill,
                entries: Vec::new(),
            });
            self.fill += 1;
        }
        let off = self.fill as usize * BLOCK_SIZE;
        let n = data.len().min(BLOCK_SIZE);
        self.buf[off..off + n].copy_from_slice(&data[..n]);
        self.buf[off + n..off + BLOCK_SIZE].fill(0);
        let addr = self.sb.seg_addr(self.seg) + self.fill as u64;
        self.fill += 1;
        if let Some(u) = self.unit.as_mut() {
            u.entries.push(entry);
        }
        Ok(addr)
    }

    fn seal_unit(&mut self, cont: bool, usage: &mut UsageTable) {
        let Some(u) = self.unit.take() else { return };
        let start = u.start as usize;
        let n = u.entries.len();
        if n == 0 {
            // Nothing was appended after the summary was reserved; give the block back.
            self.fill = u.start;
            return;
        }
        let payload = &self.buf[(start + 1) * BLOCK_SIZE..(start + 1 + n) * BLOCK_SIZE];
        let s = Summary {
            flags: self.group_flags | if cont { FLAG_CONT } else { 0 },
            seq: self.next_seq,
            log_id: self.log_id,
            segment: self.seg,
            offset: u.start,
            next_segment: self.next_seg,
            timestamp_ns: now_ns(),
            data_crc: data_crc(payload.chunks(BLOCK_SIZE)),
            fs_id: self.fs_id,
            entries: u.entries,
        };
        self.buf[start * BLOCK_SIZE..(start + 1) * BLOCK_SIZE].copy_from_slice(&s.encode());
        self.next_seq += 1;
        self.units_written += 1;
        usage.written(self.seg, s.timestamp_ns);
    }

    /// The current segment is full: hand it to the writer and move to the successor.
    fn next_segment_now(&mut self, usage: &mut UsageTable) -> Result<()> {
        debug_assert!(self.unit.is_none());
        let new_next = usage.pick_clean(self.next_seg).ok_or(FsError::NoSpace)?;
        let seg_bytes = self.sb.seg_bytes() as usize;
        let full = std::mem::replace(&mut self.buf, vec![0u8; seg_bytes]);
        let from = self.written as usize * BLOCK_SIZE;
        let to = self.fill as usize * BLOCK_SIZE;
        let offset = (self.sb.seg_addr(self.seg) + self.written as u64).byte_offset();
        if to > from {
            self.backend.write(
                offset,
                Arc::new(full),
                from,
                to,
                Some(self.sb.seg_addr(self.seg)),
            )?;
        }
        self.segments_written += 1;
        usage.seal(self.seg);
        self.seg = self.next_seg;
        self.next_seg = new_next;
        usage.activate(new_next, now_ns());
        self.fill = 0;
        self.written = 0;
        Ok(())
    }

    /// Write everything appended so far and make it durable.
    pub fn sync(&mut self, usage: &mut UsageTable) -> Result<()> {
        self.seal_unit(false, usage);
        if self.fill > self.written {
            let from = self.written as usize * BLOCK_SIZE;
            let to = self.fill as usize * BLOCK_SIZE;
            let part = Arc::new(self.buf[from..to].to_vec());
            let offset = (self.sb.seg_addr(self.seg) + self.written as u64).byte_offset();
            let len = part.len();
            self.backend.write(offset, part, 0, len, None)?;
            self.written = self.fill;
        }
        self.backend.flush().map_err(|e| {
            tracing::error!(error = %e, "sync failed");
            FsError::Io(e)
        })
    }

    /// A block still held in memory (current segment or a segment being written).
    pub fn read_cached(&self, addr: BlockAddr) -> Option<Vec<u8>> {
        let seg = self.sb.seg_of(addr)?;
        let off = (addr - self.sb.seg_addr(seg)) as usize;
        if seg == self.seg {
            return (off < self.fill as usize)
                .then(|| self.buf[off * BLOCK_SIZE..(off + 1) * BLOCK_SIZE].to_vec());
        }
        self.backend.held_block(addr)
    }
}
