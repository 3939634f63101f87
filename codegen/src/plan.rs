//! The target-independent kernel plan: everything a renderer needs, computed once from the
//! basis, so that templates only lay numbers out (STYLE.md rule 1).

use serde::Serialize;

use crate::basis::Basis;
use crate::config::KernelConfig;
use crate::cost::CostModel;

/// Largest feature count whose feature program is emitted as straight-line code (one statement
/// per run of children); larger configurations get one loop per Taylor order over a constant
/// run table.
///
/// Measured 2026-11-23 on the 2-core dev VM (AVX2+FMA), rustc 1.95, `cargo build --release` of
/// a probe crate holding one kernel, decode of 16 heads (README, "Unrolling threshold"):
///
/// | features | config | rustc full / loops | binary full / loops | decode full / loops |
/// |---|---|---|---|---|
/// | 969 | d16 P4 | 1.8 s / 1.0 s | +7 KB | 2.86 / 3.03 µs |
/// | 4,845 | d16 P5 | 9.4 s / 1.1 s | +41 KB | 14.7 / 24.1 µs |
/// | 6,545 | d32 P4 | 11.2 s / 1.1 s | +60 KB | 53.9 / 65.0 µs |
/// | 20,349 | d16 P6 | 110 s / 1.8 s | +179 KB | 129 / 185 µs |
///
/// Straight-line code is 1.1–1.6x faster at every size, but its compile time grows faster than
/// linearly (110 s at 20k features against 11 s at 6.5k), so the cut sits above the largest
/// registry kernel that still compiles in seconds. The table measured the first straight-line
/// form (one scalar statement per feature). The run form, re-measured the same way: d16 P5
/// 14.3 s, d32 P4 10.5 s, d16 P6 over 300 s (killed), so the cut stays.
pub const FULL_UNROLL_MAX_FEATURES: usize = 8192;

/// How the feature program is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unroll {
    /// Straight-line code: one fixed-length statement per run of children,
    /// `f[dest..dest + len] = f[parent] * x[first..]` (emitted by the Rust target as a call with
    /// constant arguments, compiled to whole vector multiplies).
    Full,
    /// One loop per order over a constant table of runs.
    PerOrder,
}

impl Unroll {
    /// The mode the generator picks for `features`.
    pub fn for_features(features: usize) -> Self {
        if features <= FULL_UNROLL_MAX_FEATURES {
            Unroll::Full
        } else {
            Unroll::PerOrder
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Unroll::Full => "fully unrolled (one fixed-length statement per run of children)",
            Unroll::PerOrder => "one loop per Taylor order over a constant run table",
        }
    }
}

/// The children of one parent: features `dest..dest + len` are `f[parent] * x[first..d_k]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeatureRun {
    pub parent: usize,
    pub first: usize,
    pub len: usize,
    pub dest: usize,
}

/// One Taylor order of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderPlan {
    pub degree: usize,
    pub offset: usize,
    pub len: usize,
    /// Runs producing this order's features from the previous order (empty for order 0).
    pub runs: Vec<FeatureRun>,
}

/// One statement of the straight-line feature program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeatureStatement {
    pub dest: usize,
    pub parent: usize,
    pub coord: usize,
}

/// The kernel plan of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct KernelPlan {
    /// Identifier-safe name, e.g. `d16_v16_p4` (with `_s<bits>` for a non-default scale).
    pub name: String,
    pub d_k: usize,
    pub d_v: usize,
    pub terms: usize,
    pub scale: f64,
    pub default_scale: bool,
    /// `d_v + 1`: a state row is `[S | Z]`.
    pub row: usize,
    pub features: usize,
    pub features_per_order: Vec<usize>,
    pub state_words: usize,
    pub decode_flops: u64,
    pub unroll: Unroll,
    pub orders: Vec<OrderPlan>,
    /// Query-side weights `alpha_p C_p`, in f64.
    pub weights: Vec<f64>,
    /// The same weights as f32 literals exactly as the kernel uses them (shortest round-trip).
    pub weight_literals: Vec<String>,
    pub generator_version: &'static str,
}

impl KernelPlan {
    pub fn new(config: &KernelConfig) -> Self {
        let basis = Basis::new(config);
        let cost = CostModel::new(config);
        let starts = basis.child_start();
        let mut orders: Vec<OrderPlan> = basis
            .orders()
            .iter()
            .map(|s| OrderPlan {
                degree: s.degree,
                offset: s.offset,
                len: s.len,
                runs: vec![],
            })
            .collect();
        for p in 1..orders.len() {
            let mut dest = orders[p].offset;
            let parents = orders[p - 1].offset..orders[p - 1].offset + orders[p - 1].len;
            for parent in parents {
                let first = starts[parent] as usize;
                let len = config.d_k() - first;
                orders[p].runs.push(FeatureRun {
                    parent,
                    first,
                    len,
                    dest,
                });
                dest += len;
            }
        }
        let name = if config.has_default_scale() {
            format!("d{}_v{}_p{}", config.d_k(), config.d_v(), config.terms())
        } else {
            format!(
                "d{}_v{}_p{}_s{:016x}",
                config.d_k(),
                config.d_v(),
                config.terms(),
                config.scale().to_bits()
            )
        };
        Self {
            name,
            d_k: config.d_k(),
            d_v: config.d_v(),
            terms: config.terms(),
            scale: config.scale(),
            default_scale: config.has_default_scale(),
            row: config.row_len(),
            features: config.features(),
            features_per_order: cost.features_per_order.clone(),
            state_words: cost.state_words,
            decode_flops: cost.decode_flops,
            unroll: Unroll::for_features(config.features()),
            orders,
            weights: basis.weights().to_vec(),
            weight_literals: basis
                .weights()
                .iter()
                .map(|&w| format!("{:?}", w as f32))
                .collect(),
            generator_version: crate::GENERATOR_VERSION,
        }
    }

    /// The same plan with the feature program emitted in `unroll` form regardless of size
    /// (for tests and for comparing the two forms).
    pub fn with_unroll(mut self, unroll: Unroll) -> Self {
        self.unroll = unroll;
        self
    }

    /// The straight-line feature program: one statement per feature of order >= 1, in order.
    pub fn statements(&self) -> Vec<FeatureStatement> {
        self.orders
            .iter()
            .flat_map(|o| &o.runs)
            .flat_map(|r| {
                (0..r.len).map(move |i| FeatureStatement {
                    dest: r.dest + i,
                    parent: r.parent,
                    coord: r.first + i,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_feature_once_in_order() {
        let plan = KernelPlan::new(&KernelConfig::new(5, 2, 4).unwrap());
        let statements = plan.statements();
        assert_eq!(statements.len(), plan.features - 1);
        for (i, s) in statements.iter().enumerate() {
            assert_eq!(s.dest, i + 1);
            assert!(s.parent < s.dest);
        }
        assert_eq!(plan.name, "d5_v2_p4");
        assert_eq!(plan.unroll, Unroll::Full);
    }

    #[test]
    fn statements_agree_with_the_basis_prefix_tree() {
        let config = KernelConfig::new(4, 1, 4).unwrap();
        let basis = Basis::new(&config);
        for s in KernelPlan::new(&config).statements() {
            assert_eq!(basis.parent(s.dest), Some(s.parent));
            assert_eq!(basis.extra_coord(s.dest), Some(s.coord));
        }
    }

    #[test]
    fn large_configs_switch_to_per_order_loops() {
        assert_eq!(
            KernelPlan::new(&KernelConfig::new(16, 16, 4).unwrap()).unroll,
            Unroll::Full
        );
        assert_eq!(
            KernelPlan::new(&KernelConfig::new(32, 32, 4).unwrap()).unroll,
            Unroll::Full
        );
        assert_eq!(
            KernelPlan::new(&KernelConfig::new(16, 16, 6).unwrap()).unroll,
            Unroll::PerOrder
        );
        let scaled = KernelConfig::new(4, 4, 2).unwrap().with_scale(1.0).unwrap();
        assert!(KernelPlan::new(&scaled).name.starts_with("d4_v4_p2_s"));
    }
}
