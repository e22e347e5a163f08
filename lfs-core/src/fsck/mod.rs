//! fsck-lfs as a library: check an image, and repair it where a repair exists.
//!
//! The check mounts the image read-only, which rolls the log forward in memory exactly as a
//! real mount would and writes nothing, then judges the recovered state with
//! [`Fs::check`](crate::fs::Fs::check) and adds what only the raw image shows (both
//! superblock copies, both checkpoint regions). A crash is not an error: a log to roll
//! forward, orphans to free and a torn checkpoint region are reported as crash residue
//! ([`Finding::is_damage`] is false) and leave the exit code 0. Damage is an error.
//!
//! Repair (`-y`, or `-p` for the safe subset) mounts read-write — which rolls forward, frees
//! orphans and writes a checkpoint — then applies the repairs, checks again (a repair may
//! uncover the next finding: a reconnected inode's link count), and finally checks the
//! image afresh from disk.

use crate::device::Device;
use crate::error::NotLfs;
use crate::error::{FsError, Result};
use crate::format::superblock::Superblock;
use crate::format::{BlockAddr, BLOCK_BYTES, BLOCK_SIZE};
use crate::fs::{Fs, MountOptions};

mod checks;
mod findings;
pub use findings::{Finding, Owner};
use serde::Serialize;
use std::sync::Arc;

/// fsck(8) exit bits.
pub const EXIT_OK: i32 = 0;
pub const EXIT_CORRECTED: i32 = 1;
pub const EXIT_UNCORRECTED: i32 = 4;
pub const EXIT_OPERATIONAL: i32 = 8;
pub const EXIT_USAGE: i32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// -n: check only, write nothing.
    Check,
    /// -p / -a: repair what is safe without asking; anything else stops the repair.
    Preen,
    /// -y: repair everything that can be repaired.
    Yes,
}

#[derive(Debug, Clone, Copy)]
pub struct FsckOptions {
    pub mode: Mode,
    /// -f: check even a cleanly unmounted filesystem.
    pub force: bool,
}

/// Counts for the one-line summary, as e2fsck prints them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub inodes_used: u64,
    pub inodes_total: u64,
    pub segments_clean: u64,
    pub segments_total: u64,
    pub live_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FsckReport {
    /// False when a clean filesystem was not checked in depth (no -f).
    pub checked: bool,
    pub clean_unmount: bool,
    /// Everything found on the image as it was.
    pub findings: Vec<Finding>,
    /// What was repaired (or, for crash residue, recovered).
    pub repaired: Vec<Finding>,
    /// Damage left when fsck finished.
    pub remaining: Vec<Finding>,
    pub usage: Usage,
    pub exit_code: i32,
}

impl FsckReport {
    pub fn damage(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_damage())
    }
}

/// Check the superblock copies: the primary at block 0 and the backup at the filesystem's
/// last block. Returns the superblock to use and the findings. `Err` when no copy decodes
/// (or the device holds something that is not ours).
fn check_superblocks(dev: &dyn Device) -> Result<(Superblock, Vec<Finding>)> {
    crate::fs::not_too_small(dev)?;
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut b, 0)?;
    let primary = Superblock::decode(&b);
    let mut findings = Vec::new();
    let sb = match primary {
        Ok(sb) => sb,
        Err(e) => {
            findings.push(Finding::SuperblockInvalid {
                copy: "primary",
                error: e.to_string(),
            });
            let last = dev.len_bytes() / BLOCK_BYTES;
            if last < 2 {
                return Err(NotLfs::TooSmall {
                    len: dev.len_bytes(),
                }
                .into());
            }
            dev.read_at(&mut b, (last - 1) * BLOCK_BYTES)?;
            let sb = Superblock::decode(&b)
                .map_err(|backup| NotLfs::NoSuperblock { primary: e, backup })?;
            return Ok((sb, findings));
        }
    };
    if sb.backup_addr().byte_offset() + BLOCK_BYTES <= dev.len_bytes() {
        dev.read_at(&mut b, sb.backup_addr().byte_offset())?;
        match Superblock::decode(&b) {
            Ok(bk) if bk == sb => {}
            Ok(_) => findings.push(Finding::SuperblockInvalid {
                copy: "backup",
                error: "differs from the primary".into(),
            }),
            Err(e) => findings.push(Finding::SuperblockInvalid {
                copy: "backup",
                error: e.to_string(),
            }),
        }
    }
    Ok((sb, findings))
}

/// What a read-only mount (with roll-forward in memory) and a full check find.
fn examine(dev: &Arc<dyn Device>, force: bool) -> Result<(Vec<Finding>, Option<Fs>, bool, bool)> {
    let (_, mut findings) = check_superblocks(dev.as_ref())?;
    let fs = match Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            ..Default::default()
        },
    ) {
        Ok(fs) => fs,
        Err(e @ (FsError::Io(_) | FsError::Poisoned)) => return Err(e),
        Err(e) => {
            findings.push(Finding::Unmountable {
                error: e.to_string(),
            });
            return Ok((findings, None, false, true));
        }
    };
    let r = fs.mount_report().clone();
    if let Some(e) = &r.newest_damaged {
        findings.push(Finding::CheckpointTablesDamaged {
            region: r.other_region(),
            error: e.clone(),
        });
    }
    if let Some(e) = &r.other_region_error {
        findings.push(Finding::CheckpointRegionInvalid {
            region: r.other_region(),
            error: e.clone(),
        });
    }
    if let Some(rf) = &r.roll_forward {
        if rf.units > 0 {
            findings.push(Finding::RollForward {
                units: rf.units,
                inodes: rf.inodes,
            });
        }
    }
    let skip = r.clean_unmount && findings.is_empty() && !force;
    if !skip {
        findings.extend(fs.check()?);
    }
    Ok((findings, Some(fs), r.clean_unmount, !skip))
}

fn usage_of(fs: &Fs) -> Usage {
    let st = fs.stats();
    let sf = fs.statfs().unwrap_or_default();
    Usage {
        inodes_used: sf.files - sf.files_free,
        inodes_total: sf.files,
        segments_clean: st.clean_segments,
        segments_total: fs.superblock().nsegs,
        live_bytes: st.live_bytes,
    }
}

/// Check (and with `Mode::Preen`/`Mode::Yes`, repair) the filesystem on `dev`. `Err` is an
/// operational error (the device cannot be read or written): exit code 8.
pub fn fsck(dev: Arc<dyn Device>, opts: FsckOptions) -> Result<FsckReport> {
    let (findings, fs, clean_unmount, checked) = examine(&dev, opts.force)?;
    let mut report = FsckReport {
        checked,
        clean_unmount,
        usage: fs.as_ref().map(usage_of).unwrap_or_default(),
        findings,
        repaired: Vec::new(),
        remaining: Vec::new(),
        exit_code: EXIT_OK,
    };
    let damage: Vec<Finding> = report.damage().cloned().collect();
    let writable = match opts.mode {
        Mode::Check => false,
        Mode::Preen => damage.iter().all(|f| f.preen_safe()),
        Mode::Yes => true,
    };
    let repairable = report
        .findings
        .iter()
        .any(|f| !f.is_damage() || f.fixable());
    if !writable || !repairable || fs.is_none() {
        report.remaining = damage;
        report.exit_code = if report.remaining.is_empty() {
            EXIT_OK
        } else {
            EXIT_UNCORRECTED
        };
        return Ok(report);
    }
    drop(fs);
    repair(&dev, &mut report, opts.mode)?;
    // Judge the result afresh from the disk.
    let (after, fs, _, _) = examine(&dev, true)?;
    if let Some(fs) = &fs {
        report.usage = usage_of(fs);
    }
    report.remaining = after.into_iter().filter(|f| f.is_damage()).collect();
    let fixed_damage = report.repaired.iter().any(|f| f.is_damage());
    report.exit_code = if !report.remaining.is_empty() {
        EXIT_UNCORRECTED | if fixed_damage { EXIT_CORRECTED } else { 0 }
    } else if fixed_damage {
        EXIT_CORRECTED
    } else {
        EXIT_OK
    };
    Ok(report)
}

fn repair(dev: &Arc<dyn Device>, report: &mut FsckReport, mode: Mode) -> Result<()> {
    let (sb, _) = check_superblocks(dev.as_ref())?;
    for f in &report.findings {
        if let Finding::SuperblockInvalid { copy, .. } = f {
            let at = if *copy == "primary" {
                BlockAddr(0)
            } else {
                sb.backup_addr()
            };
            dev.write_at(&sb.encode(), at.byte_offset())?;
            dev.flush()?;
            report.repaired.push(f.clone());
        }
    }
    // A read-write mount rolls forward, frees orphans and writes a checkpoint.
    let fs = Fs::mount(dev.clone(), MountOptions::default())?;
    for f in &report.findings {
        if matches!(
            f,
            Finding::RollForward { .. }
                | Finding::Orphan { .. }
                | Finding::CheckpointRegionInvalid { .. }
                | Finding::CheckpointTablesDamaged { .. }
        ) {
            report.repaired.push(f.clone());
        }
    }
    // Two more checkpoints: both regions now hold a valid one.
    fs.checkpoint()?;
    fs.checkpoint()?;
    let preen = mode == Mode::Preen;
    // A repair may uncover the next finding (a reconnected inode's link count): a few passes.
    for _ in 0..4 {
        let todo: Vec<Finding> = fs
            .check()?
            .into_iter()
            .filter(|f| f.is_damage() && f.fixable() && (!preen || f.preen_safe()))
            .collect();
        if todo.is_empty() {
            break;
        }
        let done = fs.repair(&todo)?;
        if done.is_empty() {
            break;
        }
        report.repaired.extend(done);
    }
    fs.unmount()
}

/// `fsck-lfs -n -f`: every finding on the image, crash residue included (empty when the
/// image is clean). What tests end with.
pub fn findings(dev: Arc<dyn Device>) -> Result<Vec<Finding>> {
    Ok(fsck(
        dev,
        FsckOptions {
            mode: Mode::Check,
            force: true,
        },
    )?
    .findings)
}
