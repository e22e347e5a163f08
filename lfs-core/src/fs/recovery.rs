//! Roll-forward: after loading a checkpoint, replay the log written after it.
//!
//! From the checkpoint's head, units are read one after another (sequence number +1, the
//! position given by the rule of docs/FORMAT.md) and judged in a fixed order — magic,
//! sequence and log id, bounds, summary checksum, data checksum; the first unit that fails
//! ends the log. Units are held until the last unit of their flush group (the one without
//! CONT) has been read, then the group is applied whole:
//!
//! - every inode slot updates the inode map (a tombstone frees the inode it names);
//! - segment usage moves by the difference between the inode's old and new block trees
//!   (blocks only in the old tree die, blocks only in the new one become live), so the cost
//!   follows what changed, never the size of the filesystem;
//! - blocks no recovered inode points at (data written back ahead of its inode, a checkpoint's
//!   own table blocks) are not counted: they are dead, as the cleaner will find.
//!
//! The units of a group the crash cut short are ignored, so a directory operation — whose
//! entry, inode and link counts are always flushed in one group — comes back whole or not at
//! all. Inodes recovered with no links left (open-unlinked files) are marked orphans, which
//! mount frees.

use super::inner::Inner;
use super::scan::{EndOfLog, Source, Want};
use crate::bmap::BlockMap;
use crate::error::Damage;
use crate::error::{FsError, Result};
use crate::format::checkpoint::Checkpoint;
use crate::format::inode::{decode_inode_block, DiskInode, INODE_SIZE};
use crate::format::summary::{BlockKind, Summary, FLAG_CONT};
use crate::format::table::{ImapEntry, IMAP_ALLOCATED, IMAP_ORPHAN};
use crate::format::{BlockAddr, SegNo, BLOCK_BYTES, BLOCK_SIZE};
use crate::usage::SegState;
use std::collections::HashSet;

/// What roll-forward found and did.
#[derive(Debug, Clone, Default)]
pub struct RollForward {
    /// Units applied (whole flush groups only).
    pub units: u64,
    pub groups: u64,
    /// Payload blocks in the applied units.
    pub blocks: u64,
    /// Inode slots applied (tombstones included) and inodes freed by tombstones.
    pub inodes: u64,
    pub freed: u64,
    /// Valid units of a group the crash cut short: read, then ignored.
    pub discarded: u64,
    /// The verdict that ended the log (`None` only if it was never read).
    pub end: Option<EndOfLog>,
    /// Where the log continues: segment, block offset, sequence number.
    pub head: (SegNo, u32, u64),
}

/// One unit read and judged valid.
struct Unit {
    seg: SegNo,
    off: u32,
    summary: Summary,
    /// Inode blocks of the payload: (address, bytes).
    inode_blocks: Vec<(BlockAddr, Vec<u8>)>,
}

impl Inner {
    /// Replay the log after checkpoint `cp` into the in-memory inode map and usage table.
    /// Writes nothing. The usage table must already hold the checkpoint's, with the head
    /// segment Active.
    pub(crate) fn roll_forward(&mut self, cp: &Checkpoint) -> Result<RollForward> {
        let sb = self.st.sb().clone();
        let mut rf = RollForward {
            head: (cp.head_segment, cp.head_offset, cp.next_seq),
            ..Default::default()
        };
        let (mut seg, mut off, mut seq) = rf.head;
        let mut visited: HashSet<SegNo> = HashSet::from([seg]);
        let mut pending: Vec<Unit> = Vec::new();
        // The segment the applied log is in (Active in the usage table).
        let mut cur = cp.head_segment;
        loop {
            let unit = match self.read_unit(seg, off, seq, cp.log_id) {
                Ok(u) => u,
                // Not the end of the log: the device failed. Stopping here would drop every
                // later unit for good once the mount writes its checkpoint.
                Err(EndOfLog::Unreadable(why)) => {
                    return Err(FsError::Io(std::io::Error::other(format!(
                        "reading the log at segment {seg} block {off}: {why}"
                    ))))
                }
                Err(end) => {
                    rf.end = Some(end);
                    break;
                }
            };
            let end = off + unit.summary.unit_blocks();
            let next = unit.summary.next_segment;
            let last = unit.summary.flags & FLAG_CONT == 0;
            pending.push(unit);
            seq += 1;
            if last {
                for u in pending.drain(..) {
                    self.apply_unit(&mut cur, u, &mut rf)?;
                }
                rf.groups += 1;
                rf.head = (seg, end, seq);
            }
            if end + 2 <= sb.seg_blocks {
                off = end;
                continue;
            }
            // The log moves on: only into a segment the checkpoint recorded clean, once.
            let clean = self.st.usage().get(next).map(|s| s.state) == Some(SegState::Clean);
            if !clean || !visited.insert(next) {
                rf.end = Some(EndOfLog::Bounds(format!(
                    "segment {seg} continues in segment {next}, which is not a clean segment \
                     the log has not yet entered"
                )));
                break;
            }
            (seg, off) = (next, 0);
        }
        rf.discarded = pending.len() as u64;
        Ok(rf)
    }

    /// Read the unit expected at `seg:off` and judge it; `Err` is the end of the log.
    fn read_unit(
        &mut self,
        seg: SegNo,
        off: u32,
        seq: u64,
        log_id: u64,
    ) -> std::result::Result<Unit, EndOfLog> {
        let base = self.st.sb().seg_addr(seg) + off as u64;
        let u = self.judge_unit(Source::Device, seg, off, Want::Exactly { seq, log_id })?;
        let inode_blocks = u
            .summary
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == BlockKind::InodeBlock)
            .map(|(i, _)| {
                (
                    base + 1 + i as u64,
                    u.payload[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE].to_vec(),
                )
            })
            .collect();
        Ok(Unit {
            seg,
            off,
            summary: u.summary,
            inode_blocks,
        })
    }

    fn apply_unit(&mut self, cur: &mut SegNo, u: Unit, rf: &mut RollForward) -> Result<()> {
        if u.seg != *cur {
            self.st.usage_mut().seal(*cur);
            self.st.usage_mut().activate(u.seg, u.summary.timestamp_ns);
            *cur = u.seg;
        }
        self.st.usage_mut().written(u.seg, u.summary.timestamp_ns);
        for (addr, bytes) in &u.inode_blocks {
            // The unit's checksum held, so this block is exactly what we wrote; a decoding
            // failure now is damage, not a crash.
            let slots =
                decode_inode_block(bytes).map_err(FsError::corrupt("inode block", *addr))?;
            for (slot, d) in slots.into_iter().enumerate() {
                self.apply_inode(*addr, slot as u8, d, rf)?;
            }
        }
        rf.units += 1;
        rf.blocks += u.summary.entries.len() as u64;
        tracing::debug!(
            seg = %u.seg,
            off = u.off,
            seq = u.summary.seq,
            "rolled forward"
        );
        Ok(())
    }

    /// One inode slot found in the log at `addr`/`slot`.
    fn apply_inode(
        &mut self,
        addr: BlockAddr,
        slot: u8,
        d: DiskInode,
        rf: &mut RollForward,
    ) -> Result<()> {
        let ino = d.ino;
        let old = self
            .imap
            .get(ino)
            .copied()
            .ok_or_else(|| FsError::from(Damage::InodeBeyondMap { ino, addr }))?;
        rf.inodes += 1;
        let old_d = if old.allocated() && !old.addr.is_none() {
            Some(self.read_inode(ino, &old)?)
        } else {
            None
        };
        if d.is_tombstone() {
            if old.allocated() && old.version == d.version {
                if let Some(o) = &old_d {
                    for a in self.claims(o)? {
                        self.st.kill_bytes(a, BLOCK_BYTES);
                    }
                    self.st.kill_bytes(old.addr, INODE_SIZE as u64);
                }
                self.imap.free(ino);
                rf.freed += 1;
            }
            return Ok(());
        }
        let before = match &old_d {
            Some(o) => self.claims(o)?,
            None => HashSet::new(),
        };
        let after = self.claims(&d)?;
        for &a in before.difference(&after) {
            self.st.kill_bytes(a, BLOCK_BYTES);
        }
        for &a in after.difference(&before) {
            self.add_live(a, BLOCK_BYTES);
        }
        if old_d.is_some() {
            self.st.kill_bytes(old.addr, INODE_SIZE as u64);
        }
        self.add_live(addr, INODE_SIZE as u64);
        let orphan = if d.nlink == 0 { IMAP_ORPHAN } else { 0 };
        self.imap.set(
            ino,
            ImapEntry {
                addr,
                version: d.version,
                slot,
                flags: IMAP_ALLOCATED | orphan,
            },
        );
        Ok(())
    }

    fn add_live(&mut self, addr: BlockAddr, bytes: u64) {
        if let Some(seg) = self.st.sb().seg_of(addr) {
            self.st.usage_mut().add_live(seg, bytes);
        }
    }

    /// Every block an inode owns: its tree (data and indirect blocks) and its xattr block.
    fn claims(&mut self, d: &DiskInode) -> Result<HashSet<BlockAddr>> {
        let mut set = HashSet::new();
        if !d.xattr.is_none() {
            set.insert(d.xattr);
        }
        let mut map = BlockMap::new(d.ino, d.version, d.direct, d.indirect, 0);
        map.for_each_block(&mut self.st, &mut |a, _| {
            set.insert(a);
        })?;
        Ok(set)
    }
}
