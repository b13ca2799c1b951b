//! A global allocator that asks Linux for transparent huge pages on large blocks.
//!
//! Volumes and activations are tens of megabytes; glibc maps each such block afresh and the
//! kernel then faults it in 4 KiB at a time, which costs more than the arithmetic of a
//! memory-bound op (instance norm, a transposed convolution). `madvise(MADV_HUGEPAGE)`
//! lets those faults come 2 MiB at a time where the system allows it ("madvise" or
//! "always" in /sys/kernel/mm/transparent_hugepage/enabled); elsewhere it is a no-op.
use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes are advised: above glibc's largest mmap threshold
/// (32 MiB on 64-bit), where it maps every block on its own, so the advice covers whole
/// private mappings and never splits the heap's (smaller blocks are reused from the heap
/// and seldom fault anyway).
const ADVISE_FROM: usize = (32 << 20) + 1;

pub struct HugePageAlloc;

#[cfg(target_os = "linux")]
fn advise(ptr: *mut u8, size: usize) {
    const PAGE: usize = 4096;
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + size) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the block just allocated; the advice only changes
        // how the kernel backs those pages, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *mut u8, _size: usize) {}

// SAFETY: every call is forwarded to the system allocator with the same layout; the advice
// on large blocks does not change what they hold.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && layout.size() >= ADVISE_FROM {
            advise(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && layout.size() >= ADVISE_FROM {
            advise(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size >= ADVISE_FROM {
            advise(p, new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_allocate_zero_grow_and_free_like_the_system_allocator() {
        let alloc = HugePageAlloc;
        let size = ADVISE_FROM + 12_345;
        let layout = Layout::from_size_align(size, 64).unwrap();
        // SAFETY: a non-zero layout; every pointer is checked, used within its size and
        // freed with the layout it has.
        unsafe {
            let p = alloc.alloc_zeroed(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(64));
            let block = std::slice::from_raw_parts_mut(p, size);
            assert!(block.iter().all(|&b| b == 0));
            for (i, b) in block.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            let grown = alloc.realloc(p, layout, 2 * size);
            assert!(!grown.is_null());
            let block = std::slice::from_raw_parts(grown, size);
            assert!(block.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            alloc.dealloc(grown, Layout::from_size_align(2 * size, 64).unwrap());

            let small = Layout::from_size_align(100, 8).unwrap();
            let q = alloc.alloc(small);
            assert!(!q.is_null());
            q.write_bytes(7, 100);
            assert_eq!(*q.add(99), 7);
            alloc.dealloc(q, small);
        }
    }
}
