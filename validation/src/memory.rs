//! `tbq-validate memory`: the KV bytes llama.cpp allocates beside what the crate's planner
//! (`tbq::plan`) predicts, and the largest context per memory budget for a model shape.
//!
//! Measured: llama-server is started for each K/V pair and context, and its own lines
//! (`llama_kv_cache: size = … MiB (… cells, … layers …), K (…): … MiB, V (…): … MiB`) are read,
//! together with the settings it reports (`n_seq_max`, `n_batch`, `n_ubatch`, `kv_unified`),
//! which are handed to the planner: the comparison is of sizes, never of assumed settings.
//! They must agree within 1% (llama.cpp prints MiB with two decimals).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use regex::Regex;
use serde::Serialize;
use serde_json::json;

use tbq::plan::{self, CacheConfig, CacheType, LayerShape, ModelShape};

use crate::common::{say, Common};
use crate::llama::{self, KvConfig};
use crate::proc::write_atomic;
use crate::server::{Server, ServerOpts};

const MIB: f64 = 1024.0 * 1024.0;

/// Agreement required between llama.cpp's report and the planner.
pub const TOLERANCE: f64 = 0.01;

fn cache_type(name: &str) -> Option<CacheType> {
    CacheType::parse(name).ok()
}

/// The planner's prediction for a `llama-perplexity -c ctx -b ctx` run of `c`, in MiB (None when
/// the model or a type is outside what the planner models).
pub fn planned_kv_mib(shape: &ModelShape, c: &KvConfig, ctx: u32) -> Option<f64> {
    let cfg = CacheConfig {
        n_batch: ctx,
        exact_keys: if c.exact_keys { plan::EXACT_KEYS } else { 0 },
        ..CacheConfig::single(ctx)
    };
    let size = plan::kv_bytes_layers(shape, &c.layer_types()?, &cfg).ok()?;
    Some(size.total() as f64 / MIB)
}

#[derive(Args, Clone, Debug)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub common: Common,

    /// Contexts to measure with llama-server (tokens).
    #[arg(short, long, value_delimiter = ',', default_value = "4096,16384,32768")]
    pub contexts: Vec<u32>,

    /// K/V pairs to measure and to tabulate.
    #[arg(
        short,
        long,
        value_delimiter = ',',
        default_value = "f16/f16,q8_0/q8_0,q4_0/q4_0,tbq4_0/tbq4_0,tbq4_0/tbq3_0,tbq3_0/tbq3_0"
    )]
    pub pairs: Vec<String>,

    /// Server slots (`-np`) to measure with.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub parallel: Vec<u32>,

    /// Skip the llama-server measurements; only the planner's desktop table.
    #[arg(long)]
    pub no_measure: bool,

    /// Model shape of the desktop table: name.
    #[arg(long, default_value = "MiniMax-M2.5-like")]
    pub shape_name: String,
    /// Model shape of the desktop table: layers (all full attention).
    #[arg(long, default_value_t = 62)]
    pub layers: u32,
    /// Model shape of the desktop table: KV heads per layer.
    #[arg(long, default_value_t = 8)]
    pub kv_heads: u32,
    /// Model shape of the desktop table: head size of K and V.
    #[arg(long, default_value_t = 128)]
    pub head_dim: u32,
    /// Memory budgets for the KV cache in GiB (what is left for it beside the weights).
    #[arg(short, long, value_delimiter = ',', default_value = "8,16,24,32,48")]
    pub budgets: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub config: KvConfig,
    pub ctx: u32,
    pub parallel: u32,
    /// The settings llama.cpp reported and the planner was given.
    pub n_seq_max: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub kv_unified: bool,
    pub reported_mib: f64,
    /// Per cache (full, then sliding-window): cells, layers, MiB as llama.cpp printed them.
    pub reported: Vec<(u64, u32, f64)>,
    pub planned_mib: Option<f64>,
    pub planned: Vec<(u32, u32, f64)>,
    pub rel_diff: Option<f64>,
    pub ok: bool,
    pub error: Option<String>,
}

fn ctx_setting(log: &str, key: &str) -> Option<String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = R.get_or_init(|| Regex::new(r"llama_context:\s+(\w+)\s+=\s+(\S+)").unwrap());
    r.captures_iter(log)
        .filter(|c| &c[1] == key)
        .last()
        .map(|c| c[2].to_string())
}

fn measure(
    args: &MemoryArgs,
    model: &Path,
    shape: &ModelShape,
    c: &KvConfig,
    ctx: u32,
    np: u32,
    out: &Path,
) -> Measured {
    let mut m = Measured {
        config: c.clone(),
        ctx,
        parallel: np,
        n_seq_max: 0,
        n_batch: 0,
        n_ubatch: 0,
        kv_unified: false,
        reported_mib: 0.0,
        reported: vec![],
        planned_mib: None,
        planned: vec![],
        rel_diff: None,
        ok: false,
        error: None,
    };
    let res = (|| -> Result<()> {
        let log = out
            .join("logs")
            .join(format!("server-{}-c{ctx}-np{np}.log", c.slug()));
        let server = Server::start(&ServerOpts {
            tools: &args.common.tools(),
            model,
            config: c,
            ctx,
            threads: args.common.threads,
            seed: 1,
            log: &log,
            ready_timeout: Duration::from_secs(300),
            parallel: np,
        })?;
        drop(server);
        let text = llama::read_log(&log)?;
        let kv = llama::parse_kv(&text);
        if kv.caches.is_empty() {
            bail!("no llama_kv_cache size line in {}", log.display());
        }
        let num = |k: &str| -> Result<u32> {
            ctx_setting(&text, k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no llama_context: {k} line"))
        };
        m.n_seq_max = num("n_seq_max")?;
        m.n_batch = num("n_batch")?;
        m.n_ubatch = num("n_ubatch")?;
        m.kv_unified = ctx_setting(&text, "kv_unified").as_deref() == Some("true");
        m.reported_mib = kv.total_mib();
        m.reported = kv
            .caches
            .iter()
            .map(|c| (c.cells, c.layers, c.total_mib))
            .collect();
        let cfg = CacheConfig {
            n_ctx: ctx,
            n_seq_max: m.n_seq_max,
            n_batch: m.n_batch,
            n_ubatch: m.n_ubatch,
            kv_unified: m.kv_unified,
            exact_keys: if c.exact_keys { plan::EXACT_KEYS } else { 0 },
            ..CacheConfig::single(ctx)
        };
        let (k, v) = (cache_type(&c.k).unwrap(), cache_type(&c.v).unwrap());
        let size =
            plan::kv_bytes(shape, k, v, &cfg).map_err(|e| anyhow::anyhow!("planner: {e}"))?;
        let p = size.total() as f64 / MIB;
        m.planned_mib = Some(p);
        // llama.cpp creates the full-attention cache first, then the sliding-window one.
        m.planned = std::iter::once(size.full)
            .chain(size.swa)
            .map(|s| (s.cells, s.layers, s.bytes() as f64 / MIB))
            .collect();
        let d = (m.reported_mib - p).abs() / p;
        m.rel_diff = Some(d);
        // Cells and layers must match exactly, bytes within the tolerance.
        let shapes_match = m.reported.len() == m.planned.len()
            && m.reported
                .iter()
                .zip(&m.planned)
                .all(|(r, p)| r.0 == p.0 as u64 && r.1 == p.1);
        m.ok = d <= TOLERANCE && shapes_match;
        if !shapes_match {
            m.error = Some(format!(
                "caches differ: llama.cpp {:?}, planner {:?}",
                m.reported, m.planned
            ));
        }
        Ok(())
    })();
    if let Err(e) = res {
        m.error = Some(format!("{e:#}"));
    }
    m
}

pub fn run(args: &MemoryArgs) -> Result<bool> {
    let out = args.common.out_dir("memory");
    std::fs::create_dir_all(out.join("logs"))?;
    let mut pairs: Vec<KvConfig> = Vec::new();
    for p in args.pairs.iter().flat_map(|s| s.split_whitespace()) {
        let c: KvConfig = p.parse()?;
        if cache_type(&c.k).is_none() || cache_type(&c.v).is_none() {
            bail!("the planner does not know the types of {c}");
        }
        if !pairs.contains(&c) {
            pairs.push(c);
        }
    }
    let mut md = String::new();
    let mut measured = Vec::new();
    let mut all_ok = true;

    if !args.no_measure {
        let model = args.common.model_path()?;
        let shape = ModelShape::open(&model)
            .map_err(|e| anyhow::anyhow!("planner cannot read {}: {e}", model.display()))?;
        let pb = indicatif::ProgressBar::new(
            (pairs.len() * args.contexts.len() * args.parallel.len()) as u64,
        )
        .with_style(crate::common::bar_style());
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        pb.set_prefix("servers");
        for c in &pairs {
            for &ctx in &args.contexts {
                for &np in &args.parallel {
                    pb.set_message(format!("{c} -c {ctx} -np {np}"));
                    let m = measure(args, &model, &shape, c, ctx, np, &out);
                    say(
                        &pb,
                        format!(
                            "[{}] {c} -c {ctx} -np {np}: llama.cpp {:.2} MiB, planner {} {}",
                            if m.ok { "ok" } else { "MISMATCH" },
                            m.reported_mib,
                            m.planned_mib
                                .map(|p| format!("{p:.2} MiB"))
                                .unwrap_or_else(|| "—".into()),
                            m.error.clone().unwrap_or_default()
                        ),
                    );
                    all_ok &= m.ok;
                    measured.push(m);
                    pb.inc(1);
                }
            }
        }
        pb.finish_and_clear();

        let _ = writeln!(
            md,
            "KV cache of {} ({}): what llama-server reports (`llama_kv_cache: size = …`) beside what \
             `tbq::plan::kv_bytes` predicts from the GGUF and the settings llama.cpp reports; they must \
             agree within {:.0}% (cells and layers exactly).\n",
            model.file_name().unwrap().to_string_lossy(),
            describe(&shape),
            TOLERANCE * 100.0
        );
        md.push_str("| K/V | -c | -np | n_seq_max / unified | caches (cells × layers) | llama.cpp MiB | planner MiB | diff | |\n");
        md.push_str("|-----|----|-----|---------------------|-------------------------|---------------|-------------|------|---|\n");
        for m in &measured {
            let caches: Vec<String> = m
                .reported
                .iter()
                .map(|(c, l, _)| format!("{c}×{l}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} / {} | {} | {:.2} | {} | {} | {} |",
                m.config,
                m.ctx,
                m.parallel,
                m.n_seq_max,
                m.kv_unified,
                caches.join(" + "),
                m.reported_mib,
                m.planned_mib
                    .map(|p| format!("{p:.2}"))
                    .unwrap_or_else(|| "—".into()),
                m.rel_diff
                    .map(|d| format!("{:.2}%", 100.0 * d))
                    .unwrap_or_else(|| "—".into()),
                if m.ok {
                    "✓".to_string()
                } else {
                    format!("✗ {}", m.error.clone().unwrap_or_default())
                },
            );
        }
        md.push('\n');
    }

    // The desktop table: the largest context per budget for a model shape.
    let shape = ModelShape {
        arch: "llama".into(),
        name: Some(args.shape_name.clone()),
        layers: vec![
            LayerShape {
                n_head_kv: args.kv_heads,
                head_k: args.head_dim,
                head_v: args.head_dim,
                swa: false
            };
            args.layers as usize
        ],
        n_swa: 0,
        n_ctx_train: 0,
        notes: vec![],
    };
    let cfg = CacheConfig {
        n_seq_max: 1,
        ..CacheConfig::server(0)
    };
    let _ = writeln!(
        md,
        "Largest context whose KV cache fits a memory budget — {} ({} layers × {} KV heads × head_dim {}, \
         all full attention), one sequence (`-np 1`), contexts padded to 256 as llama.cpp does \
         (`tbq::plan::max_context`). Budgets are what is left for the cache beside weights and compute buffers; contexts are not capped at the model's training context.\n",
        args.shape_name, args.layers, args.kv_heads, args.head_dim
    );
    let _ = write!(md, "| K/V | bits/elem | KiB/token |");
    for b in &args.budgets {
        let _ = write!(md, " {b} GiB |");
    }
    let _ = write!(md, " vs f16 |\n|-----|-----------|-----------|");
    for _ in &args.budgets {
        md.push_str("------|");
    }
    md.push_str("--------|\n");
    let mut desktop = Vec::new();
    let f16_bpt = plan::bytes_per_token(&shape, CacheType::F16, CacheType::F16)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for c in &pairs {
        let (k, v) = (cache_type(&c.k).unwrap(), cache_type(&c.v).unwrap());
        let bpt = plan::bytes_per_token(&shape, k, v).map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = write!(
            md,
            "| {c} | {} | {:.1} |",
            // per token of a long context: the exact keys' fixed cost vanishes
            crate::report::bits(c.bits_per_element(None, u32::MAX)),
            bpt as f64 / 1024.0
        );
        let mut fits = Vec::new();
        for &b in &args.budgets {
            let n = plan::max_context(&shape, k, v, &cfg, (b * 1024.0 * MIB) as u64)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = write!(
                md,
                " {} |",
                n.map(|n| n.to_string()).unwrap_or_else(|| "—".into())
            );
            fits.push(json!({"budget_gib": b, "max_context": n}));
        }
        let _ = writeln!(md, " {:.2}× |", f16_bpt as f64 / bpt as f64);
        desktop.push(json!({"config": c, "bytes_per_token": bpt, "fits": fits}));
    }

    let doc = json!({
        "tool": concat!("tbq-validate ", env!("CARGO_PKG_VERSION")),
        "tolerance": TOLERANCE,
        "measured": measured,
        "desktop": {
            "shape": {"name": args.shape_name, "layers": args.layers, "kv_heads": args.kv_heads, "head_dim": args.head_dim},
            "config": {"n_seq_max": 1, "kv_unified": true},
            "rows": desktop,
        },
    });
    write_atomic(
        &out.join("memory.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    write_atomic(&out.join("memory.md"), md.as_bytes())?;
    eprintln!("wrote {}/{{memory.json,memory.md}}", out.display());
    Ok(all_ok)
}

fn describe(s: &ModelShape) -> String {
    let full = s.layers.iter().filter(|l| !l.swa).count();
    let l = s.layers[0];
    let mut d = format!(
        "{} layers, {} KV heads × head_dim {}",
        s.layers.len(),
        l.n_head_kv,
        l.head_k
    );
    if s.has_swa() {
        let _ = write!(
            d,
            ", {full} full-attention + {} sliding-window layers (window {})",
            s.layers.len() - full,
            s.n_swa
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_context_settings_llama_cpp_reports() {
        let log = include_str!("../tests/data/kld-tbq4_0-tbq3_0.log");
        assert_eq!(ctx_setting(log, "n_seq_max").as_deref(), Some("1"));
        assert_eq!(ctx_setting(log, "n_batch").as_deref(), Some("512"));
        assert_eq!(ctx_setting(log, "n_ubatch").as_deref(), Some("512"));
        assert_eq!(ctx_setting(log, "kv_unified").as_deref(), Some("false"));
    }
}
