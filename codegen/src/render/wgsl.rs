//! The WGSL target: one compute-shader module per kernel with three entry points (`causal`,
//! `absorb`, `answer`), executed by the runtime's `wgpu` backend.
//!
//! Besides the source, a WGSL kernel needs one table the runtime uploads once per pipeline
//! ([`wgsl_tables`]): the query weights, and the run table of the per-order feature program.
//! Weights live there rather than in the shader because WGSL can only index a constant array
//! with a run-time index by copying it to a local first (naga's SPIR-V output does exactly
//! that), which at thousands of features would cost more than the state sweep.

use serde::Serialize;

use super::{RenderError, Target, render_template};
use crate::plan::{FeatureRun, KernelPlan, Unroll};

const KERNEL: &str = include_str!("../../../templates/wgsl/kernel.wgsl.tera");

/// The entry points every WGSL kernel defines.
pub const WGSL_ENTRY_POINTS: [&str; 3] = ["causal", "absorb", "answer"];

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
struct EntryPoint {
    name: &'static str,
    doc: &'static str,
    phi: &'static str,
    update: bool,
    read: bool,
}

fn context(plan: &KernelPlan, compensated: bool) -> tera::Context {
    let full = plan.gpu_unroll == Unroll::Full;
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
    let entry_points = [
        EntryPoint {
            name: WGSL_ENTRY_POINTS[0],
            doc: "Causal attention over `params.tokens` tokens per lane: token t updates the state, then reads it.",
            phi: "kq",
            update: true,
            read: true,
        },
        EntryPoint {
            name: WGSL_ENTRY_POINTS[1],
            doc: "Adds `params.tokens` keys and values per lane to the state.",
            phi: "k",
            update: true,
            read: false,
        },
        EntryPoint {
            name: WGSL_ENTRY_POINTS[2],
            doc: "Answers `params.tokens` queries per lane from the state.",
            phi: "q",
            update: false,
            read: true,
        },
    ];
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    ctx.insert("compensated", &compensated);
    ctx.insert(
        "lane_words",
        &(plan.state_words * if compensated { 2 } else { 1 }),
    );
    ctx.insert("full", &full);
    ctx.insert("orders", &orders);
    ctx.insert("phi_variants", &phi_variants);
    ctx.insert("entry_points", &entry_points);
    ctx.insert(
        "unroll_description",
        match plan.gpu_unroll {
            Unroll::Full => "fully unrolled (one call per run of children, constants inline)",
            Unroll::PerOrder => "one loop per Taylor order over the run table in `tables`",
        },
    );
    ctx
}

/// The WGSL source of one kernel (header comment included).
pub fn render_wgsl(plan: &KernelPlan) -> Result<String, RenderError> {
    render_wgsl_variant(plan, false)
}

/// [`render_wgsl`] for plain or Kahan-compensated states (`Accumulation::Compensated`: per
/// lane the sums, then their compensation).
pub fn render_wgsl_variant(plan: &KernelPlan, compensated: bool) -> Result<String, RenderError> {
    render_template(
        plan,
        Target::Wgsl,
        "wgsl/kernel.wgsl.tera",
        KERNEL,
        &context(plan, compensated),
    )
}

/// The `tables` buffer of a WGSL kernel: `m` query weights as f32 bits, then
/// `(parent, first coordinate, first destination)` of every run of order >= 2, in order.
pub fn wgsl_tables(plan: &KernelPlan) -> Vec<u32> {
    let weights = plan.weights.iter().map(|&w| (w as f32).to_bits());
    let runs = plan.orders.iter().skip(2).flat_map(|o| &o.runs);
    let runs = runs.flat_map(|r| [r.parent, r.first, r.dest].map(|x| x as u32));
    weights.chain(runs).collect()
}
