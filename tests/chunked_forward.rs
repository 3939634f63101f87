//! The chunked (matrix-product) forward entries of the CPU paths against the exact float64
//! reference and against the token loop: every registry kernel on every instruction set this
//! CPU supports, chunks that divide the call and chunks that leave a partial one, a
//! continuation from a non-zero state, absorb then query, and the cases that must stay on the
//! token loop (short calls, compensated states).

mod common;

use common::{Problem, f32_tolerance, lane_tokens, problem, reference, rel_err, rng, widen};
use sata::codegen::registry::PRECOMPILED;
use sata::kernel::driver::{MAX_CHUNK, MIN_CHUNKED_TOKENS};
use sata::{
    Accumulation, Attention, BackendKind, BackendRequest, Isa, KernelConfig, SataError, State,
    TensorRef,
};

fn f32s(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// The problem with its inputs rounded to f32 (so the reference sees what the kernel sees),
/// and the f32 inputs.
fn rounded(p: Problem) -> (Problem, [Vec<f32>; 3]) {
    let qkv = [f32s(&p.q), f32s(&p.k), f32s(&p.v)];
    let p = Problem {
        q: widen(&qkv[0]),
        k: widen(&qkv[1]),
        v: widen(&qkv[2]),
        ..p
    };
    (p, qkv)
}

fn attention(config: KernelConfig, isa: Isa, chunk: usize) -> Attention<f32> {
    let a = Attention::<f32>::new(config)
        .unwrap()
        .with_isa(isa)
        .unwrap()
        .with_prefill_chunk(chunk)
        .unwrap();
    assert!(a.kernel().is_some(), "{config}: no registry kernel");
    a
}

fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_supported()).collect()
}

/// Causal prefill of `qkv` (`[1, heads, n, dim]`) into `state`.
fn prefill(
    a: &Attention<f32>,
    state: &mut State<f32>,
    p: &Problem,
    qkv: &[Vec<f32>; 3],
    n: usize,
) -> Vec<f32> {
    let (heads, dk, dv) = (p.heads, p.d_k, p.d_v);
    a.prefill(
        state,
        TensorRef::query(&qkv[0], [1, heads, n, dk]).unwrap(),
        TensorRef::key(&qkv[1], [1, heads, n, dk]).unwrap(),
        TensorRef::value(&qkv[2], [1, heads, n, dv]).unwrap(),
    )
    .unwrap()
    .output
    .data
}

#[test]
fn chunked_prefill_matches_float64_and_the_token_loop_on_every_registry_kernel() {
    let mut rng = rng("chunked_prefill");
    // Two full chunks of 64 and a partial one; 37 leaves a remainder of 21.
    let n = 2 * MAX_CHUNK + 22;
    for &(dk, dv, terms) in PRECOMPILED {
        let (p, qkv) = rounded(problem(
            &mut rng,
            (1, 2),
            (n, n),
            (dk, dv, terms),
            1.0,
            true,
        ));
        let want = reference(&p, true);
        let tol = f32_tolerance(&p, true);
        for isa in isas() {
            let token_loop = attention(p.config(), isa, 1);
            let mut s_tok = token_loop.new_state(1, 2).unwrap();
            let y_tok = prefill(&token_loop, &mut s_tok, &p, &qkv, n);
            for chunk in [16, 37, MAX_CHUNK] {
                let a = attention(p.config(), isa, chunk);
                assert!(
                    a.describe_path().contains(&format!("chunks of {chunk}")),
                    "{}",
                    a.describe_path()
                );
                let mut s = a.new_state(1, 2).unwrap();
                let y = prefill(&a, &mut s, &p, &qkv, n);
                let what = format!("{} {isa} chunk {chunk}", p.config());
                let err = rel_err(&widen(&y), &want);
                assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
                let vs_tokens = rel_err(&widen(&y), &widen(&y_tok));
                assert!(
                    vs_tokens <= tol,
                    "{what}: {vs_tokens:e} from the token loop"
                );
                let state_err = rel_err(&widen(&s.as_slice()), &widen(&s_tok.as_slice()));
                assert!(state_err < 1e-6, "{what}: states differ by {state_err:e}");
                assert_eq!(s.tokens(), n as u64);
            }
        }
    }
}

#[test]
fn a_chunked_continuation_reads_the_state_of_the_first_call() {
    let mut rng = rng("chunked_continuation");
    let (first, n) = (70, 70 + 90);
    for &(dk, dv, terms) in &[(16, 16, 4), (8, 8, 6), (4, 4, 2), (32, 32, 3)] {
        let (p, qkv) = rounded(problem(
            &mut rng,
            (1, 3),
            (n, n),
            (dk, dv, terms),
            1.0,
            true,
        ));
        let want = reference(&p, true);
        for isa in isas() {
            let a = attention(p.config(), isa, MAX_CHUNK);
            let mut state = a.new_state(1, 3).unwrap();
            let mut y = vec![0.0f32; 3 * n * dv];
            for range in [0..first, first..n] {
                let len = range.len();
                let part = [
                    lane_tokens(&qkv[0], 3, n, dk, &range),
                    lane_tokens(&qkv[1], 3, n, dk, &range),
                    lane_tokens(&qkv[2], 3, n, dv, &range),
                ];
                let out = prefill(&a, &mut state, &p, &part, len);
                for lane in 0..3 {
                    let dst = (lane * n + range.start) * dv;
                    y[dst..dst + len * dv]
                        .copy_from_slice(&out[lane * len * dv..(lane + 1) * len * dv]);
                }
            }
            let err = rel_err(&widen(&y), &want);
            let tol = f32_tolerance(&p, true);
            assert!(err <= tol, "{} {isa}: {err:e} > {tol:e}", p.config());
        }
    }
}

#[test]
fn chunked_absorb_and_query_match_float64() {
    let mut rng = rng("chunked_absorb_query");
    let (n_q, n_k) = (100, 130);
    for &(dk, dv, terms) in &[(16, 16, 4), (8, 8, 8), (4, 4, 5), (32, 32, 2)] {
        let (p, qkv) = rounded(problem(
            &mut rng,
            (2, 1),
            (n_q, n_k),
            (dk, dv, terms),
            1.0,
            false,
        ));
        let want = reference(&p, false);
        for isa in isas() {
            for chunk in [1, 29, MAX_CHUNK] {
                let a = attention(p.config(), isa, chunk);
                let y = a
                    .attend(
                        TensorRef::query(&qkv[0], [2, 1, n_q, dk]).unwrap(),
                        TensorRef::key(&qkv[1], [2, 1, n_k, dk]).unwrap(),
                        TensorRef::value(&qkv[2], [2, 1, n_k, dv]).unwrap(),
                    )
                    .unwrap();
                let err = rel_err(&widen(&y.output.data), &want);
                let tol = f32_tolerance(&p, false);
                assert!(
                    err <= tol,
                    "{} {isa} chunk {chunk}: {err:e} > {tol:e}",
                    p.config()
                );
            }
        }
    }
}

/// The generic path in f32 (configurations without a kernel: odd sizes, another scale)
/// prefills, absorbs and queries in the same chunks: against float64 and its token loop.
#[test]
fn the_generic_path_chunks_in_f32() {
    let mut rng = rng("chunked_generic");
    let n = MAX_CHUNK + 45;
    for &(dk, dv, terms, scale) in &[(6, 5, 4, 3.0), (3, 9, 6, 1.5), (12, 8, 3, 2.5)] {
        let (p, qkv) = rounded(common::problem_with_scale(
            &mut rng,
            (1, 2),
            (n, n),
            (dk, dv, terms),
            scale,
            1.0,
            true,
        ));
        let request = BackendRequest::Kind(BackendKind::CpuGeneric);
        let generic = |chunk: usize| {
            Attention::<f32>::with_backend(p.config(), request)
                .unwrap()
                .with_prefill_chunk(chunk)
                .unwrap()
        };
        let a = generic(MAX_CHUNK);
        assert!(a.kernel().is_none());
        assert!(
            a.describe_path().contains("chunks of 64"),
            "{}",
            a.describe_path()
        );
        let tokens = generic(1);
        assert!(tokens.describe_path().starts_with("cpu-generic, "));
        let tol = f32_tolerance(&p, true);
        let (mut s, mut s_tok) = (a.new_state(1, 2).unwrap(), tokens.new_state(1, 2).unwrap());
        let y = prefill(&a, &mut s, &p, &qkv, n);
        let y_tok = prefill(&tokens, &mut s_tok, &p, &qkv, n);
        let err = rel_err(&widen(&y), &reference(&p, true));
        assert!(err <= tol, "{}: {err:e} > {tol:e}", p.config());
        let vs_tokens = rel_err(&widen(&y), &widen(&y_tok));
        assert!(
            vs_tokens <= tol,
            "{}: {vs_tokens:e} from the token loop",
            p.config()
        );
        let state_err = rel_err(&widen(&s.as_slice()), &widen(&s_tok.as_slice()));
        assert!(
            state_err < 1e-6,
            "{}: states differ by {state_err:e}",
            p.config()
        );
        // Absorb then query: the state of the keys, read by every query.
        let shape = |d| [1, 2, n, d];
        let y = a
            .attend(
                TensorRef::query(&qkv[0], shape(dk)).unwrap(),
                TensorRef::key(&qkv[1], shape(dk)).unwrap(),
                TensorRef::value(&qkv[2], shape(dv)).unwrap(),
            )
            .unwrap();
        let err = rel_err(&widen(&y.output.data), &reference(&p, false));
        let tol = f32_tolerance(&p, false);
        assert!(err <= tol, "{} non-causal: {err:e} > {tol:e}", p.config());
    }
}

/// Short calls (a decode step) and compensated states run the token loop whatever the chunk:
/// their outputs and states are bit for bit the token loop's.
#[test]
fn short_calls_and_compensated_states_stay_on_the_token_loop() {
    let mut rng = rng("chunked_fallbacks");
    let config = KernelConfig::new(16, 16, 4).unwrap();
    for (n, accumulation) in [
        (MIN_CHUNKED_TOKENS - 1, Accumulation::Plain),
        (1, Accumulation::Plain),
        (150, Accumulation::Compensated),
    ] {
        let (p, qkv) = rounded(problem(&mut rng, (1, 2), (n, n), (16, 16, 4), 1.0, true));
        let isa = Isa::detect();
        let run = |chunk: usize| {
            let a = attention(config, isa, chunk);
            let mut s = a.new_state_with(1, 2, accumulation).unwrap();
            let y = prefill(&a, &mut s, &p, &qkv, n);
            (y, s.as_slice().to_vec())
        };
        let (y1, s1) = run(1);
        let (y64, s64) = run(MAX_CHUNK);
        assert_eq!(y1, y64, "{n} tokens, {accumulation:?}: outputs differ");
        assert_eq!(s1, s64, "{n} tokens, {accumulation:?}: states differ");
    }
}

#[test]
fn the_chunk_is_validated_and_reported() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    // d16 P4 (969 features) prefills in chunks of 64 by default, a small kernel keeps the
    // token loop (benches/results/prefill-2026-12-06.md).
    let a = Attention::<f32>::new(config).unwrap();
    assert_eq!(a.prefill_chunk(), MAX_CHUNK, "{}", a.describe_path());
    assert!(
        a.describe_path().contains("chunks of 64"),
        "{}",
        a.describe_path()
    );
    let small = Attention::<f32>::new(KernelConfig::new(16, 16, 2).unwrap()).unwrap();
    assert_eq!(small.prefill_chunk(), 1, "{}", small.describe_path());
    assert!(
        small.describe_path().contains("token loop"),
        "{}",
        small.describe_path()
    );
    let chunked = Attention::<f32>::new(config)
        .unwrap()
        .with_prefill_chunk(32)
        .unwrap();
    assert_eq!(chunked.prefill_chunk(), 32);
    assert!(
        chunked.describe_path().contains("chunks of 32"),
        "{}",
        chunked.describe_path()
    );
    for bad in [0, MAX_CHUNK + 1] {
        let err = Attention::<f32>::new(config)
            .unwrap()
            .with_prefill_chunk(bad)
            .err();
        assert!(
            matches!(err, Some(SataError::InvalidChunk { chunk, max }) if chunk == bad && max == MAX_CHUNK),
            "{bad}: {err:?}"
        );
    }
    let tokens = Attention::<f32>::new(config)
        .unwrap()
        .with_prefill_chunk(1)
        .unwrap();
    assert_eq!(tokens.prefill_chunk(), 1);
    assert!(
        tokens.describe_path().contains("token loop"),
        "{}",
        tokens.describe_path()
    );
}
