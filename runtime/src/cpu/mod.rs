//! The CPU backend: the generic program for any configuration ([`generic`]), the specialized
//! kernels generated for one ([`kernel`], their drivers, SIMD sweeps and scratch), both run by
//! one lane loop ([`backend`]) on the backend's threads ([`threads`]); and the cache-line aligned storage states live in.

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
pub(crate) mod generic;
mod generic_chunked;
pub mod kernel;
pub(crate) mod scratch;
pub mod simd;
pub(crate) mod specialized;
pub(crate) mod threads;

pub(crate) use backend::CpuBackend;
pub(crate) use generic_chunked::GenericChunked;
