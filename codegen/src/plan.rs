//! The target-independent kernel plan: everything every renderer needs, computed once from the
//! basis, so that templates only lay numbers out. What only one target needs (the GPU
//! geometry, the CUDA layout, the Rust vector width, each target's unrolling rule) is that
//! target's lowering, in its own module.

use serde::Serialize;

use crate::basis::Basis;
use crate::combinatorics::binomial_capped;
use crate::config::KernelConfig;
use crate::cost::CostModel;

/// Version of the generator, recorded in every generated kernel's header and descriptor.
pub const GENERATOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How a target emits the feature program. Each target picks one by its own rule (its
/// compiler's cost grows differently with the program's size); its options can force either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unroll {
    /// Straight-line code: one fixed-length statement per run of children,
    /// `f[dest..dest + len] = f[parent] * x[first..]` (emitted by the Rust target as a call with
    /// constant arguments, compiled to whole vector multiplies).
    Full,
    /// One loop per order over a constant table of runs.
    PerOrder,
    /// One loop over a constant table of [`FeaturePiece`]s, the suffix form of the recurrence
    /// (Rust target only): a few long vector runs instead of one short run per parent, so the
    /// code stays small however many features there are.
    Pieces,
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

/// A piece of the suffix form of the feature recurrence: features `dest..dest + len` are
/// `x[coord] * f[src..src + len]`, all of whose monomials have multiplicity `mult` for
/// coordinate `coord` (queries scale the piece by `1 / (c mult)`, as runs scale a first child).
///
/// In lexicographic order, the features of order `p` whose first coordinate is `i` are `x_i`
/// times the features of order `p - 1` whose coordinates are all `>= i`, and those are a
/// contiguous suffix of order `p - 1`. Split where the count of leading `i`s changes (so the
/// query weight is constant along a piece), an order is `d_k` to `p d_k` pieces instead of one
/// run per feature of the order below. The products associate from the right
/// (`x_i1 (x_i2 (...))`) where runs associate from the left, so the two forms agree to
/// rounding, not bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeaturePiece {
    pub src: usize,
    pub dest: usize,
    pub len: usize,
    pub coord: usize,
    pub mult: usize,
}

/// One stretch of the suffix form, unsplit: features `dest..dest + len` (the order's features
/// whose first coordinate is `coord`) are `x[coord] * f[src..src + len]` (the order below's
/// features whose coordinates are all `>= coord`). Keys need nothing more; queries, whose
/// weight depends on how often `coord` repeats, take it split into [`FeaturePiece`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeatureSuffix {
    pub src: usize,
    pub dest: usize,
    pub len: usize,
    pub coord: usize,
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
            orders,
            weights: basis.weights().to_vec(),
            generator_version: GENERATOR_VERSION,
        }
    }

    /// Name of the module of plain (`compensated = false`) or Kahan-compensated kernels: the
    /// plan's name, with `_kahan` for the compensated ones.
    pub fn variant_name(&self, compensated: bool) -> String {
        if compensated {
            format!("{}_kahan", self.name)
        } else {
            self.name.clone()
        }
    }

    /// Runs of children over all orders (features of orders `0..P-1` with children).
    pub fn runs(&self) -> usize {
        self.orders.iter().map(|o| o.runs.len()).sum()
    }

    /// The adjoint of the feature program: its orders in reverse, so that every feature's
    /// gradient is complete (all its children visited) before it is passed to its parent.
    /// `J_Phi(x)^T u` is then, for each run `f[dest + i] = f[parent] * x[first + i]`:
    /// `df[parent] += df[dest + i] x[first + i]` and `dx[first + i] += df[dest + i] f[parent]`,
    /// starting from `df = u`: one multiply-add per feature per side, like the forward.
    ///
    /// The runs of one order are independent of each other (their parents are all of the
    /// order below), so within an order they come grouped by first coordinate: consecutive
    /// runs then add into the same words of `dx`, which a vector target sums in registers.
    pub fn adjoint_runs(&self) -> Vec<&FeatureRun> {
        self.orders
            .iter()
            .rev()
            .flat_map(|o| {
                let mut runs: Vec<&FeatureRun> = o.runs.iter().collect();
                runs.sort_by_key(|r| (r.first, r.dest));
                runs
            })
            .collect()
    }

    /// The feature program in suffix form, unsplit ([`FeatureSuffix`]): one stretch per order
    /// and first coordinate, in destination order.
    pub fn suffixes(&self) -> Vec<FeatureSuffix> {
        self.suffixes_with_source_degree()
            .map(|(_, suffix)| suffix)
            .collect()
    }

    /// The feature program in suffix form ([`FeaturePiece`]), in destination order: each
    /// [`FeatureSuffix`] split by how many copies of its coordinate its sources lead with
    /// (r = q down to 0, the sources' degree q; r = 0 is those starting above it), so that a
    /// piece's query weight is constant.
    pub fn pieces(&self) -> Vec<FeaturePiece> {
        let mut pieces = Vec::new();
        for (q, s) in self.suffixes_with_source_degree() {
            let (mut src, mut dest) = (s.src, s.dest);
            for r in (0..=q).rev() {
                let len = multisets(self.d_k - s.coord - 1, q - r);
                if len > 0 {
                    pieces.push(FeaturePiece {
                        src,
                        dest,
                        len,
                        coord: s.coord,
                        mult: r + 1,
                    });
                }
                src += len;
                dest += len;
            }
            debug_assert_eq!(dest, s.dest + s.len);
        }
        pieces
    }

    /// Every [`FeatureSuffix`] with the degree of its sources.
    fn suffixes_with_source_degree(&self) -> impl Iterator<Item = (usize, FeatureSuffix)> + '_ {
        let d = self.d_k;
        self.orders.windows(2).flat_map(move |pair| {
            let (below, order) = (&pair[0], &pair[1]);
            let mut dest = order.offset;
            (0..d).map(move |coord| {
                // Order q's monomials with every coordinate >= coord come after those whose
                // first coordinate is below it.
                let len = multisets(d - coord, below.degree);
                let suffix = FeatureSuffix {
                    src: below.offset + below.len - len,
                    dest,
                    len,
                    coord,
                };
                dest += len;
                (below.degree, suffix)
            })
        })
    }

    /// Vector statements of the straight-line form at `lanes` words per vector: each run of
    /// children rounded up to whole vectors. Its code size, and what the Rust target's choice
    /// of form goes by.
    pub fn vector_statements(&self, lanes: usize) -> usize {
        self.orders
            .iter()
            .flat_map(|o| &o.runs)
            .map(|r| r.len.div_ceil(lanes))
            .sum()
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

/// Monomials of degree `k` over `n` coordinates: `C(n + k - 1, k)` (1 for `k = 0`, 0 for
/// `n = 0 < k`).
fn multisets(n: usize, k: usize) -> usize {
    if k == 0 {
        return 1;
    }
    let count = binomial_capped(n + k - 1, k, u128::MAX).expect("uncapped");
    usize::try_from(count).expect("a plan's feature counts fit usize")
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
        assert_eq!(plan.runs(), 1 + 5 + 15);
    }

    /// Every piece's features are its coordinate times its sources, monomial by monomial, with
    /// the stated multiplicity; the pieces cover every feature of order >= 1 once, in order;
    /// and the query weights follow `w = w_src / (c mult)` along them.
    #[test]
    fn pieces_are_the_suffix_recurrence() {
        for (d_k, terms) in [(1, 5), (3, 4), (5, 5), (8, 8), (16, 4), (32, 3)] {
            let config = KernelConfig::new(d_k, 2, terms).unwrap();
            let (plan, basis) = (KernelPlan::new(&config), Basis::new(&config));
            let weights = basis.weights();
            let mut next = 1;
            for p in plan.pieces() {
                assert_eq!(p.dest, next, "d{d_k} P{terms}: pieces in destination order");
                next += p.len;
                for k in 0..p.len {
                    let mut want = vec![p.coord];
                    want.extend(basis.monomial(p.src + k));
                    assert_eq!(basis.monomial(p.dest + k), want);
                    let mult = want.iter().filter(|&&c| c == p.coord).count();
                    assert_eq!(mult, p.mult);
                    let w = weights[p.src + k] / (plan.scale * p.mult as f64);
                    let exact = weights[p.dest + k];
                    assert!((w - exact).abs() <= 1e-12 * exact);
                }
            }
            assert_eq!(next, plan.features);
            // Unsplit, a suffix is exactly its coordinate's pieces, end to end.
            let pieces = plan.pieces();
            let mut pieces = pieces.iter().peekable();
            for s in plan.suffixes() {
                let (mut src, mut dest) = (s.src, s.dest);
                while dest < s.dest + s.len {
                    let p = pieces.next().expect("a piece for every suffix word");
                    assert_eq!((p.src, p.dest, p.coord), (src, dest, s.coord));
                    src += p.len;
                    dest += p.len;
                }
                assert_eq!(dest, s.dest + s.len);
            }
            assert!(pieces.peek().is_none());
        }
        // Far fewer pieces than runs where the straight-line form is large.
        let plan = KernelPlan::new(&KernelConfig::new(8, 8, 8).unwrap());
        assert_eq!(plan.runs(), 3003);
        assert_eq!(plan.pieces().len(), 203);
        assert_eq!(plan.vector_statements(8), 3003);
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
    fn the_adjoint_finishes_every_feature_before_its_parent_reads_it() {
        let plan = KernelPlan::new(&KernelConfig::new(4, 2, 5).unwrap());
        let runs = plan.adjoint_runs();
        assert_eq!(runs.len(), plan.runs());
        for (i, r) in runs.iter().enumerate() {
            // Every run that uses one of this run's features as its parent came earlier.
            for other in &runs[i + 1..] {
                assert!(!(r.dest..r.dest + r.len).contains(&other.parent), "run {i}");
            }
        }
    }

    #[test]
    fn every_run_ends_at_the_last_coordinate() {
        // The Rust target's whole-vector runs and adjoints rely on it (`kernel::driver`).
        for (d_k, terms) in [(1, 3), (4, 5), (7, 4), (16, 4)] {
            let plan = KernelPlan::new(&KernelConfig::new(d_k, 2, terms).unwrap());
            for r in plan.orders.iter().flat_map(|o| &o.runs) {
                assert_eq!(r.first + r.len, d_k, "{r:?}");
            }
        }
    }

    #[test]
    fn names_encode_a_non_default_scale() {
        let scaled = KernelConfig::new(4, 4, 2).unwrap().with_scale(1.0).unwrap();
        assert!(KernelPlan::new(&scaled).name.starts_with("d4_v4_p2_s"));
    }
}
