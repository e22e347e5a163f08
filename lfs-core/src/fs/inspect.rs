//! Read-only views of the engine's state for the inspector (lfs-inspect) and for tests that
//! corrupt one structure on purpose.

use super::inner::Inner;
use crate::error::{FsError, Result};
use crate::format::inode::DiskInode;
use crate::format::summary::SummaryEntry;
use crate::format::table::ImapEntry;
use crate::format::{BlockAddr, Ino};

/// One inode as the filesystem sees it now: its map entry, its contents, and every block it
/// references with the summary entry that block was written with.
#[derive(Debug, Clone)]
pub struct InodeInfo {
    pub entry: ImapEntry,
    pub inode: DiskInode,
    pub blocks: Vec<(BlockAddr, SummaryEntry)>,
}

impl Inner {
    pub(super) fn inode_info(&mut self, ino: Ino) -> Result<InodeInfo> {
        let entry = self.imap.get(ino).copied().ok_or(FsError::Stale(ino))?;
        self.load(ino)?;
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        let mut blocks = Vec::new();
        let (ino, version) = (i.d.ino, i.d.version);
        i.bmap
            .for_each_block(st, &mut |a, r| blocks.push((a, r.v1_entry(ino, version))))?;
        Ok(InodeInfo {
            entry,
            inode: i.d.clone(),
            blocks,
        })
    }
}
