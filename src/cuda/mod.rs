//! CUDA kernels (feature `cuda`): quantize on write (SET_ROWS / CPY), dequantize (GET_ROWS,
//! whole-tensor conversion) and flash-attention decode on tbq K/V caches.
//!
//! The kernels live in `kernels/` (CUDA C++, ggml-cuda naming); `build.rs` compiles them into
//! fatbins embedded in this library. Everything here launches through the CUDA driver API on a
//! stream the caller gives (ggml hands its own over), in the caller's **current** context:
//! no second context, no host synchronisation, no allocation inside a launch (capture-safe,
//! except where a function says it may grow the [`pool`]). Modules are loaded once per context
//! and cached ([`module`]).
//!
//! Tensors are described like ggml's ([`Tensor`]: device pointer, type, `ne`, byte strides `nb`).
//! Without a driver (CI), [`available`] is false and every launch returns
//! [`CudaError::NoDevice`]; nothing here panics.

pub mod fattn;
pub mod module;
pub mod ops;
pub mod pool;
pub mod trellis;
pub mod unified;

use std::cell::RefCell;
use std::ffi::{c_void, CStr};
use std::fmt;
use std::sync::OnceLock;

use cudarc::driver::sys;

pub use fattn::{
    fattn_scratch_bytes, fattn_supported, flash_attn_ext, flash_attn_ext_with, set_sparse_v,
    FattnArgs, FattnOptions,
};
pub use ops::{get_rows, set_rows};

/// The cudarc version this crate launches through (for tests and benchmarks).
pub use cudarc;
pub use unified::{force_unified, unified_memory};

/// A raw CUDA stream (`CUstream` / `cudaStream_t`); null is the legacy default stream.
pub type Stream = sys::CUstream;

/// Element types beside the tbq types (`tbq_type` 0–6): `tbq_dtype` in `tbq.h`.
pub mod dtype {
    /// IEEE single.
    pub const F32: i32 = 100;
    /// IEEE half.
    pub const F16: i32 = 101;
    /// ggml q8_0 (blocks of 32 int8 and a half scale; keys only).
    pub const Q8_0: i32 = 102;
    /// 32-bit row indices.
    pub const I32: i32 = 103;
    /// 64-bit row indices.
    pub const I64: i32 = 104;
}

/// A device tensor as ggml describes it (`tbq_cuda_tensor` in `tbq.h`; defined in
/// [`crate::ffi`] so the C ABI has it with or without this feature).
pub use crate::ffi::TbqCudaTensor as Tensor;

impl Tensor {
    /// An absent optional tensor (mask, sinks, index).
    pub const NONE: Tensor = Tensor {
        data: std::ptr::null_mut(),
        type_: -1,
        ne: [0; 4],
        nb: [0; 4],
    };

    /// A contiguous tensor of `type_` with shape `ne` at `data`.
    pub fn contiguous(data: u64, type_: i32, ne: [i64; 4]) -> Tensor {
        let (unit, per) = unit_bytes(type_).unwrap_or((0, 1));
        let mut nb = [0usize; 4];
        nb[0] = unit;
        nb[1] = unit * (ne[0] as usize / per);
        nb[2] = nb[1] * ne[1] as usize;
        nb[3] = nb[2] * ne[2] as usize;
        Tensor {
            data: data as *mut c_void,
            type_,
            ne,
            nb,
        }
    }

    /// Whether the tensor is given (non-null data).
    pub fn present(&self) -> bool {
        !self.data.is_null()
    }

    pub(crate) fn ptr(&self) -> u64 {
        self.data as u64
    }
}

/// (bytes of one unit, elements per unit) of a type: a block for block types.
pub fn unit_bytes(t: i32) -> Option<(usize, usize)> {
    Some(match t {
        t if crate::TbqType::from_abi(t).is_some() => {
            let ty = crate::TbqType::from_abi(t)?;
            (ty.block_bytes(), ty.block_elems())
        }
        dtype::F32 | dtype::I32 => (4, 1),
        dtype::F16 => (2, 1),
        dtype::Q8_0 => (34, 32),
        dtype::I64 => (8, 1),
        _ => return None,
    })
}

/// Why a CUDA call was refused or failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CudaError {
    /// No CUDA driver library, no device, or no current context on this thread.
    NoDevice(String),
    /// A driver call failed.
    Driver {
        /// The driver function.
        call: &'static str,
        /// Its CUresult.
        code: i32,
        /// The driver's description.
        message: String,
    },
    /// Types, shapes or strides this library does not handle (the reason says which).
    Unsupported(String),
    /// A required pointer was null.
    Null(&'static str),
    /// The caller's scratch buffer is smaller than needed.
    Scratch {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
}

impl CudaError {
    /// The `tbq_status` value (see `tbq.h`).
    pub fn status(&self) -> i32 {
        match self {
            CudaError::Null(_) => -1,
            CudaError::Scratch { .. } => -3,
            CudaError::Driver { .. } => -6,
            CudaError::Unsupported(_) => -7,
            CudaError::NoDevice(_) => -8,
        }
    }
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDevice(m) => write!(f, "no CUDA device: {m}"),
            CudaError::Driver {
                call,
                code,
                message,
            } => write!(f, "{call} failed: {message} ({code})"),
            CudaError::Unsupported(m) => write!(f, "not supported: {m}"),
            CudaError::Null(what) => write!(f, "{what} is NULL"),
            CudaError::Scratch { need, have } => {
                write!(f, "scratch too small: need {need} bytes, got {have}")
            }
        }
    }
}

impl std::error::Error for CudaError {}

pub(crate) fn unsupported<T>(msg: impl Into<String>) -> Result<T, CudaError> {
    Err(CudaError::Unsupported(msg.into()))
}

thread_local! {
    static LAST_ERROR: RefCell<std::ffi::CString> = RefCell::new(std::ffi::CString::default());
}

/// Records `e` as this thread's last error (read by `tbq_cuda_last_error`) and returns its status.
pub(crate) fn record(e: &CudaError) -> i32 {
    let msg = std::ffi::CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
    e.status()
}

/// This thread's last error message (empty when none); valid until the next failing call.
pub fn last_error() -> *const std::ffi::c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Checks a CUresult.
pub(crate) fn check(call: &'static str, r: sys::CUresult) -> Result<(), CudaError> {
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut p: *const std::ffi::c_char = std::ptr::null();
    // SAFETY: the driver library is loaded (we got a CUresult from it); p is a valid out-pointer.
    let message = unsafe {
        if sys::cuGetErrorString(r, &mut p) == sys::CUresult::CUDA_SUCCESS && !p.is_null() {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        } else {
            "unknown error".into()
        }
    };
    Err(CudaError::Driver {
        call,
        code: r as i32,
        message,
    })
}

/// Whether the CUDA driver library can be loaded (cudarc panics on first use otherwise).
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen libcuda.
    *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() })
}

/// True when the driver loads, initialises and reports at least one device.
pub fn available() -> bool {
    if !driver_present() {
        return false;
    }
    // SAFETY: the driver library is present.
    unsafe {
        if sys::cuInit(0) != sys::CUresult::CUDA_SUCCESS {
            return false;
        }
        let mut n = 0;
        sys::cuDeviceGetCount(&mut n) == sys::CUresult::CUDA_SUCCESS && n > 0
    }
}

/// The calling thread's current context and its device.
pub(crate) fn current() -> Result<(sys::CUcontext, sys::CUdevice), CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDevice(
            "the CUDA driver library (libcuda) was not found".into(),
        ));
    }
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: driver present; valid out-pointers.
    unsafe {
        let r = sys::cuCtxGetCurrent(&mut ctx);
        if r != sys::CUresult::CUDA_SUCCESS || ctx.is_null() {
            return Err(CudaError::NoDevice(
                "no current CUDA context on this thread (make one current, e.g. cudaSetDevice)"
                    .into(),
            ));
        }
        let mut dev: sys::CUdevice = 0;
        check("cuCtxGetDevice", sys::cuCtxGetDevice(&mut dev))?;
        Ok((ctx, dev))
    }
}

/// A device attribute.
pub(crate) fn attribute(dev: sys::CUdevice, a: sys::CUdevice_attribute) -> Result<i32, CudaError> {
    let mut v = 0;
    // SAFETY: driver present (we have a device); valid out-pointer.
    check("cuDeviceGetAttribute", unsafe {
        sys::cuDeviceGetAttribute(&mut v, a, dev)
    })?;
    Ok(v)
}

/// Launches `func` with one by-value parameter struct `params`.
///
/// # Safety
/// `params` must match the kernel's parameter struct; every pointer in it must be valid device
/// memory for the launch's reads and writes.
pub(crate) unsafe fn launch<P>(
    func: sys::CUfunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    stream: Stream,
    params: &P,
) -> Result<(), CudaError> {
    let mut args = [params as *const P as *mut c_void];
    check(
        "cuLaunchKernel",
        sys::cuLaunchKernel(
            func,
            grid.0,
            grid.1,
            grid.2,
            block,
            1,
            1,
            smem,
            stream,
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        ),
    )
}
