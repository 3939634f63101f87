//! The backward of SATA attention: the checks and the lane loop every backend shares ([`run`]),
//! what runs one lane ([`LaneBackward`]: a specialized kernel's generated backward, or the
//! reference passes here, in f64 whatever the element type), and the reference itself. Both
//! compute the two passes over states of the forward's own shape (`docs/design.md`,
//! "Gradients").
//!
//! With the forward's outputs `y_t` and denominators `D_t`, `delta_t = y_t · dy_t` and the
//! augmented cotangent `dO'_t = [dy_t / D_t, -delta_t / D_t]`:
//! - pass A rebuilds `S_t` (the state each query read) and gives
//!   `dq_t = J_Phi(q_t)^T (W ∘ S_t dO'_t)`;
//! - pass B accumulates `H_s = dS_final + sum_{t >= s} (W ∘ Phi(q_t)) dO'_t^T` (all queries for
//!   non-causal attention) and gives `dv_s = H_s[:, :d_v]^T Phi(k_s)`,
//!   `dk_s = J_Phi(k_s)^T (H_s [v_s, 1])`, and the gradient of the state the forward started
//!   from, `H` before the first key.
//!
//! `J_Phi(x)^T u` is the adjoint of the feature program (`KernelPlan::adjoint_runs`). A query
//! whose denominator was not positive got zeros from the forward and contributes nothing.

use sata_codegen::{Basis, FeatureRun, KernelConfig, KernelPlan};

use super::pairwise::Pairwise;
use super::threads::Threads;
use crate::backend::{HostBackend, LaneBackward, LaneGradients, LaneInputs};
use crate::checks::{Lanes, same_config};
use crate::element::{Element, narrow};
use crate::error::SataError;
use crate::shape::{Role, Shape};
use crate::tensor::{Tensor, TensorRef};
use crate::training::{Gradients, Mode, Saved, StateGradient};

/// The tables of the backward of one configuration.
#[derive(Debug)]
pub(crate) struct Backward {
    d_k: usize,
    d_v: usize,
    /// The feature program, in order.
    runs: Vec<FeatureRun>,
    /// Query-side weights `alpha_p C_p[j]`, in f64.
    weights: Vec<f64>,
}

impl Backward {
    pub fn new(config: &KernelConfig) -> Self {
        let plan = KernelPlan::new(config);
        Self {
            d_k: config.d_k(),
            d_v: config.d_v(),
            runs: plan.orders.iter().flat_map(|o| o.runs.clone()).collect(),
            weights: Basis::new(config).weights().to_vec(),
        }
    }

    fn features(&self) -> usize {
        self.weights.len()
    }

    /// `f = Phi(x)` by the prefix recurrence.
    fn map(&self, x: &[f64], f: &mut [f64]) {
        f[0] = 1.0;
        for r in &self.runs {
            let parent = f[r.parent];
            for i in 0..r.len {
                f[r.dest + i] = parent * x[r.first + i];
            }
        }
    }

    /// `dx += J_Phi(x)^T u`, with `f = Phi(x)`; `u` is consumed (it ends holding the gradient
    /// of every feature, parents included).
    fn adjoint(&self, x: &[f64], f: &[f64], u: &mut [f64], dx: &mut [f64]) {
        for r in self.runs.iter().rev() {
            let mut to_parent = 0.0;
            for i in 0..r.len {
                let g = u[r.dest + i];
                to_parent += g * x[r.first + i];
                dx[r.first + i] += g * f[r.parent];
            }
            u[r.parent] += to_parent;
        }
    }

    /// The gradients of one lane in f64, with the states as `m` rows of `[S | Z]`.
    fn lane_f64(&self, causal: bool, x: &LaneInputs<'_, f64>, g: LaneGradients<'_, f64>) {
        let (dk, dv, m, row) = (self.d_k, self.d_v, self.features(), self.d_v + 1);
        let (nq, nk) = (x.q.len() / dk, x.k.len() / dk);
        let dout = x.dout;
        let (mut f, mut u) = (vec![0.0; m], vec![0.0; m]);
        let mut vp = vec![1.0; row];
        let key = |s: usize, vp: &mut [f64]| {
            vp[..dv].copy_from_slice(&x.v[s * dv..(s + 1) * dv]);
            &x.k[s * dk..(s + 1) * dk]
        };
        // Pass A: the state each query read, then dq.
        let mut state = x.initial.to_vec();
        let add_key = |state: &mut [f64], f: &mut [f64], s: usize, vp: &mut [f64]| {
            self.map(key(s, vp), f);
            for (srow, fj) in state.chunks_exact_mut(row).zip(f.iter()) {
                for (w, vc) in srow.iter_mut().zip(vp.iter()) {
                    *w += fj * vc;
                }
            }
        };
        if !causal {
            for s in 0..nk {
                add_key(&mut state, &mut f, s, &mut vp);
            }
        }
        for t in 0..nq {
            if causal {
                add_key(&mut state, &mut f, t, &mut vp);
            }
            let d = &dout[t * row..(t + 1) * row];
            for ((uj, srow), w) in u.iter_mut().zip(state.chunks_exact(row)).zip(&self.weights) {
                *uj = w * srow.iter().zip(d).map(|(a, b)| a * b).sum::<f64>();
            }
            let qt = &x.q[t * dk..(t + 1) * dk];
            self.map(qt, &mut f);
            self.adjoint(qt, &f, &mut u, &mut g.dq[t * dk..(t + 1) * dk]);
        }
        // Pass B, backward in time: H collects the weighted queries that saw each key.
        let h = g.d_initial;
        match x.d_final {
            Some(d) => h.copy_from_slice(d),
            None => h.fill(0.0),
        }
        let add_query = |h: &mut [f64], f: &mut [f64], t: usize| {
            self.map(&x.q[t * dk..(t + 1) * dk], f);
            let d = &dout[t * row..(t + 1) * row];
            for ((hrow, fj), w) in h.chunks_exact_mut(row).zip(f.iter()).zip(&self.weights) {
                let a = fj * w;
                for (hc, dc) in hrow.iter_mut().zip(d) {
                    *hc += a * dc;
                }
            }
        };
        if !causal {
            for t in 0..nq {
                add_query(h, &mut f, t);
            }
        }
        for s in (0..nk).rev() {
            if causal {
                add_query(h, &mut f, s);
            }
            let ks = key(s, &mut vp);
            self.map(ks, &mut f);
            let dvs = &mut g.dv[s * dv..(s + 1) * dv];
            for ((hrow, fj), uj) in h.chunks_exact(row).zip(&f).zip(u.iter_mut()) {
                for (o, hc) in dvs.iter_mut().zip(hrow) {
                    *o += hc * fj;
                }
                *uj = hrow.iter().zip(&vp).map(|(a, b)| a * b).sum();
            }
            self.adjoint(ks, &f, &mut u, &mut g.dk[s * dk..(s + 1) * dk]);
        }
    }
}

impl<T: Element> LaneBackward<T> for Backward {
    fn describe(&self) -> String {
        "cpu reference (f64)".to_string()
    }

    fn lane(&self, causal: bool, x: &LaneInputs<'_, T>, g: LaneGradients<'_, T>) {
        let (m, dv) = (self.features(), self.d_v);
        let widen = |x: &[T]| x.iter().map(|x| x.widen()).collect::<Vec<f64>>();
        let (mut dq, mut dk, mut dval) = (
            vec![0.0; g.dq.len()],
            vec![0.0; g.dk.len()],
            vec![0.0; g.dv.len()],
        );
        let mut d_initial = vec![0.0; m * (dv + 1)];
        let d_final = x.d_final.map(|d| to_rows(&widen(d), m, dv));
        self.lane_f64(
            causal,
            &LaneInputs {
                q: &widen(x.q),
                k: &widen(x.k),
                v: &widen(x.v),
                dout: &widen(x.dout),
                initial: &to_rows(&widen(x.initial), m, dv),
                d_final: d_final.as_deref(),
            },
            LaneGradients {
                dq: &mut dq,
                dk: &mut dk,
                dv: &mut dval,
                d_initial: &mut d_initial,
            },
        );
        narrow(&dq, g.dq);
        narrow(&dk, g.dk);
        narrow(&dval, g.dv);
        narrow(&from_rows(&d_initial, m, dv), g.d_initial);
    }
}

/// The backward of the forward `saved` recorded, for an attention computing `config` on
/// `backend`: checks the record and the gradients given, then runs the backend's lane backward
/// (the reference passes where it has none) on every lane.
pub(crate) fn run<T: Element>(
    config: &KernelConfig,
    backend: &dyn HostBackend<T>,
    saved: &Saved<T>,
    dy: TensorRef<'_, T>,
    d_final: Option<&StateGradient<T>>,
) -> Result<Gradients<T>, SataError> {
    check(config, saved, &dy, d_final)?;
    let qs = saved.q.shape;
    let (dk, dv, per_lane) = (config.d_k(), config.d_v(), config.state_words_per_head());
    let causal = saved.mode == Mode::Causal;
    let (nq, nk) = (qs.tokens, saved.k.shape.tokens);
    let lanes = qs.batch * qs.heads;
    let span = |lane: usize, n: usize, dim: usize| lane * n * dim..(lane + 1) * n * dim;
    if saved.pairs && d_final.is_none() && backend.computes_on_cpu() {
        return Ok(pairs(config, &backend.threads(), saved, dy));
    }
    let mut dout = vec![T::zero(); lanes * nq * (dv + 1)];
    let mut zeroed = 0;
    for lane in 0..lanes {
        zeroed += cotangents(
            dv,
            &saved.y[span(lane, nq, dv)],
            &dy.data()[span(lane, nq, dv)],
            &saved.dens[lane * nq..(lane + 1) * nq],
            &mut dout[span(lane, nq, dv + 1)],
        );
    }
    // A compensated lane's sums come first; its compensation does not change the value.
    let initial: Vec<T> = match &saved.initial {
        Some(state) => state
            .lanes()
            .flat_map(|lane| lane[..per_lane].iter().copied())
            .collect(),
        None => vec![T::zero(); lanes * per_lane],
    };
    let all = LaneInputs {
        q: &saved.q.data,
        k: &saved.k.data,
        v: &saved.v.data,
        dout: &dout,
        initial: &initial,
        d_final: d_final.map(|d| &d.data[..]),
    };
    let mut dq = vec![T::zero(); saved.q.data.len()];
    let mut dk_ = vec![T::zero(); saved.k.data.len()];
    let mut dv_ = vec![T::zero(); saved.v.data.len()];
    let mut d_initial = StateGradient::zeros(*config, qs.batch, qs.heads);
    let path = if let Some(batch) = backend.batch_backward() {
        let gradients = LaneGradients {
            dq: &mut dq,
            dk: &mut dk_,
            dv: &mut dv_,
            d_initial: &mut d_initial.data,
        };
        batch.batch(causal, lanes, &all, gradients)?;
        batch.describe()
    } else {
        let reference;
        let one: &dyn LaneBackward<T> = match backend.lane_backward() {
            Some(own) => own,
            None => {
                reference = Backward::new(config);
                &reference
            }
        };
        // One work item per lane, on the backend's threads.
        let items: Vec<LaneGradients<'_, T>> = split_lanes(&mut dq, lanes)
            .into_iter()
            .zip(split_lanes(&mut dk_, lanes))
            .zip(split_lanes(&mut dv_, lanes))
            .zip(split_lanes(&mut d_initial.data, lanes))
            .map(|(((dq, dk), dv), d_initial)| LaneGradients {
                dq,
                dk,
                dv,
                d_initial,
            })
            .collect();
        let work = per_lane * (nq + nk) * lanes;
        backend.threads().map(work, items, |lane, g| {
            let inputs = LaneInputs {
                q: &all.q[span(lane, nq, dk)],
                k: &all.k[span(lane, nk, dk)],
                v: &all.v[span(lane, nk, dv)],
                dout: &all.dout[span(lane, nq, dv + 1)],
                initial: &all.initial[span(lane, 1, per_lane)],
                d_final: all.d_final.map(|d| &d[span(lane, 1, per_lane)]),
            };
            one.lane(causal, &inputs, g);
        });
        match backend.lane_backward() {
            Some(_) => backend.describe_path(),
            None => one.describe(),
        }
    };
    let tensor = |data, shape: Shape| Tensor { data, shape };
    Ok(Gradients {
        dq: tensor(dq, qs),
        dk: tensor(dk_, saved.k.shape),
        dv: tensor(dv_, saved.v.shape),
        d_initial_state: saved.initial.is_some().then_some(d_initial),
        zeroed_queries: zeroed,
        path,
    })
}

/// The backward of a forward from empty lanes that computed pairs ([`Pairwise`]), lanes on
/// `threads`.
fn pairs<T: Element>(
    config: &KernelConfig,
    threads: &Threads,
    saved: &Saved<T>,
    dy: TensorRef<'_, T>,
) -> Gradients<T> {
    let pairwise = Pairwise::new(config);
    let causal = saved.mode == Mode::Causal;
    let (qs, ks) = (saved.q.shape, saved.k.shape);
    let (nq, nk, lanes) = (qs.tokens, ks.tokens, qs.lanes());
    let (dk, dv) = (config.d_k(), config.d_v());
    let span = |lane: usize, n: usize, dim: usize| lane * n * dim..(lane + 1) * n * dim;
    let mut dq = vec![T::zero(); saved.q.data.len()];
    let mut dk_ = vec![T::zero(); saved.k.data.len()];
    let mut dv_ = vec![T::zero(); saved.v.data.len()];
    let items: Vec<_> = split_lanes(&mut dq, lanes)
        .into_iter()
        .zip(split_lanes(&mut dk_, lanes))
        .zip(split_lanes(&mut dv_, lanes))
        .collect();
    let work = lanes * pairwise.work(causal, nq, nk);
    let zeroed = threads.map(work, items, |lane, ((dq, dk_), dv_)| {
        let mut dout = vec![0.0; nq * (dv + 1)];
        let zeroed = cotangents(
            dv,
            &saved.y[span(lane, nq, dv)],
            &dy.data()[span(lane, nq, dv)],
            &saved.dens[lane * nq..(lane + 1) * nq],
            &mut dout,
        );
        let inputs = (
            &saved.q.data[span(lane, nq, dk)],
            &saved.k.data[span(lane, nk, dk)],
            &saved.v.data[span(lane, nk, dv)],
        );
        pairwise.backward(causal, inputs, &dout, (dq, dk_, dv_));
        zeroed
    });
    let tensor = |data, shape: Shape| Tensor { data, shape };
    Gradients {
        dq: tensor(dq, qs),
        dk: tensor(dk_, ks),
        dv: tensor(dv_, saved.v.shape),
        d_initial_state: None,
        zeroed_queries: zeroed.into_iter().sum(),
        path: format!("cpu pairs (f64), {threads}"),
    }
}

/// The checks of [`run`]: the record is of this configuration, `dy` has the queries' shape
/// with `d_v` last and is finite, and so is a final-state gradient of the state's shape.
fn check<T: Element>(
    config: &KernelConfig,
    saved: &Saved<T>,
    dy: &TensorRef<'_, T>,
    d_final: Option<&StateGradient<T>>,
) -> Result<(), SataError> {
    if saved.config != *config {
        return Err(SataError::SavedConfigMismatch {
            saved: saved.config,
            attention: *config,
        });
    }
    let qs = saved.q.shape;
    let lanes = Lanes {
        config,
        batch: qs.batch,
        heads: qs.heads,
    };
    lanes.tensor(dy, config.d_v(), "d_v")?;
    if dy.shape().tokens != qs.tokens {
        return Err(SataError::TokenMismatch {
            role: Role::OutputGradient,
            found: dy.shape().tokens,
            against: "the forward's queries",
            expected: qs.tokens,
            hint: "",
        });
    }
    if let Some(d) = d_final {
        same_config(&d.config, config)?;
        if (d.batch, d.heads) != (qs.batch, qs.heads) {
            return Err(SataError::BatchHeadsMismatch {
                role: Role::StateGradient,
                found: (d.batch, d.heads),
                against: "the forward's state",
                expected: (qs.batch, qs.heads),
            });
        }
        TensorRef::new(
            Role::StateGradient,
            &d.data,
            [d.batch, d.heads, config.features(), config.row_len()],
        )?
        .check_finite()?;
    }
    Ok(())
}

/// `x` cut into `lanes` equal blocks (empty ones when `x` is).
fn split_lanes<T>(x: &mut [T], lanes: usize) -> Vec<&mut [T]> {
    let size = x.len() / lanes.max(1);
    let mut rest = x;
    (0..lanes)
        .map(|_| {
            let (lane, tail) = std::mem::take(&mut rest).split_at_mut(size);
            rest = tail;
            lane
        })
        .collect()
}

/// A lane's planar words (`S`, `m x d_v`, then `Z`, `m`) as `m` rows of `[S | Z]`.
fn to_rows(planar: &[f64], m: usize, d_v: usize) -> Vec<f64> {
    let (s, z) = planar.split_at(m * d_v);
    s.chunks_exact(d_v)
        .zip(z)
        .flat_map(|(row, &z)| row.iter().copied().chain([z]))
        .collect()
}

/// The inverse of [`to_rows`].
fn from_rows(rows: &[f64], m: usize, d_v: usize) -> Vec<f64> {
    let rows: Vec<&[f64]> = rows.chunks_exact(d_v + 1).take(m).collect();
    let s = rows.iter().flat_map(|r| r[..d_v].iter().copied());
    s.chain(rows.iter().map(|r| r[d_v])).collect()
}

/// `dO'` of every query of a lane into `out` (`queries x (d_v + 1)`), computed in f64: zeros
/// for a query whose denominator was not positive and finite. Returns how many there were.
fn cotangents<T: Element, O: Element>(
    dv: usize,
    y: &[T],
    dy: &[T],
    dens: &[f64],
    out: &mut [O],
) -> usize {
    let row = dv + 1;
    let mut zeroed = 0;
    for (t, o) in out.chunks_exact_mut(row).enumerate() {
        let den = dens[t];
        if !(den > 0.0 && den.is_finite()) {
            o.fill(O::zero());
            zeroed += 1;
            continue;
        }
        let (yt, dyt) = (&y[t * dv..(t + 1) * dv], &dy[t * dv..(t + 1) * dv]);
        let delta: f64 = yt.iter().zip(dyt).map(|(a, b)| a.widen() * b.widen()).sum();
        for (o, g) in o.iter_mut().zip(dyt) {
            *o = O::from_f64(g.widen() / den);
        }
        o[dv] = O::from_f64(-delta / den);
    }
    zeroed
}
