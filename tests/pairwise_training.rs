//! The training forward from an empty state (`Attention::forward_for_training_from_empty`)
//! and its backward, computed pair by pair or through features: both against the exact
//! float64 quadratic form and its closed-form gradients, against each other, with the same
//! statistics and zeroed queries, the same bits on any thread count, and typed errors.

mod common;

use common::gradients::exact_gradients;
use common::{Problem, normal, problem, problem_with_scale, reference, rel_err, rng, widen};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sata::{
    Attention, BackendKind, BackendRequest, DenominatorPolicy, Element, Gradients, KernelConfig,
    Mode, SataError, SequenceForm, TensorRef,
};

/// One training forward and backward of `p` (inputs of type `T`) with a random output
/// gradient: the outputs, the gradients, whether pairs ran, and the output gradient.
struct Step<T> {
    y: Vec<f64>,
    bad: usize,
    grads: Gradients<T>,
    pairs: bool,
    dy: Vec<f64>,
}

/// The output gradient comes from `seed`, so two steps on the same problem get the same one.
fn step<T: Element>(attention: &Attention<T>, p: &Problem, mode: Mode, seed: u64) -> Step<T> {
    let cast = |x: &[f64]| x.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
    let (q, k, v) = (cast(&p.q), cast(&p.k), cast(&p.v));
    let (y, saved) = attention
        .forward_for_training_from_empty(
            mode,
            TensorRef::query(&q, p.q_shape()).unwrap(),
            TensorRef::key(&k, p.k_shape()).unwrap(),
            TensorRef::value(&v, p.v_shape()).unwrap(),
        )
        .unwrap();
    let dy = normal(
        &mut StdRng::seed_from_u64(seed),
        p.lanes() * p.n_q * p.d_v,
        1.0,
    );
    let dy_t = cast(&dy);
    let shape = [p.batch, p.heads, p.n_q, p.d_v];
    let grads = attention
        .backward(
            &saved,
            TensorRef::output_gradient(&dy_t, shape).unwrap(),
            None,
        )
        .unwrap();
    let widen = |x: &[T]| x.iter().map(|x| x.widen()).collect::<Vec<f64>>();
    Step {
        y: widen(&y.output.data),
        bad: y.stats.bad_denominators,
        grads,
        pairs: saved.computed_pairs(),
        dy,
    }
}

/// `rel_err`, or the size of `a` where `b` is zero (P = 1 has no query or key gradient).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    if b.iter().all(|&x| x == 0.0) {
        a.iter().fold(0.0, |m, x| m.max(x.abs()))
    } else {
        rel_err(a, b)
    }
}

/// The largest relative error of a step's outputs and gradients against float64 on `p` (the
/// inputs as the step saw them).
fn worst_error<T: Element>(p: &Problem, mode: Mode, s: &Step<T>) -> f64 {
    let causal = mode == Mode::Causal;
    let exact = exact_gradients(p, &s.dy, causal);
    let widen = |x: &[T]| x.iter().map(|x| x.widen()).collect::<Vec<f64>>();
    [
        rel(&s.y, &reference(p, causal)),
        rel(&widen(&s.grads.dq.data), &exact.dq),
        rel(&widen(&s.grads.dk.data), &exact.dk),
        rel(&widen(&s.grads.dv.data), &exact.dv),
    ]
    .into_iter()
    // A NaN is the worst error, not one f64::max skips.
    .fold(
        0.0,
        |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
    )
}

/// A case: the mode, (queries, keys), (d_k, d_v, P) and a scale other than the default.
type Case = (Mode, (usize, usize), (usize, usize, usize), Option<f64>);

/// Causal over three blocks of queries (a partial last one) and non-causal with more keys than
/// queries; `d_k != d_v`, a non-default scale, P from 1 to 6.
fn shapes() -> Vec<Case> {
    vec![
        (Mode::Causal, (150, 150), (4, 3, 3), None),
        (Mode::Causal, (65, 65), (8, 8, 6), None),
        (Mode::Causal, (40, 40), (5, 7, 1), None),
        (Mode::Causal, (130, 130), (6, 2, 4), Some(1.7)),
        (Mode::NonCausal, (70, 131), (4, 6, 5), None),
        (Mode::NonCausal, (3, 200), (3, 3, 2), Some(0.9)),
    ]
}

fn random_problem(
    rng: &mut StdRng,
    mode: Mode,
    tokens: (usize, usize),
    sizes: (usize, usize, usize),
    scale: Option<f64>,
) -> Problem {
    let causal = mode == Mode::Causal;
    match scale {
        Some(c) => problem_with_scale(rng, (2, 2), tokens, sizes, c, 1.0, causal),
        None => problem(rng, (2, 2), tokens, sizes, 1.0, causal),
    }
}

#[test]
fn pairs_match_float64_in_f32_and_f64() {
    let mut rng = rng("pairs_match_float64_in_f32_and_f64");
    for (mode, tokens, sizes, scale) in shapes() {
        let p = random_problem(&mut rng, mode, tokens, sizes, scale);
        let f64_attention = Attention::<f64>::new(p.config())
            .unwrap()
            .with_sequence_form(SequenceForm::Pairs);
        let s = step(&f64_attention, &p, mode, 7);
        assert!(s.pairs, "{mode:?} {sizes:?}: pairs were asked for");
        assert!(s.grads.path.starts_with("cpu pairs"), "{}", s.grads.path);
        assert!(s.grads.d_initial_state.is_none());
        let err = worst_error(&p, mode, &s);
        assert!(err < 1e-12, "{mode:?} {sizes:?} f64: {err:e}");

        let f32_attention = Attention::<f32>::new(p.config())
            .unwrap()
            .with_sequence_form(SequenceForm::Pairs);
        let s = step(&f32_attention, &p, mode, 7);
        // Against float64 on the inputs as f32 holds them: only the outputs' rounding (and
        // the backward reading the rounded outputs) is left.
        let err = worst_error(&p.rounded_to_f32(), mode, &s);
        assert!(err < 1e-5, "{mode:?} {sizes:?} f32: {err:e}");
    }
}

#[test]
fn features_and_pairs_agree() {
    let mut rng = rng("features_and_pairs_agree");
    for (mode, tokens, sizes, scale) in shapes() {
        let p = random_problem(&mut rng, mode, tokens, sizes, scale).rounded_to_f32();
        let attention = |form| {
            Attention::<f32>::new(p.config())
                .unwrap()
                .with_sequence_form(form)
        };
        let pairs = step(&attention(SequenceForm::Pairs), &p, mode, 7);
        let features = step(&attention(SequenceForm::Features), &p, mode, 7);
        assert!(pairs.pairs && !features.pairs);
        assert!(features.grads.d_initial_state.is_none());
        assert_eq!(pairs.dy, features.dy);
        let tolerance =
            |name| exact_gradients(&p, &pairs.dy, mode == Mode::Causal).f32_tolerance(name, 1e-5);
        assert!(
            rel(&pairs.y, &features.y) < 2e-5,
            "{mode:?} {sizes:?} outputs"
        );
        for (name, a, b) in [
            ("dq", &pairs.grads.dq.data, &features.grads.dq.data),
            ("dk", &pairs.grads.dk.data, &features.grads.dk.data),
            ("dv", &pairs.grads.dv.data, &features.grads.dv.data),
        ] {
            let err = rel(&widen(a), &widen(b));
            assert!(
                err < 2.0 * tolerance(name),
                "{mode:?} {sizes:?} {name}: {err:e}"
            );
        }
    }
}

#[test]
fn auto_computes_pairs_where_they_cost_less() {
    let mut rng = rng("auto_computes_pairs_where_they_cost_less");
    // d16 P4: 969 features, 16,473 state words a lane; 64 tokens of pairs cost far less.
    let short = problem(&mut rng, (1, 2), (64, 64), (16, 16, 4), 1.0, true);
    // d2 P2: 3 features, 9 words a lane; 300 tokens of pairs cost far more.
    let long = problem(&mut rng, (1, 2), (300, 300), (2, 2, 2), 0.5, true);
    for (p, pairs) in [(&short, true), (&long, false)] {
        let attention = Attention::<f32>::new(p.config()).unwrap();
        assert_eq!(attention.sequence_form(), SequenceForm::Auto);
        let s = step(&attention, p, Mode::Causal, 7);
        assert_eq!(s.pairs, pairs, "d{} P{}", p.d_k, p.terms);
        assert!(worst_error(&p.rounded_to_f32(), Mode::Causal, &s) < 1e-5);
    }
    // A device backend computes features whatever the form asks.
    if let Ok(device) =
        Attention::<f32>::with_backend(short.config(), BackendRequest::Kind(BackendKind::CudaHost))
    {
        let device = device.with_sequence_form(SequenceForm::Pairs);
        let s = step(&device, &short, Mode::Causal, 7);
        assert!(!s.pairs);
        assert!(worst_error(&short.rounded_to_f32(), Mode::Causal, &s) < 1e-5);
    }
}

#[test]
fn bad_denominators_are_counted_and_get_no_gradient_in_both_forms() {
    // P = 2: T_2(x) = 1 + x, negative below x = -1; wide inputs make some denominators
    // negative.
    let mut rng = rng("bad_denominators_are_counted_and_get_no_gradient_in_both_forms");
    let config = KernelConfig::new(4, 3, 2).unwrap();
    let p = Problem {
        batch: 1,
        heads: 3,
        n_q: 40,
        n_k: 40,
        d_k: 4,
        d_v: 3,
        terms: 2,
        scale: 2.0,
        q: normal(&mut rng, 3 * 40 * 4, 1.5),
        k: normal(&mut rng, 3 * 40 * 4, 1.5),
        v: normal(&mut rng, 3 * 40 * 3, 1.0),
    };
    let run = |form| {
        let attention = Attention::<f64>::new(config)
            .unwrap()
            .with_sequence_form(form);
        step(&attention, &p, Mode::Causal, 7)
    };
    let (pairs, features) = (run(SequenceForm::Pairs), run(SequenceForm::Features));
    assert!(pairs.bad > 0, "the inputs should give bad denominators");
    assert_eq!(pairs.bad, features.bad);
    assert_eq!(pairs.grads.zeroed_queries, pairs.bad);
    assert_eq!(features.grads.zeroed_queries, features.bad);
    assert!(rel_err(&pairs.y, &features.y) < 1e-9);
    assert!(rel_err(&pairs.grads.dq.data, &features.grads.dq.data) < 1e-9);

    // With the error policy the call fails with the count.
    let strict = Attention::<f64>::new(config)
        .unwrap()
        .with_sequence_form(SequenceForm::Pairs)
        .with_denominator_policy(DenominatorPolicy::Error);
    let err = strict
        .forward_for_training_from_empty(
            Mode::Causal,
            TensorRef::query(&p.q, p.q_shape()).unwrap(),
            TensorRef::key(&p.k, p.k_shape()).unwrap(),
            TensorRef::value(&p.v, p.v_shape()).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, SataError::NonPositiveDenominator { count, .. } if count == pairs.bad),
        "{err}"
    );
}

#[test]
fn pairs_give_the_same_bits_on_any_thread_count() {
    let mut rng = rng("pairs_give_the_same_bits_on_any_thread_count");
    // Enough lanes and pairs to run in parallel (the threshold is 2^21 words times tokens).
    let p = problem(&mut rng, (8, 8), (200, 200), (16, 16, 4), 1.0, true).rounded_to_f32();
    let bits = |threads: usize| {
        let attention = Attention::<f32>::new(p.config())
            .unwrap()
            .with_threads(threads)
            .unwrap()
            .with_sequence_form(SequenceForm::Pairs);
        let s = step(&attention, &p, Mode::Causal, 7);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        let y: Vec<u64> = s.y.iter().map(|v| v.to_bits()).collect();
        (
            y,
            bits(&s.grads.dq.data),
            bits(&s.grads.dk.data),
            bits(&s.grads.dv.data),
        )
    };
    let one = bits(1);
    assert_eq!(one, bits(2));
    assert_eq!(one, bits(3));
}

#[test]
fn a_final_state_gradient_runs_the_features_backward() {
    // A record from an empty start that computed pairs, given a gradient of the final state:
    // the backward needs the state, so it runs on features, and matches a forward on a fresh
    // state with the same final-state gradient.
    let mut rng = rng("a_final_state_gradient_runs_the_features_backward");
    let p = problem(&mut rng, (1, 2), (30, 30), (4, 4, 3), 1.0, true);
    let attention = Attention::<f64>::new(p.config())
        .unwrap()
        .with_sequence_form(SequenceForm::Pairs);
    let qkv = || {
        (
            TensorRef::query(&p.q, p.q_shape()).unwrap(),
            TensorRef::key(&p.k, p.k_shape()).unwrap(),
            TensorRef::value(&p.v, p.v_shape()).unwrap(),
        )
    };
    let (q, k, v) = qkv();
    let (_, empty) = attention
        .forward_for_training_from_empty(Mode::Causal, q, k, v)
        .unwrap();
    assert!(empty.computed_pairs());
    let mut state = attention.new_state(1, 2).unwrap();
    let (q, k, v) = qkv();
    let (_, fresh) = attention
        .forward_for_training(&mut state, Mode::Causal, q, k, v)
        .unwrap();
    let dy = normal(&mut rng, 2 * 30 * 4, 1.0);
    let dy = TensorRef::output_gradient(&dy, [1, 2, 30, 4]).unwrap();
    let mut d_final = sata::StateGradient::zeros(*attention.config(), 1, 2);
    d_final.data = normal(&mut rng, d_final.data.len(), 0.1);
    let a = attention.backward(&empty, dy, Some(&d_final)).unwrap();
    let b = attention.backward(&fresh, dy, Some(&d_final)).unwrap();
    assert!(!a.path.starts_with("cpu pairs"), "{}", a.path);
    assert!(a.d_initial_state.is_none() && b.d_initial_state.is_some());
    for (x, y) in [(&a.dq, &b.dq), (&a.dk, &b.dk), (&a.dv, &b.dv)] {
        assert!(rel_err(&x.data, &y.data) < 1e-12);
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let config = KernelConfig::new(4, 2, 3).unwrap();
    let attention = Attention::<f32>::new(config)
        .unwrap()
        .with_sequence_form(SequenceForm::Pairs);
    let good = vec![0.1f32; 2 * 5 * 4];
    let values = vec![0.5f32; 2 * 5 * 2];
    let mut nan = good.clone();
    nan[7] = f32::NAN;
    let run = |q: &[f32], q_tokens: usize, mode: Mode| {
        attention.forward_for_training_from_empty(
            mode,
            TensorRef::query(q, [1, 2, q_tokens, 4])?,
            TensorRef::key(&good, [1, 2, 5, 4])?,
            TensorRef::value(&values, [1, 2, 5, 2])?,
        )
    };
    assert!(matches!(
        run(&nan, 5, Mode::Causal),
        Err(SataError::NonFinite { .. })
    ));
    // Causal needs as many queries as keys.
    assert!(matches!(
        run(&good[..2 * 4 * 4], 4, Mode::Causal),
        Err(SataError::TokenMismatch { .. })
    ));
    // Non-causal takes any number of queries.
    let (y, _) = run(&good[..2 * 4 * 4], 4, Mode::NonCausal).unwrap();
    assert_eq!(y.output.shape.as_array(), [1, 2, 4, 2]);
}

#[test]
fn no_keys_or_no_queries_answer_as_features_do() {
    let config = KernelConfig::new(3, 2, 3).unwrap();
    let q = [0.3f32, -0.2, 0.1, 0.5, 0.0, -0.4];
    let run = |form, (queries, keys): (usize, usize)| {
        let attention = Attention::<f32>::new(config)
            .unwrap()
            .with_sequence_form(form);
        let k = vec![0.25f32; keys * 3];
        let v = vec![0.5f32; keys * 2];
        let (y, saved) = attention.forward_for_training_from_empty(
            Mode::NonCausal,
            TensorRef::query(&q[..queries * 3], [1, 1, queries, 3])?,
            TensorRef::key(&k, [1, 1, keys, 3])?,
            TensorRef::value(&v, [1, 1, keys, 2])?,
        )?;
        let dy = vec![1.0f32; queries * 2];
        let dy = TensorRef::output_gradient(&dy, [1, 1, queries, 2])?;
        let g = attention.backward(&saved, dy, None)?;
        Ok::<_, SataError>((
            y.output.data,
            y.stats.bad_denominators,
            g.dq.data,
            g.dk.data,
        ))
    };
    for sizes in [(2, 0), (0, 3)] {
        let (pairs, features) = (
            run(SequenceForm::Pairs, sizes),
            run(SequenceForm::Features, sizes),
        );
        assert_eq!(format!("{pairs:?}"), format!("{features:?}"), "{sizes:?}");
    }
}
