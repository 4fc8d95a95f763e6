//! `tbq-validate needle`: needle-in-a-haystack retrieval through llama-server.
//!
//! A sentence with a random five-digit number ("The special magic number is 48213.") is planted
//! at a sentence boundary at several depths of WikiText-2 filler that fills several context
//! sizes; the model is then asked for the number (greedy decoding, fixed seed) and a trial scores
//! 1 when the answer contains it. Every configuration sees exactly the same token sequences (the
//! prompt is sent as token ids), so the grids compare the caches and nothing else.
//!
//! Trials are appended to `trials.jsonl` as they finish; a killed run resumes there.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common::{bar_style, say, Common, FileId};
use crate::llama::{self, KvConfig, KvReport};
use crate::proc::write_atomic;
use crate::server::{Server, ServerOpts};

#[derive(Args, Clone, Debug)]
pub struct NeedleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Text the haystack is cut from (default: the WikiText-2 test file, as for `ppl`).
    #[arg(long, default_value_t = crate::ppl::default_wikitext())]
    pub filler: String,

    /// Context sizes in tokens (the whole prompt plus the answer fits in each). Up to what the
    /// model supports; on a CPU, tbq's reference attention makes long contexts slow.
    #[arg(short, long, value_delimiter = ',', default_value = "512,1024,2048")]
    pub contexts: Vec<u32>,

    /// Needle depths, as fractions of the haystack (0 = first sentence, 1 = just before the
    /// question).
    #[arg(
        short,
        long,
        value_delimiter = ',',
        default_value = "0,0.25,0.5,0.75,1"
    )]
    pub depths: Vec<f64>,

    /// Seeds: each picks the haystack's place in the filler text and the needle's number; the
    /// same seeds are used for every configuration.
    #[arg(short, long, value_delimiter = ',', default_value = "1")]
    pub seeds: Vec<u64>,

    /// K/V configurations (the first is the reference), as for `ppl`.
    #[arg(
        short,
        long,
        value_delimiter = ',',
        default_value = "f16/f16,q4_0/q4_0,tbq4_0/tbq3_0"
    )]
    pub pairs: Vec<String>,

    /// Tokens the model may answer with.
    #[arg(long, default_value_t = 12)]
    pub n_predict: u32,

    /// Forget stored trials and run everything again.
    #[arg(long)]
    pub fresh: bool,

    /// Run nothing: rebuild JSON, markdown and the heat map from stored trials.
    #[arg(long)]
    pub report_only: bool,
}

const NEEDLE: &str = "The special magic number is {N}.";
const QUESTION: &str =
    "\n\nQuestion: What is the special magic number mentioned in the text above?\nAnswer: The special magic number is";

/// What trials were measured on; stored trials are reused only under the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeedleSettings {
    pub model: FileId,
    pub filler: FileId,
    pub n_predict: u32,
    pub needle: String,
    pub question: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trial {
    pub config: KvConfig,
    pub ctx: u32,
    pub depth: f64,
    pub seed: u64,
    /// The number planted.
    pub needle: String,
    /// Where it went: token index in the prompt, and the prompt's length in tokens.
    pub needle_pos: usize,
    pub prompt_tokens: usize,
    pub answer: String,
    pub found: bool,
    pub seconds: f64,
}

impl Trial {
    fn key(&self) -> (String, u32, u64, u64) {
        (
            self.config.to_string(),
            self.ctx,
            self.depth.to_bits(),
            self.seed,
        )
    }
}

/// A tokenized stretch of filler and where its sentences end.
struct Haystack {
    tokens: Vec<i64>,
    /// Token indices `i` such that a sentence ends just before token `i`.
    boundaries: Vec<usize>,
}

fn piece_text(p: &Value) -> String {
    match p {
        Value::String(s) => s.clone(),
        Value::Array(bytes) => String::from_utf8_lossy(
            &bytes
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect::<Vec<_>>(),
        )
        .into_owned(),
        _ => String::new(),
    }
}

fn tokenize(server: &Server, text: &str, pieces: bool) -> Result<Vec<(i64, String)>> {
    let v = server.post(
        "/tokenize",
        &json!({"content": text, "add_special": false, "parse_special": false, "with_pieces": pieces}),
    )?;
    let toks = v["tokens"].as_array().context("/tokenize: no tokens")?;
    Ok(toks
        .iter()
        .map(|t| {
            if pieces {
                (t["id"].as_i64().unwrap_or(0), piece_text(&t["piece"]))
            } else {
                (t.as_i64().unwrap_or(0), String::new())
            }
        })
        .collect())
}

fn haystack(server: &Server, filler: &str, seed: u64, max_tokens: usize) -> Result<Haystack> {
    // The place in the filler text depends on the seed only; start at a line start.
    let chars = (max_tokens * 6).min(filler.len());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut start = rng.random_range(0..=filler.len() - chars);
    while !filler.is_char_boundary(start) {
        start += 1;
    }
    if let Some(nl) = filler[start..].find('\n') {
        start += nl + 1;
    }
    let mut end = (start + chars).min(filler.len());
    while !filler.is_char_boundary(end) {
        end -= 1;
    }
    let toks = tokenize(server, &filler[start..end], true)?;
    if toks.len() < max_tokens {
        bail!("the filler text is too short for {max_tokens} tokens of haystack");
    }
    let mut boundaries = vec![0];
    for (i, (_, p)) in toks.iter().enumerate() {
        if p.ends_with(". ") || p.ends_with('.') || p.contains('\n') {
            boundaries.push(i + 1);
        }
    }
    Ok(Haystack {
        tokens: toks.into_iter().map(|(id, _)| id).collect(),
        boundaries,
    })
}

/// The needle's number for a trial: depends on the seed, context and depth only.
fn needle_number(seed: u64, ctx: u32, depth: f64) -> String {
    let mut rng =
        StdRng::seed_from_u64(seed ^ ((ctx as u64) << 20) ^ depth.to_bits().rotate_left(7));
    rng.random_range(10000..100000u32).to_string()
}

struct Prompt {
    tokens: Vec<i64>,
    needle_pos: usize,
}

fn build_prompt(
    h: &Haystack,
    bos: &[i64],
    needle: &[i64],
    question: &[i64],
    ctx: u32,
    n_predict: u32,
    depth: f64,
) -> Result<Prompt> {
    let budget = ctx as usize - n_predict as usize - bos.len() - needle.len() - question.len();
    if budget < 16 {
        bail!("context {ctx} leaves no room for a haystack");
    }
    // Cut the filler at the last sentence boundary within the budget.
    let f = *h
        .boundaries
        .iter()
        .filter(|&&b| b <= budget)
        .max()
        .unwrap_or(&budget);
    let f = if f < budget / 2 { budget } else { f };
    let target = (depth * f as f64).round() as usize;
    let at = *h
        .boundaries
        .iter()
        .filter(|&&b| b <= f)
        .min_by_key(|&&b| (b as i64 - target as i64).abs())
        .unwrap_or(&0);
    let mut tokens = bos.to_vec();
    tokens.extend_from_slice(&h.tokens[..at]);
    let needle_pos = tokens.len();
    tokens.extend_from_slice(needle);
    tokens.extend_from_slice(&h.tokens[at..f]);
    tokens.extend_from_slice(question);
    Ok(Prompt { tokens, needle_pos })
}

fn load_trials(path: &Path) -> Vec<Trial> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn run(args: &NeedleArgs) -> Result<bool> {
    let model = args.common.model_path()?;
    let filler_path = PathBuf::from(&args.filler);
    let filler = std::fs::read_to_string(&filler_path)
        .with_context(|| format!("reading the filler text {}", filler_path.display()))?;
    let out = args.common.out_dir("needle");
    std::fs::create_dir_all(out.join("logs"))?;
    let settings = NeedleSettings {
        model: FileId::of(&model)?,
        filler: FileId::of(&filler_path)?,
        n_predict: args.n_predict,
        needle: NEEDLE.into(),
        question: QUESTION.into(),
    };
    let mut configs: Vec<KvConfig> = Vec::new();
    for p in args.pairs.iter().flat_map(|s| s.split_whitespace()) {
        let c: KvConfig = p.parse()?;
        if !configs.contains(&c) {
            configs.push(c);
        }
    }
    if configs.is_empty()
        || args.contexts.is_empty()
        || args.depths.is_empty()
        || args.seeds.is_empty()
    {
        bail!("nothing to do: give at least one pair, context, depth and seed");
    }
    if let Some(d) = args.depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
        bail!("depth {d} is not between 0 and 1");
    }

    let trials_path = out.join("trials.jsonl");
    let settings_path = out.join("settings.json");
    let stored_settings: Option<NeedleSettings> = std::fs::read_to_string(&settings_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if args.fresh || stored_settings.as_ref() != Some(&settings) {
        if trials_path.exists() && !args.report_only {
            std::fs::rename(&trials_path, out.join("trials.jsonl.old"))?;
        }
        write_atomic(
            &settings_path,
            serde_json::to_string_pretty(&settings)?.as_bytes(),
        )?;
    }
    let mut trials = load_trials(&trials_path);
    let mut kv: BTreeMap<String, KvReport> =
        serde_json::from_str(&std::fs::read_to_string(out.join("kv.json")).unwrap_or_default())
            .unwrap_or_default();

    if !args.report_only {
        let done: std::collections::HashSet<_> = trials.iter().map(Trial::key).collect();
        let grid = |c: &KvConfig| -> Vec<(u32, f64, u64)> {
            let mut g = Vec::new();
            for &ctx in &args.contexts {
                for &depth in &args.depths {
                    for &seed in &args.seeds {
                        let k = (c.to_string(), ctx, depth.to_bits(), seed);
                        if !done.contains(&k) {
                            g.push((ctx, depth, seed));
                        }
                    }
                }
            }
            g
        };
        let todo: usize = configs.iter().map(|c| grid(c).len()).sum();
        let pb = ProgressBar::new(todo as u64).with_style(bar_style());
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        pb.set_prefix("trials");
        pb.enable_steady_tick(Duration::from_millis(500));
        let max_ctx = *args.contexts.iter().max().unwrap();
        let mut hay: HashMap<u64, Haystack> = HashMap::new();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&trials_path)?;
        for c in &configs {
            let g = grid(c);
            if g.is_empty() {
                say(&pb, format!("[done] {c} (stored)"));
                continue;
            }
            pb.set_message(format!("{c}: starting llama-server"));
            let log = out.join("logs").join(format!("server-{}.log", c.slug()));
            let server = match Server::start(&ServerOpts {
                tools: &args.common.tools(),
                model: &model,
                config: c,
                ctx: max_ctx,
                threads: args.common.threads,
                seed: args.seeds[0],
                log: &log,
                ready_timeout: Duration::from_secs(300),
                parallel: 1,
            }) {
                Ok(s) => s,
                Err(e) => {
                    say(&pb, format!("[FAIL] {c}: {e:#}"));
                    pb.inc(g.len() as u64);
                    continue;
                }
            };
            let bos: Vec<i64> = server
                .post("/tokenize", &json!({"content": "", "add_special": true}))?["tokens"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let question: Vec<i64> = tokenize(&server, QUESTION, false)?
                .into_iter()
                .map(|t| t.0)
                .collect();
            let mut failed = None;
            for (ctx, depth, seed) in g {
                pb.set_message(format!(
                    "{c} ctx {ctx} depth {:.0}% seed {seed}",
                    depth * 100.0
                ));
                if let std::collections::hash_map::Entry::Vacant(e) = hay.entry(seed) {
                    e.insert(haystack(&server, &filler, seed, max_ctx as usize)?);
                }
                let number = needle_number(seed, ctx, depth);
                let needle_text = format!(" {} ", NEEDLE.replace("{N}", &number));
                let needle: Vec<i64> = tokenize(&server, &needle_text, false)?
                    .into_iter()
                    .map(|t| t.0)
                    .collect();
                let prompt = build_prompt(
                    &hay[&seed],
                    &bos,
                    &needle,
                    &question,
                    ctx,
                    args.n_predict,
                    depth,
                )?;
                let start = Instant::now();
                let answer = server.post(
                    "/completion",
                    &json!({
                        "prompt": prompt.tokens,
                        "n_predict": args.n_predict,
                        "temperature": 0.0,
                        "top_k": 1,
                        "seed": seed,
                        "cache_prompt": false,
                    }),
                );
                let answer = match answer {
                    Ok(a) => a["content"].as_str().unwrap_or("").to_string(),
                    Err(e) => {
                        failed = Some(format!("{e:#}"));
                        break;
                    }
                };
                let t = Trial {
                    config: c.clone(),
                    ctx,
                    depth,
                    seed,
                    found: answer.contains(&number),
                    needle: number,
                    needle_pos: prompt.needle_pos,
                    prompt_tokens: prompt.tokens.len(),
                    answer,
                    seconds: start.elapsed().as_secs_f64(),
                };
                writeln!(file, "{}", serde_json::to_string(&t)?)?;
                file.flush()?;
                trials.push(t);
                pb.inc(1);
            }
            drop(server);
            kv.insert(c.to_string(), llama::parse_kv(&llama::read_log(&log)?));
            write_atomic(
                &out.join("kv.json"),
                serde_json::to_string_pretty(&kv)?.as_bytes(),
            )?;
            match failed {
                Some(e) => say(&pb, format!("[FAIL] {c}: {e}")),
                None => {
                    let (f, n) = score(&trials, c, None);
                    say(&pb, format!("[ok]   {c}: {f}/{n} retrieved"));
                }
            }
        }
        pb.finish_and_clear();
    }

    let trials: Vec<Trial> = trials
        .into_iter()
        .filter(|t| {
            configs.contains(&t.config)
                && args.contexts.contains(&t.ctx)
                && args.depths.contains(&t.depth)
                && args.seeds.contains(&t.seed)
        })
        .collect();
    write_report(&out, args, &settings, &configs, &trials, &kv)?;
    eprintln!(
        "wrote {}/{{needle.json,needle.md,needle.png}}",
        out.display()
    );
    let complete = configs.iter().all(|c| {
        score(&trials, c, None).1 == args.contexts.len() * args.depths.len() * args.seeds.len()
    });
    Ok(complete)
}

fn score(trials: &[Trial], c: &KvConfig, ctx: Option<u32>) -> (usize, usize) {
    let sel: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.config == *c && ctx.map_or(true, |x| t.ctx == x))
        .collect();
    (sel.iter().filter(|t| t.found).count(), sel.len())
}

fn write_report(
    out: &Path,
    args: &NeedleArgs,
    settings: &NeedleSettings,
    configs: &[KvConfig],
    trials: &[Trial],
    kv: &BTreeMap<String, KvReport>,
) -> Result<()> {
    let cell = |c: &KvConfig, ctx: u32, depth: f64| -> Vec<&Trial> {
        trials
            .iter()
            .filter(|t| t.config == *c && t.ctx == ctx && t.depth == depth)
            .collect()
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Needle in a haystack, {} — llama-server `-fa on -np 1`, greedy (temperature 0, top-k 1), seeds {:?}; \
         the needle \"{}\" (a random five-digit number per trial) planted at a sentence boundary of WikiText-2 filler; \
         asked with \"{}\"; found = the answer ({} tokens at most) contains the number. Every configuration gets the same token sequences.\n",
        settings.model.name(),
        args.seeds,
        NEEDLE.replace("{N}", "N"),
        QUESTION.trim().replace('\n', " "),
        settings.n_predict,
    );
    let _ = write!(md, "| context | depth |");
    for c in configs {
        let _ = write!(
            md,
            " {} |",
            c.label(kv.get(&c.to_string()).and_then(|k| k.rotated()))
        );
    }
    let _ = write!(md, "\n|---------|-------|");
    for _ in configs {
        md.push_str("---|");
    }
    md.push('\n');
    for &ctx in &args.contexts {
        for &depth in &args.depths {
            let _ = write!(md, "| {ctx} | {:.0}% |", depth * 100.0);
            for c in configs {
                let ts = cell(c, ctx, depth);
                let text = match ts.as_slice() {
                    [] => "—".to_string(),
                    [t] if t.found => "✓".to_string(),
                    [t] => format!("✗ `{}`", t.answer.trim().replace(['|', '\n', '`'], " ")),
                    many => format!("{}/{}", many.iter().filter(|t| t.found).count(), many.len()),
                };
                let _ = write!(md, " {text} |");
            }
            md.push('\n');
        }
    }
    let _ = write!(md, "| **all** | |");
    for c in configs {
        let (f, n) = score(trials, c, None);
        let _ = write!(md, " **{f}/{n}** |");
    }
    md.push('\n');
    let _ = write!(
        md,
        "| KV MiB at {} | |",
        args.contexts.iter().max().unwrap()
    );
    for c in configs {
        let v = kv
            .get(&c.to_string())
            .filter(|k| !k.caches.is_empty())
            .map(|k| format!("{:.2}", k.total_mib()));
        let _ = write!(md, " {} |", v.unwrap_or_else(|| "—".into()));
    }
    md.push('\n');
    write_atomic(&out.join("needle.md"), md.as_bytes())?;

    let doc = json!({
        "tool": concat!("tbq-validate ", env!("CARGO_PKG_VERSION")),
        "settings": settings,
        "contexts": args.contexts,
        "depths": args.depths,
        "seeds": args.seeds,
        "kv": kv,
        "summary": configs.iter().map(|c| {
            let (f, n) = score(trials, c, None);
            json!({"config": c, "found": f, "trials": n,
                   "per_context": args.contexts.iter().map(|&x| { let (f, n) = score(trials, c, Some(x)); json!({"ctx": x, "found": f, "trials": n}) }).collect::<Vec<_>>()})
        }).collect::<Vec<_>>(),
        "trials": trials,
    });
    write_atomic(
        &out.join("needle.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;

    let panels: Vec<(String, Vec<Vec<Option<f64>>>)> = configs
        .iter()
        .map(|c| {
            let grid = args
                .depths
                .iter()
                .map(|&d| {
                    args.contexts
                        .iter()
                        .map(|&x| {
                            let ts = cell(c, x, d);
                            (!ts.is_empty()).then(|| {
                                ts.iter().filter(|t| t.found).count() as f64 / ts.len() as f64
                            })
                        })
                        .collect()
                })
                .collect();
            let (f, n) = score(trials, c, None);
            (
                format!(
                    "{} — {f}/{n}",
                    c.label(kv.get(&c.to_string()).and_then(|k| k.rotated()))
                ),
                grid,
            )
        })
        .collect();
    crate::plot::heat_map(
        &out.join("needle.png"),
        &format!(
            "Needle in a haystack — {} · retrieval rate over seeds {:?}",
            settings.model.name(),
            args.seeds
        ),
        &panels,
        &args.depths,
        &args.contexts,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hay() -> Haystack {
        // 1000 tokens, a sentence ending every 10 tokens
        Haystack {
            tokens: (1000..2000).collect(),
            boundaries: (0..=100).map(|i| i * 10).collect(),
        }
    }

    #[test]
    fn prompt_fits_and_places_the_needle() {
        let (bos, needle, q) = (vec![2], vec![7, 7, 7], vec![9; 20]);
        for (depth, ctx) in [(0.0, 512), (0.5, 512), (1.0, 512), (0.25, 300)] {
            let p = build_prompt(&hay(), &bos, &needle, &q, ctx, 12, depth).unwrap();
            assert!(
                p.tokens.len() <= ctx as usize - 12,
                "{} > {}",
                p.tokens.len(),
                ctx - 12
            );
            assert_eq!(p.tokens[0], 2);
            assert_eq!(&p.tokens[p.needle_pos..p.needle_pos + 3], &[7, 7, 7]);
            assert_eq!(&p.tokens[p.tokens.len() - 20..], &q[..]);
            let filler = p.tokens.len() - 1 - 3 - 20;
            let at = p.needle_pos - 1;
            assert_eq!(at % 10, 0, "the needle sits at a sentence boundary");
            assert!(
                (at as f64 - depth * filler as f64).abs() <= 10.0,
                "depth {depth}: at {at} of {filler}"
            );
        }
        assert_eq!(
            build_prompt(&hay(), &[2], &[7], &[9], 512, 12, 0.0)
                .unwrap()
                .needle_pos,
            1
        );
        assert!(build_prompt(&hay(), &[2], &[7; 10], &[9; 10], 40, 12, 0.5).is_err());
    }

    #[test]
    fn needle_numbers_depend_on_the_trial_only() {
        assert_eq!(needle_number(1, 512, 0.5), needle_number(1, 512, 0.5));
        assert_ne!(needle_number(1, 512, 0.5), needle_number(2, 512, 0.5));
        assert_ne!(needle_number(1, 512, 0.5), needle_number(1, 1024, 0.5));
        assert_eq!(needle_number(3, 2048, 1.0).len(), 5);
    }
}
