//! FITRIM: hand the storage back the segments that hold nothing (those emptied by deletes
//! since the last checkpoint included: one checkpoint makes them Clean).
//!
//! Only Clean segments qualify: the newest durable checkpoint needs nothing in them (a
//! cleaned segment stays Freed until a checkpoint made its copies the ones the maps name,
//! see `UsageTable::release`), and the log's next segment is already Active. Roll-forward
//! reads zeros or old bytes in a discarded segment alike: neither carries a summary of
//! this log's generation, so it stops there as it always has. The lock is held throughout,
//! so no segment can be chosen for writing while it is being discarded.

use super::inner::Inner;
use crate::error::{FsError, Result};
use crate::format::{SegNo, BLOCK_BYTES};
use crate::usage::SegState;
use std::io;

/// What one FITRIM did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trimmed {
    /// Bytes discarded (what `fstrim -v` prints).
    pub bytes: u64,
    /// Extents (runs of adjacent clean segments) discarded.
    pub extents: u64,
}

impl Inner {
    /// Discard the clean segments in `[start, start + len)` bytes, in runs of at least
    /// `minlen` bytes, as ext4's FITRIM: EINVAL for a start past the end of the
    /// filesystem or a length under one block.
    pub(crate) fn trim(&mut self, start: u64, len: u64, minlen: u64) -> Result<Trimmed> {
        let sb = self.st.sb().clone();
        let fs_bytes = sb.total_blocks * BLOCK_BYTES;
        if start >= fs_bytes || len < BLOCK_BYTES || minlen > fs_bytes {
            return Err(FsError::Invalid("trim range outside the filesystem"));
        }
        // A user who deleted files before fstrim expects their space back in the image. The
        // segments that held them are Freed (every block dead: `UsageTable::kill`), or Full
        // with nothing live (sealed so); the first become Clean at the next checkpoint, the
        // second once cleaned, which copies nothing and checkpoints.
        let (mut freed, mut empty) = (false, Vec::new());
        for (seg, i) in self.st.usage().iter() {
            freed |= i.state == SegState::Freed;
            if i.state == SegState::Full && i.live_bytes == 0 {
                empty.push(seg);
            }
        }
        if !empty.is_empty() {
            self.clean(&empty)?;
        } else if freed {
            self.checkpoint()?;
        }
        let end = start.saturating_add(len).min(fs_bytes);
        let seg_bytes = sb.seg_bytes();
        let base = sb.seg_addr(SegNo(0)).byte_offset();
        let first = start.saturating_sub(base) / seg_bytes;
        let mut done = Trimmed::default();
        let mut run: Option<(u64, u64)> = None; // byte range of clean segments in a row
        for seg in (first..sb.nsegs).map(SegNo) {
            let at = base + seg.get() * seg_bytes;
            if at >= end {
                break;
            }
            let clean = self.st.usage().get(seg).map(|s| s.state) == Some(SegState::Clean);
            // The part of the segment inside the asked range.
            let (a, b) = (at.max(start), (at + seg_bytes).min(end));
            match (&mut run, clean) {
                (Some((_, e)), true) if *e == a => *e = b,
                (_, true) => {
                    if let Some(r) = run.replace((a, b)) {
                        self.discard_run(r, minlen, &mut done)?;
                    }
                }
                (_, false) => {
                    if let Some(r) = run.take() {
                        self.discard_run(r, minlen, &mut done)?;
                    }
                }
            }
        }
        if let Some(r) = run {
            self.discard_run(r, minlen, &mut done)?;
        }
        Ok(done)
    }

    fn discard_run(&self, (a, b): (u64, u64), minlen: u64, done: &mut Trimmed) -> Result<()> {
        let n = b - a;
        if n < minlen.max(BLOCK_BYTES) {
            return Ok(());
        }
        match self.st.dev().discard(a, n) {
            Ok(()) => {
                done.bytes += n;
                done.extents += 1;
                Ok(())
            }
            Err(e)
                if e.kind() == io::ErrorKind::Unsupported
                    || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                Err(FsError::NotSupported)
            }
            Err(e) => Err(FsError::Io(e)),
        }
    }
}
