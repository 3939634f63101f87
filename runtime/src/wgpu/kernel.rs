//! One configuration's compiled WGSL kernel: the shader module rendered by the generator, one
//! pipeline per entry point, the plan tables and the feature scratch, and the dispatch of one
//! launch.

use std::sync::Mutex;

use sata_codegen::wgsl::{self, BindingKind, WgslOptions};
use sata_codegen::{Entry, KernelPlan};

use super::context::GpuContext;
use crate::device::Launch;
use crate::error::SataError;

pub struct WgslKernel {
    plan: KernelPlan,
    layout: wgpu::BindGroupLayout,
    /// Pipelines in the order of [`wgsl::ENTRIES`].
    pipelines: Vec<(Entry, wgpu::ComputePipeline)>,
    tables: wgpu::Buffer,
    /// The feature scratch ([`wgsl::FEATURES`]) for the largest lane count launched so far.
    /// Launches that share it are recorded and submitted under this lock, and the queue runs
    /// them in order, so one buffer serves every state of this kernel.
    features: Mutex<Option<(usize, wgpu::Buffer)>>,
}

impl WgslKernel {
    /// Compiles the kernels of `plan` as `options` ask (plain or Kahan-compensated).
    pub(crate) fn new(
        ctx: &GpuContext,
        plan: KernelPlan,
        options: &WgslOptions,
    ) -> Result<Self, SataError> {
        let source = wgsl::render(&plan, options).map_err(|e| ctx.error(e.to_string()))?;
        let entries: Vec<_> = wgsl::BINDINGS
            .iter()
            .map(|b| wgpu::BindGroupLayoutEntry {
                binding: b.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b.kind {
                        BindingKind::ReadOnly => {
                            wgpu::BufferBindingType::Storage { read_only: true }
                        }
                        BindingKind::ReadWrite => {
                            wgpu::BufferBindingType::Storage { read_only: false }
                        }
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
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
            let pipelines = wgsl::ENTRIES
                .iter()
                .map(|&entry| {
                    let pipeline =
                        ctx.device
                            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                                label: Some(entry.name()),
                                layout: Some(&pipeline_layout),
                                module: &module,
                                entry_point: Some(entry.name()),
                                compilation_options: Default::default(),
                                cache: None,
                            });
                    (entry, pipeline)
                })
                .collect();
            (layout, pipelines)
        })?;
        let tables = ctx.upload(
            "plan tables",
            &wgsl::tables(&plan),
            wgpu::BufferUsages::STORAGE,
        )?;
        Ok(Self {
            plan,
            layout,
            pipelines,
            tables,
            features: Mutex::new(None),
        })
    }

    /// Records and submits the dispatches of one launch: one workgroup per lane (folded into
    /// rows where the lanes exceed the grid's width), and the tokens split into dispatches short
    /// enough for llvmpipe's loop cap (`wgsl::tokens_per_dispatch`), in order, in one
    /// submission (each reads the state the previous one wrote).
    pub(crate) fn launch(
        &self,
        ctx: &GpuContext,
        launch: Launch<'_, wgpu::Buffer>,
    ) -> Result<(), SataError> {
        let (lanes, tokens) = (launch.lanes, launch.tokens);
        if tokens == 0 {
            return Ok(());
        }
        let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
        let per_row = lanes.min(max).max(1);
        let rows = lanes.div_ceil(per_row);
        let as_u32 = |x: usize, what: &str| {
            u32::try_from(x).map_err(|_| ctx.error(format!("{what} {x} exceeds a 32-bit index")))
        };
        if rows > max {
            return Err(ctx.error(format!("{lanes} lanes exceed this device's dispatch grid")));
        }
        let served = wgsl::entry_serving(launch.entry);
        let pipeline = self
            .pipelines
            .iter()
            .find(|(e, _)| *e == served)
            .map(|(_, p)| p)
            .ok_or_else(|| ctx.error(format!("no {served} entry point")))?;
        let mut features = self.features.lock().unwrap_or_else(|p| p.into_inner());
        if features.as_ref().is_none_or(|(n, _)| *n < lanes) {
            let bytes = 4 * (lanes * wgsl::feature_words_per_lane(&self.plan)) as u64;
            *features = Some((
                lanes,
                ctx.zeroed("feature scratch", bytes, wgpu::BufferUsages::STORAGE)?,
            ));
        }
        let Some((_, features)) = features.as_ref() else {
            return Err(ctx.error("no feature scratch".to_string()));
        };
        let state = launch.state.memory();
        let chunk = wgsl::tokens_per_dispatch(&self.plan);
        let mut groups = Vec::new();
        for first in (0..tokens).step_by(chunk) {
            let params = wgsl::params(
                as_u32(chunk.min(tokens - first), "tokens")?,
                as_u32(lanes, "lanes")?,
                as_u32(per_row, "lanes")?,
                as_u32(first, "tokens")?,
                as_u32(tokens, "tokens")?,
            );
            let params = ctx.upload("params", &params, wgpu::BufferUsages::UNIFORM)?;
            // In the order of `wgsl::BINDINGS`: the contract's buffers, then the target's own.
            let buffers = [
                launch.q,
                launch.k,
                launch.v,
                state,
                &*launch.out,
                features,
                &self.tables,
                &params,
            ];
            let group = ctx.checked("binding the WGSL kernel's buffers", || {
                let entries: Vec<_> = wgsl::BINDINGS
                    .iter()
                    .zip(buffers)
                    .map(|(b, buffer)| wgpu::BindGroupEntry {
                        binding: b.binding,
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
        ctx.checked("running the WGSL kernel", || {
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            for group in &groups {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(served.name()),
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
