//! Attention on states that stay in a device's memory: the calls of [`crate::Attention`],
//! written once for every device.

use sata_codegen::KernelConfig;

use super::contract::{Device, StateAccess};
use super::kernels::{DeviceKernels, Inputs};
use super::state::DeviceState;
use crate::call::Call;
use crate::checks::same_config;
use crate::error::SataError;
use crate::output::Attended;
use crate::state::{Accumulation, State, StateHeader};
use crate::stats::{CallStats, DenominatorPolicy};
use crate::tensor::TensorRef;

/// Symmetry-aware Taylor attention with generated kernels on a device, f32, for one
/// configuration: `crate::wgpu::WgpuAttention` and `crate::cuda::CudaAttention`.
///
/// The same calls as [`crate::Attention`] (causal prefill, decode, absorb + query, attend),
/// with the same checks, errors, statistics and [`DenominatorPolicy`] (with `Error`, a failed
/// call restores the state from a copy in device memory), on [`DeviceState`]s: a decode step
/// uploads one token's `q`, `k`, `v` per lane and downloads `y`; the state stays where it is.
pub struct DeviceAttention<D: Device> {
    pub(crate) kernels: DeviceKernels<D>,
    policy: DenominatorPolicy,
}

impl<D: Device> std::fmt::Debug for DeviceAttention<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAttention")
            .field("config", &self.kernels.config)
            .field("path", &self.describe_path())
            .field("policy", &self.policy)
            .finish()
    }
}

impl<D: Device> DeviceAttention<D> {
    /// Compiles (once per configuration per process) the kernels of `config` on `device`.
    pub(crate) fn open(device: D, config: KernelConfig) -> Result<Self, SataError> {
        Ok(Self {
            kernels: DeviceKernels::new(device, config)?,
            policy: DenominatorPolicy::default(),
        })
    }

    pub fn config(&self) -> &KernelConfig {
        &self.kernels.config
    }

    /// One line saying which code runs, e.g.
    /// `wgpu (kernel d16_v16_p4, llvmpipe (LLVM 15.0.6, 256 bits) Vulkan Cpu)`.
    pub fn describe_path(&self) -> String {
        self.kernels.describe_path()
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
    pub fn new_state(&self, batch: usize, heads: usize) -> Result<DeviceState<D>, SataError> {
        self.new_state_with(batch, heads, Accumulation::Plain)
    }

    /// An empty state whose sums accumulate as `accumulation` says (the compensated kernels are
    /// compiled on first use).
    pub fn new_state_with(
        &self,
        batch: usize,
        heads: usize,
        accumulation: Accumulation,
    ) -> Result<DeviceState<D>, SataError> {
        let header = StateHeader::empty::<f32>(self.kernels.config, batch, heads, accumulation)?;
        self.kernels.for_accumulation(accumulation)?;
        DeviceState::zeroed(&self.kernels.device, header)
    }

    /// A device copy of a host state (e.g. loaded from a checkpoint written by any backend).
    pub fn upload(&self, state: &State<f32>) -> Result<DeviceState<D>, SataError> {
        same_config(state.config(), &self.kernels.config)?;
        self.kernels.for_accumulation(state.accumulation())?;
        let mut device = DeviceState::zeroed(&self.kernels.device, *state.header())?;
        self.kernels
            .device
            .write(&mut device.memory, state.padded())?;
        Ok(device)
    }

    /// Causal attention over a block of tokens (see [`crate::Attention::prefill`]).
    pub fn prefill(
        &self,
        state: &mut DeviceState<D>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        Attended::collect(self.config(), &q, |out| {
            self.prefill_into(state, q, k, v, out)
        })
    }

    /// [`prefill`](Self::prefill) into a caller-provided `[batch, heads, tokens, d_v]` buffer.
    pub fn prefill_into(
        &self,
        state: &mut DeviceState<D>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.kernels.device.accepts(&state.device)?;
        self.call().prefill(state, (q, k, v), out, |s, out| {
            self.update(s, Inputs::causal((q, k, v)), out)
        })
    }

    /// One causal step: exactly one token per (batch, head), one launch.
    pub fn decode(
        &self,
        state: &mut DeviceState<D>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        Attended::collect(self.config(), &q, |out| {
            self.decode_into(state, q, k, v, out)
        })
    }

    /// [`decode`](Self::decode) into a caller-provided `[batch, heads, 1, d_v]` buffer.
    pub fn decode_into(
        &self,
        state: &mut DeviceState<D>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.kernels.device.accepts(&state.device)?;
        self.call().decode(state, (q, k, v), out, |s, out| {
            self.update(s, Inputs::causal((q, k, v)), out)
        })
    }

    /// Adds keys and values to the state without answering queries. No query reveals an
    /// overflow here, so the state is read back once to look for one: an absorb costs one
    /// state download on top of its work (a decode step does not).
    pub fn absorb(
        &self,
        state: &mut DeviceState<D>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError> {
        self.kernels.device.accepts(&state.device)?;
        self.call().absorb(state, (k, v), |s| {
            self.update(s, Inputs::absorb((k, v)), &mut []).map(drop)
        })
    }

    /// Answers queries from the state.
    pub fn query(
        &self,
        state: &DeviceState<D>,
        q: TensorRef<'_, f32>,
    ) -> Result<Attended<f32>, SataError> {
        Attended::collect(self.config(), &q, |out| self.query_into(state, q, out))
    }

    /// [`query`](Self::query) into a caller-provided `[batch, heads, queries, d_v]` buffer.
    pub fn query_into(
        &self,
        state: &DeviceState<D>,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        self.kernels.device.accepts(&state.device)?;
        self.call().query(state, q, out, |s, out| {
            let access = StateAccess::Read(&s.memory);
            self.kernels
                .run(&s.header, access, Inputs::query(q), out, &mut [])
        })
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

    fn call(&self) -> Call<'_> {
        Call {
            config: &self.kernels.config,
            policy: self.policy,
        }
    }

    /// The compute step of the calls that add tokens: one launch that writes the state.
    fn update(
        &self,
        state: &mut DeviceState<D>,
        inputs: Inputs<'_>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let header = state.header;
        let access = StateAccess::Write(&mut state.memory);
        self.kernels.run(&header, access, inputs, out, &mut [])
    }
}
