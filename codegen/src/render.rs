//! What the renderers of every target share: the target names, the render error, and the
//! tera call. Each target ([`crate::rust`], [`crate::wgsl`], [`crate::cuda`]) owns its
//! options, its lowering and its templates (in this crate's `templates/<target>/`, compiled
//! in, so build scripts and the proc-macro need no files at run time), and renders with the
//! same shape: `render(&plan, &Options) -> Result<String, RenderError>`.

use crate::plan::KernelPlan;

/// A code-generation target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Rust with the runtime's explicit-SIMD sweeps (x86-64 AVX2, portable fallback).
    Rust,
    /// WGSL compute shaders for the runtime's `wgpu` backend.
    Wgsl,
    /// CUDA C for NVRTC (the runtime's `cuda` backend) and for the host-execution header.
    Cuda,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rust => "rust",
            Target::Wgsl => "wgsl",
            Target::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
#[error("rendering {target} kernel {kernel} with template {template}: {message}")]
pub struct RenderError {
    pub kernel: String,
    pub target: Target,
    pub template: &'static str,
    pub message: String,
}

impl RenderError {
    pub(crate) fn new(
        plan: &KernelPlan,
        target: Target,
        template: &'static str,
        message: impl std::fmt::Display,
    ) -> Self {
        Self {
            kernel: plan.name.clone(),
            target,
            template,
            message: message.to_string(),
        }
    }
}

/// Renders one template of `target` with `context`, mapping errors (and their causes, which
/// tera keeps in the source chain) into a [`RenderError`].
pub(crate) fn render_template(
    plan: &KernelPlan,
    target: Target,
    name: &'static str,
    source: &str,
    context: &tera::Context,
) -> Result<String, RenderError> {
    tera::Tera::one_off(source, context, false).map_err(|e| {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        RenderError::new(plan, target, name, message)
    })
}
