//! What one experiment measures: keyword-scored quality, prefill/decode speed and time to first
//! token, recall of a fact planted in a filled context, and peak memory.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Gen, GenResult};
use crate::config::parse_toml;
use crate::server;

/// The shipped quality prompts (`tbq-agent research --print-prompts` prints them).
pub const DEFAULT_PROMPTS: &str = include_str!("prompts.toml");

/// A quality prompt.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// Short name, for tables.
    pub name: String,
    /// The text to continue (or the user message, with `api = "chat"`).
    pub text: String,
    /// Keywords looked for in the output; `a|b` accepts either.
    pub keywords: Vec<String>,
    /// Tokens to generate.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_max_tokens() -> u32 {
    16
}

/// Which API prompts go to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `/v1/completions`: plain continuation.
    #[default]
    Completion,
    /// `/v1/chat/completions`: a user message.
    Chat,
}

/// A prompt file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSet {
    /// The API.
    #[serde(default)]
    pub api: Api,
    /// The prompts.
    #[serde(rename = "prompt")]
    pub prompts: Vec<Prompt>,
}

impl PromptSet {
    /// The prompts of `path`, or the shipped ones.
    pub fn load(path: Option<&Path>) -> Result<PromptSet> {
        let set: PromptSet = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    crate::error::wrap(e,
                        crate::error::fail(crate::error::Exit::Input, format!("cannot read the prompts file {}", p.display()))
                            .fix("check the path (tbq-agent research --print-prompts prints the shipped file to start from)"),
                    )
                })?;
                parse_toml(&text, p)?
            }
            None => parse_toml(DEFAULT_PROMPTS, Path::new("<shipped prompts.toml>"))?,
        };
        if set.prompts.is_empty() {
            return Err(crate::error::fail(
                crate::error::Exit::Input,
                "the prompts file has no [[prompt]]",
            )
            .into());
        }
        Ok(set)
    }
}

/// The fraction of `keywords` found in `text` (case-insensitive; `a|b` = either).
pub fn keyword_score(text: &str, keywords: &[String]) -> f64 {
    if keywords.is_empty() {
        return 1.0;
    }
    let t = text.to_lowercase();
    let hit = keywords
        .iter()
        .filter(|k| {
            k.split('|')
                .any(|alt| !alt.trim().is_empty() && t.contains(&alt.trim().to_lowercase()))
        })
        .count();
    hit as f64 / keywords.len() as f64
}

/// One prompt's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PromptOutcome {
    /// Prompt name.
    pub name: String,
    /// Keyword score, 0–1.
    pub score: f64,
    /// The output.
    pub output: String,
    /// Time to first token, ms.
    pub ttft_ms: f64,
}

/// Quality over a prompt set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quality {
    /// Mean keyword score, 0–1.
    pub score: f64,
    /// Per prompt.
    pub prompts: Vec<PromptOutcome>,
}

/// Runs every prompt of `set` against `base`.
pub fn quality(
    client: &Client,
    base: &str,
    set: &PromptSet,
    llama: bool,
    model: Option<&str>,
) -> Result<Quality> {
    let mut prompts = Vec::new();
    for p in &set.prompts {
        server::check_stop()?;
        let r = client.generate(
            base,
            &Gen {
                prompt: &p.text,
                chat: set.api == Api::Chat,
                max_tokens: p.max_tokens,
                model,
                llama_extensions: llama,
                ignore_eos: false,
            },
        )?;
        prompts.push(PromptOutcome {
            name: p.name.clone(),
            score: keyword_score(&r.text, &p.keywords),
            output: r.text,
            ttft_ms: r.ttft_ms,
        });
    }
    let score = prompts.iter().map(|p| p.score).sum::<f64>() / prompts.len().max(1) as f64;
    Ok(Quality { score, prompts })
}

/// Speed of one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Speed {
    /// Prompt tokens evaluated.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub decode_tokens: u64,
    /// Prefill tokens/s (llama-server's timings when present).
    pub prefill_tps: Option<f64>,
    /// Decode tokens/s (llama-server's timings when present).
    pub decode_tps: Option<f64>,
    /// Decode tokens/s seen by the client (streaming).
    pub client_decode_tps: Option<f64>,
    /// Time to first token seen by the client, ms.
    pub ttft_ms: f64,
    /// Total request time, ms.
    pub total_ms: f64,
}

impl Speed {
    fn of(r: &GenResult) -> Speed {
        Speed {
            prompt_tokens: r
                .timings
                .as_ref()
                .map(|t| t.prompt_n)
                .or(r.prompt_tokens)
                .unwrap_or(0),
            decode_tokens: r
                .timings
                .as_ref()
                .map(|t| t.predicted_n)
                .or(r.completion_tokens)
                .unwrap_or(r.chunks),
            prefill_tps: r.prefill_tps(),
            decode_tps: r.decode_tps(),
            client_decode_tps: r.client_decode_tps(),
            ttft_ms: r.ttft_ms,
            total_ms: r.total_ms,
        }
    }
}

const WORDS: &[&str] = &[
    "river", "garden", "lantern", "harbor", "meadow", "copper", "violet", "engine", "window",
    "market", "winter", "signal", "orchard", "pebble", "canyon", "ribbon", "summit", "thunder",
    "marble", "falcon",
];
const VERBS: &[&str] = &[
    "carried",
    "painted",
    "followed",
    "repaired",
    "noticed",
    "described",
    "measured",
    "visited",
];

/// Deterministic filler prose: `n` sentences, seeded.
pub fn filler(n: usize, seed: u64) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as usize) % m
    };
    let mut s = String::new();
    for i in 0..n {
        let (a, v, b, c) = (
            WORDS[next(WORDS.len())],
            VERBS[next(VERBS.len())],
            WORDS[next(WORDS.len())],
            WORDS[next(WORDS.len())],
        );
        s.push_str(&format!(
            "The {a} keeper {v} the {b} near the {c} on day {}. ",
            i + 1
        ));
        if i % 6 == 5 {
            s.push('\n');
        }
    }
    s
}

/// A prompt of about `tokens` tokens (measured with the server's tokenizer).
pub fn sized_prompt(client: &Client, base: &str, tokens: usize, tail: &str) -> Result<String> {
    let probe = filler(40, 7);
    let per = client.count_tokens(base, &probe)?.max(1) as f64 / 40.0;
    let tail_tokens = client.count_tokens(base, tail)? as f64;
    let n = (((tokens as f64 - tail_tokens) / per).floor().max(1.0)) as usize;
    Ok(format!("{}{tail}", filler(n, 7)))
}

/// Prefill and decode speed: a prompt of `prompt_tokens`, `decode_tokens` generated (exactly,
/// with llama-server's `ignore_eos`).
pub fn speed(
    client: &Client,
    base: &str,
    prompt_tokens: usize,
    decode_tokens: u32,
    api: Api,
) -> Result<Speed> {
    let prompt = sized_prompt(client, base, prompt_tokens, "Continue the story: ")?;
    let r = client.generate(
        base,
        &Gen {
            prompt: &prompt,
            chat: api == Api::Chat,
            max_tokens: decode_tokens,
            model: None,
            llama_extensions: true,
            ignore_eos: true,
        },
    )?;
    Ok(Speed::of(&r))
}

/// Recall of a fact planted in a filled context.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recall {
    /// The slot's context (`/props`).
    pub n_ctx: u64,
    /// Tokens the prompt was sized to.
    pub target_tokens: u64,
    /// Whether the answer contained the planted code.
    pub found: bool,
    /// The planted code.
    pub code: String,
    /// The answer.
    pub answer: String,
    /// Speed at that depth.
    pub speed: Speed,
}

/// Fills `fill` (0–1) of the slot's context with filler, plants a pass code at 40 % depth, and
/// asks for it back at the end.
pub fn recall(client: &Client, base: &str, fill: f64, api: Api) -> Result<Recall> {
    let props = client.props(base)?;
    let n_ctx = props["default_generation_settings"]["n_ctx"]
        .as_u64()
        .or_else(|| props["n_ctx"].as_u64())
        .unwrap_or(2048);
    let answer_tokens = 12u32;
    let target = ((n_ctx as f64 * fill) as u64)
        .saturating_sub(answer_tokens as u64 + 8)
        .max(64);
    let code = "7391".to_string();
    let fact = format!("\nImportant: the secret pass code of the harbor is {code}. Remember it.\n");
    let question = "\nQuestion: what is the secret pass code of the harbor?\nAnswer: the secret pass code of the harbor is";
    let fixed = client.count_tokens(base, &format!("{fact}{question}"))? as f64;
    let per = client.count_tokens(base, &filler(40, 11))?.max(1) as f64 / 40.0;
    let mut n = ((target as f64 - fixed) / per).max(2.0) as usize;
    let build = |n: usize| {
        let before = n * 2 / 5;
        format!(
            "{}{fact}{}{question}",
            filler(before, 11),
            filler(n - before, 13)
        )
    };
    let mut prompt = build(n);
    // Never exceed the target: the request must fit the slot.
    while n > 2 && client.count_tokens(base, &prompt)? as u64 > target {
        n = n * 97 / 100;
        prompt = build(n);
    }
    let r = client.generate(
        base,
        &Gen {
            prompt: &prompt,
            chat: api == Api::Chat,
            max_tokens: answer_tokens,
            model: None,
            llama_extensions: true,
            ignore_eos: false,
        },
    )?;
    Ok(Recall {
        n_ctx,
        target_tokens: target,
        found: r.text.contains(&code),
        code,
        answer: r.text.clone(),
        speed: Speed::of(&r),
    })
}

/// Peak memory over an experiment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryPeak {
    /// llama-server's peak resident set (VmHWM), bytes.
    pub server_peak_rss: Option<u64>,
    /// Host memory in use at the peak, over what was in use at the start (MemAvailable drop), bytes.
    pub host_used_delta: Option<u64>,
    /// GPU memory used at the peak (all GPUs, nvidia-smi), bytes.
    pub gpu_used_peak: Option<u64>,
}

/// Samples /proc/meminfo (every 200 ms) and nvidia-smi (every 1 s, if present) in a thread.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<(Option<u64>, Option<u64>)>>,
    start_avail: Option<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemorySampler {
    /// Starts sampling.
    pub fn start(gpu: bool) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new((None::<u64>, None::<u64>)));
        let start_avail = server::meminfo().map(|m| m.1);
        let (s2, st2) = (stop.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s2.load(Ordering::Relaxed) {
                if let Some((_, avail)) = server::meminfo() {
                    let mut g = st2.lock().unwrap();
                    g.0 = Some(g.0.map_or(avail, |m: u64| m.min(avail)));
                }
                if gpu && i % 5 == 0 {
                    let used: u64 = server::nvidia_gpus().iter().map(|g| g.memory_used).sum();
                    let mut g = st2.lock().unwrap();
                    g.1 = Some(g.1.map_or(used, |m: u64| m.max(used)));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        MemorySampler {
            stop,
            state,
            start_avail,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak, with the server's VmHWM.
    pub fn finish(mut self, server_peak_rss: Option<u64>) -> MemoryPeak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let (min_avail, gpu) = *self.state.lock().unwrap();
        MemoryPeak {
            server_peak_rss,
            host_used_delta: match (self.start_avail, min_avail) {
                (Some(a), Some(m)) => Some(a.saturating_sub(m)),
                _ => None,
            },
            gpu_used_peak: gpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_prompts_parse() {
        let s = PromptSet::load(None).unwrap();
        assert!(s.prompts.len() >= 8);
        assert_eq!(s.api, Api::Completion);
    }

    #[test]
    fn keyword_scoring() {
        let k = vec!["Thursday".to_string(), "friday".to_string()];
        assert_eq!(keyword_score(" thursday, Friday", &k), 1.0);
        assert_eq!(keyword_score(" Thursday and more", &k), 0.5);
        assert_eq!(keyword_score("x = a+b", &["a + b|a+b".to_string()]), 1.0);
        assert_eq!(keyword_score("nothing", &k), 0.0);
    }

    #[test]
    fn filler_is_deterministic() {
        assert_eq!(filler(10, 3), filler(10, 3));
        assert_ne!(filler(10, 3), filler(10, 4));
    }
}
