//! Every decoder of an on-disk structure (lfs_core::fuzz::decode).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lfs_core::fuzz::decode(data));
