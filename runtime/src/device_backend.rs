//! Backends whose kernels work on states in their own memory (wgpu, CUDA), as
//! [`crate::Attention`] runs them on host states: one upload and one download of the state per
//! call. Each backend implements [`DeviceAttention`]; [`HostStateBackend`] is the one
//! object-safe form `Attention` holds, so the round trip is written once.

use sata_codegen::KernelConfig;

use crate::error::SataError;
use crate::stats::{CallStats, DenominatorPolicy};
use crate::tensor::TensorRef;

/// A host state's header fields, as [`crate::State::parts`] returns them: configuration,
/// batch, heads, tokens, poisoned, accumulation, largest key norm.
pub(crate) type Parts = (
    KernelConfig,
    usize,
    usize,
    u64,
    bool,
    crate::state::Accumulation,
    Option<f64>,
);

/// A device backend's own API, on its own state type.
pub(crate) trait DeviceAttention: Send + Sync + Sized + 'static {
    type State;
    fn describe_path(&self) -> String;
    fn with_policy(self, policy: DenominatorPolicy) -> Self;
    fn upload_words(&self, parts: Parts, words: &[f32]) -> Result<Self::State, SataError>;
    fn download_into(state: &Self::State, out: &mut [f32]) -> Result<(), SataError>;
    /// Tokens absorbed and whether an overflow poisoned the state.
    fn progress(state: &Self::State) -> (u64, bool);
    fn prefill_into(
        &self,
        state: &mut Self::State,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError>;
    fn absorb(
        &self,
        state: &mut Self::State,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError>;
    fn query_into(
        &self,
        state: &Self::State,
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError>;
}

/// A host state lent to a device backend: its header, its words, and its progress after the
/// call.
pub(crate) struct HostWords<'a> {
    pub parts: Parts,
    pub words: &'a mut [f32],
    pub tokens: u64,
    pub poisoned: bool,
}

/// The calls of [`crate::Attention`] on host states.
pub(crate) trait HostStateBackend: Send + Sync {
    fn describe_path(&self) -> String;
    fn with_policy(self: Box<Self>, policy: DenominatorPolicy) -> Box<dyn HostStateBackend>;
    fn prefill(
        &self,
        host: &mut HostWords<'_>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError>;
    fn absorb(
        &self,
        host: &mut HostWords<'_>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError>;
    fn query(
        &self,
        parts: Parts,
        words: &[f32],
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError>;
}

/// Runs `call` on a device copy of a host state and copies the device state back, whether
/// the call succeeded or not (a failed call has already restored or poisoned the device copy
/// exactly as the host paths would).
fn round_trip<D: DeviceAttention, R>(
    device: &D,
    host: &mut HostWords<'_>,
    call: impl FnOnce(&D, &mut D::State) -> Result<R, SataError>,
) -> Result<R, SataError> {
    let mut state = device.upload_words(host.parts, host.words)?;
    let result = call(device, &mut state);
    D::download_into(&state, host.words)?;
    (host.tokens, host.poisoned) = D::progress(&state);
    result
}

impl<D: DeviceAttention> HostStateBackend for D {
    fn describe_path(&self) -> String {
        DeviceAttention::describe_path(self)
    }

    fn with_policy(self: Box<Self>, policy: DenominatorPolicy) -> Box<dyn HostStateBackend> {
        Box::new(DeviceAttention::with_policy(*self, policy))
    }

    fn prefill(
        &self,
        host: &mut HostWords<'_>,
        q: TensorRef<'_, f32>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        round_trip(self, host, |d, s| d.prefill_into(s, q, k, v, out))
    }

    fn absorb(
        &self,
        host: &mut HostWords<'_>,
        k: TensorRef<'_, f32>,
        v: TensorRef<'_, f32>,
    ) -> Result<(), SataError> {
        round_trip(self, host, |d, s| DeviceAttention::absorb(d, s, k, v))
    }

    fn query(
        &self,
        parts: Parts,
        words: &[f32],
        q: TensorRef<'_, f32>,
        out: &mut [f32],
    ) -> Result<CallStats, SataError> {
        let state = self.upload_words(parts, words)?;
        self.query_into(&state, q, out)
    }
}

/// Implements [`DeviceAttention`] for a backend whose inherent methods have these names.
macro_rules! device_attention {
    ($backend:ty, $state:ty) => {
        impl $crate::device_backend::DeviceAttention for $backend {
            type State = $state;
            fn describe_path(&self) -> String {
                <$backend>::describe_path(self)
            }
            fn with_policy(self, policy: $crate::stats::DenominatorPolicy) -> Self {
                self.with_denominator_policy(policy)
            }
            fn upload_words(
                &self,
                parts: $crate::device_backend::Parts,
                words: &[f32],
            ) -> Result<$state, $crate::error::SataError> {
                <$backend>::upload_words(self, parts, words)
            }
            fn download_into(
                state: &$state,
                out: &mut [f32],
            ) -> Result<(), $crate::error::SataError> {
                state.download_into(out)
            }
            fn progress(state: &$state) -> (u64, bool) {
                (state.tokens(), state.is_poisoned())
            }
            fn prefill_into(
                &self,
                state: &mut $state,
                q: $crate::tensor::TensorRef<'_, f32>,
                k: $crate::tensor::TensorRef<'_, f32>,
                v: $crate::tensor::TensorRef<'_, f32>,
                out: &mut [f32],
            ) -> Result<$crate::stats::CallStats, $crate::error::SataError> {
                <$backend>::prefill_into(self, state, q, k, v, out)
            }
            fn absorb(
                &self,
                state: &mut $state,
                k: $crate::tensor::TensorRef<'_, f32>,
                v: $crate::tensor::TensorRef<'_, f32>,
            ) -> Result<(), $crate::error::SataError> {
                <$backend>::absorb(self, state, k, v)
            }
            fn query_into(
                &self,
                state: &$state,
                q: $crate::tensor::TensorRef<'_, f32>,
                out: &mut [f32],
            ) -> Result<$crate::stats::CallStats, $crate::error::SataError> {
                <$backend>::query_into(self, state, q, out)
            }
        }
    };
}
pub(crate) use device_attention;
