//! The back-end writer: one thread that owns all writes to the device, fed through a bounded
//! channel. The front end fills the next segment buffer while this thread writes the last
//! one; when it falls behind, the channel is full and the front end waits (back-pressure).
//!
//! After any failed write or flush the writer latches the error: later writes are dropped
//! and every later flush reports failure, so nothing that was not written can be reported
//! durable (the fsync-gate lesson). Segment buffers whose write failed stay in the in-flight
//! map, so reads keep returning what the filesystem believes it wrote until remount.

use crate::device::Device;
use crate::format::{BlockAddr, BLOCK_SIZE};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Requests queued before the front end blocks.
const QUEUE_DEPTH: usize = 4;

enum Req {
    /// Write `data[from..to]` (byte range) at `offset`; `held` is the in-flight key to drop
    /// once written.
    Write {
        offset: u64,
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
        held: Option<BlockAddr>,
    },
    Flush {
        reply: Sender<io::Result<()>>,
    },
}

/// Buffers queued for writing whose blocks readers may still ask for, by the address of
/// their first block (a whole segment buffer: the segment's first block).
pub type InFlight = Arc<Mutex<BTreeMap<BlockAddr, Arc<Vec<u8>>>>>;

pub struct BackEnd {
    tx: Option<Sender<Req>>,
    handle: Option<JoinHandle<()>>,
    poisoned: Arc<AtomicBool>,
    pub in_flight: InFlight,
}

impl BackEnd {
    pub fn start(dev: Arc<dyn Device>) -> BackEnd {
        let (tx, rx) = bounded(QUEUE_DEPTH);
        let poisoned = Arc::new(AtomicBool::new(false));
        let in_flight: InFlight = Arc::default();
        let (p, f) = (poisoned.clone(), in_flight.clone());
        let handle = std::thread::Builder::new()
            .name("lfs-writer".into())
            .spawn(move || run(dev, rx, p, f))
            .ok();
        if handle.is_none() {
            poisoned.store(true, Ordering::SeqCst);
        }
        BackEnd {
            tx: Some(tx),
            handle,
            poisoned,
            in_flight,
        }
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn send(&self, r: Req) -> io::Result<()> {
        match &self.tx {
            Some(tx) => tx
                .send(r)
                .map_err(|_| io::Error::other("writer thread is gone")),
            None => Err(io::Error::other("writer stopped")),
        }
    }

    /// Queue a write of `data[from..to]` at byte `offset`. With `held`, the address of the
    /// block at `data[0]`, the buffer's blocks are served to readers ([`BackEnd::held_block`])
    /// until written.
    pub fn write(
        &self,
        offset: u64,
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
        held: Option<BlockAddr>,
    ) -> io::Result<()> {
        if let Some(a) = held {
            if let Ok(mut m) = self.in_flight.lock() {
                m.insert(a, data.clone());
            }
        }
        self.send(Req::Write {
            offset,
            data,
            from,
            to,
            held,
        })
    }

    /// The block at `addr` from a buffer queued and not yet written.
    pub fn held_block(&self, addr: BlockAddr) -> Option<Vec<u8>> {
        block_in(&*self.in_flight.lock().ok()?, addr)
    }

    /// Whether a buffer queued and not yet written holds any of the `n` blocks from `first`
    /// (true if that cannot be told).
    pub fn holds_any(&self, first: BlockAddr, n: u64) -> bool {
        self.in_flight.lock().map_or(true, |m| any_in(&m, first, n))
    }

    /// Wait until every queued write is done, then flush the device.
    pub fn flush(&self) -> io::Result<()> {
        let (tx, rx) = bounded(1);
        self.send(Req::Flush { reply: tx })?;
        rx.recv()
            .map_err(|_| io::Error::other("writer thread is gone"))?
    }

    /// Stop the thread after everything queued is handled.
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for BackEnd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The block at `addr` in the buffers of `m`.
fn block_in(m: &BTreeMap<BlockAddr, Arc<Vec<u8>>>, addr: BlockAddr) -> Option<Vec<u8>> {
    let (start, b) = m.range(..=addr).next_back()?;
    let off = usize::try_from(addr - *start).ok()?;
    b.get(off.checked_mul(BLOCK_SIZE)?..(off + 1) * BLOCK_SIZE)
        .map(|s| s.to_vec())
}

/// Whether the buffers of `m` hold any of the `n` blocks from `first`.
fn any_in(m: &BTreeMap<BlockAddr, Arc<Vec<u8>>>, first: BlockAddr, n: u64) -> bool {
    let end = first.get().saturating_add(n);
    // A buffer starting before `first` that reaches into the range, or one starting in it.
    m.range(..=first)
        .next_back()
        .is_some_and(|(s, b)| s.get() + (b.len() / BLOCK_SIZE) as u64 > first.get())
        || m.range(first..).next().is_some_and(|(s, _)| s.get() < end)
}

fn run(dev: Arc<dyn Device>, rx: Receiver<Req>, poisoned: Arc<AtomicBool>, in_flight: InFlight) {
    let mut failure: Option<io::ErrorKind> = None;
    for req in rx {
        match req {
            Req::Write {
                offset,
                data,
                from,
                to,
                held,
            } => {
                if failure.is_some() {
                    continue;
                }
                let res = match data.get(from..to) {
                    Some(bytes) => dev.write_at(bytes, offset),
                    None => Err(io::Error::other("bad write range")),
                };
                match res {
                    Ok(()) => {
                        if let (Some(a), Ok(mut m)) = (held, in_flight.lock()) {
                            // Only drop our own buffer; a reused segment may have a newer one.
                            if m.get(&a).is_some_and(|b| Arc::ptr_eq(b, &data)) {
                                m.remove(&a);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(offset, error = %e, "log write failed; refusing further writes");
                        failure = Some(e.kind());
                        poisoned.store(true, Ordering::SeqCst);
                    }
                }
            }
            Req::Flush { reply } => {
                let res = match failure {
                    Some(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
                    None => dev.flush().inspect_err(|e| {
                        tracing::error!(error = %e, "device flush failed; refusing further writes");
                        poisoned.store(true, Ordering::SeqCst);
                    }),
                };
                if res.is_err() && failure.is_none() {
                    failure = Some(io::ErrorKind::Other);
                }
                let _ = reply.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_buffers_answer_for_their_blocks_only() {
        let mut m = BTreeMap::new();
        let buf = |n: usize, fill: u8| Arc::new(vec![fill; n * BLOCK_SIZE]);
        m.insert(BlockAddr(100), buf(4, 1)); // 100..104
        m.insert(BlockAddr(200), buf(1, 2)); // 200
        assert_eq!(block_in(&m, BlockAddr(103)), Some(vec![1; BLOCK_SIZE]));
        assert_eq!(block_in(&m, BlockAddr(200)), Some(vec![2; BLOCK_SIZE]));
        for a in [99, 104, 150, 201] {
            assert_eq!(block_in(&m, BlockAddr(a)), None, "{a}");
        }
        assert!(any_in(&m, BlockAddr(96), 5)); // reaches 100
        assert!(any_in(&m, BlockAddr(103), 10)); // starts inside the first
        assert!(any_in(&m, BlockAddr(150), 51)); // reaches 200
        assert!(!any_in(&m, BlockAddr(104), 96)); // 104..200
        assert!(!any_in(&m, BlockAddr(90), 10)); // 90..100
    }
}
