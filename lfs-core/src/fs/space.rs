//! Space: what statfs reports, and admission — whether an operation may add blocks to the
//! log (`check_space`, by `Admit` class), making room first when it can (a flush, a
//! checkpoint, foreground cleaning through the cleaner's `VictimPicker`).

use super::admission::{Admit, OutOfSpace};
use super::inner::Inner;
use super::types::StatFs;
use crate::error::{FsError, Result};
use crate::format::{BLOCK_BYTES, BLOCK_SIZE, MAX_NAME_LEN};
use crate::usage::SegState;

impl Inner {
    pub(crate) fn statfs(&self) -> StatFs {
        let sb = &self.st.sb();
        let total = sb.nsegs * sb.seg_blocks as u64;
        let reserve = sb.reserved_segs as u64 * sb.seg_blocks as u64;
        let pending = self.pending_blocks();
        // Dead space in full segments is free too: a writer that needs it gets it back by
        // cleaning (check_space), so df drops when files are deleted, as in F2FS. Not
        // counted: what a segment spends on summaries and an unusable tail (1/32 of it),
        // which moving its live blocks elsewhere costs again.
        let seg_blocks = sb.seg_blocks as u64;
        let reclaimable: u64 = self
            .st
            .usage()
            .iter()
            .map(|(_, s)| match s.state {
                // Empty already; clean once the next checkpoint is durable.
                SegState::Freed => seg_blocks,
                SegState::Full => {
                    let live = s.live_bytes.div_ceil(BLOCK_BYTES).min(seg_blocks);
                    (seg_blocks - live).saturating_sub(seg_blocks / 32)
                }
                _ => 0,
            })
            .sum();
        let free = (self.st.free_blocks() + reclaimable).saturating_sub(pending);
        // The reserve is not part of the capacity users see, so free never exceeds total.
        // Nor is the room kept for what the kernel's writeback cache holds: a writer meets
        // ENOSPC when only that is left (`check_space`).
        let usable = total - reserve;
        let room =
            free.saturating_sub(reserve + self.space.cache_reserve() + self.reservations.total());
        // Less what writing it costs the log besides the data (tree nodes, summaries,
        // inodes, segment tails: about 1.6%, counted generously as a 32nd), so that what df
        // says is free can be written — or preallocated in one fallocate, whose reservation
        // includes that overhead (reserve.rs).
        // (Free counts it, as ext4's free counts its reserved blocks: an empty filesystem
        // shows next to nothing used, and "available" is what can really be written.)
        let avail = (room - room / 32).min(usable);
        // Size and free count the cleaner's reserve as ext4's count the blocks kept for root
        // (available does not): every segment is in the size, so what FITRIM discards (all
        // clean segments, the reserve's among them) never exceeds it, and an empty
        // filesystem shows nothing used.
        let free_incl_reserve =
            free.saturating_sub(self.space.cache_reserve() + self.reservations.total());
        StatFs {
            block_size: BLOCK_SIZE as u32,
            blocks: total,
            blocks_free: free_incl_reserve.min(total),
            blocks_avail: avail,
            files: self.imap.capacity() - 1,
            files_free: self.imap.capacity() - 1 - self.imap.allocated_count(),
            name_max: MAX_NAME_LEN as u32,
        }
    }

    /// Blocks that could still be written, cleaning what can be cleaned, keeping every
    /// reserve — roughly (dead space counts less a 32nd for what moving live blocks costs,
    /// as `statfs` counts it) and cheaply (no walk over the segments).
    pub(crate) fn headroom_blocks(&self) -> u64 {
        let sb = &self.st.sb();
        let reserve = sb.reserved_segs as u64 * sb.seg_blocks as u64
            + self.space.cache_reserve()
            + self.reservations.total();
        let reclaimable = self.st.usage().reclaimable_bytes() / BLOCK_BYTES;
        (self.st.free_blocks() + reclaimable - reclaimable / 32)
            .saturating_sub(self.pending_blocks() + reserve)
    }

    /// Blocks a flush and checkpoint of everything dirty could need, generously.
    pub(crate) fn pending_blocks(&self) -> u64 {
        // Dirty blocks, and the tree nodes dirty or to be dirtied by writing them out (each
        // inode keeps that bound: `Inode::buffer`).
        let (data, slots) = self.inodes.pending();
        // Inode blocks, tombstones, imap and usage blocks, summaries and the tails of
        // segments the log skips.
        let inodes = slots.div_ceil(15);
        let tables = self.imap.dirty_count() as u64
            + 2 * (self.imap.dirty_count() as u64).max(8)
            + self.st.usage().nblocks() as u64;
        let body = data + inodes + tables;
        body + body / 128 + 4 + 2 * (body / self.st.sb().seg_blocks as u64 + 1)
    }

    /// Refuse an operation that would add `new_blocks` when the log could not take them and
    /// still keep what `kind` must leave (see [`Admit`]): metadata operations may use half the
    /// cleaner's reserve, so deleting and renaming still work on a full disk; data from the
    /// kernel's writeback cache may use the cache reserve, kept for it from everything else.
    ///
    /// When the room is not there it is made: dirty state written out, freed segments
    /// reclaimed by a checkpoint, then foreground cleaning. A refusal is remembered, and the
    /// next writer that would need the same work is refused at once, until more than was
    /// lacking has died (a delete, a truncate): without that, a writer hammering a full disk
    /// (the kernel retrying writeback) made every refused write flush, checkpoint and clean
    /// again — tens of thousands of checkpoints and gigabytes rewritten for nothing.
    pub(crate) fn check_space(&mut self, new_blocks: u64, kind: Admit) -> Result<()> {
        self.check_space_credited(new_blocks, kind, 0)
    }

    /// [`check_space`](Self::check_space) for a write that may draw up to `credit` blocks
    /// from what fallocate reserved for it (`reserve.rs`).
    pub(crate) fn check_space_credited(
        &mut self,
        new_blocks: u64,
        kind: Admit,
        credit: u64,
    ) -> Result<()> {
        let sb = &self.st.sb();
        let cleaner = sb.reserved_segs as u64 * sb.seg_blocks as u64;
        // What fallocate promised is kept from everyone; a write into a reserved range
        // asks only for what its reservation does not cover (`Inner::write`).
        let promised = self.reservations.total().saturating_sub(credit);
        let reserve = promised
            + match kind {
                Admit::Meta => cleaner / 2 + self.space.cache_reserve(),
                Admit::Cached => cleaner,
                Admit::Data => cleaner + self.space.cache_reserve(),
            };
        let want = |me: &Self| me.pending_blocks() + new_blocks + reserve;
        if self.st.free_blocks() >= want(self) {
            return Ok(());
        }
        if self.space.still_refused(
            new_blocks + reserve,
            self.st.free_blocks(),
            self.st.usage().killed_bytes,
            !self.st.usage().freed().is_empty(),
        ) {
            return Err(FsError::NoSpace);
        }
        let r = self.make_room(new_blocks, reserve);
        let refusal = match r {
            Err(FsError::NoSpace) => Some(OutOfSpace {
                asked_blocks: new_blocks + reserve,
                free_blocks: self.st.free_blocks(),
                killed_bytes: self.st.usage().killed_bytes,
                lacking_bytes: want(self).saturating_sub(self.st.free_blocks()) * BLOCK_BYTES,
            }),
            _ => None,
        };
        self.space.record(refusal);
        r
    }

    /// The slow half of `check_space`: make `new_blocks` fit above `reserve`, or NoSpace.
    fn make_room(&mut self, new_blocks: u64, reserve: u64) -> Result<()> {
        if self.pending_blocks() > 64 {
            // The estimate for dirty state is pessimistic (every dirty inode may need four
            // indirect blocks); write it out and look at what it really took. Safe here:
            // callers check space before they change anything.
            self.flush_all()?;
            if self.st.free_blocks() >= self.pending_blocks() + new_blocks + reserve {
                return Ok(());
            }
        }
        if !self.st.usage().freed().is_empty() {
            // Segments that died entirely come back at the next checkpoint.
            self.checkpoint()?;
            if self.st.free_blocks() >= self.pending_blocks() + new_blocks + reserve {
                return Ok(());
            }
        }
        // Foreground cleaning: the writer waits while the cleaner makes room, as long as
        // passes gain free space. It cleans a burst (a pass's worth of segments beyond
        // what this write needs): back-to-back passes put the cleaner's output — old, cold
        // data — together in the log instead of interleaving it with the hot data being
        // written, which is what lets cost-benefit tell cold segments from hot ones.
        let Some(picker) = self.opts.cleaner.clone() else {
            return Err(FsError::NoSpace);
        };
        // At most a quarter of the dead space, though: on a nearly full disk a long burst
        // would squeeze segments that are almost all live.
        let dead: u64 = self
            .segment_views()
            .iter()
            .map(|v| v.dead_bytes() / BLOCK_BYTES)
            .sum();
        let burst = (self.opts.clean_segments_per_pass as u64 * self.st.sb().seg_blocks as u64)
            .min(dead / 4);
        let want = |me: &Self| me.pending_blocks() + new_blocks + reserve;
        let mut stalls = 0;
        for _ in 0..64 {
            let views = self.segment_views();
            let max = self.opts.clean_segments_per_pass;
            let victims = if stalls == 0 {
                picker.pick(&views, crate::log::now_ns(), max)
            } else {
                // The policy's choice gained nothing: the emptiest segments are the way out.
                picker.pick_emptiest(&views, max)
            };
            if victims.is_empty() {
                break;
            }
            let before = self.st.free_blocks();
            match self.clean(&victims) {
                Ok(_) => {}
                // The pass put its victims back; whatever room there is decides.
                Err(FsError::NoSpace) => break,
                Err(e) => return Err(e),
            }
            let free = self.st.free_blocks();
            if free >= want(self) + burst {
                return Ok(());
            }
            // A pass over nearly full victims can lose ground (its metadata outweighs what
            // it frees); three in a row without a gain mean there is nothing to win.
            if free <= before {
                stalls += 1;
                if stalls == 3 {
                    if free < want(self) {
                        tracing::warn!("foreground cleaning gains nothing; out of space");
                    }
                    break;
                }
            } else {
                stalls = 0;
            }
        }
        if self.st.free_blocks() >= want(self) {
            return Ok(());
        }
        Err(FsError::NoSpace)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::device::{Device, MemDevice};
    use crate::format::Ino;
    use crate::fs::{Creds, Fs, MountOptions};
    use crate::{mkfs, MkfsOptions};
    use std::sync::Arc;

    /// What `pending_blocks` promises a flush needs, and what it then appended.
    fn promised_and_taken(fs: &Fs) -> (u64, u64) {
        let mut g = fs.lock();
        let promised = g.pending_blocks();
        let before = g.st.appended();
        g.flush_all().unwrap();
        (promised, g.st.appended() - before)
    }

    #[test]
    fn the_space_bound_covers_what_a_flush_writes() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(256 << 20));
        mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let opts = MountOptions {
            writeback_blocks: u64::MAX,
            ..MountOptions::default()
        };
        let fs = Fs::mount(dev, opts).unwrap();
        // Single blocks far apart in a sparse file: each brings its own path of nodes, up
        // to the height-4 tree.
        let f = fs
            .create(Ino(1), b"sparse", 0o644, Creds::default())
            .unwrap();
        let mut x = 12345u64;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let block = (x >> 20) % ((1 << 32) - 1);
            fs.write(f.ino, block * 4096, &[7u8; 4096]).unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(taken > 300 * 3, "{taken}: the paths were written");
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // Overwriting the same blocks again: the nodes are there, and dirtied once each.
        for i in 0..300u64 {
            fs.write(f.ino, (12 + i * 511) * 4096, &[8u8; 4096])
                .unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // Many small files in one directory (direct blocks only, no nodes).
        for n in 0..2000 {
            let a = fs
                .create(Ino(1), format!("f{n}").as_bytes(), 0o644, Creds::default())
                .unwrap();
            fs.write(a.ino, 0, &[1u8; 100]).unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // And the bound is not wildly loose for dense data in 1 MiB files: within a
        // quarter of what the flush took (the old estimate asked for 4 nodes per file).
        for n in 0..100u64 {
            let a = fs
                .create(Ino(1), format!("m{n}").as_bytes(), 0o644, Creds::default())
                .unwrap();
            for b in 0..16u64 {
                fs.write(a.ino, (n * 13 + b * 16) % 256 * 4096, &[2u8; 4096])
                    .unwrap();
            }
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        assert!(
            promised * 4 <= taken * 5,
            "promised {promised}, flush took {taken}"
        );
    }
}
