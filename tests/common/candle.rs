//! Candle helpers for the candle tests: tensors from the shared generator, an exact float64
//! reference built from candle ops (the quadratic form, no features, no state), and norms.

use candle_core::{D, DType, Device, Tensor};
use rand::rngs::StdRng;

use super::normal;

/// A `shape` tensor of N(0, sigma^2) samples in f64.
pub fn randn(rng: &mut StdRng, shape: [usize; 4], sigma: f64) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(normal(rng, len, sigma), &shape, &Device::Cpu).unwrap()
}

/// Exact SATA outputs in f64 by candle ops: weights `T_P(q·k / c)` over visible pairs, then
/// `W v / sum W`. Differentiable, so candle's autograd gives the exact gradients of the same
/// function to compare the op's backward with.
pub fn quadratic_form(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    terms: usize,
    scale: f64,
    causal: bool,
) -> Tensor {
    let weights = taylor_weights(q, k, terms, scale, causal);
    let v = v.to_dtype(DType::F64).unwrap();
    let den = weights.sum_keepdim(D::Minus1).unwrap();
    weights.matmul(&v).unwrap().broadcast_div(&den).unwrap()
}

/// Smallest `den / sum |w|` over queries (as `common::denominator_margin`): inputs whose
/// denominators cancel badly, or go non-positive at even `P`, are tested elsewhere.
pub fn denominator_margin(q: &Tensor, k: &Tensor, terms: usize, scale: f64, causal: bool) -> f64 {
    let w = taylor_weights(q, k, terms, scale, causal);
    let den = values(&w.sum_keepdim(D::Minus1).unwrap());
    let mag = values(&w.abs().unwrap().sum_keepdim(D::Minus1).unwrap());
    den.iter()
        .zip(&mag)
        .map(|(d, m)| d / m)
        .fold(f64::INFINITY, f64::min)
}

/// The weights `T_P(q·k / c)` of every visible pair, `[batch, heads, n_q, n_k]`, in f64.
fn taylor_weights(q: &Tensor, k: &Tensor, terms: usize, scale: f64, causal: bool) -> Tensor {
    let (q, k) = (
        q.to_dtype(DType::F64).unwrap(),
        k.to_dtype(DType::F64).unwrap(),
    );
    let x = (q.matmul(&k.t().unwrap()).unwrap() / scale).unwrap();
    let mut term = x.ones_like().unwrap();
    let mut weights = term.clone();
    for p in 1..terms {
        term = ((term * &x).unwrap() / p as f64).unwrap();
        weights = (weights + &term).unwrap();
    }
    if causal {
        let (n_q, n_k) = (x.dim(2).unwrap(), x.dim(3).unwrap());
        let mask: Vec<f64> = (0..n_q)
            .flat_map(|t| (0..n_k).map(move |s| f64::from(u8::from(s + n_q <= t + n_k))))
            .collect();
        let mask = Tensor::from_vec(mask, (n_q, n_k), &Device::Cpu).unwrap();
        weights = weights.broadcast_mul(&mask).unwrap();
    }
    weights
}

/// All elements of a tensor, widened to f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `||a - b|| / ||b||`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    super::rel_err(&values(a), &values(b))
}
