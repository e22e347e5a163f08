//! POSIX ACLs, as ext4 keeps them (the byte form and the arithmetic are in `format/acl.rs`).
//!
//! The kernel enforces ACLs itself once lfs-fuse asks for FUSE_POSIX_ACL; what it leaves to
//! the filesystem, and what lives here: an access ACL that the mode says all of is not
//! stored but becomes the mode (`cp -a` and `tar` set modes that way), any other sets the
//! mode's group bits from its mask; chmod updates the stored ACL; a new file or directory
//! inherits its directory's default ACL (then the umask does not apply), a new directory
//! the default ACL too; a default ACL belongs to directories only.

use super::admission::Admit;
use super::inner::Inner;
use super::inode::now;
use super::ops::S_ISGID;
use crate::error::{FsError, Result};
use crate::format::acl::Acl;
use crate::format::inode::{FileKind, S_IFMT};
use crate::format::xattr::{xattrs_size, XATTR_CAPACITY};
use crate::format::{FormatError, Ino};

pub(crate) const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub(crate) const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// What a new inode takes from its directory: permission bits, and ACLs to store.
pub(crate) struct Inherited {
    pub perm: u32,
    pub access: Option<Vec<u8>>,
    pub default: Option<Vec<u8>>,
}

pub(crate) fn is_acl(name: &[u8]) -> bool {
    name == ACL_ACCESS || name == ACL_DEFAULT
}

impl Inner {
    /// A stored ACL, decoded; bytes that do not decode are damage, not an ACL.
    fn stored_acl(&mut self, ino: Ino, name: &'static [u8]) -> Result<Option<Acl>> {
        let i = self.inode(ino)?;
        if i.xattrs.is_none() && i.d.xattr.is_none() {
            return Ok(None);
        }
        let addr = i.d.xattr;
        match self.xattrs(ino)?.get(name) {
            None => Ok(None),
            Some(v) => Acl::decode(v).map(Some).map_err(|e| FsError::Corrupt {
                what: "xattr block",
                addr,
                source: FormatError::invalid("POSIX ACL", e.to_string()),
            }),
        }
    }

    /// setxattr of `system.posix_acl_access` or `_default` (an empty value removes it), by a
    /// caller in group `caller_gid` (None: privileged). Setting an access ACL changes the
    /// mode, and a caller outside the file's group loses its set-group-ID bit, as chmod does
    /// (`posix_acl_update_mode`).
    pub(crate) fn set_acl(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        caller_gid: Option<u32>,
    ) -> Result<()> {
        let acl = if value.is_empty() {
            None
        } else {
            Some(Acl::decode(value).map_err(|_| FsError::Invalid("malformed POSIX ACL"))?)
        };
        let is_dir = self.inode(ino)?.kind() == FileKind::Directory;
        if name == ACL_DEFAULT && !is_dir {
            return match acl {
                Some(_) => Err(FsError::AccessDenied),
                None => Ok(()),
            };
        }
        self.check_space(2, Admit::Meta)?;
        let mut perm = None;
        let mut store = acl.as_ref().map(Acl::encode);
        if name == ACL_ACCESS {
            if let Some(a) = &acl {
                let (p, equivalent) = a.mode();
                perm = Some(p);
                if equivalent {
                    store = None;
                }
            }
        }
        let x = self.xattrs(ino)?;
        match store {
            Some(v) => {
                let old = x.insert(name.to_vec(), v);
                if xattrs_size(x) > XATTR_CAPACITY {
                    match old {
                        Some(v) => x.insert(name.to_vec(), v),
                        None => x.remove(name),
                    };
                    return Err(FsError::NoSpace);
                }
            }
            None => {
                x.remove(name);
            }
        }
        let i = self.inode(ino)?;
        if let Some(p) = perm {
            i.d.mode = (i.d.mode & !0o777) | p;
            if caller_gid.is_some_and(|g| g != i.d.gid) {
                i.d.mode &= !S_ISGID;
            }
        }
        i.xattr_dirty = true;
        i.d.ctime = now();
        self.touch(ino);
        Ok(())
    }

    /// After a chmod: the stored access ACL follows the new permission bits.
    pub(crate) fn chmod_acl(&mut self, ino: Ino) -> Result<()> {
        let Some(mut acl) = self.stored_acl(ino, ACL_ACCESS)? else {
            return Ok(());
        };
        let mode = self.inode(ino)?.d.mode;
        acl.chmod(mode);
        self.xattrs(ino)?.insert(ACL_ACCESS.to_vec(), acl.encode());
        self.inode(ino)?.xattr_dirty = true;
        Ok(())
    }

    /// The permission bits and ACLs a new inode of `mode` (type and permissions, as asked)
    /// gets in `parent`: the default ACL masked by the mode if the directory has one, else
    /// the mode less `umask`.
    pub(crate) fn inherit_acl(&mut self, parent: Ino, mode: u32, umask: u32) -> Result<Inherited> {
        let symlink = mode & S_IFMT == crate::format::inode::S_IFLNK;
        let def = if symlink {
            None
        } else {
            self.stored_acl(parent, ACL_DEFAULT)?
        };
        let Some(def) = def else {
            let perm = if symlink {
                mode & 0o7777
            } else {
                mode & 0o7777 & !umask
            };
            return Ok(Inherited {
                perm,
                access: None,
                default: None,
            });
        };
        let (bits, access) = def.inherit(mode);
        let is_dir = mode & S_IFMT == crate::format::inode::S_IFDIR;
        Ok(Inherited {
            perm: (mode & 0o7000) | bits,
            access: access.map(|a| a.encode()),
            default: is_dir.then(|| def.encode()),
        })
    }

    /// Store what `inherit_acl` gave a new inode.
    pub(crate) fn store_inherited(&mut self, ino: Ino, inh: Inherited) -> Result<()> {
        if inh.access.is_none() && inh.default.is_none() {
            return Ok(());
        }
        let x = self.xattrs(ino)?;
        if let Some(a) = inh.access {
            x.insert(ACL_ACCESS.to_vec(), a);
        }
        if let Some(d) = inh.default {
            x.insert(ACL_DEFAULT.to_vec(), d);
        }
        // The directory's own default ACL fitted its block; twice it may not. Keep the
        // access ACL then: it is what enforces the permissions.
        if xattrs_size(x) > XATTR_CAPACITY {
            x.remove(ACL_DEFAULT);
        }
        self.inode(ino)?.xattr_dirty = true;
        Ok(())
    }
}
