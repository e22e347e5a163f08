//! Physical pointers and the radix nodes built of them (the interior of the DAT and of the
//! sufile). A pointer carries the checksum of the block it points at, so a node vouches for
//! its children and the checkpoint for the roots.

use super::{check_referred, check_zero_tail, write_header, Expect, HEADER};
use super::{get_u32, get_u64, put_u32, put_u64};
use crate::format::{BlockAddr, FormatError, BLOCK_SIZE};

/// Bytes of one pointer.
pub const PTR_SIZE: usize = 16;
/// Pointers in one node.
pub const FANOUT: usize = (BLOCK_SIZE - HEADER) / PTR_SIZE;
const _: () = assert!(FANOUT == 255);

/// A pointer to a block reached by address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhysPtr {
    /// `BlockAddr::NONE`: a hole; everything below it is empty.
    pub addr: BlockAddr,
    /// The checksum of the block at `addr` (`super::block_crc`).
    pub crc: u32,
    /// In the DAT: free entries below this pointer (allocation descends to room); else 0.
    pub free: u32,
}

impl PhysPtr {
    pub fn is_none(&self) -> bool {
        self.addr.is_none()
    }

    pub fn encode_into(&self, b: &mut [u8]) {
        put_u64(b, 0, self.addr.get());
        put_u32(b, 8, self.crc);
        put_u32(b, 12, self.free);
    }

    pub fn decode_from(b: &[u8]) -> PhysPtr {
        PhysPtr {
            addr: BlockAddr(get_u64(b, 0)),
            crc: get_u32(b, 8),
            free: get_u32(b, 12),
        }
    }
}

/// Interior node of a radix tree of physical blocks: 255 pointers. Child `i` of a node of
/// height `h` covering keys from `index` covers `span(h - 1)` keys from
/// `index + i * span(h - 1)`, where a leaf covers a fixed number of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadixNode {
    /// At least 1 (leaves are height 0 and have their own layout).
    pub height: u8,
    /// The first key covered.
    pub index: u64,
    pub ptrs: Vec<PhysPtr>,
}

impl RadixNode {
    pub fn empty(height: u8, index: u64) -> RadixNode {
        RadixNode {
            height,
            index,
            ptrs: vec![PhysPtr::default(); FANOUT],
        }
    }

    pub fn encode(&self, magic: u32) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        let count = self.ptrs.iter().filter(|p| !p.is_none()).count();
        write_header(&mut b, magic, self.height, count as u8, self.index);
        for (i, p) in self.ptrs.iter().take(FANOUT).enumerate() {
            let o = HEADER + i * PTR_SIZE;
            p.encode_into(&mut b[o..o + PTR_SIZE]);
        }
        b
    }

    /// Decode a node the pointer `expect` describes. A hole must be all zero, and the count
    /// must match the non-empty pointers.
    pub fn decode(
        b: &[u8],
        what: &'static str,
        magic: u32,
        expect: &Expect,
    ) -> Result<RadixNode, FormatError> {
        if expect.height == 0 {
            return Err(FormatError::invalid(what, "an interior node of height 0"));
        }
        let count = check_referred(b, what, magic, expect)?;
        let ptrs: Vec<PhysPtr> = (0..FANOUT)
            .map(|i| PhysPtr::decode_from(&b[HEADER + i * PTR_SIZE..]))
            .collect();
        for (i, p) in ptrs.iter().enumerate() {
            if p.is_none() && (p.crc != 0 || p.free != 0) {
                return Err(FormatError::invalid(what, format!("hole {i} is not blank")));
            }
        }
        let used = ptrs.iter().filter(|p| !p.is_none()).count();
        if used != count as usize {
            return Err(FormatError::invalid(
                what,
                format!("count {count} but {used} pointers"),
            ));
        }
        check_zero_tail(b, HEADER + FANOUT * PTR_SIZE, what)?;
        Ok(RadixNode {
            height: expect.height,
            index: expect.index,
            ptrs,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{block_crc, testutil::assert_referred_damage_detected};
    use super::*;

    const MAGIC: u32 = u32::from_le_bytes(*b"LFSA");

    fn sample() -> RadixNode {
        let mut n = RadixNode::empty(2, 102 * 255);
        for i in (0..FANOUT).step_by(3) {
            n.ptrs[i] = PhysPtr {
                addr: BlockAddr(1000 + i as u64),
                crc: 0xabcd_0000 + i as u32,
                free: i as u32 % 5,
            };
        }
        n
    }

    #[test]
    fn round_trip() {
        let n = sample();
        let b = n.encode(MAGIC);
        let e = Expect {
            crc: block_crc(&b),
            height: 2,
            index: 102 * 255,
        };
        assert_eq!(RadixNode::decode(&b, "node", MAGIC, &e).unwrap(), n);
    }

    #[test]
    fn damage_and_misplacement_are_detected() {
        let b = sample().encode(MAGIC);
        assert_referred_damage_detected(&b, |b, crc| {
            RadixNode::decode(
                b,
                "node",
                MAGIC,
                &Expect {
                    crc,
                    height: 2,
                    index: 102 * 255,
                },
            )
        });
        // The right bytes in the wrong place (a misdirected write, a stale pointer).
        let crc = block_crc(&b);
        for (height, index) in [(1, 102 * 255), (2, 0), (3, 102 * 255)] {
            let e = Expect { crc, height, index };
            assert!(RadixNode::decode(&b, "node", MAGIC, &e).is_err());
        }
        let other = u32::from_le_bytes(*b"LFSQ");
        let e = Expect {
            crc,
            height: 2,
            index: 102 * 255,
        };
        assert!(RadixNode::decode(&b, "node", other, &e).is_err());
    }
}
