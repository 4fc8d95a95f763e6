//! Unified memory: CPU and GPU share one physical memory (GB10, GH200, Jetson). There a host
//! tier of the KV pool is the same memory, so offload / onboard is a no-op, never a copy.
//!
//! Detected from the device attributes: `CU_DEVICE_ATTRIBUTE_INTEGRATED` (Jetson, GB10) or
//! `CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES` (GH200/GB200 over
//! NVLink-C2C). Plain `PAGEABLE_MEMORY_ACCESS` is not used: with HMM a discrete card (an H100 on
//! PCIe) reports it too, although its memory is separate. [`force_unified`] (or `TBQ_UNIFIED=0|1`
//! in the environment) overrides the detection.

use std::sync::atomic::{AtomicI32, Ordering};

use cudarc::driver::sys::{self, CUdevice_attribute as A};

use super::{attribute, available, check, CudaError};

/// -1: detect; 0: forced off; 1: forced on. Starts from `TBQ_UNIFIED` when set.
static OVERRIDE: AtomicI32 = AtomicI32::new(i32::MIN);

fn override_mode() -> i32 {
    let v = OVERRIDE.load(Ordering::Relaxed);
    if v != i32::MIN {
        return v;
    }
    let env = match std::env::var("TBQ_UNIFIED").as_deref() {
        Ok("0") => 0,
        Ok("1") => 1,
        _ => -1,
    };
    let _ = OVERRIDE.compare_exchange(i32::MIN, env, Ordering::Relaxed, Ordering::Relaxed);
    OVERRIDE.load(Ordering::Relaxed)
}

/// Forces the answer of [`unified_memory`]: `Some(true)`, `Some(false)`, or `None` to detect.
pub fn force_unified(mode: Option<bool>) {
    OVERRIDE.store(mode.map_or(-1, i32::from), Ordering::Relaxed);
}

/// Whether device `ordinal` shares physical memory with the CPU (see the module docs).
/// A forced mode answers without touching the driver; detection needs a driver and the device.
pub fn unified_memory(ordinal: i32) -> Result<bool, CudaError> {
    match override_mode() {
        0 => return Ok(false),
        1 => return Ok(true),
        _ => {}
    }
    if !available() {
        return Err(CudaError::NoDevice(
            "no CUDA driver or device to ask".into(),
        ));
    }
    let mut dev = 0;
    // SAFETY: the driver is initialised (available()); valid out-pointer.
    check("cuDeviceGet", unsafe {
        sys::cuDeviceGet(&mut dev, ordinal)
    })?;
    let integrated = attribute(dev, A::CU_DEVICE_ATTRIBUTE_INTEGRATED)?;
    let host_tables = attribute(
        dev,
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
    )?;
    Ok(integrated != 0 || host_tables != 0)
}
