//! [`MemDevice`]: a device held in a `Vec<u8>`, for tests and tools.
//!
//! This module owns the simplest correct device: bounds-checked reads and writes on an
//! in-memory image behind a `RwLock`, with `flush` a no-op (everything written is "durable"
//! for as long as the value lives).

use std::io;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::block::Device;
use super::bounds::mem_range;

/// A device in memory. Cloning the contents out is [`MemDevice::image`].
#[derive(Debug)]
pub struct MemDevice {
    len: u64,
    data: RwLock<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `len_bytes`.
    ///
    /// # Panics
    /// If `len_bytes` does not fit in the address space (only possible on 32-bit targets).
    pub fn new(len_bytes: u64) -> MemDevice {
        let len = usize::try_from(len_bytes).expect("MemDevice length exceeds the address space");
        Self::from_image(vec![0u8; len])
    }

    /// A device whose contents (and length) are `image`.
    pub fn from_image(image: Vec<u8>) -> MemDevice {
        MemDevice {
            len: image.len() as u64,
            data: RwLock::new(image),
        }
    }

    /// A copy of the whole contents.
    pub fn image(&self) -> Vec<u8> {
        self.read().clone()
    }

    /// The contents, consuming the device (no copy).
    pub fn into_image(self) -> Vec<u8> {
        self.data
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // A panic while holding the lock cannot leave the bytes in a state worse than a torn
    // write, which is what a device may show anyway: ignore poisoning.
    fn read(&self) -> RwLockReadGuard<'_, Vec<u8>> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Vec<u8>> {
        self.data.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Device for MemDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let range = mem_range(offset, buf.len(), self.len)?;
        buf.copy_from_slice(&self.read()[range]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let range = mem_range(offset, buf.len(), self.len)?;
        self.write()[range].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Zeros, as a hole in an image file reads.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let n = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let range = mem_range(offset, n, self.len)?;
        self.write()[range].fill(0);
        Ok(())
    }

    fn len_bytes(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dev = MemDevice::new(16384);
        assert_eq!(dev.len_bytes(), 16384);
        let a: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        dev.write_at(&a, 4096).unwrap();
        dev.write_at(b"xyz", 3).unwrap();
        dev.flush().unwrap();
        let mut back = vec![0u8; 8192];
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, a);

        let img = dev.image();
        assert_eq!(img.len(), 16384);
        assert_eq!(&img[3..6], b"xyz");
        assert_eq!(&img[4096..12288], &a[..]);
        assert!(img[12288..].iter().all(|&b| b == 0));
        assert_eq!(dev.into_image(), img);
    }

    #[test]
    fn from_image_keeps_contents() {
        let img: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let dev = MemDevice::from_image(img.clone());
        assert_eq!(dev.len_bytes(), 4096);
        let mut back = vec![0u8; 100];
        dev.read_at(&mut back, 1000).unwrap();
        assert_eq!(back, img[1000..1100]);
    }

    #[test]
    fn bounds() {
        let dev = MemDevice::new(8192);
        let mut buf = vec![0u8; 4096];
        for off in [4097, 8192, u64::MAX, u64::MAX - 4095, u64::MAX - 1] {
            assert_eq!(
                dev.read_at(&mut buf, off).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                dev.write_at(&buf, off).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        dev.read_at(&mut buf, 4096).unwrap();
        dev.write_at(&[], 8192).unwrap();
        assert!(
            dev.image().iter().all(|&b| b == 0),
            "failed writes changed nothing"
        );
    }
}
