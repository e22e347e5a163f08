//! The superblock: the geometry of the filesystem, written by mkfs at block 0 and again in
//! the last block, and never rewritten afterwards.

use super::*;

const OFF_BLOCK_SIZE: usize = 8;
const OFF_SEG_BLOCKS: usize = 12;
const OFF_TOTAL_BLOCKS: usize = 16;
const OFF_SEG_BASE: usize = 24;
const OFF_NSEGS: usize = 32;
const OFF_CP_A: usize = 40;
const OFF_CP_B: usize = 48;
const OFF_CP_BLOCKS: usize = 56;
const OFF_IMAP_BLOCKS: usize = 60;
const OFF_USAGE_BLOCKS: usize = 64;
const OFF_RESERVED_SEGS: usize = 68;
const OFF_MAX_INODES: usize = 72;
const OFF_CREATED: usize = 80;
const OFF_UUID: usize = 88;
const OFF_LABEL: usize = 104;
/// Longest label, in bytes.
pub const LABEL_MAX: usize = 64;

/// Entries per imap or usage block (see `table.rs`).
pub const TABLE_ENTRIES: u64 = super::table::TABLE_ENTRIES as u64;
/// Smallest and largest segment, in blocks (64 KiB .. 64 MiB).
pub const MIN_SEG_BLOCKS: u32 = 16;
pub const MAX_SEG_BLOCKS: u32 = 16384;
/// Fewest segments a filesystem may have.
pub const MIN_SEGMENTS: u64 = 16;
/// Default segment size: see docs/FORMAT.md "Why 1 MiB segments".
pub const DEFAULT_SEG_BYTES: u64 = 1 << 20;
/// Default bytes of capacity per inode when sizing the inode map.
pub const DEFAULT_BYTES_PER_INODE: u64 = 8192;

const _: () = assert!(OFF_LABEL + LABEL_MAX <= CRC_OFF);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub seg_blocks: u32,
    pub total_blocks: u64,
    pub seg_base: BlockAddr,
    pub nsegs: u64,
    pub cp_a: BlockAddr,
    pub cp_b: BlockAddr,
    pub cp_blocks: u32,
    pub imap_blocks: u32,
    pub usage_blocks: u32,
    pub reserved_segs: u32,
    pub max_inodes: u64,
    pub created_ns: u64,
    pub uuid: [u8; 16],
    pub label: String,
}

/// What mkfs asks for; [`Superblock::layout`] turns it into a geometry.
#[derive(Debug, Clone)]
pub struct LayoutRequest {
    pub total_bytes: u64,
    pub seg_bytes: u64,
    /// Bytes of capacity per inode; sets max_inodes.
    pub bytes_per_inode: u64,
    pub label: String,
    pub uuid: [u8; 16],
    pub created_ns: u64,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Blocks a checkpoint region needs for the given table sizes.
pub fn cp_blocks_for(imap_blocks: u64, usage_blocks: u64) -> u64 {
    2 + div_ceil((imap_blocks + usage_blocks) * 8, BLOCK_BYTES)
}

impl Superblock {
    /// Compute the geometry for a device, or say why it cannot hold a filesystem.
    pub fn layout(req: &LayoutRequest) -> Result<Superblock, FormatError> {
        const W: &str = "layout";
        if req.label.len() > LABEL_MAX {
            return Err(FormatError::invalid(
                W,
                format!("label longer than {LABEL_MAX} bytes"),
            ));
        }
        if !req.seg_bytes.is_multiple_of(BLOCK_BYTES) || !req.seg_bytes.is_power_of_two() {
            return Err(FormatError::invalid(
                W,
                "segment size must be a power of two, at least 64K",
            ));
        }
        let seg_blocks = req.seg_bytes / BLOCK_BYTES;
        if !(MIN_SEG_BLOCKS as u64..=MAX_SEG_BLOCKS as u64).contains(&seg_blocks) {
            return Err(FormatError::invalid(
                W,
                "segment size must be between 64K and 64M",
            ));
        }
        if req.bytes_per_inode < BLOCK_BYTES {
            return Err(FormatError::invalid(
                W,
                "bytes per inode must be at least 4096",
            ));
        }
        let total_blocks = req.total_bytes / BLOCK_BYTES;
        let min_bytes = (MIN_SEGMENTS + 2) * req.seg_bytes;
        let too_small = || {
            FormatError::invalid(
                W,
                format!(
                    "image too small: need at least {MIN_SEGMENTS} segments ({} KiB with {} KiB segments); use a smaller -s or a larger size",
                    min_bytes / 1024,
                    req.seg_bytes / 1024
                ),
            )
        };
        let max_inodes_wanted = (req.total_bytes / req.bytes_per_inode).clamp(1024, 1 << 32);
        let imap_blocks = div_ceil(max_inodes_wanted, TABLE_ENTRIES);
        // cp_blocks depends on nsegs and nsegs on cp_blocks; start from an upper bound of
        // nsegs, whose cp_blocks is then large enough for the final (smaller or equal) nsegs.
        let mut nsegs = total_blocks / seg_blocks;
        let mut usage_blocks = div_ceil(nsegs.max(1), TABLE_ENTRIES);
        let cp_blocks = cp_blocks_for(imap_blocks, usage_blocks);
        let seg_base = div_ceil(1 + cp_blocks, seg_blocks) * seg_blocks;
        let tail = cp_blocks + 1; // region B and the backup superblock
        let room = total_blocks
            .checked_sub(seg_base + tail)
            .ok_or_else(too_small)?;
        nsegs = room / seg_blocks;
        if nsegs < MIN_SEGMENTS {
            return Err(too_small());
        }
        usage_blocks = div_ceil(nsegs, TABLE_ENTRIES);
        let reserved_segs = (nsegs / 50).clamp(4, 256);
        let sb = Superblock {
            seg_blocks: seg_blocks as u32,
            total_blocks,
            seg_base: BlockAddr(seg_base),
            nsegs,
            cp_a: BlockAddr(1),
            cp_b: BlockAddr(total_blocks - 1 - cp_blocks),
            cp_blocks: cp_blocks as u32,
            imap_blocks: imap_blocks as u32,
            usage_blocks: usage_blocks as u32,
            reserved_segs: reserved_segs as u32,
            max_inodes: imap_blocks * TABLE_ENTRIES,
            created_ns: req.created_ns,
            uuid: req.uuid,
            label: req.label.clone(),
        };
        sb.validate()?;
        Ok(sb)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = new_block(MAGIC_SUPERBLOCK);
        put_u32(&mut b, OFF_BLOCK_SIZE, BLOCK_SIZE as u32);
        put_u32(&mut b, OFF_SEG_BLOCKS, self.seg_blocks);
        put_u64(&mut b, OFF_TOTAL_BLOCKS, self.total_blocks);
        put_u64(&mut b, OFF_SEG_BASE, self.seg_base.get());
        put_u64(&mut b, OFF_NSEGS, self.nsegs);
        put_u64(&mut b, OFF_CP_A, self.cp_a.get());
        put_u64(&mut b, OFF_CP_B, self.cp_b.get());
        put_u32(&mut b, OFF_CP_BLOCKS, self.cp_blocks);
        put_u32(&mut b, OFF_IMAP_BLOCKS, self.imap_blocks);
        put_u32(&mut b, OFF_USAGE_BLOCKS, self.usage_blocks);
        put_u32(&mut b, OFF_RESERVED_SEGS, self.reserved_segs);
        put_u64(&mut b, OFF_MAX_INODES, self.max_inodes);
        put_u64(&mut b, OFF_CREATED, self.created_ns);
        b[OFF_UUID..OFF_UUID + 16].copy_from_slice(&self.uuid);
        let label = self.label.as_bytes();
        let n = label.len().min(LABEL_MAX);
        b[OFF_LABEL..OFF_LABEL + n].copy_from_slice(&label[..n]);
        seal(&mut b);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, FormatError> {
        check_block(b, "superblock", MAGIC_SUPERBLOCK)?;
        let bs = get_u32(b, OFF_BLOCK_SIZE);
        if bs as usize != BLOCK_SIZE {
            return Err(FormatError::invalid(
                "superblock",
                format!("block size {bs} is not supported"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[OFF_UUID..OFF_UUID + 16]);
        let raw_label = &b[OFF_LABEL..OFF_LABEL + LABEL_MAX];
        let end = raw_label.iter().position(|&c| c == 0).unwrap_or(LABEL_MAX);
        let label = String::from_utf8(raw_label[..end].to_vec())
            .map_err(|_| FormatError::invalid("superblock", "label is not UTF-8"))?;
        let sb = Superblock {
            seg_blocks: get_u32(b, OFF_SEG_BLOCKS),
            total_blocks: get_u64(b, OFF_TOTAL_BLOCKS),
            seg_base: BlockAddr(get_u64(b, OFF_SEG_BASE)),
            nsegs: get_u64(b, OFF_NSEGS),
            cp_a: BlockAddr(get_u64(b, OFF_CP_A)),
            cp_b: BlockAddr(get_u64(b, OFF_CP_B)),
            cp_blocks: get_u32(b, OFF_CP_BLOCKS),
            imap_blocks: get_u32(b, OFF_IMAP_BLOCKS),
            usage_blocks: get_u32(b, OFF_USAGE_BLOCKS),
            reserved_segs: get_u32(b, OFF_RESERVED_SEGS),
            max_inodes: get_u64(b, OFF_MAX_INODES),
            created_ns: get_u64(b, OFF_CREATED),
            uuid,
            label,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Geometry checks: everything in bounds, nothing overlapping.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |d: String| Err(FormatError::invalid("superblock", d));
        let sb = self.seg_blocks;
        if !sb.is_power_of_two() || !(MIN_SEG_BLOCKS..=MAX_SEG_BLOCKS).contains(&sb) {
            return bad(format!("segment size {sb} blocks out of range"));
        }
        if self.nsegs < MIN_SEGMENTS || self.nsegs > (1 << 40) {
            return bad(format!("segment count {} out of range", self.nsegs));
        }
        if self.usage_blocks as u64 != div_ceil(self.nsegs, TABLE_ENTRIES) {
            return bad("usage table size does not match segment count".into());
        }
        if self.imap_blocks == 0 || self.max_inodes != self.imap_blocks as u64 * TABLE_ENTRIES {
            return bad("inode map size inconsistent".into());
        }
        if (self.cp_blocks as u64)
            < cp_blocks_for(self.imap_blocks as u64, self.usage_blocks as u64)
        {
            return bad("checkpoint region too small for its tables".into());
        }
        if (self.reserved_segs as u64) >= self.nsegs {
            return bad("reserved segments exceed segment count".into());
        }
        // Byte offsets of every block must fit in a u64.
        if self.total_blocks > u64::MAX / BLOCK_BYTES {
            return bad(format!("{} blocks cannot be addressed", self.total_blocks));
        }
        let (seg_base, cp_a, cp_b) = (self.seg_base.get(), self.cp_a.get(), self.cp_b.get());
        let seg_end = self
            .nsegs
            .checked_mul(sb as u64)
            .and_then(|n| n.checked_add(seg_base));
        let cp_a_end = cp_a.checked_add(self.cp_blocks as u64);
        let cp_b_end = cp_b.checked_add(self.cp_blocks as u64);
        match (seg_end, cp_a_end, cp_b_end) {
            (Some(se), Some(ae), Some(be))
                if cp_a >= 1 && ae <= seg_base && se <= cp_b && be < self.total_blocks =>
            {
                Ok(())
            }
            _ => bad("regions overlap or lie outside the device".into()),
        }
    }

    /// Block address of the first block of segment `seg`.
    pub fn seg_addr(&self, seg: SegNo) -> BlockAddr {
        self.seg_base + seg.get() * self.seg_blocks as u64
    }

    /// The segment holding block `addr`, if it lies in the segment area.
    pub fn seg_of(&self, addr: BlockAddr) -> Option<SegNo> {
        let rel = addr.get().checked_sub(self.seg_base.get())?;
        let seg = rel / self.seg_blocks as u64;
        (seg < self.nsegs).then_some(SegNo(seg))
    }

    /// Every segment, in order.
    pub fn segments(&self) -> impl Iterator<Item = SegNo> {
        (0..self.nsegs).map(SegNo)
    }

    /// Bytes in one segment.
    pub fn seg_bytes(&self) -> u64 {
        self.seg_blocks as u64 * BLOCK_BYTES
    }

    /// Address of the backup superblock.
    pub fn backup_addr(&self) -> BlockAddr {
        BlockAddr(self.total_blocks - 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(total: u64) -> LayoutRequest {
        LayoutRequest {
            total_bytes: total,
            seg_bytes: DEFAULT_SEG_BYTES,
            bytes_per_inode: DEFAULT_BYTES_PER_INODE,
            label: "test".into(),
            uuid: [7; 16],
            created_ns: 42,
        }
    }

    #[test]
    fn layout_round_trip_and_geometry() {
        for total in [20 << 20, 64 << 20, 1 << 30, 10 << 30, (1u64 << 40) + 12345] {
            let sb = Superblock::layout(&req(total)).expect("layout");
            let back = Superblock::decode(&sb.encode()).expect("decode");
            assert_eq!(sb, back);
            assert_eq!(
                sb.seg_base.get() % sb.seg_blocks as u64,
                0,
                "segments aligned"
            );
            assert!(sb.seg_addr(SegNo(sb.nsegs)) <= sb.cp_b);
            assert_eq!(sb.seg_of(sb.seg_addr(SegNo(3)) + 5), Some(SegNo(3)));
            assert_eq!(sb.seg_of(sb.cp_b), None);
            assert!(sb.max_inodes >= total / DEFAULT_BYTES_PER_INODE);
        }
    }

    #[test]
    fn too_small_says_why() {
        let e = Superblock::layout(&req(8 << 20)).unwrap_err();
        assert!(e.to_string().contains("image too small"), "{e}");
    }

    #[test]
    fn corruption_is_an_error() {
        let sb = Superblock::layout(&req(64 << 20)).expect("layout");
        crate::format::testutil::assert_bitflips_detected(&sb.encode(), Superblock::decode);
    }

    #[test]
    fn newer_version_refused() {
        let sb = Superblock::layout(&req(64 << 20)).expect("layout");
        let mut b = sb.encode();
        put_u16(&mut b, 4, FORMAT_VERSION + 1);
        seal(&mut b);
        let e = Superblock::decode(&b).unwrap_err();
        assert!(
            matches!(e, FormatError::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_geometry_refused_even_with_good_crc() {
        let mut sb = Superblock::layout(&req(64 << 20)).expect("layout");
        sb.nsegs = 1 << 30;
        let e = Superblock::decode(&sb.encode()).unwrap_err();
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
    }
}
