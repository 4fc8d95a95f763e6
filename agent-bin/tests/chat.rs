//! `tbq-agent chat` against the real patched llama-server and Gemma 3 270M on CPU.
//!
//! The model is weak at choosing tools, so tests that check a tool force the first step with
//! `--require-tool` (llama-server's grammar then admits only that call; the arguments are still
//! the model's unless `--tool-args` pins them too), and check the effect: a file in the
//! workspace, a row in the SQLite memory, an event on stdout. Everything else is real: the
//! server, its grammar, the streaming, the parsing, the policy, the database.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const MODEL: &str = "gemma-3-270m-q4_k_m";

/// One thread per llama-server: on a 2-core machine two spinning threads lose badly to anything
/// else that runs (the agent, a second server, a compile), measured 2 tok/s against 30.
const THREADS: &str = "1";

/// A raw llama-server on `port`, healthy.
fn llama(bin: &Path, model: &Path, port: u16, extra: &[&str], log: &Path) -> Guard {
    let child = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args([
            "-c",
            "4096",
            "--threads",
            THREADS,
            "--parallel",
            "1",
            "--port",
            &port.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::options()
                .append(true)
                .open(log)
                .unwrap_or_else(|_| std::fs::File::create(log).unwrap()),
        ))
        .spawn()
        .unwrap();
    let g = Guard(child);
    wait_healthy(port);
    g
}

/// A running `tbq-agent chat --json`.
struct Chat {
    guard: Guard,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
}

fn chat_cmd(url: &str, ws: &Path, extra: &[&str]) -> Command {
    let mut c = agent();
    c.args(["chat", "--json", "--url", url, "--workspace"])
        .arg(ws)
        .args(["--max-tokens", "64", "--health-timeout", "60"])
        .args(extra);
    c
}

impl Chat {
    fn start(mut c: Command) -> Chat {
        let mut child: Child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines(&mut child);
        let stdin = child.stdin.take();
        let chat = Chat {
            guard: Guard(child),
            stdin,
            rx,
        };
        wait_event(&chat.rx, "ready", Duration::from_secs(90));
        chat
    }

    fn send(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// Events up to and including the first `until` (or `turn_failed`).
    fn events_until(&self, until: &str, timeout: Duration) -> Vec<Value> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {until:?} within {timeout:?}; saw {out:?}"));
            eprintln!("chat: {line}");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let ev = v["event"].as_str().unwrap_or("").to_string();
            out.push(v);
            if ev == until || ev == "turn_failed" && until != "turn_failed" {
                return out;
            }
        }
    }

    fn quit(mut self) {
        self.send("/quit");
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.guard.0.try_wait() {
                assert!(st.success(), "chat exited with {st}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chat did not quit");
    }
}

fn find<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == name)
}

fn db(ws: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.join(".tbq-agent/memory.sqlite")).unwrap()
}

fn count(ws: &Path, sql: &str) -> i64 {
    db(ws).query_row(sql, [], |r| r.get(0)).unwrap()
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

struct Setup {
    bin: PathBuf,
    model: PathBuf,
    dir: tempfile::TempDir,
}

/// The `--json` events a finished one-shot `chat` printed (its output echoed for the test log).
fn events_of(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Setup {
    /// A llama-server on a free port, logging to `server.log` in the test's folder.
    fn server(&self) -> (u16, Guard) {
        let port = free_port();
        let log = self.dir.path().join("server.log");
        (port, llama(&self.bin, &self.model, port, &[], &log))
    }
}

fn setup_chat() -> Option<Setup> {
    let (bin, model) = setup()?;
    Some(Setup {
        bin,
        model,
        dir: tempfile::tempdir().unwrap(),
    })
}

#[test]
fn tool_call_round_trip_writes_a_file_and_names_the_model() {
    let Some(s) = setup_chat() else { return };
    let (port, _srv) = s.server();
    let ws = s.dir.path().join("ws");
    let t0 = Instant::now();
    let out = chat_cmd(&url(port), &ws, &["--require-tool", "write_file"])
        .arg("Create a file named hello.txt containing the word banana.")
        .output()
        .unwrap();
    let events = events_of(&out);
    assert!(out.status.success());
    let call = find(&events, "tool_call").expect("a tool call");
    assert_eq!(call["tool"], "write_file");
    let result = find(&events, "tool_result").unwrap();
    assert_eq!(result["ok"], true, "{result}");
    // The effect: the file the model named, with the content it gave, inside the workspace.
    let path = call["args"]["path"].as_str().unwrap();
    let written = std::fs::read_to_string(ws.join(path.trim_start_matches("./"))).unwrap();
    assert_eq!(written, call["args"]["content"].as_str().unwrap());
    let answer = find(&events, "answer").unwrap();
    assert_eq!(answer["model"], MODEL);
    assert_eq!(answer["endpoint"], "local");
    assert_eq!(answer["steps"], 2);
    // Stored: the user's message, the tool call and the answer with its model.
    assert_eq!(
        count(&ws, "SELECT count(*) FROM messages WHERE role = 'user'"),
        1
    );
    assert_eq!(
        count(&ws, "SELECT count(*) FROM messages WHERE role = 'tool'"),
        1
    );
    assert_eq!(
        count(
            &ws,
            &format!(
                "SELECT count(*) FROM messages WHERE role = 'assistant' AND model = '{MODEL}'"
            )
        ),
        1
    );
    eprintln!("round trip: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn memory_is_recalled_after_a_restart() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let log = s.dir.path().join("server.log");
    {
        let port = free_port();
        let _srv = llama(&s.bin, &s.model, port, &[], &log);
        // The text is pinned: this test is about the memory surviving, not about the model's
        // wording (the write_file test checks arguments the model chose).
        let mut c = Chat::start(chat_cmd(
            &url(port),
            &ws,
            &[
                "--require-tool",
                "remember",
                "--tool-args",
                r#"{"text": "My locker code is 4711."}"#,
            ],
        ));
        c.send("Remember that my locker code is 4711.");
        let ev = c.events_until("answer", Duration::from_secs(120));
        assert_eq!(find(&ev, "tool_call").unwrap()["tool"], "remember");
        assert_eq!(find(&ev, "tool_result").unwrap()["ok"], true);
        c.quit();
    }
    let saved: String = db(&ws)
        .query_row("SELECT text FROM memories", [], |r| r.get(0))
        .unwrap();
    eprintln!("saved memory: {saved:?}");
    assert!(saved.contains("4711"), "the model saved {saved:?}");

    // A new server and a new agent process: the memory is in the workspace's database.
    let port = free_port();
    let _srv = llama(&s.bin, &s.model, port, &[], &log);
    let mut c = Chat::start(chat_cmd(&url(port), &ws, &[]));
    c.send("/memory locker code");
    let ev = c.events_until("memories", Duration::from_secs(10));
    let items = ev.last().unwrap()["items"].as_array().unwrap().clone();
    assert!(
        items
            .iter()
            .any(|i| i["text"].as_str().unwrap().contains("4711")),
        "{items:?}"
    );
    // A question: the memory is recalled into the turn's context (full text), whatever the
    // model then does with it.
    c.send("What is my locker code?");
    let ev = c.events_until("answer", Duration::from_secs(120));
    let recalled = find(&ev, "recalled").expect("a recalled event");
    assert!(
        recalled["items"][0].as_str().unwrap().contains("4711"),
        "{recalled}"
    );
    eprintln!(
        "answer after restart: {}",
        find(&ev, "answer").unwrap()["text"]
    );
    c.quit();
    // And the recall tool finds it (its query pinned, for the same reason as above).
    let mut c = Chat::start(chat_cmd(
        &url(port),
        &ws,
        &[
            "--require-tool",
            "recall",
            "--tool-args",
            r#"{"query": "locker code"}"#,
        ],
    ));
    c.send("What is my locker code?");
    let ev = c.events_until("answer", Duration::from_secs(120));
    let result = find(&ev, "tool_result").unwrap();
    assert!(
        result["text"].as_str().unwrap().contains("4711"),
        "recall found {result}"
    );
    c.quit();
}

#[test]
fn dangerous_command_is_blocked_and_a_no_leaves_no_side_effect() {
    let Some(s) = setup_chat() else { return };
    let (port, _srv) = s.server();
    let ws = s.dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("precious.txt"), "keep me").unwrap();

    // Denied: never runs, whatever anyone answers, even behind an allowed command on the line
    // before (sh runs both lines). The arguments are pinned so that the model cannot soften the
    // command; the call still goes through the server's grammar and parser.
    let mut c = Chat::start(chat_cmd(
        &url(port),
        &ws,
        &[
            "--require-tool",
            "shell",
            "--tool-args",
            r#"{"command": "cat precious.txt\nrm -rf ./*"}"#,
        ],
    ));
    c.send("Delete everything in the workspace.");
    let ev = c.events_until("answer", Duration::from_secs(120));
    let blocked = find(&ev, "blocked").expect("a blocked event");
    assert!(
        blocked["why"].as_str().unwrap().contains("deny pattern"),
        "{blocked}"
    );
    assert!(
        find(&ev, "confirm").is_none(),
        "a denied command must not even ask"
    );
    assert_eq!(find(&ev, "tool_result").unwrap()["ok"], false);
    assert_eq!(
        std::fs::read_to_string(ws.join("precious.txt")).unwrap(),
        "keep me"
    );
    c.quit();

    // Not allowed, not denied: asked; "no" runs nothing, "yes" runs it.
    let marker = "made-by-agent.txt";
    let args = format!(r#"{{"command": "touch {marker}"}}"#);
    let mut c = Chat::start(chat_cmd(
        &url(port),
        &ws,
        &["--require-tool", "shell", "--tool-args", &args],
    ));
    c.send("Make the marker file.");
    let ev = c.events_until("confirm", Duration::from_secs(120));
    assert!(ev.last().unwrap()["question"]
        .as_str()
        .unwrap()
        .contains("touch"));
    c.send("n");
    let ev = c.events_until("answer", Duration::from_secs(120));
    assert!(find(&ev, "declined").is_some(), "{ev:?}");
    assert!(!ws.join(marker).exists(), "a declined command ran");
    c.send("Make the marker file again.");
    c.events_until("confirm", Duration::from_secs(120));
    c.send("y");
    let ev = c.events_until("answer", Duration::from_secs(120));
    assert_eq!(find(&ev, "tool_result").unwrap()["ok"], true, "{ev:?}");
    assert!(ws.join(marker).exists(), "a confirmed command did not run");
    c.quit();
}

#[test]
fn http_endpoint_needs_the_token_and_speaks_openai() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    // Loopback only: refused before anything starts.
    let out = agent()
        .args(["chat", "--http", "0.0.0.0:9", "--workspace"])
        .arg(&ws)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let (port, _srv) = s.server();
    let hport = free_port();
    // Every turn first calls `touch` (pinned): over HTTP nobody can confirm it, so it must not run.
    let mut c = chat_cmd(
        &url(port),
        &ws,
        &[
            "--http",
            &format!("127.0.0.1:{hport}"),
            "--require-tool",
            "shell",
            "--tool-args",
            r#"{"command": "touch made-over-http"}"#,
        ],
    );
    c.env("TBQ_CHAT_TOKEN", "s3cret").stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let rx = lines(&mut child);
    let _g = Guard(child);
    wait_event(&rx, "listening", Duration::from_secs(90));
    let api = format!("http://127.0.0.1:{hport}/v1/chat/completions");
    let body = serde_json::json!({"messages": [{"role": "user", "content": "Say hello."}]});
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(ureq::post(&api).send_json(body.clone())), 401);
    assert_eq!(
        status(
            ureq::post(&api)
                .set("Authorization", "Bearer wrong")
                .send_json(body.clone())
        ),
        401
    );
    assert_eq!(
        status(ureq::get(&format!("http://127.0.0.1:{hport}/v1/models")).call()),
        401
    );
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{hport}/health")),
        200
    );
    // Nothing was stored for the refused requests.
    assert_eq!(count(&ws, "SELECT count(*) FROM messages"), 0);

    let r: Value = ureq::post(&api)
        .set("Authorization", "Bearer s3cret")
        .send_json(body.clone())
        .unwrap()
        .into_json()
        .unwrap();
    eprintln!("{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], MODEL);
    assert!(!r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());

    // Streaming: server-sent chunks, the last naming the model, then [DONE].
    let mut sb = body.clone();
    sb["stream"] = Value::Bool(true);
    let text = ureq::post(&api)
        .set("Authorization", "Bearer s3cret")
        .send_json(sb)
        .unwrap()
        .into_string()
        .unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{text}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks.last().unwrap()["model"], MODEL);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!streamed.is_empty(), "{text}");
    // The unconfirmable command was refused both times, and reported.
    assert!(!ws.join("made-over-http").exists());
    let mut blocked = 0;
    while let Ok(l) = rx.try_recv() {
        eprintln!("chat: {l}");
        blocked += l.contains(r#""event":"blocked""#) as usize;
    }
    assert_eq!(blocked, 2);
}

/// Polls llama-server's /slots until a request is being processed.
fn wait_processing(port: u16) {
    let t0 = Instant::now();
    loop {
        if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{port}/slots"))
            .timeout(Duration::from_secs(2))
            .call()
        {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            if v.as_array()
                .is_some_and(|a| a.iter().any(|s| s["is_processing"] == true))
            {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the request never reached the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn server_killed_mid_turn_the_turn_is_retried_or_reported() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let port = free_port();

    // Supervised by `tbq-agent serve`: kill -9 mid-turn, serve restarts it, the turn is retried.
    let mut serve = agent();
    serve
        .args(["serve", "--json", "--llama-server"])
        .arg(&s.bin)
        .arg("--model")
        .arg(&s.model)
        .args([
            "-c",
            "4096",
            "--threads",
            THREADS,
            "--parallel",
            "1",
            "--port",
            &port.to_string(),
        ])
        .args(["--backoff", "0.3", "--health-interval", "1", "--log"])
        .arg(s.dir.path().join("serve.log"))
        .stdout(Stdio::piped());
    let mut child = serve.spawn().unwrap();
    let srx = lines(&mut child);
    let serve_guard = Guard(child);
    let pid = wait_event(&srx, "starting", Duration::from_secs(30))["pid"]
        .as_u64()
        .unwrap() as u32;
    wait_event(&srx, "ready", Duration::from_secs(120));

    let mut c = Chat::start(chat_cmd(&url(port), &ws, &["--max-tokens", "160"]));
    c.send("Write a long poem about the sea.");
    wait_processing(port);
    signal(pid, libc::SIGKILL);
    let ev = c.events_until("answer", Duration::from_secs(180));
    let retry = find(&ev, "retry").expect("a retry event");
    eprintln!("retried after: {retry}");
    assert!(find(&ev, "server_back").is_some());
    assert_eq!(find(&ev, "answer").unwrap()["model"], MODEL);
    wait_event(&srx, "restarting", Duration::from_secs(5));
    c.quit();
    drop(serve_guard);

    // Nobody restarts it: the turn is reported, the message kept; /retry answers it later.
    let _ = wait_dead(pid, Duration::from_secs(10));
    let port = free_port();
    let log = s.dir.path().join("server.log");
    let srv = llama(&s.bin, &s.model, port, &[], &log);
    let mut c = Chat::start(chat_cmd(
        &url(port),
        &ws,
        &[
            "--max-tokens",
            "160",
            "--health-timeout",
            "2",
            "--retries",
            "1",
        ],
    ));
    c.send("Write a long poem about the mountains.");
    wait_processing(port);
    drop(srv); // SIGKILL
    let ev = c.events_until("turn_failed", Duration::from_secs(60));
    let failed = find(&ev, "turn_failed").unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("did not answer"),
        "{failed}"
    );
    let kept = count(
        &ws,
        "SELECT count(*) FROM messages WHERE role = 'user' AND content LIKE '%mountains%'",
    );
    assert_eq!(kept, 1, "the failed turn's message must be stored");
    let _srv = llama(&s.bin, &s.model, port, &[], &log);
    c.send("/retry");
    let ev = c.events_until("answer", Duration::from_secs(120));
    assert_eq!(find(&ev, "answer").unwrap()["endpoint"], "local");
    c.quit();
}

#[test]
fn fallback_answers_only_when_opted_in() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let (port, _fb) = s.server();
    let cfg = s.dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[chat.fallback]\nurl = \"http://127.0.0.1:{port}\"\nmodel = \"the-fallback\"\n"),
    )
    .unwrap();
    let dead = url(free_port());
    // Not opted in: the local server's absence is the answer (exit 5), no fallback.
    let out = chat_cmd(&dead, &ws, &["--health-timeout", "1"])
        .env("TBQ_AGENT_CONFIG", &cfg)
        .arg("Say hello.")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Opted in: the fallback answers, and says so.
    let out = chat_cmd(
        &dead,
        &ws,
        &["--health-timeout", "1", "--retries", "0", "--fallback"],
    )
    .env("TBQ_AGENT_CONFIG", &cfg)
    .arg("Say hello.")
    .output()
    .unwrap();
    let events = events_of(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(find(&events, "fallback").is_some());
    let a = find(&events, "answer").unwrap();
    assert_eq!(a["endpoint"], "fallback");
    // The name the endpoint gives for the model that answered (llama-server: its GGUF).
    assert_eq!(a["model"], MODEL);
}

#[test]
fn vector_recall_with_a_real_embedding_server() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let port = free_port();
    let eport = free_port();
    let _srv = llama(
        &s.bin,
        &s.model,
        port,
        &[],
        &s.dir.path().join("server.log"),
    );
    // A memory saved while no embedding server is configured...
    let mut c = Chat::start(chat_cmd(&url(port), &ws, &[]));
    c.send("/remember The dentist appointment is on Tuesday at nine");
    c.events_until("remembered", Duration::from_secs(10));
    c.quit();
    let _emb = llama(
        &s.bin,
        &s.model,
        eport,
        &["--embeddings", "--pooling", "mean"],
        &s.dir.path().join("emb.log"),
    );
    // ...is embedded when the agent starts with one; new memories are embedded as they are saved.
    let mut c = Chat::start(chat_cmd(&url(port), &ws, &["--embedding-url", &url(eport)]));
    for m in [
        "My cat is called Tom and he likes tuna",
        "The wifi password is on the fridge",
    ] {
        c.send(&format!("/remember {m}"));
        c.events_until("remembered", Duration::from_secs(30));
    }
    // sqlite-vec's own bookkeeping table (this connection has no vec0 module loaded).
    assert_eq!(count(&ws, "SELECT count(*) FROM memories_vec_rowids"), 3);
    let dim: String = db(&ws)
        .query_row("SELECT value FROM meta WHERE key = 'vec_dim'", [], |r| {
            r.get(0)
        })
        .unwrap();
    eprintln!("embedding width {dim}");
    // Words full text cannot find (porter-stemmed "dental", "visit": no memory has them) but
    // whose meaning is the dentist memory's. Cosine similarities from this model's mean-pooled
    // embeddings, measured: dentist 0.64, wifi 0.51, cat 0.50. (The misspelled "dentst apointment
    // tusday" was tried first: 0.487 dentist vs 0.492 wifi on an AVX-512 machine, the other way
    // round elsewhere — a coin toss of the model's numerics, not a test of the recall.)
    c.send("/memory Dental visit");
    let ev = c.events_until("memories", Duration::from_secs(30));
    let items = ev.last().unwrap()["items"].as_array().unwrap().clone();
    eprintln!("{items:?}");
    assert!(items.iter().all(|i| i["how"] == "vector"), "{items:?}");
    assert!(
        items[0]["text"].as_str().unwrap().contains("dentist"),
        "{items:?}"
    );
    c.quit();
}

#[test]
fn reminders_fire_in_the_running_agent_and_survive_a_restart() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let (port, _srv) = s.server();

    // Made by the model (the schedule is held to "in/every N[smhd]" or "at HH:MM" by the grammar).
    let out = chat_cmd(&url(port), &ws, &["--require-tool", "remind"])
        .arg("Remind me in 10m to drink water.")
        .output()
        .unwrap();
    let events = events_of(&out);
    let call = find(&events, "tool_call").unwrap();
    let sched = call["args"]["schedule"].as_str().unwrap();
    assert!(
        sched.starts_with("in ") || sched.starts_with("every ") || sched.starts_with("at "),
        "{sched}"
    );
    assert_eq!(find(&events, "tool_result").unwrap()["ok"], true);
    assert_eq!(count(&ws, "SELECT count(*) FROM reminders"), 1);

    // Fired by the running agent.
    let mut c = Chat::start(chat_cmd(&url(port), &ws, &[]));
    c.send("/remind in 1s -- stretch your legs");
    c.events_until("reminder_set", Duration::from_secs(10));
    let fired = c.events_until("reminder", Duration::from_secs(10));
    let r = fired.last().unwrap();
    assert_eq!(r["text"], "stretch your legs");
    assert_eq!(r["late"], false);
    // Due while no agent runs: fired at the next start, marked late.
    c.send("/remind in 2s -- water the plants");
    c.events_until("reminder_set", Duration::from_secs(10));
    c.quit();
    std::thread::sleep(Duration::from_secs(4));
    let c = Chat::start(chat_cmd(&url(port), &ws, &[]));
    let fired = c.events_until("reminder", Duration::from_secs(10));
    let r = fired.last().unwrap();
    assert_eq!(r["text"], "water the plants");
    c.quit();
    // Stored: two fired one-shots, the model's reminder still pending.
    assert_eq!(
        count(
            &ws,
            "SELECT count(*) FROM reminders WHERE next_fire IS NULL AND last_fired IS NOT NULL"
        ),
        2
    );
    assert_eq!(
        count(&ws, "SELECT count(*) FROM messages WHERE role = 'reminder'"),
        2
    );
}

#[test]
fn web_fetch_is_off_by_default_and_refuses_loopback() {
    let Some(s) = setup_chat() else { return };
    let ws = s.dir.path().join("ws");
    let (port, _srv) = s.server();
    // The target is the llama-server itself: exactly what a steered model must not reach.
    let args = format!(r#"{{"url": "http://127.0.0.1:{port}/props"}}"#);
    for (flags, want) in [(vec![], "is off"), (vec!["--web"], "loopback")] {
        let out = chat_cmd(
            &url(port),
            &ws,
            &["--require-tool", "web_fetch", "--tool-args", &args],
        )
        .args(flags)
        .arg("Fetch the page.")
        .output()
        .unwrap();
        let events = events_of(&out);
        let r = find(&events, "tool_result").unwrap();
        assert_eq!(r["ok"], false);
        assert!(r["text"].as_str().unwrap().contains(want), "{r}");
    }
}

/// A config file with `[chat.mcp.demo]`: the test MCP server (`tests/data/mcp_server.py`, the
/// official Python SDK) over stdio, its `touch` marked as needing a confirmation.
fn mcp_config(dir: &Path) -> PathBuf {
    // <target>/<profile>/deps/<test binary>: the venv the unit tests use too.
    let venv = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("mcp-venv");
    let out = Command::new("bash")
        .arg(repo().join("agent-bin/tests/data/mcp-python.sh"))
        .arg(venv)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "no Python with the mcp package");
    let python = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let script = repo().join("agent-bin/tests/data/mcp_server.py");
    let cfg = dir.join("mcp-config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[chat.mcp.demo]\ncommand = [{python:?}, {:?}, \"stdio\"]\nconfirm = [\"touch\"]\ntimeout = 20\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn the_model_calls_an_mcp_tool_and_a_declined_one_has_no_effect() {
    let Some(s) = setup_chat() else { return };
    let (port, _srv) = s.server();
    let ws = s.dir.path().join("ws");
    let cfg = mcp_config(s.dir.path());
    // The call is forced (a 270M model does not pick tools reliably); its arguments are the
    // model's (integers, as the tool's schema says: the grammar admits nothing else), and the
    // MCP server's answer must be their sum.
    let out = chat_cmd(&url(port), &ws, &["--require-tool", "demo.add"])
        .env("TBQ_AGENT_CONFIG", &cfg)
        .arg("What is 17 plus 25?")
        .output()
        .unwrap();
    let events = events_of(&out);
    assert!(out.status.success());
    let call = find(&events, "tool_call").expect("a tool call");
    assert_eq!(call["tool"], "demo.add");
    let (a, b) = (call["args"]["a"].as_i64(), call["args"]["b"].as_i64());
    let (Some(a), Some(b)) = (a, b) else {
        panic!("integer arguments: {call}")
    };
    let result = find(&events, "tool_result").unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["text"], (a + b).to_string());
    assert!(find(&events, "answer").is_some());

    // A confirm-marked tool: asked, answered "n", not called.
    let mut cmd = chat_cmd(
        &url(port),
        &ws,
        &[
            "--require-tool",
            "demo.touch",
            "--tool-args",
            r#"{"name": "made-by-mcp.txt"}"#,
        ],
    );
    cmd.env("TBQ_AGENT_CONFIG", &cfg);
    let mut c = Chat::start(cmd);
    c.send("Create the file made-by-mcp.txt.");
    let ev = c.events_until("confirm", Duration::from_secs(120));
    assert!(
        find(&ev, "confirm").unwrap()["question"]
            .as_str()
            .unwrap()
            .contains("demo.touch"),
        "{ev:?}"
    );
    c.send("n");
    let ev = c.events_until("answer", Duration::from_secs(120));
    assert!(find(&ev, "declined").is_some(), "{ev:?}");
    assert_eq!(find(&ev, "tool_result").unwrap()["ok"], false);
    c.quit();
    assert!(
        !ws.join("made-by-mcp.txt").exists(),
        "a declined MCP call ran"
    );
}
