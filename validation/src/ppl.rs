//! `tbq-validate ppl`: the WikiText-2 perplexity + KL-divergence matrix.
//!
//! The base configuration (f16/f16) runs first and saves its logits
//! (`llama-perplexity --kl-divergence-base`); every other configuration runs with
//! `--kl-divergence` against them, on the same tokens. Each finished configuration is stored at
//! once as `runs/<slug>.json` beside its log, so a killed run resumes where it stopped; a
//! configuration that fails is recorded as failed and the others go on.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use serde::{Deserialize, Serialize};

use crate::common::{bar_style, now_unix, say, Common, FileId};
use crate::llama::{self, KldStats, KvConfig, KvReport};
use crate::proc::{display_command, run_logged, write_atomic};
use crate::{plot, report};

/// The matrix: the base, stock caches with and without attn_rot, the v1 tbq pairs, the K-heavy
/// pairs of the wider and sub-scaled types, the 3.25-bit pairs, the sub-scaled pairs with 4-bit
/// values, and the recommended pairs without key centring or exact keys (what each is worth).
pub const DEFAULT_PAIRS: &str = "q8_0/q8_0,q4_0/q4_0,q4_0/q4_0:norot,tbq4_0/tbq4_0,tbq4_0/tbq3_0,\
tbq3_0/tbq3_0,q8_0/tbq4_0,q8_0/tbq3_0,tbq5_1/tbq3_1,tbq5_0/tbq3_0,tbq6_0/tbq3_0,tbq4_1/tbq3_1,\
tbq5_1/tbq3_0,tbq6_0/tbq4_0,tbq5_0/tbq4_0,tbq4_1/tbq4_0,tbq3_1/tbq3_1,tbq4_1/tbq4_1,tbq5_1/tbq4_1,\
tbq4_0/tbq3_0:nocentre,tbq5_1/tbq3_1:nocentre,tbq4_0/tbq3_0:noexact,tbq4_1/tbq4_0:noexact";

pub fn default_wikitext() -> String {
    std::env::var("TBQ_WIKITEXT").unwrap_or_else(|_| {
        crate::common::repo_root()
            .join("../shared/data/wikitext-2-raw/wiki.test.raw")
            .display()
            .to_string()
    })
}

#[derive(Args, Clone, Debug)]
pub struct PplArgs {
    #[command(flatten)]
    pub common: Common,

    /// WikiText-2 test text (default: $TBQ_WIKITEXT, else ../shared/data/wikitext-2-raw/wiki.test.raw
    /// beside the repository).
    #[arg(long, default_value_t = default_wikitext())]
    pub wikitext: String,

    /// Context (tokens per chunk; also the batch size).
    #[arg(short, long, default_value_t = 512)]
    pub ctx: u32,

    /// Chunks of --ctx tokens to evaluate; 0 = the whole file (564 chunks of 512: hours on a CPU).
    #[arg(long, default_value_t = 20)]
    pub chunks: u32,

    /// The reference configuration: its logits are saved and every other one is compared to them.
    #[arg(long, default_value = "f16/f16")]
    pub base: KvConfig,

    /// Configurations to compare with the base, comma- or space-separated: K/V cache types,
    /// `:norot` to turn llama.cpp's own Hadamard rotation of quantized caches off
    /// (LLAMA_ATTN_ROT_DISABLE=1), `:nocentre` and `:noexact` for tbq keys without key centring
    /// or without exact sink keys (controls), `@k0=tbq5_1;v3=tbq4_0` for per-layer types.
    #[arg(short, long, value_delimiter = ',', default_value = DEFAULT_PAIRS)]
    pub pairs: Vec<String>,

    /// More configurations, run after --pairs (e.g. the allocations `tbq-validate calibrate`
    /// printed, beside the default matrix).
    #[arg(long, value_delimiter = ',')]
    pub also: Vec<String>,

    /// Ignore stored results and run every configuration again.
    #[arg(long)]
    pub fresh: bool,

    /// Run nothing: rebuild JSON, markdown and plots from the stored results.
    #[arg(long)]
    pub report_only: bool,

    /// Keep the base logits file after the run (it is ~128 MiB per 512-token chunk of Gemma 3's
    /// 262k vocabulary; deleted at the end otherwise, and re-made if a later run needs it).
    #[arg(long)]
    pub keep_logits: bool,
}

/// What a result was measured on; a stored result is reused only when these agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub model: FileId,
    pub wikitext: FileId,
    pub ctx: u32,
    pub chunks: u32,
    pub base: KvConfig,
}

/// One configuration's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub config: KvConfig,
    /// Table label (`q4_0/q4_0 (attn_rot)` when llama.cpp reported rotating the cache).
    pub label: String,
    pub is_base: bool,
    pub ok: bool,
    pub error: Option<String>,
    pub settings: Settings,
    pub bits_per_element: f64,
    /// Perplexity ± error: the base's `Final estimate`, or `Mean PPL(Q)` of a KLD run.
    pub ppl: Option<f64>,
    pub ppl_err: Option<f64>,
    /// `--kl-divergence` statistics against the base (None for the base itself).
    pub kld: Option<KldStats>,
    /// What llama.cpp reported about its KV caches at this context.
    pub kv: KvReport,
    /// The planner's prediction of the same caches (MiB), when the crate has a planner.
    pub planned_kv_mib: Option<f64>,
    pub seconds: f64,
    pub command: String,
    pub log: String,
    pub finished_unix: u64,
}

impl RunResult {
    /// ΔPPL against the base in percent ± error, from the KLD run's PPL(Q)/PPL(base) over
    /// identical tokens (as llama.cpp reports it).
    pub fn delta_ppl_pct(&self) -> Option<(f64, f64)> {
        self.kld
            .as_ref()
            .map(|k| (100.0 * (k.ppl_ratio - 1.0), 100.0 * k.ppl_ratio_err))
    }
}

struct Matrix<'a> {
    args: &'a PplArgs,
    model: PathBuf,
    /// The model's attention layers (for the mean bits of per-layer types), when readable.
    shape: Option<tbq::plan::ModelShape>,
    out: PathBuf,
    settings: Settings,
    logits: PathBuf,
}

impl Matrix<'_> {
    fn result_path(&self, c: &KvConfig) -> PathBuf {
        self.out.join("runs").join(format!("{}.json", c.slug()))
    }

    /// The stored result of `c`, if it finished with the same settings.
    fn stored(&self, c: &KvConfig) -> Option<RunResult> {
        let text = std::fs::read_to_string(self.result_path(c)).ok()?;
        let r: RunResult = serde_json::from_str(&text).ok()?;
        (r.settings == self.settings && r.config == *c).then_some(r)
    }

    fn command(&self, c: &KvConfig, is_base: bool) -> Result<Command> {
        let a = self.args;
        let mut cmd = Command::new(a.common.tools().exe("llama-perplexity")?);
        cmd.arg("-m").arg(&self.model);
        cmd.arg("-f").arg(&a.wikitext);
        cmd.args(["-c", &a.ctx.to_string(), "-b", &a.ctx.to_string()]);
        let chunks = if a.chunks == 0 { -1 } else { a.chunks as i64 };
        cmd.args(["--chunks", &chunks.to_string()]);
        cmd.args(["-fa", "on", "-ctk", &c.k, "-ctv", &c.v]);
        cmd.args(["-t", &a.common.threads.to_string(), "--no-warmup"]);
        // -lv 4 keeps llama.cpp's INFO lines (the KV cache sizes and attn_rot) in the log.
        cmd.args(["-lv", "4", "--log-colors", "off"]);
        cmd.arg("--kl-divergence-base").arg(&self.logits);
        if !is_base {
            cmd.arg("--kl-divergence");
        }
        for (k, v) in c.env() {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    fn run(&self, c: &KvConfig, is_base: bool, chunk_bar: &ProgressBar) -> RunResult {
        let log = self.out.join("logs").join(format!("{}.log", c.slug()));
        let start = Instant::now();
        let mut result = RunResult {
            config: c.clone(),
            label: c.label(None),
            is_base,
            ok: false,
            error: None,
            settings: self.settings.clone(),
            bits_per_element: c.bits_per_element(self.shape.as_ref(), self.args.ctx),
            ppl: None,
            ppl_err: None,
            kld: None,
            kv: KvReport::default(),
            planned_kv_mib: None,
            seconds: 0.0,
            command: String::new(),
            log: log
                .strip_prefix(&self.out)
                .unwrap_or(&log)
                .display()
                .to_string(),
            finished_unix: 0,
        };
        let outcome = (|| -> Result<()> {
            let mut cmd = self.command(c, is_base)?;
            result.command = display_command(&cmd);
            let status = run_logged(&mut cmd, &log, |stdout| {
                if let Some(n) = llama::parse_progress(stdout) {
                    chunk_bar.set_position(n);
                }
            })?;
            let text = llama::read_log(&log)?;
            if let Some(n) = llama::parse_total_chunks(&text) {
                chunk_bar.set_length(n);
            }
            result.kv = llama::parse_kv(&text);
            result.label = c.label(result.kv.rotated());
            result.planned_kv_mib = self
                .shape
                .as_ref()
                .and_then(|s| crate::memory::planned_kv_mib(s, c, self.args.ctx));
            if !status.success() {
                bail!(
                    "llama-perplexity failed ({status}): {}",
                    last_lines(&text, 3)
                );
            }
            if is_base {
                let (p, e) = llama::parse_final_ppl(&text)
                    .context("no 'Final estimate: PPL' line in the log")?;
                result.ppl = Some(p);
                result.ppl_err = Some(e);
            } else {
                let k =
                    llama::parse_kld(&text).context("no KL-divergence statistics in the log")?;
                result.ppl = Some(k.ppl);
                result.ppl_err = Some(k.ppl_err);
                result.kld = Some(k);
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            result.error = Some(format!("{e:#}"));
        } else {
            result.ok = true;
        }
        result.seconds = start.elapsed().as_secs_f64();
        result.finished_unix = now_unix();
        result
    }

    fn save(&self, r: &RunResult) -> Result<()> {
        write_atomic(
            &self.result_path(&r.config),
            serde_json::to_string_pretty(r)?.as_bytes(),
        )
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Parses the configurations of `--pairs` (duplicates of the base dropped).
pub fn parse_pairs(list: &[String], base: &KvConfig) -> Result<Vec<KvConfig>> {
    let mut out: Vec<KvConfig> = Vec::new();
    for item in list.iter().flat_map(|s| s.split_whitespace()) {
        let c: KvConfig = item.parse()?;
        if c != *base && !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Runs the matrix (or what is left of it) and writes the report. Returns the results in the
/// order of the table; failures are in it too.
pub fn run(args: &PplArgs) -> Result<Vec<RunResult>> {
    let model = args.common.model_path()?;
    let wiki = PathBuf::from(&args.wikitext);
    if !wiki.is_file() {
        bail!(
            "WikiText-2 test file not found: {} (put the shared data beside the repository, set TBQ_WIKITEXT or pass --wikitext)",
            wiki.display()
        );
    }
    let out = args.common.out_dir("ppl");
    std::fs::create_dir_all(out.join("runs"))?;
    std::fs::create_dir_all(out.join("logs"))?;
    let settings = Settings {
        model: FileId::of(&model)?,
        wikitext: FileId::of(&wiki)?,
        ctx: args.ctx,
        chunks: args.chunks,
        base: args.base.clone(),
    };
    let pairs = parse_pairs(&[&args.pairs[..], &args.also[..]].concat(), &args.base)?;
    let logits = out.join(format!("{}.logits", args.base.slug()));
    let m = Matrix {
        args,
        shape: tbq::plan::ModelShape::open(&model).ok(),
        model,
        out: out.clone(),
        settings,
        logits,
    };

    let mut all = vec![args.base.clone()];
    all.extend(pairs.iter().cloned());

    if !args.report_only {
        args.common.tools().exe("llama-perplexity")?;
        let mp = MultiProgress::new();
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            mp.set_draw_target(ProgressDrawTarget::hidden());
        }
        let overall = mp.add(ProgressBar::new(all.len() as u64).with_style(bar_style()));
        overall.set_prefix("configs");
        overall.enable_steady_tick(Duration::from_millis(500));
        let chunk_bar = mp.add(ProgressBar::new(args.chunks.max(1) as u64).with_style(bar_style()));
        chunk_bar.set_prefix("chunks");

        // The base, unless it finished with these settings and its logits are still there.
        let need_kld = pairs.iter().any(|c| args.fresh || m.stored(c).is_none());
        let base_done = !args.fresh && m.stored(&args.base).is_some_and(|r| r.ok);
        if !base_done || (need_kld && !m.logits.is_file()) {
            overall.set_message(args.base.to_string());
            chunk_bar.reset();
            say(
                &overall,
                format!("[base] {} → {}", args.base, m.logits.display()),
            );
            let r = m.run(&args.base, true, &chunk_bar);
            m.save(&r)?;
            report_one(&overall, &r);
            if !r.ok {
                bail!(
                    "the base configuration {} failed; nothing can be compared with it",
                    args.base
                );
            }
        } else {
            say(&overall, format!("[done] {} (stored)", args.base));
        }
        overall.inc(1);

        for c in &pairs {
            overall.set_message(c.to_string());
            if !args.fresh {
                if let Some(r) = m.stored(c).filter(|r| r.ok) {
                    say(&overall, format!("[done] {c} (stored: {})", short(&r)));
                    overall.inc(1);
                    continue;
                }
            }
            chunk_bar.reset();
            let r = m.run(c, false, &chunk_bar);
            m.save(&r)?;
            report_one(&overall, &r);
            overall.inc(1);
        }
        overall.finish_with_message("done");
        chunk_bar.finish_and_clear();
        if !args.keep_logits {
            let _ = std::fs::remove_file(&m.logits);
        }
    }

    let mut results: Vec<RunResult> = all.iter().filter_map(|c| m.stored(c)).collect();
    // Results stored before the crate had a planner get its prediction now (it needs no run).
    for r in results.iter_mut().filter(|r| r.planned_kv_mib.is_none()) {
        r.planned_kv_mib = m
            .shape
            .as_ref()
            .and_then(|s| crate::memory::planned_kv_mib(s, &r.config, args.ctx));
    }
    if results.is_empty() {
        bail!("no stored results in {} for these settings", out.display());
    }
    report::write_ppl(&out, &m.settings, args.common.threads, &results)?;
    plot::ppl_plots(&out, &m.settings, &results)?;
    eprintln!(
        "wrote {}/{{results.json,results.md,quality-vs-bits.png,kld.png}}",
        out.display()
    );
    Ok(results)
}

fn short(r: &RunResult) -> String {
    match (&r.kld, r.ppl) {
        (Some(k), _) => format!(
            "PPL {:.4}, ΔPPL {:+.2}%, mean KLD {:.5}, same top p {:.2}%",
            k.ppl,
            100.0 * (k.ppl_ratio - 1.0),
            k.kld_mean,
            k.same_top_p
        ),
        (None, Some(p)) => format!("PPL {p:.4}"),
        _ => "no numbers".into(),
    }
}

fn report_one(pb: &ProgressBar, r: &RunResult) {
    if r.ok {
        say(
            pb,
            format!("[ok]   {} in {:.0} s: {}", r.label, r.seconds, short(r)),
        );
    } else {
        say(
            pb,
            format!(
                "[FAIL] {} after {:.0} s: {} (log: {})",
                r.label,
                r.seconds,
                r.error.as_deref().unwrap_or("?"),
                r.log
            ),
        );
    }
}
