//! What one call saw, and what it does with a bad denominator: the policy, the statistics, and
//! the one rule that turns a query's summed numerators and denominator into its output, shared
//! by every backend.

use crate::element::Element;
use crate::error::{QueryIndex, SataError};

/// What to do with a query whose denominator `sum_p alpha_p (q·k_s)^p` summed over keys is not
/// positive (or whose output is not finite).
///
/// With an odd top degree (`P` even) the truncated exponential is negative for `q·k/c` below a
/// threshold (P=2: -1, P=4: -1.596, P=6: -2.181), so large-norm inputs can drive the
/// denominator to zero or below. With `P` odd it is positive in exact arithmetic. Either way the
/// runtime never hands out a silent NaN: every such query is counted in [`CallStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenominatorPolicy {
    /// Write zeros for that query's output (what the paper's `nan_to_num` does for 0/0) and
    /// count it in [`CallStats::bad_denominators`]. The call succeeds.
    #[default]
    Zero,
    /// Fail the call with [`crate::SataError::NonPositiveDenominator`]. The state is left
    /// exactly as it was before the call (this costs one copy of the state per call).
    Error,
}

/// Diagnostics of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallStats {
    /// Queries answered.
    pub queries: usize,
    /// Queries whose denominator was `<= 0` or whose output was not finite.
    pub bad_denominators: usize,
    /// The first such query, with its denominator.
    pub first_bad: Option<(QueryIndex, f64)>,
    /// Smallest denominator seen (`+inf` when no query was answered).
    pub min_denominator: f64,
    /// Queries whose denominator was positive but below [`TINY_WEIGHT_PER_KEY`] times the
    /// number of keys the query saw: the average weight of a key was under `e^-9.2`, where the
    /// truncated exponential is far from `exp` and cancellation among the terms leaves few
    /// correct digits. Their outputs are returned, but deserve suspicion.
    pub tiny_denominators: usize,
    /// An upper bound on the largest `|q·k| / c` among this call's queries and the keys they
    /// saw: the largest query norm times the largest key norm the state has absorbed, over `c`
    /// (Cauchy-Schwarz; keys are not kept, so the exact maximum is not available). `None` when
    /// the call answered no query or the state's key norms are unknown (a format-1
    /// checkpoint). `TaylorBound::new(P, bound)` turns it into the truncation error bound of
    /// every weight of the call.
    pub logit_bound: Option<f64>,
}

/// Mean weight per key below which a positive denominator counts as tiny
/// ([`CallStats::tiny_denominators`]).
pub const TINY_WEIGHT_PER_KEY: f64 = 1e-4;

impl Default for CallStats {
    fn default() -> Self {
        Self {
            queries: 0,
            bad_denominators: 0,
            first_bad: None,
            min_denominator: f64::INFINITY,
            tiny_denominators: 0,
            logit_bound: None,
        }
    }
}

impl CallStats {
    /// The error `policy` makes of this call's bad denominators, if any.
    pub(crate) fn enforce(&self, policy: DenominatorPolicy) -> Result<(), SataError> {
        match (policy, self.first_bad) {
            (DenominatorPolicy::Error, Some((first, value))) => {
                Err(SataError::NonPositiveDenominator {
                    count: self.bad_denominators,
                    queries: self.queries,
                    first,
                    value,
                })
            }
            _ => Ok(()),
        }
    }

    /// Adds the statistics of a later part of the call (the next lanes): `first_bad` stays the
    /// earlier part's where it has one.
    pub(crate) fn merge(&mut self, later: CallStats) {
        self.queries += later.queries;
        self.bad_denominators += later.bad_denominators;
        self.first_bad = self.first_bad.or(later.first_bad);
        self.min_denominator = self.min_denominator.min(later.min_denominator);
        self.tiny_denominators += later.tiny_denominators;
        self.logit_bound = match (self.logit_bound, later.logit_bound) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Records the answer to query `token` of `lane` (of a state with `heads` heads), which
    /// saw `keys` keys.
    pub(crate) fn record_answer(
        &mut self,
        (lane, heads): (usize, usize),
        token: usize,
        answer: Answer,
        keys: u64,
    ) {
        let at = QueryIndex {
            batch: lane / heads,
            head: lane % heads,
            token,
        };
        self.record(at, answer.denominator, answer.ok, keys);
    }

    /// Records one answered query, which saw `keys` keys.
    fn record(&mut self, at: QueryIndex, denominator: f64, ok: bool, keys: u64) {
        self.queries += 1;
        self.min_denominator = self.min_denominator.min(denominator);
        if !ok {
            self.bad_denominators += 1;
            self.first_bad.get_or_insert((at, denominator));
        } else if denominator < TINY_WEIGHT_PER_KEY * keys as f64 {
            self.tiny_denominators += 1;
        }
    }
}

/// What answering one query produced: its denominator and whether the output is usable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub denominator: f64,
    pub ok: bool,
}

/// Writes the output of one query from its sums `[numerators.., denominator]` (`d_v + 1`
/// values, in f64 on the CPU paths and f32 from the device kernels): `numerator / denominator`,
/// or zeros when the denominator is not positive and finite or an output is not finite. Every
/// backend answers through this; [`DenominatorPolicy`] decides afterwards what the call does
/// with the count.
pub(crate) fn answer<S: Copy + Into<f64>, T: Element>(sums: &[S], out: &mut [T]) -> Answer {
    let Some((&den, num)) = sums.split_last() else {
        return Answer {
            denominator: f64::NAN,
            ok: false,
        };
    };
    let den: f64 = den.into();
    let mut ok = den > 0.0 && den.is_finite();
    if ok {
        for (o, &n) in out.iter_mut().zip(num) {
            *o = T::from_f64(n.into() / den);
            ok &= o.is_finite();
        }
    }
    if !ok {
        out.iter_mut().for_each(|o| *o = T::zero());
    }
    Answer {
        denominator: den,
        ok,
    }
}

/// Largest query and key norms of one call (see [`CallStats::logit_bound`]).
pub(crate) struct Norms {
    pub queries: Option<f64>,
    /// The largest key norm the call's queries can have seen: the state's and the call's keys.
    pub keys: Option<f64>,
}

impl Norms {
    pub fn new<T: Element>(
        state_keys: Option<f64>,
        d_k: usize,
        q: Option<&[T]>,
        k: Option<&[T]>,
    ) -> Self {
        let call_keys = k.map_or(0.0, |k| max_row_norm(k, d_k));
        Self {
            queries: q.map(|q| max_row_norm(q, d_k)),
            keys: state_keys.map(|n| n.max(call_keys)),
        }
    }

    pub fn logit_bound(&self, scale: f64) -> Option<f64> {
        Some(self.queries? * self.keys? / scale)
    }
}

/// Largest Euclidean norm over the rows (`dim` long) of `x`, in f64.
pub(crate) fn max_row_norm<T: Element>(x: &[T], dim: usize) -> f64 {
    x.chunks_exact(dim.max(1))
        .map(|row| {
            row.iter()
                .map(|v| v.widen() * v.widen())
                .sum::<f64>()
                .sqrt()
        })
        .fold(0.0, f64::max)
}
