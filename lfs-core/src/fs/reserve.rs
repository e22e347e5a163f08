//! Space that fallocate(2) granted, kept for the writes it was granted to.
//!
//! A log-structured filesystem cannot allocate places in advance — every write, into a hole
//! or over old data, goes to a new place at the head of the log — but it can promise space.
//! `fallocate(fd, 0 | FALLOC_FL_KEEP_SIZE, off, len)` reserves one block for every block
//! of the range, plus an allowance for the tree nodes that writing them will dirty; every
//! other consumer of space (`check_space`) leaves the reservations alone, and the first
//! write of each reserved block draws on its file's reservation instead of the free
//! space. So a program that fallocates and then writes its range meets no ENOSPC however
//! full the disk gets meanwhile — posix_fallocate's promise. A block written once is
//! released from the reservation (writing it again needs space like any overwrite: the
//! cleaner then reclaims the dead copy). Truncating, punching or deleting the file gives
//! the rest back.
//!
//! Reservations live in memory, for the life of the mount: the on-disk format records no
//! unwritten ranges (format v2 will). After a remount a preallocated range is ordinary
//! space again.

use crate::format::Ino;
use std::collections::HashMap;

/// Per-file reservations: ranges of logical blocks, and the node allowance.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    files: HashMap<Ino, FileReservation>,
    /// Blocks held, over all files (ranges and node allowances).
    total: u64,
}

#[derive(Debug, Default)]
struct FileReservation {
    /// Sorted, disjoint, non-adjacent half-open ranges of logical blocks.
    ranges: Vec<(u64, u64)>,
    /// Blocks kept for the tree nodes the reserved blocks' writes will dirty.
    nodes: u64,
}

impl FileReservation {
    fn blocks(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Blocks of [start, end) inside the ranges.
    fn covered(&self, start: u64, end: u64) -> u64 {
        self.ranges
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// Remove [start, end) from the ranges; returns the blocks removed.
    fn remove(&mut self, start: u64, end: u64) -> u64 {
        let removed = self.covered(start, end);
        if removed == 0 {
            return 0;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.ranges = out;
        removed
    }

    /// Add [start, end); returns the blocks that were not reserved yet.
    fn add(&mut self, start: u64, end: u64) -> u64 {
        let added = (end - start) - self.covered(start, end);
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(rs, re) in &self.ranges {
            if re < s || rs > e {
                out.push((rs, re));
            } else {
                s = s.min(rs);
                e = e.max(re);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.ranges = out;
        added
    }
}

/// The overhead allowance for `blocks` reserved data blocks: what writing them adds to the
/// log beyond the blocks themselves — tree nodes (a leaf per 512 blocks, in any order more),
/// summaries, inode, map and usage blocks, segment tails (about 1.6% in all, as
/// `pending_blocks` counts it) — generously: 1/32 and 32 blocks. The rest goes back when the
/// range is written.
pub(crate) fn node_allowance(blocks: u64) -> u64 {
    blocks.div_ceil(32) + 32
}

impl Reservations {
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Blocks [start, end) of `ino` not reserved yet, and what reserving them would add
    /// (with the node allowance) — what the caller must find free first.
    pub fn cost(&self, ino: Ino, start: u64, end: u64) -> u64 {
        let have = self.files.get(&ino).map_or(0, |f| f.covered(start, end));
        let new = (end - start) - have;
        if new == 0 {
            0
        } else {
            new + node_allowance(new)
        }
    }

    /// Reserve [start, end) of `ino`.
    pub fn reserve(&mut self, ino: Ino, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let f = self.files.entry(ino).or_default();
        let added = f.add(start, end);
        if added > 0 {
            let nodes = node_allowance(added);
            f.nodes += nodes;
            self.total += added + nodes;
        }
    }

    /// What a write of blocks [start, end) of `ino` may draw from the reservation: its
    /// reserved blocks and the file's whole overhead allowance; 0 when it touches none of
    /// the reserved blocks (a write elsewhere in the file gets nothing).
    pub fn credit(&self, ino: Ino, start: u64, end: u64) -> u64 {
        let Some(f) = self.files.get(&ino) else {
            return 0;
        };
        // The allowance in proportion (a write that straddles the range's edge must not
        // take what the rest of the range will need), never less than a path's worth.
        match f.covered(start, end) {
            0 => 0,
            data => data + f.nodes.min(node_allowance(data)),
        }
    }

    /// The write of [start, end) of `ino` happened and added `grown` blocks to what the log
    /// owes: its reserved blocks leave the reservation (all of them, written now or already
    /// buffered), and the overhead beyond them comes out of the allowance.
    pub fn consume(&mut self, ino: Ino, start: u64, end: u64, grown: u64) {
        let Some(f) = self.files.get_mut(&ino) else {
            return;
        };
        let removed = f.remove(start, end);
        if removed == 0 {
            return;
        }
        let nodes = f.nodes.min(grown.saturating_sub(removed));
        f.nodes -= nodes;
        self.total -= removed + nodes;
        self.forget_if_empty(ino);
    }

    /// Blocks still reserved for `ino`'s data.
    pub fn unwritten(&self, ino: Ino) -> u64 {
        self.files.get(&ino).map_or(0, |f| f.blocks())
    }

    /// Give back the reservation of blocks from `start` on (truncate; `start` 0: all of it,
    /// the file is gone).
    pub fn release_from(&mut self, ino: Ino, start: u64) {
        self.release(ino, start, u64::MAX);
    }

    /// Give back the reservation of blocks [start, end) (a punched hole).
    pub fn release(&mut self, ino: Ino, start: u64, end: u64) {
        let Some(f) = self.files.get_mut(&ino) else {
            return;
        };
        self.total -= f.remove(start, end);
        self.forget_if_empty(ino);
    }

    fn forget_if_empty(&mut self, ino: Ino) {
        if let Some(f) = self.files.get(&ino) {
            if f.ranges.is_empty() {
                self.total -= f.nodes;
                self.files.remove(&ino);
            }
        }
    }

    /// Blocks reserved for `ino`'s data (tests and fsck-style checks).
    #[cfg(test)]
    pub fn blocks_of(&self, ino: Ino) -> u64 {
        self.files.get(&ino).map_or(0, |f| f.blocks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_split_and_count() {
        let mut r = Reservations::default();
        r.reserve(Ino(5), 10, 20);
        r.reserve(Ino(5), 15, 30); // overlaps: 10 more
        assert_eq!(r.blocks_of(Ino(5)), 20);
        assert_eq!(r.total(), 10 + node_allowance(10) + 10 + node_allowance(10));
        assert_eq!(r.cost(Ino(5), 0, 40), 20 + node_allowance(20));
        assert_eq!(r.cost(Ino(5), 12, 28), 0);
        // A write of 4 reserved blocks may draw them and the whole allowance; growing the
        // log's debt by 6, it takes 4 blocks and 2 of allowance.
        assert_eq!(r.credit(Ino(5), 12, 16), 4 + node_allowance(4));
        let before = r.total();
        r.consume(Ino(5), 12, 16, 6);
        assert_eq!(r.total(), before - 6);
        assert_eq!(r.blocks_of(Ino(5)), 16);
        // Written blocks are no longer reserved: writing them again draws nothing.
        assert_eq!(r.credit(Ino(5), 12, 16), 0);
        // Punch the middle, truncate the tail, then everything goes with the last range.
        r.release(Ino(5), 20, 25);
        assert_eq!(r.blocks_of(Ino(5)), 11);
        r.release_from(Ino(5), 26);
        assert_eq!(r.blocks_of(Ino(5)), 7);
        r.release_from(Ino(5), 0);
        assert_eq!(r.total(), 0);
        assert!(r.files.is_empty());
    }

    #[test]
    fn a_write_outside_the_range_draws_nothing() {
        let mut r = Reservations::default();
        r.reserve(Ino(7), 100, 200);
        assert_eq!(r.credit(Ino(7), 0, 10), 0);
        // Straddling: the covered blocks and the allowance.
        assert_eq!(r.credit(Ino(7), 95, 105), 5 + node_allowance(5));
        assert_eq!(r.credit(Ino(8), 100, 110), 0);
    }
}
