//! A llama-server child for one K/V configuration: started on a free local port, ready once
//! `/health` answers 200, stopped (SIGTERM, then SIGKILL) when dropped — and killed by the
//! kernel if tbq-validate dies first, so no server is ever left behind.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::llama::{KvConfig, Tools};
use crate::proc::{die_with_parent, display_command, ChildGuard};

pub struct Server {
    guard: ChildGuard,
    pub url: String,
    pub log: PathBuf,
    agent: ureq::Agent,
}

/// A port nobody listens on now (the OS picks it; the server binds it a moment later).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct ServerOpts<'a> {
    pub tools: &'a Tools,
    pub model: &'a Path,
    pub config: &'a KvConfig,
    pub ctx: u32,
    pub threads: usize,
    pub seed: u64,
    pub log: &'a Path,
    /// How long loading may take before we give up.
    pub ready_timeout: Duration,
    /// Slots (`-np`).
    pub parallel: u32,
}

impl Server {
    pub fn start(o: &ServerOpts) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = Command::new(o.tools.exe("llama-server")?);
        cmd.arg("-m").arg(o.model);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        cmd.args([
            "-c",
            &o.ctx.to_string(),
            "-np",
            &o.parallel.to_string(),
            "-fa",
            "on",
        ]);
        cmd.args(["-ctk", &o.config.k, "-ctv", &o.config.v]);
        cmd.args(["-t", &o.threads.to_string(), "--seed", &o.seed.to_string()]);
        // Every request is a new haystack: no prompt cache to reuse, nothing to keep in RAM.
        cmd.args([
            "--no-cache-prompt",
            "-cram",
            "0",
            "--no-webui",
            "--no-warmup",
        ]);
        cmd.args(["-lv", "4", "--log-colors", "off"]);
        for (k, v) in o.config.env() {
            cmd.env(k, v);
        }
        let command = display_command(&cmd);
        let mut log =
            File::create(o.log).with_context(|| format!("creating {}", o.log.display()))?;
        writeln!(log, "$ {command}")?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting llama-server")?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(3600))
            .build();
        let mut s = Server {
            guard: ChildGuard(Some(child)),
            url: format!("http://127.0.0.1:{port}"),
            log: o.log.to_path_buf(),
            agent,
        };
        s.wait_ready(o.ready_timeout)?;
        Ok(s)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.guard.child().try_wait()? {
                bail!(
                    "llama-server exited while loading ({status}): {}",
                    tail(&self.log, 3)
                );
            }
            match self.agent.get(&format!("{}/health", self.url)).call() {
                Ok(r) if r.status() == 200 => return Ok(()),
                _ => {}
            }
            if start.elapsed() > timeout {
                bail!(
                    "llama-server not ready after {:?} (log: {})",
                    timeout,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// POSTs JSON to `path` and returns the JSON answer; an HTTP error carries the server's body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        match self
            .agent
            .post(&format!("{}{path}", self.url))
            .send_json(body)
        {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "{path}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => Err(e).with_context(|| format!("{path}: {}", tail(&self.log, 2))),
        }
    }
}

fn tail(log: &Path, n: usize) -> String {
    let text = crate::llama::read_log(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
