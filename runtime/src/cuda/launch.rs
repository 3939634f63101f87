//! The launch of a generated CUDA kernel, computed once for both executors: the grid, block
//! and split of the plan's [`CudaLayout`], and `cuLaunchKernel`'s parameter array. The real
//! GPU and the host execution receive exactly the same dimensions and parameters.

use std::ffi::c_void;

use sata_codegen::contract::Buffer;
use sata_codegen::cuda::CudaLayout;

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

/// The values of one launch's parameters in the kernel's order: the device (or host) address
/// of every buffer (the forward's [`Buffer::ALL`], or the backward's
/// `sata_codegen::contract::BackwardBuffer::ALL`), then its `u32` counts (`lanes`, `tokens`,
/// and the backward's phase); [`Arguments::params`] points at them.
pub struct Arguments {
    addresses: Vec<u64>,
    counts: Vec<u32>,
}

impl Arguments {
    /// `addresses` in the kernel's buffer order (an unused input may be any valid address),
    /// then `counts` (`(value, what it counts)`), each of which must fit a `u32`.
    pub fn new(addresses: Vec<u64>, counts: &[(usize, &str)]) -> Result<Self, SataError> {
        let counts = counts
            .iter()
            .map(|&(n, what)| {
                u32::try_from(n)
                    .map_err(|_| cuda_error(format!("{n} {what} exceed a kernel's u32")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { addresses, counts })
    }

    /// The forward entries' arguments: [`Buffer::ALL`]'s addresses, `lanes` and `tokens`.
    pub fn forward(
        addresses: [u64; Buffer::ALL.len()],
        lanes: usize,
        tokens: usize,
    ) -> Result<Self, SataError> {
        Self::new(addresses.to_vec(), &[(lanes, "lanes"), (tokens, "tokens")])
    }

    /// `cuLaunchKernel`'s `kernelParams`: one pointer per parameter, to its value. Valid while
    /// `self` is neither moved nor dropped (the values live on the heap, so a move of `self`
    /// keeps them in place, but a drop does not).
    pub fn params(&mut self) -> Vec<*mut c_void> {
        let addresses = self
            .addresses
            .iter_mut()
            .map(|a| a as *mut u64 as *mut c_void);
        let counts = self.counts.iter_mut().map(|c| c as *mut u32 as *mut c_void);
        addresses.chain(counts).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sata_codegen::cuda::CudaOptions;
    use sata_codegen::{KernelConfig, KernelPlan};

    #[test]
    fn splits_fill_the_device_and_stay_within_limits() {
        let layout = |d, p| {
            let plan = KernelPlan::new(&KernelConfig::new(d, d, p).unwrap());
            CudaLayout::new(&plan, &CudaOptions::default()).unwrap()
        };
        let layout16 = layout(16, 4);
        // 64 heads on 132 SMs: 5 blocks per lane, 320 blocks.
        assert_eq!(split_for(&layout16, 64, 132), 5);
        assert_eq!(split_for(&layout16, 4096, 132), 1);
        let tiny = layout(2, 2);
        assert_eq!(split_for(&tiny, 1, 132), 1);
        let d = dims(&layout16, 64, 5).unwrap();
        assert_eq!(d.grid, [64, 5, 1]);
        assert_eq!(d.block, [64, 1, 1]);
        assert!(dims(&layout16, usize::MAX, 1).is_err());
    }
}
