//! The recurrent state of SATA attention in host memory: `S_p` and `Z_p` for every (batch,
//! head) and order.

use std::borrow::Cow;

use sata_codegen::KernelConfig;

use super::header::{Accumulation, StateHeader};
use crate::cpu::aligned::AlignedWords;
use crate::element::Element;
use crate::error::SataError;

/// The whole memory of the sequences processed so far, for every (batch, head).
///
/// **Layout** (as [`State::as_slice`] gives it, and the checkpoint's data section, layout code
/// 2; in memory each lane is padded to whole cache lines): per (batch, head), in
/// `[batch][heads]` order, an `m x d_v` block `S` followed by an `m`-word block `Z`:
/// `S[j, 0..d_v] = sum_s Phi_j(k_s) v_s` and `Z[j] = sum_s Phi_j(k_s)`. Features are numbered
/// as in [`sata_codegen::Basis`] (order 0 first, then each order's monomials in lexicographic
/// order). Mathematically `Z` is the last column of `S` for values `[v, 1]` (and a sweep over
/// feature `j` touches both, yielding numerator and denominator in one pass); storing it as
/// its own block keeps every `S` row a whole number of vectors when `d_v` is a multiple of 8,
/// and lets `Z` be read and updated 8 features at a time (`docs/backends/cpu.md` has the
/// measurements).
///
/// The state is unweighted: `alpha_p C_p` is applied on the query side. The paper's reference
/// code stores `alpha_p S_p`; [`State::to_alpha_scaled`] converts.
///
/// With [`Accumulation::Compensated`] each lane holds its `S` and `Z` blocks and then a second
/// `S`, `Z` pair of the same shape: the Kahan compensation of every sum (checkpoint layout
/// code 3).
#[derive(Debug, Clone, PartialEq)]
pub struct State<T> {
    header: StateHeader,
    /// Cache-line aligned (see [`AlignedWords`]), each lane padded with zeros to whole lines
    /// ([`StateHeader::lane_stride`]), so every lane's rows start on a line as well. Device
    /// states keep the same layout (the kernel contract's lane stride), so a state moves to and
    /// from a device in one copy.
    data: AlignedWords<T>,
}

impl<T: Element> State<T> {
    /// An empty state (no tokens seen) for `batch x heads` lanes.
    pub fn new(config: KernelConfig, batch: usize, heads: usize) -> Result<Self, SataError> {
        Self::with_accumulation(config, batch, heads, Accumulation::Plain)
    }

    /// An empty state whose sums accumulate as `accumulation` says.
    pub fn with_accumulation(
        config: KernelConfig,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<Self, SataError> {
        let header = StateHeader::empty::<T>(config, batch, heads, accumulation)?;
        Ok(Self::zeroed(header))
    }

    /// A state of `header`'s shape and progress with every word zero (the header was
    /// validated by [`StateHeader::empty`]).
    pub(crate) fn zeroed(header: StateHeader) -> Self {
        let words = header.storage_words::<T>().unwrap_or(0);
        Self {
            header,
            data: AlignedWords::filled(words, T::zero()),
        }
    }

    /// Rebuilds a state from its parts (used by the checkpoint loader); `data` must have the
    /// layout described on [`State`].
    pub(crate) fn from_parts(
        config: KernelConfig,
        batch: usize,
        heads: usize,
        tokens: u64,
        accumulation: Accumulation,
        data: Vec<T>,
    ) -> Result<Self, SataError> {
        let mut state = Self::with_accumulation(config, batch, heads, accumulation)?;
        debug_assert_eq!(state.header.words_per_lane() * batch * heads, data.len());
        state.store_words(&data);
        state.header.tokens = tokens;
        state.header.poisoned = !state.is_finite();
        Ok(state)
    }

    /// The configuration, shape and progress of the state.
    pub fn header(&self) -> &StateHeader {
        &self.header
    }

    pub(crate) fn header_mut(&mut self) -> &mut StateHeader {
        &mut self.header
    }

    pub fn config(&self) -> &KernelConfig {
        &self.header.config
    }

    pub fn batch(&self) -> usize {
        self.header.batch
    }

    pub fn heads(&self) -> usize {
        self.header.heads
    }

    /// Number of key/value tokens absorbed into every lane so far.
    pub fn tokens(&self) -> u64 {
        self.header.tokens
    }

    /// True once a call overflowed the element type; every later call fails until
    /// [`State::reset`].
    pub fn is_poisoned(&self) -> bool {
        self.header.poisoned
    }

    pub fn accumulation(&self) -> Accumulation {
        self.header.accumulation
    }

    /// Largest Euclidean norm of the keys absorbed so far; `None` when unknown (a state loaded
    /// from a checkpoint of format version 1, which did not record it).
    pub fn max_key_norm(&self) -> Option<f64> {
        self.header.max_key_norm
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.data.iter_mut().for_each(|x| *x = T::zero());
        self.header.reset();
    }

    /// All state words in the layout described on [`State`] (lanes back to back, without the
    /// padding they have in memory; borrowed when there is none, copied otherwise).
    pub fn as_slice(&self) -> Cow<'_, [T]> {
        if self.lane_stride() == self.words_per_lane() {
            Cow::Borrowed(&self.data)
        } else {
            Cow::Owned(self.lanes().flatten().copied().collect())
        }
    }

    /// Every word in memory, lanes padded to [`StateHeader::lane_stride`]: the layout device
    /// states share, so a state moves to and from a device in one copy.
    #[cfg_attr(not(any(feature = "wgpu", sata_cuda)), allow(dead_code))]
    pub(crate) fn padded(&self) -> &[T] {
        &self.data
    }

    #[cfg_attr(not(any(feature = "wgpu", sata_cuda)), allow(dead_code))]
    pub(crate) fn padded_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Overwrites every lane from `words`, in the layout of [`State::as_slice`]. Words past
    /// the end of either side are left alone.
    pub(crate) fn store_words(&mut self, words: &[T]) {
        let n = self.words_per_lane();
        for (lane, from) in self.lanes_mut().zip(words.chunks(n)) {
            lane.iter_mut().zip(from).for_each(|(x, &y)| *x = y);
        }
    }

    /// Whether every word is finite (the padding is always zero).
    pub(crate) fn is_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }

    /// The `m (d_v + 1)` words of one (batch, head), `S` then `Z`; `None` if out of range.
    pub fn head(&self, batch: usize, head: usize) -> Option<&[T]> {
        if batch >= self.batch() || head >= self.heads() {
            return None;
        }
        let n = self.config().state_words_per_head();
        let lane = batch * self.heads() + head;
        let start = lane * self.lane_stride();
        Some(&self.data[start..start + n])
    }

    /// The state in the paper's reference layout convention, where each order's rows are
    /// pre-multiplied by `alpha_p = 1 / (p! c^p)` (computed in f64, returned in f64).
    pub fn to_alpha_scaled(&self) -> Vec<f64> {
        let basis = sata_codegen::Basis::new(self.config());
        let mut alpha = vec![0.0; basis.len()];
        for span in basis.orders() {
            alpha[span.range()].fill(basis.alpha(span.degree));
        }
        let (m, dv) = (basis.len(), self.config().d_v());
        self.lanes()
            .flat_map(|lane| {
                let (s, z) = lane[..m * (dv + 1)].split_at(m * dv);
                let s = s.iter().enumerate().map(|(i, x)| (i / dv, x));
                s.chain(z.iter().enumerate())
                    .map(|(feature, x)| x.widen() * alpha[feature])
            })
            .collect()
    }

    /// Words of one lane: its sums, and with [`Accumulation::Compensated`] their compensation.
    pub(crate) fn words_per_lane(&self) -> usize {
        self.header.words_per_lane()
    }

    /// Words from the start of one lane to the next in memory.
    pub(crate) fn lane_stride(&self) -> usize {
        self.header.lane_stride::<T>()
    }

    pub(crate) fn lanes_mut(&mut self) -> impl Iterator<Item = &mut [T]> {
        let (n, stride) = (self.words_per_lane(), self.lane_stride());
        self.data.chunks_exact_mut(stride).map(move |l| &mut l[..n])
    }

    pub(crate) fn lanes(&self) -> impl Iterator<Item = &[T]> {
        let (n, stride) = (self.words_per_lane(), self.lane_stride());
        self.data.chunks_exact(stride).map(move |l| &l[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes of 18 words (d_k = d_v = 2, P = 3) sit 32 f32 or 24 f64 words apart in memory,
    /// each on a cache line; `as_slice`, `head` and `store_words` see them back to back.
    fn lanes_are_padded_to_lines_and_read_back_to_back<T: Element>() {
        let config = KernelConfig::new(2, 2, 3).unwrap();
        let compact: Vec<T> = (0..6 * 18).map(|i| T::from(i + 1).unwrap()).collect();
        let state =
            State::from_parts(config, 2, 3, 5, Accumulation::Plain, compact.clone()).unwrap();
        assert_eq!(state.words_per_lane(), 18);
        assert_eq!(
            state.lane_stride(),
            18usize.next_multiple_of(64 / size_of::<T>())
        );
        for lane in state.lanes() {
            assert_eq!(lane.len(), 18);
            assert!(
                (lane.as_ptr() as usize).is_multiple_of(64),
                "lane off a line"
            );
        }
        assert_eq!(&*state.as_slice(), &compact[..]);
        for (lane, want) in compact.chunks(18).enumerate() {
            assert_eq!(state.head(lane / 3, lane % 3).unwrap(), want);
        }
        assert!(
            state.data.iter().filter(|&&x| x == T::zero()).count()
                >= 6 * (state.lane_stride() - 18)
        );
        let mut copy = State::<T>::new(config, 2, 3).unwrap();
        copy.store_words(&state.as_slice());
        assert_eq!(copy.as_slice(), state.as_slice());
    }

    #[test]
    fn lanes_are_padded_f32() {
        lanes_are_padded_to_lines_and_read_back_to_back::<f32>();
    }

    #[test]
    fn lanes_are_padded_f64() {
        lanes_are_padded_to_lines_and_read_back_to_back::<f64>();
    }

    #[test]
    fn alpha_scaling_multiplies_each_order_by_one_over_p_factorial_c_to_the_p() {
        // d_k = 2, d_v = 2, P = 3, c = 2: features [1], [x0, x1], [x0x0, x0x1, x1x1]; per
        // head 12 words of S (two per feature) then 6 of Z.
        let config = KernelConfig::new(2, 2, 3).unwrap().with_scale(2.0).unwrap();
        let data: Vec<f32> = (0..2 * 18).map(|i| i as f32 + 1.0).collect();
        let state = State::from_parts(config, 1, 2, 7, Accumulation::Plain, data.clone()).unwrap();
        let scaled = state.to_alpha_scaled();
        let alpha = [1.0, 0.5, 0.5, 0.125, 0.125, 0.125];
        let feature = |i: usize| match i % 18 {
            w @ 0..12 => w / 2,
            w => w - 12,
        };
        for (i, (&x, &y)) in data.iter().zip(&scaled).enumerate() {
            assert_eq!(y, f64::from(x) * alpha[feature(i)], "word {i}");
        }
    }
}
