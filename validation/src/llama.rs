//! What tbq-validate knows about llama.cpp: where its tools are, the cache types and their sizes,
//! a K/V configuration, and the lines of its logs that carry the numbers.
//!
//! Every number in a report comes from a llama.cpp log through one of the parsers here; each is
//! tested against text copied from a real run of the patched build.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The directory that holds the patched llama.cpp binaries.
#[derive(Clone, Debug)]
pub struct Tools {
    pub bin_dir: PathBuf,
}

impl Tools {
    pub fn new(bin_dir: PathBuf) -> Self {
        Tools { bin_dir }
    }

    /// The path of tool `name` (`llama-perplexity`), or an error that says how to build it.
    pub fn exe(&self, name: &str) -> Result<PathBuf> {
        let p = self.bin_dir.join(name);
        if !p.is_file() {
            bail!(
                "{} not found in {}: build the patched llama.cpp with scripts/build-llama.sh, \
                 or point --bin-dir (TBQ_BIN_DIR) at a build's bin/ folder",
                name,
                self.bin_dir.display()
            );
        }
        Ok(p)
    }
}

/// Bits per element a KV-cache type costs, as llama.cpp stores it (block scales included).
pub fn bits_per_element(ty: &str) -> Option<f64> {
    if let Some(t) = tbq::TbqType::from_name(ty) {
        return Some(t.spec().bits_per_element());
    }
    // ggml's block types: (bytes per block * 8) / elements per block.
    Some(match ty {
        "f32" => 32.0,
        "f16" | "bf16" => 16.0,
        "q8_0" => 34.0 * 8.0 / 32.0,
        "q5_1" => 24.0 * 8.0 / 32.0,
        "q5_0" => 22.0 * 8.0 / 32.0,
        "q4_1" => 20.0 * 8.0 / 32.0,
        "q4_0" | "iq4_nl" => 18.0 * 8.0 / 32.0,
        _ => return None,
    })
}

/// One K/V cache configuration: `K/V`, optionally with llama.cpp's own Hadamard rotation of
/// quantized caches (attn_rot) disabled, `q4_0/q4_0:norot`, tbq keys stored as they are instead
/// of centred on the key offset, `tbq4_0/tbq3_0:nocentre`, tbq keys without exact sink keys,
/// `tbq4_0/tbq3_0:noexact`, or other types for single layers,
/// `tbq4_0/tbq3_0@k0=tbq5_1;v0-1=tbq4_0` (llama.cpp's `--cache-type-layers` spec with `;` for
/// its commas, which separate configurations in a list).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvConfig {
    pub k: String,
    pub v: String,
    /// false: run with `LLAMA_ATTN_ROT_DISABLE=1`.
    pub attn_rot: bool,
    /// tbq key centring (patches/0007), on by default for tbq keys; false for every other key type
    /// and for `:nocentre` (`LLAMA_TBQ_KEY_CENTRE_DISABLE=1`). Results stored before the option
    /// existed read as false: they were measured without it.
    #[serde(default)]
    pub key_centre: bool,
    /// tbq exact keys (patches/0012: the first cell's key kept as f16 beside the cache), on by
    /// default for tbq keys; false for every other key type and for `:noexact`
    /// (`LLAMA_TBQ_EXACT_KEYS=0`). Results stored before the option existed read as false.
    #[serde(default)]
    pub exact_keys: bool,
    /// Per-layer overrides as llama.cpp reads them (`LLAMA_KV_LAYER_TYPES`, patches/0008), in
    /// the planner's canonical form (`tbq::plan::LayerTypes::spec`); None: every layer K/V.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
}

fn is_tbq(t: &str) -> bool {
    t.starts_with("tbq")
}

impl FromStr for KvConfig {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (s_pair, spec) = match s.split_once('@') {
            Some((p, l)) => (p, Some(l)),
            None => (s, None),
        };
        let (pair, opt) = match s_pair.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (s_pair, None),
        };
        let (k, v) = pair.split_once('/').with_context(|| {
            format!("'{s}' is not a K/V pair (like tbq4_0/tbq3_0 or q4_0/q4_0:norot)")
        })?;
        for t in [k, v] {
            if bits_per_element(t).is_none() {
                bail!("'{t}' in '{s}' is not a KV-cache type this tool knows (f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl, tbq4_0, tbq3_0)");
            }
        }
        let (mut attn_rot, mut key_centre, mut exact_keys) = (true, is_tbq(k), is_tbq(k));
        for o in opt.into_iter().flat_map(|o| o.split(':')) {
            match o {
                "rot" => attn_rot = true,
                "norot" => attn_rot = false,
                "nocentre" if is_tbq(k) => key_centre = false,
                "nocentre" => bail!("':nocentre' in '{s}': only tbq keys are centred"),
                "noexact" if is_tbq(k) => exact_keys = false,
                "noexact" => bail!("':noexact' in '{s}': only tbq keys keep exact sink keys"),
                o => bail!("unknown option ':{o}' in '{s}' (there are ':norot', ':nocentre' and ':noexact')"),
            }
        }
        let layers = match spec {
            None => None,
            Some(spec) => {
                let types =
                    layer_types(k, v, &spec.replace(';', ",")).with_context(|| format!("'{s}'"))?;
                Some(types.spec()).filter(|s| !s.is_empty())
            }
        };
        Ok(KvConfig {
            k: k.into(),
            v: v.into(),
            attn_rot,
            key_centre,
            exact_keys,
            layers,
        })
    }
}

/// The planner's view of `k`/`v` with the per-layer `spec`.
fn layer_types(k: &str, v: &str, spec: &str) -> Result<tbq::plan::LayerTypes> {
    use tbq::plan::{CacheType, LayerTypes};
    Ok(LayerTypes::with_spec(
        CacheType::parse(k)?,
        CacheType::parse(v)?,
        spec,
    )?)
}

impl fmt::Display for KvConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.v)?;
        if !self.attn_rot {
            write!(f, ":norot")?;
        }
        if self.uncentred_tbq() {
            write!(f, ":nocentre")?;
        }
        if self.tbq_without_exact_keys() {
            write!(f, ":noexact")?;
        }
        if let Some(spec) = &self.layers {
            write!(f, "@{}", spec.replace(',', ";"))?;
        }
        Ok(())
    }
}

impl KvConfig {
    /// A file-name-safe name: `q4_0-q4_0-norot`.
    pub fn slug(&self) -> String {
        let mut s = format!("{}-{}", self.k, self.v);
        if !self.attn_rot {
            s.push_str("-norot");
        }
        if self.uncentred_tbq() {
            s.push_str("-nocentre");
        }
        if self.tbq_without_exact_keys() {
            s.push_str("-noexact");
        }
        if let Some(spec) = &self.layers {
            // a spec can name every layer: a hash keeps the file name short
            let h = spec.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            s.push_str(&format!("-L{:08x}", h as u32));
        }
        s
    }

    /// The types of every layer, as the planner sees them (None for a type it does not know).
    pub fn layer_types(&self) -> Option<tbq::plan::LayerTypes> {
        layer_types(&self.k, &self.v, self.layers.as_deref().unwrap_or("")).ok()
    }

    /// tbq keys stored without the key offset subtracted.
    fn uncentred_tbq(&self) -> bool {
        is_tbq(&self.k) && !self.key_centre
    }

    /// tbq keys without exact sink keys.
    fn tbq_without_exact_keys(&self) -> bool {
        is_tbq(&self.k) && !self.exact_keys
    }

    /// Mean bits per element of K and V as llama.cpp stores them on `shape`'s layers (per-layer
    /// types, and the 64-wide variants a tbq type takes on heads of 64), weighted by their rows'
    /// elements, with the f16 exact keys of the first cells spread over a context of `n_ctx`
    /// cells; without a shape, K and V of equal head sizes.
    pub fn bits_per_element(&self, shape: Option<&tbq::plan::ModelShape>, n_ctx: u32) -> f64 {
        let exact_rows = if self.exact_keys {
            tbq::plan::EXACT_KEYS as f64 / n_ctx.max(1) as f64
        } else {
            0.0
        };
        match (shape, self.layer_types()) {
            (Some(shape), Some(types)) => {
                let k = tbq::plan::tbq_key_elems(shape, &types, |_| true);
                let all: u64 = shape.layers.iter().map(|l| l.k_elems() + l.v_elems()).sum();
                types.mean_bits(shape) + 16.0 * exact_rows * k as f64 / all.max(1) as f64
            }
            _ => {
                (bits_per_element(&self.k).unwrap() + bits_per_element(&self.v).unwrap()) / 2.0
                    + 8.0 * exact_rows
            }
        }
    }

    /// Environment the run needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![];
        if !self.attn_rot {
            env.push(("LLAMA_ATTN_ROT_DISABLE", "1".into()));
        }
        if self.uncentred_tbq() {
            env.push(("LLAMA_TBQ_KEY_CENTRE_DISABLE", "1".into()));
        }
        if self.tbq_without_exact_keys() {
            env.push(("LLAMA_TBQ_EXACT_KEYS", "0".into()));
        }
        if let Some(spec) = &self.layers {
            env.push(("LLAMA_KV_LAYER_TYPES", spec.clone()));
        }
        env
    }

    /// The label of a table row: `q4_0/q4_0 (attn_rot)` when llama.cpp reported that it rotated
    /// the cache, `(no rot)` when this configuration turned it off.
    pub fn label(&self, rotated: Option<bool>) -> String {
        let mut base = format!("{}/{}", self.k, self.v);
        if let Some(spec) = &self.layers {
            // a short spec is the label; a calibrated allocation is counted
            match spec.split(',').count() {
                n if n <= 2 => base.push_str(&format!(" @{}", spec.replace(',', ";"))),
                n => base.push_str(&format!(" +{n} layer types")),
            }
        }
        match (self.attn_rot, rotated) {
            (false, _) => format!("{base} (no rot)"),
            (true, Some(true)) => format!("{base} (attn_rot)"),
            _ if self.uncentred_tbq() => format!("{base} (no centring)"),
            _ if self.tbq_without_exact_keys() => format!("{base} (no exact keys)"),
            _ => base,
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).unwrap())
}

const NUM: &str = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf|-nan)";

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// `Final estimate: PPL = 14.6136 +/- 2.23944` — the perplexity of a plain (base) run.
pub fn parse_final_ppl(log: &str) -> Option<(f64, f64)> {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(&R, &format!(r"Final estimate: PPL = {NUM} \+/- {NUM}"));
    r.captures_iter(log)
        .last()
        .map(|c| (num(&c[1]), num(&c[2])))
}

/// The summary of a `--kl-divergence` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KldStats {
    /// Mean PPL(Q) ± its uncertainty.
    pub ppl: f64,
    pub ppl_err: f64,
    /// Mean PPL(base) over the same tokens (from the stored logits).
    pub ppl_base: f64,
    pub ppl_base_err: f64,
    /// Mean PPL(Q)/PPL(base) ± its uncertainty (the correlated error of the ratio).
    pub ppl_ratio: f64,
    pub ppl_ratio_err: f64,
    pub kld_mean: f64,
    pub kld_mean_err: f64,
    pub kld_median: f64,
    pub kld_p99: f64,
    pub kld_p999: f64,
    pub kld_max: f64,
    /// RMS Δp, percent.
    pub dp_rms: f64,
    /// Same top p, percent ± its uncertainty.
    pub same_top_p: f64,
    pub same_top_p_err: f64,
}

/// Parses the statistics block `llama-perplexity --kl-divergence` prints at the end.
pub fn parse_kld(log: &str) -> Option<KldStats> {
    fn pm(log: &str, label: &str) -> Option<(f64, f64)> {
        let r = Regex::new(&format!(
            r"(?m)^{}\s*:\s*{NUM}\s*±\s*{NUM}",
            regex::escape(label)
        ))
        .unwrap();
        r.captures_iter(log)
            .last()
            .map(|c| (num(&c[1]), num(&c[2])))
    }
    fn one(log: &str, label: &str) -> Option<f64> {
        let r = Regex::new(&format!(r"(?m)^{}\s*:\s*{NUM}", regex::escape(label))).unwrap();
        r.captures_iter(log).last().map(|c| num(&c[1]))
    }
    let (ppl, ppl_err) = pm(log, "Mean PPL(Q)")?;
    let (ppl_base, ppl_base_err) = pm(log, "Mean PPL(base)")?;
    let (ppl_ratio, ppl_ratio_err) = pm(log, "Mean PPL(Q)/PPL(base)")?;
    let (kld_mean, kld_mean_err) = pm(log, "Mean    KLD")?;
    let (dp_rms, _) = pm(log, "RMS Δp    ")?;
    // "Same top p: 82.157 ± 1.697 %"
    let (same_top_p, same_top_p_err) = pm(log, "Same top p")?;
    Some(KldStats {
        ppl,
        ppl_err,
        ppl_base,
        ppl_base_err,
        ppl_ratio,
        ppl_ratio_err,
        kld_mean,
        kld_mean_err,
        kld_median: one(log, "Median  KLD")?,
        kld_p99: one(log, "99.0%   KLD")?,
        kld_p999: one(log, "99.9%   KLD")?,
        kld_max: one(log, "Maximum KLD")?,
        dp_rms,
        same_top_p,
        same_top_p_err,
    })
}

/// One KV cache llama.cpp created (a model with sliding-window layers has two).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvCacheLine {
    pub cells: u64,
    pub layers: u32,
    pub k_type: String,
    pub v_type: String,
    pub total_mib: f64,
    pub k_mib: f64,
    pub v_mib: f64,
}

/// What llama.cpp reported about its KV caches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KvReport {
    pub caches: Vec<KvCacheLine>,
    /// `attn_rot_k = 1` on any cache (None when the log does not say).
    pub attn_rot_k: Option<bool>,
    pub attn_rot_v: Option<bool>,
}

impl KvReport {
    pub fn total_mib(&self) -> f64 {
        self.caches.iter().map(|c| c.total_mib).sum()
    }
    pub fn k_mib(&self) -> f64 {
        self.caches.iter().map(|c| c.k_mib).sum()
    }
    pub fn v_mib(&self) -> f64 {
        self.caches.iter().map(|c| c.v_mib).sum()
    }
    /// Whether llama.cpp rotated either cache.
    pub fn rotated(&self) -> Option<bool> {
        match (self.attn_rot_k, self.attn_rot_v) {
            (None, None) => None,
            (k, v) => Some(k.unwrap_or(false) || v.unwrap_or(false)),
        }
    }
}

/// Parses `llama_kv_cache: size = 1.70 MiB ( 512 cells, 15 layers, 1/1 seqs), K (tbq4_0):
/// 0.97 MiB, V (tbq3_0): 0.73 MiB` (`K (per layer)` with per-layer types) and `attn_rot_k = 0`
/// lines (needs `-lv 4` or more).
pub fn parse_kv(log: &str) -> KvReport {
    static R: OnceLock<Regex> = OnceLock::new();
    static ROT: OnceLock<Regex> = OnceLock::new();
    let r = re(
        &R,
        &format!(
            r"llama_kv_cache: size =\s*{NUM} MiB \(\s*(\d+) cells,\s*(\d+) layers,[^)]*\), K \((\w+|per layer)\):\s*{NUM} MiB, V \((\w+|per layer)\):\s*{NUM} MiB"
        ),
    );
    let rot = re(&ROT, r"attn_rot_([kv]) = (\d+)");
    let mut out = KvReport::default();
    for c in r.captures_iter(log) {
        out.caches.push(KvCacheLine {
            total_mib: num(&c[1]),
            cells: c[2].parse().unwrap_or(0),
            layers: c[3].parse().unwrap_or(0),
            k_type: c[4].to_string(),
            k_mib: num(&c[5]),
            v_type: c[6].to_string(),
            v_mib: num(&c[7]),
        });
    }
    for c in rot.captures_iter(log) {
        let on = &c[2] != "0";
        let slot = if &c[1] == "k" {
            &mut out.attn_rot_k
        } else {
            &mut out.attn_rot_v
        };
        *slot = Some(slot.unwrap_or(false) || on);
    }
    out
}

/// The number of chunks llama-perplexity announced (`calculating perplexity over 2 chunks` /
/// `computing over 2 chunks`).
pub fn parse_total_chunks(log: &str) -> Option<u64> {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"over (\d+) chunks")
        .captures(log)
        .map(|c| c[1].parse().unwrap())
}

/// The last chunk llama-perplexity finished, from its stdout: `[3]14.61,` in a plain run, a
/// table row `   3      13.6678 ± ...` in a `--kl-divergence` run.
pub fn parse_progress(stdout: &str) -> Option<u64> {
    static PLAIN: OnceLock<Regex> = OnceLock::new();
    static KLD: OnceLock<Regex> = OnceLock::new();
    let a = re(&PLAIN, r"\[(\d+)\][0-9.]+,")
        .captures_iter(stdout)
        .last();
    let b = re(&KLD, r"(?m)^\s*(\d+)\s+[0-9.]+\s+±")
        .captures_iter(stdout)
        .last();
    a.or(b).and_then(|c| c[1].parse().ok())
}

/// Reads a whole log as text (lossy: llama.cpp may print partial UTF-8 of tokens).
pub fn read_log(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KLD_LOG: &str = include_str!("../tests/data/kld-tbq4_0-tbq3_0.log");
    const BASE_LOG: &str = include_str!("../tests/data/base-f16.log");

    #[test]
    fn parses_base_ppl() {
        assert_eq!(parse_final_ppl(BASE_LOG), Some((14.6136, 2.23944)));
        assert_eq!(parse_total_chunks(BASE_LOG), Some(2));
        assert_eq!(parse_progress(BASE_LOG), Some(2));
    }

    #[test]
    fn parses_kld_block() {
        let k = parse_kld(KLD_LOG).unwrap();
        assert_eq!(k.ppl, 17.480359);
        assert_eq!(k.ppl_err, 2.687589);
        assert_eq!(k.ppl_base, 14.409175);
        assert_eq!(k.ppl_ratio, 1.213141);
        assert_eq!(k.ppl_ratio_err, 0.043093);
        assert_eq!(k.kld_mean, 0.141437);
        assert_eq!(k.kld_mean_err, 0.010995);
        assert_eq!(k.kld_p99, 0.978052);
        assert_eq!(k.kld_p999, 2.935558);
        assert_eq!(k.kld_median, 0.079537);
        assert_eq!(k.kld_max, 3.721622);
        assert_eq!(k.dp_rms, 10.772);
        assert_eq!(k.same_top_p, 82.157);
        assert_eq!(k.same_top_p_err, 1.697);
        assert_eq!(parse_progress(KLD_LOG), Some(2));
        assert!(parse_kld(BASE_LOG).is_none());
    }

    #[test]
    fn parses_kv_lines() {
        let kv = parse_kv(KLD_LOG);
        assert_eq!(kv.caches.len(), 2);
        assert_eq!(kv.caches[0].cells, 512);
        assert_eq!(kv.caches[0].layers, 3);
        assert_eq!(kv.caches[1].layers, 15);
        assert_eq!(kv.caches[1].k_type, "tbq4_0");
        assert_eq!(kv.caches[1].v_type, "tbq3_0");
        assert!((kv.total_mib() - 2.04).abs() < 1e-9);
        assert!((kv.k_mib() - 1.16).abs() < 1e-9);
        assert_eq!(kv.rotated(), Some(false));
    }

    #[test]
    fn parses_per_layer_kv_lines() {
        // as the patched llama-perplexity printed it with --cache-type-layers (patches/0008)
        let log = "0.01.254.480 I llama_kv_cache: size =    0.50 MiB (   512 cells,   3 layers,  1/1 seqs), K (per layer):    0.22 MiB, V (per layer):    0.28 MiB\n";
        let kv = parse_kv(log);
        assert_eq!(kv.caches.len(), 1);
        assert_eq!(kv.caches[0].k_type, "per layer");
        assert_eq!((kv.k_mib(), kv.v_mib(), kv.total_mib()), (0.22, 0.28, 0.50));
    }

    #[test]
    fn kv_config_round_trip() {
        let c: KvConfig = "q4_0/q4_0:norot".parse().unwrap();
        assert!(!c.attn_rot);
        assert_eq!(c.to_string(), "q4_0/q4_0:norot");
        assert_eq!(c.slug(), "q4_0-q4_0-norot");
        assert_eq!(c.env(), vec![("LLAMA_ATTN_ROT_DISABLE", "1".to_string())]);
        assert_eq!(c.label(Some(true)), "q4_0/q4_0 (no rot)");
        let t: KvConfig = "tbq4_0/tbq3_0".parse().unwrap();
        // the first cell's f16 key (16 of the pair's 2 · 512 elements' bits per 512-cell context)
        assert_eq!(t.bits_per_element(None, 512), 3.625 + 8.0 / 512.0);
        let n: KvConfig = "tbq4_0/tbq3_0:noexact".parse().unwrap();
        assert_eq!(n.bits_per_element(None, 512), 3.625);
        assert_eq!(n.to_string(), "tbq4_0/tbq3_0:noexact");
        assert_eq!(n.slug(), "tbq4_0-tbq3_0-noexact");
        assert_eq!(n.env(), vec![("LLAMA_TBQ_EXACT_KEYS", "0".to_string())]);
        assert_eq!(n.label(Some(false)), "tbq4_0/tbq3_0 (no exact keys)");
        assert!("q4_0/q4_0:noexact".parse::<KvConfig>().is_err());
        assert_eq!(t.label(Some(false)), "tbq4_0/tbq3_0");
        assert_eq!(
            "q4_0/q4_0".parse::<KvConfig>().unwrap().label(Some(true)),
            "q4_0/q4_0 (attn_rot)"
        );
        assert!("q4_0".parse::<KvConfig>().is_err());
        assert!("q4_0/q9_9".parse::<KvConfig>().is_err());
        assert!("q4_0/q4_0:fast".parse::<KvConfig>().is_err());
    }

    #[test]
    fn key_centring_option() {
        let t: KvConfig = "tbq4_0/tbq3_0".parse().unwrap();
        assert!(t.key_centre && t.env().is_empty());
        let n: KvConfig = "tbq4_0/tbq3_0:nocentre".parse().unwrap();
        assert!(!n.key_centre);
        assert_eq!(n.to_string(), "tbq4_0/tbq3_0:nocentre");
        assert_eq!(n.slug(), "tbq4_0-tbq3_0-nocentre");
        assert_eq!(
            n.env(),
            vec![("LLAMA_TBQ_KEY_CENTRE_DISABLE", "1".to_string())]
        );
        assert_eq!(n.label(Some(false)), "tbq4_0/tbq3_0 (no centring)");
        assert_eq!(n.to_string().parse::<KvConfig>().unwrap(), n);
        // only tbq keys are centred: q8_0 keys with tbq values are not, and cannot be asked not to be
        assert!(!"q8_0/tbq3_0".parse::<KvConfig>().unwrap().key_centre);
        assert!("q8_0/tbq3_0:nocentre".parse::<KvConfig>().is_err());
        // a result stored before the options existed was measured without centring or exact keys
        let old: KvConfig =
            serde_json::from_str(r#"{"k":"tbq4_0","v":"tbq3_0","attn_rot":true}"#).unwrap();
        assert_eq!(old, "tbq4_0/tbq3_0:nocentre:noexact".parse().unwrap());
    }

    #[test]
    fn per_layer_types() {
        let c: KvConfig = "tbq4_0/tbq3_0@v1=tbq4_0;k0-1=tbq5_1;v0=tbq4_0"
            .parse()
            .unwrap();
        // canonical: ranges merged, K before V, commas in the stored spec
        assert_eq!(c.layers.as_deref(), Some("k0-1=tbq5_1,v0-1=tbq4_0"));
        assert_eq!(c.to_string(), "tbq4_0/tbq3_0@k0-1=tbq5_1;v0-1=tbq4_0");
        assert_eq!(c.to_string().parse::<KvConfig>().unwrap(), c);
        assert!(
            c.slug().starts_with("tbq4_0-tbq3_0-L")
                && c.slug().len() == "tbq4_0-tbq3_0-L".len() + 8
        );
        assert_eq!(
            c.env(),
            vec![(
                "LLAMA_KV_LAYER_TYPES",
                "k0-1=tbq5_1,v0-1=tbq4_0".to_string()
            )]
        );
        assert_eq!(
            c.label(Some(false)),
            "tbq4_0/tbq3_0 @k0-1=tbq5_1;v0-1=tbq4_0"
        );
        let many: KvConfig = "f16/f16@k0=q8_0;k2=q8_0;v5=q4_0".parse().unwrap();
        assert_eq!(many.label(None), "f16/f16 +3 layer types");
        // without a model the mean is K/V's; an override equal to the default is none
        assert_eq!(
            c.bits_per_element(None, u32::MAX),
            3.625 + 8.0 / u32::MAX as f64
        );
        let same: KvConfig = "tbq4_0/tbq3_0@k3=tbq4_0".parse().unwrap();
        assert_eq!(same, "tbq4_0/tbq3_0".parse::<KvConfig>().unwrap());
        assert!("tbq4_0/tbq3_0@k0=q9_9".parse::<KvConfig>().is_err());
        assert!("tbq4_0/tbq3_0@x0=f16".parse::<KvConfig>().is_err());
        // results stored before the field existed read as uniform
        let old: KvConfig = serde_json::from_str(
            r#"{"k":"tbq4_0","v":"tbq3_0","attn_rot":true,"key_centre":true}"#,
        )
        .unwrap();
        assert_eq!(old.layers, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("layers"));
    }

    #[test]
    fn bits() {
        assert_eq!(bits_per_element("q8_0"), Some(8.5));
        assert_eq!(bits_per_element("q4_0"), Some(4.5));
        assert_eq!(bits_per_element("tbq4_0"), Some(4.125));
        assert_eq!(bits_per_element("tbq3_0"), Some(3.125));
        assert_eq!(bits_per_element("nope"), None);
    }
}
