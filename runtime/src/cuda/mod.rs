//! The `cuda` backend: CUDA C rendered by the generator from the same kernel plan as the CPU
//! and WGSL kernels, compiled by NVRTC and launched through cudarc on an NVIDIA GPU, or
//! compiled by g++ against a host-execution header and run on the CPU ([`Executor::Host`]),
//! through the same launch code.
//!
//! [`CudaAttention`] works on [`CudaState`]s that stay in the executor's memory between
//! calls: a decode step uploads one token's `q`, `k`, `v` per lane and downloads `y`. States
//! move to and from the host ([`CudaState::download`], [`CudaAttention::upload`]) in the
//! layout of [`crate::State`], so checkpoints and continuation work across backends.
//!
//! The CUDA libraries are loaded at run time: a build without a GPU or CUDA toolkit works,
//! and asking for the GPU there is one error line. `unsafe` lives in [`ffi`] and in the two
//! `launch` functions of the executors, whose callers ([`CudaAttention`]'s `run`) size every
//! buffer from the plan.

mod device;
mod ffi;
mod host;
pub mod launch;
pub mod nvrtc;

use std::sync::{Arc, OnceLock};

use sata_codegen::{CudaEntry, CudaLayout, KernelConfig, KernelPlan};

pub use host::{HOST_EXEC_HEADER, HostLibrary, ThreadOrder};
use launch::{Arguments, Buffers, dims, split_for};
use nvrtc::cuda_error;

use crate::attention::{Attended, record};
use crate::checks::{Lanes, output_len};
use crate::cpu_generic::Answer;
use crate::error::SataError;
use crate::state::{Accumulation, State};
use crate::stats::{CallStats, DenominatorPolicy, Norms};
use crate::tensor::TensorRef;

/// Where the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// CUDA device 0, through the driver (needs an NVIDIA GPU, its driver and NVRTC).
    Gpu,
    /// The CPU: the same CUDA source compiled by g++ against the host-execution header, the
    /// threads of each block run as fibers in the given order. Slow; for verification.
    Host(ThreadOrder),
}

/// Summary of the GPU the backend would use, or an error line when there is none.
pub fn gpu_summary() -> Result<String, SataError> {
    let d = device::device()?;
    Ok(format!("{} (sm_{}, {} SMs)", d.name, d.arch, d.sm_count))
}

#[derive(Clone)]
enum Exec {
    Gpu(Arc<device::Device>),
    Host(ThreadOrder),
}

#[derive(Clone)]
enum Module {
    Gpu(Arc<device::DeviceModule>),
    Host(Arc<host::HostModule>),
}

enum Memory {
    Gpu(cudarc::driver::CudaSlice<f32>),
    Host(Vec<f32>),
}

impl Exec {
    /// Compiles (NVRTC or g++) and loads the kernels of `layout`, once per process.
    fn load(&self, plan: &KernelPlan, layout: &CudaLayout) -> Result<Module, SataError> {
        Ok(match self {
            Exec::Gpu(d) => Module::Gpu(d.module(plan, layout)?),
            Exec::Host(_) => Module::Host(host::module(plan, layout)?),
        })
    }

    fn zeroed(&self, words: usize) -> Result<Memory, SataError> {
        Ok(match self {
            Exec::Gpu(d) => Memory::Gpu(d.alloc_zeroed(words)?),
            Exec::Host(_) => Memory::Host(vec![0.0; words.max(1)]),
        })
    }

    fn upload(&self, data: &[f32]) -> Result<Memory, SataError> {
        Ok(match self {
            Exec::Gpu(d) => Memory::Gpu(d.upload(data)?),
            Exec::Host(_) if data.is_empty() => Memory::Host(vec![0.0]),
            Exec::Host(_) => Memory::Host(data.to_vec()),
        })
    }

    fn read(&self, memory: &Memory, out: &mut [f32]) -> Result<(), SataError> {
        match (self, memory) {
            (Exec::Gpu(d), Memory::Gpu(m)) => d.read(m, out),
            (_, Memory::Host(m)) => {
                out.copy_from_slice(&m[..out.len()]);
                Ok(())
            }
            (Exec::Host(_), Memory::Gpu(_)) => Err(mixed()),
        }
    }

    fn write(&self, memory: &mut Memory, data: &[f32]) -> Result<(), SataError> {
        match (self, memory) {
            (Exec::Gpu(d), Memory::Gpu(m)) => d.write(m, data),
            (_, Memory::Host(m)) => {
                m[..data.len()].copy_from_slice(data);
                Ok(())
            }
            (Exec::Host(_), Memory::Gpu(_)) => Err(mixed()),
        }
    }

    fn zero(&self, memory: &mut Memory) -> Result<(), SataError> {
        match (self, memory) {
            (Exec::Gpu(d), Memory::Gpu(m)) => d.zero(m),
            (_, Memory::Host(m)) => {
                m.fill(0.0);
                Ok(())
            }
            (Exec::Host(_), Memory::Gpu(_)) => Err(mixed()),
        }
    }

    fn address(&self, memory: &Memory) -> u64 {
        match (self, memory) {
            (Exec::Gpu(d), Memory::Gpu(m)) => d.address(m),
            (_, Memory::Host(m)) => m.as_ptr() as u64,
            // Never built: a state's memory always comes from its attention's executor.
            (Exec::Host(_), Memory::Gpu(_)) => 0,
        }
    }

    fn sm_count(&self) -> usize {
        match self {
            Exec::Gpu(d) => d.sm_count,
            Exec::Host(_) => 1,
        }
    }
}

fn mixed() -> SataError {
    cuda_error("a state of one CUDA executor was used with another")
}

/// Symmetry-aware Taylor attention with generated CUDA kernels, f32, for one configuration.
///
/// The same calls as [`crate::Attention`] (causal prefill, decode, absorb + query, attend),
/// with the same checks, errors, statistics and [`DenominatorPolicy`], on [`CudaState`]s.
pub struct CudaAttention {
    config: KernelConfig,
    plan: KernelPlan,
    layout: CudaLayout,
    executor: Executor,
    exec: Exec,
    module: Module,
    /// The Kahan-compensated kernels, built on the first compensated state.
    compensated: OnceLock<Result<(CudaLayout, Module), String>>,
    policy: DenominatorPolicy,
    split: Option<usize>,
}

impl std::fmt::Debug for CudaAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaAttention")
            .field("config", &self.config)
            .field("path", &self.describe_path())
            .field("policy", &self.policy)
            .finish()
    }
}

impl CudaAttention {
    /// Kernels for `config` on `executor`, compiled once per configuration per process.
    pub fn new(config: KernelConfig, executor: Executor) -> Result<Self, SataError> {
        let plan = KernelPlan::new(&config);
        let layout = CudaLayout::new(&plan).map_err(cuda_error)?;
        let exec = match executor {
            Executor::Gpu => Exec::Gpu(device::device()?),
            Executor::Host(order) => Exec::Host(order),
        };
        let module = exec.load(&plan, &layout)?;
        Ok(Self {
            config,
            plan,
            layout,
            executor,
            exec,
            module,
            compensated: OnceLock::new(),
            policy: DenominatorPolicy::default(),
            split: None,
        })
    }

    /// The layout and module for states that accumulate as `accumulation` says.
    fn kernels(&self, accumulation: Accumulation) -> Result<(&CudaLayout, &Module), SataError> {
        match accumulation {
            Accumulation::Plain => Ok((&self.layout, &self.module)),
            Accumulation::Compensated => {
                let built = self.compensated.get_or_init(|| {
                    let layout =
                        CudaLayout::variant(&self.plan, true).map_err(|e| e.to_string())?;
                    let module = self.exec.load(&self.plan, &layout).map_err(|e| match e {
                        SataError::Cuda { message } => message,
                        other => other.to_string(),
                    })?;
                    Ok((layout, module))
                });
                match built {
                    Ok((layout, module)) => Ok((layout, module)),
                    Err(message) => Err(cuda_error(message)),
                }
            }
        }
    }

    /// Deals each lane's state rows to `split` blocks (default: enough blocks for two per SM).
    /// Any split gives the same results within rounding; tests use it to exercise the
    /// cross-block sums.
    pub fn with_split(mut self, split: usize) -> Self {
        self.split = Some(split.max(1));
        self
    }

    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Where the kernels run.
    pub fn executor(&self) -> Executor {
        self.executor
    }

    /// The CUDA layout (block, chunk, shared memory, register budgets) of the kernels.
    pub fn layout(&self) -> &CudaLayout {
        &self.layout
    }

    /// One line saying which code runs, e.g. `cuda (kernel d16_v16_p4, NVIDIA H100, sm_90)` or
    /// `cuda (kernel d16_v16_p4, host execution on the CPU, threads forward)`.
    pub fn describe_path(&self) -> String {
        match &self.exec {
            Exec::Gpu(d) => format!(
                "cuda (kernel {}, {}, sm_{}, {} SMs)",
                self.plan.name, d.name, d.arch, d.sm_count
            ),
            Exec::Host(order) => format!(
                "cuda (kernel {}, host execution on the CPU, threads {})",
                self.plan.name,
                match order {
                    ThreadOrder::Forward => "forward",
                    ThreadOrder::Reverse => "reverse",
                }
            ),
        }
    }

    /// Sets what happens to queries with a non-positive denominator.
    pub fn with_denominator_policy(mut self, policy: DenominatorPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn denominator_policy(&self) -> DenominatorPolicy {
        self.policy
    }

    /// An empty state for `batch x heads` lanes.
    pub fn new_state(&self, batch: usize, heads: usize) -> Result<CudaState, SataError> {
        self.new_state_with(batch, heads, Accumulation::Plain)
    }

    /// An empty state whose sums accumulate as `accumulation` says (the compensated kernels
    /// are compiled on first use).
    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<CudaState, SataError> {
        let words = State::<f32>::check_words(self.config, batch, heads, accumulation)?;
        self.kernels(accumulation)?;
        Ok(CudaState {
            exec: self.exec.clone(),
            config: self.config,
            batch,
            heads,
            tokens: 0,
            poisoned: false,
            max_key_norm: Some(0.0),
            accumulation,
            memory: self.exec.zeroed(words)?,
        })
    }

    /// A copy of a host state (e.g. loaded from a checkpoint written by any backend).
    pub fn upload(&self, state: &State<f32>) -> Result<CudaState, SataError> {
        self.upload_words(state.parts(), &state.as_slice())
    }

    pub(crate) fn upload_words(
        &self,
        (config, batch, heads, tokens, poisoned, accumulation, max_key_norm): crate::device_backend::Parts,
        words: &[f32],
    ) -> Result<CudaState, SataError> {
        self.check_config(&config)?;
        let mut state = self.new_state_with(batch, heads, accumulation)?;
        self.exec.write(&mut state.memory, words)?;
        state.tokens = tokens;
        state.poisoned = poisoned;
        state.max_key_norm = max_key_norm;
        Ok(state)
    }

    /// Causal attention over a block of tokens (see [`crate::Attention::prefill`]).
    pub fn prefill(
        &self,
        state: &mut CudaState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        let mut out = vec![0.0; output_len(&self.config, &q)?];
        let stats = self.prefill_into(state, q, k, v, &mut out)?;
        Ok(Attended::new(&self.config, q.shape(), out, stats))
    }

    /// [`prefill`](Self::prefill) into a caller-provided `[batch, heads, tokens, d_v]` buffer.
    pub fn prefill_into(
        &self,
        state: &mut CudaState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.check_state(state)?;
        let norms = Norms::new(
            state.max_key_norm,
            self.config.d_k(),
            Some(q.data()),
            Some(k.data()),
        );
        let lanes = lanes(state);
        lanes.inputs(Some(&q), &k, &v)?;
        lanes.causal_tokens(&q, &k)?;
        lanes.output(&q, out)?;
        let backup = match self.policy {
            DenominatorPolicy::Error => Some(state.snapshot()?),
            DenominatorPolicy::Zero => None,
        };
        let entry = if k.shape().tokens == 1 {
            CudaEntry::Decode
        } else {
            CudaEntry::Prefill
        };
        let stats = self.run(entry, state, Some(q), Some((k, v)), out)?;
        let advanced = k.shape().tokens as u64;
        state.tokens += advanced;
        let mut stats = self.settle(state, backup, advanced, stats)?;
        state.max_key_norm = norms.keys;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    /// One causal step: exactly one token per (batch, head), one launch.
    pub fn decode(
        &self,
        state: &mut CudaState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        lanes(state).one_token([&q, &k, &v])?;
        self.prefill(state, q, k, v)
    }

    /// [`decode`](Self::decode) into a caller-provided `[batch, heads, 1, d_v]` buffer.
    pub fn decode_into(
        &self,
        state: &mut CudaState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        lanes(state).one_token([&q, &k, &v])?;
        self.prefill_into(state, q, k, v, out)
    }

    /// Adds keys and values to the state without answering queries. No query reveals an
    /// overflow here, so the state is read back once to look for one.
    pub fn absorb(
        &self,
        state: &mut CudaState,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError> {
        self.check_state(state)?;
        lanes(state).inputs(None, &k, &v)?;
        let norms = Norms::new(state.max_key_norm, self.config.d_k(), None, Some(k.data()));
        self.run(CudaEntry::Absorb, state, None, Some((k, v)), &mut [])?;
        state.tokens += k.shape().tokens as u64;
        if state.download_words()?.iter().any(|x| !x.is_finite()) {
            state.poisoned = true;
            return Err(SataError::StatePoisoned {
                dtype: crate::DType::F32,
            });
        }
        state.max_key_norm = norms.keys;
        Ok(())
    }

    /// Answers queries from the state.
    pub fn query(
        &self,
        state: &CudaState,
        q: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        let mut out = vec![0.0; output_len(&self.config, &q)?];
        let stats = self.query_into(state, q, &mut out)?;
        Ok(Attended::new(&self.config, q.shape(), out, stats))
    }

    /// [`query`](Self::query) into a caller-provided `[batch, heads, queries, d_v]` buffer.
    pub fn query_into(
        &self,
        state: &CudaState,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.check_state(state)?;
        let lanes = lanes(state);
        lanes.tensor(&q, self.config.d_k(), "d_k")?;
        lanes.output(&q, out)?;
        let norms = Norms::new::<f32>(state.max_key_norm, self.config.d_k(), Some(q.data()), None);
        let mut stats = self.run(CudaEntry::Answer, state, Some(q), None, out)?;
        stats.enforce(self.policy)?;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    /// Non-causal attention on a fresh state: every query sees every key.
    pub fn attend(
        &self,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        let mut state = self.new_state(k.shape().batch, k.shape().heads)?;
        self.absorb(&mut state, k, v)?;
        self.query(&state, q)
    }

    /// Uploads the inputs, launches `entry` once, and (for kernels that answer queries)
    /// downloads numerators and denominators, divides, and counts bad denominators.
    fn run(
        &self,
        entry: CudaEntry,
        state: &CudaState,
        q: Option<TensorRef<'_, f32>>,
        kv: Option<(TensorRef<'_, f32>, TensorRef<'_, f32>)>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let mut stats = CallStats::default();
        let tokens = match (&q, &kv) {
            (_, Some((k, _))) => k.shape().tokens,
            (Some(q), None) => q.shape().tokens,
            (None, None) => 0,
        };
        if tokens == 0 {
            return Ok(stats);
        }
        let exec = &self.exec;
        let lanes = state.lanes();
        let dv = self.config.d_v();
        let row = dv + 1;
        let reads = entry.reads();
        let causal = entry.intra();
        // Inputs were checked against the state's lanes and the configuration (the `Lanes`
        // checks), so each holds lanes * tokens rows of d_k or d_v: the sizes the kernels index.
        let input = |t: Option<TensorRef<'_, f32>>| exec.upload(t.map(|t| t.data()).unwrap_or(&[]));
        let q_mem = input(q)?;
        let k_mem = input(kv.map(|(k, _)| k))?;
        let v_mem = input(kv.map(|(_, v)| v))?;
        let out_words = if reads { lanes * tokens * row } else { 0 };
        let out_mem = exec.zeroed(out_words)?;
        let split = self
            .split
            .unwrap_or_else(|| split_for(&self.layout, lanes, exec.sm_count()));
        let dims = dims(&self.layout, lanes, split)?;
        let mut args = Arguments::new(
            Buffers {
                q: exec.address(&q_mem),
                k: exec.address(&k_mem),
                v: exec.address(&v_mem),
                state: exec.address(&state.memory),
                out: exec.address(&out_mem),
            },
            lanes,
            tokens,
        )?;
        let (_, module) = self.kernels(state.accumulation)?;
        match (&self.exec, module) {
            // SAFETY: `q_mem`, `k_mem`, `v_mem` hold `lanes * tokens` rows of d_k, d_k, d_v
            // (checked above) or are not read by `entry`; the state holds `lanes` lanes of the
            // plan's state words; `out_mem` holds `lanes * tokens` rows of d_v + 1 when `entry`
            // reads. All live until after the launch returns (host) or the read below
            // synchronises (GPU).
            (Exec::Gpu(d), Module::Gpu(m)) => unsafe { d.launch(m, entry, dims, &mut args)? },
            // SAFETY: as above, in host memory.
            (Exec::Host(order), Module::Host(m)) => unsafe {
                m.launch(entry, dims, &mut args, *order)?
            },
            _ => return Err(mixed()),
        }
        if !reads {
            if let Exec::Gpu(d) = exec {
                d.stream
                    .synchronize()
                    .map_err(|e| cuda_error(format!("waiting for the device: {e:?}")))?;
            }
            return Ok(stats);
        }
        let mut raw = vec![0.0f32; out_words];
        exec.read(&out_mem, &mut raw)?;
        for (i, (sums, y)) in raw
            .chunks_exact(row)
            .zip(out.chunks_exact_mut(dv))
            .enumerate()
        {
            let (lane, token) = (i / tokens, i % tokens);
            let (numerators, den) = sums.split_at(dv);
            let den = den[0];
            let ok = den > 0.0 && den.is_finite() && numerators.iter().all(|x| x.is_finite());
            for (y, n) in y.iter_mut().zip(numerators) {
                *y = if ok { n / den } else { 0.0 };
            }
            let answer = Answer {
                denominator: den.into(),
                ok,
            };
            // Causal queries saw the keys before the call and their own prefix; the others
            // the whole state.
            let keys = match causal {
                true => state.tokens + token as u64 + 1,
                false => state.tokens,
            };
            record(&mut stats, (lane, state.heads), token, answer, keys);
        }
        Ok(stats)
    }

    /// After a state-changing call: undo it (policy `Error`) or poison the state (an
    /// overflow), exactly as [`crate::Attention`] does for host states.
    fn settle(
        &self,
        state: &mut CudaState,
        backup: Option<Memory>,
        advanced: u64,
        stats: CallStats,
    ) -> Result<CallStats, SataError> {
        let tokens_before = state.tokens - advanced;
        let undo = |state: &mut CudaState, words: Memory| {
            state.tokens = tokens_before;
            state.memory = words;
        };
        if stats.bad_denominators > 0 && state.download_words()?.iter().any(|x| !x.is_finite()) {
            match backup {
                Some(words) => undo(state, words),
                None => state.poisoned = true,
            }
            return Err(SataError::StatePoisoned {
                dtype: crate::DType::F32,
            });
        }
        if let Err(e) = stats.enforce(self.policy) {
            if let Some(words) = backup {
                undo(state, words);
            }
            return Err(e);
        }
        Ok(stats)
    }

    fn check_config(&self, config: &KernelConfig) -> Result<(), SataError> {
        crate::checks::same_config(config, &self.config)
    }

    fn check_state(&self, state: &CudaState) -> Result<(), SataError> {
        self.check_config(&state.config)?;
        if std::mem::discriminant(&state.exec) != std::mem::discriminant(&self.exec) {
            return Err(mixed());
        }
        if state.poisoned {
            return Err(SataError::StatePoisoned {
                dtype: crate::DType::F32,
            });
        }
        Ok(())
    }
}

/// A state in a CUDA executor's memory: the words of [`crate::State`] for `batch x heads`
/// lanes, the token count, and whether an overflow poisoned it.
pub struct CudaState {
    exec: Exec,
    config: KernelConfig,
    batch: usize,
    heads: usize,
    tokens: u64,
    poisoned: bool,
    accumulation: Accumulation,
    /// Largest key norm absorbed (`None`: unknown), for [`crate::CallStats::logit_bound`].
    max_key_norm: Option<f64>,
    memory: Memory,
}

impl std::fmt::Debug for CudaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaState")
            .field("config", &self.config)
            .field("batch", &self.batch)
            .field("heads", &self.heads)
            .field("tokens", &self.tokens)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl CudaState {
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Tokens absorbed so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn accumulation(&self) -> Accumulation {
        self.accumulation
    }

    fn lanes(&self) -> usize {
        self.batch * self.heads
    }

    fn words(&self) -> usize {
        self.lanes() * self.config.state_words_per_head() * self.accumulation.words_per_sum()
    }

    /// A host copy, for checkpoints or to continue on another backend.
    pub fn download(&self) -> Result<State<f32>, SataError> {
        let mut state = State::<f32>::with_accumulation(
            self.config,
            self.batch,
            self.heads,
            self.accumulation,
        )?;
        let mut words = vec![0.0; state.words_per_lane() * self.batch * self.heads];
        self.download_into(&mut words)?;
        state.store_words(&words);
        state.set_progress(self.tokens, self.poisoned);
        state.set_max_key_norm(self.max_key_norm);
        Ok(state)
    }

    pub(crate) fn download_into(&self, out: &mut [f32]) -> Result<(), SataError> {
        self.exec.read(&self.memory, out)
    }

    fn download_words(&self) -> Result<Vec<f32>, SataError> {
        let mut words = vec![0.0; self.words()];
        self.download_into(&mut words)?;
        Ok(words)
    }

    /// A copy of the words in the executor's memory (no transfer), to undo a call.
    fn snapshot(&self) -> Result<Memory, SataError> {
        Ok(match &self.memory {
            Memory::Gpu(m) => Memory::Gpu(
                m.try_clone()
                    .map_err(|e| cuda_error(format!("copying the state: {e:?}")))?,
            ),
            Memory::Host(m) => Memory::Host(m.clone()),
        })
    }

    /// Empties the state (zero tokens, not poisoned).
    pub fn reset(&mut self) -> Result<(), SataError> {
        self.exec.zero(&mut self.memory)?;
        self.tokens = 0;
        self.poisoned = false;
        self.max_key_norm = Some(0.0);
        Ok(())
    }
}

crate::device_backend::device_attention!(CudaAttention, CudaState);

fn lanes(state: &CudaState) -> Lanes<'_> {
    Lanes {
        config: &state.config,
        batch: state.batch,
        heads: state.heads,
    }
}
