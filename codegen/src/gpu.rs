//! What the two GPU targets (WGSL and CUDA) share: how one (batch, head) lane of work is laid
//! over a workgroup or thread block, and when the feature program is straight-line code.

use serde::Serialize;

use crate::plan::{KernelPlan, Unroll};

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
    fn large_programs_loop_on_gpus() {
        let plan = |d, p| KernelPlan::new(&KernelConfig::new(d, d, p).unwrap());
        assert_eq!(gpu_unroll(&plan(16, 3)), Unroll::Full); // 17 runs
        assert_eq!(gpu_unroll(&plan(16, 4)), Unroll::PerOrder); // 153 runs
    }
}
