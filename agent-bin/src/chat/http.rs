//! The HTTP channel: `POST /v1/chat/completions` as OpenAI defines it, so any OpenAI client can
//! talk to the agent (tools, memory and all), on a loopback address and behind a bearer token.
//!
//! Each request is one turn: its last message is the user's, the messages before it are the
//! history. The answer's `model` field names the model that wrote it. `"stream": true` sends
//! server-sent events as the answer is generated. Nobody can confirm a shell command over HTTP,
//! so commands that would need a "yes" are refused unless `[chat.http]
//! allow_unconfirmed_shell = true`. Requests are answered one at a time (the local model
//! answers one at a time anyway).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::memory::Message;
use super::{Agent, Event, Io, Options};
use crate::error::{fail, Exit};

/// Largest request body accepted.
const MAX_BODY: u64 = 1 << 20;

/// Events of an HTTP turn: logged, and the answer text streamed when asked.
struct HttpIo {
    json: bool,
    allow_unconfirmed: bool,
    stream: Option<Sender<Vec<u8>>>,
    id: String,
    model: String,
    streamed: bool,
}

impl HttpIo {
    fn chunk(&mut self, delta: Value, finish: Option<&str>, model: &str) {
        if let Some(tx) = &self.stream {
            let v = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": super::memory::now(), "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            let _ = tx.send(format!("data: {v}\n\n").into_bytes());
        }
    }
}

impl Io for HttpIo {
    fn event(&mut self, e: Event) {
        match &e {
            Event::Delta(t) => {
                let m = self.model.clone();
                self.chunk(json!({ "content": t }), None, &m);
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

fn error_body(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind } })
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
    let where_token = match &tok_file {
        Some(p) => format!("the token is in {}", p.display()),
        None => format!("the token is ${}", o.cfg.http.token_env),
    };
    if o.json {
        println!(
            "{}",
            json!({"event": "listening", "url": format!("http://{sa}/v1"), "token_file": tok_file, "model": model})
        );
    } else {
        println!("tbq-agent chat: OpenAI-compatible endpoint at http://{sa}/v1 (model {model}); {where_token}");
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
        if let Err(e) = handle(&mut agent, req, &tok, &model, o) {
            tracing::warn!("answering a request: {e:#}");
        }
    }
}

fn handle(agent: &mut Agent, req: Request, tok: &str, model: &str, o: &Options) -> Result<()> {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    if method == Method::Get && path == "/health" {
        return Ok(req.respond(json_response(200, &json!({"status": "ok"})))?);
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
    if !same(given.trim().as_bytes(), tok.as_bytes()) {
        let r = json_response(
            401,
            &error_body(
                "missing or wrong bearer token: send Authorization: Bearer <token>",
                "invalid_request_error",
            ),
        )
        .with_header(header("WWW-Authenticate", "Bearer"));
        return Ok(req.respond(r)?);
    }
    match (method, path.as_str()) {
        (Method::Get, "/v1/models") => Ok(req.respond(json_response(
            200,
            &json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "tbq-agent"}]}),
        ))?),
        (Method::Post, "/v1/chat/completions") => completions(agent, req, o),
        _ => Ok(req.respond(json_response(
            404,
            &error_body(&format!("no route {path}: use POST /v1/chat/completions"), "invalid_request_error"),
        ))?),
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

fn completions(agent: &mut Agent, mut req: Request, o: &Options) -> Result<()> {
    let mut body = String::new();
    req.as_reader().take(MAX_BODY).read_to_string(&mut body)?;
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(req.respond(json_response(
                400,
                &error_body(
                    &format!("the body is not JSON: {e}"),
                    "invalid_request_error",
                ),
            ))?)
        }
    };
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    let Some((last, earlier)) = msgs.split_last().filter(|(l, _)| l["role"] == "user") else {
        return Ok(req.respond(json_response(
            400,
            &error_body(
                "messages must end with a user message",
                "invalid_request_error",
            ),
        ))?);
    };
    let user = content_text(&last["content"]);
    let history: Vec<Message> = earlier
        .iter()
        .filter(|m| m["role"] == "user" || m["role"] == "assistant")
        .map(|m| Message {
            role: m["role"].as_str().unwrap_or("user").to_string(),
            content: content_text(&m["content"]),
            model: None,
        })
        .collect();
    let stream = v["stream"].as_bool().unwrap_or(false);
    let id = format!(
        "chatcmpl-tbq-{}-{}",
        super::memory::now(),
        std::process::id()
    );
    // One conversation per request: the client holds the history, as with any OpenAI endpoint.
    agent.conversation = agent.store.new_conversation("http")?;
    agent
        .store
        .add_message(agent.conversation, "user", &user, None)?;
    let mut io = HttpIo {
        json: o.json,
        allow_unconfirmed: o.cfg.http.allow_unconfirmed_shell,
        stream: None,
        id: id.clone(),
        model: agent.local_model_name(),
        streamed: false,
    };
    if stream {
        let (tx, rx) = channel();
        io.stream = Some(tx);
        let first = io.model.clone();
        io.chunk(json!({"role": "assistant", "content": ""}), None, &first);
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
        let r = agent.answer(&user, &history, &mut io);
        if let (Err(e), Some(tx)) = (&r, &io.stream) {
            let _ = tx.send(
                format!(
                    "data: {}\n\n",
                    error_body(&format!("{e:#}"), "server_error")
                )
                .into_bytes(),
            );
        }
        if let Some(tx) = io.stream.take() {
            let _ = tx.send(b"data: [DONE]\n\n".to_vec());
        }
        let _ = writer.join();
        return Ok(());
    }
    match agent.answer(&user, &history, &mut io) {
        Ok(a) => Ok(req.respond(json_response(
            200,
            &json!({
                "id": id, "object": "chat.completion", "created": super::memory::now(), "model": a.model,
                "choices": [{ "index": 0, "message": { "role": "assistant", "content": a.text }, "finish_reason": "stop" }],
                "usage": { "completion_tokens": a.tokens },
                "tbq_agent": { "endpoint": a.endpoint, "steps": a.steps, "ms": a.ms },
            }),
        ))?),
        Err(e) => Ok(req.respond(json_response(
            502,
            &error_body(
                &format!("{e:#} (the message is stored in the agent's memory; send it again)"),
                "server_error",
            ),
        ))?),
    }
}
