//! Reading write units where they lie: the one judge of a unit (roll-forward, fsck, the
//! inspector and the cleaner all use it), and the walk over one segment's units.

use super::inner::Inner;
use crate::format::summary::{self, data_crc, fs_id, Summary};
use crate::format::{BlockAddr, SegNo, BLOCK_SIZE};
use std::fmt;

/// Why the log ends where it does: the verdict on the first unit roll-forward did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOfLog {
    /// No summary there: nothing was written after the last unit.
    NoSummary,
    /// A summary from earlier: another sequence number, another log or another filesystem.
    Stale { seq: u64 },
    /// A position, size or successor that cannot be, or a segment the log cannot have entered.
    Bounds(String),
    /// The summary's checksum (or its contents) fails: a torn summary.
    TornSummary(String),
    /// The payload checksum fails: a torn unit.
    TornData,
    /// The device could not be read there.
    Unreadable(String),
}

impl fmt::Display for EndOfLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndOfLog::NoSummary => write!(f, "no summary"),
            EndOfLog::Stale { seq } => write!(f, "stale unit (seq {seq})"),
            EndOfLog::Bounds(w) => write!(f, "out of bounds: {w}"),
            EndOfLog::TornSummary(w) => write!(f, "torn summary: {w}"),
            EndOfLog::TornData => write!(f, "torn unit (payload checksum)"),
            EndOfLog::Unreadable(w) => write!(f, "unreadable: {w}"),
        }
    }
}

/// What the reader expects of the unit at a place.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// Roll-forward: exactly this sequence number, of this log.
    Exactly { seq: u64, log_id: u64 },
    /// A walk through a segment: any log of this filesystem, a sequence number above `seq`
    /// (a segment is written front to back, so an older unit further on is a leftover of an
    /// earlier pass over the segment).
    After { seq: Option<u64> },
}

/// Where a unit's blocks are read from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Device,
    /// The whole segment, already read (the cleaner reads each victim once).
    Segment(&'a [u8]),
}

/// A unit judged whole, with its payload.
pub(crate) struct ReadUnit {
    pub summary: Summary,
    pub payload: Vec<u8>,
}

/// One whole unit found by [`Fs::scan_segment`](crate::Fs::scan_segment).
#[derive(Debug, Clone)]
pub struct ScannedUnit {
    /// Block offset of the summary in the segment.
    pub offset: u32,
    pub summary: Summary,
}

/// The units of one segment, front to back, up to the first place that holds no whole unit.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    pub segment: SegNo,
    pub units: Vec<ScannedUnit>,
    /// Where the walk stopped and why (the end of the segment is not a verdict: `None`).
    pub end: Option<(u32, EndOfLog)>,
}

impl SegmentScan {
    /// The summary entry describing block `addr` (the segment starts at `seg_start`), if a
    /// unit found holds it as payload.
    pub fn entry_at(
        &self,
        seg_start: BlockAddr,
        addr: BlockAddr,
    ) -> Option<&summary::SummaryEntry> {
        let rel = addr.get().checked_sub(seg_start.get())?;
        // The last unit whose summary lies before `rel`.
        let i = self
            .units
            .partition_point(|u| (u.offset as u64) < rel)
            .checked_sub(1)?;
        let u = &self.units[i];
        let k = rel.checked_sub(u.offset as u64 + 1)?;
        u.summary.entries.get(k as usize)
    }
}

impl Inner {
    /// Read the unit at `seg:off` and judge it in the fixed order of docs/FORMAT.md: magic,
    /// sequence and identity, bounds, summary checksum, payload checksum. `Err` is the
    /// verdict on a place that holds no unit the reader can take.
    pub(crate) fn judge_unit(
        &mut self,
        src: Source<'_>,
        seg: SegNo,
        off: u32,
        want: Want,
    ) -> std::result::Result<ReadUnit, EndOfLog> {
        let sb = self.st.sb().clone();
        let mut b = vec![0u8; BLOCK_SIZE];
        self.read_in_segment(src, seg, off, &mut b)?;
        // 1. magic.
        let p = summary::peek(&b).ok_or(EndOfLog::NoSummary)?;
        // 2. sequence number and identity.
        let ours = p.fs_id == fs_id(&sb.uuid);
        let expected = match want {
            Want::Exactly { seq, log_id } => p.seq == seq && p.log_id == log_id,
            Want::After { seq } => seq.is_none_or(|s| p.seq > s),
        };
        if !ours || !expected {
            return Err(EndOfLog::Stale { seq: p.seq });
        }
        // 3. bounds.
        let n = p.nblocks as u64;
        if p.segment != seg || p.offset != off {
            return Err(EndOfLog::Bounds(format!(
                "unit at {seg}:{off} says it is at {}:{}",
                p.segment, p.offset
            )));
        }
        if n == 0 || off as u64 + 1 + n > sb.seg_blocks as u64 || p.next_segment.get() >= sb.nsegs {
            return Err(EndOfLog::Bounds(format!(
                "unit at {seg}:{off}: {n} blocks, next segment {}",
                p.next_segment
            )));
        }
        // 4. the summary's own checksum and contents.
        let summary = Summary::decode(&b).map_err(|e| EndOfLog::TornSummary(e.to_string()))?;
        // 5. the payload.
        let mut payload = vec![0u8; n as usize * BLOCK_SIZE];
        self.read_in_segment(src, seg, off + 1, &mut payload)?;
        if data_crc(payload.chunks(BLOCK_SIZE)) != summary.data_crc {
            return Err(EndOfLog::TornData);
        }
        Ok(ReadUnit { summary, payload })
    }

    /// Fill `buf` from block `off` of segment `seg` on.
    fn read_in_segment(
        &self,
        src: Source<'_>,
        seg: SegNo,
        off: u32,
        buf: &mut [u8],
    ) -> std::result::Result<(), EndOfLog> {
        match src {
            Source::Device => {
                let addr = self.st.sb().seg_addr(seg) + off as u64;
                self.st
                    .dev()
                    .read_at(buf, addr.byte_offset())
                    .map_err(|e| EndOfLog::Unreadable(e.to_string()))
            }
            Source::Segment(all) => {
                let from = off as usize * BLOCK_SIZE;
                let part = all.get(from..from + buf.len()).ok_or_else(|| {
                    EndOfLog::Bounds(format!("block {off} is beyond the segment read"))
                })?;
                buf.copy_from_slice(part);
                Ok(())
            }
        }
    }

    /// Every whole unit of segment `seg`, front to back, read from `src`.
    pub(crate) fn scan_segment(&mut self, src: Source<'_>, seg: SegNo) -> SegmentScan {
        let seg_blocks = self.st.sb().seg_blocks;
        let mut scan = SegmentScan {
            segment: seg,
            units: Vec::new(),
            end: None,
        };
        let mut off = 0u32;
        let mut last_seq = None;
        while off + 2 <= seg_blocks {
            match self.judge_unit(src, seg, off, Want::After { seq: last_seq }) {
                Ok(u) => {
                    last_seq = Some(u.summary.seq);
                    let next = off + u.summary.unit_blocks();
                    scan.units.push(ScannedUnit {
                        offset: off,
                        summary: u.summary,
                    });
                    off = next;
                }
                Err(end) => {
                    scan.end = Some((off, end));
                    break;
                }
            }
        }
        scan
    }
}
