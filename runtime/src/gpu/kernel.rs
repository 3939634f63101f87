//! One configuration's compiled WGSL kernel: the shader module rendered by the generator, its
//! three pipelines, the plan tables, and the dispatch of one call.

use sata_codegen::KernelPlan;
use sata_codegen::render::{WGSL_ENTRY_POINTS, render_wgsl_variant, wgsl_tables};

use super::context::GpuContext;
use crate::error::SataError;

/// Which entry point a dispatch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Update with each key and value, then answer that token's query.
    Causal,
    /// Update only.
    Absorb,
    /// Answer only.
    Answer,
}

pub(crate) struct WgslKernel {
    pub plan: KernelPlan,
    layout: wgpu::BindGroupLayout,
    /// Pipelines in the order of [`WGSL_ENTRY_POINTS`].
    pipelines: [wgpu::ComputePipeline; 3],
    tables: wgpu::Buffer,
}

/// The buffers of one dispatch. `q`, `k`, `v` hold `tokens` rows per lane (unused ones may be
/// 4-byte placeholders), `out` `tokens` rows of `d_v + 1` words per lane.
pub(crate) struct Bindings<'a> {
    pub q: &'a wgpu::Buffer,
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    pub feats: &'a wgpu::Buffer,
}

/// Binding numbers, as in `templates/wgsl/kernel.wgsl.tera`.
const READ_ONLY: [u32; 4] = [0, 1, 2, 6];
const READ_WRITE: [u32; 3] = [3, 4, 5];
const PARAMS: u32 = 7;

impl WgslKernel {
    /// Compiles the plain or the Kahan-compensated (`compensated`) kernels of `plan`.
    pub fn new(ctx: &GpuContext, plan: KernelPlan, compensated: bool) -> Result<Self, SataError> {
        let source =
            render_wgsl_variant(&plan, compensated).map_err(|e| ctx.error(e.to_string()))?;
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries: Vec<_> = READ_ONLY.iter().map(|&b| storage(b, true)).collect();
        entries.extend(READ_WRITE.iter().map(|&b| storage(b, false)));
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: PARAMS,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
        let what = format!("compiling the WGSL kernel {}", plan.name);
        let (layout, pipelines) = ctx.checked(&what, || {
            let module = ctx
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&plan.name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
            let layout = ctx
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("sata"),
                    entries: &entries,
                });
            let pipeline_layout =
                ctx.device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("sata"),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
            let pipelines = WGSL_ENTRY_POINTS.map(|entry| {
                ctx.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            });
            (layout, pipelines)
        })?;
        let tables = ctx.upload(
            "plan tables",
            &wgsl_tables(&plan),
            wgpu::BufferUsages::STORAGE,
        )?;
        Ok(Self {
            plan,
            layout,
            pipelines,
            tables,
        })
    }

    /// Bytes of one lane's feature scratch (`Phi(k)` and `Phi(q)`).
    pub fn feature_bytes_per_lane(&self) -> u64 {
        2 * 4 * self.plan.features as u64
    }

    /// Records and submits one dispatch over `lanes` lanes and `tokens` tokens per lane.
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        entry: Entry,
        bindings: &Bindings<'_>,
        lanes: usize,
        tokens: usize,
    ) -> Result<(), SataError> {
        if tokens == 0 {
            return Ok(());
        }
        let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
        let per_row = lanes.min(max);
        let rows = lanes.div_ceil(per_row);
        let as_u32 = |x: usize, what: &str| {
            u32::try_from(x).map_err(|_| ctx.error(format!("{what} {x} exceeds a 32-bit index")))
        };
        if rows > max {
            return Err(ctx.error(format!("{lanes} lanes exceed this device's dispatch grid")));
        }
        // Long calls run as several dispatches of at most `chunk` tokens, in order, in one
        // submission (wgpu orders them: each reads the state the previous one wrote).
        let chunk = self.plan.gpu_tokens_per_dispatch();
        let mut groups = Vec::new();
        for first in (0..tokens).step_by(chunk) {
            let params = [
                as_u32(chunk.min(tokens - first), "tokens")?,
                as_u32(lanes, "lanes")?,
                as_u32(per_row, "lanes")?,
                // `params.zero`: see `opaque` in the template.
                0,
                as_u32(first, "tokens")?,
                as_u32(tokens, "tokens")?,
                0,
                0,
            ];
            let params = ctx.upload("params", &params, wgpu::BufferUsages::UNIFORM)?;
            let buffers = [
                (0, bindings.q),
                (1, bindings.k),
                (2, bindings.v),
                (3, bindings.state),
                (4, bindings.out),
                (5, bindings.feats),
                (6, &self.tables),
                (PARAMS, &params),
            ];
            let group = ctx.checked("binding the WGSL kernel's buffers", || {
                let entries: Vec<_> = buffers
                    .iter()
                    .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                        binding,
                        resource: buffer.as_entire_binding(),
                    })
                    .collect();
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("sata"),
                    layout: &self.layout,
                    entries: &entries,
                })
            })?;
            groups.push(group);
        }
        let pipeline = &self.pipelines[entry as usize];
        ctx.checked("running the WGSL kernel", || {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for group in &groups {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(WGSL_ENTRY_POINTS[entry as usize]),
                    timestamp_writes: None,
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(per_row as u32, rows as u32, 1);
            }
            ctx.queue.submit([encoder.finish()]);
        })
    }
}
