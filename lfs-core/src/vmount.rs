//! Making, mounting and checkpointing a format version 2 filesystem (docs/FORMAT-V2.md §4,
//! §9, §13), on the store, the roll-forward and the inode table: the engine's mkfs, mount and
//! checkpoint after the switch (issue 20, step 3) stand on this.
//!
//! - `mkfs`: the superblocks, an empty store with one segment per stream, the root
//!   directory in the ifile, and two checkpoints (both regions valid). It writes a constant
//!   number of blocks, whatever the size of the device.
//! - `mount`: the superblock (or its backup), the newest valid region, the store opened from
//!   its roots (nothing read until asked for), the log rolled forward, the inode table
//!   opened from the last ifile inode; to write, the log reopened with a new log id and a
//!   checkpoint in each region (as version 1 does: a fallback region of an older mount
//!   would stop roll-forward at this mount's first unit). It reads a constant number of
//!   blocks plus the log after the checkpoint.
//! - `checkpoint`: the order of §9 (the caller has flushed everything dirty in a group).
//!
//! Built and tested on its own; not used by the engine yet.

use crate::device::Device;
use crate::error::{FsError, MountError, NotLfs, Result};
use crate::format::inode::{DiskInode, Timespec, INODE_SIZE, S_IFDIR};
use crate::format::v2::checkpoint::{Checkpoint, FLAG_CLEAN};
use crate::format::v2::superblock::{Layout, Superblock};
use crate::format::{BlockAddr, Cno, FormatError, SegNo, BLOCK_BYTES, BLOCK_SIZE, ROOT_INO};
use crate::vinodes::InodeTable;
use crate::vrecover::{roll_forward, LogStart, Recovered};
use crate::vscan::Geometry;
use crate::vstore::{Roots, VStore};
use std::sync::Arc;

/// A mounted (or just made) version 2 filesystem's core.
pub struct Mounted {
    pub sb: Superblock,
    pub st: VStore,
    pub inodes: InodeTable,
    /// The checkpoint in force: its generation and number.
    pub generation: u64,
    pub cno: Cno,
    /// The region mounted from ('A' or 'B'), why the other was not used, and what
    /// roll-forward did (none for mkfs).
    pub region: char,
    pub other_region_error: Option<String>,
    pub recovered: Option<Recovered>,
    /// The log id this mount writes with.
    pub log_id: u64,
    cpfile_inode: Vec<u8>,
}

fn geometry(sb: &Superblock) -> Geometry {
    Geometry {
        seg_base: sb.seg_base,
        seg_blocks: sb.seg_blocks,
        nsegs: sb.nsegs,
    }
}

fn fs_id(sb: &Superblock) -> u32 {
    crate::format::fs_id(&sb.uuid)
}

/// Make a filesystem on `dev` (the layout's size is the device's when `total_bytes` is 0).
pub fn mkfs(dev: Arc<dyn Device>, layout: &Layout, cache_blocks: usize) -> Result<Superblock> {
    let mut req = layout.clone();
    if req.total_bytes == 0 {
        req.total_bytes = dev.len_bytes();
    }
    let sb = Superblock::layout(&req).map_err(FsError::Layout)?;
    let zero = vec![0u8; BLOCK_SIZE];
    dev.write_at(&zero, sb.cp_a.byte_offset())?;
    dev.write_at(&zero, sb.cp_b.byte_offset())?;
    let sbb = sb.encode();
    dev.write_at(&sbb, 0)?;
    dev.write_at(&sbb, sb.backup_addr().byte_offset())?;
    dev.flush()?;
    let g = geometry(&sb);
    let mut st = VStore::open(g, dev, &Roots::empty(&g), cache_blocks);
    let heads: Vec<(SegNo, u32, u32)> = (0..sb.streams)
        .map(|s| (SegNo(u64::from(s)), 0, 1))
        .collect();
    for &(seg, ..) in &heads {
        st.recover_head(seg.get() as u8, seg)?;
    }
    let log_id = crate::log::new_log_id(0);
    st.open_log(&heads, 1, log_id, fs_id(&sb))?;
    let mut inodes = InodeTable::open(&[0; INODE_SIZE])?;
    let t = Timespec::now();
    st.begin_group()?;
    inodes.put(
        &mut st,
        &DiskInode {
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
        },
    )?;
    let ifile = inodes.flush(&mut st)?;
    st.end_group(&ifile, &[0; INODE_SIZE])?;
    let mut m = Mounted {
        sb: sb.clone(),
        st,
        inodes,
        generation: 0,
        cno: Cno(1),
        region: 'A',
        other_region_error: None,
        recovered: None,
        log_id,
        cpfile_inode: vec![0; INODE_SIZE],
    };
    m.checkpoint(false)?;
    m.checkpoint(true)?;
    m.st.close_log();
    Ok(sb)
}

fn read_superblock(dev: &dyn Device) -> Result<(Superblock, Option<String>)> {
    let len = dev.len_bytes();
    if len < 2 * BLOCK_BYTES {
        return Err(NotLfs::TooSmall { len }.into());
    }
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut b, 0)?;
    let err = match Superblock::decode(&b) {
        Ok(sb) => return Ok((sb, None)),
        // Another version is not damage: say so, do not try the backup.
        Err(e @ FormatError::OtherVersion { .. }) => {
            return Err(FsError::Corrupt {
                what: "superblock",
                addr: BlockAddr::NONE,
                source: e,
            })
        }
        Err(e) => e,
    };
    if matches!(err, FormatError::BadMagic { .. }) && b.iter().take(4).any(|&c| c != 0) {
        return Err(NotLfs::Foreign(err).into());
    }
    dev.read_at(&mut b, (len / BLOCK_BYTES - 1) * BLOCK_BYTES)?;
    if let Ok(sb) = Superblock::decode(&b) {
        tracing::warn!(error = %err, "primary superblock damaged; using the backup");
        return Ok((sb, Some(err.to_string())));
    }
    Err(FsError::Corrupt {
        what: "superblock",
        addr: BlockAddr::NONE,
        source: err,
    })
}

fn read_region(
    dev: &dyn Device,
    sb: &Superblock,
    at: BlockAddr,
) -> Result<std::result::Result<Checkpoint, FormatError>> {
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut b, at.byte_offset())?;
    Ok(Checkpoint::decode(
        &b,
        sb.streams,
        sb.nsegs,
        sb.seg_blocks,
        sb.seg_base,
    ))
}

/// Mount the filesystem on `dev` (see the module comment). With `write`, the log is
/// reopened and the recovery is recorded in a checkpoint in each region.
pub fn mount(dev: Arc<dyn Device>, write: bool, cache_blocks: usize) -> Result<Mounted> {
    let (sb, _sb_err) = read_superblock(dev.as_ref())?;
    if dev.len_bytes() < sb.total_blocks * BLOCK_BYTES {
        return Err(MountError::DeviceTooSmall {
            have: dev.len_bytes(),
            need: sb.total_blocks * BLOCK_BYTES,
        }
        .into());
    }
    let a = read_region(dev.as_ref(), &sb, sb.cp_a)?;
    let b = read_region(dev.as_ref(), &sb, sb.cp_b)?;
    let (cp, region, other) = match (a, b) {
        (Ok(a), Ok(b)) if b.generation > a.generation => (b, 'B', None),
        (Ok(a), Ok(_)) => (a, 'A', None),
        (Ok(a), Err(e)) => (a, 'A', Some(e.to_string())),
        (Err(e), Ok(b)) => (b, 'B', Some(e.to_string())),
        (Err(ea), Err(eb)) => return Err(MountError::NoCheckpoint { a: ea, b: eb }.into()),
    };
    let g = geometry(&sb);
    let roots = Roots {
        dat_root: cp.dat_root,
        dat_height: cp.dat_height,
        next_vblock: cp.next_vblock,
        sufile_root: cp.sufile_root,
        sufile_height: cp.sufile_height,
        nclean: cp.nclean,
        cno: cp.cno,
    };
    let mut st = VStore::open(g, dev, &roots, cache_blocks);
    let start = LogStart {
        heads: cp
            .heads
            .iter()
            .map(|h| (h.segment, h.offset, h.stream_seq))
            .collect(),
        next_seq: cp.next_seq,
        log_id: cp.log_id,
        fs_id: fs_id(&sb),
        cno: cp.cno,
    };
    let rec = roll_forward(&mut st, &start)?;
    let ifile = rec.ifile_inode.clone().unwrap_or(cp.ifile_inode.clone());
    let cpfile = rec.cpfile_inode.clone().unwrap_or(cp.cpfile_inode.clone());
    let mut inodes = InodeTable::open(&ifile)?;
    if inodes.get(&mut st, ROOT_INO)?.is_none() {
        return Err(crate::error::Damage::RootUnallocated.into());
    }
    let log_id = crate::log::new_log_id(cp.log_id);
    let mut m = Mounted {
        sb,
        st,
        inodes,
        generation: cp.generation,
        cno: cp.cno,
        region,
        other_region_error: other,
        recovered: Some(rec),
        log_id,
        cpfile_inode: cpfile,
    };
    if write {
        let rec = m
            .recovered
            .as_ref()
            .map(|r| (r.heads.clone(), r.plan.next_seq));
        let (heads, next_seq) = rec.unwrap_or_default();
        let fs = fs_id(&m.sb);
        m.st.open_log(&heads, next_seq, log_id, fs)?;
        m.checkpoint(false)?;
        m.checkpoint(false)?;
    }
    Ok(m)
}

/// What a checkpoint records besides the store's maps and heads.
pub struct CheckpointState<'a> {
    /// The checkpoint in force (the new one gets `generation + 1`, `cno + 1`).
    pub generation: u64,
    pub cno: Cno,
    pub log_id: u64,
    pub cpfile_inode: &'a [u8],
    pub clean: bool,
}

/// Write a checkpoint (docs/FORMAT-V2.md §9; step 1, the group of everything dirty, is the
/// caller's): the inode table's changes in a group of their own, the maps, the heads, `F`,
/// the older region, `F`. Returns the new generation and number.
pub fn write_checkpoint(
    sb: &Superblock,
    st: &mut VStore,
    itable: &mut InodeTable,
    at: CheckpointState<'_>,
) -> Result<(u64, Cno)> {
    let cno = Cno(at.cno.get() + 1);
    if itable.changed_blocks() > 0 {
        st.begin_group()?;
        let ifile = itable.flush(st)?;
        st.end_group(&ifile, at.cpfile_inode)?;
    }
    let ifile = itable.inode_bytes();
    let roots = st.flush_maps(&ifile, at.cpfile_inode, cno)?;
    let (heads, next_seq) = st.checkpoint_heads()?;
    st.sync()?;
    let generation = at.generation + 1;
    let c = Checkpoint {
        flags: if at.clean { FLAG_CLEAN } else { 0 },
        generation,
        cno,
        timestamp_ns: crate::log::now_ns(),
        next_seq,
        log_id: at.log_id,
        next_vblock: roots.next_vblock,
        nclean: roots.nclean,
        ninodes: 0,
        nblocks_live: 0,
        nblocks_held: 0,
        heads: heads.iter().map(|&h| h.into()).collect(),
        dat_root: roots.dat_root,
        dat_height: roots.dat_height,
        sufile_root: roots.sufile_root,
        sufile_height: roots.sufile_height,
        cpfile_inode: at.cpfile_inode.to_vec(),
        ifile_inode: ifile,
    };
    let region = if generation % 2 == 1 {
        sb.cp_a
    } else {
        sb.cp_b
    };
    let dev = st.device().clone();
    dev.write_at(&c.encode(), region.byte_offset())?;
    dev.flush()?;
    st.checkpointed(cno)?;
    Ok((generation, cno))
}

impl Mounted {
    /// Write a checkpoint (see [`write_checkpoint`]).
    pub fn checkpoint(&mut self, clean: bool) -> Result<()> {
        let at = CheckpointState {
            generation: self.generation,
            cno: self.cno,
            log_id: self.log_id,
            cpfile_inode: &self.cpfile_inode,
            clean,
        };
        (self.generation, self.cno) =
            write_checkpoint(&self.sb, &mut self.st, &mut self.inodes, at)?;
        Ok(())
    }

    /// The checkpoint list's inode in force.
    pub fn cpfile_inode(&self) -> &[u8] {
        &self.cpfile_inode
    }

    /// Open the log where roll-forward left it (a new log id), so the mount writes.
    pub fn open_log(&mut self) -> Result<()> {
        let rec = self
            .recovered
            .as_ref()
            .map(|r| (r.heads.clone(), r.plan.next_seq));
        let (heads, next_seq) = rec.unwrap_or_default();
        let fs = fs_id(&self.sb);
        self.st.open_log(&heads, next_seq, self.log_id, fs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use crate::format::inode::S_IFREG;
    use crate::format::v2::summary::Kind;
    use crate::format::v2::superblock::{DEFAULT_PROTECT_SECS, DEFAULT_STREAMS};
    use crate::format::VBlock;
    use crate::vstore::Owner;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn layout(total: u64) -> Layout {
        Layout {
            total_bytes: total,
            seg_bytes: 256 << 10,
            streams: DEFAULT_STREAMS,
            protect_secs: DEFAULT_PROTECT_SECS,
            label: "t".into(),
            uuid: [3; 16],
            created_ns: 0,
        }
    }

    /// A device of any size holding only what was written, counting blocks read and
    /// written: what an empty 16 TiB image costs to make and mount.
    struct Sparse {
        len: u64,
        blocks: Mutex<HashMap<u64, Vec<u8>>>,
        reads: Mutex<u64>,
        writes: Mutex<u64>,
    }

    impl Device for Sparse {
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            let m = self.blocks.lock().unwrap();
            for (i, chunk) in buf.chunks_mut(BLOCK_SIZE).enumerate() {
                let b = off / BLOCK_BYTES + i as u64;
                match m.get(&b) {
                    Some(d) => chunk.copy_from_slice(&d[..chunk.len()]),
                    None => chunk.fill(0),
                }
            }
            *self.reads.lock().unwrap() += buf.len().div_ceil(BLOCK_SIZE) as u64;
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            let mut m = self.blocks.lock().unwrap();
            for (i, chunk) in buf.chunks(BLOCK_SIZE).enumerate() {
                let mut d = vec![0u8; BLOCK_SIZE];
                d[..chunk.len()].copy_from_slice(chunk);
                m.insert(off / BLOCK_BYTES + i as u64, d);
            }
            *self.writes.lock().unwrap() += buf.len().div_ceil(BLOCK_SIZE) as u64;
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn len_bytes(&self) -> u64 {
            self.len
        }
    }

    /// Making and mounting an empty filesystem reads and writes a number of blocks that
    /// does not depend on the size of the device (the goal of issue 20, §1).
    #[test]
    fn an_empty_filesystem_of_any_size_costs_the_same_to_make_and_mount() {
        let mut costs = Vec::new();
        for total in [64u64 << 20, 1 << 40, 16 << 40] {
            let dev = Arc::new(Sparse {
                len: total,
                blocks: Mutex::default(),
                reads: Mutex::default(),
                writes: Mutex::default(),
            });
            let d: Arc<dyn Device> = dev.clone();
            mkfs(d.clone(), &layout(0), 64).unwrap();
            let made = *dev.writes.lock().unwrap();
            *dev.reads.lock().unwrap() = 0;
            let mut m = mount(d.clone(), true, 64).unwrap();
            assert!(m.inodes.get(&mut m.st, ROOT_INO).unwrap().is_some());
            m.st.close_log();
            let mounted = *dev.reads.lock().unwrap();
            costs.push((total, made, mounted));
        }
        for &(total, made, mounted) in &costs {
            assert!(
                made < 64 && mounted < 64,
                "{total} bytes: {made} blocks written to make, {mounted} read to mount"
            );
        }
        // 17 blocks written and 10 read when this was written, for every size.
        assert!(
            costs.iter().all(|c| (c.1, c.2) == (costs[0].1, costs[0].2)),
            "64 MiB, 1 TiB and 16 TiB cost the same: {costs:?}"
        );
    }

    /// A file created and fsynced after the last checkpoint, then a crash: the next mount
    /// rolls it forward, inode and data, and the maps hold together.
    #[test]
    fn what_was_synced_after_the_checkpoint_survives_a_crash() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
        mkfs(dev.clone(), &layout(0), 64).unwrap();
        let mut m = mount(dev.clone(), true, 64).unwrap();
        let gen = m.generation;
        let st = &mut m.st;
        st.begin_group().unwrap();
        let (ino, _) = m.inodes.allocate(st, Some(ROOT_INO)).unwrap();
        let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let v = st
            .write_virtual(
                1,
                Owner {
                    kind: Kind::Data,
                    height: 0,
                    ino,
                    generation: 1,
                    index: 0,
                },
                VBlock::NONE,
                &data,
                false,
            )
            .unwrap();
        let mut d = DiskInode {
            ino,
            version: 1,
            mode: S_IFREG | 0o644,
            nlink: 1,
            size: BLOCK_BYTES,
            blocks: 1,
            ..Default::default()
        };
        d.direct[0] = BlockAddr(v.get());
        m.inodes.put(st, &d).unwrap();
        let ifile = m.inodes.flush(st).unwrap();
        st.end_group(&ifile, &[0; INODE_SIZE]).unwrap();
        st.sync().unwrap();
        // The power goes: no checkpoint, the writer stopped.
        m.st.close_log();
        drop(m);

        let mut again = mount(dev.clone(), true, 64).unwrap();
        let rec = again.recovered.clone().unwrap();
        assert_eq!(rec.plan.groups.len(), 1, "{:?}", rec.plan);
        assert!(
            again.generation >= gen + 2,
            "recovery checkpointed in both regions"
        );
        let back = again.inodes.get(&mut again.st, ino).unwrap().unwrap();
        assert_eq!(back.size, BLOCK_BYTES);
        let v = VBlock(back.direct[0].get());
        assert_eq!(*again.st.read_virtual(v).unwrap(), data);
        let problems = crate::vcheck::check_maps(&mut again.st, true)
            .unwrap()
            .problems;
        assert!(problems.is_empty(), "{problems:?}");
        again.checkpoint(true).unwrap();
        again.st.close_log();
        let mut clean = mount(dev, false, 64).unwrap();
        assert_eq!(clean.recovered.unwrap().plan.groups.len(), 0);
        assert!(clean.inodes.get(&mut clean.st, ino).unwrap().is_some());
    }

    #[test]
    fn a_version_1_image_is_refused_naming_both_versions() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
        crate::fs::mkfs(dev.clone(), &crate::fs::MkfsOptions::default()).unwrap();
        let e = mount(dev, false, 64).err().unwrap().to_string();
        assert!(e.contains("version 1") && e.contains("version 2"), "{e}");
    }
}
