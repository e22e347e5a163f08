//! Fixtures for tests that drive the engine directly: the root's inode number, root's
//! credentials, and the end every writing test shares (unmount, then fsck finds nothing).
#![allow(clippy::unwrap_used)]

use lfs_core::device::Device;
use lfs_core::fs::Creds;
use lfs_core::{Fs, MountOptions};
use std::sync::Arc;

pub const ROOT: lfs_core::format::Ino = lfs_core::format::ROOT_INO;

/// Root, with no umask.
pub const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

/// Unmount, then `fsck -n -f` on the device finds nothing.
pub fn unmount_and_fsck(fs: Fs, dev: &Arc<dyn Device>) {
    fs.unmount().unwrap();
    assert_eq!(lfs_core::fsck::findings(dev.clone()).unwrap(), vec![]);
}

/// Unmount and mount again with the default options.
pub fn remount(fs: Fs, dev: &Arc<dyn Device>) -> Fs {
    fs.unmount().unwrap();
    Fs::mount(dev.clone(), MountOptions::default()).unwrap()
}
