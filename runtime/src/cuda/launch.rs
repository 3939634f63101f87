//! The launch of a generated CUDA kernel, computed once for both executors: the grid, block
//! and split of the plan's [`CudaLayout`], and `cuLaunchKernel`'s parameter array. The real
//! GPU and the host execution receive exactly the same dimensions and parameters.

use std::ffi::c_void;

use sata_codegen::{CudaKernel, CudaLayout};

use super::nvrtc::cuda_error;
use crate::error::SataError;

/// Grid and block of one launch (no dynamic shared memory: the kernels declare theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

/// How many blocks share one lane's state: enough blocks for two per SM, at most
/// [`CudaLayout::max_split`] and at most CUDA's grid y limit.
pub fn split_for(layout: &CudaLayout, lanes: usize, sm_count: usize) -> usize {
    (2 * sm_count)
        .div_ceil(lanes.max(1))
        .clamp(1, layout.max_split().min(65_535))
}

/// Dimensions for `lanes` lanes split over `split` blocks each.
pub fn dims(layout: &CudaLayout, lanes: usize, split: usize) -> Result<LaunchDims, SataError> {
    let lanes = u32::try_from(lanes)
        .ok()
        .filter(|&l| l <= i32::MAX as u32)
        .ok_or_else(|| cuda_error(format!("{lanes} lanes exceed CUDA's grid limit")))?;
    let split = u32::try_from(split.clamp(1, 65_535)).unwrap_or(1);
    Ok(LaunchDims {
        grid: [lanes, split, 1],
        block: [layout.block as u32, 1, 1],
    })
}

/// Device (or host) addresses of a launch's buffers. Unused inputs may be any valid address.
#[derive(Debug, Clone, Copy)]
pub struct Buffers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub state: u64,
    pub out: u64,
}

/// The values of one launch's parameters, in the kernels' order
/// `(q, k, v, state, out, lanes, tokens)`; [`Arguments::params`] points at them.
pub struct Arguments {
    addresses: [u64; 5],
    counts: [u32; 2],
}

impl Arguments {
    pub fn new(buffers: Buffers, lanes: usize, tokens: usize) -> Result<Self, SataError> {
        let count = |n: usize, what: &str| {
            u32::try_from(n).map_err(|_| cuda_error(format!("{n} {what} exceed a kernel's u32")))
        };
        Ok(Self {
            addresses: [buffers.q, buffers.k, buffers.v, buffers.state, buffers.out],
            counts: [count(lanes, "lanes")?, count(tokens, "tokens")?],
        })
    }

    /// `cuLaunchKernel`'s `kernelParams`: one pointer per parameter, to its value. Valid while
    /// `self` is neither moved nor dropped.
    pub fn params(&mut self) -> [*mut c_void; 7] {
        let [q, k, v, state, out] = &mut self.addresses;
        let [lanes, tokens] = &mut self.counts;
        [
            q as *mut u64 as *mut c_void,
            k as *mut u64 as *mut c_void,
            v as *mut u64 as *mut c_void,
            state as *mut u64 as *mut c_void,
            out as *mut u64 as *mut c_void,
            lanes as *mut u32 as *mut c_void,
            tokens as *mut u32 as *mut c_void,
        ]
    }
}

/// What a launch needs besides its buffers: which kernel, and its dimensions.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub kernel: &'a CudaKernel,
    pub dims: LaunchDims,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sata_codegen::{KernelConfig, KernelPlan};

    #[test]
    fn splits_fill_the_device_and_stay_within_limits() {
        let plan = KernelPlan::new(&KernelConfig::new(16, 16, 4).unwrap());
        let layout = CudaLayout::new(&plan).unwrap();
        // 64 heads on 132 SMs: 5 blocks per lane, 320 blocks.
        assert_eq!(split_for(&layout, 64, 132), 5);
        assert_eq!(split_for(&layout, 4096, 132), 1);
        let tiny = CudaLayout::new(&KernelPlan::new(&KernelConfig::new(2, 2, 2).unwrap())).unwrap();
        assert_eq!(split_for(&tiny, 1, 132), 1);
        let d = dims(&layout, 64, 5).unwrap();
        assert_eq!(d.grid, [64, 5, 1]);
        assert_eq!(d.block, [64, 1, 1]);
        assert!(dims(&layout, usize::MAX, 1).is_err());
    }
}
