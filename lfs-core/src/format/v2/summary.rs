//! Version 2 segment summary (docs/FORMAT-V2.md §7): the header of a write unit on one of the
//! log's streams, and one 48-byte entry per payload block naming it completely, so that
//! every map can be rebuilt from the log alone. A summary is found by position, not through
//! a pointer, so it keeps a checksum of its own (the trailing crc, as version 1).

use super::{get_u16, get_u32, get_u64, get_u8, put_u16, put_u32, put_u64, put_u8, VERSION};
use crate::format::{crc, Cno, FormatError, Ino, SegNo, VBlock, BLOCK_SIZE, CRC_OFF};

pub const MAGIC: u32 = u32::from_le_bytes(*b"LFSS");
pub const ENTRY_SIZE: usize = 48;
const OFF_ENTRIES: usize = 80;
/// Payload blocks in one unit at most.
pub const MAX_ENTRIES: usize = (CRC_OFF - OFF_ENTRIES) / ENTRY_SIZE;
const _: () = assert!(MAX_ENTRIES == 83);
/// Log heads at most.
pub const MAX_STREAMS: u8 = 8;

pub const FLAG_CONT: u16 = 1;
pub const FLAG_CHECKPOINT: u16 = 2;
pub const FLAG_CLEANER: u16 = 4;
/// The last payload block is the flush group's root block.
pub const FLAG_ROOT: u16 = 8;
const FLAGS_KNOWN: u16 = FLAG_CONT | FLAG_CHECKPOINT | FLAG_CLEANER | FLAG_ROOT;

/// The second copy of a DUP block.
pub const ENTRY_DUP: u16 = 1;

/// What a payload block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data = 1,
    TreeNode = 2,
    Directory = 3,
    Xattr = 4,
    Ifile = 5,
    Cpfile = 6,
    Dat = 7,
    Sufile = 8,
    GroupRoot = 9,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Data,
            2 => Kind::TreeNode,
            3 => Kind::Directory,
            4 => Kind::Xattr,
            5 => Kind::Ifile,
            6 => Kind::Cpfile,
            7 => Kind::Dat,
            8 => Kind::Sufile,
            9 => Kind::GroupRoot,
            _ => return None,
        })
    }

    /// Reached by address (its parent holds its checksum), not through the DAT.
    pub fn is_physical(self) -> bool {
        matches!(self, Kind::Dat | Kind::Sufile | Kind::GroupRoot)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Tree nodes and DAT/sufile nodes; 0 otherwise.
    pub height: u8,
    pub flags: u16,
    /// Checksum of the payload block.
    pub crc: u32,
    /// The owner's inode generation.
    pub generation: u32,
    pub ino: Ino,
    /// Logical block, first logical block covered, or table block index.
    pub index: u64,
    /// `VBlock::NONE` for physical kinds.
    pub vblock: VBlock,
    /// The virtual block's first era: the unit's for a block written now, the original
    /// one for a block the cleaner moved.
    pub start: Cno,
}

/// The fields a reader compares before it verifies anything (docs/FORMAT-V2.md §7: the
/// verdict checks identity before the checksum, so a stale unit is told from a torn one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    pub seq: u64,
    pub stream_seq: u32,
    pub stream: u8,
    pub log_id: u64,
    pub segment: SegNo,
    pub offset: u32,
    pub nblocks: u32,
    pub next_segment: SegNo,
    pub era: Cno,
    pub fs_id: u32,
}

/// `None` unless `b` is one block starting with the summary magic and version 2.
pub fn peek(b: &[u8]) -> Option<Peek> {
    if b.len() != BLOCK_SIZE || get_u32(b, 0) != MAGIC || get_u16(b, 4) != VERSION {
        return None;
    }
    Some(Peek {
        seq: get_u64(b, 8),
        stream_seq: get_u32(b, 16),
        stream: get_u8(b, 20),
        log_id: get_u64(b, 24),
        segment: SegNo(get_u64(b, 32)),
        offset: get_u32(b, 40),
        nblocks: get_u32(b, 44),
        next_segment: SegNo(get_u64(b, 48)),
        era: Cno(get_u64(b, 64)),
        fs_id: get_u32(b, 72),
    })
}

/// The header of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub flags: u16,
    pub seq: u64,
    pub stream_seq: u32,
    pub stream: u8,
    pub log_id: u64,
    pub segment: SegNo,
    pub offset: u32,
    pub next_segment: SegNo,
    pub timestamp_ns: u64,
    pub era: Cno,
    pub fs_id: u32,
    pub data_crc: u32,
    pub entries: Vec<Entry>,
}

impl Summary {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        put_u32(&mut b, 0, MAGIC);
        put_u16(&mut b, 4, VERSION);
        put_u16(&mut b, 6, self.flags);
        put_u64(&mut b, 8, self.seq);
        put_u32(&mut b, 16, self.stream_seq);
        put_u8(&mut b, 20, self.stream);
        put_u64(&mut b, 24, self.log_id);
        put_u64(&mut b, 32, self.segment.get());
        put_u32(&mut b, 40, self.offset);
        put_u32(&mut b, 44, self.entries.len() as u32);
        put_u64(&mut b, 48, self.next_segment.get());
        put_u64(&mut b, 56, self.timestamp_ns);
        put_u64(&mut b, 64, self.era.get());
        put_u32(&mut b, 72, self.fs_id);
        put_u32(&mut b, 76, self.data_crc);
        for (i, e) in self.entries.iter().take(MAX_ENTRIES).enumerate() {
            let o = OFF_ENTRIES + i * ENTRY_SIZE;
            put_u8(&mut b, o, e.kind as u8);
            put_u8(&mut b, o + 1, e.height);
            put_u16(&mut b, o + 2, e.flags);
            put_u32(&mut b, o + 4, e.crc);
            put_u32(&mut b, o + 8, e.generation);
            put_u64(&mut b, o + 16, e.ino.get());
            put_u64(&mut b, o + 24, e.index);
            put_u64(&mut b, o + 32, e.vblock.get());
            put_u64(&mut b, o + 40, e.start.get());
        }
        let c = crc(&b[..CRC_OFF]);
        put_u32(&mut b, CRC_OFF, c);
        b
    }

    /// Decode a summary and check what a summary can say of itself; the reader compares
    /// `seq`, `stream`, `stream_seq`, `log_id`, `era`, `segment` and `offset` with what it
    /// expects (the verdict of docs/FORMAT-V2.md §7).
    pub fn decode(b: &[u8]) -> Result<Summary, FormatError> {
        const W: &str = "segment summary (v2)";
        super::check_v2(b, W, MAGIC, true)?;
        let flags = get_u16(b, 6);
        let n = get_u32(b, 44) as usize;
        let bad = |why: String| Err(FormatError::invalid(W, why));
        if flags & !FLAGS_KNOWN != 0 {
            return bad(format!("unknown flags {flags:#x}"));
        }
        if n == 0 || n > MAX_ENTRIES {
            return bad(format!("{n} payload blocks"));
        }
        let stream = get_u8(b, 20);
        if stream >= MAX_STREAMS || get_u8(b, 21) != 0 || get_u16(b, 22) != 0 {
            return bad(format!("stream {stream}"));
        }
        let era = Cno(get_u64(b, 64));
        let mut entries = Vec::with_capacity(n);
        for i in 0..n {
            let o = OFF_ENTRIES + i * ENTRY_SIZE;
            let Some(kind) = Kind::from_u8(get_u8(b, o)) else {
                return bad(format!("entry {i}: kind {}", get_u8(b, o)));
            };
            let e = Entry {
                kind,
                height: get_u8(b, o + 1),
                flags: get_u16(b, o + 2),
                crc: get_u32(b, o + 4),
                generation: get_u32(b, o + 8),
                ino: Ino(get_u64(b, o + 16)),
                index: get_u64(b, o + 24),
                vblock: VBlock(get_u64(b, o + 32)),
                start: Cno(get_u64(b, o + 40)),
            };
            if get_u32(b, o + 12) != 0 || e.flags & !ENTRY_DUP != 0 {
                return bad(format!("entry {i}: reserved bits set"));
            }
            if e.kind.is_physical() != e.vblock.is_none() {
                return bad(format!(
                    "entry {i}: a virtual block number on the wrong kind"
                ));
            }
            if !e.kind.is_physical() && (e.start.get() == 0 || e.start > era) {
                return bad(format!(
                    "entry {i}: starts in era {} of a unit of era {}",
                    e.start.get(),
                    era.get()
                ));
            }
            entries.push(e);
        }
        if b[OFF_ENTRIES + n * ENTRY_SIZE..CRC_OFF]
            .iter()
            .any(|&x| x != 0)
        {
            return bad("bytes after the entries are not zero".into());
        }
        if flags & FLAG_ROOT != 0 && entries.last().map(|e| e.kind) != Some(Kind::GroupRoot) {
            return bad("ROOT without a root block last".into());
        }
        Ok(Summary {
            flags,
            seq: get_u64(b, 8),
            stream_seq: get_u32(b, 16),
            stream,
            log_id: get_u64(b, 24),
            segment: SegNo(get_u64(b, 32)),
            offset: get_u32(b, 40),
            next_segment: SegNo(get_u64(b, 48)),
            timestamp_ns: get_u64(b, 56),
            era,
            fs_id: get_u32(b, 72),
            data_crc: get_u32(b, 76),
            entries,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::testutil::assert_bitflips_detected;

    fn sample(n: usize) -> Summary {
        Summary {
            flags: FLAG_CONT | FLAG_ROOT,
            seq: 77,
            stream_seq: 12,
            stream: 3,
            log_id: 0xfeed,
            segment: SegNo(9),
            offset: 40,
            next_segment: SegNo(10),
            timestamp_ns: 123,
            era: Cno(6),
            fs_id: 0xabc,
            data_crc: 0xdead_beef,
            entries: (0..n)
                .map(|i| {
                    let last = i == n - 1;
                    Entry {
                        kind: if last {
                            Kind::GroupRoot
                        } else {
                            [Kind::Data, Kind::Ifile][i % 2]
                        },
                        height: 0,
                        flags: if i % 2 == 1 { ENTRY_DUP } else { 0 },
                        crc: i as u32,
                        generation: 4,
                        ino: Ino(if last { 0 } else { 16 + i as u64 }),
                        index: i as u64,
                        vblock: VBlock(if last { 0 } else { 500 + i as u64 }),
                        start: Cno(if last { 0 } else { 1 + (i as u64 % 6) }),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        for n in [1, 2, MAX_ENTRIES] {
            let s = sample(n);
            assert_eq!(Summary::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn damage_and_nonsense_are_detected() {
        assert_bitflips_detected(&sample(MAX_ENTRIES).encode(), Summary::decode);
        // Each of these verifies by checksum but cannot be.
        let mut too_young = sample(3);
        too_young.entries[0].start = Cno(7);
        let mut virtual_root = sample(3);
        virtual_root.entries[2].vblock = VBlock(5);
        let mut stream = sample(3);
        stream.stream = 8;
        let mut no_root = sample(3);
        no_root.entries[2].kind = Kind::Data;
        no_root.entries[2].vblock = VBlock(1);
        no_root.entries[2].start = Cno(1);
        for s in [too_young, virtual_root, stream, no_root] {
            assert!(Summary::decode(&s.encode()).is_err(), "{s:?} accepted");
        }
        // A version 1 summary is not taken for a version 2 one.
        let mut v1 = sample(3).encode();
        put_u16(&mut v1, 4, 1);
        let c = crc(&v1[..CRC_OFF]);
        put_u32(&mut v1, CRC_OFF, c);
        assert!(Summary::decode(&v1).is_err());
    }
}
