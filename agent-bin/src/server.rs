//! Starting, health-gating and stopping llama-server, and never leaving one behind.
//!
//! Each llama-server runs in its own process group (so a terminal's Ctrl-C reaches the agent
//! only, and the agent decides how to stop the server), and on Linux with `PR_SET_PDEATHSIG`
//! so the kernel sends it SIGTERM if the agent dies, even by SIGKILL. SIGINT/SIGTERM to the agent
//! are forwarded to every live server group by a watcher thread ([`install_signal_handlers`]),
//! which unblocks anything waiting on the server at once.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Client, Health};
use crate::config::Profile;
use crate::error::{fail, Exit};

/// The signal that asked the agent to stop (0 = none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Process groups of live servers, for the signal watcher.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Installs the SIGINT/SIGTERM/SIGHUP watcher: the first signal records itself, sends SIGTERM to
/// every live server group and, 10 s later, SIGKILL; a second signal sends SIGKILL at once.
pub fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let first = STOP_SIGNAL
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                let kill = if first { libc::SIGTERM } else { libc::SIGKILL };
                tracing::info!(
                    signal = sig,
                    "stopping: forwarding {} to llama-server",
                    if first { "SIGTERM" } else { "SIGKILL" }
                );
                for &g in GROUPS.lock().unwrap().iter() {
                    unsafe { libc::killpg(g, kill) };
                }
                if first {
                    std::thread::spawn(|| {
                        std::thread::sleep(Duration::from_secs(10));
                        for &g in GROUPS.lock().unwrap().iter() {
                            unsafe { libc::killpg(g, libc::SIGKILL) };
                        }
                    });
                }
            }
        })?;
    Ok(())
}

/// The signal that asked the agent to stop, if any.
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// An error for "stopped by a signal", with the conventional exit code.
pub fn stopped_error(sig: i32) -> anyhow::Error {
    let exit = if sig == libc::SIGINT {
        Exit::Interrupted
    } else {
        Exit::Terminated
    };
    fail(
        exit,
        format!("stopped by signal {sig}; llama-server was stopped"),
    )
    .into()
}

/// Returns an error if a stop was requested.
pub fn check_stop() -> Result<()> {
    match stop_requested() {
        Some(s) => Err(stopped_error(s)),
        None => Ok(()),
    }
}

/// Sleeps up to `d`, returning early (with an error) if a stop is requested.
pub fn sleep_unless_stopped(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_stop()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    check_stop()
}

/// Finds llama-server: the explicit path, `$TBQ_LLAMA_SERVER`, `$TBQ_BUILD_DIR/bin`, `PATH`,
/// then `./build/bin` and the directory of this executable.
pub fn find_llama_server(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        // Named explicitly: that one or none.
        if is_executable(p) {
            return Ok(p.to_path_buf());
        }
        return Err(fail(Exit::Server, format!("llama-server not found at {} (given by --llama-server or the config's llama_server)", p.display()))
            .fix("give the path of an executable llama-server (scripts/build-llama.sh builds one into build/bin)")
            .into());
    }
    if let Some(p) = std::env::var_os("TBQ_LLAMA_SERVER") {
        candidates.push(p.into());
    }
    if let Some(d) = std::env::var_os("TBQ_BUILD_DIR") {
        candidates.push(PathBuf::from(d).join("bin/llama-server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("llama-server")));
    }
    candidates.push(PathBuf::from("build/bin/llama-server"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            candidates.push(d.join("llama-server"));
        }
    }
    for c in candidates {
        if is_executable(&c) {
            return Ok(c);
        }
        let shown = c.display().to_string();
        if !tried.contains(&shown) {
            tried.push(shown);
        }
    }
    Err(fail(Exit::Server, "llama-server not found")
        .fix(format!(
            "build it (scripts/build-llama.sh puts it in build/bin), then set TBQ_LLAMA_SERVER=/path/to/llama-server \
             or llama_server in the config file (looked at: {})",
            tried.into_iter().take(4).collect::<Vec<_>>().join(", ")
        ))
        .into())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

/// Fails with [`Exit::PortInUse`] if `host:port` cannot be bound.
pub fn check_port(host: &str, port: u16) -> Result<()> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    for a in addrs {
        if let Err(e) = TcpListener::bind(a) {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                return Err(fail(Exit::PortInUse, format!("port {port} on {host} is already in use"))
                    .fix(format!(
                        "stop whatever listens there (ss -ltnp 'sport = :{port}'), or choose another port: --port N, or --port 0 for any free one"
                    ))
                    .into());
            }
            return Err(anyhow::Error::new(e).context(format!("cannot listen on {a}")));
        }
    }
    Ok(())
}

/// A running llama-server.
pub struct Server {
    child: Child,
    /// Process id (and process group id) of llama-server.
    pub pid: u32,
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The llama-server binary.
    pub bin: PathBuf,
    /// Its settings (the port must be set; 0 is resolved to a free port by [`Server::start`]).
    pub profile: Profile,
    /// Its log file (created or appended to).
    pub log: PathBuf,
    /// Extra arguments after the profile's.
    pub extra: Vec<String>,
}

impl Server {
    /// Checks the model and the port, then starts llama-server in its own process group.
    pub fn start(launch: &Launch) -> Result<Server> {
        check_stop()?;
        let mut profile = launch.profile.clone();
        let model = profile.model_path().ok_or_else(|| {
            fail(Exit::Input, "no model given")
                .fix("set model in the profile, or pass --model PATH")
        })?;
        check_model(&model)?;
        let port = match profile.port {
            None | Some(0) => free_port()?,
            Some(p) => p,
        };
        profile.port = Some(port);
        check_port(profile.host(), port)?;
        if let Some(dir) = launch.log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&launch.log)
            .with_context(|| format!("opening the server log {}", launch.log.display()))?;
        let mut cmd = Command::new(&launch.bin);
        cmd.args(profile.server_args()).args(&launch.extra);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        unsafe {
            cmd.pre_exec(|| {
                // Own process group: the terminal's SIGINT goes to the agent, which stops us.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Die with the agent, even if it is SIGKILLed (Linux).
                #[cfg(target_os = "linux")]
                {
                    if libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGTERM as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The agent may have died between fork and prctl.
                    if libc::getppid() == 1 {
                        libc::raise(libc::SIGTERM);
                    }
                }
                Ok(())
            });
        }
        tracing::debug!(cmd = ?cmd, "starting llama-server");
        let child = cmd.spawn().map_err(|e| {
            crate::error::wrap(
                e,
                fail(Exit::Server, format!("cannot run {}", launch.bin.display()))
                    .fix("check that the path is a llama-server executable (tbq-agent doctor)"),
            )
        })?;
        let pid = child.id();
        GROUPS.lock().unwrap().push(pid as i32);
        let host = profile.host();
        let host = if host == "0.0.0.0" || host == "::" {
            "127.0.0.1"
        } else {
            host
        };
        Ok(Server {
            child,
            pid,
            url: format!("http://{host}:{port}"),
            log: launch.log.clone(),
            exited: None,
        })
    }

    /// The exit status, if llama-server has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
                self.forget_group();
            }
        }
        self.exited
    }

    fn forget_group(&self) {
        GROUPS.lock().unwrap().retain(|&g| g != self.pid as i32);
    }

    /// Waits until `/health` answers 200. Fails at once if llama-server exits (naming the cause
    /// from its log), if a stop is requested, or after `timeout`. Shows a spinner with the
    /// server's state when `progress` is on.
    pub fn wait_healthy(
        &mut self,
        client: &Client,
        timeout: Duration,
        progress: bool,
    ) -> Result<Duration> {
        let pb = if progress {
            ProgressBar::new_spinner()
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").unwrap());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!(
            "starting llama-server (pid {}) on {}",
            self.pid, self.url
        ));
        let t0 = Instant::now();
        let result = loop {
            if let Some(sig) = stop_requested() {
                break Err(stopped_error(sig));
            }
            if let Some(st) = self.try_exit() {
                break Err(self.exit_failure(st));
            }
            match client.health(&self.url) {
                Health::Ready => break Ok(t0.elapsed()),
                Health::Loading => pb.set_message(format!(
                    "llama-server is loading the model (503) on {}",
                    self.url
                )),
                Health::Down(why) => {
                    pb.set_message(format!("waiting for llama-server on {} ({why})", self.url))
                }
            }
            if t0.elapsed() > timeout {
                break Err(fail(
                    Exit::Unhealthy,
                    format!("llama-server did not become healthy within {} s (log: {})", timeout.as_secs(), self.log.display()),
                )
                .fix("raise --health-timeout for a large model or a slow disk; check the log's last lines for what it was doing")
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        pb.finish_and_clear();
        result
    }

    /// A failure describing why llama-server exited, from the end of its log.
    pub fn exit_failure(&self, st: ExitStatus) -> anyhow::Error {
        let tail = log_tail(&self.log, 4000);
        let cause = diagnose(&tail);
        let last: Vec<&str> = tail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(6)
            .collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        let (exit, fix) = match &cause {
            Some((e, _, fix)) => (*e, fix.clone()),
            None => (
                Exit::Server,
                format!("read the server log: {}", self.log.display()),
            ),
        };
        let what = cause
            .map(|c| c.1)
            .unwrap_or_else(|| "llama-server exited while starting".into());
        fail(
            exit,
            format!(
                "{what} ({st}); last lines of {}:\n    {}",
                self.log.display(),
                last.join("\n    ")
            ),
        )
        .fix(fix)
        .into()
    }

    /// Stops llama-server: SIGTERM to its group, then SIGKILL after `grace`. Idempotent.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.try_exit() {
            return Some(st);
        }
        unsafe { libc::killpg(self.pid as i32, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(
            pid = self.pid,
            "llama-server ignored SIGTERM for {} s: SIGKILL",
            grace.as_secs()
        );
        unsafe { libc::killpg(self.pid as i32, libc::SIGKILL) };
        let st = self.child.wait().ok();
        self.exited = st;
        self.forget_group();
        st
    }

    /// Peak resident memory of llama-server so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_status_kb(self.pid, "VmHWM:").map(|kb| kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Fails with [`Exit::Input`] unless `path` is a readable GGUF file.
pub fn check_model(path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path (model = ... in the profile, or --model); scripts/fetch-model.sh gemma3-270m fetches a small test model"
        } else {
            "check the file's permissions"
        };
        crate::error::wrap(e, fail(Exit::Input, format!("cannot open the model {}", path.display())).fix(fix))
    })?;
    let mut magic = [0u8; 4];
    if f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(fail(
            Exit::Input,
            format!("{} is not a GGUF file", path.display()),
        )
        .fix("llama-server needs a .gguf model; convert or download one")
        .into());
    }
    Ok(())
}

/// The last `max` bytes of a file, as text.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Recognizes common start-up failures in llama-server's log: (exit code, cause, fix).
pub fn diagnose(log: &str) -> Option<(Exit, String, String)> {
    let l = log.to_ascii_lowercase();
    if l.contains("couldn't bind") || l.contains("address already in use") {
        return Some((
            Exit::PortInUse,
            "llama-server could not listen: the port is already in use".into(),
            "choose another port (--port N, or --port 0 for any free one)".into(),
        ));
    }
    if l.contains("failed to load model")
        || l.contains("error loading model")
        || l.contains("failed to open gguf")
    {
        return Some((Exit::Input, "llama-server could not load the model".into(),
            "check that the file is a complete GGUF model this llama.cpp supports (tbq-agent doctor --model PATH)".into()));
    }
    if l.contains("head size") && l.contains("tbq") {
        return Some((Exit::Input, "llama-server refused the tbq cache type for this model's head size".into(),
            "tbq types need heads that are a multiple of 64 wide: use f16, q8_0 or q4_0 for this model".into()));
    }
    if l.contains("requires flash_attn") {
        return Some((Exit::Input, "llama-server refused a quantized V cache without flash attention (it requires flash_attn)".into(),
            "set flash_attn = \"on\" (or \"auto\") in the profile, or use an f16 V cache".into()));
    }
    if l.contains("failed to allocate")
        || l.contains("out of memory")
        || l.contains("unable to allocate")
    {
        return Some((Exit::Server, "llama-server ran out of memory".into(),
            "lower ctx_size, use a smaller cache type (tbq4_0/tbq3_0), or offload fewer layers (tbq-agent plan shows what fits)".into()));
    }
    if l.contains("invalid argument")
        || l.contains("error: unknown argument")
        || l.contains("unsupported cache type")
    {
        return Some((Exit::Input, "llama-server rejected an argument".into(),
            "check the profile's settings against llama-server --help (is this the patched build with tbq types?)".into()));
    }
    None
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `/proc/meminfo` fields, in bytes: (MemTotal, MemAvailable).
pub fn meminfo() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let get = |k: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(k))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((get("MemTotal:")?, get("MemAvailable:")?))
}

/// One GPU as nvidia-smi reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Gpu {
    /// Name.
    pub name: String,
    /// Driver version.
    pub driver: String,
    /// Total memory, bytes.
    pub memory_total: u64,
    /// Used memory, bytes.
    pub memory_used: u64,
}

/// The GPUs nvidia-smi lists (empty when there is no nvidia-smi or no GPU).
pub fn nvidia_gpus() -> Vec<Gpu> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ])
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() == 4).then(|| Gpu {
                name: f[0].into(),
                driver: f[1].into(),
                memory_total: f[2].parse::<u64>().unwrap_or(0) << 20,
                memory_used: f[3].parse::<u64>().unwrap_or(0) << 20,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnoses_common_failures() {
        assert_eq!(
            diagnose("main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080")
                .unwrap()
                .0,
            Exit::PortInUse
        );
        assert_eq!(
            diagnose(
                "llama_model_load: error loading model: tensor data is not within the file bounds"
            )
            .unwrap()
            .0,
            Exit::Input
        );
        assert!(diagnose("all good").is_none());
    }

    #[test]
    fn port_in_use_is_detected() {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let e = check_port("127.0.0.1", port).unwrap_err();
        assert_eq!(crate::error::classify(&e).0, Exit::PortInUse);
        drop(l);
        check_port("127.0.0.1", port).unwrap();
    }

    #[test]
    fn missing_model_is_input_error() {
        let e = check_model(Path::new("/nonexistent/model.gguf")).unwrap_err();
        assert_eq!(crate::error::classify(&e).0, Exit::Input);
        assert!(format!("{e:#}").contains("/nonexistent/model.gguf"));
    }
}
