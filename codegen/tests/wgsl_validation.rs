//! Every WGSL kernel the generator emits for the registry configurations (and for small and
//! odd ones, in both feature-program forms) is parsed and validated by naga, the shader
//! compiler wgpu itself uses, so a shader that would fail on a device fails here first, with
//! no device needed.

use sata_codegen::gpu::{self, GpuGeometry};
use sata_codegen::wgsl::{self, BACKWARD, ENTRIES, WgslOptions};
use sata_codegen::{KernelConfig, KernelPlan, Unroll, registry};

fn validate(plan: &KernelPlan) {
    validate_with(plan, &WgslOptions::default());
}

fn validate_with(plan: &KernelPlan, options: &WgslOptions) {
    let source = wgsl::render(plan, options).unwrap();
    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
        panic!(
            "{}: WGSL does not parse:\n{}",
            plan.name,
            e.emit_to_string(&source)
        )
    });
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| {
        panic!(
            "{}: WGSL does not validate:\n{}",
            plan.name,
            e.emit_to_string(&source)
        )
    });
    let entry_points: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let mut names: Vec<&str> = ENTRIES.iter().map(|e| e.name()).collect();
    if wgsl::has_backward(options) {
        names.extend(BACKWARD.iter().map(|p| p.name()));
    }
    assert_eq!(entry_points, names, "{}", plan.name);
    let workgroup = GpuGeometry::of(plan).workgroup as u32;
    for e in &module.entry_points {
        assert_eq!(e.workgroup_size, [workgroup, 1, 1], "{}", plan.name);
    }
    // Every binding the runtime creates is declared at the number the contract gives it.
    for b in wgsl::BINDINGS {
        let declared = module.global_variables.iter().find_map(|(_, g)| {
            (g.name.as_deref() == Some(b.name)).then(|| g.binding.as_ref().map(|r| r.binding))
        });
        assert_eq!(declared, Some(Some(b.binding)), "{}: {}", plan.name, b.name);
    }
}

#[test]
fn every_registry_shader_validates() {
    for config in registry::precompiled_configs() {
        validate(&KernelPlan::new(&config));
    }
}

#[test]
fn small_odd_and_wide_shaders_validate_in_both_forms() {
    // P = 1 (no feature program), d_k = 1, d_v not dividing the workgroup, d_v above the
    // workgroup size (several columns per invocation), non-default scale.
    let configs = [
        KernelConfig::new(1, 1, 1).unwrap(),
        KernelConfig::new(3, 5, 2).unwrap(),
        KernelConfig::new(2, 7, 4).unwrap(),
        KernelConfig::new(4, 300, 3).unwrap(),
        KernelConfig::new(5, 2, 5).unwrap().with_scale(1.5).unwrap(),
    ];
    for config in configs {
        for unroll in [Unroll::Full, Unroll::PerOrder] {
            let options = WgslOptions {
                unroll: Some(unroll),
                ..WgslOptions::default()
            };
            validate_with(&KernelPlan::new(&config), &options);
        }
    }
}

#[test]
fn compensated_shaders_validate() {
    for config in registry::precompiled_configs() {
        validate_with(&KernelPlan::new(&config), &WgslOptions::compensated(true));
    }
    let wide = KernelConfig::new(4, 300, 3).unwrap();
    for unroll in [Unroll::Full, Unroll::PerOrder] {
        let options = WgslOptions {
            compensated: true,
            unroll: Some(unroll),
        };
        validate_with(&KernelPlan::new(&wide), &options);
    }
}

#[test]
fn long_calls_are_split_below_llvmpipes_loop_limit() {
    // Each dispatch stays under half the limit, and the largest registry kernels still get
    // at least one token per dispatch.
    for config in registry::precompiled_configs() {
        let plan = KernelPlan::new(&config);
        let per_token = wgsl::loop_iterations_per_token(&plan);
        let chunk = wgsl::tokens_per_dispatch(&plan);
        assert!(chunk >= 1, "{}", plan.name);
        assert!(
            chunk * per_token <= wgsl::LLVMPIPE_LOOP_LIMIT / 2,
            "{}",
            plan.name
        );
        let chunk = gpu::backward_chunk(&plan);
        let per_chunk = gpu::backward_loop_iterations_per_chunk(&plan, chunk);
        let tokens = wgsl::backward_tokens_per_dispatch(&plan);
        assert!(
            tokens >= chunk && tokens.is_multiple_of(chunk),
            "{}",
            plan.name
        );
        // The largest (d16 P6: 20,349 features) take one single-token chunk per dispatch,
        // still well within the limit by an upper bound.
        assert!(
            tokens / chunk * per_chunk <= wgsl::LLVMPIPE_LOOP_LIMIT / 2
                || (tokens == 1 && per_chunk <= wgsl::LLVMPIPE_LOOP_LIMIT * 3 / 4),
            "{} backward: {per_chunk} iterations per chunk of {chunk}",
            plan.name
        );
    }
    // d16 P4: an absorb of one dispatch stopped at 164 tokens on llvmpipe; the split is far
    // below that.
    let plan = KernelPlan::new(&KernelConfig::new(16, 16, 4).unwrap());
    assert!(wgsl::tokens_per_dispatch(&plan) < 100);
}

#[test]
fn tables_hold_the_weights_then_every_run_of_order_two_and_up() {
    let plan = KernelPlan::new(&KernelConfig::new(3, 2, 4).unwrap());
    let tables = wgsl::tables(&plan);
    let runs: usize = plan.orders[2..].iter().map(|o| o.runs.len()).sum();
    assert_eq!(tables.len(), plan.features + 3 * runs);
    for (j, w) in plan.weights.iter().enumerate() {
        assert_eq!(f32::from_bits(tables[j]), *w as f32);
    }
    // The first run of order 2 has parent x0 (feature 1), starts at coordinate 0 and writes
    // the first order-2 feature.
    let first = &tables[plan.features..plan.features + 3];
    assert_eq!(first, [1, 0, plan.orders[2].offset as u32]);
}
