//! The sufile (docs/FORMAT-V2.md §11): segment usage as a radix tree of physical blocks.
//! Interior nodes are `ptr::RadixNode`s with magic `LFSQ`; leaves hold 127 entries of 32
//! bytes with magic `LFSG`. Segment `s` is entry `s mod 127` of leaf `s / 127`; a hole in the
//! tree is 127 clean segments.

use super::{check_referred, check_zero_tail, write_header, Expect, HEADER};
use super::{get_u16, get_u32, get_u64, get_u8, put_u32, put_u64, put_u8};
use crate::format::{FormatError, SegNo, BLOCK_SIZE};

pub const MAGIC_NODE: u32 = u32::from_le_bytes(*b"LFSQ");
pub const MAGIC_LEAF: u32 = u32::from_le_bytes(*b"LFSG");
pub const ENTRY_SIZE: usize = 32;
pub const LEAF_ENTRIES: usize = (BLOCK_SIZE - HEADER) / ENTRY_SIZE;
const _: () = assert!(LEAF_ENTRIES == 127);

/// Segment states as stored.
pub const SEG_CLEAN: u8 = 0;
pub const SEG_IN_USE: u8 = 1;
/// The head of a stream (the `stream` field says which).
pub const SEG_ACTIVE: u8 = 2;
/// Emptied; clean once the next checkpoint is durable.
pub const SEG_FREED: u8 = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegUsage {
    pub write_time_ns: u64,
    /// Blocks whose DAT entry is current and points here (or whose physical parent does).
    pub live: u32,
    /// Blocks ended but still needed by a kept checkpoint.
    pub held: u32,
    pub state: u8,
    pub stream: u8,
    /// The smallest `start` and largest `end` among the held blocks, as eras after the
    /// segment's first write: a hint for recounting (the cleaner decides from the DAT).
    pub held_from: u32,
    pub held_until: u32,
}

impl SegUsage {
    pub fn is_clean(&self) -> bool {
        *self == SegUsage::default()
    }

    fn encode_into(&self, b: &mut [u8]) {
        put_u64(b, 0, self.write_time_ns);
        put_u32(b, 8, self.live);
        put_u32(b, 12, self.held);
        put_u8(b, 16, self.state);
        put_u8(b, 17, self.stream);
        put_u32(b, 20, self.held_from);
        put_u32(b, 24, self.held_until);
    }

    fn decode_from(b: &[u8], seg: u64, seg_blocks: u32) -> Result<SegUsage, FormatError> {
        const W: &str = "segment usage";
        let u = SegUsage {
            write_time_ns: get_u64(b, 0),
            live: get_u32(b, 8),
            held: get_u32(b, 12),
            state: get_u8(b, 16),
            stream: get_u8(b, 17),
            held_from: get_u32(b, 20),
            held_until: get_u32(b, 24),
        };
        let bad = |why: &str| Err(FormatError::invalid(W, format!("segment {seg}: {why}")));
        if get_u16(b, 18) != 0 || get_u32(b, 28) != 0 {
            return bad("reserved bytes are not zero");
        }
        if u.state > SEG_FREED || u.stream >= 8 {
            return bad("unknown state or stream");
        }
        if u.live.saturating_add(u.held) > seg_blocks {
            return bad("more blocks counted than the segment has");
        }
        if u.state == SEG_CLEAN && !u.is_clean() {
            return bad("clean but not blank");
        }
        Ok(u)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SufileLeaf {
    pub first: SegNo,
    pub entries: Vec<SegUsage>,
}

impl SufileLeaf {
    pub fn locate(s: SegNo) -> (u64, usize) {
        let n = LEAF_ENTRIES as u64;
        (s.get() / n, (s.get() % n) as usize)
    }

    pub fn empty(leaf: u64) -> SufileLeaf {
        SufileLeaf {
            first: SegNo(leaf * LEAF_ENTRIES as u64),
            entries: vec![SegUsage::default(); LEAF_ENTRIES],
        }
    }

    fn in_use(&self) -> usize {
        self.entries.iter().filter(|e| !e.is_clean()).count()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        write_header(&mut b, MAGIC_LEAF, 0, self.in_use() as u8, self.first.get());
        for (i, e) in self.entries.iter().take(LEAF_ENTRIES).enumerate() {
            let o = HEADER + i * ENTRY_SIZE;
            e.encode_into(&mut b[o..o + ENTRY_SIZE]);
        }
        b
    }

    /// Decode leaf `leaf` of a filesystem with `nsegs` segments of `seg_blocks` blocks.
    pub fn decode(
        b: &[u8],
        leaf: u64,
        crc: u32,
        nsegs: u64,
        seg_blocks: u32,
    ) -> Result<SufileLeaf, FormatError> {
        const W: &str = "sufile leaf";
        let first = leaf
            .checked_mul(LEAF_ENTRIES as u64)
            .filter(|&f| f < nsegs)
            .ok_or_else(|| FormatError::invalid(W, format!("leaf {leaf} is beyond the disk")))?;
        let count = check_referred(
            b,
            W,
            MAGIC_LEAF,
            &Expect {
                crc,
                height: 0,
                index: first,
            },
        )?;
        let entries = (0..LEAF_ENTRIES)
            .map(|i| {
                SegUsage::decode_from(&b[HEADER + i * ENTRY_SIZE..], first + i as u64, seg_blocks)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let l = SufileLeaf {
            first: SegNo(first),
            entries,
        };
        if l.in_use() != count as usize {
            return Err(FormatError::invalid(W, "count does not match the entries"));
        }
        // Entries past the last segment must be clean.
        let past = nsegs.saturating_sub(first).min(LEAF_ENTRIES as u64) as usize;
        if l.entries[past..].iter().any(|e| !e.is_clean()) {
            return Err(FormatError::invalid(
                W,
                "usage recorded past the last segment",
            ));
        }
        check_zero_tail(b, HEADER + LEAF_ENTRIES * ENTRY_SIZE, W)?;
        Ok(l)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{block_crc, testutil::assert_referred_damage_detected};
    use super::*;

    fn sample() -> SufileLeaf {
        let mut l = SufileLeaf::empty(2);
        for i in (0..LEAF_ENTRIES).step_by(2) {
            l.entries[i] = SegUsage {
                write_time_ns: 1_000 + i as u64,
                live: i as u32,
                held: 3,
                state: [SEG_IN_USE, SEG_ACTIVE, SEG_FREED][i % 3],
                stream: (i % 4) as u8,
                held_from: 1,
                held_until: 4,
            };
        }
        l
    }

    #[test]
    fn round_trip() {
        let l = sample();
        let b = l.encode();
        assert_eq!(
            SufileLeaf::decode(&b, 2, block_crc(&b), 1000, 256).unwrap(),
            l
        );
        assert_eq!(SufileLeaf::locate(SegNo(260)), (2, 6));
    }

    #[test]
    fn damage_and_nonsense_are_detected() {
        let b = sample().encode();
        assert_referred_damage_detected(&b, |b, crc| SufileLeaf::decode(b, 2, crc, 1000, 256));
        let crc = block_crc(&b);
        assert!(
            SufileLeaf::decode(&b, 3, crc, 1000, 256).is_err(),
            "misplaced"
        );
        assert!(
            SufileLeaf::decode(&b, 2, crc, 300, 256).is_err(),
            "past the disk"
        );
        assert!(
            SufileLeaf::decode(&b, 2, crc, 1000, 64).is_err(),
            "over-counted"
        );
        let mut l = SufileLeaf::empty(0);
        l.entries[1] = SegUsage {
            live: 1,
            ..SegUsage::default()
        };
        let b = l.encode();
        assert!(SufileLeaf::decode(&b, 0, block_crc(&b), 1000, 256).is_err());
    }
}
