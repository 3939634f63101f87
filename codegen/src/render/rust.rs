//! The Rust target: a module per kernel implementing the runtime's `SpecializedKernel`.

use serde::Serialize;

use super::{RenderError, Target, render_template};
use crate::plan::{FeatureRun, KernelPlan, OrderPlan, Unroll};

const HEADER: &str = include_str!("../../../templates/rust/header.tera");
const KERNEL: &str = include_str!("../../../templates/rust/kernel.rs.tera");
const REGISTRY: &str = include_str!("../../../templates/rust/registry.rs.tera");

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
}

impl Default for RustOptions {
    fn default() -> Self {
        Self {
            runtime_path: "::sata::kernel".to_string(),
            module_name: None,
            kernel_type: None,
        }
    }
}

#[derive(Serialize)]
struct OrderContext<'a> {
    degree: usize,
    offset: usize,
    len: usize,
    runs: &'a [FeatureRun],
    /// Each run's length rounded up to whole vectors of [`RUST_LANES`] words: the
    /// straight-line runs are written that way, spilling onto the runs after them.
    vector_lens: Vec<usize>,
}

/// Words per vector of the Rust target's feature maps: straight-line runs are emitted rounded
/// up to whole vectors of this many words, and the runtime (`kernel::LANES`, which is this
/// constant) pads coordinates and feature buffers to match.
pub const RUST_LANES: usize = 8;

/// Module name of a plan's kernel, e.g. `sata_d16_v16_p4`.
pub fn module_name(plan: &KernelPlan) -> String {
    format!("sata_{}", plan.name)
}

fn context(plan: &KernelPlan, options: &RustOptions) -> tera::Context {
    let full = plan.unroll == Unroll::Full;
    let orders: Vec<OrderContext> = plan.orders[1..]
        .iter()
        .map(|o: &OrderPlan| OrderContext {
            degree: o.degree,
            offset: o.offset,
            len: o.len,
            runs: &o.runs,
            vector_lens: o
                .runs
                .iter()
                .map(|r| r.len.next_multiple_of(RUST_LANES))
                .collect(),
        })
        .collect();
    let mut ctx = tera::Context::new();
    ctx.insert("plan", plan);
    ctx.insert("orders", &orders);
    ctx.insert("full", &full);
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
    ctx.insert("unroll_description", plan.unroll.describe());
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

/// One kernel's module, formatted, without the file header.
pub fn render_rust_module(plan: &KernelPlan, options: &RustOptions) -> Result<String, RenderError> {
    let code = render_template(
        plan,
        Target::Rust,
        "rust/kernel.rs.tera",
        KERNEL,
        &context(plan, options),
    )?;
    format(plan, "rust/kernel.rs.tera", &code)
}

/// The header comment of one kernel (config, counts, generator version, `@generated`).
pub(crate) fn render_rust_header(
    plan: &KernelPlan,
    options: &RustOptions,
) -> Result<String, RenderError> {
    render_template(
        plan,
        Target::Rust,
        "rust/header.tera",
        HEADER,
        &context(plan, options),
    )
}

/// A complete source file for one kernel: header, then the formatted module.
pub fn render_rust(plan: &KernelPlan, options: &RustOptions) -> Result<String, RenderError> {
    Ok(format!(
        "{}\n{}",
        render_rust_header(plan, options)?,
        render_rust_module(plan, options)?
    ))
}

/// The `KERNELS` table listing every module of a generated file.
pub(crate) fn render_rust_registry(
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
