//! Mount: the superblock, the newest valid checkpoint region (or the other), the tables it
//! points at, roll-forward, and what mount found (`MountReport`).

use super::durability::Durability;
use super::inner::Inner;
use super::types::{MountOptions, Stats};
use crate::device::Device;
use crate::error::{Damage, MountError, NotLfs};
use crate::error::{FsError, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::superblock::Superblock;
use crate::format::table::{decode_imap_block, decode_usage_block};
use crate::format::FormatError;
use crate::format::{BlockAddr, BLOCK_BYTES, BLOCK_SIZE, ROOT_INO};
use crate::imap::Imap;

use super::icache::InodeCache;
use crate::usage::UsageTable;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mkfs::{new_log_id, not_too_small};
use super::store::Store;

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
    pub roll_forward: Option<super::recovery::RollForward>,
    pub elapsed: Duration,
}

impl MountReport {
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
        return Err(NotLfs::Foreign(err).into());
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
        addr: BlockAddr::NONE,
        source: err,
    })
}

/// The checkpoint in the region at `addr`: the inner `Err` says why the region holds no valid
/// one. A device error is the outer `Err`: the region may be perfectly good, and mounting
/// from the other (older) one instead could not be undone once the mount writes.
fn read_region(
    dev: &dyn Device,
    sb: &Superblock,
    addr: BlockAddr,
) -> Result<std::result::Result<Checkpoint, FormatError>> {
    let mut b = vec![0u8; sb.cp_blocks as usize * BLOCK_SIZE];
    dev.read_at(&mut b, addr.byte_offset())?;
    Ok(Checkpoint::decode(&b, sb))
}

impl Inner {
    pub(super) fn assemble(
        sb: Arc<Superblock>,
        dev: Arc<dyn Device>,
        imap: Imap,
        usage: UsageTable,
        cp: Durability,
        opts: MountOptions,
    ) -> Inner {
        Inner {
            st: Store::new(sb, dev, usage, opts.cache_blocks),
            imap,
            inodes: InodeCache::new(opts.inode_cache),
            cp,
            opts,
            stats: Stats::default(),
            shut_down: None,
            space: Default::default(),
            reservations: Default::default(),
            sync_due: false,
        }
    }

    pub(crate) fn mount(dev: Arc<dyn Device>, opts: MountOptions) -> Result<(Inner, MountReport)> {
        let t0 = Instant::now();
        let (sb, sb_err) = read_superblock(dev.as_ref())?;
        if dev.len_bytes() < sb.total_blocks * BLOCK_BYTES {
            return Err(MountError::DeviceTooSmall {
                have: dev.len_bytes(),
                need: sb.total_blocks * BLOCK_BYTES,
            }
            .into());
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
            (Ok(a), Err(e)) => ((a, 'A'), None, Some(e.to_string())),
            (Err(e), Ok(b)) => ((b, 'B'), None, Some(e.to_string())),
            (Err(ea), Err(eb)) => return Err(MountError::NoCheckpoint { a: ea, b: eb }.into()),
        };
        if let Some(e) = &other_err {
            tracing::warn!(region = %other_region(newest.1), error = %e, "checkpoint region invalid; using the other");
        }
        let sb = Arc::new(sb);
        let first = Inner::mount_from(&dev, &sb, newest, other_err, sb_err.clone(), &opts, t0);
        let (e, older) = match (first, older) {
            // Only for damage found while reading (nothing is written before that could fail
            // so); a device error is the device's, and would recur.
            (Err(e @ (FsError::Corrupt { .. } | FsError::Damaged(_))), Some(older)) => (e, older),
            (first, _) => return first,
        };
        // The newest checkpoint's tables (or what they lead to) do not decode: the other
        // region's are elsewhere, and roll-forward from it replays what came after.
        tracing::warn!(region = %other_region(older.1), error = %e, "cannot mount from the newest checkpoint; trying the other region");
        let why = e.to_string();
        match Inner::mount_from(&dev, &sb, older, None, sb_err, &opts, t0) {
            Ok((inner, mut report)) => {
                report.newest_damaged = Some(why);
                Ok((inner, report))
            }
            Err(e2) => Err(MountError::NeitherRegion {
                newest: Box::new(e),
                older: Box::new(e2),
            }
            .into()),
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
    ) -> Result<(Inner, MountReport)> {
        let dev = dev.clone();
        let opts = opts.clone();
        let mut inner = Inner::assemble(
            sb.clone(),
            dev.clone(),
            Imap::new(sb.imap_blocks as usize),
            UsageTable::new(sb.nsegs, sb.seg_bytes()),
            Durability::new(cp.generation, cp.imap_addrs.clone(), cp.usage_addrs.clone()),
            opts.clone(),
        );
        for (i, &addr) in cp.imap_addrs.iter().enumerate() {
            if addr.is_none() {
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
            inner.st.usage_mut().load_block(i, &entries);
        }
        inner.st.usage_mut().resume_active(cp.head_segment);
        // A usage block sits in a segment that may be recorded clean (usage blocks are not
        // counted live); keep the log out of it until a checkpoint has rewritten the block.
        for &a in &cp.usage_addrs {
            if let Some(seg) = sb.seg_of(a).filter(|&s| s != cp.head_segment) {
                inner.st.usage_mut().hold(seg);
            }
        }
        let mut report = MountReport {
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
            return Err(Damage::RootUnallocated.into());
        }
        if !opts.read_only {
            // A new log id before any write: units past the recovered end of the log carry
            // the old one and can never be taken for this mount's (docs/RECOVERY.md).
            inner.st.open_log(hs, ho, hseq, new_log_id(cp.log_id))?;
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
}
