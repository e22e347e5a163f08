//! Space admission's classes and what it keeps between calls (the decisions are in
//! space.rs).

/// What an operation must leave free when it adds blocks to the log (`check_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Metadata (create, rename, xattrs): may use half of the cleaner's reserve, so that a
    /// full disk can still be tidied.
    Meta,
    /// Data the kernel's writeback cache already accepted from a writer: may use the cache
    /// reserve kept for it, never the cleaner's.
    Cached,
    /// Any other data: leaves both reserves alone.
    Data,
}

/// A refusal for want of space: what was asked (blocks, with the reserve), how many bytes
/// had died by then, and how many more were lacking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutOfSpace {
    pub asked_blocks: u64,
    pub free_blocks: u64,
    pub killed_bytes: u64,
    pub lacking_bytes: u64,
}

/// What space admission keeps between calls: the room held for the kernel's writeback
/// cache, and the last refusal. Its fields are its own; space.rs asks and reports through
/// the methods.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Blocks kept free for data the kernel's writeback cache holds: writes from that cache
    /// may use them, nothing else may (`Admit`). 0 without such a cache.
    cache_reserve: u64,
    /// The last refusal for want of space, so the next is cheap (`check_space`).
    out_of_space: Option<OutOfSpace>,
}

impl Admission {
    pub fn cache_reserve(&self) -> u64 {
        self.cache_reserve
    }
    pub fn set_cache_reserve(&mut self, blocks: u64) {
        self.cache_reserve = blocks;
    }

    /// Whether a request for `asked` blocks must be refused at once, as the last one was:
    /// nothing changed that could help since — not enough died (`killed_bytes`, the usage
    /// table's running count), no room appeared (the background cleaner makes some), no
    /// segment awaits release (`freed_waiting`).
    pub fn still_refused(
        &self,
        asked: u64,
        free_blocks: u64,
        killed_bytes: u64,
        freed_waiting: bool,
    ) -> bool {
        self.out_of_space.is_some_and(|m| {
            asked >= m.asked_blocks
                && killed_bytes - m.killed_bytes <= m.lacking_bytes
                && free_blocks <= m.free_blocks
                && !freed_waiting
        })
    }

    /// The outcome of making room: a refusal to remember, or room found (None).
    pub fn record(&mut self, refusal: Option<OutOfSpace>) {
        self.out_of_space = refusal;
    }
}
