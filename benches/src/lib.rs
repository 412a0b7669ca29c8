//! Helpers shared by the benches (see `keyed_counter.rs` for what the benches are).
//!
//! [`reference`](mod@reference) holds issue 8's reference loop (a `HashMap<String, u64>`
//! counter over [`Ev`]s), which every bench group that times an operator also times, and the
//! map, fold, dedup and window workloads measured against it.
//!
//! [`CountingAlloc`] wraps the system allocator and counts what goes through it, for the
//! memory and allocation benches (`operator_memory.rs`, `allocations.rs`). A bench installs it
//! with
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: rs2_benches::CountingAlloc = rs2_benches::CountingAlloc;
//! # fn main() {}
//! ```

pub mod reference;

pub use reference::{reference_loop, Ev};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_FOOTPRINT: AtomicUsize = AtomicUsize::new(0);
static LIVE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
static PEAK_FOOTPRINT: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static REALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES_ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting: live bytes (as requested, and as malloc's footprint), live
/// blocks, and the allocations, reallocations and bytes allocated since the start.
pub struct CountingAlloc;

/// What [`CountingAlloc`] has counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Bytes of live blocks, as requested (`Layout::size`).
    pub live_bytes: usize,
    /// Bytes of live blocks as the allocator holds them: on glibc, each block's usable size
    /// plus its 8-byte chunk header (so rounding to 16 bytes and the 32-byte minimum count);
    /// elsewhere the same as `live_bytes`.
    pub live_footprint: usize,
    /// Live blocks.
    pub live_blocks: usize,
    /// `alloc` and `alloc_zeroed` calls.
    pub allocs: usize,
    /// `realloc` calls.
    pub reallocs: usize,
    /// Bytes requested by `alloc`, `alloc_zeroed` and `realloc` (its new size).
    pub bytes_allocated: usize,
}

impl Snapshot {
    /// Allocations of any kind: `alloc`, `alloc_zeroed` and `realloc` calls.
    pub fn allocations(&self) -> usize {
        self.allocs + self.reallocs
    }
}

impl CountingAlloc {
    /// The counters now.
    pub fn snapshot() -> Snapshot {
        Snapshot {
            live_bytes: LIVE_BYTES.load(Relaxed),
            live_footprint: LIVE_FOOTPRINT.load(Relaxed),
            live_blocks: LIVE_BLOCKS.load(Relaxed),
            allocs: ALLOCS.load(Relaxed),
            reallocs: REALLOCS.load(Relaxed),
            bytes_allocated: BYTES_ALLOCATED.load(Relaxed),
        }
    }

    /// Restarts peak tracking from the current live footprint.
    pub fn reset_peak() {
        PEAK_FOOTPRINT.store(LIVE_FOOTPRINT.load(Relaxed), Relaxed);
    }

    /// The highest live footprint since the last [`reset_peak`](Self::reset_peak).
    pub fn peak_footprint() -> usize {
        PEAK_FOOTPRINT.load(Relaxed)
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn footprint(ptr: *mut u8, _size: usize) -> usize {
    extern "C" {
        fn malloc_usable_size(ptr: *mut std::ffi::c_void) -> usize;
    }
    // SAFETY: `ptr` is a live block of the system allocator (glibc's malloc).
    unsafe { malloc_usable_size(ptr.cast()) + 8 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn footprint(_ptr: *mut u8, size: usize) -> usize {
    size
}

fn added(ptr: *mut u8, size: usize) {
    LIVE_BYTES.fetch_add(size, Relaxed);
    LIVE_BLOCKS.fetch_add(1, Relaxed);
    let held = footprint(ptr, size);
    let now = LIVE_FOOTPRINT.fetch_add(held, Relaxed) + held;
    PEAK_FOOTPRINT.fetch_max(now, Relaxed);
}

fn removed(ptr: *mut u8, size: usize) {
    LIVE_BYTES.fetch_sub(size, Relaxed);
    LIVE_BLOCKS.fetch_sub(1, Relaxed);
    LIVE_FOOTPRINT.fetch_sub(footprint(ptr, size), Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counting touches only atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES_ALLOCATED.fetch_add(layout.size(), Relaxed);
            added(ptr, layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES_ALLOCATED.fetch_add(layout.size(), Relaxed);
            added(ptr, layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        removed(ptr, layout.size());
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_footprint = footprint(ptr, layout.size());
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            REALLOCS.fetch_add(1, Relaxed);
            BYTES_ALLOCATED.fetch_add(new_size, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            LIVE_FOOTPRINT.fetch_sub(old_footprint, Relaxed);
            LIVE_BLOCKS.fetch_sub(1, Relaxed);
            added(new, new_size);
        }
        new
    }
}
