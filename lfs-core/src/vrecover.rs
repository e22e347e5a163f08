//! Roll-forward of format version 2 (docs/FORMAT-V2.md §9): after opening the store a
//! checkpoint describes, read every stream from its head (`vscan::read_stream`), decide
//! which flush groups apply (`replay::plan`: whole groups, contiguous from the checkpoint's
//! `next_seq`), and apply them in order to the store's maps:
//!
//! - each payload entry with a virtual block points its DAT entry at the block's place, with
//!   the checksum and the `start` its summary entry records (a block the cleaner moved keeps
//!   its lifetime); a second copy fills `addr2`; the previous places die in the segment table;
//! - the group's root ends and frees what it lists, raises `next_vblock`, and gives the inode
//!   table's and the checkpoint list's inodes as of the group;
//! - entries of the DAT and the sufile themselves (a checkpoint's steps 2–3 that did not
//!   complete) are not applied: the maps are rebuilt in memory from the groups instead;
//! - a stream entering a segment makes it that stream's head, filling one seals it.
//!
//! Writes nothing: the caller opens the log at the heads returned (with a new log id, so
//! units past them can never be taken for the new mount's) and checkpoints. Built and tested
//! on its own; not used by the engine yet (issue 20, step 3).

use crate::error::{FsError, Result};
use crate::format::v2::root::GroupRoot;
use crate::format::v2::summary::{Kind, ENTRY_DUP, FLAG_ROOT};
use crate::format::{Cno, SegNo, BLOCK_SIZE};
use crate::replay::{plan, Plan};
use crate::vscan::{read_stream, Expect, Verdict};
use crate::vstore::{Head, VStore};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Where roll-forward starts: what a checkpoint records of the log.
#[derive(Debug, Clone)]
pub struct LogStart {
    /// Per stream: segment, block offset, the stream's next unit number.
    pub heads: Vec<Head>,
    pub next_seq: u64,
    pub log_id: u64,
    pub fs_id: u32,
    /// The checkpoint's number (units after it are of era `cno + 1` or later).
    pub cno: Cno,
}

/// What roll-forward found and applied.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub plan: Plan,
    /// Units and payload blocks applied.
    pub units: u64,
    pub blocks: u64,
    /// Where each stream's log ended and why (as read, before the plan cut it).
    pub ends: Vec<(SegNo, u32, Verdict)>,
    /// Where each stream continues: after its last applied unit.
    pub heads: Vec<Head>,
    /// The inode table's and the checkpoint list's inodes after the last group applied
    /// (`None`: no group applied; the checkpoint's stand).
    pub ifile_inode: Option<Vec<u8>>,
    pub cpfile_inode: Option<Vec<u8>>,
}

/// Roll the log forward from `start` into `st` (opened from the same checkpoint).
pub fn roll_forward(st: &mut VStore, start: &LogStart) -> Result<Recovered> {
    let g = st.geometry();
    let dev = st.device().clone();
    for (i, h) in start.heads.iter().enumerate() {
        st.recover_head(i as u8, h.0)?;
    }
    // Read every stream. A stream may enter a segment only if the checkpoint recorded it
    // clean; the store answers from its (lazily read) table.
    let cell = RefCell::new(&mut *st);
    let clean = |s: SegNo| {
        cell.borrow_mut()
            .segment(s)
            .is_ok_and(|u| u.state == crate::format::v2::sufile::SEG_CLEAN)
    };
    let mut found = Vec::new();
    let mut units = BTreeMap::new();
    let mut ends = Vec::new();
    for (i, &(seg, off, stream_seq)) in start.heads.iter().enumerate() {
        let want = Expect {
            stream: i as u8,
            stream_seq,
            min_seq: start.next_seq,
            log_id: start.log_id,
            fs_id: start.fs_id,
            min_era: Cno(start.cno.get() + 1),
        };
        let r = read_stream(dev.as_ref(), &g, seg, off, want, &clean);
        if let Verdict::Unreadable(why) = &r.end.2 {
            // Not the end of the log: the device failed. Stopping here would drop every
            // later unit for good once the mount writes its checkpoint.
            return Err(FsError::Io(std::io::Error::other(format!(
                "reading stream {i} at segment {} block {}: {why}",
                r.end.0, r.end.1
            ))));
        }
        found.extend(r.found);
        for u in r.units {
            units.insert(u.summary.seq, u);
        }
        ends.push(r.end);
    }
    let st = cell.into_inner();
    let p = plan(start.next_seq, &found);
    let mut rec = Recovered {
        plan: p.clone(),
        units: 0,
        blocks: 0,
        ends,
        heads: start.heads.clone(),
        ifile_inode: None,
        cpfile_inode: None,
    };
    for &(first, last) in &p.groups {
        let mut conts = 0u32;
        for seq in first..=last {
            let u = units.get(&seq).ok_or_else(|| FsError::Bug {
                what: format!("unit {seq} planned but not read"),
                source: crate::format::FormatError::invalid("roll-forward", "plan"),
            })?;
            let s = &u.summary;
            let si = s.stream as usize;
            let Some(&(head_seg, ..)) = rec.heads.get(si) else {
                return Err(FsError::Bug {
                    what: format!("unit {seq} of stream {si}, which the checkpoint lacks"),
                    source: crate::format::FormatError::invalid("roll-forward", "stream"),
                });
            };
            if s.segment != head_seg {
                st.recover_moved_on(s.stream, head_seg, s.segment)?;
            }
            let base = g.seg_addr(s.segment) + u64::from(s.offset) + 1;
            for (k, e) in s.entries.iter().enumerate() {
                let addr = base + k as u64;
                match e.kind {
                    Kind::Dat | Kind::Sufile => {}
                    Kind::GroupRoot => {
                        // The unit's checksum held: the block decodes, or the log is damaged.
                        let b = &u.payload[k * BLOCK_SIZE..(k + 1) * BLOCK_SIZE];
                        let root =
                            GroupRoot::decode(b).map_err(FsError::corrupt("group root", addr))?;
                        for &(v, era) in &root.ended {
                            st.recover_end(v, era)?;
                        }
                        for &v in &root.freed {
                            st.recover_free(v)?;
                        }
                        st.recover_next_vblock(root.next_vblock);
                        let last = s.flags & FLAG_ROOT != 0 && k + 1 == s.entries.len();
                        if !last {
                            // A continuation root: more of the group's lists.
                            conts += 1;
                            continue;
                        }
                        if root.cont != conts {
                            return Err(FsError::Corrupt {
                                what: "group root",
                                addr,
                                source: crate::format::FormatError::invalid(
                                    "group root",
                                    format!(
                                        "counts {} continuation roots, the group holds {conts}",
                                        root.cont
                                    ),
                                ),
                            });
                        }
                        rec.ifile_inode = Some(root.ifile_inode);
                        rec.cpfile_inode = Some(root.cpfile_inode);
                    }
                    _ if e.flags & ENTRY_DUP != 0 => st.recover_second_copy(e.vblock, addr)?,
                    _ => st.recover_write(e.vblock, addr, e.crc, e.start)?,
                }
            }
            rec.heads[si] = (
                s.segment,
                s.offset + 1 + s.entries.len() as u32,
                s.stream_seq.wrapping_add(1),
            );
            rec.units += 1;
            rec.blocks += s.entries.len() as u64;
        }
    }
    Ok(rec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::{Device, MemDevice};
    use crate::format::v2::summary::Kind;
    use crate::format::{Ino, VBlock};
    use crate::replay::Stop;
    use crate::vlog::testutil::G;
    use crate::vstore::{Owner, Roots};
    use std::sync::Arc;

    fn block(x: u64) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[..8].copy_from_slice(&x.to_le_bytes());
        b
    }

    fn owner(kind: Kind, i: u64) -> Owner {
        Owner {
            kind,
            height: 0,
            ino: Ino(20),
            generation: 1,
            index: i,
        }
    }

    fn empty_roots() -> Roots {
        Roots::empty(&G)
    }

    /// A checkpoint as the engine will make one: the maps flushed, the heads moved past a
    /// full segment, everything durable.
    fn checkpoint(st: &mut VStore, cno: Cno) -> (Roots, LogStart) {
        let roots = st.flush_maps(&[1; 256], &[2; 256], cno).unwrap();
        let (heads, next_seq) = st.checkpoint_heads().unwrap();
        st.sync().unwrap();
        st.checkpointed(cno).unwrap();
        let start = LogStart {
            heads,
            next_seq,
            log_id: 5,
            fs_id: 6,
            cno,
        };
        (roots, start)
    }

    /// Groups of writes after a checkpoint, with overwrites, deletes and DUP blocks over two
    /// streams, rolled forward into a store opened from that checkpoint: every block reads
    /// back as the last group applied left it, deleted ones do not read, and the inodes of
    /// the last root come back. With a unit of the last group destroyed, that group alone
    /// is lost.
    #[test]
    fn the_log_after_a_checkpoint_is_replayed_into_the_maps() {
        for lose_last in [false, true] {
            let dev = Arc::new(MemDevice::new(
                (16 + G.nsegs * u64::from(G.seg_blocks) + 16) * BLOCK_SIZE as u64,
            ));
            let mut st = VStore::open(G, dev.clone(), &empty_roots(), 64);
            st.recover_head(0, SegNo(0)).unwrap();
            st.recover_head(1, SegNo(1)).unwrap();
            st.open_log(&[(SegNo(0), 0, 1), (SegNo(1), 0, 1)], 100, 5, 6)
                .unwrap();
            // Before the checkpoint: 40 blocks.
            st.begin_group().unwrap();
            let mut vs: Vec<VBlock> = (0..40)
                .map(|i| {
                    st.write_virtual(1, owner(Kind::Data, i), VBlock::NONE, &block(i), false)
                        .unwrap()
                })
                .collect();
            st.end_group(&[0; 256], &[0; 256]).unwrap();
            let (roots, start) = checkpoint(&mut st, Cno(2));

            // After it, four groups. `history[k]`: what each block holds after group k.
            let mut want: Vec<Option<u64>> = (0..40).map(Some).collect();
            let mut history = Vec::new();
            let mut last_group_head = None;
            for g in 0..4u64 {
                if g == 3 {
                    last_group_head = Some(st.heads().unwrap().0[1]);
                }
                st.begin_group().unwrap();
                for i in (g as usize..36).step_by(4) {
                    let x = 1000 * (g + 1) + i as u64;
                    let v = st
                        .write_virtual(1, owner(Kind::Data, i as u64), vs[i], &block(x), false)
                        .unwrap();
                    assert_eq!(v, vs[i], "no kept checkpoint: numbers stay");
                    want[i] = Some(x);
                }
                st.free_virtual(vs[39 - g as usize]).unwrap();
                want[39 - g as usize] = None;
                let v = st
                    .write_virtual(
                        0,
                        owner(Kind::Ifile, g),
                        VBlock::NONE,
                        &block(7000 + g),
                        true,
                    )
                    .unwrap();
                vs.push(v);
                want.push(Some(7000 + g));
                st.end_group(&[10 + g as u8; 256], &[20 + g as u8; 256])
                    .unwrap();
                history.push(want.clone());
            }
            st.sync().unwrap();
            st.close_log();
            if lose_last {
                // The last group's first unit on stream 1: its summary destroyed.
                let (seg, off, _) = last_group_head.unwrap();
                let at = G.seg_addr(seg) + u64::from(off);
                dev.write_at(&[0u8; BLOCK_SIZE], at.byte_offset()).unwrap();
            }

            let mut again = VStore::open(G, dev.clone(), &roots, 64);
            let rec = roll_forward(&mut again, &start).unwrap();
            let applied = if lose_last { 3 } else { 4 };
            assert_eq!(rec.plan.groups.len(), applied, "{:?}", rec.plan);
            if lose_last {
                assert!(
                    matches!(rec.plan.stop, Stop::Missing { .. }),
                    "{:?}",
                    rec.plan
                );
            } else {
                assert_eq!(rec.plan.stop, Stop::End);
            }
            let last = applied as u8 - 1;
            assert_eq!(rec.ifile_inode, Some(vec![10 + last; 256]));
            assert_eq!(rec.cpfile_inode, Some(vec![20 + last; 256]));
            let expect = &history[applied - 1];
            for (i, &v) in vs.iter().enumerate() {
                let r = again.read_virtual(v);
                match expect.get(i).copied().flatten() {
                    Some(x) => assert_eq!(*r.unwrap(), block(x), "block {i} lose={lose_last}"),
                    None => assert!(r.is_err(), "block {i} must not read (lose={lose_last})"),
                }
            }
            let problems = crate::vcheck::check_maps(&mut again, true)
                .unwrap()
                .problems;
            assert!(problems.is_empty(), "lose={lose_last}: {problems:?}");
            // Each DUP block applied has both its copies.
            for &v in &vs[40..40 + applied] {
                assert!(!again.dat_entry(v).unwrap().addr2.is_none());
            }
            // Stream 1 continues past its last applied unit.
            assert_ne!(rec.heads[1], start.heads[1]);
        }
    }

    /// A group freeing more virtual blocks than one root lists: continuation roots carry
    /// the rest, and roll-forward frees them all.
    #[test]
    fn a_large_delete_is_replayed_whole_through_continuation_roots() {
        let dev = crate::vstore::testutil::device();
        let mut st = crate::vstore::testutil::fresh(&dev);
        st.begin_group().unwrap();
        let vs: Vec<VBlock> = (0..1000)
            .map(|i| {
                st.write_virtual(0, owner(Kind::Data, i), VBlock::NONE, &block(i), false)
                    .unwrap()
            })
            .collect();
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        let (roots, start) = checkpoint(&mut st, Cno(2));
        st.begin_group().unwrap();
        for &v in &vs {
            st.free_virtual(v).unwrap();
        }
        st.end_group(&[9; 256], &[0; 256]).unwrap();
        for &v in &vs {
            assert!(
                st.dat_entry(v).unwrap().is_free(),
                "{v:?} still allocated in memory"
            );
        }
        st.sync().unwrap();
        st.close_log();
        let mut again = VStore::open(G, dev, &roots, 64);
        let rec = roll_forward(&mut again, &start).unwrap();
        assert_eq!(rec.plan.groups.len(), 1);
        assert_eq!(rec.ifile_inode, Some(vec![9; 256]));
        for &v in &vs {
            assert!(
                again.dat_entry(v).unwrap().is_free(),
                "{v:?} still allocated"
            );
        }
        let problems = crate::vcheck::check_maps(&mut again, false)
            .unwrap()
            .problems;
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn nothing_after_the_checkpoint_changes_nothing() {
        let dev = crate::vstore::testutil::device();
        let mut st = crate::vstore::testutil::fresh(&dev);
        st.begin_group().unwrap();
        let v = st
            .write_virtual(0, owner(Kind::Data, 0), VBlock::NONE, &block(9), false)
            .unwrap();
        st.end_group(&[0; 256], &[0; 256]).unwrap();
        let (roots, start) = checkpoint(&mut st, Cno(2));
        st.close_log();
        let mut again = VStore::open(G, dev, &roots, 64);
        let rec = roll_forward(&mut again, &start).unwrap();
        assert_eq!(rec.plan.groups, vec![]);
        assert_eq!(rec.plan.stop, Stop::End);
        assert_eq!(rec.heads, start.heads);
        assert_eq!(rec.ifile_inode, None);
        assert_eq!(*again.read_virtual(v).unwrap(), block(9));
    }
}

/// Every image a power cut could leave while flush groups, fsyncs and a checkpoint go out
/// over two streams, recovered as a mount will: the newest valid checkpoint region, the
/// store opened from its roots, the log rolled forward. The blocks then read as a prefix of
/// the groups left them — every group an fsync covered, never part of one.
#[cfg(all(test, feature = "testing"))]
#[allow(clippy::unwrap_used)]
mod crash {
    use super::*;
    use crate::device::{CrashDevice, CrashStateOptions, Device, MemDevice};
    use crate::format::v2::checkpoint::Checkpoint;
    use crate::format::v2::sufile::SEG_IN_USE;
    use crate::format::{BlockAddr, Ino, VBlock};
    use crate::vscan::Geometry;
    use crate::vstore::{Owner, Roots};
    use std::sync::Arc;

    const SMALL: Geometry = Geometry {
        seg_base: BlockAddr(16),
        seg_blocks: 16,
        nsegs: 16,
    };
    const REGION_A: BlockAddr = BlockAddr(1);
    const REGION_B: BlockAddr = BlockAddr(16 + 16 * 16);
    const LEN: u64 = (16 + 16 * 16 + 16) * BLOCK_SIZE as u64;

    fn block(x: u64) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[..8].copy_from_slice(&x.to_le_bytes());
        b
    }

    fn write_region(dev: &dyn Device, generation: u64, roots: &Roots, start: &LogStart) {
        let c = Checkpoint {
            flags: 0,
            generation,
            cno: roots.cno,
            timestamp_ns: 0,
            next_seq: start.next_seq,
            log_id: start.log_id,
            next_vblock: roots.next_vblock,
            nclean: roots.nclean,
            ninodes: 0,
            nblocks_live: 0,
            nblocks_held: 0,
            heads: start.heads.iter().map(|&h| h.into()).collect(),
            dat_root: roots.dat_root,
            dat_height: roots.dat_height,
            sufile_root: roots.sufile_root,
            sufile_height: roots.sufile_height,
            cpfile_inode: vec![0; 256],
            ifile_inode: vec![0; 256],
        };
        let region = if generation % 2 == 1 {
            REGION_A
        } else {
            REGION_B
        };
        dev.write_at(&c.encode(), region.byte_offset()).unwrap();
        dev.flush().unwrap();
    }

    /// The newest valid region, as mount chooses.
    fn read_regions(dev: &dyn Device) -> (Roots, LogStart) {
        let mut best: Option<Checkpoint> = None;
        for r in [REGION_A, REGION_B] {
            let mut b = vec![0u8; BLOCK_SIZE];
            dev.read_at(&mut b, r.byte_offset()).unwrap();
            let Ok(c) = Checkpoint::decode(&b, 2, SMALL.nsegs, SMALL.seg_blocks, SMALL.seg_base)
            else {
                continue;
            };
            if best.as_ref().is_none_or(|x| c.generation > x.generation) {
                best = Some(c);
            }
        }
        let c = best.expect("a valid checkpoint region");
        let roots = Roots {
            dat_root: c.dat_root,
            dat_height: c.dat_height,
            next_vblock: c.next_vblock,
            sufile_root: c.sufile_root,
            sufile_height: c.sufile_height,
            nclean: c.nclean,
            cno: c.cno,
        };
        let start = LogStart {
            heads: c
                .heads
                .iter()
                .map(|h| (h.segment, h.offset, h.stream_seq))
                .collect(),
            next_seq: c.next_seq,
            log_id: c.log_id,
            fs_id: 6,
            cno: c.cno,
        };
        (roots, start)
    }

    #[test]
    fn every_crash_state_recovers_a_prefix_holding_every_fsynced_group() {
        let dev = Arc::new(CrashDevice::new(LEN));
        let d: Arc<dyn Device> = dev.clone();
        let empty = Roots::empty(&SMALL);
        let heads = vec![(SegNo(0), 0, 1), (SegNo(1), 0, 1)];
        let start0 = LogStart {
            heads: heads.clone(),
            next_seq: 100,
            log_id: 5,
            fs_id: 6,
            cno: Cno(1),
        };
        write_region(d.as_ref(), 1, &empty, &start0);
        let mut st = VStore::open(SMALL, d.clone(), &empty, 8);
        st.recover_head(0, SegNo(0)).unwrap();
        st.recover_head(1, SegNo(1)).unwrap();
        st.open_log(&heads, 100, 5, 6).unwrap();

        let owner = |i: u64| Owner {
            kind: Kind::Data,
            height: 0,
            ino: Ino(20),
            generation: 1,
            index: i,
        };
        // Twelve blocks rewritten group after group (so segments empty and are reused after
        // the checkpoint), one new DUP block per group.
        let mut vs = vec![VBlock::NONE; 12];
        let mut want: Vec<Option<u64>> = vec![None; 12];
        let (mut ranges, mut history) = (Vec::new(), vec![want.clone()]);
        let mut durable: Vec<(usize, usize)> = vec![(dev.op_count(), 0)];
        let mut moved = 0;
        for g in 0..5u64 {
            st.begin_group().unwrap();
            for i in 0..12u64 {
                if (i + g) % 3 == 0 {
                    continue;
                }
                let x = 100 * g + i;
                vs[i as usize] = st
                    .write_virtual(1, owner(i), vs[i as usize], &block(x), false)
                    .unwrap();
                want[i as usize] = Some(x);
            }
            let v = st
                .write_virtual(
                    0,
                    Owner {
                        kind: Kind::Ifile,
                        ..owner(g)
                    },
                    VBlock::NONE,
                    &block(900 + g),
                    true,
                )
                .unwrap();
            vs.push(v);
            want.push(Some(900 + g));
            ranges.push(st.end_group(&[0; 256], &[0; 256]).unwrap());
            history.push(want.clone());
            if g % 2 == 0 {
                st.sync().unwrap();
                durable.push((dev.op_count(), ranges.len()));
            }
            if g == 2 {
                // A checkpoint: the maps, the heads, everything durable, then the region.
                let roots = st.flush_maps(&[0; 256], &[0; 256], Cno(2)).unwrap();
                let (heads, next_seq) = st.checkpoint_heads().unwrap();
                st.sync().unwrap();
                let start = LogStart {
                    heads,
                    next_seq,
                    log_id: 5,
                    fs_id: 6,
                    cno: Cno(2),
                };
                write_region(d.as_ref(), 2, &roots, &start);
                st.checkpointed(Cno(2)).unwrap();
                // A cleaning pass: the live blocks of every full segment moved, in a group
                // of their own (numbers kept, so what the blocks read does not change).
                let heads: Vec<SegNo> = st.heads().unwrap().0.iter().map(|h| h.0).collect();
                let victims: Vec<SegNo> = (0..SMALL.nsegs)
                    .map(SegNo)
                    .filter(|s| !heads.contains(s))
                    .filter(|&s| st.segment(s).unwrap().state == SEG_IN_USE)
                    .collect();
                st.begin_group().unwrap();
                for v in victims {
                    moved += st.clean_segment(v, 0).unwrap().moved;
                }
                st.end_group(&[0; 256], &[0; 256]).unwrap();
            }
        }
        st.sync().unwrap();
        st.close_log();
        assert!(moved > 0, "the cleaning pass moved nothing");

        let (mut states, mut short) = (0, 0);
        // From the moment mkfs's region is durable.
        for at in durable[0].0..=dev.op_count() {
            let owed = durable
                .iter()
                .filter(|(op, _)| *op <= at)
                .map(|&(_, n)| n)
                .max()
                .unwrap_or(0);
            for cs in dev.crash_states(at, &CrashStateOptions::default(), 11) {
                let img: Arc<dyn Device> = Arc::new(MemDevice::from_image(cs.image));
                let (roots, start) = read_regions(img.as_ref());
                let mut again = VStore::open(SMALL, img, &roots, 8);
                let rec = roll_forward(&mut again, &start).unwrap();
                let n = ranges.iter().filter(|r| r.1 < rec.plan.next_seq).count();
                // The counts roll-forward rebuilt are exactly what the maps place.
                let problems = crate::vcheck::check_maps(&mut again, false)
                    .unwrap()
                    .problems;
                assert!(problems.is_empty(), "{}: {problems:?}", cs.description);
                assert!(
                    n >= owed,
                    "{}: {n} groups recovered, {owed} were fsynced",
                    cs.description
                );
                for (i, &v) in vs.iter().enumerate() {
                    let r = again.read_virtual(v);
                    match history[n].get(i).copied().flatten() {
                        Some(x) => assert_eq!(
                            r.as_deref().ok(),
                            Some(&block(x)),
                            "{}: block {i} after {n} groups",
                            cs.description
                        ),
                        None if i < 12 => {}
                        None => {
                            assert!(r.is_err(), "{}: block {i} not yet written", cs.description)
                        }
                    }
                }
                states += 1;
                short += usize::from(n < ranges.len());
            }
        }
        assert!(
            states > 50 && short > 0,
            "{states} states, {short} lost groups"
        );
    }
}
