//! POSIX ACLs in the form Linux passes them through the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs (include/uapi/linux/posix_acl_xattr.h), which is also
//! how they are stored: a 4-byte little-endian version (2), then 8-byte entries
//! `{ tag: u16, perm: u16, id: u32 }`, sorted by tag then id. Pure decode, validate and
//! encode, and the two pieces of ACL arithmetic a filesystem owes the kernel: the mode an
//! ACL implies (and whether the mode says it all), and the ACL a new file inherits
//! (`posix_acl_create` in fs/posix_acl.c). The kernel enforces ACLs itself (FUSE_POSIX_ACL).

/// The one version Linux writes and reads.
pub const ACL_XATTR_VERSION: u32 = 2;
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
/// The id of entries that have none (USER_OBJ, GROUP_OBJ, MASK, OTHER).
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// Longest ACL we accept: Linux's limit for a 64 KiB xattr is far higher, but an ACL this
/// long already fills an inode's whole xattr block.
pub const ACL_MAX_ENTRIES: usize = 500;

const HEADER_BYTES: usize = 4;
const ENTRY_BYTES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A validated ACL: entries sorted, each tag where POSIX allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(pub Vec<AclEntry>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("ACL of {0} bytes is not a header and whole entries")]
    Length(usize),
    #[error("ACL version {0}, expected 2")]
    Version(u32),
    #[error("ACL has {0} entries, more than {ACL_MAX_ENTRIES}")]
    TooLong(usize),
    #[error("ACL entry {0} is invalid (tag, permissions or order)")]
    Entry(usize),
    #[error("ACL lacks a required entry (owner, group, other, or the mask named entries need)")]
    Incomplete,
}

impl Acl {
    /// Decode and validate, as `posix_acl_from_xattr` + `posix_acl_valid` do.
    pub fn decode(b: &[u8]) -> Result<Acl, AclError> {
        if b.len() < HEADER_BYTES || !(b.len() - HEADER_BYTES).is_multiple_of(ENTRY_BYTES) {
            return Err(AclError::Length(b.len()));
        }
        let version = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if version != ACL_XATTR_VERSION {
            return Err(AclError::Version(version));
        }
        let n = (b.len() - HEADER_BYTES) / ENTRY_BYTES;
        if n > ACL_MAX_ENTRIES {
            return Err(AclError::TooLong(n));
        }
        let entries: Vec<AclEntry> = b[HEADER_BYTES..]
            .chunks_exact(ENTRY_BYTES)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let acl = Acl(entries);
        acl.validate()?;
        Ok(acl)
    }

    /// `posix_acl_valid`: one USER_OBJ, GROUP_OBJ and OTHER; named entries sorted by id,
    /// unique; a MASK exactly when there are named entries; permissions within rwx.
    fn validate(&self) -> Result<(), AclError> {
        let (mut user_obj, mut group_obj, mut other, mut mask, mut named) = (0, 0, 0, 0, 0);
        let mut prev: Option<(u16, u32)> = None;
        for (i, e) in self.0.iter().enumerate() {
            if e.perm & !7 != 0 {
                return Err(AclError::Entry(i));
            }
            let order_key = (
                e.tag,
                if matches!(e.tag, ACL_USER | ACL_GROUP) {
                    e.id
                } else {
                    0
                },
            );
            if prev.is_some_and(|p| p >= order_key) {
                return Err(AclError::Entry(i));
            }
            prev = Some(order_key);
            match e.tag {
                ACL_USER_OBJ => user_obj += 1,
                ACL_GROUP_OBJ => group_obj += 1,
                ACL_OTHER => other += 1,
                ACL_MASK => mask += 1,
                ACL_USER | ACL_GROUP => named += 1,
                _ => return Err(AclError::Entry(i)),
            }
        }
        if user_obj != 1 || group_obj != 1 || other != 1 || (named > 0 && mask != 1) {
            return Err(AclError::Incomplete);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + ENTRY_BYTES * self.0.len());
        b.extend_from_slice(&ACL_XATTR_VERSION.to_le_bytes());
        for e in &self.0 {
            b.extend_from_slice(&e.tag.to_le_bytes());
            b.extend_from_slice(&e.perm.to_le_bytes());
            let id = if matches!(e.tag, ACL_USER | ACL_GROUP) {
                e.id
            } else {
                ACL_UNDEFINED_ID
            };
            b.extend_from_slice(&id.to_le_bytes());
        }
        b
    }

    fn perm(&self, tag: u16) -> Option<u16> {
        self.0.iter().find(|e| e.tag == tag).map(|e| e.perm)
    }

    /// The permission bits (0o777) the ACL implies, and whether the mode says all of it
    /// (only the three base entries: then no ACL need be stored), as `posix_acl_equiv_mode`.
    pub fn mode(&self) -> (u32, bool) {
        let user = self.perm(ACL_USER_OBJ).unwrap_or(0) as u32;
        let group = self
            .perm(ACL_MASK)
            .or(self.perm(ACL_GROUP_OBJ))
            .unwrap_or(0) as u32;
        let other = self.perm(ACL_OTHER).unwrap_or(0) as u32;
        let equivalent = self.0.len() == 3;
        (user << 6 | group << 3 | other, equivalent)
    }

    /// After chmod: the owner, group (the mask if there is one) and other entries take the
    /// new permission bits, as `__posix_acl_chmod`.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.0.iter().any(|e| e.tag == ACL_MASK);
        for e in &mut self.0 {
            match e.tag {
                ACL_USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                ACL_GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
                ACL_MASK => e.perm = ((mode >> 3) & 7) as u16,
                ACL_OTHER => e.perm = (mode & 7) as u16,
                _ => {}
            }
        }
    }

    /// A new file's access ACL from its directory's default ACL and the mode it was created
    /// with (no umask: a default ACL replaces it), as `posix_acl_create_masq`. Returns the
    /// permission bits the file gets, and the access ACL to store unless the mode says it
    /// all.
    pub fn inherit(&self, mode: u32) -> (u32, Option<Acl>) {
        let mut acl = self.clone();
        let mut m = mode & 0o777;
        let mut not_equiv = false;
        let (mut group_obj, mut mask) = (None, None);
        for (i, e) in acl.0.iter_mut().enumerate() {
            match e.tag {
                ACL_USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m &= ((e.perm as u32) << 6) | !0o700;
                }
                ACL_USER | ACL_GROUP => not_equiv = true,
                ACL_GROUP_OBJ => group_obj = Some(i),
                ACL_OTHER => {
                    e.perm &= (m & 7) as u16;
                    m &= e.perm as u32 | !0o7;
                }
                ACL_MASK => {
                    mask = Some(i);
                    not_equiv = true;
                }
                _ => {}
            }
        }
        if let Some(i) = mask.or(group_obj) {
            let e = &mut acl.0[i];
            e.perm &= ((m >> 3) & 7) as u16;
            m &= ((e.perm as u32) << 3) | !0o070;
        }
        (m & 0o777, not_equiv.then_some(acl))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    fn base(u: u16, g: u16, o: u16) -> Vec<AclEntry> {
        vec![
            e(ACL_USER_OBJ, u, ACL_UNDEFINED_ID),
            e(ACL_GROUP_OBJ, g, ACL_UNDEFINED_ID),
            e(ACL_OTHER, o, ACL_UNDEFINED_ID),
        ]
    }

    #[test]
    fn round_trip_and_validation() {
        let mut v = base(7, 5, 4);
        v.insert(1, e(ACL_USER, 6, 1234));
        v.insert(3, e(ACL_MASK, 7, ACL_UNDEFINED_ID));
        let acl = Acl(v);
        let b = acl.encode();
        assert_eq!(Acl::decode(&b).unwrap(), acl);
        assert_eq!(acl.mode(), (0o774, false));
        assert_eq!(Acl(base(6, 4, 4)).mode(), (0o644, true));
        // Damage of every kind is refused, never trusted.
        assert_eq!(Acl::decode(&b[..7]), Err(AclError::Length(7)));
        let mut bad = b.clone();
        bad[0] = 1;
        assert_eq!(Acl::decode(&bad), Err(AclError::Version(1)));
        let no_mask = Acl(vec![
            e(ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            e(ACL_USER, 6, 1234),
            e(ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 4, ACL_UNDEFINED_ID),
        ]);
        assert_eq!(Acl::decode(&no_mask.encode()), Err(AclError::Incomplete));
        let unsorted = Acl(vec![
            e(ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            e(ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 4, ACL_UNDEFINED_ID),
        ]);
        assert!(matches!(
            Acl::decode(&unsorted.encode()),
            Err(AclError::Entry(1))
        ));
        let mut perm = base(7, 5, 4);
        perm[0].perm = 8;
        assert!(Acl::decode(&Acl(perm).encode()).is_err());
    }

    #[test]
    fn chmod_moves_the_mask_not_the_group_entry() {
        let mut acl = Acl(vec![
            e(ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            e(ACL_USER, 7, 1234),
            e(ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            e(ACL_MASK, 7, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 5, ACL_UNDEFINED_ID),
        ]);
        acl.chmod(0o640);
        assert_eq!(acl.mode(), (0o640, false));
        assert_eq!(acl.perm(ACL_GROUP_OBJ), Some(5));
        assert_eq!(acl.perm(ACL_MASK), Some(4));
    }

    #[test]
    fn inheritance_masks_the_default_acl_with_the_create_mode() {
        // default: u::rwx,u:1234:rwx,g::r-x,m::rwx,o::r-x; open(O_CREAT, 0666)
        let def = Acl(vec![
            e(ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
            e(ACL_USER, 7, 1234),
            e(ACL_GROUP_OBJ, 5, ACL_UNDEFINED_ID),
            e(ACL_MASK, 7, ACL_UNDEFINED_ID),
            e(ACL_OTHER, 5, ACL_UNDEFINED_ID),
        ]);
        let (mode, acl) = def.inherit(0o666);
        assert_eq!(mode, 0o664);
        let acl = acl.unwrap();
        assert_eq!(acl.perm(ACL_USER_OBJ), Some(6));
        assert_eq!(acl.perm(ACL_MASK), Some(6));
        assert_eq!(acl.perm(ACL_OTHER), Some(4));
        assert_eq!(acl.perm(ACL_GROUP_OBJ), Some(5), "masked by the mask, kept");
        // A default ACL of the three base entries gives only a mode.
        assert_eq!(Acl(base(7, 5, 0)).inherit(0o777), (0o750, None));
    }
}
