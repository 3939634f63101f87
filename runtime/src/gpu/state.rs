//! A state that lives on the GPU between calls.

use std::sync::Arc;

use sata_codegen::KernelConfig;

use super::context::GpuContext;
use crate::error::SataError;
use crate::state::State;

/// The state of every (batch, head) lane in a device buffer, in exactly the layout of
/// [`State`] (per lane `S` then `Z`, f32), so that [`DeviceState::download`] and
/// [`super::GpuAttention::upload`] are plain copies and a checkpoint written from either side
/// loads on the other.
///
/// Calls on a device state upload only their queries, keys and values and download only their
/// outputs; the state itself never leaves the device unless asked.
pub struct DeviceState {
    pub(crate) ctx: Arc<GpuContext>,
    pub(crate) config: KernelConfig,
    pub(crate) batch: usize,
    pub(crate) heads: usize,
    pub(crate) tokens: u64,
    pub(crate) poisoned: bool,
    /// Largest key norm absorbed (`None`: unknown), for [`crate::CallStats::logit_bound`].
    pub(crate) max_key_norm: Option<f64>,
    pub(crate) accumulation: crate::Accumulation,
    /// `lanes x m (d_v + 1)` f32 words.
    pub(crate) buffer: wgpu::Buffer,
    /// Feature scratch of the kernel, `lanes x 2 m` words.
    pub(crate) feats: wgpu::Buffer,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("config", &self.config)
            .field("batch", &self.batch)
            .field("heads", &self.heads)
            .field("tokens", &self.tokens)
            .field("poisoned", &self.poisoned)
            .field("adapter", &self.ctx.adapter.name)
            .finish()
    }
}

pub(crate) const STATE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl DeviceState {
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Key/value tokens absorbed into every lane so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// True once a call overflowed f32 (see [`State::is_poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub(crate) fn lanes(&self) -> usize {
        self.batch * self.heads
    }

    pub(crate) fn words(&self) -> usize {
        self.lanes() * self.config.state_words_per_head() * self.accumulation.words_per_sum()
    }

    pub fn accumulation(&self) -> crate::Accumulation {
        self.accumulation
    }

    /// Copies the state to the host (for checkpoints, or to continue on another backend).
    pub fn download(&self) -> Result<State<f32>, SataError> {
        let data = self.ctx.download(&self.buffer, self.words())?;
        let mut state = State::from_parts(
            self.config,
            self.batch,
            self.heads,
            self.tokens,
            self.accumulation,
            data,
        )?;
        state.set_max_key_norm(self.max_key_norm);
        if self.poisoned {
            state.poison();
        }
        Ok(state)
    }

    /// Copies the state words into `out` (the layout of [`State::as_slice`]).
    pub(crate) fn download_into(&self, out: &mut [f32]) -> Result<(), SataError> {
        let data = self.ctx.download(&self.buffer, self.words())?;
        out.copy_from_slice(&data);
        Ok(())
    }

    /// Forgets every token.
    pub fn reset(&mut self) -> Result<(), SataError> {
        let ctx = self.ctx.clone();
        ctx.checked("clearing a device state", || {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.clear_buffer(&self.buffer, 0, None);
            ctx.queue.submit([encoder.finish()]);
        })?;
        self.tokens = 0;
        self.poisoned = false;
        self.max_key_norm = Some(0.0);
        Ok(())
    }

    /// A device-side copy of the state buffer (the backup of a call that may be undone).
    pub(crate) fn copy_buffer(&self) -> Result<wgpu::Buffer, SataError> {
        let bytes = self.buffer.size();
        let copy = self.ctx.zeroed("state backup", bytes, STATE_USAGE)?;
        self.copy_into(&self.buffer, &copy)?;
        Ok(copy)
    }

    pub(crate) fn copy_into(
        &self,
        from: &wgpu::Buffer,
        to: &wgpu::Buffer,
    ) -> Result<(), SataError> {
        self.ctx.checked("copying a device state", || {
            let mut encoder = self
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.copy_buffer_to_buffer(from, 0, to, 0, from.size());
            self.ctx.queue.submit([encoder.finish()]);
        })
    }
}
