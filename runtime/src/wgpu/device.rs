//! The wgpu device: memory and launch of the WGSL kernels on any adapter wgpu reaches (Vulkan,
//! Metal, DX12; Mesa's llvmpipe on machines without a GPU).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sata_codegen::wgsl::WgslOptions;
use sata_codegen::{KernelConfig, KernelPlan};

use super::context::{AdapterSummary, GpuContext, USAGE, context};
use super::kernel::WgslKernel;
use crate::backend::BackendKind;
use crate::device::{BackwardLaunch, Device, DeviceAttention, Launch, Sealed};
use crate::error::SataError;
use crate::state::Accumulation;

/// The process's wgpu device.
#[derive(Clone)]
pub struct Wgpu {
    ctx: Arc<GpuContext>,
}

impl Wgpu {
    /// Opens the device (once per process).
    pub fn open() -> Result<Self, SataError> {
        Ok(Self { ctx: context()? })
    }

    /// The adapter the device runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }
}

impl Sealed for Wgpu {}

/// Compiled kernels by module name (which encodes d_k, d_v, P, a non-default scale and the
/// compensated variant): a shader is compiled once per process.
fn compiled() -> &'static Mutex<HashMap<String, Arc<WgslKernel>>> {
    static KERNELS: OnceLock<Mutex<HashMap<String, Arc<WgslKernel>>>> = OnceLock::new();
    KERNELS.get_or_init(Default::default)
}

impl Device for Wgpu {
    type Memory = wgpu::Buffer;
    type Kernels = WgslKernel;
    const NAME: &'static str = "wgpu";

    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn describe(&self) -> String {
        let a = &self.ctx.adapter;
        format!("{} {} {}", a.name, a.api, a.device_type)
    }

    fn compile(
        &self,
        plan: &KernelPlan,
        accumulation: Accumulation,
    ) -> Result<Arc<WgslKernel>, SataError> {
        let compensated = accumulation == Accumulation::Compensated;
        let name = plan.variant_name(compensated);
        let mut kernels = compiled().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kernels.get(&name) {
            return Ok(k.clone());
        }
        let options = WgslOptions::compensated(compensated);
        let kernel = Arc::new(WgslKernel::new(&self.ctx, plan.clone(), &options)?);
        kernels.insert(name, kernel.clone());
        Ok(kernel)
    }

    fn alloc(&self, words: usize) -> Result<wgpu::Buffer, SataError> {
        self.ctx.zeroed("sata words", 4 * words as u64, USAGE)
    }

    fn upload(&self, data: &[f32]) -> Result<wgpu::Buffer, SataError> {
        self.ctx.upload("sata words", data, USAGE)
    }

    fn write(&self, memory: &mut wgpu::Buffer, data: &[f32]) -> Result<(), SataError> {
        let bytes = 4 * data.len() as u64;
        if bytes > memory.size() {
            return Err(self.ctx.error(format!(
                "writing {bytes} bytes into a buffer of {}",
                memory.size()
            )));
        }
        self.ctx.checked("writing to the device", || {
            self.ctx
                .queue
                .write_buffer(memory, 0, bytemuck::cast_slice(data))
        })
    }

    fn read(&self, memory: &wgpu::Buffer, out: &mut [f32]) -> Result<(), SataError> {
        self.ctx.read(memory, out)
    }

    fn duplicate(&self, memory: &wgpu::Buffer) -> Result<wgpu::Buffer, SataError> {
        let copy = self.ctx.zeroed("state backup", memory.size(), USAGE)?;
        self.ctx.checked("copying a device state", || {
            let mut encoder = self
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.copy_buffer_to_buffer(memory, 0, &copy, 0, memory.size());
            self.ctx.queue.submit([encoder.finish()]);
        })?;
        Ok(copy)
    }

    fn zero(&self, memory: &mut wgpu::Buffer) -> Result<(), SataError> {
        self.ctx.checked("clearing a device state", || {
            let mut encoder = self
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.clear_buffer(memory, 0, None);
            self.ctx.queue.submit([encoder.finish()]);
        })
    }

    fn launch(
        &self,
        kernels: &WgslKernel,
        launch: Launch<'_, wgpu::Buffer>,
    ) -> Result<(), SataError> {
        kernels.launch(&self.ctx, launch)
    }

    fn launch_backward(
        &self,
        kernels: &WgslKernel,
        launch: BackwardLaunch<'_, wgpu::Buffer>,
    ) -> Result<(), SataError> {
        kernels.launch_backward(&self.ctx, launch)
    }

    fn synchronize(&self) -> Result<(), SataError> {
        self.ctx.wait()
    }
}

impl DeviceAttention<Wgpu> {
    /// Opens the device (once per process) and compiles the kernels for `config` (once per
    /// configuration per process).
    pub fn new(config: KernelConfig) -> Result<Self, SataError> {
        DeviceAttention::open(Wgpu::open()?, config)
    }

    /// The adapter the kernels run on.
    pub fn adapter(&self) -> &AdapterSummary {
        self.kernels.device.adapter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_is_compiled_once_per_process() {
        let Ok(device) = Wgpu::open() else {
            eprintln!("skipped: no wgpu adapter (the workspace tests cover this case)");
            return;
        };
        let config = KernelConfig::new(3, 2, 3).unwrap();
        let plan = KernelPlan::new(&config);
        let a = device.compile(&plan, Accumulation::Plain).unwrap();
        let b = device.compile(&plan, Accumulation::Plain).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let kahan = device.compile(&plan, Accumulation::Compensated).unwrap();
        assert!(!Arc::ptr_eq(&a, &kahan));
        let other = KernelPlan::new(&config.with_scale(1.0).unwrap());
        let c = device.compile(&other, Accumulation::Plain).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
