//! The HTTP channel: an OpenAI-compatible endpoint, so any OpenAI client (openai-python, Open
//! WebUI, Continue, aider through LiteLLM) can talk to the agent, tools, memory and all, on a
//! loopback address and behind a bearer token.
//!
//! Routes: `GET /health` (no token: for load balancers and supervisors), `GET /v1/models`, `POST
//! /v1/chat/completions` (plain or `"stream": true` server-sent events, with
//! `stream_options.include_usage`). Errors have OpenAI's shape, `{"error": {"message", "type",
//! "param", "code"}}`, and its status codes, so clients raise the right exception.
//!
//! Each request is one turn: its last message is the user's, the messages before it are the
//! history. The answer's `model` field names the model that wrote it. Nobody can confirm a shell
//! command over HTTP, so commands that would need a "yes" are refused unless `[chat.http]
//! allow_unconfirmed_shell = true`.
//!
//! Concurrency: `workers` agents (one per llama-server slot by default), each with its own
//! SQLite connection and HTTP client, take turns from a bounded queue. The accept loop never
//! waits on a model: it answers `/health`, `/v1/models`, authentication failures and "queue
//! full" (429 with `Retry-After`) at once.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::memory::Message;
use super::{Agent, Answer, Event, Io, Options};
use crate::error::{fail, Exit};

/// Largest request body accepted.
const MAX_BODY: u64 = 1 << 20;

/// The routes, for 404/405 messages.
const ROUTES: &str = "GET /health, GET /v1/models, POST /v1/chat/completions";

/// An error as OpenAI sends it: HTTP status, `type`, `code`, `param` and a message.
#[derive(Debug)]
struct ApiError {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code: Some(code),
            param: None,
            message: message.into(),
        }
    }

    fn invalid(code: &'static str, param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param),
            ..ApiError::new(400, "invalid_request_error", code, message)
        }
    }

    fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }

    fn response(&self) -> Response<std::io::Cursor<Vec<u8>>> {
        json_response(self.status, &self.body())
    }
}

/// What the accept loop and the workers share.
struct Shared {
    token: String,
    model: String,
    workers: usize,
    queue: usize,
    /// Turns being answered now.
    busy: AtomicUsize,
    /// Requests accepted and not yet answered (being answered or waiting). Counted here rather
    /// than by a bounded channel's fullness: a request handed to an idle worker would still
    /// occupy the channel until that thread wakes, and the next one would get a 429 it should
    /// not.
    pending: AtomicUsize,
    /// Moving average of a turn's wall time, ms: what `Retry-After` is made of.
    turn_ms: AtomicU64,
}

impl Shared {
    /// Seconds until a worker is likely free: the queue ahead drained by all workers.
    fn retry_after(&self) -> u64 {
        let turn = self.turn_ms.load(Ordering::Relaxed).max(1000);
        let ahead = self.waiting() as u64 + 1;
        (turn * ahead / self.workers.max(1) as u64)
            .div_ceil(1000)
            .max(1)
    }

    /// Requests accepted that no worker has taken yet.
    fn waiting(&self) -> usize {
        self.pending
            .load(Ordering::Relaxed)
            .saturating_sub(self.busy.load(Ordering::Relaxed))
    }

    /// Takes a request if a worker or a queue place is free.
    fn admit(&self) -> bool {
        let limit = self.workers + self.queue;
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn record_turn(&self, ms: u64) {
        let old = self.turn_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 3 + ms) / 4 };
        self.turn_ms.store(new, Ordering::Relaxed);
    }
}

/// A parsed chat-completion request.
struct Turn {
    user: String,
    history: Vec<Message>,
    stream: bool,
    include_usage: bool,
}

/// Events of an HTTP turn: logged, and the answer text streamed when asked.
struct HttpIo {
    json: bool,
    allow_unconfirmed: bool,
    stream: Option<Sender<Vec<u8>>>,
    /// `stream_options.include_usage`: every chunk carries `"usage": null`, a last one the usage.
    include_usage: bool,
    id: String,
    model: String,
    streamed: bool,
}

impl HttpIo {
    fn send(&self, v: &Value) {
        if let Some(tx) = &self.stream {
            let _ = tx.send(format!("data: {v}\n\n").into_bytes());
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, model: &str) {
        let mut v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": super::memory::now(), "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        self.send(&v);
    }

    /// OpenAI's last chunk with `include_usage`: no choices, the usage of the whole request.
    fn usage_chunk(&self, a: &Answer) {
        self.send(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": super::memory::now(), "model": a.model,
            "choices": [], "usage": usage(a),
        }));
    }
}

impl Io for HttpIo {
    fn event(&mut self, e: Event) {
        match &e {
            Event::Delta(t) => {
                self.chunk(json!({ "content": t }), None, &self.model);
                self.streamed = true;
                return;
            }
            Event::Answer(a) => {
                let content = if self.streamed {
                    json!({})
                } else {
                    json!({ "content": a.text })
                };
                self.chunk(content, Some("stop"), &a.model);
            }
            _ => {}
        }
        if self.json {
            println!("{}", e.to_json());
        } else {
            tracing::info!("{}", e.to_json());
        }
    }

    fn confirm(&mut self, question: &str) -> Option<bool> {
        tracing::info!(
            "over HTTP nobody can answer {question:?}: {}",
            if self.allow_unconfirmed {
                "running it (allow_unconfirmed_shell)"
            } else {
                "refused"
            }
        );
        self.allow_unconfirmed.then_some(true)
    }
}

/// The agent's tokens for a turn (all its model steps), in OpenAI's `usage` shape.
fn usage(a: &Answer) -> Value {
    json!({ "prompt_tokens": a.prompt_tokens, "completion_tokens": a.tokens, "total_tokens": a.prompt_tokens + a.tokens })
}

/// A `Read` over a channel of byte chunks, for a streamed response body.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn json_response(status: u16, v: &Value) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(v.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}

/// Compares without an early exit, so response timing says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token: from the environment variable `[chat.http] token_env`, or made once and
/// kept in `.tbq-agent/http-token` (mode 0600) in the workspace.
fn token(agent: &Agent, var: &str) -> Result<(String, Option<std::path::PathBuf>)> {
    if let Some(t) = std::env::var(var).ok().filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_string(), None));
    }
    let path = agent.db_path().with_file_name("http-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_string(), Some(path)));
        }
    }
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a token")?;
    let t: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(t.as_bytes())?;
    }
    Ok((t, Some(path)))
}

/// llama-server's parallel slots (`/props` `total_slots`); 1 when it does not say.
fn server_slots(url: &str) -> usize {
    crate::client::Client::new(Duration::from_secs(5), None)
        .props(url)
        .ok()
        .and_then(|p| p["total_slots"].as_u64())
        .map_or(1, |n| n.max(1) as usize)
}

/// Serves the HTTP channel on `addr` until stopped (SIGINT/SIGTERM).
pub fn serve(mut agent: Agent, addr: &str, o: &Options) -> Result<()> {
    let sa: SocketAddr = addr.parse().map_err(|_| {
        fail(
            Exit::Usage,
            format!("--http {addr:?} is not an address:port"),
        )
        .fix("e.g. --http 127.0.0.1:8765")
    })?;
    if !sa.ip().is_loopback() {
        return Err(fail(
            Exit::Usage,
            format!("--http {addr}: the chat endpoint listens on loopback addresses only"),
        )
        .fix("use 127.0.0.1:PORT (or [::1]:PORT); put a reverse proxy with TLS in front to reach it from elsewhere")
        .into());
    }
    let (tok, tok_file) = token(&agent, &o.cfg.http.token_env)?;
    let server = tiny_http::Server::http(sa).map_err(|e| {
        let in_use = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse);
        if in_use {
            fail(Exit::PortInUse, format!("{sa} is already in use")).fix(format!(
                "stop whatever listens there (ss -ltnp 'sport = :{}'), or choose another: --http 127.0.0.1:PORT",
                sa.port()
            ))
        } else {
            fail(Exit::Failure, format!("cannot listen on {sa}: {e}"))
        }
    })?;
    let sa = server.server_addr().to_ip().unwrap_or(sa);
    let mut log = HttpIo {
        json: o.json,
        allow_unconfirmed: o.cfg.http.allow_unconfirmed_shell,
        stream: None,
        include_usage: false,
        id: String::new(),
        model: String::new(),
        streamed: false,
    };
    let model = agent.start("http", &mut log)?;
    let _ticker = super::reminders::Ticker::spawn(
        agent.db_path(),
        agent.conversation(),
        Box::new(move |f| println!("{}", Event::Reminder(&f).to_json())),
    )?;
    let workers = match o.cfg.http.workers {
        0 => server_slots(&agent.router.local.url),
        n => n,
    };
    let shared = Arc::new(Shared {
        token: tok,
        model: model.clone(),
        workers,
        queue: o.cfg.http.queue,
        busy: AtomicUsize::new(0),
        pending: AtomicUsize::new(0),
        turn_ms: AtomicU64::new(0),
    });
    // Unbounded: `Shared::admit` is the bound.
    let (jobs, rx) = channel::<Request>();
    let rx = Arc::new(Mutex::new(rx));
    let mut agents = vec![agent];
    for _ in 1..workers {
        agents.push(Agent::open(o)?);
    }
    for mut a in agents {
        let (rx, shared) = (rx.clone(), shared.clone());
        let (json, allow) = (o.json, o.cfg.http.allow_unconfirmed_shell);
        std::thread::spawn(move || loop {
            let req = match rx.lock().map(|r| r.recv()) {
                Ok(Ok(r)) => r,
                _ => return,
            };
            shared.busy.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = completions(&mut a, req, json, allow, &shared) {
                tracing::warn!("answering a request: {e:#}");
            }
            shared.busy.fetch_sub(1, Ordering::Relaxed);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    let where_token = match &tok_file {
        Some(p) => format!("the token is in {}", p.display()),
        None => format!("the token is ${}", o.cfg.http.token_env),
    };
    if o.json {
        println!(
            "{}",
            json!({"event": "listening", "url": format!("http://{sa}/v1"), "token_file": tok_file, "model": model,
                   "workers": workers, "queue": o.cfg.http.queue})
        );
    } else {
        println!("tbq-agent chat: OpenAI-compatible endpoint at http://{sa}/v1 (model {model}; {workers} at a time, {} waiting at most); {where_token}", o.cfg.http.queue);
        println!("  curl -s http://{sa}/v1/chat/completions -H \"Authorization: Bearer $TOKEN\" -d '{{\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        crate::server::check_stop()?;
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("accepting a request: {e}");
                continue;
            }
        };
        if let Err(e) = dispatch(req, &shared, &jobs) {
            tracing::warn!("answering a request: {e:#}");
        }
    }
}

/// Answers what needs no model at once; queues a completion for a worker, or answers 429.
fn dispatch(req: Request, shared: &Shared, jobs: &Sender<Request>) -> Result<()> {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    if path == "/health" {
        // No token: supervisors and load balancers probe it; it says nothing private.
        let v = json!({"status": "ok", "model": shared.model, "workers": shared.workers,
                       "busy": shared.busy.load(Ordering::Relaxed), "waiting": shared.waiting(),
                       "queue": shared.queue});
        return Ok(req.respond(json_response(200, &v))?);
    }
    let auth = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let given = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.trim().as_bytes(), shared.token.as_bytes()) {
        let e = ApiError::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "missing or wrong bearer token: send Authorization: Bearer <token>",
        );
        return Ok(req.respond(
            e.response()
                .with_header(header("WWW-Authenticate", "Bearer")),
        )?);
    }
    let known = ["/v1/models", "/v1/chat/completions"].contains(&path.as_str());
    match (method, path.as_str()) {
        (Method::Get, "/v1/models") => Ok(req.respond(json_response(
            200,
            &json!({"object": "list", "data": [{"id": shared.model, "object": "model", "created": 0, "owned_by": "tbq-agent"}]}),
        ))?),
        (Method::Post, "/v1/chat/completions") => {
            if shared.admit() {
                // The workers live as long as the process: a send cannot fail.
                let _ = jobs.send(req);
                Ok(())
            } else {
                let wait = shared.retry_after();
                let e = ApiError::new(
                    429,
                    "rate_limit_error",
                    "queue_full",
                    format!(
                        "{} turns are being answered and {} are waiting (the most [chat.http] allows): try again in {wait} s",
                        shared.workers, shared.queue
                    ),
                );
                Ok(req.respond(
                    e.response()
                        .with_header(header("Retry-After", &wait.to_string())),
                )?)
            }
        }
        (m, p) if known => Ok(req.respond(
            ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{m} {p} is not served; routes: {ROUTES}"),
            )
            .response(),
        )?),
        (m, p) => Ok(req.respond(
            ApiError::new(
                404,
                "invalid_request_error",
                "unknown_url",
                format!("no route {m} {p}; routes: {ROUTES}"),
            )
            .response(),
        )?),
    }
}

/// The text of an OpenAI message's content: a string, or an array of `{type: text}` parts.
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Reads and checks a chat-completion body.
fn parse_turn(req: &mut Request) -> Result<Turn, ApiError> {
    if req.body_length().is_some_and(|n| n as u64 > MAX_BODY) {
        return Err(ApiError::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    let mut body = String::new();
    req.as_reader()
        .take(MAX_BODY + 1)
        .read_to_string(&mut body)
        .map_err(|e| {
            ApiError::new(
                400,
                "invalid_request_error",
                "invalid_body",
                format!("reading the body: {e}"),
            )
        })?;
    if body.len() as u64 > MAX_BODY {
        return Err(ApiError::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        ));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Some(msgs) = v["messages"].as_array() else {
        return Err(ApiError::invalid(
            "invalid_type",
            "messages",
            "messages must be an array of {role, content}",
        ));
    };
    let Some((last, earlier)) = msgs.split_last().filter(|(l, _)| l["role"] == "user") else {
        return Err(ApiError::invalid(
            "invalid_value",
            "messages",
            "messages must end with a user message",
        ));
    };
    Ok(Turn {
        user: content_text(&last["content"]),
        history: earlier
            .iter()
            .filter(|m| m["role"] == "user" || m["role"] == "assistant")
            .map(|m| Message {
                role: m["role"].as_str().unwrap_or("user").to_string(),
                content: content_text(&m["content"]),
                model: None,
            })
            .collect(),
        stream: v["stream"].as_bool().unwrap_or(false),
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
    })
}

/// One turn for one request, on a worker.
fn completions(
    agent: &mut Agent,
    mut req: Request,
    json: bool,
    allow_unconfirmed: bool,
    shared: &Shared,
) -> Result<()> {
    let turn = match parse_turn(&mut req) {
        Ok(t) => t,
        Err(e) => return Ok(req.respond(e.response())?),
    };
    // Unique across workers and restarts: Unix seconds, the process and a counter.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "chatcmpl-tbq-{}-{}-{}",
        super::memory::now(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // One conversation per request: the client holds the history, as with any OpenAI endpoint.
    agent.conversation = agent.store.new_conversation("http")?;
    agent
        .store
        .add_message(agent.conversation, "user", &turn.user, None)?;
    let mut io = HttpIo {
        json,
        allow_unconfirmed,
        stream: None,
        include_usage: turn.include_usage,
        id: id.clone(),
        model: shared.model.clone(),
        streamed: false,
    };
    let failed = |e: &anyhow::Error| {
        ApiError::new(
            502,
            "server_error",
            "model_unavailable",
            format!("{e:#} (the message is stored in the agent's memory; send it again)"),
        )
    };
    if turn.stream {
        let (tx, rx) = channel();
        io.stream = Some(tx);
        io.chunk(
            json!({"role": "assistant", "content": ""}),
            None,
            &shared.model,
        );
        let resp = Response::new(
            StatusCode(200),
            vec![
                header("Content-Type", "text/event-stream"),
                header("Cache-Control", "no-cache"),
            ],
            ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            },
            None,
            None,
        );
        let writer = std::thread::spawn(move || req.respond(resp));
        match agent.answer(&turn.user, &turn.history, &mut io) {
            Ok(a) => {
                shared.record_turn(a.ms);
                if io.include_usage {
                    io.usage_chunk(&a);
                }
            }
            // The status line is sent: the error goes in the stream, as OpenAI does.
            Err(e) => io.send(&failed(&e).body()),
        }
        if let Some(tx) = io.stream.take() {
            let _ = tx.send(b"data: [DONE]\n\n".to_vec());
        }
        let _ = writer.join();
        return Ok(());
    }
    match agent.answer(&turn.user, &turn.history, &mut io) {
        Ok(a) => {
            shared.record_turn(a.ms);
            Ok(req.respond(json_response(
                200,
                &json!({
                    "id": id, "object": "chat.completion", "created": super::memory::now(), "model": a.model,
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": a.text }, "finish_reason": "stop" }],
                    "usage": usage(&a),
                    "tbq_agent": { "endpoint": a.endpoint, "steps": a.steps, "ms": a.ms },
                }),
            ))?)
        }
        Err(e) => Ok(req.respond(failed(&e).response())?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openais_shape() {
        let e = ApiError::invalid("invalid_value", "messages", "bad");
        assert_eq!(
            e.body(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "invalid_value"}})
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn retry_after_grows_with_the_queue_and_shrinks_with_workers() {
        let s = Shared {
            token: String::new(),
            model: String::new(),
            workers: 2,
            queue: 4,
            busy: AtomicUsize::new(2),
            pending: AtomicUsize::new(5),
            turn_ms: AtomicU64::new(0),
        };
        // No turn measured yet: one second a turn.
        assert_eq!(s.retry_after(), 2);
        s.record_turn(5000);
        assert_eq!(s.retry_after(), 10);
        s.pending.store(2, Ordering::Relaxed);
        assert_eq!(s.retry_after(), 3);
    }

    #[test]
    fn admits_workers_plus_queue_then_refuses() {
        let s = Shared {
            token: String::new(),
            model: String::new(),
            workers: 2,
            queue: 1,
            busy: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            turn_ms: AtomicU64::new(0),
        };
        assert!(s.admit() && s.admit() && s.admit());
        assert!(!s.admit());
        assert_eq!(s.pending.load(Ordering::Relaxed), 3);
    }
}
