//! `sata info`: what a configuration costs.

use crate::codegen::gpu::{GPU_FULL_UNROLL_MAX_RUNS, GpuGeometry, gpu_unroll};
use crate::codegen::rust::{FULL_UNROLL_MAX_STATEMENTS, RUST_LANES, describe_unroll, rust_unroll};
use crate::codegen::{CostModel, KernelPlan, TaylorBound, Unroll, wgsl};
use crate::{Attention, KernelConfig};

use super::args::{InfoArgs, InfoTarget};

pub fn run(args: &InfoArgs) -> Result<(), String> {
    let config = args.config.config()?;
    print!("{}", report(&config));
    if let Some(qk) = args.qk_bound {
        print!("{}", error_report(&config, qk, args.tolerance)?);
    }
    if let Some(InfoTarget::Cuda) = args.target {
        let plan = KernelPlan::new(&config);
        match super::cuda_report::model(&plan) {
            Ok(model) => {
                print!("{model}");
                match super::cuda_report::resources(&plan, false) {
                    Ok(table) => print!("{table}"),
                    Err(e) => println!("ptxas report unavailable: {e}"),
                }
            }
            Err(e) => println!("CUDA kernels: none for this configuration ({e})"),
        }
    }
    Ok(())
}

/// The truncation error bound for `|q|·|k| <= qk` (see `crate::codegen::TaylorBound`).
fn error_report(config: &KernelConfig, qk: f64, tolerance: Option<f64>) -> Result<String, String> {
    use std::fmt::Write;
    let logit = qk / config.scale();
    let bound = TaylorBound::new(config.terms(), logit).map_err(|e| format!("--qk-bound: {e}"))?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "error bound for |q|·|k| <= {qk} (|q·k|/c <= {logit:.4}): every weight within a relative \
         {:.3e} of exp(q·k/c)",
        bound.weight_relative
    );
    match bound.output_factor {
        Some(f) => {
            let _ = writeln!(
                s,
                "  outputs within {f:.3e} x max_s |v_s - y| of softmax attention (per coordinate)"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "  no output bound: the weight error can reach 100% (use more terms or smaller norms)"
            );
        }
    }
    if bound.may_be_negative {
        let _ = writeln!(
            s,
            "  warning: top degree {} is odd and q·k/c can reach the polynomial's negative root; \
             weights can be negative and denominators non-positive",
            config.terms() - 1
        );
    }
    if let Some(tolerance) = tolerance {
        match TaylorBound::smallest_terms(logit, tolerance)
            .map_err(|e| format!("--tolerance: {e}"))?
        {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "  smallest P meeting tolerance {tolerance:e}: {} (output factor {:.3e}{})",
                    b.terms,
                    b.output_factor.unwrap_or(f64::NAN),
                    if b.may_be_negative {
                        ", odd top degree: may go negative"
                    } else {
                        ""
                    }
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  no P up to {} meets tolerance {tolerance:e} at this bound",
                    crate::codegen::MAX_TERMS
                );
            }
        }
    }
    Ok(s)
}

fn report(config: &KernelConfig) -> String {
    use std::fmt::Write;
    let cost = CostModel::new(config);
    let mut s = String::new();
    let scale_note = if config.has_default_scale() {
        " (sqrt(d_k))"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "config: {config}, scale c = {}{scale_note}",
        config.scale()
    );
    let _ = writeln!(
        s,
        "\nfeatures per Taylor order (distinct monomials, C(d_k+p-1, p)):"
    );
    let _ = writeln!(s, "  order p   features m_p");
    for (p, m) in cost.features_per_order.iter().enumerate() {
        let _ = writeln!(s, "  {p:>7}   {m:>12}");
    }
    let _ = writeln!(s, "  total m   {:>12}", cost.features);
    let _ = writeln!(
        s,
        "\nstate per (batch, head): m x (d_v + 1) = {} words",
        cost.state_words
    );
    let _ = writeln!(
        s,
        "  {} bytes in f32, {} bytes in f64",
        cost.state_bytes(4),
        cost.state_bytes(8)
    );
    let _ = writeln!(s, "decode cost per token per head:");
    let _ = writeln!(
        s,
        "  {} FLOPs ({} multiply-adds of state update + read, 2 m (d_v + 1))",
        cost.decode_flops, cost.decode_fmas
    );
    let _ = writeln!(
        s,
        "KV cache per token per head: d_k + d_v = {} words",
        cost.kv_words_per_token
    );
    let _ = writeln!(
        s,
        "state is smaller than a KV cache from a context of {} tokens on",
        cost.break_even_tokens
    );
    let plan = KernelPlan::new(config);
    let _ = writeln!(
        s,
        "generated feature program: {} ({} features, {} vector statements as straight-line \
         code; straight-line up to {FULL_UNROLL_MAX_STATEMENTS})",
        describe_unroll(rust_unroll(&plan)),
        plan.features,
        plan.vector_statements(RUST_LANES)
    );
    let gpu = GpuGeometry::of(&plan);
    let _ = writeln!(
        s,
        "GPU kernels (WGSL): one workgroup of {} invocations ({} row groups x {} columns) per \
         (batch, head), up to {} tokens per dispatch; feature program {} ({} runs; \
         straight-line up to {GPU_FULL_UNROLL_MAX_RUNS})",
        gpu.workgroup,
        gpu.rows,
        gpu.cols,
        wgsl::tokens_per_dispatch(&plan),
        match gpu_unroll(&plan) {
            Unroll::Full => "straight-line",
            Unroll::PerOrder | Unroll::Pieces => "looping over a run table per order",
        },
        plan.runs(),
    );
    match Attention::<f32>::new(*config) {
        Ok(a) => {
            let _ = writeln!(s, "f32 CPU path in this build: {}", a.describe_path());
        }
        Err(e) => {
            let _ = writeln!(s, "f32 CPU path in this build: unavailable ({e})");
        }
    }
    match CostModel::negative_below(config) {
        Some(x) => {
            let _ = writeln!(
                s,
                "numerics: top degree {} is odd; a pair's weight is negative when q·k/c < {x:.4}, \
                 so large-norm inputs can give non-positive denominators",
                config.terms() - 1
            );
        }
        None => {
            let _ = writeln!(
                s,
                "numerics: top degree {} is even; every pair's weight is positive",
                config.terms() - 1
            );
        }
    }
    s
}
