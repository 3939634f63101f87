//! The CUDA backend's own API on the host execution of its kernels (the same source NVRTC
//! compiles for GPUs, run on the CPU): states that stay in the executor's memory across decode
//! steps, checkpoints moving between the CPU, CUDA and WGSL backends, shapes wider than a
//! block, and state handling. `scripts/gpu-check.sh` runs the same file on a GPU with
//! `SATA_CUDA_EXECUTOR=gpu`.

mod common;

use common::{Problem, problem, reference, rel_err, rng, widen};
use sata::cuda::{CudaAttention, CudaState, Executor, ThreadOrder};
use sata::{Attention, KernelConfig, SataError, State, TensorRef};

/// The executor under test: host execution, or the GPU when `SATA_CUDA_EXECUTOR=gpu`.
fn executor(order: ThreadOrder) -> Executor {
    match std::env::var("SATA_CUDA_EXECUTOR").as_deref() {
        Ok("gpu") => Executor::Gpu,
        _ => Executor::Host(order),
    }
}

fn cuda(config: KernelConfig, order: ThreadOrder) -> CudaAttention {
    CudaAttention::new(config, executor(order)).unwrap()
}

fn decode_steps(
    cuda: &CudaAttention,
    state: &mut CudaState,
    p: &Problem,
    start: usize,
) -> Vec<f64> {
    common::decode_steps(p, start, |q, k, v| {
        let y = cuda.decode(state, q, k, v).unwrap();
        assert_eq!(y.stats.bad_denominators, 0);
        y.output.data
    })
}

/// The CPU's state after a causal prefill of all of `p`.
fn cpu_state(p: &Problem) -> State<f32> {
    let cpu = Attention::<f32>::new(p.config()).unwrap();
    let mut state = cpu.new_state(p.batch, p.heads).unwrap();
    let (q, k, v) = p.f32_inputs();
    cpu.prefill(
        &mut state,
        TensorRef::query(&q, p.q_shape()).unwrap(),
        TensorRef::key(&k, p.k_shape()).unwrap(),
        TensorRef::value(&v, p.v_shape()).unwrap(),
    )
    .unwrap();
    state
}

#[test]
fn decode_on_a_resident_state_matches_the_reference_and_the_cpu_state() {
    // d16 P4 loops over its run table, d8 v5 P3 is straight-line; the second runs with its
    // threads in reverse order and its state dealt to four blocks per lane.
    let cases = [
        ((16, 16, 4), ThreadOrder::Forward, None),
        ((8, 5, 3), ThreadOrder::Reverse, Some(4)),
    ];
    for ((dk, dv, terms), order, split) in cases {
        let p = problem(
            &mut rng("cuda_decode"),
            (2, 2),
            (24, 24),
            (dk, dv, terms),
            1.0,
            true,
        )
        .rounded_to_f32();
        let mut cuda = cuda(p.config(), order);
        if let Some(split) = split {
            cuda = cuda.with_split(split);
        }
        let mut state = cuda.new_state(2, 2).unwrap();
        let got = decode_steps(&cuda, &mut state, &p, 0);
        let err = rel_err(&got, &reference(&p, true));
        assert!(err < 1e-5, "d{dk} v{dv} P{terms}: relative error {err:e}");
        assert_eq!(state.tokens(), 24);
        let host = cpu_state(&p);
        let device = state.download().unwrap();
        assert_eq!(device.tokens(), host.tokens());
        let err = rel_err(&widen(&device.as_slice()), &widen(&host.as_slice()));
        assert!(err < 1e-6, "state relative difference {err:e}");
    }
}

/// Tokens `range` of every lane of a `[lanes, n, dim]` tensor.
fn tokens(
    x: &[f32],
    lanes: usize,
    n: usize,
    dim: usize,
    range: std::ops::Range<usize>,
) -> Vec<f32> {
    (0..lanes)
        .flat_map(|l| x[(l * n + range.start) * dim..(l * n + range.end) * dim].to_vec())
        .collect()
}

#[test]
fn checkpoints_move_between_cpu_cuda_and_wgsl() {
    let p = problem(
        &mut rng("cuda_interchange"),
        (1, 3),
        (30, 30),
        (8, 8, 4),
        1.0,
        true,
    )
    .rounded_to_f32();
    let want = reference(&p, true);
    let (q, k, v) = p.f32_inputs();
    let (lanes, n, split) = (3, 30, 11);
    let cuda = cuda(p.config(), ThreadOrder::Forward);
    let cpu = Attention::<f32>::new(p.config()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.sata");
    let shape = |len| [1, 3, len, 8];
    let part = |x: &[f32], r: std::ops::Range<usize>| tokens(x, lanes, n, 8, r);
    for cpu_first in [true, false] {
        let (qa, ka, va) = (part(&q, 0..split), part(&k, 0..split), part(&v, 0..split));
        let (qa, ka, va) = (
            TensorRef::query(&qa, shape(split)).unwrap(),
            TensorRef::key(&ka, shape(split)).unwrap(),
            TensorRef::value(&va, shape(split)).unwrap(),
        );
        // The first `split` tokens on one side, saved to a checkpoint file.
        let head = if cpu_first {
            let mut s = cpu.new_state(1, 3).unwrap();
            let y = cpu.prefill(&mut s, qa, ka, va).unwrap();
            s.save(&file).unwrap();
            y.output.data
        } else {
            let mut s = cuda.new_state(1, 3).unwrap();
            let y = cuda.prefill(&mut s, qa, ka, va).unwrap();
            s.download().unwrap().save(&file).unwrap();
            y.output.data
        };
        let loaded = State::<f32>::load(&file).unwrap();
        assert_eq!(loaded.tokens(), split as u64);
        // The rest on the other side: decode steps on CUDA, one prefill on the CPU.
        let tail: Vec<f64> = if cpu_first {
            let mut s = cuda.upload(&loaded).unwrap();
            let steps = decode_steps(&cuda, &mut s, &p, split);
            assert_eq!(s.tokens(), n as u64);
            steps
        } else {
            let mut s = loaded;
            let (qb, kb, vb) = (part(&q, split..n), part(&k, split..n), part(&v, split..n));
            let y = cpu
                .prefill(
                    &mut s,
                    TensorRef::query(&qb, shape(n - split)).unwrap(),
                    TensorRef::key(&kb, shape(n - split)).unwrap(),
                    TensorRef::value(&vb, shape(n - split)).unwrap(),
                )
                .unwrap();
            widen(&y.output.data)
        };
        let got: Vec<f64> = (0..lanes)
            .flat_map(|l| {
                let a = head[l * split * 8..(l + 1) * split * 8]
                    .iter()
                    .map(|&x| f64::from(x));
                let b = tail[l * (n - split) * 8..(l + 1) * (n - split) * 8]
                    .iter()
                    .copied();
                a.chain(b).collect::<Vec<_>>()
            })
            .collect();
        let err = rel_err(&got, &want);
        assert!(err < 1e-5, "cpu first: {cpu_first}: relative error {err:e}");
    }
    // A state built by CUDA continues on the WGSL backend and back: same outputs.
    if common::wgpu_available() {
        let wgpu = sata::gpu::GpuAttention::new(p.config()).unwrap();
        let (qa, ka, va) = (part(&q, 0..split), part(&k, 0..split), part(&v, 0..split));
        let mut s = cuda.new_state(1, 3).unwrap();
        cuda.prefill(
            &mut s,
            TensorRef::query(&qa, shape(split)).unwrap(),
            TensorRef::key(&ka, shape(split)).unwrap(),
            TensorRef::value(&va, shape(split)).unwrap(),
        )
        .unwrap();
        let mut on_wgpu = wgpu.upload(&s.download().unwrap()).unwrap();
        let via_wgpu = common::decode_steps(&p, split, |q, k, v| {
            wgpu.decode(&mut on_wgpu, q, k, v).unwrap().output.data
        });
        let mut back = cuda.upload(&on_wgpu.download().unwrap()).unwrap();
        assert_eq!(back.tokens(), n as u64);
        let mut on_cuda = cuda.upload(&s.download().unwrap()).unwrap();
        let via_cuda = decode_steps(&cuda, &mut on_cuda, &p, split);
        let err = rel_err(&via_wgpu, &via_cuda);
        assert!(err < 1e-5, "wgpu vs cuda continuation: {err:e}");
        let err = rel_err(
            &widen(&back.download().unwrap().as_slice()),
            &widen(&on_cuda.download().unwrap().as_slice()),
        );
        assert!(err < 1e-6, "states after wgpu and cuda differ by {err:e}");
        back.reset().unwrap();
    }
}

#[test]
fn wide_values_and_keys_wider_than_the_block() {
    // d_v = 300: two columns per thread, the second ragged. d_k = 80 > 64 threads. Non-causal
    // and causal, against the reference, through `Attention` on host states.
    for (dk, dv, terms) in [(3, 300, 3), (80, 4, 3), (80, 4, 2)] {
        let config = KernelConfig::new(dk, dv, terms).unwrap();
        let attention = Attention::<f32>::with_cuda(cuda(config, ThreadOrder::Reverse)).unwrap();
        for causal in [false, true] {
            let n_q = if causal { 9 } else { 5 };
            let p = problem(
                &mut rng("cuda_wide"),
                (1, 2),
                (n_q, 9),
                (dk, dv, terms),
                1.0,
                causal,
            )
            .rounded_to_f32();
            let err = rel_err(
                &common::run_f32(&attention, &p, causal),
                &reference(&p, causal),
            );
            assert!(
                err < 1e-5,
                "d{dk} v{dv} P{terms} causal {causal}: relative error {err:e}"
            );
        }
    }
}

#[test]
fn states_check_their_config_and_executor_and_reset() {
    let config = KernelConfig::new(4, 3, 3).unwrap();
    let cuda = cuda(config, ThreadOrder::Forward);
    let other = State::<f32>::new(KernelConfig::new(4, 3, 2).unwrap(), 1, 1).unwrap();
    assert!(matches!(
        cuda.upload(&other).unwrap_err(),
        SataError::StateConfigMismatch { .. }
    ));
    assert!(matches!(
        cuda.new_state(0, 2).unwrap_err(),
        SataError::EmptyState { .. }
    ));
    let mut state = cuda.new_state(1, 1).unwrap();
    let x = [0.3f32, -0.2, 0.1, 0.5];
    let v = [1.0f32, 2.0, 3.0];
    cuda.absorb(
        &mut state,
        TensorRef::key(&x, [1, 1, 1, 4]).unwrap(),
        TensorRef::value(&v, [1, 1, 1, 3]).unwrap(),
    )
    .unwrap();
    assert_eq!(state.tokens(), 1);
    assert!(
        state
            .download()
            .unwrap()
            .as_slice()
            .iter()
            .any(|&w| w != 0.0)
    );
    // One key: the answer is its value exactly (up to rounding of v * w / w).
    let y = cuda
        .query(&state, TensorRef::query(&x, [1, 1, 1, 4]).unwrap())
        .unwrap();
    for (a, b) in y.output.data.iter().zip(v) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    state.reset().unwrap();
    assert_eq!(state.tokens(), 0);
    assert!(
        state
            .download()
            .unwrap()
            .as_slice()
            .iter()
            .all(|&w| w == 0.0)
    );
    // A query on an empty state has a zero denominator: counted, outputs zero.
    let y = cuda
        .query(&state, TensorRef::query(&x, [1, 1, 1, 4]).unwrap())
        .unwrap();
    assert_eq!(y.stats.bad_denominators, 1);
    assert_eq!(y.output.data, vec![0.0; 3]);
    // The path is named.
    assert!(
        cuda.describe_path().starts_with("cuda (kernel d4_v3_p3"),
        "{}",
        cuda.describe_path()
    );
}

#[test]
fn compensated_states_decode_like_the_cpu() {
    // The Kahan kernels (prefill and decode read the state before adding to it) against the
    // reference, and their state against the CPU's compensated state.
    let p = problem(
        &mut rng("cuda_kahan"),
        (1, 2),
        (20, 20),
        (8, 5, 3),
        1.0,
        true,
    )
    .rounded_to_f32();
    let cuda = cuda(p.config(), ThreadOrder::Reverse).with_split(3);
    let mut state = cuda
        .new_state_with(1, 2, sata::Accumulation::Compensated)
        .unwrap();
    let got = decode_steps(&cuda, &mut state, &p, 0);
    let err = rel_err(&got, &reference(&p, true));
    assert!(err < 1e-5, "relative error {err:e}");
    let cpu = Attention::<f32>::new(p.config()).unwrap();
    let mut host = cpu
        .new_state_with(1, 2, sata::Accumulation::Compensated)
        .unwrap();
    let (q, k, v) = p.f32_inputs();
    cpu.prefill(
        &mut host,
        TensorRef::query(&q, p.q_shape()).unwrap(),
        TensorRef::key(&k, p.k_shape()).unwrap(),
        TensorRef::value(&v, p.v_shape()).unwrap(),
    )
    .unwrap();
    let device = state.download().unwrap();
    assert_eq!(device.accumulation(), sata::Accumulation::Compensated);
    assert_eq!(device.as_slice().len(), host.as_slice().len());
    // Compare sum minus compensation: the best estimate of each exact sum on both sides.
    let exact = |s: &State<f32>| -> Vec<f64> {
        let lane = 2 * s.config().state_words_per_head();
        s.as_slice()
            .chunks_exact(lane)
            .flat_map(|l| {
                let (sums, comp) = l.split_at(lane / 2);
                sums.iter()
                    .zip(comp)
                    .map(|(&a, &c)| f64::from(a) - f64::from(c))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let err = rel_err(&exact(&device), &exact(&host));
    assert!(err < 1e-7, "compensated states differ by {err:e}");
}
