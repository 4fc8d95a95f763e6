//! The autoresearcher: sweeps llama-server configurations and measures each one.
//!
//! Phase 1 varies each axis of the search space alone from the base configuration; phase 2 takes
//! the best value of every axis together and tries the neighbours of each. Every measurement is
//! appended to `results.jsonl` (written, flushed and fsynced) the moment it is known; an
//! experiment is finished when its `"kind": "experiment"` record is written, and `--resume`
//! skips finished experiment ids. Configurations the planner says cannot fit, or that
//! llama.cpp would refuse, are recorded as skipped with the reason, without starting a server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use toml::Spanned;

use crate::client::Client;
use crate::config::{line_col, parse_toml, Profile};
use crate::error::{fail, is_disk_full, Exit};
use crate::measure::{self, MemorySampler, PromptSet};
use crate::server::{self, Launch, Server};
use tbq::plan::{self, CacheType, ModelShape};

/// The axes a search space may vary: profile fields, plus `cache_types` ("k/v" pairs).
pub const AXES: &[&str] = &[
    "n_gpu_layers",
    "ctx_size",
    "cache_type_k",
    "cache_type_v",
    "cache_types",
    "flash_attn",
    "threads",
    "threads_batch",
    "batch_size",
    "ubatch_size",
    "parallel",
    "kv_unified",
    "swa_full",
    "mmap",
    "mlock",
    "draft_model",
    "draft_max",
];

/// A search-space file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// The base configuration.
    pub base: Profile,
    /// Axis name → values, in order (neighbours in phase 2 are adjacent values).
    pub axes: BTreeMap<String, Spanned<Vec<toml::Value>>>,
    /// What to measure.
    #[serde(default)]
    pub measure: MeasureSettings,
    /// Phase 2.
    #[serde(default)]
    pub phase2: Phase2Settings,
}

/// `[measure]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureSettings {
    /// Quality prompts file (relative to the search-space file); default: the shipped prompts.
    pub prompts: Option<PathBuf>,
    /// Use only the first N prompts.
    pub max_prompts: Option<usize>,
    /// Prompt length of the speed test, tokens.
    pub speed_prompt_tokens: usize,
    /// Tokens generated in the speed test.
    pub speed_decode_tokens: u32,
    /// Fraction of the slot's context filled for the recall test (0 disables it).
    pub recall_fill: f64,
    /// Seconds to wait for /health.
    pub health_timeout_s: u64,
    /// Seconds one request may take.
    pub request_timeout_s: u64,
    /// Memory the configuration may use (KV + weights), MiB; default: available host memory, or
    /// free GPU memory when layers are offloaded and nvidia-smi sees a GPU.
    pub memory_budget_mib: Option<u64>,
    /// Quality lost that still counts as "as good" when picking the fastest (phase 2), 0–1.
    pub quality_tolerance: f64,
}

impl Default for MeasureSettings {
    fn default() -> Self {
        MeasureSettings {
            prompts: None,
            max_prompts: None,
            speed_prompt_tokens: 256,
            speed_decode_tokens: 32,
            recall_fill: 0.8,
            health_timeout_s: 300,
            request_timeout_s: 600,
            memory_budget_mib: None,
            quality_tolerance: 0.1,
        }
    }
}

/// `[phase2]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Phase2Settings {
    /// Run phase 2.
    pub enabled: bool,
    /// At most this many phase-2 experiments.
    pub max_experiments: usize,
}

impl Default for Phase2Settings {
    fn default() -> Self {
        Phase2Settings {
            enabled: true,
            max_experiments: 8,
        }
    }
}

/// An example search space (`tbq-agent research --example`).
pub const EXAMPLE: &str = r#"# tbq-agent research search space
[base]
model = "~/.cache/tbq/models/gemma-3-270m-q4_k_m.gguf"
ctx_size = 4096
cache_type_k = "f16"
cache_type_v = "f16"
flash_attn = "on"
n_gpu_layers = 0
threads = 2
parallel = 1

[axes]
# Each axis is varied alone from [base] (phase 1); then the best values together, and their
# neighbours (phase 2). Axes: n_gpu_layers ctx_size cache_type_k cache_type_v cache_types
# flash_attn threads threads_batch batch_size ubatch_size parallel kv_unified swa_full mmap mlock
# draft_model draft_max
cache_types = ["f16/f16", "q8_0/q8_0", "tbq4_0/tbq3_0"]
threads = [1, 2]
# ctx_size = [4096, 16384, 65536]
# ubatch_size = [256, 512]

[measure]
# prompts = "my-prompts.toml"     # relative to this file; default: the shipped prompts
# max_prompts = 5
speed_prompt_tokens = 256
speed_decode_tokens = 32
recall_fill = 0.8                 # fraction of the context filled before asking for the fact
health_timeout_s = 300
# memory_budget_mib = 24000       # default: available memory
quality_tolerance = 0.1

[phase2]
enabled = true
max_experiments = 8
"#;

/// One configuration to try.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Stable id: a hash of the configuration.
    pub id: String,
    /// 1 or 2.
    pub phase: u8,
    /// What differs from the base.
    pub label: String,
    /// The full configuration.
    pub profile: Profile,
}

impl SearchSpace {
    /// Reads and checks a search-space file; errors name the line and column.
    pub fn load(path: &Path) -> Result<SearchSpace> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::error::wrap(e,
                fail(Exit::Input, format!("cannot read the search space {}", path.display()))
                    .fix("check the path; tbq-agent research --example prints a search space to start from"),
            )
        })?;
        let mut space: SearchSpace = parse_toml(&text, path)?;
        let at = |span: std::ops::Range<usize>| {
            let (l, c) = line_col(&text, span.start);
            format!("{}:{l}:{c}", path.display())
        };
        if space.axes.is_empty() {
            return Err(
                fail(Exit::Input, format!("{}: [axes] is empty", path.display()))
                    .fix("add at least one axis, e.g. threads = [1, 2]")
                    .into(),
            );
        }
        for (name, values) in &space.axes {
            if !AXES.contains(&name.as_str()) {
                return Err(fail(
                    Exit::Input,
                    format!("{}: unknown axis {name:?}", at(values.span())),
                )
                .fix(format!("axes are: {}", AXES.join(", ")))
                .into());
            }
            if values.get_ref().is_empty() {
                return Err(fail(
                    Exit::Input,
                    format!("{}: axis {name:?} has no values", at(values.span())),
                )
                .into());
            }
            for v in values.get_ref() {
                apply(&space.base, name, v).map_err(|e| {
                    fail(Exit::Input, format!("{}: axis {name:?}: value {v}: {e}", at(values.span())))
                        .fix("give values of the axis's type (numbers for sizes and threads, strings for types, true/false for switches)")
                })?;
            }
        }
        if space.base.model.is_none() {
            return Err(fail(
                Exit::Input,
                format!("{}: [base] has no model", path.display()),
            )
            .fix("add model = \"/path/to/model.gguf\" under [base]")
            .into());
        }
        if let Some(p) = &space.measure.prompts {
            if p.is_relative() {
                space.measure.prompts = Some(path.parent().unwrap_or(Path::new(".")).join(p));
            }
        }
        if !(0.0..=0.98).contains(&space.measure.recall_fill) {
            return Err(fail(
                Exit::Input,
                format!("{}: recall_fill must be between 0 and 0.98", path.display()),
            )
            .into());
        }
        Ok(space)
    }

    /// The base configuration with each axis at its base value (the base's own setting if it is
    /// one of the axis's values, else the axis's first value).
    pub fn base_profile(&self) -> Profile {
        let mut p = self.base.clone();
        for (name, values) in &self.axes {
            // Set explicitly even when it is llama-server's default, so that the base and an
            // experiment with the same value are the same configuration (and id).
            let current = axis_value(&p, name).filter(|c| values.get_ref().contains(c));
            p = apply(&p, name, current.as_ref().unwrap_or(&values.get_ref()[0]))
                .expect("checked on load");
        }
        p
    }

    /// Phase 1: the base, then each axis's other values alone.
    pub fn phase1(&self) -> Vec<Planned> {
        let base = self.base_profile();
        let mut out = vec![planned(1, &base, &base)];
        for (name, values) in &self.axes {
            for v in values.get_ref() {
                let p = apply(&base, name, v).expect("checked on load");
                if p != base {
                    out.push(planned(1, &p, &base));
                }
            }
        }
        dedup(out)
    }

    /// Phase 2 from finished phase-1 records: the best value of every axis together, then each
    /// axis's neighbours of it. Deterministic given the records, so a resumed run plans the same.
    pub fn phase2(&self, done: &BTreeMap<String, Value>) -> Vec<Planned> {
        if !self.phase2.enabled {
            return Vec::new();
        }
        let base = self.base_profile();
        let ok: Vec<(&Value, Profile)> = done
            .values()
            .filter(|r| r["status"] == "ok" && r["phase"] == 1)
            .filter_map(|r| {
                serde_json::from_value::<Profile>(r["profile"].clone())
                    .ok()
                    .map(|p| (r, p))
            })
            .collect();
        if ok.is_empty() {
            return Vec::new();
        }
        let best_q = ok
            .iter()
            .map(|(r, _)| r["quality"]["score"].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max);
        let rank = |r: &Value| -> f64 {
            let q = r["quality"]["score"].as_f64().unwrap_or(0.0);
            let recall_ok = r["recall"]["found"].as_bool().unwrap_or(true);
            let good = q + self.measure.quality_tolerance >= best_q && recall_ok;
            decode_tps(r) + if good { 1e9 } else { 0.0 }
        };
        let mut combined = base.clone();
        for (name, values) in &self.axes {
            // Among base + experiments that vary only this axis, the value of the best.
            let best = ok
                .iter()
                .filter(|(_, p)| *p == base || differs_only_in(p, &base, name))
                .max_by(|a, b| rank(a.0).total_cmp(&rank(b.0)));
            if let Some((_, p)) = best {
                if let Some(v) = axis_value(p, name) {
                    if values.get_ref().contains(&v) {
                        combined = apply(&combined, name, &v).expect("checked");
                    }
                }
            }
        }
        let mut out = vec![planned(2, &combined, &base)];
        for (name, values) in &self.axes {
            let vals = values.get_ref();
            if let Some(i) =
                axis_value(&combined, name).and_then(|v| vals.iter().position(|x| *x == v))
            {
                for j in [i.checked_sub(1), Some(i + 1)].into_iter().flatten() {
                    if let Some(v) = vals.get(j) {
                        out.push(planned(
                            2,
                            &apply(&combined, name, v).expect("checked"),
                            &base,
                        ));
                    }
                }
            }
        }
        // Only configurations phase 1 did not already run (phase 1's set is fixed, so a resumed
        // run plans the same phase 2).
        let phase1: BTreeSet<String> = self.phase1().into_iter().map(|p| p.id).collect();
        let mut out: Vec<Planned> = dedup(out)
            .into_iter()
            .filter(|p| !phase1.contains(&p.id))
            .collect();
        out.truncate(self.phase2.max_experiments);
        out
    }
}

fn dedup(v: Vec<Planned>) -> Vec<Planned> {
    let mut seen = BTreeSet::new();
    v.into_iter()
        .filter(|p| seen.insert(p.id.clone()))
        .collect()
}

fn planned(phase: u8, p: &Profile, base: &Profile) -> Planned {
    Planned {
        id: experiment_id(p),
        phase,
        label: p.diff_label(base),
        profile: p.clone(),
    }
}

fn differs_only_in(p: &Profile, base: &Profile, axis: &str) -> bool {
    axis_value(base, axis)
        .and_then(|v| apply(p, axis, &v).ok())
        .as_ref()
        == Some(base)
}

/// The stable id of a configuration: FNV-1a of its canonical JSON (the port excluded).
pub fn experiment_id(p: &Profile) -> String {
    let mut p = p.clone();
    p.port = None;
    let s = serde_json::to_string(&p).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:012x}", h >> 16)
}

/// The value of axis `name` in `p`, as TOML.
fn axis_value(p: &Profile, name: &str) -> Option<toml::Value> {
    if name == "cache_types" {
        let k = p.cache_type_k.clone().unwrap_or_else(|| "f16".into());
        let v = p.cache_type_v.clone().unwrap_or_else(|| "f16".into());
        return Some(toml::Value::String(format!("{k}/{v}")));
    }
    let t = toml::Value::try_from(p).ok()?;
    t.get(name).cloned()
}

/// `p` with axis `name` set to `v`; an error if the value has the wrong type.
fn apply(p: &Profile, name: &str, v: &toml::Value) -> Result<Profile, String> {
    if name == "cache_types" {
        let s = v
            .as_str()
            .ok_or("expected a \"k/v\" string such as \"tbq4_0/tbq3_0\"")?;
        let (k, val) = s
            .split_once('/')
            .ok_or("expected a \"k/v\" string such as \"tbq4_0/tbq3_0\"")?;
        for t in [k, val] {
            CacheType::parse(t).map_err(|e| e.to_string())?;
        }
        return Ok(Profile {
            cache_type_k: Some(k.into()),
            cache_type_v: Some(val.into()),
            ..p.clone()
        });
    }
    if name == "cache_type_k" || name == "cache_type_v" {
        CacheType::parse(v.as_str().ok_or("expected a cache type name")?)
            .map_err(|e| e.to_string())?;
    }
    let mut t = toml::Value::try_from(p).map_err(|e| e.to_string())?;
    t.as_table_mut()
        .ok_or("profile")?
        .insert(name.to_string(), v.clone());
    t.try_into::<Profile>().map_err(|e| e.message().to_string())
}

fn decode_tps(r: &Value) -> f64 {
    r["speed"]["decode_tps"].as_f64().unwrap_or(0.0)
}

/// The results file: append-only JSONL, each record fsynced.
pub struct Jsonl {
    file: File,
    path: PathBuf,
    written: usize,
}

impl Jsonl {
    /// Opens `path` for appending (creating it). If the last line was torn (a crash, a full
    /// disk), a newline is written first so the next record starts on a line of its own.
    pub fn open(path: &Path) -> Result<Jsonl> {
        let mut file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| write_error(path, e, 0))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| write_error(path, e, 0))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .and_then(|_| file.sync_data())
                    .map_err(|e| write_error(path, e, 0))?;
            }
        }
        Ok(Jsonl {
            file,
            path: path.to_path_buf(),
            written: 0,
        })
    }

    /// Appends one record: written in one call, then fsynced.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| write_error(&self.path, e, self.written))?;
        self.written += 1;
        Ok(())
    }
}

fn write_error(path: &Path, e: std::io::Error, written: usize) -> anyhow::Error {
    let what = if is_disk_full(&e) {
        "the disk is full"
    } else {
        "cannot write"
    };
    anyhow::Error::new(fail(
        Exit::Write,
        format!("{what}: {} ({e}); the {written} records written before this one in this run are intact and fsynced", path.display()),
    )
    .fix(if is_disk_full(&e) {
        "free disk space (df -h), then rerun the same command with --resume: finished experiments are skipped"
    } else {
        "check the permissions of --out, or choose another directory; then rerun with --resume"
    }))
}

/// Reads every parsable record of a results file; torn or corrupt lines are counted, not fatal.
pub fn read_records(path: &Path) -> Result<(Vec<Value>, usize)> {
    // Only a regular file holds records (not a device such as /dev/full, nor a pipe).
    if !std::fs::metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        return Ok((Vec::new(), 0));
    }
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => out.push(v),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Finished experiments by id (the last terminal record of each).
pub fn finished(records: &[Value]) -> BTreeMap<String, Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "experiment")
        .filter_map(|r| r["id"].as_str().map(|id| (id.to_string(), r.clone())))
        .collect()
}

/// Options of one research run.
pub struct Options {
    /// The search-space file.
    pub space: PathBuf,
    /// Output directory (results.jsonl, logs/, report.md, report.png).
    pub out: PathBuf,
    /// Continue a killed run.
    pub resume: bool,
    /// Start over: an existing results file is renamed, never deleted.
    pub fresh: bool,
    /// Override the prompts file.
    pub prompts: Option<PathBuf>,
    /// Plan only: print the experiments and what the planner says.
    pub dry_run: bool,
    /// llama-server.
    pub llama_server: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The memory a configuration may use, and where the figure comes from.
fn budget(space: &SearchSpace, p: &Profile) -> (u64, String) {
    if let Some(mib) = space.measure.memory_budget_mib {
        return (mib << 20, "memory_budget_mib".into());
    }
    let gpus = server::nvidia_gpus();
    if p.n_gpu_layers.unwrap_or(0) != 0 && !gpus.is_empty() {
        let free: u64 = gpus
            .iter()
            .map(|g| g.memory_total.saturating_sub(g.memory_used))
            .sum();
        return (free, "free GPU memory (nvidia-smi)".into());
    }
    match server::meminfo() {
        Some((_, avail)) => (avail, "available host memory (/proc/meminfo)".into()),
        None => (u64::MAX, "unknown".into()),
    }
}

/// What the planner says of a configuration: the KV size, and a reason to skip it if any.
pub fn plan_check(shape: &ModelShape, space: &SearchSpace, p: &Profile) -> (Value, Option<String>) {
    let parse = |s: &Option<String>| CacheType::parse(s.as_deref().unwrap_or("f16"));
    let (k, v) = match (parse(&p.cache_type_k), parse(&p.cache_type_v)) {
        (Ok(k), Ok(v)) => (k, v),
        (Err(e), _) | (_, Err(e)) => return (Value::Null, Some(e.to_string())),
    };
    if v.needs_flash_attn_as_v() && p.flash_attn.as_deref() == Some("off") {
        return (
            Value::Null,
            Some(format!(
                "llama.cpp needs flash attention for a quantized V cache ({v}); flash_attn is off"
            )),
        );
    }
    let cfg = p.cache_config();
    let size = match plan::kv_bytes(shape, k, v, &cfg) {
        Ok(s) => s,
        Err(e) => return (Value::Null, Some(e.to_string())),
    };
    let weights: u64 = [p.model_path(), p.draft_model.clone()]
        .into_iter()
        .flatten()
        .filter_map(|m| std::fs::metadata(crate::config::expand_tilde(&m)).ok())
        .map(|m| m.len())
        .sum();
    let (budget, source) = budget(space, p);
    // The largest context that fits, capped at the training context (beyond it the model is
    // not meant to work).
    let fit = plan::max_context(shape, k, v, &cfg, budget.saturating_sub(weights))
        .ok()
        .flatten();
    let max_ctx = fit.map(|n| {
        if shape.n_ctx_train > 0 {
            n.min(shape.n_ctx_train)
        } else {
            n
        }
    });
    let need = size.total() + weights;
    let info = json!({
        "n_ctx": size.n_ctx,
        "kv_bytes": size.total(),
        "kv_mib": mib(size.total()),
        "kv_full": cache_json(&size.full), "kv_swa": size.swa.as_ref().map(cache_json),
        "weights_bytes": weights,
        "budget_bytes": budget, "budget_source": source,
        "max_ctx_in_budget": max_ctx,
        "max_ctx_fit": fit,
    });
    let reason = (need > budget).then(|| {
        format!(
            "needs {:.0} MiB (KV {:.1} MiB + weights {:.0} MiB) but the budget is {:.0} MiB ({source})",
            mib(need), mib(size.total()), mib(weights), mib(budget)
        )
    });
    (info, reason)
}

/// A planner cache size as JSON.
pub fn cache_json(c: &plan::CacheSize) -> Value {
    json!({ "cells": c.cells, "streams": c.streams, "layers": c.layers, "k_bytes": c.k_bytes, "v_bytes": c.v_bytes })
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// Parses llama.cpp's `llama_kv_cache: size = X MiB (N cells, L layers, ...)` lines: total MiB
/// over all caches, and (cells, layers, MiB) of each.
pub fn server_kv_sizes(log: &str) -> Vec<(u64, u64, f64)> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("llama_kv_cache: size =").nth(1) else {
            continue;
        };
        let mut it = rest.split(['(', ',', ')']);
        let size = it
            .next()
            .and_then(|s| s.trim().trim_end_matches("MiB").trim().parse::<f64>().ok());
        let cells = it
            .next()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        let layers = it
            .next()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let (Some(s), Some(c), Some(l)) = (size, cells, layers) {
            out.push((c, l, s));
        }
    }
    out
}

/// Runs (or resumes) a research run; returns the path of the report.
pub fn run(opts: &Options) -> Result<PathBuf> {
    let space = SearchSpace::load(&opts.space)?;
    let mut prompts =
        PromptSet::load(opts.prompts.as_deref().or(space.measure.prompts.as_deref()))?;
    if let Some(n) = space.measure.max_prompts {
        prompts.prompts.truncate(n.max(1));
    }
    let model = space.base.model_path().expect("checked on load");
    server::check_model(&model)?;
    let shape = ModelShape::open(&model).map_err(|e| {
        fail(
            Exit::Input,
            format!(
                "cannot read the model's metadata ({}): {e}",
                model.display()
            ),
        )
    })?;
    let results = opts.out.join("results.jsonl");

    if opts.dry_run {
        println!(
            "{} experiments in phase 1 (phase 2 is planned from their results):",
            space.phase1().len()
        );
        for e in space.phase1() {
            let (plan, skip) = plan_check(&shape, &space, &e.profile);
            println!(
                "  {}  {:<40} KV {:>8.1} MiB  {}",
                e.id,
                e.label,
                plan["kv_mib"].as_f64().unwrap_or(0.0),
                skip.map(|s| format!("SKIP: {s}")).unwrap_or_default()
            );
        }
        return Ok(results);
    }

    std::fs::create_dir_all(opts.out.join("logs")).map_err(|e| {
        crate::error::wrap(
            e,
            fail(Exit::Write, format!("cannot create {}", opts.out.display()))
                .fix("choose a writable --out directory"),
        )
    })?;
    let exists = std::fs::metadata(&results)
        .map(|m| m.is_file() && m.len() > 0)
        .unwrap_or(false);
    if exists && !opts.resume {
        if opts.fresh {
            let bak = results.with_extension(format!("jsonl.{}.bak", now() as u64));
            std::fs::rename(&results, &bak)?;
            eprintln!("moved the previous results to {}", bak.display());
        } else {
            return Err(fail(Exit::Input, format!("{} already holds results", results.display()))
                .fix("pass --resume to continue that run, --fresh to start over (the old file is kept as a .bak), or another --out")
                .into());
        }
    }
    let (records, torn) = read_records(&results)?;
    if torn > 0 {
        tracing::warn!(
            "{torn} torn or unreadable line(s) in {} ignored (an interrupted write)",
            results.display()
        );
    }
    let mut done = finished(&records);
    let mut out = Jsonl::open(&results)?;
    out.append(&json!({
        "kind": "run", "ts": now(), "resume": opts.resume, "space": opts.space, "model": model,
        "arch": shape.arch, "llama_server": opts.llama_server, "agent": env!("CARGO_PKG_VERSION"),
        "host": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                  "mem_total": server::meminfo().map(|m| m.0), "gpus": server::nvidia_gpus() },
        "prompts": prompts.prompts.len(), "measure": space.measure, "finished_before": done.len(),
    }))?;
    if opts.resume && !done.is_empty() {
        eprintln!(
            "resuming: {} experiment(s) already finished in {}",
            done.len(),
            results.display()
        );
    }

    let client = Client::new(Duration::from_secs(space.measure.request_timeout_s), None);
    for phase in [1u8, 2] {
        let plan = if phase == 1 {
            space.phase1()
        } else {
            space.phase2(&done)
        };
        let todo: Vec<&Planned> = plan.iter().filter(|e| !done.contains_key(&e.id)).collect();
        if plan.is_empty() {
            if phase == 2 && space.phase2.enabled {
                eprintln!("phase 2: nothing new to try: the best value of every axis together, and their neighbours, were all run in phase 1");
            }
            continue;
        }
        eprintln!(
            "phase {phase}: {} experiment(s), {} to run",
            plan.len(),
            todo.len()
        );
        let pb = if opts.progress {
            ProgressBar::new(todo.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed}]")
                .unwrap()
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("phase {phase}"));
        for e in todo {
            server::check_stop()?;
            pb.set_message(e.label.clone());
            let rec = experiment(&space, &shape, &prompts, &client, opts, e, &mut out, &pb)?;
            let line = summary_line(&rec);
            if pb.is_hidden() {
                eprintln!("  {line}");
            } else {
                pb.println(format!("  {line}"));
            }
            done.insert(e.id.clone(), rec);
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    let (records, _) = read_records(&results)?;
    crate::report::write(&opts.out, &space, &records)
}

fn summary_line(r: &Value) -> String {
    let id = r["id"].as_str().unwrap_or("?");
    let label = r["label"].as_str().unwrap_or("");
    match r["status"].as_str() {
        Some("ok") => format!(
            "{id} {label}: decode {:.1} tok/s, prefill {:.1} tok/s, quality {:.2}, recall {}",
            decode_tps(r),
            r["speed"]["prefill_tps"].as_f64().unwrap_or(0.0),
            r["quality"]["score"].as_f64().unwrap_or(0.0),
            match r["recall"]["found"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        ),
        Some(s) => format!("{id} {label}: {s}: {}", r["reason"].as_str().unwrap_or("")),
        None => format!("{id} {label}"),
    }
}

/// Runs one experiment; appends its measurements and its terminal record. A configuration that
/// fails (the server will not start, a request fails) is recorded as failed and the run goes on;
/// a stop signal or a write error ends the run.
#[allow(clippy::too_many_arguments)]
fn experiment(
    space: &SearchSpace,
    shape: &ModelShape,
    prompts: &PromptSet,
    client: &Client,
    opts: &Options,
    e: &Planned,
    out: &mut Jsonl,
    pb: &ProgressBar,
) -> Result<Value> {
    let t0 = Instant::now();
    let mut rec = json!({
        "kind": "experiment", "id": e.id, "phase": e.phase, "label": e.label, "profile": e.profile,
    });
    let (plan_info, skip) = plan_check(shape, space, &e.profile);
    rec["plan"] = plan_info;
    if let Some(reason) = skip {
        rec["status"] = json!("skipped");
        rec["reason"] = json!(reason);
        rec["ts"] = json!(now());
        out.append(&rec)?;
        return Ok(rec);
    }
    let m = |out: &mut Jsonl, what: &str, data: Value| -> Result<()> {
        out.append(
            &json!({ "kind": "measure", "id": e.id, "what": what, "ts": now(), "data": data }),
        )
    };
    let sampler = MemorySampler::start(!server::nvidia_gpus().is_empty());
    let log = opts.out.join("logs").join(format!("{}.log", e.id));
    let _ = std::fs::remove_file(&log);
    let mut profile = e.profile.clone();
    profile.port = Some(0);
    let launch = Launch {
        bin: opts.llama_server.clone(),
        profile,
        log: log.clone(),
        extra: vec!["--log-verbosity".into(), "4".into()],
    };

    let result: Result<()> = (|| {
        pb.set_message(format!("{}: starting server", e.label));
        let mut srv = Server::start(&launch)?;
        let load = srv.wait_healthy(
            client,
            Duration::from_secs(space.measure.health_timeout_s),
            false,
        )?;
        rec["load_s"] = json!(load.as_secs_f64());
        let url = srv.url.clone();
        let kv = server_kv_sizes(&server::log_tail(&srv.log, 1 << 20));
        let server_kv_mib: f64 = kv.iter().map(|k| k.2).sum();
        rec["server_kv_mib"] = json!(server_kv_mib);
        m(
            out,
            "health",
            json!({ "load_s": load.as_secs_f64(), "pid": srv.pid, "server_kv": kv, "server_kv_mib": server_kv_mib }),
        )?;

        pb.set_message(format!(
            "{}: quality ({} prompts)",
            e.label,
            prompts.prompts.len()
        ));
        let q = with_server(&mut srv, || {
            measure::quality(client, &url, prompts, true, None)
        })?;
        rec["quality"] = json!({ "score": q.score });
        m(out, "quality", serde_json::to_value(&q)?)?;

        pb.set_message(format!("{}: speed", e.label));
        let s = with_server(&mut srv, || {
            measure::speed(
                client,
                &url,
                space.measure.speed_prompt_tokens,
                space.measure.speed_decode_tokens,
                prompts.api,
            )
        })?;
        rec["speed"] = serde_json::to_value(&s)?;
        m(out, "speed", rec["speed"].clone())?;

        if space.measure.recall_fill > 0.0 {
            pb.set_message(format!("{}: filling the context for recall", e.label));
            let r = with_server(&mut srv, || {
                measure::recall(client, &url, space.measure.recall_fill, prompts.api)
            })?;
            rec["recall"] = serde_json::to_value(&r)?;
            m(out, "recall", rec["recall"].clone())?;
        }
        rec["peak_rss"] = json!(srv.peak_rss());
        srv.stop(Duration::from_secs(10));
        Ok(())
    })();
    let mem = sampler.finish(rec["peak_rss"].as_u64());
    rec["memory"] = serde_json::to_value(&mem)?;
    rec["duration_s"] = json!(t0.elapsed().as_secs_f64());
    rec["ts"] = json!(now());
    match result {
        Ok(()) => rec["status"] = json!("ok"),
        Err(err) => {
            // Signals and write errors end the run (the experiment is redone on --resume).
            let (exit, _) = crate::error::classify(&err);
            if matches!(exit, Exit::Interrupted | Exit::Terminated | Exit::Write) {
                return Err(err);
            }
            rec["status"] = json!("failed");
            rec["reason"] = json!(format!("{err:#}"));
            rec["log"] = json!(log);
        }
    }
    out.append(&rec)?;
    Ok(rec)
}

/// Runs `f`; if it fails because llama-server died, says so (with the log's cause).
fn with_server<T>(srv: &mut Server, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let r = f();
    if r.is_err() {
        server::check_stop()?;
        std::thread::sleep(Duration::from_millis(200));
        if let Some(st) = srv.try_exit() {
            return Err(srv
                .exit_failure(st)
                .context("llama-server died during the measurement"));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(text: &str) -> Result<SearchSpace> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("space.toml");
        std::fs::write(&p, text).unwrap();
        SearchSpace::load(&p)
    }

    #[test]
    fn example_loads_and_plans_phase1() {
        let s = space(EXAMPLE).unwrap();
        let p1 = s.phase1();
        // base + 2 other cache pairs + 1 other thread count.
        assert_eq!(
            p1.len(),
            4,
            "{:?}",
            p1.iter().map(|p| &p.label).collect::<Vec<_>>()
        );
        assert_eq!(p1[0].label, "base");
        let ids: BTreeSet<_> = p1.iter().map(|p| &p.id).collect();
        assert_eq!(ids.len(), 4);
        assert!(p1
            .iter()
            .any(|p| p.label == "cache_type_k=tbq4_0 cache_type_v=tbq3_0"));
    }

    #[test]
    fn malformed_files_name_line_and_column() {
        let e = space("[base]\nmodel = \"m.gguf\"\n[axes]\nthreads = [1, 2\n").unwrap_err();
        let s = format!("{e:#}");
        assert!(s.contains("space.toml:5:1: invalid array"), "{s}");
        assert_eq!(crate::error::classify(&e).0, Exit::Input);
        let e =
            space("[base]\nmodel = \"m.gguf\"\n[axes]\nthreads = [1]\nthredz = [2]\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("space.toml:5:10: unknown axis \"thredz\""),
            "{e:#}"
        );
        let e = space("[base]\nmodel = \"m.gguf\"\n[axes]\nthreads = [\"many\"]\n").unwrap_err();
        assert!(format!("{e:#}").contains("space.toml:4:11"), "{e:#}");
        let e = space("[base]\nmodel = \"m.gguf\"\n[axes]\ncache_types = [\"f16/q9_0\"]\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("q9_0"), "{e:#}");
    }

    #[test]
    fn phase2_combines_the_best_values() {
        let s = space(EXAMPLE).unwrap();
        let p1 = s.phase1();
        let mut done = BTreeMap::new();
        for (i, e) in p1.iter().enumerate() {
            // tbq pair fastest, threads=1 slower.
            let tps = if e.label.contains("tbq4_0") {
                50.0
            } else if e.label.contains("threads=1") {
                10.0
            } else {
                20.0 + i as f64
            };
            done.insert(e.id.clone(), json!({ "status": "ok", "phase": 1, "profile": e.profile,
                "quality": { "score": 0.8 }, "recall": { "found": true }, "speed": { "decode_tps": tps } }));
        }
        let p2 = s.phase2(&done);
        // The combination (tbq pair, 2 threads) was run in phase 1, and so was its cache
        // neighbour (the q8_0 pair, 2 threads = the base's threads); new: tbq with 1 thread.
        let labels: Vec<&str> = p2.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            ["cache_type_k=tbq4_0 cache_type_v=tbq3_0 threads=1"],
            "{labels:?}"
        );
        let phase1: BTreeSet<_> = p1.iter().map(|p| &p.id).collect();
        assert!(p2.iter().all(|p| !phase1.contains(&p.id)));
        assert!(p2.len() <= s.phase2.max_experiments);
    }

    #[test]
    fn jsonl_survives_a_torn_line_and_a_full_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(
            &p,
            "{\"kind\":\"experiment\",\"id\":\"a\"}\n{\"kind\":\"exp",
        )
        .unwrap();
        let mut j = Jsonl::open(&p).unwrap();
        j.append(&json!({"kind": "experiment", "id": "b"})).unwrap();
        let (recs, bad) = read_records(&p).unwrap();
        assert_eq!((recs.len(), bad), (2, 1));
        assert_eq!(finished(&recs).len(), 2);
        // /dev/full: every write fails with ENOSPC.
        if Path::new("/dev/full").exists() {
            let mut j = Jsonl::open(Path::new("/dev/full")).unwrap();
            let e = j.append(&json!({"x": 1})).unwrap_err();
            assert_eq!(crate::error::classify(&e).0, Exit::Write);
            assert!(format!("{e:#}").contains("disk is full"), "{e:#}");
        }
    }

    #[test]
    fn the_planner_skips_what_cannot_fit_or_would_be_refused() {
        use tbq::gguf::write::{metadata_only, WValue};
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        // 64-wide heads (like SmolLM2): tbq is refused.
        metadata_only(
            &mut File::create(&model).unwrap(),
            &[
                ("general.architecture", WValue::Str("llama".into())),
                ("llama.block_count", WValue::U32(30)),
                ("llama.context_length", WValue::U32(8192)),
                ("llama.embedding_length", WValue::U32(576)),
                ("llama.attention.head_count", WValue::U32(9)),
                ("llama.attention.head_count_kv", WValue::U32(3)),
            ],
        )
        .unwrap();
        let text = format!(
            "[base]\nmodel = \"{}\"\nctx_size = 8192\nflash_attn = \"on\"\n[axes]\ncache_types = [\"f16/f16\", \"tbq4_0/tbq3_0\"]\n[measure]\nmemory_budget_mib = 64\n",
            model.display()
        );
        let sp = dir.path().join("s.toml");
        std::fs::write(&sp, text).unwrap();
        let s = SearchSpace::load(&sp).unwrap();
        let shape = ModelShape::open(&model).unwrap();
        let p1 = s.phase1();
        // f16 at 8192 tokens × 30 layers × 2 × 192 × 2 B = 180 MiB > 64 MiB.
        let (info, skip) = plan_check(&shape, &s, &p1[0].profile);
        assert_eq!(info["kv_mib"].as_f64().unwrap(), 180.0);
        assert!(skip.unwrap().contains("budget is 64 MiB"));
        // tbq4_0/tbq3_0 on these 64-wide heads is stored as tbq4_0_64/tbq3_0_64: 8192 × 30 layers
        // × (3 × 34 + 3 × 26) B = 42.2 MiB, within the budget.
        let (info, skip) = plan_check(&shape, &s, &p1[1].profile);
        assert!(skip.is_none(), "{skip:?}");
        assert!(
            (info["kv_mib"].as_f64().unwrap() - 42.2).abs() < 0.1,
            "{info:?}"
        );
        // A quantized V cache without flash attention.
        let p = Profile {
            flash_attn: Some("off".into()),
            cache_type_v: Some("q8_0".into()),
            ..p1[0].profile.clone()
        };
        assert!(plan_check(&shape, &s, &p)
            .1
            .unwrap()
            .contains("flash attention"));
    }

    #[test]
    fn parses_the_servers_kv_lines() {
        let log = "0.01 I llama_kv_cache: size =    3.40 MiB (  5120 cells,   3 layers,  4/1 seqs), K (tbq4_0):    1.93 MiB, V (tbq3_0):    1.46 MiB\n\
                   0.02 I llama_kv_cache: size =    8.50 MiB (  2560 cells,  15 layers,  4/1 seqs), K (tbq4_0):    4.83 MiB, V (tbq3_0):    3.66 MiB\n";
        assert_eq!(
            server_kv_sizes(log),
            vec![(5120, 3, 3.40), (2560, 15, 8.50)]
        );
    }
}
