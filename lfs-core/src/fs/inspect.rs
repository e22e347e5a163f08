//! Read-only views of the engine's state for the inspector (lfs-inspect) and for tests that
//! corrupt one structure on purpose.

use super::{Fs, Inner};
use crate::error::{FsError, Result};
use crate::format::inode::DiskInode;
use crate::format::summary::SummaryEntry;
use crate::format::table::ImapEntry;
use crate::usage::SegInfo;

/// One inode as the filesystem sees it now: its map entry, its contents, and every block it
/// references with the summary entry that block was written with.
#[derive(Debug, Clone)]
pub struct InodeInfo {
    pub entry: ImapEntry,
    pub inode: DiskInode,
    pub blocks: Vec<(u64, SummaryEntry)>,
}

impl Inner {
    fn inode_info(&mut self, ino: u64) -> Result<InodeInfo> {
        let entry = self.imap.get(ino).copied().ok_or(FsError::Stale(ino))?;
        self.load(ino)?;
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        let mut blocks = Vec::new();
        i.bmap.for_each_block(st, &mut |a, e| blocks.push((a, e)))?;
        Ok(InodeInfo {
            entry,
            inode: i.d.clone(),
            blocks,
        })
    }
}

impl Fs {
    /// Inode `ino` with its map entry and block list (as of the last flush: blocks still
    /// dirty in memory have no address yet).
    pub fn inode_info(&self, ino: u64) -> Result<InodeInfo> {
        self.lock().inode_info(ino)
    }
    /// The inode map's entry for `ino`, allocated or not.
    pub fn imap_entry(&self, ino: u64) -> Option<ImapEntry> {
        self.lock().imap.get(ino).copied()
    }
    /// Addresses of the inode-map and segment-usage blocks of the checkpoint in use.
    pub fn table_addrs(&self) -> (Vec<u64>, Vec<u64>) {
        let g = self.lock();
        (g.cp.imap_addrs().to_vec(), g.cp.usage_addrs().to_vec())
    }
    /// The segment usage table as the filesystem keeps it now.
    pub fn usage_table(&self) -> Vec<(u64, SegInfo)> {
        self.lock()
            .st
            .usage()
            .iter()
            .map(|(s, i)| (s, *i))
            .collect()
    }
}
