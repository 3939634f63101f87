//! A state that lives in a device's memory between calls.

use super::contract::Device;
use crate::call::Store;
use crate::error::SataError;
use crate::state::{Accumulation, State, StateHeader};

/// The state of every (batch, head) lane in device memory, in exactly the layout of a host
/// [`State`] (lanes padded to whole cache lines), so that [`DeviceState::download`] and
/// `DeviceAttention::upload` are one copy each and a checkpoint written from either side loads
/// on the other.
///
/// Calls on a device state upload only their queries, keys and values and download only their
/// outputs; the state itself never leaves the device unless asked.
pub struct DeviceState<D: Device> {
    pub(crate) device: D,
    pub(crate) header: StateHeader,
    pub(crate) memory: D::Memory,
}

impl<D: Device> std::fmt::Debug for DeviceState<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("header", &self.header)
            .field("device", &self.device.describe())
            .finish()
    }
}

impl<D: Device> DeviceState<D> {
    /// A state of `header`'s shape and progress in fresh, zeroed memory of `device`.
    pub(crate) fn zeroed(device: &D, header: StateHeader) -> Result<Self, SataError> {
        let words = header
            .storage_words::<f32>()
            .ok_or(SataError::StateTooLarge {
                batch: header.batch,
                heads: header.heads,
                per_head: header.config.state_words_per_head(),
            })?;
        Ok(Self {
            device: device.clone(),
            header,
            memory: device.alloc(words)?,
        })
    }

    /// The configuration, shape and progress of the state.
    pub fn header(&self) -> &StateHeader {
        &self.header
    }

    pub fn config(&self) -> &sata_codegen::KernelConfig {
        &self.header.config
    }

    pub fn batch(&self) -> usize {
        self.header.batch
    }

    pub fn heads(&self) -> usize {
        self.header.heads
    }

    /// Key/value tokens absorbed into every lane so far.
    pub fn tokens(&self) -> u64 {
        self.header.tokens
    }

    /// True once a call overflowed f32 (see [`State::is_poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.header.poisoned
    }

    pub fn accumulation(&self) -> Accumulation {
        self.header.accumulation
    }

    /// Largest key norm absorbed (`None`: unknown), for `CallStats::logit_bound`.
    pub fn max_key_norm(&self) -> Option<f64> {
        self.header.max_key_norm
    }

    /// Copies the state to the host (for checkpoints, or to continue on another backend).
    pub fn download(&self) -> Result<State<f32>, SataError> {
        let mut state = State::zeroed(self.header);
        self.device.read(&self.memory, state.padded_mut())?;
        Ok(state)
    }

    /// Forgets every token.
    pub fn reset(&mut self) -> Result<(), SataError> {
        self.device.zero(&mut self.memory)?;
        self.header.reset();
        Ok(())
    }
}

impl<D: Device> Store for DeviceState<D> {
    type Backup = (D::Memory, StateHeader);

    fn header(&self) -> &StateHeader {
        &self.header
    }

    fn header_mut(&mut self) -> &mut StateHeader {
        &mut self.header
    }

    /// A copy in device memory: undoing a call moves nothing to or from the host.
    fn backup(&self) -> Result<Self::Backup, SataError> {
        Ok((self.device.duplicate(&self.memory)?, self.header))
    }

    fn restore(&mut self, (memory, header): Self::Backup) -> Result<(), SataError> {
        self.memory = memory;
        self.header = header;
        Ok(())
    }

    /// Reads the words back: only an overflow needs this (see `crate::call`).
    fn is_finite(&self) -> Result<bool, SataError> {
        let words = self.header.storage_words::<f32>().unwrap_or(0);
        let mut host = vec![0.0f32; words];
        self.device.read(&self.memory, &mut host)?;
        Ok(host.iter().all(|x| x.is_finite()))
    }
}
