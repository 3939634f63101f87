//! Shape checks shared by every API that runs a call on a set of (batch, head) lanes, wherever
//! the state lives (host [`crate::State`] or a device state): one place decides what a
//! well-formed call is and which typed error a malformed one gets.

use sata_codegen::KernelConfig;

use crate::element::Element;
use crate::error::SataError;
use crate::shape::{Role, Shape};
use crate::state::StateHeader;
use crate::tensor::TensorRef;

/// The lanes a call runs on: the configuration and the state's batch and heads.
pub(crate) struct Lanes<'a> {
    pub config: &'a KernelConfig,
    pub batch: usize,
    pub heads: usize,
}

impl<'a> Lanes<'a> {
    /// The lanes of a state with header `state`, for an attention computing `config`.
    pub fn of(config: &'a KernelConfig, state: &StateHeader) -> Self {
        Self {
            config,
            batch: state.batch,
            heads: state.heads,
        }
    }

    /// Keys, values and (optionally) queries: dimensions, batch and heads, finiteness, and one
    /// value per key.
    pub fn inputs<T: Element>(
        &self,
        q: Option<&TensorRef<'_, T>>,
        k: &TensorRef<'_, T>,
        v: &TensorRef<'_, T>,
    ) -> Result<(), SataError> {
        if let Some(q) = q {
            self.tensor(q, self.config.d_k(), "d_k")?;
        }
        self.tensor(k, self.config.d_k(), "d_k")?;
        self.tensor(v, self.config.d_v(), "d_v")?;
        if v.shape().tokens != k.shape().tokens {
            return Err(SataError::TokenMismatch {
                role: Role::Value,
                found: v.shape().tokens,
                against: "keys",
                expected: k.shape().tokens,
                hint: "",
            });
        }
        Ok(())
    }

    /// Causal attention needs one query per key.
    pub fn causal_tokens<T: Element>(
        &self,
        q: &TensorRef<'_, T>,
        k: &TensorRef<'_, T>,
    ) -> Result<(), SataError> {
        if q.shape().tokens != k.shape().tokens {
            return Err(SataError::TokenMismatch {
                role: Role::Query,
                found: q.shape().tokens,
                against: "keys",
                expected: k.shape().tokens,
                hint: "; causal attention needs one query per key (use absorb + query for cross attention)",
            });
        }
        Ok(())
    }

    /// Decode takes exactly one token of each input.
    pub fn one_token<T: Element>(&self, inputs: [&TensorRef<'_, T>; 3]) -> Result<(), SataError> {
        for t in inputs {
            if t.shape().tokens != 1 {
                return Err(SataError::TokenMismatch {
                    role: t.role(),
                    found: t.shape().tokens,
                    against: "a decode step",
                    expected: 1,
                    hint: "; use prefill for a block of tokens",
                });
            }
        }
        Ok(())
    }

    pub fn tensor<T: Element>(
        &self,
        t: &TensorRef<'_, T>,
        dim: usize,
        what: &'static str,
    ) -> Result<(), SataError> {
        let s = t.shape();
        if s.dim != dim {
            return Err(SataError::DimMismatch {
                role: t.role(),
                found: s.dim,
                expected: dim,
                what,
            });
        }
        if (s.batch, s.heads) != (self.batch, self.heads) {
            return Err(SataError::BatchHeadsMismatch {
                role: t.role(),
                found: (s.batch, s.heads),
                against: "the state",
                expected: (self.batch, self.heads),
            });
        }
        t.check_finite()
    }

    /// A caller-provided output buffer has the `[batch, heads, queries, d_v]` length.
    pub fn output<T: Element>(&self, q: &TensorRef<'_, T>, out: &[T]) -> Result<(), SataError> {
        let expected = output_len(self.config, q)?;
        if out.len() != expected {
            let s = q.shape();
            return Err(SataError::LengthMismatch {
                role: Role::Output,
                len: out.len(),
                shape: [s.batch, s.heads, s.tokens, self.config.d_v()],
                expected,
            });
        }
        Ok(())
    }
}

/// Words of the output for queries `q`.
pub(crate) fn output_len<T: Copy>(
    config: &KernelConfig,
    q: &TensorRef<'_, T>,
) -> Result<usize, SataError> {
    let shape = Shape::new(
        q.shape().batch,
        q.shape().heads,
        q.shape().tokens,
        config.d_v(),
    );
    // q's own length fits in memory, so this only overflows when d_v >> d_k.
    shape.checked_len().ok_or(SataError::LengthMismatch {
        role: Role::Output,
        len: 0,
        shape: shape.as_array(),
        expected: usize::MAX,
    })
}

/// Fails unless a state made for `state` can be used by an attention for `attention`.
pub(crate) fn same_config(state: &KernelConfig, attention: &KernelConfig) -> Result<(), SataError> {
    if state != attention {
        return Err(SataError::StateConfigMismatch {
            state: *state,
            attention: *attention,
        });
    }
    Ok(())
}

/// Fails unless a state with header `state` can take a call of an attention for `config`: the
/// same configuration, and not poisoned by an earlier overflow.
pub(crate) fn usable_state(
    config: &KernelConfig,
    state: &StateHeader,
    dtype: crate::element::DType,
) -> Result<(), SataError> {
    same_config(&state.config, config)?;
    if state.poisoned {
        return Err(SataError::StatePoisoned { dtype });
    }
    Ok(())
}
