//! The CPU as a backend: one loop over a state's lanes for every entry, running a
//! [`LaneKernel`]: the generic program (any configuration, f32 or f64) or a specialized kernel
//! (`super::specialized`, f32). Lanes run on the backend's [`Threads`], one work item each,
//! their statistics merged in lane order.

use super::execution::Execution;
use super::generic::{GenericProgram, Scratch};
use super::kernel::KernelDescriptor;
use super::pairwise::Pairwise;
use super::simd::Isa;
pub(crate) use super::threads::Split;
use super::threads::Threads;
use crate::backend::{HostBackend, LaneBackward};
use crate::element::Element;
use crate::error::SataError;
use crate::state::State;
use crate::stats::{Answer, CallStats};
use crate::tensor::{Qkv, TensorRef};

/// What the CPU runs on one (batch, head) lane: `state` is the lane's words, `q`, `k`, `v` its
/// `tokens x dim` blocks, `out` its `tokens x d_v` block; every answered query is reported to
/// `answered` with its index in the lane.
pub(crate) trait LaneKernel<T: Element>: Send + Sync {
    /// Buffers a call reuses across its lanes and tokens.
    type Scratch;
    fn describe(&self) -> String;
    fn descriptor(&self) -> Option<&'static KernelDescriptor> {
        None
    }
    /// How the kernel runs (instruction set, chunk), if it can be set: the generic program
    /// in f64 has one way only.
    fn execution(&self) -> Option<Execution> {
        None
    }
    fn execution_mut(&mut self) -> Option<&mut Execution> {
        None
    }
    fn set_isa(&mut self, isa: Isa) {
        if let Some(run) = self.execution_mut() {
            run.isa = isa;
        }
    }
    /// Runs the forward entries `chunk` tokens at a time (1: token by token).
    fn set_chunk(&mut self, chunk: usize) {
        if let Some(run) = self.execution_mut() {
            run.chunk = chunk;
        }
    }
    /// The forward chunk (1: token by token).
    fn chunk(&self) -> usize {
        self.execution().map_or(1, |run| run.chunk)
    }
    fn scratch(&self) -> Self::Scratch;
    /// The lane kernel's own backward, if it has one.
    fn lane_backward(&self) -> Option<&dyn LaneBackward<T>> {
        None
    }
    /// Whether a lane's work can be split over the pool it runs in ([`Split`]): a chunked
    /// forward's chunks can.
    fn splits(&self) -> bool {
        self.chunk() > 1
    }
    fn prefill(
        &self,
        scratch: &mut Self::Scratch,
        state: &mut [T],
        qkv: (&[T], &[T], &[T]),
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    );
    fn absorb(&self, scratch: &mut Self::Scratch, state: &mut [T], kv: (&[T], &[T]), split: Split);
    fn query(
        &self,
        scratch: &mut Self::Scratch,
        state: &[T],
        q: &[T],
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
        split: Split,
    );
}

/// The CPU backend running lane kernel `K` on `threads`.
pub(crate) struct CpuBackend<K> {
    pub kernel: K,
    pub threads: Threads,
}

impl<K> CpuBackend<K> {
    pub fn new(kernel: K) -> Self {
        Self {
            kernel,
            threads: Threads::default(),
        }
    }
}

/// The statistics of every lane, merged in lane order.
fn merged(lanes: Vec<CallStats>) -> CallStats {
    let mut stats = CallStats::default();
    for lane in lanes {
        stats.merge(lane);
    }
    stats
}

impl<T: Element, K: LaneKernel<T>> HostBackend<T> for CpuBackend<K> {
    fn describe_path(&self) -> String {
        format!("{}, {}", self.kernel.describe(), self.threads)
    }

    fn kernel(&self) -> Option<&'static KernelDescriptor> {
        self.kernel.descriptor()
    }

    fn set_isa(&mut self, isa: Isa) {
        self.kernel.set_isa(isa);
    }

    fn set_chunk(&mut self, chunk: usize) {
        self.kernel.set_chunk(chunk);
    }

    fn chunk(&self) -> usize {
        self.kernel.chunk()
    }

    fn set_threads(&mut self, threads: Threads) {
        self.threads = threads;
    }

    fn threads(&self) -> Threads {
        self.threads.clone()
    }

    fn computes_on_cpu(&self) -> bool {
        true
    }

    fn lane_backward(&self) -> Option<&dyn LaneBackward<T>> {
        self.kernel.lane_backward()
    }

    fn prefill(
        &self,
        state: &mut State<T>,
        (q, k, v): Qkv<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let (heads, before) = (state.heads(), state.tokens());
        let n = q.shape().tokens;
        let block = n * state.config().d_v();
        let words = state.words_per_lane();
        let lanes: Vec<&mut [T]> = state.lanes_mut().collect();
        let work = words * n * lanes.len();
        let lanes = lane_items(lanes, out, block, dens, n);
        let splits = self.kernel.splits();
        let stats = self.threads.map_splitting(
            work,
            lanes,
            splits,
            |lane, (lane_state, out, dens), split| {
                let mut stats = CallStats::default();
                let mut scratch = self.kernel.scratch();
                let qkv = (q.lane(lane), k.lane(lane), v.lane(lane));
                let keys = |t: usize| before + t as u64 + 1;
                let mut answered = recorder(&mut stats, dens, (lane, heads), keys);
                self.kernel
                    .prefill(&mut scratch, lane_state, qkv, out, &mut answered, split);
                drop(answered);
                stats
            },
        );
        Ok(merged(stats))
    }

    fn absorb(
        &self,
        state: &mut State<T>,
        (k, v): (TensorRef<'_, T>, TensorRef<'_, T>),
    ) -> Result<(), SataError> {
        let n = k.shape().tokens;
        let lanes: Vec<&mut [T]> = state.lanes_mut().collect();
        let work = lanes.first().map_or(0, |l| l.len()) * n * lanes.len();
        let splits = self.kernel.splits();
        self.threads
            .map_splitting(work, lanes, splits, |lane, lane_state, split| {
                let mut scratch = self.kernel.scratch();
                let kv = (k.lane(lane), v.lane(lane));
                self.kernel.absorb(&mut scratch, lane_state, kv, split);
            });
        Ok(())
    }

    fn query(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let (heads, keys) = (state.heads(), state.tokens());
        let n = q.shape().tokens;
        let block = n * state.config().d_v();
        let lanes: Vec<&[T]> = state.lanes().collect();
        let work = lanes.first().map_or(0, |l| l.len()) * n * lanes.len();
        let lanes = lane_items(lanes, out, block, dens, n);
        let splits = self.kernel.splits();
        let stats = self.threads.map_splitting(
            work,
            lanes,
            splits,
            |lane, (lane_state, out, dens), split| {
                let mut stats = CallStats::default();
                let mut scratch = self.kernel.scratch();
                let mut answered = recorder(&mut stats, dens, (lane, heads), |_| keys);
                let q = q.lane(lane);
                self.kernel
                    .query(&mut scratch, lane_state, q, out, &mut answered, split);
                drop(answered);
                stats
            },
        );
        Ok(merged(stats))
    }
}

/// Attention from empty lanes, pair by pair ([`Pairwise`]): causal (one query per key) or
/// non-causal, every lane's outputs into its block of `out` and its denominators into `dens`
/// (unless empty), lanes on `threads` as the lane loop runs them.
pub(crate) fn forward_pairs<T: Element>(
    pairwise: &Pairwise,
    threads: &Threads,
    causal: bool,
    (q, k, v): Qkv<'_, T>,
    out: &mut [T],
    dens: &mut [f64],
) -> CallStats {
    let (heads, queries, keys) = (q.shape().heads, q.shape().tokens, k.shape().tokens);
    let lanes = q.shape().lanes();
    let work = lanes * pairwise.work(causal, queries, keys);
    let block = queries * v.shape().dim;
    let items = lane_items((0..lanes).collect(), out, block, dens, queries);
    let stats = threads.map(work, items, |lane, (_, out, dens)| {
        let mut stats = CallStats::default();
        let seen = |t: usize| if causal { t as u64 + 1 } else { keys as u64 };
        let mut answered = recorder(&mut stats, dens, (lane, heads), seen);
        let qkv = (q.lane(lane), k.lane(lane), v.lane(lane));
        pairwise.forward(causal, qkv, out, &mut answered);
        drop(answered);
        stats
    });
    merged(stats)
}

/// A chunked or generated forward's reports (`t`, denominator, usable) as the lane loop's
/// [`Answer`]s.
pub(crate) fn answers(
    answered: &mut dyn FnMut(usize, Answer),
) -> impl FnMut(usize, f64, bool) + '_ {
    move |t, denominator, ok| answered(t, Answer { denominator, ok })
}

/// What a lane kernel calls per answered query: the denominator into `dens` (if kept) and
/// the answer into `stats`, query `t` having seen `keys(t)` keys.
fn recorder<'a>(
    stats: &'a mut CallStats,
    dens: &'a mut [f64],
    lane: (usize, usize),
    keys: impl Fn(usize) -> u64 + 'a,
) -> impl FnMut(usize, Answer) + 'a {
    move |t, a| {
        if let Some(d) = dens.get_mut(t) {
            *d = a.denominator;
        }
        stats.record_answer(lane, t, a, keys(t))
    }
}

/// Each lane's state, its `block` words of `out` and its `n` denominators (none when `dens`
/// is empty: the call does not keep them).
fn lane_items<'a, S, T>(
    states: Vec<S>,
    out: &'a mut [T],
    block: usize,
    dens: &'a mut [f64],
    n: usize,
) -> Vec<(S, &'a mut [T], &'a mut [f64])> {
    let mut outs = out.chunks_mut(block.max(1));
    let mut dens = dens.chunks_mut(n.max(1));
    states
        .into_iter()
        .map(|s| {
            let out = outs.next().unwrap_or_default();
            let dens = dens.next().unwrap_or_default();
            (s, out, dens)
        })
        .collect()
}

impl<T: Element> LaneKernel<T> for GenericProgram<T> {
    type Scratch = Scratch<T>;

    fn describe(&self) -> String {
        crate::backend::BackendKind::CpuGeneric.to_string()
    }

    fn scratch(&self) -> Scratch<T> {
        GenericProgram::scratch(self)
    }

    fn prefill(
        &self,
        scratch: &mut Scratch<T>,
        state: &mut [T],
        qkv: (&[T], &[T], &[T]),
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
        _: Split,
    ) {
        GenericProgram::prefill(self, scratch, state, qkv, out, answered)
    }

    fn absorb(&self, scratch: &mut Scratch<T>, state: &mut [T], (k, v): (&[T], &[T]), _: Split) {
        GenericProgram::absorb(self, scratch, state, k, v)
    }

    fn query(
        &self,
        scratch: &mut Scratch<T>,
        state: &[T],
        q: &[T],
        out: &mut [T],
        answered: &mut dyn FnMut(usize, Answer),
        _: Split,
    ) {
        GenericProgram::query(self, scratch, state, q, out, answered)
    }
}
