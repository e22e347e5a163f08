//! Inodes, packed fifteen to an inode block. A slot with mode 0 is a tombstone that records
//! the freeing of an inode number, so roll-forward can free it too.

use super::*;

/// Bytes per on-disk inode.
pub const INODE_SIZE: usize = 256;
/// Inodes per inode block.
pub const INODES_PER_BLOCK: usize = 15;
/// Direct block pointers in an inode.
pub const NDIRECT: usize = 12;
/// Indirect tree roots (heights 1..=4).
pub const NINDIRECT: usize = 4;
/// Largest file size the engine allows (16 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 44;

const OFF_COUNT: usize = 6;
const OFF_SLOTS: usize = 16;
const _: () = assert!(OFF_SLOTS + INODES_PER_BLOCK * INODE_SIZE <= CRC_OFF);

// Offsets inside one inode.
const I_INO: usize = 0;
const I_VERSION: usize = 8;
const I_MODE: usize = 12;
const I_NLINK: usize = 16;
const I_UID: usize = 20;
const I_GID: usize = 24;
const I_FLAGS: usize = 28;
const I_SIZE: usize = 32;
const I_BLOCKS: usize = 40;
const I_SECS: usize = 48;
const I_NSECS: usize = 80;
const I_RDEV: usize = 96;
const I_XATTR: usize = 104;
const I_DIRECT: usize = 112;
const I_INDIRECT: usize = 208;
const I_PARENT: usize = 240;
const _: () = assert!(I_INDIRECT + 8 * NINDIRECT == I_PARENT && I_PARENT + 16 == INODE_SIZE);

/// File type bits of st_mode.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

/// Inode flags (the `flags` field), numbered as Linux's FS_IOC_GETFLAGS numbers them and as
/// chattr(1) sets them. Only these are kept; others are refused (EOPNOTSUPP).
/// `S`: writes are durable when write(2) returns.
pub const FL_SYNC: u32 = 0x8;
/// `i`: no change at all: data, attributes, names, links, xattrs.
pub const FL_IMMUTABLE: u32 = 0x10;
/// `a`: data may only be appended; no truncate, rename, unlink, link, chmod, chown, xattr.
pub const FL_APPEND: u32 = 0x20;
/// `d`: a hint for dump(8); nothing else.
pub const FL_NODUMP: u32 = 0x40;
/// `A`: reads leave atime alone.
pub const FL_NOATIME: u32 = 0x80;
/// `D` (directories): changes of names are durable when the call returns.
pub const FL_DIRSYNC: u32 = 0x10000;
pub const FL_KNOWN: u32 = FL_SYNC | FL_IMMUTABLE | FL_APPEND | FL_NODUMP | FL_NOATIME | FL_DIRSYNC;
/// What a new inode takes from its directory, as on ext4 (never `i` or `a`; `D` only for
/// directories).
pub const FL_INHERITED: u32 = FL_SYNC | FL_NODUMP | FL_NOATIME | FL_DIRSYNC;

/// The type of a file, as stored in directory entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum FileKind {
    Regular = 1,
    Directory = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl FileKind {
    pub fn from_u8(v: u8) -> Option<FileKind> {
        Some(match v {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDevice,
            7 => FileKind::BlockDevice,
            _ => return None,
        })
    }
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::Regular,
            S_IFDIR => FileKind::Directory,
            S_IFLNK => FileKind::Symlink,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => S_IFREG,
            FileKind::Directory => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
            FileKind::Fifo => S_IFIFO,
            FileKind::Socket => S_IFSOCK,
            FileKind::CharDevice => S_IFCHR,
            FileKind::BlockDevice => S_IFBLK,
        }
    }
}

/// Seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Timespec {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (sec, nsec) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                };
                Timespec { sec, nsec }
            }
        }
    }
}

/// One inode as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskInode {
    pub ino: Ino,
    pub version: u32,
    /// st_mode; 0 marks a tombstone.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// chattr flags (`FL_*`); older builds left this 0 and ignore it.
    pub flags: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub rdev: u64,
    pub xattr: BlockAddr,
    pub direct: [BlockAddr; NDIRECT],
    pub indirect: [BlockAddr; NINDIRECT],
    pub parent: Ino,
}

impl DiskInode {
    pub fn tombstone(ino: Ino, version: u32) -> DiskInode {
        DiskInode {
            ino,
            version,
            ..Default::default()
        }
    }
    pub fn is_tombstone(&self) -> bool {
        self.mode == 0
    }
    pub fn kind(&self) -> Option<FileKind> {
        FileKind::from_mode(self.mode)
    }

    /// Write this inode into `s` (its 256 bytes: a slot of a block).
    pub fn encode_into(&self, s: &mut [u8]) {
        put_u64(s, I_INO, self.ino.get());
        put_u32(s, I_VERSION, self.version);
        put_u32(s, I_MODE, self.mode);
        put_u32(s, I_NLINK, self.nlink);
        put_u32(s, I_UID, self.uid);
        put_u32(s, I_GID, self.gid);
        put_u32(s, I_FLAGS, self.flags);
        put_u64(s, I_SIZE, self.size);
        put_u64(s, I_BLOCKS, self.blocks);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.crtime]
            .iter()
            .enumerate()
        {
            put_u64(s, I_SECS + 8 * i, t.sec as u64);
            put_u32(s, I_NSECS + 4 * i, t.nsec);
        }
        put_u64(s, I_RDEV, self.rdev);
        put_u64(s, I_XATTR, self.xattr.get());
        for (i, p) in self.direct.iter().enumerate() {
            put_u64(s, I_DIRECT + 8 * i, p.get());
        }
        for (i, p) in self.indirect.iter().enumerate() {
            put_u64(s, I_INDIRECT + 8 * i, p.get());
        }
        put_u64(s, I_PARENT, self.parent.get());
    }

    /// The inode in `s` (its 256 bytes), slot `slot` of its block (for the message).
    pub fn decode_from(s: &[u8], slot: usize) -> Result<DiskInode, FormatError> {
        const W: &str = "inode";
        let t = |i: usize| Timespec {
            sec: get_u64(s, I_SECS + 8 * i) as i64,
            nsec: get_u32(s, I_NSECS + 4 * i),
        };
        let mut direct = [BlockAddr::NONE; NDIRECT];
        for (i, p) in direct.iter_mut().enumerate() {
            *p = BlockAddr(get_u64(s, I_DIRECT + 8 * i));
        }
        let mut indirect = [BlockAddr::NONE; NINDIRECT];
        for (i, p) in indirect.iter_mut().enumerate() {
            *p = BlockAddr(get_u64(s, I_INDIRECT + 8 * i));
        }
        let inode = DiskInode {
            ino: Ino(get_u64(s, I_INO)),
            version: get_u32(s, I_VERSION),
            mode: get_u32(s, I_MODE),
            nlink: get_u32(s, I_NLINK),
            uid: get_u32(s, I_UID),
            gid: get_u32(s, I_GID),
            flags: get_u32(s, I_FLAGS),
            size: get_u64(s, I_SIZE),
            blocks: get_u64(s, I_BLOCKS),
            atime: t(0),
            mtime: t(1),
            ctime: t(2),
            crtime: t(3),
            rdev: get_u64(s, I_RDEV),
            xattr: BlockAddr(get_u64(s, I_XATTR)),
            direct,
            indirect,
            parent: Ino(get_u64(s, I_PARENT)),
        };
        if inode.ino.get() == 0 {
            return Err(FormatError::invalid(
                W,
                format!("slot {slot}: inode number 0"),
            ));
        }
        if !inode.is_tombstone() {
            if inode.kind().is_none() {
                return Err(FormatError::invalid(
                    W,
                    format!("inode {}: bad mode {:o}", inode.ino, inode.mode),
                ));
            }
            if inode.size > MAX_FILE_SIZE {
                return Err(FormatError::invalid(
                    W,
                    format!("inode {}: size {} too large", inode.ino, inode.size),
                ));
            }
            let times = [inode.atime, inode.mtime, inode.ctime, inode.crtime];
            if times.iter().any(|t| t.nsec >= 1_000_000_000) {
                return Err(FormatError::invalid(
                    W,
                    format!("inode {}: bad nanoseconds", inode.ino),
                ));
            }
        }
        Ok(inode)
    }
}

/// Encode up to fifteen inodes into one inode block.
pub fn encode_inode_block(inodes: &[DiskInode]) -> Vec<u8> {
    debug_assert!(!inodes.is_empty() && inodes.len() <= INODES_PER_BLOCK);
    let mut b = new_block(MAGIC_INODE_BLOCK);
    let n = inodes.len().min(INODES_PER_BLOCK);
    put_u16(&mut b, OFF_COUNT, n as u16);
    for (i, inode) in inodes.iter().take(n).enumerate() {
        let o = OFF_SLOTS + i * INODE_SIZE;
        inode.encode_into(&mut b[o..o + INODE_SIZE]);
    }
    seal(&mut b);
    b
}

/// Decode an inode block into its slots, in slot order.
pub fn decode_inode_block(b: &[u8]) -> Result<Vec<DiskInode>, FormatError> {
    check_block(b, "inode block", MAGIC_INODE_BLOCK)?;
    let n = get_u16(b, OFF_COUNT) as usize;
    if n == 0 || n > INODES_PER_BLOCK {
        return Err(FormatError::invalid(
            "inode block",
            format!("count {n} out of range"),
        ));
    }
    (0..n)
        .map(|i| {
            let o = OFF_SLOTS + i * INODE_SIZE;
            DiskInode::decode_from(&b[o..o + INODE_SIZE], i)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(ino: u64) -> DiskInode {
        DiskInode {
            ino: Ino(ino),
            version: 3,
            mode: S_IFREG | 0o644,
            nlink: 2,
            uid: 1000,
            gid: 100,
            flags: 0,
            size: 5 << 30,
            blocks: 99,
            atime: Timespec { sec: -5, nsec: 1 },
            mtime: Timespec {
                sec: 1_700_000_000,
                nsec: 999_999_999,
            },
            ctime: Timespec { sec: 2, nsec: 3 },
            crtime: Timespec { sec: 4, nsec: 5 },
            rdev: 0x0801,
            xattr: BlockAddr(777),
            direct: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map(BlockAddr),
            indirect: [13, 14, 15, 16].map(BlockAddr),
            parent: Ino(1),
        }
    }

    #[test]
    fn round_trip_with_tombstone() {
        let mut v: Vec<DiskInode> = (1..=14).map(sample).collect();
        v.push(DiskInode::tombstone(Ino(99), 7));
        let back = decode_inode_block(&encode_inode_block(&v)).expect("decode");
        assert_eq!(back, v);
        assert!(back[14].is_tombstone());
    }

    #[test]
    fn corruption_detected() {
        let v: Vec<DiskInode> = (1..=3).map(sample).collect();
        crate::format::testutil::assert_bitflips_detected(
            &encode_inode_block(&v),
            decode_inode_block,
        );
    }

    #[test]
    fn insane_fields_refused_even_with_good_crc() {
        let mut s = sample(5);
        s.size = MAX_FILE_SIZE + 1;
        assert!(decode_inode_block(&encode_inode_block(&[s])).is_err());
        let mut s = sample(5);
        s.mode = 0o644; // no type bits
        assert!(decode_inode_block(&encode_inode_block(&[s])).is_err());
        let mut s = sample(5);
        s.mtime.nsec = 1_000_000_000;
        assert!(decode_inode_block(&encode_inode_block(&[s])).is_err());
    }

    #[test]
    fn kinds_round_trip_through_mode() {
        for k in 1..=7u8 {
            let kind = FileKind::from_u8(k).expect("kind");
            assert_eq!(FileKind::from_mode(kind.mode_bits() | 0o755), Some(kind));
        }
    }
}
