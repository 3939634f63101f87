//! Exact float64 gradients of SATA in closed form (no features, no state), and how much f32
//! rounding in feature space can move them: the tolerance of a backward against float64.
//!
//! For `L = sum_t dy_t · y_t` with `y_t = sum_s kappa_ts v_s / D_t`, `x_ts = q_t·k_s / c` and
//! `g_ts = (dy_t·v_s - dy_t·y_t) / D_t`:
//! `dq_t = (1/c) sum_s T_{P-1}(x_ts) g_ts k_s`, `dk_s = (1/c) sum_t T_{P-1}(x_ts) g_ts q_t`,
//! `dv_s = sum_t kappa_ts dy_t / D_t` (the derivative of `T_P` is `T_{P-1}`).

use super::{F32_UNIT, Problem, dot, taylor};

/// The gradients of one problem, `[lanes, tokens, dim]` each, and per gradient a first-order
/// bound (per unit roundoff) on the error that f32 feature-space sums can put in it.
pub struct ExactGradients {
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
    /// `||bound|| / ||gradient||` for dq, dk, dv.
    pub conditions: [f64; 3],
}

impl ExactGradients {
    /// The tolerance of an f32 backward's `name` ("dq", "dk" or "dv") against these: `floor`,
    /// or 8 times the first-order rounding bound where that is larger, as for the forward.
    pub fn f32_tolerance(&self, name: &str, floor: f64) -> f64 {
        let i = ["dq", "dk", "dv"]
            .iter()
            .position(|&n| n == name)
            .expect("dq, dk or dv");
        floor.max(8.0 * F32_UNIT * self.conditions[i])
    }
}

/// Gradients of `L = sum(y * dy)` for `p` (causal: query `t` sees keys `0..=t + n_k - n_q`).
///
/// The bound adds, per pair, what a kernel that sums features in f32 can get wrong: the
/// feature sums themselves carry magnitudes `T(sum_i |q_i k_i| / c)` instead of `T(x)` (as in
/// [`super::feature_condition`]), and the forward's `y_t` and `D_t`, which the backward reads,
/// carry the forward's own rounding, amplified by `1 / D_t` through `g_ts`. Where a
/// denominator is small the gradients are ill-conditioned however they are computed in f32.
pub fn exact_gradients(p: &Problem, dy: &[f64], causal: bool) -> ExactGradients {
    let (dk, dv, c, terms) = (p.d_k, p.d_v, p.scale, p.terms);
    let (nq, nk) = (p.n_q, p.n_k);
    let mut dq = vec![0.0; p.q.len()];
    let mut dkk = vec![0.0; p.k.len()];
    let mut dvv = vec![0.0; p.v.len()];
    let (mut bq, mut bk, mut bv) = (dq.clone(), dkk.clone(), dvv.clone());
    let abs = |x: &[f64]| x.iter().map(|a| a.abs()).collect::<Vec<f64>>();
    for lane in 0..p.lanes() {
        let q = |t: usize| &p.q[(lane * nq + t) * dk..][..dk];
        let k = |s: usize| &p.k[(lane * nk + s) * dk..][..dk];
        let v = |s: usize| &p.v[(lane * nk + s) * dv..][..dv];
        for t in 0..nq {
            let visible = if causal { t + 1 + (nk - nq) } else { nk };
            let qt = q(t);
            let x: Vec<f64> = (0..visible).map(|s| dot(qt, k(s)) / c).collect();
            let mag: Vec<f64> = (0..visible)
                .map(|s| dot(&abs(qt), &abs(k(s))) / c)
                .collect();
            let den: f64 = x.iter().map(|&x| taylor(x, terms)).sum();
            let mut y = vec![0.0; dv];
            for (s, &xs) in x.iter().enumerate() {
                for (y, vs) in y.iter_mut().zip(v(s)) {
                    *y += taylor(xs, terms) * vs / den;
                }
            }
            let dyt = &dy[(lane * nq + t) * dv..][..dv];
            let delta = dot(&y, dyt);
            // The forward's rounding of D_t and y_t (per unit roundoff), as feature sums give it.
            let den_err: f64 = mag.iter().map(|&m| taylor(m, terms)).sum();
            let y_err: Vec<f64> = (0..dv)
                .map(|e| {
                    let num: f64 = (0..visible)
                        .map(|s| taylor(mag[s], terms) * v(s)[e].abs())
                        .sum();
                    (num + y[e].abs() * den_err) / den.abs()
                })
                .collect();
            let dy_abs = abs(dyt);
            for s in 0..visible {
                let vs = v(s);
                let g = (dot(dyt, vs) - delta) / den;
                let g_mag = (dot(&dy_abs, &abs(vs)) + dot(&dy_abs, &abs(&y))) / den.abs();
                let g_err = dot(&dy_abs, &y_err) / den.abs() + g.abs() * den_err / den.abs();
                let a = taylor(x[s], terms - 1) / c;
                let a_err =
                    (taylor(mag[s], terms - 1) * g_mag + taylor(x[s], terms - 1).abs() * g_err) / c;
                let (ks, at_q, at_k) = (k(s), (lane * nq + t) * dk, (lane * nk + s) * dk);
                for i in 0..dk {
                    dq[at_q + i] += a * g * ks[i];
                    dkk[at_k + i] += a * g * qt[i];
                    bq[at_q + i] += a_err * ks[i].abs();
                    bk[at_k + i] += a_err * qt[i].abs();
                }
                let kappa = taylor(x[s], terms);
                let w_err = (taylor(mag[s], terms) + kappa.abs() * den_err / den.abs()) / den.abs();
                for e in 0..dv {
                    dvv[(lane * nk + s) * dv + e] += kappa * dyt[e] / den;
                    bv[(lane * nk + s) * dv + e] += w_err * dyt[e].abs();
                }
            }
        }
    }
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    let conditions = [
        norm(&bq) / norm(&dq).max(1e-300),
        norm(&bk) / norm(&dkk).max(1e-300),
        norm(&bv) / norm(&dvv).max(1e-300),
    ];
    ExactGradients {
        dq,
        dk: dkk,
        dv: dvv,
        conditions,
    }
}
