//! A state's words, starting on a cache-line boundary.
//!
//! A d_v = 16 state row is 16 f32 words, one cache line; a state placed off a line boundary
//! makes every row straddle two lines, which measured about 20% slower per decode step
//! (`docs/backends/cpu.md`). `Vec` only guarantees the element's alignment, so the buffer
//! carries up to one line of slack and the words start at the first boundary inside it.

/// Bytes of one cache line: the kernel contract's lane alignment, so a host state's lanes sit
/// exactly where a device state's do.
const LINE: usize = sata_codegen::contract::LANE_ALIGN_BYTES;

/// `words` rounded up to whole cache lines of `T`.
pub(crate) fn round_to_line<T>(words: usize) -> usize {
    words.next_multiple_of(LINE / std::mem::size_of::<T>().max(1))
}

/// `len` words whose first word sits on a [`LINE`] boundary; derefs to `[T]`.
pub(crate) struct AlignedWords<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Clone> AlignedWords<T> {
    /// `words`, placed at the first line boundary of a fresh buffer; copies of `lead` fill the
    /// words before the boundary, which are never read.
    fn collect(lead: Option<&T>, words: impl ExactSizeIterator<Item = T>) -> Self {
        let slack = LINE / std::mem::size_of::<T>().max(1);
        // No reallocation below `capacity`, so the boundary found here stays where it is.
        let mut buf: Vec<T> = Vec::with_capacity(words.len() + slack);
        // `align_offset` may answer "cannot" (usize::MAX); the words then start unaligned,
        // which is only slower.
        let offset = buf.as_ptr().align_offset(LINE);
        let start = match lead {
            Some(_) if offset <= slack => offset,
            _ => 0,
        };
        if let Some(lead) = lead {
            buf.extend(std::iter::repeat_n(lead.clone(), start));
        }
        buf.extend(words);
        let len = buf.len() - start;
        Self { buf, start, len }
    }

    /// `len` copies of `value`.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        Self::collect(Some(&value), std::iter::repeat_n(value.clone(), len))
    }

    /// A copy of `words`, aligned.
    pub(crate) fn from_slice(words: &[T]) -> Self {
        Self::collect(words.first(), words.iter().cloned())
    }
}

impl<T> std::ops::Deref for AlignedWords<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for AlignedWords<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// A clone is a new allocation, aligned on its own.
impl<T: Clone> Clone for AlignedWords<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for AlignedWords<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for AlignedWords<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned<T>(words: &[T]) -> bool {
        (words.as_ptr() as usize).is_multiple_of(LINE)
    }

    #[test]
    fn words_start_on_a_line_and_keep_their_values() {
        for len in [0, 1, 17, 16_473] {
            let w = AlignedWords::filled(len, 2.5f32);
            assert_eq!(w.len(), len);
            assert!(aligned(&w), "f32 x {len}");
            assert!(w.iter().all(|&x| x == 2.5));
            let values: Vec<f64> = (0..len).map(|i| i as f64 * 0.5 - 3.0).collect();
            let copy = AlignedWords::from_slice(&values);
            // An empty copy has nothing to align.
            assert!(len == 0 || aligned(&copy), "f64 x {len}");
            assert_eq!(&*copy, &values[..]);
            let clone = copy.clone();
            assert!(len == 0 || aligned(&clone));
            assert_eq!(clone, copy);
        }
    }

    #[test]
    fn writes_land_in_the_visible_words() {
        let mut w = AlignedWords::filled(5, 0.0f32);
        w[4] = 7.0;
        w.iter_mut().take(2).for_each(|x| *x = 1.0);
        assert_eq!(&*w, &[1.0, 1.0, 0.0, 0.0, 7.0]);
    }
}
