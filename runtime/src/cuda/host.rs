//! Host execution: the generated CUDA C compiled by g++ against `runtime/cuda/host_exec.hpp`
//! into a shared library, and run on the CPU through the same launch code as a GPU.
//!
//! Libraries are cached on disk by a hash of the source, the header, the compiler and the
//! flags (`$SATA_CUDA_HOST_CACHE`, default `<temp dir>/sata-cuda-host`), so a configuration is
//! compiled once per machine (about a second of g++ at -O1), and in memory once per process.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use sata_codegen::KernelPlan;
use sata_codegen::cuda::{self, CudaLayout, CudaOptions};

use std::ffi::c_void;

use super::ffi::{self, HostLauncher};
use super::launch::{Arguments, LaunchDims};
use super::nvrtc::cuda_error;
use crate::error::SataError;

/// The host-execution header, as shipped in the runtime crate.
pub const HOST_EXEC_HEADER: &str = include_str!("../../cuda/host_exec.hpp");

/// How the threads of a block are visited between barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ThreadOrder {
    /// Thread 0 first.
    #[default]
    Forward,
    /// The last thread first: a read of another thread's write that a missing barrier would
    /// leave unordered shows up in one of the two orders.
    Reverse,
}

/// Flags of the g++ build. `-ffp-contract=off`: g++ does not fuse multiplies and adds that
/// the source does not fuse (NVRTC does), so the two executions differ only within tolerance.
const CXX_FLAGS: &[&str] = &[
    "-std=c++20",
    "-O1",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unknown-pragmas",
];

/// A CUDA source compiled by g++ against the host-execution header and loaded: its kernels
/// can be launched on the CPU with `cuLaunchKernel`'s parameter array.
pub struct HostLibrary {
    name: String,
    launchers: Vec<(String, HostLauncher)>,
    /// Keeps the launchers' code mapped.
    _library: libloading::Library,
}

impl std::fmt::Debug for HostLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLibrary")
            .field("name", &self.name)
            .field(
                "kernels",
                &self.launchers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One launch at a time in the process: the header keeps the running block in static
/// variables, and `__shared__` arrays are static storage of the library.
static LAUNCH_LOCK: Mutex<()> = Mutex::new(());

impl HostLibrary {
    /// Compiles `source` (or finds it in the disk cache) exporting the `extern "C"` kernels
    /// `kernels`, and loads it. g++ warnings are errors.
    pub fn build(name: &str, source: &str, kernels: &[&str]) -> Result<Self, SataError> {
        let exports: String = kernels
            .iter()
            .map(|k| format!("SATA_HOST_EXPORT({k})\n"))
            .collect();
        let path = build_library(name, source, &exports)?;
        let library = ffi::open_library(&path).map_err(cuda_error)?;
        let launchers = kernels
            .iter()
            .map(|k| {
                Ok((
                    k.to_string(),
                    ffi::host_launcher(&library, k).map_err(cuda_error)?,
                ))
            })
            .collect::<Result<_, SataError>>()?;
        Ok(Self {
            name: name.to_string(),
            launchers,
            _library: library,
        })
    }

    /// Runs `kernel` over `dims` with `params`, threads visited in `order`. A deadlock (a
    /// barrier or warp collective not every thread reaches) is an error, not a hang.
    ///
    /// # Safety
    ///
    /// `params` must hold one pointer per parameter of `kernel`, each to a live value of that
    /// parameter's type, and every address among those values must be a live host allocation
    /// large enough for what the kernel reads and writes at `dims`.
    pub unsafe fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        params: &mut [*mut c_void],
        order: ThreadOrder,
    ) -> Result<(), SataError> {
        let launcher = self
            .launchers
            .iter()
            .find(|(k, _)| k == kernel)
            .map(|(_, l)| *l)
            .ok_or_else(|| cuda_error(format!("{}: no kernel {kernel}", self.name)))?;
        let flags = match order {
            ThreadOrder::Forward => 0,
            ThreadOrder::Reverse => 1,
        };
        let _one_at_a_time = LAUNCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the launcher was exported for `kernel` by `SATA_HOST_EXPORT`; parameters and
        // buffers are the caller's guarantee.
        unsafe { ffi::host_launch(launcher, dims.grid, dims.block, params, flags) }
            .map_err(|e| cuda_error(format!("host execution of {kernel}: {e}")))
    }
}

/// The host library of one configuration's kernels.
pub(crate) struct HostModule {
    library: HostLibrary,
}

impl HostModule {
    /// Builds (or finds in the disk cache) and loads the library of `plan`.
    pub fn load(plan: &KernelPlan, layout: &CudaLayout) -> Result<Self, SataError> {
        let options = CudaOptions::compensated(layout.compensated);
        let source = cuda::render(plan, &options).map_err(cuda_error)?;
        let names: Vec<&str> = layout.symbols().collect();
        let library = HostLibrary::build(&layout.name, &source, &names)?;
        Ok(Self { library })
    }

    /// Runs the kernel `symbol` with `args` over `dims`, threads visited in `order`.
    ///
    /// # Safety
    ///
    /// Every address in `args` must be a live host allocation large enough for what the kernel
    /// reads and writes at `dims` (the caller sizes them from the same plan).
    pub unsafe fn launch(
        &self,
        symbol: &str,
        dims: LaunchDims,
        args: &mut Arguments,
        order: ThreadOrder,
    ) -> Result<(), SataError> {
        let mut params = args.params();
        // SAFETY: the kernel is this symbol's, from this plan's source, whose parameters are
        // `Arguments`' values; buffer sizes are the caller's guarantee.
        unsafe { self.library.launch(symbol, dims, &mut params, order) }
    }
}

fn compiler() -> String {
    std::env::var("SATA_CXX").unwrap_or_else(|_| "g++".to_string())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("SATA_CUDA_HOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sata-cuda-host"))
}

/// Builds the library unless the cache has it; returns its path.
fn build_library(name: &str, source: &str, exports: &str) -> Result<PathBuf, SataError> {
    // One build per library per process; different libraries build in parallel (tests ask
    // for many configurations at once from several threads).
    type Cell = Arc<OnceLock<Result<PathBuf, String>>>;
    static BUILDS: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let cxx = compiler();
    let mut hasher = DefaultHasher::new();
    (source, exports, HOST_EXEC_HEADER, &cxx, CXX_FLAGS).hash(&mut hasher);
    let key = format!("{name}-{:016x}", hasher.finish());
    let cell: Cell = BUILDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let dir = cache_dir();
        let library = dir.join(format!("lib{key}.so"));
        if !library.exists() {
            compile(&dir, &key, source, exports, &cxx, &library).map_err(|e| e.to_string())?;
        }
        Ok(library)
    })
    .clone()
    .map_err(|message| match message.strip_prefix("CUDA: ") {
        Some(m) => cuda_error(m),
        None => cuda_error(message),
    })
}

fn compile(
    dir: &Path,
    key: &str,
    source: &str,
    exports: &str,
    cxx: &str,
    library: &Path,
) -> Result<(), SataError> {
    let io =
        |what: &str, e: std::io::Error| cuda_error(format!("{what} in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|e| io("creating the cache", e))?;
    // A private directory per build: concurrent processes never see half-written files, and
    // the library is renamed into place in one step.
    let work = tempfile::Builder::new()
        .prefix(&format!("{key}-"))
        .tempdir_in(dir)
        .map_err(|e| io("making a build directory", e))?;
    let header = work.path().join("host_exec.hpp");
    let kernel = work.path().join("kernel.cu");
    let unit = work.path().join("unit.cpp");
    let output = work.path().join("kernel.so");
    std::fs::write(&header, HOST_EXEC_HEADER).map_err(|e| io("writing the header", e))?;
    std::fs::write(&kernel, source).map_err(|e| io("writing the source", e))?;
    std::fs::write(&unit, format!("#include \"kernel.cu\"\n{exports}"))
        .map_err(|e| io("writing the export unit", e))?;
    let result = Command::new(cxx)
        .args(CXX_FLAGS)
        .arg("-include")
        .arg(&header)
        .arg(&unit)
        .arg("-o")
        .arg(&output)
        .output()
        .map_err(|e| {
            cuda_error(format!(
                "host execution needs a C++20 compiler: cannot run `{cxx}` ({e}); set SATA_CXX"
            ))
        })?;
    if !result.status.success() {
        return Err(cuda_error(format!(
            "{cxx} failed on the generated CUDA source:\n{}",
            String::from_utf8_lossy(&result.stderr)
        )));
    }
    std::fs::rename(&output, library).map_err(|e| io("installing the library", e))?;
    Ok(())
}

/// Libraries loaded in this process, one per configuration.
pub(crate) fn module(plan: &KernelPlan, layout: &CudaLayout) -> Result<Arc<HostModule>, SataError> {
    static LOADED: OnceLock<Mutex<HashMap<String, Arc<HostModule>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = loaded.get(&layout.name) {
        return Ok(m.clone());
    }
    let m = Arc::new(HostModule::load(plan, layout)?);
    loaded.insert(layout.name.clone(), m.clone());
    Ok(m)
}
