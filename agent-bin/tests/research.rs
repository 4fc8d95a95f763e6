//! `tbq-agent research` against a real llama-server: a two-axis run killed mid-way, resumed and
//! reported; bad input (malformed search space, full disk, existing results).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn space(dir: &Path, model: &Path) -> std::path::PathBuf {
    // Small on purpose: 2 prompts, short prompts and contexts, one phase-2 experiment.
    let text = format!(
        r#"[base]
model = "{}"
ctx_size = 768
cache_type_k = "f16"
cache_type_v = "f16"
flash_attn = "on"
threads = 2
parallel = 1

[axes]
cache_type_k = ["f16", "tbq4_0"]
threads = [2, 1]

[measure]
max_prompts = 2
speed_prompt_tokens = 64
speed_decode_tokens = 8
recall_fill = 0.6
health_timeout_s = 120

[phase2]
max_experiments = 2
"#,
        model.display()
    );
    let p = dir.join("space.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("unparsable line {l:?}: {e}")))
        .collect()
}

fn experiments(recs: &[Value]) -> Vec<&Value> {
    recs.iter().filter(|r| r["kind"] == "experiment").collect()
}

#[test]
fn killed_mid_research_then_resumed_to_a_report() {
    let Some((bin, model)) = setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sp = space(dir.path(), &model);
    let out = dir.path().join("out");
    let results = out.join("results.jsonl");
    let run = |resume: bool| {
        let mut c = agent();
        c.args(["research", "--llama-server"])
            .arg(&bin)
            .arg(&sp)
            .arg("--out")
            .arg(&out);
        if resume {
            c.arg("--resume");
        }
        c
    };

    // Start, and SIGKILL the agent once the first experiment is finished and the second has
    // begun measuring.
    let t0 = Instant::now();
    let mut child = Guard(run(false).stdout(Stdio::null()).spawn().unwrap());
    let killed_pid = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "research made no progress"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "research ended before it could be killed"
        );
        if let Ok(text) = std::fs::read_to_string(&results) {
            let n_exp = text
                .lines()
                .filter(|l| l.contains("\"kind\":\"experiment\""))
                .count();
            let health: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["what"] == "health")
                .collect();
            if n_exp >= 1 && health.len() >= 2 {
                child.0.kill().unwrap();
                child.0.wait().unwrap();
                break health.last().unwrap()["data"]["pid"].as_u64().unwrap() as u32;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("killed after {:.1} s", t0.elapsed().as_secs_f64());
    // The server of the interrupted experiment dies with the agent.
    assert!(
        wait_dead(killed_pid, Duration::from_secs(10)),
        "llama-server {killed_pid} outlived the agent"
    );
    // Every line is a whole record; the finished experiment is there.
    let before = records(&results);
    let done_before: Vec<String> = experiments(&before)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!done_before.is_empty());

    // Without --resume the existing results are not touched.
    let o = run(false).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    assert_eq!(records(&results).len(), before.len());

    // --resume finishes the rest without redoing what was finished.
    let o = run(true).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stderr}");
    assert!(o.status.success(), "{stderr}");
    let after = records(&results);
    assert!(
        after.starts_with(&before),
        "records written before the kill changed"
    );
    let exps = experiments(&after);
    let mut ids: Vec<&str> = exps.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an experiment was run twice");
    // Phase 1: base, tbq4_0 keys, 1 thread. Phase 2 runs the combination of the best values and
    // its neighbours only where phase 1 did not already run them: which values win depends on
    // speeds measured on a shared machine, so phase 2 may have nothing new (the unit test
    // phase2_combines_the_best_values pins its planning); anything it ran is new (ids are unique, checked above).
    let p1 = exps.iter().filter(|r| r["phase"] == 1).count();
    assert_eq!(p1, 3);
    assert!(exps.iter().all(|r| r["phase"] == 1 || r["phase"] == 2));
    let run_recs: Vec<&Value> = after.iter().filter(|r| r["kind"] == "run").collect();
    assert_eq!(
        run_recs.last().unwrap()["finished_before"]
            .as_u64()
            .unwrap() as usize,
        done_before.len()
    );
    for r in &exps {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(r["speed"]["decode_tps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["speed"]["prefill_tps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["speed"]["ttft_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["quality"]["score"].as_f64().is_some(), "{r}");
        assert!(r["recall"]["found"].is_boolean(), "{r}");
        assert!(
            r["memory"]["server_peak_rss"].as_u64().unwrap() > 10 << 20,
            "{r}"
        );
        // The planner agrees with what the server allocated (both caches, MiB to 2 decimals).
        let plan = r["plan"]["kv_mib"].as_f64().unwrap();
        let server = r["server_kv_mib"].as_f64().unwrap();
        assert!(
            (plan - server).abs() <= 0.01 * server + 0.01,
            "plan {plan} vs server {server}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    eprintln!("{report}");
    for objective in ["**speed**", "**context**", "**quality**"] {
        assert!(
            report.contains(objective),
            "{objective} missing from the report"
        );
    }
    let png = std::fs::read(out.join("report.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    assert!(report.contains("tbq4_0"));
}

#[test]
fn bad_input_is_refused_with_line_and_column_or_a_clear_cause() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("space.toml");
    std::fs::write(
        &sp,
        "[base]\nmodel = \"/m.gguf\"\n[axes]\nthreads = [1, 2]\nctx = [512]\n",
    )
    .unwrap();
    let o = agent().args(["research"]).arg(&sp).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("space.toml:5:7: unknown axis \"ctx\"") && err.contains("fix:"),
        "{err}"
    );

    std::fs::write(
        &sp,
        "[base]\nmodel = \"/m.gguf\"\n[axes\nthreads = [1, 2]\n",
    )
    .unwrap();
    let o = agent().args(["research"]).arg(&sp).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("space.toml:3:6"), "{err}");

    // A model that is not there: exit 3 before anything starts.
    std::fs::write(
        &sp,
        "[base]\nmodel = \"/nonexistent.gguf\"\n[axes]\nthreads = [1, 2]\n",
    )
    .unwrap();
    let o = agent()
        .args(["research", "--llama-server", "/bin/true"])
        .arg(&sp)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn full_disk_is_a_write_error_naming_the_fix() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No server is started: a synthetic GGUF header is model enough.
    let model = dir.path().join("synthetic.gguf");
    {
        use tbq::gguf::write::{metadata_only, WValue};
        let mut f = std::fs::File::create(&model).unwrap();
        metadata_only(
            &mut f,
            &[
                ("general.architecture", WValue::Str("llama".into())),
                ("llama.block_count", WValue::U32(2)),
                ("llama.context_length", WValue::U32(2048)),
                ("llama.embedding_length", WValue::U32(256)),
                ("llama.attention.head_count", WValue::U32(2)),
            ],
        )
        .unwrap();
    }
    let sp = space(dir.path(), &model);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Every write to results.jsonl fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", out.join("results.jsonl")).unwrap();
    let o = agent()
        .args(["research", "--llama-server", "/bin/true"])
        .arg(&sp)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "{err}");
    assert!(
        err.contains("disk is full") && err.contains("--resume"),
        "{err}"
    );
}
