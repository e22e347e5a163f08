//! The back-end writer: one thread that owns all writes to the device, fed through a bounded
//! channel. The front end fills the next segment buffer while this thread writes the last
//! one; when it falls behind, the channel is full and the front end waits (back-pressure).
//!
//! After any failed write or flush the writer latches the error: later writes are dropped
//! and every later flush reports failure, so nothing that was not written can be reported
//! durable (the fsync-gate lesson). Segment buffers whose write failed stay in the in-flight
//! map, so reads keep returning what the filesystem believes it wrote until remount.

use crate::device::Device;
use crate::format::SegNo;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Requests queued before the front end blocks.
const QUEUE_DEPTH: usize = 4;

enum Req {
    /// Write `data[from..to]` (byte range) at `offset`; `seg` is the in-flight key to drop
    /// once written.
    Write {
        offset: u64,
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
        seg: Option<SegNo>,
    },
    Flush {
        reply: Sender<io::Result<()>>,
    },
}

pub type InFlight = Arc<Mutex<HashMap<SegNo, Arc<Vec<u8>>>>>;

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

    /// Queue a write of `data[from..to]` at byte `offset`. With `seg`, the buffer is served to
    /// readers from the in-flight map until written.
    pub fn write(
        &self,
        offset: u64,
        data: Arc<Vec<u8>>,
        from: usize,
        to: usize,
        seg: Option<SegNo>,
    ) -> io::Result<()> {
        if let Some(s) = seg {
            if let Ok(mut m) = self.in_flight.lock() {
                m.insert(s, data.clone());
            }
        }
        self.send(Req::Write {
            offset,
            data,
            from,
            to,
            seg,
        })
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

fn run(dev: Arc<dyn Device>, rx: Receiver<Req>, poisoned: Arc<AtomicBool>, in_flight: InFlight) {
    let mut failure: Option<io::ErrorKind> = None;
    for req in rx {
        match req {
            Req::Write {
                offset,
                data,
                from,
                to,
                seg,
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
                        if let (Some(s), Ok(mut m)) = (seg, in_flight.lock()) {
                            // Only drop our own buffer; a reused segment may have a newer one.
                            if m.get(&s).is_some_and(|b| Arc::ptr_eq(b, &data)) {
                                m.remove(&s);
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
