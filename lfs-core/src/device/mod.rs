//! The device layer: one narrow trait between the filesystem and whatever holds its bytes.
//!
//! Everything above this module sees a device only as `read_at` / `write_at` / `flush` /
//! `len_bytes`. Implementations: [`FileDevice`] (an image file or a block device; flush is
//! fdatasync), [`MemDevice`] (tests), `CrashDevice` (records writes and flushes and can
//! produce the images a power cut could leave), `FaultyDevice` (fails chosen operations); the
//! last two only with the `testing` feature.

mod block;
mod bounds;
#[cfg(feature = "testing")]
mod crash;
#[cfg(feature = "testing")]
mod faulty;
mod file;
mod mem;

pub use block::{Device, Released};
#[cfg(feature = "testing")]
pub use crash::{CrashDevice, CrashOp, CrashState, CrashStateOptions, SECTOR_SIZE};
#[cfg(feature = "testing")]
pub use faulty::FaultyDevice;
pub use file::{FileDevice, OpenOptions, DIRECT_ALIGN};
pub use mem::MemDevice;
