//! The WGSL target: one compute-shader module per kernel with the entry points `prefill`,
//! `absorb` and `query` ([`ENTRIES`]) and, in the plain (not compensated) module, the backward
//! passes `backward_queries` and `backward_keys` ([`Pass`]), executed by the runtime's `wgpu`
//! backend.
//!
//! Besides the contract's buffers ([`crate::contract::Buffer`], bindings `0..5`), a WGSL
//! kernel binds a per-lane feature scratch, one table the runtime uploads once per pipeline
//! ([`tables`]: the query weights and the run table of the per-order feature program) and a
//! uniform of launch parameters ([`params`]); [`BINDINGS`] lists them all. Weights live in the
//! table rather than in the shader because WGSL can only index a constant array with a
//! run-time index by copying it to a local first (naga's SPIR-V output does exactly that),
//! which at thousands of features would cost more than the state sweep.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::contract::{BackwardBuffer, Buffer, Entry, Pass, backward_scratch_words, lane_stride};
use crate::gpu::{GpuGeometry, gpu_unroll};
use crate::plan::{FeatureRun, KernelPlan, Unroll};
use crate::render::{RenderError, Target, render_template};

const KERNEL: &str = include_str!("../templates/wgsl/kernel.wgsl.tera");

/// The entry points every WGSL kernel defines, in this order.
pub const ENTRIES: [Entry; 3] = [Entry::Prefill, Entry::Absorb, Entry::Query];

/// The backward entry points of a plain module ([`has_backward`]), after [`ENTRIES`].
pub const BACKWARD: [Pass; 2] = Pass::ALL;

/// The WGSL entry point that runs `entry`: a decode step is a prefill of one token.
pub fn entry_serving(entry: Entry) -> Entry {
    match entry {
        Entry::Decode => Entry::Prefill,
        other => other,
    }
}

pub use crate::gpu::LLVMPIPE_LOOP_LIMIT;

/// How a binding is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindingKind {
    /// `var<storage, read>`.
    ReadOnly,
    /// `var<storage, read_write>`.
    ReadWrite,
    /// `var<uniform>`.
    Uniform,
}

/// One binding of group 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The variable's name in the shader.
    pub name: &'static str,
    pub binding: u32,
    pub kind: BindingKind,
}

const fn contract(buffer: Buffer, name: &'static str) -> Binding {
    Binding {
        name,
        binding: buffer as u32,
        kind: if matches!(buffer, Buffer::State | Buffer::Output) {
            BindingKind::ReadWrite
        } else {
            BindingKind::ReadOnly
        },
    }
}

/// Binding of the per-lane feature scratch: for the forward entries [`feature_words_per_lane`]
/// (`Phi(k)`, then `Phi(q)`), for the backward ones the runtime's [`BackwardBuffer::Scratch`]
/// (the same, then the features' gradients).
pub const FEATURES: Binding = Binding {
    name: "feats",
    binding: 5,
    kind: BindingKind::ReadWrite,
};
/// Binding of [`tables`].
pub const TABLES: Binding = Binding {
    name: "tables",
    binding: 6,
    kind: BindingKind::ReadOnly,
};
/// Binding of the launch parameters ([`params`]).
pub const PARAMS: Binding = Binding {
    name: "params",
    binding: 7,
    kind: BindingKind::Uniform,
};

/// Binding of the backward's cotangents ([`BackwardBuffer::Cotangents`]); the forward entries
/// do not read it.
pub const COTANGENTS: Binding = Binding {
    name: "dout",
    binding: 8,
    kind: BindingKind::ReadOnly,
};

/// Every binding of a WGSL kernel: the contract's buffers in order, then the target's own.
/// Eight storage buffers, WebGPU's default `maxStorageBuffersPerShaderStage`.
pub const BINDINGS: [Binding; 9] = [
    contract(Buffer::Queries, "q_in"),
    contract(Buffer::Keys, "k_in"),
    contract(Buffer::Values, "v_in"),
    contract(Buffer::State, "state"),
    contract(Buffer::Output, "out"),
    FEATURES,
    TABLES,
    PARAMS,
    COTANGENTS,
];

/// Where a backward entry binds each of its buffers: the forward's bindings, with the
/// gradients in the output's and the cotangents in [`COTANGENTS`].
pub fn backward_binding(buffer: BackwardBuffer) -> Binding {
    let forward = |b: Buffer| BINDINGS[b.index()];
    match buffer {
        BackwardBuffer::Queries => forward(Buffer::Queries),
        BackwardBuffer::Keys => forward(Buffer::Keys),
        BackwardBuffer::Values => forward(Buffer::Values),
        BackwardBuffer::State => forward(Buffer::State),
        BackwardBuffer::Gradients => forward(Buffer::Output),
        BackwardBuffer::Cotangents => COTANGENTS,
        BackwardBuffer::Scratch => FEATURES,
    }
}

/// Whether a module of `options` carries the backward entries (plain modules do: the
/// backward's states are plain whatever the forward's accumulation).
pub fn has_backward(options: &WgslOptions) -> bool {
    !options.compensated
}

/// Words of one lane's feature scratch ([`FEATURES`]) for the forward entries.
pub fn feature_words_per_lane(plan: &KernelPlan) -> usize {
    2 * plan.features
}

/// The launch parameters of one dispatch, in the order of the shader's `Params` struct:
/// `tokens` of this dispatch, `lanes`, lanes per row of the dispatch grid, a zero the
/// compensated kernels xor into sums (see `opaque` in the template), the first token of this
/// dispatch, the tokens per lane of the buffers (`stride`), the backward's phase (0 for the
/// forward entries; `crate::contract::Phase as u32`), then padding.
pub fn params(
    tokens: u32,
    lanes: u32,
    lanes_per_row: u32,
    first: u32,
    stride: u32,
    phase: u32,
) -> [u32; 8] {
    [tokens, lanes, lanes_per_row, 0, first, stride, phase, 0]
}

/// Options of the WGSL renderer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WgslOptions {
    /// Kernels for Kahan-compensated states (`Accumulation::Compensated`: per lane the sums,
    /// then their compensation).
    pub compensated: bool,
    /// The feature program's form; `None` picks it by [`gpu_unroll`].
    pub unroll: Option<Unroll>,
}

impl WgslOptions {
    pub fn compensated(compensated: bool) -> Self {
        Self {
            compensated,
            unroll: None,
        }
    }
}

/// An upper bound on the loop iterations one invocation runs per token (every loop of the
/// prefill entry point, the busiest: feature runs, the state sweep, `Z`, the reduction).
pub fn loop_iterations_per_token(plan: &KernelPlan) -> usize {
    let g = GpuGeometry::of(plan);
    let per_run = plan.d_k.div_ceil(g.workgroup);
    let features = 2 * (1 + per_run * (plan.runs() + 1));
    let sweep = plan.features.div_ceil(g.rows) * (1 + g.cols_per_invocation);
    let z = plan.features.div_ceil(g.workgroup);
    let reduce = g.workgroup + g.cols_per_invocation * (g.rows + 1);
    1 + features + g.cols_per_invocation + sweep + z + reduce
}

/// Tokens per dispatch: long calls are split so that no dispatch comes near
/// [`LLVMPIPE_LOOP_LIMIT`] (half of it, for margin); at least 1.
pub fn tokens_per_dispatch(plan: &KernelPlan) -> usize {
    (LLVMPIPE_LOOP_LIMIT / 2 / loop_iterations_per_token(plan)).max(1)
}

/// [`tokens_per_dispatch`] for the backward entries: whole chunks
/// ([`crate::gpu::backward_chunk`]), as many as stay within half of llvmpipe's loop cap, at
/// least one (the largest registry kernels, d16 P6, get one single-token chunk per dispatch
/// at above half the cap, which still holds: `gpu::tests`).
pub fn backward_tokens_per_dispatch(plan: &KernelPlan) -> usize {
    let chunk = crate::gpu::backward_chunk(plan);
    let chunks =
        LLVMPIPE_LOOP_LIMIT / 2 / crate::gpu::backward_loop_iterations_per_chunk(plan, chunk);
    chunk * chunks.max(1)
}

/// The [`TABLES`] buffer of a kernel: `m` query weights as f32 bits, then
/// `(parent, first coordinate, first destination)` of every run of order >= 2, in order.
pub fn tables(plan: &KernelPlan) -> Vec<u32> {
    let weights = plan.weights.iter().map(|&w| (w as f32).to_bits());
    let runs = plan.orders.iter().skip(2).flat_map(|o| &o.runs);
    let runs = runs.flat_map(|r| [r.parent, r.first, r.dest].map(|x| x as u32));
    weights.chain(runs).collect()
}

#[derive(Serialize)]
struct OrderContext<'a> {
    degree: usize,
    offset: usize,
    len: usize,
    /// Straight-line form: one call per run.
    runs: &'a [FeatureRun],
    /// Per-order form: this order's runs in the run table.
    run_begin: usize,
    run_end: usize,
}

#[derive(Serialize)]
struct PhiVariant {
    name: &'static str,
    label: &'static str,
    k: bool,
    q: bool,
}

#[derive(Serialize)]
struct AdjointVariant {
    name: &'static str,
    input: &'static str,
}

#[derive(Serialize)]
struct EntryPoint {
    name: &'static str,
    doc: &'static str,
    phi: &'static str,
    update: bool,
    read: bool,
}

fn entry_point(entry: Entry) -> EntryPoint {
    let (doc, phi) = match entry {
        Entry::Decode | Entry::Prefill => (
            "Causal attention over `params.tokens` tokens per lane: token t updates the state, then reads it.",
            "kq",
        ),
        Entry::Absorb => (
            "Adds `params.tokens` keys and values per lane to the state.",
            "k",
        ),
        Entry::Query => (
            "Answers `params.tokens` queries per lane from the state.",
            "q",
        ),
    };
    EntryPoint {
        name: entry.name(),
        doc,
        phi,
        update: entry.updates(),
        read: entry.answers(),
    }
}

fn context(plan: &KernelPlan, options: &WgslOptions) -> tera::Context {
    let unroll = options.unroll.unwrap_or_else(|| gpu_unroll(plan));
    let full = unroll == Unroll::Full;
    let mut run_begin = 0;
    // Order 1 is the coordinates themselves and is written directly by the template.
    let orders: Vec<OrderContext> = plan
        .orders
        .iter()
        .skip(2)
        .map(|o| {
            let order = OrderContext {
                degree: o.degree,
                offset: o.offset,
                len: o.len,
                runs: if full { &o.runs } else { &[] },
                run_begin,
                run_end: run_begin + o.runs.len(),
            };
            run_begin += o.runs.len();
            order
        })
        .collect();
    let phi_variants = [
        PhiVariant {
            name: "kq",
            label: "k) and Phi(q",
            k: true,
            q: true,
        },
        PhiVariant {
            name: "k",
            label: "k",
            k: true,
            q: false,
        },
        PhiVariant {
            name: "q",
            label: "q",
            k: false,
            q: true,
        },
    ];
    let entry_points = ENTRIES.map(entry_point);
    let adjoint_variants = [
        AdjointVariant {
            name: "q",
            input: "q_in",
        },
        AdjointVariant {
            name: "k",
            input: "k_in",
        },
    ];
    let bindings: BTreeMap<&str, u32> = BINDINGS.iter().map(|b| (b.name, b.binding)).collect();
    let lane_words = plan.state_words * if options.compensated { 2 } else { 1 };
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    ctx.insert("geometry", &GpuGeometry::of(plan));
    ctx.insert("compensated", &options.compensated);
    ctx.insert("lane_words", &lane_words);
    ctx.insert("lane_stride", &lane_stride(lane_words));
    ctx.insert("full", &full);
    ctx.insert("orders", &orders);
    ctx.insert("phi_variants", &phi_variants);
    ctx.insert("entry_points", &entry_points);
    ctx.insert("backward", &has_backward(options));
    ctx.insert("backward_stride", &lane_stride(plan.state_words));
    ctx.insert("adjoint_runs", &run_begin);
    ctx.insert("backward_scratch", &backward_scratch_words(plan));
    ctx.insert("backward_chunk", &crate::gpu::backward_chunk(plan));
    ctx.insert("inv_c", &format!("{:?}", (1.0 / plan.scale) as f32));
    ctx.insert(
        "taylor_horner",
        &crate::gpu::taylor_horner(plan.terms, "fma", ""),
    );
    ctx.insert(
        "dtaylor_horner",
        &crate::gpu::taylor_horner(plan.terms - 1, "fma", ""),
    );
    ctx.insert("adjoint_variants", &adjoint_variants);
    ctx.insert("binding", &bindings);
    ctx.insert(
        "unroll_description",
        match unroll {
            Unroll::Full => "fully unrolled (one call per run of children, constants inline)",
            Unroll::PerOrder | Unroll::Pieces => {
                "one loop per Taylor order over the run table in `tables`"
            }
        },
    );
    ctx
}

/// The WGSL source of one kernel (header comment included).
pub fn render(plan: &KernelPlan, options: &WgslOptions) -> Result<String, RenderError> {
    crate::gpu::check_form(plan, Target::Wgsl, "wgsl/kernel.wgsl.tera", options.unroll)?;
    render_template(
        plan,
        Target::Wgsl,
        "wgsl/kernel.wgsl.tera",
        KERNEL,
        &context(plan, options),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_follow_the_contract_then_the_targets_own() {
        for (i, b) in BINDINGS.iter().enumerate() {
            assert_eq!(b.binding as usize, i);
        }
        for buffer in Buffer::ALL {
            let b = BINDINGS[buffer.index()];
            assert_eq!(b.kind == BindingKind::ReadWrite, buffer.writable());
        }
        assert_eq!(entry_serving(Entry::Decode), Entry::Prefill);
        for buffer in BackwardBuffer::ALL {
            let b = backward_binding(buffer);
            assert_eq!(
                b.kind == BindingKind::ReadWrite,
                buffer.writable(),
                "{buffer:?}"
            );
        }
        let mut bound: Vec<u32> = BackwardBuffer::ALL
            .iter()
            .map(|&b| backward_binding(b).binding)
            .collect();
        bound.sort();
        bound.dedup();
        assert_eq!(bound.len(), BackwardBuffer::ALL.len());
        assert_eq!(Pass::ALL.len(), 2);
        assert!(ENTRIES.iter().all(|&e| entry_serving(e) == e));
    }
}
