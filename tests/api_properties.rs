//! Random configurations and random (often wrong) shapes through the public API: a valid call
//! returns the reference result, an invalid one a typed error, and nothing panics.

mod common;

use common::{Problem, reference, rel_err};
use proptest::prelude::*;
use sata::{Attention, KernelConfig, SataError, TensorRef};

#[derive(Debug, Clone)]
struct Case {
    d_k: usize,
    d_v: usize,
    terms: usize,
    /// (batch, heads) of the state.
    lanes: (usize, usize),
    /// Shapes handed in for q, k, v: usually right, sometimes off in one place.
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    /// Data lengths: the shape's length, or off by `skew`.
    skew: [isize; 3],
    nan_at: Option<usize>,
    causal: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..6, 1usize..6, 0usize..6),
        (1usize..3, 1usize..3, 1usize..7, 1usize..7),
        prop::collection::vec(0usize..12, 3),
        prop::collection::vec(prop_oneof![6 => Just(0isize), 1 => -2isize..3], 3),
        prop::option::weighted(0.1, 0usize..40),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |((d_k, d_v, terms), (b, h, n_q, n_k), mutate, skew, nan_at, causal, seed)| {
                let mut q = [b, h, if causal { n_k } else { n_q }, d_k];
                let mut k = [b, h, n_k, d_k];
                let mut v = [b, h, n_k, d_v];
                // Each tensor may get one dimension bumped (index 4..12 leaves it alone).
                for (t, &m) in [&mut q, &mut k, &mut v].into_iter().zip(&mutate) {
                    if m < 4 {
                        t[m] += 1;
                    }
                }
                Case {
                    d_k,
                    d_v,
                    terms,
                    lanes: (b, h),
                    q,
                    k,
                    v,
                    skew: [skew[0], skew[1], skew[2]],
                    nan_at,
                    causal,
                    seed,
                }
            },
        )
}

fn data(shape: [usize; 4], skew: isize, seed: u64) -> Vec<f64> {
    let len = (shape.iter().product::<usize>() as isize + skew).max(0) as usize;
    (0..len)
        .map(|i| (((i as u64 + 1).wrapping_mul(seed | 1) % 1000) as f64 / 1000.0 - 0.5) * 0.8)
        .collect()
}

/// Whether the call should succeed, decided independently of the library's checks.
fn valid(c: &Case) -> bool {
    let (b, h) = c.lanes;
    let lens_ok = c.skew.iter().all(|&s| s == 0);
    let q_ok = c.q == [b, h, c.q[2], c.d_k];
    let k_ok = c.k == [b, h, c.k[2], c.d_k];
    let v_ok = c.v == [b, h, c.k[2], c.d_v];
    let tokens_ok = !c.causal || c.q[2] == c.k[2];
    c.terms > 0 && lens_ok && q_ok && k_ok && v_ok && tokens_ok && c.nan_at.is_none()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn correct_result_or_typed_error(c in case()) {
        let config = match KernelConfig::new(c.d_k, c.d_v, c.terms) {
            Ok(config) => config,
            Err(_) => {
                prop_assert_eq!(c.terms, 0);
                return Ok(());
            }
        };
        let attention = Attention::<f64>::new(config).unwrap();
        let mut state = attention.new_state(c.lanes.0, c.lanes.1).unwrap();
        let (mut q, k, v) = (data(c.q, c.skew[0], c.seed), data(c.k, c.skew[1], c.seed ^ 7), data(c.v, c.skew[2], c.seed ^ 9));
        if let Some(i) = c.nan_at {
            if let Some(x) = q.get_mut(i) { *x = f64::NAN } else { q.push(f64::NAN) }
        }
        let result: Result<Vec<f64>, SataError> = (|| {
            let (qt, kt, vt) = (TensorRef::query(&q, c.q)?, TensorRef::key(&k, c.k)?, TensorRef::value(&v, c.v)?);
            if c.causal {
                Ok(attention.prefill(&mut state, qt, kt, vt)?.output.data)
            } else {
                attention.absorb(&mut state, kt, vt)?;
                Ok(attention.query(&state, qt)?.output.data)
            }
        })();
        match result {
            Ok(y) => {
                prop_assert!(valid(&c), "accepted an invalid call: {:?}", c);
                let p = Problem {
                    batch: c.lanes.0, heads: c.lanes.1, n_q: c.q[2], n_k: c.k[2],
                    d_k: c.d_k, d_v: c.d_v, terms: c.terms, scale: config.scale(),
                    q: q.clone(), k: k.clone(), v: v.clone(),
                };
                let want = reference(&p, c.causal);
                // Inputs here are small, so every denominator is comfortably positive.
                prop_assert!(rel_err(&y, &want) < 1e-10);
            }
            Err(e) => prop_assert!(!valid(&c), "rejected a valid call {:?}: {}", c, e),
        }
    }
}
