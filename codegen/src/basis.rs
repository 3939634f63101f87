//! The symmetric monomial basis of a configuration: every distinct monomial of degree `p < P`
//! over `d_k` coordinates, in lexicographic order, with its multiplicity, its weight and its
//! place in the prefix tree.
//!
//! Features are numbered globally, order 0 first, then each order's monomials in the order of
//! Python's `itertools.combinations_with_replacement(range(d_k), p)`. That numbering is the row
//! order of a state, so it is part of the checkpoint format and must never change.

use std::ops::Range;

use crate::combinatorics::factorial;
use crate::config::KernelConfig;

/// Where one Taylor order's features sit in the global feature numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSpan {
    /// The degree `p` of every monomial in this span.
    pub degree: usize,
    /// Index of the span's first feature.
    pub offset: usize,
    /// Number of features, `m_p = C(d_k + p - 1, p)`.
    pub len: usize,
}

impl OrderSpan {
    /// The global feature indices of this order.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// The basis of one configuration. Cheap to query; built once per configuration.
///
/// Memory is a few words per feature: monomials are not stored as tuples but recovered by
/// walking the prefix tree ([`Basis::monomial`]).
#[derive(Debug, Clone)]
pub struct Basis {
    config: KernelConfig,
    orders: Vec<OrderSpan>,
    /// Parent of each feature in the previous order (`u32::MAX` for the order-0 feature).
    parent: Vec<u32>,
    /// Last (largest) coordinate of each monomial; 0 for the order-0 feature, whose children
    /// start at coordinate 0.
    last_coord: Vec<u32>,
    /// Multiplicity `C_p[j]`: the number of distinct orderings of the monomial's indices.
    multiplicity: Vec<u64>,
    /// Query-side weight `alpha_p * C_p[j] = C_p[j] / (p! c^p)`.
    weight: Vec<f64>,
}

impl Basis {
    /// Builds the basis. Cannot fail: the configuration was validated (its feature count is
    /// bounded) when it was made.
    pub fn new(config: &KernelConfig) -> Self {
        let d = config.d_k();
        let m = config.features();
        let mut orders = Vec::with_capacity(config.terms());
        let mut parent = Vec::with_capacity(m);
        let mut last_coord = Vec::with_capacity(m);
        let mut multiplicity = Vec::with_capacity(m);
        // Length of the run of equal trailing indices, needed to update the multiplicity.
        let mut run = Vec::with_capacity(m);

        orders.push(OrderSpan {
            degree: 0,
            offset: 0,
            len: 1,
        });
        parent.push(u32::MAX);
        last_coord.push(0);
        multiplicity.push(1);
        run.push(0u32);

        for p in 1..config.terms() {
            let parents = orders[p - 1].range();
            let offset = parent.len();
            // The children of a parent whose last index is `l` are the parent times each of
            // x[l..d], in that order; walking parents in order gives lexicographic order.
            for a in parents {
                for i in last_coord[a] as usize..d {
                    // A child that repeats the parent's last index extends its trailing run.
                    let r = if p > 1 && i == last_coord[a] as usize {
                        run[a] + 1
                    } else {
                        1
                    };
                    // C_child = p! / prod(counts!) = C_parent * p / r, exactly divisible.
                    multiplicity.push(multiplicity[a] * p as u64 / r as u64);
                    parent.push(a as u32);
                    last_coord.push(i as u32);
                    run.push(r);
                }
            }
            orders.push(OrderSpan {
                degree: p,
                offset,
                len: parent.len() - offset,
            });
        }

        let weight = orders
            .iter()
            .flat_map(|span| {
                let alpha = alpha(config, span.degree);
                multiplicity[span.range()]
                    .iter()
                    .map(move |&c| c as f64 * alpha)
            })
            .collect();

        debug_assert_eq!(parent.len(), m);
        Self {
            config: *config,
            orders,
            parent,
            last_coord,
            multiplicity,
            weight,
        }
    }

    /// The configuration this basis was built from.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Total number of features `m`.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Always false: every basis has the order-0 feature.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// One span per Taylor order `0..P`, in order.
    pub fn orders(&self) -> &[OrderSpan] {
        &self.orders
    }

    /// Parent of feature `j` in the previous order, or `None` for the order-0 feature.
    pub fn parent(&self, j: usize) -> Option<usize> {
        let a = self.parent[j];
        (a != u32::MAX).then_some(a as usize)
    }

    /// The coordinate feature `j` multiplies its parent by (its last index), or `None` for the
    /// order-0 feature.
    pub fn extra_coord(&self, j: usize) -> Option<usize> {
        self.parent(j).map(|_| self.last_coord[j] as usize)
    }

    /// For every feature, the first coordinate its children multiply by: its last index, or 0
    /// for the order-0 feature. The feature program walks this slice.
    pub fn child_start(&self) -> &[u32] {
        &self.last_coord
    }

    /// The Taylor coefficient `alpha_p = 1 / (p! c^p)` of order `p`.
    pub fn alpha(&self, degree: usize) -> f64 {
        alpha(&self.config, degree)
    }

    /// Multiplicities `C_p[j]`, indexed by global feature number.
    pub fn multiplicities(&self) -> &[u64] {
        &self.multiplicity
    }

    /// Query-side weights `alpha_p C_p[j]`, indexed by global feature number.
    pub fn weights(&self) -> &[f64] {
        &self.weight
    }

    /// The sorted index tuple `(i_1 <= ... <= i_p)` of feature `j`.
    pub fn monomial(&self, j: usize) -> Vec<usize> {
        let mut indices = Vec::new();
        let mut at = j;
        while let Some(a) = self.parent(at) {
            indices.push(self.last_coord[at] as usize);
            at = a;
        }
        indices.reverse();
        indices
    }

    /// Evaluates every feature `Phi(x)` into `out` with the prefix recurrence: one multiply per
    /// feature, reading `x` in contiguous runs. `x.len()` must be `d_k` and `out.len()` must be
    /// `m`; this is the reference feature map that generated kernels are tested against.
    pub fn features_into(&self, x: &[f64], out: &mut [f64]) {
        assert_eq!(x.len(), self.config.d_k(), "x must have d_k entries");
        assert_eq!(out.len(), self.len(), "out must have m entries");
        out[0] = 1.0;
        let mut next = 1;
        for p in 1..self.orders.len() {
            for a in self.orders[p - 1].range() {
                let base = out[a];
                for &xi in &x[self.last_coord[a] as usize..] {
                    out[next] = base * xi;
                    next += 1;
                }
            }
        }
    }
}

/// `alpha_p = 1 / (p! c^p)`.
fn alpha(config: &KernelConfig, degree: usize) -> f64 {
    1.0 / (factorial(degree) * config.scale().powi(degree as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d3_p3_matches_combinations_with_replacement() {
        let basis = Basis::new(&KernelConfig::new(3, 1, 3).unwrap());
        let monomials: Vec<Vec<usize>> = (0..basis.len()).map(|j| basis.monomial(j)).collect();
        let expected: Vec<Vec<usize>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![2],
            vec![0, 0],
            vec![0, 1],
            vec![0, 2],
            vec![1, 1],
            vec![1, 2],
            vec![2, 2],
        ];
        assert_eq!(monomials, expected);
        assert_eq!(basis.multiplicities(), &[1, 1, 1, 1, 1, 2, 2, 1, 2, 1]);
        assert_eq!(basis.parent(0), None);
        assert_eq!(basis.parent(8), Some(2));
        assert_eq!(basis.extra_coord(8), Some(2));
    }

    #[test]
    fn weights_are_alpha_times_multiplicity() {
        let cfg = KernelConfig::new(3, 1, 4).unwrap().with_scale(1.5).unwrap();
        let basis = Basis::new(&cfg);
        // Feature (0, 1, 1): p = 3, C = 3, alpha_3 = 1 / (6 * 1.5^3).
        let j = (0..basis.len())
            .find(|&j| basis.monomial(j) == [0, 1, 1])
            .unwrap();
        assert_eq!(basis.multiplicities()[j], 3);
        let expected = 3.0 / (6.0 * 1.5f64.powi(3));
        assert!((basis.weights()[j] - expected).abs() < 1e-15);
    }
}
