//! Every decoder of a format version 2 structure (lfs_core::fuzz::decode_v2).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lfs_core::fuzz::decode_v2(data));
