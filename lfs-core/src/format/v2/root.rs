//! The root block of a flush group (docs/FORMAT-V2.md §7): the last payload block of the
//! group's last unit, carrying what roll-forward needs besides the summaries' entries — the
//! group's sequence range and era, the inode table's and checkpoint list's inodes after it,
//! the next virtual block number, and the virtual blocks it ended or freed. Its checksum is
//! in its summary entry. Lists too long for one block go to continuation blocks earlier in
//! the group (`cont` of them), each with the same header and its own share of the lists.

use super::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64, VERSION};
use crate::format::{Cno, FormatError, VBlock, BLOCK_SIZE};

pub const MAGIC: u32 = u32::from_le_bytes(*b"LFSR");
pub const INODE_BYTES: usize = 256;

const OFF_SEQ_FIRST: usize = 8;
const OFF_SEQ_LAST: usize = 16;
const OFF_ERA: usize = 24;
const OFF_NEXT_VBLOCK: usize = 32;
const OFF_N_ENDED: usize = 40;
const OFF_N_FREED: usize = 44;
const OFF_CONT: usize = 48;
const OFF_IFILE: usize = 64;
const OFF_CPFILE: usize = OFF_IFILE + INODE_BYTES;
const OFF_LISTS: usize = OFF_CPFILE + INODE_BYTES;
/// Bytes of one `ended` and one `freed` entry.
pub const ENDED_SIZE: usize = 16;
pub const FREED_SIZE: usize = 8;
/// List room in one block, in bytes.
pub const LIST_BYTES: usize = BLOCK_SIZE - OFF_LISTS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoot {
    pub seq_first: u64,
    pub seq_last: u64,
    pub era: Cno,
    pub next_vblock: u64,
    /// Continuation root blocks earlier in the group (0 for most groups).
    pub cont: u32,
    pub ifile_inode: Vec<u8>,
    pub cpfile_inode: Vec<u8>,
    /// Virtual blocks the group ended, and the era they end in.
    pub ended: Vec<(VBlock, Cno)>,
    /// Virtual blocks the group freed outright.
    pub freed: Vec<VBlock>,
}

impl GroupRoot {
    /// Whether `ended` and `freed` fit in one block.
    pub fn fits(ended: usize, freed: usize) -> bool {
        ended * ENDED_SIZE + freed * FREED_SIZE <= LIST_BYTES
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        put_u32(&mut b, 0, MAGIC);
        put_u16(&mut b, 4, VERSION);
        put_u64(&mut b, OFF_SEQ_FIRST, self.seq_first);
        put_u64(&mut b, OFF_SEQ_LAST, self.seq_last);
        put_u64(&mut b, OFF_ERA, self.era.get());
        put_u64(&mut b, OFF_NEXT_VBLOCK, self.next_vblock);
        put_u32(&mut b, OFF_CONT, self.cont);
        super::put_bytes(&mut b, OFF_IFILE, &self.ifile_inode, INODE_BYTES);
        super::put_bytes(&mut b, OFF_CPFILE, &self.cpfile_inode, INODE_BYTES);
        let mut o = OFF_LISTS;
        let mut ended = 0u32;
        for &(v, end) in &self.ended {
            if o + ENDED_SIZE > BLOCK_SIZE {
                break;
            }
            put_u64(&mut b, o, v.get());
            put_u64(&mut b, o + 8, end.get());
            o += ENDED_SIZE;
            ended += 1;
        }
        let mut freed = 0u32;
        for v in &self.freed {
            if o + FREED_SIZE > BLOCK_SIZE {
                break;
            }
            put_u64(&mut b, o, v.get());
            o += FREED_SIZE;
            freed += 1;
        }
        put_u32(&mut b, OFF_N_ENDED, ended);
        put_u32(&mut b, OFF_N_FREED, freed);
        b
    }

    /// Decode a root block whose checksum its summary entry vouched for.
    pub fn decode(b: &[u8]) -> Result<GroupRoot, FormatError> {
        const W: &str = "group root";
        super::check_v2(b, W, MAGIC, false)?;
        let bad = |why: String| Err(FormatError::invalid(W, why));
        let (seq_first, seq_last) = (get_u64(b, OFF_SEQ_FIRST), get_u64(b, OFF_SEQ_LAST));
        if seq_first > seq_last {
            return bad(format!("sequence range {seq_first}..={seq_last}"));
        }
        let (n_ended, n_freed) = (
            get_u32(b, OFF_N_ENDED) as usize,
            get_u32(b, OFF_N_FREED) as usize,
        );
        if !GroupRoot::fits(n_ended, n_freed) {
            return bad(format!(
                "{n_ended} ended and {n_freed} freed do not fit a block"
            ));
        }
        if get_u16(b, 6) != 0 || b[OFF_CONT + 4..OFF_IFILE].iter().any(|&c| c != 0) {
            return bad("reserved bytes are not zero".into());
        }
        let era = Cno(get_u64(b, OFF_ERA));
        let mut o = OFF_LISTS;
        let mut ended = Vec::with_capacity(n_ended);
        for _ in 0..n_ended {
            let (v, end) = (VBlock(get_u64(b, o)), Cno(get_u64(b, o + 8)));
            if v.is_none() || end.get() == 0 || end > era {
                return bad(format!("vblock {} ended in era {}", v.get(), end.get()));
            }
            ended.push((v, end));
            o += ENDED_SIZE;
        }
        let mut freed = Vec::with_capacity(n_freed);
        for _ in 0..n_freed {
            let v = VBlock(get_u64(b, o));
            if v.is_none() {
                return bad("freed vblock 0".into());
            }
            freed.push(v);
            o += FREED_SIZE;
        }
        if b[o..].iter().any(|&c| c != 0) {
            return bad("bytes after the lists are not zero".into());
        }
        Ok(GroupRoot {
            seq_first,
            seq_last,
            era,
            next_vblock: get_u64(b, OFF_NEXT_VBLOCK),
            cont: get_u32(b, OFF_CONT),
            ifile_inode: b[OFF_IFILE..OFF_IFILE + INODE_BYTES].to_vec(),
            cpfile_inode: b[OFF_CPFILE..OFF_CPFILE + INODE_BYTES].to_vec(),
            ended,
            freed,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(ended: usize, freed: usize) -> GroupRoot {
        GroupRoot {
            seq_first: 40,
            seq_last: 43,
            era: Cno(9),
            next_vblock: 5000,
            cont: 0,
            ifile_inode: vec![3; INODE_BYTES],
            cpfile_inode: vec![4; INODE_BYTES],
            ended: (0..ended as u64)
                .map(|i| (VBlock(100 + i), Cno(9)))
                .collect(),
            freed: (0..freed as u64).map(|i| VBlock(900 + i)).collect(),
        }
    }

    #[test]
    fn round_trip_up_to_a_full_block() {
        let most_ended = LIST_BYTES / ENDED_SIZE;
        for (e, f) in [
            (0, 0),
            (3, 5),
            (most_ended, 0),
            (0, LIST_BYTES / FREED_SIZE),
        ] {
            let r = sample(e, f);
            assert!(GroupRoot::fits(e, f));
            assert_eq!(GroupRoot::decode(&r.encode()).unwrap(), r);
        }
        assert!(!GroupRoot::fits(most_ended, 1));
    }

    #[test]
    fn nonsense_is_refused() {
        let mut r = sample(2, 2);
        r.ended[1].1 = Cno(10);
        assert!(
            GroupRoot::decode(&r.encode()).is_err(),
            "ended after its own era"
        );
        let mut r = sample(2, 2);
        r.freed[0] = VBlock::NONE;
        assert!(GroupRoot::decode(&r.encode()).is_err(), "freed vblock 0");
        let mut r = sample(0, 0);
        r.seq_first = 50;
        assert!(GroupRoot::decode(&r.encode()).is_err(), "backward range");
        let mut b = sample(1, 1).encode();
        b[4000] = 1;
        assert!(GroupRoot::decode(&b).is_err(), "junk after the lists");
        assert!(GroupRoot::decode(&b[..10]).is_err());
    }
}
