//! The backward on a device, written once for every device: every lane's inputs uploaded
//! once, each pass launched phase by phase (`sata_codegen::contract::Phase`), the gradients
//! read back. Pass A starts from the forward's initial state, pass B from the final state's
//! gradient; both states travel in the plain layout, lanes every `lane_stride(state_words)`
//! words.

use sata_codegen::contract::{Pass, Phase, backward_scratch_words, lane_stride};

use super::contract::{BackwardLaunch, Device};
use super::kernels::DeviceKernels;
use crate::backend::{BatchBackward, LaneGradients, LaneInputs};
use crate::error::SataError;

/// `lanes` lanes of `per_lane` words, back to back (or zeros), spread to lanes every
/// `stride` words.
fn spread(planar: Option<&[f32]>, lanes: usize, per_lane: usize, stride: usize) -> Vec<f32> {
    let mut words = vec![0.0; (lanes * stride).max(1)];
    if let Some(planar) = planar {
        for (to, from) in words
            .chunks_exact_mut(stride)
            .zip(planar.chunks_exact(per_lane))
        {
            to[..per_lane].copy_from_slice(from);
        }
    }
    words
}

impl<D: Device> DeviceKernels<D> {
    /// Tokens per lane the buffers of `pass` in `phase` hold (see [`BackwardLaunch`]).
    fn phase_tokens(pass: Pass, phase: Phase, queries: usize, keys: usize) -> usize {
        match (pass, phase.adds_only()) {
            (Pass::Queries, true) | (Pass::Keys, false) => keys,
            (Pass::Queries, false) | (Pass::Keys, true) => queries,
        }
    }
}

impl<D: Device> BatchBackward<f32> for DeviceKernels<D> {
    fn describe(&self) -> String {
        format!(
            "{} (backward of kernel {}, {})",
            D::NAME,
            self.plan.name,
            self.device.describe()
        )
    }

    fn batch(
        &self,
        causal: bool,
        lanes: usize,
        x: &LaneInputs<'_, f32>,
        g: LaneGradients<'_, f32>,
    ) -> Result<(), SataError> {
        if lanes == 0 {
            return Ok(());
        }
        let device = &self.device;
        let kernels = self.plain();
        let (dk, dv) = (self.config.d_k(), self.config.d_v());
        let per_lane = self.plan.state_words;
        let stride = lane_stride(per_lane);
        let (queries, keys) = (x.q.len() / dk / lanes, x.k.len() / dk / lanes);
        let (q, k, v, dout) = (
            device.upload(x.q)?,
            device.upload(x.k)?,
            device.upload(x.v)?,
            device.upload(x.dout)?,
        );
        let mut scratch = device.alloc(lanes * backward_scratch_words(&self.plan))?;
        let mut run = |pass: Pass, state: &mut D::Memory, grad: &mut D::Memory| {
            for &phase in Phase::of(causal) {
                let tokens = Self::phase_tokens(pass, phase, queries, keys);
                if tokens == 0 {
                    continue;
                }
                let launch = BackwardLaunch {
                    pass,
                    phase,
                    q: &q,
                    k: &k,
                    v: &v,
                    dout: &dout,
                    state: &mut *state,
                    grad: &mut *grad,
                    scratch: &mut scratch,
                    lanes,
                    tokens,
                };
                device.launch_backward(kernels, launch)?;
            }
            Ok::<(), SataError>(())
        };
        // Pass A: dq.
        let mut state = device.upload(&spread(Some(x.initial), lanes, per_lane, stride))?;
        let mut grad = device.alloc(g.dq.len().max(1))?;
        run(Pass::Queries, &mut state, &mut grad)?;
        device.read(&grad, g.dq)?;
        // Pass B: dk and dv per key, and the initial state's gradient.
        let mut state = device.upload(&spread(x.d_final, lanes, per_lane, stride))?;
        let row = Pass::Keys.gradient_row(dk, dv);
        let mut grad = device.alloc((lanes * keys * row).max(1))?;
        run(Pass::Keys, &mut state, &mut grad)?;
        let mut words = vec![0.0; lanes * keys * row];
        device.read(&grad, &mut words)?;
        for ((w, dk_row), dv_row) in words
            .chunks_exact(row)
            .zip(g.dk.chunks_exact_mut(dk))
            .zip(g.dv.chunks_exact_mut(dv))
        {
            dk_row.copy_from_slice(&w[..dk]);
            dv_row.copy_from_slice(&w[dk..]);
        }
        let mut words = vec![0.0; lanes * stride];
        device.read(&state, &mut words)?;
        for (to, from) in g
            .d_initial
            .chunks_exact_mut(per_lane)
            .zip(words.chunks_exact(stride))
        {
            to.copy_from_slice(&from[..per_lane]);
        }
        Ok(())
    }
}
