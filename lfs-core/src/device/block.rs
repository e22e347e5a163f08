//! The trait itself: what the filesystem needs of whatever holds its bytes, and what stands
//! in for a device once it is released.

use std::io;

/// A block device as the filesystem sees it. Offsets and lengths are in bytes. Callers in
/// lfs-core always pass offsets and lengths that are multiples of 4096.
pub trait Device: Send + Sync {
    /// Fill `buf` from `offset`. Reading past the end is an error (`InvalidInput`).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`. Not durable until a later `flush` returns Ok.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every write that completed before this call durable.
    fn flush(&self) -> io::Result<()>;
    /// Size of the device in bytes.
    fn len_bytes(&self) -> u64;
    /// Give up the device's claim on its image (the lock that keeps a second writer out): the
    /// filesystem is done with it and will do no more I/O. Called once everything is
    /// durable, so that whoever waits for the unmount may open the image at once.
    fn release(&self) {}
    /// Tell the storage that `len` bytes at `offset` hold nothing of value (FITRIM): an image
    /// file gets a hole, a disk a discard. What is read there afterwards is unspecified (zeros
    /// for an image). Devices that cannot answer `Unsupported`.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the device cannot discard",
        ))
    }
}

/// What a filesystem holds in place of its device once it is shut down: every I/O fails.
/// Dropping its own reference is what lets the device close (its descriptors, a loop
/// device's backing file) when nothing else holds it, so that whoever unmounted may at once
/// detach a loop device or unmount the filesystem the image lives on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Released {
    /// The size the device had.
    pub len: u64,
}

impl Device for Released {
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
        Err(released())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(released())
    }
    fn flush(&self) -> io::Result<()> {
        Err(released())
    }
    fn len_bytes(&self) -> u64 {
        self.len
    }
}

fn released() -> io::Error {
    io::Error::other("the filesystem is shut down; its device is released")
}
