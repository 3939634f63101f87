//! What a configuration costs per head: state size, work per token, and the context length at
//! which the fixed-size state becomes smaller than a KV cache.

use crate::config::KernelConfig;

/// Per-head cost figures of one configuration, all derived from its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// `m_p` for `p = 0..P`.
    pub features_per_order: Vec<usize>,
    /// `m`, the sum of `features_per_order`.
    pub features: usize,
    /// Words of state per head, `m * (d_v + 1)`.
    pub state_words: usize,
    /// Floating-point operations of one decode step (update the state with one key/value,
    /// then read it with one query), counted as:
    /// key and query features `2 (m - 1)` multiplies, query weights `m` multiplies,
    /// state update and state read `2 m (d_v + 1)` multiply-adds each counted as 2 FLOPs,
    /// and `d_v` divisions.
    pub decode_flops: u64,
    /// Multiply-adds of the state update and read alone, `2 m (d_v + 1)`: the FMA-throughput
    /// floor of a decode step.
    pub decode_fmas: u64,
    /// Numbers a KV cache stores per token, `d_k + d_v`.
    pub kv_words_per_token: usize,
    /// Smallest context length `n` at which a KV cache (`n (d_k + d_v)` numbers) holds more
    /// numbers than the SATA state: beyond it, SATA wins on memory and memory traffic.
    pub break_even_tokens: u64,
}

impl CostModel {
    /// The figures of `config`.
    pub fn new(config: &KernelConfig) -> Self {
        let features_per_order: Vec<usize> = (0..config.terms())
            .map(|p| config.order_features(p))
            .collect();
        let m = config.features() as u64;
        let row = config.row_len() as u64;
        let state_words = config.state_words_per_head();
        let kv = (config.d_k() + config.d_v()) as u64;
        let decode_fmas = 2 * m * row;
        Self {
            features: config.features(),
            features_per_order,
            state_words,
            decode_flops: 2 * (m - 1) + m + 2 * decode_fmas + config.d_v() as u64,
            decode_fmas,
            kv_words_per_token: kv as usize,
            break_even_tokens: state_words as u64 / kv + 1,
        }
    }

    /// For an odd top degree (`P` even): the unique real root `x* < 0` of the truncated
    /// exponential `T_P(x) = sum_{p<P} x^p / p!`, below which a pair's weight is negative and
    /// denominators can reach zero. `None` for `P` odd, where `T_P > 0` everywhere.
    pub fn negative_below(config: &KernelConfig) -> Option<f64> {
        if !config.top_degree_is_odd() {
            return None;
        }
        Some(crate::error_bound::negative_root(config.terms()))
    }

    /// State bytes per head for an accumulator of `word_bytes` bytes (4 for f32, 8 for f64).
    pub fn state_bytes(&self, word_bytes: usize) -> usize {
        self.state_words * word_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_thresholds_match_the_design_notes() {
        let root = |p| CostModel::negative_below(&KernelConfig::new(4, 4, p).unwrap());
        assert_eq!(root(3), None);
        assert_eq!(root(5), None);
        assert!((root(2).unwrap() + 1.0).abs() < 1e-12);
        for (terms, x) in [(4, -1.596), (6, -2.181), (8, -2.759)] {
            assert!((root(terms).unwrap() - x).abs() < 1e-3, "P={terms}");
        }
    }

    #[test]
    fn d16_p4_figures() {
        let cost = CostModel::new(&KernelConfig::new(16, 16, 4).unwrap());
        assert_eq!(cost.features_per_order, vec![1, 16, 136, 816]);
        assert_eq!(cost.features, 969);
        assert_eq!(cost.state_words, 969 * 17);
        assert_eq!(cost.state_bytes(4), 65_892);
        assert_eq!(cost.decode_fmas, 2 * 969 * 17);
        // docs/design.md: about 515 tokens. 16,473 state words; a cache of 515 tokens holds 16,480.
        assert_eq!(cost.break_even_tokens, 515);
        assert!(32 * 515 > cost.state_words && 32 * 514 <= cost.state_words);
    }
}
