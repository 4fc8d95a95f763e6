//! A small blocking client for llama-server and other OpenAI-compatible endpoints.
//!
//! Generation always streams (server-sent events), so that time to first token and decode speed
//! are measured on the client as well as read from llama-server's own `timings`.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{fail, Exit};

/// What `/health` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// 200: ready for requests.
    Ready,
    /// 503: still loading the model.
    Loading,
    /// Not answering (connection refused, another status): why.
    Down(String),
}

/// An HTTP client with the agent's timeouts.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    api_key: Option<String>,
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Gen<'a> {
    /// The prompt: the text to continue, or the user message when `chat`.
    pub prompt: &'a str,
    /// `/v1/chat/completions` (the server applies its chat template) instead of
    /// `/v1/completions` (plain continuation, which base models need).
    pub chat: bool,
    /// Maximum tokens to generate.
    pub max_tokens: u32,
    /// Model name for endpoints that serve several (llama-server ignores it).
    pub model: Option<&'a str>,
    /// llama-server extensions: generate exactly `max_tokens` (`ignore_eos`) and do not reuse
    /// the prompt cache (`cache_prompt: false`). Off for other endpoints.
    pub llama_extensions: bool,
    /// Ignore the end-of-sequence token (llama-server only).
    pub ignore_eos: bool,
}

/// llama-server's `timings` object.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Timings {
    /// Prompt tokens evaluated.
    pub prompt_n: u64,
    /// Prompt evaluation time, ms.
    pub prompt_ms: f64,
    /// Prefill speed, tokens/s.
    pub prompt_per_second: f64,
    /// Tokens generated.
    pub predicted_n: u64,
    /// Generation time, ms.
    pub predicted_ms: f64,
    /// Decode speed, tokens/s.
    pub predicted_per_second: f64,
}

/// The result of one streamed generation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenResult {
    /// The generated text.
    pub text: String,
    /// Client-side time to the first generated text, ms.
    pub ttft_ms: f64,
    /// Client-side total time, ms.
    pub total_ms: f64,
    /// Content chunks received (about one per token on llama-server).
    pub chunks: u64,
    /// Prompt tokens (`usage`), if reported.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens (`usage`), if reported.
    pub completion_tokens: Option<u64>,
    /// llama-server's own timings, if reported.
    pub timings: Option<Timings>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
}

impl GenResult {
    /// Decode speed seen by the client: tokens after the first over the time after the first.
    pub fn client_decode_tps(&self) -> Option<f64> {
        let n = self.completion_tokens.unwrap_or(self.chunks);
        let t = (self.total_ms - self.ttft_ms) / 1000.0;
        (n > 1 && t > 0.0).then(|| (n - 1) as f64 / t)
    }

    /// Prefill speed: llama-server's if known, else prompt tokens over the time to first token.
    pub fn prefill_tps(&self) -> Option<f64> {
        match &self.timings {
            Some(t) if t.prompt_per_second > 0.0 => Some(t.prompt_per_second),
            _ => self
                .prompt_tokens
                .filter(|_| self.ttft_ms > 0.0)
                .map(|n| n as f64 / (self.ttft_ms / 1000.0)),
        }
    }

    /// Decode speed: llama-server's if known, else the client's.
    pub fn decode_tps(&self) -> Option<f64> {
        match &self.timings {
            Some(t) if t.predicted_per_second > 0.0 && t.predicted_n > 1 => {
                Some(t.predicted_per_second)
            }
            _ => self.client_decode_tps(),
        }
    }
}

impl Client {
    /// A client whose requests time out after `timeout` (connect: 5 s).
    pub fn new(timeout: Duration, api_key: Option<String>) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(timeout)
            .timeout_write(timeout)
            .build();
        Client { agent, api_key }
    }

    fn post(&self, url: &str) -> ureq::Request {
        let r = self.agent.post(url).set("Content-Type", "application/json");
        match &self.api_key {
            Some(k) => r.set("Authorization", &format!("Bearer {k}")),
            None => r,
        }
    }

    /// `GET /health`.
    pub fn health(&self, base: &str) -> Health {
        let r = self
            .agent
            .get(&format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .call();
        match r {
            Ok(resp) if resp.status() == 200 => Health::Ready,
            Ok(resp) => Health::Down(format!("HTTP {}", resp.status())),
            Err(ureq::Error::Status(503, _)) => Health::Loading,
            Err(ureq::Error::Status(code, _)) => Health::Down(format!("HTTP {code}")),
            Err(ureq::Error::Transport(t)) => Health::Down(t.kind().to_string()),
        }
    }

    /// `POST /tokenize` (llama-server): number of tokens of `text`.
    pub fn count_tokens(&self, base: &str, text: &str) -> Result<usize> {
        let v: Value = self
            .post(&format!("{base}/tokenize"))
            .send_json(json!({ "content": text }))
            .map_err(|e| endpoint_error(base, "/tokenize", e))?
            .into_json()
            .context("reading /tokenize")?;
        Ok(v["tokens"].as_array().map_or(0, Vec::len))
    }

    /// `GET /props` (llama-server): the server's settings, e.g. `default_generation_settings.n_ctx`.
    pub fn props(&self, base: &str) -> Result<Value> {
        self.agent
            .get(&format!("{base}/props"))
            .call()
            .map_err(|e| endpoint_error(base, "/props", e))?
            .into_json()
            .context("reading /props")
    }

    /// Streams one completion (`POST /v1/completions`, or `/v1/chat/completions` when
    /// `g.chat`), greedy (temperature 0).
    pub fn generate(&self, base: &str, g: &Gen) -> Result<GenResult> {
        let mut body = json!({
            "max_tokens": g.max_tokens,
            "temperature": 0.0,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let path = if g.chat {
            body["messages"] = json!([{ "role": "user", "content": g.prompt }]);
            "/v1/chat/completions"
        } else {
            body["prompt"] = json!(g.prompt);
            "/v1/completions"
        };
        if let Some(m) = g.model {
            body["model"] = json!(m);
        }
        if g.llama_extensions {
            body["cache_prompt"] = json!(false);
            body["seed"] = json!(42);
            if g.ignore_eos {
                body["ignore_eos"] = json!(true);
            }
        }
        let t0 = Instant::now();
        let resp = self
            .post(&format!("{base}{path}"))
            .send_json(body)
            .map_err(|e| endpoint_error(base, path, e))?;
        let mut out = GenResult::default();
        let reader = BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| {
                crate::error::wrap(
                    e,
                    fail(Exit::Endpoint, format!("{base}: the stream broke off")),
                )
            })?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let v: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let Some(err) = v.get("error") {
                return Err(fail(
                    Exit::Endpoint,
                    format!("{base}: the server reported an error: {err}"),
                )
                .into());
            }
            if let Some(c) = v["choices"].get(0) {
                let piece = if g.chat {
                    c["delta"]["content"].as_str()
                } else {
                    c["text"].as_str()
                };
                if let Some(s) = piece {
                    if !s.is_empty() {
                        if out.chunks == 0 {
                            out.ttft_ms = t0.elapsed().as_secs_f64() * 1000.0;
                        }
                        out.chunks += 1;
                        out.text.push_str(s);
                    }
                }
                if let Some(r) = c["finish_reason"].as_str() {
                    out.finish_reason = Some(r.to_string());
                }
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                out.prompt_tokens = u["prompt_tokens"].as_u64();
                out.completion_tokens = u["completion_tokens"].as_u64();
            }
            if let Some(t) = v.get("timings").filter(|t| t.is_object()) {
                out.timings = Some(Timings {
                    prompt_n: t["prompt_n"].as_u64().unwrap_or(0),
                    prompt_ms: t["prompt_ms"].as_f64().unwrap_or(0.0),
                    prompt_per_second: t["prompt_per_second"].as_f64().unwrap_or(0.0),
                    predicted_n: t["predicted_n"].as_u64().unwrap_or(0),
                    predicted_ms: t["predicted_ms"].as_f64().unwrap_or(0.0),
                    predicted_per_second: t["predicted_per_second"].as_f64().unwrap_or(0.0),
                });
            }
        }
        out.total_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if out.chunks == 0 {
            out.ttft_ms = out.total_ms;
        }
        Ok(out)
    }
}

/// An [`Exit::Endpoint`] failure for a failed request, with the server's message if any.
pub fn endpoint_error(base: &str, path: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let hint = match code {
                401 | 403 => "check the API key (--api-key-a/--api-key-b or OPENAI_API_KEY)",
                404 => "is this an OpenAI-compatible endpoint? the URL should be the server's base, without /v1",
                400 if body.contains("context") => "the prompt does not fit the server's context: lower the fill target or raise ctx_size",
                _ => "see the server's message above and its log",
            };
            fail(
                Exit::Endpoint,
                format!(
                    "{base}{path} answered HTTP {code}: {}",
                    body.chars().take(400).collect::<String>()
                ),
            )
            .fix(hint)
            .into()
        }
        ureq::Error::Transport(t) => fail(Exit::Endpoint, format!("{base}{path}: {t}"))
            .fix("check that the server is running and the URL is right (scheme, host, port)")
            .into(),
    }
}
