//! The backward against complex-step derivatives of an exact reference computed here, not by the
//! recurrence under test: `L = sum_t dy_t · y_t (+ <dS_final, S_final>)` with `y_t` from the
//! quadratic form `sum_p (q·k)^p / (p! c^p)` over the call's keys, plus the starting state read
//! through the monomial basis enumerated by brute force. Derivatives by complex step
//! (`Im L(x + ih) / h`, exact to rounding), for every coordinate of q, k, v and of the
//! starting state. The forward runs on every backend (`common::backends`) with the reference
//! backward in f64, and the generated backward of `#[sata::kernel]` kernels runs on every
//! instruction set; P = 1..6, d_k != d_v, causal with a context already in the state,
//! non-causal cross attention, batch and heads > 1.

mod common;

use common::backends::{Backend, every_backend};
use common::{Problem, gradients, normal, problem, rng};
use sata::{
    Attention, BackendKind, BackendRequest, Element, Isa, KernelConfig, Mode, SataError,
    SpecializedKernel, State, StateGradient, TensorRef,
};

// Specialized kernels for every configuration of `CONFIGS`, and two whose rows fill a vector
// and leave a tail, so that the generated backward is checked like the reference one.
#[sata::kernel(d_k = 3, d_v = 2, terms = 1)]
struct K3x2p1;
#[sata::kernel(d_k = 4, d_v = 3, terms = 2)]
struct K4x3p2;
#[sata::kernel(d_k = 3, d_v = 5, terms = 3)]
struct K3x5p3;
#[sata::kernel(d_k = 4, d_v = 2, terms = 4)]
struct K4x2p4;
#[sata::kernel(d_k = 2, d_v = 3, terms = 5)]
struct K2x3p5;
#[sata::kernel(d_k = 2, d_v = 2, terms = 6)]
struct K2x2p6;
#[sata::kernel(d_k = 3, d_v = 9, terms = 3)]
struct K3x9p3;
#[sata::kernel(d_k = 5, d_v = 17, terms = 2)]
struct K5x17p2;

static KERNELS: &[&dyn SpecializedKernel] = &[
    &K3x2p1, &K4x3p2, &K3x5p3, &K4x2p4, &K2x3p5, &K2x2p6, &K3x9p3, &K5x17p2,
];

/// A complex number: just what the reference needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct C(f64, f64);

impl std::ops::Add for C {
    type Output = C;
    fn add(self, o: C) -> C {
        C(self.0 + o.0, self.1 + o.1)
    }
}

impl std::ops::Mul for C {
    type Output = C;
    fn mul(self, o: C) -> C {
        C(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
}

impl std::ops::Div for C {
    type Output = C;
    fn div(self, o: C) -> C {
        let d = o.0 * o.0 + o.1 * o.1;
        C(
            (self.0 * o.0 + self.1 * o.1) / d,
            (self.1 * o.0 - self.0 * o.1) / d,
        )
    }
}

fn re(x: f64) -> C {
    C(x, 0.0)
}

/// The sorted index tuples of every order `< terms`, in lexicographic order per order, and each
/// one's weight `1 / (prod(count!) c^p)` (= `C_p / (p! c^p)`).
fn monomials(d: usize, terms: usize, scale: f64) -> Vec<(Vec<usize>, f64)> {
    let mut out = vec![(vec![], 1.0)];
    let mut order: Vec<Vec<usize>> = vec![vec![]];
    for p in 1..terms {
        let mut next = Vec::new();
        for m in &order {
            let start = m.last().copied().unwrap_or(0);
            for i in start..d {
                let mut n = m.clone();
                n.push(i);
                next.push(n);
            }
        }
        for m in &next {
            let mut counts = vec![0u32; d];
            m.iter().for_each(|&i| counts[i] += 1);
            let fact: f64 = counts
                .iter()
                .map(|&c| (1..=c).map(f64::from).product::<f64>())
                .product();
            out.push((m.clone(), 1.0 / (fact * scale.powi(p as i32))));
        }
        order = next;
    }
    out
}

/// One lane's inputs, complex.
struct Lane {
    q: Vec<C>,
    k: Vec<C>,
    v: Vec<C>,
    /// The starting state: `S` (`m x d_v`), then `Z` (`m`).
    s0: Vec<C>,
}

struct Reference<'a> {
    p: &'a Problem,
    basis: Vec<(Vec<usize>, f64)>,
    causal: bool,
}

impl Reference<'_> {
    fn phi(&self, x: &[C], j: usize) -> C {
        self.basis[j].0.iter().fold(re(1.0), |a, &i| a * x[i])
    }

    fn kappa(&self, q: &[C], k: &[C]) -> C {
        let x = q.iter().zip(k).fold(re(0.0), |a, (&a1, &b1)| a + a1 * b1) * re(1.0 / self.p.scale);
        let (mut term, mut sum) = (re(1.0), re(1.0));
        for n in 1..self.p.terms {
            term = term * x * re(1.0 / n as f64);
            sum = sum + term;
        }
        sum
    }

    /// `sum_t dy_t · y_t + <d_final, S_final>` of one lane.
    fn loss(&self, l: &Lane, dy: &[f64], d_final: Option<&[f64]>) -> C {
        let (dk, dv, m) = (self.p.d_k, self.p.d_v, self.basis.len());
        let (nq, nk) = (l.q.len() / dk, l.k.len() / dk);
        let mut total = re(0.0);
        for t in 0..nq {
            let qt = &l.q[t * dk..(t + 1) * dk];
            let mut num = vec![re(0.0); dv];
            let mut den = re(0.0);
            for j in 0..m {
                let w = self.phi(qt, j) * re(self.basis[j].1);
                for (c, n) in num.iter_mut().enumerate() {
                    *n = *n + w * l.s0[j * dv + c];
                }
                den = den + w * l.s0[m * dv + j];
            }
            let visible = if self.causal { t + 1 } else { nk };
            for s in 0..visible {
                let w = self.kappa(qt, &l.k[s * dk..(s + 1) * dk]);
                for (c, n) in num.iter_mut().enumerate() {
                    *n = *n + w * l.v[s * dv + c];
                }
                den = den + w;
            }
            for (c, n) in num.into_iter().enumerate() {
                total = total + re(dy[t * dv + c]) * (n / den);
            }
        }
        if let Some(g) = d_final {
            for j in 0..m {
                let mut z = l.s0[m * dv + j];
                let mut s: Vec<C> = (0..dv).map(|c| l.s0[j * dv + c]).collect();
                for t in 0..nk {
                    let f = self.phi(&l.k[t * dk..(t + 1) * dk], j);
                    for (c, sc) in s.iter_mut().enumerate() {
                        *sc = *sc + f * l.v[t * dv + c];
                    }
                    z = z + f;
                }
                for (c, sc) in s.into_iter().enumerate() {
                    total = total + re(g[j * dv + c]) * sc;
                }
                total = total + re(g[m * dv + j]) * z;
            }
        }
        total
    }

    /// Complex-step derivatives of [`Reference::loss`] with respect to every coordinate of
    /// one field of the lane.
    fn gradient(
        &self,
        lane: &mut Lane,
        field: fn(&mut Lane) -> &mut Vec<C>,
        dy: &[f64],
        d_final: Option<&[f64]>,
    ) -> Vec<f64> {
        let h = 1e-30;
        let n = field(lane).len();
        (0..n)
            .map(|i| {
                field(lane)[i].1 = h;
                let g = self.loss(lane, dy, d_final).1 / h;
                field(lane)[i].1 = 0.0;
                g
            })
            .collect()
    }
}

/// `||a - b|| / ||b||`, or the absolute norm when `b` is (nearly) zero.
/// The gradient of the state a forward on a state started from.
fn initial_gradient<T>(g: &sata::Gradients<T>) -> &sata::StateGradient<T> {
    g.d_initial_state
        .as_ref()
        .expect("a forward on a state has an initial-state gradient")
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-30)).sqrt()
}

/// Tokens `range` of every lane of a `[lanes, n, dim]` tensor.
fn part(x: &[f64], lanes: usize, n: usize, dim: usize, r: std::ops::Range<usize>) -> Vec<f64> {
    (0..lanes)
        .flat_map(|l| x[(l * n + r.start) * dim..(l * n + r.end) * dim].to_vec())
        .collect()
}

/// Forward on `attention` (causal over the last tokens of `p`, after a context of its first
/// ones absorbed into the state; or non-causal with a context), backward, and every gradient
/// against complex steps. Returns the largest relative error.
fn check<T: Element>(
    attention: &Attention<T>,
    p: &Problem,
    mode: Mode,
    context: usize,
    with_final: bool,
) -> f64 {
    let cast = |x: &[f64]| x.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    let widen = |x: &[T]| x.iter().map(|v| v.widen()).collect::<Vec<f64>>();
    let (lanes, dk, dv) = (p.lanes(), p.d_k, p.d_v);
    let causal = mode == Mode::Causal;
    let forward = forward_after_context(attention, p, mode, context);
    let TrainingForward {
        q,
        k,
        v,
        nq,
        nk,
        s0,
        ref saved,
        ..
    } = forward;
    assert_eq!(forward.attended.stats.bad_denominators, 0);
    assert_eq!(forward.state.tokens(), (context + nk) as u64);
    let shape = |n, d| [p.batch, p.heads, n, d];
    let mut rng = rng("gradients_dy");
    let dy = cast(&normal(&mut rng, lanes * nq * dv, 1.0));
    let per_lane = p.config().state_words_per_head();
    let d_final = with_final.then(|| StateGradient {
        config: p.config(),
        batch: p.batch,
        heads: p.heads,
        data: cast(&normal(&mut rng, lanes * per_lane, 0.1)),
    });
    let g = attention
        .backward(
            saved,
            TensorRef::output_gradient(&dy, shape(nq, dv)).unwrap(),
            d_final.as_ref(),
        )
        .unwrap();
    assert_eq!(g.zeroed_queries, 0);
    assert_eq!(g.path, expected_backward_path(attention));
    let reference = Reference {
        p,
        basis: monomials(dk, p.terms, p.scale),
        causal,
    };
    let complex = |x: &[f64]| x.iter().map(|&a| re(a)).collect::<Vec<C>>();
    let (q, k, v, dy) = (widen(&q), widen(&k), widen(&v), widen(&dy));
    let d_final = d_final.map(|d| widen(&d.data));
    let mut worst = 0.0f64;
    for lane in 0..lanes {
        let mut l = Lane {
            q: complex(&q[lane * nq * dk..(lane + 1) * nq * dk]),
            k: complex(&k[lane * nk * dk..(lane + 1) * nk * dk]),
            v: complex(&v[lane * nk * dv..(lane + 1) * nk * dv]),
            s0: complex(&s0[lane * per_lane..(lane + 1) * per_lane]),
        };
        let dy = &dy[lane * nq * dv..(lane + 1) * nq * dv];
        let df = d_final
            .as_ref()
            .map(|d| &d[lane * per_lane..(lane + 1) * per_lane]);
        let got = |x: &[T], n: usize| widen(&x[lane * n..(lane + 1) * n]);
        let checks = [
            (
                reference.gradient(&mut l, |l| &mut l.q, dy, df),
                got(&g.dq.data, nq * dk),
            ),
            (
                reference.gradient(&mut l, |l| &mut l.k, dy, df),
                got(&g.dk.data, nk * dk),
            ),
            (
                reference.gradient(&mut l, |l| &mut l.v, dy, df),
                got(&g.dv.data, nk * dv),
            ),
            (
                reference.gradient(&mut l, |l| &mut l.s0, dy, df),
                got(&initial_gradient(&g).data, per_lane),
            ),
        ];
        for (want, got) in checks {
            worst = worst.max(rel(&got, &want));
        }
    }
    worst
}

/// (d_k, d_v, P): every P from 1 to 6, d_k != d_v.
const CONFIGS: [(usize, usize, usize); 6] = [
    (3, 2, 1),
    (4, 3, 2),
    (3, 5, 3),
    (4, 2, 4),
    (2, 3, 5),
    (2, 2, 6),
];

fn every_mode<T: Element>(attention: impl Fn(KernelConfig) -> Attention<T>, tolerance: f64) {
    every_mode_of(&CONFIGS, attention, tolerance);
}

fn every_mode_of<T: Element>(
    configs: &[(usize, usize, usize)],
    attention: impl Fn(KernelConfig) -> Attention<T>,
    tolerance: f64,
) {
    let mut rng = rng("gradients");
    for &(dk, dv, terms) in configs {
        for (mode, with_final) in [
            (Mode::Causal, false),
            (Mode::NonCausal, true),
            (Mode::Causal, true),
        ] {
            let causal = mode == Mode::Causal;
            // Causal: 9 tokens, the first 3 absorbed before the call; non-causal: 5 queries
            // against a context of 2 keys and 6 in the call.
            let (n_q, n_k) = if causal { (9, 9) } else { (5, 8) };
            let p = problem(&mut rng, (2, 2), (n_q, n_k), (dk, dv, terms), 1.0, causal);
            let attention = attention(p.config());
            let context = if causal { 3 } else { 2 };
            let err = check(&attention, &p, mode, context, with_final);
            if std::env::var_os("SATA_SHOW_ERR").is_some() {
                eprintln!(
                    "{} d{dk} v{dv} P{terms} {mode:?} final {with_final}: {err:e}",
                    T::DTYPE
                );
            }
            assert!(
                err <= tolerance,
                "{} d{dk} v{dv} P{terms} {mode:?}: relative error {err:e} > {tolerance:e}",
                T::DTYPE
            );
        }
    }
}

fn forward_on_the_backend_backward_against_complex_steps(backend: Backend) {
    every_mode::<f32>(|config| backend.attention(config), 1e-4);
}

every_backend!(
    forward_on_the_backend_backward_against_complex_steps,
    registry_sizes_on_the_backend_against_the_reference
);

#[test]
fn generated_backward_against_complex_steps_on_every_isa() {
    let configs: Vec<_> = KERNELS
        .iter()
        .map(|k| {
            let d = k.descriptor();
            (d.d_k, d.d_v, d.terms)
        })
        .collect();
    for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
        let kernel = |config: KernelConfig| {
            let kernel = KERNELS
                .iter()
                .find(|k| k.descriptor().matches(&config))
                .expect("a kernel per configuration");
            let attention = Attention::<f32>::with_kernel(*kernel)
                .unwrap()
                .with_isa(isa)
                .unwrap();
            assert!(attention.describe_path().contains(isa.name()));
            attention
        };
        every_mode_of(&configs, kernel, 1e-4);
    }
}

#[test]
fn generic_f64_backward_against_complex_steps() {
    every_mode::<f64>(
        |config| {
            Attention::with_backend(config, BackendRequest::Kind(BackendKind::CpuGeneric)).unwrap()
        },
        1e-9,
    );
}

#[test]
fn queries_with_a_non_positive_denominator_get_no_gradient() {
    // P = 2, c = 2: the first query sees only the first key, anti-aligned (q·k/c = -2, weight
    // -1); the second sees both keys with positive weights.
    let config = KernelConfig::new(4, 3, 2).unwrap();
    let attention = Attention::<f64>::new(config).unwrap();
    let mut state = attention.new_state(1, 1).unwrap();
    let q = [-2.0, 0.0, 0.0, 0.0, 0.3, 0.2, 0.0, 0.0];
    let k = [2.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
    let v = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
    let shape = |d| [1, 1, 2, d];
    let (y, saved) = attention
        .forward_for_training(
            &mut state,
            Mode::Causal,
            TensorRef::query(&q, shape(4)).unwrap(),
            TensorRef::key(&k, shape(4)).unwrap(),
            TensorRef::value(&v, shape(3)).unwrap(),
        )
        .unwrap();
    assert_eq!(y.stats.bad_denominators, 1);
    assert!(saved.denominators()[0] < 0.0);
    let dy = [1.0; 6];
    let g = attention
        .backward(
            &saved,
            TensorRef::output_gradient(&dy, shape(3)).unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(g.zeroed_queries, 1);
    // The bad query's own gradient is zero; the second query still has one.
    assert_eq!(&g.dq.data[..4], &[0.0; 4]);
    assert!(g.dq.data[4..].iter().any(|&x| x != 0.0));
}

#[test]
fn bad_gradients_and_foreign_records_are_typed_errors() {
    let config = KernelConfig::new(4, 3, 3).unwrap();
    let attention = Attention::<f32>::new(config).unwrap();
    let mut state = attention.new_state(1, 2).unwrap();
    let x = vec![0.1f32; 2 * 5 * 4];
    let v = vec![0.5f32; 2 * 5 * 3];
    let (_, saved) = attention
        .forward_for_training(
            &mut state,
            Mode::Causal,
            TensorRef::query(&x, [1, 2, 5, 4]).unwrap(),
            TensorRef::key(&x, [1, 2, 5, 4]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 3]).unwrap(),
        )
        .unwrap();
    let dy = vec![1.0f32; 2 * 5 * 3];
    // dy of the wrong width, token count or lanes.
    let wide = vec![1.0f32; 2 * 5 * 4];
    for (data, shape) in [
        (&wide, [1, 2, 5, 4]),
        (&dy, [1, 1, 10, 3]),
        (&dy[..2 * 4 * 3].to_vec(), [1, 2, 4, 3]),
    ] {
        let err = attention
            .backward(
                &saved,
                TensorRef::output_gradient(data, shape).unwrap(),
                None,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                SataError::DimMismatch { .. }
                    | SataError::BatchHeadsMismatch { .. }
                    | SataError::TokenMismatch { .. }
            ),
            "{err}"
        );
    }
    // NaN in dy.
    let mut nan = dy.clone();
    nan[3] = f32::NAN;
    let err = attention
        .backward(
            &saved,
            TensorRef::output_gradient(&nan, [1, 2, 5, 3]).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, SataError::NonFinite { index: 3, .. }),
        "{err}"
    );
    // A record from another configuration.
    let other = Attention::<f32>::new(KernelConfig::new(4, 3, 2).unwrap()).unwrap();
    let err = other
        .backward(
            &saved,
            TensorRef::output_gradient(&dy, [1, 2, 5, 3]).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, SataError::SavedConfigMismatch { .. }),
        "{err}"
    );
    // A final-state gradient of another shape or with NaN.
    let dy = TensorRef::output_gradient(&dy, [1, 2, 5, 3]).unwrap();
    let mut wrong = StateGradient::<f32>::zeros(config, 2, 1);
    let err = attention.backward(&saved, dy, Some(&wrong)).unwrap_err();
    assert!(matches!(err, SataError::BatchHeadsMismatch { .. }), "{err}");
    wrong = StateGradient::zeros(config, 1, 2);
    wrong.data[7] = f32::INFINITY;
    let err = attention.backward(&saved, dy, Some(&wrong)).unwrap_err();
    assert!(
        matches!(err, SataError::NonFinite { index: 7, .. }),
        "{err}"
    );
    wrong.data.pop();
    let err = attention.backward(&saved, dy, Some(&wrong)).unwrap_err();
    assert!(matches!(err, SataError::LengthMismatch { .. }), "{err}");
    // A failed training forward leaves the state as it was.
    let before: State<f32> = state.clone();
    let huge = vec![1e30f32; 8];
    let mut poisoned_try = before.clone();
    let err = attention
        .forward_for_training(
            &mut poisoned_try,
            Mode::Causal,
            TensorRef::query(&huge, [1, 2, 1, 4]).unwrap(),
            TensorRef::key(&huge, [1, 2, 1, 4]).unwrap(),
            TensorRef::value(&v[..6], [1, 2, 1, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, SataError::StatePoisoned { .. }), "{err}");
    assert_eq!(
        poisoned_try, before,
        "a failed forward must leave the state as it was"
    );
}

/// The registry's generated backwards at the sizes users run (d16 P4: 969 features; d8 P3: 45;
/// d32 P2: runs of 32 coordinates) on every ISA, over more tokens than one chunk of the
/// chunked backward holds, against the f64 reference backward on the same f32-representable
/// inputs (itself checked against complex steps above), causal and non-causal, after a
/// context and with a final-state seed, and from a fresh state with none (where the chunked
/// backward skips the reads of all-zero states).
#[test]
fn registry_backwards_match_the_f64_reference_at_scale() {
    for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
        // 150 tokens: two whole chunks of the CPU backward and a partial one.
        at_scale_against_the_reference(isa.name(), 150, |config| {
            let kernel = Attention::<f32>::new(config)
                .unwrap()
                .with_isa(isa)
                .unwrap();
            assert!(kernel.kernel().is_some(), "{config:?} is in the registry");
            kernel
        });
    }
}

/// The same sizes on every backend, at 40 tokens (one partial chunk on the CPU; on wgpu and
/// CUDA two whole chunks and a partial one): on wgpu, d16 P4 and d8 P6 take several
/// dispatches per pass (llvmpipe's loop cap).
fn registry_sizes_on_the_backend_against_the_reference(backend: Backend) {
    at_scale_against_the_reference(&format!("{backend:?}"), 40, |config| {
        backend.attention(config)
    });
}

/// Gradients of f32 attentions made by `attention` for the registry's d16 P4, d8 P3, d32 P2
/// and d8 P6 (3,003 features, where the GPU backward's chunks hold 14 tokens, not 16) at
/// `tokens` tokens, causal and non-causal, after a context with a final-state seed and
/// from a fresh state without one, against the f64 reference.
fn at_scale_against_the_reference(
    label: &str,
    tokens: usize,
    attention: impl Fn(KernelConfig) -> Attention<f32>,
) {
    let mut rng = rng("gradients_scale");
    let cases = [(16, 16, 4), (8, 8, 3), (32, 32, 2), (8, 8, 6)]
        .into_iter()
        .flat_map(|c| [Mode::Causal, Mode::NonCausal].map(|mode| (c, mode)))
        .flat_map(|case| [(case, 8, true), (case, 0, false)]);
    for (((dk, dv, terms), mode), context, seeded) in cases {
        let (n_q, n_k) = (tokens, tokens);
        let p = problem(
            &mut rng,
            (1, 2),
            (n_q, n_k),
            (dk, dv, terms),
            1.0,
            mode == Mode::Causal,
        )
        .rounded_to_f32();
        let config = p.config();
        let per_lane = config.state_words_per_head();
        let dy = normal(&mut rng, p.lanes() * n_q * dv, 1.0);
        let d_final = match seeded {
            true => normal(&mut rng, p.lanes() * per_lane, 0.1),
            false => vec![0.0; p.lanes() * per_lane],
        };
        let reference =
            Attention::<f64>::with_backend(config, BackendRequest::Kind(BackendKind::CpuGeneric))
                .unwrap();
        let want = gradients_after_context(&reference, &p, mode, context, (&dy, &d_final));
        assert_eq!(want.path, "cpu reference (f64)");
        let attention = attention(config);
        let got = gradients_after_context(&attention, &p, mode, context, (&dy, &d_final));
        assert_eq!(got.path, expected_backward_path(&attention));
        // How far f32 rounding can move these gradients: where a denominator is small (d32
        // P2's T_2(x) = 1 + x is the usual case) it is far more than 1e-4, however the
        // backward is computed. The bound is that of the call without context or final-state
        // gradient (which only add well-conditioned terms); `d_initial_state`, a sum of
        // `(W o Phi(q)) dO'` like the one `dv` reads, takes `dv`'s.
        let exact = gradients::exact_gradients(&p, &dy, mode == Mode::Causal);
        let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        for (what, got, want, bound) in [
            ("dq", widen(&got.dq.data), &want.dq.data, "dq"),
            ("dk", widen(&got.dk.data), &want.dk.data, "dk"),
            ("dv", widen(&got.dv.data), &want.dv.data, "dv"),
            (
                "d_initial_state",
                widen(&initial_gradient(&got).data),
                &initial_gradient(&want).data,
                "dv",
            ),
        ] {
            let err = rel(&got, want);
            let tolerance = exact.f32_tolerance(bound, 1e-4);
            if std::env::var_os("SATA_SHOW_ERR").is_some() {
                eprintln!(
                    "{label} d{dk} P{terms} {mode:?} context {context} {what}: {err:e} (tolerance {tolerance:e})"
                );
            }
            assert!(
                err < tolerance,
                "{label} d{dk} P{terms} {mode:?} context {context} {what}: {err:e} > {tolerance:e}"
            );
        }
    }
}

/// What `Gradients::path` says for a backward of `attention`: the kernel's own where the
/// forward ran a specialized kernel or a device's kernels, else the reference.
fn expected_backward_path<T: Element>(attention: &Attention<T>) -> String {
    let path = attention.describe_path();
    match attention.kernel() {
        Some(_) => path,
        None if path.starts_with("wgpu") || path.starts_with("cuda") => {
            path.replacen("(kernel ", "(backward of kernel ", 1)
        }
        None => "cpu reference (f64)".to_string(),
    }
}

/// [`forward_after_context`], then its backward with `dy` and the final-state gradient given,
/// all in `T`.
fn gradients_after_context<T: Element>(
    attention: &Attention<T>,
    p: &Problem,
    mode: Mode,
    context: usize,
    (dy, d_final): (&[f64], &[f64]),
) -> sata::Gradients<T> {
    let cast = |x: &[f64]| x.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    let (lanes, dv) = (p.lanes(), p.d_v);
    let TrainingForward { nq, saved, .. } = forward_after_context(attention, p, mode, context);
    let shape = |n, d| [p.batch, p.heads, n, d];
    let dy = cast(&dy[..lanes * nq * dv]);
    let d_final = StateGradient {
        config: p.config(),
        batch: p.batch,
        heads: p.heads,
        data: cast(d_final),
    };
    attention
        .backward(
            &saved,
            TensorRef::output_gradient(&dy, shape(nq, dv)).unwrap(),
            Some(&d_final),
        )
        .unwrap()
}

/// A training forward after a context, and what it ran on.
struct TrainingForward<T> {
    /// The call's inputs as `T` (the references see exactly these numbers).
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    nq: usize,
    nk: usize,
    /// The state before the call, widened.
    s0: Vec<f64>,
    state: State<T>,
    attended: sata::Attended<T>,
    saved: sata::Saved<T>,
}

/// Absorbs the first `context` keys of `p` into a fresh state, then runs a training forward
/// over the rest: causal over the queries after the context, or non-causal with every query.
fn forward_after_context<T: Element>(
    attention: &Attention<T>,
    p: &Problem,
    mode: Mode,
    context: usize,
) -> TrainingForward<T> {
    let cast = |x: &[f64]| x.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    let (lanes, dk, dv) = (p.lanes(), p.d_k, p.d_v);
    let q = match mode {
        Mode::Causal => part(&p.q, lanes, p.n_q, dk, context..p.n_q),
        Mode::NonCausal => p.q.clone(),
    };
    let (nq, nk) = (q.len() / lanes / dk, p.n_k - context);
    let (kc, vc) = (
        cast(&part(&p.k, lanes, p.n_k, dk, 0..context)),
        cast(&part(&p.v, lanes, p.n_k, dv, 0..context)),
    );
    let (q, k, v) = (
        cast(&q),
        cast(&part(&p.k, lanes, p.n_k, dk, context..p.n_k)),
        cast(&part(&p.v, lanes, p.n_k, dv, context..p.n_k)),
    );
    let shape = |n, d| [p.batch, p.heads, n, d];
    let mut state = attention.new_state(p.batch, p.heads).unwrap();
    if context > 0 {
        attention
            .absorb(
                &mut state,
                TensorRef::key(&kc, shape(context, dk)).unwrap(),
                TensorRef::value(&vc, shape(context, dv)).unwrap(),
            )
            .unwrap();
    }
    let s0 = state.as_slice().iter().map(|x| x.widen()).collect();
    let (attended, saved) = attention
        .forward_for_training(
            &mut state,
            mode,
            TensorRef::query(&q, shape(nq, dk)).unwrap(),
            TensorRef::key(&k, shape(nk, dk)).unwrap(),
            TensorRef::value(&v, shape(nk, dv)).unwrap(),
        )
        .unwrap();
    TrainingForward {
        q,
        k,
        v,
        nq,
        nk,
        s0,
        state,
        attended,
        saved,
    }
}
