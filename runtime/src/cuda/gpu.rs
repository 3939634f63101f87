//! A real NVIDIA GPU through cudarc: the driver and NVRTC are loaded at run time, so this
//! compiles everywhere and fails with one line where there is no GPU.
//!
//! Nothing in this file has run on a GPU yet; it is compiled in every build, and
//! `scripts/gpu-check.sh` runs the same tests through it on a machine that has one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::Ptx;
use sata_codegen::KernelPlan;
use sata_codegen::cuda::{CudaLayout, CudaOptions};

use super::ffi;
use super::launch::{Arguments, LaunchDims};
use super::nvrtc::{compile, cuda_error};
use crate::error::SataError;

/// Summary of the GPU the backend would use, or an error line when there is none.
pub fn gpu_summary() -> Result<String, SataError> {
    let d = device()?;
    Ok(format!("{} (sm_{}, {} SMs)", d.name, d.arch, d.sm_count))
}

/// The process's CUDA device 0.
pub(crate) struct GpuDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub arch: u32,
    pub sm_count: usize,
    modules: Mutex<HashMap<String, Arc<GpuModule>>>,
}

pub(crate) struct GpuModule {
    /// Every kernel of the module, by symbol.
    functions: Vec<(String, CudaFunction)>,
    _module: Arc<CudaModule>,
}

fn driver_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> SataError + '_ {
    move |e| cuda_error(format!("{what}: {e:?}"))
}

/// Opens device 0 once per process, or says in one line why there is none.
pub(crate) fn device() -> Result<Arc<GpuDevice>, SataError> {
    static DEVICE: OnceLock<Result<Arc<GpuDevice>, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            open().map(Arc::new).map_err(|e| match e {
                SataError::Cuda { message } => message,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(|message| SataError::Cuda { message })
}

fn open() -> Result<GpuDevice, SataError> {
    if !ffi::driver_present() {
        return Err(cuda_error(
            "no CUDA driver (libcuda.so) on this machine; the cuda backend needs an NVIDIA GPU \
             and driver",
        ));
    }
    let count = CudaContext::device_count().map_err(driver_error("counting devices"))?;
    if count < 1 {
        return Err(cuda_error("the CUDA driver reports no device"));
    }
    let ctx = CudaContext::new(0).map_err(driver_error("opening device 0"))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(driver_error("compute capability"))?;
    let sm_count = ctx
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .map_err(driver_error("SM count"))?;
    let name = ctx.name().map_err(driver_error("device name"))?;
    Ok(GpuDevice {
        stream: ctx.default_stream(),
        ctx,
        name,
        arch: (major * 10 + minor) as u32,
        sm_count: sm_count.max(1) as usize,
        modules: Mutex::new(HashMap::new()),
    })
}

impl GpuDevice {
    /// The module of `plan`, compiled by NVRTC for this device once per process.
    pub fn module(
        &self,
        plan: &KernelPlan,
        layout: &CudaLayout,
    ) -> Result<Arc<GpuModule>, SataError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(&layout.name) {
            return Ok(m.clone());
        }
        let compiled = compile(
            plan,
            &CudaOptions::compensated(layout.compensated),
            self.arch,
        )?;
        let module = self
            .ctx
            .load_module(Ptx::from_binary(compiled.cubin))
            .map_err(driver_error("loading the CUBIN"))?;
        let functions = layout
            .symbols()
            .map(|symbol| {
                let f = module
                    .load_function(symbol)
                    .map_err(driver_error("finding a kernel"))?;
                Ok((symbol.to_string(), f))
            })
            .collect::<Result<_, SataError>>()?;
        let m = Arc::new(GpuModule {
            functions,
            _module: module,
        });
        modules.insert(layout.name.clone(), m.clone());
        Ok(m)
    }

    pub fn alloc_zeroed(&self, words: usize) -> Result<CudaSlice<f32>, SataError> {
        self.stream
            .alloc_zeros::<f32>(words.max(1))
            .map_err(driver_error("allocating device memory"))
    }

    pub fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>, SataError> {
        if data.is_empty() {
            return self.alloc_zeroed(1);
        }
        self.stream
            .clone_htod(data)
            .map_err(driver_error("copying to the device"))
    }

    /// Overwrites the first `data.len()` words of `dst`.
    pub fn write(&self, dst: &mut CudaSlice<f32>, data: &[f32]) -> Result<(), SataError> {
        if data.len() > dst.len() {
            return Err(cuda_error(format!(
                "writing {} words into {} of device memory",
                data.len(),
                dst.len()
            )));
        }
        self.stream
            .memcpy_htod(data, &mut dst.slice_mut(..data.len()))
            .map_err(driver_error("copying to the device"))
    }

    /// Copies the first `out.len()` words of `src` to the host.
    pub fn read(&self, src: &CudaSlice<f32>, out: &mut [f32]) -> Result<(), SataError> {
        if out.len() > src.len() {
            return Err(cuda_error(format!(
                "reading {} words from {} of device memory",
                out.len(),
                src.len()
            )));
        }
        self.stream
            .memcpy_dtoh(&src.slice(..out.len()), out)
            .map_err(driver_error("copying from the device"))?;
        self.stream
            .synchronize()
            .map_err(driver_error("waiting for the device"))
    }

    pub fn zero(&self, dst: &mut CudaSlice<f32>) -> Result<(), SataError> {
        self.stream
            .memset_zeros(dst)
            .map_err(driver_error("clearing device memory"))
    }

    /// A copy of `src` in device memory.
    pub fn duplicate(&self, src: &CudaSlice<f32>) -> Result<CudaSlice<f32>, SataError> {
        src.try_clone()
            .map_err(driver_error("copying device memory"))
    }

    /// Waits for everything launched on the device's stream.
    pub fn synchronize(&self) -> Result<(), SataError> {
        self.stream
            .synchronize()
            .map_err(driver_error("waiting for the device"))
    }

    pub fn address(&self, slice: &CudaSlice<f32>) -> u64 {
        let (ptr, _sync) = slice.device_ptr(&self.stream);
        ptr
    }

    /// Launches the kernel `symbol` on the device's stream.
    ///
    /// # Safety
    ///
    /// Every address in `args` must be a live allocation of this device large enough for what
    /// the kernel reads and writes at `dims`.
    pub unsafe fn launch(
        &self,
        module: &GpuModule,
        symbol: &str,
        dims: LaunchDims,
        args: &mut Arguments,
    ) -> Result<(), SataError> {
        let function = module
            .functions
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, f)| f.cu_function())
            .ok_or_else(|| cuda_error(format!("no kernel {symbol}")))?;
        // The raw launch uses the calling thread's current context; callers may be on any
        // thread.
        self.ctx
            .bind_to_thread()
            .map_err(driver_error("binding the context"))?;
        let mut params = args.params();
        // SAFETY: the function is this symbol's kernel from this plan's module, whose parameters
        // are `Arguments`' values; buffer sizes are the caller's guarantee.
        unsafe {
            ffi::device_launch(
                function,
                self.stream.cu_stream(),
                dims.grid,
                dims.block,
                &mut params,
            )
        }
        .map_err(cuda_error)
    }
}
