//! The user-facing attention object.

use sata_codegen::KernelConfig;

use crate::backend::{
    BackendKind, BackendRequest, BackendUnavailable, HostBackend, Selection, of_f32, open, resolve,
};
use crate::call::{Call, Store};
use crate::cpu::CpuBackend;
use crate::cpu::kernel::{KernelDescriptor, SpecializedKernel};
use crate::cpu::pairwise::{self, Pairwise};
use crate::cpu::simd::Isa;
use crate::cpu::specialized::Specialized;
use crate::cpu::threads::Threads;
use crate::element::{DType, Element};
use crate::error::SataError;
use crate::output::Attended;
use crate::state::{Accumulation, State, StateHeader};
use crate::stats::{CallStats, DenominatorPolicy};
use crate::tensor::{Qkv, Tensor, TensorRef};
use crate::training::{Gradients, Mode, Saved, SequenceForm, StateGradient};

/// Symmetry-aware Taylor attention for one configuration.
///
/// All tensors are `[batch, heads, tokens, dim]`, row-major and contiguous
/// ([`TensorRef`]); queries and keys have `dim = d_k`, values `dim = d_v`. A [`State`] carries
/// the memory of every (batch, head) between calls:
///
/// - [`prefill`](Self::prefill): causal attention over a block of tokens (query `t` sees keys
///   `..=t`, including all tokens already in the state), leaving the state after the block;
/// - [`decode`](Self::decode): the same for exactly one token, at a cost independent of how
///   many tokens came before;
/// - [`absorb`](Self::absorb) + [`query`](Self::query): non-causal / cross attention, where
///   every query reads the same state and the number of queries may differ from the keys;
///   [`attend`](Self::attend) does both on a fresh state.
///
/// Continuing from a saved state gives the same outputs as processing the whole sequence in
/// one call (up to floating-point summation order). Every call is checked once here and then
/// runs on one backend (the CPU, or a device with the state copied there and back; for states
/// that stay on a device, see `DeviceAttention`).
///
/// ```
/// use sata_runtime::{Attention, KernelConfig, TensorRef};
///
/// let attention = Attention::<f32>::new(KernelConfig::new(4, 2, 3)?)?;
/// let mut state = attention.new_state(1, 1)?;
/// let q = [0.1f32, 0.2, -0.3, 0.4, 0.0, -0.1, 0.2, 0.3];
/// let v = [1.0f32, 0.0, 0.0, 1.0];
/// let y = attention.prefill(
///     &mut state,
///     TensorRef::query(&q, [1, 1, 2, 4])?,
///     TensorRef::key(&q, [1, 1, 2, 4])?,
///     TensorRef::value(&v, [1, 1, 2, 2])?,
/// )?;
/// assert_eq!(y.output.data[..2], [1.0, 0.0]); // the first query sees only the first value
/// assert_eq!(state.tokens(), 2);
/// # Ok::<(), sata_runtime::SataError>(())
/// ```
pub struct Attention<T: Element> {
    config: KernelConfig,
    selection: Selection,
    policy: DenominatorPolicy,
    sequence_form: SequenceForm,
    backend: Box<dyn HostBackend<T>>,
}

impl<T: Element> std::fmt::Debug for Attention<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attention")
            .field("config", &self.config)
            .field("path", &self.describe_path())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Why an f32-only path cannot compute in `T`.
fn float32_only<T: Element>(backend: BackendKind, what: &str) -> Result<(), SataError> {
    if T::DTYPE == DType::F32 {
        return Ok(());
    }
    Err(BackendUnavailable {
        backend,
        reason: format!("{what} compute in float32, not {}", T::DTYPE),
    }
    .into())
}

impl<T: Element> Attention<T> {
    /// Attention on the best available CPU path (see [`Attention::selection`]).
    pub fn new(config: KernelConfig) -> Result<Self, SataError> {
        Self::with_backend(config, BackendRequest::Auto)
    }

    /// Attention on the requested backend; fails if that backend cannot run here.
    pub fn with_backend(config: KernelConfig, request: BackendRequest) -> Result<Self, SataError> {
        let (selection, kernel) = resolve(request, &config, T::DTYPE)?;
        let backend = open::<T>(&selection, kernel, config)?;
        Ok(Self {
            config,
            selection,
            policy: DenominatorPolicy::default(),
            sequence_form: SequenceForm::default(),
            backend,
        })
    }

    /// Runs the kernels of a device attention (for instance CUDA host execution in reverse
    /// thread order, or with a forced split) on host states, with its denominator policy.
    /// Fails for `f64`: device kernels are f32.
    #[cfg(any(feature = "wgpu", sata_cuda))]
    pub fn with_device<D: crate::device::Device>(
        attention: crate::device::DeviceAttention<D>,
    ) -> Result<Self, SataError> {
        let backend = attention.kernels.device.kind();
        float32_only::<T>(backend, "device kernels")?;
        let (config, policy) = (*attention.config(), attention.denominator_policy());
        Ok(Self {
            config,
            selection: Selection {
                backend,
                fallback: None,
            },
            policy,
            sequence_form: SequenceForm::default(),
            backend: of_f32(backend, Box::new(attention.kernels))?,
        })
    }

    /// Runs the given specialized kernel (e.g. one made by `#[sata::kernel]`) on the widest
    /// instruction set this CPU supports. Fails for `f64`: specialized kernels are f32.
    pub fn with_kernel(kernel: &'static dyn SpecializedKernel) -> Result<Self, SataError> {
        let config = kernel.descriptor().config()?;
        float32_only::<T>(BackendKind::Cpu, "specialized kernels")?;
        Ok(Self {
            config,
            selection: Selection {
                backend: BackendKind::Cpu,
                fallback: None,
            },
            policy: DenominatorPolicy::default(),
            sequence_form: SequenceForm::default(),
            backend: of_f32(
                BackendKind::Cpu,
                Box::new(CpuBackend::new(Specialized::new(kernel))),
            )?,
        })
    }

    /// Runs the specialized kernel with a given instruction set (for comparisons and tests);
    /// fails if this CPU does not support it. No effect on other paths.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, SataError> {
        if !isa.is_supported() {
            return Err(BackendUnavailable {
                backend: BackendKind::Cpu,
                reason: format!("this CPU does not support {isa}"),
            }
            .into());
        }
        self.backend.set_isa(isa);
        Ok(self)
    }

    /// Runs the CPU backend's f32 prefill, absorb and query `chunk` tokens at a time: per
    /// chunk the queries read the state as one matrix product, the pairs inside the chunk are
    /// the polynomial of `q·k` directly, and the keys advance the state as a second product
    /// (`docs/design.md`, section 1); `1` runs them token by token. The default is chosen per
    /// kernel from measurements: chunks of 64 from 64 features on, the token loop below
    /// (`benches/results/prefill-2026-12-06.md`); [`Attention::describe_path`] shows it. A call
    /// of fewer than
    /// [`kernel::driver::MIN_CHUNKED_TOKENS`](crate::kernel::driver::MIN_CHUNKED_TOKENS)
    /// tokens (a decode step) and a compensated state run token by token regardless. The
    /// specialized kernels and the generic path in f32 take it; no effect in f64 (always token
    /// by token) or on device backends. With fewer lanes than threads, a long call splits its
    /// chunks over the threads, with the same results.
    pub fn with_prefill_chunk(mut self, chunk: usize) -> Result<Self, SataError> {
        let max = crate::kernel::driver::MAX_CHUNK;
        if chunk == 0 || chunk > max {
            return Err(SataError::InvalidChunk { chunk, max });
        }
        self.backend.set_chunk(chunk);
        Ok(self)
    }

    /// The forward chunk of the CPU backend in f32 (1: token by token, and always 1 in f64
    /// and on device backends).
    pub fn prefill_chunk(&self) -> usize {
        self.backend.chunk()
    }

    /// Runs the CPU backends' lanes (batch x head) on a pool of `threads` threads of this
    /// attention's own, created here once; without it they run on rayon's global pool
    /// (`RAYON_NUM_THREADS`, else one thread per core). Calls too small to gain stay on the
    /// calling thread. Results are bit-identical for any thread count: each lane is one work
    /// item computed by the same code, and statistics merge in lane order. Device backends
    /// ignore it.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, SataError> {
        self.backend.set_threads(Threads::pool(threads)?);
        Ok(self)
    }

    /// The specialized kernel in use, if any.
    pub fn kernel(&self) -> Option<&'static KernelDescriptor> {
        self.backend.kernel()
    }

    /// One line saying which code runs, e.g. `cpu (kernel d16_v16_p4, avx2+fma, token loop)` or
    /// `cpu-generic`.
    pub fn describe_path(&self) -> String {
        self.backend.describe_path()
    }

    /// Sets how [`forward_for_training_from_empty`](Self::forward_for_training_from_empty)
    /// computes (by default [`SequenceForm::Auto`]: pairs where they cost less).
    pub fn with_sequence_form(mut self, form: SequenceForm) -> Self {
        self.sequence_form = form;
        self
    }

    pub fn sequence_form(&self) -> SequenceForm {
        self.sequence_form
    }

    /// Sets what happens to queries with a non-positive denominator.
    pub fn with_denominator_policy(mut self, policy: DenominatorPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Which backend runs, and why a faster requested one did not.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    pub fn denominator_policy(&self) -> DenominatorPolicy {
        self.policy
    }

    /// An empty state for `batch x heads` lanes.
    pub fn new_state(&self, batch: usize, heads: usize) -> Result<State<T>, SataError> {
        State::new(self.config, batch, heads)
    }

    /// An empty state whose sums accumulate as `accumulation` says: use
    /// [`Accumulation::Compensated`] for sequences of millions of tokens in f32
    /// (`docs/numerics.md`).
    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<State<T>, SataError> {
        State::with_accumulation(self.config, batch, heads, accumulation)
    }

    /// Causal attention over a block of tokens; `q`, `k`, `v` have the same number of tokens.
    pub fn prefill(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<Attended<T>, SataError> {
        Attended::collect(&self.config, &q, |out| {
            self.prefill_into(state, q, k, v, out)
        })
    }

    /// [`prefill`](Self::prefill) into a caller-provided `[batch, heads, tokens, d_v]` buffer.
    pub fn prefill_into(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        self.call().prefill(state, (q, k, v), out, |state, out| {
            self.backend.prefill(state, (q, k, v), out, &mut [])
        })
    }

    /// One causal step: `q`, `k`, `v` hold exactly one token per (batch, head).
    pub fn decode(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<Attended<T>, SataError> {
        Attended::collect(&self.config, &q, |out| {
            self.decode_into(state, q, k, v, out)
        })
    }

    /// [`decode`](Self::decode) into a caller-provided `[batch, heads, 1, d_v]` buffer, with no
    /// allocation proportional to the context.
    pub fn decode_into(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        self.call().decode(state, (q, k, v), out, |state, out| {
            self.backend.prefill(state, (q, k, v), out, &mut [])
        })
    }

    /// Adds keys and values to the state without answering queries (non-causal or cross
    /// attention: call [`query`](Self::query) afterwards).
    pub fn absorb(
        &self,
        state: &mut State<T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<(), SataError> {
        self.call()
            .absorb(state, (k, v), |state| self.backend.absorb(state, (k, v)))
    }

    /// Answers queries from the state (every key in it is visible to every query).
    pub fn query(&self, state: &State<T>, q: TensorRef<'_, T>) -> Result<Attended<T>, SataError> {
        Attended::collect(&self.config, &q, |out| self.query_into(state, q, out))
    }

    /// [`query`](Self::query) into a caller-provided `[batch, heads, queries, d_v]` buffer.
    pub fn query_into(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        self.call().query(state, q, out, |state, out| {
            self.backend.query(state, q, out, &mut [])
        })
    }

    /// Non-causal attention on a fresh state: every query sees every key. The number of
    /// queries may differ from the number of keys.
    pub fn attend(
        &self,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<Attended<T>, SataError> {
        let mut state = self.new_state(k.shape().batch, k.shape().heads)?;
        self.absorb(&mut state, k, v)?;
        self.query(&state, q)
    }

    /// A forward that keeps what [`backward`](Self::backward) needs: causal (as
    /// [`prefill`](Self::prefill)) or non-causal (as [`absorb`](Self::absorb) then
    /// [`query`](Self::query)) on `state`, which it advances like those calls. The record holds
    /// copies of the inputs, the outputs, each query's denominator and the state before the
    /// call. On an error the state is left as it was.
    pub fn forward_for_training(
        &self,
        state: &mut State<T>,
        mode: Mode,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<(Attended<T>, Saved<T>), SataError> {
        let initial = state.clone();
        let mut dens = vec![f64::NAN; q.shape().lanes() * q.shape().tokens];
        match self.forward_on_state(state, mode, (q, k, v), &mut dens) {
            Ok(attended) => {
                let saved = self.recorded(&attended, mode, (q, k, v), dens, (Some(initial), false));
                Ok((attended, saved))
            }
            Err(e) => {
                *state = initial;
                Err(e)
            }
        }
    }

    /// A training forward over whole sequences: as
    /// [`forward_for_training`](Self::forward_for_training) on a fresh state whose final state
    /// is not wanted (a training step; the batch and heads are the inputs'). No state before
    /// the call and none after it lets the CPU backends compute every (query, key) pair's
    /// weight `T_P(q·k / c)` directly instead of features, in f64, where that costs less: for
    /// short sequences and many features, by far ([`SequenceForm`],
    /// [`with_sequence_form`](Self::with_sequence_form)); [`Saved::computed_pairs`] says which
    /// ran, and the backward computes the same way.
    pub fn forward_for_training_from_empty(
        &self,
        mode: Mode,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<(Attended<T>, Saved<T>), SataError> {
        let (batch, heads) = (k.shape().batch, k.shape().heads);
        let pairs = self.backend.computes_on_cpu()
            && match self.sequence_form {
                SequenceForm::Auto => {
                    pairwise::cheaper(&self.config, mode, q.shape().tokens, k.shape().tokens)
                }
                SequenceForm::Pairs => true,
                SequenceForm::Features => false,
            };
        let mut dens = vec![f64::NAN; q.shape().lanes() * q.shape().tokens];
        let attended = if pairs {
            let mut empty = Empty(StateHeader::empty::<T>(
                self.config,
                batch,
                heads,
                Accumulation::Plain,
            )?);
            let pairwise = Pairwise::new(&self.config);
            let threads = self.backend.threads();
            let forward = |causal, out: &mut [T], dens: &mut [f64]| {
                Ok(crate::cpu::forward_pairs(
                    &pairwise,
                    &threads,
                    causal,
                    (q, k, v),
                    out,
                    dens,
                ))
            };
            match mode {
                Mode::Causal => Attended::collect(&self.config, &q, |out| {
                    self.call().prefill(&mut empty, (q, k, v), out, |_, out| {
                        forward(true, out, &mut dens)
                    })
                }),
                Mode::NonCausal => {
                    self.call().absorb(&mut empty, (k, v), |_| Ok(()))?;
                    Attended::collect(&self.config, &q, |out| {
                        self.call()
                            .query(&empty, q, out, |_, out| forward(false, out, &mut dens))
                    })
                }
            }?
        } else {
            let mut state = self.new_state(batch, heads)?;
            self.forward_on_state(&mut state, mode, (q, k, v), &mut dens)?
        };
        let saved = self.recorded(&attended, mode, (q, k, v), dens, (None, pairs));
        Ok((attended, saved))
    }

    /// The forward of [`forward_for_training`](Self::forward_for_training) on `state`, each
    /// query's denominator into `dens`.
    fn forward_on_state(
        &self,
        state: &mut State<T>,
        mode: Mode,
        (q, k, v): Qkv<'_, T>,
        dens: &mut [f64],
    ) -> Result<Attended<T>, SataError> {
        match mode {
            Mode::Causal => Attended::collect(&self.config, &q, |out| {
                self.call().prefill(state, (q, k, v), out, |s, out| {
                    self.backend.prefill(s, (q, k, v), out, dens)
                })
            }),
            Mode::NonCausal => self.absorb(state, k, v).and_then(|()| {
                Attended::collect(&self.config, &q, |out| {
                    self.call()
                        .query(state, q, out, |s, out| self.backend.query(s, q, out, dens))
                })
            }),
        }
    }

    /// The record of a training forward.
    fn recorded(
        &self,
        attended: &Attended<T>,
        mode: Mode,
        (q, k, v): Qkv<'_, T>,
        dens: Vec<f64>,
        (initial, pairs): (Option<State<T>>, bool),
    ) -> Saved<T> {
        let owned = |t: TensorRef<'_, T>| Tensor {
            data: t.data().to_vec(),
            shape: t.shape(),
        };
        Saved {
            config: self.config,
            mode,
            q: owned(q),
            k: owned(k),
            v: owned(v),
            y: attended.output.data.clone(),
            dens,
            initial,
            pairs,
        }
    }

    /// The gradients of `L = sum(y * dy)` for the forward `saved` recorded, with respect to
    /// its queries, keys, values and starting state; with `d_final_state`, of
    /// `L + sum(S_final * d_final_state)`, the state after the forward being an output too.
    ///
    /// Computed by the two passes of `docs/design.md` ("Gradients") on the backend that ran
    /// the forward: the specialized kernel's generated backward, the device's backward
    /// kernels (wgpu, CUDA, cuda-host), or on the generic path the reference passes in f64
    /// ([`Gradients::path`] says which). The result has the forward's element type.
    pub fn backward(
        &self,
        saved: &Saved<T>,
        dy: TensorRef<'_, T>,
        d_final_state: Option<&StateGradient<T>>,
    ) -> Result<Gradients<T>, SataError> {
        crate::cpu::backward::run(&self.config, &*self.backend, saved, dy, d_final_state)
    }

    fn call(&self) -> Call<'_> {
        Call {
            config: &self.config,
            policy: self.policy,
        }
    }
}

/// The lanes of a training forward from an empty state that computes pairs: a header and no
/// words (nothing to back up, nothing to overflow).
struct Empty(StateHeader);

impl Store for Empty {
    type Backup = ();

    fn header(&self) -> &StateHeader {
        &self.0
    }

    fn header_mut(&mut self) -> &mut StateHeader {
        &mut self.0
    }

    fn backup(&self) -> Result<(), SataError> {
        Ok(())
    }

    fn restore(&mut self, (): ()) -> Result<(), SataError> {
        Ok(())
    }

    fn is_finite(&self) -> Result<bool, SataError> {
        Ok(true)
    }
}

/// A host state in the call sequence: its backup is a copy in host memory.
impl<T: Element> Store for State<T> {
    type Backup = State<T>;

    fn header(&self) -> &StateHeader {
        State::header(self)
    }

    fn header_mut(&mut self) -> &mut StateHeader {
        State::header_mut(self)
    }

    fn backup(&self) -> Result<State<T>, SataError> {
        Ok(self.clone())
    }

    fn restore(&mut self, backup: State<T>) -> Result<(), SataError> {
        *self = backup;
        Ok(())
    }

    fn is_finite(&self) -> Result<bool, SataError> {
        Ok(State::is_finite(self))
    }
}
