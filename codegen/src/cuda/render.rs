//! The CUDA renderer: a plan and its [`CudaLayout`] through `templates/cuda/kernel.cu.tera`.

use std::collections::BTreeMap;

use super::layout::CudaLayout;
use super::options::CudaOptions;
use crate::contract::{BackwardBuffer, Buffer, Entry, backward_scratch_words, lane_stride};
use crate::gpu::{backward_chunk, taylor_horner};
use crate::plan::{KernelPlan, Unroll};
use crate::render::{RenderError, Target, render_template};

const KERNEL: &str = include_str!("../../templates/cuda/kernel.cu.tera");

fn joined(values: impl Iterator<Item = usize>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// The CUDA C source of one kernel module (header comment included), or why the
/// configuration has no CUDA kernels.
pub fn render(plan: &KernelPlan, options: &CudaOptions) -> Result<String, RenderError> {
    crate::gpu::check_form(plan, Target::Cuda, "cuda/kernel.cu.tera", options.unroll)?;
    let layout = CudaLayout::new(plan, options)
        .map_err(|e| RenderError::new(plan, Target::Cuda, "cuda/kernel.cu.tera", e))?;
    let doc: BTreeMap<&str, &str> = Entry::ALL
        .iter()
        .map(|&e| {
            (
                e.name(),
                match e {
                    Entry::Decode => "One decode step per lane: update the state with k, v, answer q (one pass over the state).",
                    Entry::Prefill => "Causal attention over `tokens` tokens per lane, in chunks: each pass answers the chunk's queries and adds its keys.",
                    Entry::Absorb => "Adds `tokens` keys and values per lane to the state, a chunk per pass (non-causal, first half).",
                    Entry::Query => "Answers `tokens` queries per lane from the state, a chunk per pass (non-causal, second half).",
                },
            )
        })
        .collect();
    let full = layout.unroll == Unroll::Full;
    // The contract's buffers in order, then the counts: every kernel's parameter list.
    let buffers: BTreeMap<&str, &str> = Buffer::ALL
        .iter()
        .map(|b| {
            (
                b.name(),
                if b.writable() {
                    "float*"
                } else {
                    "const float*"
                },
            )
        })
        .collect();
    let parameters: Vec<String> = Buffer::ALL
        .iter()
        .map(|b| format!("{} __restrict__ {}", buffers[b.name()], b.name()))
        .chain([
            "unsigned int lanes".to_string(),
            "unsigned int tokens".to_string(),
        ])
        .collect();
    // The backward kernels' parameters: their buffers in order, then the counts.
    let backward_parameters: Vec<String> = BackwardBuffer::ALL
        .iter()
        .map(|b| {
            let ty = if b.writable() {
                "float*"
            } else {
                "const float*"
            };
            format!("{ty} __restrict__ {}", b.name())
        })
        .chain(
            [
                "unsigned int lanes",
                "unsigned int tokens",
                "unsigned int phase",
            ]
            .map(String::from),
        )
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("backward_parameters", &backward_parameters.join(",\n    "));
    ctx.insert("backward_stride", &lane_stride(plan.state_words));
    ctx.insert("backward_scratch", &backward_scratch_words(plan));
    ctx.insert("adjoint_dest", &joined(layout.runs.iter().map(|r| r.dest)));
    ctx.insert("plan", plan);
    ctx.insert("layout", &layout);
    ctx.insert("full", &full);
    ctx.insert("doc", &doc);
    ctx.insert("parameters", &parameters.join(",\n    "));
    ctx.insert("inv_c", &format!("{:?}", (1.0 / plan.scale) as f32));
    ctx.insert("taylor_horner", &taylor_horner(plan.terms, "fmaf", "f"));
    // The backward's pair weights: T_P and its derivative T_{P-1}.
    ctx.insert(
        "dtaylor_horner",
        &taylor_horner(plan.terms - 1, "fmaf", "f"),
    );
    ctx.insert("backward_chunk", &backward_chunk(plan));
    ctx.insert("run_parent", &joined(layout.runs.iter().map(|r| r.parent)));
    ctx.insert("run_first", &joined(layout.runs.iter().map(|r| r.first)));
    ctx.insert("run_mult", &joined(layout.runs.iter().map(|r| r.mult)));
    ctx.insert(
        "run_dest",
        &joined(layout.runs[..layout.parent_runs].iter().map(|r| r.dest)),
    );
    ctx.insert(
        "unroll_description",
        match layout.unroll {
            Unroll::Full => "fully unrolled (one call per run of children, constants inline)",
            Unroll::PerOrder | Unroll::Pieces => "one loop over the run table in constant memory",
        },
    );
    render_template(plan, Target::Cuda, "cuda/kernel.cu.tera", KERNEL, &ctx)
}
