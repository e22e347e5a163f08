//! The DAT (docs/FORMAT-V2.md §5): virtual block → address, checksum, lifetime. Its tree is
//! of physical blocks: interior nodes are `ptr::RadixNode`s with magic `LFSA`, leaves hold
//! 102 entries of 40 bytes with magic `LFSL`. Virtual block `v` is entry `v mod 102` of leaf
//! `v / 102`.

use super::{check_referred, check_zero_tail, write_header, Expect, HEADER};
use super::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};
use crate::format::{BlockAddr, Cno, FormatError, VBlock, BLOCK_SIZE};

pub const MAGIC_NODE: u32 = u32::from_le_bytes(*b"LFSA");
pub const MAGIC_LEAF: u32 = u32::from_le_bytes(*b"LFSL");
/// Bytes of one entry.
pub const ENTRY_SIZE: usize = 40;
/// Entries in one leaf.
pub const LEAF_ENTRIES: usize = (BLOCK_SIZE - HEADER) / ENTRY_SIZE;
const _: () = assert!(LEAF_ENTRIES == 102);

/// The block is stored twice (ifile and cpfile blocks): `addr2` is the second copy.
pub const FLAG_DUP: u16 = 1;
const FLAGS_KNOWN: u16 = FLAG_DUP;

/// Where a virtual block is, its checksum, and the eras it is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatEntry {
    /// `BlockAddr::NONE`: the entry is free (every other field is then zero).
    pub addr: BlockAddr,
    /// The second copy of a DUP block; else none.
    pub addr2: BlockAddr,
    /// The era in which this virtual block was written.
    pub start: Cno,
    /// The first era in which it is no longer part of the current state; `Cno::CURRENT`
    /// while it is.
    pub end: Cno,
    /// Checksum of the block's 4096 bytes.
    pub crc: u32,
    pub flags: u16,
}

impl DatEntry {
    pub const FREE: DatEntry = DatEntry {
        addr: BlockAddr::NONE,
        addr2: BlockAddr::NONE,
        start: Cno(0),
        end: Cno(0),
        crc: 0,
        flags: 0,
    };

    pub fn is_free(&self) -> bool {
        self.addr.is_none()
    }

    /// Part of the current state (not ended).
    pub fn is_current(&self) -> bool {
        !self.is_free() && self.end == Cno::CURRENT
    }

    fn encode_into(&self, b: &mut [u8]) {
        put_u64(b, 0, self.addr.get());
        put_u64(b, 8, self.addr2.get());
        put_u64(b, 16, self.start.get());
        put_u64(b, 24, self.end.get());
        put_u32(b, 32, self.crc);
        put_u16(b, 36, self.flags);
    }

    fn decode_from(b: &[u8], v: u64) -> Result<DatEntry, FormatError> {
        const W: &str = "DAT entry";
        let e = DatEntry {
            addr: BlockAddr(get_u64(b, 0)),
            addr2: BlockAddr(get_u64(b, 8)),
            start: Cno(get_u64(b, 16)),
            end: Cno(get_u64(b, 24)),
            crc: get_u32(b, 32),
            flags: get_u16(b, 36),
        };
        let bad = |why: &str| Err(FormatError::invalid(W, format!("vblock {v}: {why}")));
        if get_u16(b, 38) != 0 {
            return bad("reserved bytes are not zero");
        }
        if e.is_free() {
            if e != DatEntry::FREE {
                return bad("a free entry is not blank");
            }
            return Ok(e);
        }
        if e.flags & !FLAGS_KNOWN != 0 {
            return bad("unknown flags");
        }
        if (e.flags & FLAG_DUP != 0) == e.addr2.is_none() {
            return bad("a second copy without DUP, or DUP without one");
        }
        if e.start.get() == 0 || e.start >= e.end {
            return bad("its lifetime is empty");
        }
        Ok(e)
    }
}

/// A leaf: the entries of virtual blocks `first .. first + 102`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatLeaf {
    pub first: VBlock,
    pub entries: Vec<DatEntry>,
}

impl DatLeaf {
    /// The leaf holding virtual block `v`, and `v`'s slot in it.
    pub fn locate(v: VBlock) -> (u64, usize) {
        let n = LEAF_ENTRIES as u64;
        (v.get() / n, (v.get() % n) as usize)
    }

    pub fn empty(leaf: u64) -> DatLeaf {
        DatLeaf {
            first: VBlock(leaf * LEAF_ENTRIES as u64),
            entries: vec![DatEntry::FREE; LEAF_ENTRIES],
        }
    }

    pub fn used(&self) -> usize {
        self.entries.iter().filter(|e| !e.is_free()).count()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        write_header(&mut b, MAGIC_LEAF, 0, self.used() as u8, self.first.get());
        for (i, e) in self.entries.iter().take(LEAF_ENTRIES).enumerate() {
            let o = HEADER + i * ENTRY_SIZE;
            e.encode_into(&mut b[o..o + ENTRY_SIZE]);
        }
        b
    }

    /// Decode leaf number `leaf`, whose checksum its parent (or the checkpoint) recorded.
    pub fn decode(b: &[u8], leaf: u64, crc: u32) -> Result<DatLeaf, FormatError> {
        const W: &str = "DAT leaf";
        let first = leaf
            .checked_mul(LEAF_ENTRIES as u64)
            .ok_or_else(|| FormatError::invalid(W, format!("leaf {leaf} is beyond any DAT")))?;
        let expect = Expect {
            crc,
            height: 0,
            index: first,
        };
        let count = check_referred(b, W, MAGIC_LEAF, &expect)?;
        let entries = (0..LEAF_ENTRIES)
            .map(|i| DatEntry::decode_from(&b[HEADER + i * ENTRY_SIZE..], first + i as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = DatLeaf {
            first: VBlock(first),
            entries,
        };
        if leaf.used() != count as usize {
            return Err(FormatError::invalid(
                W,
                format!("count {count} but {} entries in use", leaf.used()),
            ));
        }
        check_zero_tail(b, HEADER + LEAF_ENTRIES * ENTRY_SIZE, W)?;
        Ok(leaf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{block_crc, testutil::assert_referred_damage_detected};
    use super::*;

    fn sample(leaf: u64) -> DatLeaf {
        let mut l = DatLeaf::empty(leaf);
        for i in 0..LEAF_ENTRIES {
            l.entries[i] = match i % 4 {
                0 => DatEntry::FREE,
                1 => DatEntry {
                    addr: BlockAddr(5000 + i as u64),
                    addr2: BlockAddr::NONE,
                    start: Cno(3),
                    end: Cno::CURRENT,
                    crc: 0x1234_0000 + i as u32,
                    flags: 0,
                },
                2 => DatEntry {
                    addr: BlockAddr(6000 + i as u64),
                    addr2: BlockAddr(7000 + i as u64),
                    start: Cno(1),
                    end: Cno::CURRENT,
                    crc: 7,
                    flags: FLAG_DUP,
                },
                _ => DatEntry {
                    addr: BlockAddr(8000 + i as u64),
                    addr2: BlockAddr::NONE,
                    start: Cno(2),
                    end: Cno(9),
                    crc: 9,
                    flags: 0,
                },
            };
        }
        l
    }

    #[test]
    fn round_trip_and_location() {
        let l = sample(7);
        let b = l.encode();
        assert_eq!(DatLeaf::decode(&b, 7, block_crc(&b)).unwrap(), l);
        assert_eq!(DatLeaf::locate(VBlock(7 * 102 + 5)), (7, 5));
        assert_eq!(l.first, VBlock(714));
        assert!(l.entries[1].is_current() && !l.entries[3].is_current());
    }

    #[test]
    fn damage_misplacement_and_nonsense_are_detected() {
        let b = sample(7).encode();
        assert_referred_damage_detected(&b, |b, crc| DatLeaf::decode(b, 7, crc));
        assert!(
            DatLeaf::decode(&b, 8, block_crc(&b)).is_err(),
            "leaf 7 read as 8"
        );
        assert!(DatLeaf::decode(&b, u64::MAX, block_crc(&b)).is_err());
        // Entries that verify by checksum but cannot be: each is refused on its own.
        let bad_entries = [
            DatEntry {
                crc: 1,
                ..DatEntry::FREE
            },
            DatEntry {
                addr: BlockAddr(9),
                addr2: BlockAddr(10),
                start: Cno(1),
                end: Cno::CURRENT,
                crc: 0,
                flags: 0,
            },
            DatEntry {
                addr: BlockAddr(9),
                addr2: BlockAddr::NONE,
                start: Cno(5),
                end: Cno(5),
                crc: 0,
                flags: 0,
            },
            DatEntry {
                addr: BlockAddr(9),
                addr2: BlockAddr::NONE,
                start: Cno(1),
                end: Cno::CURRENT,
                crc: 0,
                flags: 0x80,
            },
        ];
        for e in bad_entries {
            let mut l = DatLeaf::empty(0);
            l.entries[3] = e;
            let b = l.encode();
            assert!(
                DatLeaf::decode(&b, 0, block_crc(&b)).is_err(),
                "{e:?} accepted"
            );
        }
    }
}
