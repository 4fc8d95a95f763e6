//! Stream-ordered scratch memory for the kernels (split-K partials).
//!
//! One buffer per (context, stream), reused by every call on that stream: kernels on one stream
//! run in order, so a later call may overwrite what an earlier one left. The buffer only grows:
//! the old one is freed and a larger one allocated with `cuMemFreeAsync` / `cuMemAllocAsync` on
//! the stream (ordered after the work already queued there; synchronous `cuMemAlloc` where the
//! device has no memory pools). Growth is refused while the stream is being captured into a CUDA
//! graph — a capture must never see a fresh allocation: callers that capture (ggml) pass their
//! own scratch memory instead, or warm the pool up before capturing.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys::{self, CUdevice_attribute as A};

use super::{attribute, check, current, CudaError, Stream};

/// Smallest buffer the pool allocates.
pub const MIN_BYTES: usize = 1 << 20;

#[derive(Clone, Copy)]
struct Buf {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    async_alloc: bool,
}

static POOL: OnceLock<Mutex<HashMap<(usize, usize), Buf>>> = OnceLock::new();

fn pool() -> std::sync::MutexGuard<'static, HashMap<(usize, usize), Buf>> {
    POOL.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether `stream` is being captured into a graph.
pub fn capturing(stream: Stream) -> Result<bool, CudaError> {
    let mut st = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // SAFETY: a driver is present (callers got a context); valid out-pointer.
    check("cuStreamIsCapturing", unsafe {
        sys::cuStreamIsCapturing(stream, &mut st)
    })?;
    Ok(st != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE)
}

/// A device buffer of at least `bytes` for work queued on `stream` in the current context.
/// Valid until the next call for the same stream that needs more, or [`release`].
pub fn scratch(stream: Stream, bytes: usize) -> Result<sys::CUdeviceptr, CudaError> {
    let (ctx, dev) = current()?;
    let key = (ctx as usize, stream as usize);
    let mut pool = pool();
    if let Some(b) = pool.get(&key) {
        if b.bytes >= bytes {
            return Ok(b.ptr);
        }
    }
    if capturing(stream)? {
        return Err(CudaError::Unsupported(format!(
            "the scratch pool would have to grow to {bytes} bytes during a graph capture: pass scratch memory, \
             or run once before capturing"
        )));
    }
    let async_alloc = attribute(dev, A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)? != 0;
    if let Some(old) = pool.remove(&key) {
        // SAFETY: old.ptr was allocated by this pool in this context.
        unsafe { free(old, stream)? };
    }
    let size = bytes.max(MIN_BYTES).next_power_of_two();
    let mut ptr: sys::CUdeviceptr = 0;
    // SAFETY: valid out-pointer; a context is current.
    unsafe {
        if async_alloc {
            check(
                "cuMemAllocAsync",
                sys::cuMemAllocAsync(&mut ptr, size, stream),
            )?;
        } else {
            check("cuMemAlloc", sys::cuMemAlloc_v2(&mut ptr, size))?;
        }
    }
    pool.insert(
        key,
        Buf {
            ptr,
            bytes: size,
            async_alloc,
        },
    );
    Ok(ptr)
}

unsafe fn free(b: Buf, stream: Stream) -> Result<(), CudaError> {
    if b.async_alloc {
        check("cuMemFreeAsync", sys::cuMemFreeAsync(b.ptr, stream))
    } else {
        check("cuStreamSynchronize", sys::cuStreamSynchronize(stream))?;
        check("cuMemFree", sys::cuMemFree_v2(b.ptr))
    }
}

/// Bytes the pool holds for `stream` in the current context (0 when none).
pub fn pool_bytes(stream: Stream) -> usize {
    match current() {
        Ok((ctx, _)) => pool()
            .get(&(ctx as usize, stream as usize))
            .map_or(0, |b| b.bytes),
        Err(_) => 0,
    }
}

/// Frees the buffer of `stream` in the current context (stream-ordered). Call before
/// destroying the stream.
pub fn release(stream: Stream) -> Result<(), CudaError> {
    let (ctx, _) = current()?;
    let b = pool().remove(&(ctx as usize, stream as usize));
    match b {
        // SAFETY: allocated by this pool in this context.
        Some(b) => unsafe { free(b, stream) },
        None => Ok(()),
    }
}
