//! What training needs beside the forward: the record a forward keeps for its backward, the
//! gradients, and the gradient of a state.

use sata_codegen::KernelConfig;

use crate::element::Element;
use crate::shape::Shape;
use crate::state::State;
use crate::tensor::Tensor;

/// Which attention a training forward computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Query `t` sees the state's keys and keys `..=t` of the call (`prefill`); one query per
    /// key.
    Causal,
    /// Every query sees every key of the state and of the call (`absorb` then `query`); the
    /// number of queries may differ from the number of keys.
    NonCausal,
}

/// How [`crate::Attention::forward_for_training_from_empty`] computes, and the backward after
/// it. Both forms compute the same function; they differ in cost and summation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SequenceForm {
    /// Pairs where they cost less than the state's features, by the operation counts of both
    /// for the call's sizes (on the CPU backends; features on a device).
    #[default]
    Auto,
    /// The quadratic form: every (query, key) pair's weight `T_P(q·k / c)` directly, in f64,
    /// on the CPU. Device backends compute features regardless.
    Pairs,
    /// The state's features, as `prefill` (or `absorb` then `query`) on a fresh state.
    Features,
}

/// What a forward keeps for its backward (`Attention::forward_for_training` and
/// `Attention::forward_for_training_from_empty`): the inputs, the outputs and each query's
/// denominator, and the state the forward started from (none for an empty start).
#[derive(Debug, Clone)]
pub struct Saved<T> {
    pub(crate) config: KernelConfig,
    pub(crate) mode: Mode,
    pub(crate) q: Tensor<T>,
    pub(crate) k: Tensor<T>,
    pub(crate) v: Tensor<T>,
    pub(crate) y: Vec<T>,
    pub(crate) dens: Vec<f64>,
    /// `None`: every lane started empty and the forward kept no state.
    pub(crate) initial: Option<State<T>>,
    /// Whether the backward computes pairs (`crate::cpu::pairwise`), as the forward did.
    pub(crate) pairs: bool,
}

impl<T> Saved<T> {
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The shape of the forward's queries (the shape `dy` must have, with `d_v` last).
    pub fn query_shape(&self) -> Shape {
        self.q.shape
    }

    /// Each query's denominator, `[batch, heads, queries]`.
    pub fn denominators(&self) -> &[f64] {
        &self.dens
    }

    /// Whether the forward computed the pairs' weights directly rather than features
    /// ([`crate::SequenceForm`]); the backward does the same.
    pub fn computed_pairs(&self) -> bool {
        self.pairs
    }
}

/// The gradient of a loss with respect to a state's sums: per (batch, head) lane, in
/// `[batch][heads]` order, an `m x d_v` block for `S` then `m` words for `Z`, the layout of
/// [`State::as_slice`] for a plain state (a compensated state's gradient is the same: its
/// compensation words do not change the value it holds).
#[derive(Debug, Clone, PartialEq)]
pub struct StateGradient<T> {
    pub config: KernelConfig,
    pub batch: usize,
    pub heads: usize,
    pub data: Vec<T>,
}

impl<T: Element> StateGradient<T> {
    /// Zeros for a `batch x heads` state of `config`.
    pub fn zeros(config: KernelConfig, batch: usize, heads: usize) -> Self {
        let words = batch * heads * config.state_words_per_head();
        Self {
            config,
            batch,
            heads,
            data: vec![T::zero(); words],
        }
    }
}

/// The gradients of `L = sum(y * dy)` (plus `sum(S_final * d_final_state)` when a gradient of
/// the final state was given).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    /// `[batch, heads, queries, d_k]`.
    pub dq: Tensor<T>,
    /// `[batch, heads, keys, d_k]`.
    pub dk: Tensor<T>,
    /// `[batch, heads, keys, d_v]`.
    pub dv: Tensor<T>,
    /// The gradient of the state the forward started from (zeros for a fresh state's lanes
    /// too: a fresh state is a constant, but the words are there for continuation); `None`
    /// after `Attention::forward_for_training_from_empty`, which had no state.
    pub d_initial_state: Option<StateGradient<T>>,
    /// Queries whose forward denominator was not positive: they got zeros from the forward
    /// and contribute no gradient.
    pub zeroed_queries: usize,
    /// Which code computed the gradients, e.g. `cpu (kernel d16_v16_p4, avx2+fma)`.
    pub path: String,
}
