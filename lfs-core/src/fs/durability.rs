//! The checkpoint in force and the clocks of durability.

use crate::format::BlockAddr;
use std::time::Instant;

/// What the checkpoint layer keeps between checkpoints: the checkpoint in force (its
/// generation and where its tables are), and the clocks of durability — when the last
/// checkpoint and the last commit were made, and how much of the log had been appended by
/// then. Its fields are its own: a checkpoint (checkpoint.rs) and a commit report what they
/// made durable through `checkpointed` and `committed`; the rest of `fs` asks it questions.
pub(crate) struct Durability {
    generation: u64,
    imap_addrs: Vec<BlockAddr>,
    usage_addrs: Vec<BlockAddr>,
    appended_at_cp: u64,
    last_cp: Instant,
    last_commit: Instant,
    appended_at_commit: u64,
}

impl Durability {
    /// The checkpoint of `generation` whose tables are at these addresses, in force now.
    pub fn new(
        generation: u64,
        imap_addrs: Vec<BlockAddr>,
        usage_addrs: Vec<BlockAddr>,
    ) -> Durability {
        let now = Instant::now();
        Durability {
            generation,
            imap_addrs,
            usage_addrs,
            appended_at_cp: 0,
            last_cp: now,
            last_commit: now,
            appended_at_commit: 0,
        }
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Where the checkpoint in force keeps the inode map's blocks (0: never written).
    pub fn imap_addrs(&self) -> &[BlockAddr] {
        &self.imap_addrs
    }
    pub fn usage_addrs(&self) -> &[BlockAddr] {
        &self.usage_addrs
    }
    /// The block at `addr` is inode-map block `idx` of the checkpoint in force.
    pub fn is_imap_block(&self, idx: usize, addr: BlockAddr) -> bool {
        self.imap_addrs.get(idx) == Some(&addr)
    }
    /// The checkpoint under way wrote inode-map block `idx` at `addr`; the old address.
    pub fn moved_imap_block(&mut self, idx: usize, addr: BlockAddr) -> BlockAddr {
        self.imap_addrs
            .get_mut(idx)
            .map_or(BlockAddr::NONE, |a| std::mem::replace(a, addr))
    }
    /// The checkpoint under way wrote usage block `idx` at `addr`.
    pub fn moved_usage_block(&mut self, idx: usize, addr: BlockAddr) {
        if let Some(a) = self.usage_addrs.get_mut(idx) {
            *a = addr;
        }
    }
    /// Log appended since the last checkpoint (`appended`: the log's count now).
    pub fn since_checkpoint(&self, appended: u64) -> u64 {
        appended.saturating_sub(self.appended_at_cp)
    }
    /// Log appended since everything was last made durable, by commit or checkpoint.
    pub fn since_commit(&self, appended: u64) -> u64 {
        appended.saturating_sub(self.appended_at_commit.max(self.appended_at_cp))
    }
    pub fn checkpoint_age(&self) -> std::time::Duration {
        self.last_cp.elapsed()
    }
    pub fn commit_age(&self) -> std::time::Duration {
        self.last_commit.elapsed()
    }
    /// Everything up to `appended` was just made durable (fsync, commit).
    pub fn committed(&mut self, appended: u64) {
        self.last_commit = Instant::now();
        self.appended_at_commit = appended;
    }
    /// A checkpoint was made with what was appended up to `appended`.
    pub fn checkpointed(&mut self, generation: u64, appended: u64) {
        self.generation = generation;
        self.appended_at_cp = appended;
        self.last_cp = Instant::now();
    }
}
