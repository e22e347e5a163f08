//! On-disk structures: pure encoding and decoding, no I/O.
//!
//! Each file owns one structure of `docs/FORMAT.md` and names its field offsets as
//! constants. Decoders check magic → version → checksum → bounds, in that order, and return
//! a [`FormatError`] for anything that does not verify; nothing here panics on bytes read
//! from a device.

pub mod acl;
mod addr;
pub mod checkpoint;
pub mod dir;
pub mod indirect;
pub mod inode;
pub mod summary;
pub mod superblock;
pub mod table;
pub mod v2;
pub mod xattr;

pub use addr::{BlockAddr, Cno, Ino, SegNo, VBlock, BLOCK_BYTES, BLOCK_SIZE};

/// The format version this code writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Initial value of every crc32, so that checksums of our structures differ from plain crc32.
pub const CRC_SEED: u32 = 0x4C46_5331;
/// Offset of the trailing crc32 in every single-block structure.
pub const CRC_OFF: usize = BLOCK_SIZE - 4;
/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Inode number of the root directory.
pub const ROOT_INO: Ino = Ino(1);

const _: () = assert!(BLOCK_SIZE.is_power_of_two());

pub const MAGIC_SUPERBLOCK: u32 = magic(b"LFSB");
pub const MAGIC_CP_HEADER: u32 = magic(b"LFSC");
pub const MAGIC_CP_TRAILER: u32 = magic(b"LFST");
pub const MAGIC_SUMMARY: u32 = magic(b"LFSS");
pub const MAGIC_INODE_BLOCK: u32 = magic(b"LFSN");
pub const MAGIC_INDIRECT: u32 = magic(b"LFSP");
pub const MAGIC_IMAP: u32 = magic(b"LFSI");
pub const MAGIC_USAGE: u32 = magic(b"LFSU");
pub const MAGIC_DIR: u32 = magic(b"LFSD");
pub const MAGIC_XATTR: u32 = magic(b"LFSX");

/// The magic as stored: the four ASCII bytes read as a little-endian u32.
const fn magic(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

/// Why a structure read from disk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what}: wrong size {len} bytes (expected {expected})")]
    WrongSize {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{what}: bad magic {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        what: &'static str,
        expected: u32,
        found: u32,
    },
    #[error("{what}: format version {found} is not supported (this program reads up to {supported}); it was made by a newer mkfs-lfs")]
    UnsupportedVersion {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("{what}: format version {found} is not supported: this build reads version {supported}; copy the files to a filesystem made by this mkfs-lfs")]
    OtherVersion {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("{what}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl FormatError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// Seeded crc32 of `bytes`.
pub fn crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(CRC_SEED);
    h.update(bytes);
    h.finalize()
}

// Little-endian field access. Offsets are named constants inside fixed-size blocks; a read
// outside the slice yields zero rather than a panic (and then fails validation).
/// The filesystem id stored in every summary (both versions): the seeded crc32 of the
/// superblock's uuid.
pub fn fs_id(uuid: &[u8; 16]) -> u32 {
    crc(uuid)
}

/// Checksum of a unit's payload, blocks in order (both versions).
pub fn data_crc<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(CRC_SEED);
    for b in blocks {
        h.update(b);
    }
    h.finalize()
}

pub(crate) fn get_u8(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}
pub(crate) fn put_u8(b: &mut [u8], off: usize, v: u8) {
    b[off] = v;
}
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A zeroed block with magic and version written.
pub(crate) fn new_block(magic: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE];
    put_u32(&mut b, 0, magic);
    put_u16(&mut b, 4, FORMAT_VERSION);
    b
}

/// Write the trailing checksum of a single-block structure.
pub(crate) fn seal(b: &mut [u8]) {
    let c = crc(&b[..CRC_OFF]);
    put_u32(b, CRC_OFF, c);
}

/// A block's size, then its magic: the first two checks of every structure, of either
/// format version.
pub(crate) fn check_size_magic(
    b: &[u8],
    what: &'static str,
    magic: u32,
) -> Result<(), FormatError> {
    if b.len() != BLOCK_SIZE {
        return Err(FormatError::WrongSize {
            what,
            len: b.len(),
            expected: BLOCK_SIZE,
        });
    }
    let found = get_u32(b, 0);
    if found != magic {
        return Err(FormatError::BadMagic {
            what,
            expected: magic,
            found,
        });
    }
    Ok(())
}

/// The checks every single-block structure starts with: size, magic, version, checksum.
pub(crate) fn check_block(b: &[u8], what: &'static str, magic: u32) -> Result<(), FormatError> {
    check_size_magic(b, what, magic)?;
    let version = get_u16(b, 4);
    if version == 0 || version > FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    check_seal(b, what)
}

/// The trailing checksum a single-block structure keeps of itself (`seal`).
pub(crate) fn check_seal(b: &[u8], what: &'static str) -> Result<(), FormatError> {
    let stored = get_u32(b, CRC_OFF);
    let computed = crc(&b[..CRC_OFF]);
    if stored != computed {
        return Err(FormatError::ChecksumMismatch {
            what,
            stored,
            computed,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Flip every bit of the block, one at a time, and require decode to fail cleanly.
    /// Sampled (every 7th bit plus the first and last 64) to keep it fast.
    pub fn assert_bitflips_detected<T: std::fmt::Debug>(
        block: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, super::FormatError>,
    ) {
        let nbits = block.len() * 8;
        for bit in (0..nbits).filter(|i| i % 7 == 0 || *i < 64 || *i >= nbits - 64) {
            let mut b = block.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b).is_err(), "flipping bit {bit} went unnoticed");
        }
        assert!(
            decode(&vec![0u8; block.len()]).is_err(),
            "all-zero block decoded"
        );
        assert!(
            decode(&block[..block.len() - 1]).is_err(),
            "short block decoded"
        );
    }
}
