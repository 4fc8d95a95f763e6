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
    let text = std::fs::read_to_string(&log).unwrap();
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
