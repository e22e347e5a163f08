//! Segment summaries: the first block of every write unit. They say what each payload block
//! is (so the cleaner can judge liveness) and chain the log (sequence number, log id,
//! next segment) so roll-forward can find and verify everything written after a checkpoint.

use super::*;
pub use super::{data_crc, fs_id};

const OFF_FLAGS: usize = 6;
const OFF_SEQ: usize = 8;
const OFF_LOG_ID: usize = 16;
const OFF_SEGMENT: usize = 24;
const OFF_OFFSET: usize = 32;
const OFF_NBLOCKS: usize = 36;
const OFF_NEXT_SEG: usize = 40;
const OFF_TIMESTAMP: usize = 48;
const OFF_DATA_CRC: usize = 56;
const OFF_FS_ID: usize = 60;
const OFF_ENTRIES: usize = 64;
const ENTRY_SIZE: usize = 24;

/// Most payload blocks one summary can describe.
pub const SUMMARY_MAX_ENTRIES: usize = (CRC_OFF - OFF_ENTRIES) / ENTRY_SIZE;
const _: () = assert!(SUMMARY_MAX_ENTRIES == 167);

/// The flush group continues in the next unit.
pub const FLAG_CONT: u16 = 1;
/// Written by a checkpoint (imap and usage blocks).
pub const FLAG_CHECKPOINT: u16 = 2;
/// Blocks moved by the cleaner.
pub const FLAG_CLEANER: u16 = 4;
const KNOWN_FLAGS: u16 = FLAG_CONT | FLAG_CHECKPOINT | FLAG_CLEANER;

/// What a payload block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlockKind {
    Data = 1,
    Indirect = 2,
    InodeBlock = 3,
    Imap = 4,
    Usage = 5,
    Xattr = 6,
}

impl BlockKind {
    pub fn from_u8(v: u8) -> Option<BlockKind> {
        Some(match v {
            1 => BlockKind::Data,
            2 => BlockKind::Indirect,
            3 => BlockKind::InodeBlock,
            4 => BlockKind::Imap,
            5 => BlockKind::Usage,
            6 => BlockKind::Xattr,
            _ => return None,
        })
    }
}

/// One payload block's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SummaryEntry {
    pub kind: BlockKind,
    /// Indirect blocks: 1..=4 (1 points at data). Otherwise 0.
    pub height: u8,
    pub version: u32,
    pub ino: Ino,
    /// Data: logical block. Indirect: first logical block covered. Tables: block index.
    pub index: u64,
}

impl SummaryEntry {
    pub fn data(ino: Ino, version: u32, lblock: u64) -> Self {
        SummaryEntry {
            kind: BlockKind::Data,
            height: 0,
            version,
            ino,
            index: lblock,
        }
    }
    pub fn indirect(ino: Ino, version: u32, height: u8, first: u64) -> Self {
        SummaryEntry {
            kind: BlockKind::Indirect,
            height,
            version,
            ino,
            index: first,
        }
    }
    pub fn xattr(ino: Ino, version: u32) -> Self {
        SummaryEntry {
            kind: BlockKind::Xattr,
            height: 0,
            version,
            ino,
            index: 0,
        }
    }
    pub fn inode_block() -> Self {
        SummaryEntry {
            kind: BlockKind::InodeBlock,
            height: 0,
            version: 0,
            ino: Ino(0),
            index: 0,
        }
    }
    pub fn table(kind: BlockKind, index: u64) -> Self {
        SummaryEntry {
            kind,
            height: 0,
            version: 0,
            ino: Ino(0),
            index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub flags: u16,
    pub seq: u64,
    /// The log this unit belongs to: chosen at random by each mount (and mkfs) and recorded
    /// in its checkpoints, so roll-forward never takes a unit another mount left behind.
    pub log_id: u64,
    pub segment: SegNo,
    pub offset: u32,
    pub next_segment: SegNo,
    pub timestamp_ns: u64,
    pub data_crc: u32,
    /// Identifies the filesystem (see [`fs_id`]), so units left by an earlier filesystem
    /// on the same disk are never taken for ours.
    pub fs_id: u32,
    pub entries: Vec<SummaryEntry>,
}

impl Summary {
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(!self.entries.is_empty() && self.entries.len() <= SUMMARY_MAX_ENTRIES);
        let mut b = new_block(MAGIC_SUMMARY);
        put_u16(&mut b, OFF_FLAGS, self.flags);
        put_u64(&mut b, OFF_SEQ, self.seq);
        put_u64(&mut b, OFF_LOG_ID, self.log_id);
        put_u64(&mut b, OFF_SEGMENT, self.segment.get());
        put_u32(&mut b, OFF_OFFSET, self.offset);
        put_u32(&mut b, OFF_NBLOCKS, self.entries.len() as u32);
        put_u64(&mut b, OFF_NEXT_SEG, self.next_segment.get());
        put_u64(&mut b, OFF_TIMESTAMP, self.timestamp_ns);
        put_u32(&mut b, OFF_DATA_CRC, self.data_crc);
        put_u32(&mut b, OFF_FS_ID, self.fs_id);
        for (i, e) in self.entries.iter().take(SUMMARY_MAX_ENTRIES).enumerate() {
            let o = OFF_ENTRIES + i * ENTRY_SIZE;
            put_u8(&mut b, o, e.kind as u8);
            put_u8(&mut b, o + 1, e.height);
            put_u32(&mut b, o + 4, e.version);
            put_u64(&mut b, o + 8, e.ino.get());
            put_u64(&mut b, o + 16, e.index);
        }
        seal(&mut b);
        b
    }

    /// Decode a summary block. Checks its own consistency only; whether it is the unit the
    /// log expects (sequence, log id, position) is the reader's verdict.
    pub fn decode(b: &[u8]) -> Result<Summary, FormatError> {
        const W: &str = "segment summary";
        check_block(b, W, MAGIC_SUMMARY)?;
        let flags = get_u16(b, OFF_FLAGS);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::invalid(W, format!("unknown flags {flags:#x}")));
        }
        let n = get_u32(b, OFF_NBLOCKS) as usize;
        if n == 0 || n > SUMMARY_MAX_ENTRIES {
            return Err(FormatError::invalid(
                W,
                format!("block count {n} out of range"),
            ));
        }
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let o = OFF_ENTRIES + i * ENTRY_SIZE;
            let raw = get_u8(b, o);
            let kind = BlockKind::from_u8(raw)
                .ok_or_else(|| FormatError::invalid(W, format!("entry {i}: unknown kind {raw}")))?;
            let height = get_u8(b, o + 1);
            let ok_height = match kind {
                BlockKind::Indirect => (1..=4).contains(&height),
                _ => height == 0,
            };
            if !ok_height {
                return Err(FormatError::invalid(
                    W,
                    format!("entry {i}: bad height {height}"),
                ));
            }
            entries.push(SummaryEntry {
                kind,
                height,
                version: get_u32(b, o + 4),
                ino: Ino(get_u64(b, o + 8)),
                index: get_u64(b, o + 16),
            });
        }
        Ok(Summary {
            flags,
            seq: get_u64(b, OFF_SEQ),
            log_id: get_u64(b, OFF_LOG_ID),
            segment: SegNo(get_u64(b, OFF_SEGMENT)),
            offset: get_u32(b, OFF_OFFSET),
            next_segment: SegNo(get_u64(b, OFF_NEXT_SEG)),
            timestamp_ns: get_u64(b, OFF_TIMESTAMP),
            data_crc: get_u32(b, OFF_DATA_CRC),
            fs_id: get_u32(b, OFF_FS_ID),
            entries,
        })
    }

    /// Blocks the unit occupies, summary included.
    pub fn unit_blocks(&self) -> u32 {
        1 + self.entries.len() as u32
    }
}

/// The header fields of a summary block, read before its checksum is verified, so that
/// roll-forward can judge a unit in the order docs/FORMAT.md gives (sequence and position
/// before checksums): a stale unit is then told apart from a torn one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryPeek {
    pub seq: u64,
    pub log_id: u64,
    pub fs_id: u32,
    pub segment: SegNo,
    pub offset: u32,
    pub nblocks: u32,
    pub next_segment: SegNo,
}

/// `None` unless `b` is one block starting with the summary magic. Nothing here is verified:
/// the caller only compares these values with what it expects.
pub fn peek(b: &[u8]) -> Option<SummaryPeek> {
    if b.len() != BLOCK_SIZE || get_u32(b, 0) != MAGIC_SUMMARY {
        return None;
    }
    Some(SummaryPeek {
        seq: get_u64(b, OFF_SEQ),
        log_id: get_u64(b, OFF_LOG_ID),
        fs_id: get_u32(b, OFF_FS_ID),
        segment: SegNo(get_u64(b, OFF_SEGMENT)),
        offset: get_u32(b, OFF_OFFSET),
        nblocks: get_u32(b, OFF_NBLOCKS),
        next_segment: SegNo(get_u64(b, OFF_NEXT_SEG)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Summary {
        Summary {
            flags: FLAG_CONT,
            seq: 77,
            log_id: 5,
            segment: SegNo(12),
            offset: 34,
            next_segment: SegNo(13),
            timestamp_ns: 999,
            data_crc: 0xdead_beef,
            fs_id: fs_id(&[3; 16]),
            entries: (0..n as u64)
                .map(|i| match i % 4 {
                    0 => SummaryEntry::data(Ino(i + 2), 3, i * 7),
                    1 => SummaryEntry::indirect(Ino(i + 2), 3, 2, 522),
                    2 => SummaryEntry::inode_block(),
                    _ => SummaryEntry::table(BlockKind::Usage, i),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        for n in [1, 2, 100, SUMMARY_MAX_ENTRIES] {
            let s = sample(n);
            assert_eq!(Summary::decode(&s.encode()).expect("decode"), s);
        }
    }

    #[test]
    fn corruption_detected() {
        crate::format::testutil::assert_bitflips_detected(&sample(40).encode(), Summary::decode);
    }

    #[test]
    fn bad_counts_and_kinds_refused_even_with_good_crc() {
        let mut b = sample(3).encode();
        put_u32(&mut b, OFF_NBLOCKS, 500);
        seal(&mut b);
        assert!(Summary::decode(&b).is_err());
        let mut b = sample(3).encode();
        put_u8(&mut b, OFF_ENTRIES, 99);
        seal(&mut b);
        assert!(Summary::decode(&b).is_err());
    }

    #[test]
    fn data_crc_depends_on_order() {
        let a = vec![1u8; BLOCK_SIZE];
        let z = vec![2u8; BLOCK_SIZE];
        assert_ne!(data_crc([&a[..], &z[..]]), data_crc([&z[..], &a[..]]));
    }
}
