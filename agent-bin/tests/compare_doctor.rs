//! `compare` between two real llama-servers (f16 and tbq4_0/tbq3_0 caches), and `doctor`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn start(bin: &std::path::Path, model: &std::path::Path, k: &str, v: &str) -> (Guard, String) {
    let port = free_port();
    let child = Command::new(bin)
        .arg("--model")
        .arg(model)
        .args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "-c",
            "512",
            "-np",
            "1",
            "--threads",
            "1",
            "-fa",
            "on",
            "-ctk",
            k,
            "-ctv",
            v,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while http_status(&format!("{url}/health")) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(100));
    }
    (Guard(child), url)
}

#[test]
fn compare_two_real_endpoints() {
    let Some((bin, model)) = setup() else { return };
    let (_a, ua) = start(&bin, &model, "f16", "f16");
    let (_b, ub) = start(&bin, &model, "tbq4_0", "tbq3_0");
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.toml");
    std::fs::write(&prompts, "[[prompt]]\nname = \"fox\"\ntext = \"The quick brown fox jumps over the lazy\"\nkeywords = [\"dog\"]\nmax_tokens = 6\n\n[[prompt]]\nname = \"days\"\ntext = \"Monday, Tuesday,\"\nkeywords = [\"Wednesday\"]\nmax_tokens = 6\n").unwrap();
    let o = agent()
        .args(["compare", &ua, &format!("{ub}/v1"), "--json", "--prompts"])
        .arg(&prompts)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("{s:#}");
    assert_eq!(s["rows"].as_array().unwrap().len(), 2);
    for side in ["a", "b"] {
        assert!(s[format!("decode_tps_{side}")].as_f64().unwrap() > 0.0);
        assert!(s[format!("prefill_tps_{side}")].as_f64().unwrap() > 0.0);
        assert!(s[format!("ttft_ms_{side}")].as_f64().unwrap() > 0.0);
        assert!((0.0..=1.0).contains(&s[format!("quality_{side}")].as_f64().unwrap()));
    }
    let sim = s["similarity"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&sim));
    // The table form.
    let o = agent()
        .args(["compare", &ua, &ub, "--prompts"])
        .arg(&prompts)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("score A") && t.contains("mean"), "{t}");
    // A dead endpoint: exit 8 with the cause.
    let o = agent()
        .args([
            "compare",
            &ua,
            &format!("http://127.0.0.1:{}", free_port()),
            "--prompts",
        ])
        .arg(&prompts)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn doctor_reports_what_it_finds() {
    let Some((bin, model)) = setup() else { return };
    let o = agent()
        .args(["doctor", "--json", "--llama-server"])
        .arg(&bin)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("{v:#}");
    assert!(o.status.success(), "{v}");
    let checks = v["checks"].as_array().unwrap();
    let find = |n: &str| {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no {n} check"))
    };
    assert_eq!(find("llama-server")["level"], "ok");
    assert!(find("llama-server")["detail"]
        .as_str()
        .unwrap()
        .contains("version"));
    assert_eq!(find("tbq cache types")["level"], "ok");
    assert!(find("model")["detail"].as_str().unwrap().contains("gemma3"));
    assert!(find("memory")["detail"]
        .as_str()
        .unwrap()
        .contains("MiB available"));
    // A missing model fails with a fix and exit 10.
    let o = agent()
        .args(["doctor", "--llama-server"])
        .arg(&bin)
        .args(["--model", "/nonexistent.gguf"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(10));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("[FAIL] model") && out.contains("fix:"),
        "{out}"
    );
}
