//! `plan --fit`: the K/V cache pair with the best measured quality that fits a memory budget at
//! the wanted context, and, when the budget is a GPU's memory, the layers llama.cpp's own
//! `--fit` would put on it.
//!
//! Two budgets:
//!
//! - `--budget`: bytes for the KV cache alone (as `plan --budget`). The KV sizes are
//!   `tbq::plan::kv_bytes`, which agree with llama-server's `llama_kv_cache: size` lines.
//! - `--gpu-memory`: a GPU's free memory, for weights + KV cache + compute buffer, less the
//!   margin `--fit-target` (MiB, upstream's default 1024). This mirrors upstream
//!   `common/fit.cpp` (b11312) for a dense model whose context is given (`-c`, which `--fit`
//!   never changes then): it offloads the largest `n_gpu_layers` whose device memory stays within
//!   free − margin. Upstream measures that memory with dry-run allocations and searches by false
//!   position; device memory only grows with `n_gpu_layers`, so the largest count that fits is
//!   the same as this planner's scan. The device memory of `n` layers follows
//!   `llama_model::load_tensors`: layers `n_layer + 1 − n … n_layer − 1` and the output layer
//!   (`output.weight`, or `token_embd.weight` duplicated when the output is tied, and
//!   `output_norm`) go to the GPU once `n ≥ 1`; `token_embd` stays on the CPU; each layer's K/V
//!   lives on its layer's device. Weights are the GGUF's tensor sizes, KV the planner's; the
//!   compute buffer is an estimate ([`compute_estimate`]) — the one figure not read or derived
//!   exactly, and the reason for the margin.
//!
//! Choice: with `--budget` alone, the best score among the pairs that fit (ties: fewer bytes).
//! With `--gpu-memory`, first the pairs that put every layer on the GPU, best score first; if
//! none does, the pair that puts the most layers there (ties: best score), because a layer left
//! on the CPU costs more speed than any measured pair costs quality.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

use tbq::gguf::{Metadata, TensorInfo};
use tbq::plan::{CacheConfig, KvSize, LayerTypes, ModelShape};

/// The weights of a model, grouped as llama.cpp places them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Weights {
    /// Bytes of `blk.N.*` per layer.
    pub per_layer: Vec<u64>,
    /// Bytes of the output layer (`output.weight` or the duplicated `token_embd.weight`, and
    /// `output_norm.weight`): on the GPU once one layer is offloaded.
    pub output: u64,
    /// Bytes that stay on the CPU whatever the offload (`token_embd.weight`, the input layer).
    pub input: u64,
    /// Every tensor's bytes (what the CPU build maps: `CPU_Mapped model buffer size`).
    pub file_total: u64,
    /// Vocabulary size (output rows).
    pub n_vocab: u64,
    /// Hidden size.
    pub n_embd: u64,
    /// Feed-forward size.
    pub n_ff: u64,
    /// Query heads.
    pub n_head: u64,
    /// Experts (0 for a dense model).
    pub n_expert: u64,
}

impl Weights {
    /// Reads the tensor table of the GGUF at `path` (no tensor data).
    pub fn open(path: &Path, shape: &ModelShape) -> Result<Weights> {
        let (meta, tensors) = Metadata::open_with_tensors(path)?;
        Ok(Weights::from_tensors(&meta, &tensors, shape))
    }

    fn from_tensors(meta: &Metadata, tensors: &[TensorInfo], shape: &ModelShape) -> Weights {
        let arch = &shape.arch;
        let get = |k: &str| meta.get_u64(&format!("{arch}.{k}")).unwrap_or(0);
        let mut w = Weights {
            per_layer: vec![0; shape.layers.len()],
            n_embd: get("embedding_length"),
            n_ff: get("feed_forward_length"),
            n_head: get("attention.head_count"),
            n_expert: get("expert_count"),
            ..Weights::default()
        };
        let mut has_output = false;
        let mut embd = 0;
        for t in tensors {
            w.file_total += t.bytes;
            if let Some(il) = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
            {
                if let Some(slot) = w.per_layer.get_mut(il) {
                    *slot += t.bytes;
                }
                continue;
            }
            match t.name.as_str() {
                "token_embd.weight" => {
                    embd = t.bytes;
                    w.input += t.bytes;
                    w.n_vocab = t.dims.get(1).copied().unwrap_or(0);
                }
                "output.weight" => {
                    has_output = true;
                    w.output += t.bytes;
                    w.n_vocab = t.dims.get(1).copied().unwrap_or(w.n_vocab);
                }
                n if n.starts_with("output") => w.output += t.bytes,
                _ => w.input += t.bytes,
            }
        }
        if !has_output {
            // Tied embeddings: llama.cpp loads token_embd a second time as the output
            // (TENSOR_DUPLICATED), on the output layer's device.
            w.output += embd;
        }
        w
    }
}

/// Estimate of the compute buffer llama.cpp reserves on the device that runs the whole graph
/// (`-fa on`), for one ubatch of `n_tok` tokens: the largest of the live f32 tensors at the
/// output (llama-server keeps one row of logits per slot: its `n_outputs_max` is `-np`), in a
/// feed-forward block (gate, up, the activation and the product, with the residual stream) and
/// in attention (Q, K, V, the output and the residual stream). ggml's allocator reuses memory
/// between those, so the peak is about the largest, not their sum. Checked against the CPU
/// build's own compute buffer in `tests/plan.rs` (about 0.8× of it on Gemma 3 270M); the CUDA
/// build adds scratch this does not model (the `--fit-target` margin covers it).
pub fn compute_estimate(w: &Weights, shape: &ModelShape, cfg: &CacheConfig) -> u64 {
    let requested = if cfg.n_ctx == 0 {
        shape.n_ctx_train
    } else {
        cfg.n_ctx
    };
    let n_tok = cfg.n_ubatch.min(cfg.n_batch).min(requested).max(1) as u64;
    let n_out = (cfg.n_seq_max.max(1) as u64).min(n_tok);
    let (head_k, kv_elems) = shape
        .layers
        .first()
        .map_or((0, 0), |l| (l.head_k as u64, l.k_elems() + l.v_elems()));
    let residual = 3 * w.n_embd;
    let out = (n_out * w.n_vocab + n_tok * residual) * 4;
    let ffn = n_tok * (4 * w.n_ff + residual) * 4;
    let attn = n_tok * (2 * w.n_head * head_k + kv_elems + residual) * 4;
    out.max(ffn).max(attn)
}

/// KV bytes of each layer for a cache of size `kv` with the types `types` (per layer).
pub fn kv_per_layer(shape: &ModelShape, types: &LayerTypes, kv: &KvSize) -> Vec<u64> {
    shape
        .layers
        .iter()
        .enumerate()
        .map(|(il, l)| {
            let c = match (&kv.swa, l.swa) {
                (Some(s), true) => s,
                _ => &kv.full,
            };
            let il = il as u32;
            let row = l.k_row_bytes(types.k_at(il)).unwrap_or(0)
                + l.v_row_bytes(types.v_at(il)).unwrap_or(0);
            row * c.cells as u64 * c.streams as u64
        })
        .collect()
}

/// Device memory with `ngl` layers offloaded (llama.cpp's `-ngl`: the last `ngl − 1` repeating
/// layers and the output layer; `n_layer + 1` is everything).
pub fn device_bytes(w: &Weights, kv_layers: &[u64], compute: u64, ngl: u32) -> u64 {
    let n_layer = w.per_layer.len() as u32;
    let ngl = ngl.min(n_layer + 1);
    if ngl == 0 {
        return compute;
    }
    let first = (n_layer + 1 - ngl) as usize;
    let layers: u64 = (first..n_layer as usize)
        .map(|il| w.per_layer[il] + kv_layers[il])
        .sum();
    layers + w.output + compute
}

/// The largest `-ngl` whose device memory is at most `target` bytes (what upstream `--fit`
/// converges to), with its device memory.
pub fn layers_that_fit(w: &Weights, kv_layers: &[u64], compute: u64, target: u64) -> (u32, u64) {
    let n_layer = w.per_layer.len() as u32;
    (0..=n_layer + 1)
        .rev()
        .map(|n| (n, device_bytes(w, kv_layers, compute, n)))
        .find(|&(_, b)| b <= target)
        .unwrap_or((0, compute))
}

/// A GPU budget: free memory and upstream's `--fit-target` margin.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Device {
    /// Free device memory, bytes.
    pub free: u64,
    /// Margin left free, bytes (`--fit-target`).
    pub margin: u64,
}

/// One scored pair, sized.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// K type.
    pub k: String,
    /// V type.
    pub v: String,
    /// Per-layer types over K/V (llama-server's `--cache-type-layers`): a calibrated allocation
    /// measured on this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    /// Mean KLD ÷ q4_0/q4_0's (0 for f16/f16).
    pub score: f64,
    /// KV cache bytes at the wanted context.
    pub kv_bytes: u64,
    /// Bits per element, K/V.
    pub bits: (f64, f64),
    /// Whether the KV cache fits `--budget` (true without one).
    pub kv_fits: bool,
    /// With `--gpu-memory`: layers offloaded (`-ngl`) and the device memory they take.
    pub ngl: Option<u32>,
    /// Device memory at `ngl`.
    pub device_bytes: Option<u64>,
    /// Whether every layer is on the GPU.
    pub full_offload: Option<bool>,
    /// Why it cannot be used (a head size the type cannot hold).
    pub refused: Option<String>,
}

/// The sized candidates, best first by the rule in the module docs, and the index of the
/// choice.
pub fn choose(mut c: Vec<Candidate>, device: bool) -> (Vec<Candidate>, Option<usize>) {
    c.sort_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(a.kv_bytes.cmp(&b.kv_bytes))
    });
    let usable = |x: &Candidate| x.refused.is_none() && x.kv_fits;
    let pick = if device {
        c.iter()
            .position(|x| usable(x) && x.full_offload == Some(true))
            .or_else(|| {
                // No pair offloads everything: the most layers; the best score among equals
                // (the list is sorted by score, max_by_key keeps the last maximum, so reverse).
                c.iter()
                    .enumerate()
                    .rev()
                    // -ngl 0 included: upstream --fit settles there too (all on the CPU).
                    .filter(|(_, x)| usable(x))
                    .max_by_key(|(_, x)| x.ngl)
                    .map(|(i, _)| i)
            })
    } else {
        c.iter().position(usable)
    };
    (c, pick)
}

/// llama-server's arguments for a choice (llama.cpp's short options). `parallel`: the `-np`
/// the user gave (llama-server's cache is unified by default only without one).
pub fn server_args(
    c: &Candidate,
    cfg: &CacheConfig,
    n_ctx: u32,
    parallel: Option<u32>,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["-ctk".into(), c.k.clone(), "-ctv".into(), c.v.clone()];
    if let Some(l) = &c.layers {
        a.extend(["--cache-type-layers".into(), l.clone()]);
    }
    a.extend(["-c".into(), n_ctx.to_string(), "-fa".into(), "on".into()]);
    if let Some(np) = parallel {
        a.extend(["-np".into(), np.to_string()]);
        if cfg.kv_unified {
            a.push("-kvu".into());
        }
    } else if !cfg.kv_unified {
        a.push("-no-kvu".into());
    }
    if cfg.n_batch != CacheConfig::default().n_batch {
        a.extend(["-b".into(), cfg.n_batch.to_string()]);
    }
    if cfg.n_ubatch != CacheConfig::default().n_ubatch {
        a.extend(["-ub".into(), cfg.n_ubatch.to_string()]);
    }
    if cfg.swa_full {
        a.push("--swa-full".into());
    }
    if let Some(n) = c.ngl {
        // Set explicitly, upstream --fit would only print "n_gpu_layers already set by user";
        // turning it off says that the layers were chosen already.
        a.extend(["-ngl".into(), n.to_string(), "--fit".into(), "off".into()]);
    }
    a
}

/// The JSON of a weights summary.
pub fn weights_json(w: &Weights) -> Value {
    json!({ "file_total": w.file_total, "output": w.output, "input": w.input,
            "layers": w.per_layer.iter().sum::<u64>(), "n_vocab": w.n_vocab, "n_expert": w.n_expert })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(per_layer: Vec<u64>, output: u64) -> Weights {
        Weights {
            per_layer,
            output,
            ..Weights::default()
        }
    }

    #[test]
    fn ngl_counts_the_output_layer_first_then_layers_from_the_back() {
        let w = w(vec![10, 20, 30], 5);
        let kv = [1, 2, 3];
        assert_eq!(device_bytes(&w, &kv, 100, 0), 100);
        // -ngl 1: only the output layer.
        assert_eq!(device_bytes(&w, &kv, 100, 1), 105);
        // -ngl 2: the output and the last layer.
        assert_eq!(device_bytes(&w, &kv, 100, 2), 105 + 33);
        assert_eq!(device_bytes(&w, &kv, 100, 4), 105 + 33 + 22 + 11);
        assert_eq!(device_bytes(&w, &kv, 100, 99), 105 + 33 + 22 + 11);
    }

    #[test]
    fn the_layer_choice_is_the_largest_that_fits_like_a_false_position_search() {
        let w = w(vec![7, 9, 11, 13, 15, 17], 19);
        let kv = [2; 6];
        // Upstream's search converges to the largest n with mem(n) <= target; check every target.
        for target in 0..200 {
            let (n, b) = layers_that_fit(&w, &kv, 3, target);
            let brute = (0..=7u32)
                .filter(|&n| device_bytes(&w, &kv, 3, n) <= target)
                .max()
                .unwrap_or(0);
            assert_eq!(n, brute, "target {target}");
            assert!(b <= target || n == 0);
        }
    }

    fn cand(
        k: &str,
        score: f64,
        kv: u64,
        fits: bool,
        ngl: Option<u32>,
        full: Option<bool>,
    ) -> Candidate {
        Candidate {
            k: k.into(),
            v: k.into(),
            layers: None,
            score,
            kv_bytes: kv,
            bits: (0.0, 0.0),
            kv_fits: fits,
            ngl,
            device_bytes: None,
            full_offload: full,
            refused: None,
        }
    }

    #[test]
    fn choice_rules() {
        // KV budget: the best score that fits.
        let (c, i) = choose(
            vec![
                cand("a", 0.0, 100, false, None, None),
                cand("b", 0.4, 50, true, None, None),
                cand("c", 1.0, 40, true, None, None),
            ],
            false,
        );
        assert_eq!(c[i.unwrap()].k, "b");
        // GPU: full offload wins over a better score with fewer layers.
        let (c, i) = choose(
            vec![
                cand("a", 0.0, 100, true, Some(5), Some(false)),
                cand("b", 0.4, 50, true, Some(8), Some(true)),
            ],
            true,
        );
        assert_eq!(c[i.unwrap()].k, "b");
        // GPU, no full offload: the most layers, then the best score.
        let (c, i) = choose(
            vec![
                cand("a", 0.0, 100, true, Some(5), Some(false)),
                cand("b", 0.4, 50, true, Some(6), Some(false)),
                cand("c", 0.9, 40, true, Some(6), Some(false)),
            ],
            true,
        );
        assert_eq!(c[i.unwrap()].k, "b");
        // Nothing fits.
        let (_, i) = choose(vec![cand("a", 0.0, 100, false, None, None)], false);
        assert!(i.is_none());
    }
}
