//! One configuration's compiled WGSL kernel: the shader module rendered by the generator, one
//! pipeline per entry point (the forward's, and the backward passes' in a plain module), the
//! plan tables and the feature scratch, and the dispatches of one launch.

use std::sync::Mutex;

use sata_codegen::KernelPlan;
use sata_codegen::contract::Pass;
use sata_codegen::wgsl::{self, BindingKind, WgslOptions};

use super::context::GpuContext;
use crate::device::{BackwardLaunch, Launch};
use crate::error::SataError;

pub struct WgslKernel {
    plan: KernelPlan,
    layout: wgpu::BindGroupLayout,
    /// Pipelines by entry point name: [`wgsl::ENTRIES`], then [`wgsl::BACKWARD`] where the
    /// module has them.
    pipelines: Vec<(&'static str, wgpu::ComputePipeline)>,
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
            let backward = wgsl::BACKWARD.iter().map(|p| p.name());
            let backward = backward.filter(|_| wgsl::has_backward(options));
            let pipelines = wgsl::ENTRIES
                .iter()
                .map(|e| e.name())
                .chain(backward)
                .map(|name| {
                    let pipeline =
                        ctx.device
                            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                                label: Some(name),
                                layout: Some(&pipeline_layout),
                                module: &module,
                                entry_point: Some(name),
                                compilation_options: Default::default(),
                                cache: None,
                            });
                    (name, pipeline)
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
        let served = wgsl::entry_serving(launch.entry);
        let chunk = wgsl::tokens_per_dispatch(&self.plan);
        let chunks: Vec<usize> = (0..launch.tokens).step_by(chunk).collect();
        // The forward entries do not read the cotangents: any buffer binds there.
        let buffers = Buffers {
            q: launch.q,
            k: launch.k,
            v: launch.v,
            state: launch.state.memory(),
            out: &*launch.out,
            dout: launch.q,
            features: None,
        };
        let dispatch = Dispatch {
            name: served.name(),
            lanes: launch.lanes,
            tokens: launch.tokens,
            chunk,
            phase: 0,
        };
        self.submit(ctx, dispatch, &chunks, buffers)
    }

    /// As [`launch`](Self::launch) for one phase of a backward pass; pass B's dispatches run
    /// last tokens first (each dispatch walks its own tokens backwards too).
    pub(crate) fn launch_backward(
        &self,
        ctx: &GpuContext,
        launch: BackwardLaunch<'_, wgpu::Buffer>,
    ) -> Result<(), SataError> {
        let chunk = wgsl::backward_tokens_per_dispatch(&self.plan);
        let mut chunks: Vec<usize> = (0..launch.tokens).step_by(chunk).collect();
        if launch.pass == Pass::Keys {
            chunks.reverse();
        }
        let buffers = Buffers {
            q: launch.q,
            k: launch.k,
            v: launch.v,
            state: &*launch.state,
            out: &*launch.grad,
            dout: launch.dout,
            features: Some(&*launch.scratch),
        };
        let dispatch = Dispatch {
            name: launch.pass.name(),
            lanes: launch.lanes,
            tokens: launch.tokens,
            chunk,
            phase: launch.phase as u32,
        };
        self.submit(ctx, dispatch, &chunks, buffers)
    }

    /// Records the dispatches of entry point `dispatch.name` starting at tokens `chunks` (each
    /// `dispatch.chunk` tokens, the last one fewer) and submits them in one command buffer.
    fn submit(
        &self,
        ctx: &GpuContext,
        dispatch: Dispatch,
        chunks: &[usize],
        buffers: Buffers<'_>,
    ) -> Result<(), SataError> {
        let Dispatch {
            name,
            lanes,
            tokens,
            chunk,
            phase,
        } = dispatch;
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
        let pipeline = self
            .pipelines
            .iter()
            .find(|(e, _)| *e == name)
            .map(|(_, p)| p)
            .ok_or_else(|| ctx.error(format!("no {name} entry point")))?;
        let mut features = self.features.lock().unwrap_or_else(|p| p.into_inner());
        if buffers.features.is_none() && features.as_ref().is_none_or(|(n, _)| *n < lanes) {
            let bytes = 4 * (lanes * wgsl::feature_words_per_lane(&self.plan)) as u64;
            *features = Some((
                lanes,
                ctx.zeroed("feature scratch", bytes, wgpu::BufferUsages::STORAGE)?,
            ));
        }
        let Some(features) = buffers.features.or(features.as_ref().map(|(_, f)| f)) else {
            return Err(ctx.error("no feature scratch".to_string()));
        };
        let mut groups = Vec::new();
        for &first in chunks {
            let params = wgsl::params(
                as_u32(chunk.min(tokens - first), "tokens")?,
                as_u32(lanes, "lanes")?,
                as_u32(per_row, "lanes")?,
                as_u32(first, "tokens")?,
                as_u32(tokens, "tokens")?,
                phase,
            );
            let params = ctx.upload("params", &params, wgpu::BufferUsages::UNIFORM)?;
            // In the order of `wgsl::BINDINGS`: the contract's buffers, then the target's own.
            let bound = [
                buffers.q,
                buffers.k,
                buffers.v,
                buffers.state,
                buffers.out,
                features,
                &self.tables,
                &params,
                buffers.dout,
            ];
            let group = ctx.checked("binding the WGSL kernel's buffers", || {
                let entries: Vec<_> = wgsl::BINDINGS
                    .iter()
                    .zip(bound)
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
                    label: Some(name),
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

/// What [`WgslKernel::submit`] dispatches.
struct Dispatch {
    name: &'static str,
    lanes: usize,
    /// Tokens per lane of the buffers.
    tokens: usize,
    /// Tokens per dispatch.
    chunk: usize,
    phase: u32,
}

/// The buffers of one launch, by the forward's binding they take.
struct Buffers<'a> {
    q: &'a wgpu::Buffer,
    k: &'a wgpu::Buffer,
    v: &'a wgpu::Buffer,
    state: &'a wgpu::Buffer,
    out: &'a wgpu::Buffer,
    dout: &'a wgpu::Buffer,
    /// The feature scratch, where the launch brings its own (the backward's).
    features: Option<&'a wgpu::Buffer>,
}
