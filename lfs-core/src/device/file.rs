//! [`FileDevice`]: the filesystem on an image file or a block device.
//!
//! This module owns everything about talking to a real file descriptor: opening it (optionally
//! with `O_DIRECT`, falling back to buffered I/O where the filesystem refuses it), the `flock`
//! that keeps two processes off one image, the device size (file length or `BLKGETSIZE64`),
//! bounds checks, `pread`/`pwrite` (through a 4096-aligned bounce buffer when a direct write
//! gets a caller's buffer that is not aligned in memory) and `fdatasync` for `flush`.
//!
//! Direct mode writes through `O_DIRECT` but reads through a second, buffered descriptor.
//! Writes skip a copy into the page cache and reach the disk in the order the log issues
//! them; reads get the host kernel's readahead, which doubled sequential reads through FUSE
//! (docs/BENCHMARKS.md). This is coherent: a direct write invalidates the cached pages of the
//! range it writes, and we never read a block while it is being written (blocks in flight
//! are served from memory, see `Store::read_run`).

use std::alloc::{self, Layout};
use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

use super::block::Device;
use super::bounds::check_range;

/// Alignment `O_DIRECT` transfers need: memory address, file offset and length.
pub const DIRECT_ALIGN: usize = 4096;
const _: () = assert!(DIRECT_ALIGN.is_power_of_two());
/// Largest bounce buffer; bigger unaligned direct transfers go through it in chunks.
const MAX_BOUNCE: usize = 8 << 20;

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open without write access; `write_at` then fails with `PermissionDenied`.
    pub read_only: bool,
    /// Use `O_DIRECT` (bypass the page cache). Falls back to buffered I/O if the filesystem
    /// refuses it; see [`FileDevice::is_direct`]. With direct I/O every offset and length
    /// must be a multiple of [`DIRECT_ALIGN`].
    pub direct: bool,
    /// Take a non-blocking `flock` (exclusive, or shared when `read_only`) for the lifetime of
    /// the device, so a second process cannot open the same image for writing.
    pub lock: bool,
}

/// An image file or a block device. `flush` is `fdatasync`.
pub struct FileDevice {
    file: File,
    path: PathBuf,
    len: u64,
    read_only: bool,
    direct: bool,
    /// A second, buffered descriptor for reads when `file` is direct: reads then get the
    /// host kernel's readahead and page cache (see `read_at`).
    reader: Option<File>,
    /// One cached bounce buffer for unaligned direct I/O; concurrent callers that find it
    /// taken allocate their own.
    bounce: Mutex<Option<AlignedBuf>>,
    /// When the device is a loop device: its backing file, locked as the image itself is, so
    /// that the image file and a loop device over it cannot both be opened for writing.
    backing: Option<File>,
}

impl fmt::Debug for FileDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDevice")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("read_only", &self.read_only)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl FileDevice {
    /// Open an existing image file or block device.
    ///
    /// Errors: `InvalidInput` for a directory ("… is a directory") or anything that is neither
    /// a regular file nor a block device; `WouldBlock` ("image is in use by another process
    /// (locked)") when `opts.lock` is set and another open file holds a conflicting lock.
    ///
    /// Every error names `path`, once.
    pub fn open(path: &Path, opts: OpenOptions) -> io::Result<FileDevice> {
        Self::open_at(path, opts).map_err(|e| with_path(e, path))
    }

    fn open_at(path: &Path, opts: OpenOptions) -> io::Result<FileDevice> {
        let meta = std::fs::metadata(path)?;
        check_kind(path, &meta)?;
        let (file, direct) = open_with_fallback(opts.direct, |direct| {
            open_file(path, opts.read_only, direct)
        })?;
        if opts.direct && !direct {
            tracing::warn!(
                path = %path.display(),
                "O_DIRECT not supported here (EINVAL); using buffered I/O"
            );
        }
        // The path could have been replaced between the check and the open: check the file
        // we actually hold.
        let meta = file.metadata()?;
        check_kind(path, &meta)?;
        let mut backing = None;
        if opts.lock {
            lock_file(&file, opts.read_only)?;
            if meta.file_type().is_block_device() {
                if !opts.read_only {
                    claimed_by_kernel(path)?;
                }
                if let Some(b) = loop_backing_file(&meta) {
                    let f = File::open(&b)?;
                    lock_file(&f, opts.read_only).map_err(|e| match e.kind() {
                        io::ErrorKind::WouldBlock => io::Error::new(
                            e.kind(),
                            format!(
                                "loop device over {}, which is in use by another process (locked)",
                                b.display()
                            ),
                        ),
                        _ => e,
                    })?;
                    backing = Some(f);
                }
            }
        }
        let len = device_len(&file, &meta)?;
        let reader = if direct {
            Some(open_file(path, true, false)?)
        } else {
            None
        };
        Ok(FileDevice {
            file,
            path: path.to_path_buf(),
            len,
            read_only: opts.read_only,
            direct,
            reader,
            bounce: Mutex::new(None),
            backing,
        })
    }

    /// Create a regular image file of `len_bytes` (or extend a shorter existing one; a longer
    /// one is left as it is) and open it read-write, buffered, without a lock.
    pub fn create(path: &Path, len_bytes: u64) -> io::Result<FileDevice> {
        Self::create_with(path, len_bytes, OpenOptions::default())
    }

    /// [`create`](Self::create) with explicit options (`read_only` must be false). The lock,
    /// if asked for, is taken before the file is extended. If `path` is an existing block
    /// device it is opened as is and must hold at least `len_bytes`. Every error names
    /// `path`, once.
    pub fn create_with(path: &Path, len_bytes: u64, opts: OpenOptions) -> io::Result<FileDevice> {
        Self::create_at(path, len_bytes, opts).map_err(|e| with_path(e, path))
    }

    fn create_at(path: &Path, len_bytes: u64, opts: OpenOptions) -> io::Result<FileDevice> {
        if opts.read_only {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot create a device read-only",
            ));
        }
        match std::fs::metadata(path) {
            Ok(meta) => check_kind(path, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
            }
            Err(e) => return Err(e),
        }
        let mut dev = Self::open_at(path, opts)?;
        if dev.len < len_bytes {
            if dev.file.metadata()?.file_type().is_file() {
                dev.file.set_len(len_bytes)?;
                dev.len = len_bytes;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} holds {} bytes, {len_bytes} needed",
                        path.display(),
                        dev.len
                    ),
                ));
            }
        }
        Ok(dev)
    }

    /// Whether transfers really bypass the page cache (`O_DIRECT` was asked for and the
    /// filesystem accepted it).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether the device was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_direct(&self, offset: u64, len: usize) -> io::Result<()> {
        // DIRECT_ALIGN is a power of two: a mask tests the alignment.
        let mask = DIRECT_ALIGN - 1;
        if offset & mask as u64 != 0 || len & mask != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "direct I/O needs offset and length multiples of {DIRECT_ALIGN} \
                     (got {len} bytes at offset {offset})"
                ),
            ));
        }
        Ok(())
    }

    /// Run `f` with a bounce buffer of at least `min(len, MAX_BOUNCE)` bytes (rounded up to
    /// [`DIRECT_ALIGN`]), reusing the cached one when it is free and large enough.
    fn with_bounce<R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut AlignedBuf) -> io::Result<R>,
    ) -> io::Result<R> {
        let want = len
            .min(MAX_BOUNCE)
            .div_ceil(DIRECT_ALIGN)
            .max(1)
            .saturating_mul(DIRECT_ALIGN);
        let cached = self
            .bounce
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut buf = match cached {
            Some(b) if b.len() >= want => b,
            _ => AlignedBuf::new(want)?,
        };
        let result = f(&mut buf);
        let mut slot = self.bounce.lock().unwrap_or_else(PoisonError::into_inner);
        let keep_new = match slot.as_ref() {
            Some(cached) => cached.len() < buf.len(),
            None => true,
        };
        if keep_new {
            *slot = Some(buf);
        }
        result
    }
}

impl Device for FileDevice {
    fn release(&self) {
        for f in std::iter::once(&self.file).chain(&self.backing) {
            // SAFETY: flock on a descriptor we own. Unlocking cannot fail on a valid one.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        if buf.is_empty() {
            return Ok(());
        }
        // The alignment contract holds for reads too, so callers behave the same whichever
        // descriptor serves them.
        if self.direct {
            self.check_direct(offset, buf.len())?;
        }
        match &self.reader {
            Some(r) => r.read_exact_at(buf, offset),
            None => self.file.read_exact_at(buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "device opened read-only",
            ));
        }
        check_range(offset, buf.len(), self.len)?;
        if buf.is_empty() {
            return Ok(());
        }
        if !self.direct {
            return self.file.write_all_at(buf, offset);
        }
        self.check_direct(offset, buf.len())?;
        if is_aligned(buf.as_ptr()) {
            return self.file.write_all_at(buf, offset);
        }
        self.with_bounce(buf.len(), |bounce| {
            let bounce = bounce.as_mut_slice();
            let mut done = 0;
            for chunk in buf.chunks(bounce.len()) {
                let staged = &mut bounce[..chunk.len()];
                staged.copy_from_slice(chunk);
                self.file.write_all_at(staged, offset + done)?;
                done += chunk.len() as u64;
            }
            Ok(())
        })
    }

    /// `fdatasync`. On a read-only device there is nothing to make durable: `Ok`.
    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn len_bytes(&self) -> u64 {
        self.len
    }

    /// fallocate(PUNCH_HOLE | KEEP_SIZE): a hole in an image file, a discard (or zeroing) on
    /// a block device.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "device opened read-only",
            ));
        }
        let end = offset.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() || i64::try_from(offset).is_err() || i64::try_from(len).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("discard of {len} bytes at {offset} is beyond the end of the device"),
            ));
        }
        // SAFETY: fallocate on a descriptor we own; it reads no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// `e`, its message starting with `path` (unless it already does: some messages name it
/// in a sentence, "… is a directory"). The lock conflict (`WouldBlock`) is left as it is:
/// every caller words that one itself.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    let p = path.display().to_string();
    if e.kind() == io::ErrorKind::WouldBlock || e.to_string().starts_with(&p) {
        return e;
    }
    io::Error::new(e.kind(), format!("{p}: {e}"))
}

/// Accept regular files and block devices; a directory or anything else is `InvalidInput`.
fn check_kind(path: &Path, meta: &Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is a directory", path.display()),
        ));
    }
    if !ft.is_file() && !ft.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file nor a block device",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn open_file(path: &Path, read_only: bool, direct: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
}

/// Open with `O_DIRECT` if `direct`; if that fails with `EINVAL` (the filesystem does not
/// support direct I/O, e.g. older tmpfs), open buffered instead. Returns the file and whether
/// it really is direct.
fn open_with_fallback(
    direct: bool,
    open: impl Fn(bool) -> io::Result<File>,
) -> io::Result<(File, bool)> {
    if !direct {
        return open(false).map(|f| (f, false));
    }
    match open(true) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(false).map(|f| (f, false)),
        Err(e) => Err(e),
    }
}

/// A block device that a kernel filesystem (or anyone with `O_EXCL`) holds — mounted ext4,
/// our own fuseblk mount, a device-mapper table — refuses an exclusive open with `EBUSY`.
/// Writing under such a holder would corrupt both; say so instead.
fn claimed_by_kernel(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "device is in use (mounted, or held by another process)",
        )),
        Err(e) => Err(e),
    }
}

/// The file behind a loop device, as sysfs names it; None for any other block device (or
/// a loop device whose file is gone).
fn loop_backing_file(meta: &Metadata) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let name = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()?;
    let name = name.trim_end_matches('\n');
    // A deleted backing file reads "PATH (deleted)": nobody else can open it by name.
    (!name.is_empty() && !name.ends_with(" (deleted)")).then(|| PathBuf::from(name))
}

/// Non-blocking `flock`: shared for read-only opens, exclusive otherwise. The lock belongs to
/// this open file description and goes away when the `File` is closed.
fn lock_file(file: &File, shared: bool) -> io::Result<()> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EWOULDBLOCK => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "image is in use by another process (locked)",
                ))
            }
            _ => return Err(err),
        }
    }
}

/// Size in bytes: the length of a regular file, the size of a block device.
fn device_len(file: &File, meta: &Metadata) -> io::Result<u64> {
    if meta.file_type().is_block_device() {
        block_device_len(file)
    } else {
        Ok(meta.len())
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn block_device_len(file: &File) -> io::Result<u64> {
    /// `_IOR(0x12, 114, size_t)` with a 64-bit `size_t`.
    const BLKGETSIZE64: u64 = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc == 0 {
        Ok(size)
    } else {
        seek_len(file)
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn block_device_len(file: &File) -> io::Result<u64> {
    seek_len(file)
}

/// Size by seeking to the end. Harmless for us: all transfers use positioned I/O.
fn seek_len(mut file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::End(0))
}

fn is_aligned(ptr: *const u8) -> bool {
    (ptr as usize) & (DIRECT_ALIGN - 1) == 0
}

/// A heap buffer aligned to [`DIRECT_ALIGN`], zero-filled at allocation, freed on drop.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: AlignedBuf uniquely owns its allocation (like a Box<[u8]>); moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> io::Result<AlignedBuf> {
        let layout =
            Layout::from_size_align(len.max(DIRECT_ALIGN), DIRECT_ALIGN).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "bounce buffer size overflows")
            })?;
        // SAFETY: the layout has a non-zero size (at least DIRECT_ALIGN).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate a bounce buffer",
            )
        })?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr points at layout.size() initialised (zeroed at allocation) bytes that
        // this value owns exclusively; the &mut self borrow prevents aliasing.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 12) as u8))
            .collect()
    }

    /// A buffer whose data is deliberately *not* 4096-aligned in memory.
    fn misaligned(data: &[u8]) -> (Vec<u8>, usize) {
        let mut v = vec![0u8; data.len() + DIRECT_ALIGN + 1];
        let mut start = 1;
        while is_aligned(v[start..].as_ptr()) {
            start += 1;
        }
        v[start..start + data.len()].copy_from_slice(data);
        (v, start)
    }

    #[test]
    fn create_round_trip_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let dev = FileDevice::create(&path, 1 << 20).unwrap();
        assert_eq!(dev.len_bytes(), 1 << 20);
        assert!(!dev.is_direct());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);

        let a = pattern(8192, 7);
        dev.write_at(&a, 4096).unwrap();
        // Unaligned offsets and lengths are fine when buffered.
        dev.write_at(b"hello", 100_001).unwrap();
        dev.flush().unwrap();

        let mut back = vec![0u8; 8192];
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, a);
        let mut small = [0u8; 5];
        dev.read_at(&mut small, 100_001).unwrap();
        assert_eq!(&small, b"hello");
        let mut zero = vec![0xAAu8; 4096];
        dev.read_at(&mut zero, 0).unwrap();
        assert!(
            zero.iter().all(|&b| b == 0),
            "unwritten area reads as zeros"
        );
        drop(dev);

        // A fresh open sees the data.
        let dev = FileDevice::open(&path, OpenOptions::default()).unwrap();
        let mut back = vec![0u8; 8192];
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn bounds_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let dev = FileDevice::create(&dir.path().join("img"), 16384).unwrap();
        let mut buf = vec![0u8; 4096];
        let cases: [(u64, usize); 5] = [
            (16384 - 4095, 4096),
            (16384, 4096),
            (u64::MAX, 1),
            (u64::MAX - 100, 4096),
            (u64::MAX - 4095, 4096),
        ];
        for (off, len) in cases {
            let err = dev.read_at(&mut buf[..len], off).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "read {len}@{off}");
            let err = dev.write_at(&buf[..len], off).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "write {len}@{off}");
        }
        // The last block and an empty access at the very end are fine.
        dev.read_at(&mut buf, 16384 - 4096).unwrap();
        dev.read_at(&mut [], 16384).unwrap();
        assert_eq!(
            dev.read_at(&mut [], 16385).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn create_extends_but_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, pattern(4096, 3)).unwrap();
        let dev = FileDevice::create(&path, 12288).unwrap();
        assert_eq!(dev.len_bytes(), 12288);
        let mut head = vec![0u8; 4096];
        dev.read_at(&mut head, 0).unwrap();
        assert_eq!(head, pattern(4096, 3), "existing contents kept");
        drop(dev);
        let dev = FileDevice::create(&path, 4096).unwrap();
        assert_eq!(dev.len_bytes(), 12288);
    }

    #[test]
    fn direct_round_trip_aligned_and_bounced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let len = 12 << 20;
        let opts = OpenOptions {
            direct: true,
            ..OpenOptions::default()
        };
        let dev = FileDevice::create_with(&path, len, opts).unwrap();
        assert_eq!(dev.len_bytes(), len);

        // Larger than one bounce buffer, from a misaligned source: chunked bounce.
        let big = pattern(MAX_BOUNCE + 3 * DIRECT_ALIGN, 1);
        let (src, start) = misaligned(&big);
        dev.write_at(&src[start..start + big.len()], 8192).unwrap();

        // From an aligned source: straight through.
        let mut aligned = AlignedBuf::new(2 * DIRECT_ALIGN).unwrap();
        aligned
            .as_mut_slice()
            .copy_from_slice(&pattern(2 * DIRECT_ALIGN, 9));
        let tail_off = len - 2 * DIRECT_ALIGN as u64;
        dev.write_at(aligned.as_mut_slice(), tail_off).unwrap();
        dev.flush().unwrap();

        // Read back into misaligned and aligned buffers.
        let (mut dst, start) = misaligned(&vec![0u8; big.len()]);
        dev.read_at(&mut dst[start..start + big.len()], 8192)
            .unwrap();
        assert!(dst[start..start + big.len()] == big[..], "bounced read");
        let mut aligned_back = AlignedBuf::new(2 * DIRECT_ALIGN).unwrap();
        dev.read_at(aligned_back.as_mut_slice(), tail_off).unwrap();
        assert_eq!(
            aligned_back.as_mut_slice(),
            &pattern(2 * DIRECT_ALIGN, 9)[..]
        );

        if dev.is_direct() {
            let mut b = [0u8; 512];
            let err = dev.read_at(&mut b, 0).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let err = dev.write_at(&[0u8; 4096], 100).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        drop(dev);

        // Independent buffered check of what reached the file.
        let plain = std::fs::read(&path).unwrap();
        assert!(plain[8192..8192 + big.len()] == big[..]);
        assert_eq!(
            &plain[tail_off as usize..],
            &pattern(2 * DIRECT_ALIGN, 9)[..]
        );
    }

    #[test]
    fn direct_on_tmpfs_works_either_way() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, vec![0u8; 65536]).unwrap();
        let opts = OpenOptions {
            direct: true,
            ..OpenOptions::default()
        };
        let dev = FileDevice::open(&path, opts).unwrap();
        let data = pattern(16384, 5);
        let (src, start) = misaligned(&data);
        dev.write_at(&src[start..start + data.len()], 4096).unwrap();
        dev.flush().unwrap();
        let mut back = vec![0u8; 16384];
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data, "direct={}", dev.is_direct());
    }

    #[test]
    fn einval_on_direct_falls_back_to_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let calls = std::cell::RefCell::new(Vec::new());
        let open = |direct: bool| {
            calls.borrow_mut().push(direct);
            if direct {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                File::open(&path)
            }
        };
        let (_f, direct) = open_with_fallback(true, open).unwrap();
        assert!(!direct);
        assert_eq!(*calls.borrow(), vec![true, false]);

        // Other errors are not papered over.
        let err = open_with_fallback(true, |_| -> io::Result<File> {
            Err(io::Error::from_raw_os_error(libc::EACCES))
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));

        // Not asked for direct: one buffered open.
        calls.borrow_mut().clear();
        let (_f, direct) = open_with_fallback(false, open).unwrap();
        assert!(!direct);
        assert_eq!(*calls.borrow(), vec![false]);
    }

    #[test]
    fn lock_refuses_second_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        FileDevice::create(&path, 8192).unwrap();
        let rw_locked = OpenOptions {
            lock: true,
            ..OpenOptions::default()
        };
        let ro_locked = OpenOptions {
            lock: true,
            read_only: true,
            ..OpenOptions::default()
        };

        let first = FileDevice::open(&path, rw_locked).unwrap();
        for opts in [rw_locked, ro_locked] {
            let err = FileDevice::open(&path, opts).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            assert_eq!(
                err.to_string(),
                "image is in use by another process (locked)"
            );
        }
        // Without `lock` nobody asks.
        FileDevice::open(&path, OpenOptions::default()).unwrap();
        drop(first);

        // Released with the device; shared locks coexist but keep writers out.
        let r1 = FileDevice::open(&path, ro_locked).unwrap();
        let r2 = FileDevice::open(&path, ro_locked).unwrap();
        assert_eq!(
            FileDevice::open(&path, rw_locked).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop((r1, r2));
        FileDevice::open(&path, rw_locked).unwrap();
    }

    #[test]
    fn directory_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileDevice::open(dir.path(), OpenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().ends_with("is a directory"), "{err}");
        let err = FileDevice::create(dir.path(), 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err =
            FileDevice::open(&dir.path().join("missing"), OpenOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn read_only_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, pattern(8192, 2)).unwrap();
        let ro = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let dev = FileDevice::open(&path, ro).unwrap();
        assert!(dev.is_read_only());
        let err = dev.write_at(&[1u8; 4096], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "device opened read-only");
        dev.flush().unwrap();
        let mut back = vec![0u8; 8192];
        dev.read_at(&mut back, 0).unwrap();
        assert_eq!(back, pattern(8192, 2));
        assert!(FileDevice::create_with(&path, 8192, ro).is_err());
    }

    /// Opt-in: `LFS_TEST_BLOCK_DEVICE=/dev/loopN` checks the size of a real block device
    /// (read-only; nothing is written).
    #[test]
    fn block_device_size_when_available() {
        let Some(path) = std::env::var_os("LFS_TEST_BLOCK_DEVICE") else {
            return;
        };
        let path = PathBuf::from(path);
        let ro = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let dev = FileDevice::open(&path, ro).unwrap();
        let by_seek = seek_len(&File::open(&path).unwrap()).unwrap();
        assert_eq!(dev.len_bytes(), by_seek);
        assert!(dev.len_bytes() > 0);
    }

    #[test]
    fn device_is_send_sync_and_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FileDevice>();
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            direct: true,
            ..OpenOptions::default()
        };
        let dev = std::sync::Arc::new(
            FileDevice::create_with(&dir.path().join("img"), 64 * 4096, opts).unwrap(),
        );
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let dev = dev.clone();
                std::thread::spawn(move || {
                    for i in 0..16u64 {
                        let off = (u64::from(t) * 16 + i) * 4096;
                        let data = pattern(4096, t.wrapping_mul(16).wrapping_add(i as u8));
                        let (src, s) = misaligned(&data);
                        dev.write_at(&src[s..s + 4096], off).unwrap();
                        let mut back = vec![0u8; 4096];
                        dev.read_at(&mut back, off).unwrap();
                        assert_eq!(back, data);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
