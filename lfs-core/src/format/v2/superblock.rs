//! The version 2 superblock (docs/FORMAT-V2.md §4): the geometry, written by mkfs at block 0
//! and in the last block, never rewritten. Against version 1 it has no table sizes and no
//! inode limit (nothing in it grows with the disk), one-block checkpoint regions, feature
//! words, the number of log streams and the default protection period.
//!
//! A version 1 superblock is refused with both versions named; version 1's decoder refuses
//! this one the same way (it reads up to version 1).

use super::super::{
    check_seal, check_size_magic, get_u16, get_u32, get_u64, get_u8, put_u16, put_u32, put_u64,
    put_u8, seal, FormatError, MAGIC_SUPERBLOCK,
};
use super::VERSION;
use crate::format::superblock::{LABEL_MAX, MAX_SEG_BLOCKS, MIN_SEGMENTS, MIN_SEG_BLOCKS};
use crate::format::{BlockAddr, SegNo, BLOCK_BYTES, BLOCK_SIZE};

const OFF_BLOCK_SIZE: usize = 8;
const OFF_SEG_BLOCKS: usize = 12;
const OFF_TOTAL_BLOCKS: usize = 16;
const OFF_SEG_BASE: usize = 24;
const OFF_NSEGS: usize = 32;
const OFF_CP_A: usize = 40;
const OFF_CP_B: usize = 48;
const OFF_RESERVED_SEGS: usize = 56;
const OFF_COMPAT: usize = 60;
const OFF_INCOMPAT: usize = 64;
const OFF_RO_COMPAT: usize = 68;
const OFF_STREAMS: usize = 72;
const OFF_PROTECT: usize = 76;
const OFF_CREATED: usize = 80;
const OFF_UUID: usize = 88;
const OFF_LABEL: usize = 104;
const _: () = assert!(OFF_LABEL + LABEL_MAX <= crate::format::CRC_OFF);

/// Read-only-compatible feature: chattr flags are enforced (an older build that ignores
/// them may only read).
pub const RO_COMPAT_CHATTR: u32 = 1;
/// Features this build knows.
const KNOWN_COMPAT: u32 = 0;
const KNOWN_INCOMPAT: u32 = 0;
const KNOWN_RO_COMPAT: u32 = RO_COMPAT_CHATTR;

/// Log streams mkfs makes by default, and the most there can be.
pub const DEFAULT_STREAMS: u8 = 4;
pub const MAX_STREAMS: u8 = super::summary::MAX_STREAMS;
/// Default protection period of checkpoints (docs/FORMAT-V2.md §10), seconds.
pub const DEFAULT_PROTECT_SECS: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub seg_blocks: u32,
    pub total_blocks: u64,
    pub seg_base: BlockAddr,
    pub nsegs: u64,
    pub cp_a: BlockAddr,
    pub cp_b: BlockAddr,
    pub reserved_segs: u32,
    pub features_compat: u32,
    pub features_incompat: u32,
    pub features_ro_compat: u32,
    pub streams: u8,
    pub protect_secs: u32,
    pub created_ns: u64,
    pub uuid: [u8; 16],
    pub label: String,
}

/// What mkfs asks for.
#[derive(Debug, Clone)]
pub struct Layout {
    pub total_bytes: u64,
    pub seg_bytes: u64,
    pub streams: u8,
    pub protect_secs: u32,
    pub label: String,
    pub uuid: [u8; 16],
    pub created_ns: u64,
}

impl Superblock {
    /// The geometry for a device, or why it cannot hold a filesystem: the primary
    /// superblock and region A, then segments aligned to their size, then region B and the
    /// backup superblock in the last two blocks.
    pub fn layout(req: &Layout) -> Result<Superblock, FormatError> {
        const W: &str = "layout";
        if req.label.len() > LABEL_MAX {
            return Err(FormatError::invalid(
                W,
                format!("label longer than {LABEL_MAX} bytes"),
            ));
        }
        if !req.seg_bytes.is_power_of_two() || !req.seg_bytes.is_multiple_of(BLOCK_BYTES) {
            return Err(FormatError::invalid(
                W,
                "segment size must be a power of two, at least 64K",
            ));
        }
        let seg_blocks = req.seg_bytes / BLOCK_BYTES;
        if !(u64::from(MIN_SEG_BLOCKS)..=u64::from(MAX_SEG_BLOCKS)).contains(&seg_blocks) {
            return Err(FormatError::invalid(
                W,
                "segment size must be between 64K and 64M",
            ));
        }
        if !(1..=MAX_STREAMS).contains(&req.streams) {
            return Err(FormatError::invalid(
                W,
                format!("streams must be 1 to {MAX_STREAMS}"),
            ));
        }
        let total_blocks = req.total_bytes / BLOCK_BYTES;
        let seg_base = seg_blocks; // blocks 0 and 1, then the first aligned segment
        let nsegs = total_blocks.saturating_sub(seg_base + 2) / seg_blocks;
        if nsegs < MIN_SEGMENTS {
            return Err(FormatError::invalid(
                W,
                format!(
                    "image too small: need at least {MIN_SEGMENTS} segments ({} KiB with {} KiB segments); use a smaller -s or a larger size",
                    (MIN_SEGMENTS + 2) * req.seg_bytes / 1024,
                    req.seg_bytes / 1024
                ),
            ));
        }
        let sb = Superblock {
            seg_blocks: seg_blocks as u32,
            total_blocks,
            seg_base: BlockAddr(seg_base),
            nsegs,
            cp_a: BlockAddr(1),
            cp_b: BlockAddr(total_blocks - 2),
            reserved_segs: (nsegs / 50).clamp(4, 256) as u32,
            features_compat: 0,
            features_incompat: 0,
            features_ro_compat: RO_COMPAT_CHATTR,
            streams: req.streams,
            protect_secs: req.protect_secs,
            created_ns: req.created_ns,
            uuid: req.uuid,
            label: req.label.clone(),
        };
        sb.validate()?;
        Ok(sb)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        put_u32(&mut b, 0, MAGIC_SUPERBLOCK);
        put_u16(&mut b, 4, VERSION);
        put_u32(&mut b, OFF_BLOCK_SIZE, BLOCK_SIZE as u32);
        put_u32(&mut b, OFF_SEG_BLOCKS, self.seg_blocks);
        put_u64(&mut b, OFF_TOTAL_BLOCKS, self.total_blocks);
        put_u64(&mut b, OFF_SEG_BASE, self.seg_base.get());
        put_u64(&mut b, OFF_NSEGS, self.nsegs);
        put_u64(&mut b, OFF_CP_A, self.cp_a.get());
        put_u64(&mut b, OFF_CP_B, self.cp_b.get());
        put_u32(&mut b, OFF_RESERVED_SEGS, self.reserved_segs);
        put_u32(&mut b, OFF_COMPAT, self.features_compat);
        put_u32(&mut b, OFF_INCOMPAT, self.features_incompat);
        put_u32(&mut b, OFF_RO_COMPAT, self.features_ro_compat);
        put_u8(&mut b, OFF_STREAMS, self.streams);
        put_u32(&mut b, OFF_PROTECT, self.protect_secs);
        put_u64(&mut b, OFF_CREATED, self.created_ns);
        b[OFF_UUID..OFF_UUID + 16].copy_from_slice(&self.uuid);
        let label = self.label.as_bytes();
        let n = label.len().min(LABEL_MAX);
        b[OFF_LABEL..OFF_LABEL + n].copy_from_slice(&label[..n]);
        seal(&mut b);
        b
    }

    /// Decode and check: size and magic, then the version (a version 1 superblock is
    /// refused naming both), the checksum, the features, the geometry.
    pub fn decode(b: &[u8]) -> Result<Superblock, FormatError> {
        const W: &str = "superblock";
        check_size_magic(b, W, MAGIC_SUPERBLOCK)?;
        let version = get_u16(b, 4);
        if version != VERSION {
            return Err(FormatError::OtherVersion {
                what: W,
                found: version,
                supported: VERSION,
            });
        }
        check_seal(b, W)?;
        let bs = get_u32(b, OFF_BLOCK_SIZE);
        if bs as usize != BLOCK_SIZE {
            return Err(FormatError::invalid(
                W,
                format!("block size {bs} is not supported"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[OFF_UUID..OFF_UUID + 16]);
        let raw_label = &b[OFF_LABEL..OFF_LABEL + LABEL_MAX];
        let end = raw_label.iter().position(|&c| c == 0).unwrap_or(LABEL_MAX);
        let label = String::from_utf8(raw_label[..end].to_vec())
            .map_err(|_| FormatError::invalid(W, "label is not UTF-8"))?;
        let sb = Superblock {
            seg_blocks: get_u32(b, OFF_SEG_BLOCKS),
            total_blocks: get_u64(b, OFF_TOTAL_BLOCKS),
            seg_base: BlockAddr(get_u64(b, OFF_SEG_BASE)),
            nsegs: get_u64(b, OFF_NSEGS),
            cp_a: BlockAddr(get_u64(b, OFF_CP_A)),
            cp_b: BlockAddr(get_u64(b, OFF_CP_B)),
            reserved_segs: get_u32(b, OFF_RESERVED_SEGS),
            features_compat: get_u32(b, OFF_COMPAT),
            features_incompat: get_u32(b, OFF_INCOMPAT),
            features_ro_compat: get_u32(b, OFF_RO_COMPAT),
            streams: get_u8(b, OFF_STREAMS),
            protect_secs: get_u32(b, OFF_PROTECT),
            created_ns: get_u64(b, OFF_CREATED),
            uuid,
            label,
        };
        if sb.features_incompat & !KNOWN_INCOMPAT != 0 {
            return Err(FormatError::invalid(
                W,
                format!(
                    "unknown incompatible features {:#x}: made by a newer mkfs-lfs",
                    sb.features_incompat & !KNOWN_INCOMPAT
                ),
            ));
        }
        sb.validate()?;
        Ok(sb)
    }

    /// Features an older reader may only read: true if this build must mount read-only.
    pub fn read_only_features(&self) -> bool {
        self.features_ro_compat & !KNOWN_RO_COMPAT != 0
    }

    /// Compatible features this build does not know (it may ignore them).
    pub fn unknown_compat(&self) -> u32 {
        self.features_compat & !KNOWN_COMPAT
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
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return bad(format!("{} log streams", self.streams));
        }
        if u64::from(self.reserved_segs) >= self.nsegs {
            return bad("reserved segments exceed segment count".into());
        }
        if self.total_blocks > u64::MAX / BLOCK_BYTES {
            return bad(format!("{} blocks cannot be addressed", self.total_blocks));
        }
        let seg_end = self
            .nsegs
            .checked_mul(u64::from(sb))
            .and_then(|n| n.checked_add(self.seg_base.get()));
        let (a, b) = (self.cp_a.get(), self.cp_b.get());
        match seg_end {
            Some(se)
                if a >= 1
                    && a < self.seg_base.get()
                    && self.seg_base.get().is_multiple_of(u64::from(sb))
                    && se <= b
                    && b + 1 < self.total_blocks =>
            {
                Ok(())
            }
            _ => bad("regions overlap or lie outside the device".into()),
        }
    }

    pub fn seg_addr(&self, seg: SegNo) -> BlockAddr {
        self.seg_base + seg.get() * u64::from(self.seg_blocks)
    }

    pub fn backup_addr(&self) -> BlockAddr {
        BlockAddr(self.total_blocks - 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(total: u64) -> Layout {
        Layout {
            total_bytes: total,
            seg_bytes: 1 << 20,
            streams: DEFAULT_STREAMS,
            protect_secs: DEFAULT_PROTECT_SECS,
            label: "test".into(),
            uuid: [7; 16],
            created_ns: 42,
        }
    }

    #[test]
    fn layout_round_trip_and_geometry_from_small_to_16_tib() {
        for total in [20 << 20, 1 << 30, (1u64 << 40) + 12345, 16 << 40] {
            let sb = Superblock::layout(&req(total)).unwrap();
            assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
            assert_eq!(sb.seg_base.get() % u64::from(sb.seg_blocks), 0);
            assert!(sb.seg_addr(SegNo(sb.nsegs)) <= sb.cp_b);
            assert_eq!(sb.backup_addr().get(), sb.cp_b.get() + 1);
            assert!(sb.total_blocks * BLOCK_BYTES <= total);
        }
        let e = Superblock::layout(&req(8 << 20)).unwrap_err();
        assert!(e.to_string().contains("image too small"), "{e}");
    }

    #[test]
    fn damage_is_an_error_and_version_1_is_refused_naming_both() {
        let sb = Superblock::layout(&req(64 << 20)).unwrap();
        crate::format::testutil::assert_bitflips_detected(&sb.encode(), Superblock::decode);
        let v1 = crate::format::superblock::Superblock::layout(
            &crate::format::superblock::LayoutRequest {
                total_bytes: 64 << 20,
                seg_bytes: 1 << 20,
                bytes_per_inode: 8192,
                label: String::new(),
                uuid: [1; 16],
                created_ns: 0,
            },
        )
        .unwrap();
        let e = Superblock::decode(&v1.encode()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("version 1") && msg.contains("version 2"),
            "{msg}"
        );
        // And version 1's decoder refuses this one.
        let e = crate::format::superblock::Superblock::decode(&sb.encode()).unwrap_err();
        assert!(
            matches!(e, FormatError::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn unknown_incompatible_features_are_refused() {
        let mut sb = Superblock::layout(&req(64 << 20)).unwrap();
        sb.features_incompat = 1 << 7;
        let e = Superblock::decode(&sb.encode()).unwrap_err();
        assert!(e.to_string().contains("incompatible"), "{e}");
        sb.features_incompat = 0;
        sb.features_ro_compat |= 1 << 9;
        let back = Superblock::decode(&sb.encode()).unwrap();
        assert!(back.read_only_features());
    }
}
