//! The CPU backend: the generic program for any configuration ([`generic`]), the specialized
//! kernels generated for one ([`kernel`], their drivers, SIMD sweeps and scratch), both run by
//! one lane loop ([`backend`]) on the backend's threads ([`threads`]); and the cache-line aligned storage states live in.

/// Compiles each `body` function twice, out of line: portably as `portable`, and inside an
/// AVX2+FMA function as `avx2` (the same loops with 8-wide vectors and FMA, chosen at run time
/// by [`simd::Isa`]). The bodies are `#[inline(always)]`, so each is compiled twice and no
/// more.
macro_rules! compiled_twice {
    ($(fn $portable:ident, $avx2:ident ($($arg:ident: $ty:ty),* $(,)?) => $body:ident;)*) => {
        $(
            #[inline(never)]
            pub(super) fn $portable($($arg: $ty),*) {
                $body($($arg),*)
            }

            /// # Safety
            /// The CPU must support avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            #[inline(never)]
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn $avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
        )*
    };
}

pub(crate) mod aligned;
mod backend;
pub(crate) mod backward;
mod chunk_choice;
mod chunk_features;
mod chunk_pairs;
mod chunk_products;
mod chunked_backward;
mod chunked_forward;
mod chunked_parallel;
pub mod driver;
mod execution;
pub(crate) mod features;
mod gemm;
pub(crate) mod generic;
mod generic_chunked;
pub mod kernel;
pub(crate) mod pairwise;
pub(crate) mod scratch;
pub mod simd;
pub(crate) mod specialized;
pub(crate) mod threads;

pub(crate) use backend::{CpuBackend, forward_pairs};
pub(crate) use generic_chunked::GenericChunked;
