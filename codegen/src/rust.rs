//! The Rust target: a module per kernel implementing the runtime's `SpecializedKernel`, whose
//! generated part is the feature program with its weights folded in; the token loop and the
//! state sweep are the runtime's drivers, monomorphised for the kernel's constants.

use serde::Serialize;

use crate::plan::{FeatureRun, KernelPlan, OrderPlan, Unroll};
use crate::render::{RenderError, Target, render_template};

const HEADER: &str = include_str!("../templates/rust/header.tera");
const KERNEL: &str = include_str!("../templates/rust/kernel.rs.tera");
const REGISTRY: &str = include_str!("../templates/rust/registry.rs.tera");

/// Largest straight-line feature program, in vector statements
/// ([`KernelPlan::vector_statements`] at [`RUST_LANES`]), the Rust target emits; larger ones get
/// the suffix form ([`Unroll::Pieces`]). Straight-line code is fastest while it stays in the
/// instruction caches; past about a thousand statements instruction fetch dominates, and the
/// pieces' loop maps features 2-4x faster (d8 P7, d16 P5, d8 P8; `docs/backends/cpu.md`), and
/// compiles in no time.
pub const FULL_UNROLL_MAX_STATEMENTS: usize = 1024;

/// Words per vector of the Rust target's feature maps: straight-line runs are emitted rounded
/// up to whole vectors of this many words, and the runtime (`kernel::driver::LANES`, which is
/// this constant) pads coordinates and feature buffers to match.
pub const RUST_LANES: usize = 8;

/// The form the Rust target emits the feature program of `plan` in, unless forced.
pub fn rust_unroll(plan: &KernelPlan) -> Unroll {
    if plan.vector_statements(RUST_LANES) <= FULL_UNROLL_MAX_STATEMENTS {
        Unroll::Full
    } else {
        Unroll::Pieces
    }
}

/// What [`rust_unroll`]'s forms are, in words (`sata info`, the generated header).
pub fn describe_unroll(unroll: Unroll) -> &'static str {
    match unroll {
        Unroll::Full => "fully unrolled (one fixed-length statement per run of children)",
        Unroll::PerOrder => "one loop per Taylor order over a constant run table",
        Unroll::Pieces => "one loop over a constant table of suffix pieces (long vector runs)",
    }
}

/// Options of the Rust renderer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustOptions {
    /// Path of the runtime's `kernel` module as the generated code sees it: `::sata::kernel`
    /// from a user crate (the default), `crate::kernel` inside the runtime itself.
    pub runtime_path: String,
    /// Name of the generated module (default `sata_<plan name>`).
    pub module_name: Option<String>,
    /// The type that implements the kernel trait, as seen from inside the module. `None`
    /// defines `pub struct Kernel` in the module (build scripts, registry); the proc-macro
    /// passes `super::UserType`.
    pub kernel_type: Option<String>,
    /// The feature program's form; `None` picks it by [`rust_unroll`].
    pub unroll: Option<Unroll>,
}

impl Default for RustOptions {
    fn default() -> Self {
        Self {
            runtime_path: "::sata::kernel".to_string(),
            module_name: None,
            kernel_type: None,
            unroll: None,
        }
    }
}

#[derive(Serialize)]
struct OrderContext<'a> {
    degree: usize,
    offset: usize,
    len: usize,
    runs: &'a [FeatureRun],
    /// The order's runs in the kernel's table of all runs (`RUNS[run_start..run_end]`).
    run_start: usize,
    run_end: usize,
    /// Each run's length rounded up to whole vectors of [`RUST_LANES`] words: the
    /// straight-line runs are written that way, spilling onto the runs after them.
    vector_lens: Vec<usize>,
}

/// Module name of a plan's kernel, e.g. `sata_d16_v16_p4`.
pub fn module_name(plan: &KernelPlan) -> String {
    format!("sata_{}", plan.name)
}

fn context(plan: &KernelPlan, options: &RustOptions) -> tera::Context {
    let unroll = options.unroll.unwrap_or_else(|| rust_unroll(plan));
    let mut run_end = 0;
    let orders: Vec<OrderContext> = plan.orders[1..]
        .iter()
        .map(|o: &OrderPlan| OrderContext {
            degree: o.degree,
            offset: o.offset,
            len: o.len,
            runs: &o.runs,
            run_start: run_end,
            run_end: {
                run_end += o.runs.len();
                run_end
            },
            vector_lens: o
                .runs
                .iter()
                .map(|r| r.len.next_multiple_of(RUST_LANES))
                .collect(),
        })
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    let runs: Vec<&FeatureRun> = plan.orders.iter().flat_map(|o| &o.runs).collect();
    ctx.insert("runs", &runs);
    ctx.insert("adjoint_runs", &plan.adjoint_runs());
    ctx.insert("orders", &orders);
    ctx.insert("full", &(unroll == Unroll::Full));
    ctx.insert("by_pieces", &(unroll == Unroll::Pieces));
    ctx.insert("pieces", &plan.pieces());
    ctx.insert("unroll", &unroll);
    ctx.insert(
        "module",
        &options
            .module_name
            .clone()
            .unwrap_or_else(|| module_name(plan)),
    );
    ctx.insert("own_type", &options.kernel_type.is_none());
    ctx.insert(
        "kernel_type",
        options.kernel_type.as_deref().unwrap_or("Kernel"),
    );
    ctx.insert("rt", &options.runtime_path);
    ctx.insert("scale_bits", &format!("0x{:016x}", plan.scale.to_bits()));
    ctx.insert("unroll_description", describe_unroll(unroll));
    ctx
}

fn format(plan: &KernelPlan, template: &'static str, code: &str) -> Result<String, RenderError> {
    let file = syn::parse_file(code).map_err(|e| {
        RenderError::new(
            plan,
            Target::Rust,
            template,
            format!("emitted invalid Rust: {e}"),
        )
    })?;
    Ok(prettyplease::unparse(&file))
}

/// One kernel's module, formatted, without the file header (the proc-macro's output, where
/// the header would be a stray comment).
pub fn render_module(plan: &KernelPlan, options: &RustOptions) -> Result<String, RenderError> {
    let code = render_template(
        plan,
        Target::Rust,
        "rust/kernel.rs.tera",
        KERNEL,
        &context(plan, options),
    )?;
    format(plan, "rust/kernel.rs.tera", &code)
}

/// A complete source file for one kernel: the `@generated` header (config, counts, generator
/// version), then the formatted module. The header is prepended after formatting because
/// prettyplease drops `//` comments.
pub fn render(plan: &KernelPlan, options: &RustOptions) -> Result<String, RenderError> {
    let header = render_template(
        plan,
        Target::Rust,
        "rust/header.tera",
        HEADER,
        &context(plan, options),
    )?;
    Ok(format!("{header}\n{}", render_module(plan, options)?))
}

/// The `KERNELS` table listing every module of a generated file.
pub(crate) fn render_registry(
    plans: &[KernelPlan],
    options: &RustOptions,
) -> Result<String, RenderError> {
    let modules: Vec<String> = plans.iter().map(module_name).collect();
    let mut ctx = tera::Context::new();
    ctx.insert("modules", &modules);
    ctx.insert("rt", &options.runtime_path);
    // Errors here are about the table, not one kernel; name the first plan for context.
    let anchor = plans.first().cloned().unwrap_or_else(|| {
        KernelPlan::new(&crate::KernelConfig::new(1, 1, 1).expect("1, 1, 1 is valid"))
    });
    let code = render_template(
        &anchor,
        Target::Rust,
        "rust/registry.rs.tera",
        REGISTRY,
        &ctx,
    )?;
    format(&anchor, "rust/registry.rs.tera", &code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KernelConfig;

    #[test]
    fn large_configs_switch_to_pieces() {
        let plan = |d, p| KernelPlan::new(&KernelConfig::new(d, d, p).unwrap());
        assert_eq!(rust_unroll(&plan(16, 4)), Unroll::Full);
        assert_eq!(rust_unroll(&plan(8, 6)), Unroll::Full); // 495 statements
        assert_eq!(rust_unroll(&plan(8, 7)), Unroll::Pieces); // 1,287
        assert_eq!(rust_unroll(&plan(32, 4)), Unroll::Pieces); // 1,084
        assert_eq!(rust_unroll(&plan(16, 6)), Unroll::Pieces);
    }
}
