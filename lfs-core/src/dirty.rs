//! Which blocks of an in-memory table (the inode map, the segment usage table) must be
//! written at the next checkpoint. Keeps its count, so asking costs nothing on hot paths.

#[derive(Debug, Clone)]
pub struct DirtyBlocks {
    bits: Vec<bool>,
    count: usize,
}

impl DirtyBlocks {
    pub fn new(n: usize, all_dirty: bool) -> DirtyBlocks {
        DirtyBlocks {
            bits: vec![all_dirty; n],
            count: if all_dirty { n } else { 0 },
        }
    }
    pub fn mark(&mut self, i: usize) {
        if let Some(b) = self.bits.get_mut(i) {
            if !*b {
                *b = true;
                self.count += 1;
            }
        }
    }
    pub fn clear(&mut self, i: usize) {
        if let Some(b) = self.bits.get_mut(i) {
            if *b {
                *b = false;
                self.count -= 1;
            }
        }
    }
    pub fn mark_all(&mut self) {
        self.bits.iter_mut().for_each(|b| *b = true);
        self.count = self.bits.len();
    }
    pub fn count(&self) -> usize {
        self.count
    }
    pub fn len(&self) -> usize {
        self.bits.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }
    /// Indices of dirty blocks, ascending.
    pub fn list(&self) -> Vec<usize> {
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| i)
            .collect()
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
    }
}
