//! The host-execution header (`runtime/cuda/host_exec.hpp`) on hand-written CUDA kernels: it
//! must run correct kernels correctly, and make the bugs it claims to catch visible (a read
//! of shared memory before it is written, a race a missing barrier leaves, a barrier or warp
//! collective not every thread reaches).

use std::ffi::c_void;

use sata::cuda::launch::LaunchDims;
use sata::cuda::{HostLibrary, ThreadOrder};

const SOURCE: &str = r#"
// Every thread writes its index, then reads its right neighbour's after a barrier.
extern "C" __global__ void neighbour(float* out, unsigned int n) {
    __shared__ float s[128];
    const unsigned int t = threadIdx.x;
    s[t] = (float)t;
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
    (void)n;
}

// The same without the barrier: a race.
extern "C" __global__ void neighbour_racy(float* out, unsigned int n) {
    __shared__ float s[128];
    const unsigned int t = threadIdx.x;
    s[t] = (float)t;
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
    (void)n;
}

// Half the block waits at a barrier the other half never reaches.
extern "C" __global__ void divergent_barrier(float* out, unsigned int n) {
    if (threadIdx.x < n) {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

// Warp sums three ways, a broadcast, and a block total through atomicAdd.
extern "C" __global__ void warp_sums(float* out, unsigned int n) {
    const unsigned int t = threadIdx.x;
    const unsigned int lane = t % 32;
    float x = (float)(t + 1);
    float down = x;
    for (int d = 16; d > 0; d /= 2) down += __shfl_down_sync(0xffffffffu, down, d);
    float butterfly = x;
    for (int d = 16; d > 0; d /= 2) butterfly += __shfl_xor_sync(0xffffffffu, butterfly, d);
    const float first = __shfl_sync(0xffffffffu, x, 0);
    const float up = __shfl_up_sync(0xffffffffu, x, 1);
    float* row = out + 4 * (blockIdx.x * blockDim.x + t);
    row[0] = lane == 0 ? down : -1.0f;
    row[1] = butterfly;
    row[2] = first;
    row[3] = up;
    atomicAdd(out + 4 * n, x);
}

// A shuffle with a partial mask, which the model does not cover.
extern "C" __global__ void partial_mask(float* out, unsigned int n) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1.0f, 0);
    (void)n;
}

// Every index built in, in a 3-D grid of 3-D blocks.
extern "C" __global__ void indices(float* out, unsigned int n) {
    const unsigned int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned int threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned int i = block * threads + thread;
    if (i < n) out[i] = (float)i;
}
"#;

const KERNELS: [&str; 6] = [
    "neighbour",
    "neighbour_racy",
    "divergent_barrier",
    "warp_sums",
    "partial_mask",
    "indices",
];

fn library() -> HostLibrary {
    HostLibrary::build("host_exec_selftest", SOURCE, &KERNELS).unwrap()
}

/// Runs `kernel(out, n)` with `out` of `len` words; returns `out` or the launch error.
fn run(
    lib: &HostLibrary,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    len: usize,
    n: u32,
    order: ThreadOrder,
) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0f32; len];
    let mut address = out.as_mut_ptr() as u64;
    let mut count = n;
    let mut params = [
        &mut address as *mut u64 as *mut c_void,
        &mut count as *mut u32 as *mut c_void,
    ];
    // SAFETY: every kernel above takes (float*, unsigned int); each call below sizes `out` for
    // every index its kernel writes at these dimensions.
    unsafe { lib.launch(kernel, LaunchDims { grid, block }, &mut params, order) }
        .map_err(|e| e.to_string())?;
    Ok(out)
}

const ORDERS: [ThreadOrder; 2] = [ThreadOrder::Forward, ThreadOrder::Reverse];

#[test]
fn barriers_order_shared_memory_in_both_thread_orders() {
    let lib = library();
    for order in ORDERS {
        let out = run(&lib, "neighbour", [3, 1, 1], [128, 1, 1], 384, 0, order).unwrap();
        for (i, &y) in out.iter().enumerate() {
            assert_eq!(y, ((i % 128 + 1) % 128) as f32, "{order:?} thread {i}");
        }
    }
}

#[test]
fn a_missing_barrier_shows_as_nan_or_a_wrong_value_in_one_of_the_orders() {
    let lib = library();
    let forward = run(
        &lib,
        "neighbour_racy",
        [2, 1, 1],
        [64, 1, 1],
        128,
        0,
        ThreadOrder::Forward,
    )
    .unwrap();
    // Forward: thread t reads s[t + 1] before thread t + 1 ran, i.e. shared memory nobody
    // wrote yet in this block, which the header filled with NaN.
    assert!(forward[..63].iter().all(|y| y.is_nan()), "{forward:?}");
    // Reverse: thread t + 1 already wrote, so the race passes there; only thread 63, whose
    // neighbour is thread 0 (run last), sees NaN.
    let reverse = run(
        &lib,
        "neighbour_racy",
        [2, 1, 1],
        [64, 1, 1],
        128,
        0,
        ThreadOrder::Reverse,
    )
    .unwrap();
    assert_eq!(reverse[0], 1.0);
    assert!(reverse[63].is_nan());
}

#[test]
fn a_barrier_not_every_thread_reaches_is_reported_not_hung() {
    let lib = library();
    for order in ORDERS {
        let err = run(
            &lib,
            "divergent_barrier",
            [1, 1, 1],
            [64, 1, 1],
            64,
            32,
            order,
        )
        .unwrap_err();
        assert!(err.contains("divergent barrier"), "{err}");
        assert!(err.contains("32 of 64 threads wait"), "{err}");
    }
    // The same kernel with every thread at the barrier runs.
    let out = run(
        &lib,
        "divergent_barrier",
        [1, 1, 1],
        [64, 1, 1],
        64,
        64,
        ThreadOrder::Forward,
    )
    .unwrap();
    assert!(out.iter().all(|&y| y == 1.0));
}

#[test]
fn warp_shuffles_and_atomics_match_cuda_semantics() {
    let lib = library();
    let (blocks, threads) = (3u32, 96u32);
    let total = (blocks * threads) as usize;
    for order in ORDERS {
        let out = run(
            &lib,
            "warp_sums",
            [blocks, 1, 1],
            [threads, 1, 1],
            4 * total + 1,
            total as u32,
            order,
        )
        .unwrap();
        for b in 0..blocks as usize {
            for t in 0..threads as usize {
                let row = &out[4 * (b * threads as usize + t)..][..4];
                let warp = t / 32;
                let x = |lane: usize| (warp * 32 + lane + 1) as f32;
                let sum: f32 = (0..32).map(x).sum();
                let lane = t % 32;
                if lane == 0 {
                    assert_eq!(row[0], sum, "{order:?} shfl_down reduction, thread {t}");
                }
                assert_eq!(row[1], sum, "{order:?} shfl_xor reduction, thread {t}");
                assert_eq!(row[2], x(0), "{order:?} broadcast, thread {t}");
                let up = if lane == 0 { x(0) } else { x(lane - 1) };
                assert_eq!(row[3], up, "{order:?} shfl_up, thread {t}");
            }
        }
        let per_block: f32 = (1..=threads).map(|t| t as f32).sum();
        assert_eq!(
            out[4 * total],
            blocks as f32 * per_block,
            "{order:?} atomicAdd"
        );
    }
}

#[test]
fn partial_warp_masks_are_refused() {
    let err = run(
        &library(),
        "partial_mask",
        [1, 1, 1],
        [32, 1, 1],
        32,
        0,
        ThreadOrder::Forward,
    )
    .unwrap_err();
    assert!(err.contains("full-mask"), "{err}");
}

#[test]
fn three_dimensional_grids_and_blocks_index_every_thread_once() {
    let lib = library();
    let (grid, block) = ([3, 2, 2], [4, 3, 2]);
    let n = 12 * 24;
    let out = run(
        &lib,
        "indices",
        grid,
        block,
        n,
        n as u32,
        ThreadOrder::Reverse,
    )
    .unwrap();
    for (i, &y) in out.iter().enumerate() {
        assert_eq!(y, i as f32);
    }
    // Launch errors are errors: a block larger than CUDA allows, an empty grid.
    assert!(
        run(
            &lib,
            "indices",
            [1, 1, 1],
            [2048, 1, 1],
            1,
            0,
            ThreadOrder::Forward
        )
        .is_err()
    );
    assert!(
        run(
            &lib,
            "indices",
            [0, 1, 1],
            [1, 1, 1],
            1,
            0,
            ThreadOrder::Forward
        )
        .is_err()
    );
    assert!(
        run(
            &lib,
            "no_such_kernel",
            [1, 1, 1],
            [1, 1, 1],
            1,
            0,
            ThreadOrder::Forward
        )
        .is_err()
    );
}
