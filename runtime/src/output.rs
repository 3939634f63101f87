//! What a call returns: the outputs and what the call saw.

use sata_codegen::KernelConfig;

use crate::checks::output_len;
use crate::element::Element;
use crate::error::SataError;
use crate::shape::Shape;
use crate::stats::CallStats;
use crate::tensor::{Tensor, TensorRef};

/// Outputs of one call and what the call saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Attended<T> {
    /// `[batch, heads, queries, d_v]`.
    pub output: Tensor<T>,
    pub stats: CallStats,
}

impl<T: Element> Attended<T> {
    /// Runs `call` (a call's `*_into` form) into a fresh output buffer for the queries `q`:
    /// the allocating form of every call.
    pub(crate) fn collect(
        config: &KernelConfig,
        q: &TensorRef<'_, T>,
        call: impl FnOnce(&mut [T]) -> Result<CallStats, SataError>,
    ) -> Result<Self, SataError> {
        let mut data = vec![T::zero(); output_len(config, q)?];
        let stats = call(&mut data)?;
        let q = q.shape();
        Ok(Self {
            output: Tensor {
                data,
                shape: Shape::new(q.batch, q.heads, q.tokens, config.d_v()),
            },
            stats,
        })
    }
}
