//! The user-facing attention object.

use sata_codegen::KernelConfig;

use crate::backend::{self, BackendKind, BackendRequest, Selection};
use crate::checks::{Lanes, output_len};
use crate::cpu_generic::{Answer, FeatureProgram};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use crate::device_backend::{HostStateBackend, HostWords};
use crate::element::Element;
use crate::error::{QueryIndex, SataError};
use crate::kernel::SpecializedKernel;
use crate::scratch::KernelScratch;
use crate::simd::Isa;
use crate::state::State;
use crate::stats::{CallStats, DenominatorPolicy, Norms};
use crate::tensor::{Shape, Tensor, TensorRef};

/// Outputs of one call and what the call saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Attended<T> {
    /// `[batch, heads, queries, d_v]`.
    pub output: Tensor<T>,
    pub stats: CallStats,
}

impl<T> Attended<T> {
    /// The outputs of the queries `q` (shape `q`, last dimension replaced by `d_v`).
    pub(crate) fn new(config: &KernelConfig, q: Shape, data: Vec<T>, stats: CallStats) -> Self {
        Self {
            output: Tensor {
                data,
                shape: Shape::new(q.batch, q.heads, q.tokens, config.d_v()),
            },
            stats,
        }
    }
}

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
/// one call (up to floating-point summation order).
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
    program: FeatureProgram<T>,
    /// The specialized kernel and instruction set, when the CPU backend runs one (f32 only).
    specialized: Option<(&'static dyn SpecializedKernel, Isa)>,
    /// The device kernels (WGSL through wgpu, or CUDA) when a device backend runs (f32 only).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    device: Option<Box<dyn HostStateBackend>>,
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

/// Casts a slice of `T` to f32 on the specialized path, which only exists for `T = f32`.
fn f32s<T: Element>(x: &[T]) -> &[f32] {
    T::as_f32(x).expect("the specialized path is only chosen for f32")
}

fn f32s_mut<T: Element>(x: &mut [T]) -> &mut [f32] {
    T::as_f32_mut(x).expect("the specialized path is only chosen for f32")
}

/// A tensor as f32 on a device path, which only exists for `T = f32`.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn f32_ref<'a, T: Element>(x: TensorRef<'a, T>) -> TensorRef<'a, f32> {
    x.as_f32().expect("device paths are only chosen for f32")
}

/// Lends a host state to a device backend for one call and takes back its progress.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn on_device<T: Element, R>(
    state: &mut State<T>,
    call: impl FnOnce(&mut HostWords<'_>) -> Result<R, SataError>,
) -> Result<R, SataError> {
    let parts = state.parts();
    // Devices take the lanes back to back; in memory they are padded to whole cache lines.
    let mut words = state.as_slice().into_owned();
    let mut host = HostWords {
        parts,
        words: f32s_mut(&mut words),
        tokens: parts.3,
        poisoned: parts.4,
    };
    let result = call(&mut host);
    let (tokens, poisoned) = (host.tokens, host.poisoned);
    state.store_words(&words);
    state.set_progress(tokens, poisoned);
    result
}

/// The device backend `backend` names, if it is one.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn device_backend(
    backend: BackendKind,
    config: KernelConfig,
) -> Result<Option<Box<dyn HostStateBackend>>, SataError> {
    Ok(match backend {
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Some(Box::new(crate::gpu::GpuAttention::new(config)?)),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Some(Box::new(crate::cuda::CudaAttention::new(
            config,
            crate::cuda::Executor::Gpu,
        )?)),
        #[cfg(feature = "cuda")]
        BackendKind::CudaHost => Some(Box::new(crate::cuda::CudaAttention::new(
            config,
            crate::cuda::Executor::Host(crate::cuda::ThreadOrder::Forward),
        )?)),
        _ => None,
    })
}

impl<T: Element> Attention<T> {
    /// Attention on the best available CPU path (see [`Attention::selection`]).
    pub fn new(config: KernelConfig) -> Result<Self, SataError> {
        Self::with_backend(config, BackendRequest::Auto)
    }

    /// Attention on the requested backend; fails if that backend cannot run here.
    pub fn with_backend(config: KernelConfig, request: BackendRequest) -> Result<Self, SataError> {
        let (selection, kernel) = backend::resolve(request, &config, T::DTYPE)?;
        Ok(Self {
            config,
            policy: DenominatorPolicy::default(),
            program: FeatureProgram::new(&config),
            specialized: kernel.map(|k| (k, Isa::detect())),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            device: device_backend(selection.backend, config)?,
            selection,
        })
    }

    /// Runs the given CUDA kernels (for instance host execution in reverse thread order, or a
    /// forced split) on host states. Fails for `f64`: CUDA kernels are f32.
    #[cfg(feature = "cuda")]
    pub fn with_cuda(cuda: crate::cuda::CudaAttention) -> Result<Self, SataError> {
        if T::DTYPE != crate::DType::F32 {
            return Err(SataError::Backend(backend::BackendUnavailable {
                backend: BackendKind::Cuda,
                reason: format!("CUDA kernels compute in float32, not {}", T::DTYPE),
            }));
        }
        let config = *cuda.config();
        Ok(Self {
            config,
            selection: Selection {
                backend: match cuda.executor() {
                    crate::cuda::Executor::Gpu => BackendKind::Cuda,
                    crate::cuda::Executor::Host(_) => BackendKind::CudaHost,
                },
                fallback: None,
            },
            policy: cuda.denominator_policy(),
            program: FeatureProgram::new(&config),
            specialized: None,
            device: Some(Box::new(cuda)),
        })
    }

    /// Runs the given specialized kernel (e.g. one made by `#[sata::kernel]`) on the widest
    /// instruction set this CPU supports. Fails for `f64`: specialized kernels are f32.
    pub fn with_kernel(kernel: &'static dyn SpecializedKernel) -> Result<Self, SataError> {
        let config = kernel.descriptor().config()?;
        if T::DTYPE != crate::DType::F32 {
            return Err(SataError::Backend(backend::BackendUnavailable {
                backend: BackendKind::Cpu,
                reason: format!("specialized kernels compute in float32, not {}", T::DTYPE),
            }));
        }
        Ok(Self {
            config,
            selection: Selection {
                backend: BackendKind::Cpu,
                fallback: None,
            },
            policy: DenominatorPolicy::default(),
            program: FeatureProgram::new(&config),
            specialized: Some((kernel, Isa::detect())),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            device: None,
        })
    }

    /// Runs the specialized kernel with a given instruction set (for comparisons and tests);
    /// fails if this CPU does not support it. No effect on the generic path.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self, SataError> {
        if !isa.is_supported() {
            return Err(SataError::Backend(backend::BackendUnavailable {
                backend: BackendKind::Cpu,
                reason: format!("this CPU does not support {isa}"),
            }));
        }
        if let Some((_, current)) = &mut self.specialized {
            *current = isa;
        }
        Ok(self)
    }

    /// The specialized kernel in use, if any.
    pub fn kernel(&self) -> Option<&'static crate::KernelDescriptor> {
        self.specialized.map(|(k, _)| k.descriptor())
    }

    /// One line saying which code runs, e.g. `cpu (kernel d16_v16_p4, avx2+fma)` or
    /// `cpu-generic`.
    pub fn describe_path(&self) -> String {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(device) = &self.device {
            return device.describe_path();
        }
        match self.specialized {
            Some((k, isa)) => format!(
                "{} (kernel {}, {isa})",
                self.selection.backend,
                k.descriptor().name
            ),
            None => self.selection.backend.to_string(),
        }
    }

    /// Sets what happens to queries with a non-positive denominator.
    pub fn with_denominator_policy(mut self, policy: DenominatorPolicy) -> Self {
        self.policy = policy;
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            self.device = self.device.map(|d| d.with_policy(policy));
        }
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
    /// [`Accumulation::Compensated`] for sequences of millions of tokens in f32 (README, "Long
    /// sequences").
    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: crate::Accumulation,
    ) -> Result<State<T>, SataError> {
        let state = State::with_accumulation(self.config, batch, heads, accumulation)?;
        self.check_state(&state)?;
        Ok(state)
    }

    /// Causal attention over a block of tokens; `q`, `k`, `v` have the same number of tokens.
    pub fn prefill(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<Attended<T>, SataError> {
        let mut out = vec![T::zero(); output_len(&self.config, &q)?];
        let stats = self.prefill_into(state, q, k, v, &mut out)?;
        Ok(self.attended(q.shape(), out, stats))
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
        let norms = self.norms(state, Some(&q), Some(&k));
        let result = self.prefill_run(state, q, k, v, out);
        self.bound(state, result, norms)
    }

    fn prefill_run(
        &self,
        state: &mut State<T>,
        q: TensorRef<'_, T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        self.check_state(state)?;
        self.lanes(state).inputs(Some(&q), &k, &v)?;
        self.lanes(state).causal_tokens(&q, &k)?;
        self.lanes(state).output(&q, out)?;
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(device) = &self.device {
            return on_device(state, |host| {
                device.prefill(host, f32_ref(q), f32_ref(k), f32_ref(v), f32s_mut(out))
            });
        }
        self.transaction(state, |this, state| {
            let mut stats = CallStats::default();
            // Only the generic path needs these buffers; made on first use.
            let mut scratch = None;
            let mut kernel_scratch = this.kernel_scratch();
            let heads = state.heads();
            let before = state.tokens();
            let (nq, dv) = (q.shape().tokens, this.config.d_v());
            for (lane, lane_state) in state.lanes_mut().enumerate() {
                let out = &mut out[lane * nq * dv..(lane + 1) * nq * dv];
                let (ql, kl, vl) = (q.lane(lane), k.lane(lane), v.lane(lane));
                let mut answered =
                    |t, a| record(&mut stats, (lane, heads), t, a, before + t as u64 + 1);
                match this.specialized {
                    Some((kernel, isa)) => kernel.causal(
                        isa,
                        &mut kernel_scratch,
                        f32s_mut(lane_state),
                        (f32s(ql), f32s(kl), f32s(vl)),
                        f32s_mut(out),
                        &mut |t, denominator, ok| answered(t, Answer { denominator, ok }),
                    ),
                    None => this.program.causal(
                        scratch.get_or_insert_with(|| this.program.scratch()),
                        lane_state,
                        (ql, kl, vl),
                        out,
                        answered,
                    ),
                }
            }
            state.advance(k.shape().tokens);
            stats
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
        let mut out = vec![T::zero(); output_len(&self.config, &q)?];
        let stats = self.decode_into(state, q, k, v, &mut out)?;
        Ok(self.attended(q.shape(), out, stats))
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
        self.lanes(state).one_token([&q, &k, &v])?;
        self.prefill_into(state, q, k, v, out)
    }

    /// Adds keys and values to the state without answering queries (non-causal or cross
    /// attention: call [`query`](Self::query) afterwards).
    pub fn absorb(
        &self,
        state: &mut State<T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<(), SataError> {
        let norms = self.norms(state, None, Some(&k));
        let result = self.absorb_run(state, k, v).map(|()| CallStats::default());
        self.bound(state, result, norms).map(|_| ())
    }

    fn absorb_run(
        &self,
        state: &mut State<T>,
        k: TensorRef<'_, T>,
        v: TensorRef<'_, T>,
    ) -> Result<(), SataError> {
        self.check_state(state)?;
        self.lanes(state).inputs(None, &k, &v)?;
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(device) = &self.device {
            return on_device(state, |host| device.absorb(host, f32_ref(k), f32_ref(v)));
        }
        let mut scratch = None;
        let mut kernel_scratch = self.kernel_scratch();
        for (lane, lane_state) in state.lanes_mut().enumerate() {
            let (kl, vl) = (k.lane(lane), v.lane(lane));
            match self.specialized {
                Some((kernel, isa)) => kernel.absorb(
                    isa,
                    &mut kernel_scratch,
                    f32s_mut(lane_state),
                    f32s(kl),
                    f32s(vl),
                ),
                None => self.program.absorb(
                    scratch.get_or_insert_with(|| self.program.scratch()),
                    lane_state,
                    kl,
                    vl,
                ),
            }
        }
        state.advance(k.shape().tokens);
        // Absorb answers no query that would reveal an overflow, so look at the state itself.
        if !state.is_finite() {
            state.poison();
            return Err(SataError::StatePoisoned { dtype: T::DTYPE });
        }
        Ok(())
    }

    /// Answers queries from the state (every key in it is visible to every query).
    pub fn query(&self, state: &State<T>, q: TensorRef<'_, T>) -> Result<Attended<T>, SataError> {
        let mut out = vec![T::zero(); output_len(&self.config, &q)?];
        let stats = self.query_into(state, q, &mut out)?;
        Ok(self.attended(q.shape(), out, stats))
    }

    /// [`query`](Self::query) into a caller-provided `[batch, heads, queries, d_v]` buffer.
    pub fn query_into(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        let norms = self.norms(state, Some(&q), None);
        let mut stats = self.query_run(state, q, out)?;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    fn query_run(
        &self,
        state: &State<T>,
        q: TensorRef<'_, T>,
        out: &mut [T],
    ) -> Result<CallStats, SataError> {
        self.check_state(state)?;
        self.lanes(state).tensor(&q, self.config.d_k(), "d_k")?;
        self.lanes(state).output(&q, out)?;
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(device) = &self.device {
            return device.query(
                state.parts(),
                f32s(&state.as_slice()),
                f32_ref(q),
                f32s_mut(out),
            );
        }
        let mut stats = CallStats::default();
        let mut scratch = None;
        let mut kernel_scratch = self.kernel_scratch();
        let (nq, dv) = (q.shape().tokens, self.config.d_v());
        let heads = state.heads();
        for (lane, lane_state) in state.lanes().enumerate() {
            let out = &mut out[lane * nq * dv..(lane + 1) * nq * dv];
            let ql = q.lane(lane);
            let keys = state.tokens();
            let mut answered = |t, a| record(&mut stats, (lane, heads), t, a, keys);
            match self.specialized {
                Some((kernel, isa)) => kernel.read(
                    isa,
                    &mut kernel_scratch,
                    f32s(lane_state),
                    f32s(ql),
                    f32s_mut(out),
                    &mut |t, denominator, ok| answered(t, Answer { denominator, ok }),
                ),
                None => self.program.read(
                    scratch.get_or_insert_with(|| self.program.scratch()),
                    lane_state,
                    ql,
                    out,
                    answered,
                ),
            }
        }
        self.enforce_policy(&stats)?;
        Ok(stats)
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

    /// Feature buffers of the specialized kernel; empty on the generic path.
    fn kernel_scratch(&self) -> KernelScratch {
        match self.specialized {
            Some(_) => KernelScratch::take(crate::kernel::scratch_words(self.config.features())),
            None => KernelScratch::take(0),
        }
    }

    fn attended(&self, q: Shape, data: Vec<T>, stats: CallStats) -> Attended<T> {
        Attended::new(&self.config, q, data, stats)
    }

    /// Runs a state-mutating call so that a failure leaves no half-updated state: with the
    /// `Error` policy the state is restored from a copy; an overflow poisons the state.
    fn transaction(
        &self,
        state: &mut State<T>,
        call: impl FnOnce(&Self, &mut State<T>) -> CallStats,
    ) -> Result<CallStats, SataError> {
        let backup = (self.policy == DenominatorPolicy::Error).then(|| state.clone());
        let stats = call(self, state);
        // A bad answer is either a non-positive denominator or an overflow; only the latter
        // leaves non-finite numbers in the state, and only then is the scan worth its cost.
        if stats.bad_denominators > 0 && !state.is_finite() {
            match backup {
                Some(backup) => *state = backup,
                None => state.poison(),
            }
            return Err(SataError::StatePoisoned { dtype: T::DTYPE });
        }
        if let Err(e) = self.enforce_policy(&stats) {
            if let Some(backup) = backup {
                *state = backup;
            }
            return Err(e);
        }
        Ok(stats)
    }

    /// The norms a call's logit bound needs: its queries' largest, and the largest key norm
    /// its queries can have seen (the state's and the call's keys).
    fn norms(
        &self,
        state: &State<T>,
        q: Option<&TensorRef<'_, T>>,
        k: Option<&TensorRef<'_, T>>,
    ) -> Norms {
        Norms::new(
            state.max_key_norm(),
            self.config.d_k(),
            q.map(|q| q.data()),
            k.map(|k| k.data()),
        )
    }

    /// After a call that added keys: record their norm in the state and bound the call's logits.
    fn bound(
        &self,
        state: &mut State<T>,
        result: Result<CallStats, SataError>,
        norms: Norms,
    ) -> Result<CallStats, SataError> {
        let mut stats = result?;
        state.set_max_key_norm(norms.keys);
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    fn enforce_policy(&self, stats: &CallStats) -> Result<(), SataError> {
        stats.enforce(self.policy)
    }

    fn check_state(&self, state: &State<T>) -> Result<(), SataError> {
        crate::checks::same_config(state.config(), &self.config)?;
        if state.is_poisoned() {
            return Err(SataError::StatePoisoned { dtype: T::DTYPE });
        }
        Ok(())
    }

    /// Shape checks of a call on `state`'s lanes.
    fn lanes(&self, state: &State<T>) -> Lanes<'_> {
        Lanes {
            config: &self.config,
            batch: state.batch(),
            heads: state.heads(),
        }
    }
}

/// Records the answer to query `token` of `lane`, which saw `keys` keys.
pub(crate) fn record(
    stats: &mut CallStats,
    (lane, heads): (usize, usize),
    token: usize,
    answer: Answer,
    keys: u64,
) {
    let at = QueryIndex {
        batch: lane / heads,
        head: lane % heads,
        token,
    };
    stats.record(at, answer.denominator, answer.ok, keys);
}
