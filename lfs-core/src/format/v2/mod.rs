//! Format version 2 (docs/FORMAT-V2.md), built ahead of the engine that will use it: the
//! physical pointers and radix nodes of the DAT and the sufile, DAT leaves, sufile leaves,
//! cpfile entries and version 2 summaries. Nothing here is written by the engine yet; each
//! structure has its round-trip and damage tests so that the switch (issue 20, step 3)
//! starts from decoders that are already checked.
//!
//! Blocks reached by address carry no checksum of their own: the pointer to them holds it
//! (`PhysPtr::crc`), and their decoder takes the expected checksum first, then checks the
//! header against what the pointer's position says the block must be (height, first index).

pub mod checkpoint;
pub mod cpfile;
pub mod dat;
pub mod ptr;
pub mod root;
pub mod sufile;
pub mod summary;
pub mod superblock;

use super::{crc, get_u16, get_u32, get_u64, get_u8, put_u16, put_u32, put_u64, put_u8};
use super::{FormatError, BLOCK_SIZE};

/// The version 2 structures' version field.
pub const VERSION: u16 = 2;

/// Header of a block its referrer checksums (DAT and sufile nodes and leaves): magic u32,
/// version u16, height u8, count u8 (non-empty slots), index u64 (the first key covered).
pub(crate) const HEADER: usize = 16;
const OFF_VERSION: usize = 4;
const OFF_HEIGHT: usize = 6;
const OFF_COUNT: usize = 7;
const OFF_INDEX: usize = 8;

/// The checksum a referrer records for a block: seeded crc32 over all 4096 bytes.
pub fn block_crc(b: &[u8]) -> u32 {
    crc(b)
}

/// What a referred block must be: its magic, height and first index, and the checksum the
/// pointer to it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub crc: u32,
    pub height: u8,
    pub index: u64,
}

pub(crate) fn write_header(b: &mut [u8], magic: u32, height: u8, count: u8, index: u64) {
    put_u32(b, 0, magic);
    put_u16(b, OFF_VERSION, VERSION);
    put_u8(b, OFF_HEIGHT, height);
    put_u8(b, OFF_COUNT, count);
    put_u64(b, OFF_INDEX, index);
}

/// Size, then the referrer's checksum, then magic, version, height and index: the order of
/// docs/FORMAT.md's conventions with the checksum moved to the referrer. Returns the count.
pub(crate) fn check_referred(
    b: &[u8],
    what: &'static str,
    magic: u32,
    expect: &Expect,
) -> Result<u8, FormatError> {
    if b.len() != BLOCK_SIZE {
        return Err(FormatError::WrongSize {
            what,
            len: b.len(),
            expected: BLOCK_SIZE,
        });
    }
    let computed = block_crc(b);
    if computed != expect.crc {
        return Err(FormatError::ChecksumMismatch {
            what,
            stored: expect.crc,
            computed,
        });
    }
    super::check_size_magic(b, what, magic)?;
    let version = get_u16(b, OFF_VERSION);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion {
            what,
            found: version,
            supported: VERSION,
        });
    }
    let (height, index) = (get_u8(b, OFF_HEIGHT), get_u64(b, OFF_INDEX));
    if height != expect.height || index != expect.index {
        return Err(FormatError::invalid(
            what,
            format!(
                "holds height {height} from {index}, where height {} from {} belongs",
                expect.height, expect.index
            ),
        ));
    }
    Ok(get_u8(b, OFF_COUNT))
}

/// Size, magic and version of a version 2 block found by position (a summary, a checkpoint)
/// or vouched for by its summary entry (a group root); with `sealed`, also its own trailing
/// checksum, as version 1 blocks have.
pub(crate) fn check_v2(
    b: &[u8],
    what: &'static str,
    magic: u32,
    sealed: bool,
) -> Result<(), FormatError> {
    super::check_size_magic(b, what, magic)?;
    if get_u16(b, OFF_VERSION) != VERSION {
        return Err(FormatError::UnsupportedVersion {
            what,
            found: get_u16(b, OFF_VERSION),
            supported: VERSION,
        });
    }
    if sealed {
        super::check_seal(b, what)?;
    }
    Ok(())
}

/// Copy up to `n` bytes of `src` into `b` at `off` (an inode stored whole in a block).
pub(crate) fn put_bytes(b: &mut [u8], off: usize, src: &[u8], n: usize) {
    let n = src.len().min(n);
    b[off..off + n].copy_from_slice(&src[..n]);
}

/// The bytes after the last entry must be zero (so nothing is hidden there).
pub(crate) fn check_zero_tail(
    b: &[u8],
    from: usize,
    what: &'static str,
) -> Result<(), FormatError> {
    if b[from..].iter().any(|&x| x != 0) {
        return Err(FormatError::invalid(
            what,
            "bytes after the entries are not zero",
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::super::FormatError;

    /// A referred block: every sampled bit flip, and the wrong expected header, must fail.
    pub fn assert_referred_damage_detected<T: std::fmt::Debug>(
        block: &[u8],
        decode: impl Fn(&[u8], u32) -> Result<T, FormatError>,
    ) {
        let good = super::block_crc(block);
        assert!(decode(block, good).is_ok(), "the block itself must decode");
        let nbits = block.len() * 8;
        for bit in (0..nbits).filter(|i| i % 7 == 0 || *i < 64 || *i >= nbits - 64) {
            let mut b = block.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&b, good).is_err(),
                "flipping bit {bit} went unnoticed"
            );
        }
        assert!(
            decode(block, good ^ 1).is_err(),
            "a wrong checksum was accepted"
        );
        assert!(
            decode(&block[..block.len() - 1], good).is_err(),
            "short block decoded"
        );
        let zero = vec![0u8; block.len()];
        assert!(
            decode(&zero, super::block_crc(&zero)).is_err(),
            "all-zero block decoded"
        );
    }
}
