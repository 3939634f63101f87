//! Bad input through the public API: every case is a typed error, never a panic, and a failed
//! call leaves the state usable. The cases that involve a backend run on every backend
//! (`common::backends`), which must give the same errors, statistics and state handling.

mod common;

use common::backends::{Backend, every_backend};
use common::{normal, rng};
use sata::{
    Attention, BackendKind, BackendRequest, ConfigError, DenominatorPolicy, KernelConfig, Role,
    SataError, TensorRef,
};

fn config() -> KernelConfig {
    KernelConfig::new(4, 3, 3).unwrap()
}

fn inputs(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = rng("api_errors");
    let cast = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    (
        cast(normal(&mut rng, 2 * n * 4, 0.5)),
        cast(normal(&mut rng, 2 * n * 4, 0.5)),
        cast(normal(&mut rng, 2 * n * 3, 1.0)),
    )
}

#[test]
fn tensor_length_must_match_its_shape() {
    let data = [0.0f32; 10];
    let err = TensorRef::query(&data, [1, 1, 3, 4]).unwrap_err();
    assert!(matches!(
        err,
        SataError::LengthMismatch {
            role: Role::Query,
            len: 10,
            expected: 12,
            ..
        }
    ));
    // A shape whose element count overflows is a mismatch, not a panic.
    let err = TensorRef::key(&data, [usize::MAX, 2, 2, 2]).unwrap_err();
    assert!(matches!(
        err,
        SataError::LengthMismatch {
            role: Role::Key,
            ..
        }
    ));
}

fn wrong_head_dimensions_are_named(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 2).unwrap();
    let (q, k, v) = inputs(5);
    let bad_q = vec![0.5f32; 2 * 5 * 5];
    let err = attention
        .prefill(
            &mut state,
            TensorRef::query(&bad_q, [1, 2, 5, 5]).unwrap(),
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::DimMismatch {
            role: Role::Query,
            found: 5,
            expected: 4,
            ..
        }
    ));
    // Values with d_k columns instead of d_v.
    let err = attention
        .absorb(
            &mut state,
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&q, [1, 2, 5, 4]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::DimMismatch {
            role: Role::Value,
            found: 4,
            expected: 3,
            ..
        }
    ));
    assert!(err.to_string().contains("d_v"));
    assert_eq!(
        state.tokens(),
        0,
        "a rejected call must not touch the state"
    );
}

fn batch_and_heads_must_match_the_state(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(2, 1).unwrap();
    let (q, k, v) = inputs(5);
    let err = attention
        .prefill(
            &mut state,
            TensorRef::query(&q, [1, 2, 5, 4]).unwrap(),
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::BatchHeadsMismatch {
            found: (1, 2),
            expected: (2, 1),
            ..
        }
    ));
}

fn causal_needs_one_query_per_key_and_decode_one_token(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 2).unwrap();
    let (q, k, v) = inputs(5);
    let err = attention
        .prefill(
            &mut state,
            TensorRef::query(&q[..2 * 4 * 4], [1, 2, 4, 4]).unwrap(),
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::TokenMismatch {
            role: Role::Query,
            found: 4,
            expected: 5,
            ..
        }
    ));
    let err = attention
        .decode(
            &mut state,
            TensorRef::query(&q, [1, 2, 5, 4]).unwrap(),
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, SataError::TokenMismatch { expected: 1, .. }));
    // Keys and values with different token counts.
    let err = attention
        .absorb(
            &mut state,
            TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v[..2 * 4 * 3], [1, 2, 4, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::TokenMismatch {
            role: Role::Value,
            ..
        }
    ));
}

fn nan_and_infinity_in_any_input_are_rejected(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 2).unwrap();
    for (which, bad) in [(0, f32::NAN), (1, f32::INFINITY), (2, f32::NEG_INFINITY)] {
        let (mut q, mut k, mut v) = inputs(5);
        match which {
            0 => q[7] = bad,
            1 => k[7] = bad,
            _ => v[7] = bad,
        }
        let err = attention
            .prefill(
                &mut state,
                TensorRef::query(&q, [1, 2, 5, 4]).unwrap(),
                TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
                TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
            )
            .unwrap_err();
        let role = [Role::Query, Role::Key, Role::Value][which];
        assert!(
            matches!(err, SataError::NonFinite { role: r, index: 7, .. } if r == role),
            "{err}"
        );
    }
    assert_eq!(state.tokens(), 0);
    assert!(state.as_slice().iter().all(|&x| x == 0.0));
}

fn a_state_from_another_config_is_refused(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let other = Attention::<f32>::new(KernelConfig::new(4, 3, 4).unwrap()).unwrap();
    let rescaled = Attention::<f32>::new(config().with_scale(1.0).unwrap()).unwrap();
    let (q, k, v) = inputs(5);
    for foreign in [
        other.new_state(1, 2).unwrap(),
        rescaled.new_state(1, 2).unwrap(),
    ] {
        let mut state = foreign;
        let err = attention
            .prefill(
                &mut state,
                TensorRef::query(&q, [1, 2, 5, 4]).unwrap(),
                TensorRef::key(&k, [1, 2, 5, 4]).unwrap(),
                TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(err, SataError::StateConfigMismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn bad_configs_and_empty_states_are_errors() {
    assert!(matches!(
        KernelConfig::new(0, 3, 3),
        Err(ConfigError::ZeroKeyDim)
    ));
    let attention = Attention::<f64>::new(config()).unwrap();
    assert!(matches!(
        attention.new_state(0, 4),
        Err(SataError::EmptyState { .. })
    ));
    assert!(matches!(
        attention.new_state(usize::MAX / 2, 4),
        Err(SataError::StateTooLarge { .. })
    ));
}

fn an_output_buffer_of_the_wrong_size_is_an_error(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 2).unwrap();
    let (q, k, v) = inputs(1);
    let mut out = vec![0.0f32; 5];
    let err = attention
        .decode_into(
            &mut state,
            TensorRef::query(&q, [1, 2, 1, 4]).unwrap(),
            TensorRef::key(&k, [1, 2, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 1, 3]).unwrap(),
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SataError::LengthMismatch {
            role: Role::Output,
            expected: 6,
            ..
        }
    ));
}

/// P = 2 (odd top degree): weight `1 + q·k/c` is negative when `q·k/c < -1`. One key
/// anti-aligned with the query gives a negative denominator.
fn negative_pair() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let q = vec![2.0f32, 0.0, 0.0, 0.0];
    let k = vec![-2.0f32, 0.0, 0.0, 0.0]; // q·k / c = -4 / 2 = -2
    let v = vec![1.0f32, 2.0, 3.0];
    (q, k, v)
}

fn non_positive_denominators_are_zeroed_and_counted_by_default(backend: Backend) {
    let config = KernelConfig::new(4, 3, 2).unwrap();
    let attention = backend.attention::<f32>(config);
    assert_eq!(attention.denominator_policy(), DenominatorPolicy::Zero);
    let mut state = attention.new_state(1, 1).unwrap();
    let (q, k, v) = negative_pair();
    let y = attention
        .decode(
            &mut state,
            TensorRef::query(&q, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&k, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap();
    assert_eq!(y.output.data, vec![0.0; 3]);
    assert_eq!(y.stats.bad_denominators, 1);
    let (at, den) = y.stats.first_bad.unwrap();
    assert_eq!((at.batch, at.head, at.token), (0, 0, 0));
    assert!(
        (den - (-1.0)).abs() < 1e-6,
        "denominator 1 + (-2) = -1, got {den}"
    );
    // The state still absorbed the token: the denominator is about the query, not the key.
    assert_eq!(state.tokens(), 1);
    assert!(y.output.data.iter().all(|x| x.is_finite()));
}

fn tiny_denominators_are_counted_on_every_backend(backend: Backend) {
    // P = 2, c = 2: q·k/c = -(1 - 1e-5), so the one key's weight 1 + q·k/c is 1e-5: positive,
    // but far below 1e-4 per key.
    let config = KernelConfig::new(4, 3, 2).unwrap();
    let q = [2.0f32, 0.0, 0.0, 0.0];
    let k = [-0.99999f32, 0.0, 0.0, 0.0];
    let v = [1.0f32, 2.0, 3.0];
    let attention = backend.attention::<f32>(config);
    let mut state = attention.new_state(1, 1).unwrap();
    let y = attention
        .decode(
            &mut state,
            TensorRef::query(&q, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&k, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap();
    let path = attention.describe_path();
    assert_eq!(y.stats.bad_denominators, 0, "{path}");
    assert_eq!(y.stats.tiny_denominators, 1, "{path}");
    assert!(y.stats.min_denominator < 2e-5, "{path}");
    // A query along the key sees weight 1 + 1/2: nothing to report.
    let y = attention
        .query(&state, TensorRef::query(&k, [1, 1, 1, 4]).unwrap())
        .unwrap();
    assert_eq!(y.stats.tiny_denominators, 0, "{path}");
    assert_eq!(y.stats.bad_denominators, 0, "{path}");
}

fn logit_bounds_follow_the_norms_of_queries_and_keys_on_every_backend(backend: Backend) {
    let config = KernelConfig::new(4, 3, 2).unwrap(); // c = 2
    let v = [1.0f32, 2.0, 3.0];
    let shape = |d| [1, 1, 1, d];
    let attention = backend.attention::<f32>(config);
    let path = attention.describe_path();
    let mut state = attention.new_state(1, 1).unwrap();
    assert_eq!(state.max_key_norm(), Some(0.0));
    // |q| = 2, |k| = 3: |q·k|/c <= 3.
    let (q, k) = ([2.0f32, 0.0, 0.0, 0.0], [0.0f32, 3.0, 0.0, 0.0]);
    let y = attention
        .decode(
            &mut state,
            TensorRef::query(&q, shape(4)).unwrap(),
            TensorRef::key(&k, shape(4)).unwrap(),
            TensorRef::value(&v, shape(3)).unwrap(),
        )
        .unwrap();
    assert_eq!(y.stats.logit_bound, Some(3.0), "{path}");
    assert_eq!(state.max_key_norm(), Some(3.0), "{path}");
    // A smaller key later: the state still remembers the larger one.
    let small = [0.0f32, 0.0, 0.5, 0.0];
    attention
        .absorb(
            &mut state,
            TensorRef::key(&small, shape(4)).unwrap(),
            TensorRef::value(&v, shape(3)).unwrap(),
        )
        .unwrap();
    let q4 = [0.0f32, 0.0, 0.0, 4.0];
    let y = attention
        .query(&state, TensorRef::query(&q4, shape(4)).unwrap())
        .unwrap();
    assert_eq!(y.stats.logit_bound, Some(6.0), "{path}");
    // Saved and loaded, the bound survives; reset forgets it.
    let back = sata::State::<f32>::from_bytes(&state.to_bytes().unwrap()).unwrap();
    assert_eq!(back.max_key_norm(), Some(3.0), "{path}");
    state.reset();
    assert_eq!(state.max_key_norm(), Some(0.0));
}

fn the_error_policy_fails_and_restores_the_state(backend: Backend) {
    let config = KernelConfig::new(4, 3, 2).unwrap();
    let attention = backend.attention::<f32>(config);
    let attention = attention.with_denominator_policy(DenominatorPolicy::Error);
    let mut state = attention.new_state(1, 1).unwrap();
    // One ordinary token first, so the state is not trivially zero.
    let (q0, v0) = (vec![0.1f32, 0.2, 0.3, 0.4], vec![1.0f32, 1.0, 1.0]);
    attention
        .decode(
            &mut state,
            TensorRef::query(&q0, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&q0, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v0, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap();
    let before = state.clone();
    // q·k/c = -2 against both the new key and the stored one sums to a negative denominator.
    let (q, k, v) = negative_pair();
    let q: Vec<f32> = q.iter().map(|x| x * 4.0).collect();
    let err = attention
        .decode(
            &mut state,
            TensorRef::query(&q, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&k, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SataError::NonPositiveDenominator {
                count: 1,
                queries: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        state, before,
        "the failed call must leave the state as it was"
    );
}

fn overflow_poisons_the_state_visibly_until_reset(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 1).unwrap();
    // Finite inputs whose squares overflow f32 (features of order 2 reach 1e60).
    let huge = vec![1e30f32; 4];
    let v = vec![1.0f32; 3];
    let err = attention
        .decode(
            &mut state,
            TensorRef::query(&huge, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&huge, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, SataError::StatePoisoned { .. }), "{err}");
    assert!(state.is_poisoned());
    let small = vec![0.1f32; 4];
    let again = attention.decode(
        &mut state,
        TensorRef::query(&small, [1, 1, 1, 4]).unwrap(),
        TensorRef::key(&small, [1, 1, 1, 4]).unwrap(),
        TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
    );
    assert!(matches!(again, Err(SataError::StatePoisoned { .. })));
    assert!(
        state.to_bytes().is_err(),
        "a poisoned state must not be checkpointed"
    );
    state.reset();
    let y = attention
        .decode(
            &mut state,
            TensorRef::query(&small, [1, 1, 1, 4]).unwrap(),
            TensorRef::key(&small, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap();
    assert_eq!(y.output.data, vec![1.0; 3]);
}

fn absorb_overflow_is_reported_too(backend: Backend) {
    let attention = backend.attention::<f32>(config());
    let mut state = attention.new_state(1, 1).unwrap();
    let huge = vec![1e30f32; 4];
    let v = vec![1.0f32; 3];
    let err = attention
        .absorb(
            &mut state,
            TensorRef::key(&huge, [1, 1, 1, 4]).unwrap(),
            TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, SataError::StatePoisoned { .. }));
    assert!(state.is_poisoned());
}

#[test]
fn cuda_without_a_gpu_and_f64_on_devices_are_clear_errors() {
    let cuda = Attention::<f32>::with_backend(config(), BackendRequest::Kind(BackendKind::Cuda));
    match sata::cuda::gpu_summary() {
        Ok(gpu) => assert!(cuda.is_ok(), "{gpu}: {cuda:?}"),
        Err(_) => {
            let err = cuda.unwrap_err();
            assert!(matches!(err, SataError::Cuda { .. }), "{err:?}");
            let line = err.to_string();
            assert!(line.starts_with("CUDA: "), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }
    for device in [BackendKind::Cuda, BackendKind::CudaHost, BackendKind::Wgpu] {
        let err =
            Attention::<f64>::with_backend(config(), BackendRequest::Kind(device)).unwrap_err();
        assert!(err.to_string().contains("float32"), "{err}");
    }
    let err = Attention::<f64>::with_backend(config(), BackendRequest::Kind(BackendKind::Wgpu))
        .unwrap_err();
    assert!(err.to_string().contains("float32"), "{err}");
    let cpu =
        Attention::<f32>::with_backend(config(), BackendRequest::Kind(BackendKind::Cpu)).unwrap();
    assert_eq!(cpu.selection().backend, BackendKind::CpuGeneric);
    assert!(
        cpu.selection().fallback.is_some(),
        "a fallback must be visible"
    );
}

every_backend!(
    non_positive_denominators_are_zeroed_and_counted_by_default,
    tiny_denominators_are_counted_on_every_backend,
    logit_bounds_follow_the_norms_of_queries_and_keys_on_every_backend,
    the_error_policy_fails_and_restores_the_state,
    a_state_from_another_config_is_refused,
    wrong_head_dimensions_are_named,
    batch_and_heads_must_match_the_state,
    causal_needs_one_query_per_key_and_decode_one_token,
    nan_and_infinity_in_any_input_are_rejected,
    an_output_buffer_of_the_wrong_size_is_an_error,
    overflow_poisons_the_state_visibly_until_reset,
    absorb_overflow_is_reported_too,
);
