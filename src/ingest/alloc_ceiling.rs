//! A per-thread ceiling on the size of single allocations, for parsers that size their buffers
//! from declared lengths in untrusted files.
//!
//! dicom-rs reserves an element's declared length (`try_reserve_exact`) and zeroes it before
//! reading the value, so a 500-byte file that declares a 4 GB element costs 4 GB.
//! `dicom_scan` refuses such files from their headers first, but it reads the file the way the
//! standard says while dicom-rs follows its own rules on broken input (stray delimiters, item
//! lengths that disagree with their content), and fuzzing keeps finding files where the two
//! part ways. A parse cannot legitimately need a single buffer much larger than the data it
//! parses, so while [`with_ceiling`] runs, [`CeilingAllocator`] refuses any larger request; a
//! fallible reservation (dicom-rs's) then fails with an error instead of taking the memory.
//!
//! The ceiling only acts where the program installs the allocator (`cxr`, the fuzz targets and
//! the tests that check it do), over the system allocator or another one:
//! `#[global_allocator] static A: CeilingAllocator = CeilingAllocator::system();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates, which the
    // allocator below relies on.
    static CEILING: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// An allocator (the system's by default) returning null for any allocation (or reallocation)
/// larger than the ceiling the calling thread has set with [`with_ceiling`]. Outside
/// `with_ceiling` it is the allocator it wraps.
#[derive(Debug, Clone, Copy, Default)]
pub struct CeilingAllocator<A = System> {
    inner: A,
}

impl CeilingAllocator<System> {
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A: GlobalAlloc> CeilingAllocator<A> {
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

fn over_ceiling(size: usize) -> bool {
    CEILING.try_with(|c| size > c.get()).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the wrapped allocator, except requests over the
// ceiling, which get null: the documented way for an allocator to report failure.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CeilingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if over_ceiling(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if over_ceiling(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the wrapped allocator through this one, with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if over_ceiling(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` with single allocations on this thread limited to `ceiling` bytes (or a lower
/// ceiling already in force), restoring the previous one afterwards, also on panic.
pub fn with_ceiling<R>(ceiling: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0;
            let _ = CEILING.try_with(|c| c.set(previous));
        }
    }
    let previous = CEILING.with(|c| c.replace(ceiling.min(c.get())));
    let _restore = Restore(previous);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: CeilingAllocator = CeilingAllocator::system();

    #[test]
    fn reservations_over_the_ceiling_fail_and_the_ceiling_is_lifted_after() {
        with_ceiling(1 << 20, || {
            let mut small: Vec<u8> = Vec::new();
            assert!(small.try_reserve_exact(1 << 10).is_ok());
            let mut big: Vec<u8> = Vec::new();
            assert!(big.try_reserve_exact(1 << 30).is_err());
            // Growth by reallocation is refused too.
            assert!(small.try_reserve_exact(1 << 21).is_err());
            // A nested, larger ceiling does not lift the outer one.
            with_ceiling(1 << 31, || {
                assert!(Vec::<u8>::new().try_reserve_exact(1 << 21).is_err());
            });
        });
        let mut after: Vec<u8> = Vec::new();
        assert!(after.try_reserve_exact(4 << 20).is_ok());
    }

    #[test]
    fn other_threads_are_not_limited() {
        with_ceiling(64 << 10, || {
            let handle = std::thread::spawn(|| Vec::<u8>::new().try_reserve_exact(1 << 20).is_ok());
            assert!(handle.join().unwrap_or(false));
        });
    }
}
