//! The version 2 checkpoint block (docs/FORMAT-V2.md §4): one block per region, holding
//! roots and counters only — nothing in it grows with the disk or the data. Found by
//! position, so it keeps a checksum of its own.

use super::ptr::{PhysPtr, PTR_SIZE};
use super::summary::MAX_STREAMS;
use super::{get_u16, get_u32, get_u64, get_u8, put_u16, put_u32, put_u64, put_u8, VERSION};
use crate::format::{crc, BlockAddr, Cno, FormatError, SegNo, BLOCK_SIZE, CRC_OFF};

pub const MAGIC: u32 = u32::from_le_bytes(*b"LFSC");
/// Written by unmount: nothing follows in the log.
pub const FLAG_CLEAN: u16 = 1;
/// Bytes of an inode stored in the checkpoint (the cpfile's and the ifile's).
pub const INODE_BYTES: usize = 256;
/// Height of a radix tree at most (255-way nodes over 102- or 127-entry leaves: 6 levels
/// address more than 2⁴⁸ entries).
pub const MAX_HEIGHT: u8 = 6;

const OFF_FLAGS: usize = 6;
const OFF_GENERATION: usize = 8;
const OFF_CNO: usize = 16;
const OFF_TIME: usize = 24;
const OFF_NEXT_SEQ: usize = 32;
const OFF_LOG_ID: usize = 40;
const OFF_NEXT_VBLOCK: usize = 48;
const OFF_NCLEAN: usize = 56;
const OFF_NINODES: usize = 64;
const OFF_LIVE: usize = 72;
const OFF_HELD: usize = 80;
const OFF_HEADS: usize = 88;
const HEAD_SIZE: usize = 16;
const OFF_DAT_ROOT: usize = OFF_HEADS + 8 * HEAD_SIZE;
const OFF_DAT_HEIGHT: usize = OFF_DAT_ROOT + PTR_SIZE;
const OFF_SUFILE_HEIGHT: usize = OFF_DAT_HEIGHT + 1;
const OFF_SUFILE_ROOT: usize = 240;
const OFF_CPFILE_INODE: usize = 256;
const OFF_IFILE_INODE: usize = 512;
const OFF_RESERVED: usize = 768;
const _: () = assert!(OFF_DAT_ROOT == 216 && OFF_SUFILE_HEIGHT == 233);

/// Where a stream's next unit goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    pub segment: SegNo,
    pub offset: u32,
    /// The sequence number, within the stream, of its next unit.
    pub stream_seq: u32,
}

impl From<(SegNo, u32, u32)> for Head {
    fn from((segment, offset, stream_seq): (SegNo, u32, u32)) -> Head {
        Head {
            segment,
            offset,
            stream_seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub flags: u16,
    pub generation: u64,
    pub cno: Cno,
    pub timestamp_ns: u64,
    pub next_seq: u64,
    pub log_id: u64,
    pub next_vblock: u64,
    pub nclean: u64,
    pub ninodes: u64,
    pub nblocks_live: u64,
    pub nblocks_held: u64,
    /// One per stream (the superblock's `streams`).
    pub heads: Vec<Head>,
    pub dat_root: PhysPtr,
    pub dat_height: u8,
    pub sufile_root: PhysPtr,
    pub sufile_height: u8,
    pub cpfile_inode: Vec<u8>,
    pub ifile_inode: Vec<u8>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        put_u32(&mut b, 0, MAGIC);
        put_u16(&mut b, 4, VERSION);
        put_u16(&mut b, OFF_FLAGS, self.flags);
        put_u64(&mut b, OFF_GENERATION, self.generation);
        put_u64(&mut b, OFF_CNO, self.cno.get());
        put_u64(&mut b, OFF_TIME, self.timestamp_ns);
        put_u64(&mut b, OFF_NEXT_SEQ, self.next_seq);
        put_u64(&mut b, OFF_LOG_ID, self.log_id);
        put_u64(&mut b, OFF_NEXT_VBLOCK, self.next_vblock);
        put_u64(&mut b, OFF_NCLEAN, self.nclean);
        put_u64(&mut b, OFF_NINODES, self.ninodes);
        put_u64(&mut b, OFF_LIVE, self.nblocks_live);
        put_u64(&mut b, OFF_HELD, self.nblocks_held);
        for (i, h) in self.heads.iter().take(MAX_STREAMS as usize).enumerate() {
            let o = OFF_HEADS + i * HEAD_SIZE;
            put_u64(&mut b, o, h.segment.get());
            put_u32(&mut b, o + 8, h.offset);
            put_u32(&mut b, o + 12, h.stream_seq);
        }
        self.dat_root.encode_into(&mut b[OFF_DAT_ROOT..]);
        put_u8(&mut b, OFF_DAT_HEIGHT, self.dat_height);
        put_u8(&mut b, OFF_SUFILE_HEIGHT, self.sufile_height);
        self.sufile_root.encode_into(&mut b[OFF_SUFILE_ROOT..]);
        super::put_bytes(&mut b, OFF_CPFILE_INODE, &self.cpfile_inode, INODE_BYTES);
        super::put_bytes(&mut b, OFF_IFILE_INODE, &self.ifile_inode, INODE_BYTES);
        let c = crc(&b[..CRC_OFF]);
        put_u32(&mut b, CRC_OFF, c);
        b
    }

    /// Decode a region of a filesystem with `streams` log heads, `nsegs` segments of
    /// `seg_blocks` blocks, whose segments start at `seg_base`.
    pub fn decode(
        b: &[u8],
        streams: u8,
        nsegs: u64,
        seg_blocks: u32,
        seg_base: BlockAddr,
    ) -> Result<Checkpoint, FormatError> {
        const W: &str = "checkpoint (v2)";
        super::check_v2(b, W, MAGIC, true)?;
        let bad = |why: String| Err(FormatError::invalid(W, why));
        let flags = get_u16(b, OFF_FLAGS);
        if flags & !FLAG_CLEAN != 0 {
            return bad(format!("unknown flags {flags:#x}"));
        }
        if streams == 0 || streams > MAX_STREAMS {
            return bad(format!("{streams} streams"));
        }
        let mut heads = Vec::with_capacity(streams as usize);
        for i in 0..MAX_STREAMS as usize {
            let o = OFF_HEADS + i * HEAD_SIZE;
            let h = Head {
                segment: SegNo(get_u64(b, o)),
                offset: get_u32(b, o + 8),
                stream_seq: get_u32(b, o + 12),
            };
            if i >= streams as usize {
                if h != Head::default() {
                    return bad(format!("a head for stream {i}, which does not exist"));
                }
                continue;
            }
            if h.segment.get() >= nsegs || h.offset >= seg_blocks {
                return bad(format!(
                    "stream {i}'s head {}:{} lies outside the log",
                    h.segment, h.offset
                ));
            }
            heads.push(h);
        }
        let dat_root = PhysPtr::decode_from(&b[OFF_DAT_ROOT..]);
        let sufile_root = PhysPtr::decode_from(&b[OFF_SUFILE_ROOT..]);
        let (dat_height, sufile_height) = (get_u8(b, OFF_DAT_HEIGHT), get_u8(b, OFF_SUFILE_HEIGHT));
        let seg_end = nsegs
            .checked_mul(u64::from(seg_blocks))
            .and_then(|n| n.checked_add(seg_base.get()));
        for (name, root, height) in [
            ("DAT", dat_root, dat_height),
            ("sufile", sufile_root, sufile_height),
        ] {
            if height > MAX_HEIGHT {
                return bad(format!("{name} of height {height}"));
            }
            if root.is_none() != (height == 0) || (root.is_none() && root != PhysPtr::default()) {
                return bad(format!(
                    "{name}: a root without a height, or a height without a root"
                ));
            }
            let a = root.addr.get();
            if !root.is_none() && (a < seg_base.get() || seg_end.is_none_or(|e| a >= e)) {
                return bad(format!("{name} root at block {a}, outside the log"));
            }
        }
        if get_u16(b, OFF_SUFILE_HEIGHT + 1) != 0
            || get_u32(b, OFF_SUFILE_HEIGHT + 3) != 0
            || b[OFF_RESERVED..CRC_OFF].iter().any(|&c| c != 0)
        {
            return bad("reserved bytes are not zero".into());
        }
        let cno = Cno(get_u64(b, OFF_CNO));
        if cno.get() == 0 {
            return bad("checkpoint number 0".into());
        }
        Ok(Checkpoint {
            flags,
            generation: get_u64(b, OFF_GENERATION),
            cno,
            timestamp_ns: get_u64(b, OFF_TIME),
            next_seq: get_u64(b, OFF_NEXT_SEQ),
            log_id: get_u64(b, OFF_LOG_ID),
            next_vblock: get_u64(b, OFF_NEXT_VBLOCK),
            nclean: get_u64(b, OFF_NCLEAN),
            ninodes: get_u64(b, OFF_NINODES),
            nblocks_live: get_u64(b, OFF_LIVE),
            nblocks_held: get_u64(b, OFF_HELD),
            heads,
            dat_root,
            dat_height,
            sufile_root,
            sufile_height,
            cpfile_inode: b[OFF_CPFILE_INODE..OFF_CPFILE_INODE + INODE_BYTES].to_vec(),
            ifile_inode: b[OFF_IFILE_INODE..OFF_IFILE_INODE + INODE_BYTES].to_vec(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::testutil::assert_bitflips_detected;

    const NSEGS: u64 = 100;
    const SEG_BLOCKS: u32 = 256;
    const BASE: BlockAddr = BlockAddr(256);

    fn sample() -> Checkpoint {
        Checkpoint {
            flags: FLAG_CLEAN,
            generation: 41,
            cno: Cno(12),
            timestamp_ns: 999,
            next_seq: 5000,
            log_id: 0xfeed_f00d,
            next_vblock: 77_777,
            nclean: 60,
            ninodes: 1234,
            nblocks_live: 20_000,
            nblocks_held: 300,
            heads: (0..4)
                .map(|i| Head {
                    segment: SegNo(10 + i),
                    offset: 3 * i as u32,
                    stream_seq: 100 + i as u32,
                })
                .collect(),
            dat_root: PhysPtr {
                addr: BlockAddr(300),
                crc: 0xabc,
                free: 5,
            },
            dat_height: 2,
            sufile_root: PhysPtr {
                addr: BlockAddr(301),
                crc: 0xdef,
                free: 0,
            },
            sufile_height: 1,
            cpfile_inode: (0..INODE_BYTES).map(|i| i as u8).collect(),
            ifile_inode: (0..INODE_BYTES).map(|i| (i * 7) as u8).collect(),
        }
    }

    fn decode(b: &[u8]) -> Result<Checkpoint, FormatError> {
        Checkpoint::decode(b, 4, NSEGS, SEG_BLOCKS, BASE)
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(decode(&c.encode()).unwrap(), c);
        let empty = Checkpoint {
            dat_root: PhysPtr::default(),
            dat_height: 0,
            ..sample()
        };
        assert_eq!(decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damage_and_nonsense_are_detected() {
        assert_bitflips_detected(&sample().encode(), decode);
        let b = sample().encode();
        assert!(
            Checkpoint::decode(&b, 3, NSEGS, SEG_BLOCKS, BASE).is_err(),
            "a 4th head"
        );
        assert!(
            Checkpoint::decode(&b, 4, 12, SEG_BLOCKS, BASE).is_err(),
            "head past the log"
        );
        let mut c = sample();
        c.dat_height = 0;
        assert!(decode(&c.encode()).is_err(), "a root without a height");
        let mut c = sample();
        c.sufile_root.addr = BlockAddr(3);
        assert!(decode(&c.encode()).is_err(), "a root outside the log");
        let mut c = sample();
        c.dat_height = 9;
        assert!(decode(&c.encode()).is_err(), "too tall");
        let mut c = sample();
        c.cno = Cno(0);
        assert!(decode(&c.encode()).is_err(), "checkpoint 0");
    }
}
