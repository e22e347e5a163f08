//! Which blocks of an in-memory table (the inode map, the segment usage table) must be
//! written at the next checkpoint. Keeps its count, so asking costs nothing on hot paths.
//! One bit per table block (bitvec): a 1 TiB image has a million segments, and the list a
//! checkpoint asks for is found a machine word at a time.

use bitvec::vec::BitVec;

#[derive(Debug, Clone)]
pub struct DirtyBlocks {
    bits: BitVec,
    count: usize,
}

impl DirtyBlocks {
    pub fn new(n: usize, all_dirty: bool) -> DirtyBlocks {
        DirtyBlocks {
            bits: BitVec::repeat(all_dirty, n),
            count: if all_dirty { n } else { 0 },
        }
    }
    pub fn mark(&mut self, i: usize) {
        if i < self.bits.len() && !self.bits.replace(i, true) {
            self.count += 1;
        }
    }
    pub fn clear(&mut self, i: usize) {
        if i < self.bits.len() && self.bits.replace(i, false) {
            self.count -= 1;
        }
    }
    #[cfg(test)]
    pub fn mark_all(&mut self) {
        self.bits.fill(true);
        self.count = self.bits.len();
    }
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn len(&self) -> usize {
        self.bits.len()
    }
    /// Indices of dirty blocks, ascending.
    pub fn list(&self) -> Vec<usize> {
        self.bits.iter_ones().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_follows_marks() {
        let mut d = DirtyBlocks::new(10, false);
        d.mark(3);
        d.mark(3);
        d.mark(7);
        d.mark(99);
        assert_eq!((d.count(), d.list()), (2, vec![3, 7]));
        d.clear(3);
        d.clear(3);
        assert_eq!(d.count(), 1);
        d.mark_all();
        assert_eq!(d.count(), 10);
        assert_eq!(d.list(), (0..10).collect::<Vec<_>>());
        // Past a machine word, and the count kept by replace's answer.
        let mut d = DirtyBlocks::new(200, false);
        for i in [0, 63, 64, 65, 130, 199] {
            d.mark(i);
        }
        d.clear(64);
        assert_eq!((d.count(), d.list()), (5, vec![0, 63, 65, 130, 199]));
    }
}
