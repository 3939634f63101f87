//! A device backend behind the backend contract for host states: each call copies the host
//! state to the device, runs there, and copies it back, one copy each way (the host and the
//! device lay a state out alike).

use super::contract::{Device, StateAccess};
use super::kernels::{DeviceKernels, Inputs};
use crate::backend::{BatchBackward, HostBackend};
use crate::error::SataError;
use crate::state::State;
use crate::stats::CallStats;
use crate::tensor::{Qkv, TensorRef};

impl<D: Device> DeviceKernels<D> {
    /// Runs `inputs` on a device copy of `state`, then copies the device's words back.
    fn round_trip(
        &self,
        state: &mut State<f32>,
        inputs: Inputs<'_>,
        out: &mut [f32],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let mut memory = self.device.upload(state.padded())?;
        let header = *state.header();
        let access = StateAccess::Write(&mut memory);
        let stats = self.run(&header, access, inputs, out, dens)?;
        self.device.read(&memory, state.padded_mut())?;
        Ok(stats)
    }
}

impl<D: Device> HostBackend<f32> for DeviceKernels<D> {
    fn describe_path(&self) -> String {
        DeviceKernels::describe_path(self)
    }

    fn batch_backward(&self) -> Option<&dyn BatchBackward<f32>> {
        Some(self)
    }

    fn prefill(
        &self,
        state: &mut State<f32>,
        qkv: Qkv<'_, f32>,
        out: &mut [f32],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        self.round_trip(state, Inputs::causal(qkv), out, dens)
    }

    fn absorb(
        &self,
        state: &mut State<f32>,
        kv: (TensorRef<'_, f32>, TensorRef<'_, f32>),
    ) -> Result<(), SataError> {
        self.round_trip(state, Inputs::absorb(kv), &mut [], &mut [])
            .map(drop)
    }

    fn query(
        &self,
        state: &State<f32>,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let memory = self.device.upload(state.padded())?;
        let access = StateAccess::Read(&memory);
        self.run(state.header(), access, Inputs::query(q), out, dens)
    }
}
