//! The command line's arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Symmetry-aware Taylor attention (SATA): softmax-like attention at a constant cost per token,
/// with a fixed-size state instead of a KV cache.
///
/// Arrays are NumPy .npy files shaped [..., tokens, dim] (float32 or float64, C order); all
/// three inputs share their leading dimensions, e.g. [batch, heads, tokens, dim].
#[derive(Debug, Parser)]
#[command(name = "sata", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    sata info --d-k 16 --d-v 16 --terms 4\n  \
    sata emit --target rust --d-k 16 --d-v 16 --terms 4 -o kernel.rs\n  \
    sata attend --q q.npy --k k.npy --v v.npy --out y.npy --terms 4\n  \
    sata attend --q q1.npy --k k1.npy --v v1.npy --out y1.npy --terms 4 --state-out s.sata\n  \
    sata attend --q q2.npy --k k2.npy --v v2.npy --out y2.npy --terms 4 --state-in s.sata")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attend: Y = SATA(Q, K, V), causal unless --non-causal.
    Attend(AttendArgs),
    /// Print feature counts, state size, cost per token and the KV-cache break-even context.
    Info(InfoArgs),
    /// Print or write the generated source of a specialized kernel.
    Emit(EmitArgs),
    /// Gradients of L = sum(Y * DY) for the forward `attend` computes: DQ, DK, DV.
    Backward(BackwardArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmitTarget {
    /// Rust module implementing sata::SpecializedKernel (x86-64 SIMD with a portable fallback).
    Rust,
    /// WGSL compute shader (entry points causal, absorb, answer) for the wgpu backend.
    Wgsl,
    /// CUDA C module (kernels decode, prefill, absorb, answer) for NVRTC and the cuda backend.
    Cuda,
}

#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// Code-generation target.
    #[arg(long, value_enum)]
    pub target: EmitTarget,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Force the feature program's form (default: straight-line up to the threshold that
    /// `sata info` prints; above it per-order loops on the GPU targets, pieces in Rust).
    #[arg(long, value_enum)]
    pub unroll: Option<UnrollArg>,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// With --target cuda: compile the kernels with NVRTC for sm_80 and sm_90 and print the
    /// ptxas table (registers, spills, shared memory, occupancy) instead of the source (which
    /// still goes to --output when given).
    #[arg(long)]
    pub report: bool,
    /// With --target cuda: the Kahan-compensated kernels, for states made with
    /// `Accumulation::Compensated`.
    #[arg(long)]
    pub compensated: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UnrollArg {
    /// Straight-line: one fixed-length statement per run of children.
    Full,
    /// One loop per Taylor order over a constant run table.
    PerOrder,
    /// One loop over a constant table of suffix pieces (Rust target only).
    Pieces,
}

#[derive(Debug, clap::Args)]
pub struct AttendArgs {
    /// Queries, [..., n_q, d_k].
    #[arg(long, value_name = "Q.npy")]
    pub q: PathBuf,
    /// Keys, [..., n_k, d_k].
    #[arg(long, value_name = "K.npy")]
    pub k: PathBuf,
    /// Values, [..., n_k, d_v].
    #[arg(long, value_name = "V.npy")]
    pub v: PathBuf,
    /// Where to write the outputs, [..., n_q, d_v], in the inputs' dtype.
    #[arg(long, value_name = "Y.npy")]
    pub out: PathBuf,
    /// Number of Taylor terms P (orders 0..P-1); 4 to 6 approximate softmax well.
    #[arg(long, value_name = "P")]
    pub terms: usize,
    /// Every query sees every key (cross attention when n_q != n_k). Default: causal.
    #[arg(long)]
    pub non_causal: bool,
    /// Scale c in exp(q·k / c). Default: sqrt(d_k).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub scale: Option<f64>,
    /// Which implementation runs: auto, cpu (specialized kernels, falls back visibly),
    /// cpu-generic, wgpu, cuda.
    #[arg(long, default_value = "auto", value_name = "BACKEND")]
    pub backend: String,
    /// CPU threads the lanes (batch x head) run on, a pool made for this call. Default: the
    /// `RAYON_NUM_THREADS` environment variable, else one per core. Results do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Continue from a state saved by --state-out (the keys of earlier calls).
    #[arg(long, value_name = "FILE")]
    pub state_in: Option<PathBuf>,
    /// Save the state after this call, to continue the sequence later.
    #[arg(long, value_name = "FILE")]
    pub state_out: Option<PathBuf>,
    /// What to do with a query whose denominator is not positive.
    #[arg(long, value_enum, default_value_t = BadDenominator::Zero)]
    pub on_bad_denominator: BadDenominator,
    /// Print the backend that ran and per-call diagnostics on stderr.
    #[arg(long)]
    pub stats: bool,
    /// Start a new state with Kahan-compensated sums (for sequences of millions of tokens;
    /// twice the memory). A state read with --state-in keeps the accumulation it was saved with.
    #[arg(long, conflicts_with = "state_in")]
    pub compensated: bool,
}

#[derive(Debug, clap::Args)]
pub struct BackwardArgs {
    /// Queries, [..., n_q, d_k].
    #[arg(long, value_name = "Q.npy")]
    pub q: PathBuf,
    /// Keys, [..., n_k, d_k].
    #[arg(long, value_name = "K.npy")]
    pub k: PathBuf,
    /// Values, [..., n_k, d_v].
    #[arg(long, value_name = "V.npy")]
    pub v: PathBuf,
    /// The gradient of the outputs, [..., n_q, d_v].
    #[arg(long, value_name = "DY.npy")]
    pub dy: PathBuf,
    /// Number of Taylor terms P.
    #[arg(long, value_name = "P")]
    pub terms: usize,
    /// Non-causal attention (every query sees every key), as `attend --non-causal`.
    #[arg(long)]
    pub non_causal: bool,
    /// Scale c (default sqrt(d_k)).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub scale: Option<f64>,
    /// The backend of the forward and the backward: auto, cpu, cpu-generic, wgpu, cuda,
    /// cuda-host. On the CPU the specialized kernel's generated backward runs where the
    /// forward ran one, float64 reference passes otherwise; the devices run their own backward
    /// kernels (--stats says which).
    #[arg(long, default_value = "auto", value_name = "BACKEND")]
    pub backend: String,
    /// CPU threads the lanes (batch x head) run on, a pool made for this call. Default: the
    /// `RAYON_NUM_THREADS` environment variable, else one per core. Results do not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The state the forward starts from (a checkpoint of earlier keys).
    #[arg(long, value_name = "FILE")]
    pub state_in: Option<PathBuf>,
    /// Where to write dL/dQ, [..., n_q, d_k].
    #[arg(long, value_name = "DQ.npy")]
    pub dq: PathBuf,
    /// Where to write dL/dK, [..., n_k, d_k].
    #[arg(long, value_name = "DK.npy")]
    pub dk: PathBuf,
    /// Where to write dL/dV, [..., n_k, d_v].
    #[arg(long, value_name = "DV.npy")]
    pub dv: PathBuf,
    /// Print the forward's backend and the count of queries with no gradient on stderr.
    #[arg(long)]
    pub stats: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BadDenominator {
    /// Output zeros for that query and warn.
    Zero,
    /// Fail without writing anything.
    Error,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Bound on |q|·|k| (so |q·k|/c <= B/c): print the Taylor remainder bound for this
    /// configuration and, with --tolerance, the smallest P that meets it.
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    pub qk_bound: Option<f64>,
    /// Tolerance on the output error relative to the spread of the values (with --qk-bound).
    #[arg(
        long,
        value_name = "T",
        requires = "qk_bound",
        allow_negative_numbers = true
    )]
    pub tolerance: Option<f64>,
    /// Also describe the kernels of this GPU target: for cuda, the launch layout, the
    /// predicted H100 times, and the ptxas resource table when NVRTC is present.
    #[arg(long, value_enum)]
    pub target: Option<InfoTarget>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InfoTarget {
    /// CUDA kernels (NVRTC, the cuda backend).
    Cuda,
}

/// A configuration given on the command line (`info`, `emit`).
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Key/query head dimension.
    #[arg(long, value_name = "D")]
    pub d_k: usize,
    /// Value head dimension.
    #[arg(long, value_name = "D")]
    pub d_v: usize,
    /// Number of Taylor terms P.
    #[arg(long, value_name = "P")]
    pub terms: usize,
    /// Scale c (default sqrt(d_k)).
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    pub scale: Option<f64>,
}

impl ConfigArgs {
    /// The validated configuration, or the reason it is not one.
    pub fn config(&self) -> Result<crate::KernelConfig, String> {
        let config =
            crate::KernelConfig::new(self.d_k, self.d_v, self.terms).map_err(|e| e.to_string())?;
        match self.scale {
            Some(scale) => config.with_scale(scale).map_err(|e| e.to_string()),
            None => Ok(config),
        }
    }
}
