//! Which model answers: the local llama-server first, a fallback endpoint only when the user
//! opted in, and never a turn lost in between.
//!
//! A step that fails because the local server went away (connection refused or reset, a stream
//! cut off, 502/503) is retried once `/health` says 200 again, up to `retries` times; the
//! partial output of the failed attempt is discarded. Only then, and only if opted in, the
//! fallback gets the step; otherwise the failure is returned, named, to the caller, which tells
//! the user (the message stays stored, `/retry` sends it again).

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use super::protocol::Constraint;
use crate::client::{Client, Health};
use crate::error::{fail, Exit};

/// An OpenAI-compatible chat endpoint.
#[derive(Clone)]
pub struct Endpoint {
    /// `local` or `fallback`.
    pub role: &'static str,
    /// Base URL, without /v1.
    pub url: String,
    /// Model to ask for (None for llama-server, which serves one and names it itself).
    pub model: Option<String>,
    api_key: Option<String>,
    agent: ureq::Agent,
    health: Client,
}

/// A finished model step.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The raw text (a JSON action).
    pub text: String,
    /// The model that produced it, as the endpoint names it (llama-server: the GGUF file).
    pub model: String,
    /// `local` or `fallback`.
    pub endpoint: &'static str,
    /// Why generation stopped (`stop`, `length`).
    pub finish_reason: Option<String>,
    /// Generated tokens, if reported.
    pub tokens: Option<u64>,
    /// Prompt tokens, if reported (for the HTTP channel's `usage`).
    pub prompt_tokens: Option<u64>,
}

/// Things the router wants the user to know while it works.
pub enum Notice<'a> {
    /// Text as it streams in.
    Delta(&'a str),
    /// The step failed; waiting for the server and trying again.
    Retry { attempt: u32, why: String },
    /// The server is healthy again.
    Back { waited: Duration },
    /// Trying the fallback endpoint.
    Fallback { why: String },
}

/// Why a step failed.
enum StepError {
    /// The server went away or is restarting: worth waiting for.
    Transient(String),
    /// Anything else (a 400, a bad schema): retrying would not help.
    Permanent(anyhow::Error),
}

impl Endpoint {
    /// An endpoint at `url` whose requests may take `timeout`.
    pub fn new(
        role: &'static str,
        url: &str,
        model: Option<String>,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Endpoint {
        Endpoint {
            role,
            url: url
                .trim_end_matches('/')
                .trim_end_matches("/v1")
                .to_string(),
            model,
            api_key: api_key.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(timeout)
                .timeout_write(Duration::from_secs(30))
                .build(),
            health: Client::new(Duration::from_secs(5), api_key),
        }
    }

    /// `/health` (the existing gate's check: 200 ready, 503 loading).
    pub fn health(&self) -> Health {
        self.health.health(&self.url)
    }

    /// Waits until `/health` is 200, up to `timeout`; calls `waiting` about once a second with
    /// what the server says.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        waiting: &mut dyn FnMut(&Health),
    ) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = Instant::now() - Duration::from_secs(2);
        loop {
            crate::server::check_stop()?;
            let h = self.health();
            if h == Health::Ready {
                return Ok(t0.elapsed());
            }
            if last.elapsed() >= Duration::from_secs(1) {
                waiting(&h);
                last = Instant::now();
            }
            if t0.elapsed() > timeout {
                let why = match h {
                    Health::Loading => "still loading the model (503)".to_string(),
                    Health::Down(w) => w,
                    Health::Ready => unreachable!(),
                };
                return Err(fail(
                    Exit::Unhealthy,
                    format!("{} is not healthy after {} s: {why}", self.url, timeout.as_secs()),
                )
                .fix(format!(
                    "start it (tbq-agent serve --profile NAME, or llama-server --port {}), or point --url at a running one",
                    self.url.rsplit(':').next().unwrap_or("8080")
                ))
                .into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One streamed step with `messages`, constrained to `schema`.
    fn step(
        &self,
        messages: &[Value],
        constraint: &Constraint,
        sampling: &Sampling,
        notify: &mut dyn FnMut(Notice),
    ) -> Result<Reply, StepError> {
        let mut body = json!({
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens,
        });
        if let Some(m) = &self.model {
            // Any OpenAI-compatible endpoint: the JSON schema.
            body["model"] = json!(m);
            body["response_format"] = json!({ "type": "json_schema",
                "json_schema": { "name": "action", "strict": true, "schema": constraint.schema } });
        } else {
            // llama-server: its own grammar, and reproducible sampling.
            body["grammar"] = json!(constraint.grammar);
            body["seed"] = json!(sampling.seed);
        }
        tracing::trace!("request: {body}");
        let mut req = self
            .agent
            .post(&format!("{}/v1/chat/completions", self.url))
            .set("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let resp = match req.send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) if code == 502 || code == 503 || code == 504 => {
                let body = r.into_string().unwrap_or_default();
                return Err(StepError::Transient(format!(
                    "HTTP {code} {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            Err(e @ ureq::Error::Status(..)) => {
                return Err(StepError::Permanent(crate::client::endpoint_error(
                    &self.url,
                    "/v1/chat/completions",
                    e,
                )))
            }
            Err(ureq::Error::Transport(t)) => return Err(StepError::Transient(t.to_string())),
        };
        let mut reply = Reply {
            text: String::new(),
            model: String::new(),
            endpoint: self.role,
            finish_reason: None,
            tokens: None,
            prompt_tokens: None,
        };
        let mut done = false;
        for line in BufReader::new(resp.into_reader()).lines() {
            let line =
                line.map_err(|e| StepError::Transient(format!("the stream broke off: {e}")))?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                done = true;
                break;
            }
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(err) = v.get("error") {
                return Err(StepError::Permanent(
                    fail(
                        Exit::Endpoint,
                        format!("{}: the server reported an error: {err}", self.url),
                    )
                    .into(),
                ));
            }
            if let Some(m) = v["model"].as_str() {
                reply.model = model_label(m);
            }
            if let Some(c) = v["choices"].get(0) {
                if let Some(s) = c["delta"]["content"].as_str() {
                    if !s.is_empty() {
                        reply.text.push_str(s);
                        // A small model at temperature 0 can loop until max_tokens: cut the
                        // loop and hang up (llama-server stops generating for a closed stream).
                        if let Some(cut) = super::protocol::loop_cut(&reply.text) {
                            let kept = reply.text.len() - s.len();
                            if cut > kept {
                                notify(Notice::Delta(&reply.text[kept..cut]));
                            }
                            reply.text.truncate(cut);
                            reply.finish_reason = Some("repetition".into());
                            done = true;
                            break;
                        }
                        notify(Notice::Delta(s));
                    }
                }
                if let Some(r) = c["finish_reason"].as_str() {
                    reply.finish_reason = Some(r.to_string());
                }
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                reply.tokens = Some(n);
            }
            if let Some(n) = v["usage"]["prompt_tokens"].as_u64() {
                reply.prompt_tokens = Some(n);
            }
        }
        if !done && reply.finish_reason.is_none() {
            return Err(StepError::Transient(
                "the stream ended before the answer did".into(),
            ));
        }
        tracing::debug!(endpoint = self.role, model = %reply.model, finish = ?reply.finish_reason, "step: {}", reply.text);
        if reply.model.is_empty() {
            reply.model = self.model.clone().unwrap_or_else(|| self.url.clone());
        }
        Ok(reply)
    }
}

/// llama-server names its model by the path it loaded: keep the file name without `.gguf`.
pub fn model_label(m: &str) -> String {
    let base = m.rsplit('/').next().unwrap_or(m);
    base.strip_suffix(".gguf").unwrap_or(base).to_string()
}

/// Sampling settings of every step.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Temperature.
    pub temperature: f64,
    /// llama-server's seed.
    pub seed: u64,
    /// Tokens per step.
    pub max_tokens: u32,
}

/// The local endpoint, and the fallback when opted in.
pub struct Router {
    /// The local llama-server.
    pub local: Endpoint,
    /// The opted-in fallback.
    pub fallback: Option<Endpoint>,
    /// How long to wait for the local server's health after a failure.
    pub health_timeout: Duration,
    /// Retries after a transient failure.
    pub retries: u32,
    /// Sampling.
    pub sampling: Sampling,
}

impl Router {
    /// One model step: local (retried while it comes back), then the fallback if opted in.
    pub fn complete(
        &self,
        messages: &[Value],
        constraint: &Constraint,
        notify: &mut dyn FnMut(Notice),
    ) -> Result<Reply> {
        let mut attempt = 0;
        let why = loop {
            crate::server::check_stop()?;
            match self
                .local
                .step(messages, constraint, &self.sampling, notify)
            {
                Ok(r) => return Ok(r),
                Err(StepError::Permanent(e)) => return Err(e),
                Err(StepError::Transient(why)) => {
                    if attempt >= self.retries {
                        break format!("{why} (after {attempt} retries)");
                    }
                    attempt += 1;
                    notify(Notice::Retry {
                        attempt,
                        why: why.clone(),
                    });
                    match self.local.wait_ready(self.health_timeout, &mut |_| {}) {
                        Ok(waited) => notify(Notice::Back { waited }),
                        Err(e) => break format!("{why}; then: {e}"),
                    }
                }
            }
        };
        if let Some(fb) = &self.fallback {
            notify(Notice::Fallback { why: why.clone() });
            return match fb.step(messages, constraint, &self.sampling, notify) {
                Ok(r) => Ok(r),
                Err(StepError::Permanent(e)) => Err(e),
                Err(StepError::Transient(w)) => Err(fail(
                    Exit::Endpoint,
                    format!(
                        "the local model failed ({why}) and so did the fallback {}: {w}",
                        fb.url
                    ),
                )
                .into()),
            };
        }
        Err(fail(
            Exit::Endpoint,
            format!("the local model at {} did not answer: {why}", self.local.url),
        )
        .fix("your message is kept: once the server is back (tbq-agent serve restarts it), type /retry; or opt in to the fallback endpoint with --fallback")
        .into())
    }
}
