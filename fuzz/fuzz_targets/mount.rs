//! A patched small image: mount read-only, walk, fsck (lfs_core::fuzz::mount_walk_fsck).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lfs_core::fuzz::mount_walk_fsck(data));
