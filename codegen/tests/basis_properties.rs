//! Properties of the symmetric basis, each checked against an independent computation.

use proptest::prelude::*;
use sata_codegen::{Basis, KernelConfig};

/// `itertools.combinations_with_replacement(range(d), p)`, written independently of the basis:
/// odometer-style increment of a non-decreasing tuple.
fn combinations_with_replacement(d: usize, p: usize) -> Vec<Vec<usize>> {
    let mut out = vec![];
    let mut idx = vec![0; p];
    loop {
        out.push(idx.clone());
        // Find the rightmost index that can still grow.
        let Some(i) = (0..p).rev().find(|&i| idx[i] < d - 1) else {
            return out;
        };
        let v = idx[i] + 1;
        idx[i..].iter_mut().for_each(|x| *x = v);
    }
}

/// Multiplicity by brute force: count all `d^p` index tuples that sort to `m`.
fn brute_multiplicity(d: usize, m: &[usize]) -> u64 {
    let p = m.len();
    let mut count = 0;
    for code in 0..d.pow(p as u32) {
        let mut t: Vec<usize> = (0..p).map(|i| code / d.pow(i as u32) % d).collect();
        t.sort_unstable();
        count += u64::from(t == m);
    }
    count
}

fn binomial_f64(n: usize, k: usize) -> f64 {
    (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn order_is_lexicographic_and_counts_match(d in 1usize..9, terms in 1usize..6) {
        let basis = Basis::new(&KernelConfig::new(d, 1, terms).unwrap());
        let mut j = 0;
        for (p, span) in basis.orders().iter().enumerate() {
            prop_assert_eq!(span.degree, p);
            prop_assert_eq!(span.offset, j);
            prop_assert_eq!(span.len as f64, binomial_f64(d + p - 1, p).round());
            let expected = combinations_with_replacement(d, p);
            prop_assert_eq!(expected.len(), span.len);
            for m in expected {
                prop_assert_eq!(basis.monomial(j), m);
                j += 1;
            }
        }
        prop_assert_eq!(j, basis.len());
    }

    #[test]
    fn multiplicities_sum_to_d_pow_p_and_match_brute_force(d in 1usize..6, terms in 1usize..6) {
        let basis = Basis::new(&KernelConfig::new(d, 1, terms).unwrap());
        for span in basis.orders() {
            let c = &basis.multiplicities()[span.range()];
            prop_assert_eq!(c.iter().sum::<u64>(), (d as u64).pow(span.degree as u32));
            for j in span.range() {
                prop_assert_eq!(basis.multiplicities()[j], brute_multiplicity(d, &basis.monomial(j)));
            }
        }
    }

    #[test]
    fn prefix_tree_links_each_monomial_to_its_prefix(d in 1usize..10, terms in 2usize..6) {
        let basis = Basis::new(&KernelConfig::new(d, 1, terms).unwrap());
        for j in 1..basis.len() {
            let m = basis.monomial(j);
            let parent = basis.parent(j).unwrap();
            prop_assert_eq!(&basis.monomial(parent)[..], &m[..m.len() - 1]);
            prop_assert_eq!(basis.extra_coord(j), m.last().copied());
        }
    }

    #[test]
    fn power_of_dot_product_is_weighted_feature_product(
        d in 1usize..12,
        terms in 1usize..7,
        seed in any::<u64>(),
    ) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let q: Vec<f64> = (0..d).map(|_| rng.random_range(-1.5..1.5)).collect();
        let k: Vec<f64> = (0..d).map(|_| rng.random_range(-1.5..1.5)).collect();
        let basis = Basis::new(&KernelConfig::new(d, 1, terms).unwrap());
        let (mut fq, mut fk) = (vec![0.0; basis.len()], vec![0.0; basis.len()]);
        basis.features_into(&q, &mut fq);
        basis.features_into(&k, &mut fk);
        // Features against the definition Phi_p(x)_j = prod_{i in M_p[j]} x_i.
        for (j, &f) in fq.iter().enumerate() {
            let direct: f64 = basis.monomial(j).iter().map(|&i| q[i]).product();
            prop_assert!((f - direct).abs() <= 1e-12 * direct.abs().max(1.0));
        }
        let dot: f64 = q.iter().zip(&k).map(|(a, b)| a * b).sum();
        for span in basis.orders() {
            let lhs = dot.powi(span.degree as i32);
            let rhs: f64 = span
                .range()
                .map(|j| basis.multiplicities()[j] as f64 * fq[j] * fk[j])
                .sum();
            // Sum of |terms| bounds the rounding error of the right-hand side.
            let magnitude: f64 = span
                .range()
                .map(|j| (basis.multiplicities()[j] as f64 * fq[j] * fk[j]).abs())
                .sum();
            prop_assert!((lhs - rhs).abs() <= 1e-12 * magnitude.max(1e-300), "p={} lhs={} rhs={}", span.degree, lhs, rhs);
        }
    }
}

#[test]
fn feature_count_of_d64_p5_is_the_design_figure() {
    let basis = Basis::new(&KernelConfig::new(64, 1, 5).unwrap());
    assert_eq!(basis.len(), 814_385);
    assert_eq!(basis.monomial(basis.len() - 1), vec![63; 4]);
}
