//! What a backend offers to compute the backward: of one (batch, head) lane at a time
//! ([`HostBackend::lane_backward`](super::HostBackend::lane_backward)), or of every lane in one
//! go ([`HostBackend::batch_backward`](super::HostBackend::batch_backward), the device
//! backends); and the inputs and gradients either takes. The checks and the lane loop around
//! them are `crate::cpu::backward`.

/// One lane's inputs of the backward: `[tokens, dim]` blocks of the forward's inputs, each
/// query's augmented cotangent, and the lane's states. For a [`BatchBackward`], the same for
/// every lane, back to back (states `state_words_per_head` words per lane).
pub(crate) struct LaneInputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    /// `dO'_t = [dy_t / D_t, -(y_t · dy_t) / D_t]`, `queries x (d_v + 1)`; zeros for a query
    /// the forward answered with zeros.
    pub dout: &'a [T],
    /// The lane's sums before the forward (`S`, `m x d_v`, then `Z`, `m`).
    pub initial: &'a [T],
    /// The gradient of the lane's state after the forward, in the same layout, if any.
    pub d_final: Option<&'a [T]>,
}

/// One lane's gradients, written: `dq`, `dk`, `dv` as `[tokens, dim]` blocks and the gradient
/// of the initial state in the layout of [`LaneInputs::initial`].
pub(crate) struct LaneGradients<'a, T> {
    pub dq: &'a mut [T],
    pub dk: &'a mut [T],
    pub dv: &'a mut [T],
    pub d_initial: &'a mut [T],
}

/// What computes the backward of one lane.
pub(crate) trait LaneBackward<T>: Sync {
    /// One line for the statistics, e.g. `cpu (kernel d16_v16_p4, avx2+fma)`.
    fn describe(&self) -> String;
    /// The gradients of one lane; causal needs as many queries as keys.
    fn lane(&self, causal: bool, x: &LaneInputs<'_, T>, g: LaneGradients<'_, T>);
}

/// What computes the backward of every lane at once (one upload and a few launches on a
/// device, rather than a round trip per lane).
pub(crate) trait BatchBackward<T>: Sync {
    /// One line for the statistics, e.g. `wgpu (backward of kernel d16_v16_p4, llvmpipe ...)`.
    fn describe(&self) -> String;
    /// The gradients of `lanes` lanes, each as [`LaneBackward::lane`] computes one.
    fn batch(
        &self,
        causal: bool,
        lanes: usize,
        x: &LaneInputs<'_, T>,
        g: LaneGradients<'_, T>,
    ) -> Result<(), crate::error::SataError>;
}
