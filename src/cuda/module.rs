//! The embedded fatbins (one per `kernels/*.cu`), loaded once per CUDA context.
//!
//! `cuModuleLoadData` runs in the calling thread's current context the first time a kernel is
//! needed there; the modules and every looked-up `CUfunction` are cached, keyed by context, behind
//! one mutex (thread-safe; a launch holds the lock only for the look-up). Modules are never
//! unloaded: a context that is destroyed and re-created at the same address is not supported.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys;

use super::{check, current, CudaError};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// The compiler's sm_90 resource report (registers, spills, shared memory) of every kernel.
pub const PTXAS_REPORT_SM90: &str = include_str!(env!("TBQ_PTXAS_REPORT"));

/// Names of the embedded modules (the `kernels/*.cu` stems).
pub fn module_names() -> Vec<&'static str> {
    embedded::FATBINS.iter().map(|(n, _)| *n).collect()
}

struct Loaded {
    modules: Vec<sys::CUmodule>,
    funcs: HashMap<&'static str, sys::CUfunction>,
}

// SAFETY: CUmodule / CUfunction are driver handles usable from any thread of the process.
unsafe impl Send for Loaded {}

static CACHE: OnceLock<Mutex<HashMap<usize, Loaded>>> = OnceLock::new();

/// The kernel `name` (an `extern "C"` name from kernels/) in the current context.
pub fn function(name: &'static str) -> Result<sys::CUfunction, CudaError> {
    let (ctx, _) = current()?;
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !cache.contains_key(&(ctx as usize)) {
        let mut modules = Vec::new();
        for (_, image) in embedded::FATBINS {
            // cuModuleLoadData wants an aligned image: copy into u64 words.
            let mut words = vec![0u64; image.len().div_ceil(8) + 1];
            // SAFETY: words holds at least image.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    image.as_ptr(),
                    words.as_mut_ptr().cast::<u8>(),
                    image.len(),
                );
            }
            let mut m: sys::CUmodule = std::ptr::null_mut();
            // SAFETY: a fatbin produced by nvcc; valid out-pointer; a context is current.
            check("cuModuleLoadData", unsafe {
                sys::cuModuleLoadData(&mut m, words.as_ptr().cast())
            })?;
            modules.push(m);
        }
        cache.insert(
            ctx as usize,
            Loaded {
                modules,
                funcs: HashMap::new(),
            },
        );
    }
    let loaded = cache.get_mut(&(ctx as usize)).unwrap();
    if let Some(&f) = loaded.funcs.get(name) {
        return Ok(f);
    }
    let cname = CString::new(name).unwrap();
    for &m in &loaded.modules {
        let mut f: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: m is a loaded module; valid out-pointer.
        if unsafe { sys::cuModuleGetFunction(&mut f, m, cname.as_ptr()) }
            == sys::CUresult::CUDA_SUCCESS
        {
            loaded.funcs.insert(name, f);
            return Ok(f);
        }
    }
    Err(CudaError::Unsupported(format!(
        "kernel {name} is not in the embedded modules"
    )))
}
