//! `tbq-agent serve` against a real llama-server: health gating, restart after `kill -9`, signal
//! forwarding, no orphan when the agent itself is killed, and start-up failures.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn serve(
    bin: &std::path::Path,
    model: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> std::process::Command {
    let mut c = agent();
    c.args(["serve", "--json", "--llama-server"])
        .arg(bin)
        .arg("--model")
        .arg(model);
    c.args([
        "-c",
        "512",
        "--threads",
        "2",
        "--parallel",
        "1",
        "--port",
        &port.to_string(),
    ]);
    c.args(["--backoff", "0.3", "--health-interval", "1"]);
    c.args(extra);
    c
}

#[test]
fn health_gate_restart_after_kill9_and_sigterm_stops_everything() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(&bin, &model, port, &["--log"])
        .arg(dir.path().join("server.log"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut guard = Guard(child);
    let health = format!("http://127.0.0.1:{port}/health");

    // Health gating: until "ready", /health is not 200 (refused or 503 while loading).
    let starting = wait_event(&rx, "starting", Duration::from_secs(30));
    let pid1 = starting["pid"].as_u64().unwrap() as u32;
    let t0 = Instant::now();
    let mut seen_before_ready = Vec::new();
    let ready = loop {
        if let Ok(line) = rx.try_recv() {
            eprintln!("agent: {line}");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "ready" {
                break v;
            }
        }
        seen_before_ready.push((Instant::now(), http_status(&health)));
        assert!(t0.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The agent says "ready" within a poll interval (plus pipe latency) of /health turning 200,
    // never before: what the test saw before the event was refused or 503 until then.
    let statuses: Vec<u16> = seen_before_ready.iter().map(|s| s.1).collect();
    if let Some(first_200) = seen_before_ready.iter().find(|s| s.1 == 200) {
        assert!(
            first_200.0.elapsed() < Duration::from_millis(1500),
            "the agent said ready late: {statuses:?}"
        );
        assert!(
            seen_before_ready
                .iter()
                .skip_while(|s| s.1 != 200)
                .all(|s| s.1 == 200),
            "{statuses:?}"
        );
    }
    assert!(
        statuses.iter().any(|&s| s == 0 || s == 503),
        "no loading state observed: {statuses:?}"
    );
    assert_eq!(ready["pid"].as_u64().unwrap() as u32, pid1);
    assert_eq!(http_status(&health), 200);

    // kill -9 the server: the agent notices, backs off and restarts it on the same port.
    signal(pid1, libc::SIGKILL);
    let exited = wait_event(&rx, "exited", Duration::from_secs(10));
    assert_eq!(exited["pid"].as_u64().unwrap() as u32, pid1);
    let restarting = wait_event(&rx, "restarting", Duration::from_secs(5));
    assert_eq!(restarting["attempt"], 1);
    let starting = wait_event(&rx, "starting", Duration::from_secs(10));
    let pid2 = starting["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid1, pid2);
    wait_event(&rx, "ready", Duration::from_secs(120));
    assert_eq!(http_status(&health), 200);

    // SIGTERM to the agent: it stops the server and exits 143.
    signal(guard.0.id(), libc::SIGTERM);
    let st = guard.0.wait().unwrap();
    assert_eq!(st.code(), Some(143), "{st:?}");
    assert!(
        wait_dead(pid2, Duration::from_secs(5)),
        "llama-server {pid2} outlived the agent"
    );
    assert_eq!(http_status(&health), 0);
}

#[test]
fn agent_killed_with_sigkill_leaves_no_orphan() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(&bin, &model, port, &["--log"])
        .arg(dir.path().join("server.log"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut guard = Guard(child);
    let ready = wait_event(&rx, "ready", Duration::from_secs(120));
    let pid = ready["pid"].as_u64().unwrap() as u32;
    guard.0.kill().unwrap(); // SIGKILL: no handler runs; PR_SET_PDEATHSIG must do the job
    guard.0.wait().unwrap();
    assert!(
        wait_dead(pid, Duration::from_secs(10)),
        "llama-server {pid} was orphaned"
    );
}

fn run_serve_expect(args: &mut std::process::Command, code: i32, needle: &str) -> String {
    let out = args.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} not in: {stderr}"
    );
    assert!(stderr.contains("fix:"), "no fix in: {stderr}");
    stderr
}

#[test]
fn startup_failures_have_clear_messages_and_exit_codes() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");

    // Missing model: exit 3, before anything starts.
    run_serve_expect(
        &mut serve(
            &bin,
            std::path::Path::new("/nonexistent/m.gguf"),
            free_port(),
            &[],
        ),
        3,
        "cannot open the model",
    );

    // Port in use: exit 6.
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = l.local_addr().unwrap().port();
    run_serve_expect(&mut serve(&bin, &model, busy, &[]), 6, "already in use");
    drop(l);

    // Never healthy within the timeout: exit 5 (a real server that cannot load in 0 s), and
    // the server it started is stopped.
    run_serve_expect(
        serve(&bin, &model, free_port(), &["--log"])
            .arg(&log)
            .args(["--health-timeout", "0"]),
        5,
        "did not become healthy",
    );

    // The server exits while starting (a quantized V cache without flash attention): exit 3, the
    // cause named.
    let err = run_serve_expect(
        serve(
            &bin,
            &model,
            free_port(),
            &[
                "--ctk",
                "f16",
                "--ctv",
                "tbq3_0",
                "--flash-attn",
                "off",
                "--log",
            ],
        )
        .arg(&log),
        3,
        "flash_attn",
    );
    assert!(err.contains("requires flash_attn"), "{err}");

    // Not an executable llama-server: exit 4.
    run_serve_expect(
        agent()
            .args([
                "serve",
                "--llama-server",
                "/nonexistent/llama-server",
                "--model",
            ])
            .arg(&model),
        4,
        "llama-server not found",
    );
}

fn model_opt(name: &str) -> Option<std::path::PathBuf> {
    model(name)
}

#[test]
fn systemd_unit_names_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "default_profile = \"g\"\n[profiles.g]\nmodel = \"/m.gguf\"\nport = 8080\n",
    )
    .unwrap();
    let out = agent()
        .env("TBQ_AGENT_CONFIG", &cfg)
        .args(["serve", "--systemd-unit"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(
        unit.contains("ExecStart=")
            && unit.contains("serve --config")
            && unit.contains("--profile g"),
        "{unit}"
    );
    assert!(
        unit.contains("[Install]") && unit.contains("WantedBy=default.target"),
        "{unit}"
    );
}
