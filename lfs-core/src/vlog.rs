//! Writing a format version 2 log (docs/FORMAT-V2.md §7–§9): several streams, each filling
//! its own segment with write units, and flush groups over any of them, closed by a root
//! block in a ROOT unit whose sequence number is the group's last. The counterpart of
//! `vscan`. Sealed units wait in memory (readable: `read_cached`) until `submit` queues them
//! on the back-end writer, a run of adjacent units as one write (`write_out` writes them
//! directly, for tests); a flush after that makes them durable. Used by the v2 store
//! (`vstore.rs`); not by the engine yet (issue 20, step 3).

use crate::device::Device;
use crate::error::{FsError, Result};
use crate::format::data_crc;
use crate::format::v2::root::GroupRoot;
use crate::format::v2::summary::{Entry, Kind, Summary, FLAG_CONT, FLAG_ROOT, MAX_ENTRIES};
use crate::format::{BlockAddr, Cno, Ino, SegNo, VBlock, BLOCK_SIZE};
use crate::vscan::Geometry;
use crate::writer::BackEnd;

/// Where a stream's next segment comes from (the segment table, in the engine).
pub trait SegmentSource {
    /// A clean segment for `stream` to go on in after `after`; it is the stream's from now.
    fn next_clean(&mut self, stream: u8, after: SegNo) -> Option<SegNo>;
    /// `stream` filled `from` and writes into `to` from now on.
    fn moved_on(&mut self, _stream: u8, _from: SegNo, _to: SegNo) {}
}

struct Open {
    /// Block offset of the unit's summary in the segment.
    start: u32,
    entries: Vec<Entry>,
    payload: Vec<u8>,
}

struct Stream {
    seg: SegNo,
    /// Next free block in `seg`.
    fill: u32,
    /// The segment the stream moves to when `seg` is full (chosen when the first unit of
    /// `seg` is sealed, so every summary can name it).
    next: Option<SegNo>,
    stream_seq: u32,
    open: Option<Open>,
}

/// A sealed unit waiting to be written: where, and its bytes (summary then payload).
struct Sealed {
    seq: u64,
    at: BlockAddr,
    bytes: Vec<u8>,
}

pub struct VLog {
    g: Geometry,
    streams: Vec<Stream>,
    next_seq: u64,
    log_id: u64,
    fs_id: u32,
    era: Cno,
    /// The first sequence number of the group under way, once one unit of it is sealed.
    group_first: Option<u64>,
    sealed: Vec<Sealed>,
}

impl VLog {
    /// A log whose streams continue at `heads` (segment, offset, stream_seq).
    pub fn open(
        g: Geometry,
        heads: &[(SegNo, u32, u32)],
        next_seq: u64,
        log_id: u64,
        fs_id: u32,
        era: Cno,
    ) -> VLog {
        VLog {
            g,
            streams: heads
                .iter()
                .map(|&(seg, fill, stream_seq)| Stream {
                    seg,
                    fill,
                    next: None,
                    stream_seq,
                    open: None,
                })
                .collect(),
            next_seq,
            log_id,
            fs_id,
            era,
            group_first: None,
            sealed: Vec::new(),
        }
    }

    /// Where each stream continues: for the next checkpoint.
    pub fn heads(&self) -> Vec<(SegNo, u32, u32)> {
        self.streams
            .iter()
            .map(|s| (s.seg, s.fill, s.stream_seq))
            .collect()
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Append one payload block to `stream`; returns its address.
    pub fn append(
        &mut self,
        segs: &mut dyn SegmentSource,
        stream: u8,
        entry: Entry,
        data: &[u8],
    ) -> Result<BlockAddr> {
        let si = stream as usize;
        if si >= self.streams.len() || data.len() != BLOCK_SIZE {
            return Err(FsError::Invalid("no such stream, or not one block"));
        }
        let full = self.streams[si]
            .open
            .as_ref()
            .is_some_and(|o| o.entries.len() >= MAX_ENTRIES);
        if full || (self.streams[si].open.is_some() && self.streams[si].fill >= self.g.seg_blocks) {
            self.seal(segs, stream, true)?;
        }
        if self.streams[si].open.is_none() {
            if self.streams[si].fill + 2 > self.g.seg_blocks {
                self.move_on(segs, stream)?;
            }
            let s = &mut self.streams[si];
            s.open = Some(Open {
                start: s.fill,
                entries: Vec::new(),
                payload: Vec::new(),
            });
            s.fill += 1;
        }
        let s = &mut self.streams[si];
        let addr = self.g.seg_addr(s.seg) + u64::from(s.fill);
        s.fill += 1;
        if let Some(o) = s.open.as_mut() {
            o.entries.push(entry);
            o.payload.extend_from_slice(data);
        }
        Ok(addr)
    }

    fn move_on(&mut self, segs: &mut dyn SegmentSource, stream: u8) -> Result<()> {
        let s = &mut self.streams[stream as usize];
        let next = match s.next.take() {
            Some(n) => n,
            None => segs.next_clean(stream, s.seg).ok_or(FsError::NoSpace)?,
        };
        segs.moved_on(stream, s.seg, next);
        s.seg = next;
        s.fill = 0;
        Ok(())
    }

    /// Seal `stream`'s open unit (CONT if the group goes on).
    fn seal(&mut self, segs: &mut dyn SegmentSource, stream: u8, cont: bool) -> Result<()> {
        let si = stream as usize;
        let Some(o) = self.streams[si].open.take() else {
            return Ok(());
        };
        if self.streams[si].next.is_none() {
            let after = self.streams[si].seg;
            self.streams[si].next = Some(segs.next_clean(stream, after).ok_or(FsError::NoSpace)?);
        }
        let s = &mut self.streams[si];
        let seq = self.next_seq;
        self.next_seq += 1;
        self.group_first.get_or_insert(seq);
        let is_root = o.entries.last().is_some_and(|e| e.kind == Kind::GroupRoot) && !cont;
        let summary = Summary {
            flags: if is_root { FLAG_ROOT } else { FLAG_CONT },
            seq,
            stream_seq: s.stream_seq,
            stream,
            log_id: self.log_id,
            segment: s.seg,
            offset: o.start,
            next_segment: s.next.unwrap_or(s.seg),
            timestamp_ns: crate::log::now_ns(),
            era: self.era,
            fs_id: self.fs_id,
            data_crc: data_crc(o.payload.chunks(BLOCK_SIZE)),
            entries: o.entries,
        };
        s.stream_seq = s.stream_seq.wrapping_add(1);
        let mut bytes = summary.encode();
        bytes.extend_from_slice(&o.payload);
        let at = self.g.seg_addr(s.seg) + u64::from(o.start);
        self.sealed.push(Sealed { seq, at, bytes });
        Ok(())
    }

    /// Close the group under way: seal every stream's open unit (CONT), then write its root
    /// block — carrying the group's sequence range — as the last block of a ROOT unit on
    /// stream 0 (stream 0's open unit, when it has room). Returns the group's range.
    pub fn end_group(
        &mut self,
        segs: &mut dyn SegmentSource,
        mut root: GroupRoot,
    ) -> Result<(u64, u64)> {
        // Every other stream's open unit first; stream 0's takes the root as its last block
        // when it has room (a unit of its own otherwise).
        for stream in 1..self.streams.len() as u8 {
            self.seal(segs, stream, true)?;
        }
        let s0 = &self.streams[0];
        if s0
            .open
            .as_ref()
            .is_some_and(|o| o.entries.len() >= MAX_ENTRIES || s0.fill >= self.g.seg_blocks)
        {
            self.seal(segs, 0, true)?;
        }
        // The root's unit is the group's last: its number is the next one.
        let last = self.next_seq;
        let first = self.group_first.unwrap_or(last);
        root.seq_first = first;
        root.seq_last = last;
        root.era = self.era;
        let data = root.encode();
        let entry = Entry {
            kind: Kind::GroupRoot,
            height: 0,
            flags: 0,
            crc: crate::format::v2::block_crc(&data),
            generation: 0,
            ino: Ino(0),
            index: 0,
            vblock: VBlock::NONE,
            start: Cno(0),
        };
        self.append(segs, 0, entry, &data)?;
        self.seal(segs, 0, false)?;
        self.group_first = None;
        Ok((first, last))
    }

    /// Hand every sealed unit to the device, in sequence order. Durable after a flush.
    pub fn write_out(&mut self, dev: &dyn Device) -> Result<()> {
        self.sealed.sort_by_key(|u| u.seq);
        for u in self.sealed.drain(..) {
            dev.write_at(&u.bytes, u.at.byte_offset())?;
        }
        Ok(())
    }

    /// Queue every sealed unit on the back-end writer, units that follow one another on the
    /// device as one write (a stream's units fill its segment front to back, so a segment's
    /// worth is one write). Their blocks stay readable through the writer until written;
    /// durable after its flush.
    pub fn submit(&mut self, backend: &BackEnd) -> Result<()> {
        let mut units = std::mem::take(&mut self.sealed);
        units.sort_by_key(|u| u.at);
        let mut i = 0;
        while i < units.len() {
            let at = units[i].at;
            let mut bytes = std::mem::take(&mut units[i].bytes);
            let mut j = i + 1;
            while j < units.len()
                && units[j].at == at + (bytes.len() / BLOCK_SIZE) as u64
                && self.g.seg_of(units[j].at) == self.g.seg_of(at)
            {
                bytes.extend_from_slice(&units[j].bytes);
                j += 1;
            }
            let len = bytes.len();
            backend.write(
                at.byte_offset(),
                std::sync::Arc::new(bytes),
                0,
                len,
                Some(at),
            )?;
            i = j;
        }
        Ok(())
    }

    /// A block appended and not yet handed to the device (in an open unit, or sealed and
    /// waiting for `submit`).
    pub fn read_cached(&self, addr: BlockAddr) -> Option<Vec<u8>> {
        for s in &self.streams {
            let Some(o) = &s.open else { continue };
            let first = self.g.seg_addr(s.seg) + u64::from(o.start) + 1;
            if let Some(k) = addr.get().checked_sub(first.get()) {
                let k = k as usize;
                if let Some(b) = o.payload.get(k * BLOCK_SIZE..(k + 1) * BLOCK_SIZE) {
                    return Some(b.to_vec());
                }
            }
        }
        self.sealed.iter().find_map(|u| {
            let k = addr.get().checked_sub(u.at.get())? as usize;
            u.bytes
                .get(k * BLOCK_SIZE..(k + 1) * BLOCK_SIZE)
                .map(|b| b.to_vec())
        })
    }

    /// The segment `stream` writes into, and the blocks still free in it.
    pub fn room(&self, stream: u8) -> Option<(SegNo, u32)> {
        let s = self.streams.get(stream as usize)?;
        Some((s.seg, self.g.seg_blocks.saturating_sub(s.fill)))
    }

    /// Move every stream whose segment has no room for another unit (a summary and one
    /// block) on to its next segment, so that its head names where its next unit will be.
    /// Between groups only.
    pub fn move_full_heads(&mut self, segs: &mut dyn SegmentSource) -> Result<()> {
        for stream in 0..self.streams.len() as u8 {
            let s = &self.streams[stream as usize];
            if s.open.is_none() && s.fill + 2 > self.g.seg_blocks {
                self.move_on(segs, stream)?;
            }
        }
        Ok(())
    }

    /// Units from now on belong to era `era` (the checkpoint after the one just made).
    pub fn set_era(&mut self, era: Cno) {
        self.era = era;
    }

    pub fn era(&self) -> Cno {
        self.era
    }

    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Sealed units not yet written: (seq, address, bytes) — the crash tests drop some.
    pub fn take_sealed(&mut self) -> Vec<(u64, BlockAddr, Vec<u8>)> {
        self.sealed.sort_by_key(|u| u.seq);
        self.sealed
            .drain(..)
            .map(|u| (u.seq, u.at, u.bytes))
            .collect()
    }
}

/// What the tests of the v2 log and of its readers share.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// The v2 log tests' device: 64 segments of 32 blocks after 16 blocks.
    pub const G: Geometry = Geometry {
        seg_base: BlockAddr(16),
        seg_blocks: 32,
        nsegs: 64,
    };

    /// Segments handed out in order from `next`.
    pub struct Segs {
        pub next: u64,
    }
    impl SegmentSource for Segs {
        fn next_clean(&mut self, _stream: u8, _after: SegNo) -> Option<SegNo> {
            let s = self.next;
            self.next += 1;
            Some(SegNo(s))
        }
    }

    /// A root block with nothing ended or freed (the log fills in the range).
    pub fn root() -> GroupRoot {
        GroupRoot {
            seq_first: 0,
            seq_last: 0,
            era: Cno(0),
            next_vblock: 1,
            cont: 0,
            ifile_inode: vec![0; 256],
            cpfile_inode: vec![0; 256],
            ended: vec![],
            freed: vec![],
        }
    }

    /// Read every stream back from the heads a log started at (log id 5, filesystem 6,
    /// sequence numbers from 100, units of `era` on), and plan; also every sequence number
    /// read, and the units.
    pub fn read_back(
        dev: &dyn Device,
        g: &Geometry,
        heads: &[(SegNo, u32, u32)],
        era: Cno,
    ) -> (
        crate::replay::Plan,
        std::collections::HashSet<u64>,
        Vec<crate::vscan::Unit>,
    ) {
        let (mut found, mut units) = (Vec::new(), Vec::new());
        for (i, &(seg, off, stream_seq)) in heads.iter().enumerate() {
            let want = crate::vscan::Expect {
                stream: i as u8,
                stream_seq,
                min_seq: 100,
                log_id: 5,
                fs_id: 6,
                min_era: era,
            };
            let r = crate::vscan::read_stream(dev, g, seg, off, want, &|s| s.get() >= 2);
            found.extend(r.found);
            units.extend(r.units);
        }
        let seen = found.iter().map(|f| f.seq).collect();
        (crate::replay::plan(100, &found), seen, units)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testutil::{read_back, root, Segs, G};
    use super::*;
    use crate::device::MemDevice;
    use crate::replay::Stop;

    fn data_entry(i: u64) -> Entry {
        Entry {
            kind: Kind::Data,
            height: 0,
            flags: 0,
            crc: 0,
            generation: 1,
            ino: Ino(20),
            index: i,
            vblock: VBlock(1 + i),
            start: Cno(3),
        }
    }

    fn replay_from(dev: &MemDevice, heads: &[(SegNo, u32, u32)]) -> crate::replay::Plan {
        read_back(dev, &G, heads, Cno(3)).0
    }

    #[test]
    fn groups_over_three_streams_are_read_back_whole() {
        let dev = MemDevice::new((16 + 64 * 32 + 16) * BLOCK_SIZE as u64);
        let heads = [(SegNo(0), 0, 1), (SegNo(1), 0, 1), (SegNo(2), 0, 1)];
        let mut segs = Segs { next: 3 };
        let mut log = VLog::open(G, &heads, 100, 5, 6, Cno(3));
        let block = vec![1u8; BLOCK_SIZE];
        let mut groups = Vec::new();
        for g in 0..6u64 {
            // Enough blocks on streams 1 and 2 to cross units and segments.
            for i in 0..(40 + g * 30) {
                log.append(&mut segs, 1 + (i % 2) as u8, data_entry(i), &block)
                    .unwrap();
            }
            groups.push(log.end_group(&mut segs, root()).unwrap());
        }
        log.write_out(&dev).unwrap();
        let p = replay_from(&dev, &heads);
        assert_eq!(p.groups, groups);
        assert_eq!(p.stop, Stop::End);
        assert_eq!(p.next_seq, log.next_seq());
    }

    /// Every image a power cut could leave while four groups are written over two streams
    /// (the device reordering, dropping and tearing in-flight writes): roll-forward applies
    /// a prefix of the groups, never a group in part, and every group flushed before the
    /// cut (an fsync that returned).
    #[cfg(feature = "testing")]
    #[test]
    fn every_crash_state_replays_a_prefix_holding_every_flushed_group() {
        use crate::device::{CrashDevice, CrashStateOptions};
        const SMALL: Geometry = Geometry {
            seg_base: BlockAddr(16),
            seg_blocks: 16,
            nsegs: 16,
        };
        let dev = CrashDevice::new((16 + 16 * 16 + 16) * BLOCK_SIZE as u64);
        let heads = [(SegNo(0), 0, 1), (SegNo(1), 0, 1)];
        let mut segs = Segs { next: 3 };
        let mut log = VLog::open(SMALL, &heads, 100, 5, 6, Cno(3));
        let block = vec![3u8; BLOCK_SIZE];
        let mut groups = Vec::new();
        // (op count after the flush, groups durable then)
        let mut durable_at: Vec<(usize, usize)> = vec![(0, 0)];
        for g in 0..4u64 {
            for i in 0..(3 + g * 7) {
                log.append(&mut segs, (i % 2) as u8, data_entry(i), &block)
                    .unwrap();
            }
            groups.push(log.end_group(&mut segs, root()).unwrap());
            log.write_out(&dev).unwrap();
            if g % 2 == 0 {
                dev.flush().unwrap();
                durable_at.push((dev.op_count(), groups.len()));
            }
        }
        let replay = |image: Vec<u8>| {
            let (p, seen, _) = read_back(&MemDevice::from_image(image), &SMALL, &heads, Cno(3));
            (p, seen)
        };
        let (mut states, mut cut, mut torn_group) = (0, 0, 0);
        for at in 0..=dev.op_count() {
            let owed = durable_at
                .iter()
                .filter(|(op, _)| *op <= at)
                .map(|(_, n)| *n)
                .max();
            for st in dev.crash_states(at, &CrashStateOptions::default(), 7) {
                let (p, seen) = replay(st.image);
                for &(first, last) in &p.groups {
                    assert!(
                        (first..=last).all(|q| seen.contains(&q)),
                        "{}: group {first}..={last} applied without all its units",
                        st.description
                    );
                }
                assert_eq!(
                    p.groups,
                    groups[..p.groups.len()].to_vec(),
                    "{}: not a prefix",
                    st.description
                );
                assert!(
                    p.groups.len() >= owed.unwrap_or(0),
                    "{}: {} groups, {} were flushed",
                    st.description,
                    p.groups.len(),
                    owed.unwrap_or(0)
                );
                states += 1;
                cut += usize::from(p.groups.len() < groups.len());
                torn_group +=
                    usize::from(matches!(p.stop, Stop::Missing { .. }) && p.discarded > 0);
            }
        }
        // Not vacuous: states that lose groups, and states with part of a group on disk.
        assert!(states > 50, "only {states} crash states");
        assert!(
            cut > 0 && torn_group > 0,
            "{states} states, {cut} cut, {torn_group} torn"
        );
    }

    #[test]
    fn blocks_are_readable_until_handed_to_the_writer_and_land_where_appended() {
        let dev = std::sync::Arc::new(MemDevice::new((16 + 64 * 32 + 16) * BLOCK_SIZE as u64));
        let heads = [(SegNo(0), 0, 1), (SegNo(1), 0, 1)];
        let mut segs = Segs { next: 3 };
        let mut log = VLog::open(G, &heads, 100, 5, 6, Cno(3));
        let mut addrs = Vec::new();
        let mut groups = Vec::new();
        for g in 0..3u64 {
            for i in 0..50u64 {
                let block = vec![(g * 50 + i) as u8; BLOCK_SIZE];
                let a = log
                    .append(&mut segs, (i % 2) as u8, data_entry(i), &block)
                    .unwrap();
                // Readable at once, from the open unit.
                assert_eq!(log.read_cached(a), Some(block.clone()));
                addrs.push((a, block));
            }
            groups.push(log.end_group(&mut segs, root()).unwrap());
        }
        // Sealed, not yet submitted: still readable from the log.
        for (a, b) in &addrs {
            assert_eq!(log.read_cached(*a).as_ref(), Some(b));
        }
        let mut backend = BackEnd::start(dev.clone());
        log.submit(&backend).unwrap();
        assert_eq!(log.read_cached(addrs[0].0), None, "handed over");
        backend.flush().unwrap();
        backend.stop();
        for (a, b) in &addrs {
            let mut got = vec![0u8; BLOCK_SIZE];
            dev.read_at(&mut got, a.byte_offset()).unwrap();
            assert_eq!(&got, b);
        }
        let p = replay_from(&dev, &heads);
        assert_eq!(p.groups, groups);
        assert_eq!(p.stop, Stop::End);
    }

    #[test]
    fn a_crash_keeps_the_groups_before_the_first_lost_unit() {
        let dev = MemDevice::new((16 + 64 * 32 + 16) * BLOCK_SIZE as u64);
        let heads = [(SegNo(0), 0, 1), (SegNo(1), 0, 1)];
        let mut segs = Segs { next: 3 };
        let mut log = VLog::open(G, &heads, 100, 5, 6, Cno(3));
        let block = vec![2u8; BLOCK_SIZE];
        let mut groups = Vec::new();
        for g in 0..5u64 {
            for i in 0..(10 + g * 50) {
                log.append(&mut segs, 1, data_entry(i), &block).unwrap();
            }
            groups.push(log.end_group(&mut segs, root()).unwrap());
        }
        // Every unit of every group written, except one unit of the third group.
        let lost = groups[2].0 + 1;
        assert!(lost < groups[2].1, "the third group has several units");
        for (seq, at, bytes) in log.take_sealed() {
            if seq != lost {
                dev.write_at(&bytes, at.byte_offset()).unwrap();
            }
        }
        let p = replay_from(&dev, &heads);
        assert_eq!(p.groups, groups[..2].to_vec());
        assert_eq!(p.stop, Stop::Missing { seq: lost });
        assert!(p.discarded > 0);
    }
}
