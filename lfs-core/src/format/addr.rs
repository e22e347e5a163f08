//! The block size, and the three numbers the format is made of, each its own type so that one cannot be passed
//! where another is meant: a block address, a segment number, an inode number. All three
//! are stored as little-endian u64 (docs/FORMAT.md); `.get()` gives the number for
//! arithmetic and encoding, and the constructors are plain (`SegNo(3)`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes per block; version 1 supports nothing else.
pub const BLOCK_SIZE: usize = 4096;
/// `BLOCK_SIZE` as a u64, for address arithmetic.
pub const BLOCK_BYTES: u64 = BLOCK_SIZE as u64;

/// A block address: blocks counted from the start of the device (block 0 holds the
/// superblock). 0 means "no block" wherever a pointer may be empty: nothing lives at block 0
/// but the superblock.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct BlockAddr(pub u64);

/// A segment number: segments counted from the first one, at the superblock's `seg_base`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct SegNo(pub u64);

/// A virtual block number (format version 2): an index into the DAT, which maps it to a
/// block address, a checksum and a lifetime. 0 means "no block" (a hole).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct VBlock(pub u64);

/// A checkpoint number (format version 2): 1, 2, 3 … one per checkpoint, never reused. The
/// era of a write is the number of the checkpoint that will include it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Cno(pub u64);

impl VBlock {
    pub const NONE: VBlock = VBlock(0);
    pub const fn get(self) -> u64 {
        self.0
    }
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl Cno {
    /// "Still current": the end of a lifetime that has not ended.
    pub const CURRENT: Cno = Cno(u64::MAX);
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// An inode number: its index in the inode map (the root is 1; 0 is never allocated).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct Ino(pub u64);

impl BlockAddr {
    /// The empty pointer.
    pub const NONE: BlockAddr = BlockAddr(0);
    pub const fn get(self) -> u64 {
        self.0
    }
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    /// The address `n` blocks on; None past u64 (an address read from disk may be anything).
    pub fn checked_add(self, n: u64) -> Option<BlockAddr> {
        self.0.checked_add(n).map(BlockAddr)
    }
    /// Where the block starts on the device, in bytes.
    pub const fn byte_offset(self) -> u64 {
        self.0 * BLOCK_BYTES
    }
    /// The `n` addresses from this one on.
    pub fn run(self, n: u64) -> impl Iterator<Item = BlockAddr> {
        (self.0..self.0.saturating_add(n)).map(BlockAddr)
    }
}

/// An address `n` blocks on. Addresses the filesystem computes stay inside the device; one
/// read from disk is bounds-checked (`Superblock::seg_of`) before anything adds to it.
impl std::ops::Add<u64> for BlockAddr {
    type Output = BlockAddr;
    fn add(self, n: u64) -> BlockAddr {
        BlockAddr(self.0 + n)
    }
}

/// Blocks from `b` to `self` (`self` at or past `b`).
impl std::ops::Sub for BlockAddr {
    type Output = u64;
    fn sub(self, b: BlockAddr) -> u64 {
        self.0 - b.0
    }
}

impl SegNo {
    pub const fn get(self) -> u64 {
        self.0
    }
    /// As an index into per-segment tables (a segment number always fits: tables are
    /// sized by the segment count).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
    pub const fn next(self) -> SegNo {
        SegNo(self.0 + 1)
    }
}

impl Ino {
    pub const fn get(self) -> u64 {
        self.0
    }
    /// As an index into the inode map (bounds-checked by the map's `get`).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BlockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for SegNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
