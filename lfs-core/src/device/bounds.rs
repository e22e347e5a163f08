//! Bounds checking shared by every device: one place that turns `(offset, len)` into a range
//! inside the device or an `InvalidInput` error, without overflow and without panicking.

use std::io;

/// Check that `len` bytes at `offset` lie inside a device of `dev_len` bytes and return the
/// end offset. An access of zero bytes at exactly `dev_len` is allowed. Never panics: the end
/// is computed with `checked_add`, so offsets near `u64::MAX` are errors, not overflows.
pub(super) fn check_range(offset: u64, len: usize, dev_len: u64) -> io::Result<u64> {
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len));
    match end {
        Some(end) if end <= dev_len => Ok(end),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "access of {len} bytes at offset {offset} is beyond the end of the device \
                 ({dev_len} bytes)"
            ),
        )),
    }
}

/// [`check_range`] for devices held in memory: the same check, returned as a `usize` range
/// usable to slice the backing buffer (whose length is `dev_len`).
pub(super) fn mem_range(
    offset: u64,
    len: usize,
    dev_len: u64,
) -> io::Result<std::ops::Range<usize>> {
    let end = check_range(offset, len, dev_len)?;
    match (usize::try_from(offset), usize::try_from(end)) {
        (Ok(start), Ok(end)) => Ok(start..end),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("offset {offset} does not fit in memory"),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inside_and_outside() {
        assert_eq!(check_range(0, 4096, 8192).unwrap(), 4096);
        assert_eq!(check_range(4096, 4096, 8192).unwrap(), 8192);
        assert_eq!(check_range(8192, 0, 8192).unwrap(), 8192);
        for (off, len) in [
            (4097, 4096),
            (8193, 0),
            (u64::MAX, 1),
            (u64::MAX - 10, 4096),
        ] {
            let err = check_range(off, len, 8192).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{off} {len}");
        }
        assert_eq!(mem_range(4096, 10, 8192).unwrap(), 4096..4106);
        assert!(mem_range(u64::MAX, 0, u64::MAX).is_ok() || cfg!(target_pointer_width = "32"));
    }
}
