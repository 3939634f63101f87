//! How far the truncated exponential can be from `exp`, from a bound on the logits.
//!
//! With `x = q·k / c` and `|x| <= B` (for instance `B = |q| |k| / c` by Cauchy-Schwarz), the
//! Lagrange remainder of `T_P(x) = sum_{p<P} x^p / p!` is `exp(xi) x^P / P!` for some `xi`
//! between 0 and `x`, so every attention weight carries a relative error of at most
//!
//! `delta(B) = e^B B^P / P!`
//!
//! (the `e^B` covers negative `x`, where `exp(x)` itself is small). If `delta < 1`, every weight
//! keeps its sign and an attention output `y = sum w_s v_s / sum w_s` moves by at most
//! `delta / (1 - delta) * max_s |v_s - y|` per coordinate, which is at most
//! `2 delta / (1 - delta) * max |v|`: the differences `w_s eps_s (v_s - y)` are all that
//! survive, over a denominator of at least `(1 - delta) sum w_s`.

use crate::config::MAX_TERMS;

/// The bound for one number of terms and one logit bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaylorBound {
    pub terms: usize,
    /// `B`, the bound on `|q·k| / c`.
    pub max_abs_logit: f64,
    /// `delta`: relative error bound of every weight.
    pub weight_relative: f64,
    /// `delta / (1 - delta)`: bound on `|y_approx - y| / max_s |v_s - y|` per coordinate;
    /// `None` when `delta >= 1` (weights may vanish or change sign; nothing is guaranteed).
    pub output_factor: Option<f64>,
    /// With an odd top degree (`P` even) `T_P` is negative below a threshold; true when `B`
    /// reaches it, so some weights can be negative and a denominator can be non-positive.
    pub may_be_negative: bool,
}

/// Why no bound could be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    #[error("the logit bound must be finite and >= 0, got {0}")]
    BadLogitBound(f64),
    #[error("the tolerance must be finite and > 0, got {0}")]
    BadTolerance(f64),
    #[error("terms must be between 1 and {MAX_TERMS}, got {0}")]
    BadTerms(usize),
}

impl TaylorBound {
    /// The bound for `terms` Taylor terms when `|q·k| / c <= max_abs_logit`.
    pub fn new(terms: usize, max_abs_logit: f64) -> Result<Self, BoundError> {
        if !(1..=MAX_TERMS).contains(&terms) {
            return Err(BoundError::BadTerms(terms));
        }
        if !(max_abs_logit.is_finite() && max_abs_logit >= 0.0) {
            return Err(BoundError::BadLogitBound(max_abs_logit));
        }
        let b = max_abs_logit;
        // e^B B^P / P!, as a running product so that large P and B do not overflow early.
        let mut delta = b.exp();
        for p in 1..=terms {
            delta *= b / p as f64;
        }
        let output_factor = (delta < 1.0).then(|| delta / (1.0 - delta));
        let may_be_negative = terms.is_multiple_of(2) && negative_root(terms) >= -b;
        Ok(Self {
            terms,
            max_abs_logit,
            weight_relative: delta,
            output_factor,
            may_be_negative,
        })
    }

    /// The bound from norm bounds: `|q·k| / c <= |q| |k| / c`.
    pub fn from_norms(
        terms: usize,
        q_norm: f64,
        k_norm: f64,
        scale: f64,
    ) -> Result<Self, BoundError> {
        Self::new(terms, q_norm * k_norm / scale)
    }

    /// The smallest number of terms (up to [`MAX_TERMS`]) whose output factor is at most
    /// `tolerance` when `|q·k| / c <= max_abs_logit`; `Ok(None)` when none is.
    pub fn smallest_terms(max_abs_logit: f64, tolerance: f64) -> Result<Option<Self>, BoundError> {
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(BoundError::BadTolerance(tolerance));
        }
        for terms in 1..=MAX_TERMS {
            let bound = Self::new(terms, max_abs_logit)?;
            if bound.output_factor.is_some_and(|f| f <= tolerance) {
                return Ok(Some(bound));
            }
        }
        Ok(None)
    }
}

/// The real root of `T_P` for even `P` (odd top degree), by bisection: `T_P` is increasing
/// there, `T_P(0) = 1 > 0` and `T_P(-P) < 0`.
pub(crate) fn negative_root(terms: usize) -> f64 {
    let t = |x: f64| -> f64 {
        let (mut term, mut sum) = (1.0, 1.0);
        for p in 1..terms {
            term *= x / p as f64;
            sum += term;
        }
        sum
    };
    let (mut lo, mut hi) = (-(terms as f64), 0.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t(mid) < 0.0 { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taylor(x: f64, terms: usize) -> f64 {
        let (mut term, mut sum) = (1.0, 1.0);
        for p in 1..terms {
            term *= x / p as f64;
            sum += term;
        }
        sum
    }

    #[test]
    fn the_weight_bound_holds_on_the_whole_interval() {
        for terms in 1..=8 {
            for b in [0.1, 0.5, 1.0, 2.0, 3.0] {
                let bound = TaylorBound::new(terms, b).unwrap();
                let mut worst: f64 = 0.0;
                for i in 0..=2000 {
                    let x = -b + 2.0 * b * i as f64 / 2000.0;
                    worst = worst.max((x.exp() - taylor(x, terms)).abs() / x.exp());
                }
                assert!(
                    worst <= bound.weight_relative * (1.0 + 1e-9),
                    "P={terms} B={b}"
                );
                // Not vacuous: within a factor e^(2B) of the worst case seen.
                assert!(
                    worst * (2.0 * b).exp() >= bound.weight_relative * 0.999,
                    "P={terms} B={b}"
                );
            }
        }
    }

    #[test]
    fn the_output_bound_holds_for_random_attention() {
        // One query against keys whose logits fill [-B, B], values in [-1, 1].
        let mut seed = 12345u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for terms in [3, 4, 5, 6] {
            let b = 1.2;
            let bound = TaylorBound::new(terms, b).unwrap();
            let factor = bound.output_factor.unwrap();
            for _ in 0..50 {
                let pairs: Vec<(f64, f64)> = (0..40).map(|_| (b * uniform(), uniform())).collect();
                let mean = |w: &dyn Fn(f64) -> f64| {
                    let den: f64 = pairs.iter().map(|&(x, _)| w(x)).sum();
                    pairs.iter().map(|&(x, v)| w(x) * v).sum::<f64>() / den
                };
                let exact = mean(&|x: f64| x.exp());
                let approx = mean(&|x: f64| taylor(x, terms));
                let spread = pairs
                    .iter()
                    .map(|&(_, v)| (v - exact).abs())
                    .fold(0.0, f64::max);
                assert!(
                    (approx - exact).abs() <= factor * spread * (1.0 + 1e-9),
                    "P={terms}"
                );
            }
        }
    }

    #[test]
    fn smallest_terms_is_minimal_and_flags_negative_polynomials() {
        let found = TaylorBound::smallest_terms(1.0, 1e-3).unwrap().unwrap();
        assert!(found.output_factor.unwrap() <= 1e-3);
        let fewer = TaylorBound::new(found.terms - 1, 1.0).unwrap();
        assert!(fewer.output_factor.is_none_or(|f| f > 1e-3));
        assert_eq!(TaylorBound::smallest_terms(40.0, 1e-12).unwrap(), None);
        // P = 2: T = 1 + x is negative below -1.
        assert!(TaylorBound::new(2, 1.5).unwrap().may_be_negative);
        assert!(!TaylorBound::new(2, 0.5).unwrap().may_be_negative);
        assert!(!TaylorBound::new(3, 5.0).unwrap().may_be_negative);
        assert!(TaylorBound::new(0, 1.0).is_err());
        assert!(TaylorBound::new(3, f64::NAN).is_err());
        assert!(TaylorBound::smallest_terms(1.0, 0.0).is_err());
    }
}
