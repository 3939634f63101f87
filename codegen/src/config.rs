//! A validated kernel configuration: the one value every later stage (basis, plan, renderers,
//! runtime dispatch) is keyed by.

use crate::combinatorics::binomial_capped;

/// Largest number of Taylor terms `P` (orders `0..P-1`). Multiplicities `C_p` are exact `u64`
/// multinomials, and `20!` is the largest factorial that fits one.
pub const MAX_TERMS: usize = 21;

/// Largest head dimension (`d_k` or `d_v`) accepted.
pub const MAX_DIM: usize = 65_536;

/// Largest total feature count `m = C(d_k + P - 1, P - 1)`. Beyond this a single head's state is
/// already hundreds of megabytes and the per-token cost no longer beats a KV cache at any
/// practical context length (e.g. d_k = 64, P = 6 is 11.2 million features).
pub const MAX_FEATURES: usize = 1 << 22;

/// Largest state size per head in words, `m * (d_v + 1)` (1 GiB of f32).
pub const MAX_STATE_WORDS: usize = 1 << 28;

/// Why a configuration was rejected. Each variant names the offending value and the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("d_k (key/query head dimension) must be at least 1, got 0")]
    ZeroKeyDim,
    #[error("d_v (value head dimension) must be at least 1, got 0")]
    ZeroValueDim,
    #[error("terms (number of Taylor terms P) must be at least 1, got 0")]
    ZeroTerms,
    #[error("{name} = {value} exceeds the limit of {limit}")]
    DimTooLarge {
        name: &'static str,
        value: usize,
        limit: usize,
    },
    #[error("terms = {terms} exceeds the limit of {limit} (multiplicities must stay exact in u64)")]
    TooManyTerms { terms: usize, limit: usize },
    #[error("scale must be finite and positive, got {0}")]
    BadScale(f64),
    #[error(
        "d_k = {d_k} with {terms} Taylor terms needs {} features, over the limit of {limit}",
        describe_count(*.features, *.limit)
    )]
    TooManyFeatures {
        d_k: usize,
        terms: usize,
        /// The exact count, or `None` when counting stopped once it passed the limit.
        features: Option<u128>,
        limit: usize,
    },
    #[error(
        "state of {features} features x (d_v + 1 = {row}) = {words} words per head exceeds the limit of {limit} words"
    )]
    StateTooLarge {
        features: usize,
        row: usize,
        words: u128,
        limit: usize,
    },
}

fn describe_count(count: Option<u128>, limit: usize) -> String {
    count.map_or_else(|| format!("more than {limit}"), |c| c.to_string())
}

/// The parameters of one SATA kernel: head dimensions, number of Taylor terms and scale.
///
/// Construct it with [`KernelConfig::new`] (scale `sqrt(d_k)`, as in softmax attention) and
/// optionally [`KernelConfig::with_scale`]; both validate, so a `KernelConfig` in hand is always
/// usable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelConfig {
    d_k: usize,
    d_v: usize,
    terms: usize,
    scale: f64,
    features: usize,
}

impl KernelConfig {
    /// A configuration with the default scale `c = sqrt(d_k)`.
    pub fn new(d_k: usize, d_v: usize, terms: usize) -> Result<Self, ConfigError> {
        if d_k == 0 {
            return Err(ConfigError::ZeroKeyDim);
        }
        if d_v == 0 {
            return Err(ConfigError::ZeroValueDim);
        }
        if terms == 0 {
            return Err(ConfigError::ZeroTerms);
        }
        for (name, value) in [("d_k", d_k), ("d_v", d_v)] {
            if value > MAX_DIM {
                return Err(ConfigError::DimTooLarge {
                    name,
                    value,
                    limit: MAX_DIM,
                });
            }
        }
        if terms > MAX_TERMS {
            return Err(ConfigError::TooManyTerms {
                terms,
                limit: MAX_TERMS,
            });
        }
        // m = sum_{p<P} C(d_k + p - 1, p) = C(d_k + P - 1, P - 1).
        let features = match binomial_capped(d_k + terms - 1, terms - 1, MAX_FEATURES as u128) {
            Some(m) => m as usize,
            other => {
                return Err(ConfigError::TooManyFeatures {
                    d_k,
                    terms,
                    features: other,
                    limit: MAX_FEATURES,
                });
            }
        };
        let words = features as u128 * (d_v as u128 + 1);
        if words > MAX_STATE_WORDS as u128 {
            return Err(ConfigError::StateTooLarge {
                features,
                row: d_v + 1,
                words,
                limit: MAX_STATE_WORDS,
            });
        }
        Ok(Self {
            d_k,
            d_v,
            terms,
            scale: (d_k as f64).sqrt(),
            features,
        })
    }

    /// The same configuration with an explicit scale `c` (the divisor of `q·k`).
    pub fn with_scale(mut self, scale: f64) -> Result<Self, ConfigError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(ConfigError::BadScale(scale));
        }
        self.scale = scale;
        Ok(self)
    }

    /// Key and query head dimension.
    pub fn d_k(&self) -> usize {
        self.d_k
    }

    /// Value head dimension.
    pub fn d_v(&self) -> usize {
        self.d_v
    }

    /// Number of Taylor terms `P`; the kernel uses orders `0..P`.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// The scale `c` in `exp(q·k / c)`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether the scale is the default `sqrt(d_k)`.
    pub fn has_default_scale(&self) -> bool {
        self.scale == (self.d_k as f64).sqrt()
    }

    /// Number of distinct monomials of degree `p`, `m_p = C(d_k + p - 1, p)`; 0 for `p >= P`.
    pub fn order_features(&self, p: usize) -> usize {
        if p >= self.terms {
            return 0;
        }
        // m_p <= m <= MAX_FEATURES, which `new` checked, so the cap is never hit.
        binomial_capped(self.d_k + p - 1, p, MAX_FEATURES as u128).map_or(0, |m| m as usize)
    }

    /// Total feature count over all orders, `m = C(d_k + P - 1, P - 1)`.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Words in one state row: the `d_v` numerator entries of `S` and the denominator `Z`.
    pub fn row_len(&self) -> usize {
        self.d_v + 1
    }

    /// Words of state per (batch, head): `m * (d_v + 1)`.
    pub fn state_words_per_head(&self) -> usize {
        self.features * self.row_len()
    }

    /// True when the top degree `P - 1` is odd, so the truncated exponential is negative below
    /// some `x = q·k / c < 0` and denominators can reach zero or go negative.
    pub fn top_degree_is_odd(&self) -> bool {
        (self.terms - 1) % 2 == 1
    }
}

impl std::fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "d_k={}, d_v={}, P={}", self.d_k, self.d_v, self.terms)?;
        if !self.has_default_scale() {
            write!(f, ", scale={}", self.scale)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_parameter_with_its_own_error() {
        assert_eq!(KernelConfig::new(0, 4, 2), Err(ConfigError::ZeroKeyDim));
        assert_eq!(KernelConfig::new(4, 0, 2), Err(ConfigError::ZeroValueDim));
        assert_eq!(KernelConfig::new(4, 4, 0), Err(ConfigError::ZeroTerms));
        assert!(matches!(
            KernelConfig::new(4, MAX_DIM + 1, 2),
            Err(ConfigError::DimTooLarge { name: "d_v", .. })
        ));
        assert!(matches!(
            KernelConfig::new(2, 2, MAX_TERMS + 1),
            Err(ConfigError::TooManyTerms { .. })
        ));
        let base = KernelConfig::new(4, 4, 2).unwrap();
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                base.with_scale(bad),
                Err(ConfigError::BadScale(_))
            ));
        }
    }

    #[test]
    fn absurd_feature_counts_name_the_limit() {
        // d_k = 64, P = 6 has 11,238,513 features (docs/design.md table).
        let err = KernelConfig::new(64, 64, 6).unwrap_err();
        assert_eq!(
            err,
            ConfigError::TooManyFeatures {
                d_k: 64,
                terms: 6,
                features: None,
                limit: MAX_FEATURES
            }
        );
        assert!(err.to_string().contains(&MAX_FEATURES.to_string()));
        // d_k = 64, P = 5 (814,385 features) is accepted, but not with a huge d_v.
        assert_eq!(KernelConfig::new(64, 64, 5).unwrap().features(), 814_385);
        assert!(matches!(
            KernelConfig::new(64, 4096, 5),
            Err(ConfigError::StateTooLarge { .. })
        ));
    }

    #[test]
    fn feature_counts_match_the_design_table() {
        let table = [
            (4, [5, 15, 35, 70, 126]),
            (8, [9, 45, 165, 495, 1287]),
            (16, [17, 153, 969, 4845, 20349]),
            (32, [33, 561, 6545, 58905, 435897]),
        ];
        for (d_k, counts) in table {
            for (i, expected) in counts.into_iter().enumerate() {
                let cfg = KernelConfig::new(d_k, 1, i + 2).unwrap();
                assert_eq!(cfg.features(), expected, "d_k={d_k} P={}", i + 2);
                let by_order: usize = (0..cfg.terms()).map(|p| cfg.order_features(p)).sum();
                assert_eq!(by_order, expected);
            }
        }
    }

    #[test]
    fn parity_of_the_top_degree() {
        assert!(KernelConfig::new(4, 4, 2).unwrap().top_degree_is_odd());
        assert!(!KernelConfig::new(4, 4, 3).unwrap().top_degree_is_odd());
        assert!(KernelConfig::new(4, 4, 4).unwrap().top_degree_is_odd());
    }
}
