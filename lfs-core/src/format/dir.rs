//! Directory blocks: the data blocks of a directory inode. Entries sit in slots that never
//! move, so (block, slot) is a stable readdir cookie; a removed entry leaves an empty slot.

use super::inode::FileKind;
use super::*;

const OFF_COUNT: usize = 6;
const OFF_SLOTS: usize = 12;
/// Bytes available for slots in one block.
pub const DIR_CAPACITY: usize = CRC_OFF - OFF_SLOTS;
/// Fixed part of a slot: ino (8), kind (1), name_len (1).
pub const SLOT_HEADER: usize = 10;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// Bytes a slot takes on disk (`None` = empty slot).
pub fn slot_size(e: &Option<DirEntry>) -> usize {
    SLOT_HEADER + e.as_ref().map_or(0, |e| e.name.len())
}

/// Whether `name` may be stored in a directory.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name != b"."
        && name != b".."
}

/// Encode slots; the caller keeps their total size within [`DIR_CAPACITY`].
pub fn encode_dir_block(slots: &[Option<DirEntry>]) -> Result<Vec<u8>, FormatError> {
    let total: usize = slots.iter().map(slot_size).sum();
    if total > DIR_CAPACITY || slots.len() > u16::MAX as usize {
        return Err(FormatError::invalid(
            "directory block",
            "entries do not fit",
        ));
    }
    let mut b = new_block(MAGIC_DIR);
    put_u16(&mut b, OFF_COUNT, slots.len() as u16);
    let mut o = OFF_SLOTS;
    for s in slots {
        if let Some(e) = s {
            put_u64(&mut b, o, e.ino.get());
            put_u8(&mut b, o + 8, e.kind as u8);
            put_u8(&mut b, o + 9, e.name.len() as u8);
            b[o + SLOT_HEADER..o + SLOT_HEADER + e.name.len()].copy_from_slice(&e.name);
        }
        o += slot_size(s);
    }
    seal(&mut b);
    Ok(b)
}

pub fn decode_dir_block(b: &[u8]) -> Result<Vec<Option<DirEntry>>, FormatError> {
    const W: &str = "directory block";
    check_block(b, W, MAGIC_DIR)?;
    let n = get_u16(b, OFF_COUNT) as usize;
    let mut slots = Vec::with_capacity(n.min(DIR_CAPACITY / SLOT_HEADER));
    let mut o = OFF_SLOTS;
    for i in 0..n {
        if o + SLOT_HEADER > CRC_OFF {
            return Err(FormatError::invalid(
                W,
                format!("slot {i} runs past the block"),
            ));
        }
        let ino = Ino(get_u64(b, o));
        let kind = get_u8(b, o + 8);
        let len = get_u8(b, o + 9) as usize;
        let end = o + SLOT_HEADER + len;
        if end > CRC_OFF {
            return Err(FormatError::invalid(
                W,
                format!("slot {i} runs past the block"),
            ));
        }
        if ino.get() == 0 {
            if kind != 0 || len != 0 {
                return Err(FormatError::invalid(
                    W,
                    format!("empty slot {i} is not blank"),
                ));
            }
            slots.push(None);
        } else {
            let kind = FileKind::from_u8(kind)
                .ok_or_else(|| FormatError::invalid(W, format!("slot {i}: bad kind {kind}")))?;
            let name = b[o + SLOT_HEADER..end].to_vec();
            if !valid_name(&name) {
                return Err(FormatError::invalid(W, format!("slot {i}: invalid name")));
            }
            slots.push(Some(DirEntry { ino, kind, name }));
        }
        o = end;
    }
    Ok(slots)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn e(i: u64, name: &str) -> Option<DirEntry> {
        Some(DirEntry {
            ino: Ino(i),
            kind: FileKind::Regular,
            name: name.as_bytes().to_vec(),
        })
    }

    #[test]
    fn round_trip_with_holes() {
        let slots = vec![
            e(5, "a"),
            None,
            e(7, &"x".repeat(255)),
            None,
            e(9, "ünïcode"),
        ];
        let b = encode_dir_block(&slots).expect("encode");
        assert_eq!(decode_dir_block(&b).expect("decode"), slots);
    }

    #[test]
    fn full_block_and_overflow() {
        let name = "n".repeat(100);
        let per = DIR_CAPACITY / (SLOT_HEADER + 100);
        let slots: Vec<_> = (0..per as u64).map(|i| e(i + 1, &name)).collect();
        assert!(encode_dir_block(&slots).is_ok());
        let mut more = slots.clone();
        more.push(e(1000, &name));
        assert!(encode_dir_block(&more).is_err());
    }

    #[test]
    fn corruption_detected() {
        let b = encode_dir_block(&[e(5, "hello"), None, e(6, "world")]).expect("encode");
        crate::format::testutil::assert_bitflips_detected(&b, decode_dir_block);
    }

    #[test]
    fn names() {
        assert!(valid_name(b"a"));
        assert!(valid_name(&[0xff, 0xfe]));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(!valid_name(bad));
        }
        assert!(valid_name(&[b'x'; 255]));
        assert!(!valid_name(&[b'x'; 256]));
    }
}
