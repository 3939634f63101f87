//! The `wgpu` backend: WGSL compute shaders rendered by the generator from the same kernel
//! plan as the CPU kernels, run on any adapter wgpu reaches (Vulkan, Metal, DX12, GL; Mesa's
//! llvmpipe on machines without a GPU).
//!
//! [`GpuAttention`] works on [`DeviceState`]s that stay on the device between calls: a decode
//! step uploads one token's `q`, `k`, `v` per lane and downloads `y`. States move to and from
//! the host ([`DeviceState::download`], [`GpuAttention::upload`]) in the layout of
//! [`crate::State`], so checkpoints and continuation work across backends.
//! [`crate::Attention`] with the `wgpu` backend wraps the same kernels for host states (one
//! upload and download of the state per call).
//!
//! Each call is one dispatch per entry point with one workgroup per (batch, head); within a
//! workgroup, tokens are processed in order (see `templates/wgsl/kernel.wgsl.tera`).

mod context;
mod kernel;
mod state;

use std::sync::Arc;

use sata_codegen::KernelConfig;

pub use context::AdapterSummary;
use context::{GpuContext, context};
use kernel::{Bindings, Entry, WgslKernel};
pub use state::DeviceState;
use state::STATE_USAGE;

use crate::attention::{Attended, record};
use crate::checks::{Lanes, output_len};
use crate::cpu_generic::Answer;
use crate::error::SataError;
use crate::state::State;
use crate::stats::{CallStats, DenominatorPolicy, Norms};
use crate::tensor::TensorRef;

/// The adapter the `wgpu` backend runs on (opening the device on first use); an error line
/// when there is none.
pub fn adapter() -> Result<AdapterSummary, SataError> {
    Ok(context()?.adapter.clone())
}

/// Symmetry-aware Taylor attention on the GPU, f32, for one configuration.
///
/// The same calls as [`crate::Attention`] (causal prefill, decode, absorb + query, attend),
/// with the same checks, errors, statistics and [`DenominatorPolicy`], on [`DeviceState`]s.
pub struct GpuAttention {
    config: KernelConfig,
    ctx: Arc<GpuContext>,
    kernel: Arc<WgslKernel>,
    /// The Kahan-compensated kernels, compiled on the first compensated state.
    compensated: std::sync::OnceLock<Result<Arc<WgslKernel>, String>>,
    policy: DenominatorPolicy,
}

impl std::fmt::Debug for GpuAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuAttention")
            .field("config", &self.config)
            .field("path", &self.describe_path())
            .field("policy", &self.policy)
            .finish()
    }
}

impl GpuAttention {
    /// Opens the device (once per process) and compiles the kernel for `config` (once per
    /// configuration per process).
    pub fn new(config: KernelConfig) -> Result<Self, SataError> {
        let ctx = context()?;
        let kernel = ctx.kernel(&config, false)?;
        Ok(Self {
            config,
            ctx,
            kernel,
            compensated: std::sync::OnceLock::new(),
            policy: DenominatorPolicy::default(),
        })
    }

    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }

    /// One line saying which code runs, e.g.
    /// `wgpu (kernel d16_v16_p4, llvmpipe (LLVM 15.0.6, 256 bits), Vulkan Cpu)`.
    pub fn describe_path(&self) -> String {
        format!(
            "wgpu (kernel {}, {} {} {})",
            self.kernel.plan.name,
            self.ctx.adapter.name,
            self.ctx.adapter.api,
            self.ctx.adapter.device_type
        )
    }

    /// Sets what happens to queries with a non-positive denominator.
    pub fn with_denominator_policy(mut self, policy: DenominatorPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn denominator_policy(&self) -> DenominatorPolicy {
        self.policy
    }

    /// The kernels for states that accumulate as `accumulation` says.
    fn kernel_for(&self, accumulation: crate::Accumulation) -> Result<&Arc<WgslKernel>, SataError> {
        match accumulation {
            crate::Accumulation::Plain => Ok(&self.kernel),
            crate::Accumulation::Compensated => self
                .compensated
                .get_or_init(|| {
                    self.ctx
                        .kernel(&self.config, true)
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| self.ctx.error(e.clone())),
        }
    }

    /// An empty device state for `batch x heads` lanes.
    pub fn new_state(&self, batch: usize, heads: usize) -> Result<DeviceState, SataError> {
        self.new_state_with(batch, heads, crate::Accumulation::Plain)
    }

    /// An empty device state whose sums accumulate as `accumulation` says (the compensated
    /// kernels are compiled on first use).
    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: crate::Accumulation,
    ) -> Result<DeviceState, SataError> {
        // Host-side size checks first: the same errors as a host state.
        State::<f32>::with_accumulation(self.config, batch, heads, accumulation)?;
        self.kernel_for(accumulation)?;
        let lanes = batch * heads;
        let bytes =
            4 * (lanes * self.config.state_words_per_head() * accumulation.words_per_sum()) as u64;
        let buffer = self.ctx.zeroed("state", bytes, STATE_USAGE)?;
        let feats = self.ctx.zeroed(
            "feature scratch",
            lanes as u64 * self.kernel.feature_bytes_per_lane(),
            wgpu::BufferUsages::STORAGE,
        )?;
        Ok(DeviceState {
            ctx: self.ctx.clone(),
            config: self.config,
            batch,
            heads,
            tokens: 0,
            poisoned: false,
            max_key_norm: Some(0.0),
            accumulation,
            buffer,
            feats,
        })
    }

    /// A device copy of a host state (e.g. loaded from a checkpoint written by any backend).
    pub fn upload(&self, state: &State<f32>) -> Result<DeviceState, SataError> {
        self.upload_words(state.parts(), &state.as_slice())
    }

    /// [`upload`](Self::upload) from a state's parts and words.
    pub(crate) fn upload_words(
        &self,
        (config, batch, heads, tokens, poisoned, accumulation, max_key_norm): crate::device_backend::Parts,
        words: &[f32],
    ) -> Result<DeviceState, SataError> {
        self.check_config(&config)?;
        let mut device = self.new_state_with(batch, heads, accumulation)?;
        self.ctx
            .queue
            .write_buffer(&device.buffer, 0, bytemuck::cast_slice(words));
        device.tokens = tokens;
        device.poisoned = poisoned;
        device.max_key_norm = max_key_norm;
        Ok(device)
    }

    /// Causal attention over a block of tokens (see [`crate::Attention::prefill`]).
    pub fn prefill(
        &self,
        state: &mut DeviceState,
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
        state: &mut DeviceState,
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
            DenominatorPolicy::Error => Some(state.copy_buffer()?),
            DenominatorPolicy::Zero => None,
        };
        let stats = self.run(Entry::Causal, state, Some(q), Some((k, v)), out)?;
        let advanced = k.shape().tokens as u64;
        state.tokens += advanced;
        let mut stats = self.settle(state, backup, advanced, stats)?;
        state.max_key_norm = norms.keys;
        stats.logit_bound = norms.logit_bound(self.config.scale());
        Ok(stats)
    }

    /// One causal step: exactly one token per (batch, head).
    pub fn decode(
        &self,
        state: &mut DeviceState,
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
        state: &mut DeviceState,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        lanes(state).one_token([&q, &k, &v])?;
        self.prefill_into(state, q, k, v, out)
    }

    /// Adds keys and values to the state without answering queries.
    ///
    /// No query reveals an overflow here, so the state is read back once to look for one: an
    /// absorb costs one state download on top of its work (a decode step does not).
    pub fn absorb(
        &self,
        state: &mut DeviceState,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError> {
        self.check_state(state)?;
        lanes(state).inputs(None, &k, &v)?;
        let norms = Norms::new(state.max_key_norm, self.config.d_k(), None, Some(k.data()));
        self.run(Entry::Absorb, state, None, Some((k, v)), &mut [])?;
        state.tokens += k.shape().tokens as u64;
        let words = self.ctx.download(&state.buffer, state.words())?;
        if words.iter().any(|x| !x.is_finite()) {
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
        state: &DeviceState,
        q: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        let mut out = vec![0.0; output_len(&self.config, &q)?];
        let stats = self.query_into(state, q, &mut out)?;
        Ok(Attended::new(&self.config, q.shape(), out, stats))
    }

    /// [`query`](Self::query) into a caller-provided `[batch, heads, queries, d_v]` buffer.
    pub fn query_into(
        &self,
        state: &DeviceState,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.check_state(state)?;
        let lanes = lanes(state);
        lanes.tensor(&q, self.config.d_k(), "d_k")?;
        lanes.output(&q, out)?;
        let norms = Norms::new::<f32>(state.max_key_norm, self.config.d_k(), Some(q.data()), None);
        let mut stats = self.run(Entry::Answer, state, Some(q), None, out)?;
        self.enforce_policy(&stats)?;
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

    /// Uploads the inputs, runs one entry point, and (for entry points that answer queries)
    /// downloads the outputs into `out` and counts bad denominators.
    fn run(
        &self,
        entry: Entry,
        state: &DeviceState,
        q: Option<TensorRef<'_, f32>>,
        kv: Option<(TensorRef<'_, f32>, TensorRef<'_, f32>)>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let ctx = &self.ctx;
        let causal = entry == Entry::Causal;
        let input = |t: Option<TensorRef<'_, f32>>, label| {
            let data = t.map(|t| t.data()).unwrap_or(&[]);
            ctx.upload(label, data, wgpu::BufferUsages::STORAGE)
        };
        let tokens = match (&q, &kv) {
            (_, Some((k, _))) => k.shape().tokens,
            (Some(q), None) => q.shape().tokens,
            (None, None) => 0,
        };
        let lanes = state.lanes();
        let row = self.config.d_v() + 1;
        let out_words = if q.is_some() { lanes * tokens * row } else { 0 };
        let out_buffer = ctx.zeroed(
            "outputs",
            4 * out_words as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let (q_buf, k_buf, v_buf) = (
            input(q, "queries")?,
            input(kv.map(|(k, _)| k), "keys")?,
            input(kv.map(|(_, v)| v), "values")?,
        );
        let bindings = Bindings {
            q: &q_buf,
            k: &k_buf,
            v: &v_buf,
            state: &state.buffer,
            out: &out_buffer,
            feats: &state.feats,
        };
        self.kernel_for(state.accumulation)?
            .dispatch(ctx, entry, &bindings, lanes, tokens)?;
        let mut stats = CallStats::default();
        if out_words == 0 {
            ctx.wait()?;
            return Ok(stats);
        }
        let raw = ctx.download(&out_buffer, out_words)?;
        let dv = self.config.d_v();
        for (i, (rows, y)) in raw
            .chunks_exact(row)
            .zip(out.chunks_exact_mut(dv))
            .enumerate()
        {
            let (lane, token) = (i / tokens, i % tokens);
            let (values, den) = rows.split_at(dv);
            let den = den[0];
            let ok = den > 0.0 && den.is_finite() && values.iter().all(|x| x.is_finite());
            if ok {
                y.copy_from_slice(values);
            } else {
                y.fill(0.0);
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
        state: &mut DeviceState,
        backup: Option<wgpu::Buffer>,
        advanced: u64,
        stats: CallStats,
    ) -> Result<CallStats, SataError> {
        // Undoing restores the words and the token count the call advanced.
        let tokens_before = state.tokens - advanced;
        let undo = |state: &mut DeviceState, backup: &wgpu::Buffer| {
            state.tokens = tokens_before;
            state.copy_into(backup, &state.buffer)
        };
        if stats.bad_denominators > 0 {
            let words = self.ctx.download(&state.buffer, state.words())?;
            if words.iter().any(|x| !x.is_finite()) {
                match &backup {
                    Some(b) => undo(state, b)?,
                    None => state.poisoned = true,
                }
                return Err(SataError::StatePoisoned {
                    dtype: crate::DType::F32,
                });
            }
        }
        if let Err(e) = self.enforce_policy(&stats) {
            if let Some(b) = &backup {
                undo(state, b)?;
            }
            return Err(e);
        }
        Ok(stats)
    }

    fn enforce_policy(&self, stats: &CallStats) -> Result<(), SataError> {
        stats.enforce(self.policy)
    }

    fn check_config(&self, config: &KernelConfig) -> Result<(), SataError> {
        crate::checks::same_config(config, &self.config)
    }

    fn check_state(&self, state: &DeviceState) -> Result<(), SataError> {
        self.check_config(&state.config)?;
        if state.poisoned {
            return Err(SataError::StatePoisoned {
                dtype: crate::DType::F32,
            });
        }
        Ok(())
    }
}

crate::device_backend::device_attention!(GpuAttention, DeviceState);

fn lanes(state: &DeviceState) -> Lanes<'_> {
    Lanes {
        config: &state.config,
        batch: state.batch,
        heads: state.heads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_is_compiled_once_per_process() {
        let Ok(ctx) = context() else {
            eprintln!("skipped: no wgpu adapter (the workspace tests cover this case)");
            return;
        };
        let config = KernelConfig::new(3, 2, 3).unwrap();
        let a = GpuAttention::new(config).unwrap();
        let b = GpuAttention::new(config).unwrap();
        assert!(Arc::ptr_eq(&a.kernel, &b.kernel));
        let other = GpuAttention::new(config.with_scale(1.0).unwrap()).unwrap();
        assert!(!Arc::ptr_eq(&a.kernel, &other.kernel));
        assert!(Arc::ptr_eq(&a.ctx, &ctx));
    }
}
