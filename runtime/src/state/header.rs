//! What every state carries besides its words, wherever the words live (host memory or a
//! device's): its configuration, shape, progress and accumulation.

use sata_codegen::KernelConfig;

use crate::cpu::aligned::round_to_line;
use crate::error::SataError;

/// How a state's sums accumulate over tokens.
///
/// Every state word is a running sum over all tokens seen. In f32 a sum of millions of terms
/// drifts: once a sum is large, each new term loses its low bits, and a term below half an ulp
/// of the sum is lost entirely (the order-0 count stops growing at 2^24 tokens). Measured by
/// `cargo bench --bench soak` (`docs/numerics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Accumulation {
    /// One word per sum: the fastest; f32 sums drift by about 5e-4 (relative, outputs) over
    /// 10^7 tokens.
    #[default]
    Plain,
    /// Kahan-compensated: every sum carries a second word holding what its additions lost, and
    /// stays within about an ulp of the exact sum at any length. Twice the memory, and each
    /// update does four additions instead of one. Every backend supports it.
    Compensated,
}

impl Accumulation {
    /// Words per sum.
    pub fn words_per_sum(self) -> usize {
        match self {
            Accumulation::Plain => 1,
            Accumulation::Compensated => 2,
        }
    }
}

/// A state's configuration, shape and progress: everything but its words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateHeader {
    pub config: KernelConfig,
    pub batch: usize,
    pub heads: usize,
    /// Key/value tokens absorbed into every lane so far.
    pub tokens: u64,
    /// True once a call overflowed the element type; every later call fails until a reset.
    pub poisoned: bool,
    pub accumulation: Accumulation,
    /// Largest Euclidean norm of the keys absorbed so far (`None`: unknown, for a state loaded
    /// from a format-1 checkpoint), for the logit bound of `CallStats`.
    pub max_key_norm: Option<f64>,
}

impl StateHeader {
    /// The header of an empty `batch x heads` state of words of type `T`, or why there can be
    /// no such state (no lanes, or more words than memory can address).
    pub(crate) fn empty<T>(
        config: KernelConfig,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<Self, SataError> {
        if batch == 0 || heads == 0 {
            return Err(SataError::EmptyState { batch, heads });
        }
        let header = Self {
            config,
            batch,
            heads,
            tokens: 0,
            poisoned: false,
            accumulation,
            max_key_norm: Some(0.0),
        };
        header
            .storage_words::<T>()
            .filter(|w| {
                w.checked_mul(size_of::<T>())
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or(SataError::StateTooLarge {
                batch,
                heads,
                per_head: config.state_words_per_head(),
            })?;
        Ok(header)
    }

    /// Number of (batch, head) lanes.
    pub fn lanes(&self) -> usize {
        self.batch * self.heads
    }

    /// Words of one lane: its sums, and with [`Accumulation::Compensated`] their compensation.
    pub fn words_per_lane(&self) -> usize {
        self.config.state_words_per_head() * self.accumulation.words_per_sum()
    }

    /// Words from the start of one lane to the next in memory, for words of type `T`:
    /// [`StateHeader::words_per_lane`] rounded up to whole cache lines (for f32, the kernel
    /// contract's `lane_stride`).
    pub(crate) fn lane_stride<T>(&self) -> usize {
        round_to_line::<T>(self.words_per_lane())
    }

    /// Words of the whole state in memory, padding included; `None` on overflow.
    pub(crate) fn storage_words<T>(&self) -> Option<usize> {
        self.lane_stride::<T>()
            .checked_mul(self.batch.checked_mul(self.heads)?)
    }

    /// Forgets every token.
    pub(crate) fn reset(&mut self) {
        self.tokens = 0;
        self.poisoned = false;
        self.max_key_norm = Some(0.0);
    }
}
