//! `sata emit`: the generated source of a kernel, through the same renderer as `build.rs` and
//! `#[sata::kernel]`.

use sata::codegen::render::{RustOptions, render_cuda_variant, render_rust, render_wgsl};
use sata::codegen::{KernelPlan, Unroll};

use crate::{EmitArgs, EmitTarget, UnrollArg};

pub fn run(args: &EmitArgs) -> Result<(), String> {
    let mut plan = KernelPlan::new(&args.config.config()?);
    match args.unroll {
        Some(UnrollArg::Full) => plan = plan.with_unroll(Unroll::Full),
        Some(UnrollArg::PerOrder) => plan = plan.with_unroll(Unroll::PerOrder),
        None => {}
    }
    let source = match args.target {
        EmitTarget::Rust => {
            render_rust(&plan, &RustOptions::default()).map_err(|e| e.to_string())?
        }
        EmitTarget::Wgsl => render_wgsl(&plan).map_err(|e| e.to_string())?,
        EmitTarget::Cuda => {
            render_cuda_variant(&plan, args.compensated).map_err(|e| e.to_string())?
        }
    };
    if (args.report || args.compensated) && !matches!(args.target, EmitTarget::Cuda) {
        return Err("--report and --compensated are for --target cuda".to_string());
    }
    if args.report {
        if let Some(path) = &args.output {
            std::fs::write(path, &source)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        print!(
            "{}",
            crate::cuda_report::resources(&plan, args.compensated)?
        );
        return Ok(());
    }
    match &args.output {
        Some(path) => std::fs::write(path, source)
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            print!("{source}");
            Ok(())
        }
    }
}
