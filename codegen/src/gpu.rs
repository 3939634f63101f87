//! What the two GPU targets (WGSL and CUDA) share: how one (batch, head) lane of work is laid
//! over a workgroup or thread block, and when the feature program is straight-line code.

use serde::Serialize;

use crate::plan::{KernelPlan, Unroll};
use crate::render::{RenderError, Target};

/// Largest number of runs of children whose feature program the GPU targets emit as
/// straight-line code; above it they loop over the run table. The driver compiles a shader
/// at its first dispatch, in the user's process, and its compile time grows much faster than
/// the run count while straight-line code gains at most 1.2x (measurements in
/// `docs/backends/wgpu.md`).
pub const GPU_FULL_UNROLL_MAX_RUNS: usize = 64;

/// The form the GPU targets emit the feature program of `plan` in, unless forced.
pub fn gpu_unroll(plan: &KernelPlan) -> Unroll {
    if plan.runs() <= GPU_FULL_UNROLL_MAX_RUNS {
        Unroll::Full
    } else {
        Unroll::PerOrder
    }
}

/// Refuses a forced [`Unroll::Pieces`]: the suffix form is the Rust target's; the GPU targets
/// emit straight-line code or the per-order run table.
pub(crate) fn check_form(
    plan: &KernelPlan,
    target: Target,
    template: &'static str,
    unroll: Option<Unroll>,
) -> Result<(), RenderError> {
    if unroll == Some(Unroll::Pieces) {
        return Err(RenderError::new(
            plan,
            target,
            template,
            "the pieces form is the Rust target's; GPU kernels are full or per-order",
        ));
    }
    Ok(())
}

/// Loop iterations one invocation may run before Mesa's llvmpipe stops the loop (gallivm's
/// `LP_MAX_TGSI_LOOP_ITERATIONS`, counted over the whole dispatch) without an error; long
/// calls are split into dispatches that stay well below it (`docs/backends/wgpu.md`).
pub const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// An upper bound on the loop iterations one invocation of a backward entry runs per chunk of
/// `chunk` tokens (pass B in its step phase, the busiest): the chunk loop, each token's
/// features, the read of every (token, row) pair, the column read of `dv` token by token with
/// its row-group reduction, the update of every state word over the chunk, each token's
/// adjoint (its runs, then its per-coordinate sum over every run), the pair weights and the
/// pairs' contributions.
pub fn backward_loop_iterations_per_chunk(plan: &KernelPlan, chunk: usize) -> usize {
    let g = GpuGeometry::of(plan);
    let (m, d_k, d_v, wg) = (plan.features, plan.d_k, plan.d_v, g.workgroup);
    let per_run = d_k.div_ceil(wg);
    let features = 2 * (1 + per_run * (plan.runs() + 1));
    let read = (chunk * m).div_ceil(wg) * (1 + d_v);
    let dv =
        1 + m.div_ceil(g.rows) * (1 + g.cols_per_invocation) + g.cols_per_invocation * (g.rows + 1);
    let update = (m * (d_v + 1)).div_ceil(wg) * (1 + chunk);
    let adjoint = plan.runs().div_ceil(wg) * (d_k + 1) + per_run * plan.runs();
    let pairs = (chunk * chunk).div_ceil(wg) * (1 + d_k + d_v);
    let intra = (chunk * (d_k + d_v)).div_ceil(wg) * (1 + chunk);
    1 + chunk * (features + dv + adjoint) + read + update + pairs + intra
}

/// Most tokens one chunk of the GPU backward passes holds. A chunk streams the state once for
/// all its tokens (one read sweep, one update sweep) and evaluates the pairs inside it
/// directly; its features live in per-lane scratch, `3 * chunk * m` words.
pub const BACKWARD_CHUNK_MAX: usize = 16;

/// Tokens per chunk of the backward passes of `plan` on both GPU targets: the largest up to
/// [`BACKWARD_CHUNK_MAX`] whose chunk keeps a WGSL dispatch within half of llvmpipe's loop
/// cap, at least 1 (the largest programs, d16 P6, get single-token chunks). CUDA, which has
/// no such cap, takes the same chunk so that both targets compute the same decomposition
/// and share one scratch contract ([`crate::contract::backward_scratch_words`]).
pub fn backward_chunk(plan: &KernelPlan) -> usize {
    (1..=BACKWARD_CHUNK_MAX)
        .rev()
        .find(|&chunk| backward_loop_iterations_per_chunk(plan, chunk) <= LLVMPIPE_LOOP_LIMIT / 2)
        .unwrap_or(1)
}

/// `T_n(x) = sum_{p<n} x^p / p!` of a variable `x` in Horner form, as C or WGSL source with
/// the target's fused multiply-add `fma` and float-literal suffix (`"f"` in C, `""` in WGSL);
/// `T_0 = 0`.
pub fn taylor_horner(terms: usize, fma: &str, suffix: &str) -> String {
    if terms == 0 {
        return format!("0.0{suffix}");
    }
    let mut factorial = vec![1.0f64; terms];
    for p in 1..terms {
        factorial[p] = factorial[p - 1] * p as f64;
    }
    let coefficient = |p: usize| format!("{:?}{suffix}", (1.0 / factorial[p]) as f32);
    let mut expr = coefficient(terms - 1);
    for p in (0..terms - 1).rev() {
        expr = format!("{fma}({expr}, x, {})", coefficient(p));
    }
    expr
}

/// How a GPU kernel lays one (batch, head) lane of work over a workgroup (WGSL) or thread
/// block (CUDA): one workgroup per lane, its invocations arranged as `rows x cols`.
///
/// The state sweep visits row `j` of `S` (`d_v` words) with the `cols` invocations of one row
/// group, so neighbouring invocations touch neighbouring words and a whole workgroup covers
/// `rows` consecutive rows, `rows * d_v` contiguous words per step: the access is coalesced,
/// which matters because decode is bandwidth-bound (every state word is read and written once
/// per token). `Z` is swept separately, one feature per invocation. With `d_v <= 64` the
/// workgroup holds `rows = floor(64 / d_v)` row groups (64 invocations at d_v = 16, the
/// smallest size that fills a SIMD group on every vendor); wider values take one row group
/// of up to 256 invocations, each owning `cols_per_invocation` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GpuGeometry {
    /// Invocations per workgroup, `rows * cols`.
    pub workgroup: usize,
    /// Invocations sharing one state row (`min(d_v, 256)`).
    pub cols: usize,
    /// Row groups: rows of `S` swept at once.
    pub rows: usize,
    /// Columns each invocation owns, `ceil(d_v / cols)` (1 unless `d_v > 256`).
    pub cols_per_invocation: usize,
}

impl GpuGeometry {
    /// Largest workgroup the geometry uses: WebGPU's default
    /// `maxComputeInvocationsPerWorkgroup`.
    pub const MAX_WORKGROUP: usize = 256;
    /// Workgroup size aimed for when a row is narrow.
    pub const TARGET_WORKGROUP: usize = 64;

    pub fn new(d_v: usize) -> Self {
        let cols = d_v.min(Self::MAX_WORKGROUP);
        let rows = (Self::TARGET_WORKGROUP / cols).max(1);
        Self {
            workgroup: rows * cols,
            cols,
            rows,
            cols_per_invocation: d_v.div_ceil(cols),
        }
    }

    /// The geometry of `plan`'s kernels.
    pub fn of(plan: &KernelPlan) -> Self {
        Self::new(plan.d_v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KernelConfig;

    #[test]
    fn workgroups_cover_every_column_and_stay_within_limits() {
        for d_v in [1, 2, 3, 5, 16, 17, 48, 64, 65, 100, 256, 257, 1000, 65_536] {
            let g = GpuGeometry::new(d_v);
            assert_eq!(g.workgroup, g.rows * g.cols, "d_v = {d_v}");
            assert!(g.workgroup <= GpuGeometry::MAX_WORKGROUP, "d_v = {d_v}");
            assert!(g.cols * g.cols_per_invocation >= d_v, "d_v = {d_v}");
            assert!(g.cols * (g.cols_per_invocation - 1) < d_v, "d_v = {d_v}");
            // Several row groups only when one invocation owns one column.
            assert!(g.rows == 1 || g.cols_per_invocation == 1, "d_v = {d_v}");
        }
        assert_eq!(GpuGeometry::new(16).workgroup, 64);
        assert_eq!(GpuGeometry::new(16).rows, 4);
    }

    #[test]
    fn horner_form_of_the_truncated_exponential() {
        assert_eq!(taylor_horner(0, "fmaf", "f"), "0.0f");
        assert_eq!(taylor_horner(1, "fmaf", "f"), "1.0f");
        assert_eq!(
            taylor_horner(3, "fmaf", "f"),
            "fmaf(fmaf(0.5f, x, 1.0f), x, 1.0f)"
        );
        assert_eq!(taylor_horner(2, "fma", ""), "fma(1.0, x, 1.0)");
    }

    #[test]
    fn backward_chunks_shrink_only_where_the_loop_cap_needs_it() {
        let plan = |d, p| KernelPlan::new(&KernelConfig::new(d, d, p).unwrap());
        assert_eq!(backward_chunk(&plan(4, 3)), BACKWARD_CHUNK_MAX);
        assert_eq!(backward_chunk(&plan(16, 4)), BACKWARD_CHUNK_MAX);
        let largest = plan(16, 6);
        let chunk = backward_chunk(&largest);
        assert!(chunk < BACKWARD_CHUNK_MAX, "d16 P6: {chunk}");
        // The loop cap is a hard limit: a chunk must fit it even where half does not.
        assert!(backward_loop_iterations_per_chunk(&largest, chunk) < LLVMPIPE_LOOP_LIMIT);
    }

    #[test]
    fn large_programs_loop_on_gpus() {
        let plan = |d, p| KernelPlan::new(&KernelConfig::new(d, d, p).unwrap());
        assert_eq!(gpu_unroll(&plan(16, 3)), Unroll::Full); // 17 runs
        assert_eq!(gpu_unroll(&plan(16, 4)), Unroll::PerOrder); // 153 runs
    }
}
