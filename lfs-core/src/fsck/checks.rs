//! fsck's checks on a mounted state, and the repairs fsck may make.
//!
//! [`Inner::check`] recomputes, from the inode map outward, everything the engine keeps
//! incrementally, and compares:
//!
//! - every block a live structure points at (inode-map blocks, inodes, xattr blocks, data
//!   and indirect blocks) lies in the log and is claimed once;
//! - the segment usage table against live bytes recomputed from those claims;
//! - every live block is described, in its segment, by a whole unit whose summary entry
//!   names its owner exactly (the cleaner decides liveness from those entries);
//! - the directory tree from the root: each entry names an allocated inode of the kind it
//!   says, each directory is reached once and records its parent, every inode is reached,
//!   and each link count is the number of names (plus `.` and the subdirectories' `..`).
//!
//! Findings are [`Finding`] values (a library API: tests assert exact ones; fsck-lfs prints
//! them); crash residue (a log to roll forward, orphans to free, a torn checkpoint region)
//! is told apart from damage by [`Finding::is_damage`].

use super::findings::{Finding, Owner};
use crate::error::Damage;
use crate::error::{FsError, Result};
use crate::format::inode::{FileKind, FL_KNOWN, INODE_SIZE};
use crate::format::summary::{BlockKind, SummaryEntry};
use crate::format::table::IMAP_ORPHAN;
use crate::format::{BlockAddr, Ino, SegNo, BLOCK_BYTES, ROOT_INO};
use crate::fs::scan::EndOfLog;
use crate::fs::scan::Source;
use crate::fs::{Fs, Inner};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// The block claims of one check: who owns what, and the live bytes they add up to.
struct Claims {
    live: Vec<u64>,
    owner: HashMap<BlockAddr, Owner>,
    /// Per segment: (address, owner, the summary entry the block must have been written
    /// with). Inode blocks once per block.
    expect: BTreeMap<SegNo, Vec<(BlockAddr, Owner, SummaryEntry)>>,
    inode_blocks: HashSet<BlockAddr>,
    findings: Vec<Finding>,
}

impl Claims {
    fn claim(
        &mut self,
        sb: &crate::format::superblock::Superblock,
        addr: BlockAddr,
        bytes: u64,
        o: Owner,
        e: SummaryEntry,
    ) {
        let Some(seg) = sb.seg_of(addr) else {
            self.findings
                .push(Finding::BlockOutsideLog { owner: o, addr });
            return;
        };
        self.live[seg.index()] += bytes;
        if e.kind == BlockKind::InodeBlock {
            // Shared by up to fifteen inodes.
            if !self.inode_blocks.insert(addr) {
                return;
            }
        } else if let Some(prev) = self.owner.insert(addr, o.clone()) {
            self.findings.push(Finding::BlockClaimedTwice {
                addr,
                first: prev,
                second: o,
            });
            return;
        }
        self.expect.entry(seg).or_default().push((addr, o, e));
    }
}

/// What the tree walk needs to know of each readable inode.
struct Seen {
    kind: FileKind,
    nlink: u32,
    parent: Ino,
    orphan: bool,
}

/// fsck's entry points on a mounted filesystem: defined here, beside the checks, so that the
/// filesystem layer never calls upward into its checker.
impl Fs {
    /// fsck's checks on the current state : every finding, crash residue
    /// included. Writes a checkpoint first on a read-write mount.
    pub fn check(&self) -> Result<Vec<Finding>> {
        self.lock().check()
    }
    /// The damage [`Fs::check`] finds, as sentences (empty when consistent): for tests.
    pub fn verify(&self) -> Result<Vec<String>> {
        Ok(self
            .check()?
            .iter()
            .filter(|f| f.is_damage())
            .map(|f| f.to_string())
            .collect())
    }
    /// Repair what `findings` name, where a repair exists, then checkpoint. Returns the
    /// findings acted on.
    pub fn repair(&self, findings: &[Finding]) -> Result<Vec<Finding>> {
        let mut g = self.lock_rw()?;
        let mut done = Vec::new();
        for f in findings {
            if g.repair(f)? {
                done.push(f.clone());
            }
        }
        g.checkpoint()?;
        Ok(done)
    }
}

impl Inner {
    /// All findings on the current state (empty when consistent). On a read-write mount a
    /// checkpoint is written first, so every block is at its final address.
    pub(crate) fn check(&mut self) -> Result<Vec<Finding>> {
        if self.st.writable() {
            self.checkpoint()?;
        }
        let sb = self.st.sb().clone();
        let mut c = Claims {
            live: vec![0u64; sb.nsegs as usize],
            owner: HashMap::new(),
            expect: BTreeMap::new(),
            inode_blocks: HashSet::new(),
            findings: Vec::new(),
        };
        for (i, &a) in self.cp.imap_addrs().to_vec().iter().enumerate() {
            if !a.is_none() {
                let o = Owner::ImapBlock { index: i as u64 };
                c.claim(
                    &sb,
                    a,
                    BLOCK_BYTES,
                    o,
                    SummaryEntry::table(BlockKind::Imap, i as u64),
                );
            }
        }
        let inos: Vec<(Ino, BlockAddr, bool)> = self
            .imap
            .iter_allocated()
            .map(|(ino, e)| (ino, e.addr, e.flags & IMAP_ORPHAN != 0))
            .collect();
        let mut seen: HashMap<Ino, Seen> = HashMap::with_capacity(inos.len());
        for (ino, addr, orphan) in inos {
            if orphan {
                c.findings.push(Finding::Orphan { ino });
            }
            if let Err(e) = self.load(ino) {
                c.findings.push(Finding::InodeUnreadable {
                    ino,
                    error: e.to_string(),
                });
                continue;
            }
            c.claim(
                &sb,
                addr,
                INODE_SIZE as u64,
                Owner::Inode { ino },
                SummaryEntry::inode_block(),
            );
            let Inner { inodes, st, .. } = self;
            let Some(i) = inodes.get_mut(ino) else {
                continue;
            };
            if i.d.flags & !FL_KNOWN != 0 {
                c.findings.push(Finding::UnknownFlags {
                    ino,
                    flags: i.d.flags & !FL_KNOWN,
                });
            }
            seen.insert(
                ino,
                Seen {
                    kind: i.kind(),
                    nlink: i.d.nlink,
                    parent: i.d.parent,
                    orphan,
                },
            );
            if !i.d.xattr.is_none() {
                c.claim(
                    &sb,
                    i.d.xattr,
                    BLOCK_BYTES,
                    Owner::Xattr { ino },
                    SummaryEntry::xattr(ino, i.d.version),
                );
            }
            let mut blocks = Vec::new();
            let version = i.d.version;
            let walked = i
                .bmap
                .for_each_block(st, &mut |a, r| blocks.push((a, r.v1_entry(ino, version))));
            i.bmap.shrink();
            if let Err(e) = walked {
                c.findings.push(Finding::InodeUnreadable {
                    ino,
                    error: e.to_string(),
                });
            }
            for (a, e) in blocks {
                c.claim(&sb, a, BLOCK_BYTES, Owner::of(&e), e);
            }
        }
        for (seg, &want) in c.live.iter().enumerate() {
            let seg = SegNo(seg as u64);
            let have = self.st.usage().get(seg).map_or(0, |s| s.live_bytes);
            if have != want {
                c.findings.push(Finding::UsageMismatch {
                    segment: seg,
                    stored: have,
                    recomputed: want,
                });
            }
        }
        if self.st.usage().underflows > 0 {
            c.findings.push(Finding::UsageUnderflow {
                count: self.st.usage().underflows,
            });
        }
        let expect = std::mem::take(&mut c.expect);
        for (seg, blocks) in expect {
            let scan = self.scan_segment(Source::Device, seg);
            // A device error is not damage: the blocks past it were never judged.
            if let Some((off, EndOfLog::Unreadable(why))) = &scan.end {
                return Err(FsError::Io(std::io::Error::other(format!(
                    "reading segment {seg} at block {off}: {why}"
                ))));
            }
            let start = sb.seg_addr(seg);
            for (addr, owner, want) in blocks {
                match scan.entry_at(start, addr) {
                    None => c.findings.push(Finding::BlockUnsummarized { owner, addr }),
                    Some(got) if !same_entry(got, &want) => {
                        c.findings.push(Finding::SummaryMismatch {
                            owner,
                            addr,
                            summary: format!("{got:?}"),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        let mut findings = c.findings;
        self.check_tree(&seen, &mut findings)?;
        Ok(findings)
    }

    /// Walk the directory tree from the root: entries, parents, reachability, link counts.
    fn check_tree(&mut self, seen: &HashMap<Ino, Seen>, out: &mut Vec<Finding>) -> Result<()> {
        let mut counted: HashMap<Ino, u32> = HashMap::with_capacity(seen.len());
        // The root's `.` and `..` both name it.
        counted.insert(ROOT_INO, 2);
        let mut dirs: HashSet<Ino> = HashSet::from([ROOT_INO]);
        let mut queue = VecDeque::from([ROOT_INO]);
        while let Some(dir) = queue.pop_front() {
            let entries: Vec<(Vec<u8>, Ino, FileKind)> = match self.dir(dir) {
                Ok(d) => d
                    .entries_from(0)
                    .map(|(_, e)| (e.name.clone(), e.ino, e.kind))
                    .collect(),
                Err(e) => {
                    out.push(Finding::DirectoryUnreadable {
                        dir,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            for (name, ino, kind) in entries {
                let name_s = String::from_utf8_lossy(&name).into_owned();
                if !self.imap.get(ino).is_some_and(|e| e.allocated()) {
                    out.push(Finding::DanglingEntry {
                        dir,
                        name: name_s,
                        ino,
                    });
                    continue;
                }
                let Some(s) = seen.get(&ino) else {
                    continue; // unreadable: reported already
                };
                if s.kind != kind {
                    out.push(Finding::EntryKindMismatch {
                        dir,
                        name: name_s.clone(),
                        ino,
                        entry: kind,
                        inode: s.kind,
                    });
                }
                if s.kind != FileKind::Directory {
                    *counted.entry(ino).or_default() += 1;
                    continue;
                }
                if !dirs.insert(ino) {
                    out.push(Finding::DirectoryLinkedTwice {
                        dir,
                        name: name_s,
                        ino,
                    });
                    continue;
                }
                if s.parent != dir {
                    out.push(Finding::WrongParent {
                        dir: ino,
                        recorded: s.parent,
                        actual: dir,
                    });
                }
                // Its name here and its own `.`; its `..` counts for the parent.
                *counted.entry(ino).or_default() += 2;
                *counted.entry(dir).or_default() += 1;
                queue.push_back(ino);
            }
            if let Some(i) = self.inodes.get_mut(dir) {
                // Keep memory bounded on big trees: the entries are read again on demand.
                if !i.dirty {
                    i.dir = None;
                }
            }
        }
        let mut inos: Vec<&Ino> = seen.keys().collect();
        inos.sort_unstable();
        for &ino in inos {
            let s = &seen[&ino];
            match counted.get(&ino) {
                None if s.orphan && s.nlink == 0 => {}
                None => out.push(Finding::Unreachable {
                    ino,
                    kind: s.kind,
                    nlink: s.nlink,
                }),
                Some(&n) if n != s.nlink => out.push(Finding::LinkCount {
                    ino,
                    stored: s.nlink,
                    counted: n,
                }),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Apply the repair for one finding to the in-memory state (the caller checkpoints).
    /// Returns whether anything was changed.
    pub(crate) fn repair(&mut self, f: &Finding) -> Result<bool> {
        match f {
            Finding::LinkCount { ino, counted, .. } => {
                self.inode(*ino)?.d.nlink = *counted;
                self.touch(*ino);
            }
            Finding::WrongParent { dir, actual, .. } => {
                self.inode(*dir)?.d.parent = *actual;
                self.touch(*dir);
            }
            Finding::UnknownFlags { ino, .. } => {
                self.inode(*ino)?.d.flags &= FL_KNOWN;
                self.touch(*ino);
            }
            Finding::DanglingEntry { dir, name, ino }
            | Finding::DirectoryLinkedTwice { dir, name, ino } => {
                let Some(raw) = self.entry_named(*dir, name, *ino)? else {
                    return Ok(false);
                };
                self.dir(*dir)?.remove(&raw);
                self.touch(*dir);
            }
            Finding::EntryKindMismatch {
                dir,
                name,
                ino,
                inode,
                ..
            } => {
                let Some(raw) = self.entry_named(*dir, name, *ino)? else {
                    return Ok(false);
                };
                self.dir(*dir)?.replace(&raw, *ino, *inode);
                self.touch(*dir);
            }
            Finding::Unreachable { ino, kind, .. } => {
                let lf = self.lost_and_found()?;
                let name = format!("#{ino}");
                if self.dir(lf)?.get(name.as_bytes()).is_some() {
                    return Ok(false);
                }
                self.dir(lf)?.insert(crate::format::dir::DirEntry {
                    ino: *ino,
                    kind: *kind,
                    name: name.into_bytes(),
                });
                self.touch(lf);
                if *kind == FileKind::Directory {
                    self.inode(*ino)?.d.parent = lf;
                    self.touch(*ino);
                }
                // Link counts are put right by the next pass.
            }
            Finding::UsageMismatch {
                segment,
                recomputed,
                ..
            } => self.st.usage_mut().set_live(*segment, *recomputed),
            Finding::UsageUnderflow { .. } => self.st.usage_mut().underflows = 0,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The raw name of the entry of `dir` a finding names: findings show names lossily, so
    /// the entry is matched by inode as well.
    fn entry_named(&mut self, dir: Ino, name: &str, ino: Ino) -> Result<Option<Vec<u8>>> {
        Ok(self
            .dir(dir)?
            .entries_from(0)
            .find(|(_, e)| e.ino == ino && String::from_utf8_lossy(&e.name) == name)
            .map(|(_, e)| e.name.clone()))
    }

    /// `/lost+found`, made if missing.
    fn lost_and_found(&mut self) -> Result<Ino> {
        const NAME: &[u8] = b"lost+found";
        if let Some(e) = self.dir(ROOT_INO)?.get(NAME) {
            if e.kind == FileKind::Directory {
                return Ok(e.ino);
            }
            return Err(Damage::LostFoundNotDirectory.into());
        }
        Ok(self
            .mkdir(ROOT_INO, NAME, 0o700, crate::fs::Creds::default())?
            .ino)
    }
}

/// A summary entry matches what the block was written as (inode blocks carry no owner).
fn same_entry(got: &SummaryEntry, want: &SummaryEntry) -> bool {
    if want.kind == BlockKind::InodeBlock {
        return got.kind == BlockKind::InodeBlock;
    }
    got == want
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Finding;
    use crate::device::{Device, MemDevice};
    use crate::format::Ino;
    use crate::fs::{Creds, Fs, MountOptions};
    use crate::{mkfs, MkfsOptions};
    use std::sync::Arc;

    #[test]
    fn check_finds_a_skewed_usage_count() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
        mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev, MountOptions::default()).unwrap();
        let a = fs.create(Ino(1), b"f", 0o644, Creds::default()).unwrap();
        fs.write(a.ino, 0, &[1u8; 10000]).unwrap();
        assert_eq!(fs.check().unwrap(), Vec::<Finding>::new());
        let seg = {
            let mut g = fs.lock();
            let seg = g.st.log().unwrap().current_segment();
            g.st.usage_mut().add_live(seg, 4096);
            seg
        };
        let findings = fs.check().unwrap();
        assert!(
            matches!(findings.as_slice(), [Finding::UsageMismatch { segment, stored, recomputed }]
                if *segment == seg && *stored == *recomputed + 4096),
            "{findings:?}"
        );
    }

    #[test]
    fn check_finds_and_clears_unknown_inode_flags() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
        mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev, MountOptions::default()).unwrap();
        let a = fs.create(Ino(1), b"f", 0o644, Creds::default()).unwrap();
        fs.set_flags(a.ino, crate::format::inode::FL_APPEND)
            .unwrap();
        fs.lock().inode(a.ino).unwrap().d.flags |= 0x4000_0000;
        let findings = fs.check().unwrap();
        assert!(
            matches!(findings.as_slice(), [f @ Finding::UnknownFlags { ino, flags: 0x4000_0000 }]
                if *ino == a.ino && f.preen_safe()),
            "{findings:?}"
        );
        assert!(fs.lock().repair(&findings[0]).unwrap());
        assert_eq!(fs.flags(a.ino).unwrap(), crate::format::inode::FL_APPEND);
        assert_eq!(fs.check().unwrap(), Vec::<Finding>::new());
    }
}
