//! `tbq-agent chat`: a local-first personal agent over llama-server.
//!
//! A turn is a short loop: recall what may be relevant (full text, and vectors when an
//! embedding endpoint is set), ask the model for one JSON action under a grammar
//! (`protocol.rs`), run the tool it names (`tools.rs`: shell with a policy, workspace files,
//! memory, reminders, web, and the tools of configured MCP servers, `mcp/`), show it the
//! result, and stop at an answer or after `max_steps`.
//! The user's message is stored before the model sees it and the answer with the name of the
//! model that wrote it, so nothing is lost when the server dies mid-turn (`route.rs` waits and
//! retries, or says so).
//!
//! Channels: the terminal (`repl.rs`) and an OpenAI-compatible HTTP endpoint (`http.rs`).

pub mod files;
pub mod http;
pub mod mcp;
pub mod memory;
pub mod protocol;
pub mod reminders;
pub mod repl;
pub mod route;
pub mod settings;
pub mod shell;
pub mod tools;
pub mod vectors;
pub mod web;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::error::{fail, Exit};
use files::Workspace;
use memory::{Message, Recalled, Store};
use protocol::{Action, AnswerStream, ToolSpec};
use route::{Endpoint, Notice, Router, Sampling};
pub use settings::ChatConfig;
use vectors::Embedder;

/// What happens during a turn, for the channel to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// The local server is not ready yet.
    Waiting { url: &'a str, why: &'a str },
    /// Ready to take messages.
    Ready {
        url: &'a str,
        model: &'a str,
        workspace: &'a Path,
        /// Where shell commands run: the sandbox, or that there is none and why.
        sandbox: &'a str,
    },
    /// Answer text as it streams in.
    Delta(&'a str),
    /// The model called a tool.
    ToolCall { tool: &'a str, args: &'a Value },
    /// What the tool did.
    ToolResult {
        tool: &'a str,
        ok: bool,
        text: &'a str,
    },
    /// A shell command refused by policy (or for want of a confirmation).
    Blocked { command: &'a str, why: &'a str },
    /// The user answered "no".
    Declined { command: &'a str },
    /// The server failed mid-step; waiting for it to come back.
    Retry { attempt: u32, why: &'a str },
    /// The server is back.
    Back { waited: Duration },
    /// The fallback endpoint is answering.
    Fallback { why: &'a str },
    /// A step's output could not be used (cut off); the model is asked again.
    Invalid { why: &'a str },
    /// The turn's answer.
    Answer(&'a Answer),
    /// The turn failed; the message is stored and can be retried.
    TurnFailed { error: &'a str },
    /// A reminder fired.
    Reminder(&'a reminders::Fired),
    /// What was recalled into this turn's context (memories, earlier conversations).
    Recalled(&'a [String]),
}

impl Event<'_> {
    /// The event as one JSON object (`--json`).
    pub fn to_json(&self) -> Value {
        match self {
            Event::Waiting { url, why } => json!({"event": "waiting", "url": url, "why": why}),
            Event::Ready {
                url,
                model,
                workspace,
                sandbox,
            } => {
                json!({"event": "ready", "url": url, "model": model, "workspace": workspace,
                "sandbox": sandbox})
            }
            Event::Delta(t) => json!({"event": "delta", "text": t}),
            Event::ToolCall { tool, args } => {
                json!({"event": "tool_call", "tool": tool, "args": args})
            }
            Event::ToolResult { tool, ok, text } => {
                json!({"event": "tool_result", "tool": tool, "ok": ok, "text": text})
            }
            Event::Blocked { command, why } => {
                json!({"event": "blocked", "command": command, "why": why})
            }
            Event::Declined { command } => json!({"event": "declined", "command": command}),
            Event::Retry { attempt, why } => {
                json!({"event": "retry", "attempt": attempt, "why": why})
            }
            Event::Back { waited } => {
                json!({"event": "server_back", "waited_ms": waited.as_millis() as u64})
            }
            Event::Fallback { why } => json!({"event": "fallback", "why": why}),
            Event::Invalid { why } => json!({"event": "invalid_step", "why": why}),
            Event::Answer(a) => {
                json!({"event": "answer", "text": a.text, "model": a.model, "endpoint": a.endpoint,
                "steps": a.steps, "tokens": a.tokens, "ms": a.ms})
            }
            Event::TurnFailed { error } => json!({"event": "turn_failed", "error": error}),
            Event::Recalled(items) => json!({"event": "recalled", "items": items}),
            Event::Reminder(r) => {
                json!({"event": "reminder", "id": r.id, "text": r.text, "schedule": r.schedule,
                "due": r.due, "late": r.late})
            }
        }
    }
}

/// A channel: where events go and who answers confirmations.
pub trait Io {
    /// Shows an event.
    fn event(&mut self, e: Event);
    /// Asks a yes/no question; None when nobody can answer on this channel.
    fn confirm(&mut self, question: &str) -> Option<bool>;
}

/// A turn's answer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Answer {
    /// The text.
    pub text: String,
    /// The model that wrote it.
    pub model: String,
    /// `local` or `fallback`.
    pub endpoint: &'static str,
    /// Model steps taken (tool calls + 1).
    pub steps: u32,
    /// Tokens generated over all steps.
    pub tokens: u64,
    /// Prompt tokens over all steps (each step sends the whole prompt again).
    pub prompt_tokens: u64,
    /// Wall time of the turn, ms.
    pub ms: u64,
}

/// The agent: configuration, workspace, memory, the models.
pub struct Agent {
    cfg: ChatConfig,
    ws: Workspace,
    store: Store,
    db_path: PathBuf,
    emb: Option<Embedder>,
    policy: shell::Policy,
    sandbox: shell::Sandbox,
    /// Whether a shell result already said that there is no sandbox.
    told_unsandboxed: bool,
    router: Router,
    conversation: i64,
    require_tool: Option<String>,
    tool_args: Option<Value>,
    mcp: mcp::Servers,
    /// Serving `--http`: nobody can confirm an MCP call (unlike shell commands, there is no
    /// setting that lets them run unconfirmed).
    over_http: bool,
}

/// How `chat` was asked to run.
pub struct Options {
    /// `[chat]` with the command line applied.
    pub cfg: ChatConfig,
    /// The local llama-server.
    pub url: String,
    /// The workspace folder.
    pub workspace: PathBuf,
    /// One message, answered, then exit.
    pub message: Option<String>,
    /// Serve the HTTP channel on this address instead of the terminal.
    pub http: Option<String>,
    /// Opt in to the fallback endpoint for this run.
    pub fallback: bool,
    /// The first step of every turn must call this tool.
    pub require_tool: Option<String>,
    /// With `require_tool`: the arguments are pinned to these values (a JSON object).
    pub tool_args: Option<Value>,
    /// JSON events on stdout.
    pub json: bool,
    /// Spinners and colours (stderr is a terminal).
    pub progress: bool,
}

/// Local time `YYYY-MM-DD HH:MM` of Unix seconds `t`.
pub fn local_time(t: i64) -> String {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t as libc::time_t;
    unsafe { libc::localtime_r(&tt, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

/// The default workspace: `$XDG_DATA_HOME/tbq-agent/workspace`.
pub fn default_workspace() -> PathBuf {
    directories::ProjectDirs::from("", "", "tbq-agent")
        .map(|d| d.data_dir().join("workspace"))
        .unwrap_or_else(|| PathBuf::from("tbq-workspace"))
}

impl Agent {
    /// Opens the workspace and its memory, and sets up the endpoints (contacts none of them).
    pub fn open(o: &Options) -> Result<Agent> {
        let cfg = o.cfg.clone();
        let ws = Workspace::open(&o.workspace).map_err(|e| {
            fail(Exit::Input, format!("{e:#}"))
                .fix("choose another folder with --workspace or [chat] workspace")
        })?;
        let db_path = ws.root().join(".tbq-agent/memory.sqlite");
        let store = Store::open(&db_path)?;
        let timeout = Duration::from_secs(cfg.request_timeout);
        let local = Endpoint::new("local", &o.url, None, None, timeout);
        let fallback = match (&cfg.fallback, o.fallback) {
            (Some(f), opt_in) if opt_in || f.enabled => {
                let key = match &f.api_key_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        fail(Exit::Input, format!("the fallback's API key variable {var} is not set"))
                            .fix(format!("export {var}=..., or remove api_key_env from [chat.fallback]"))
                    })?),
                    None => None,
                };
                Some(Endpoint::new("fallback", &f.url, f.model.clone(), key, timeout))
            }
            (None, true) => {
                return Err(fail(Exit::Input, "--fallback given, but no [chat.fallback] endpoint is configured")
                    .fix("add [chat.fallback] with url (and model, api_key_env) to the config file; `tbq-agent config --example` shows one")
                    .into())
            }
            _ => None,
        };
        // The servers start before the checks below: --require-tool may name one of their tools.
        let mcp = mcp::Servers::start(&cfg.mcp, ws.root())?;
        let known = known_tools(&mcp);
        let required = o.require_tool.as_deref().map(|t| {
            known.iter().find(|s| s.name == t).ok_or_else(|| {
                fail(
                    Exit::Usage,
                    format!("--require-tool: there is no tool {t:?}"),
                )
                .fix(format!(
                    "one of: {}",
                    known.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
                ))
            })
        });
        let required = required.transpose()?;
        if let Some(args) = &o.tool_args {
            let fits = required.is_some_and(|s| {
                protocol::check_args(s, args).is_ok()
                    && args
                        .as_object()
                        .is_some_and(|a| a.keys().all(|k| s.args.iter().any(|(n, _)| n == k)))
            });
            if !fits {
                return Err(fail(Exit::Usage, "--tool-args must be a JSON object with the arguments of --require-tool's tool (every required one, each of its type)")
                    .fix("e.g. --require-tool shell --tool-args '{\"command\": \"ls\"}'")
                    .into());
            }
        }
        let sandbox = if cfg.shell.enabled {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            shell::Sandbox::open(
                cfg.shell.sandbox,
                shell::SandboxPolicy::new(ws.root(), home.as_deref(), cfg.shell.network),
            )?
        } else {
            shell::Sandbox::Unsandboxed {
                why: "the shell tool is off".into(),
            }
        };
        if cfg.shell.enabled && matches!(sandbox, shell::Sandbox::Unsandboxed { .. }) {
            tracing::warn!("{}", sandbox.describe());
        }
        Ok(Agent {
            policy: shell::Policy::new(&cfg.shell.allow, &cfg.shell.deny),
            sandbox,
            told_unsandboxed: false,
            emb: cfg.embedding_url.as_deref().map(Embedder::new),
            router: Router {
                local,
                fallback,
                health_timeout: Duration::from_secs(cfg.health_timeout),
                retries: cfg.retries,
                sampling: Sampling {
                    temperature: cfg.temperature,
                    seed: cfg.seed,
                    max_tokens: cfg.max_tokens,
                },
            },
            conversation: 0,
            require_tool: o.require_tool.clone(),
            tool_args: o.tool_args.clone(),
            mcp,
            over_http: o.http.is_some(),
            cfg,
            ws,
            store,
            db_path,
        })
    }

    /// Waits for the local server's health, embeds memories that have no vector yet, starts a
    /// conversation. Returns the local model's name.
    pub fn start(&mut self, channel: &str, io: &mut dyn Io) -> Result<String> {
        let url = self.router.local.url.clone();
        let waited = self
            .router
            .local
            .wait_ready(self.router.health_timeout, &mut |h| {
                let why = match h {
                    crate::client::Health::Loading => "loading the model (503)".to_string(),
                    crate::client::Health::Down(w) => w.clone(),
                    crate::client::Health::Ready => String::new(),
                };
                io.event(Event::Waiting {
                    url: &url,
                    why: &why,
                });
            });
        let model = match waited {
            Ok(_) => self.local_model_name(),
            Err(e) if self.router.fallback.is_some() => {
                tracing::warn!("{e:#}; answering from the fallback until it is back");
                "(local server down)".to_string()
            }
            Err(e) => return Err(e),
        };
        if let Some(emb) = &self.emb {
            match self.store.backfill_vectors(emb) {
                Ok(0) => {}
                Ok(n) => tracing::info!("embedded {n} memories for vector recall"),
                Err(e) => tracing::warn!("vector recall unavailable for now: {e:#}"),
            }
        }
        self.conversation = self.store.new_conversation(channel)?;
        io.event(Event::Ready {
            url: &url,
            model: &model,
            workspace: self.ws.root(),
            sandbox: &self.sandbox.describe(),
        });
        Ok(model)
    }

    fn local_model_name(&self) -> String {
        let v: Option<Value> = ureq::get(&format!("{}/v1/models", self.router.local.url))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()
            .and_then(|r| r.into_json().ok());
        v.and_then(|v| v["data"][0]["id"].as_str().map(route::model_label))
            .unwrap_or_else(|| "local model".into())
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The memory.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current conversation id.
    pub fn conversation(&self) -> i64 {
        self.conversation
    }

    /// Saves a memory (and its vector when embeddings are on; a failed embedding is filled in
    /// at the next start).
    pub fn remember(&mut self, text: &str, source: &str) -> Result<i64> {
        let id = self.store.save_memory(text, source)?;
        if let Some(emb) = &self.emb {
            match emb.embed(text) {
                Ok(e) => self.store.set_vector(id, &e)?,
                Err(e) => tracing::warn!("memory #{id} saved without a vector: {e:#}"),
            }
        }
        Ok(id)
    }

    /// Memories and past messages relevant to `query`: full text always, vectors when on.
    pub fn recall(&self, query: &str, k: usize) -> Result<Vec<Recalled>> {
        let mut out = self.store.recall_fts(query, k, Some(self.conversation))?;
        if let Some(emb) = &self.emb {
            match emb
                .embed(query)
                .and_then(|e| self.store.recall_vector(&e, k))
            {
                Ok(v) => {
                    for r in v {
                        if !out.iter().any(|o| o.kind == r.kind && o.id == r.id) {
                            out.push(r);
                        }
                    }
                }
                Err(e) => tracing::warn!("vector recall failed, full text only: {e:#}"),
            }
        }
        Ok(out)
    }

    fn offered_tools(&self) -> Vec<&'static ToolSpec> {
        protocol::TOOLS
            .iter()
            .filter(|t| match t.name {
                "shell" => self.cfg.shell.enabled,
                "web_fetch" => self.cfg.web.enabled,
                _ => true,
            })
            .chain(self.mcp.tools().iter().map(|t| t.spec))
            .collect()
    }

    fn find_tool(&self, name: &str) -> Option<&'static ToolSpec> {
        known_tools(&self.mcp).into_iter().find(|t| t.name == name)
    }

    /// One turn on the terminal channel: `user` is stored, then answered with the stored
    /// conversation as history.
    pub fn turn(&mut self, user: &str, io: &mut dyn Io) -> Result<Answer> {
        let history = self
            .store
            .recent_messages(self.conversation, self.cfg.history_turns * 2)?;
        self.store
            .add_message(self.conversation, "user", user, None)?;
        self.answer(user, &history, io)
    }

    /// Answers the last stored user message again (after a failed turn).
    pub fn retry(&mut self, io: &mut dyn Io) -> Result<Option<Answer>> {
        let mut msgs = self
            .store
            .recent_messages(self.conversation, self.cfg.history_turns * 2 + 1)?;
        match msgs.pop() {
            Some(m) if m.role == "user" => Ok(Some(self.answer(&m.content, &msgs, io)?)),
            _ => Ok(None),
        }
    }

    /// Answers `user` given `history` (oldest first); stores the answer.
    pub fn answer(&mut self, user: &str, history: &[Message], io: &mut dyn Io) -> Result<Answer> {
        let t0 = Instant::now();
        let recalled: Vec<String> = self
            .recall(user, self.cfg.recall_k)?
            .into_iter()
            .map(|r| match r.kind {
                "memory" => r.text,
                _ => format!("(earlier conversation) {}", r.text),
            })
            .collect();
        if !recalled.is_empty() {
            io.event(Event::Recalled(&recalled));
        }
        let tools = self.offered_tools();
        let mut messages = vec![json!({
            "role": "system",
            "content": protocol::system_prompt(&tools, &recalled, &conversation(history), &local_time(memory::now())),
        })];
        messages.extend(protocol::examples(&tools));
        messages.push(json!({"role": "user", "content": user}));

        let max_steps = self.cfg.max_steps.max(1);
        let mut tokens = 0;
        let mut prompt_tokens = 0;
        let mut last_call: Option<(String, Value, String)> = None;
        let mut answer_only = false;
        for step in 0..max_steps {
            let required = self.require_tool.as_deref().filter(|_| step == 0);
            let constraint = match required.map(|t| self.find_tool(t).expect("checked at open")) {
                Some(t) => match &self.tool_args {
                    Some(args) => protocol::pinned(t, args),
                    None => protocol::constraint(&[t], false),
                },
                None if answer_only || step + 1 == max_steps => protocol::constraint(&[], true),
                None => protocol::constraint(&tools, true),
            };
            let mut stream = AnswerStream::default();
            let reply = self
                .router
                .complete(&messages, &constraint, &mut |n| match n {
                    Notice::Delta(d) => {
                        let shown = stream.feed(d);
                        if !shown.is_empty() {
                            io.event(Event::Delta(&shown));
                        }
                    }
                    Notice::Retry { attempt, why } => {
                        stream = AnswerStream::default();
                        io.event(Event::Retry { attempt, why: &why });
                    }
                    Notice::Back { waited } => io.event(Event::Back { waited }),
                    Notice::Fallback { why } => {
                        stream = AnswerStream::default();
                        io.event(Event::Fallback { why: &why });
                    }
                });
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    io.event(Event::TurnFailed {
                        error: &format!("{e:#}"),
                    });
                    return Err(e);
                }
            };
            tokens += reply.tokens.unwrap_or(0);
            prompt_tokens += reply.prompt_tokens.unwrap_or(0);
            let action = match protocol::parse(&reply.text, &known_tools(&self.mcp)) {
                Ok(a) => a,
                Err(e)
                    if matches!(
                        reply.finish_reason.as_deref(),
                        Some("length" | "repetition")
                    ) =>
                {
                    // Cut off (max_tokens, or a loop): keep what an answer had said; redo a call.
                    let mut s = AnswerStream::default();
                    let said = s.feed(&reply.text);
                    if !said.trim().is_empty() {
                        Action::Answer(format!("{}…", protocol::strip_markers(&said)))
                    } else {
                        let why = match reply.finish_reason.as_deref() {
                            Some("repetition") => {
                                "the model began repeating itself inside a tool call (cut)"
                                    .to_string()
                            }
                            _ => format!("the step ran out of tokens inside a tool call ({e:#})"),
                        };
                        io.event(Event::Invalid { why: &why });
                        messages.push(json!({"role": "assistant", "content": reply.text}));
                        messages.push(json!({"role": "user", "content":
                            "Your reply was cut off. Reply again with a shorter JSON action."}));
                        answer_only = true;
                        continue;
                    }
                }
                Err(e) => {
                    io.event(Event::Invalid {
                        why: &format!("{e:#}"),
                    });
                    answer_only = true;
                    continue;
                }
            };
            match action {
                Action::Answer(text) => {
                    let text = text.trim().to_string();
                    self.store.add_message(
                        self.conversation,
                        "assistant",
                        &text,
                        Some(&reply.model),
                    )?;
                    let a = Answer {
                        text,
                        model: reply.model,
                        endpoint: reply.endpoint,
                        steps: step + 1,
                        tokens,
                        prompt_tokens,
                        ms: t0.elapsed().as_millis() as u64,
                    };
                    io.event(Event::Answer(&a));
                    return Ok(a);
                }
                Action::Call { tool, args } => {
                    messages.push(json!({"role": "assistant", "content": reply.text.trim()}));
                    // A model that repeats its last call is stuck: the call is not run twice,
                    // and the next step may only answer.
                    let call = (tool.clone(), args.clone());
                    if let Some((_, _, shown)) = last_call
                        .as_ref()
                        .filter(|l| l.0 == call.0 && l.1 == call.1)
                    {
                        io.event(Event::Invalid {
                            why: &format!(
                                "the model called {tool} again with the same arguments: not run twice"
                            ),
                        });
                        messages.push(json!({"role": "user", "content": shown.clone()}));
                        answer_only = true;
                        continue;
                    }
                    io.event(Event::ToolCall {
                        tool: &tool,
                        args: &args,
                    });
                    let outcome = self.call_tool(&tool, &args, io);
                    io.event(Event::ToolResult {
                        tool: &tool,
                        ok: outcome.ok,
                        text: &outcome.text,
                    });
                    self.store.add_message(
                        self.conversation,
                        "tool",
                        &json!({"tool": tool, "args": args, "ok": outcome.ok, "result": outcome.text}).to_string(),
                        Some(&reply.model),
                    )?;
                    // One tool per turn unless chain_tools: a small model that may call again
                    // walks through its examples instead of answering.
                    if self.require_tool.is_some() || !self.cfg.chain_tools {
                        answer_only = true;
                    }
                    let shown = protocol::tool_result_message(&tool, &tools::for_model(&outcome));
                    last_call = Some((call.0, call.1, shown.clone()));
                    messages.push(json!({"role": "user", "content": shown}));
                }
            }
        }
        // Unreachable in practice: the last step may only answer.
        let e = anyhow::anyhow!("no answer after {max_steps} steps");
        io.event(Event::TurnFailed {
            error: &e.to_string(),
        });
        Err(e)
    }
}

/// Every tool a step may name: the built-in ones (those turned off are refused when called)
/// and the MCP servers'.
fn known_tools(mcp: &mcp::Servers) -> Vec<&'static ToolSpec> {
    protocol::TOOLS
        .iter()
        .chain(mcp.tools().iter().map(|t| t.spec))
        .collect()
}

/// The user and assistant messages of `history` (oldest first), each cut to 300 characters:
/// context for the model, not a replay.
fn conversation(history: &[Message]) -> Vec<(String, String)> {
    history
        .iter()
        .filter(|m| m.role == "user" || m.role == "assistant")
        .map(|m| {
            let mut t: String = m.content.chars().take(300).collect();
            if t.len() < m.content.len() {
                t.push('…');
            }
            (m.role.clone(), t)
        })
        .collect()
}

/// Runs `tbq-agent chat`.
pub fn run(o: Options) -> Result<()> {
    let mut agent = Agent::open(&o)?;
    if let Some(addr) = &o.http {
        return http::serve(agent, addr, &o);
    }
    let mut io = repl::Terminal::new(o.json, o.progress);
    let model = agent.start(if o.message.is_some() { "once" } else { "repl" }, &mut io)?;
    if let Some(m) = &o.message {
        let _ticker =
            reminders::Ticker::spawn(agent.db_path(), agent.conversation(), io.reminder_sink())
                .context("starting the reminder ticker")?;
        agent.turn(m, &mut io)?;
        return Ok(());
    }
    repl::run(&mut agent, &mut io, &model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, c: &str) -> Message {
        Message {
            role: role.into(),
            content: c.into(),
            model: None,
        }
    }

    #[test]
    fn history_is_told_not_replayed() {
        let h = [
            m("user", "a"),
            m("tool", "{}"),
            m("assistant", &"B".repeat(400)),
        ];
        let c = conversation(&h);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].1.chars().count(), 301);
        let p = protocol::system_prompt(&[], &[], &c, "now");
        assert!(
            p.contains("The conversation so far:\nUser: a\nYou: BBB"),
            "{p}"
        );
    }
}
