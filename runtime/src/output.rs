//! What a call returns: the outputs and what the call saw.

use sata_codegen::KernelConfig;

use crate::shape::Shape;
use crate::stats::CallStats;
use crate::tensor::Tensor;

/// Outputs of one call and what the call saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Attended<T> {
    /// `[batch, heads, queries, d_v]`.
    pub output: Tensor<T>,
    pub stats: CallStats,
}

impl<T> Attended<T> {
    /// The outputs of the queries `q` (shape `q`, last dimension replaced by `d_v`).
    pub(crate) fn new(config: &KernelConfig, q: Shape, data: Vec<T>, stats: CallStats) -> Self {
        Self {
            output: Tensor {
                data,
                shape: Shape::new(q.batch, q.heads, q.tokens, config.d_v()),
            },
            stats,
        }
    }
}
