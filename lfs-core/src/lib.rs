//! lfs-core: the log-structured filesystem engine.
//!
//! Layered bottom-up; nothing reaches upward:
//! `format` (pure encode/decode) → `device` (one narrow trait) → `writer` + `log` (segment
//! buffer, write units, back-end thread) → `imap`, `usage`, `dirty`, `bmap`, `dir`
//! (in-memory maps and tables) → `fs` (the filesystem API, free of FUSE types: mkfs, mount,
//! checkpoints, recovery, cleaning) → `fsck` (the checker's driver over `fs`). Beside them:
//! `error`, `cli` (what every tool's main shares) and `fuzz` (entry points of the fuzz
//! targets).
// The engine's inner layers are private: what other crates need of them is re-exported
// below or reached through `fs`. Public: the on-disk format (lfs-inspect and the tests decode
// it), the device trait and its implementations, the filesystem API, fsck, and what every
// tool's main shares.
mod bmap;
pub mod cli;
pub mod device;
mod dir;
mod dirty;
mod error;
pub mod format;
pub mod fs;
pub mod fsck;
#[cfg(feature = "testing")]
pub mod fuzz;
mod imap;
mod log;
mod usage;
mod writer;

pub use error::{Damage, FsError, MountError, NotLfs, Result};
pub use fs::{mkfs, Fs, MkfsOptions, MountOptions};
pub use log::now_ns;
pub use usage::{SegInfo, SegState};
