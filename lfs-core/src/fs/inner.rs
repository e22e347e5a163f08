//! The engine's state, owned by its layers, and the few steps every operation shares
//! (commit, the after-write duties). Everything in `fs` works on an [`Inner`] under the one
//! lock that [`super::Fs`] holds.

use super::admission::Admission;
use super::durability::Durability;
use super::icache::InodeCache;
use super::reserve::Reservations;
use super::store::Store;
use super::types::{MountOptions, Stats};
use crate::error::Result;
use crate::imap::Imap;

/// The engine's state, one part per layer, each a type of its own whose fields only its
/// file can touch (store.rs, icache.rs, durability.rs, admission.rs, reserve.rs; the inode map
/// in crate::imap). The four the checker reads are visible to `crate::fsck`; the rest only
/// here in `fs`.
pub(crate) struct Inner {
    /// Below the inodes: the device, the log, the segment usage table, the block cache.
    pub(crate) st: Store,
    pub(crate) imap: Imap,
    pub(crate) inodes: InodeCache,
    /// The checkpoint in force, and when things were last made durable.
    pub(crate) cp: Durability,
    pub(super) opts: MountOptions,
    pub(super) stats: Stats,
    /// [`super::Fs::shutdown`] ran: the final checkpoint is written and the device released; no
    /// more writes. Holds how the final checkpoint went, for every later caller.
    pub(super) shut_down: Option<std::result::Result<(), String>>,
    /// Room kept for the kernel's writeback cache, and the last refusal (space.rs).
    pub(super) space: Admission,
    /// Space fallocate granted, kept for the writes it was granted to (`reserve.rs`).
    pub(super) reservations: Reservations,
    /// The operation under way changed an inode flagged `S` or a directory flagged `D`:
    /// `after_write` makes it durable before the call returns.
    pub(super) sync_due: bool,
}

impl Inner {
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        if let Some(l) = self.st.log() {
            s.units_written = l.units_written;
            s.segments_written = l.segments_written;
        }
        s.blocks_appended = self.st.appended();
        (s.cache_hits, s.cache_misses) = self.st.cache_counts();
        s.cached_inodes = self.inodes.len() as u64;
        s.clean_segments = self.st.usage().clean_count();
        s.live_bytes = self.st.usage().total_live_bytes();
        s.usage_underflows = self.st.usage().underflows;
        s
    }

    pub(super) fn has_changes(&self) -> bool {
        self.inodes.has_dirty() || self.cp.since_checkpoint(self.st.appended()) > 0
    }

    /// Anything not yet durable: dirty state in memory, or log written since the last
    /// device flush.
    pub(super) fn has_uncommitted(&self) -> bool {
        self.inodes.has_dirty()
            || self.inodes.dirty_blocks() > 0
            || self.cp.since_commit(self.st.appended()) > 0
    }

    /// Make everything durable: one flush group for all that is dirty, one device flush
    /// (found again by roll-forward; no checkpoint).
    pub(super) fn commit(&mut self) -> Result<()> {
        self.flush_all()?;
        self.st.sync()?;
        self.cp.committed(self.st.appended());
        Ok(())
    }

    /// After every modifying operation: write back dirty data past the threshold, and
    /// checkpoint when enough was written since the last one.
    pub(super) fn after_write(&mut self) -> Result<()> {
        if std::mem::take(&mut self.sync_due) {
            self.commit()?;
            self.stats.syncs += 1;
        }
        if self.inodes.dirty_blocks() > self.opts.writeback_blocks {
            self.writeback()?;
        }
        if self.cp.since_checkpoint(self.st.appended()) > self.opts.checkpoint_blocks {
            self.checkpoint()?;
        }
        Ok(())
    }
}
