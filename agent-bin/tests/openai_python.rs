//! `tbq-agent chat --http` with openai-python as the client (`openai_client.py` beside this file),
//! against the real llama-server with two slots and Gemma 3 270M: models, plain and streamed
//! completions with usage, OpenAI's errors, and concurrency (two turns at once, a queue of one,
//! 429 beyond it).
//!
//! The script installs `openai` into a venv under the target folder if it is missing (pip and
//! PyPI must be reachable then; later runs reuse it).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const MODEL: &str = "gemma-3-270m-q4_k_m";

#[test]
fn openai_python_talks_to_the_http_channel() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lport = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    // Two slots, one thread each: two turns really run at once on two cores.
    let srv = Command::new(&bin)
        .arg("-m")
        .arg(&model)
        .args(["-c", "4096", "--threads", "1", "--parallel", "2"])
        .args(["--port", &lport.to_string()])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let _srv = Guard(srv);
    wait_healthy(lport);

    // workers = 0: one per llama-server slot (2); one request may wait.
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[chat.http]\nqueue = 1\n").unwrap();
    let hport = free_port();
    let mut c = agent();
    c.env("TBQ_AGENT_CONFIG", &cfg)
        .env("TBQ_CHAT_TOKEN", "s3cret")
        .args([
            "chat",
            "--json",
            "--url",
            &format!("http://127.0.0.1:{lport}"),
        ])
        .arg("--workspace")
        .arg(dir.path().join("ws"))
        .args(["--max-tokens", "48", "--health-timeout", "60"])
        .args(["--http", &format!("127.0.0.1:{hport}")])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let rx = lines(&mut child);
    let _agent = Guard(child);
    let listening = wait_event(&rx, "listening", Duration::from_secs(90));
    assert_eq!(listening["workers"], 2, "{listening}");
    // Keep the agent's stdout drained so it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});

    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-openai");
    let out = Command::new("python3")
        .arg(repo().join("agent-bin/tests/openai_client.py"))
        .args(["--base-url", &format!("http://127.0.0.1:{hport}/v1")])
        .args([
            "--token",
            "s3cret",
            "--model",
            MODEL,
            "--workers",
            "2",
            "--queue",
            "1",
        ])
        .args(["--llama-url", &format!("http://127.0.0.1:{lport}")])
        .env("TBQ_PY_VENV", &venv)
        .stderr(Stdio::inherit())
        .output()
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "openai_client.py failed:\n{stdout}");
    assert!(
        stdout.contains("all ") && stdout.contains("checks passed"),
        "{stdout}"
    );
}
