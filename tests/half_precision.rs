//! f16 and bf16 inputs and outputs on f32 states: against the float64 reference on the
//! half-precision inputs (error at most one rounding to the half type plus the f32 tolerance),
//! bit-identical to rounding the f32 call's outputs once, on the specialized and the generic
//! CPU paths, causal (prefill, then decode) and non-causal; and the typed errors.

mod common;

use common::{Problem, problem, reference};
use sata::{
    Attention, BackendKind, BackendRequest, HalfFloat, KernelConfig, SataError, TensorRef, bf16,
    f16,
};

/// Half the distance between adjacent values of `H` relative to the value (2^-11 for f16,
/// 2^-8 for bf16): the error of one rounding to nearest.
fn unit<H: HalfFloat>() -> f64 {
    match H::NAME {
        "float16" => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    }
}

fn to_half<H: HalfFloat>(x: &[f64]) -> Vec<H> {
    x.iter().map(|&v| H::from_f32(v as f32)).collect()
}

fn from_half<H: HalfFloat>(x: &[H]) -> Vec<f64> {
    x.iter().map(|v| v.to_f32() as f64).collect()
}

/// `p` with its inputs rounded to `H`, as a model holding half-precision activations has them.
fn rounded<H: HalfFloat>(p: &Problem) -> Problem {
    Problem {
        q: from_half(&to_half::<H>(&p.q)),
        k: from_half(&to_half::<H>(&p.k)),
        v: from_half(&to_half::<H>(&p.v)),
        ..p.clone()
    }
}

/// Every output within one rounding to `H` of the exact value plus the f32 tolerance.
fn check_close<H: HalfFloat>(what: &str, got: &[H], exact: &[f64], f32_tolerance: f64) {
    let scale = exact.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (g, e)) in from_half(got).iter().zip(exact).enumerate() {
        let allowed = unit::<H>() * e.abs() * (1.0 + 1e-3) + f32_tolerance * scale;
        assert!(
            (g - e).abs() <= allowed,
            "{what} ({}): output {i} is {g}, exact {e}, allowed error {allowed:e}",
            H::NAME
        );
    }
}

fn attention(config: KernelConfig, kind: BackendKind) -> Attention<f32> {
    Attention::with_backend(config, BackendRequest::Kind(kind)).unwrap()
}

fn causal_case<H: HalfFloat>(kind: BackendKind, (d_k, d_v, terms): (usize, usize, usize)) {
    let mut rng = common::rng("causal_case");
    let (n, steps) = (24, 4);
    let p = rounded::<H>(&problem(
        &mut rng,
        (2, 3),
        (n, n),
        (d_k, d_v, terms),
        0.7,
        true,
    ));
    let exact = reference(&p, true);
    let tolerance = common::f32_tolerance(&p, true);
    let a = attention(p.config(), kind);
    assert_eq!(
        a.kernel().is_some(),
        kind == BackendKind::Cpu,
        "{}",
        a.describe_path()
    );
    let (q, k, v) = (to_half::<H>(&p.q), to_half::<H>(&p.k), to_half::<H>(&p.v));
    let lanes = p.lanes();
    // Prefill the first n - steps tokens, then decode the rest one at a time.
    let first = n - steps;
    let block = |x: &[H], dim: usize, from: usize, to: usize| -> Vec<H> {
        (0..lanes)
            .flat_map(|l| x[(l * n + from) * dim..(l * n + to) * dim].to_vec())
            .collect()
    };
    let mut state = a.new_state(2, 3).unwrap();
    let mut f32_state = a.new_state(2, 3).unwrap();
    let mut got = vec![vec![]; lanes];
    let mut scratch = Vec::new();
    for (from, to) in std::iter::once((0, first)).chain((first..n).map(|t| (t, t + 1))) {
        let (qb, kb, vb) = (
            block(&q, d_k, from, to),
            block(&k, d_k, from, to),
            block(&v, d_v, from, to),
        );
        let shape = |d| [2, 3, to - from, d];
        let (tq, tk, tv) = (
            TensorRef::query(&qb, shape(d_k)).unwrap(),
            TensorRef::key(&kb, shape(d_k)).unwrap(),
            TensorRef::value(&vb, shape(d_v)).unwrap(),
        );
        let y = if to - from == 1 {
            let mut out = vec![H::default(); lanes * d_v];
            a.decode_half_into(&mut state, (tq, tk, tv), &mut out, &mut scratch)
                .unwrap();
            out
        } else {
            a.prefill_half(&mut state, tq, tk, tv).unwrap().output.data
        };
        // The same call in f32 on the widened inputs, rounded once, gives the same bits.
        let w = |x: &[H]| -> Vec<f32> { x.iter().map(|h| h.to_f32()).collect() };
        let (wq, wk, wv) = (w(&qb), w(&kb), w(&vb));
        let y32 = a
            .prefill(
                &mut f32_state,
                TensorRef::query(&wq, shape(d_k)).unwrap(),
                TensorRef::key(&wk, shape(d_k)).unwrap(),
                TensorRef::value(&wv, shape(d_v)).unwrap(),
            )
            .unwrap();
        let rounded: Vec<H> = y32.output.data.iter().map(|&x| H::from_f32(x)).collect();
        let bits = |x: &[H]| format!("{x:?}");
        assert_eq!(bits(&y), bits(&rounded), "tokens {from}..{to}");
        for (l, out) in got.iter_mut().enumerate() {
            out.extend_from_slice(&y[l * (to - from) * d_v..(l + 1) * (to - from) * d_v]);
        }
    }
    assert_eq!(state.tokens(), n as u64);
    let got: Vec<H> = got.concat();
    check_close(&format!("{kind:?} causal"), &got, &exact, tolerance);
}

fn non_causal_case<H: HalfFloat>(kind: BackendKind, (d_k, d_v, terms): (usize, usize, usize)) {
    let mut rng = common::rng("non_causal_case");
    let p = rounded::<H>(&problem(
        &mut rng,
        (1, 2),
        (5, 17),
        (d_k, d_v, terms),
        0.7,
        false,
    ));
    let exact = reference(&p, false);
    let a = attention(p.config(), kind);
    let (q, k, v) = (to_half::<H>(&p.q), to_half::<H>(&p.k), to_half::<H>(&p.v));
    let y = a
        .attend_half(
            TensorRef::query(&q, p.q_shape()).unwrap(),
            TensorRef::key(&k, p.k_shape()).unwrap(),
            TensorRef::value(&v, p.v_shape()).unwrap(),
        )
        .unwrap();
    assert_eq!(y.output.shape.as_array(), [1, 2, 5, d_v]);
    check_close(
        &format!("{kind:?} non-causal"),
        &y.output.data,
        &exact,
        common::f32_tolerance(&p, false),
    );
}

#[test]
fn f16_matches_float64_on_the_specialized_kernel() {
    causal_case::<f16>(BackendKind::Cpu, (16, 16, 4));
    non_causal_case::<f16>(BackendKind::Cpu, (16, 16, 4));
}

#[test]
fn bf16_matches_float64_on_the_specialized_kernel() {
    causal_case::<bf16>(BackendKind::Cpu, (16, 16, 4));
    non_causal_case::<bf16>(BackendKind::Cpu, (16, 16, 4));
}

#[test]
fn half_types_match_float64_on_the_generic_path() {
    causal_case::<f16>(BackendKind::CpuGeneric, (5, 3, 3));
    causal_case::<bf16>(BackendKind::CpuGeneric, (5, 3, 3));
    non_causal_case::<f16>(BackendKind::CpuGeneric, (5, 3, 3));
    non_causal_case::<bf16>(BackendKind::CpuGeneric, (5, 3, 3));
}

#[test]
fn the_error_is_the_half_rounding_not_more() {
    // The f16 outputs are as close to float64 as rounding the exact outputs to f16 would be,
    // give or take the f32 computation: the conversion adds nothing of its own.
    let mut rng = common::rng("the_error_is_the_half_rounding_not_more");
    let p = rounded::<f16>(&problem(&mut rng, (1, 4), (64, 64), (8, 8, 3), 0.7, true));
    let exact = reference(&p, true);
    let a = attention(p.config(), BackendKind::Cpu);
    let (q, k, v) = (
        to_half::<f16>(&p.q),
        to_half::<f16>(&p.k),
        to_half::<f16>(&p.v),
    );
    let mut state = a.new_state(1, 4).unwrap();
    let y = a
        .prefill_half(
            &mut state,
            TensorRef::query(&q, p.q_shape()).unwrap(),
            TensorRef::key(&k, p.k_shape()).unwrap(),
            TensorRef::value(&v, p.v_shape()).unwrap(),
        )
        .unwrap();
    let ideal = from_half(&to_half::<f16>(&exact));
    let got = from_half(&y.output.data);
    let differ = got.iter().zip(&ideal).filter(|(g, i)| g != i).count();
    // An f32 result within 1e-6 of exact rounds to the other f16 neighbour only when the exact
    // value lies that close to a midpoint: a few in a thousand.
    assert!(
        differ * 100 <= got.len(),
        "{differ} of {} outputs differ from the correctly rounded exact value",
        got.len()
    );
    assert!(
        common::rel_err(&got, &exact) < 2f64.powi(-11),
        "{}",
        common::rel_err(&got, &exact)
    );
}

#[test]
fn half_inputs_get_typed_errors() {
    let a = attention(KernelConfig::new(2, 2, 3).unwrap(), BackendKind::Cpu);
    let mut state = a.new_state(1, 1).unwrap();
    let ok: Vec<f16> = [0.1f32, 0.2].iter().map(|&x| f16::from_f32(x)).collect();
    let nan = vec![f16::from_f32(0.5), f16::NAN];
    fn t(x: &[f16]) -> TensorRef<'_, f16> {
        TensorRef::key(x, [1, 1, 1, 2]).unwrap()
    }
    let q = TensorRef::query(&ok, [1, 1, 1, 2]).unwrap();
    match a.decode_half(&mut state, q, t(&nan), t(&ok)) {
        Err(SataError::NonFinite { index: 1, .. }) => {}
        other => panic!("expected NonFinite at index 1, got {other:?}"),
    }
    assert_eq!(state.tokens(), 0, "a rejected call leaves the state alone");
    match TensorRef::value(&ok, [1, 1, 2, 2]) {
        Err(SataError::LengthMismatch {
            len: 2,
            expected: 4,
            ..
        }) => {}
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
    let wide = vec![f16::from_f32(0.5); 3];
    match a.decode_half(
        &mut state,
        TensorRef::query(&wide, [1, 1, 1, 3]).unwrap(),
        t(&ok),
        t(&ok),
    ) {
        Err(SataError::DimMismatch { found: 3, .. }) => {}
        other => panic!("expected DimMismatch, got {other:?}"),
    }
}

#[test]
fn f16_output_overflow_is_an_error() {
    // P = 2: T_2(x) = 1 + x. Query 1 against keys 0 and -1.5 has weights 1 and -0.5, so its
    // output (60000 + 30000) / 0.5 = 180000 is beyond f16's 65504 though every value fits.
    let a = attention(KernelConfig::new(1, 1, 2).unwrap(), BackendKind::CpuGeneric);
    let h = |x: &[f32]| -> Vec<f16> { x.iter().map(|&v| f16::from_f32(v)).collect() };
    let (q, k, v) = (h(&[1.0, 1.0]), h(&[0.0, -1.5]), h(&[60000.0, -60000.0]));
    let shape = [1, 1, 2, 1];
    let mut state = a.new_state(1, 1).unwrap();
    match a.prefill_half(
        &mut state,
        TensorRef::query(&q, shape).unwrap(),
        TensorRef::key(&k, shape).unwrap(),
        TensorRef::value(&v, shape).unwrap(),
    ) {
        Err(SataError::OutputOverflow {
            dtype: "float16",
            index: 1,
            value,
        }) => assert!((value - 180000.0).abs() < 1.0, "{value}"),
        other => panic!("expected OutputOverflow at index 1, got {other:?}"),
    }
    // bf16 has f32's range: the same call succeeds.
    let b = |x: &[f32]| -> Vec<bf16> { x.iter().map(|&v| bf16::from_f32(v)).collect() };
    let (q, k, v) = (b(&[1.0, 1.0]), b(&[0.0, -1.5]), b(&[60000.0, -60000.0]));
    let mut state = a.new_state(1, 1).unwrap();
    let y = a
        .prefill_half(
            &mut state,
            TensorRef::query(&q, shape).unwrap(),
            TensorRef::key(&k, shape).unwrap(),
            TensorRef::value(&v, shape).unwrap(),
        )
        .unwrap();
    assert_eq!(
        y.output.data[1].to_f32(),
        180224.0,
        "180000 rounded to bf16"
    );
}
