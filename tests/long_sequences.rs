//! Long sequences in f32: the state's running sums over millions of tokens, plain against
//! Kahan-compensated ([`Accumulation`]), checked against float64 sums of the same stream. Fast
//! enough for CI (a few million tokens through `absorb`); the 10^7-token decode soak against
//! an f64 run is `cargo bench --bench soak` (`docs/numerics.md`, "Long streams").

mod common;

use common::{normal, rel_err, rng};
use sata::codegen::Basis;
use sata::{Accumulation, Attention, BackendKind, BackendRequest, KernelConfig, TensorRef};

fn attention(config: KernelConfig, backend: BackendKind) -> Attention<f32> {
    Attention::with_backend(config, BackendRequest::Kind(backend)).unwrap()
}

/// Absorbs `tokens` copies of one key and value in blocks; returns the state's words.
fn absorb_constant(
    attention: &Attention<f32>,
    accumulation: Accumulation,
    tokens: usize,
) -> (Vec<f32>, u64) {
    let block = 1 << 21;
    let mut state = attention.new_state_with(1, 1, accumulation).unwrap();
    let (k, v) = (vec![0.5f32; block], vec![1.0f32; block]);
    let mut left = tokens;
    while left > 0 {
        let n = left.min(block);
        attention
            .absorb(
                &mut state,
                TensorRef::key(&k[..n], [1, 1, n, 1]).unwrap(),
                TensorRef::value(&v[..n], [1, 1, n, 1]).unwrap(),
            )
            .unwrap();
        left -= n;
    }
    (state.as_slice().to_vec(), state.tokens())
}

#[test]
fn the_order_zero_count_keeps_counting_past_two_to_the_24() {
    // P = 1, d_k = d_v = 1: the state is S[0] = sum of v (here 1 each) and Z[0] = the count.
    let config = KernelConfig::new(1, 1, 1).unwrap();
    let a = attention(config, BackendKind::CpuGeneric);
    let n = 20_000_000;
    let (plain, tokens) = absorb_constant(&a, Accumulation::Plain, n);
    assert_eq!(tokens, n as u64);
    // Plain f32 stops at 2^24: adding 1 to 16777216 rounds back to it.
    assert_eq!(plain[1], 16_777_216.0);
    let (words, _) = absorb_constant(&a, Accumulation::Compensated, n);
    // [S, Z, comp(S), comp(Z)]: the sum is within an ulp (2 at 2e7), and the sum minus its
    // compensation is the exact count.
    let (z, comp_z) = (f64::from(words[1]), f64::from(words[3]));
    assert!((z - n as f64).abs() <= 2.0, "Z[0] = {z}");
    assert_eq!(z - comp_z, n as f64);
    assert_eq!(f64::from(words[0]) - f64::from(words[2]), n as f64);
}

/// The f64 sums `S`, `Z` of a stream, with the basis's own feature map.
fn f64_state(config: &KernelConfig, k: &[f32], v: &[f32]) -> Vec<f64> {
    let basis = Basis::new(config);
    let (m, dk, dv) = (basis.len(), config.d_k(), config.d_v());
    let mut state = vec![0.0; m * (dv + 1)];
    let mut phi = vec![0.0; m];
    let widen = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    for (kt, vt) in k.chunks_exact(dk).zip(v.chunks_exact(dv)) {
        basis.features_into(&widen(kt), &mut phi);
        let (s, z) = state.split_at_mut(m * dv);
        for (j, &f) in phi.iter().enumerate() {
            for (c, &x) in vt.iter().enumerate() {
                s[j * dv + c] += f * f64::from(x);
            }
            z[j] += f;
        }
    }
    state
}

#[test]
fn compensated_sums_follow_float64_over_millions_of_tokens() {
    // A registry configuration, so the specialized kernel's compensated update runs too.
    let config = KernelConfig::new(4, 4, 3).unwrap();
    let n = 3_000_000;
    let mut r = rng("long_sequences");
    let to_f32 = |x: Vec<f64>| x.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    let k = to_f32(normal(&mut r, n * 4, 0.5));
    let v = to_f32(normal(&mut r, n * 4, 1.0));
    let want = f64_state(&config, &k, &v);
    let block = 500_000;
    for backend in [BackendKind::Cpu, BackendKind::CpuGeneric] {
        let a = attention(config, backend);
        let mut errors = Vec::new();
        for accumulation in [Accumulation::Plain, Accumulation::Compensated] {
            let mut state = a.new_state_with(1, 1, accumulation).unwrap();
            for (kb, vb) in k.chunks(block * 4).zip(v.chunks(block * 4)) {
                let len = kb.len() / 4;
                a.absorb(
                    &mut state,
                    TensorRef::key(kb, [1, 1, len, 4]).unwrap(),
                    TensorRef::value(vb, [1, 1, len, 4]).unwrap(),
                )
                .unwrap();
            }
            let sums: Vec<f64> = state.as_slice()[..want.len()]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            errors.push(rel_err(&sums, &want));
        }
        let (plain, compensated) = (errors[0], errors[1]);
        eprintln!("{backend}: state relative error, plain {plain:e}, compensated {compensated:e}");
        // Compensated sums are rounded once: an f32 ulp, whatever the length.
        assert!(compensated < 1e-7, "{backend}: compensated {compensated:e}");
        // Plain sums have drifted far beyond that by now (this is what the mode is for).
        assert!(plain > 20.0 * compensated, "{backend}: plain {plain:e}");
    }
}

#[test]
fn compensated_states_checkpoint_exactly_and_run_on_every_backend() {
    let config = KernelConfig::new(4, 4, 3).unwrap();
    let a = attention(config, BackendKind::Cpu);
    let mut r = rng("long_sequences_checkpoint");
    let to_f32 = |x: Vec<f64>| x.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    let (q, k, v) = (
        to_f32(normal(&mut r, 2 * 50 * 4, 0.5)),
        to_f32(normal(&mut r, 2 * 50 * 4, 0.5)),
        to_f32(normal(&mut r, 2 * 50 * 4, 1.0)),
    );
    let shape = [1, 2, 50, 4];
    let mut state = a.new_state_with(1, 2, Accumulation::Compensated).unwrap();
    let y = a
        .prefill(
            &mut state,
            TensorRef::query(&q, shape).unwrap(),
            TensorRef::key(&k, shape).unwrap(),
            TensorRef::value(&v, shape).unwrap(),
        )
        .unwrap();
    // The same outputs as a plain state (the sums differ by rounding only).
    let mut plain = a.new_state(1, 2).unwrap();
    let p = a
        .prefill(
            &mut plain,
            TensorRef::query(&q, shape).unwrap(),
            TensorRef::key(&k, shape).unwrap(),
            TensorRef::value(&v, shape).unwrap(),
        )
        .unwrap();
    let widen = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    assert!(rel_err(&widen(&y.output.data), &widen(&p.output.data)) < 1e-6);
    assert_eq!(state.as_slice().len(), 2 * plain.as_slice().len());
    let bytes = state.to_bytes().unwrap();
    assert_eq!(bytes[33], sata::checkpoint::LAYOUT_COMPENSATED);
    let back = sata::State::<f32>::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.accumulation(), Accumulation::Compensated);
    // Every backend takes it (a device copy keeps its compensation words) and answers as the
    // CPU does.
    let want = a
        .query(&state, TensorRef::query(&q, shape).unwrap())
        .unwrap();
    for device in [BackendKind::CudaHost, BackendKind::Wgpu] {
        if device == BackendKind::Wgpu && !common::wgpu_available() {
            continue;
        }
        let d = attention(config, device);
        let y = d
            .query(&state, TensorRef::query(&q, shape).unwrap())
            .unwrap();
        let err = rel_err(&widen(&y.output.data), &widen(&want.output.data));
        assert!(err < 1e-5, "{device}: {err:e}");
    }
}

#[test]
fn device_kernels_keep_the_same_compensated_state_as_the_cpu() {
    // A state built on the CPU continues on the CUDA kernels (host execution) and on the WGSL
    // kernels (llvmpipe). With Kahan sums on both sides it stays with float64 where plain f32
    // has drifted.
    let config = KernelConfig::new(4, 4, 3).unwrap();
    let n = 200_000;
    let mut r = rng("long_sequences_devices");
    let to_f32 = |x: Vec<f64>| x.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    let k = to_f32(normal(&mut r, n * 4, 0.5));
    let v = to_f32(normal(&mut r, n * 4, 1.0));
    let want = f64_state(&config, &k, &v);
    let cpu = attention(config, BackendKind::Cpu);
    let half = n / 2 * 4;
    let absorb = |a: &Attention<f32>, state: &mut sata::State<f32>, k: &[f32], v: &[f32]| {
        let len = k.len() / 4;
        a.absorb(
            state,
            TensorRef::key(k, [1, 1, len, 4]).unwrap(),
            TensorRef::value(v, [1, 1, len, 4]).unwrap(),
        )
        .unwrap();
    };
    for backend in [BackendKind::CudaHost, BackendKind::Wgpu] {
        if backend == BackendKind::Wgpu && !common::wgpu_available() {
            continue;
        }
        let device = attention(config, backend);
        let mut errors = Vec::new();
        for accumulation in [Accumulation::Plain, Accumulation::Compensated] {
            let mut state = cpu.new_state_with(1, 1, accumulation).unwrap();
            absorb(&cpu, &mut state, &k[..half], &v[..half]);
            absorb(&device, &mut state, &k[half..], &v[half..]);
            assert_eq!(state.tokens(), n as u64);
            assert_eq!(state.accumulation(), accumulation);
            let sums: Vec<f64> = state.as_slice()[..want.len()]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            errors.push(rel_err(&sums, &want));
        }
        eprintln!(
            "cpu then {backend}: plain {:e}, compensated {:e}",
            errors[0], errors[1]
        );
        assert!(errors[1] < 1e-7, "{backend}: compensated {:e}", errors[1]);
        assert!(
            errors[0] > 10.0 * errors[1],
            "{backend}: plain {:e}",
            errors[0]
        );
    }
}
