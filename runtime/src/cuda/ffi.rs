//! Every `unsafe` call of the CUDA backend, each with its safety argument: the NVRTC calls
//! that produce a CUBIN and its log, the call into a host-execution library, and
//! `cuLaunchKernel`. The rest of the backend is safe code around these functions.

use std::ffi::{CStr, CString, c_char, c_void};

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};

/// Whether libnvrtc can be loaded. cudarc panics on first use of a missing library, so every
/// NVRTC entry point asks this first.
#[cfg(feature = "cuda")]
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library with libloading; no symbol is called.
    unsafe { nvrtc_sys::is_culib_present() }
}

/// Whether libcuda (the driver) can be loaded; see [`nvrtc_present`].
#[cfg(feature = "cuda")]
pub fn driver_present() -> bool {
    // SAFETY: as in `nvrtc_present`.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// With the libraries linked (`cuda-linked`) the process could not have started without them.
#[cfg(not(feature = "cuda"))]
pub fn nvrtc_present() -> bool {
    true
}

/// See the `cuda-linked` [`nvrtc_present`].
#[cfg(not(feature = "cuda"))]
pub fn driver_present() -> bool {
    true
}

/// `(major, minor)` of the loaded NVRTC. Call only after [`nvrtc_present`].
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes of one c_int; the library is present.
    let status = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    status
        .result()
        .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok((major, minor))
}

/// What one NVRTC compilation produced: the CUBIN (when it succeeded) and the program log.
pub struct NvrtcOutput {
    pub cubin: Option<Vec<u8>>,
    pub log: String,
    pub error: Option<String>,
}

/// Compiles `source` with `options` and returns the CUBIN and the log. Call only after
/// [`nvrtc_present`]. `options` must ask for a real architecture (`sm_XX`), or there is no
/// CUBIN.
pub fn nvrtc_compile_cubin(source: &CStr, name: &CStr, options: &[String]) -> NvrtcOutput {
    let program = match nvrtc::create_program(source, Some(name)) {
        Ok(p) => p,
        Err(e) => {
            return NvrtcOutput {
                cubin: None,
                log: String::new(),
                error: Some(format!("nvrtcCreateProgram: {e:?}")),
            };
        }
    };
    // SAFETY: `program` was just created and is destroyed only at the end of this function;
    // `source` and `name`, which it may reference, outlive it.
    let compiled = unsafe { nvrtc::compile_program(program, options) };
    // SAFETY: as above; the log is copied out before the program is destroyed.
    let log = unsafe { nvrtc::get_program_log(program) }
        .map(|chars| {
            let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_string()
        })
        .unwrap_or_default();
    let mut output = NvrtcOutput {
        cubin: None,
        log,
        error: compiled
            .err()
            .map(|e| format!("nvrtcCompileProgram: {e:?}")),
    };
    if output.error.is_none() {
        let mut size = 0usize;
        // SAFETY: `program` compiled successfully; `size` is valid for one write.
        let status = unsafe { nvrtc_sys::nvrtcGetCUBINSize(program, &mut size) };
        match status.result() {
            Ok(()) => {
                let mut cubin = vec![0u8; size];
                // SAFETY: `cubin` has exactly the size NVRTC reported for this program.
                let status =
                    unsafe { nvrtc_sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr() as *mut c_char) };
                match status.result() {
                    Ok(()) => output.cubin = Some(cubin),
                    Err(e) => output.error = Some(format!("nvrtcGetCUBIN: {e:?}")),
                }
            }
            Err(e) => output.error = Some(format!("nvrtcGetCUBINSize: {e:?}")),
        }
    }
    // SAFETY: `program` is valid and not used after this call.
    let _ = unsafe { nvrtc::destroy_program(program) };
    output
}

/// The C signature `SATA_HOST_EXPORT` gives each kernel's launcher (runtime/cuda/host_exec.hpp).
pub type HostLauncher = unsafe extern "C" fn(
    grid: *const u32,
    block: *const u32,
    shared_bytes: u32,
    params: *mut *mut c_void,
    flags: i32,
    error: *mut c_char,
    error_len: std::ffi::c_ulong,
) -> i32;

/// Runs one kernel of a host-execution library.
///
/// # Safety
///
/// `launcher` must be a launcher exported by a library built from the generator's source for
/// the kernel being launched (so its parameter list is the one `params` describes), and every
/// pointer in `params` must point at a live value of the type of that parameter, with every
/// buffer address it carries valid for the accesses the kernel makes at these launch
/// dimensions (the callers derive buffer sizes and dimensions from the same plan).
pub unsafe fn host_launch(
    launcher: HostLauncher,
    grid: [u32; 3],
    block: [u32; 3],
    params: &mut [*mut c_void],
    flags: i32,
) -> Result<(), String> {
    let mut error = vec![0 as c_char; 512];
    // SAFETY: the caller guarantees the launcher and parameters match; `grid`, `block` and
    // `error` are live arrays of the lengths the launcher reads and writes.
    let status = unsafe {
        launcher(
            grid.as_ptr(),
            block.as_ptr(),
            0,
            params.as_mut_ptr(),
            flags,
            error.as_mut_ptr(),
            error.len() as std::ffi::c_ulong,
        )
    };
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the launcher writes a NUL-terminated message (snprintf) within `error`; the last
    // byte was never written by it and is still 0.
    let message = unsafe { CStr::from_ptr(error.as_ptr()) };
    Err(message.to_string_lossy().into_owned())
}

/// `cuLaunchKernel` on `stream`.
///
/// # Safety
///
/// As for [`host_launch`]: `function` is the kernel the parameters describe, and every device
/// address in them is a live allocation of the stream's context large enough for the launch.
pub unsafe fn device_launch(
    function: cudarc::driver::sys::CUfunction,
    stream: cudarc::driver::sys::CUstream,
    grid: [u32; 3],
    block: [u32; 3],
    params: &mut [*mut c_void],
) -> Result<(), String> {
    // SAFETY: forwarded from the caller's guarantees.
    unsafe {
        cudarc::driver::result::launch_kernel(
            function,
            (grid[0], grid[1], grid[2]),
            (block[0], block[1], block[2]),
            0,
            stream,
            params,
        )
    }
    .map_err(|e| format!("cuLaunchKernel: {e:?}"))
}

/// A C string for NVRTC; the generated source never holds NUL bytes.
pub fn c_string(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| "source holds a NUL byte".to_string())
}

/// Opens a host-execution library built by [`super::host`].
pub fn open_library(path: &std::path::Path) -> Result<libloading::Library, String> {
    // SAFETY: the library was built by us from generated kernels and the host-execution
    // header; its initialisers only construct the header's static variables.
    unsafe { libloading::Library::new(path) }.map_err(|e| format!("{}: {e}", path.display()))
}

/// The launcher of `symbol` in `library`.
pub fn host_launcher(library: &libloading::Library, symbol: &str) -> Result<HostLauncher, String> {
    let name = format!("sata_host_launch_{symbol}");
    // SAFETY: `SATA_HOST_EXPORT` defines every `sata_host_launch_*` symbol with exactly the
    // `HostLauncher` signature; the copied function pointer is used only while the library is
    // loaded (the caller keeps the library beside it).
    let launcher = unsafe { library.get::<HostLauncher>(name.as_bytes()) }
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(*launcher)
}
