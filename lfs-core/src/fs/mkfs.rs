//! mkfs: the layout of a new filesystem and the writing of it.

use super::durability::Durability;
use super::icache::Inode;
use super::inner::Inner;
use super::types::MountOptions;
use crate::device::Device;
use crate::dir::Dir;
use crate::error::{FsError, Result};
use crate::format::inode::{DiskInode, Timespec, S_IFDIR};
use crate::format::superblock::{
    LayoutRequest, Superblock, DEFAULT_BYTES_PER_INODE, DEFAULT_SEG_BYTES,
};
use crate::format::table::{ImapEntry, IMAP_ALLOCATED};
use crate::format::BlockAddr;
use crate::format::{SegNo, BLOCK_BYTES, BLOCK_SIZE, ROOT_INO};
use crate::imap::Imap;
pub(super) use crate::log::new_log_id;
use crate::log::{now_ns, random_uuid};
use crate::usage::UsageTable;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MkfsOptions {
    pub seg_bytes: u64,
    pub bytes_per_inode: u64,
    pub label: String,
    pub uuid: Option<[u8; 16]>,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            seg_bytes: DEFAULT_SEG_BYTES,
            bytes_per_inode: DEFAULT_BYTES_PER_INODE,
            label: String::new(),
            uuid: None,
        }
    }
}

pub fn plan(total_bytes: u64, opts: &MkfsOptions) -> Result<Superblock> {
    Superblock::layout(&LayoutRequest {
        total_bytes,
        seg_bytes: opts.seg_bytes,
        bytes_per_inode: opts.bytes_per_inode,
        label: opts.label.clone(),
        uuid: opts.uuid.unwrap_or_else(random_uuid),
        created_ns: now_ns(),
    })
    .map_err(FsError::Layout)
}

/// Write a new, empty filesystem on `dev`.
pub fn mkfs(dev: Arc<dyn Device>, opts: &MkfsOptions) -> Result<Superblock> {
    let sb = plan(dev.len_bytes(), opts)?;
    // Zero both checkpoint regions first, so no region of an earlier filesystem survives.
    let zeros = vec![0u8; sb.cp_blocks as usize * BLOCK_SIZE];
    dev.write_at(&zeros, sb.cp_a.byte_offset())?;
    dev.write_at(&zeros, sb.cp_b.byte_offset())?;
    let sbb = sb.encode();
    dev.write_at(&sbb, 0)?;
    dev.write_at(&sbb, sb.backup_addr().byte_offset())?;
    dev.flush()?;
    let sb = Arc::new(sb);
    let mut usage = UsageTable::new(sb.nsegs, sb.seg_bytes());
    usage.activate(SegNo(0), now_ns());
    let mut inner = Inner::assemble(
        sb.clone(),
        dev,
        Imap::new(sb.imap_blocks as usize),
        usage,
        Durability::new(
            0,
            vec![BlockAddr::NONE; sb.imap_blocks as usize],
            vec![BlockAddr::NONE; sb.usage_blocks as usize],
        ),
        MountOptions::default(),
    );
    inner.st.open_log(SegNo(0), 0, 1, new_log_id(0))?;
    let t = Timespec::now();
    inner.imap.set(
        ROOT_INO,
        ImapEntry {
            addr: BlockAddr::NONE,
            version: 1,
            slot: 0,
            flags: IMAP_ALLOCATED,
        },
    );
    let mut root = Inode::new(DiskInode {
        ino: ROOT_INO,
        version: 1,
        mode: S_IFDIR | 0o755,
        nlink: 2,
        parent: ROOT_INO,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        ..Default::default()
    });
    root.dir = Some(Dir::default());
    inner.inodes.insert(root);
    inner.touch(ROOT_INO);
    // Two checkpoints, so both regions are valid from the start.
    inner.checkpoint_with(false)?;
    inner.checkpoint_with(true)?;
    inner.st.close_log();
    Ok((*sb).clone())
}

/// Refuse a device too small to hold even a superblock (an empty file, say) in words a user
/// understands, rather than as a read past its end.
pub(crate) fn not_too_small(dev: &dyn Device) -> Result<()> {
    let len = dev.len_bytes();
    if len < BLOCK_BYTES {
        return Err(crate::error::NotLfs::TooSmall { len }.into());
    }
    Ok(())
}
