//! File contents: read, write, truncate, fallocate. Writes go into dirty blocks held by the
//! inode; they reach the log at writeback, flush or checkpoint.

use super::admission::Admit;
use super::inner::Inner;
use super::inode::now;
use super::types::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE};
use crate::error::{FsError, Result};
use crate::format::inode::{FileKind, FL_APPEND, FL_IMMUTABLE, FL_NOATIME, FL_SYNC, MAX_FILE_SIZE};
use crate::format::{Ino, BLOCK_BYTES, BLOCK_SIZE};

impl Inner {
    /// The current contents of logical block `l` of `ino` (zeros for a hole).
    fn block_contents(&mut self, ino: Ino, l: u64) -> Result<Vec<u8>> {
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        if let Some(b) = i.data.get(&l) {
            return Ok(b.clone());
        }
        let addr = i.bmap.get(st, l)?;
        if addr.is_none() {
            return Ok(vec![0u8; BLOCK_SIZE]);
        }
        Ok(st.read_block(addr)?.as_ref().clone())
    }

    /// Bytes `[offset, offset+len)`; no size check. Blocks at consecutive addresses are
    /// read from the device in one request (see `Store::read_run`).
    pub(crate) fn read_raw(&mut self, ino: Ino, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset / BLOCK_BYTES;
        let last = (offset + len - 1) / BLOCK_BYTES;
        let mut blocks = Vec::with_capacity(((last - first + 1) as usize) * BLOCK_SIZE);
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        let mut l = first;
        while l <= last {
            if let Some(b) = i.data.get(&l) {
                blocks.extend_from_slice(b);
                l += 1;
                continue;
            }
            let addr = i.bmap.get(st, l)?;
            if addr.is_none() {
                blocks.resize(blocks.len() + BLOCK_SIZE, 0);
                l += 1;
                continue;
            }
            // Extend the run while the next block is on disk right after this one.
            let mut n = 1;
            while l + n <= last
                && !i.data.contains_key(&(l + n))
                && Some(i.bmap.get(st, l + n)?) == addr.checked_add(n)
            {
                n += 1;
            }
            st.read_run(addr, n, &mut blocks)?;
            l += n;
        }
        // Trim in place: a block-aligned read (the common case) moves nothing.
        let within = (offset % BLOCK_BYTES) as usize;
        blocks.truncate(within + len as usize);
        if within > 0 {
            blocks.drain(..within);
        }
        Ok(blocks)
    }

    pub(crate) fn read(&mut self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        match i.kind() {
            FileKind::Directory => return Err(FsError::IsDir),
            FileKind::Regular | FileKind::Symlink => {}
            _ => return Err(FsError::Invalid("not a regular file")),
        }
        let fsize = i.d.size;
        if offset >= fsize {
            return Ok(Vec::new());
        }
        let len = (size as u64).min(fsize - offset);
        let out = self.read_raw(ino, offset, len)?;
        // relatime: update atime when it is older than mtime/ctime or a day old; never
        // with chattr +A.
        if self.st.writable() && self.inode(ino)?.d.flags & FL_NOATIME == 0 {
            let i = self.inode(ino)?;
            let t = now();
            if i.d.atime <= i.d.mtime || i.d.atime <= i.d.ctime || t.sec - i.d.atime.sec >= 86400 {
                i.d.atime = t;
                self.touch(ino);
            }
        }
        Ok(out)
    }

    /// Write `data` at `offset`. `cached`: the bytes come from the kernel's writeback
    /// cache, which already told the writer they were written, so they may use the space
    /// kept for them (`Admit::Cached`).
    pub(crate) fn write(
        &mut self,
        ino: Ino,
        offset: u64,
        data: &[u8],
        cached: bool,
    ) -> Result<u32> {
        self.sync_due |= self.inode(ino)?.d.flags & FL_SYNC != 0;
        let i = self.inode(ino)?;
        match i.kind() {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("not a regular file")),
        }
        // chattr +i: no new writes. Writes from the kernel's cache pass: write(2) took them
        // before the flag was set (or through a descriptor the kernel did not ask us about),
        // and refusing them now would lose data a writer was told was written.
        if i.d.flags & FL_IMMUTABLE != 0 && !cached {
            return Err(FsError::NotPermitted);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let first = offset / BLOCK_BYTES;
        let last = (end - 1) / BLOCK_BYTES;
        let new = i.buffering_cost(first, last);
        // A write into space fallocate granted draws on it; what it needs beyond (nodes past
        // the allowance) may come from the cache reserve's slack: the reservation was made
        // when the space was there, and the kernel's cache may have used its reserve since.
        let credit = self.reservations.credit(ino, first, last + 1);
        let kind = if cached || credit > 0 {
            Admit::Cached
        } else {
            Admit::Data
        };
        self.check_space_credited(new, kind, credit)?;
        let pending_before = self.pending_blocks();
        // As Linux, a write drops the file capability whoever writes, before it changes
        // anything; the set-ID bits go only for callers without CAP_FSETID, which the engine
        // cannot see: its caller says so with `Fs::kill_privileges` (lfs-fuse does when the
        // kernel asks).
        self.drop_capability(ino)?;
        let mut pos = offset;
        let mut src = data;
        while !src.is_empty() {
            let l = pos / BLOCK_BYTES;
            let within = (pos % BLOCK_BYTES) as usize;
            let n = (BLOCK_SIZE - within).min(src.len());
            let Inner { inodes, st, .. } = self;
            let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
            if !i.data.contains_key(&l) {
                let addr = i.bmap.get(st, l)?;
                let mut b = if addr.is_none() || n == BLOCK_SIZE {
                    vec![0u8; BLOCK_SIZE]
                } else {
                    st.read_block(addr)?.as_ref().clone()
                };
                if !addr.is_none() && n < BLOCK_SIZE && b.len() != BLOCK_SIZE {
                    b.resize(BLOCK_SIZE, 0);
                }
                if addr.is_none() {
                    i.new_blocks.insert(l);
                }
                i.buffer(l, b);
            }
            if let Some(b) = i.data.get_mut(&l) {
                b[within..within + n].copy_from_slice(&src[..n]);
            }
            pos += n as u64;
            src = &src[n..];
        }
        if credit > 0 {
            // The reservation shrinks by what the write added to the log's debt: its blocks
            // and nodes, and the share of summaries, inodes and tables that comes with them.
            let grown = self.pending_blocks().saturating_sub(pending_before);
            self.reservations.consume(ino, first, last + 1, grown);
        }
        let i = self.inode(ino)?;
        i.d.size = i.d.size.max(end);
        // Data from the kernel's writeback cache arrives seconds after the write(2), and
        // the kernel, which owns the times of a file with cached writes, sends the write's
        // own mtime and ctime in a SETATTR of its own (before or after this, on another
        // thread): stamping the arrival time here made a file's times move to its flush
        // time across a remount, and rsync and make saw changes that did not happen.
        if !cached {
            let t = now();
            i.d.mtime = t;
            i.d.ctime = t;
        }
        self.touch(ino);
        Ok(data.len() as u32)
    }

    /// lseek(SEEK_DATA) (`data`) or lseek(SEEK_HOLE) from `offset`: the next byte of data,
    /// or the start of the next hole (the end of the file counts as one), as ext4 answers.
    /// Blocks buffered in memory are data. ENXIO at or past the end of the file.
    pub(crate) fn seek_data_or_hole(&mut self, ino: Ino, offset: u64, data: bool) -> Result<u64> {
        let size = self.inode(ino)?.d.size;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let end = size.div_ceil(BLOCK_BYTES);
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        let mut l = offset / BLOCK_BYTES;
        if data {
            let on_disk = i.bmap.next_mapped(st, l, end)?.unwrap_or(end);
            let buffered = i.data.range(l..end).next().map_or(end, |(b, _)| *b);
            l = on_disk.min(buffered);
            if l >= end {
                return Err(FsError::NoSuchOffset);
            }
        } else {
            while l < end && (i.data.contains_key(&l) || !i.bmap.get(st, l)?.is_none()) {
                l += 1;
            }
        }
        Ok((l * BLOCK_BYTES).clamp(offset, size))
    }

    /// Zero bytes `[from, to)` of the file's blocks that exist (partial blocks only).
    fn zero_partial(&mut self, ino: Ino, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let l = from / BLOCK_BYTES;
        debug_assert_eq!(l, (to - 1) / BLOCK_BYTES);
        let exists = {
            let Inner { inodes, st, .. } = self;
            let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
            i.data.contains_key(&l) || !i.bmap.get(st, l)?.is_none()
        };
        if !exists {
            return Ok(());
        }
        let mut b = self.block_contents(ino, l)?;
        let s = (from % BLOCK_BYTES) as usize;
        let e = s + (to - from) as usize;
        b[s..e].fill(0);
        self.inode(ino)?.buffer(l, b);
        Ok(())
    }

    /// Make `[from, to)` (bytes) read as zeros, freeing whole blocks.
    fn clear_bytes(&mut self, ino: Ino, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let first_full = from.div_ceil(BLOCK_BYTES);
        let end_full = to / BLOCK_BYTES;
        if first_full >= end_full {
            // Inside one or two partial blocks.
            let mid = (from / BLOCK_BYTES + 1) * BLOCK_BYTES;
            self.zero_partial(ino, from, to.min(mid))?;
            if to > mid {
                self.zero_partial(ino, mid, to)?;
            }
            return Ok(());
        }
        self.zero_partial(ino, from, first_full * BLOCK_BYTES)?;
        self.zero_partial(ino, end_full * BLOCK_BYTES, to)?;
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        let dead: Vec<u64> = i
            .data
            .range(first_full..end_full)
            .map(|(l, _)| *l)
            .collect();
        for l in dead {
            i.data.remove(&l);
            i.new_blocks.remove(&l);
        }
        i.bmap.clear_range(st, first_full, end_full)?;
        Ok(())
    }

    pub(crate) fn truncate(&mut self, ino: Ino, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let i = self.inode(ino)?;
        if i.kind() != FileKind::Regular {
            return Err(FsError::Invalid("not a regular file"));
        }
        self.drop_capability(ino)?;
        let old = self.inode(ino)?.d.size;
        if size < old {
            let keep = size.div_ceil(BLOCK_BYTES);
            self.clear_bytes(ino, size, keep * BLOCK_BYTES)?;
            let Inner { inodes, st, .. } = self;
            let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
            let dead: Vec<u64> = i.data.range(keep..).map(|(l, _)| *l).collect();
            for l in dead {
                i.data.remove(&l);
                i.new_blocks.remove(&l);
            }
            i.bmap.clear_range(st, keep, u64::MAX)?;
        }
        // Every truncate gives back what was preallocated past the new end (as ext4 drops
        // KEEP_SIZE blocks beyond it), even to the same size.
        self.reservations
            .release_from(ino, size.div_ceil(BLOCK_BYTES));
        let t = now();
        let i = self.inode(ino)?;
        i.d.size = size;
        i.d.mtime = t;
        i.d.ctime = t;
        self.touch(ino);
        Ok(())
    }

    pub(crate) fn fallocate(&mut self, ino: Ino, offset: u64, len: u64, mode: u32) -> Result<()> {
        if len == 0 {
            return Err(FsError::Invalid("fallocate length is zero"));
        }
        let end = offset.checked_add(len).ok_or(FsError::FileTooBig)?;
        self.sync_due |= self.inode(ino)?.d.flags & FL_SYNC != 0;
        let i = self.inode(ino)?;
        match i.kind() {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::NotSupported),
        }
        // As vfs_fallocate: nothing on an immutable file; on an append-only one only
        // allocation that keeps the size.
        if i.d.flags & FL_IMMUTABLE != 0
            || (i.d.flags & FL_APPEND != 0 && mode & !FALLOC_FL_KEEP_SIZE != 0)
        {
            return Err(FsError::NotPermitted);
        }
        let size = i.d.size;
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        if mode & FALLOC_FL_PUNCH_HOLE != 0 {
            if !keep || mode & !(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) != 0 {
                return Err(FsError::NotSupported);
            }
            self.clear_bytes(ino, offset.min(size), end.min(size))?;
            // Whole blocks punched out give their reservation back.
            self.reservations
                .release(ino, offset.div_ceil(BLOCK_BYTES), end / BLOCK_BYTES);
        } else if mode & FALLOC_FL_ZERO_RANGE != 0 {
            if mode & !(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE) != 0 {
                return Err(FsError::NotSupported);
            }
            if end > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            self.clear_bytes(ino, offset.min(size), end.min(size))?;
            if !keep && end > size {
                self.inode(ino)?.d.size = end;
            }
        } else if mode & !FALLOC_FL_KEEP_SIZE == 0 {
            // A log-structured filesystem cannot reserve places in advance, but it can
            // reserve space: a block for every block of the range, kept for the writes
            // into it (`reserve.rs`), so they never meet ENOSPC.
            if end > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            let (first, last) = (offset / BLOCK_BYTES, end.div_ceil(BLOCK_BYTES));
            let cost = self.reservations.cost(ino, first, last);
            self.check_space(cost, Admit::Data)?;
            self.reservations.reserve(ino, first, last);
            if !keep && end > size {
                self.inode(ino)?.d.size = end;
            }
        } else {
            return Err(FsError::NotSupported);
        }
        let t = now();
        let i = self.inode(ino)?;
        i.d.mtime = t;
        i.d.ctime = t;
        self.touch(ino);
        Ok(())
    }
}
