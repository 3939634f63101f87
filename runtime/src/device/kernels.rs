//! One configuration's kernels on one device, and the one way every call runs them: upload the
//! inputs, launch the entry once, read the sums back and answer every query.

use std::sync::{Arc, Mutex};

use sata_codegen::contract::output_row;
use sata_codegen::{Entry, KernelConfig, KernelPlan};

use super::contract::{Device, Launch, StateAccess};
use crate::error::SataError;
use crate::state::{Accumulation, StateHeader};
use crate::stats::{CallStats, answer};
use crate::tensor::{Qkv, TensorRef};

/// The kernels of one configuration on `device`: the plain ones, compiled when this is made,
/// and the Kahan-compensated ones, compiled on the first compensated state.
pub(crate) struct DeviceKernels<D: Device> {
    pub device: D,
    pub config: KernelConfig,
    pub plan: KernelPlan,
    plain: Arc<D::Kernels>,
    compensated: Mutex<Option<Arc<D::Kernels>>>,
}

/// One run: the entry, and its inputs (queries for entries that answer, keys and values for
/// entries that update, each `lanes * tokens` rows).
pub(crate) struct Inputs<'a> {
    pub entry: Entry,
    pub q: Option<&'a [f32]>,
    pub kv: Option<(&'a [f32], &'a [f32])>,
    pub tokens: usize,
}

impl<'a> Inputs<'a> {
    /// A causal call: its queries, keys and values, run by the causal entry for its token
    /// count.
    pub fn causal((q, k, v): Qkv<'a, f32>) -> Self {
        let tokens = k.shape().tokens;
        Self {
            entry: Entry::causal_for(tokens),
            q: Some(q.data()),
            kv: Some((k.data(), v.data())),
            tokens,
        }
    }

    /// An absorb: its keys and values.
    pub fn absorb((k, v): (TensorRef<'a, f32>, TensorRef<'a, f32>)) -> Self {
        Self {
            entry: Entry::Absorb,
            q: None,
            kv: Some((k.data(), v.data())),
            tokens: k.shape().tokens,
        }
    }

    /// A query call: its queries.
    pub fn query(q: TensorRef<'a, f32>) -> Self {
        Self {
            entry: Entry::Query,
            q: Some(q.data()),
            kv: None,
            tokens: q.shape().tokens,
        }
    }
}

impl<D: Device> DeviceKernels<D> {
    pub fn new(device: D, config: KernelConfig) -> Result<Self, SataError> {
        let plan = KernelPlan::new(&config);
        let plain = device.compile(&plan, Accumulation::Plain)?;
        Ok(Self {
            device,
            config,
            plan,
            plain,
            compensated: Mutex::new(None),
        })
    }

    /// The plain kernels (which carry the backward entries).
    pub fn plain(&self) -> &D::Kernels {
        &self.plain
    }

    /// The kernels for states that accumulate as `accumulation` says.
    pub fn for_accumulation(
        &self,
        accumulation: Accumulation,
    ) -> Result<Arc<D::Kernels>, SataError> {
        match accumulation {
            Accumulation::Plain => Ok(self.plain.clone()),
            Accumulation::Compensated => {
                let mut slot = self.compensated.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(kernels) = &*slot {
                    return Ok(kernels.clone());
                }
                let kernels = self.device.compile(&self.plan, accumulation)?;
                *slot = Some(kernels.clone());
                Ok(kernels)
            }
        }
    }

    /// One line saying which code runs, e.g. `cuda (kernel d16_v16_p4, NVIDIA H100, sm_90,
    /// 132 SMs)`.
    pub fn describe_path(&self) -> String {
        format!(
            "{} (kernel {}, {})",
            D::NAME,
            self.plan.name,
            self.device.describe()
        )
    }

    /// Runs `inputs` on the state `state` (whose header before the call is `header`), the
    /// inputs validated by the caller against that header: one launch, then (for an entry that
    /// answers) the sums read back, divided into `out` and counted, and the denominators kept
    /// in `dens` unless it is empty.
    pub fn run(
        &self,
        header: &StateHeader,
        state: StateAccess<'_, D::Memory>,
        inputs: Inputs<'_>,
        out: &mut [f32],
        dens: &mut [f64],
    ) -> Result<CallStats, SataError> {
        let mut stats = CallStats::default();
        let (entry, tokens) = (inputs.entry, inputs.tokens);
        if tokens == 0 {
            return Ok(stats);
        }
        let kernels = self.for_accumulation(header.accumulation)?;
        let device = &self.device;
        let lanes = header.lanes();
        let row = output_row(self.config.d_v());
        let out_words = if entry.answers() {
            lanes * tokens * row
        } else {
            0
        };
        let q = device.upload(inputs.q.unwrap_or(&[]))?;
        let (k, v) = inputs.kv.unwrap_or((&[], &[]));
        let (k, v) = (device.upload(k)?, device.upload(v)?);
        let mut sums = device.alloc(out_words)?;
        device.launch(
            &kernels,
            Launch {
                entry,
                q: &q,
                k: &k,
                v: &v,
                state,
                out: &mut sums,
                lanes,
                tokens,
            },
        )?;
        if out_words == 0 {
            device.synchronize()?;
            return Ok(stats);
        }
        let mut raw = vec![0.0f32; out_words];
        device.read(&sums, &mut raw)?;
        let dv = self.config.d_v();
        for (i, (sums, y)) in raw
            .chunks_exact(row)
            .zip(out.chunks_exact_mut(dv))
            .enumerate()
        {
            let (lane, token) = (i / tokens, i % tokens);
            // Causal queries saw the keys before the call and their own prefix; the others
            // the whole state.
            let keys = match entry.causal() {
                true => header.tokens + token as u64 + 1,
                false => header.tokens,
            };
            let answer = answer(sums, y);
            if let Some(d) = dens.get_mut(i) {
                *d = answer.denominator;
            }
            stats.record_answer((lane, header.heads), token, answer, keys);
        }
        Ok(stats)
    }
}
