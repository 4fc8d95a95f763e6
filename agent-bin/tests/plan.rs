//! `tbq-agent plan` against llama-server's own numbers: for f16, q8_0 and tbq4_0/tbq3_0 on
//! Gemma 3 270M (18 layers, 15 of them sliding-window), with the server's default 4 unified
//! slots and with one slot, the planner's cells and layers equal the server's and its sizes are
//! within 1% of the `llama_kv_cache: size = ...` lines.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Starts llama-server, waits for /health, returns its log: (cells, layers, MiB) per cache.
fn server_kv(
    bin: &std::path::Path,
    model: &std::path::Path,
    args: &[&str],
) -> Vec<(u64, u64, f64)> {
    kv_lines(&server_log(bin, model, args))
}

/// Starts llama-server with `args`, waits for /health, stops it, returns its log.
fn server_log(bin: &std::path::Path, model: &std::path::Path, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .arg("--model")
        .arg(model)
        .args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--threads",
            "2",
            "--flash-attn",
            "on",
            "--log-verbosity",
            "4",
        ])
        .args(args)
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let mut g = Guard(child);
    let t0 = Instant::now();
    while http_status(&format!("http://127.0.0.1:{port}/health")) != 200 {
        assert!(
            g.0.try_wait().unwrap().is_none(),
            "llama-server exited: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "llama-server never healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(g);
    std::fs::read_to_string(&log).unwrap()
}

/// The `llama_kv_cache: size = ...` lines of a log: (cells, layers, MiB) per cache.
fn kv_lines(text: &str) -> Vec<(u64, u64, f64)> {
    let lines: Vec<(u64, u64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.split("llama_kv_cache: size =").nth(1)?;
            let mib: f64 = rest.split("MiB").next()?.trim().parse().ok()?;
            let inner = rest.split('(').nth(1)?;
            let mut it = inner.split(',');
            let cells: u64 = it.next()?.split_whitespace().next()?.parse().ok()?;
            let layers: u64 = it.next()?.split_whitespace().next()?.parse().ok()?;
            Some((cells, layers, mib))
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "no llama_kv_cache size line in the log:\n{text}"
    );
    lines
}

fn plan(model: &std::path::Path, args: &[&str]) -> Value {
    let o = agent()
        .arg("plan")
        .arg(model)
        .arg("--json")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(o.status.success());
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn planner_agrees_with_the_server_within_one_percent() {
    let Some((bin, model)) = setup() else { return };
    let mut rows = Vec::new();
    for (k, v) in [("f16", "f16"), ("q8_0", "q8_0"), ("tbq4_0", "tbq3_0")] {
        for slots in [None, Some("1")] {
            let ctx = if slots.is_some() { "2000" } else { "3000" };
            let mut args = vec!["--ctx-size", ctx, "--cache-type-k", k, "--cache-type-v", v];
            if let Some(np) = slots {
                args.extend(["--parallel", np]);
            }
            let server = server_kv(&bin, &model, &args);
            let p = plan(&model, &args);
            let plan = &p["plans"][0];
            assert!(plan["error"].is_null(), "{plan}");
            let mine: Vec<(u64, u64, f64)> = [&plan["full"], &plan["swa"]]
                .iter()
                .filter(|c| !c.is_null())
                .map(|c| {
                    let bytes = c["k_bytes"].as_u64().unwrap() + c["v_bytes"].as_u64().unwrap();
                    (
                        c["cells"].as_u64().unwrap(),
                        c["layers"].as_u64().unwrap(),
                        bytes as f64 / 1048576.0,
                    )
                })
                .collect();
            eprintln!(
                "{k}/{v} ctx {ctx} slots {}: server {server:?}, plan {mine:?}",
                slots.unwrap_or("auto (4, unified)")
            );
            assert_eq!(server.len(), mine.len(), "number of caches");
            for (s, m) in server.iter().zip(&mine) {
                assert_eq!(
                    (s.0, s.1),
                    (m.0, m.1),
                    "cells/layers differ: server {s:?} plan {m:?}"
                );
                assert!(
                    (s.2 - m.2).abs() <= 0.01 * s.2,
                    "size differs by more than 1%: server {s:?} plan {m:?}"
                );
            }
            rows.push(format!(
                "{k}/{v}, ctx {ctx}, slots {}: server {server:?} plan {mine:?}",
                slots.unwrap_or("auto")
            ));
        }
    }
    eprintln!("{}", rows.join("\n"));
}

fn mib(v: &Value) -> f64 {
    v.as_u64().unwrap() as f64 / 1048576.0
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `--fit --budget`: the choice is the best measured pair whose KV cache fits, its arguments
/// start llama-server, and the server allocates what the plan said (within 1%).
#[test]
fn fit_picks_the_best_measured_pair_in_the_budget_and_the_server_agrees() {
    let Some((bin, model)) = setup() else { return };
    // With room for everything, f16/f16 (the reference, score 0) is the choice.
    let all = plan(&model, &["--fit", "-c", "8192", "--budget", "1TiB"]);
    assert_eq!(all["quality"]["source"]["basis"], "this_model", "{all}");
    assert_eq!(all["choice"]["k"], "f16");
    let cands = all["candidates"].as_array().unwrap().clone();
    // Make the two best pairs not fit: one byte less than the second's cache.
    let second = &cands[1];
    let budget = second["kv_bytes"].as_u64().unwrap() - 1;
    let p = plan(
        &model,
        &["--fit", "-c", "8192", "--budget", &budget.to_string()],
    );
    let choice = &p["choice"];
    eprintln!("budget {budget} B: choice {choice}");
    let fitting: Vec<&Value> = cands
        .iter()
        .filter(|c| c["refused"].is_null() && c["kv_bytes"].as_u64().unwrap() <= budget)
        .collect();
    let best = fitting
        .iter()
        .min_by(|a, b| {
            let s = |c: &Value| c["score"].as_f64().unwrap();
            s(a).total_cmp(&s(b))
        })
        .unwrap();
    assert_eq!(
        (&choice["k"], &choice["v"], &choice["layers"]),
        (&best["k"], &best["v"], &best["layers"])
    );
    assert!(choice["kv_bytes"].as_u64().unwrap() <= budget);
    // Gemma loses in the keys: the measured best under this budget keeps wide keys.
    assert_ne!(choice["k"], "tbq3_0");

    let args = strings(&p["args"]);
    let mut want = vec![
        "-ctk",
        choice["k"].as_str().unwrap(),
        "-ctv",
        choice["v"].as_str().unwrap(),
    ];
    // a calibrated allocation of this model (its per-layer types) goes to llama-server as they are
    if let Some(l) = choice["layers"].as_str() {
        want.extend(["--cache-type-layers", l]);
    }
    want.extend(["-c", "8192", "-fa", "on"]);
    assert_eq!(args, want);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = server_log(&bin, &model, &argv);
    let server: f64 = kv_lines(&log).iter().map(|l| l.2).sum();
    let planned = mib(&choice["kv_bytes"]);
    eprintln!("server {server} MiB, plan {planned} MiB");
    assert!(
        (server - planned).abs() <= 0.01 * server,
        "server {server} MiB vs plan {planned} MiB"
    );

    // This model's calibrated allocation (committed in its results, `+L`): with a budget of its
    // cache size it is the choice, its per-layer types go to llama-server, and the server
    // allocates what the plan said.
    let alloc = cands
        .iter()
        .find(|c| c["layers"].is_string())
        .expect("Gemma's results hold a calibrated allocation");
    let budget = alloc["kv_bytes"].as_u64().unwrap();
    let p = plan(
        &model,
        &["--fit", "-c", "8192", "--budget", &budget.to_string()],
    );
    let choice = &p["choice"];
    assert_eq!(choice["layers"], alloc["layers"], "{p}");
    let args = strings(&p["args"]);
    assert_eq!(args[4], "--cache-type-layers");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let server: f64 = kv_lines(&server_log(&bin, &model, &argv))
        .iter()
        .map(|l| l.2)
        .sum();
    let planned = mib(&choice["kv_bytes"]);
    eprintln!("allocation: server {server} MiB, plan {planned} MiB");
    assert!(
        (server - planned).abs() <= 0.01 * server,
        "server {server} MiB vs plan {planned} MiB"
    );

    // A budget below every pair: refused with the smallest pair's size in the fix.
    let o = agent()
        .args(["plan", "--fit", "-c", "8192", "--budget", "1MiB"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("smallest measured pair"));
}

/// The largest `WHAT buffer size = X MiB` of a llama-server log (the compute buffer is reserved
/// more than once).
fn buffer_mib(log: &str, what: &str) -> f64 {
    log.lines()
        .filter_map(|l| {
            let rest = l.split(&format!("{what} buffer size =")).nth(1)?;
            rest.split("MiB").next()?.trim().parse::<f64>().ok()
        })
        .fold(0.0, f64::max)
}

/// `--fit --gpu-memory` on this CPU-only machine: what can be checked without a GPU. The weights
/// the planner places are the ones the CPU build maps (within 1%); the compute estimate is of
/// the size of the CPU build's compute buffer; weights + KV + compute agree with upstream
/// `--fit`'s own dry-run projection (within 5%); a GPU too small for the whole model gets some
/// layers, not all, within free − margin (the search itself is unit-tested); the printed
/// arguments start llama-server.
#[test]
fn fit_for_a_gpu_places_layers_like_upstream_fit() {
    let Some((bin, model)) = setup() else { return };
    let whole = plan(&model, &["--fit", "-c", "4096", "--gpu-memory", "64GiB"]);
    let c = &whole["choice"];
    assert_eq!(c["k"], "f16", "{whole}");
    let n_layer = whole["n_layer"].as_u64().unwrap();
    assert_eq!(c["ngl"].as_u64().unwrap(), n_layer + 1);
    assert_eq!(c["full_offload"], true);
    let args = strings(&whole["args"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = server_log(&bin, &model, &argv);
    // The CPU build maps the whole file (CPU_Mapped); a repacking CPU adds copies of some
    // weights in other buffers (AMX, CPU_REPACK), which a GPU build would not make.
    let mapped = buffer_mib(&log, "CPU_Mapped model");
    let weights = mib(&whole["weights"]["file_total"]);
    eprintln!("weights: server maps {mapped} MiB, plan {weights} MiB");
    assert!(
        (mapped - weights).abs() <= 0.01 * mapped,
        "{mapped} vs {weights}"
    );
    let compute_cpu = buffer_mib(&log, "compute");
    let compute = mib(&whole["compute_estimate"]);
    eprintln!("compute: CPU build {compute_cpu} MiB, estimate {compute} MiB");
    assert!(
        compute > 0.5 * compute_cpu && compute < 2.0 * compute_cpu,
        "{compute} vs {compute_cpu}"
    );

    // Upstream --fit's own projection on this CPU build: with a margin no machine has, it logs
    // what it measured by dry-run allocation ("projected to use N MiB of host memory"), keeps
    // the context that -c set and goes on. On the host nothing is duplicated, so the plan's
    // counterpart is the file's weights + KV + compute.
    let mut probe: Vec<&str> = argv[..argv.len() - 4].to_vec();
    probe.extend(["--fit", "on", "--fit-target", "1000000"]);
    let log = server_log(&bin, &model, &probe);
    let projected: f64 = log
        .lines()
        .find_map(|l| {
            let rest = l.split("projected to use").nth(1)?;
            rest.split("MiB").next()?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no projection in the log:\n{log}"));
    assert!(
        log.contains("context size set by user to 4096 -> no change"),
        "{log}"
    );
    let planned = weights + mib(&c["kv_bytes"]) + compute;
    eprintln!("host memory: upstream --fit projects {projected} MiB, plan {planned} MiB");
    assert!(
        (projected - planned).abs() <= 0.05 * projected,
        "{projected} vs {planned}"
    );

    // A GPU with room beyond the margin for the output layer (first to go: Gemma's tied 262k
    // vocabulary, 170 MiB), the compute buffer and half the repeating layers: some, not all.
    let dev_all = whole["choice"]["device_bytes"].as_u64().unwrap();
    let fixed =
        whole["weights"]["output"].as_u64().unwrap() + whole["compute_estimate"].as_u64().unwrap();
    let free = (1u64 << 30) + fixed + (dev_all - fixed) / 2;
    let half = plan(
        &model,
        &[
            "--fit",
            "-c",
            "4096",
            "--gpu-memory",
            &free.to_string(),
            "--ctk",
            "f16",
            "--ctv",
            "f16",
        ],
    );
    let h = &half["choice"];
    eprintln!("{free} B free: {h}");
    let ngl = h["ngl"].as_u64().unwrap();
    assert!(ngl > 0 && ngl < n_layer + 1, "{h}");
    assert!(h["device_bytes"].as_u64().unwrap() <= free - (1 << 30));
    let args = strings(&half["args"]);
    assert!(
        args.ends_with(&[
            "-ngl".to_string(),
            ngl.to_string(),
            "--fit".into(),
            "off".into()
        ]),
        "{args:?}"
    );
    // The CPU build takes the arguments (it has no GPU to put the layers on).
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = server_log(&bin, &model, &argv);
    assert!(!kv_lines(&log).is_empty());
}

/// `plan --device` against llama-server with two ggml-rpc-server workers on 127.0.0.1: the split it
/// prints (`-ngl`, `--rpc`, `-ts`) puts on each device (the CPU and each worker) the KV cache the plan
/// says, within 1% of llama.cpp's own `<device> KV buffer size` lines — for f16/f16 at the largest
/// context the budgets allow and tbq4_0/tbq3_0 at -c 32768, each split three ways.
#[test]
fn device_split_agrees_with_llama_server_over_rpc() {
    let Some((bin, model)) = setup() else { return };
    let Some(rpc_server) = rpc_server(&bin) else {
        return;
    };
    let mut workers = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let (w, ep) = rpc_worker(&rpc_server);
        workers.push(w);
        endpoints.push(ep);
    }
    let devices = [
        "local=300MiB".to_string(),
        format!("rpc:{}=40MiB", endpoints[0]),
        format!("rpc:{}=230MiB", endpoints[1]),
    ];
    for (k, v, ctx) in [("f16", "f16", None), ("tbq4_0", "tbq3_0", Some("32768"))] {
        let mut args = vec!["--ctk", k, "--ctv", v];
        if let Some(c) = ctx {
            args.extend(["-c", c]);
        }
        for d in &devices {
            args.extend(["--device", d]);
        }
        let p = plan(&model, &args);
        let row = &p["plans"][0];
        assert_eq!(row["fits"], true, "{p}");
        let devs = row["devices"].as_array().unwrap();
        assert!(
            devs.iter().all(|d| d["layers"].as_u64().unwrap() > 0),
            "not a three-way split: {row}"
        );
        let argv = strings(&row["args"]);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let log = server_log(&bin, &model, &argv);
        for d in devs {
            let name = match d["endpoint"].as_str() {
                Some(ep) => format!("RPC0[{ep}]"),
                None => "CPU".to_string(),
            };
            // one line per cache (Gemma has a full and a sliding-window one)
            let got: f64 = log
                .lines()
                .filter_map(|l| {
                    let rest = l.split("llama_kv_cache:").nth(1)?;
                    let (dev, size) = rest.split_once("KV buffer size =")?;
                    (dev.trim() == name)
                        .then(|| size.split("MiB").next()?.trim().parse::<f64>().ok())?
                })
                .sum();
            let want = mib(&d["kv_bytes"]);
            eprintln!(
                "{k}/{v} -c {}: {name}: llama-server {got:.2} MiB, plan {want:.2} MiB ({} layers)",
                row["n_ctx"], d["layers"]
            );
            assert!(got > 0.0, "no KV buffer on {name} in the log:\n{log}");
            assert!((got - want).abs() <= 0.01 * got, "{name}: {got} vs {want}");
        }
    }
}
