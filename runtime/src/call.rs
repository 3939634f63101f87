//! The sequence every call runs, whatever computes it and wherever its state lives: the checks
//! of the state and the inputs (once per call), the norms behind the logit bound, the
//! transaction of the denominator policy, and the bookkeeping of tokens and key norms.
//! [`crate::Attention`] runs it on host states and `crate::device::DeviceAttention` on device
//! states; what differs is only the `compute` step each passes in.

use sata_codegen::KernelConfig;

use crate::checks::{Lanes, usable_state};
use crate::element::Element;
use crate::error::SataError;
use crate::state::StateHeader;
use crate::stats::{CallStats, DenominatorPolicy, Norms};
use crate::tensor::{Qkv, TensorRef};

/// A state as the call sequence sees it: a header, words that can be backed up and restored
/// (a call the policy rejects leaves no trace), and a finiteness check (an overflow).
pub(crate) trait Store {
    /// A copy of the words and header, to undo a call.
    type Backup;
    fn header(&self) -> &StateHeader;
    fn header_mut(&mut self) -> &mut StateHeader;
    fn backup(&self) -> Result<Self::Backup, SataError>;
    fn restore(&mut self, backup: Self::Backup) -> Result<(), SataError>;
    /// Whether every word is finite (a device reads its words back for this).
    fn is_finite(&self) -> Result<bool, SataError>;
}

/// What every call of one attention shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub config: &'a KernelConfig,
    pub policy: DenominatorPolicy,
}

impl Call<'_> {
    /// Causal attention over a block of tokens. `compute` adds every token to the state and
    /// answers its query (into the output buffer it is given), without touching the header.
    pub fn prefill<S: Store, T: Element>(
        self,
        state: &mut S,
        (q, k, v): Qkv<'_, T>,
        out: &mut [T],
        compute: impl FnOnce(&mut S, &mut [T]) -> Result<CallStats, SataError>,
    ) -> Result<CallStats, SataError> {
        let header = state.header();
        usable_state(self.config, header, T::DTYPE)?;
        let lanes = Lanes::of(self.config, header);
        lanes.inputs(Some(&q), &k, &v)?;
        lanes.causal_tokens(&q, &k)?;
        lanes.output(&q, out)?;
        let norms = Norms::new(
            header.max_key_norm,
            self.config.d_k(),
            Some(q.data()),
            Some(k.data()),
        );
        let backup = match self.policy {
            DenominatorPolicy::Error => Some(state.backup()?),
            DenominatorPolicy::Zero => None,
        };
        let stats = match compute(state, out) {
            Ok(stats) => stats,
            Err(e) => {
                if let Some(backup) = backup {
                    state.restore(backup)?;
                }
                return Err(e);
            }
        };
        state.header_mut().tokens += k.shape().tokens as u64;
        let mut stats = self.settle::<S, T>(state, backup, stats)?;
        state.header_mut().max_key_norm = norms.keys;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    /// One causal step: exactly one token per lane.
    pub fn decode<S: Store, T: Element>(
        self,
        state: &mut S,
        (q, k, v): Qkv<'_, T>,
        out: &mut [T],
        compute: impl FnOnce(&mut S, &mut [T]) -> Result<CallStats, SataError>,
    ) -> Result<CallStats, SataError> {
        Lanes::of(self.config, state.header()).one_token([&q, &k, &v])?;
        self.prefill(state, (q, k, v), out, compute)
    }

    /// Adds keys and values to the state. No query reveals an overflow here, so the words are
    /// checked for one afterwards.
    pub fn absorb<S: Store, T: Element>(
        self,
        state: &mut S,
        (k, v): (TensorRef<'_, T>, TensorRef<'_, T>),
        compute: impl FnOnce(&mut S) -> Result<(), SataError>,
    ) -> Result<(), SataError> {
        let header = state.header();
        usable_state(self.config, header, T::DTYPE)?;
        Lanes::of(self.config, header).inputs(None, &k, &v)?;
        let norms = Norms::new(header.max_key_norm, self.config.d_k(), None, Some(k.data()));
        compute(state)?;
        state.header_mut().tokens += k.shape().tokens as u64;
        if !state.is_finite()? {
            state.header_mut().poisoned = true;
            return Err(SataError::StatePoisoned { dtype: T::DTYPE });
        }
        state.header_mut().max_key_norm = norms.keys;
        Ok(())
    }

    /// Answers queries from the state, which stays unchanged.
    pub fn query<S: Store, T: Element>(
        self,
        state: &S,
        q: TensorRef<'_, T>,
        out: &mut [T],
        compute: impl FnOnce(&S, &mut [T]) -> Result<CallStats, SataError>,
    ) -> Result<CallStats, SataError> {
        let header = state.header();
        usable_state(self.config, header, T::DTYPE)?;
        let lanes = Lanes::of(self.config, header);
        lanes.tensor(&q, self.config.d_k(), "d_k")?;
        lanes.output(&q, out)?;
        let norms = Norms::new(header.max_key_norm, self.config.d_k(), Some(q.data()), None);
        let mut stats = compute(state, out)?;
        stats.enforce(self.policy)?;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    /// After a call that changed the state: an overflow (only an overflow leaves non-finite
    /// words, and it shows as a bad answer, so the scan runs only then) restores the state or
    /// poisons it; a bad denominator the policy rejects restores it.
    fn settle<S: Store, T: Element>(
        self,
        state: &mut S,
        backup: Option<S::Backup>,
        stats: CallStats,
    ) -> Result<CallStats, SataError> {
        if stats.bad_denominators > 0 && !state.is_finite()? {
            match backup {
                Some(backup) => state.restore(backup)?,
                None => state.header_mut().poisoned = true,
            }
            return Err(SataError::StatePoisoned { dtype: T::DTYPE });
        }
        if let Err(e) = stats.enforce(self.policy) {
            if let Some(backup) = backup {
                state.restore(backup)?;
            }
            return Err(e);
        }
        Ok(stats)
    }
}
