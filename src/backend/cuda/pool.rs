//! A caching allocator for device buffers. Requests are rounded up to size classes; a freed
//! buffer goes back to its class's free list and serves the next request of that class,
//! so after the first training step no new device memory is allocated. `VOXSEG_POOL=off`
//! bypasses the cache (every buffer allocated and freed exactly), to tell pool bugs from
//! kernel bugs. While a [`PoolHold`] lives (a captured CUDA graph refers to cached blocks),
//! the pool neither allocates device memory nor frees its cache. Generic over the raw
//! allocator so the bookkeeping is tested without a GPU.
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where the pool gets memory from: device allocations of f32 elements.
pub trait RawAlloc: Send + Sync + 'static {
    type Block: Send + Sync + 'static;
    /// A new uninitialised block of `len` f32 elements.
    fn alloc(&self, len: usize) -> Result<Self::Block>;
    /// Fills a block with NaN (used to poison buffers in tests).
    fn fill_nan(&self, block: &mut Self::Block) -> Result<()>;
}

/// Bytes by state; "allocated" is what live buffers hold (whole size classes), "reserved"
/// adds the cached free blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    /// Calls to the raw allocator (device allocations).
    pub device_allocations: u64,
}

/// The element count a request of `len` is served with: powers of two up to 4096
/// elements, then multiples of an eighth of the power of two at or below `len` (so at most
/// 12.5% unused).
pub fn size_class(len: usize) -> usize {
    if len <= 4096 {
        return len.max(64).next_power_of_two();
    }
    let floor_pow2 = 1usize << (usize::BITS - 1 - len.leading_zeros());
    let step = floor_pow2 / 8;
    len.div_ceil(step) * step
}

/// `bytes` in MiB, or in GiB from 1 GiB on.
fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    match bytes as f64 / MIB {
        mib if mib < 1024.0 => format!("{mib:.1} MiB"),
        mib => format!("{:.2} GiB", mib / 1024.0),
    }
}

pub struct Pool<A: RawAlloc> {
    raw: A,
    caching: bool,
    poison: AtomicBool,
    /// Live [`PoolHold`]s.
    holds: AtomicUsize,
    state: Mutex<State<A::Block>>,
}

struct State<B> {
    free: HashMap<usize, Vec<B>>,
    stats: PoolStats,
}

/// A buffer of `len` elements from the pool; dropping it returns the block to the pool.
pub struct PoolBlock<A: RawAlloc> {
    block: Option<A::Block>,
    len: usize,
    class: usize,
    pool: Arc<Pool<A>>,
}

const F32_BYTES: u64 = 4;

impl<A: RawAlloc> Pool<A> {
    pub fn new(raw: A, caching: bool) -> Arc<Self> {
        Arc::new(Self {
            raw,
            caching,
            poison: AtomicBool::new(false),
            holds: AtomicUsize::new(0),
            state: Mutex::new(State {
                free: HashMap::new(),
                stats: PoolStats::default(),
            }),
        })
    }

    /// Caching unless the environment says `VOXSEG_POOL=off`.
    pub fn from_env(raw: A) -> Arc<Self> {
        let off = std::env::var("VOXSEG_POOL").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        Self::new(raw, !off)
    }

    pub fn caching(&self) -> bool {
        self.caching
    }

    /// From now on every buffer handed out is NaN-filled first, so that a kernel that
    /// leaves part of its output unwritten is caught.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Starts both peaks over from what is allocated and reserved now, so that they measure
    /// what comes after (one benchmark case rather than the whole process).
    pub fn reset_peaks(&self) {
        let mut st = self.lock();
        let s = &mut st.stats;
        s.peak_allocated_bytes = s.allocated_bytes;
        s.peak_reserved_bytes = s.reserved_bytes;
    }

    /// Until the returned hold drops, a request the cache cannot serve fails instead of
    /// allocating device memory, and `release_cached` frees nothing: the blocks handed out
    /// and returned meanwhile stay this pool's, at the same addresses.
    pub fn hold(self: &Arc<Self>) -> PoolHold<A> {
        self.holds.fetch_add(1, Ordering::SeqCst);
        PoolHold { pool: self.clone() }
    }

    fn held(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    fn lock(&self) -> MutexGuard<'_, State<A::Block>> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` elements (contents undefined unless poisoning is on).
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<PoolBlock<A>> {
        let class = if self.caching {
            size_class(len)
        } else {
            len.max(1)
        };
        let cached = if self.caching {
            self.lock().free.get_mut(&class).and_then(Vec::pop)
        } else {
            None
        };
        let mut block = match cached {
            Some(b) => b,
            None if self.held() => {
                return Err(Error::Backend {
                    backend: "pool",
                    msg: format!(
                        "{len} elements: no cached block of {class} and the pool is held \
                         (no device allocation while a captured graph uses its blocks)"
                    ),
                });
            }
            None => self.alloc_raw(class)?,
        };
        if self.poison.load(Ordering::Relaxed) {
            self.raw.fill_nan(&mut block)?;
        }
        {
            let mut st = self.lock();
            let s = &mut st.stats;
            s.allocated_bytes += class as u64 * F32_BYTES;
            s.peak_allocated_bytes = s.peak_allocated_bytes.max(s.allocated_bytes);
        }
        Ok(PoolBlock {
            block: Some(block),
            len,
            class,
            pool: self.clone(),
        })
    }

    /// A new block, after freeing the cache once if the device is out of memory. A block
    /// that still does not fit fails with the sizes involved.
    fn alloc_raw(&self, class: usize) -> Result<A::Block> {
        let block = match self.raw.alloc(class) {
            Ok(b) => b,
            Err(first) => {
                let retried = if self.release_cached() == 0 {
                    Err(first)
                } else {
                    self.raw.alloc(class)
                };
                retried.map_err(|e| self.allocation_failure(class, e))?
            }
        };
        let mut st = self.lock();
        let s = &mut st.stats;
        s.device_allocations += 1;
        s.reserved_bytes += class as u64 * F32_BYTES;
        s.peak_reserved_bytes = s.peak_reserved_bytes.max(s.reserved_bytes);
        Ok(block)
    }

    fn allocation_failure(&self, class: usize, cause: Error) -> Error {
        let s = self.stats();
        Error::Backend {
            backend: "pool",
            msg: format!(
                "a device buffer of {} could not be allocated with {} in live buffers (peak \
                 {}) and the pool's cache freed ({cause}); the work needs more device memory \
                 than is free",
                human_bytes(class as u64 * F32_BYTES),
                human_bytes(s.allocated_bytes),
                human_bytes(s.peak_allocated_bytes)
            ),
        }
    }

    /// Frees every cached block; returns how many bytes were released (none while held).
    pub fn release_cached(&self) -> u64 {
        if self.held() {
            return 0;
        }
        let free = std::mem::take(&mut self.lock().free);
        let bytes: u64 = free
            .iter()
            .map(|(class, blocks)| *class as u64 * F32_BYTES * blocks.len() as u64)
            .sum();
        drop(free);
        self.lock().stats.reserved_bytes -= bytes;
        bytes
    }

    fn give_back(&self, block: A::Block, class: usize) {
        let bytes = class as u64 * F32_BYTES;
        let mut st = self.lock();
        st.stats.allocated_bytes -= bytes;
        if self.caching {
            st.free.entry(class).or_default().push(block);
        } else {
            st.stats.reserved_bytes -= bytes;
            drop(st);
            drop(block);
        }
    }
}

/// See [`Pool::hold`]; releases the hold when dropped.
pub struct PoolHold<A: RawAlloc> {
    pool: Arc<Pool<A>>,
}

impl<A: RawAlloc> Drop for PoolHold<A> {
    fn drop(&mut self) {
        self.pool.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<A: RawAlloc> PoolBlock<A> {
    /// Elements requested (the block may hold more).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn block(&self) -> &A::Block {
        self.block.as_ref().expect("present until drop")
    }
    pub fn block_mut(&mut self) -> &mut A::Block {
        self.block.as_mut().expect("present until drop")
    }
}

impl<A: RawAlloc> Drop for PoolBlock<A> {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.pool.give_back(b, self.class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::AtomicUsize;

    /// Host memory standing in for the device, with an optional capacity in elements.
    struct HostAlloc {
        live: Arc<AtomicUsize>,
        capacity: usize,
    }

    struct HostBlock {
        data: Vec<f32>,
        live: Arc<AtomicUsize>,
    }

    impl Drop for HostBlock {
        fn drop(&mut self) {
            self.live.fetch_sub(self.data.len(), Ordering::Relaxed);
        }
    }

    impl RawAlloc for HostAlloc {
        type Block = HostBlock;
        fn alloc(&self, len: usize) -> Result<HostBlock> {
            let before = self.live.fetch_add(len, Ordering::Relaxed);
            if before + len > self.capacity {
                self.live.fetch_sub(len, Ordering::Relaxed);
                return Err(Error::Backend {
                    backend: "host",
                    msg: "out of memory".into(),
                });
            }
            Ok(HostBlock {
                data: vec![0.0; len],
                live: self.live.clone(),
            })
        }
        fn fill_nan(&self, block: &mut HostBlock) -> Result<()> {
            block.data.fill(f32::NAN);
            Ok(())
        }
    }

    fn pool(caching: bool, capacity: usize) -> (Arc<Pool<HostAlloc>>, Arc<AtomicUsize>) {
        let live = Arc::new(AtomicUsize::new(0));
        let raw = HostAlloc {
            live: live.clone(),
            capacity,
        };
        (Pool::new(raw, caching), live)
    }

    #[test]
    fn size_classes_round_up_by_at_most_an_eighth_above_4096() {
        assert_eq!(size_class(0), 64);
        assert_eq!(size_class(100), 128);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 4608);
        assert_eq!(size_class(1 << 20), 1 << 20);
        for len in [5000usize, 123_457, 3_000_001, 134_217_729] {
            let c = size_class(len);
            assert!(c >= len && (c - len) * 8 <= len, "{len} -> {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }

    #[test]
    fn freed_blocks_are_reused_and_counted() {
        let (p, live) = pool(true, usize::MAX);
        let a = p.alloc(1000).unwrap();
        let b = p.alloc(3000).unwrap();
        assert_eq!(a.len(), 1000);
        assert_eq!(a.block().data.len(), 1024);
        drop(a);
        let s = p.stats();
        assert_eq!(s.allocated_bytes, 4096 * 4);
        assert_eq!(s.reserved_bytes, (1024 + 4096) * 4);
        assert_eq!(s.device_allocations, 2);
        let c = p.alloc(1020).unwrap();
        assert_eq!(p.stats().device_allocations, 2, "same class: reused");
        let d = p.alloc(1020).unwrap();
        assert_eq!(p.stats().device_allocations, 3, "class busy: new block");
        assert_eq!(p.stats().peak_allocated_bytes, (1024 * 2 + 4096) * 4);
        drop((b, d));
        p.reset_peaks();
        let s = p.stats();
        assert_eq!(s.peak_allocated_bytes, 1024 * 4, "what is live: c");
        assert_eq!(s.peak_reserved_bytes, s.reserved_bytes);
        let e = p.alloc(4000).unwrap();
        assert_eq!(p.stats().peak_allocated_bytes, (1024 + 4096) * 4);
        drop((c, e));
        assert_eq!(p.stats().allocated_bytes, 0);
        assert_eq!(live.load(Ordering::Relaxed), 1024 * 2 + 4096);
        assert_eq!(p.release_cached(), (1024 * 2 + 4096) * 4);
        assert_eq!(live.load(Ordering::Relaxed), 0);
        assert_eq!(p.stats().reserved_bytes, 0);
    }

    #[test]
    fn without_caching_blocks_are_exact_and_freed() {
        let (p, live) = pool(false, usize::MAX);
        let a = p.alloc(1000).unwrap();
        assert_eq!(a.block().data.len(), 1000);
        drop(a);
        assert_eq!(live.load(Ordering::Relaxed), 0);
        let _b = p.alloc(1000).unwrap();
        let s = p.stats();
        assert_eq!((s.device_allocations, s.reserved_bytes), (2, 4000));
    }

    #[test]
    fn out_of_memory_frees_the_cache_and_retries() {
        let (p, live) = pool(true, 8192);
        drop(p.alloc(4096).unwrap());
        assert_eq!(live.load(Ordering::Relaxed), 4096);
        let big = p.alloc(6000).unwrap();
        assert_eq!(big.block().data.len(), 6144);
        assert_eq!(
            live.load(Ordering::Relaxed),
            6144,
            "the cached 4096 were freed"
        );
        assert!(p.alloc(4096).is_err(), "nothing cached left to free");
    }

    /// A block that does not fit even after the cache is freed fails naming its size, the
    /// live and peak bytes, and the allocator's own error.
    #[test]
    fn a_failed_allocation_says_how_much_was_asked_and_held() {
        let (p, _) = pool(true, 1 << 20);
        let held = p.alloc(3 << 18).unwrap();
        drop(p.alloc(1 << 16).unwrap());
        let err = match p.alloc(1 << 19) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("2 MiB fitted beside 3 MiB in 4 MiB"),
        };
        for part in [
            "buffer of 2.0 MiB",
            "3.0 MiB in live buffers",
            "peak 3.2 MiB",
            "out of memory",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        drop(held);
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }

    #[test]
    fn a_held_pool_serves_only_from_its_cache_and_keeps_it() {
        let (p, live) = pool(true, usize::MAX);
        drop((p.alloc(1000).unwrap(), p.alloc(5000).unwrap()));
        let hold = p.hold();
        let a = p.alloc(1020).unwrap();
        let b = p.alloc(5000).unwrap();
        let Err(err) = p.alloc(1020) else {
            panic!("class busy and no allocation allowed, yet a block came back");
        };
        assert!(err.to_string().contains("held"), "{err}");
        assert!(p.alloc(100_000).is_err(), "a new class is refused too");
        drop((a, b));
        assert_eq!(p.release_cached(), 0, "nothing freed while held");
        assert_eq!(live.load(Ordering::Relaxed), 1024 + 5120);
        let again = p.alloc(1000).unwrap();
        assert_eq!(p.stats().device_allocations, 2);
        drop((again, hold));
        let first = p.alloc(1020).unwrap();
        assert_eq!(p.stats().device_allocations, 2, "served by the cache");
        let second = p.alloc(1020).unwrap();
        assert_eq!(
            p.stats().device_allocations,
            3,
            "allocates again once released"
        );
        drop((first, second));
        assert_eq!(p.release_cached(), (2 * 1024 + 5120) * 4);
    }

    #[test]
    fn without_caching_a_held_pool_refuses_every_request() {
        let (p, live) = pool(false, usize::MAX);
        let _hold = p.hold();
        assert!(p.alloc(10).is_err());
        assert_eq!(live.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn poisoned_buffers_are_nan() {
        let (p, _) = pool(true, usize::MAX);
        drop(p.alloc(10).unwrap());
        p.set_poison(true);
        let b = p.alloc(10).unwrap();
        assert!(b.block().data.iter().all(|v| v.is_nan()));
    }
}
