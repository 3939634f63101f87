//! Half-precision inputs and outputs (`f16`, `bf16`) on f32 states.
//!
//! Models store activations in half precision; SATA's state must not be (a sum of millions of
//! features loses everything in 8 or 11 bits of mantissa). So an `Attention<f32>` takes
//! half-precision `q`, `k`, `v`, widens them to f32 (exactly: every f16 and bf16 value is an
//! f32), runs the f32 call on its backend with its f32 state, and rounds the outputs to the
//! inputs' type once, at the end. The widening is a copy of the call's inputs, small next to
//! the state sweep that dominates every call (`benches/half.rs` measures it).
//!
//! Errors are the f32 call's (shapes, NaN or infinity in an input, with the same flat index),
//! plus [`SataError::OutputOverflow`] when an output exceeds the half type's range (f16 only,
//! and only for even `P`, whose weights can be negative: with positive weights an output is
//! a convex combination of values). The state has then already advanced.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::attention::Attention;
use crate::checks::output_len;
use crate::cpu::scratch::KernelScratch;
use crate::error::SataError;
use crate::output::Attended;
use crate::shape::Shape;
use crate::state::State;
use crate::stats::CallStats;
use crate::tensor::{Tensor, TensorRef};

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// `f16` or `bf16`: stored in 16 bits, computed in f32.
pub trait HalfFloat:
    Copy + Default + std::fmt::Debug + Send + Sync + 'static + sealed::Sealed
{
    /// NumPy-style name (`float16`, `bfloat16`).
    const NAME: &'static str;
    /// Widens exactly.
    fn to_f32(self) -> f32;
    /// Rounds to nearest (even); beyond the range gives infinity.
    fn from_f32(x: f32) -> Self;
    /// Widens `src` into `dst` (same length), with F16C where the CPU has it.
    fn widen_slice(src: &[Self], dst: &mut [f32]);
    /// Rounds `src` into `dst` (same length).
    fn narrow_slice(src: &[f32], dst: &mut [Self]);
    fn is_finite(self) -> bool;
}

macro_rules! impl_half {
    ($t:ty, $name:literal) => {
        impl HalfFloat for $t {
            const NAME: &'static str = $name;
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn widen_slice(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst)
            }
            fn narrow_slice(src: &[f32], dst: &mut [Self]) {
                dst.convert_from_f32_slice(src)
            }
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_half!(f16, "float16");
impl_half!(bf16, "bfloat16");

/// The f32 copies of a call's `N` half-precision inputs, cut from `buffer` (this thread's,
/// kept between calls: fresh buffers cost a long call page faults and a decode step
/// allocations), and the rest of `buffer` for the f32 outputs.
fn widened<'b, H: HalfFloat, const N: usize>(
    buffer: &'b mut [f32],
    inputs: [TensorRef<'_, H>; N],
) -> ([TensorRef<'b, f32>; N], &'b mut [f32]) {
    let mut rest = buffer;
    let refs = inputs.map(|t| {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(t.data().len());
        H::widen_slice(t.data(), part);
        rest = tail;
        t.over(&*part)
    });
    (refs, rest)
}

/// This thread's f32 buffer for a call on `inputs` with `outputs` words of f32 outputs.
fn buffer<H: HalfFloat>(inputs: &[TensorRef<'_, H>], outputs: usize) -> KernelScratch {
    KernelScratch::take(inputs.iter().map(|t| t.data().len()).sum::<usize>() + outputs)
}

/// Rounds `from` into `to`, failing on the first finite value the half type cannot hold.
/// (The outputs are finite f32, so an infinite half value is an overflow.)
fn narrow<H: HalfFloat>(from: &[f32], to: &mut [H]) -> Result<(), SataError> {
    H::narrow_slice(from, to);
    match to.iter().position(|h| !h.is_finite()) {
        None => Ok(()),
        Some(index) => Err(SataError::OutputOverflow {
            dtype: H::NAME,
            index,
            value: from[index] as f64,
        }),
    }
}

impl Attention<f32> {
    /// [`prefill`](Self::prefill) on half-precision inputs: outputs in `H`, the state in f32.
    pub fn prefill_half<H: HalfFloat>(
        &self,
        state: &mut State<f32>,
        q: TensorRef<'_, H>,
        k: TensorRef<'_, H>,
        v: TensorRef<'_, H>,
    ) -> Result<Attended<H>, SataError> {
        let len = output_len(self.config(), &q)?;
        let mut buffer = buffer(&[q, k, v], len);
        let ([q32, k32, v32], out) = widened(&mut buffer, [q, k, v]);
        let stats = self.prefill_into(state, q32, k32, v32, &mut out[..len])?;
        self.narrowed(&q, &out[..len], stats)
    }

    /// [`decode`](Self::decode) on half-precision inputs.
    pub fn decode_half<H: HalfFloat>(
        &self,
        state: &mut State<f32>,
        q: TensorRef<'_, H>,
        k: TensorRef<'_, H>,
        v: TensorRef<'_, H>,
    ) -> Result<Attended<H>, SataError> {
        let len = output_len(self.config(), &q)?;
        let mut buffer = buffer(&[q, k, v], len);
        let ([q32, k32, v32], out) = widened(&mut buffer, [q, k, v]);
        let stats = self.decode_into(state, q32, k32, v32, &mut out[..len])?;
        self.narrowed(&q, &out[..len], stats)
    }

    /// [`decode_into`](Self::decode_into) on half-precision inputs, into a `[batch, heads, 1,
    /// d_v]` buffer of `H`; `scratch` (any length, reused across calls) holds the f32 outputs.
    pub fn decode_half_into<H: HalfFloat>(
        &self,
        state: &mut State<f32>,
        (q, k, v): (TensorRef<'_, H>, TensorRef<'_, H>, TensorRef<'_, H>),
        out: &mut [H],
        scratch: &mut Vec<f32>,
    ) -> Result<CallStats, SataError> {
        scratch.clear();
        scratch.resize(out.len(), 0.0);
        let mut buffer = buffer(&[q, k, v], 0);
        let ([q, k, v], _) = widened(&mut buffer, [q, k, v]);
        let stats = self.decode_into(state, q, k, v, scratch)?;
        narrow(scratch, out)?;
        Ok(stats)
    }

    /// [`absorb`](Self::absorb) of half-precision keys and values into an f32 state.
    pub fn absorb_half<H: HalfFloat>(
        &self,
        state: &mut State<f32>,
        k: TensorRef<'_, H>,
        v: TensorRef<'_, H>,
    ) -> Result<(), SataError> {
        let mut buffer = buffer(&[k, v], 0);
        let ([k, v], _) = widened(&mut buffer, [k, v]);
        self.absorb(state, k, v)
    }

    /// [`query`](Self::query) with half-precision queries.
    pub fn query_half<H: HalfFloat>(
        &self,
        state: &State<f32>,
        q: TensorRef<'_, H>,
    ) -> Result<Attended<H>, SataError> {
        let len = output_len(self.config(), &q)?;
        let mut buffer = buffer(&[q], len);
        let ([q32], out) = widened(&mut buffer, [q]);
        let stats = self.query_into(state, q32, &mut out[..len])?;
        self.narrowed(&q, &out[..len], stats)
    }

    /// [`attend`](Self::attend) (non-causal, on a fresh state) on half-precision inputs.
    pub fn attend_half<H: HalfFloat>(
        &self,
        q: TensorRef<'_, H>,
        k: TensorRef<'_, H>,
        v: TensorRef<'_, H>,
    ) -> Result<Attended<H>, SataError> {
        let mut state = self.new_state(k.shape().batch, k.shape().heads)?;
        self.absorb_half(&mut state, k, v)?;
        self.query_half(&state, q)
    }

    /// The f32 outputs `from` of a call on the queries `q`, rounded to `H`.
    fn narrowed<H: HalfFloat>(
        &self,
        q: &TensorRef<'_, H>,
        from: &[f32],
        stats: CallStats,
    ) -> Result<Attended<H>, SataError> {
        let mut data = vec![H::default(); from.len()];
        narrow(from, &mut data)?;
        let shape = Shape {
            dim: self.config().d_v(),
            ..q.shape()
        };
        Ok(Attended {
            output: Tensor { data, shape },
            stats,
        })
    }
}
