//! Shared test support: an exact float64 reference computed independently of the library (the
//! quadratic form `sum_p (q·k)^p / (p! c^p)`, no features, no state), softmax attention, random
//! inputs and error norms.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod backends;
#[cfg(feature = "candle")]
pub mod candle;
pub mod gradients;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded generator: `SATA_TEST_SEED` reproduces a run; otherwise a fresh seed, printed so a
/// failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("SATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    eprintln!("{test}: SATA_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// `len` samples of N(0, sigma^2) (Box–Muller).
pub fn normal(rng: &mut StdRng, len: usize, sigma: f64) -> Vec<f64> {
    (0..len)
        .map(|_| {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let t: f64 = rng.random_range(0.0..std::f64::consts::TAU);
            sigma * (-2.0 * u.ln()).sqrt() * t.cos()
        })
        .collect()
}

/// A problem: `[batch, heads, tokens, dim]` inputs in f64, and the config they go with.
#[derive(Debug, Clone)]
pub struct Problem {
    pub batch: usize,
    pub heads: usize,
    pub n_q: usize,
    pub n_k: usize,
    pub d_k: usize,
    pub d_v: usize,
    pub terms: usize,
    pub scale: f64,
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
}

impl Problem {
    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.n_q, self.d_k]
    }
    pub fn k_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.n_k, self.d_k]
    }
    pub fn v_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.n_k, self.d_v]
    }
    pub fn lanes(&self) -> usize {
        self.batch * self.heads
    }
    /// The same problem with its inputs rounded to f32, as an f32 kernel (or a file) sees them.
    /// `q`, `k`, `v` rounded to f32.
    pub fn f32_inputs(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (to_f32(&self.q), to_f32(&self.k), to_f32(&self.v))
    }

    pub fn rounded_to_f32(&self) -> Problem {
        let r = |x: &[f64]| widen(&to_f32(x));
        Problem {
            q: r(&self.q),
            k: r(&self.k),
            v: r(&self.v),
            ..self.clone()
        }
    }

    pub fn config(&self) -> sata::KernelConfig {
        sata::KernelConfig::new(self.d_k, self.d_v, self.terms)
            .unwrap()
            .with_scale(self.scale)
            .unwrap()
    }
}

/// The truncated exponential kernel `sum_{p<P} (q·k / c)^p / p!` of one pair.
pub fn taylor_kernel(q: &[f64], k: &[f64], terms: usize, scale: f64) -> f64 {
    taylor(dot(q, k) / scale, terms)
}

/// `T_n(x) = sum_{p<n} x^p / p!`.
pub fn taylor(x: f64, n: usize) -> f64 {
    let (mut term, mut sum) = (1.0, 0.0);
    for i in 0..n {
        sum += term;
        term *= x / (i + 1) as f64;
    }
    sum
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Per-query numerator and denominator of weighted attention with weights `weight(q, k)`;
/// query `t` sees keys `0..=t + offset` when causal, all keys otherwise.
pub fn weighted_attention(
    p: &Problem,
    causal: bool,
    weight: impl Fn(&[f64], &[f64]) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let (dk, dv) = (p.d_k, p.d_v);
    let mut num = vec![0.0; p.lanes() * p.n_q * dv];
    let mut den = vec![0.0; p.lanes() * p.n_q];
    for lane in 0..p.lanes() {
        for t in 0..p.n_q {
            let qt = &p.q[(lane * p.n_q + t) * dk..][..dk];
            let visible = if causal {
                t + 1 + (p.n_k - p.n_q)
            } else {
                p.n_k
            };
            for s in 0..visible {
                let ks = &p.k[(lane * p.n_k + s) * dk..][..dk];
                let vs = &p.v[(lane * p.n_k + s) * dv..][..dv];
                let w = weight(qt, ks);
                den[lane * p.n_q + t] += w;
                for (o, &x) in num[(lane * p.n_q + t) * dv..][..dv].iter_mut().zip(vs) {
                    *o += w * x;
                }
            }
        }
    }
    (num, den)
}

/// Exact float64 SATA outputs (the quadratic form, no features). For causal problems with
/// `n_k > n_q`, the queries are the last `n_q` tokens of the key sequence.
pub fn reference(p: &Problem, causal: bool) -> Vec<f64> {
    let (num, den) = weighted_attention(p, causal, |q, k| taylor_kernel(q, k, p.terms, p.scale));
    divide(&num, &den, p.d_v)
}

/// Exact softmax attention with the same scale.
pub fn softmax(p: &Problem, causal: bool) -> Vec<f64> {
    // Inputs in these tests keep q·k/c small, so exp needs no max-shift.
    let (num, den) = weighted_attention(p, causal, |q, k| (dot(q, k) / p.scale).exp());
    divide(&num, &den, p.d_v)
}

fn divide(num: &[f64], den: &[f64], dv: usize) -> Vec<f64> {
    num.chunks(dv)
        .zip(den)
        .flat_map(|(n, &d)| n.iter().map(move |x| x / d))
        .collect()
}

/// How much f32 rounding in feature space can move the outputs, per unit roundoff: a
/// first-order bound on `||dy|| / ||y||` for kernels that sum features. Over the order-`p`
/// monomials, `sum_j |w_j Phi_j(q) Phi_j(k)| = (sum_i |q_i k_i| / c)^p / p!`, so the
/// magnitudes the feature sums carry are the Taylor polynomial of `sum_i |q_i k_i| / c`, which
/// can exceed the kernel `T_P(q·k / c)` by far at high `P` (docs/numerics.md).
pub fn feature_condition(p: &Problem, causal: bool) -> f64 {
    let magnitude = |q: &[f64], k: &[f64]| {
        let abs: Vec<f64> = q.iter().map(|x| x.abs()).collect();
        let kabs: Vec<f64> = k.iter().map(|x| x.abs()).collect();
        taylor_kernel(&abs, &kabs, p.terms, p.scale)
    };
    let (num, den) = weighted_attention(p, causal, |q, k| taylor_kernel(q, k, p.terms, p.scale));
    let (_, mag) = weighted_attention(p, causal, magnitude);
    let vabs = Problem {
        v: p.v.iter().map(|x| x.abs()).collect(),
        ..p.clone()
    };
    let (mag_num, _) = weighted_attention(&vabs, causal, magnitude);
    let (mut err2, mut y2) = (0.0, 0.0);
    for t in 0..den.len() {
        for j in 0..p.d_v {
            let y = num[t * p.d_v + j] / den[t];
            let dy = (mag_num[t * p.d_v + j] + y.abs() * mag[t]) / den[t].abs();
            err2 += dy * dy;
            y2 += y * y;
        }
    }
    (err2 / y2).sqrt()
}

/// The unit roundoff of f32.
pub const F32_UNIT: f64 = f32::EPSILON as f64 / 2.0;

/// A tolerance on `||y - y_ref|| / ||y_ref||`: `floor`, or 8 times the first-order rounding
/// bound `unit * kappa` of feature-space sums where that is larger (docs/numerics.md). Over 34
/// seeds x every backend the worst error measured was 2.6 `u kappa` (2026-12-02).
pub fn rounding_tolerance(floor: f64, unit: f64, kappa: f64) -> f64 {
    floor.max(8.0 * unit * kappa)
}

/// The tolerance of f32 outputs of `p` against float64: 1e-5, or more where the inputs'
/// feature-space conditioning says f32 cannot do better (d16 P6 reaches kappa ~200, where a
/// flat 1e-5 is a coin toss).
pub fn f32_tolerance(p: &Problem, causal: bool) -> f64 {
    rounding_tolerance(1e-5, F32_UNIT, feature_condition(p, causal))
}

/// Smallest ratio `den / sum |w|` over queries: how far every denominator is from zero,
/// relative to its own magnitude.
pub fn denominator_margin(p: &Problem, causal: bool) -> f64 {
    let (_, den) = weighted_attention(p, causal, |q, k| taylor_kernel(q, k, p.terms, p.scale));
    let (_, mag) = weighted_attention(p, causal, |q, k| {
        taylor_kernel(q, k, p.terms, p.scale).abs()
    });
    den.iter()
        .zip(&mag)
        .map(|(d, m)| d / m)
        .fold(f64::INFINITY, f64::min)
}

/// A random problem whose reference denominators are well conditioned (margin >= 0.1: at most
/// 10x cancellation among the terms they sum), with `q·k / c` of standard deviation about
/// `spread` so every Taylor order matters. Ill-conditioned and non-positive denominators are
/// tested separately, on purpose; the tolerance of f32 against float64 (1e-5) holds for
/// well-conditioned inputs only, as for any floating-point sum.
#[allow(clippy::too_many_arguments)]
pub fn problem(
    rng: &mut StdRng,
    (batch, heads): (usize, usize),
    (n_q, n_k): (usize, usize),
    (d_k, d_v, terms): (usize, usize, usize),
    spread: f64,
    causal: bool,
) -> Problem {
    let scale = (d_k as f64).sqrt();
    problem_with_scale(
        rng,
        (batch, heads),
        (n_q, n_k),
        (d_k, d_v, terms),
        scale,
        spread,
        causal,
    )
}

/// [`problem`] for a configuration with scale `c = scale` instead of the default `sqrt(d_k)`.
#[allow(clippy::too_many_arguments)]
pub fn problem_with_scale(
    rng: &mut StdRng,
    (batch, heads): (usize, usize),
    (n_q, n_k): (usize, usize),
    (d_k, d_v, terms): (usize, usize, usize),
    scale: f64,
    spread: f64,
    causal: bool,
) -> Problem {
    // q·k has variance d_k sigma^4, so sigma = (spread^2 c^2 / d_k)^(1/4) gives sd(x) = spread.
    let mut sigma = (spread * spread * scale * scale / d_k as f64).powf(0.25);
    loop {
        let lanes = batch * heads;
        let p = Problem {
            batch,
            heads,
            n_q,
            n_k,
            d_k,
            d_v,
            terms,
            scale,
            q: normal(rng, lanes * n_q * d_k, sigma),
            k: normal(rng, lanes * n_k * d_k, sigma),
            // Mean 0.5: outputs are weighted averages of values, and averages of zero-mean
            // values shrink like 1/sqrt(tokens), which amplifies f32 rounding of the state
            // relative to the output. Near-zero outputs are a conditioning limit of any f32
            // sum, noted in docs/numerics.md, not what these tests measure.
            v: normal(rng, lanes * n_k * d_v, 1.0)
                .into_iter()
                .map(|x| x + 0.5)
                .collect(),
        };
        if denominator_margin(&p, causal) >= 0.1 {
            return p;
        }
        sigma *= 0.95;
    }
}

/// Tokens `range` of every lane of a `[lanes, n, dim]` tensor, copied.
pub fn lane_tokens<T: Copy>(
    x: &[T],
    lanes: usize,
    n: usize,
    dim: usize,
    range: &std::ops::Range<usize>,
) -> Vec<T> {
    (0..lanes)
        .flat_map(|l| {
            x[(l * n + range.start) * dim..(l * n + range.end) * dim]
                .iter()
                .copied()
        })
        .collect()
}

/// `||a - b|| / ||b||`.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

pub fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

pub fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Runs `p` in f32 through `attention`, causal (prefill on a fresh state) or non-causal
/// (`attend`), and returns the outputs widened to f64.
pub fn run_f32(attention: &sata::Attention<f32>, p: &Problem, causal: bool) -> Vec<f64> {
    use sata::TensorRef;
    let (q, k, v) = p.f32_inputs();
    let (q, k, v) = (
        TensorRef::query(&q, p.q_shape()).unwrap(),
        TensorRef::key(&k, p.k_shape()).unwrap(),
        TensorRef::value(&v, p.v_shape()).unwrap(),
    );
    let y = if causal {
        let mut state = attention.new_state(p.batch, p.heads).unwrap();
        attention.prefill(&mut state, q, k, v).unwrap()
    } else {
        attention.attend(q, k, v).unwrap()
    };
    widen(&y.output.data)
}

/// Whether the wgpu backend can run here. Without an adapter the GPU tests fail (CI installs
/// Mesa's software Vulkan driver so that they always run) unless `SATA_SKIP_WGPU=1` opts out,
/// which is printed.
pub fn wgpu_available() -> bool {
    match sata::wgpu::adapter() {
        Ok(adapter) => {
            eprintln!("wgpu adapter: {adapter}");
            true
        }
        Err(e) if std::env::var_os("SATA_SKIP_WGPU").is_some() => {
            eprintln!("skipped (SATA_SKIP_WGPU is set): {e}");
            false
        }
        Err(e) => panic!("{e}\n(set SATA_SKIP_WGPU=1 to skip the GPU tests on this machine)"),
    }
}

/// Whether NVRTC can be loaded here. Without it the CUDA compilation tests fail (`.ci/run`
/// installs it from pip and puts it on `LD_LIBRARY_PATH`) unless `SATA_SKIP_NVRTC=1` opts out,
/// which is printed.
pub fn nvrtc_available() -> bool {
    match sata::cuda::nvrtc::nvrtc_version() {
        Ok(version) => {
            eprintln!("NVRTC {version}");
            true
        }
        Err(e) if std::env::var_os("SATA_SKIP_NVRTC").is_some() => {
            eprintln!("skipped (SATA_SKIP_NVRTC is set): {e}");
            false
        }
        Err(e) => panic!("{e}\n(set SATA_SKIP_NVRTC=1 to skip the CUDA compilation tests here)"),
    }
}

/// Token `t` of every lane of `x` (`[lanes, tokens, dim]`), as a one-token tensor's data.
pub fn token(x: &[f32], lanes: usize, tokens: usize, dim: usize, t: usize) -> Vec<f32> {
    (0..lanes)
        .flat_map(|l| x[(l * tokens + t) * dim..(l * tokens + t + 1) * dim].to_vec())
        .collect()
}

/// Decodes the tokens of `p` from `start` on, one step at a time with `step(q, k, v)` (one
/// token of every lane), and returns the outputs in `[lanes, tokens - start, d_v]` order.
pub fn decode_steps(
    p: &Problem,
    start: usize,
    mut step: impl FnMut(
        sata::TensorRef<'_, f32>,
        sata::TensorRef<'_, f32>,
        sata::TensorRef<'_, f32>,
    ) -> Vec<f32>,
) -> Vec<f64> {
    let (q, k, v) = p.f32_inputs();
    let (lanes, n) = (p.lanes(), p.n_k);
    let shape = |dim| [p.batch, p.heads, 1, dim];
    let steps: Vec<Vec<f32>> = (start..n)
        .map(|t| {
            let (qt, kt, vt) = (
                token(&q, lanes, n, p.d_k, t),
                token(&k, lanes, n, p.d_k, t),
                token(&v, lanes, n, p.d_v, t),
            );
            let y = step(
                sata::TensorRef::query(&qt, shape(p.d_k)).unwrap(),
                sata::TensorRef::key(&kt, shape(p.d_k)).unwrap(),
                sata::TensorRef::value(&vt, shape(p.d_v)).unwrap(),
            );
            assert_eq!(y.len(), lanes * p.d_v);
            y
        })
        .collect();
    (0..lanes)
        .flat_map(|l| {
            steps
                .iter()
                .flat_map(move |y| y[l * p.d_v..(l + 1) * p.d_v].to_vec())
        })
        .map(f64::from)
        .collect()
}

/// CRC-32 (IEEE) over everything but the last four bytes, written into them, so a mutation
/// reaches the field checks instead of stopping at the checksum. Bitwise, so the tests do not
/// lean on the implementation they check.
pub fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() < 4 {
        return bytes;
    }
    let body = bytes.len() - 4;
    let mut crc = !0u32;
    for &b in &bytes[..body] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    bytes[body..].copy_from_slice(&(!crc).to_le_bytes());
    bytes
}
