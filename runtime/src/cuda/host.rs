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

use sata_codegen::render::render_cuda;
use sata_codegen::{CudaEntry, CudaLayout, KernelPlan};

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

/// A compiled host-execution library of one configuration.
pub(crate) struct HostModule {
    launchers: Vec<(CudaEntry, HostLauncher)>,
    /// Keeps the launchers' code mapped.
    _library: libloading::Library,
}

/// One launch at a time in the process: the header keeps the running block in static
/// variables, and `__shared__` arrays are static storage of the library.
static LAUNCH_LOCK: Mutex<()> = Mutex::new(());

impl HostModule {
    /// Builds (or finds in the disk cache) and loads the library of `plan`.
    pub fn load(plan: &KernelPlan, layout: &CudaLayout) -> Result<Self, SataError> {
        let source = render_cuda(plan).map_err(cuda_error)?;
        let exports: String = layout
            .kernels
            .iter()
            .map(|k| format!("SATA_HOST_EXPORT({})\n", k.symbol))
            .collect();
        let path = build_library(&plan.name, &source, &exports)?;
        let library = ffi::open_library(&path).map_err(cuda_error)?;
        let launchers = layout
            .kernels
            .iter()
            .map(|k| {
                Ok((
                    k.entry,
                    ffi::host_launcher(&library, &k.symbol).map_err(cuda_error)?,
                ))
            })
            .collect::<Result<_, SataError>>()?;
        Ok(Self {
            launchers,
            _library: library,
        })
    }

    /// Runs `entry` with `args` over `dims`, threads visited in `order`.
    ///
    /// # Safety
    ///
    /// Every address in `args` must be a live host allocation large enough for what the kernel
    /// reads and writes at `dims` (the caller sizes them from the same plan).
    pub unsafe fn launch(
        &self,
        entry: CudaEntry,
        dims: LaunchDims,
        args: &mut Arguments,
        order: ThreadOrder,
    ) -> Result<(), SataError> {
        let launcher = self
            .launchers
            .iter()
            .find(|(e, _)| *e == entry)
            .map(|(_, l)| *l)
            .ok_or_else(|| cuda_error(format!("no {} kernel", entry.name())))?;
        let flags = match order {
            ThreadOrder::Forward => 0,
            ThreadOrder::Reverse => 1,
        };
        let _one_at_a_time = LAUNCH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut params = args.params();
        // SAFETY: the launcher was exported for this entry's kernel from this plan's source,
        // whose parameters are `Arguments`' seven values; buffer sizes are the caller's
        // guarantee.
        unsafe { ffi::host_launch(launcher, dims.grid, dims.block, &mut params, flags) }
            .map_err(|e| cuda_error(format!("host execution of {}: {e}", entry.name())))
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
    // One build at a time per process (tests share configurations).
    static BUILDS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let cxx = compiler();
    let mut hasher = DefaultHasher::new();
    (source, exports, HOST_EXEC_HEADER, &cxx, CXX_FLAGS).hash(&mut hasher);
    let key = format!("{name}-{:016x}", hasher.finish());
    let mut built = BUILDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(&key) {
        return Ok(path.clone());
    }
    let dir = cache_dir();
    let library = dir.join(format!("lib{key}.so"));
    if !library.exists() {
        compile(&dir, &key, source, exports, &cxx, &library)?;
    }
    built.insert(key, library.clone());
    Ok(library)
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
    if let Some(m) = loaded.get(&plan.name) {
        return Ok(m.clone());
    }
    let m = Arc::new(HostModule::load(plan, layout)?);
    loaded.insert(plan.name.clone(), m.clone());
    Ok(m)
}
