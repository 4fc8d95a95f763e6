//! `plan --device`: a model's layers over this machine and RPC workers (`ggml-rpc-server`, llama.cpp's
//! `--rpc`), and the context each cache pair gets.
//!
//! Devices come as `NAME=SIZE`: `local=SIZE` is this machine's memory for the model (its CPU:
//! the layers llama.cpp does not offload), `rpc:HOST:PORT=SIZE` a worker's (in `--rpc` order). The
//! placement follows `llama_model::load_tensors` (b11312) for a CPU-only client: the input layer
//! (`token_embd`) and layers `0 … n_layer − ngl` stay on the CPU; the others and the output layer
//! are cut by `-ts` over the RPC devices in order; each layer's K/V lives on its layer's device.
//! `-ts` is given as whole layer counts, so llama.cpp's cut (`upper_bound` over the cumulative
//! fractions) lands exactly on them.
//!
//! Each device must hold its layers' weights (the GGUF's tensor sizes), their KV cache
//! (`tbq::plan`) and a compute buffer ([`fit::compute_estimate`], on every device that holds a
//! layer, and on the CPU always). Layers are placed from the back: the last worker takes the output
//! layer and as many layers as fit, then the worker before it, and so on; the CPU keeps what is
//! left. That puts as much as possible on the workers, and a split exists whenever this one does
//! (the order of the layers is fixed, so filling from one end is optimal). The largest context is
//! the largest multiple of 256 for which it exists.

use serde::Serialize;

use crate::fit::{self, Weights};
use tbq::plan::{CacheConfig, KvSize, LayerTypes, ModelShape, PlanError};

/// One `--device NAME=SIZE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// `local` or `rpc:HOST:PORT`.
    pub name: String,
    /// `HOST:PORT` for a worker, `None` for this machine.
    pub endpoint: Option<String>,
    /// Bytes it may use for weights + KV cache + compute.
    pub budget: u64,
}

/// Parses `local=8GiB` / `rpc:10.0.0.2:50052=24GiB`.
pub fn parse_device(
    s: &str,
    parse_size: fn(&str) -> Result<u64, String>,
) -> Result<Device, String> {
    let (name, size) = s.rsplit_once('=').ok_or_else(|| {
        format!("{s:?}: expected NAME=SIZE, e.g. local=8GiB or rpc:10.0.0.2:50052=24GiB")
    })?;
    let budget = parse_size(size)?;
    let endpoint = match name {
        "local" => None,
        n => {
            let ep = n.strip_prefix("rpc:").ok_or_else(|| {
                format!("{name:?}: a device is `local` (this machine) or `rpc:HOST:PORT` (a ggml-rpc-server worker)")
            })?;
            let (host, port) = ep.rsplit_once(':').ok_or_else(|| {
                format!("{name:?}: a worker is rpc:HOST:PORT, e.g. rpc:10.0.0.2:50052")
            })?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{name:?}: a worker is rpc:HOST:PORT with a port number, e.g. rpc:10.0.0.2:50052"));
            }
            Some(ep.to_string())
        }
    };
    Ok(Device {
        name: name.to_string(),
        endpoint,
        budget,
    })
}

/// What one device holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Share {
    /// Repeating layers it holds (a contiguous range starting at `first_layer`).
    pub layers: u32,
    /// Its first layer (meaningless when `layers` is 0).
    pub first_layer: u32,
    /// Whether it holds the output layer.
    pub output: bool,
    /// Weight bytes (its layers, the output layer, and on the CPU the input layer).
    pub weights: u64,
    /// KV cache bytes of its layers.
    pub kv: u64,
    /// Compute buffer estimate (0 on a worker that holds nothing).
    pub compute: u64,
}

impl Share {
    /// Everything it must hold.
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.compute
    }
}

/// A split: one share per device, in the order of `devices` with `local` first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Split {
    /// The local CPU's share, then one per worker in `--rpc` order.
    pub shares: Vec<Share>,
    /// llama.cpp's `-ngl`.
    pub ngl: u32,
    /// llama.cpp's `-ts`: layers per worker (the output layer counts on its worker).
    pub ts: Vec<u32>,
}

/// Places the layers on `budgets` (local first, then the workers) from the back, as the module
/// docs say; `None` if they do not fit.
pub fn place(w: &Weights, kv_layers: &[u64], compute: u64, budgets: &[u64]) -> Option<Split> {
    let n_layer = w.per_layer.len();
    // items from the back: the output layer (index n_layer), then layers n_layer-1 … 0
    let cost = |i: usize| {
        if i == n_layer {
            w.output
        } else {
            w.per_layer[i] + kv_layers[i]
        }
    };
    let mut next = n_layer as i64; // the next item to place, counting down
    let mut shares = vec![Share::default(); budgets.len()];
    for d in (1..budgets.len()).rev() {
        let mut used = compute;
        let top = next;
        while next >= 0 && used + cost(next as usize) <= budgets[d] {
            used += cost(next as usize);
            next -= 1;
        }
        let s = &mut shares[d];
        let items = (top - next) as u32;
        if items > 0 {
            s.output = top == n_layer as i64;
            s.layers = items - s.output as u32;
            s.first_layer = (next + 1) as u32;
            s.compute = compute;
            for i in (next + 1) as usize..=top as usize {
                if i == n_layer {
                    s.weights += w.output;
                } else {
                    s.weights += w.per_layer[i];
                    s.kv += kv_layers[i];
                }
            }
        }
    }
    // the CPU: the input layer, what is left, a compute buffer
    let local = &mut shares[0];
    local.compute = compute;
    local.weights = w.input;
    local.first_layer = 0;
    for i in 0..=next.max(-1) as i64 {
        let i = i as usize;
        if i == n_layer {
            local.output = true;
            local.weights += w.output;
        } else {
            local.layers += 1;
            local.weights += w.per_layer[i];
            local.kv += kv_layers[i];
        }
    }
    if local.total() > budgets[0] {
        return None;
    }
    let ngl = if local.output {
        0
    } else {
        n_layer as u32 - local.layers + 1
    };
    let ts = shares[1..]
        .iter()
        .map(|s| s.layers + s.output as u32)
        .collect();
    Some(Split { shares, ngl, ts })
}

/// The KV bytes of each layer for a cache of size `kv` with per-layer `types`.
fn kv_layers(shape: &ModelShape, types: &LayerTypes, kv: &KvSize) -> Vec<u64> {
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

/// The split at context `cfg.n_ctx` (with its padded context), or `None` if none fits.
pub fn split_at(
    shape: &ModelShape,
    w: &Weights,
    types: &LayerTypes,
    cfg: &CacheConfig,
    budgets: &[u64],
) -> Result<Option<(u32, Split)>, PlanError> {
    let kv = tbq::plan::kv_bytes_layers(shape, types, cfg)?;
    let compute = fit::compute_estimate(w, shape, cfg);
    Ok(place(w, &kv_layers(shape, types, &kv), compute, budgets).map(|s| (kv.n_ctx, s)))
}

/// The largest context (a multiple of 256) with a split, and that split; `None` if not even 256
/// tokens fit. Not capped at the training context.
pub fn max_context(
    shape: &ModelShape,
    w: &Weights,
    types: &LayerTypes,
    cfg: &CacheConfig,
    budgets: &[u64],
) -> Result<Option<(u32, Split)>, PlanError> {
    let step = if cfg.kv_unified {
        256
    } else {
        256 * cfg.n_seq_max.max(1)
    };
    let at = |n: u64| {
        split_at(
            shape,
            w,
            types,
            &CacheConfig {
                n_ctx: n as u32,
                ..*cfg
            },
            budgets,
        )
    };
    if at(step as u64)?.is_none() {
        return Ok(None);
    }
    let (mut lo, mut hi) = (1u64, (u32::MAX / step) as u64);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if at(mid * step as u64)?.is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    at(lo * step as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(per_layer: Vec<u64>, output: u64, input: u64) -> Weights {
        Weights {
            per_layer,
            output,
            input,
            ..Weights::default()
        }
    }

    #[test]
    fn devices_parse() {
        let p = |s: &str| -> Result<u64, String> {
            s.trim_end_matches("GiB")
                .parse::<u64>()
                .map(|n| n << 30)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse_device("local=8GiB", p).unwrap(),
            Device {
                name: "local".into(),
                endpoint: None,
                budget: 8 << 30
            }
        );
        let d = parse_device("rpc:10.0.0.2:50052=24GiB", p).unwrap();
        assert_eq!(d.endpoint.as_deref(), Some("10.0.0.2:50052"));
        assert!(parse_device("gpu=1GiB", p)
            .unwrap_err()
            .contains("rpc:HOST:PORT"));
        assert!(parse_device("rpc:host=1GiB", p).is_err());
        assert!(parse_device("local", p).unwrap_err().contains("NAME=SIZE"));
    }

    #[test]
    fn layers_fill_the_workers_from_the_back() {
        // 4 layers of 10 (+ 5 KV each), output 20, input 7, compute 3
        let w = w(vec![10; 4], 20, 7);
        let kv = vec![5; 4];
        // the last worker: output + one layer (3 + 20 + 15 = 38 <= 40); the first: two (3 + 30 = 33 <= 35)
        let s = place(&w, &kv, 3, &[100, 35, 40]).unwrap();
        assert_eq!((s.ngl, s.ts.clone()), (4, vec![2, 2]));
        assert_eq!(
            (
                s.shares[2].layers,
                s.shares[2].first_layer,
                s.shares[2].output
            ),
            (1, 3, true)
        );
        assert_eq!((s.shares[1].layers, s.shares[1].first_layer), (2, 1));
        assert_eq!(
            (s.shares[0].layers, s.shares[0].weights, s.shares[0].kv),
            (1, 17, 5)
        );
        assert_eq!(s.shares[2].total(), 38);
        // everything on the workers: -ngl n_layer + 1
        let s = place(&w, &kv, 3, &[10, 100, 100]).unwrap();
        assert_eq!(
            (s.ngl, s.ts.clone(), s.shares[0].layers),
            (5, vec![0, 5], 0)
        );
        // nothing fits anywhere but here: -ngl 0, the output layer on the CPU
        let s = place(&w, &kv, 3, &[100, 1, 1]).unwrap();
        assert_eq!(
            (s.ngl, s.shares[0].output, s.shares[0].layers),
            (0, true, 4)
        );
        // too small altogether
        assert!(place(&w, &kv, 3, &[50, 20, 20]).is_none());
    }
}
