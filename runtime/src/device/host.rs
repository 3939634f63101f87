//! A device backend behind the backend contract for host states: each call copies the host
//! state to the device, runs there, and copies it back, one copy each way (the host and the
//! device lay a state out alike).

use sata_codegen::Entry;

use super::contract::{Device, StateAccess};
use super::kernels::{DeviceKernels, Inputs};
use crate::backend::HostBackend;
use crate::error::SataError;
use crate::state::State;
use crate::stats::CallStats;
use crate::tensor::{Qkv, TensorRef};

impl<D: Device> DeviceKernels<D> {
    /// Runs `entry` on a device copy of `state`, then copies the device's words back.
    fn round_trip(
        &self,
        entry: Entry,
        state: &mut State<f32>,
        inputs: Inputs<'_>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let mut memory = self.device.upload(state.padded())?;
        let header = *state.header();
        let stats = self.run(entry, &header, StateAccess::Write(&mut memory), inputs, out)?;
        self.device.read(&memory, state.padded_mut())?;
        Ok(stats)
    }
}

impl<D: Device> HostBackend<f32> for DeviceKernels<D> {
    fn describe_path(&self) -> String {
        DeviceKernels::describe_path(self)
    }

    fn prefill(
        &self,
        state: &mut State<f32>,
        (q, k, v): Qkv<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let tokens = k.shape().tokens;
        let inputs = Inputs {
            q: Some(q.data()),
            kv: Some((k.data(), v.data())),
            tokens,
        };
        self.round_trip(Entry::causal_for(tokens), state, inputs, out)
    }

    fn absorb(
        &self,
        state: &mut State<f32>,
        (k, v): (TensorRef<'_, f32>, TensorRef<'_, f32>),
    ) -> Result<(), SataError> {
        let inputs = Inputs {
            q: None,
            kv: Some((k.data(), v.data())),
            tokens: k.shape().tokens,
        };
        self.round_trip(Entry::Absorb, state, inputs, &mut [])
            .map(drop)
    }

    fn query(
        &self,
        state: &State<f32>,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let memory = self.device.upload(state.padded())?;
        let inputs = Inputs {
            q: Some(q.data()),
            kv: None,
            tokens: q.shape().tokens,
        };
        self.run(
            Entry::Query,
            state.header(),
            StateAccess::Read(&memory),
            inputs,
            out,
        )
    }
}
