//! The CUDA target: one module per configuration with four `extern "C"` kernels (decode,
//! prefill, absorb, answer), compiled by NVRTC for real GPUs and, unchanged, by g++ against the
//! runtime's host-execution header. Sizes, tables and launch bounds are constants; the launch
//! geometry is the plan's [`CudaLayout`].

use std::collections::BTreeMap;

use super::{RenderError, Target, render_template};
use crate::cuda_layout::{CudaEntry, CudaLayout};
use crate::plan::{KernelPlan, Unroll};

const KERNEL: &str = include_str!("../../../templates/cuda/kernel.cu.tera");

/// `T_P(x) = sum_{p<P} x^p / p!` in Horner form with `fmaf`, as CUDA C.
fn taylor_horner(terms: usize) -> String {
    let mut factorial = vec![1.0f64; terms.max(1)];
    for p in 1..factorial.len() {
        factorial[p] = factorial[p - 1] * p as f64;
    }
    let coefficient = |p: usize| format!("{:?}f", (1.0 / factorial[p]) as f32);
    let mut expr = coefficient(terms - 1);
    for p in (0..terms - 1).rev() {
        expr = format!("fmaf({expr}, x, {})", coefficient(p));
    }
    expr
}

fn joined(values: impl Iterator<Item = usize>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// The CUDA C source of one kernel module (header comment included), or why the
/// configuration has no CUDA kernels.
pub fn render_cuda(plan: &KernelPlan) -> Result<String, RenderError> {
    render_cuda_variant(plan, false)
}

/// [`render_cuda`] for the plain or the Kahan-compensated state ([`CudaLayout::variant`]).
pub fn render_cuda_variant(plan: &KernelPlan, compensated: bool) -> Result<String, RenderError> {
    let layout = CudaLayout::variant(plan, compensated)
        .map_err(|e| RenderError::new(plan, Target::Cuda, "cuda/kernel.cu.tera", e))?;
    let doc: BTreeMap<&str, &str> = CudaEntry::ALL
        .iter()
        .map(|&e| {
            (
                e.name(),
                match e {
                    CudaEntry::Decode => "One decode step per lane: update the state with k, v, answer q (one pass over the state).",
                    CudaEntry::Prefill => "Causal attention over `tokens` tokens per lane, in chunks: each pass answers the chunk's queries and adds its keys.",
                    CudaEntry::Absorb => "Adds `tokens` keys and values per lane to the state, a chunk per pass (non-causal, first half).",
                    CudaEntry::Answer => "Answers `tokens` queries per lane from the state, a chunk per pass (non-causal, second half).",
                },
            )
        })
        .collect();
    let full = plan.gpu_unroll == Unroll::Full;
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    ctx.insert("layout", &layout);
    ctx.insert("full", &full);
    ctx.insert("doc", &doc);
    ctx.insert("inv_c", &format!("{:?}", (1.0 / plan.scale) as f32));
    ctx.insert("taylor_horner", &taylor_horner(plan.terms));
    ctx.insert("run_parent", &joined(layout.runs.iter().map(|r| r.parent)));
    ctx.insert("run_first", &joined(layout.runs.iter().map(|r| r.first)));
    ctx.insert("run_mult", &joined(layout.runs.iter().map(|r| r.mult)));
    ctx.insert(
        "run_dest",
        &joined(layout.runs[..layout.parent_runs].iter().map(|r| r.dest)),
    );
    ctx.insert(
        "unroll_description",
        match plan.gpu_unroll {
            Unroll::Full => "fully unrolled (one call per run of children, constants inline)",
            Unroll::PerOrder => "one loop over the run table in constant memory",
        },
    );
    render_template(plan, Target::Cuda, "cuda/kernel.cu.tera", KERNEL, &ctx)
}

#[cfg(test)]
mod tests {
    use super::taylor_horner;

    #[test]
    fn horner_form_of_the_truncated_exponential() {
        assert_eq!(taylor_horner(1), "1.0f");
        assert_eq!(taylor_horner(3), "fmaf(fmaf(0.5f, x, 1.0f), x, 1.0f)");
    }
}
