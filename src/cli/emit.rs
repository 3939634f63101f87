//! `sata emit`: the generated source of a kernel, through the same renderers as `build.rs`,
//! `#[sata::kernel]` and the device backends.

use crate::codegen::cuda::CudaOptions;
use crate::codegen::rust::RustOptions;
use crate::codegen::wgsl::WgslOptions;
use crate::codegen::{KernelPlan, Unroll, cuda, rust, wgsl};

use super::args::{EmitArgs, EmitTarget, UnrollArg};

pub fn run(args: &EmitArgs) -> Result<(), String> {
    let plan = KernelPlan::new(&args.config.config()?);
    let unroll = args.unroll.map(|u| match u {
        UnrollArg::Full => Unroll::Full,
        UnrollArg::PerOrder => Unroll::PerOrder,
        UnrollArg::Pieces => Unroll::Pieces,
    });
    let compensated = args.compensated;
    if args.report && !matches!(args.target, EmitTarget::Cuda) {
        return Err("--report is for --target cuda".to_string());
    }
    if compensated && matches!(args.target, EmitTarget::Rust) {
        return Err(
            "--compensated is for --target wgsl or cuda (the Rust kernels handle both \
             accumulations)"
                .to_string(),
        );
    }
    let source = match args.target {
        EmitTarget::Rust => rust::render(
            &plan,
            &RustOptions {
                unroll,
                ..RustOptions::default()
            },
        ),
        EmitTarget::Wgsl => wgsl::render(
            &plan,
            &WgslOptions {
                compensated,
                unroll,
            },
        ),
        EmitTarget::Cuda => cuda::render(
            &plan,
            &CudaOptions {
                compensated,
                unroll,
            },
        ),
    }
    .map_err(|e| e.to_string())?;
    if args.report {
        if let Some(path) = &args.output {
            std::fs::write(path, &source)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        print!(
            "{}",
            super::cuda_report::resources(&plan, args.compensated)?
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
