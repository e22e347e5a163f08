//! [`FaultyDevice`]: wraps another device and makes chosen operations fail.
//!
//! This module owns fault injection for tests: the n-th read, write or flush (counted from
//! when the fault is set) returns `EIO`, all writes from some point on fail, everything fails
//! from now on, or a write is torn (only its first bytes reach the inner device, then `EIO`).
//! Failed operations do not reach the inner device. Counters say how many calls of each kind
//! were made.

use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::block::Device;

/// The error every injected failure returns: `EIO`.
fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

#[derive(Debug, Default)]
struct State {
    reads: u64,
    writes: u64,
    flushes: u64,
    injected: u64,
    /// Of `injected`: failed (or torn) writes and failed flushes.
    injected_writes: u64,
    /// Absolute call numbers (per kind) that fail.
    fail_reads: Vec<u64>,
    fail_writes: Vec<u64>,
    fail_flushes: Vec<u64>,
    /// Every write with a call number at or above this fails.
    fail_writes_from: Option<u64>,
    /// Absolute write number and bytes to keep.
    tear_writes: Vec<(u64, usize)>,
    fail_everything: bool,
}

/// Remove `n` from `list` if present; say whether it was.
fn take(list: &mut Vec<u64>, n: u64) -> bool {
    let before = list.len();
    list.retain(|&x| x != n);
    list.len() != before
}

enum WritePlan {
    Pass,
    Fail,
    Tear(usize),
}

/// A device that fails on request. Counting is per kind: `fail_write_at(2)` fails the third
/// `write_at` after the call. Several faults can be armed at once; `clear` disarms all.
#[derive(Debug)]
pub struct FaultyDevice<D: Device> {
    inner: D,
    state: Mutex<State>,
}

impl<D: Device> FaultyDevice<D> {
    /// Wrap `inner`; no faults armed.
    pub fn new(inner: D) -> Self {
        FaultyDevice {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped device (to inspect it, e.g. a [`CrashDevice`](super::CrashDevice)'s log).
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `n`-th `read_at` from now (0 = the next one) returns `EIO`.
    pub fn fail_read_at(&self, n: u64) {
        let mut s = self.lock();
        let at = s.reads.saturating_add(n);
        s.fail_reads.push(at);
    }

    /// The `n`-th `write_at` from now (0 = the next one) returns `EIO` and writes nothing.
    pub fn fail_write_at(&self, n: u64) {
        let mut s = self.lock();
        let at = s.writes.saturating_add(n);
        s.fail_writes.push(at);
    }

    /// The `n`-th `flush` from now (0 = the next one) returns `EIO` and flushes nothing.
    pub fn fail_flush_at(&self, n: u64) {
        let mut s = self.lock();
        let at = s.flushes.saturating_add(n);
        s.fail_flushes.push(at);
    }

    /// The `n`-th `write_at` from now and every one after it return `EIO`.
    pub fn fail_all_writes_from(&self, n: u64) {
        let mut s = self.lock();
        let at = s.writes.saturating_add(n);
        s.fail_writes_from = Some(s.fail_writes_from.map_or(at, |old| old.min(at)));
    }

    /// Every operation from now on returns `EIO` (a device that died), until `clear`.
    pub fn fail_all_from_now(&self) {
        self.lock().fail_everything = true;
    }

    /// The `n`-th `write_at` from now writes only its first `keep_bytes` (all of it if
    /// shorter) to the inner device, then returns `EIO`. `keep_bytes` should respect the
    /// inner device's alignment (a direct [`FileDevice`](super::FileDevice) needs multiples
    /// of 4096); if the partial write itself fails, that error is returned.
    pub fn tear_write_at(&self, n: u64, keep_bytes: usize) {
        let mut s = self.lock();
        let at = s.writes.saturating_add(n);
        s.tear_writes.push((at, keep_bytes));
    }

    /// Disarm every fault. Counters keep counting.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.fail_reads.clear();
        s.fail_writes.clear();
        s.fail_flushes.clear();
        s.fail_writes_from = None;
        s.tear_writes.clear();
        s.fail_everything = false;
    }

    /// `read_at` calls so far, failed ones included.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    /// `write_at` calls so far, failed and torn ones included.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// `flush` calls so far, failed ones included.
    pub fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// How many calls an armed fault has failed (or torn) so far.
    pub fn faults_injected(&self) -> u64 {
        self.lock().injected
    }

    /// How many writes and flushes an armed fault has failed (or torn) so far: the faults
    /// after which a filesystem must not trust what it wrote.
    pub fn write_faults_injected(&self) -> u64 {
        self.lock().injected_writes
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let fail = {
            let mut s = self.lock();
            let n = s.reads;
            s.reads += 1;
            let fail = take(&mut s.fail_reads, n) | s.fail_everything;
            s.injected += u64::from(fail);
            fail
        };
        if fail {
            return Err(eio());
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let plan = {
            let mut s = self.lock();
            let n = s.writes;
            s.writes += 1;
            let listed = take(&mut s.fail_writes, n);
            let tear = s.tear_writes.iter().position(|&(at, _)| at == n);
            let tear = tear.map(|i| s.tear_writes.swap_remove(i).1);
            let plan = if listed
                || s.fail_everything
                || s.fail_writes_from.is_some_and(|from| n >= from)
            {
                WritePlan::Fail
            } else if let Some(keep) = tear {
                WritePlan::Tear(keep)
            } else {
                WritePlan::Pass
            };
            if !matches!(plan, WritePlan::Pass) {
                s.injected += 1;
                s.injected_writes += 1;
            }
            plan
        };
        match plan {
            WritePlan::Pass => self.inner.write_at(buf, offset),
            WritePlan::Fail => Err(eio()),
            WritePlan::Tear(keep) => {
                let keep = keep.min(buf.len());
                if keep > 0 {
                    self.inner.write_at(&buf[..keep], offset)?;
                }
                Err(eio())
            }
        }
    }

    fn flush(&self) -> io::Result<()> {
        let fail = {
            let mut s = self.lock();
            let n = s.flushes;
            s.flushes += 1;
            let fail = take(&mut s.fail_flushes, n) | s.fail_everything;
            s.injected += u64::from(fail);
            s.injected_writes += u64::from(fail);
            fail
        };
        if fail {
            return Err(eio());
        }
        self.inner.flush()
    }

    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{CrashDevice, CrashOp, MemDevice};
    use super::*;

    fn is_eio(r: io::Result<()>) -> bool {
        matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO))
    }

    #[test]
    fn nth_write_fails_others_succeed() {
        let dev = FaultyDevice::new(MemDevice::new(16 * 4096));
        dev.fail_write_at(2);
        let results: Vec<bool> = (0..5u8)
            .map(|i| is_eio(dev.write_at(&[i + 1; 4096], u64::from(i) * 4096)))
            .collect();
        assert_eq!(results, vec![false, false, true, false, false]);
        assert_eq!(dev.writes(), 5);
        assert_eq!(dev.faults_injected(), 1);
        assert_eq!(dev.write_faults_injected(), 1);
        let img = dev.inner().image();
        for i in 0..5usize {
            let expect = if i == 2 { 0 } else { i as u8 + 1 };
            assert!(
                img[i * 4096..(i + 1) * 4096].iter().all(|&b| b == expect),
                "block {i}"
            );
        }
    }

    #[test]
    fn counting_starts_at_the_setter() {
        let dev = FaultyDevice::new(MemDevice::new(4096));
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            dev.read_at(&mut buf, 0).unwrap();
        }
        dev.fail_read_at(1);
        assert!(dev.read_at(&mut buf, 0).is_ok());
        assert!(is_eio(dev.read_at(&mut buf, 0)));
        assert!(dev.read_at(&mut buf, 0).is_ok(), "one-shot");
        assert_eq!(dev.reads(), 6);
    }

    #[test]
    fn nth_flush_fails_and_does_not_reach_inner() {
        let dev = FaultyDevice::new(CrashDevice::new(4096));
        dev.fail_flush_at(0);
        dev.write_at(&[1; 512], 0).unwrap();
        assert!(is_eio(dev.flush()));
        dev.flush().unwrap();
        assert_eq!(dev.flushes(), 2);
        let ops = dev.inner().ops();
        assert_eq!(ops.len(), 2, "the failed flush was not recorded: {ops:?}");
        assert_eq!(ops[1], CrashOp::Flush);
    }

    #[test]
    fn all_writes_from_and_clear() {
        let dev = FaultyDevice::new(MemDevice::new(8 * 4096));
        dev.fail_all_writes_from(1);
        assert!(dev.write_at(&[1; 4096], 0).is_ok());
        for i in 1..5 {
            assert!(is_eio(dev.write_at(&[1; 4096], i * 4096)));
        }
        let mut buf = [0u8; 4096];
        dev.read_at(&mut buf, 0).unwrap();
        dev.flush().unwrap();
        assert_eq!(buf, [1; 4096]);
        dev.clear();
        dev.write_at(&[2; 4096], 4096).unwrap();
        assert_eq!(dev.faults_injected(), 4);
        assert_eq!(dev.inner().image()[4096], 2);
    }

    #[test]
    fn everything_fails_from_now() {
        let dev = FaultyDevice::new(MemDevice::new(4096));
        dev.write_at(&[3; 4096], 0).unwrap();
        dev.fail_all_from_now();
        let mut buf = [0u8; 4096];
        assert!(is_eio(dev.read_at(&mut buf, 0)));
        assert!(is_eio(dev.write_at(&[4; 4096], 0)));
        assert!(is_eio(dev.flush()));
        assert_eq!(dev.len_bytes(), 4096);
        dev.clear();
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [3; 4096], "the failed write changed nothing");
        assert_eq!((dev.reads(), dev.writes(), dev.flushes()), (2, 2, 1));
    }

    #[test]
    fn torn_write_keeps_only_its_head() {
        let dev = FaultyDevice::new(CrashDevice::new(4 * 4096));
        dev.tear_write_at(1, 4096);
        dev.write_at(&[1; 8192], 0).unwrap();
        assert!(is_eio(dev.write_at(&[2; 8192], 8192)));
        dev.write_at(&[3; 4096], 0).unwrap();
        let img = dev.inner().live_image();
        assert!(img[..4096].iter().all(|&b| b == 3));
        assert!(img[4096..8192].iter().all(|&b| b == 1));
        assert!(
            img[8192..12288].iter().all(|&b| b == 2),
            "head of the torn write"
        );
        assert!(
            img[12288..].iter().all(|&b| b == 0),
            "tail of the torn write"
        );
        assert_eq!(dev.inner().op_count(), 3);

        // keep_bytes = 0 writes nothing; longer than the write writes all of it.
        dev.tear_write_at(0, 0);
        dev.tear_write_at(1, 1 << 20);
        assert!(is_eio(dev.write_at(&[7; 512], 0)));
        assert!(is_eio(dev.write_at(&[8; 512], 0)));
        assert_eq!(dev.inner().live_image()[0], 8);
        assert_eq!(dev.inner().op_count(), 4);
    }

    #[test]
    fn inner_errors_pass_through_and_share_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FaultyDevice<MemDevice>>();
        let dev = std::sync::Arc::new(FaultyDevice::new(MemDevice::new(4096)));
        let err = dev.write_at(&[0; 4096], 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        dev.fail_write_at(10);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dev = dev.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|_| is_eio(dev.write_at(&[1; 64], 0)))
                        .count()
                })
            })
            .collect();
        let failed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(failed, 1, "exactly the armed write failed");
        assert_eq!(dev.writes(), 41);
    }
}
