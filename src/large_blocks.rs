//! The binary's global allocator: large blocks on huge pages, kept for reuse after free.
//!
//! Activations, gradients and volumes are megabytes each, and a training step frees and
//! allocates the same sizes again every iteration. Through glibc, every such block is a fresh
//! mapping that the kernel faults in and clears page by page: about a sixth of a CPU training
//! step went to `clear_page`. Here blocks of `LARGE` bytes or more get their own mapping
//! (2 MiB aligned, advised `MADV_HUGEPAGE`), and a freed one is kept and handed out again for
//! the next request of the same rounded size: as it is, already faulted in, where the caller
//! will write it (a copy, a collected result); with its pages dropped, where the caller asked
//! for zeros, so that the kernel clears them in the threads that first write them rather
//! than one memset on the allocating thread (which measured slower than no cache at all).
//!
//! The cache never lets the process hold more than its own high-water mark of live large
//! blocks: before a new mapping would exceed it, the oldest cached blocks are unmapped, so
//! the footprint is what the program needed anyway at its peak. `VOXSEG_ALLOC_CACHE=off`
//! returns every block to the system at once (for hunting memory bugs).
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// Blocks from this size on get their own mapping and are cached.
const LARGE: usize = 4 << 20;
/// Mappings are multiples of, and aligned to, a transparent huge page.
const HUGE_PAGE: usize = 2 << 20;
/// How many freed blocks the cache holds at most (a fixed array: the allocator cannot
/// allocate for its own bookkeeping).
const SLOTS: usize = 256;

/// A freed mapping: its address and length.
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    len: usize,
}

const EMPTY: Block = Block { addr: 0, len: 0 };

struct Cache {
    /// Freed blocks, oldest first.
    free: [Block; SLOTS],
    count: usize,
    /// Bytes in `free`.
    cached: usize,
    /// Bytes of large blocks handed out and not yet freed.
    live: usize,
    /// The most `live` has been.
    high_water: usize,
}

/// At most this many blocks are unmapped per lock (unmapping happens with the lock released).
const EVICT_BATCH: usize = 16;

/// Blocks taken out of the cache to be unmapped once the lock is released.
struct Evicted {
    blocks: [Block; EVICT_BATCH],
    count: usize,
}

impl Evicted {
    fn new() -> Self {
        Self {
            blocks: [EMPTY; EVICT_BATCH],
            count: 0,
        }
    }

    fn unmap(&self) {
        for b in &self.blocks[..self.count] {
            unmap(b.addr, b.len);
        }
    }
}

impl Cache {
    const fn new() -> Self {
        Self {
            free: [EMPTY; SLOTS],
            count: 0,
            cached: 0,
            live: 0,
            high_water: 0,
        }
    }

    /// Takes a cached block of exactly `len` bytes, newest first (the warmest in cache).
    fn take(&mut self, len: usize) -> Option<usize> {
        let i = (0..self.count).rev().find(|&i| self.free[i].len == len)?;
        let addr = self.free[i].addr;
        self.remove(i);
        self.cached -= len;
        self.live += len;
        Some(addr)
    }

    fn remove(&mut self, i: usize) {
        self.free.copy_within(i + 1..self.count, i);
        self.count -= 1;
    }

    /// Removes the oldest blocks until `live + cached` fits under the high-water mark or the
    /// batch is full; true when it still does not fit and blocks are left to evict.
    fn evict_to_fit(&mut self, evicted: &mut Evicted) -> bool {
        while self.over_high_water() && evicted.count < EVICT_BATCH {
            self.evict_oldest(evicted);
        }
        self.over_high_water()
    }

    fn over_high_water(&self) -> bool {
        self.live + self.cached > self.high_water && self.count > 0
    }

    fn evict_oldest(&mut self, evicted: &mut Evicted) {
        let b = self.free[0];
        self.remove(0);
        self.cached -= b.len;
        evicted.blocks[evicted.count] = b;
        evicted.count += 1;
    }
}

/// What the cache holds, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub cached_blocks: usize,
    pub cached_bytes: usize,
    pub live_bytes: usize,
    pub high_water_bytes: usize,
}

pub struct LargeBlockAlloc {
    cache: Mutex<Cache>,
    /// 0: not read yet, 1: caching on, 2: off (`VOXSEG_ALLOC_CACHE=off`).
    mode: AtomicU8,
}

impl Default for LargeBlockAlloc {
    fn default() -> Self {
        Self::new()
    }
}

impl LargeBlockAlloc {
    pub const fn new() -> Self {
        Self {
            cache: Mutex::new(Cache::new()),
            mode: AtomicU8::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        let c = self.lock();
        CacheStats {
            cached_blocks: c.count,
            cached_bytes: c.cached,
            live_bytes: c.live,
            high_water_bytes: c.high_water,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent counts.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn caching(&self) -> bool {
        match self.mode.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let on = !env_says_off();
                self.mode.store(if on { 1 } else { 2 }, Ordering::Relaxed);
                on
            }
        }
    }

    /// A large block of `len` (a multiple of `HUGE_PAGE`) bytes, and whether it is fresh
    /// from the kernel (and so already zero).
    fn take_block(&self, len: usize) -> Option<(*mut u8, bool)> {
        let mut evicted = Evicted::new();
        let (mut over, high_before) = {
            let mut c = self.lock();
            if let Some(addr) = c.take(len) {
                return Some((addr as *mut u8, false));
            }
            let before = c.high_water;
            c.live += len;
            c.high_water = before.max(c.live);
            (c.evict_to_fit(&mut evicted), before)
        };
        evicted.unmap();
        // One batch may not be enough (many small cached blocks, one large request): keep
        // unmapping until the footprint is back under the high-water mark.
        while over {
            let mut evicted = Evicted::new();
            over = self.lock().evict_to_fit(&mut evicted);
            evicted.unmap();
        }
        if let Some(p) = map(len) {
            return Some((p, true));
        }
        // Out of address space or memory: give back everything cached and try once more.
        while self.release_cached() {}
        match map(len) {
            Some(p) => Some((p, true)),
            None => {
                // The request never became live, so the peak it raised was never reached.
                let mut c = self.lock();
                c.live -= len;
                c.high_water = high_before.max(c.live);
                None
            }
        }
    }

    /// Unmaps up to a batch of the oldest cached blocks; false when none was left.
    fn release_cached(&self) -> bool {
        let mut evicted = Evicted::new();
        {
            let mut c = self.lock();
            while c.count > 0 && evicted.count < EVICT_BATCH {
                c.evict_oldest(&mut evicted);
            }
        }
        evicted.unmap();
        evicted.count > 0
    }

    fn give_back(&self, addr: usize, len: usize) {
        let mut evicted = Evicted::new();
        let keep = self.caching();
        {
            let mut c = self.lock();
            c.live -= len;
            if keep {
                if c.count == SLOTS {
                    c.evict_oldest(&mut evicted);
                }
                let n = c.count;
                c.free[n] = Block { addr, len };
                c.count += 1;
                c.cached += len;
            }
        }
        evicted.unmap();
        if !keep {
            unmap(addr, len);
        }
    }

    fn alloc_large(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        match self.take_block(mapping_len(layout.size())) {
            Some((p, fresh)) => {
                if zeroed && !fresh {
                    clear(p, mapping_len(layout.size()));
                }
                p
            }
            None => std::ptr::null_mut(),
        }
    }
}

/// Whether a layout is served by our own mappings (alignment within a huge page's).
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= HUGE_PAGE
}

fn mapping_len(size: usize) -> usize {
    size.next_multiple_of(HUGE_PAGE)
}

fn env_says_off() -> bool {
    // SAFETY: a NUL-terminated name; getenv does not allocate through this allocator, and the
    // returned string is only read while the environment is not being changed (voxseg never
    // sets variables after start).
    unsafe {
        let v = libc::getenv(c"VOXSEG_ALLOC_CACHE".as_ptr());
        !v.is_null() && std::ffi::CStr::from_ptr(v).to_bytes() == b"off"
    }
}

/// A fresh anonymous mapping of `len` bytes aligned to `HUGE_PAGE`, advised to use huge pages.
fn map(len: usize) -> Option<*mut u8> {
    let span = len + HUGE_PAGE;
    // SAFETY: an anonymous private mapping; the parts outside the aligned window are
    // unmapped right away and never handed out.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + span - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Only a hint: where THP is off the pages are still 4 KiB and correct.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        Some(aligned as *mut u8)
    }
}

/// Makes a cached block read as zeros by dropping its pages: they fault back in, zeroed by
/// the kernel, in whichever threads touch them first. A memset here would clear the whole
/// block on one thread before a parallel kernel gets to write it.
fn clear(p: *mut u8, len: usize) {
    // SAFETY: (p, len) is a whole private anonymous mapping of ours that the caller now owns;
    // MADV_DONTNEED on such a mapping makes every page read as zero afterwards.
    let done = unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) };
    if done != 0 {
        // SAFETY: as above; the fallback when the kernel refuses the advice.
        unsafe { p.write_bytes(0, len) };
    }
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: (addr, len) is a whole mapping made by `map` that nothing refers to any more.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

// SAFETY: small or over-aligned layouts go to the system allocator unchanged. A large block is
// an exclusive mapping of at least its size, aligned to 2 MiB (which covers its layout's
// alignment); a cached block is handed out again only after its owner freed it, and is
// zeroed when the caller asked for zeroed memory.
unsafe impl GlobalAlloc for LargeBlockAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            self.alloc_large(layout, false)
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            self.alloc_large(layout, true)
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            self.give_back(ptr as usize, mapping_len(layout.size()));
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (whole block): the caller guarantees `ptr` was allocated here with `layout`
        // and that `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(layout), is_large(new_layout)) {
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) if mapping_len(layout.size()) == mapping_len(new_size) => ptr,
            _ => unsafe {
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    p.copy_from_nonoverlapping(ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 64).unwrap()
    }

    #[test]
    fn a_freed_block_is_reused_for_the_same_size_and_zeroed_when_asked() {
        let alloc = LargeBlockAlloc::new();
        let l = layout(40 * MIB + 123);
        // SAFETY: every pointer is checked, used within its size and freed with its layout.
        unsafe {
            let p = alloc.alloc_zeroed(l);
            assert!(!p.is_null() && (p as usize).is_multiple_of(HUGE_PAGE));
            let block = std::slice::from_raw_parts_mut(p, l.size());
            assert!(block.iter().all(|&b| b == 0));
            block.fill(0xAB);
            alloc.dealloc(p, l);
            assert_eq!(alloc.stats().cached_blocks, 1);
            assert_eq!(alloc.stats().cached_bytes, 42 * MIB);

            let q = alloc.alloc_zeroed(l);
            assert_eq!(q, p, "the cached block comes back");
            let block = std::slice::from_raw_parts(q, l.size());
            assert!(block.iter().all(|&b| b == 0), "a reused block is cleared");
            assert_eq!(alloc.stats().cached_blocks, 0);
            alloc.dealloc(q, l);

            let r = alloc.alloc(layout(41 * MIB));
            assert_eq!(r, p, "41 MiB rounds to the same 42 MiB mapping");
            alloc.dealloc(r, layout(41 * MIB));
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_the_high_water_mark_of_live_blocks() {
        let alloc = LargeBlockAlloc::new();
        // SAFETY: as above.
        unsafe {
            let a = alloc.alloc(layout(64 * MIB));
            let b = alloc.alloc(layout(16 * MIB));
            alloc.dealloc(a, layout(64 * MIB));
            alloc.dealloc(b, layout(16 * MIB));
            let s = alloc.stats();
            assert_eq!(
                (s.cached_bytes, s.live_bytes, s.high_water_bytes),
                (80 * MIB, 0, 80 * MIB)
            );

            // A size the cache cannot serve: the oldest block (64 MiB) goes so that live plus
            // cached stays within the 80 MiB peak.
            let c = alloc.alloc(layout(30 * MIB));
            let s = alloc.stats();
            assert_eq!(
                (s.cached_blocks, s.cached_bytes, s.live_bytes),
                (1, 16 * MIB, 30 * MIB)
            );
            assert!(s.cached_bytes + s.live_bytes <= s.high_water_bytes);
            let d = alloc.alloc(layout(16 * MIB));
            assert_eq!(d, b, "the 16 MiB block survived and is reused");
            alloc.dealloc(c, layout(30 * MIB));
            alloc.dealloc(d, layout(16 * MIB));
        }
    }

    #[test]
    fn a_mapping_the_system_refuses_returns_null_and_leaves_the_peak_alone() {
        let alloc = LargeBlockAlloc::new();
        // SAFETY: as above; the refused request returns null and is never used.
        unsafe {
            let a = alloc.alloc(layout(8 * MIB));
            alloc.dealloc(a, layout(8 * MIB));
            // 128 TiB, the whole user address space of x86-64 without 5-level paging (and
            // more than mmap hands out without a hint where it has it): never mapped.
            let huge = layout(1 << 47);
            assert!(alloc.alloc(huge).is_null());
            let s = alloc.stats();
            assert_eq!((s.live_bytes, s.high_water_bytes), (0, 8 * MIB));
        }
    }

    #[test]
    fn a_large_request_evicts_more_than_one_batch_of_small_cached_blocks() {
        let alloc = LargeBlockAlloc::new();
        let small = layout(4 * MIB);
        let n = EVICT_BATCH + 4;
        // SAFETY: as above.
        unsafe {
            let blocks: Vec<*mut u8> = (0..n).map(|_| alloc.alloc(small)).collect();
            assert!(blocks.iter().all(|p| !p.is_null()));
            for &p in &blocks {
                alloc.dealloc(p, small);
            }
            let big = layout(n * 4 * MIB);
            let p = alloc.alloc(big);
            assert!(!p.is_null());
            let s = alloc.stats();
            assert_eq!(
                (s.live_bytes, s.high_water_bytes),
                (n * 4 * MIB, n * 4 * MIB)
            );
            assert_eq!(
                (s.cached_blocks, s.cached_bytes),
                (0, 0),
                "every small block goes, not just one batch"
            );
            alloc.dealloc(p, big);
        }
    }

    #[test]
    fn realloc_keeps_contents_across_small_and_large_blocks() {
        let alloc = LargeBlockAlloc::new();
        // SAFETY: as above; each realloc's result replaces the old pointer.
        unsafe {
            let small = layout(1000);
            let p = alloc.alloc(small);
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let big = alloc.realloc(p, small, 8 * MIB - 4096);
            assert!(!big.is_null());
            let check = |q: *const u8| (0..1000).all(|i| *q.add(i) == (i % 251) as u8);
            assert!(check(big));
            let same = alloc.realloc(big, layout(8 * MIB - 4096), 8 * MIB);
            assert_eq!(same, big, "growing within the mapping stays in place");
            let bigger = alloc.realloc(same, layout(8 * MIB), 20 * MIB);
            assert!(check(bigger));
            let back = alloc.realloc(bigger, layout(20 * MIB), 1000);
            assert!(check(back));
            alloc.dealloc(back, small);
            assert_eq!(alloc.stats().live_bytes, 0);
        }
    }

    #[test]
    fn small_and_over_aligned_blocks_go_to_the_system_allocator() {
        let alloc = LargeBlockAlloc::new();
        // SAFETY: as above.
        unsafe {
            let small = layout(100);
            let q = alloc.alloc(small);
            q.write_bytes(7, 100);
            assert_eq!(*q.add(99), 7);
            alloc.dealloc(q, small);
            let odd = Layout::from_size_align(LARGE, 2 * HUGE_PAGE).unwrap();
            let r = alloc.alloc_zeroed(odd);
            assert!((r as usize).is_multiple_of(2 * HUGE_PAGE));
            alloc.dealloc(r, odd);
        }
        assert_eq!(alloc.stats().high_water_bytes, 0);
    }
}
