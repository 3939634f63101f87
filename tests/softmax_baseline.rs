//! The crossover bench's softmax baseline (`benches/common/online_softmax.rs`) computes softmax
//! attention: against a float64 max-shifted softmax on random caches, on the path this CPU
//! runs (AVX2 where it has it) and on the portable path, with scores large enough that the
//! running maximum moves between blocks; heads in parallel give the same bits as heads in
//! turn.

#[path = "../benches/common/online_softmax.rs"]
mod online_softmax;

mod common;

use online_softmax::KvCache;

/// Float64 softmax attention of one query over `[len, d]` keys and values.
fn exact(q: &[f32], keys: &[f32], values: &[f32], d: usize) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let scores: Vec<f64> = keys
        .chunks_exact(d)
        .map(|k| {
            q.iter()
                .zip(k)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let mut out = vec![0.0; d];
    for (w, v) in weights.iter().zip(values.chunks_exact(d)) {
        for (o, &x) in out.iter_mut().zip(v) {
            *o += w * x as f64 / sum;
        }
    }
    out
}

fn to_f32(x: Vec<f64>) -> Vec<f32> {
    x.into_iter().map(|x| x as f32).collect()
}

/// Largest error over the largest |value|, per head.
fn relative_error(got: &[f32], want: &[f64], values: &[f32]) -> f64 {
    let vmax = values.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / vmax)
        .fold(0.0, f64::max)
}

#[test]
fn online_softmax_matches_float64() {
    let mut rng = common::rng("online_softmax_matches_float64");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for d in [8, 16, 32, 12] {
        for len in [1, 7, 8, 129, 1000] {
            let heads = 3;
            // sigma 1.5: scores of a few units, so each head's weights are far from uniform.
            let q = to_f32(common::normal(&mut rng, heads * d, 1.5));
            let mut keys = to_f32(common::normal(&mut rng, heads * len * d, 1.5));
            // Keys that grow along the sequence make the running maximum move block by block.
            for (t, k) in keys.chunks_mut(d).enumerate() {
                let grow = 1.0 + (t % len) as f32 / len as f32;
                k.iter_mut().for_each(|x| *x *= grow);
            }
            let values = to_f32(common::normal(&mut rng, heads * len * d, 1.0));
            let cache = KvCache::new(heads, len, d, keys.clone(), values.clone());
            let mut serial = vec![0.0f32; heads * d];
            let mut parallel = vec![0.0f32; heads * d];
            cache.decode(&q, &mut serial, None);
            cache.decode(&q, &mut parallel, Some(&pool));
            assert_eq!(
                serial, parallel,
                "d {d}, {len} tokens: threads changed bits"
            );
            let span = len * d;
            for h in 0..heads {
                let (k, v) = (
                    &keys[h * span..(h + 1) * span],
                    &values[h * span..(h + 1) * span],
                );
                let qh = &q[h * d..(h + 1) * d];
                let want = exact(qh, k, v, d);
                let mut portable = vec![0.0f32; d];
                let scale = 1.0 / (d as f32).sqrt();
                online_softmax::portable(qh, k, v, d, scale, &mut portable);
                for (path, got) in [
                    (cache.path(), &serial[h * d..(h + 1) * d]),
                    ("portable", &portable[..]),
                ] {
                    let err = relative_error(got, &want, v);
                    assert!(
                        err < 1e-5,
                        "{path}, d {d}, {len} tokens, head {h}: error {err:e}"
                    );
                }
            }
        }
    }
}
