//! The backward's two passes in chunked form, for the specialized kernels
//! (`docs/design.md`, "Gradients"): per chunk of [`CHUNK`] tokens the state-side work is a few
//! matrix products over the chunk (the state is read once per chunk, not once per token), and
//! the pairs inside the chunk are the polynomial of `q·k` directly, with no features:
//!
//! - pass A, chunks in order: `R = dO' S^T` gives every query's feature gradient from the
//!   state before the chunk, then `dq_t = J_{WPhi}(q_t)^T R_t` (the adjoint of the weighted
//!   query map), plus `dQ += A' K` inside the chunk; then `S += Phi(K)^T [V, 1]`;
//! - pass B, chunks last to first, with `H` the state's gradient after the chunk:
//!   `dV = Phi(K) H[:, :d_v]`, `R' = [V, 1] H^T`, `dk_s = J_Phi(k_s)^T R'_s`, plus
//!   `dK += A'^T Q` and `dV += A^T dO'[:, :d_v]` inside the chunk; then
//!   `H += (W ∘ Phi(Q))^T dO'`;
//!
//! where, inside a chunk, `X = Q K^T / c`, `A = T_P(X) ∘ mask`, `A' = T_{P-1}(X) ∘ (dO' [V, 1]^T)
//! ∘ mask / c` and the mask keeps `s <= t`. Non-causal passes add every token of the other
//! side first and have no chunk-internal part. Products go through
//! [`super::gemm`] (strided views, so no transposed copies).

use super::gemm::{View, gemm};

use super::chunk_pairs;

use super::chunk_features::CHUNK;

/// The chunk-internal weights of `n` tokens: into `kappa` (`n x n`, `A`) and `weighted`
/// (`n x n`, `A'`), from the chunk's queries and keys (`n x d_k`), cotangents (`n x row`) and
/// augmented values (`n x row`), through `scratch` (`n x n`).
pub struct Intra {
    pub d_k: usize,
    pub row: usize,
    pub terms: usize,
    pub inv_scale: f32,
}

impl Intra {
    /// `Q K^T` of the chunk's `n` queries and keys (`n x d_k` each) into `out` (`n x n`).
    fn scores(&self, n: usize, (q, k): (&[f32], &[f32]), out: &mut [f32]) {
        let dk = self.d_k;
        gemm(
            (n, dk, n),
            View::rows(q, dk),
            View::transposed(k, dk),
            0.0,
            out,
            n,
        );
    }

    pub fn weights(
        &self,
        n: usize,
        (q, k): (&[f32], &[f32]),
        (dout, values): (&[f32], &[f32]),
        kappa: &mut [f32],
        weighted: &mut [f32],
    ) {
        let row = self.row;
        self.scores(n, (q, k), kappa);
        gemm(
            (n, row, n),
            View::rows(dout, row),
            View::transposed(values, row),
            0.0,
            weighted,
            n,
        );
        let coefficients = chunk_pairs::coefficients(self.terms);
        let top = self.terms - 1;
        // One row (query t) at a time, Horner's steps across the row, both polynomials at
        // once: `tp = T_P(x)` and `tm = T_{P-1}(x)`.
        let (mut x, mut tp, mut tm) = ([0.0f32; CHUNK], [0.0f32; CHUNK], [0.0f32; CHUNK]);
        for t in 0..n {
            let (kr, wr) = (
                &mut kappa[t * n..(t + 1) * n],
                &mut weighted[t * n..(t + 1) * n],
            );
            for (x, k) in x.iter_mut().zip(kr.iter()) {
                *x = k * self.inv_scale;
            }
            tp.fill(coefficients[top]);
            tm.fill(0.0);
            for &c in coefficients[..top].iter().rev() {
                for ((tp, tm), x) in tp.iter_mut().zip(tm.iter_mut()).zip(&x) {
                    *tp = *tp * x + c;
                    *tm = *tm * x + c;
                }
            }
            // Keys after the query are masked out.
            for (s, (k, w)) in kr.iter_mut().zip(wr.iter_mut()).enumerate() {
                let keep = if s <= t { 1.0 } else { 0.0 };
                *k = tp[s] * keep;
                *w *= tm[s] * self.inv_scale * keep;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_strided_views() {
        // A 2 x 3, B 3 x 2 given as the transpose of a row-major 2 x 3.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut c = [1.0; 4];
        gemm(
            (2, 3, 2),
            View::rows(&a, 3),
            View::transposed(&bt, 3),
            1.0,
            &mut c,
            2,
        );
        // Row 0: [1 2 3]·[1 0 -1] = -2, [1 2 3]·[2 1 0.5] = 5.5; plus the old ones.
        assert_eq!(c, [-1.0, 6.5, -1.0, 17.0]);
    }

    /// `T_n(x) = sum_{p < n} x^p / p!`, in f64.
    fn taylor(x: f64, n: usize) -> f64 {
        let (mut term, mut sum) = (1.0, 0.0);
        for p in 0..n {
            sum += term;
            term *= x / (p + 1) as f64;
        }
        sum
    }

    #[test]
    fn chunk_weights_against_f64_loops() {
        let (n, dk, row) = (5, 3, 3);
        let value = |i: usize| ((i * 37 + 11) % 17) as f32 / 8.0 - 1.0;
        let q: Vec<f32> = (0..n * dk).map(value).collect();
        let k: Vec<f32> = (0..n * dk).map(|i| value(i + 5)).collect();
        let dout: Vec<f32> = (0..n * row).map(|i| value(i + 9)).collect();
        let vals: Vec<f32> = (0..n * row).map(|i| value(i + 2)).collect();
        for terms in 1..=5 {
            let intra = Intra {
                d_k: dk,
                row,
                terms,
                inv_scale: 0.6,
            };
            let (mut kappa, mut weighted) = (vec![0.0; n * n], vec![0.0; n * n]);
            intra.weights(n, (&q, &k), (&dout, &vals), &mut kappa, &mut weighted);
            let dot =
                |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>();
            for t in 0..n {
                for s in 0..n {
                    let x = dot(&q[t * dk..(t + 1) * dk], &k[s * dk..(s + 1) * dk]) * 0.6;
                    let g = dot(&dout[t * row..(t + 1) * row], &vals[s * row..(s + 1) * row]);
                    let (a, w) = match s <= t {
                        true => (taylor(x, terms), taylor(x, terms - 1) * g * 0.6),
                        false => (0.0, 0.0),
                    };
                    let at = t * n + s;
                    assert!(
                        (f64::from(kappa[at]) - a).abs() < 1e-5,
                        "P{terms} ({t}, {s})"
                    );
                    assert!(
                        (f64::from(weighted[at]) - w).abs() < 1e-5,
                        "P{terms} ({t}, {s})"
                    );
                }
            }
        }
    }
}
