//! The block cache: blocks read from the device, by address, evicted first in first out.
//! Blocks in a log-structured filesystem never change in place, so an entry stays right
//! until its segment is reused, when the store that owns the cache purges that segment.

use crate::device::Device;
use crate::format::{BlockAddr, BLOCK_SIZE};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A FIFO-evicted cache of blocks read from the device, keyed by address. Blocks in a
/// log-structured filesystem never change in place, so an entry stays right until its
/// segment is reused, when [`Store::append`] purges that segment.
pub struct BlockCache {
    /// Address -> (the insertion that put it here, the block).
    map: HashMap<BlockAddr, (u64, Arc<Vec<u8>>)>,
    /// Insertions, oldest first. One whose block was removed or inserted again since is
    /// stale: skipped when evicting, and dropped whenever stale ones outnumber the live.
    order: VecDeque<(BlockAddr, u64)>,
    next: u64,
    cap: usize,
    pub hits: u64,
    pub misses: u64,
}

impl BlockCache {
    pub fn new(cap: usize) -> BlockCache {
        BlockCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            cap,
            hits: 0,
            misses: 0,
        }
    }
    pub fn get(&mut self, addr: BlockAddr) -> Option<Arc<Vec<u8>>> {
        let r = self.map.get(&addr).map(|(_, b)| b.clone());
        if r.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        r
    }
    fn live(&self, (addr, n): (BlockAddr, u64)) -> bool {
        self.map.get(&addr).is_some_and(|(m, _)| *m == n)
    }
    pub fn insert(&mut self, addr: BlockAddr, b: Arc<Vec<u8>>) {
        if self.cap == 0 {
            return;
        }
        // A block inserted again keeps its place in the order (first in, first out).
        if let Some((_, old)) = self.map.get_mut(&addr) {
            *old = b;
            return;
        }
        self.next += 1;
        self.map.insert(addr, (self.next, b));
        self.order.push_back((addr, self.next));
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(e) if self.live(e) => {
                    self.map.remove(&e.0);
                }
                Some(_) => {}
                None => break,
            }
        }
        if self.order.len() > 2 * self.map.len() + 16 {
            let order = std::mem::take(&mut self.order);
            self.order = order.into_iter().filter(|&e| self.live(e)).collect();
        }
    }
    /// The block at `addr`: from the cache, else read from `dev` and cached.
    pub fn read_through(
        &mut self,
        dev: &dyn Device,
        addr: BlockAddr,
    ) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(b) = self.get(addr) {
            return Ok(b);
        }
        let mut b = vec![0u8; BLOCK_SIZE];
        dev.read_at(&mut b, addr.byte_offset())?;
        let b = Arc::new(b);
        self.insert(addr, b.clone());
        Ok(b)
    }
    pub fn remove(&mut self, addr: BlockAddr) {
        self.map.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_block_inserted_again_is_not_evicted_early_and_the_order_stays_bounded() {
        let mut c = BlockCache::new(3);
        let b = Arc::new(vec![0u8; 8]);
        c.insert(BlockAddr(1), b.clone());
        c.remove(BlockAddr(1));
        c.insert(BlockAddr(2), b.clone());
        c.insert(BlockAddr(3), b.clone());
        c.insert(BlockAddr(1), b.clone()); // newest now
        c.insert(BlockAddr(4), b.clone()); // evicts 2, the oldest live one; not 1
        assert!(c.get(BlockAddr(1)).is_some() && c.get(BlockAddr(2)).is_none());
        assert!(c.get(BlockAddr(3)).is_some() && c.get(BlockAddr(4)).is_some());
        for i in 0..10_000 {
            c.insert(BlockAddr(100), b.clone());
            c.remove(BlockAddr(100));
            c.insert(BlockAddr(i % 2), b.clone());
        }
        assert!(c.order.len() <= 2 * c.cap + 17, "{}", c.order.len());
    }
}
