//! Table blocks: the inode map and the segment usage table share one block shape, 255
//! sixteen-byte entries with a header naming the table and the block's index in it.

use super::*;

/// Entries per table block.
pub const TABLE_ENTRIES: usize = 255;
const ENTRY_SIZE: usize = 16;
const OFF_INDEX: usize = 8;
const OFF_ENTRIES: usize = 12;
const _: () = assert!(OFF_ENTRIES + TABLE_ENTRIES * ENTRY_SIZE == CRC_OFF);

/// Imap entry flag: the inode is allocated.
pub const IMAP_ALLOCATED: u8 = 1;
/// Imap entry flag: nlink is 0 but the file was still open; free it at mount.
pub const IMAP_ORPHAN: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImapEntry {
    /// Inode block holding the current copy; 0 = never written.
    pub addr: BlockAddr,
    pub version: u32,
    pub slot: u8,
    pub flags: u8,
}

impl ImapEntry {
    pub fn allocated(&self) -> bool {
        self.flags & IMAP_ALLOCATED != 0
    }
}

/// Segment states as stored.
pub const SEG_CLEAN: u8 = 0;
pub const SEG_IN_USE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageEntry {
    pub live_bytes: u32,
    pub state: u8,
    pub write_time_ns: u64,
}

fn encode_table(magic: u32, index: u32, fill: impl Fn(&mut [u8], usize)) -> Vec<u8> {
    let mut b = new_block(magic);
    put_u32(&mut b, OFF_INDEX, index);
    for i in 0..TABLE_ENTRIES {
        let o = OFF_ENTRIES + i * ENTRY_SIZE;
        fill(&mut b[o..o + ENTRY_SIZE], i);
    }
    seal(&mut b);
    b
}

fn check_table(b: &[u8], what: &'static str, magic: u32, index: u32) -> Result<(), FormatError> {
    check_block(b, what, magic)?;
    let found = get_u32(b, OFF_INDEX);
    if found != index {
        return Err(FormatError::invalid(
            what,
            format!("block index {found}, expected {index}"),
        ));
    }
    Ok(())
}

fn entry(b: &[u8], i: usize) -> &[u8] {
    let o = OFF_ENTRIES + i * ENTRY_SIZE;
    &b[o..o + ENTRY_SIZE]
}

pub fn encode_imap_block(index: u32, entries: &[ImapEntry]) -> Vec<u8> {
    encode_table(MAGIC_IMAP, index, |s, i| {
        let e = entries.get(i).copied().unwrap_or_default();
        put_u64(s, 0, e.addr.get());
        put_u32(s, 8, e.version);
        put_u8(s, 12, e.slot);
        put_u8(s, 13, e.flags);
    })
}

pub fn decode_imap_block(b: &[u8], index: u32) -> Result<Vec<ImapEntry>, FormatError> {
    const W: &str = "inode map block";
    check_table(b, W, MAGIC_IMAP, index)?;
    (0..TABLE_ENTRIES)
        .map(|i| {
            let s = entry(b, i);
            let e = ImapEntry {
                addr: BlockAddr(get_u64(s, 0)),
                version: get_u32(s, 8),
                slot: get_u8(s, 12),
                flags: get_u8(s, 13),
            };
            let bad_flags = e.flags & !(IMAP_ALLOCATED | IMAP_ORPHAN) != 0;
            if bad_flags
                || e.slot as usize >= super::inode::INODES_PER_BLOCK
                || (e.allocated() && e.addr.is_none())
            {
                return Err(FormatError::invalid(W, format!("entry {i} is malformed")));
            }
            Ok(e)
        })
        .collect()
}

pub fn encode_usage_block(index: u32, entries: &[UsageEntry]) -> Vec<u8> {
    encode_table(MAGIC_USAGE, index, |s, i| {
        let e = entries.get(i).copied().unwrap_or_default();
        put_u32(s, 0, e.live_bytes);
        put_u8(s, 4, e.state);
        put_u64(s, 8, e.write_time_ns);
    })
}

/// `seg_bytes` bounds live_bytes.
pub fn decode_usage_block(
    b: &[u8],
    index: u32,
    seg_bytes: u64,
) -> Result<Vec<UsageEntry>, FormatError> {
    const W: &str = "segment usage block";
    check_table(b, W, MAGIC_USAGE, index)?;
    (0..TABLE_ENTRIES)
        .map(|i| {
            let s = entry(b, i);
            let e = UsageEntry {
                live_bytes: get_u32(s, 0),
                state: get_u8(s, 4),
                write_time_ns: get_u64(s, 8),
            };
            if e.state > SEG_IN_USE || e.live_bytes as u64 > seg_bytes {
                return Err(FormatError::invalid(W, format!("entry {i} is malformed")));
            }
            Ok(e)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn imap_round_trip_and_corruption() {
        let v: Vec<ImapEntry> = (0..TABLE_ENTRIES as u64)
            .map(|i| ImapEntry {
                addr: BlockAddr(i * 10 + 1),
                version: i as u32,
                slot: (i % 15) as u8,
                flags: IMAP_ALLOCATED,
            })
            .collect();
        let b = encode_imap_block(3, &v);
        assert_eq!(decode_imap_block(&b, 3).expect("decode"), v);
        assert!(decode_imap_block(&b, 4).is_err(), "wrong index accepted");
        crate::format::testutil::assert_bitflips_detected(&b, |b| decode_imap_block(b, 3));
    }

    #[test]
    fn usage_round_trip_and_corruption() {
        let v: Vec<UsageEntry> = (0..TABLE_ENTRIES as u64)
            .map(|i| UsageEntry {
                live_bytes: (i * 4096) as u32,
                state: (i % 2) as u8,
                write_time_ns: i * 1000,
            })
            .collect();
        let b = encode_usage_block(0, &v);
        assert_eq!(decode_usage_block(&b, 0, 1 << 20).expect("decode"), v);
        assert!(
            decode_usage_block(&b, 0, 4096).is_err(),
            "live bytes beyond segment accepted"
        );
        crate::format::testutil::assert_bitflips_detected(&b, |b| {
            decode_usage_block(b, 0, 1 << 20)
        });
    }
}
