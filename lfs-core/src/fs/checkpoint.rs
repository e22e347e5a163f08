//! Checkpoints (mount and mkfs are in mount.rs and mkfs.rs).
//!
//! ## The checkpoint, step by step (crash argument in docs/FORMAT.md)
//! 1. Flush group: all dirty file state.
//! 2. Dirty inode-map blocks, then dirty segment-usage blocks, into the log (flag CHECKPOINT).
//!    Usage blocks are not counted in live bytes (counting them would change the table they
//!    record); a segment holding one the checkpoint points at is *pinned* instead, and one
//!    in a Freed segment is rewritten so that segment can be released.
//! 3. Sync: everything the checkpoint points at is durable.
//! 4. The region for generation g+1 (odd → A, even → B: always the older one), then flush.
//! 5. Segments freed before step 2 (and not pinned) become Clean.

use super::inner::Inner;
use crate::error::{FsError, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::summary::{BlockKind, SummaryEntry, FLAG_CHECKPOINT};
use crate::format::table::{encode_imap_block, encode_usage_block};
use crate::format::{SegNo, BLOCK_BYTES};
use crate::log::now_ns;
use crate::usage::SegState;
use std::collections::HashSet;
use std::sync::Arc;

impl Inner {
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        self.checkpoint_with(false)
    }

    pub(crate) fn checkpoint_with(&mut self, clean: bool) -> Result<()> {
        if self.st.log().is_none() {
            return Err(FsError::ReadOnly);
        }
        self.flush_all()?;
        let sb = self.st.sb().clone();
        self.st.begin_group(FLAG_CHECKPOINT)?;
        let res = self.write_tables();
        self.st.end_group()?;
        let to_release = res?;
        self.st.sync()?;
        let appended = self.st.appended();
        let log = self.st.log_mut()?;
        let (mut hs, mut ho) = log.head();
        if ho + 2 > sb.seg_blocks {
            (hs, ho) = (log.next_segment(), 0);
        }
        let generation = self.cp.generation() + 1;
        let c = Checkpoint {
            generation,
            timestamp_ns: now_ns(),
            clean_unmount: clean,
            head_segment: hs,
            head_offset: ho,
            next_seq: log.next_seq(),
            log_id: log.log_id(),
            imap_addrs: self.cp.imap_addrs().to_vec(),
            usage_addrs: self.cp.usage_addrs().to_vec(),
        };
        let region = if generation % 2 == 1 {
            sb.cp_a
        } else {
            sb.cp_b
        };
        let bytes = Arc::new(c.encode(&sb));
        let len = bytes.len();
        log.backend
            .write(region.byte_offset(), bytes, 0, len, None)?;
        log.backend.flush()?;
        self.cp.checkpointed(generation, appended);
        let pinned: HashSet<SegNo> = self
            .cp
            .usage_addrs()
            .iter()
            .filter_map(|&a| sb.seg_of(a))
            .collect();
        let release: Vec<SegNo> = to_release
            .into_iter()
            .filter(|s| !pinned.contains(s))
            .collect();
        self.st.usage_mut().release(&release);
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Step 2: write dirty imap and usage blocks; returns the segments to release.
    fn write_tables(&mut self) -> Result<Vec<SegNo>> {
        let sb = self.st.sb().clone();
        for idx in self.imap.dirty_blocks() {
            let bytes = encode_imap_block(idx as u32, self.imap.block(idx));
            let addr = self.st.append_counted(
                SummaryEntry::table(BlockKind::Imap, idx as u64),
                &bytes,
                BLOCK_BYTES,
            )?;
            let old = self.cp.moved_imap_block(idx, addr);
            if !old.is_none() {
                self.st.kill_bytes(old, BLOCK_BYTES);
            }
            self.imap.clear_dirty(idx);
        }
        for (idx, &addr) in self.cp.usage_addrs().to_vec().iter().enumerate() {
            let state = sb
                .seg_of(addr)
                .and_then(|s| self.st.usage().get(s))
                .map(|s| s.state);
            if addr.is_none() || matches!(state, Some(SegState::Freed) | Some(SegState::Cleaning)) {
                self.st.usage_mut().mark_dirty(idx);
            }
        }
        let to_release = self.st.usage().freed();
        // Appending may activate a segment and so dirty a block again; a few rounds settle it
        // (the recorded state of such a segment does not change: see UsageTable::block_entries).
        for _ in 0..4 {
            let dirty = self.st.usage().dirty_blocks();
            if dirty.is_empty() {
                break;
            }
            for idx in dirty {
                self.st.usage_mut().clear_dirty(idx);
                let bytes = encode_usage_block(idx as u32, &self.st.usage().block_entries(idx));
                let addr = self.st.append_counted(
                    SummaryEntry::table(BlockKind::Usage, idx as u64),
                    &bytes,
                    0,
                )?;
                self.cp.moved_usage_block(idx, addr);
            }
        }
        Ok(to_release)
    }
}
