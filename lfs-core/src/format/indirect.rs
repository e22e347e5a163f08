//! Indirect blocks: the inner nodes of a file's block tree, 510 pointers each.

use super::*;

/// Pointers per indirect block.
pub const FANOUT: usize = 510;
const OFF_HEIGHT: usize = 6;
const OFF_PTRS: usize = 8;
const _: () = assert!(OFF_PTRS + FANOUT * 8 <= CRC_OFF);

pub fn encode_indirect(height: u8, ptrs: &[u64]) -> Vec<u8> {
    debug_assert!(ptrs.len() == FANOUT && (1..=4).contains(&height));
    let mut b = new_block(MAGIC_INDIRECT);
    put_u8(&mut b, OFF_HEIGHT, height);
    for (i, p) in ptrs.iter().take(FANOUT).enumerate() {
        put_u64(&mut b, OFF_PTRS + 8 * i, *p);
    }
    seal(&mut b);
    b
}

/// Decode an indirect block; `height` is what the parent expects.
/// The pointers are block addresses in format version 1, virtual block numbers in 2.
pub fn decode_indirect(b: &[u8], height: u8) -> Result<Vec<u64>, FormatError> {
    check_block(b, "indirect block", MAGIC_INDIRECT)?;
    let h = get_u8(b, OFF_HEIGHT);
    if h != height {
        return Err(FormatError::invalid(
            "indirect block",
            format!("height {h}, expected {height}"),
        ));
    }
    Ok((0..FANOUT).map(|i| get_u64(b, OFF_PTRS + 8 * i)).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let ptrs: Vec<u64> = (0..FANOUT as u64).map(|i| i * 3).collect();
        let b = encode_indirect(2, &ptrs);
        assert_eq!(decode_indirect(&b, 2).expect("decode"), ptrs);
        assert!(decode_indirect(&b, 1).is_err(), "wrong height accepted");
        crate::format::testutil::assert_bitflips_detected(&b, |b| decode_indirect(b, 2));
    }
}
