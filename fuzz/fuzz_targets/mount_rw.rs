//! A patched small image mounted read-write and changed, then fsck and a read-only walk
//! (lfs_core::fuzz::mount_write_fsck).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lfs_core::fuzz::mount_write_fsck(data));
