//! Extended attributes: all of an inode's attributes in one block, loaded on first use.

use super::admission::Admit;
use super::inner::Inner;
use super::inode::now;
use super::types::{XATTR_CREATE, XATTR_REPLACE, XATTR_VALUE_MAX};
use crate::error::{FsError, Result};
use crate::format::inode::{FL_APPEND, FL_IMMUTABLE};
use crate::format::xattr::{
    decode_xattrs, xattrs_size, Xattrs, XATTR_CAPACITY, XATTR_ENTRY_HEADER,
};
use crate::format::{Ino, MAX_NAME_LEN};

/// Where Linux keeps a file's capabilities.
const XATTR_CAPABILITY: &[u8] = b"security.capability";

impl Inner {
    /// The cleaner: write the xattr block of `ino` again at the next flush.
    pub(crate) fn rewrite_xattrs(&mut self, ino: Ino) -> Result<()> {
        self.xattrs(ino)?;
        if let Some(i) = self.inodes.get_mut(ino) {
            i.xattr_dirty = true;
        }
        Ok(())
    }

    pub(super) fn xattrs(&mut self, ino: Ino) -> Result<&mut Xattrs> {
        self.load(ino)?;
        let Inner { inodes, st, .. } = self;
        let i = inodes.get_mut(ino).ok_or(FsError::Stale(ino))?;
        if i.xattrs.is_none() {
            let x = if i.d.xattr.is_none() {
                Xattrs::new()
            } else {
                let b = st.read_block(i.d.xattr)?;
                decode_xattrs(&b).map_err(FsError::corrupt("xattr block", i.d.xattr))?
            };
            i.xattrs = Some(x);
        }
        i.xattrs.as_mut().ok_or(FsError::Stale(ino))
    }

    pub(crate) fn getxattr(&mut self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        self.xattrs(ino)?.get(name).cloned().ok_or(FsError::NoAttr)
    }

    pub(crate) fn listxattr(&mut self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        Ok(self.xattrs(ino)?.keys().cloned().collect())
    }

    pub(crate) fn setxattr(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: u32,
        caller_gid: Option<u32>,
    ) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        self.deny_flagged(ino, FL_IMMUTABLE | FL_APPEND)?;
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(FsError::Invalid("unknown setxattr flags"));
        }
        if XATTR_ENTRY_HEADER + name.len() + value.len() > XATTR_CAPACITY {
            return Err(FsError::NoSpace);
        }
        if super::acl::is_acl(name) {
            return self.set_acl(ino, name, value, caller_gid);
        }
        self.check_space(2, Admit::Meta)?;
        let x = self.xattrs(ino)?;
        let exists = x.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        let old = x.insert(name.to_vec(), value.to_vec());
        if xattrs_size(x) > XATTR_CAPACITY {
            // Undo: the set does not fit in the inode's xattr block.
            match old {
                Some(v) => x.insert(name.to_vec(), v),
                None => x.remove(name),
            };
            return Err(FsError::NoSpace);
        }
        let i = self.inode(ino)?;
        i.xattr_dirty = true;
        i.d.ctime = now();
        self.touch(ino);
        Ok(())
    }

    /// Drop the file capability (`security.capability`), as Linux does when a file is written,
    /// truncated or given to another owner, so that a changed binary does not keep its
    /// privileges. Under FUSE_HANDLE_KILLPRIV_V2 the kernel leaves this to the filesystem.
    /// Cheap when the inode has no attributes: nothing is loaded.
    pub(crate) fn drop_capability(&mut self, ino: Ino) -> Result<()> {
        let i = self.inode(ino)?;
        let maybe = match &i.xattrs {
            Some(x) => x.contains_key(XATTR_CAPABILITY),
            None => !i.d.xattr.is_none(),
        };
        if maybe && self.xattrs(ino)?.remove(XATTR_CAPABILITY).is_some() {
            self.inode(ino)?.xattr_dirty = true;
            self.touch(ino);
        }
        Ok(())
    }

    pub(crate) fn removexattr(&mut self, ino: Ino, name: &[u8]) -> Result<()> {
        check_xattr_name(name)?;
        self.deny_flagged(ino, FL_IMMUTABLE | FL_APPEND)?;
        self.xattrs(ino)?.remove(name).ok_or(FsError::NoAttr)?;
        let i = self.inode(ino)?;
        i.xattr_dirty = true;
        i.d.ctime = now();
        self.touch(ino);
        Ok(())
    }
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(FsError::Invalid("empty attribute name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::Range);
    }
    // The namespaces Linux knows; ext4 and XFS refuse the rest the same way.
    const NAMESPACES: [&[u8]; 4] = [b"user.", b"trusted.", b"security.", b"system."];
    if !NAMESPACES
        .iter()
        .any(|ns| name.starts_with(ns) && name.len() > ns.len())
    {
        return Err(FsError::NotSupported);
    }
    Ok(())
}
