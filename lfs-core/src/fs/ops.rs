//! Namespace operations: lookup, create, link, unlink, rmdir, rename, readdir, setattr,
//! statfs. Each runs under the filesystem lock, so it is atomic with respect to flushes.

use super::admission::Admit;
use super::inner::Inner;
use super::inode::now;
use super::types::{
    Attr, Creds, DirEntryOut, SetAttr, TimeOrNow, LINK_MAX, RENAME_EXCHANGE, RENAME_NOREPLACE,
    RENAME_WHITEOUT, SYMLINK_MAX,
};
use crate::dir::FIRST_ENTRY_COOKIE;
use crate::error::Damage;
use crate::error::{FsError, Result};
use crate::format::dir::{valid_name, DirEntry};
use crate::format::inode::{
    FileKind, FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_SYNC, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT,
    S_IFREG,
};
use crate::format::{Ino, BLOCK_SIZE, MAX_NAME_LEN, ROOT_INO};

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
    fn touch_dir_times(&mut self, dir: Ino) {
        let t = now();
        if let Some(i) = self.inodes.get_mut(dir) {
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
    pub(crate) fn deny_flagged(&mut self, ino: Ino, mask: u32) -> Result<()> {
        if self.inode(ino)?.d.flags & mask != 0 {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    pub(crate) fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr> {
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
    fn add_entry(&mut self, parent: Ino, name: &[u8], ino: Ino, kind: FileKind) -> Result<()> {
        self.dir(parent)?.insert(DirEntry {
            ino,
            kind,
            name: name.to_vec(),
        });
        self.touch_dir_times(parent);
        Ok(())
    }

    /// Common checks before creating `name` in `parent`.
    fn prepare_create(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
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
    fn new_owner(&mut self, parent: Ino, creds: Creds, mode: &mut u32) -> Result<(u32, u32)> {
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
        parent: Ino,
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
        parent: Ino,
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
        parent: Ino,
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

    pub(crate) fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        if i.kind() != FileKind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        let size = i.d.size;
        // The size comes from disk: a damaged one must not size an allocation.
        if size == 0 || size > SYMLINK_MAX as u64 {
            return Err(Damage::SymlinkSize { ino, size }.into());
        }
        self.read_raw(ino, 0, size)
    }

    pub(crate) fn link(&mut self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Attr> {
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
    pub(crate) fn tmpfile(&mut self, parent: Ino, perm: u32, creds: Creds) -> Result<Attr> {
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

    pub(crate) fn unlink(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
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

    pub(crate) fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
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
    fn is_ancestor(&mut self, ancestor: Ino, mut ino: Ino) -> Result<bool> {
        let from = ino;
        for _ in 0..100_000 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            ino = self.inode(ino)?.d.parent;
        }
        Err(Damage::ParentChainBroken { ino: from }.into())
    }

    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
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
        p1: Ino,
        n1: &[u8],
        e1: &DirEntry,
        p2: Ino,
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
        ino: Ino,
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
    pub(crate) fn kill_privileges(&mut self, ino: Ino, caller_gid: Option<u32>) -> Result<bool> {
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

    pub(crate) fn setattr(&mut self, ino: Ino, set: &SetAttr) -> Result<Attr> {
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
}
