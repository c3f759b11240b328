//! Integration tests: the real server over loopback, a downstream that records what it received.

mod common;

/// Counts the bytes each thread has allocated and not freed, so that a test can measure the memory of
/// what it builds, undisturbed by tests running on other threads.
mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static NET: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        // During thread teardown the counter may be gone; those bytes are not anyone's measurement.
        let _ = NET.try_with(|n| n.set(n.get() + delta));
    }

    /// Bytes allocated and not yet freed by this thread.
    pub fn net_on_this_thread() -> isize {
        NET.try_with(Cell::get).unwrap_or(0)
    }

    pub struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the counter only observes sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let ptr = unsafe { System.alloc(layout) };
            if !ptr.is_null() {
                add(layout.size() as isize);
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            new
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}

mod attacks;
mod binary;
mod config_files;
mod console;
mod dedup;
mod durability;
mod forwarding;
mod lifecycle;
mod limits;
mod loadgen;
mod operations;
mod providers;
mod quarantine;
mod queue;
mod schemes;
mod shadow;
mod slack;
mod traffic;
