//! The CPU backends on several threads: bit-identical results for any thread count (the work
//! is decomposed by lane, not by schedule), the thread count visible in the path, typed errors
//! for an impossible pool, and one `Attention` shared by threads.

mod common;

use common::{normal, rng};
use sata::{
    Attention, BackendKind, BackendRequest, Element, KernelConfig, Mode, SataError, TensorRef,
};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn attention_is_send_and_sync() {
    assert_send_sync::<Attention<f32>>();
    assert_send_sync::<Attention<f64>>();
}

/// Fresh random inputs of `2 x heads` lanes of `n` tokens, widest dimension `d`, cut to size
/// by [`run`].
struct Inputs {
    heads: usize,
    n: usize,
    data: [Vec<f64>; 4],
}

fn inputs(heads: usize, n: usize, d: usize) -> Inputs {
    let mut rng = rng("threads");
    let data = std::array::from_fn(|_| normal(&mut rng, 2 * heads * n * d, 0.5));
    Inputs { heads, n, data }
}

/// Everything one run computes: a causal prefill after an absorb, a query, and the backward
/// of a training forward, as raw bits.
fn run<T: Element>(attention: &Attention<T>, inputs: &Inputs) -> Vec<u64> {
    let config = *attention.config();
    let (dk, dv) = (config.d_k(), config.d_v());
    let (heads, n) = (inputs.heads, inputs.n);
    let cast = |x: &[f64], d: usize| {
        x[..2 * heads * n * d]
            .iter()
            .map(|&v| T::from_f64(v))
            .collect::<Vec<T>>()
    };
    let [q, k, v, dy] = &inputs.data;
    let (q, k, v, dy) = (cast(q, dk), cast(k, dk), cast(v, dv), cast(dy, dv));
    let shape = |d| [2, heads, n, d];
    let (q, k, v) = (
        TensorRef::query(&q, shape(dk)).unwrap(),
        TensorRef::key(&k, shape(dk)).unwrap(),
        TensorRef::value(&v, shape(dv)).unwrap(),
    );
    let mut state = attention.new_state(2, heads).unwrap();
    attention.absorb(&mut state, k, v).unwrap();
    let y = attention.prefill(&mut state, q, k, v).unwrap();
    let z = attention.query(&state, q).unwrap();
    let mut fresh = attention.new_state(2, heads).unwrap();
    let (_, saved) = attention
        .forward_for_training(&mut fresh, Mode::Causal, q, k, v)
        .unwrap();
    let dy = TensorRef::output_gradient(&dy, shape(dv)).unwrap();
    let g = attention.backward(&saved, dy, None).unwrap();
    assert_eq!(y.stats.queries, 2 * heads * n);
    let bits = |x: &[T]| x.iter().map(|v| v.widen().to_bits()).collect::<Vec<u64>>();
    [
        bits(&y.output.data),
        bits(&z.output.data),
        bits(&state.as_slice()),
        bits(&g.dq.data),
        bits(&g.dk.data),
        bits(&g.dv.data),
        bits(
            &g.d_initial_state
                .as_ref()
                .expect("a forward on a state")
                .data,
        ),
        vec![
            y.stats.min_denominator.to_bits(),
            z.stats.min_denominator.to_bits(),
        ],
    ]
    .concat()
}

fn identical_for_any_thread_count<T: Element>(request: BackendRequest, config: KernelConfig) {
    // 2 x 8 lanes of 80 tokens at d16 P4: above the threshold that keeps small calls on the
    // calling thread (`PARALLEL_MIN_WORK`).
    identical_with_lanes::<T>(
        request,
        config,
        inputs(8, 80, config.d_k().max(config.d_v())),
    );
}

/// [`run`] on `x` gives the same bits on 1, 2, 3 and 5 threads and on rayon's global pool.
fn identical_with_lanes<T: Element>(request: BackendRequest, config: KernelConfig, x: Inputs) {
    let one = Attention::<T>::with_backend(config, request)
        .unwrap()
        .with_threads(1)
        .unwrap();
    assert!(
        one.describe_path().ends_with(", 1 thread"),
        "{}",
        one.describe_path()
    );
    let want = run(&one, &x);
    for threads in [2, 3, 5] {
        let many = Attention::<T>::with_backend(config, request)
            .unwrap()
            .with_threads(threads)
            .unwrap();
        let path = many.describe_path();
        assert!(path.ends_with(&format!(", {threads} threads")), "{path}");
        assert!(run(&many, &x) == want, "{threads} threads: {path}");
    }
    // Rayon's global pool too.
    let global = Attention::<T>::with_backend(config, request).unwrap();
    assert!(run(&global, &x) == want);
}

#[test]
fn specialized_kernels_are_bit_identical_for_any_thread_count() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    let request = BackendRequest::Kind(BackendKind::Cpu);
    identical_for_any_thread_count::<f32>(request, config);
}

#[test]
fn the_generic_path_is_bit_identical_for_any_thread_count() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    let request = BackendRequest::Kind(BackendKind::CpuGeneric);
    identical_for_any_thread_count::<f64>(request, config);
    identical_for_any_thread_count::<f32>(request, config);
}

/// Two lanes of 1,100 tokens: on 3 and 5 threads each lane splits its chunks over the pool
/// (fewer lanes than threads), on 2 the lanes run side by side; the bits stay the same.
#[test]
fn long_lanes_split_their_chunks_with_the_same_bits() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    for kind in [BackendKind::Cpu, BackendKind::CpuGeneric] {
        let request = BackendRequest::Kind(kind);
        let a = Attention::<f32>::with_backend(config, request).unwrap();
        assert!(
            a.describe_path().contains("chunks of 64"),
            "{}",
            a.describe_path()
        );
        identical_with_lanes::<f32>(request, config, inputs(1, 1100, 16));
    }
}

/// Decode steps of 2 x 64 lanes at d16 P4 (2^21 state words: parallel at the default
/// threshold) give the same outputs and states on 1, 2 and 3 threads.
#[test]
fn decode_steps_are_bit_identical_for_any_thread_count() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    let (batch, heads, steps) = (2, 64, 3);
    let mut rng = rng("decode_steps_are_bit_identical_for_any_thread_count");
    let tokens: Vec<[Vec<f32>; 3]> = (0..steps)
        .map(|_| {
            std::array::from_fn(|_| {
                normal(&mut rng, batch * heads * 16, 0.5)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect()
            })
        })
        .collect();
    let decode = |threads: usize| {
        let attention = Attention::<f32>::new(config)
            .unwrap()
            .with_threads(threads)
            .unwrap();
        let mut state = attention.new_state(batch, heads).unwrap();
        let mut bits = Vec::new();
        for [q, k, v] in &tokens {
            let shape = [batch, heads, 1, 16];
            let y = attention
                .decode(
                    &mut state,
                    TensorRef::query(q, shape).unwrap(),
                    TensorRef::key(k, shape).unwrap(),
                    TensorRef::value(v, shape).unwrap(),
                )
                .unwrap();
            bits.extend(y.output.data.iter().map(|x| x.to_bits()));
        }
        bits.extend(state.as_slice().iter().map(|x| x.to_bits()));
        bits
    };
    let want = decode(1);
    for threads in [2, 3] {
        assert!(decode(threads) == want, "{threads} threads");
    }
}

#[test]
fn no_threads_is_a_typed_error() {
    let config = KernelConfig::new(4, 4, 2).unwrap();
    let err = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(0)
        .unwrap_err();
    assert!(matches!(err, SataError::InvalidThreads { .. }), "{err}");
}

#[test]
fn one_attention_serves_several_threads() {
    let config = KernelConfig::new(16, 16, 4).unwrap();
    let attention = Attention::<f32>::new(config)
        .unwrap()
        .with_threads(2)
        .unwrap();
    let x = inputs(8, 80, 16);
    let want = run(&attention, &x);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..3).map(|_| s.spawn(|| run(&attention, &x))).collect();
        for r in runs {
            assert!(r.join().unwrap() == want);
        }
    });
}
