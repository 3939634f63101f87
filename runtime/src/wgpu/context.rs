//! The process-wide wgpu device: adapter selection, error capture and buffer helpers. Opened
//! once, on first use, and shared by every attention and state of the backend.

use std::sync::{Arc, OnceLock};

use wgpu::util::DeviceExt;

use crate::backend::{BackendKind, BackendUnavailable};
use crate::error::SataError;

/// The adapter the backend runs on, as wgpu reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`, `Gl` or `BrowserWebGpu`.
    pub api: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (a software rasterizer such as
    /// Mesa's llvmpipe) or `Other`.
    pub device_type: String,
    pub driver: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} {}", self.name, self.api, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        Ok(())
    }
}

pub(crate) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
}

/// Every buffer of the backend can be bound as storage and copied both ways: states are
/// uploaded, backed up and read back, outputs read back.
pub(crate) const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

static CONTEXT: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();

/// The adapter the `wgpu` backend runs on (opening the device on first use); an error line
/// when there is none.
pub fn adapter() -> Result<AdapterSummary, SataError> {
    Ok(context()?.adapter.clone())
}

/// The shared device, opened on first use. A machine with no adapter gets one error line
/// (and the same line on every later call, without probing again).
pub(crate) fn context() -> Result<Arc<GpuContext>, SataError> {
    CONTEXT
        .get_or_init(|| GpuContext::open().map(Arc::new))
        .clone()
        .map_err(|reason| {
            SataError::Backend(BackendUnavailable {
                backend: BackendKind::Wgpu,
                reason,
            })
        })
}

impl GpuContext {
    fn open() -> Result<Self, String> {
        // `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and friends select among several adapters. Without
        // them only the primary APIs (Vulkan, Metal, DX12, WebGPU) are probed: GL adds nothing
        // for compute and its probe prints display-server errors on headless machines.
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        descriptor.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(descriptor);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            format!(
                "no GPU adapter found ({e}); on Linux without a GPU, install Mesa's software \
                 Vulkan driver (Debian: mesa-vulkan-drivers libvulkan1)"
            )
        })?;
        let info = adapter.get_info();
        // The adapter's own limits, not WebGPU's defaults: states of many heads need storage
        // bindings beyond the 128 MiB default wherever the hardware allows.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sata"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| format!("the adapter {} refused a device: {e}", info.name))?;
        // Every operation runs inside an error scope; anything that still escapes is reported
        // here instead of wgpu's default handler, which panics.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("sata: uncaptured wgpu error: {e}")));
        Ok(Self {
            device,
            queue,
            adapter: AdapterSummary {
                name: info.name,
                api: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: [info.driver, info.driver_info]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            limits,
        })
    }

    /// Runs `work` inside validation and out-of-memory error scopes and turns a captured error
    /// into [`SataError::Gpu`].
    pub fn checked<R>(&self, what: &str, work: impl FnOnce() -> R) -> Result<R, SataError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = work();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
        ];
        match errors.into_iter().flatten().next() {
            None => Ok(result),
            Some(e) => Err(self.error(format!("{what}: {e}"))),
        }
    }

    pub fn error(&self, message: String) -> SataError {
        SataError::Gpu {
            adapter: self.adapter.name.clone(),
            message,
        }
    }

    /// Fails unless a binding of `bytes` fits this device.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<(), SataError> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(self.error(format!(
                "{what} needs a {bytes}-byte storage buffer; this device allows at most {limit} \
                 (use fewer heads per state)"
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `data` (at least 4 bytes: WebGPU has no empty bindings).
    pub fn upload<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, SataError> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.check_binding(label, bytes.len() as u64)?;
        let padded;
        let contents = if bytes.is_empty() {
            padded = [0u8; 4];
            &padded[..]
        } else {
            bytes
        };
        self.checked(label, || {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage,
                })
        })
    }

    /// A zeroed buffer of `bytes` (at least 4).
    pub fn zeroed(
        &self,
        label: &str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer, SataError> {
        self.check_binding(label, bytes)?;
        self.checked(label, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(4),
                usage,
                mapped_at_creation: false,
            })
        })
    }

    /// Copies the first `out.len()` f32 of `source` (which needs `COPY_SRC`) to the host,
    /// after everything submitted before.
    pub fn read(&self, source: &wgpu::Buffer, out: &mut [f32]) -> Result<(), SataError> {
        let bytes = (out.len() * 4) as u64;
        if bytes == 0 {
            return Ok(());
        }
        if bytes > source.size() {
            return Err(self.error(format!(
                "reading {bytes} bytes from a buffer of {}",
                source.size()
            )));
        }
        let staging = self.zeroed(
            "read-back",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        self.checked("read-back copy", || {
            let mut encoder = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.copy_buffer_to_buffer(source, 0, &staging, 0, bytes);
            self.queue.submit([encoder.finish()]);
        })?;
        let (sender, receiver) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(sender.send(r)));
        self.wait()?;
        match receiver.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.error(format!("mapping the read-back buffer: {e}"))),
            Err(_) => return Err(self.error("the read-back was never completed".to_string())),
        }
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| self.error(format!("reading the read-back buffer: {e}")))?;
        let bytes = &view[..out.len() * 4];
        match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(words) => out.copy_from_slice(words),
            // A mapping is aligned to wgpu's MAP_ALIGNMENT; should one not be, copy bytewise.
            Err(_) => bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes),
        }
        drop(view);
        staging.unmap();
        Ok(())
    }

    /// Blocks until every submitted command has finished.
    pub fn wait(&self) -> Result<(), SataError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| self.error(format!("waiting for the device: {e}")))
    }
}
