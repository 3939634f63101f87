//! The CUDA lowering of a plan: which kernels a configuration gets, how each is launched, how
//! much shared and constant memory it declares, the register budget it is compiled against,
//! and the traffic and work model its performance is predicted from. One piece of runtime
//! code computes the launch of a real GPU and of the CPU execution of the same source from it,
//! and tests hold the compiler's resource report against the numbers it chose.
//!
//! In short (the reasons, with measurements, are in `docs/backends/cuda.md`): one block per
//! (batch, head) lane, its state rows dealt to `gridDim.y` blocks that add partial sums into
//! the output with `atomicAdd`; the block is the GPU geometry shared with WGSL, so a block
//! step covers contiguous state words; only parent features live in shared memory, each row's
//! own features are one multiply away in registers, with the query weights folded into the
//! recurrence; prefill, absorb and query pass over the state once per chunk of tokens.

use serde::Serialize;

use super::options::CudaOptions;
use crate::contract::{Entry, Pass, lane_stride};
use crate::gpu::{GpuGeometry, gpu_unroll};
use crate::plan::{KernelPlan, Unroll};

/// Static shared memory one block may declare (the CUDA limit without opt-in).
pub const CUDA_MAX_STATIC_SHARED: usize = 48 * 1024;
/// Constant memory a module may declare.
pub const CUDA_MAX_CONSTANT: usize = 64 * 1024;
/// 32-bit registers of one SM (every architecture from sm_50 to sm_90).
pub const CUDA_REGISTERS_PER_SM: usize = 65_536;
/// Largest chunk the plan uses.
pub const CUDA_MAX_CHUNK: usize = 16;
/// Registers per thread the chunk's per-token accumulators may take (see [`CudaLayout::new`]).
const CHUNK_REGISTER_SHARE: usize = 64;

/// One kernel of a module and its launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaKernel {
    pub entry: Entry,
    /// The `extern "C"` symbol, `sata_<plan name>_<entry>`.
    pub symbol: String,
    /// Tokens per pass over the state.
    pub chunk: usize,
    /// Bytes of static shared memory the kernel declares.
    pub shared_bytes: usize,
    /// Registers per thread the kernel is compiled against (`__launch_bounds__`).
    pub register_budget: usize,
    /// The `minBlocksPerMultiprocessor` of `__launch_bounds__` that sets the budget.
    pub min_blocks: usize,
    /// Shared-memory arrays the kernel declares (which depends on what it reads and writes).
    pub arrays: SharedArrays,
}

/// One backward kernel of a plain module ([`Pass`]) and its launch: grid `(lanes, 1, 1)`, one
/// block of [`CudaLayout::block`] threads per lane, the tokens a chunk
/// ([`crate::gpu::backward_chunk`]) at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaBackwardKernel {
    pub pass: Pass,
    /// The `extern "C"` symbol, `sata_<plan name>_<pass>`.
    pub symbol: String,
    /// Bytes of static shared memory: pass B's row-group partial sums of `dv` where a block
    /// has several row groups.
    pub shared_bytes: usize,
    /// Registers per thread the kernel is compiled against (`__launch_bounds__`).
    pub register_budget: usize,
    /// The `minBlocksPerMultiprocessor` of `__launch_bounds__` that sets the budget.
    pub min_blocks: usize,
}

/// Which shared arrays a kernel declares, each `chunk` tokens deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SharedArrays {
    /// Keys, `chunk * d_k` (update with runs, or intra).
    pub keys: bool,
    /// Queries, `chunk * d_k` (read with runs, or intra).
    pub queries: bool,
    /// Parent key features, `chunk * parents` (update).
    pub key_features: bool,
    /// Parent weighted query features, `chunk * parents` (read).
    pub query_features: bool,
    /// `kappa(q_t · k_s)` inside the chunk, `chunk * chunk` (intra).
    pub kappa: bool,
    /// Row-group partial numerators `rows * chunk * d_v` and denominators `rows * chunk`
    /// (read).
    pub partials: bool,
}

impl SharedArrays {
    /// The arrays of `entry`. With `P = 1` there are no runs: no features beyond the constant,
    /// so only the chunk's own dot products need keys and queries.
    fn of(entry: Entry, has_runs: bool) -> Self {
        Self {
            keys: (entry.updates() && has_runs) || entry.causal(),
            queries: (entry.answers() && has_runs) || entry.causal(),
            key_features: entry.updates() && has_runs,
            query_features: entry.answers() && has_runs,
            kappa: entry.causal(),
            partials: entry.answers(),
        }
    }

    fn words(self, chunk: usize, d_k: usize, d_v: usize, parents: usize, rows: usize) -> usize {
        let on = |b: bool, n: usize| if b { n } else { 0 };
        on(self.keys, chunk * d_k)
            + on(self.queries, chunk * d_k)
            + on(self.key_features, chunk * parents)
            + on(self.query_features, chunk * parents)
            + on(self.kappa, chunk * chunk)
            + on(self.partials, rows * chunk * (d_v + 1))
    }
}

/// One run of children of the feature program, as the CUDA kernels use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CudaRun {
    /// Index in the run table (runs of orders `1..P`, in feature order).
    pub index: usize,
    pub parent: usize,
    pub first: usize,
    pub len: usize,
    pub dest: usize,
    /// Multiplicity of coordinate `first` in the first child (the others have 1).
    pub mult: usize,
}

/// Why a configuration has no CUDA kernels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaLimitError {
    #[error(
        "{kernel}: even one token per pass needs {bytes} bytes of static shared memory \
         (parent features of orders 0..P-1), over CUDA's {CUDA_MAX_STATIC_SHARED}"
    )]
    SharedMemory { kernel: String, bytes: usize },
    #[error(
        "{kernel}: the run table needs {bytes} bytes of constant memory, over CUDA's \
         {CUDA_MAX_CONSTANT}"
    )]
    ConstantMemory { kernel: String, bytes: usize },
}

/// The CUDA layout of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct CudaLayout {
    /// Module name: the plan's, with `_kahan` for the compensated variant.
    pub name: String,
    /// Whether the kernels keep Kahan compensation words beside every sum (the state layout
    /// of `Accumulation::Compensated`: per lane the sums, then their compensation).
    pub compensated: bool,
    /// Words of one lane: the plan's state words, twice that when compensated.
    pub lane_words: usize,
    /// Words from one lane to the next ([`lane_stride`]).
    pub lane_stride: usize,
    /// The feature program's form.
    pub unroll: Unroll,
    /// Threads per block, `rows * cols` (the [`GpuGeometry`]).
    pub block: usize,
    pub rows: usize,
    pub cols: usize,
    pub cols_per_thread: usize,
    /// Features of orders `0..P-1` (at least 1): the parents, kept in shared memory.
    pub parents: usize,
    /// Tokens per pass of prefill, absorb and answer.
    pub chunk: usize,
    /// Every run of orders `1..P`, in feature order.
    pub runs: Vec<CudaRun>,
    /// How many leading runs produce parents (orders `1..P-1`).
    pub parent_runs: usize,
    /// `[begin, end)` in `runs` of each parent order `1..P-1`.
    pub parent_orders: Vec<(usize, usize)>,
    /// Bytes of `__constant__` run tables.
    pub constant_bytes: usize,
    pub kernels: Vec<CudaKernel>,
    /// The backward passes, in the order of [`Pass::ALL`] (plain modules only: the
    /// backward's states are plain whatever the forward's accumulation).
    pub backward: Vec<CudaBackwardKernel>,
    /// `[begin, end)` in `runs` of each order `2..P`, which the backward's feature maps and
    /// adjoints walk one order at a time.
    pub backward_orders: Vec<(usize, usize)>,
    pub traffic: CudaTraffic,
}

/// Bytes and FLOPs per head, the model the predicted times come from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CudaTraffic {
    /// Bytes of one decode step: the state read and written once, plus q, k, v and the output.
    pub decode_bytes: u64,
    pub decode_flops: u64,
    /// Bytes per prefill token: the state read and written once per chunk, plus the token.
    pub prefill_bytes_per_token: f64,
    /// FLOPs per prefill token: the state pass (per token, as in decode) plus the intra-chunk
    /// dot products and polynomials (half a chunk on average).
    pub prefill_flops_per_token: f64,
}

impl CudaLayout {
    /// The layout of `plan`'s kernels as `options` ask (plain or Kahan-compensated, which have
    /// the same geometry, shared memory and register budgets), or why there is none.
    ///
    /// The chunk is the largest power of two up to [`CUDA_MAX_CHUNK`] that keeps shared
    /// memory within 48 KiB and the chunk's per-token registers (numerators and values per
    /// column, the denominator and the two features of the current row,
    /// `chunk * (2 * cols_per_thread + 3)`) within 64, so that with the remaining working
    /// registers the kernel fits its budget of 128 without spilling (a share of 96 spilled on
    /// sm_80 at d_v = 8, `docs/backends/cuda.md`). Decode (one token) is compiled against 64
    /// registers, so that 16 blocks of 64 threads are resident per SM: decode waits on memory
    /// and needs the warps.
    pub fn new(plan: &KernelPlan, options: &CudaOptions) -> Result<Self, CudaLimitError> {
        let compensated = options.compensated;
        let name = plan.variant_name(compensated);
        let parent_orders_span = plan.terms.saturating_sub(1);
        let parents = plan.orders[..parent_orders_span]
            .iter()
            .map(|o| o.len)
            .sum::<usize>()
            .max(1);
        let mut runs = Vec::new();
        let mut parent_orders = Vec::new();
        for order in plan.orders.iter().skip(1) {
            let begin = runs.len();
            for r in &order.runs {
                runs.push(CudaRun {
                    index: runs.len(),
                    parent: r.parent,
                    first: r.first,
                    len: r.len,
                    dest: r.dest,
                    mult: r.mult,
                });
            }
            if order.degree + 1 < plan.terms {
                parent_orders.push((begin, runs.len()));
            }
        }
        let parent_runs = parent_orders.last().map_or(0, |&(_, end)| end);
        // Orders 2.. begin after order 1's single run.
        let mut backward_orders = Vec::new();
        let mut begin = 1;
        for order in plan.orders.iter().skip(2) {
            backward_orders.push((begin, begin + order.runs.len()));
            begin += order.runs.len();
        }
        let backward = !compensated;
        // RUN_PARENT (u32), RUN_FIRST (u16), RUN_MULT (u8) for every run; RUN_DEST (u32) for
        // the parent runs, which are built in parallel and need their destination up front;
        // with the backward, ADJ_DEST (u32) for every run, whose adjoints run in parallel.
        let adjoint_dest = if backward && !backward_orders.is_empty() {
            runs.len() * 4
        } else {
            0
        };
        let constant_bytes = runs.len() * 7 + parent_runs * 4 + adjoint_dest;
        if constant_bytes > CUDA_MAX_CONSTANT {
            return Err(CudaLimitError::ConstantMemory {
                kernel: plan.name.clone(),
                bytes: constant_bytes,
            });
        }
        let g = GpuGeometry::of(plan);
        let has_runs = !runs.is_empty();
        let shared = |entry: Entry, chunk: usize| {
            4 * SharedArrays::of(entry, has_runs).words(chunk, plan.d_k, plan.d_v, parents, g.rows)
        };
        let fits = |chunk: usize| {
            Entry::ALL
                .iter()
                .all(|&e| shared(e, chunk) <= CUDA_MAX_STATIC_SHARED)
                && chunk * (2 * g.cols_per_invocation + 3) <= CHUNK_REGISTER_SHARE
        };
        let chunk = [16, 8, 4, 2, 1]
            .into_iter()
            .find(|&c| c <= CUDA_MAX_CHUNK && fits(c));
        let Some(chunk) = chunk else {
            return Err(CudaLimitError::SharedMemory {
                kernel: plan.name.clone(),
                bytes: Entry::ALL.iter().map(|&e| shared(e, 1)).max().unwrap_or(0),
            });
        };
        let kernels = Entry::ALL
            .iter()
            .map(|&entry| {
                let chunk = if entry == Entry::Decode { 1 } else { chunk };
                let wanted = if entry == Entry::Decode { 64 } else { 128 };
                let min_blocks = (CUDA_REGISTERS_PER_SM / (g.workgroup * wanted)).max(1);
                // What ptxas may use with `min_blocks` blocks resident: the register file
                // divided among the threads, rounded down to its allocation unit of 8.
                let register_budget =
                    (CUDA_REGISTERS_PER_SM / (g.workgroup * min_blocks)).min(255) / 8 * 8;
                CudaKernel {
                    entry,
                    symbol: entry.symbol(&name),
                    chunk,
                    shared_bytes: shared(entry, chunk),
                    register_budget,
                    min_blocks,
                    arrays: SharedArrays::of(entry, has_runs),
                }
            })
            .collect();
        // One token at a time, few registers: the budget of decode.
        let min_blocks = (CUDA_REGISTERS_PER_SM / (g.workgroup * 64)).max(1);
        let backward_kernels = Pass::ALL
            .iter()
            .filter(|_| backward)
            .map(|&pass| CudaBackwardKernel {
                pass,
                symbol: pass.symbol(&name),
                shared_bytes: if pass == Pass::Keys && g.rows > 1 {
                    4 * g.workgroup
                } else {
                    0
                },
                register_budget: (CUDA_REGISTERS_PER_SM / (g.workgroup * min_blocks)).min(255) / 8
                    * 8,
                min_blocks,
            })
            .collect();
        let m = plan.features as u64;
        let state_bytes = 4 * plan.state_words as u64;
        let token_bytes = 4 * (2 * plan.d_k + 2 * plan.d_v + 1) as u64;
        let intra_flops = (2 * plan.d_k + 2 * plan.terms + 2 * plan.d_v + 2) as f64;
        let lane_words = plan.state_words * if compensated { 2 } else { 1 };
        Ok(Self {
            name,
            compensated,
            lane_words,
            lane_stride: lane_stride(lane_words),
            unroll: options.unroll.unwrap_or_else(|| gpu_unroll(plan)),
            block: g.workgroup,
            rows: g.rows,
            cols: g.cols,
            cols_per_thread: g.cols_per_invocation,
            parents,
            chunk,
            runs,
            parent_runs,
            parent_orders,
            constant_bytes,
            kernels,
            backward: backward_kernels,
            backward_orders,
            traffic: CudaTraffic {
                decode_bytes: 2 * state_bytes + token_bytes,
                decode_flops: plan.decode_flops + intra_flops as u64 - m,
                prefill_bytes_per_token: 2.0 * state_bytes as f64 / chunk as f64
                    + token_bytes as f64,
                prefill_flops_per_token: plan.decode_flops as f64
                    + intra_flops * (chunk as f64 + 1.0) / 2.0,
            },
        })
    }

    pub fn kernel(&self, entry: Entry) -> &CudaKernel {
        &self.kernels[entry as usize]
    }

    /// Every kernel's symbol: the forward entries', then the backward passes'.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        let forward = self.kernels.iter().map(|k| k.symbol.as_str());
        forward.chain(self.backward.iter().map(|k| k.symbol.as_str()))
    }

    /// The backward kernel of `pass`, if the module has one (plain modules).
    pub fn backward_kernel(&self, pass: Pass) -> Option<&CudaBackwardKernel> {
        self.backward.iter().find(|k| k.pass == pass)
    }

    /// Largest useful split of one lane over blocks: every block gets at least four runs.
    pub fn max_split(&self) -> usize {
        (self.runs.len() / 4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basis::Basis;
    use crate::config::KernelConfig;
    use crate::registry::precompiled_configs;

    #[test]
    fn every_registry_config_has_a_layout_within_limits() {
        for config in precompiled_configs() {
            let plan = KernelPlan::new(&config);
            let layout = CudaLayout::new(&plan, &CudaOptions::default()).unwrap();
            assert!(layout.constant_bytes <= CUDA_MAX_CONSTANT, "{}", plan.name);
            for k in &layout.kernels {
                assert!(k.shared_bytes <= CUDA_MAX_STATIC_SHARED, "{}", k.symbol);
                assert!(k.register_budget >= 32, "{}", k.symbol);
            }
            assert_eq!(layout.kernel(Entry::Decode).chunk, 1);
        }
    }

    #[test]
    fn runs_cover_every_feature_and_multiplicities_give_the_weights() {
        let config = KernelConfig::new(3, 2, 4).unwrap();
        let plan = KernelPlan::new(&config);
        let basis = Basis::new(&config);
        let layout = CudaLayout::new(&plan, &CudaOptions::default()).unwrap();
        let covered: usize = layout.runs.iter().map(|r| r.len).sum();
        assert_eq!(covered + 1, plan.features);
        // The weight recurrence the kernels use: w_child = w_parent / (c * mult) on the first
        // child of a run and w_parent / c on the others.
        for r in &layout.runs {
            for i in 0..r.len {
                let mult = if i == 0 { r.mult } else { 1 };
                let w = basis.weights()[r.parent] / (plan.scale * mult as f64);
                let exact = basis.weights()[r.dest + i];
                assert!((w - exact).abs() <= 1e-12 * exact, "feature {}", r.dest + i);
            }
        }
        assert_eq!(layout.parents, 1 + 3 + 6);
        assert_eq!(layout.parent_orders, vec![(0, 1), (1, 4)]);
    }

    #[test]
    fn too_many_parents_is_a_typed_error() {
        let plan = KernelPlan::new(&KernelConfig::new(32, 32, 6).unwrap());
        assert!(matches!(
            CudaLayout::new(&plan, &CudaOptions::default()),
            Err(CudaLimitError::SharedMemory { .. } | CudaLimitError::ConstantMemory { .. })
        ));
    }
}
