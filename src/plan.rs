//! KV-cache planner: how many bytes llama.cpp allocates for a model's K/V cache, and the largest
//! context that fits a memory budget.
//!
//! The numbers follow the pinned llama.cpp (`src/llama-context.cpp`, `src/llama-kv-cache.cpp`,
//! `src/llama-kv-cache-iswa.cpp`) rule for rule, so that they agree with what the server prints
//! (`llama_kv_cache: size = … MiB (… cells, … layers, …)`):
//!
//! - the context is padded to a multiple of 256 cells (`GGML_PAD(n_ctx, 256)`);
//! - with a unified cache (llama-server's default) all sequences share one stream of `n_ctx`
//!   cells; otherwise each of the `n_seq_max` streams holds `pad(n_ctx / n_seq_max, 256)` cells;
//! - each layer stores one K row of `n_head_kv · head_k` elements and one V row of
//!   `n_head_kv · head_v` elements per cell, in the cache type's blocks
//!   (`ggml_row_size = type_size · n / block_size`);
//! - models with sliding-window attention (Gemma 2/3, Cohere 2, gpt-oss, …) keep two caches: the
//!   full-attention layers get `n_ctx` cells, the sliding-window layers
//!   `pad(min(n_ctx_seq, n_swa · (unified ? n_seq_max : 1) + n_ubatch), 256)` cells
//!   (all `n_ctx` with `--swa-full`). `n_ubatch` is first clamped to `n_batch`, itself clamped to
//!   the requested (unpadded) context.
//!
//! ```no_run
//! use tbq::plan::{CacheConfig, CacheType, ModelShape};
//! let shape = ModelShape::open("gemma-3-270m.gguf")?;
//! let (k, v) = (CacheType::parse("tbq4_0")?, CacheType::parse("tbq3_0")?);
//! let size = tbq::plan::kv_bytes(&shape, k, v, &CacheConfig::server(32768))?;
//! println!("{} MiB", size.total() as f64 / 1048576.0);
//! let fit = tbq::plan::max_context(&shape, k, v, &CacheConfig::server(0), 8 << 30)?;
//! # Ok::<(), tbq::plan::PlanError>(())
//! ```
//!
//! What is not modelled: recurrent and hybrid state (Mamba, RWKV, LFM2), MLA caches
//! (DeepSeek 2/3), layers that share another layer's cache (Gemma 3n), and the compute buffers
//! and weights — this is the KV cache only. [`ModelShape::notes`] says when a model falls outside
//! what is modelled.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::format::TbqType;
use crate::gguf::{GgufError, Metadata, Value};

/// llama.cpp pads contexts and sliding-window caches to this many cells.
pub const CELL_PAD: u32 = 256;

/// A K or V cache type llama.cpp accepts (`-ctk` / `-ctv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheType {
    /// 32-bit float.
    F32,
    /// IEEE half (llama.cpp's default).
    F16,
    /// bfloat16.
    Bf16,
    /// ggml q8_0: 32 elements in 34 bytes.
    Q8_0,
    /// ggml q4_0: 32 elements in 18 bytes.
    Q4_0,
    /// ggml q4_1: 32 elements in 20 bytes.
    Q4_1,
    /// ggml q5_0: 32 elements in 22 bytes.
    Q5_0,
    /// ggml q5_1: 32 elements in 24 bytes.
    Q5_1,
    /// ggml iq4_nl: 32 elements in 18 bytes.
    Iq4Nl,
    /// A tbq type (sizes from [`crate::format`]).
    Tbq(TbqType),
}

impl CacheType {
    /// Every type, in the order llama.cpp lists them.
    pub const ALL: [CacheType; 16] = [
        CacheType::F32,
        CacheType::F16,
        CacheType::Bf16,
        CacheType::Q8_0,
        CacheType::Q4_0,
        CacheType::Q4_1,
        CacheType::Iq4Nl,
        CacheType::Q5_0,
        CacheType::Q5_1,
        CacheType::Tbq(TbqType::Tbq4_0),
        CacheType::Tbq(TbqType::Tbq3_0),
        CacheType::Tbq(TbqType::Tbq5_0),
        CacheType::Tbq(TbqType::Tbq6_0),
        CacheType::Tbq(TbqType::Tbq3_1),
        CacheType::Tbq(TbqType::Tbq4_1),
        CacheType::Tbq(TbqType::Tbq5_1),
    ];

    /// The type llama.cpp calls `name` (`"f16"`, `"q8_0"`, `"tbq4_0"`, …).
    pub fn parse(name: &str) -> Result<CacheType, PlanError> {
        let lower = name.trim().to_ascii_lowercase();
        CacheType::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| PlanError::UnknownType(name.to_string()))
    }

    /// The name llama.cpp uses.
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q4_0 => "q4_0",
            CacheType::Q4_1 => "q4_1",
            CacheType::Q5_0 => "q5_0",
            CacheType::Q5_1 => "q5_1",
            CacheType::Iq4Nl => "iq4_nl",
            CacheType::Tbq(t) => t.spec().name,
        }
    }

    /// Elements per block (`ggml_blck_size`).
    pub fn block_elems(self) -> u64 {
        match self {
            CacheType::F32 | CacheType::F16 | CacheType::Bf16 => 1,
            CacheType::Tbq(t) => t.block_elems() as u64,
            _ => 32,
        }
    }

    /// The type llama.cpp stores for heads of `head` elements: a tbq type becomes the variant for
    /// the head size (`tbq4_0` on heads of 64 is `tbq4_0_64`); `None` when no variant fits. Other
    /// types are stored as asked.
    pub fn for_head(self, head: u32) -> Option<CacheType> {
        match self {
            CacheType::Tbq(t) => t.for_head_dim(head as usize).map(CacheType::Tbq),
            t => Some(t),
        }
    }

    /// Bytes per block (`ggml_type_size`).
    pub fn block_bytes(self) -> u64 {
        match self {
            CacheType::F32 => 4,
            CacheType::F16 | CacheType::Bf16 => 2,
            CacheType::Q8_0 => 34,
            CacheType::Q4_0 | CacheType::Iq4Nl => 18,
            CacheType::Q4_1 => 20,
            CacheType::Q5_0 => 22,
            CacheType::Q5_1 => 24,
            CacheType::Tbq(t) => t.spec().block_bytes() as u64,
        }
    }

    /// Bits per element.
    pub fn bits_per_element(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }

    /// Bits per element as stored on heads of `head` elements: a tbq type on 64-wide heads costs
    /// its `_64` variant's bits ([`CacheType::for_head`]).
    pub fn bits_stored(self, head: u32) -> f64 {
        self.for_head(head).unwrap_or(self).bits_per_element()
    }

    /// Whether llama.cpp needs flash attention for this type as a V cache (every quantized type).
    pub fn needs_flash_attn_as_v(self) -> bool {
        !matches!(self, CacheType::F32 | CacheType::F16 | CacheType::Bf16)
    }

    /// Bytes of one row of `n` elements (`ggml_row_size`); `None` if `n` is not a whole number
    /// of blocks.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        n.is_multiple_of(self.block_elems())
            .then(|| n / self.block_elems() * self.block_bytes())
    }
}

impl fmt::Display for CacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheType {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CacheType::parse(s)
    }
}

/// The cache types of every layer: one K and one V type (`-ctk` / `-ctv`), and the single layers
/// the patched llama.cpp's `--cache-type-layers` (`LLAMA_KV_LAYER_TYPES`) gives another type.
///
/// The spec is a comma-separated list of `SIDE LAYERS=TYPE`, `SIDE` `k`, `v` or `kv`, `LAYERS` one
/// 0-based layer or a range `N-M`: `k0-1=tbq5_1,v0=tbq4_0,kv17=q8_0`. Later items win, as in
/// llama.cpp (`llama_kv_layer_types::parse`, patches/0008).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerTypes {
    /// The K type of every layer not in `k_layers`.
    pub k: CacheType,
    /// The V type of every layer not in `v_layers`.
    pub v: CacheType,
    /// K types of single layers.
    pub k_layers: BTreeMap<u32, CacheType>,
    /// V types of single layers.
    pub v_layers: BTreeMap<u32, CacheType>,
}

impl LayerTypes {
    /// Every layer `k` / `v`.
    pub fn uniform(k: CacheType, v: CacheType) -> LayerTypes {
        LayerTypes {
            k,
            v,
            k_layers: BTreeMap::new(),
            v_layers: BTreeMap::new(),
        }
    }

    /// `k` / `v` with the overrides of `spec` (empty: none). Layer indices are checked against a
    /// model by [`ModelShape::check_types`].
    pub fn with_spec(k: CacheType, v: CacheType, spec: &str) -> Result<LayerTypes, PlanError> {
        let mut t = LayerTypes::uniform(k, v);
        let bad = |item: &str, why: String| {
            PlanError::LayerSpec(format!(
                "bad item {item:?} in the per-layer spec {spec:?}: {why} (expected a \
                 comma-separated list of SIDE LAYERS=TYPE, SIDE k, v or kv, LAYERS N or N-M, e.g. \
                 k0-1=tbq5_1,v0=tbq4_0,kv17=q8_0)"
            ))
        };
        for item in spec.split(',') {
            if item.is_empty() && spec.is_empty() {
                break;
            }
            let (lhs, ty) = item
                .split_once('=')
                .ok_or_else(|| bad(item, "no '='".into()))?;
            let (side_k, side_v, range) = if let Some(r) = lhs.strip_prefix("kv") {
                (true, true, r)
            } else if let Some(r) = lhs.strip_prefix('k') {
                (true, false, r)
            } else if let Some(r) = lhs.strip_prefix('v') {
                (false, true, r)
            } else {
                return Err(bad(item, "the side must be k, v or kv".into()));
            };
            let layer = |d: &str| -> Result<u32, PlanError> {
                if d.is_empty() || d.len() > 9 || !d.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(item, format!("{d:?} is not a layer index")));
                }
                Ok(d.parse().unwrap())
            };
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (layer(a)?, layer(b)?),
                None => (layer(range)?, layer(range)?),
            };
            if last < first {
                return Err(bad(item, "the range is reversed".into()));
            }
            let ty = CacheType::parse(ty)
                .map_err(|_| bad(item, format!("{ty:?} is not a cache type")))?;
            for il in first..=last {
                if side_k {
                    t.k_layers.insert(il, ty);
                }
                if side_v {
                    t.v_layers.insert(il, ty);
                }
            }
        }
        Ok(t)
    }

    /// The K type of layer `il`.
    pub fn k_at(&self, il: u32) -> CacheType {
        *self.k_layers.get(&il).unwrap_or(&self.k)
    }

    /// The V type of layer `il`.
    pub fn v_at(&self, il: u32) -> CacheType {
        *self.v_layers.get(&il).unwrap_or(&self.v)
    }

    /// Whether every layer has `k` / `v`.
    pub fn is_uniform(&self) -> bool {
        self.k_layers.values().all(|&t| t == self.k) && self.v_layers.values().all(|&t| t == self.v)
    }

    /// The overrides as a spec llama.cpp reads, runs of equal types merged into ranges and
    /// overrides equal to the default left out (`""` when uniform).
    pub fn spec(&self) -> String {
        let mut items = Vec::new();
        for (side, dflt, layers) in [("k", self.k, &self.k_layers), ("v", self.v, &self.v_layers)] {
            let mut run: Option<(u32, u32, CacheType)> = None;
            let flush = |run: Option<(u32, u32, CacheType)>, items: &mut Vec<String>| {
                if let Some((a, b, t)) = run {
                    items.push(if a == b {
                        format!("{side}{a}={t}")
                    } else {
                        format!("{side}{a}-{b}={t}")
                    });
                }
            };
            for (&il, &t) in layers.iter().filter(|(_, &t)| t != dflt) {
                match run {
                    Some((a, b, rt)) if rt == t && b + 1 == il => run = Some((a, il, t)),
                    _ => {
                        flush(run, &mut items);
                        run = Some((il, il, t));
                    }
                }
            }
            flush(run, &mut items);
        }
        items.join(",")
    }

    /// Mean bits per element of the K and V rows of every layer of `shape`, weighted by the
    /// elements each row holds (what a per-layer allocation costs, against one cache type).
    pub fn mean_bits(&self, shape: &ModelShape) -> f64 {
        let (mut bits, mut elems) = (0.0, 0.0);
        for (il, l) in shape.layers.iter().enumerate() {
            let il = il as u32;
            bits += self.k_at(il).bits_stored(l.head_k) * l.k_elems() as f64
                + self.v_at(il).bits_stored(l.head_v) * l.v_elems() as f64;
            elems += (l.k_elems() + l.v_elems()) as f64;
        }
        if elems == 0.0 {
            0.0
        } else {
            bits / elems
        }
    }
}

/// The attention shape of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// KV heads of this layer (0 = no attention, no cache).
    pub n_head_kv: u32,
    /// Elements per K head.
    pub head_k: u32,
    /// Elements per V head.
    pub head_v: u32,
    /// Whether the layer uses sliding-window attention (and so lives in the SWA cache).
    pub swa: bool,
}

impl LayerShape {
    /// Elements of one cell's K row in this layer.
    pub fn k_elems(&self) -> u64 {
        self.n_head_kv as u64 * self.head_k as u64
    }

    /// Elements of one cell's V row in this layer.
    pub fn v_elems(&self) -> u64 {
        self.n_head_kv as u64 * self.head_v as u64
    }

    /// Bytes of one cell's K row stored as `t` (as the variant for this layer's head size, see
    /// [`CacheType::for_head`]); `None` when the row is not a whole number of its blocks.
    pub fn k_row_bytes(&self, t: CacheType) -> Option<u64> {
        t.for_head(self.head_k)?.row_bytes(self.k_elems())
    }

    /// Bytes of one cell's V row stored as `t` (see [`LayerShape::k_row_bytes`]).
    pub fn v_row_bytes(&self, t: CacheType) -> Option<u64> {
        t.for_head(self.head_v)?.row_bytes(self.v_elems())
    }
}

/// What the planner needs to know about a model: its attention layers.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    /// `general.architecture`.
    pub arch: String,
    /// `general.name`, if the file has one.
    pub name: Option<String>,
    /// One entry per layer, in order.
    pub layers: Vec<LayerShape>,
    /// Sliding-window size in tokens (0 = no sliding window).
    pub n_swa: u32,
    /// The context the model was trained for (`<arch>.context_length`; 0 if absent).
    pub n_ctx_train: u32,
    /// Caveats: when the model has features the planner does not model.
    pub notes: Vec<String>,
}

/// Sliding-window layer patterns llama.cpp's model code sets when the GGUF has none
/// (`load_swa_pattern(ml, n_pattern, dense_first)` in `src/models/<arch>.cpp`): the architecture,
/// the pattern period, whether the dense layer comes first, and the default window if the GGUF
/// has no `sliding_window` key.
const SWA_PATTERNS: &[(&str, u32, bool, u32)] = &[
    ("gemma2", 2, false, 4096),
    ("gemma3", 6, false, 0),
    ("gemma3n", 5, false, 0),
    ("gemma-embedding", 6, false, 0),
    ("cohere2", 4, false, 0),
    ("cohere2moe", 4, true, 0),
    ("exaone4", 4, false, 0),
    ("exaone-moe", 4, false, 0),
    ("gpt-oss", 2, false, 0),
    ("llama4", 4, false, 8192),
    ("olmo2", 4, false, 0),
    ("afmoe", 4, false, 0),
    ("plamo3", 8, false, 0),
    ("smallthinker", 4, true, 0),
    ("mellum", 4, false, 0),
    ("laguna", 4, true, 0),
    ("muse-glimmer", 4, false, 0),
];

/// Architectures whose KV cache the planner does not size correctly (recurrent or hybrid state,
/// MLA, shared layers); planning them gives an estimate with a note.
const NOT_MODELLED: &[&str] = &[
    "mamba",
    "mamba2",
    "rwkv6",
    "rwkv7",
    "rwkv6qwen2",
    "rwkv7qwen2",
    "jamba",
    "falcon-h1",
    "granitehybrid",
    "lfm2",
    "lfm2moe",
    "nemotron_h",
    "qwen3next",
    "deepseek2",
    "deepseek3",
    "minimax-m3",
    "kimi-linear",
    "gemma3n",
    "gemma4",
    "plamo2",
];

impl ModelShape {
    /// Reads the shape from a GGUF file's metadata (a few kilobytes are read).
    pub fn open(path: impl AsRef<Path>) -> Result<ModelShape, PlanError> {
        let meta = Metadata::open(path.as_ref()).map_err(PlanError::Gguf)?;
        ModelShape::from_metadata(&meta)
    }

    /// Builds the shape from parsed metadata, following llama.cpp's `load_hparams`:
    /// `<arch>.block_count`, `attention.head_count` and `attention.head_count_kv` (a number or a
    /// per-layer array; KV heads default to the query heads), `attention.key_length` /
    /// `value_length` (default `embedding_length / head_count`), their `_swa` variants,
    /// `attention.sliding_window` and `attention.sliding_window_pattern` (a per-layer bool array
    /// or a period; else the architecture's default).
    pub fn from_metadata(meta: &Metadata) -> Result<ModelShape, PlanError> {
        let arch = meta
            .architecture()
            .ok_or_else(|| PlanError::MissingKey("general.architecture".into()))?
            .to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let n_layer =
            meta.get_u64(&key("block_count"))
                .ok_or_else(|| PlanError::MissingKey(key("block_count")))? as usize;
        if n_layer == 0 || n_layer > 4096 {
            return Err(PlanError::Invalid(format!(
                "{} = {n_layer}",
                key("block_count")
            )));
        }
        let per_layer = |k: &str| -> Result<Option<Vec<u32>>, PlanError> {
            match meta.get(&key(k)) {
                None => Ok(None),
                Some(Value::Array(items)) => {
                    if items.len() != n_layer {
                        return Err(PlanError::Invalid(format!(
                            "{} has {} entries for {n_layer} layers",
                            key(k),
                            items.len()
                        )));
                    }
                    items
                        .iter()
                        .map(|v| v.as_u64().map(|x| x as u32))
                        .collect::<Option<Vec<_>>>()
                        .map(Some)
                        .ok_or_else(|| PlanError::Invalid(format!("{} is not integers", key(k))))
                }
                Some(v) => v
                    .as_u64()
                    .map(|x| Some(vec![x as u32; n_layer]))
                    .ok_or_else(|| PlanError::Invalid(format!("{} is not an integer", key(k)))),
            }
        };
        let n_head = per_layer("attention.head_count")?
            .ok_or_else(|| PlanError::MissingKey(key("attention.head_count")))?;
        let n_head_kv = per_layer("attention.head_count_kv")?.unwrap_or_else(|| n_head.clone());
        let n_embd = meta.get_u64(&key("embedding_length")).unwrap_or(0) as u32;
        let default_head = n_embd.checked_div(n_head[0]).unwrap_or(0);
        let get32 = |k: &str, d: u32| meta.get_u64(&key(k)).map(|x| x as u32).unwrap_or(d);
        let head_k = get32("attention.key_length", default_head);
        let head_v = get32("attention.value_length", default_head);
        let head_k_swa = get32("attention.key_length_swa", head_k);
        let head_v_swa = get32("attention.value_length_swa", head_v);
        if head_k == 0 || head_v == 0 {
            return Err(PlanError::MissingKey(key("attention.key_length")));
        }

        let mut notes = Vec::new();
        let known = SWA_PATTERNS.iter().find(|p| p.0 == arch);
        let mut n_swa = get32("attention.sliding_window", known.map_or(0, |p| p.3));
        let explicit: Option<Vec<bool>> = match meta.get(&key("attention.sliding_window_pattern")) {
            Some(Value::Array(items)) if items.len() == n_layer => {
                Some(items.iter().map(|v| v.as_u64().unwrap_or(0) != 0).collect())
            }
            _ => None,
        };
        let period = meta
            .get_u64(&key("attention.sliding_window_pattern"))
            .map(|x| x as u32);
        let swa: Vec<bool> = if n_swa == 0 {
            vec![false; n_layer]
        } else if let Some(flags) = explicit {
            flags
        } else if let Some(&(_, default_period, dense_first, _)) = known {
            let p = period.unwrap_or(default_period);
            (0..n_layer as u32)
                .map(|il| match (p, dense_first) {
                    (0, _) => true,
                    (p, true) => il % p != 0,
                    (p, false) => il % p < p - 1,
                })
                .collect()
        } else {
            notes.push(format!(
                "{arch} has a sliding window of {n_swa} tokens but no layer pattern the planner \
                 knows: every layer is sized as full attention (an upper bound)"
            ));
            n_swa = 0;
            vec![false; n_layer]
        };
        if NOT_MODELLED.contains(&arch.as_str()) {
            notes.push(format!(
                "{arch}: recurrent/hybrid state, MLA or shared layers are not modelled; the size \
                 is an estimate"
            ));
        }

        let layers = (0..n_layer)
            .map(|il| LayerShape {
                n_head_kv: n_head_kv[il],
                head_k: if swa[il] { head_k_swa } else { head_k },
                head_v: if swa[il] { head_v_swa } else { head_v },
                swa: swa[il],
            })
            .collect();
        Ok(ModelShape {
            name: meta.get_str("general.name").map(str::to_string),
            n_ctx_train: get32("context_length", 0),
            arch,
            layers,
            n_swa,
            notes,
        })
    }

    /// Whether the model keeps a separate sliding-window cache.
    pub fn has_swa(&self) -> bool {
        self.n_swa > 0 && self.layers.iter().any(|l| l.swa)
    }

    /// Checks that `t` can hold this model's K (`is_v = false`) or V rows: whole blocks per row,
    /// and for tbq types a head size that is a multiple of 128 (the patched llama.cpp refuses
    /// others when the context is created).
    pub fn check_type(&self, t: CacheType, is_v: bool) -> Result<(), PlanError> {
        self.layers
            .iter()
            .try_for_each(|l| Self::check_layer(l, t, is_v))
    }

    /// [`check_type`](Self::check_type) for every layer's own types, and that the overrides
    /// name layers this model has.
    pub fn check_types(&self, types: &LayerTypes) -> Result<(), PlanError> {
        let n = self.layers.len() as u32;
        if let Some(&il) = types
            .k_layers
            .keys()
            .chain(types.v_layers.keys())
            .find(|&&il| il >= n)
        {
            return Err(PlanError::LayerSpec(format!(
                "the per-layer spec names layer {il}, but the model has {n} layers (0-{})",
                n - 1
            )));
        }
        for (il, l) in self.layers.iter().enumerate() {
            Self::check_layer(l, types.k_at(il as u32), false)?;
            Self::check_layer(l, types.v_at(il as u32), true)?;
        }
        Ok(())
    }

    fn check_layer(l: &LayerShape, t: CacheType, is_v: bool) -> Result<(), PlanError> {
        if l.n_head_kv == 0 {
            return Ok(());
        }
        let head = if is_v { l.head_v } else { l.head_k };
        let bad = match t.for_head(head) {
            None => true,
            Some(t) => !(l.n_head_kv as u64 * head as u64).is_multiple_of(t.block_elems()),
        };
        if bad {
            return Err(PlanError::HeadSize { ty: t, head, is_v });
        }
        Ok(())
    }
}

/// How llama.cpp was asked to size its context: the settings that change the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Requested context (`-c`); 0 = the model's training context.
    pub n_ctx: u32,
    /// Sequences (`-np`, server slots); llama-server's default is 4.
    pub n_seq_max: u32,
    /// Logical batch (`-b`); default 2048.
    pub n_batch: u32,
    /// Physical batch (`-ub`); default 512.
    pub n_ubatch: u32,
    /// One KV stream shared by all sequences (`-kvu`); llama-server's default.
    pub kv_unified: bool,
    /// Full-size sliding-window cache (`--swa-full`).
    pub swa_full: bool,
    /// Cells per stream whose keys a tbq K cache also keeps as f16 (the attention sink;
    /// llama.cpp's `LLAMA_TBQ_EXACT_KEYS`, default [`EXACT_KEYS`]).
    pub exact_keys: u32,
}

/// llama.cpp's default number of exact (f16) keys per stream beside a tbq K cache.
pub const EXACT_KEYS: u32 = 1;

impl CacheConfig {
    /// llama-server's defaults (4 slots, unified cache, batch 2048, ubatch 512) with context
    /// `n_ctx`.
    pub fn server(n_ctx: u32) -> CacheConfig {
        CacheConfig {
            n_ctx,
            n_seq_max: 4,
            n_batch: 2048,
            n_ubatch: 512,
            kv_unified: true,
            swa_full: false,
            exact_keys: EXACT_KEYS,
        }
    }

    /// One sequence (llama-cli, llama-perplexity) with context `n_ctx`.
    pub fn single(n_ctx: u32) -> CacheConfig {
        CacheConfig {
            n_seq_max: 1,
            kv_unified: false,
            ..CacheConfig::server(n_ctx)
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::server(0)
    }
}

/// The size of one of llama.cpp's KV caches (the full-attention one or the sliding-window one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSize {
    /// Cells per stream (what llama.cpp prints as `cells`).
    pub cells: u32,
    /// Streams (1 with a unified cache, else `n_seq_max`).
    pub streams: u32,
    /// Layers stored in this cache.
    pub layers: u32,
    /// Bytes of K.
    pub k_bytes: u64,
    /// Bytes of V.
    pub v_bytes: u64,
}

impl CacheSize {
    /// K + V bytes.
    pub fn bytes(&self) -> u64 {
        self.k_bytes + self.v_bytes
    }
}

/// What llama.cpp allocates for the KV cache of one context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvSize {
    /// The context after padding (what llama.cpp prints as `n_ctx`).
    pub n_ctx: u32,
    /// The full-attention cache (every layer, for models without a sliding window).
    pub full: CacheSize,
    /// The sliding-window cache, for models that have one.
    pub swa: Option<CacheSize>,
}

impl KvSize {
    /// Bytes of both caches.
    pub fn total(&self) -> u64 {
        self.full.bytes() + self.swa.map_or(0, |s| s.bytes())
    }
}

/// Bytes each additional token of context costs, once the sliding-window cache is full: the K+V
/// rows of every full-attention layer (sliding-window layers cost nothing more past their
/// window). For a model without a sliding window this is the whole per-token cost.
pub fn bytes_per_token(shape: &ModelShape, k: CacheType, v: CacheType) -> Result<u64, PlanError> {
    bytes_per_token_layers(shape, &LayerTypes::uniform(k, v))
}

/// [`bytes_per_token`] with per-layer types.
pub fn bytes_per_token_layers(shape: &ModelShape, types: &LayerTypes) -> Result<u64, PlanError> {
    shape.check_types(types)?;
    let (kb, vb, _) = per_cell(shape, types, |l| !shape.has_swa() || !l.swa);
    Ok(kb + vb)
}

/// K and V bytes of one cell over the layers `pick` selects.
fn per_cell(
    shape: &ModelShape,
    types: &LayerTypes,
    pick: impl Fn(&LayerShape) -> bool,
) -> (u64, u64, u32) {
    let mut kb = 0;
    let mut vb = 0;
    let mut n = 0;
    for (il, l) in shape.layers.iter().enumerate().filter(|(_, l)| pick(l)) {
        // Rows are checked by check_types. A layer with no KV heads still gets (empty) tensors in
        // llama.cpp, so it counts as a layer.
        kb += l.k_row_bytes(types.k_at(il as u32)).unwrap_or(0);
        vb += l.v_row_bytes(types.v_at(il as u32)).unwrap_or(0);
        n += 1;
    }
    (kb, vb, n)
}

/// Elements of one K row over the layers `pick` selects that have a tbq K type: llama.cpp keeps
/// an f16 exact (sink) key of that many elements per exact cell and stream.
pub fn tbq_key_elems(
    shape: &ModelShape,
    types: &LayerTypes,
    pick: impl Fn(&LayerShape) -> bool,
) -> u64 {
    shape
        .layers
        .iter()
        .enumerate()
        .filter(|(il, l)| pick(l) && matches!(types.k_at(*il as u32), CacheType::Tbq(_)))
        .map(|(_, l)| l.k_elems())
        .sum()
}

fn pad(x: u32, to: u32) -> u32 {
    x.div_ceil(to) * to
}

/// The KV cache llama.cpp allocates for `shape` with K type `k`, V type `v` and settings `cfg`.
pub fn kv_bytes(
    shape: &ModelShape,
    k: CacheType,
    v: CacheType,
    cfg: &CacheConfig,
) -> Result<KvSize, PlanError> {
    kv_bytes_layers(shape, &LayerTypes::uniform(k, v), cfg)
}

/// [`kv_bytes`] with per-layer types (`--cache-type-layers`).
pub fn kv_bytes_layers(
    shape: &ModelShape,
    types: &LayerTypes,
    cfg: &CacheConfig,
) -> Result<KvSize, PlanError> {
    shape.check_types(types)?;
    let n_seq_max = cfg.n_seq_max.max(1);
    let requested = if cfg.n_ctx == 0 {
        shape.n_ctx_train
    } else {
        cfg.n_ctx
    };
    if requested == 0 {
        return Err(PlanError::Invalid(
            "context 0 means the training context, but the model has no context_length".into(),
        ));
    }
    // llama-context.cpp: n_batch and n_ubatch are clamped before n_ctx is padded.
    let n_batch = cfg.n_batch.min(requested);
    let n_ubatch = if cfg.n_ubatch == 0 {
        n_batch
    } else {
        cfg.n_ubatch.min(n_batch)
    };
    let mut n_ctx = pad(requested, CELL_PAD);
    let n_ctx_seq = if cfg.kv_unified {
        n_ctx
    } else {
        let s = pad(n_ctx / n_seq_max, CELL_PAD);
        n_ctx = s * n_seq_max;
        s
    };
    let streams = if cfg.kv_unified { 1 } else { n_seq_max };
    let sized = |cells: u32, pick: &dyn Fn(&LayerShape) -> bool| {
        let (kb, vb, layers) = per_cell(shape, types, pick);
        let n = cells as u64 * streams as u64;
        let exact = 2 * tbq_key_elems(shape, types, pick) * cfg.exact_keys.min(cells) as u64;
        CacheSize {
            cells,
            streams,
            layers,
            k_bytes: kb * n + exact * streams as u64,
            v_bytes: vb * n,
        }
    };
    if !shape.has_swa() {
        return Ok(KvSize {
            n_ctx,
            full: sized(n_ctx_seq, &|_| true),
            swa: None,
        });
    }
    let swa_cells = if cfg.swa_full {
        n_ctx_seq
    } else {
        let per = if cfg.kv_unified { n_seq_max } else { 1 };
        pad(
            n_ctx_seq.min(shape.n_swa.saturating_mul(per).saturating_add(n_ubatch)),
            CELL_PAD,
        )
    };
    Ok(KvSize {
        n_ctx,
        full: sized(n_ctx_seq, &|l| !l.swa),
        swa: Some(sized(swa_cells, &|l| l.swa)),
    })
}

/// The largest context (a multiple of 256, as llama.cpp pads it) whose KV cache fits in
/// `budget` bytes, with the other settings of `cfg` (its `n_ctx` is ignored). `None` if not even
/// 256 cells fit. Not capped at the training context: compare with
/// [`ModelShape::n_ctx_train`].
pub fn max_context(
    shape: &ModelShape,
    k: CacheType,
    v: CacheType,
    cfg: &CacheConfig,
    budget: u64,
) -> Result<Option<u32>, PlanError> {
    max_context_layers(shape, &LayerTypes::uniform(k, v), cfg, budget)
}

/// [`max_context`] with per-layer types.
pub fn max_context_layers(
    shape: &ModelShape,
    types: &LayerTypes,
    cfg: &CacheConfig,
    budget: u64,
) -> Result<Option<u32>, PlanError> {
    let at = |n: u32| {
        kv_bytes_layers(shape, types, &CacheConfig { n_ctx: n, ..*cfg }).map(|s| s.total())
    };
    let step = if cfg.kv_unified {
        CELL_PAD
    } else {
        CELL_PAD * cfg.n_seq_max.max(1)
    };
    if at(step)? > budget {
        return Ok(None);
    }
    // Sizes grow with the context: binary search over multiples of `step`.
    let (mut lo, mut hi) = (1u64, (u32::MAX / step) as u64);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if at((mid * step as u64) as u32)? <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(Some((lo * step as u64) as u32))
}

/// Why a plan could not be made.
#[derive(Debug)]
pub enum PlanError {
    /// The GGUF file could not be read.
    Gguf(GgufError),
    /// A metadata key the planner needs is absent.
    MissingKey(String),
    /// A metadata value that makes no sense.
    Invalid(String),
    /// A cache type llama.cpp does not know.
    UnknownType(String),
    /// A per-layer spec (`--cache-type-layers`) that does not parse or does not fit the model.
    LayerSpec(String),
    /// The type cannot hold this model's heads.
    HeadSize {
        /// The type.
        ty: CacheType,
        /// The head size that does not fit it.
        head: u32,
        /// Whether the V cache (else K).
        is_v: bool,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Gguf(e) => write!(f, "{e}"),
            PlanError::MissingKey(k) => write!(f, "the GGUF metadata has no {k:?}"),
            PlanError::Invalid(what) => write!(f, "unexpected GGUF metadata: {what}"),
            PlanError::LayerSpec(what) => f.write_str(what),
            PlanError::UnknownType(t) => write!(
                f,
                "unknown cache type {t:?} (known: {})",
                CacheType::ALL.map(CacheType::name).join(", ")
            ),
            PlanError::HeadSize {
                ty: ty @ CacheType::Tbq(_),
                head,
                is_v,
            } => write!(
                f,
                "{ty} needs a head size that is a multiple of 64 (128-element blocks, or its 64-wide \
                 variant), and this model's {} heads are {head} wide: use f16, q8_0 or q4_0 for it",
                if *is_v { "V" } else { "K" }
            ),
            PlanError::HeadSize { ty, head, is_v } => write!(
                f,
                "{ty} stores blocks of {} elements, and this model's {} rows ({head}-wide heads) \
                 are not a whole number of blocks",
                ty.block_elems(),
                if *is_v { "V" } else { "K" }
            ),
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanError::Gguf(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write::{metadata_only, WValue};

    /// Gemma 3 270M's attention metadata, as its GGUF holds it.
    fn gemma3_270m() -> Vec<u8> {
        let mut buf = Vec::new();
        metadata_only(
            &mut buf,
            &[
                ("general.architecture", WValue::Str("gemma3".into())),
                ("gemma3.block_count", WValue::U32(18)),
                ("gemma3.context_length", WValue::U32(32768)),
                ("gemma3.embedding_length", WValue::U32(640)),
                ("gemma3.attention.head_count", WValue::U32(4)),
                ("gemma3.attention.head_count_kv", WValue::U32(1)),
                ("gemma3.attention.key_length", WValue::U32(256)),
                ("gemma3.attention.value_length", WValue::U32(256)),
                ("gemma3.attention.sliding_window", WValue::U32(512)),
                (
                    "tokenizer.ggml.tokens",
                    WValue::ArrStr(vec!["<pad>".into(); 100]),
                ),
            ],
        )
        .unwrap();
        buf
    }

    fn shape_of(buf: &[u8]) -> ModelShape {
        ModelShape::from_metadata(&Metadata::read(&mut &buf[..]).unwrap()).unwrap()
    }

    const MIB: f64 = 1048576.0;

    #[test]
    fn gemma3_reads_its_sliding_window_pattern() {
        let s = shape_of(&gemma3_270m());
        assert_eq!(s.layers.len(), 18);
        assert_eq!(s.n_swa, 512);
        // Period 6: layers 5, 11, 17 are full attention.
        let full: Vec<usize> = (0..18).filter(|&i| !s.layers[i].swa).collect();
        assert_eq!(full, vec![5, 11, 17]);
        assert!(s.notes.is_empty());
    }

    /// The numbers llama-server printed for Gemma 3 270M with `-c 5000 -fa on -ctk tbq4_0
    /// -ctv tbq3_0` (4 slots, unified): 5120 cells × 3 layers = 3.40 MiB (K 1.94 with the exact
    /// sink keys, 1.93 before them; V 1.46), and the SWA cache 2560 cells × 15 layers = 8.50 MiB
    /// (K 4.84 with them, 4.83 before; V 3.66).
    #[test]
    fn gemma3_matches_the_server_log() {
        let s = shape_of(&gemma3_270m());
        let k = CacheType::parse("tbq4_0").unwrap();
        let v = CacheType::parse("tbq3_0").unwrap();
        let size = kv_bytes(&s, k, v, &CacheConfig::server(5000)).unwrap();
        assert_eq!(size.n_ctx, 5120);
        assert_eq!((size.full.cells, size.full.layers), (5120, 3));
        let swa = size.swa.unwrap();
        assert_eq!((swa.cells, swa.layers), (2560, 15));
        let r = |b: u64| (b as f64 / MIB * 100.0).round() / 100.0;
        assert_eq!((r(size.full.k_bytes), r(size.full.v_bytes)), (1.94, 1.46));
        assert_eq!((r(swa.k_bytes), r(swa.v_bytes)), (4.84, 3.66));
        // Exact: 5120 cells × 3 layers × 2 blocks × 66 bytes, and one f16 key of 256 elements per
        // layer (one stream).
        assert_eq!(size.full.k_bytes, 5120 * 3 * 2 * 66 + 3 * 256 * 2);
        let none = CacheConfig {
            exact_keys: 0,
            ..CacheConfig::server(5000)
        };
        let without = kv_bytes(&s, k, v, &none).unwrap();
        assert_eq!(without.full.k_bytes, 5120 * 3 * 2 * 66);
        assert_eq!(swa.v_bytes, 2560 * 15 * 2 * 50);
    }

    #[test]
    fn swa_cache_is_clamped_and_padded() {
        let s = shape_of(&gemma3_270m());
        let f16 = CacheType::F16;
        // A context smaller than the window: the SWA cache is the whole context.
        let small = kv_bytes(&s, f16, f16, &CacheConfig::server(300)).unwrap();
        assert_eq!(small.n_ctx, 512);
        // n_batch = n_ubatch = 300 (clamped to the requested context); 512·4+300 > 512 → 512.
        assert_eq!(small.swa.unwrap().cells, 512);
        // One sequence, not unified: n_swa + n_ubatch = 1024.
        let one = kv_bytes(&s, f16, f16, &CacheConfig::single(8192)).unwrap();
        assert_eq!(one.swa.unwrap().cells, 1024);
        // --swa-full: every layer gets the full context.
        let full = kv_bytes(
            &s,
            f16,
            f16,
            &CacheConfig {
                swa_full: true,
                ..CacheConfig::server(8192)
            },
        )
        .unwrap();
        assert_eq!(full.swa.unwrap().cells, 8192);
        assert_eq!(full.total(), 8192 * 18 * 2 * 256 * 2);
    }

    #[test]
    fn non_unified_streams() {
        let s = shape_of(&gemma3_270m());
        let cfg = CacheConfig {
            kv_unified: false,
            ..CacheConfig::server(5000)
        };
        let size = kv_bytes(&s, CacheType::F16, CacheType::F16, &cfg).unwrap();
        // n_ctx_seq = pad(5120 / 4, 256) = 1280, 4 streams.
        assert_eq!(
            (size.full.cells, size.full.streams, size.n_ctx),
            (1280, 4, 5120)
        );
        // Per stream: pad(min(1280, n_swa + n_ubatch), 256) = 1024.
        assert_eq!(
            (size.swa.unwrap().cells, size.swa.unwrap().streams),
            (1024, 4)
        );
    }

    #[test]
    fn per_layer_kv_heads_and_no_swa() {
        // A llama-style model with per-layer KV heads (some layers without attention).
        let mut buf = Vec::new();
        metadata_only(
            &mut buf,
            &[
                ("general.architecture", WValue::Str("llama".into())),
                ("llama.block_count", WValue::U32(4)),
                ("llama.context_length", WValue::U32(4096)),
                ("llama.embedding_length", WValue::U32(1024)),
                ("llama.attention.head_count", WValue::U32(8)),
                (
                    "llama.attention.head_count_kv",
                    WValue::ArrI32(vec![2, 0, 2, 4]),
                ),
                // sliding_window on an arch whose code never reads it: ignored, with a note.
                ("llama.attention.sliding_window", WValue::U32(256)),
            ],
        )
        .unwrap();
        let s = shape_of(&buf);
        assert_eq!(s.layers[0].head_k, 128);
        assert!(!s.has_swa());
        assert_eq!(s.notes.len(), 1);
        let bpt = bytes_per_token(&s, CacheType::Q8_0, CacheType::F16).unwrap();
        // K: (2+0+2+4)·128/32·34; V: (8)·128·2.
        assert_eq!(bpt, 8 * 4 * 34 + 8 * 128 * 2);
        let size = kv_bytes(&s, CacheType::Q8_0, CacheType::F16, &CacheConfig::server(0)).unwrap();
        assert_eq!(size.n_ctx, 4096);
        assert_eq!(size.total(), 4096 * bpt);
    }

    #[test]
    fn max_context_is_the_largest_that_fits() {
        let s = shape_of(&gemma3_270m());
        let (k, v) = (
            CacheType::Tbq(TbqType::Tbq4_0),
            CacheType::Tbq(TbqType::Tbq3_0),
        );
        let cfg = CacheConfig::server(0);
        let budget = 64 << 20;
        let n = max_context(&s, k, v, &cfg, budget).unwrap().unwrap();
        assert_eq!(n % 256, 0);
        let fits = |n| {
            kv_bytes(&s, k, v, &CacheConfig { n_ctx: n, ..cfg })
                .unwrap()
                .total()
        };
        assert!(fits(n) <= budget);
        assert!(fits(n + 256) > budget);
        // tbq4_0/tbq3_0 holds 2·256·2/(66+50)·… ≈ 4.4× the f16 context past the SWA part.
        let nf = max_context(&s, CacheType::F16, CacheType::F16, &cfg, budget)
            .unwrap()
            .unwrap();
        assert!(n > 4 * nf, "{n} vs {nf}");
        assert_eq!(max_context(&s, k, v, &cfg, 1000).unwrap(), None);
    }

    #[test]
    fn tbq_stores_64_wide_heads_as_the_64_variants_and_refuses_96() {
        let shape = |embd: u32| {
            let mut buf = Vec::new();
            metadata_only(
                &mut buf,
                &[
                    ("general.architecture", WValue::Str("llama".into())),
                    ("llama.block_count", WValue::U32(2)),
                    ("llama.embedding_length", WValue::U32(embd)),
                    ("llama.attention.head_count", WValue::U32(9)),
                    ("llama.attention.head_count_kv", WValue::U32(3)),
                ],
            )
            .unwrap();
            shape_of(&buf)
        };
        let (k, v) = (
            CacheType::Tbq(TbqType::Tbq4_0),
            CacheType::Tbq(TbqType::Tbq3_0),
        );
        // SmolLM2-135M's heads: 576 / 9 = 64. A cell's row of 3 heads is 3 blocks of tbq4_0_64
        // (34 bytes) and 3 of tbq3_0_64 (26 bytes), in each of the 2 layers.
        let s = shape(576);
        assert_eq!(bytes_per_token(&s, k, v).unwrap(), 2 * (3 * 34 + 3 * 26));
        assert_eq!(k.for_head(64), Some(CacheType::Tbq(TbqType::Tbq4_0_64)));
        assert_eq!(k.for_head(256), Some(k));
        // heads of 96 (864 / 9): no variant fits; q8_0 still does (3 × 96 = 9 blocks of 32)
        let e = kv_bytes(&shape(864), k, CacheType::F16, &CacheConfig::server(512)).unwrap_err();
        assert!(e.to_string().contains("multiple of 64"), "{e}");
        assert!(kv_bytes(
            &shape(864),
            CacheType::Q8_0,
            CacheType::F16,
            &CacheConfig::server(512)
        )
        .is_ok());
    }

    #[test]
    fn type_table() {
        assert_eq!(CacheType::parse("TBQ4_0").unwrap().block_bytes(), 66);
        assert_eq!(
            CacheType::parse("tbq3_0").unwrap().bits_per_element(),
            3.125
        );
        assert_eq!(CacheType::Q8_0.bits_per_element(), 8.5);
        assert_eq!(CacheType::Q4_0.row_bytes(256), Some(144));
        assert_eq!(CacheType::Q4_0.row_bytes(100), None);
        assert!(CacheType::parse("q3_k").is_err());
    }

    #[test]
    fn layer_types_parse_and_print() {
        let t = |n| CacheType::parse(n).unwrap();
        let lt = LayerTypes::with_spec(t("tbq4_0"), t("tbq3_0"), "k0-1=tbq5_1,v0=tbq4_0,kv17=q8_0")
            .unwrap();
        assert_eq!(
            (lt.k_at(0), lt.k_at(1), lt.k_at(2)),
            (t("tbq5_1"), t("tbq5_1"), t("tbq4_0"))
        );
        assert_eq!((lt.v_at(0), lt.v_at(1)), (t("tbq4_0"), t("tbq3_0")));
        assert_eq!((lt.k_at(17), lt.v_at(17)), (t("q8_0"), t("q8_0")));
        assert_eq!(lt.spec(), "k0-1=tbq5_1,k17=q8_0,v0=tbq4_0,v17=q8_0");
        // the printed spec reads back as the same types; later items win
        let again = LayerTypes::with_spec(lt.k, lt.v, &lt.spec()).unwrap();
        assert_eq!(again, lt);
        let later = LayerTypes::with_spec(t("f16"), t("f16"), "k0-3=q8_0,k2=q4_0").unwrap();
        assert_eq!(later.spec(), "k0-1=q8_0,k2=q4_0,k3=q8_0");
        // an override equal to the default is no override
        assert!(LayerTypes::with_spec(t("f16"), t("f16"), "kv0=f16")
            .unwrap()
            .is_uniform());
        assert!(LayerTypes::with_spec(t("f16"), t("f16"), "")
            .unwrap()
            .is_uniform());
        for bad in [
            "x0=f16", "k=f16", "k0", "k3-1=f16", "k0=q9_9", "k0=f16,", "k-1=f16",
        ] {
            let e = LayerTypes::with_spec(t("f16"), t("f16"), bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("SIDE LAYERS=TYPE"), "{bad}: {e}");
        }
    }

    /// Per-layer types cost each layer its own row bytes, in the cache (full or SWA) that holds
    /// the layer; a layer the model lacks is refused.
    #[test]
    fn layer_types_size_each_layer() {
        let s = shape_of(&gemma3_270m());
        let t = |n| CacheType::parse(n).unwrap();
        let cfg = CacheConfig::server(5000);
        let base = kv_bytes(&s, t("tbq4_0"), t("tbq3_0"), &cfg).unwrap();
        // layer 5 is a full-attention layer, layer 0 a sliding-window one
        let lt = LayerTypes::with_spec(t("tbq4_0"), t("tbq3_0"), "k5=q8_0,v0=tbq5_0").unwrap();
        let size = kv_bytes_layers(&s, &lt, &cfg).unwrap();
        let swa = size.swa.unwrap();
        // q8_0 keys keep no exact sink key (one f16 row of 256 less)
        assert_eq!(
            size.full.k_bytes,
            base.full.k_bytes + 5120 * (8 * 34 - 2 * 66) - 256 * 2
        );
        assert_eq!(size.full.v_bytes, base.full.v_bytes);
        assert_eq!(
            swa.v_bytes,
            base.swa.unwrap().v_bytes + 2560 * 2 * (82 - 50)
        );
        let mean = lt.mean_bits(&s);
        let want = ((4.125 + 3.125) * 18.0 + (8.5 - 4.125) + (5.125 - 3.125)) / 36.0;
        assert!((mean - want).abs() < 1e-12, "{mean} vs {want}");
        let e = kv_bytes_layers(
            &s,
            &LayerTypes::with_spec(t("f16"), t("f16"), "k18=q8_0").unwrap(),
            &cfg,
        );
        assert!(e.unwrap_err().to_string().contains("18 layers"));
        // more bytes per token: a smaller largest context in the same budget
        let budget = 64 << 20;
        let fit = max_context(&s, t("tbq4_0"), t("tbq3_0"), &cfg, budget)
            .unwrap()
            .unwrap();
        let fit_l = max_context_layers(&s, &lt, &cfg, budget).unwrap().unwrap();
        assert!(fit_l < fit, "{fit_l} vs {fit}");
    }
}
