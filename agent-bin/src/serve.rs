//! `serve`: run llama-server from a profile behind a health gate, restart it when it crashes; with
//! RPC workers, ask each one before every start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::client::{Client, Health};
use crate::config::Profile;
use crate::error::{fail, Exit};
use crate::rpc;
use crate::server::{self, Launch, Server};

/// Supervision settings.
pub struct ServeOptions {
    /// The server binary.
    pub bin: PathBuf,
    /// The profile (port resolved by the caller or 0 = any).
    pub profile: Profile,
    /// The server log.
    pub log: PathBuf,
    /// Seconds to wait for /health after each start.
    pub health_timeout: Duration,
    /// Restarts allowed within `restart_window` before giving up (exit 9).
    pub max_restarts: u32,
    /// The window for `max_restarts`.
    pub restart_window: Duration,
    /// First back-off; doubles up to `backoff_max`.
    pub backoff: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Seconds between health checks once ready (0 = only watch the process).
    pub health_interval: Duration,
    /// Consecutive failed health checks that count as a hang (the server is restarted).
    pub health_failures: u32,
    /// JSON event lines on stdout instead of human messages.
    pub json: bool,
    /// Progress spinners.
    pub progress: bool,
}

fn event(opts: &ServeOptions, v: serde_json::Value, human: impl FnOnce() -> String) {
    if opts.json {
        println!("{v}");
    } else {
        eprintln!("{}", human());
    }
}

/// Runs until a signal (exit 130/143 after stopping the server) or until restarts run out.
pub fn serve(opts: &ServeOptions) -> Result<()> {
    let client = Client::new(Duration::from_secs(10), None);
    let mut profile = opts.profile.clone();
    if profile.port.is_none() {
        profile.port = Some(8080);
    }
    if profile.port == Some(0) {
        profile.port = Some(server::free_port()?);
    }
    let launch = Launch {
        bin: opts.bin.clone(),
        profile,
        log: opts.log.clone(),
        extra: Vec::new(),
    };
    let mut restarts = Restarts {
        at: Vec::new(),
        backoff: opts.backoff,
    };
    let mut ever_ready = false;
    loop {
        server::check_stop()?;
        // llama-server aborts on a worker that is down or cannot hold the cache: ask each first.
        if let Err(e) = check_workers(opts) {
            if !ever_ready {
                return Err(e);
            }
            event(
                opts,
                json!({"event": "worker_unavailable", "error": format!("{e:#}")}),
                || format!("not restarting yet: {e:#}"),
            );
            restarts.wait(opts)?;
            continue;
        }
        let mut srv = Server::start(&launch)?;
        event(
            opts,
            json!({"event": "starting", "pid": srv.pid, "url": srv.url, "log": srv.log}),
            || {
                format!(
                    "starting llama-server (pid {}) on {}; log: {}",
                    srv.pid,
                    srv.url,
                    srv.log.display()
                )
            },
        );
        match srv.wait_healthy(&client, opts.health_timeout, opts.progress && !opts.json) {
            Ok(load) => {
                ever_ready = true;
                event(
                    opts,
                    json!({"event": "ready", "pid": srv.pid, "url": srv.url, "load_s": load.as_secs_f64()}),
                    || format!("ready: {} (loaded in {:.1} s)", srv.url, load.as_secs_f64()),
                );
            }
            Err(e) => {
                let (exit, _) = crate::error::classify(&e);
                // A first start that fails is a configuration problem: report it, do not loop.
                if !ever_ready
                    || matches!(
                        exit,
                        Exit::Interrupted | Exit::Terminated | Exit::Input | Exit::PortInUse
                    )
                {
                    srv.stop(Duration::from_secs(5));
                    return Err(e);
                }
                event(
                    opts,
                    json!({"event": "unhealthy", "pid": srv.pid, "error": format!("{e:#}")}),
                    || format!("restart failed: {e:#}"),
                );
                srv.stop(Duration::from_secs(5));
            }
        }
        let ready_at = Instant::now();
        // Watch: the process, health checks, and stop signals.
        let why = watch(&mut srv, &client, opts)?;
        event(
            opts,
            json!({"event": "exited", "pid": srv.pid, "reason": why}),
            || format!("llama-server (pid {}) {why}", srv.pid),
        );
        srv.stop(Duration::from_secs(10));
        drop(srv);
        if ready_at.elapsed() > opts.restart_window {
            restarts.backoff = opts.backoff; // it ran well for a while: start over
        }
        restarts.wait(opts)?;
    }
}

/// Restarts within the window, and the back-off before the next.
struct Restarts {
    at: Vec<Instant>,
    backoff: Duration,
}

impl Restarts {
    /// Counts a restart and sleeps the back-off; errors when restarts ran out or on a stop signal.
    fn wait(&mut self, opts: &ServeOptions) -> Result<()> {
        let now = Instant::now();
        self.at
            .retain(|t| now.duration_since(*t) < opts.restart_window);
        if self.at.len() as u32 >= opts.max_restarts {
            return Err(fail(
                Exit::Crashing,
                format!(
                    "llama-server crashed or could not restart {} times within {} s; giving up",
                    self.at.len() + 1,
                    opts.restart_window.as_secs()
                ),
            )
            .fix(format!(
                "read its log ({}) and the events above for the cause; raise --max-restarts to keep trying",
                opts.log.display()
            ))
            .into());
        }
        self.at.push(now);
        event(
            opts,
            json!({"event": "restarting", "attempt": self.at.len(), "backoff_s": self.backoff.as_secs_f64()}),
            || {
                format!(
                    "restarting in {:.1} s (restart {} of at most {} per {} s)",
                    self.backoff.as_secs_f64(),
                    self.at.len(),
                    opts.max_restarts,
                    opts.restart_window.as_secs()
                )
            },
        );
        server::sleep_unless_stopped(self.backoff)?;
        self.backoff = (self.backoff * 2).min(opts.backoff_max);
        Ok(())
    }
}

/// Asks each RPC worker of the profile what it is ([`rpc::probe`]) and refuses one without the
/// tbq types when a cache type is tbq; reports each as an event.
fn check_workers(opts: &ServeOptions) -> Result<()> {
    for ep in &opts.profile.rpc {
        let w = rpc::probe(ep, Duration::from_secs(5))?;
        event(opts, json!({"event": "worker", "worker": w}), || {
            format!("RPC worker {}", w.describe())
        });
        if opts.profile.uses_tbq() {
            rpc::check_tbq(&w)?;
        }
    }
    Ok(())
}

/// Waits until the server exits or hangs; returns why. Errors on a stop signal (after stopping
/// the server).
fn watch(srv: &mut Server, client: &Client, opts: &ServeOptions) -> Result<String> {
    let mut last_check = Instant::now();
    let mut failures = 0;
    loop {
        if let Some(sig) = server::stop_requested() {
            let st = srv.stop(Duration::from_secs(10));
            event(
                opts,
                json!({"event": "stopped", "signal": sig, "status": st.map(|s| s.to_string())}),
                || format!("stopped llama-server (pid {}) on signal {sig}", srv.pid),
            );
            return Err(server::stopped_error(sig));
        }
        if let Some(st) = srv.try_exit() {
            return Ok(format!("exited: {st}"));
        }
        if !opts.health_interval.is_zero() && last_check.elapsed() >= opts.health_interval {
            last_check = Instant::now();
            match client.health(&srv.url) {
                Health::Ready => failures = 0,
                h => {
                    failures += 1;
                    tracing::warn!("health check failed ({h:?}), {failures} in a row");
                    if failures >= opts.health_failures {
                        return Ok(format!(
                            "stopped answering /health ({failures} checks failed): restarting it"
                        ));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A systemd user unit that runs `tbq-agent serve` with this profile.
pub fn systemd_unit(
    profile_name: Option<&str>,
    config: Option<&Path>,
    profile: &Profile,
) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut cmd = format!("{} serve", exe.display());
    if let Some(c) = config {
        cmd.push_str(&format!(
            " --config {}",
            std::fs::canonicalize(c)
                .unwrap_or(c.to_path_buf())
                .display()
        ));
    }
    if let Some(p) = profile_name {
        cmd.push_str(&format!(" --profile {p}"));
    }
    let model = profile
        .model_path()
        .map(|m| m.display().to_string())
        .unwrap_or_else(|| "(no model)".into());
    Ok(format!(
        "# ~/.config/systemd/user/tbq-agent{suffix}.service
# Install: systemctl --user daemon-reload && systemctl --user enable --now tbq-agent{suffix}
# Logs:    journalctl --user -u tbq-agent{suffix} -f
# Keep it running after logout: loginctl enable-linger $USER
[Unit]
Description=llama-server supervised by tbq-agent ({model})
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={cmd}
# tbq-agent restarts llama-server itself; systemd restarts tbq-agent if it gives up (exit 9).
Restart=on-failure
RestartSec=10
# SIGTERM goes to tbq-agent, which stops llama-server (its own process group) cleanly.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=default.target
",
        suffix = profile_name.map(|p| format!("-{p}")).unwrap_or_default(),
    ))
}
