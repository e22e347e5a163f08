//! lfs-fuse: mount an LFS image through FUSE. A thin adapter over `lfs_core::Fs`:
//! `adapter` (request → Fs call), `errno` (the one error table), `mount` (our own fuseblk mount, so that umount waits
//! for the final checkpoint), `options` (command line).
pub mod adapter;
pub mod errno;
pub mod mount;
pub mod options;
