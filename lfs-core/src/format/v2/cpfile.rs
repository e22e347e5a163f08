//! The cpfile (docs/FORMAT-V2.md §10): one 512-byte entry per checkpoint, eight to a block;
//! checkpoint `c` is slot `c mod 8` of cpfile block `c / 8`. cpfile blocks are virtual (their
//! checksum is in the DAT) and stored twice, so a block is eight entries and nothing else.

use super::{get_u32, get_u64, put_u32, put_u64};
use crate::format::{Cno, FormatError, BLOCK_SIZE};

pub const ENTRY_SIZE: usize = 512;
pub const ENTRIES_PER_BLOCK: usize = BLOCK_SIZE / ENTRY_SIZE;
const _: () = assert!(ENTRIES_PER_BLOCK == 8);
/// Bytes of an inode (the ifile's, as of the checkpoint).
pub const INODE_BYTES: usize = 256;
pub const NAME_MAX: usize = 64;

/// Kept until released.
pub const CP_SNAPSHOT: u32 = 1;
/// Kept until `created_ns + protect_secs` (decided when the checkpoint is made).
pub const CP_PROTECTED: u32 = 2;
/// Made by a timer, not asked for.
pub const CP_MINOR: u32 = 4;
/// Made by mount after roll-forward; names what it discarded; never deleted.
pub const CP_RECOVERED: u32 = 8;
const FLAGS_KNOWN: u32 = CP_SNAPSHOT | CP_PROTECTED | CP_MINOR | CP_RECOVERED;

const OFF_FLAGS: usize = 8;
const OFF_CREATED: usize = 16;
const OFF_NBLOCKS: usize = 24;
const OFF_NINODES: usize = 32;
const OFF_NAME: usize = 40;
const OFF_INODE: usize = OFF_NAME + NAME_MAX;
const OFF_REC_LOG: usize = OFF_INODE + INODE_BYTES;
const OFF_REC_SEQ: usize = OFF_REC_LOG + 8;
const OFF_RESERVED: usize = OFF_REC_SEQ + 8;
const _: () = assert!(OFF_RESERVED == 376);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpEntry {
    /// `Cno(0)`: the slot is unused or the checkpoint was deleted.
    pub cno: Cno,
    pub flags: u32,
    pub created_ns: u64,
    pub nblocks_written: u64,
    pub ninodes: u64,
    /// Snapshots only: up to 64 bytes of UTF-8.
    pub name: String,
    /// The ifile's inode as of this checkpoint, as stored (decoded by the inode layer).
    pub ifile_inode: Vec<u8>,
    /// CP_RECOVERED: the log rolled forward, and the last sequence number applied.
    pub recovered_log_id: u64,
    pub recovered_seq: u64,
}

impl CpEntry {
    pub fn unused() -> CpEntry {
        CpEntry {
            cno: Cno(0),
            flags: 0,
            created_ns: 0,
            nblocks_written: 0,
            ninodes: 0,
            name: String::new(),
            ifile_inode: vec![0; INODE_BYTES],
            recovered_log_id: 0,
            recovered_seq: 0,
        }
    }

    pub fn is_used(&self) -> bool {
        self.cno.get() != 0
    }

    fn encode_into(&self, b: &mut [u8]) {
        put_u64(b, 0, self.cno.get());
        put_u32(b, OFF_FLAGS, self.flags);
        put_u64(b, OFF_CREATED, self.created_ns);
        put_u64(b, OFF_NBLOCKS, self.nblocks_written);
        put_u64(b, OFF_NINODES, self.ninodes);
        let name = self.name.as_bytes();
        let n = name.len().min(NAME_MAX);
        b[OFF_NAME..OFF_NAME + n].copy_from_slice(&name[..n]);
        super::put_bytes(b, OFF_INODE, &self.ifile_inode, INODE_BYTES);
        put_u64(b, OFF_REC_LOG, self.recovered_log_id);
        put_u64(b, OFF_REC_SEQ, self.recovered_seq);
    }

    fn decode_from(b: &[u8], cno: u64) -> Result<CpEntry, FormatError> {
        const W: &str = "cpfile entry";
        let bad = |why: &str| Err(FormatError::invalid(W, format!("checkpoint {cno}: {why}")));
        let e = CpEntry {
            cno: Cno(get_u64(b, 0)),
            flags: get_u32(b, OFF_FLAGS),
            created_ns: get_u64(b, OFF_CREATED),
            nblocks_written: get_u64(b, OFF_NBLOCKS),
            ninodes: get_u64(b, OFF_NINODES),
            name: {
                let raw = &b[OFF_NAME..OFF_NAME + NAME_MAX];
                let len = raw.iter().position(|&c| c == 0).unwrap_or(NAME_MAX);
                if raw[len..].iter().any(|&c| c != 0) {
                    return bad("name not NUL-padded");
                }
                match std::str::from_utf8(&raw[..len]) {
                    Ok(s) => s.to_string(),
                    Err(_) => return bad("name is not UTF-8"),
                }
            },
            ifile_inode: b[OFF_INODE..OFF_INODE + INODE_BYTES].to_vec(),
            recovered_log_id: get_u64(b, OFF_REC_LOG),
            recovered_seq: get_u64(b, OFF_REC_SEQ),
        };
        if get_u32(b, OFF_FLAGS + 4) != 0 || b[OFF_RESERVED..ENTRY_SIZE].iter().any(|&c| c != 0) {
            return bad("reserved bytes are not zero");
        }
        if !e.is_used() {
            if b[..ENTRY_SIZE].iter().any(|&c| c != 0) {
                return bad("an unused slot is not blank");
            }
            return Ok(e);
        }
        if e.cno.get() != cno {
            return bad("holds another checkpoint's number");
        }
        if e.flags & !FLAGS_KNOWN != 0 {
            return bad("unknown flags");
        }
        if !e.name.is_empty() && e.flags & CP_SNAPSHOT == 0 {
            return bad("a name on a checkpoint that is not a snapshot");
        }
        if (e.flags & CP_RECOVERED == 0) && (e.recovered_log_id != 0 || e.recovered_seq != 0) {
            return bad("recovery fields on a checkpoint that did not recover");
        }
        Ok(e)
    }
}

/// Encode cpfile block `block` (checkpoints `8·block .. 8·block + 8`).
pub fn encode_block(entries: &[CpEntry]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE];
    for (i, e) in entries.iter().take(ENTRIES_PER_BLOCK).enumerate() {
        e.encode_into(&mut b[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE]);
    }
    b
}

/// Decode cpfile block `block`. Its checksum was verified against the DAT by the reader.
pub fn decode_block(b: &[u8], block: u64) -> Result<Vec<CpEntry>, FormatError> {
    if b.len() != BLOCK_SIZE {
        return Err(FormatError::WrongSize {
            what: "cpfile block",
            len: b.len(),
            expected: BLOCK_SIZE,
        });
    }
    let first = block
        .checked_mul(ENTRIES_PER_BLOCK as u64)
        .ok_or_else(|| FormatError::invalid("cpfile block", "beyond any checkpoint number"))?;
    (0..ENTRIES_PER_BLOCK)
        .map(|i| CpEntry::decode_from(&b[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE], first + i as u64))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(block: u64) -> Vec<CpEntry> {
        (0..ENTRIES_PER_BLOCK as u64)
            .map(|i| {
                let cno = block * 8 + i;
                match i % 3 {
                    0 => CpEntry::unused(),
                    1 => CpEntry {
                        cno: Cno(cno),
                        flags: CP_SNAPSHOT | CP_PROTECTED,
                        created_ns: 1000 + i,
                        nblocks_written: 40,
                        ninodes: 3,
                        name: format!("before-upgrade-{i}"),
                        ifile_inode: (0..INODE_BYTES).map(|b| (b as u8) ^ (i as u8)).collect(),
                        recovered_log_id: 0,
                        recovered_seq: 0,
                    },
                    _ => CpEntry {
                        cno: Cno(cno),
                        flags: CP_RECOVERED | CP_MINOR,
                        created_ns: 2000,
                        nblocks_written: 0,
                        ninodes: 9,
                        name: String::new(),
                        ifile_inode: vec![7; INODE_BYTES],
                        recovered_log_id: 0xabc,
                        recovered_seq: 99,
                    },
                }
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let v = sample(5);
        assert_eq!(decode_block(&encode_block(&v), 5).unwrap(), v);
    }

    #[test]
    fn misplaced_and_inconsistent_entries_are_refused() {
        let b = encode_block(&sample(5));
        assert!(decode_block(&b, 6).is_err(), "block 5 read as block 6");
        assert!(decode_block(&b[..100], 5).is_err());
        assert!(decode_block(&b, u64::MAX).is_err());
        let mut named = sample(5);
        named[1].flags = CP_PROTECTED;
        let mut recovered = sample(5);
        recovered[1].recovered_seq = 4;
        let mut flags = sample(5);
        flags[2].flags |= 0x100;
        for v in [named, recovered, flags] {
            assert!(decode_block(&encode_block(&v), 5).is_err());
        }
        let mut junk = encode_block(&sample(5));
        junk[5] = 1; // inside an unused slot
        assert!(decode_block(&junk, 5).is_err());
    }
}
