//! The pairs inside a forward chunk (`super::chunked_forward`): the weights
//! `A^T[s][t] = T_P(q_t·k_s / c)` for `s <= t`, zero otherwise, laid out like a chunk's
//! features (row `s` holds key `s`'s weight for every query of the chunk). A query's
//! chunk-internal sums `sum_s A^T[s][t] [v_s, 1]` are then the state read of
//! `super::chunk_products` with the keys in place of features and the values in place of the
//! state.
//!
//! The weights are plain loops over whole rows, compiled once portably and once with AVX2 (as
//! `super::chunk_features` does), so every step is an elementwise operation across the chunk's
//! queries.

use super::chunk_features::CHUNK;
use super::chunk_features::Lanes;
use super::simd::Isa;

/// Ones for the denominator column of the chunk-internal read.
pub static ONES: [f32; CHUNK] = [1.0; CHUNK];

/// `1 / p!` for `p < terms` (the backward's chunk-internal polynomials use them too).
pub(super) fn coefficients(terms: usize) -> [f32; sata_codegen::MAX_TERMS] {
    let mut coefficients = [0.0f32; sata_codegen::MAX_TERMS];
    let mut factorial = 1.0f32;
    for (p, c) in coefficients.iter_mut().enumerate().take(terms) {
        factorial *= p.max(1) as f32;
        *c = 1.0 / factorial;
    }
    coefficients
}

/// `at[s][t] = T_P(sum_i xk[i][s] xq[i][t])` for `t >= s`, zero for `t < s`, for the chunk's
/// `n` keys: `xq` holds the queries' coordinates already divided by `c`, `xk` the keys'
/// (both `d_k` rows, as `super::chunk_features::coordinates` writes them), `at` at least `n`
/// rows. Queries past the chunk's end get weights too (of zero coordinates); nothing reads
/// them.
#[inline(always)]
fn weights_body(xq: &[Lanes], xk: &[Lanes], terms: usize, n: usize, at: &mut [Lanes]) {
    let c = coefficients(terms);
    let top = terms - 1;
    for (s, row) in at.iter_mut().take(n).enumerate() {
        let mut x = [0.0f32; CHUNK];
        for (q, k) in xq.iter().zip(xk) {
            let ks = k[s];
            for (x, &q) in x.iter_mut().zip(q) {
                *x += ks * q;
            }
        }
        let mut p = [c[top]; CHUNK];
        for &c in c[..top].iter().rev() {
            for (p, &x) in p.iter_mut().zip(&x) {
                *p = *p * x + c;
            }
        }
        for (t, (w, &p)) in row.iter_mut().zip(&p).enumerate() {
            *w = if t >= s { p } else { 0.0 };
        }
    }
}

mod compiled {
    use super::*;

    compiled_twice! {
        fn weights_portable, weights_avx2(
            xq: &[Lanes],
            xk: &[Lanes],
            terms: usize,
            n: usize,
            at: &mut [Lanes],
        ) => weights_body;
    }
}

/// [`weights_body`] on `isa`.
pub fn weights(isa: Isa, (xq, xk): (&[Lanes], &[Lanes]), terms: usize, n: usize, at: &mut [Lanes]) {
    assert!(
        (1..=sata_codegen::MAX_TERMS).contains(&terms) && n <= at.len() && n <= CHUNK,
        "chunk-internal weights of mismatched sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected just above; the body indexes slices only.
        unsafe { compiled::weights_avx2(xq, xk, terms, n, at) };
        return;
    }
    let _ = isa;
    compiled::weights_portable(xq, xk, terms, n, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_the_masked_taylor_polynomial() {
        let (dk, n) = (5, 37);
        let coord = |i: usize, t: usize, salt: usize| {
            (((i * 31 + t * 7 + salt * 13) % 29) as f32 / 14.0 - 1.0) * 0.8
        };
        let xq: Vec<Lanes> = (0..dk)
            .map(|i| std::array::from_fn(|t| coord(i, t, 1)))
            .collect();
        let xk: Vec<Lanes> = (0..dk)
            .map(|i| std::array::from_fn(|t| coord(i, t, 2)))
            .collect();
        for terms in 1..=sata_codegen::MAX_TERMS {
            for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
                let mut at = vec![[f32::NAN; CHUNK]; n];
                weights(isa, (&xq, &xk), terms, n, &mut at);
                for s in 0..n {
                    for t in 0..CHUNK {
                        let x: f64 = (0..dk)
                            .map(|i| f64::from(xq[i][t]) * f64::from(xk[i][s]))
                            .sum();
                        let (mut term, mut want) = (1.0, 0.0);
                        for p in 0..terms {
                            want += term;
                            term *= x / (p + 1) as f64;
                        }
                        if t < s {
                            want = 0.0;
                        }
                        let got = f64::from(at[s][t]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{isa} P{terms} ({s}, {t}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
