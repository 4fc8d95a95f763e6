//! Shared by the tests that run a real llama-server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tbq-agent binary under test.
pub fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tbq-agent"));
    // Never read the developer's own config file.
    c.env(
        "TBQ_AGENT_CONFIG",
        repo().join("agent-bin/tests/data/empty-config.toml"),
    );
    c.env_remove("RUST_LOG");
    c
}

fn required() -> bool {
    std::env::var("TBQ_REQUIRE_LLAMA_SERVER").is_ok_and(|v| v == "1")
}

/// llama-server from `TBQ_LLAMA_SERVER`, `TBQ_BUILD_DIR/bin` or `<repo>/build/bin`; `None` (with
/// the reason printed) when absent — unless `TBQ_REQUIRE_LLAMA_SERVER=1`, which makes absence a
/// failure (CI sets it).
pub fn llama_server() -> Option<PathBuf> {
    let p = std::env::var_os("TBQ_LLAMA_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("TBQ_BUILD_DIR").map(|d| PathBuf::from(d).join("bin/llama-server"))
        })
        .unwrap_or_else(|| repo().join("build/bin/llama-server"));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("llama-server not found at {} (set TBQ_LLAMA_SERVER or TBQ_BUILD_DIR, or run scripts/build-llama.sh)", p.display());
    assert!(!required(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// A model: `TBQ_TEST_MODEL`, else `scripts/fetch-model.sh NAME` (cached after the first fetch).
pub fn model(name: &str) -> Option<PathBuf> {
    if name == "gemma3-270m" {
        if let Some(p) = std::env::var_os("TBQ_TEST_MODEL") {
            return Some(p.into());
        }
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/fetch-model.sh"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
        _ => {
            let msg = format!("model {name} unavailable (scripts/fetch-model.sh {name} failed)");
            assert!(!required(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Both, or skip.
pub fn setup() -> Option<(PathBuf, PathBuf)> {
    Some((llama_server()?, model("gemma3-270m")?))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lines of a child's stdout, through a channel.
pub fn lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a JSON event line with `"event": want`.
pub fn wait_event(rx: &Receiver<String>, want: &str, timeout: Duration) -> serde_json::Value {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {want:?} event within {timeout:?}"));
        eprintln!("agent: {line}");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["event"] == want {
                return v;
            }
        }
    }
}

/// HTTP status of GET url (0 if no answer).
pub fn http_status(url: &str) -> u16 {
    match ureq::get(url).timeout(Duration::from_secs(2)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(_) => 0,
    }
}

/// Waits until llama-server on `port` answers /health with 200; panics after two minutes.
pub fn wait_healthy(port: u16) {
    let t0 = std::time::Instant::now();
    while http_status(&format!("http://127.0.0.1:{port}/health")) != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "llama-server on port {port} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a process is alive (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X'))),
        Err(_) => false,
    }
}

/// Waits until `pid` is dead.
pub fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends a signal.
pub fn signal(pid: u32, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}

/// Stops a child for good at the end of a test (even a failed one).
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ggml-rpc-server` beside llama-server (scripts/build-llama.sh builds it); `None` (said why)
/// when absent — a failure under `TBQ_REQUIRE_LLAMA_SERVER=1`.
pub fn rpc_server(llama_server: &Path) -> Option<PathBuf> {
    let p = llama_server.with_file_name("ggml-rpc-server");
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "{} not found (scripts/build-llama.sh builds it)",
        p.display()
    );
    assert!(!required(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

/// Starts the worker `bin` on 127.0.0.1:`port` and waits until it listens.
pub fn rpc_worker_on(bin: &Path, port: u16) -> Guard {
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "worker on {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// Starts the worker `bin` on a free port; the guard and its `127.0.0.1:PORT`.
pub fn rpc_worker(bin: &Path) -> (Guard, String) {
    let port = free_port();
    (rpc_worker_on(bin, port), format!("127.0.0.1:{port}"))
}

/// A `ggml-rpc-server` built without the patch series (`TBQ_UPSTREAM_RPC_SERVER`, set by
/// scripts/test-agent.sh from scripts/build-rpc-upstream.sh); `None` (said why) when absent — a
/// failure under `TBQ_REQUIRE_LLAMA_SERVER=1`.
pub fn upstream_rpc_server() -> Option<PathBuf> {
    match std::env::var_os("TBQ_UPSTREAM_RPC_SERVER").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        other => {
            let msg = format!(
                "no upstream ggml-rpc-server ({other:?}; scripts/build-rpc-upstream.sh builds one)"
            );
            assert!(!required(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}
