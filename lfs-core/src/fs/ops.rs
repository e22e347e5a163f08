//! Namespace operations: lookup, create, link, unlink, rmdir, rename, readdir, setattr,
//! statfs. Each runs under the filesystem lock, so it is atomic with respect to flushes.

use super::inode::now;
use super::{
    Admit, Attr, Creds, DirEntryOut, Inner, OutOfSpace, SetAttr, StatFs, TimeOrNow, LINK_MAX,
    RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, SYMLINK_MAX,
};
use crate::dir::FIRST_ENTRY_COOKIE;
use crate::error::{FsError, Result};
use crate::format::dir::{valid_name, DirEntry};
use crate::format::inode::{
    FileKind, FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_SYNC, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT,
    S_IFREG,
};
use crate::format::{BLOCK_BYTES, BLOCK_SIZE, MAX_NAME_LEN, ROOT_INO};
use crate::usage::SegState;

pub(crate) const S_ISGID: u32 = 0o2000;
const S_ISUID: u32 = 0o4000;

/// `mode` without set-user-ID, and without set-group-ID when the group may execute (without
/// group execute the bit marks mandatory locking, which Linux keeps).
fn without_set_ids(mode: u32) -> u32 {
    let mode = mode & !S_ISUID;
    if mode & 0o010 != 0 {
        mode & !S_ISGID
    } else {
        mode
    }
}

/// Check a name for a new or looked-up entry.
fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    if name == b"." || name == b".." {
        return Err(FsError::Exists);
    }
    if !valid_name(name) {
        return Err(FsError::Invalid(
            "file name is empty or contains '/' or NUL",
        ));
    }
    Ok(())
}

impl Inner {
    fn touch_dir_times(&mut self, dir: u64) {
        let t = now();
        if let Some(i) = self.inodes.get_mut(&dir) {
            i.d.mtime = t;
            i.d.ctime = t;
            // chattr +D (or +S) on the directory: the change is durable before the call
            // returns (`after_write`).
            self.sync_due |= i.d.flags & (FL_DIRSYNC | FL_SYNC) != 0;
        }
        self.touch(dir);
    }

    /// chattr's `i` and `a` as the VFS applies them for filesystems in the kernel (for a
    /// FUSE filesystem it leaves them to the daemon): EPERM when `ino` carries a flag of
    /// `mask`.
    pub(crate) fn deny_flagged(&mut self, ino: u64, mask: u32) -> Result<()> {
        if self.inode(ino)?.d.flags & mask != 0 {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    pub(crate) fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let ino = match name {
            // Any inode's ".": the kernel looks a file handle's inode up this way
            // (open_by_handle_at, NFS export), whatever its type.
            b"." => parent,
            b".." => {
                self.dir(parent)?;
                self.inode(parent)?.d.parent
            }
            _ => self
                .dir(parent)?
                .get(name)
                .map(|e| e.ino)
                .ok_or(FsError::NotFound)?,
        };
        self.getattr(ino)
    }

    /// Add `name → ino` to `parent` (which must not have it).
    fn add_entry(&mut self, parent: u64, name: &[u8], ino: u64, kind: FileKind) -> Result<()> {
        self.dir(parent)?.insert(DirEntry {
            ino,
            kind,
            name: name.to_vec(),
        });
        self.touch_dir_times(parent);
        Ok(())
    }

    /// Common checks before creating `name` in `parent`.
    fn prepare_create(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.deny_flagged(parent, FL_IMMUTABLE)?;
        let d = self.dir(parent)?;
        if d.get(name).is_some() {
            return Err(FsError::Exists);
        }
        if self.inode(parent)?.d.nlink == 0 {
            return Err(FsError::NotFound); // a removed directory
        }
        self.check_space(8, Admit::Meta)
    }

    /// Owner and group of a new inode: the group of a setgid directory is inherited.
    fn new_owner(&mut self, parent: u64, creds: Creds, mode: &mut u32) -> Result<(u32, u32)> {
        let p = self.inode(parent)?;
        if p.d.mode & S_ISGID != 0 {
            if *mode & S_IFMT == S_IFDIR {
                *mode |= S_ISGID;
            }
            return Ok((creds.uid, p.d.gid));
        }
        Ok((creds.uid, creds.gid))
    }

    pub(crate) fn mknod(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        creds: Creds,
    ) -> Result<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid("unknown file type"))?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid("use mkdir or symlink"));
        }
        self.prepare_create(parent, name)?;
        let inherited = self.inherit_acl(parent, mode, creds.umask)?;
        let mut mode = (mode & S_IFMT) | inherited.perm;
        let (uid, gid) = self.new_owner(parent, creds, &mut mode)?;
        let ino = self.new_inode(mode, uid, gid, rdev, parent)?;
        self.store_inherited(ino, inherited)?;
        self.add_entry(parent, name, ino, kind)?;
        self.getattr(ino)
    }

    pub(crate) fn mkdir(
        &mut self,
        parent: u64,
        name: &[u8],
        perm: u32,
        creds: Creds,
    ) -> Result<Attr> {
        self.prepare_create(parent, name)?;
        if self.inode(parent)?.d.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let inherited = self.inherit_acl(parent, S_IFDIR | (perm & 0o7777), creds.umask)?;
        let mut mode = S_IFDIR | inherited.perm;
        let (uid, gid) = self.new_owner(parent, creds, &mut mode)?;
        let ino = self.new_inode(mode, uid, gid, 0, parent)?;
        self.store_inherited(ino, inherited)?;
        self.add_entry(parent, name, ino, FileKind::Directory)?;
        self.inode(parent)?.d.nlink += 1;
        self.touch(parent);
        self.getattr(ino)
    }

    pub(crate) fn symlink(
        &mut self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        creds: Creds,
    ) -> Result<Attr> {
        if target.is_empty() || target.len() > SYMLINK_MAX {
            return Err(if target.is_empty() {
                FsError::NotFound
            } else {
                FsError::NameTooLong
            });
        }
        self.prepare_create(parent, name)?;
        let mut mode = S_IFLNK | 0o777;
        let (uid, gid) = self.new_owner(parent, creds, &mut mode)?;
        let ino = self.new_inode(mode, uid, gid, 0, parent)?;
        {
            let i = self.inode(ino)?;
            let mut block = vec![0u8; BLOCK_SIZE];
            block[..target.len()].copy_from_slice(target);
            i.buffer(0, block);
            i.new_blocks.insert(0);
            i.d.size = target.len() as u64;
        }
        self.touch(ino);
        self.add_entry(parent, name, ino, FileKind::Symlink)?;
        self.getattr(ino)
    }

    pub(crate) fn readlink(&mut self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        if i.kind() != FileKind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        let size = i.d.size;
        // The size comes from disk: a damaged one must not size an allocation.
        if size == 0 || size > SYMLINK_MAX as u64 {
            return Err(FsError::Damaged(format!(
                "symlink inode {ino} claims a target of {size} bytes"
            )));
        }
        self.read_raw(ino, 0, size)
    }

    pub(crate) fn link(&mut self, ino: u64, parent: u64, name: &[u8]) -> Result<Attr> {
        let i = self.inode(ino)?;
        if i.kind() == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        if i.d.nlink >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        // No links: only an open O_TMPFILE file may get one (the kernel lets no other
        // unlinked inode ask); it stops being an orphan.
        if i.d.nlink == 0 && i.open == 0 {
            return Err(FsError::NotFound);
        }
        let was_unlinked = i.d.nlink == 0;
        let kind = i.kind();
        self.deny_flagged(ino, FL_IMMUTABLE | FL_APPEND)?;
        self.prepare_create(parent, name)?;
        self.add_entry(parent, name, ino, kind)?;
        let i = self.inode(ino)?;
        i.d.nlink += 1;
        i.d.ctime = now();
        self.touch(ino);
        if was_unlinked {
            self.imap.set_orphan(ino, false);
        }
        self.getattr(ino)
    }

    /// open(2) with O_TMPFILE: a regular file in no directory, open once, with no links —
    /// an orphan, freed at its last release or at the next mount, unless linkat(2) gives
    /// it a name first. Owner, group, mode and default ACL as if created in `parent`.
    pub(crate) fn tmpfile(&mut self, parent: u64, perm: u32, creds: Creds) -> Result<Attr> {
        let p = self.inode(parent)?;
        if p.kind() != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if p.d.nlink == 0 {
            return Err(FsError::NotFound);
        }
        self.deny_flagged(parent, FL_IMMUTABLE)?;
        self.check_space(8, Admit::Meta)?;
        let inherited = self.inherit_acl(parent, S_IFREG | (perm & 0o7777), creds.umask)?;
        let mut mode = S_IFREG | inherited.perm;
        let (uid, gid) = self.new_owner(parent, creds, &mut mode)?;
        let ino = self.new_inode(mode, uid, gid, 0, parent)?;
        self.store_inherited(ino, inherited)?;
        let i = self.inode(ino)?;
        i.d.nlink = 0;
        i.open = 1;
        self.imap.set_orphan(ino, true);
        self.touch(ino);
        self.getattr(ino)
    }

    pub(crate) fn unlink(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let e = self
            .dir(parent)?
            .get(name)
            .cloned()
            .ok_or(FsError::NotFound)?;
        if e.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        self.deny_flagged(parent, FL_IMMUTABLE | FL_APPEND)?;
        self.deny_flagged(e.ino, FL_IMMUTABLE | FL_APPEND)?;
        self.dir(parent)?.remove(name);
        self.touch_dir_times(parent);
        let i = self.inode(e.ino)?;
        i.d.nlink = i.d.nlink.saturating_sub(1);
        i.d.ctime = now();
        self.touch(e.ino);
        self.drop_link(e.ino)
    }

    pub(crate) fn rmdir(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        match name {
            b"." => return Err(FsError::Invalid("cannot remove '.'")),
            b".." => return Err(FsError::NotEmpty),
            _ if name.len() > MAX_NAME_LEN => return Err(FsError::NameTooLong),
            _ => {}
        }
        let e = self
            .dir(parent)?
            .get(name)
            .cloned()
            .ok_or(FsError::NotFound)?;
        if e.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        self.deny_flagged(parent, FL_IMMUTABLE | FL_APPEND)?;
        self.deny_flagged(e.ino, FL_IMMUTABLE | FL_APPEND)?;
        if !self.dir(e.ino)?.is_empty() {
            return Err(FsError::NotEmpty);
        }
        self.dir(parent)?.remove(name);
        self.touch_dir_times(parent);
        let p = self.inode(parent)?;
        p.d.nlink = p.d.nlink.saturating_sub(1);
        let i = self.inode(e.ino)?;
        i.d.nlink = 0;
        i.d.ctime = now();
        self.touch(e.ino);
        self.drop_link(e.ino)
    }

    /// Is `ancestor` on the path from `ino` up to the root?
    fn is_ancestor(&mut self, ancestor: u64, mut ino: u64) -> Result<bool> {
        for _ in 0..100_000 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            ino = self.inode(ino)?.d.parent;
        }
        Err(FsError::Damaged(
            "directory parent chain does not reach the root".into(),
        ))
    }

    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
        creds: Creds,
    ) -> Result<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
            || (flags & RENAME_EXCHANGE != 0 && flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0)
        {
            return Err(FsError::Invalid("unsupported rename flags"));
        }
        if name.len() > MAX_NAME_LEN || new_name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        if name == b"." || name == b".." || new_name == b"." || new_name == b".." {
            return Err(FsError::Invalid("cannot rename '.' or '..'"));
        }
        check_name(new_name)?;
        let src = self
            .dir(parent)?
            .get(name)
            .cloned()
            .ok_or(FsError::NotFound)?;
        let dst = self.dir(new_parent)?.get(new_name).cloned();
        // As may_delete and may_create: a name leaves only a directory that is neither
        // immutable nor append-only, and only an inode that is neither moves or is replaced.
        let both = FL_IMMUTABLE | FL_APPEND;
        self.deny_flagged(parent, both)?;
        self.deny_flagged(src.ino, both)?;
        match &dst {
            Some(d) => {
                self.deny_flagged(new_parent, both)?;
                self.deny_flagged(d.ino, both)?;
            }
            None => self.deny_flagged(new_parent, FL_IMMUTABLE)?,
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(FsError::NotFound)?;
            return self.exchange(parent, name, &src, new_parent, new_name, &dst);
        }
        if let Some(d) = &dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            if d.ino == src.ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
        }
        let src_is_dir = src.kind == FileKind::Directory;
        if src_is_dir && parent != new_parent && self.is_ancestor(src.ino, new_parent)? {
            return Err(FsError::Invalid("cannot move a directory into itself"));
        }
        if let Some(d) = &dst {
            let dst_is_dir = d.kind == FileKind::Directory;
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !self.dir(d.ino)?.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
        }
        if src_is_dir
            && parent != new_parent
            && dst.is_none()
            && self.inode(new_parent)?.d.nlink >= LINK_MAX
        {
            return Err(FsError::TooManyLinks);
        }
        self.check_space(8, Admit::Meta)?;
        // The whiteout's inode first: once it exists nothing below can fail halfway.
        let whiteout = if flags & RENAME_WHITEOUT != 0 {
            let mut mode = S_IFCHR;
            let (uid, gid) = self.new_owner(parent, creds, &mut mode)?;
            Some(self.new_inode(mode, uid, gid, 0, parent)?)
        } else {
            None
        };
        // Replace or add the target name, then drop the source name.
        match &dst {
            Some(d) => {
                self.dir(new_parent)?.replace(new_name, src.ino, src.kind);
                self.touch_dir_times(new_parent);
                let victim = self.inode(d.ino)?;
                if d.kind == FileKind::Directory {
                    victim.d.nlink = 0;
                    let np = self.inode(new_parent)?;
                    np.d.nlink = np.d.nlink.saturating_sub(1);
                } else {
                    victim.d.nlink = victim.d.nlink.saturating_sub(1);
                }
                self.inode(d.ino)?.d.ctime = now();
                self.touch(d.ino);
            }
            None => self.add_entry(new_parent, new_name, src.ino, src.kind)?,
        }
        if let Some(w) = whiteout {
            self.dir(parent)?.replace(name, w, FileKind::CharDevice);
        } else {
            self.dir(parent)?.remove(name);
        }
        self.touch_dir_times(parent);
        if src_is_dir && parent != new_parent {
            self.inode(parent)?.d.nlink -= 1;
            self.inode(new_parent)?.d.nlink += 1;
            self.inode(src.ino)?.d.parent = new_parent;
            self.touch(parent);
            self.touch(new_parent);
        }
        self.inode(src.ino)?.d.ctime = now();
        self.touch(src.ino);
        if let Some(d) = dst {
            self.drop_link(d.ino)?;
        }
        Ok(())
    }

    fn exchange(
        &mut self,
        p1: u64,
        n1: &[u8],
        e1: &DirEntry,
        p2: u64,
        n2: &[u8],
        e2: &DirEntry,
    ) -> Result<()> {
        if e1.ino == e2.ino {
            return Ok(());
        }
        let (d1, d2) = (
            e1.kind == FileKind::Directory,
            e2.kind == FileKind::Directory,
        );
        if p1 != p2 {
            if d1 && self.is_ancestor(e1.ino, p2)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if d2 && self.is_ancestor(e2.ino, p1)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
        }
        self.check_space(8, Admit::Meta)?;
        self.dir(p1)?.replace(n1, e2.ino, e2.kind);
        self.dir(p2)?.replace(n2, e1.ino, e1.kind);
        self.touch_dir_times(p1);
        self.touch_dir_times(p2);
        if p1 != p2 {
            if d1 {
                self.inode(e1.ino)?.d.parent = p2;
            }
            if d2 {
                self.inode(e2.ino)?.d.parent = p1;
            }
            let delta = d1 as i64 - d2 as i64;
            let a = self.inode(p1)?;
            a.d.nlink = (a.d.nlink as i64 - delta) as u32;
            let b = self.inode(p2)?;
            b.d.nlink = (b.d.nlink as i64 + delta) as u32;
        }
        let t = now();
        for ino in [e1.ino, e2.ino] {
            self.inode(ino)?.d.ctime = t;
            self.touch(ino);
        }
        Ok(())
    }

    pub(crate) fn readdir(
        &mut self,
        ino: u64,
        cookie: u64,
        max: usize,
    ) -> Result<Vec<DirEntryOut>> {
        let parent = self.inode(ino)?.d.parent;
        let mut out = Vec::new();
        if cookie < 1 {
            out.push(DirEntryOut {
                ino,
                cookie: 1,
                kind: FileKind::Directory,
                name: b".".to_vec(),
            });
        }
        if cookie < 2 {
            out.push(DirEntryOut {
                ino: parent,
                cookie: 2,
                kind: FileKind::Directory,
                name: b"..".to_vec(),
            });
        }
        let start = cookie.max(FIRST_ENTRY_COOKIE);
        let d = self.dir(ino)?;
        for (c, e) in d.entries_from(start) {
            if out.len() >= max {
                break;
            }
            out.push(DirEntryOut {
                ino: e.ino,
                cookie: c,
                kind: e.kind,
                name: e.name.clone(),
            });
        }
        out.truncate(max);
        Ok(out)
    }

    /// What Linux does to a file before a write or truncate: drop the file capability and,
    /// for a caller without CAP_FSETID (`caller_gid` given), clear set-user-ID, and
    /// set-group-ID when the group may execute or the caller is outside the file's group.
    /// Returns whether the mode changed.
    pub(crate) fn kill_privileges(&mut self, ino: u64, caller_gid: Option<u32>) -> Result<bool> {
        self.drop_capability(ino)?;
        let i = self.inode(ino)?;
        let Some(caller_gid) = caller_gid else {
            return Ok(false);
        };
        if i.kind() == FileKind::Directory {
            return Ok(false);
        }
        let mut mode = without_set_ids(i.d.mode);
        if caller_gid != i.d.gid {
            mode &= !S_ISGID;
        }
        if mode == i.d.mode {
            return Ok(false);
        }
        i.d.mode = mode;
        i.d.ctime = now();
        self.touch(ino);
        Ok(true)
    }

    pub(crate) fn setattr(&mut self, ino: u64, set: &SetAttr) -> Result<Attr> {
        let flags = self.inode(ino)?.d.flags;
        if flags & (FL_IMMUTABLE | FL_APPEND) != 0 {
            // Only the kernel's own stamping of writes it cached passes: the writes were
            // accepted before the flag was set, or are appends.
            let kernel_times = set.cached_times
                && set.size.is_none()
                && set.mode.is_none()
                && set.uid.is_none()
                && set.gid.is_none()
                && !set.chown;
            let explicit = |t: Option<TimeOrNow>| matches!(t, Some(TimeOrNow::At(_)));
            // utime(f, NULL) may touch an append-only file. Through FUSE's writeback cache
            // its "now" mtime arrives as a time; the atime beside it still says now.
            let now_both = matches!(set.atime, Some(TimeOrNow::Now));
            let append_ok = set.size.is_none()
                && set.mode.is_none()
                && set.uid.is_none()
                && set.gid.is_none()
                && !set.chown
                && !explicit(set.atime)
                && (now_both || !explicit(set.mtime));
            let ok = kernel_times || (flags & FL_IMMUTABLE == 0 && append_ok);
            if !ok {
                return Err(FsError::NotPermitted);
            }
        }
        if let Some(size) = set.size {
            if self.inode(ino)?.kind() == FileKind::Directory {
                return Err(FsError::IsDir);
            }
            self.truncate(ino, size)?;
        }
        if let Some(gid) = set.kill_privileges {
            self.kill_privileges(ino, Some(gid))?;
        }
        let t = now();
        let i = self.inode(ino)?;
        if let Some(mode) = set.mode {
            i.d.mode = (i.d.mode & S_IFMT) | (mode & 0o7777);
            self.chmod_acl(ino)?;
        }
        let i = self.inode(ino)?;
        let chown = set.chown || set.uid.is_some() || set.gid.is_some();
        if let Some(uid) = set.uid {
            i.d.uid = uid;
        }
        if let Some(gid) = set.gid {
            i.d.gid = gid;
        }
        if chown && set.mode.is_none() && i.kind() != FileKind::Directory {
            // As Linux's chown(2), whoever calls it and even to the same owner.
            i.d.mode = without_set_ids(i.d.mode);
        }
        if chown {
            self.drop_capability(ino)?;
        }
        let i = self.inode(ino)?;
        let pick = |x: TimeOrNow| match x {
            TimeOrNow::Now => t,
            TimeOrNow::At(ts) => ts,
        };
        if let Some(a) = set.atime {
            i.d.atime = pick(a);
        }
        if let Some(m) = set.mtime {
            i.d.mtime = pick(m);
        }
        i.d.ctime = set.ctime.unwrap_or(t);
        self.sync_due |= i.d.flags & FL_SYNC != 0;
        self.touch(ino);
        self.getattr(ino)
    }

    pub(crate) fn statfs(&self) -> StatFs {
        let sb = &self.st.sb;
        let total = sb.nsegs * sb.seg_blocks as u64;
        let reserve = sb.reserved_segs as u64 * sb.seg_blocks as u64;
        let pending = self.pending_blocks();
        // Dead space in full segments is free too: a writer that needs it gets it back by
        // cleaning (check_space), so df drops when files are deleted, as in F2FS. Not
        // counted: what a segment spends on summaries and an unusable tail (1/32 of it),
        // which moving its live blocks elsewhere costs again.
        let seg_blocks = sb.seg_blocks as u64;
        let reclaimable: u64 = self
            .st
            .usage
            .iter()
            .map(|(_, s)| match s.state {
                // Empty already; clean once the next checkpoint is durable.
                SegState::Freed => seg_blocks,
                SegState::Full => {
                    let live = s.live_bytes.div_ceil(BLOCK_BYTES).min(seg_blocks);
                    (seg_blocks - live).saturating_sub(seg_blocks / 32)
                }
                _ => 0,
            })
            .sum();
        let free = (self.st.free_blocks() + reclaimable).saturating_sub(pending);
        // The reserve is not part of the capacity users see, so free never exceeds total.
        // Nor is the room kept for what the kernel's writeback cache holds: a writer meets
        // ENOSPC when only that is left (`check_space`).
        let usable = total - reserve;
        let room = free.saturating_sub(reserve + self.cache_reserve + self.reservations.total());
        // Less what writing it costs the log besides the data (tree nodes, summaries,
        // inodes, segment tails: about 1.6%, counted generously as a 32nd), so that what df
        // says is free can be written — or preallocated in one fallocate, whose reservation
        // includes that overhead (reserve.rs).
        // (Free counts it, as ext4's free counts its reserved blocks: an empty filesystem
        // shows next to nothing used, and "available" is what can really be written.)
        let avail = (room - room / 32).min(usable);
        // Size and free count the cleaner's reserve as ext4's count the blocks kept for root
        // (available does not): every segment is in the size, so what FITRIM discards (all
        // clean segments, the reserve's among them) never exceeds it, and an empty
        // filesystem shows nothing used.
        let free_incl_reserve = free.saturating_sub(self.cache_reserve + self.reservations.total());
        StatFs {
            block_size: BLOCK_SIZE as u32,
            blocks: total,
            blocks_free: free_incl_reserve.min(total),
            blocks_avail: avail,
            files: self.imap.capacity() - 1,
            files_free: self.imap.capacity() - 1 - self.imap.allocated_count(),
            name_max: MAX_NAME_LEN as u32,
        }
    }

    /// Blocks a flush and checkpoint of everything dirty could need, generously.
    pub(crate) fn pending_blocks(&self) -> u64 {
        // Dirty blocks, and the tree nodes dirty or to be dirtied by writing them out (each
        // inode keeps that bound: `Inode::buffer`).
        let data = self.dirty_blocks + self.dirty_nodes;
        // Inode blocks, tombstones, imap and usage blocks, summaries and the tails of
        // segments the log skips.
        let inodes = (self.dirty_inodes.len() + self.tombstones.len()).div_ceil(15) as u64;
        let tables = self.imap.dirty_count() as u64
            + 2 * (self.imap.dirty_count() as u64).max(8)
            + self.st.usage.nblocks() as u64;
        let body = data + inodes + tables;
        body + body / 128 + 4 + 2 * (body / self.st.sb.seg_blocks as u64 + 1)
    }

    /// Refuse an operation that would add `new_blocks` when the log could not take them and
    /// still keep what `kind` must leave (see [`Admit`]): metadata operations may use half the
    /// cleaner's reserve, so deleting and renaming still work on a full disk; data from the
    /// kernel's writeback cache may use the cache reserve, kept for it from everything else.
    ///
    /// When the room is not there it is made: dirty state written out, freed segments
    /// reclaimed by a checkpoint, then foreground cleaning. A refusal is remembered, and the
    /// next writer that would need the same work is refused at once, until more than was
    /// lacking has died (a delete, a truncate): without that, a writer hammering a full disk
    /// (the kernel retrying writeback) made every refused write flush, checkpoint and clean
    /// again — tens of thousands of checkpoints and gigabytes rewritten for nothing.
    pub(crate) fn check_space(&mut self, new_blocks: u64, kind: Admit) -> Result<()> {
        self.check_space_credited(new_blocks, kind, 0)
    }

    /// [`check_space`](Self::check_space) for a write that may draw up to `credit` blocks
    /// from what fallocate reserved for it (`reserve.rs`).
    pub(crate) fn check_space_credited(
        &mut self,
        new_blocks: u64,
        kind: Admit,
        credit: u64,
    ) -> Result<()> {
        let sb = &self.st.sb;
        let cleaner = sb.reserved_segs as u64 * sb.seg_blocks as u64;
        // What fallocate promised is kept from everyone; a write into a reserved range
        // asks only for what its reservation does not cover (`Inner::write`).
        let promised = self.reservations.total().saturating_sub(credit);
        let reserve = promised
            + match kind {
                Admit::Meta => cleaner / 2 + self.cache_reserve,
                Admit::Cached => cleaner,
                Admit::Data => cleaner + self.cache_reserve,
            };
        let want = |me: &Self| me.pending_blocks() + new_blocks + reserve;
        if self.st.free_blocks() >= want(self) {
            return Ok(());
        }
        if let Some(m) = self.out_of_space {
            // Nothing changed that could help since the last refusal: not enough died, no
            // room appeared (the background cleaner makes some), no segment awaits release.
            let died = self.st.usage.killed_bytes - m.killed_bytes;
            if new_blocks + reserve >= m.asked_blocks
                && died <= m.lacking_bytes
                && self.st.free_blocks() <= m.free_blocks
                && self.st.usage.freed().is_empty()
            {
                return Err(FsError::NoSpace);
            }
        }
        let r = self.make_room(new_blocks, reserve);
        self.out_of_space = match r {
            Err(FsError::NoSpace) => Some(OutOfSpace {
                asked_blocks: new_blocks + reserve,
                free_blocks: self.st.free_blocks(),
                killed_bytes: self.st.usage.killed_bytes,
                lacking_bytes: want(self).saturating_sub(self.st.free_blocks()) * BLOCK_BYTES,
            }),
            _ => None,
        };
        r
    }

    /// The slow half of `check_space`: make `new_blocks` fit above `reserve`, or NoSpace.
    fn make_room(&mut self, new_blocks: u64, reserve: u64) -> Result<()> {
        if self.pending_blocks() > 64 {
            // The estimate for dirty state is pessimistic (every dirty inode may need four
            // indirect blocks); write it out and look at what it really took. Safe here:
            // callers check space before they change anything.
            self.flush_all()?;
            if self.st.free_blocks() >= self.pending_blocks() + new_blocks + reserve {
                return Ok(());
            }
        }
        if !self.st.usage.freed().is_empty() {
            // Segments that died entirely come back at the next checkpoint.
            self.checkpoint()?;
            if self.st.free_blocks() >= self.pending_blocks() + new_blocks + reserve {
                return Ok(());
            }
        }
        // Foreground cleaning: the writer waits while the cleaner makes room, as long as
        // passes gain free space. It cleans a burst (a pass's worth of segments beyond
        // what this write needs): back-to-back passes put the cleaner's output — old, cold
        // data — together in the log instead of interleaving it with the hot data being
        // written, which is what lets cost-benefit tell cold segments from hot ones.
        let Some(picker) = self.opts.cleaner.clone() else {
            return Err(FsError::NoSpace);
        };
        // At most a quarter of the dead space, though: on a nearly full disk a long burst
        // would squeeze segments that are almost all live.
        let dead: u64 = self
            .segment_views()
            .iter()
            .map(|v| v.dead_bytes() / BLOCK_BYTES)
            .sum();
        let burst =
            (self.opts.clean_segments_per_pass as u64 * self.st.sb.seg_blocks as u64).min(dead / 4);
        let want = |me: &Self| me.pending_blocks() + new_blocks + reserve;
        let mut stalls = 0;
        for _ in 0..64 {
            let mut views = self.segment_views();
            let max = self.opts.clean_segments_per_pass;
            let victims = if stalls == 0 {
                picker.pick(&views, crate::log::now_ns(), max)
            } else {
                // The policy's choice gained nothing (cost-benefit may prefer old segments
                // that are nearly full): the emptiest segments are the way out.
                views.retain(|v| v.live_bytes < v.seg_bytes);
                views.sort_by_key(|v| (v.live_bytes, v.segment));
                views.iter().take(max).map(|v| v.segment).collect()
            };
            if victims.is_empty() {
                break;
            }
            let before = self.st.free_blocks();
            match self.clean(&victims) {
                Ok(_) => {}
                // The pass put its victims back; whatever room there is decides.
                Err(FsError::NoSpace) => break,
                Err(e) => return Err(e),
            }
            let free = self.st.free_blocks();
            if free >= want(self) + burst {
                return Ok(());
            }
            // A pass over nearly full victims can lose ground (its metadata outweighs what
            // it frees); three in a row without a gain mean there is nothing to win.
            if free <= before {
                stalls += 1;
                if stalls == 3 {
                    if free < want(self) {
                        tracing::warn!("foreground cleaning gains nothing; out of space");
                    }
                    break;
                }
            } else {
                stalls = 0;
            }
        }
        if self.st.free_blocks() >= want(self) {
            return Ok(());
        }
        Err(FsError::NoSpace)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::device::{Device, MemDevice};
    use crate::fs::{Creds, Fs, MountOptions};
    use crate::{mkfs, MkfsOptions};
    use std::sync::Arc;

    /// What `pending_blocks` promises a flush needs, and what it then appended.
    fn promised_and_taken(fs: &Fs) -> (u64, u64) {
        let mut g = fs.lock();
        let promised = g.pending_blocks();
        let before = g.st.blocks_appended;
        g.flush_all().unwrap();
        (promised, g.st.blocks_appended - before)
    }

    #[test]
    fn the_space_bound_covers_what_a_flush_writes() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(256 << 20));
        mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let opts = MountOptions {
            writeback_blocks: u64::MAX,
            ..MountOptions::default()
        };
        let fs = Fs::mount(dev, opts).unwrap();
        // Single blocks far apart in a sparse file: each brings its own path of nodes, up
        // to the height-4 tree.
        let f = fs.create(1, b"sparse", 0o644, Creds::default()).unwrap();
        let mut x = 12345u64;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let block = (x >> 20) % ((1 << 32) - 1);
            fs.write(f.ino, block * 4096, &[7u8; 4096]).unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(taken > 300 * 3, "{taken}: the paths were written");
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // Overwriting the same blocks again: the nodes are there, and dirtied once each.
        for i in 0..300u64 {
            fs.write(f.ino, (12 + i * 511) * 4096, &[8u8; 4096])
                .unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // Many small files in one directory (direct blocks only, no nodes).
        for n in 0..2000 {
            let a = fs
                .create(1, format!("f{n}").as_bytes(), 0o644, Creds::default())
                .unwrap();
            fs.write(a.ino, 0, &[1u8; 100]).unwrap();
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        // And the bound is not wildly loose for dense data in 1 MiB files: within a
        // quarter of what the flush took (the old estimate asked for 4 nodes per file).
        for n in 0..100u64 {
            let a = fs
                .create(1, format!("m{n}").as_bytes(), 0o644, Creds::default())
                .unwrap();
            for b in 0..16u64 {
                fs.write(a.ino, (n * 13 + b * 16) % 256 * 4096, &[2u8; 4096])
                    .unwrap();
            }
        }
        let (promised, taken) = promised_and_taken(&fs);
        assert!(promised >= taken, "promised {promised}, flush took {taken}");
        assert!(
            promised * 4 <= taken * 5,
            "promised {promised}, flush took {taken}"
        );
    }
}
