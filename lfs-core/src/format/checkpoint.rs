//! Checkpoint regions: where mount starts. A region is a header block, the address arrays of
//! the inode map and the segment usage table, and a trailer that repeats the generation and
//! checksums the whole body, so a torn region write is always detected.

use super::superblock::Superblock;
use super::*;

const OFF_FLAGS: usize = 6;
const OFF_GENERATION: usize = 8;
const OFF_TIMESTAMP: usize = 16;
const OFF_HEAD_SEG: usize = 24;
const OFF_HEAD_OFF: usize = 32;
const OFF_NEXT_SEQ: usize = 40;
const OFF_LOG_ID: usize = 48;
const OFF_IMAP_BLOCKS: usize = 56;
const OFF_USAGE_BLOCKS: usize = 60;
// Trailer offsets.
const OFF_T_GENERATION: usize = 8;
const OFF_T_TIMESTAMP: usize = 16;
const OFF_T_BODY_CRC: usize = 24;

/// Header flag: written at unmount; nothing follows in the log.
pub const CP_FLAG_CLEAN: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub generation: u64,
    pub timestamp_ns: u64,
    pub clean_unmount: bool,
    pub head_segment: SegNo,
    pub head_offset: u32,
    pub next_seq: u64,
    /// The log id the units written after this checkpoint carry (see `Summary::log_id`).
    pub log_id: u64,
    /// One address per inode-map block; 0 = never written (all free).
    pub imap_addrs: Vec<BlockAddr>,
    /// One address per segment-usage block.
    pub usage_addrs: Vec<BlockAddr>,
}

impl Checkpoint {
    /// Encode as a whole region of `sb.cp_blocks` blocks.
    pub fn encode(&self, sb: &Superblock) -> Vec<u8> {
        let n = sb.cp_blocks as usize;
        let mut region = vec![0u8; n * BLOCK_SIZE];
        let mut h = new_block(MAGIC_CP_HEADER);
        put_u16(
            &mut h,
            OFF_FLAGS,
            if self.clean_unmount { CP_FLAG_CLEAN } else { 0 },
        );
        put_u64(&mut h, OFF_GENERATION, self.generation);
        put_u64(&mut h, OFF_TIMESTAMP, self.timestamp_ns);
        put_u64(&mut h, OFF_HEAD_SEG, self.head_segment.get());
        put_u32(&mut h, OFF_HEAD_OFF, self.head_offset);
        put_u64(&mut h, OFF_NEXT_SEQ, self.next_seq);
        put_u64(&mut h, OFF_LOG_ID, self.log_id);
        put_u32(&mut h, OFF_IMAP_BLOCKS, self.imap_addrs.len() as u32);
        put_u32(&mut h, OFF_USAGE_BLOCKS, self.usage_addrs.len() as u32);
        seal(&mut h);
        region[..BLOCK_SIZE].copy_from_slice(&h);
        let body = &mut region[BLOCK_SIZE..(n - 1) * BLOCK_SIZE];
        for (i, a) in self
            .imap_addrs
            .iter()
            .chain(self.usage_addrs.iter())
            .enumerate()
        {
            put_u64(body, i * 8, a.get());
        }
        let body_crc = crc(&region[..(n - 1) * BLOCK_SIZE]);
        let mut t = new_block(MAGIC_CP_TRAILER);
        put_u64(&mut t, OFF_T_GENERATION, self.generation);
        put_u64(&mut t, OFF_T_TIMESTAMP, self.timestamp_ns);
        put_u32(&mut t, OFF_T_BODY_CRC, body_crc);
        seal(&mut t);
        region[(n - 1) * BLOCK_SIZE..].copy_from_slice(&t);
        region
    }

    /// Decode and validate a whole region against the superblock's geometry.
    pub fn decode(region: &[u8], sb: &Superblock) -> Result<Checkpoint, FormatError> {
        const W: &str = "checkpoint";
        let n = sb.cp_blocks as usize;
        if n < 2 || region.len() != n * BLOCK_SIZE {
            return Err(FormatError::WrongSize {
                what: W,
                len: region.len(),
                expected: n * BLOCK_SIZE,
            });
        }
        let h = &region[..BLOCK_SIZE];
        check_block(h, "checkpoint header", MAGIC_CP_HEADER)?;
        let t = &region[(n - 1) * BLOCK_SIZE..];
        check_block(t, "checkpoint trailer", MAGIC_CP_TRAILER)?;
        let generation = get_u64(h, OFF_GENERATION);
        let timestamp_ns = get_u64(h, OFF_TIMESTAMP);
        if get_u64(t, OFF_T_GENERATION) != generation || get_u64(t, OFF_T_TIMESTAMP) != timestamp_ns
        {
            return Err(FormatError::invalid(
                W,
                "header and trailer disagree (torn checkpoint write)",
            ));
        }
        let stored = get_u32(t, OFF_T_BODY_CRC);
        let computed = crc(&region[..(n - 1) * BLOCK_SIZE]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                what: "checkpoint body",
                stored,
                computed,
            });
        }
        let ni = get_u32(h, OFF_IMAP_BLOCKS);
        let nu = get_u32(h, OFF_USAGE_BLOCKS);
        if ni != sb.imap_blocks || nu != sb.usage_blocks {
            return Err(FormatError::invalid(
                W,
                "table sizes differ from the superblock",
            ));
        }
        let head_segment = SegNo(get_u64(h, OFF_HEAD_SEG));
        let head_offset = get_u32(h, OFF_HEAD_OFF);
        if head_segment.get() >= sb.nsegs || head_offset >= sb.seg_blocks {
            return Err(FormatError::invalid(
                W,
                format!("log head {head_segment}:{head_offset} out of bounds"),
            ));
        }
        let flags = get_u16(h, OFF_FLAGS);
        if flags & !CP_FLAG_CLEAN != 0 {
            return Err(FormatError::invalid(W, format!("unknown flags {flags:#x}")));
        }
        let body = &region[BLOCK_SIZE..(n - 1) * BLOCK_SIZE];
        let addr = |i: usize| BlockAddr(get_u64(body, i * 8));
        let in_log = |a: BlockAddr| sb.seg_of(a).is_some();
        let imap_addrs: Vec<BlockAddr> = (0..ni as usize).map(addr).collect();
        let usage_addrs: Vec<BlockAddr> = (ni as usize..(ni + nu) as usize).map(addr).collect();
        if let Some(a) = imap_addrs.iter().find(|&&a| !a.is_none() && !in_log(a)) {
            return Err(FormatError::invalid(
                W,
                format!("imap block address {a} outside the log"),
            ));
        }
        if let Some(a) = usage_addrs.iter().find(|&&a| !in_log(a)) {
            return Err(FormatError::invalid(
                W,
                format!("usage block address {a} outside the log"),
            ));
        }
        Ok(Checkpoint {
            generation,
            timestamp_ns,
            clean_unmount: flags & CP_FLAG_CLEAN != 0,
            head_segment,
            head_offset,
            next_seq: get_u64(h, OFF_NEXT_SEQ),
            log_id: get_u64(h, OFF_LOG_ID),
            imap_addrs,
            usage_addrs,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::superblock::{LayoutRequest, DEFAULT_BYTES_PER_INODE};
    use super::*;

    fn sb() -> Superblock {
        Superblock::layout(&LayoutRequest {
            total_bytes: 64 << 20,
            seg_bytes: 1 << 20,
            bytes_per_inode: DEFAULT_BYTES_PER_INODE,
            label: String::new(),
            uuid: [1; 16],
            created_ns: 1,
        })
        .expect("layout")
    }

    fn cp(sb: &Superblock) -> Checkpoint {
        Checkpoint {
            generation: 9,
            timestamp_ns: 123456789,
            clean_unmount: true,
            head_segment: SegNo(3),
            head_offset: 17,
            next_seq: 1000,
            log_id: 55,
            imap_addrs: (0..sb.imap_blocks as u64)
                .map(|i| {
                    if i % 2 == 0 {
                        BlockAddr::NONE
                    } else {
                        sb.seg_addr(SegNo(1)) + i
                    }
                })
                .collect(),
            usage_addrs: (0..sb.usage_blocks as u64)
                .map(|i| sb.seg_addr(SegNo(2)) + i)
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let sb = sb();
        let c = cp(&sb);
        assert_eq!(Checkpoint::decode(&c.encode(&sb), &sb).expect("decode"), c);
    }

    #[test]
    fn any_flipped_bit_or_torn_write_is_detected() {
        let sb = sb();
        let region = cp(&sb).encode(&sb);
        crate::format::testutil::assert_bitflips_detected(&region, |b| Checkpoint::decode(b, &sb));
        // A torn write: the first blocks new, the rest from an older checkpoint.
        let mut old = cp(&sb);
        old.generation = 8;
        let old = old.encode(&sb);
        for cut in 1..sb.cp_blocks as usize {
            let mut torn = region[..cut * BLOCK_SIZE].to_vec();
            torn.extend_from_slice(&old[cut * BLOCK_SIZE..]);
            assert!(
                Checkpoint::decode(&torn, &sb).is_err(),
                "torn at block {cut} accepted"
            );
        }
    }

    #[test]
    fn addresses_outside_the_log_refused() {
        let sb = sb();
        let mut c = cp(&sb);
        c.usage_addrs[0] = sb.cp_b;
        assert!(Checkpoint::decode(&c.encode(&sb), &sb).is_err());
    }
}
