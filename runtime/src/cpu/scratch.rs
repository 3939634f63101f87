//! The f32 buffers of the CPU paths (kernels' features and chunks, half-precision calls'
//! widened inputs), kept per thread between calls.
//!
//! A decode step needs `2 (m + 7)` words of scratch (the key's and the query's features).
//! Allocating and zeroing them on every call was a measurable part of a small decode step
//! (`docs/backends/cpu.md`), so each thread keeps its buffer and lends it to one call at a time.
//! The buffer grows to the largest configuration the thread has run and is freed when the
//! thread exits. A thread keeps up to [`KEPT`] buffers of up to [`KEPT_WORDS`] words: a
//! half-precision call holds one for its f32 copies while its lanes take another, and a lane
//! that splits its chunks over the pool holds one while the chunks it runs itself take more.

use std::cell::RefCell;

/// Buffers a thread keeps between calls.
const KEPT: usize = 3;
/// Words of the largest buffer a thread keeps (32 MiB); a larger one is freed after its call.
const KEPT_WORDS: usize = 1 << 23;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's buffer, at least `len` words long, for the duration of one call. The contents
/// are whatever the previous call left: kernels write every feature before reading it.
pub(crate) struct KernelScratch(Vec<f32>);

impl KernelScratch {
    pub(crate) fn take(len: usize) -> Self {
        // The smallest kept buffer that is long enough, else the longest (to grow); with
        // none left, a new one.
        let mut buffer = BUFFERS
            .try_with(|kept| {
                let mut kept = kept.borrow_mut();
                let fits = (0..kept.len())
                    .filter(|&i| kept[i].len() >= len)
                    .min_by_key(|&i| kept[i].len());
                let longest = (0..kept.len()).max_by_key(|&i| kept[i].len());
                fits.or(longest).map(|i| kept.swap_remove(i))
            })
            .ok()
            .flatten()
            .unwrap_or_default();
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
        // During thread teardown the slot may already be gone; the buffer is then just freed,
        // as is one beyond the buffers a thread keeps.
        let _ = BUFFERS.try_with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() < KEPT && buffer.len() <= KEPT_WORDS {
                kept.push(buffer);
            }
        });
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
        // While one call holds it, another gets its own, and both are kept.
        let nested = KernelScratch::take(3);
        assert_ne!(nested.as_ptr(), ptr);
        assert!(nested.len() >= 3);
        let inner = nested.as_ptr();
        drop(nested);
        drop(again);
        // The smallest that fits comes back first.
        let (a, b) = (KernelScratch::take(1), KernelScratch::take(1));
        assert_eq!((a.as_ptr(), b.as_ptr()), (inner, ptr));
        drop((a, b));
        assert!(KernelScratch::take(1000).len() >= 1000);
    }
}
