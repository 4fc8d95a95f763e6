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

/// Spawns the agent with its JSON events on a channel; the guard kills it at the end.
fn spawn_events(cmd: &mut std::process::Command) -> (std::sync::mpsc::Receiver<String>, Guard) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    (lines(&mut child), Guard(child))
}

#[test]
fn health_gate_restart_after_kill9_and_sigterm_stops_everything() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (rx, mut guard) =
        spawn_events(serve(&bin, &model, port, &["--log"]).arg(dir.path().join("server.log")));
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
    let (rx, mut guard) =
        spawn_events(serve(&bin, &model, port, &["--log"]).arg(dir.path().join("server.log")));
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

/// `serve --rpc` with real `ggml-rpc-server` workers on 127.0.0.1: each worker is asked before the
/// start (protocol, tbq format, devices); a tbq cache on the patched worker serves a completion;
/// when the worker dies under a request, llama-server's exit is followed by "worker_unavailable"
/// (not a restart into a dead worker) until the worker is back, then the server is ready again.
/// A port where no worker listens, and an upstream worker (built without the patch series) under
/// a tbq cache, stop the agent before llama-server starts, naming the worker; the upstream worker
/// serves an f16 cache.
#[test]
fn rpc_workers_are_checked_before_every_start() {
    let Some((bin, model)) = setup() else { return };
    let Some(worker_bin) = rpc_server(&bin) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wport = free_port();
    let worker = rpc_worker_on(&worker_bin, wport);
    let ep = format!("127.0.0.1:{wport}");
    let port = free_port();
    let tbq = ["--ctk", "tbq4_0", "--ctv", "tbq3_0", "--flash-attn", "on"];
    let mut args: Vec<&str> = tbq.to_vec();
    args.extend(["--ngl", "99", "--rpc", &ep, "--max-restarts", "50", "--log"]);
    let (rx, mut guard) =
        spawn_events(serve(&bin, &model, port, &args).arg(dir.path().join("server.log")));

    let w = wait_event(&rx, "worker", Duration::from_secs(30));
    assert_eq!(w["worker"]["endpoint"], ep.as_str(), "{w}");
    assert_eq!(w["worker"]["tbq_format"], 3, "{w}"); // GGML_RPC_TBQ_FORMAT (patches/0013)
    assert!(
        w["worker"]["version"].as_str().unwrap().starts_with("7."),
        "{w}"
    );
    let devs = w["worker"]["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 1, "{w}");
    assert!(devs[0]["total"].as_u64().unwrap() > 0, "{w}");
    wait_event(&rx, "ready", Duration::from_secs(120));
    let url = format!("http://127.0.0.1:{port}/completion");
    let body = serde_json::json!({"prompt": "The capital of France is", "n_predict": 4});
    let r = ureq::post(&url).send_json(body.clone()).unwrap();
    let done: serde_json::Value = r.into_json().unwrap();
    assert_eq!(done["tokens_predicted"], 4, "{done}");

    // The worker dies; the next request takes llama-server down with it (so the layers were there).
    drop(worker);
    let _ = ureq::post(&url)
        .timeout(Duration::from_secs(60))
        .send_json(body);
    wait_event(&rx, "exited", Duration::from_secs(90));
    let down = wait_event(&rx, "worker_unavailable", Duration::from_secs(30));
    assert!(down["error"].as_str().unwrap().contains(&ep), "{down}");
    // back on the same port: the agent starts llama-server again
    let _worker = rpc_worker_on(&worker_bin, wport);
    wait_event(&rx, "ready", Duration::from_secs(120));
    signal(guard.0.id(), libc::SIGTERM);
    assert_eq!(guard.0.wait().unwrap().code(), Some(143));

    // Nothing listening: exit 3 before llama-server starts.
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = run_serve_expect(
        &mut serve(&bin, &model, free_port(), &["--rpc", &nobody]),
        3,
        "did not answer",
    );
    assert!(
        err.contains(&nobody) && !err.contains("starting llama-server"),
        "{err}"
    );

    // A worker without the tbq types: refused by name for a tbq cache, serves f16.
    let Some(upstream) = upstream_rpc_server() else {
        return;
    };
    let (_up, up_ep) = rpc_worker(&upstream);
    let mut refused = tbq.to_vec();
    refused.extend(["--rpc", &up_ep]);
    let err = run_serve_expect(&mut serve(&bin, &model, free_port(), &refused), 3, &up_ep);
    assert!(err.contains("without the tbq cache types"), "{err}");
    let port = free_port();
    let (rx, mut guard) = spawn_events(
        serve(
            &bin,
            &model,
            port,
            &["--ngl", "99", "--rpc", &up_ep, "--log"],
        )
        .arg(dir.path().join("upstream.log")),
    );
    let w = wait_event(&rx, "worker", Duration::from_secs(30));
    assert_eq!(w["worker"]["tbq_format"], 0, "{w}");
    wait_event(&rx, "ready", Duration::from_secs(120));
    signal(guard.0.id(), libc::SIGTERM);
    assert_eq!(guard.0.wait().unwrap().code(), Some(143));
}
