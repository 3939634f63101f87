//! Every backend against the exact float64 reference: causal, non-causal, cross, decode and
//! continuation. One suite, instantiated for every backend of `common::backends` (the generic
//! path in f32 and f64 on configurations covering P = 1..6 and d_k != d_v; every registry
//! kernel on every instruction set this CPU supports, compared with the generic path too; the
//! WGSL kernels on wgpu; the CUDA kernels on host execution in both thread orders and on a GPU
//! where there is one).

mod common;

use common::backends::{Backend, every_backend};
use common::{
    F32_UNIT, Problem, feature_condition, lane_tokens, problem, reference, rel_err, rng,
    rounding_tolerance,
};
use rand::RngExt;
use sata::{Attention, Element, KernelConfig, TensorRef};

/// (d_k, d_v, P): every P from 1 to 6, square and non-square heads, d_k = 1 included.
const CONFIGS: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (5, 3, 1),
    (4, 4, 2),
    (3, 7, 2),
    (8, 8, 3),
    (6, 2, 3),
    (16, 16, 4),
    (4, 9, 4),
    (8, 5, 5),
    (3, 3, 5),
    (4, 4, 6),
    (2, 6, 6),
    (1, 4, 6),
];

/// The configurations a backend is checked on.
fn configs(backend: Backend) -> Vec<(usize, usize, usize)> {
    match backend {
        Backend::CpuGeneric | Backend::Wgpu => CONFIGS.to_vec(),
        Backend::Cpu(_) => sata::codegen::registry::PRECOMPILED.to_vec(),
        // Every registry kernel, and the suite's own (d_k != d_v, P = 1).
        Backend::CudaHost(..) | Backend::CudaGpu => {
            let registry = sata::codegen::registry::PRECOMPILED;
            let own = CONFIGS.iter().filter(|c| !registry.contains(c));
            registry.iter().chain(own).copied().collect()
        }
    }
}

/// The backend's attention for `config`; on the cpu backend, the registry's kernel.
fn attention<T: Element>(backend: Backend, config: KernelConfig) -> Attention<T> {
    let a = backend.attention::<T>(config);
    if let Backend::Cpu(_) = backend {
        assert!(a.kernel().is_some(), "no registry kernel for {config}");
    }
    a
}

/// Tolerance on `||y - y_ref|| / ||y_ref||`: 1e-5 in f32 (1e-10 in f64), or more where the
/// inputs' feature-space conditioning `kappa` says the dtype cannot do better
/// ([`common::rounding_tolerance`]).
fn tolerance<T: Element>(kappa: f64) -> f64 {
    match T::DTYPE {
        sata::DType::F32 => rounding_tolerance(1e-5, F32_UNIT, kappa),
        sata::DType::F64 => rounding_tolerance(1e-10, f64::EPSILON / 2.0, kappa),
    }
}

/// Inputs as `T`, and the problem with inputs rounded to `T` so the reference sees exactly the
/// numbers the kernel sees.
fn cast<T: Element>(p: &Problem) -> (Problem, Vec<T>, Vec<T>, Vec<T>) {
    let cast = |x: &[f64]| x.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    let (q, k, v) = (cast(&p.q), cast(&p.k), cast(&p.v));
    let widen = |x: &[T]| x.iter().map(|v| v.widen()).collect::<Vec<f64>>();
    let rounded = Problem {
        q: widen(&q),
        k: widen(&k),
        v: widen(&v),
        ..p.clone()
    };
    (rounded, q, k, v)
}

fn widen<T: Element>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.widen()).collect()
}

/// Checks outputs against the float64 reference of `p`.
fn check<T: Element>(what: &str, p: &Problem, causal: bool, got: &[T]) {
    check_against(what, p, causal, got, &reference(p, causal));
}

/// Checks outputs against `want` (the reference, or another path's outputs) with the
/// tolerance of `p`'s conditioning.
fn check_against<T: Element>(what: &str, p: &Problem, causal: bool, got: &[T], want: &[f64]) {
    let err = rel_err(&widen(got), want);
    let kappa = feature_condition(p, causal);
    let tol = tolerance::<T>(kappa);
    if std::env::var_os("SATA_SHOW_ERR").is_some() {
        eprintln!(
            "{what} {} d_k={} P={}: relative error {err:e}, kappa {kappa:.1}",
            T::DTYPE,
            p.d_k,
            p.terms
        );
    }
    assert!(
        err <= tol,
        "{what} {}: d_k={} d_v={} P={} relative error {err:e} > {tol:e} (kappa {kappa:.1})",
        T::DTYPE,
        p.d_k,
        p.d_v,
        p.terms,
    );
}

fn causal_prefill_in<T: Element>(path: Backend) {
    let mut rng = rng("causal_prefill");
    for (dk, dv, terms) in configs(path) {
        let p = problem(&mut rng, (2, 3), (40, 40), (dk, dv, terms), 1.0, true);
        let (p, q, k, v) = cast::<T>(&p);
        let attention = attention::<T>(path, p.config());
        let mut state = attention.new_state(2, 3).unwrap();
        let y = attention
            .prefill(
                &mut state,
                TensorRef::query(&q, p.q_shape()).unwrap(),
                TensorRef::key(&k, p.k_shape()).unwrap(),
                TensorRef::value(&v, p.v_shape()).unwrap(),
            )
            .unwrap();
        assert_eq!(y.output.shape.as_array(), [2, 3, 40, dv]);
        assert_eq!(y.stats.bad_denominators, 0);
        assert_eq!(y.stats.queries, 2 * 3 * 40);
        assert_eq!(state.tokens(), 40);
        check("causal prefill", &p, true, &y.output.data);
        if let Backend::Cpu(_) | Backend::CudaHost(..) | Backend::CudaGpu = path {
            // Generated kernels and the generic path agree with each other too.
            let generic = Backend::CpuGeneric.attention::<T>(p.config());
            let mut s = generic.new_state(2, 3).unwrap();
            let g = generic
                .prefill(
                    &mut s,
                    TensorRef::query(&q, p.q_shape()).unwrap(),
                    TensorRef::key(&k, p.k_shape()).unwrap(),
                    TensorRef::value(&v, p.v_shape()).unwrap(),
                )
                .unwrap();
            check_against(
                "specialized vs generic",
                &p,
                true,
                &y.output.data,
                &widen(&g.output.data),
            );
            let state_err = rel_err(&widen(&state.as_slice()), &widen(&s.as_slice()));
            assert!(state_err < 1e-6, "states differ by {state_err:e}");
        }
    }
}

/// Cross attention: more or fewer queries than keys, every query sees every key.
fn non_causal_in<T: Element>(path: Backend) {
    let mut rng = rng("non_causal");
    for (i, (dk, dv, terms)) in configs(path).into_iter().enumerate() {
        let n_q = [1, 7, 33][i % 3];
        let p = problem(&mut rng, (3, 2), (n_q, 25), (dk, dv, terms), 1.0, false);
        let (p, q, k, v) = cast::<T>(&p);
        let attention = attention::<T>(path, p.config());
        let y = attention
            .attend(
                TensorRef::query(&q, p.q_shape()).unwrap(),
                TensorRef::key(&k, p.k_shape()).unwrap(),
                TensorRef::value(&v, p.v_shape()).unwrap(),
            )
            .unwrap();
        assert_eq!(y.output.shape.as_array(), [3, 2, n_q, dv]);
        check("non-causal", &p, false, &y.output.data);
    }
}

/// Splits `0..n` at random points into consecutive chunks (some of length 1).
fn random_splits(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<std::ops::Range<usize>> {
    let mut cuts: Vec<usize> = (0..rng.random_range(1..5))
        .map(|_| rng.random_range(1..n))
        .collect();
    cuts.extend([0, n]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Prefill in random chunks, each continuing from the state the previous one left, then
/// decode steps: the concatenated outputs equal the one-shot causal reference.
fn causal_continuation_in<T: Element>(path: Backend) {
    let mut rng = rng("causal_continuation");
    for (dk, dv, terms) in configs(path) {
        let n = 30;
        let p = problem(&mut rng, (1, 2), (n, n), (dk, dv, terms), 1.0, true);
        let (p, q, k, v) = cast::<T>(&p);
        let attention = attention::<T>(path, p.config());
        let mut state = attention.new_state(1, 2).unwrap();
        let lanes = 2;
        let mut per_lane = vec![Vec::new(); lanes];
        let mut chunks = random_splits(&mut rng, n - 5);
        chunks.extend((n - 5..n).map(|t| t..t + 1));
        for (i, r) in chunks.iter().enumerate() {
            let len = r.len();
            let (qc, kc, vc) = (
                lane_tokens(&q, lanes, n, dk, r),
                lane_tokens(&k, lanes, n, dk, r),
                lane_tokens(&v, lanes, n, dv, r),
            );
            let (qc, kc, vc) = (
                TensorRef::query(&qc, [1, 2, len, dk]).unwrap(),
                TensorRef::key(&kc, [1, 2, len, dk]).unwrap(),
                TensorRef::value(&vc, [1, 2, len, dv]).unwrap(),
            );
            // The last five tokens go through the decode path, one at a time.
            let y = if i >= chunks.len() - 5 {
                attention.decode(&mut state, qc, kc, vc).unwrap()
            } else {
                attention.prefill(&mut state, qc, kc, vc).unwrap()
            };
            for (l, out) in per_lane.iter_mut().enumerate() {
                out.extend_from_slice(&y.output.data[l * len * dv..(l + 1) * len * dv]);
            }
        }
        assert_eq!(state.tokens(), n as u64);
        let got: Vec<T> = per_lane.concat();
        check("causal continuation", &p, true, &got);
    }
}

/// Non-causal continuation: keys absorbed in random chunks, then queried.
fn non_causal_continuation_in<T: Element>(path: Backend) {
    let mut rng = rng("non_causal_continuation");
    for (dk, dv, terms) in configs(path) {
        let (n_q, n_k) = (9, 31);
        let p = problem(&mut rng, (2, 1), (n_q, n_k), (dk, dv, terms), 1.0, false);
        let (p, q, k, v) = cast::<T>(&p);
        let attention = attention::<T>(path, p.config());
        let mut state = attention.new_state(2, 1).unwrap();
        for r in random_splits(&mut rng, n_k) {
            let (kc, vc) = (
                lane_tokens(&k, 2, n_k, dk, &r),
                lane_tokens(&v, 2, n_k, dv, &r),
            );
            attention
                .absorb(
                    &mut state,
                    TensorRef::key(&kc, [2, 1, r.len(), dk]).unwrap(),
                    TensorRef::value(&vc, [2, 1, r.len(), dv]).unwrap(),
                )
                .unwrap();
        }
        let y = attention
            .query(&state, TensorRef::query(&q, p.q_shape()).unwrap())
            .unwrap();
        check("non-causal continuation", &p, false, &y.output.data);
    }
}

/// Causal attention whose queries arrive after a context already in the state: `prefill`
/// on top of `absorb` equals the reference in which the queries are the last tokens.
fn causal_after_context_in<T: Element>(path: Backend) {
    let mut rng = rng("causal_after_context");
    for (dk, dv, terms) in configs(path) {
        let (n_q, n_k) = (6, 20);
        let p = problem(&mut rng, (1, 3), (n_q, n_k), (dk, dv, terms), 1.0, true);
        let (p, q, k, v) = cast::<T>(&p);
        let attention = attention::<T>(path, p.config());
        let mut state = attention.new_state(1, 3).unwrap();
        let context = 0..n_k - n_q;
        let last = n_k - n_q..n_k;
        let (kc, vc) = (
            lane_tokens(&k, 3, n_k, dk, &context),
            lane_tokens(&v, 3, n_k, dv, &context),
        );
        attention
            .absorb(
                &mut state,
                TensorRef::key(&kc, [1, 3, context.len(), dk]).unwrap(),
                TensorRef::value(&vc, [1, 3, context.len(), dv]).unwrap(),
            )
            .unwrap();
        let (kl, vl) = (
            lane_tokens(&k, 3, n_k, dk, &last),
            lane_tokens(&v, 3, n_k, dv, &last),
        );
        let y = attention
            .prefill(
                &mut state,
                TensorRef::query(&q, p.q_shape()).unwrap(),
                TensorRef::key(&kl, [1, 3, n_q, dk]).unwrap(),
                TensorRef::value(&vl, [1, 3, n_q, dv]).unwrap(),
            )
            .unwrap();
        check("causal after context", &p, true, &y.output.data);
    }
}

fn causal_prefill(backend: Backend) {
    causal_prefill_in::<f32>(backend)
}

fn non_causal(backend: Backend) {
    non_causal_in::<f32>(backend)
}

fn causal_continuation(backend: Backend) {
    causal_continuation_in::<f32>(backend)
}

fn non_causal_continuation(backend: Backend) {
    non_causal_continuation_in::<f32>(backend)
}

fn causal_after_context(backend: Backend) {
    causal_after_context_in::<f32>(backend)
}

every_backend!(
    causal_prefill,
    non_causal,
    causal_continuation,
    non_causal_continuation,
    causal_after_context,
);

/// The generic path in f64, against the same reference at 1e-10.
mod generic_f64 {
    use super::*;

    #[test]
    fn causal_prefill() {
        causal_prefill_in::<f64>(Backend::CpuGeneric)
    }

    #[test]
    fn non_causal() {
        non_causal_in::<f64>(Backend::CpuGeneric)
    }

    #[test]
    fn causal_continuation() {
        causal_continuation_in::<f64>(Backend::CpuGeneric)
    }

    #[test]
    fn non_causal_continuation() {
        non_causal_continuation_in::<f64>(Backend::CpuGeneric)
    }

    #[test]
    fn causal_after_context() {
        causal_after_context_in::<f64>(Backend::CpuGeneric)
    }
}
