//! Checkpoints, mount and mkfs.
//!
//! ## The checkpoint, step by step (crash argument in docs/FORMAT.md)
//! 1. Flush group: all dirty file state.
//! 2. Dirty inode-map blocks, then dirty segment-usage blocks, into the log (flag CHECKPOINT).
//!    Usage blocks are not counted in live bytes (counting them would change the table they
//!    record); a segment holding one the checkpoint points at is *pinned* instead, and one
//!    in a Freed segment is rewritten so that segment can be released.
//! 3. Sync: everything the checkpoint points at is durable.
//! 4. The region for generation g+1 (odd → A, even → B: always the older one), then flush.
//! 5. Segments freed before step 2 (and not pinned) become Clean.

use super::inode::Inode;
use super::{CpState, Inner, MountOptions, Stats};
use crate::device::Device;
use crate::dir::Dir;
use crate::error::{FsError, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::inode::{DiskInode, Timespec, S_IFDIR};
use crate::format::summary::{BlockKind, SummaryEntry, FLAG_CHECKPOINT};
use crate::format::superblock::{
    LayoutRequest, Superblock, DEFAULT_BYTES_PER_INODE, DEFAULT_SEG_BYTES,
};
use crate::format::table::{
    decode_imap_block, decode_usage_block, encode_imap_block, encode_usage_block, ImapEntry,
    IMAP_ALLOCATED,
};
use crate::format::{BLOCK_BYTES, BLOCK_SIZE, ROOT_INO};
use crate::imap::Imap;
use crate::log::{now_ns, Log};
use crate::usage::{SegState, UsageTable};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::Store;

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

/// What mount found and did.
#[derive(Debug, Clone, Default)]
pub struct MountReport {
    pub generation: u64,
    /// 'A' or 'B'.
    pub region: char,
    /// Why the other region was not used, if it was invalid.
    pub other_region_error: Option<String>,
    /// The other region held the newest checkpoint, but its tables (or what they lead to)
    /// are damaged: why. Mount fell back to this region's older checkpoint.
    pub newest_damaged: Option<String>,
    pub clean_unmount: bool,
    pub primary_superblock_error: Option<String>,
    pub orphans_freed: u64,
    /// What roll-forward replayed (`None` with `no_recovery`).
    pub roll_forward: Option<super::RollForward>,
    pub elapsed: Duration,
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut u))
        .is_ok();
    if !ok {
        let seed = now_ns().to_le_bytes();
        u[..8].copy_from_slice(&seed);
        u[8..].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
    }
    u
}

impl super::MountReport {
    /// The region this mount did not use.
    pub fn other_region(&self) -> char {
        other_region(self.region)
    }
}

/// Checkpoint region 'A' for 'B' and 'B' for 'A'.
fn other_region(region: char) -> char {
    if region == 'A' {
        'B'
    } else {
        'A'
    }
}

/// A log id for a new mount: random, so that no two mounts (even two attempts to recover
/// from the same checkpoint) ever write units roll-forward could take for each other's.
fn new_log_id(not: u64) -> u64 {
    let u = random_uuid();
    let mut id = u64::from_le_bytes([u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]]);
    if id == not || id == 0 {
        id = not.wrapping_add(now_ns()) | 1;
    }
    id
}

/// The geometry `mkfs` would write on a device of `total_bytes` (for dry runs).
pub fn plan(total_bytes: u64, opts: &MkfsOptions) -> Result<Superblock> {
    Superblock::layout(&LayoutRequest {
        total_bytes,
        seg_bytes: opts.seg_bytes,
        bytes_per_inode: opts.bytes_per_inode,
        label: opts.label.clone(),
        uuid: opts.uuid.unwrap_or_else(random_uuid),
        created_ns: now_ns(),
    })
    .map_err(|e| FsError::Damaged(e.to_string()))
}

/// Write a new, empty filesystem on `dev`.
pub fn mkfs(dev: Arc<dyn Device>, opts: &MkfsOptions) -> Result<Superblock> {
    let sb = plan(dev.len_bytes(), opts)?;
    // Zero both checkpoint regions first, so no region of an earlier filesystem survives.
    let zeros = vec![0u8; sb.cp_blocks as usize * BLOCK_SIZE];
    dev.write_at(&zeros, sb.cp_a * BLOCK_BYTES)?;
    dev.write_at(&zeros, sb.cp_b * BLOCK_BYTES)?;
    let sbb = sb.encode();
    dev.write_at(&sbb, 0)?;
    dev.write_at(&sbb, sb.backup_addr() * BLOCK_BYTES)?;
    dev.flush()?;
    let sb = Arc::new(sb);
    let mut usage = UsageTable::new(sb.nsegs, sb.seg_bytes());
    usage.activate(0, now_ns());
    let mut inner = Inner::assemble(
        sb.clone(),
        dev,
        Imap::new(sb.imap_blocks as usize),
        usage,
        CpState {
            generation: 0,
            imap_addrs: vec![0; sb.imap_blocks as usize],
            usage_addrs: vec![0; sb.usage_blocks as usize],
        },
        MountOptions::default(),
    );
    inner.st.log = Some(Log::open(
        sb.clone(),
        inner.st.dev.clone(),
        &mut inner.st.usage,
        0,
        0,
        1,
        new_log_id(0),
    )?);
    let t = Timespec::now();
    inner.imap.set(
        ROOT_INO,
        ImapEntry {
            addr: 0,
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
    inner.inodes.insert(ROOT_INO, root);
    inner.touch(ROOT_INO);
    // Two checkpoints, so both regions are valid from the start.
    inner.checkpoint_with(false)?;
    inner.checkpoint_with(true)?;
    if let Some(mut log) = inner.st.log.take() {
        log.backend.stop();
    }
    Ok((*sb).clone())
}

/// Refuse a device too small to hold even a superblock (an empty file, say) in words a user
/// understands, rather than as a read past its end.
pub(crate) fn not_too_small(dev: &dyn Device) -> Result<()> {
    let len = dev.len_bytes();
    if len < BLOCK_BYTES {
        return Err(FsError::Damaged(format!(
            "not an LFS filesystem (the device holds only {len} bytes)"
        )));
    }
    Ok(())
}

fn read_superblock(dev: &dyn Device) -> Result<(Superblock, Option<String>)> {
    not_too_small(dev)?;
    let len = dev.len_bytes();
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut b, 0)?;
    let primary = Superblock::decode(&b);
    let err = match primary {
        Ok(sb) => return Ok((sb, None)),
        Err(e) => e,
    };
    // Not ours at all (no magic): say so rather than trying the backup of something else.
    if matches!(err, crate::format::FormatError::BadMagic { .. })
        && b.iter().take(4).any(|&c| c != 0)
    {
        return Err(FsError::Damaged(format!("not an LFS filesystem ({err})")));
    }
    if len >= 2 * BLOCK_BYTES {
        dev.read_at(&mut b, (len / BLOCK_BYTES - 1) * BLOCK_BYTES)?;
        if let Ok(sb) = Superblock::decode(&b) {
            tracing::warn!(error = %err, "primary superblock damaged; using the backup");
            return Ok((sb, Some(err.to_string())));
        }
    }
    Err(FsError::Corrupt {
        what: "superblock",
        addr: 0,
        source: err,
    })
}

/// The checkpoint in the region at `addr`: the inner `Err` says why the region holds no valid
/// one. A device error is the outer `Err`: the region may be perfectly good, and mounting
/// from the other (older) one instead could not be undone once the mount writes.
fn read_region(
    dev: &dyn Device,
    sb: &Superblock,
    addr: u64,
) -> Result<std::result::Result<Checkpoint, String>> {
    let mut b = vec![0u8; sb.cp_blocks as usize * BLOCK_SIZE];
    dev.read_at(&mut b, addr * BLOCK_BYTES)?;
    Ok(Checkpoint::decode(&b, sb).map_err(|e| e.to_string()))
}

impl Inner {
    fn assemble(
        sb: Arc<Superblock>,
        dev: Arc<dyn Device>,
        imap: Imap,
        usage: UsageTable,
        cp: CpState,
        opts: MountOptions,
    ) -> Inner {
        Inner {
            st: Store::new(sb, dev, usage, opts.cache_blocks),
            imap,
            inodes: HashMap::new(),
            tombstones: Vec::new(),
            dirty_inodes: BTreeSet::new(),
            dirty_blocks: 0,
            dirty_nodes: 0,
            cp,
            opts,
            appended_at_cp: 0,
            last_cp: Instant::now(),
            last_commit: Instant::now(),
            appended_at_commit: 0,
            stats: Stats::default(),
            shut_down: None,
            cache_reserve: 0,
            out_of_space: None,
            reservations: Default::default(),
            sync_due: false,
        }
    }

    pub(crate) fn mount(
        dev: Arc<dyn Device>,
        opts: MountOptions,
    ) -> Result<(Inner, super::MountReport)> {
        let t0 = Instant::now();
        let (sb, sb_err) = read_superblock(dev.as_ref())?;
        if dev.len_bytes() < sb.total_blocks * BLOCK_BYTES {
            return Err(FsError::Damaged(format!(
                "device is {} bytes but the filesystem needs {}",
                dev.len_bytes(),
                sb.total_blocks * BLOCK_BYTES
            )));
        }
        let a = read_region(dev.as_ref(), &sb, sb.cp_a)?;
        let b = read_region(dev.as_ref(), &sb, sb.cp_b)?;
        // Generations are never equal (each checkpoint writes g+1 to the other region); if a
        // damaged image shows them equal, A is taken and B reported (fsck: the region is
        // invalid; its repair, a new checkpoint, makes them differ again).
        let (newest, older, other_err) = match (a, b) {
            (Ok(a), Ok(b)) if b.generation > a.generation => ((b, 'B'), Some((a, 'A')), None),
            (Ok(a), Ok(b)) if b.generation == a.generation => {
                let e = format!("holds generation {}, as region A does", b.generation);
                ((a, 'A'), Some((b, 'B')), Some(e))
            }
            (Ok(a), Ok(b)) => ((a, 'A'), Some((b, 'B')), None),
            (Ok(a), Err(e)) => ((a, 'A'), None, Some(e)),
            (Err(e), Ok(b)) => ((b, 'B'), None, Some(e)),
            (Err(ea), Err(eb)) => {
                return Err(FsError::Damaged(format!(
                    "no valid checkpoint (region A: {ea}; region B: {eb})"
                )))
            }
        };
        if let Some(e) = &other_err {
            tracing::warn!(region = %other_region(newest.1), error = %e, "checkpoint region invalid; using the other");
        }
        let sb = Arc::new(sb);
        let first = Inner::mount_from(&dev, &sb, newest, other_err, sb_err.clone(), &opts, t0);
        let (Err(e), Some(older)) = (&first, older) else {
            return first;
        };
        // Only for damage found while reading (nothing is written before that could fail
        // so); a device error is the device's, and would recur.
        if !matches!(e, FsError::Corrupt { .. } | FsError::Damaged(_)) {
            return first;
        }
        // The newest checkpoint's tables (or what they lead to) do not decode: the other
        // region's are elsewhere, and roll-forward from it replays what came after.
        tracing::warn!(region = %other_region(older.1), error = %e, "cannot mount from the newest checkpoint; trying the other region");
        let why = e.to_string();
        match Inner::mount_from(&dev, &sb, older, None, sb_err, &opts, t0) {
            Ok((inner, mut report)) => {
                report.newest_damaged = Some(why);
                Ok((inner, report))
            }
            Err(e2) => Err(FsError::Damaged(format!(
                "{e} (and from the other checkpoint region: {e2})"
            ))),
        }
    }

    /// Mount from checkpoint `cp` of `region`; `other_err` says why the other region is not
    /// used (for the report).
    fn mount_from(
        dev: &Arc<dyn Device>,
        sb: &Arc<Superblock>,
        (cp, region): (Checkpoint, char),
        other_err: Option<String>,
        sb_err: Option<String>,
        opts: &MountOptions,
        t0: Instant,
    ) -> Result<(Inner, super::MountReport)> {
        let dev = dev.clone();
        let opts = opts.clone();
        let mut inner = Inner::assemble(
            sb.clone(),
            dev.clone(),
            Imap::new(sb.imap_blocks as usize),
            UsageTable::new(sb.nsegs, sb.seg_bytes()),
            CpState {
                generation: cp.generation,
                imap_addrs: cp.imap_addrs.clone(),
                usage_addrs: cp.usage_addrs.clone(),
            },
            opts.clone(),
        );
        for (i, &addr) in cp.imap_addrs.iter().enumerate() {
            if addr == 0 {
                continue;
            }
            let blk = inner.st.read_block(addr)?;
            let entries = decode_imap_block(&blk, i as u32)
                .map_err(FsError::corrupt("inode map block", addr))?;
            inner.imap.load_block(i, &entries);
        }
        for (i, &addr) in cp.usage_addrs.iter().enumerate() {
            let blk = inner.st.read_block(addr)?;
            let entries = decode_usage_block(&blk, i as u32, sb.seg_bytes())
                .map_err(FsError::corrupt("segment usage block", addr))?;
            inner.st.usage.load_block(i, &entries);
        }
        inner.st.usage.resume_active(cp.head_segment);
        // A usage block sits in a segment that may be recorded clean (usage blocks are not
        // counted live); keep the log out of it until a checkpoint has rewritten the block.
        for &a in &cp.usage_addrs {
            if let Some(seg) = sb.seg_of(a).filter(|&s| s != cp.head_segment) {
                inner.st.usage.hold(seg);
            }
        }
        let mut report = super::MountReport {
            generation: cp.generation,
            region,
            other_region_error: other_err,
            clean_unmount: cp.clean_unmount,
            primary_superblock_error: sb_err,
            ..Default::default()
        };
        let (mut hs, mut ho, mut hseq) = (cp.head_segment, cp.head_offset, cp.next_seq);
        if !opts.no_recovery {
            let rf = inner.roll_forward(&cp)?;
            (hs, ho, hseq) = rf.head;
            report.roll_forward = Some(rf);
        }
        if !inner.imap.get(ROOT_INO).is_some_and(|e| e.allocated()) {
            return Err(FsError::Damaged(
                "the root directory is not allocated".into(),
            ));
        }
        if !opts.read_only {
            // A new log id before any write: units past the recovered end of the log carry
            // the old one and can never be taken for this mount's (docs/RECOVERY.md).
            inner.st.log = Some(Log::open(
                sb.clone(),
                dev,
                &mut inner.st.usage,
                hs,
                ho,
                hseq,
                new_log_id(cp.log_id),
            )?);
            for ino in inner.imap.orphans() {
                inner.load(ino)?;
                inner.free_inode(ino)?;
                report.orphans_freed += 1;
            }
            // Record what roll-forward recovered (and the new log id) in a checkpoint, so
            // the next mount starts from here instead of replaying the same log again. In
            // both regions: roll-forward follows one log id, so if the newest region were
            // later damaged, a fallback to a region of the previous mount would stop at this
            // mount's first unit and lose everything written since (found by the
            // corruption sweep, tests/corrupt.rs).
            inner.checkpoint_with(false)?;
            inner.checkpoint_with(false)?;
        }
        report.elapsed = t0.elapsed();
        let rf = report.roll_forward.clone().unwrap_or_default();
        tracing::debug!(
            region = %report.region, generation = report.generation, clean = report.clean_unmount,
            rolled_units = rf.units, rolled_groups = rf.groups, recovered_inodes = rf.inodes,
            discarded_units = rf.discarded,
            end_of_log = %rf.end.map_or_else(|| "not read".to_string(), |e| e.to_string()),
            orphans = report.orphans_freed, ms = report.elapsed.as_millis() as u64, "mounted"
        );
        Ok((inner, report))
    }

    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        self.checkpoint_with(false)
    }

    pub(crate) fn checkpoint_with(&mut self, clean: bool) -> Result<()> {
        if self.st.log.is_none() {
            return Err(FsError::ReadOnly);
        }
        self.flush_all()?;
        let sb = self.st.sb.clone();
        self.st.begin_group(FLAG_CHECKPOINT)?;
        let res = self.write_tables();
        self.st.end_group()?;
        let to_release = res?;
        self.st.sync()?;
        let log = self.st.log.as_mut().ok_or(FsError::ReadOnly)?;
        let (mut hs, mut ho) = log.head();
        if ho + 2 > sb.seg_blocks {
            (hs, ho) = (log.next_segment(), 0);
        }
        let generation = self.cp.generation + 1;
        let c = Checkpoint {
            generation,
            timestamp_ns: now_ns(),
            clean_unmount: clean,
            head_segment: hs,
            head_offset: ho,
            next_seq: log.next_seq(),
            log_id: log.log_id(),
            imap_addrs: self.cp.imap_addrs.clone(),
            usage_addrs: self.cp.usage_addrs.clone(),
        };
        let region = if generation % 2 == 1 {
            sb.cp_a
        } else {
            sb.cp_b
        };
        let bytes = Arc::new(c.encode(&sb));
        let len = bytes.len();
        log.backend
            .write(region * BLOCK_BYTES, bytes, 0, len, None)?;
        log.backend.flush()?;
        self.cp.generation = generation;
        let pinned: HashSet<u64> = self
            .cp
            .usage_addrs
            .iter()
            .filter_map(|&a| sb.seg_of(a))
            .collect();
        let release: Vec<u64> = to_release
            .into_iter()
            .filter(|s| !pinned.contains(s))
            .collect();
        self.st.usage.release(&release);
        self.appended_at_cp = self.st.blocks_appended;
        self.last_cp = Instant::now();
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Step 2: write dirty imap and usage blocks; returns the segments to release.
    fn write_tables(&mut self) -> Result<Vec<u64>> {
        let sb = self.st.sb.clone();
        for idx in self.imap.dirty_blocks() {
            let bytes = encode_imap_block(idx as u32, self.imap.block(idx));
            let addr = self.st.append_counted(
                SummaryEntry::table(BlockKind::Imap, idx as u64),
                &bytes,
                BLOCK_BYTES,
            )?;
            let old = std::mem::replace(&mut self.cp.imap_addrs[idx], addr);
            if old != 0 {
                self.st.kill_bytes(old, BLOCK_BYTES);
            }
            self.imap.clear_dirty(idx);
        }
        for (idx, &addr) in self.cp.usage_addrs.iter().enumerate() {
            let state = sb
                .seg_of(addr)
                .and_then(|s| self.st.usage.get(s))
                .map(|s| s.state);
            if addr == 0 || matches!(state, Some(SegState::Freed) | Some(SegState::Cleaning)) {
                self.st.usage.mark_dirty(idx);
            }
        }
        let to_release = self.st.usage.freed();
        // Appending may activate a segment and so dirty a block again; a few rounds settle it
        // (the recorded state of such a segment does not change: see UsageTable::block_entries).
        for _ in 0..4 {
            let dirty = self.st.usage.dirty_blocks();
            if dirty.is_empty() {
                break;
            }
            for idx in dirty {
                self.st.usage.clear_dirty(idx);
                let bytes = encode_usage_block(idx as u32, &self.st.usage.block_entries(idx));
                let addr = self.st.append_counted(
                    SummaryEntry::table(BlockKind::Usage, idx as u64),
                    &bytes,
                    0,
                )?;
                self.cp.usage_addrs[idx] = addr;
            }
        }
        Ok(to_release)
    }
}
