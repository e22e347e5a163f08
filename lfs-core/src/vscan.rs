//! Reading one stream of a format version 2 log (docs/FORMAT-V2.md §7, §9): the judge of a
//! unit, with the per-stream checks that keep another stream's stale units out, and the walk
//! from a stream's head through the segments it moved on to. What it finds feeds
//! `replay::plan`, which decides which groups apply. Not used by the engine yet (issue 20,
//! step 3).

use crate::device::Device;
use crate::format::data_crc;
use crate::format::v2::root::GroupRoot;
use crate::format::v2::summary::{self, Kind, Summary, FLAG_ROOT};
use crate::format::{BlockAddr, Cno, SegNo, BLOCK_SIZE};
use crate::replay::Found;
use std::collections::HashSet;

/// Where the log's segments are.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub seg_base: BlockAddr,
    pub seg_blocks: u32,
    pub nsegs: u64,
}

impl Geometry {
    /// The first block of segment `seg`.
    pub fn seg_addr(&self, seg: SegNo) -> BlockAddr {
        self.seg_base + seg.get() * u64::from(self.seg_blocks)
    }

    /// The segment holding `addr`, if it is in one.
    pub fn seg_of(&self, addr: BlockAddr) -> Option<SegNo> {
        let rel = addr.get().checked_sub(self.seg_base.get())?;
        let seg = rel / u64::from(self.seg_blocks);
        (seg < self.nsegs).then_some(SegNo(seg))
    }
}

/// What the reader of one stream expects of its next unit.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub stream: u8,
    pub stream_seq: u32,
    /// The checkpoint's `next_seq`, or above the stream's previous unit.
    pub min_seq: u64,
    pub log_id: u64,
    pub fs_id: u32,
    /// The checkpoint's `cno + 1`.
    pub min_era: Cno,
}

/// Why a stream ends where it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NoSummary,
    /// Another stream's, another pass's, another mount's or another filesystem's unit.
    Stale {
        seq: u64,
        stream: u8,
    },
    Bounds(String),
    TornSummary(String),
    TornData,
    Unreadable(String),
}

/// A whole unit.
pub struct Unit {
    pub summary: Summary,
    pub payload: Vec<u8>,
}

/// Judge the unit at `seg:off`, in the order of the verdict: magic, identity (stream,
/// sequence numbers, era, log, filesystem), bounds, summary checksum, payload checksum.
pub fn judge(
    dev: &dyn Device,
    g: &Geometry,
    seg: SegNo,
    off: u32,
    want: &Expect,
) -> Result<Unit, Verdict> {
    let read =
        |o: u32, b: &mut [u8]| dev.read_at(b, (g.seg_addr(seg) + u64::from(o)).byte_offset());
    let ours = |p: &summary::Peek| {
        p.stream == want.stream
            && p.stream_seq == want.stream_seq
            && p.seq >= want.min_seq
            && p.era >= want.min_era
            && p.log_id == want.log_id
            && p.fs_id == want.fs_id
    };
    judge_with(&read, g, seg, off, &ours)
}

/// The verdict on the unit at `seg:off` whose blocks `read` gives by offset in the segment,
/// `ours` deciding its identity.
fn judge_with(
    read: &dyn Fn(u32, &mut [u8]) -> std::io::Result<()>,
    g: &Geometry,
    seg: SegNo,
    off: u32,
    ours: &dyn Fn(&summary::Peek) -> bool,
) -> Result<Unit, Verdict> {
    let mut b = vec![0u8; BLOCK_SIZE];
    read(off, &mut b).map_err(|e| Verdict::Unreadable(e.to_string()))?;
    let p = summary::peek(&b).ok_or(Verdict::NoSummary)?;
    if !ours(&p) {
        return Err(Verdict::Stale {
            seq: p.seq,
            stream: p.stream,
        });
    }
    let n = u64::from(p.nblocks);
    if p.segment != seg || p.offset != off {
        return Err(Verdict::Bounds(format!(
            "unit at {seg}:{off} says it is at {}:{}",
            p.segment, p.offset
        )));
    }
    if n == 0 || u64::from(off) + 1 + n > u64::from(g.seg_blocks) || p.next_segment.get() >= g.nsegs
    {
        return Err(Verdict::Bounds(format!(
            "unit at {seg}:{off}: {n} blocks, next segment {}",
            p.next_segment
        )));
    }
    let summary = Summary::decode(&b).map_err(|e| Verdict::TornSummary(e.to_string()))?;
    let mut payload = vec![0u8; n as usize * BLOCK_SIZE];
    read(off + 1, &mut payload).map_err(|e| Verdict::Unreadable(e.to_string()))?;
    if data_crc(payload.chunks(BLOCK_SIZE)) != summary.data_crc {
        return Err(Verdict::TornData);
    }
    Ok(Unit { summary, payload })
}

/// The whole units of segment `seg`, whose blocks are `buf`, front to back (the cleaner's,
/// fsck's and the inspector's walk): any stream and log of this filesystem (`fs_id`), each
/// unit's sequence number above the one before it (a segment is written front to back, so
/// an older unit further on is a leftover of its previous life). Returns the units by
/// offset, and where and why the walk stopped.
pub fn walk_segment(buf: &[u8], g: &Geometry, seg: SegNo, fs_id: u32) -> SegmentWalk {
    let read = |o: u32, b: &mut [u8]| {
        let from = o as usize * BLOCK_SIZE;
        let part = buf.get(from..from + b.len()).ok_or_else(|| {
            std::io::Error::other(format!("block {o} is beyond the segment read"))
        })?;
        b.copy_from_slice(part);
        Ok(())
    };
    let mut units = Vec::new();
    let mut off = 0u32;
    let mut last: Option<u64> = None;
    while off + 2 <= g.seg_blocks {
        let ours = |p: &summary::Peek| p.fs_id == fs_id && last.is_none_or(|l| p.seq > l);
        match judge_with(&read, g, seg, off, &ours) {
            Ok(u) => {
                last = Some(u.summary.seq);
                let next = off + 1 + u.summary.entries.len() as u32;
                units.push((off, u));
                off = next;
            }
            Err(v) => {
                return SegmentWalk {
                    units,
                    end: Some((off, v)),
                }
            }
        }
    }
    SegmentWalk { units, end: None }
}

/// The whole units of one segment, by block offset, and where and why the walk stopped
/// (`None`: at the segment's end).
pub struct SegmentWalk {
    pub units: Vec<(u32, Unit)>,
    pub end: Option<(u32, Verdict)>,
}

/// What a stream's walk found.
pub struct StreamRead {
    pub found: Vec<Found>,
    pub units: Vec<Unit>,
    /// Where and why it ended.
    pub end: (SegNo, u32, Verdict),
}

/// Walk stream `want.stream` from `seg:off`: units while the verdict is whole, moving to a
/// summary's `next_segment` at a segment's end — only into a segment `clean` says the
/// checkpoint recorded clean, and never twice.
pub fn read_stream(
    dev: &dyn Device,
    g: &Geometry,
    mut seg: SegNo,
    mut off: u32,
    mut want: Expect,
    clean: &dyn Fn(SegNo) -> bool,
) -> StreamRead {
    let mut found = Vec::new();
    let mut units = Vec::new();
    let mut visited = HashSet::from([seg]);
    let mut next_segment = None;
    loop {
        if off + 2 > g.seg_blocks {
            let Some(next) = next_segment.filter(|s| clean(*s) && visited.insert(*s)) else {
                let why = Verdict::Bounds(format!("the log cannot continue past segment {seg}"));
                return StreamRead {
                    found,
                    units,
                    end: (seg, off, why),
                };
            };
            (seg, off) = (next, 0);
        }
        match judge(dev, g, seg, off, &want) {
            Ok(u) => {
                let s = &u.summary;
                let group = (s.flags & FLAG_ROOT != 0)
                    .then(|| {
                        let last = s.entries.len() - 1;
                        let b = &u.payload[last * BLOCK_SIZE..(last + 1) * BLOCK_SIZE];
                        (s.entries[last].kind == Kind::GroupRoot)
                            .then(|| GroupRoot::decode(b).ok())
                            .flatten()
                            .map(|r| (r.seq_first, r.seq_last))
                    })
                    .flatten();
                found.push(Found {
                    stream: s.stream,
                    seq: s.seq,
                    flags: s.flags,
                    group,
                });
                next_segment = Some(s.next_segment);
                off += 1 + s.entries.len() as u32;
                want.stream_seq = want.stream_seq.wrapping_add(1);
                want.min_seq = s.seq + 1;
                units.push(u);
            }
            Err(v) => {
                return StreamRead {
                    found,
                    units,
                    end: (seg, off, v),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use crate::format::v2::summary::{Entry, FLAG_CONT};
    use crate::format::{Ino, VBlock};
    use crate::replay::{plan, Stop};

    const G: Geometry = Geometry {
        seg_base: BlockAddr(16),
        seg_blocks: 16,
        nsegs: 8,
    };

    struct Writer {
        dev: MemDevice,
    }

    impl Writer {
        /// A unit of `n` data blocks (plus a root if `root` is given) for `stream`.
        #[allow(clippy::too_many_arguments)]
        fn unit(
            &self,
            seg: u64,
            off: u32,
            stream: u8,
            stream_seq: u32,
            seq: u64,
            n: usize,
            root: Option<(u64, u64)>,
            next: u64,
        ) {
            let mut payload = Vec::new();
            let mut entries = Vec::new();
            for i in 0..n {
                let b = vec![(seq as u8).wrapping_add(i as u8); BLOCK_SIZE];
                entries.push(Entry {
                    kind: Kind::Data,
                    height: 0,
                    flags: 0,
                    crc: crate::format::v2::block_crc(&b),
                    generation: 1,
                    ino: Ino(16),
                    index: i as u64,
                    vblock: VBlock(100 + seq * 10 + i as u64),
                    start: Cno(4),
                });
                payload.extend_from_slice(&b);
            }
            if let Some((first, last)) = root {
                let r = GroupRoot {
                    seq_first: first,
                    seq_last: last,
                    era: Cno(4),
                    next_vblock: 1000,
                    cont: 0,
                    ifile_inode: vec![0; 256],
                    cpfile_inode: vec![0; 256],
                    ended: vec![],
                    freed: vec![],
                }
                .encode();
                entries.push(Entry {
                    kind: Kind::GroupRoot,
                    height: 0,
                    flags: 0,
                    crc: crate::format::v2::block_crc(&r),
                    generation: 0,
                    ino: Ino(0),
                    index: 0,
                    vblock: VBlock::NONE,
                    start: Cno(0),
                });
                payload.extend_from_slice(&r);
            }
            let s = Summary {
                flags: if root.is_some() { FLAG_ROOT } else { FLAG_CONT },
                seq,
                stream_seq,
                stream,
                log_id: 7,
                segment: SegNo(seg),
                offset: off,
                next_segment: SegNo(next),
                timestamp_ns: 1,
                era: Cno(4),
                fs_id: 9,
                data_crc: data_crc(payload.chunks(BLOCK_SIZE)),
                entries,
            };
            let at = (G.seg_base + seg * 16 + u64::from(off)).byte_offset();
            self.dev.write_at(&s.encode(), at).unwrap();
            self.dev.write_at(&payload, at + BLOCK_SIZE as u64).unwrap();
        }
    }

    fn want(stream: u8) -> Expect {
        Expect {
            stream,
            stream_seq: 1,
            min_seq: 10,
            log_id: 7,
            fs_id: 9,
            min_era: Cno(4),
        }
    }

    #[test]
    fn two_streams_read_and_planned() {
        let w = Writer {
            dev: MemDevice::new(40 * BLOCK_SIZE as u64 + 8 * 16 * BLOCK_SIZE as u64),
        };
        // Group 10..=11: data on stream 1 (segment 2), the root on stream 0 (segment 1).
        w.unit(2, 0, 1, 1, 10, 3, None, 3);
        w.unit(1, 0, 0, 1, 11, 1, Some((10, 11)), 4);
        // Group 12..=12 on stream 0, filling segment 1 and moving on to segment 4.
        w.unit(1, 3, 0, 2, 12, 11, Some((12, 12)), 4);
        // Group 13..=14: stream 0 in segment 4; its stream-1 unit was never written.
        w.unit(4, 0, 0, 3, 14, 1, Some((13, 14)), 5);
        let clean = |s: SegNo| s.get() >= 3;
        let s0 = read_stream(&w.dev, &G, SegNo(1), 0, want(0), &clean);
        let s1 = read_stream(&w.dev, &G, SegNo(2), 0, want(1), &clean);
        assert_eq!(s0.found.len(), 3, "{:?}", s0.end);
        assert_eq!(s1.found.len(), 1);
        assert_eq!(s1.end.2, Verdict::NoSummary);
        let all: Vec<Found> = s0.found.iter().chain(&s1.found).copied().collect();
        let p = plan(10, &all);
        assert_eq!(p.groups, vec![(10, 11), (12, 12)]);
        assert_eq!(p.stop, Stop::Missing { seq: 13 });
    }

    #[test]
    fn another_streams_stale_unit_is_not_taken() {
        let w = Writer {
            dev: MemDevice::new(40 * BLOCK_SIZE as u64 + 8 * 16 * BLOCK_SIZE as u64),
        };
        // Segment 3 holds stream 2's unit whose counters happen to match stream 1's.
        w.unit(3, 0, 2, 1, 20, 1, Some((20, 20)), 4);
        let r = read_stream(&w.dev, &G, SegNo(3), 0, want(1), &|_| true);
        assert!(r.found.is_empty());
        assert_eq!(r.end.2, Verdict::Stale { seq: 20, stream: 2 });
        // And a unit of an earlier era (before the checkpoint) is stale too.
        let mut old = want(2);
        old.min_era = Cno(5);
        let r = read_stream(&w.dev, &G, SegNo(3), 0, old, &|_| true);
        assert!(matches!(r.end.2, Verdict::Stale { .. }));
        // A torn payload ends the stream.
        w.dev
            .write_at(&[0xff; 16], (G.seg_base + 3 * 16 + 1).byte_offset())
            .unwrap();
        let r = read_stream(&w.dev, &G, SegNo(3), 0, want(2), &|_| true);
        assert_eq!(r.end.2, Verdict::TornData);
    }
}
