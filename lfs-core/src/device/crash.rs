//! [`CrashDevice`]: records every write and flush so a test can build the images a power cut
//! could have left.
//!
//! This module owns the crash model. The device keeps its initial image, the live image
//! (everything applied; what `read_at` returns) and the ordered log of [`CrashOp`]s since
//! creation. A crash "at op `at`" means `ops[..at]` were issued. Everything up to the last
//! `Flush` in `ops[..at]` is durable; the writes after it are *in flight* and any of them may
//! or may not have reached the medium, possibly only in part. [`CrashDevice::crash_states`]
//! enumerates a bounded, deterministic (per seed) set of such images:
//!
//! * every **prefix** of the in-flight writes (none, the first, the first two, … all);
//! * non-empty, non-prefix **subsets** (all of them when there are few, otherwise a random
//!   sample), modelling a write cache that reorders;
//! * **torn** writes: one in-flight write cut at a 512-byte sector boundary after the prefix
//!   before it (the tail keeps its old contents, which is exactly what a cut means), and the
//!   same write with one whole 4096-byte block missing.
//!
//! Images are built from one base (the durable image, computed once per call and cached
//! between calls with non-decreasing flush points) and copied per state, so the cost is linear
//! in the image size times the number of states. [`CrashDevice::for_each_crash_state`] hands
//! states out one at a time for large images.

use std::collections::HashSet;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::block::Device;
use super::bounds::mem_range;

/// Sector size: the unit a disk writes atomically; torn writes are cut at multiples of it.
pub const SECTOR_SIZE: usize = 512;
/// Block size for the "one block missing" variant.
const TORN_BLOCK: usize = 4096;

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashOp {
    /// A completed `write_at` (zero-length writes are not recorded).
    Write { offset: u64, data: Vec<u8> },
    /// A completed `flush`.
    Flush,
}

/// Bounds on how many states [`CrashDevice::crash_states`] builds per crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashStateOptions {
    /// At most this many non-prefix subsets of the in-flight writes.
    pub max_subsets: usize,
    /// Tear at most this many of the in-flight writes (each gives a few states).
    pub max_torn: usize,
}

impl Default for CrashStateOptions {
    fn default() -> Self {
        CrashStateOptions {
            max_subsets: 16,
            max_torn: 8,
        }
    }
}

/// One image a crash could have left, with a description that names it in a failing test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashState {
    /// E.g. "at op 17: prefix 3/5 of in-flight writes (ops 12..=16)".
    pub description: String,
    pub image: Vec<u8>,
}

#[derive(Debug)]
struct Inner {
    initial: Vec<u8>,
    live: Vec<u8>,
    ops: Vec<CrashOp>,
    /// Durable image at some op index `d` (initial + writes in `ops[..d]`), reused when the
    /// next request is for the same or a later `d`.
    base_cache: Option<(usize, Vec<u8>)>,
}

impl Inner {
    /// Initial image plus every write in `ops[..d]`.
    fn image_at(&mut self, d: usize) -> Vec<u8> {
        let reusable = matches!(&self.base_cache, Some((cd, _)) if *cd <= d);
        if !reusable {
            self.base_cache = Some((0, self.initial.clone()));
        }
        match &mut self.base_cache {
            Some((cd, img)) => {
                for op in &self.ops[*cd..d] {
                    if let CrashOp::Write { offset, data } = op {
                        apply(img, *offset, data);
                    }
                }
                *cd = d;
                img.clone()
            }
            None => self.initial.clone(),
        }
    }
}

/// A write that was issued after the last flush before the crash point.
#[derive(Debug)]
struct InFlight {
    op_index: usize,
    offset: u64,
    data: Vec<u8>,
}

/// A device that records everything; see the module documentation.
#[derive(Debug)]
pub struct CrashDevice {
    len: u64,
    inner: Mutex<Inner>,
}

impl CrashDevice {
    /// A zero-filled device of `len_bytes`.
    ///
    /// # Panics
    /// If `len_bytes` does not fit in the address space (only possible on 32-bit targets).
    pub fn new(len_bytes: u64) -> CrashDevice {
        let len = usize::try_from(len_bytes).expect("CrashDevice length exceeds the address space");
        Self::from_image(vec![0u8; len])
    }

    /// A device whose initial (durable) contents are `image`.
    pub fn from_image(image: Vec<u8>) -> CrashDevice {
        CrashDevice {
            len: image.len() as u64,
            inner: Mutex::new(Inner {
                initial: image.clone(),
                live: image,
                ops: Vec::new(),
                base_cache: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the whole log. See [`with_ops`](Self::with_ops) to look without copying.
    pub fn ops(&self) -> Vec<CrashOp> {
        self.lock().ops.clone()
    }

    /// Run `f` on the log without copying it. `f` must not call back into this device.
    pub fn with_ops<R>(&self, f: impl FnOnce(&[CrashOp]) -> R) -> R {
        f(&self.lock().ops)
    }

    /// Number of recorded operations.
    pub fn op_count(&self) -> usize {
        self.lock().ops.len()
    }

    /// The contents the device was created with.
    pub fn initial_image(&self) -> Vec<u8> {
        self.lock().initial.clone()
    }

    /// Everything applied: what `read_at` sees.
    pub fn live_image(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// The initial image plus every write up to and including the last flush.
    pub fn durable_image(&self) -> Vec<u8> {
        let mut inner = self.lock();
        let d = durable_point(&inner.ops, inner.ops.len());
        inner.image_at(d)
    }

    /// The op indices where a crash is interesting: every `i` in `0..=op_count()`. A crash
    /// at `i` happens just before op `i` is issued, so `ops[..i]` were issued: `0` is "before
    /// anything" (only the initial image) and `op_count()` is "after everything". A point
    /// just before a `Flush` has the writes since the previous flush in flight; the point
    /// just after it has none.
    pub fn persistence_points(&self) -> Vec<usize> {
        (0..=self.op_count()).collect()
    }

    /// All the crash states at `at` (clamped to `op_count()`), collected; see the module
    /// documentation for what they are. Deterministic for a given `(at, opts, rng_seed)` and
    /// log. Each state holds a full image: for large images prefer
    /// [`for_each_crash_state`](Self::for_each_crash_state).
    pub fn crash_states(
        &self,
        at: usize,
        opts: &CrashStateOptions,
        rng_seed: u64,
    ) -> Vec<CrashState> {
        let mut states = Vec::new();
        let done: Result<(), std::convert::Infallible> =
            self.for_each_crash_state(at, opts, rng_seed, |s| {
                states.push(s);
                Ok(())
            });
        match done {
            Ok(()) => states,
            Err(never) => match never {},
        }
    }

    /// The states of [`crash_states`](Self::crash_states), in the same order, handed to `f`
    /// one at a time (so only one image is alive besides two working copies); stops at the
    /// first error `f` returns. The device is not locked while `f` runs.
    ///
    /// Order: for k = 0..=n the prefix of k in-flight writes, each followed (k < n) by the
    /// torn variants of write k if it was chosen for tearing; then the subsets.
    pub fn for_each_crash_state<E>(
        &self,
        at: usize,
        opts: &CrashStateOptions,
        rng_seed: u64,
        mut f: impl FnMut(CrashState) -> Result<(), E>,
    ) -> Result<(), E> {
        let (at, base, inflight) = {
            let mut inner = self.lock();
            let at = at.min(inner.ops.len());
            let d = durable_point(&inner.ops, at);
            let base = inner.image_at(d);
            let inflight: Vec<InFlight> = inner.ops[d..at]
                .iter()
                .enumerate()
                .filter_map(|(i, op)| match op {
                    CrashOp::Write { offset, data } => Some(InFlight {
                        op_index: d + i,
                        offset: *offset,
                        data: data.clone(),
                    }),
                    CrashOp::Flush => None,
                })
                .collect();
            (at, base, inflight)
        };
        let n = inflight.len();
        let mut rng = SplitMix64::new(rng_seed ^ (at as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        let torn = choose_torn(n, opts.max_torn, &mut rng);
        let subsets = choose_subsets(n, opts.max_subsets, &mut rng);

        // Prefixes, with the torn variants of write k built on prefix k.
        let mut running = base.clone();
        for k in 0..=n {
            let what = match k {
                0 if n == 0 => " (nothing in flight)".to_string(),
                0 => " (durable image only)".to_string(),
                _ => format!(
                    " (ops {}..={})",
                    inflight[0].op_index,
                    inflight[k - 1].op_index
                ),
            };
            f(CrashState {
                description: format!("at op {at}: prefix {k}/{n} of in-flight writes{what}"),
                image: running.clone(),
            })?;
            let Some(w) = inflight.get(k) else {
                break;
            };
            if torn[k] {
                let name = format!(
                    "at op {at}: in-flight write {}/{n} (op {}, {} bytes at offset {})",
                    k + 1,
                    w.op_index,
                    w.data.len(),
                    w.offset
                );
                for tear in tear_variants(w.data.len(), &mut rng) {
                    let mut image = running.clone();
                    let description = match tear {
                        Tear::Cut(cut) => {
                            apply(&mut image, w.offset, &w.data[..cut]);
                            format!(
                                "{name} torn after {cut} bytes (rest keeps old contents), \
                                 after prefix {k}/{n}"
                            )
                        }
                        Tear::MissingBlock(b) => {
                            let hole_start = b * TORN_BLOCK;
                            let hole_end = (hole_start + TORN_BLOCK).min(w.data.len());
                            apply(&mut image, w.offset, &w.data[..hole_start]);
                            apply(&mut image, w.offset + hole_end as u64, &w.data[hole_end..]);
                            format!(
                                "{name} with {TORN_BLOCK}-byte block {b} of {} missing \
                                 (old contents), after prefix {k}/{n}",
                                w.data.len().div_ceil(TORN_BLOCK)
                            )
                        }
                    };
                    f(CrashState { description, image })?;
                }
            }
            apply(&mut running, w.offset, &w.data);
        }
        drop(running);

        for set in subsets {
            let mut image = base.clone();
            for &i in &set {
                apply(&mut image, inflight[i].offset, &inflight[i].data);
            }
            let members: Vec<String> = set.iter().map(|&i| (i + 1).to_string()).collect();
            let op_indices: Vec<String> = set
                .iter()
                .map(|&i| inflight[i].op_index.to_string())
                .collect();
            f(CrashState {
                description: format!(
                    "at op {at}: subset {{{}}} of {n} in-flight writes (ops {})",
                    members.join(","),
                    op_indices.join(",")
                ),
                image,
            })?;
        }
        Ok(())
    }
}

impl Device for CrashDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let range = mem_range(offset, buf.len(), self.len)?;
        buf.copy_from_slice(&self.lock().live[range]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let range = mem_range(offset, buf.len(), self.len)?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.live[range].copy_from_slice(buf);
        inner.ops.push(CrashOp::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.lock().ops.push(CrashOp::Flush);
        Ok(())
    }

    fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// Index just after the last `Flush` in `ops[..at]`, 0 if there is none.
fn durable_point(ops: &[CrashOp], at: usize) -> usize {
    ops[..at]
        .iter()
        .rposition(|op| matches!(op, CrashOp::Flush))
        .map_or(0, |i| i + 1)
}

/// Copy `data` into `image` at `offset`. Recorded writes were bounds-checked when issued, so
/// the range always fits; a range that does not is ignored rather than panicking.
fn apply(image: &mut [u8], offset: u64, data: &[u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(dst) = start
        .checked_add(data.len())
        .and_then(|end| image.get_mut(start..end))
    {
        dst.copy_from_slice(data);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tear {
    /// Only the first `n` bytes reached the medium.
    Cut(usize),
    /// Everything but 4096-byte block `b` of the write reached the medium.
    MissingBlock(usize),
}

/// The ways to tear a write of `len` bytes. Cuts are at sector boundaries strictly inside the
/// write: all of them for a write of at most one block, otherwise one random sector boundary
/// and one random block boundary. Writes of more than one block also lose one random block.
/// A write of one sector or less cannot tear.
fn tear_variants(len: usize, rng: &mut SplitMix64) -> Vec<Tear> {
    let mut out = Vec::new();
    if len <= SECTOR_SIZE {
        return out;
    }
    if len <= TORN_BLOCK {
        out.extend((SECTOR_SIZE..len).step_by(SECTOR_SIZE).map(Tear::Cut));
        return out;
    }
    let sectors_inside = (len - 1) / SECTOR_SIZE;
    out.push(Tear::Cut(SECTOR_SIZE * (1 + rng.below(sectors_inside))));
    let blocks_inside = (len - 1) / TORN_BLOCK;
    let block_cut = Tear::Cut(TORN_BLOCK * (1 + rng.below(blocks_inside)));
    if !out.contains(&block_cut) {
        out.push(block_cut);
    }
    out.push(Tear::MissingBlock(rng.below(len.div_ceil(TORN_BLOCK))));
    out
}

/// Which of `n` in-flight writes to tear: all if `n <= max`, else `max` chosen at random.
fn choose_torn(n: usize, max: usize, rng: &mut SplitMix64) -> Vec<bool> {
    if n <= max {
        return vec![true; n];
    }
    let mut chosen = vec![false; n];
    let mut idx: Vec<usize> = (0..n).collect();
    // Partial Fisher-Yates: the first `max` slots end up a uniform sample.
    for i in 0..max {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
        chosen[idx[i]] = true;
    }
    chosen
}

/// Non-empty, non-prefix subsets of `0..n`, each sorted, distinct, at most `max` of them.
/// When they all fit (and `n <= 20`) every one of them, in mask order; otherwise a random
/// sample with a random density per subset, so both sparse and dense subsets appear.
fn choose_subsets(n: usize, max: usize, rng: &mut SplitMix64) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    if n < 2 || max == 0 {
        return out; // with 0 or 1 writes every non-empty subset is a prefix
    }
    if n <= 20 {
        let non_prefix = (1u64 << n) - 1 - n as u64;
        if non_prefix <= max as u64 {
            for mask in 1u64..(1u64 << n) {
                // A prefix {0..k} is a mask of the form 2^k - 1.
                if mask & (mask + 1) == 0 {
                    continue;
                }
                out.push((0..n).filter(|&i| mask >> i & 1 == 1).collect());
            }
            return out;
        }
    }
    let mut seen: HashSet<Vec<usize>> = HashSet::new();
    let attempts = max.saturating_mul(16).saturating_add(64);
    for _ in 0..attempts {
        if out.len() >= max {
            break;
        }
        let density = 0.05 + 0.9 * rng.next_f64();
        let set: Vec<usize> = (0..n).filter(|_| rng.next_f64() < density).collect();
        let is_prefix = set.iter().enumerate().all(|(pos, &i)| pos == i);
        if set.is_empty() || is_prefix || seen.contains(&set) {
            continue;
        }
        seen.insert(set.clone());
        out.push(set);
    }
    out
}

/// SplitMix64: small, fast, deterministic; enough to pick crash states.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LEN: u64 = 64 * 4096;

    fn filled(len: usize, byte: u8) -> Vec<u8> {
        vec![byte; len]
    }

    /// The scripted sequence: write A, flush, write B (2 blocks), write C.
    fn scripted() -> (CrashDevice, Vec<u8>, Vec<u8>, Vec<u8>) {
        let dev = CrashDevice::new(LEN);
        let a = filled(4096, 0xAA);
        let b: Vec<u8> = (0..8192u32).map(|i| 0xB0 ^ (i / 512) as u8).collect();
        let c = filled(4096, 0xCC);
        dev.write_at(&a, 0).unwrap();
        dev.flush().unwrap();
        dev.write_at(&b, 4096).unwrap();
        dev.write_at(&c, 5 * 4096).unwrap();
        (dev, a, b, c)
    }

    fn region(img: &[u8], off: usize, len: usize) -> &[u8] {
        &img[off..off + len]
    }

    #[test]
    fn log_live_and_durable_images() {
        let (dev, a, b, c) = scripted();
        assert_eq!(dev.op_count(), 4);
        let ops = dev.ops();
        assert_eq!(
            ops[0],
            CrashOp::Write {
                offset: 0,
                data: a.clone()
            }
        );
        assert_eq!(ops[1], CrashOp::Flush);
        assert!(matches!(ops[2], CrashOp::Write { offset: 4096, .. }));
        assert!(dev.with_ops(|ops| matches!(ops[3], CrashOp::Write { offset: 20480, .. })));

        let durable = dev.durable_image();
        assert_eq!(region(&durable, 0, 4096), &a[..]);
        assert!(region(&durable, 4096, 8192).iter().all(|&x| x == 0), "no B");
        assert!(
            region(&durable, 20480, 4096).iter().all(|&x| x == 0),
            "no C"
        );

        let live = dev.live_image();
        assert_eq!(region(&live, 0, 4096), &a[..]);
        assert_eq!(region(&live, 4096, 8192), &b[..]);
        assert_eq!(region(&live, 20480, 4096), &c[..]);
        let mut buf = vec![0u8; 8192];
        dev.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, b, "read_at sees live contents");
        assert!(dev.initial_image().iter().all(|&x| x == 0));
        assert_eq!(dev.persistence_points(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn crash_states_at_end_cover_the_expected_images() {
        let (dev, a, b, c) = scripted();
        let durable = dev.durable_image();
        let with = |parts: &[(usize, &[u8])]| {
            let mut img = durable.clone();
            for (off, data) in parts {
                img[*off..*off + data.len()].copy_from_slice(data);
            }
            img
        };
        let only_b = with(&[(4096, &b)]);
        let b_and_c = with(&[(4096, &b), (20480, &c)]);
        let only_c = with(&[(20480, &c)]);
        let mut torn_b = b.clone();
        torn_b[512..].fill(0);
        let torn_b_512 = with(&[(4096, &torn_b)]);

        let states = dev.crash_states(4, &CrashStateOptions::default(), 42);
        let find = |img: &[u8]| states.iter().find(|s| s.image == img);
        for s in &states {
            assert_eq!(s.image.len() as u64, LEN);
            assert!(s.description.starts_with("at op 4: "), "{}", s.description);
            assert_eq!(
                region(&s.image, 0, 4096),
                &a[..],
                "A is durable in every state"
            );
        }
        let d = find(&durable).expect("durable-only state");
        assert!(d.description.contains("prefix 0/2"), "{}", d.description);
        let s = find(&only_b).expect("+B state");
        assert!(s.description.contains("prefix 1/2"), "{}", s.description);
        let s = find(&b_and_c).expect("+B+C state");
        assert!(s.description.contains("prefix 2/2"), "{}", s.description);
        let s = find(&only_c).expect("subset {C} state");
        assert!(s.description.contains("subset {2}"), "{}", s.description);

        // B is 8192 bytes: one random sector cut, the cut at 4096, one block missing.
        let torn: Vec<&CrashState> = states
            .iter()
            .filter(|s| s.description.contains("write 1/2"))
            .collect();
        // (The random sector cut may coincide with 4096, leaving two variants.)
        assert!(torn.len() == 2 || torn.len() == 3, "{torn:#?}");
        let mut cut_4096 = b.clone();
        cut_4096[4096..].fill(0);
        assert!(torn.iter().any(|s| s.image == with(&[(4096, &cut_4096)])));
        assert!(torn.iter().any(|s| s.description.contains("missing")));
        for s in &torn {
            let got = region(&s.image, 4096, 8192);
            assert_ne!(got, &b[..], "a torn B is not all of B");
            assert_ne!(got, &[0u8; 8192][..], "a torn B is not none of B");
            assert!(
                region(&s.image, 20480, 4096).iter().all(|&x| x == 0),
                "no C"
            );
            // Every 512-byte sector is either all new or all old.
            for (new, old) in got.chunks(512).zip(b.chunks(512)) {
                assert!(new == old || new.iter().all(|&x| x == 0));
            }
        }
        // C (one block) tears at every sector boundary on top of prefix 1.
        let torn_c: Vec<&CrashState> = states
            .iter()
            .filter(|s| s.description.contains("write 2/2"))
            .collect();
        assert_eq!(torn_c.len(), 7);
        for (i, s) in torn_c.iter().enumerate() {
            let cut = 512 * (i + 1);
            assert_eq!(region(&s.image, 4096, 8192), &b[..]);
            assert_eq!(region(&s.image, 20480, cut), &c[..cut]);
            assert!(region(&s.image, 20480 + cut, 4096 - cut)
                .iter()
                .all(|&x| x == 0));
        }
        // 3 prefixes + 1 subset + torn B + 7 torn C; nothing else.
        assert_eq!(states.len(), 3 + 1 + torn.len() + 7);
        // Some seed cuts B after its first sector.
        let first_sector = (0..64u64).any(|seed| {
            dev.crash_states(4, &CrashStateOptions::default(), seed)
                .iter()
                .any(|s| s.image == torn_b_512)
        });
        assert!(first_sector);

        // Deterministic per seed.
        assert_eq!(
            states,
            dev.crash_states(4, &CrashStateOptions::default(), 42)
        );
    }

    #[test]
    fn crash_points_before_and_after_a_flush() {
        let (dev, a, _, _) = scripted();
        // Before anything: only the initial image.
        let s = dev.crash_states(0, &CrashStateOptions::default(), 1);
        assert_eq!(s.len(), 1);
        assert!(s[0].image.iter().all(|&x| x == 0));
        assert!(s[0].description.contains("prefix 0/0"));
        // Just before the flush: A in flight (one block: 7 torn cuts).
        let s = dev.crash_states(1, &CrashStateOptions::default(), 1);
        assert_eq!(s.len(), 2 + 7);
        assert!(s.iter().any(|st| st.image.iter().all(|&x| x == 0)));
        assert!(s.iter().any(|st| region(&st.image, 0, 4096) == &a[..]));
        // Just after the flush: A durable, nothing in flight.
        let s = dev.crash_states(2, &CrashStateOptions::default(), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(region(&s[0].image, 0, 4096), &a[..]);
        // Past the end clamps to op_count; going back to an earlier point recomputes.
        assert_eq!(
            dev.crash_states(99, &CrashStateOptions::default(), 1).len(),
            dev.crash_states(4, &CrashStateOptions::default(), 1).len()
        );
        let s = dev.crash_states(0, &CrashStateOptions::default(), 1);
        assert!(s[0].image.iter().all(|&x| x == 0));
    }

    #[test]
    fn many_in_flight_writes_are_sampled_within_bounds() {
        let dev = CrashDevice::new(LEN);
        for i in 0..30u64 {
            dev.write_at(&filled(4096, i as u8 + 1), (i % 64) * 4096)
                .unwrap();
        }
        let opts = CrashStateOptions {
            max_subsets: 10,
            max_torn: 3,
        };
        let states = dev.crash_states(30, &opts, 7);
        let prefixes = states
            .iter()
            .filter(|s| s.description.contains(": prefix "))
            .count();
        let subsets: Vec<&CrashState> = states
            .iter()
            .filter(|s| s.description.contains(": subset "))
            .collect();
        let torn = states
            .iter()
            .filter(|s| s.description.contains("torn"))
            .count();
        assert_eq!(prefixes, 31);
        assert_eq!(subsets.len(), 10);
        assert_eq!(torn, 3 * 7);
        let distinct: HashSet<&str> = subsets.iter().map(|s| s.description.as_str()).collect();
        assert_eq!(distinct.len(), 10, "subsets are deduplicated");
        // Each subset image has exactly the chosen blocks written.
        for s in subsets {
            let written: Vec<usize> = (0..30).filter(|&i| s.image[i * 4096] != 0).collect();
            let is_prefix = written.iter().enumerate().all(|(pos, &i)| pos == i);
            assert!(!written.is_empty() && !is_prefix, "{}", s.description);
            for i in 0..30usize {
                let blk = &s.image[i * 4096..(i + 1) * 4096];
                assert!(blk.iter().all(|&x| x == 0) || blk.iter().all(|&x| x == i as u8 + 1));
            }
        }
        // A different seed picks differently (overwhelmingly likely with 30 writes).
        assert_ne!(states, dev.crash_states(30, &opts, 8));
    }

    #[test]
    fn all_subsets_when_few() {
        let dev = CrashDevice::new(LEN);
        for i in 0..4u64 {
            dev.write_at(&filled(512, 9), i * 4096).unwrap();
        }
        let opts = CrashStateOptions {
            max_subsets: 16,
            max_torn: 0,
        };
        let states = dev.crash_states(4, &opts, 0);
        // 2^4 = 16 images in total: 5 prefixes + 11 non-prefix subsets; 512-byte writes
        // cannot tear.
        assert_eq!(states.len(), 16);
        let images: HashSet<&Vec<u8>> = states.iter().map(|s| &s.image).collect();
        assert_eq!(
            images.len(),
            16,
            "every subset of the 4 writes exactly once"
        );
    }

    #[test]
    fn for_each_stops_on_error_and_sees_the_same_states() {
        let (dev, _, _, _) = scripted();
        let all = dev.crash_states(4, &CrashStateOptions::default(), 3);
        let mut seen = Vec::new();
        let r = dev.for_each_crash_state(4, &CrashStateOptions::default(), 3, |s| {
            // The device is usable from inside the callback.
            assert_eq!(dev.op_count(), 4);
            seen.push(s);
            if seen.len() == 5 {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("stop"));
        assert_eq!(seen[..], all[..5]);
    }

    #[test]
    fn base_cache_follows_new_flushes() {
        let dev = CrashDevice::new(LEN);
        dev.write_at(&filled(4096, 1), 0).unwrap();
        dev.flush().unwrap();
        assert_eq!(dev.durable_image()[0], 1);
        dev.write_at(&filled(4096, 2), 0).unwrap();
        assert_eq!(dev.durable_image()[0], 1);
        dev.flush().unwrap();
        assert_eq!(dev.durable_image()[0], 2);
        let s = dev.crash_states(2, &CrashStateOptions::default(), 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].image[0], 1);
        assert_eq!(dev.durable_image()[0], 2);
    }

    #[test]
    fn bounds_and_empty_writes() {
        let dev = CrashDevice::new(8192);
        let buf = [0u8; 4096];
        for off in [4097, u64::MAX, u64::MAX - 4095] {
            assert_eq!(
                dev.write_at(&buf, off).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                dev.read_at(&mut [0u8; 4096], off).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        dev.write_at(&[], 8192).unwrap();
        assert_eq!(
            dev.op_count(),
            0,
            "failed and empty writes are not recorded"
        );
        let dev = CrashDevice::from_image(vec![7u8; 4096]);
        assert_eq!(dev.len_bytes(), 4096);
        assert_eq!(dev.durable_image(), vec![7u8; 4096]);
    }
}
