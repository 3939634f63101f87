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

/// Largest number of runs of children (features of orders `0..P-2`) whose feature program the
/// GPU targets emit as straight-line code; above it they loop over the run table.
///
/// Measured 2026-11-23 on the 2-core dev VM, Mesa 22.3.6 llvmpipe (LLVM 15) through wgpu 30
/// Vulkan, first `causal` dispatch (shader JIT, empty Mesa shader cache) and a second
/// prefill of 6 lanes x 40 tokens (`examples` probe, see README "WGSL backend"):
///
/// | config | runs | JIT straight-line / loops | prefill straight-line / loops |
/// |---|---|---|---|
/// | d16 P3 | 17 | 0.43 s / 0.78 s | 23 / 28 ms |
/// | d32 P3 | 33 | 0.97 s / 0.37 s | 122 / 130 ms |
/// | d8 P4 | 45 | 1.5 s / 0.53 s | 29 / 33 ms |
/// | d16 P4 | 153 | 16 s / 1.3 s | 152 / 183 ms |
/// | d32 P4 | 561 | 114 s / 0.96 s | 717 / 673 ms |
///
/// The driver's compile time grows much faster than the run count while the run-time gain
/// stays at or below 1.2x (the feature program is small next to the state sweep), so the cut
/// keeps the first dispatch within about two seconds on the slowest compiler we run.
pub const GPU_FULL_UNROLL_MAX_RUNS: usize = 64;

/// Loop iterations one invocation may run before Mesa's llvmpipe stops the loop
/// (gallivm's `LP_MAX_TGSI_LOOP_ITERATIONS`, counted over the whole dispatch). Found
/// 2026-11-23: a 3000-token absorb at d16 P4 in one dispatch absorbed only 164 tokens, with no
/// error. The GPU targets split long calls into dispatches that stay well below it.
pub const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

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
    /// The mode the GPU targets pick for a feature program of `runs` runs of children.
    pub fn for_gpu_runs(runs: usize) -> Self {
        if runs <= GPU_FULL_UNROLL_MAX_RUNS {
            Unroll::Full
        } else {
            Unroll::PerOrder
        }
    }

    /// The mode the Rust target picks for `features`.
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
    /// Multiplicity of coordinate `first` in the first child (the other children have 1). The
    /// query weights follow the prefix tree as `w_child = w_parent / (c * mult)`, so targets
    /// fold them into the recurrence instead of a pass over the features.
    pub mult: usize,
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

/// How a GPU kernel lays one (batch, head) lane of work over a workgroup (WGSL) or thread
/// block (CUDA): one workgroup per lane, its invocations arranged as `rows x cols`.
///
/// The state sweep visits row `j` of `S` (`d_v` words) with the `cols` invocations of one row
/// group, so neighbouring invocations touch neighbouring words and a whole workgroup covers
/// `rows` consecutive rows, `rows * d_v` contiguous words per step: the access is coalesced,
/// which matters because decode is bandwidth-bound (every state word is read and written once
/// per token). `Z` is swept separately, one feature per invocation. With `d_v <= 64` the
/// workgroup holds `rows = floor(64 / d_v)` row groups (64 invocations at d_v = 16, the
/// smallest size that fills a SIMD group on every vendor); wider values take one row group
/// of up to 256 invocations, each owning `cols_per_invocation` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GpuGeometry {
    /// Invocations per workgroup, `rows * cols`.
    pub workgroup: usize,
    /// Invocations sharing one state row (`min(d_v, 256)`).
    pub cols: usize,
    /// Row groups: rows of `S` swept at once.
    pub rows: usize,
    /// Columns each invocation owns, `ceil(d_v / cols)` (1 unless `d_v > 256`).
    pub cols_per_invocation: usize,
}

impl GpuGeometry {
    /// Largest workgroup the geometry uses: WebGPU's default
    /// `maxComputeInvocationsPerWorkgroup`.
    pub const MAX_WORKGROUP: usize = 256;
    /// Workgroup size aimed for when a row is narrow.
    pub const TARGET_WORKGROUP: usize = 64;

    pub fn new(d_v: usize) -> Self {
        let cols = d_v.min(Self::MAX_WORKGROUP);
        let rows = (Self::TARGET_WORKGROUP / cols).max(1);
        Self {
            workgroup: rows * cols,
            cols,
            rows,
            cols_per_invocation: d_v.div_ceil(cols),
        }
    }
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
    /// How the GPU targets (WGSL, CUDA) emit the feature program; their compilers run when
    /// the program does, so the cut is lower ([`GPU_FULL_UNROLL_MAX_RUNS`]).
    pub gpu_unroll: Unroll,
    /// Workgroup layout of the GPU targets.
    pub gpu: GpuGeometry,
    pub orders: Vec<OrderPlan>,
    /// Query-side weights `alpha_p C_p`, in f64.
    pub weights: Vec<f64>,
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
                // The parent's monomial ends with its largest coordinate, and `first` is it
                // (children never go below it), so the new coordinate repeats that tail.
                let mult = if parent == 0 {
                    1
                } else {
                    1 + basis
                        .monomial(parent)
                        .iter()
                        .filter(|&&c| c == first)
                        .count()
                };
                orders[p].runs.push(FeatureRun {
                    parent,
                    first,
                    len,
                    dest,
                    mult,
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
            gpu_unroll: Unroll::for_gpu_runs(orders.iter().map(|o| o.runs.len()).sum()),
            gpu: GpuGeometry::new(config.d_v()),
            orders,
            weights: basis.weights().to_vec(),
            generator_version: crate::GENERATOR_VERSION,
        }
    }

    /// The same plan with the feature program emitted in `unroll` form by every target,
    /// regardless of size (for tests and for comparing the two forms).
    pub fn with_unroll(mut self, unroll: Unroll) -> Self {
        self.unroll = unroll;
        self.gpu_unroll = unroll;
        self
    }

    /// An upper bound on the loop iterations one WGSL invocation runs per token (every loop of
    /// the causal entry point, the busiest: feature runs, the state sweep, `Z`, the reduction).
    pub fn gpu_loop_iterations_per_token(&self) -> usize {
        let g = &self.gpu;
        let runs: usize = self.orders.iter().map(|o| o.runs.len()).sum();
        let per_run = self.d_k.div_ceil(g.workgroup);
        let features = 2 * (1 + per_run * (runs + 1));
        let sweep = self.features.div_ceil(g.rows) * (1 + g.cols_per_invocation);
        let z = self.features.div_ceil(g.workgroup);
        let reduce = g.workgroup + g.cols_per_invocation * (g.rows + 1);
        1 + features + g.cols_per_invocation + sweep + z + reduce
    }

    /// Tokens per WGSL dispatch: long calls are split so that no dispatch comes near
    /// [`LLVMPIPE_LOOP_LIMIT`] (half of it, for margin); at least 1.
    pub fn gpu_tokens_per_dispatch(&self) -> usize {
        (LLVMPIPE_LOOP_LIMIT / 2 / self.gpu_loop_iterations_per_token()).max(1)
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
    fn multiplicities_give_the_query_weights_by_recurrence() {
        for (d_k, terms) in [(3, 4), (5, 5), (16, 4)] {
            let config = KernelConfig::new(d_k, 2, terms).unwrap();
            let plan = KernelPlan::new(&config);
            let weights = Basis::new(&config).weights().to_vec();
            for r in plan.orders.iter().flat_map(|o| &o.runs) {
                for i in 0..r.len {
                    let mult = if i == 0 { r.mult } else { 1 };
                    let w = weights[r.parent] / (plan.scale * mult as f64);
                    let exact = weights[r.dest + i];
                    assert!((w - exact).abs() <= 1e-12 * exact, "feature {}", r.dest + i);
                }
            }
        }
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

#[cfg(test)]
mod geometry_tests {
    use super::GpuGeometry;

    #[test]
    fn workgroups_cover_every_column_and_stay_within_limits() {
        for d_v in [1, 2, 3, 5, 16, 17, 48, 64, 65, 100, 256, 257, 1000, 65_536] {
            let g = GpuGeometry::new(d_v);
            assert_eq!(g.workgroup, g.rows * g.cols, "d_v = {d_v}");
            assert!(g.workgroup <= GpuGeometry::MAX_WORKGROUP, "d_v = {d_v}");
            assert!(g.cols * g.cols_per_invocation >= d_v, "d_v = {d_v}");
            assert!(g.cols * (g.cols_per_invocation - 1) < d_v, "d_v = {d_v}");
            // Several row groups only when one invocation owns one column.
            assert!(g.rows == 1 || g.cols_per_invocation == 1, "d_v = {d_v}");
        }
        assert_eq!(GpuGeometry::new(16).workgroup, 64);
        assert_eq!(GpuGeometry::new(16).rows, 4);
    }
}
