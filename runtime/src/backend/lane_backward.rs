//! What a backend offers to compute the backward of one (batch, head) lane
//! ([`HostBackend::lane_backward`](super::HostBackend::lane_backward)), and the lane's inputs
//! and gradients. The checks and the lane loop around it are `crate::cpu::backward`.

/// One lane's inputs of the backward: `[tokens, dim]` blocks of the forward's inputs, each
/// query's augmented cotangent, and the lane's states.
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
