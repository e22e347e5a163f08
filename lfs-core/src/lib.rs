//! lfs-core: the log-structured filesystem engine.
pub mod device;
pub mod format;
