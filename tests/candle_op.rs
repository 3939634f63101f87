//! The candle op (`sata::candle::TaylorAttention`) against an exact float64 reference built
//! from candle ops in the test (the quadratic form): outputs, and gradients through candle's
//! autograd (the op's generated backward against autograd of the reference), on fresh random
//! inputs; registry kernels in f32, the generic path in f64, bf16 and f16 inputs, strided
//! tensors, and bad tensors refused with errors.
#![cfg(feature = "candle")]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::candle::{denominator_margin, quadratic_form, randn, rel_err, values};
use common::rng;
use rand::RngExt;
use sata::KernelConfig;
use sata::candle::TaylorAttention;

/// `(y, dq, dk, dv)` of `L = sum(y * r)` for `attend(q, k, v)` on variables made from the
/// inputs in `dtype`. Autograd of the reference has no gradient for inputs the function does
/// not depend on (q and k at P = 1): zeros, unless `required`.
fn forward_and_grads(
    required: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    r: &Tensor,
    dtype: DType,
    attend: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
) -> [Tensor; 4] {
    let var = |t: &Tensor| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap();
    let (q, k, v) = (var(q), var(k), var(v));
    let y = attend(q.as_tensor(), k.as_tensor(), v.as_tensor());
    let loss = (y.to_dtype(DType::F64).unwrap() * r)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let grad = |x: &Var| match grads.get(x.as_tensor()) {
        Some(g) => g.clone(),
        None if !required => x.zeros_like().unwrap(),
        None => panic!("no gradient from the op"),
    };
    [y.clone(), grad(&q), grad(&k), grad(&v)]
}

/// Random `[batch, heads, tokens, dim]` inputs whose logits `q·k / c` have standard deviation
/// about `spread`, and an upstream gradient `r`; redrawn until every denominator is well
/// conditioned (margin >= 0.1, as the shared `common::problem`).
fn inputs(
    rng: &mut rand::rngs::StdRng,
    config: &KernelConfig,
    (batch, heads, n_q, n_k): (usize, usize, usize, usize),
    spread: f64,
    causal: bool,
) -> [Tensor; 4] {
    let sigma = (spread * config.scale() / (config.d_k() as f64).sqrt()).sqrt();
    let (dk, dv) = (config.d_k(), config.d_v());
    loop {
        let q = randn(rng, [batch, heads, n_q, dk], sigma);
        let k = randn(rng, [batch, heads, n_k, dk], sigma);
        if denominator_margin(&q, &k, config.terms(), config.scale(), causal) >= 0.1 {
            let v = randn(rng, [batch, heads, n_k, dv], 1.0);
            return [q, k, v, randn(rng, [batch, heads, n_q, dv], 1.0)];
        }
    }
}

/// Checks the op against the reference: outputs within `tol_y`, gradients within `tol_grad`.
fn compare(what: &str, op: &TaylorAttention, x: &[Tensor; 4], dtype: DType, tols: (f64, f64)) {
    compare_on(&Device::Cpu, what, op, x, dtype, tols);
}

/// [`compare`] with the op computing on `device` (the inputs moved there, its outputs and,
/// through autograd, its gradients moved back).
fn compare_on(
    device: &Device,
    what: &str,
    op: &TaylorAttention,
    [q, k, v, r]: &[Tensor; 4],
    dtype: DType,
    (tol_y, tol_grad): (f64, f64),
) {
    let config = op.config();
    let causal = op.mode() == sata::Mode::Causal;
    let got = forward_and_grads(true, q, k, v, r, dtype, |q, k, v| {
        let on = |t: &Tensor| t.to_device(device).unwrap();
        let y = op.forward(&on(q), &on(k), &on(v)).unwrap();
        y.to_device(&Device::Cpu).unwrap()
    });
    // The reference sees exactly the numbers the op sees.
    let rounded = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F64).unwrap();
    let (q, k, v) = (rounded(q), rounded(k), rounded(v));
    let want = forward_and_grads(false, &q, &k, &v, r, DType::F64, |q, k, v| {
        quadratic_form(q, k, v, config.terms(), config.scale(), causal)
    });
    assert_eq!(got[0].dtype(), dtype, "{what}: output dtype");
    for (i, name) in ["y", "dq", "dk", "dv"].iter().enumerate() {
        assert_eq!(got[i].dims(), want[i].dims(), "{what}: {name} shape");
        // A gradient that is exactly zero (q and k at P = 1) is compared in absolute terms.
        let exact_zero = values(&want[i]).iter().all(|&x| x == 0.0);
        let err = if exact_zero {
            values(&got[i]).iter().fold(0.0, |m, x| x.abs().max(m))
        } else {
            rel_err(&got[i], &want[i])
        };
        let tol = if i == 0 { tol_y } else { tol_grad };
        assert!(
            err <= tol,
            "{what} {config} {dtype:?} {:?} {:?}: {name} relative error {err:e} > {tol:e}",
            op.mode(),
            q.dims()
        );
    }
}

/// f64 on random shapes and configurations, causal and non-causal: the op's backward is the
/// exact gradient of the quadratic form.
#[test]
fn f64_matches_the_quadratic_form_and_its_autograd() {
    let mut rng = rng("candle_f64");
    for (dk, dv, terms) in [
        (1, 1, 1),
        (3, 2, 2),
        (8, 8, 3),
        (16, 16, 4),
        (4, 6, 5),
        (2, 3, 6),
    ] {
        let config = KernelConfig::new(dk, dv, terms).unwrap();
        for causal in [true, false] {
            let (batch, heads) = (rng.random_range(1..3), rng.random_range(1..4));
            // One key makes y = v whatever q and k are: gradients of pure rounding noise on
            // both sides, which no relative error can compare.
            let n_k = rng.random_range(2..40);
            let n_q = if causal { n_k } else { rng.random_range(1..40) };
            let op = TaylorAttention::new(config).unwrap();
            let op = if causal { op } else { op.non_causal() };
            assert!(op.describe_path(DType::F64).unwrap().contains("generic"));
            let x = inputs(&mut rng, &config, (batch, heads, n_q, n_k), 0.7, causal);
            compare("f64", &op, &x, DType::F64, (1e-11, 1e-10));
        }
    }
}

/// f32 on registry kernels at 20 and 100 tokens, against float64.
#[test]
fn f32_runs_the_registry_kernels_against_float64() {
    let mut rng = rng("candle_f32");
    for (dk, dv, terms) in [(4, 4, 2), (8, 8, 3), (16, 16, 4)] {
        let config = KernelConfig::new(dk, dv, terms).unwrap();
        let op = TaylorAttention::new(config).unwrap();
        let path = op.describe_path(DType::F32).unwrap();
        assert!(path.contains("kernel"), "{config}: path {path}");
        for tokens in [20, 100] {
            let x = inputs(&mut rng, &config, (2, 2, tokens, tokens), 0.5, true);
            compare("f32", &op, &x, DType::F32, (1e-5, 1e-4));
        }
    }
}

/// CUDA tensors (feature `candle-cuda`, on a machine with a GPU): the forward and the backward
/// run the generated CUDA kernels, against float64 as on the CPU; f64 is refused there.
#[cfg(feature = "candle-cuda")]
#[test]
fn cuda_tensors_run_the_generated_cuda_kernels() {
    let cuda = match Device::new_cuda(0) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("skipped: no CUDA device: {e}");
            return;
        }
    };
    let mut rng = rng("candle_cuda");
    for (dk, dv, terms) in [(4, 4, 2), (8, 8, 3), (16, 16, 4), (4, 6, 3)] {
        let config = KernelConfig::new(dk, dv, terms).unwrap();
        for causal in [true, false] {
            let op = TaylorAttention::new(config).unwrap();
            let op = if causal { op } else { op.non_causal() };
            let n_k = rng.random_range(2..60);
            let n_q = if causal { n_k } else { rng.random_range(1..60) };
            let x = inputs(&mut rng, &config, (2, 2, n_q, n_k), 0.5, causal);
            compare_on(&cuda, "cuda", &op, &x, DType::F32, (1e-5, 1e-4));
        }
    }
    let op = TaylorAttention::new(KernelConfig::new(4, 4, 2).unwrap()).unwrap();
    let t = Tensor::ones(&[1, 1, 3, 4], DType::F64, &cuda).unwrap();
    let err = op.forward(&t, &t, &t).unwrap_err().to_string();
    assert!(err.contains("f64 on the CPU only"), "{err}");
}

/// bf16 and f16 tensors: computed in f32, outputs and gradients back in the input dtype, within
/// the dtype's rounding of the float64 reference on the rounded inputs.
#[test]
fn half_precision_tensors_compute_in_f32() {
    let mut rng = rng("candle_half");
    let config = KernelConfig::new(16, 16, 4).unwrap();
    let op = TaylorAttention::new(config).unwrap();
    for (dtype, unit) in [(DType::BF16, 2f64.powi(-8)), (DType::F16, 2f64.powi(-11))] {
        assert!(op.describe_path(dtype).unwrap().contains("computed in f32"));
        let x = inputs(&mut rng, &config, (1, 3, 30, 30), 0.5, true);
        // Outputs and gradients are rounded once to the dtype: a relative error of at most
        // one unit (the gradients' own sums are f32).
        compare("half", &op, &x, dtype, (unit, 2.0 * unit));
    }
}

/// Strided inputs (a transposed view) give what their contiguous copies give.
#[test]
fn strided_inputs_are_read_through_their_layout() {
    let mut rng = rng("candle_strided");
    let config = KernelConfig::new(8, 8, 3).unwrap();
    let op = TaylorAttention::new(config).unwrap();
    let [q, k, v, _] = inputs(&mut rng, &config, (2, 3, 12, 12), 0.5, true);
    let (q, k, v) = (
        q.to_dtype(DType::F32).unwrap(),
        k.to_dtype(DType::F32).unwrap(),
        v.to_dtype(DType::F32).unwrap(),
    );
    // Stored [batch, tokens, heads, dim], viewed [batch, heads, tokens, dim].
    let strided = |t: &Tensor| {
        t.transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(1, 2)
            .unwrap()
    };
    let (qs, ks, vs) = (strided(&q), strided(&k), strided(&v));
    assert!(!qs.is_contiguous());
    let a = op.forward(&q, &k, &v).unwrap();
    let b = op.forward(&qs, &ks, &vs).unwrap();
    assert_eq!(rel_err(&a, &b), 0.0);
}

/// Bad tensors come back as candle errors carrying a message, never a panic.
#[test]
fn bad_tensors_are_errors() {
    let config = KernelConfig::new(4, 4, 3).unwrap();
    let op = TaylorAttention::new(config).unwrap();
    let dev = Device::Cpu;
    let t = |shape: &[usize], dtype: DType| Tensor::ones(shape, dtype, &dev).unwrap();
    let good = t(&[1, 2, 5, 4], DType::F32);
    // (what is wrong, what the message must say, q, k, v)
    let cases: Vec<(&str, &str, Tensor, Tensor, Tensor)> = vec![
        (
            "rank",
            "[batch, heads, tokens, dim]",
            t(&[2, 5, 4], DType::F32),
            good.clone(),
            good.clone(),
        ),
        (
            "mixed dtypes",
            "one dtype",
            good.clone(),
            t(&[1, 2, 5, 4], DType::F64),
            good.clone(),
        ),
        (
            "integers",
            "not U32",
            t(&[1, 2, 5, 4], DType::U32),
            t(&[1, 2, 5, 4], DType::U32),
            t(&[1, 2, 5, 4], DType::U32),
        ),
        (
            "d_k",
            "(d_k)",
            t(&[1, 2, 5, 3], DType::F32),
            t(&[1, 2, 5, 3], DType::F32),
            good.clone(),
        ),
        (
            "causal lengths",
            "one query per key",
            good.clone(),
            t(&[1, 2, 6, 4], DType::F32),
            t(&[1, 2, 6, 4], DType::F32),
        ),
        (
            "NaN",
            "non-finite",
            (good.clone() * f64::NAN).unwrap(),
            good.clone(),
            good.clone(),
        ),
    ];
    for (what, message, q, k, v) in cases {
        let err = op.forward(&q, &k, &v).expect_err(what).to_string();
        assert!(err.contains(message), "{what}: {err}");
    }
}
