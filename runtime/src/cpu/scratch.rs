//! The feature buffers of specialized kernels, kept per thread between calls.
//!
//! A decode step needs `2 (m + 7)` words of scratch (the key's and the query's features).
//! Allocating and zeroing them on every call was a measurable part of a small decode step
//! (`docs/backends/cpu.md`), so each thread keeps its buffer and lends it to one call at a time.
//! The buffer grows to the largest configuration the thread has run and is freed when the
//! thread exits.

use std::cell::Cell;

thread_local! {
    static BUFFER: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// This thread's buffer, at least `len` words long, for the duration of one call. The contents
/// are whatever the previous call left: kernels write every feature before reading it.
pub(crate) struct KernelScratch(Vec<f32>);

impl KernelScratch {
    pub(crate) fn take(len: usize) -> Self {
        // A nested call on the same thread (none exists today) would find the buffer taken
        // and simply allocate its own.
        let mut buffer = BUFFER.with(Cell::take);
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        Self(buffer)
    }
}

impl std::ops::Deref for KernelScratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for KernelScratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for KernelScratch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        // During thread teardown the slot may already be gone; the buffer is then just freed.
        let _ = BUFFER.try_with(|slot| slot.set(buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_reused_and_grows_on_demand() {
        let first = KernelScratch::take(10);
        assert!(first.len() >= 10);
        let ptr = first.as_ptr();
        drop(first);
        let again = KernelScratch::take(5);
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        // While one call holds it, another gets its own.
        let nested = KernelScratch::take(3);
        assert_ne!(nested.as_ptr(), ptr);
        assert!(nested.len() >= 3);
        drop(nested);
        drop(again);
        assert!(KernelScratch::take(1000).len() >= 1000);
    }
}
