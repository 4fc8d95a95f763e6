//! `tbq-validate memory`: KV bytes llama.cpp reports beside what the crate's planner predicts.

use std::path::Path;

use crate::llama::KvConfig;

/// The planner's prediction of the KV caches of `model` at `ctx` for configuration `c`, in MiB.
/// None until the crate has a planner.
pub fn planned_kv_mib(_model: &Path, _c: &KvConfig, _ctx: u32) -> Option<f64> {
    None
}
