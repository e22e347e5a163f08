//! The xattr block: all extended attributes of one inode, as on ext4 limited to one block.

use super::*;
use std::collections::BTreeMap;

const OFF_COUNT: usize = 6;
const OFF_USED: usize = 8;
const OFF_ENTRIES: usize = 12;
/// Bytes available for entries.
pub const XATTR_CAPACITY: usize = CRC_OFF - OFF_ENTRIES;
/// Fixed part of an entry: name_len (1) + value_len (2).
pub const XATTR_ENTRY_HEADER: usize = 3;

/// Name → value.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Bytes the set takes in a block.
pub fn xattrs_size(x: &Xattrs) -> usize {
    x.iter()
        .map(|(k, v)| XATTR_ENTRY_HEADER + k.len() + v.len())
        .sum()
}

pub fn encode_xattrs(x: &Xattrs) -> Result<Vec<u8>, FormatError> {
    let used = xattrs_size(x);
    if used > XATTR_CAPACITY || x.keys().any(|k| k.is_empty() || k.len() > MAX_NAME_LEN) {
        return Err(FormatError::invalid("xattr block", "attributes do not fit"));
    }
    let mut b = new_block(MAGIC_XATTR);
    put_u16(&mut b, OFF_COUNT, x.len() as u16);
    put_u32(&mut b, OFF_USED, used as u32);
    let mut o = OFF_ENTRIES;
    for (k, v) in x {
        put_u8(&mut b, o, k.len() as u8);
        put_u16(&mut b, o + 1, v.len() as u16);
        o += XATTR_ENTRY_HEADER;
        b[o..o + k.len()].copy_from_slice(k);
        o += k.len();
        b[o..o + v.len()].copy_from_slice(v);
        o += v.len();
    }
    seal(&mut b);
    Ok(b)
}

pub fn decode_xattrs(b: &[u8]) -> Result<Xattrs, FormatError> {
    const W: &str = "xattr block";
    check_block(b, W, MAGIC_XATTR)?;
    let n = get_u16(b, OFF_COUNT) as usize;
    let used = get_u32(b, OFF_USED) as usize;
    if used > XATTR_CAPACITY {
        return Err(FormatError::invalid(W, "used size out of range"));
    }
    let end = OFF_ENTRIES + used;
    let mut x = Xattrs::new();
    let mut o = OFF_ENTRIES;
    for i in 0..n {
        if o + XATTR_ENTRY_HEADER > end {
            return Err(FormatError::invalid(
                W,
                format!("entry {i} runs past the used area"),
            ));
        }
        let kl = get_u8(b, o) as usize;
        let vl = get_u16(b, o + 1) as usize;
        let ks = o + XATTR_ENTRY_HEADER;
        let vs = ks + kl;
        if kl == 0 || vs + vl > end {
            return Err(FormatError::invalid(W, format!("entry {i} is malformed")));
        }
        if x.insert(b[ks..vs].to_vec(), b[vs..vs + vl].to_vec())
            .is_some()
        {
            return Err(FormatError::invalid(W, format!("entry {i} repeats a name")));
        }
        o = vs + vl;
    }
    if o != end {
        return Err(FormatError::invalid(
            W,
            "used size does not match the entries",
        ));
    }
    Ok(x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_limits_and_corruption() {
        let mut x = Xattrs::new();
        x.insert(b"user.a".to_vec(), b"1".to_vec());
        x.insert(b"user.empty".to_vec(), vec![]);
        x.insert(b"security.selinux".to_vec(), vec![0xff; 300]);
        let b = encode_xattrs(&x).expect("encode");
        assert_eq!(decode_xattrs(&b).expect("decode"), x);
        crate::format::testutil::assert_bitflips_detected(&b, decode_xattrs);
        x.insert(b"user.big".to_vec(), vec![1; XATTR_CAPACITY]);
        assert!(encode_xattrs(&x).is_err());
    }
}
