//! The stdio transport: the server is our child process; messages are lines of JSON on its
//! stdin and stdout; its stderr is its log.
//!
//! A reader thread turns stdout into checked messages on a channel, so that a call can wait
//! with a timeout and a dead server shows up as the channel closing, never as a read that
//! blocks forever. Lines are read with a bound: a server that writes a line longer than
//! [`MAX_MESSAGE_BYTES`] gets an error for it, and the agent's memory stays bounded. The last
//! few KB of stderr are kept to explain a crash.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jsonrpc::{self, Incoming, Outcome, MAX_MESSAGE_BYTES};
use super::transport::{read_line_bounded, Abandoned, Line, Step, Transport, TransportError};

/// Bytes of the server's stderr kept for error messages.
const STDERR_TAIL: usize = 2048;

/// How long a server is given to exit after its stdin closes, and again after SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// A server process and its pipes.
pub struct StdioServer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    incoming: Receiver<Result<Vec<Incoming>, String>>,
    stderr_tail: Arc<Mutex<String>>,
    stderr_reader: std::thread::JoinHandle<()>,
    abandoned: Abandoned,
    /// Set once the server is gone: every later call fails at once with this.
    gone: Option<String>,
    closed: bool,
}

impl StdioServer {
    /// Starts `program args…` in `cwd` with `env` added to the agent's environment.
    pub fn spawn(
        name: &str,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<StdioServer, String> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        unsafe {
            cmd.pre_exec(|| {
                // Its own process group: Ctrl-C at the terminal is the agent's to handle, and
                // stopping the server stops what it started (npx → node).
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Should the agent die without stopping it, the server is told (SIGTERM).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start MCP server {name} ({program}): {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                let item = match read_line_bounded(&mut r, MAX_MESSAGE_BYTES, &mut line) {
                    Ok(Line::Eof) => break,
                    Err(e) => Err(format!("reading its stdout failed: {e}")),
                    Ok(Line::TooLong(n)) => Err(format!(
                        "a line of {n} bytes or more, over the limit of {MAX_MESSAGE_BYTES}"
                    )),
                    Ok(Line::Complete) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim();
                        if text.is_empty() {
                            continue;
                        }
                        jsonrpc::parse(text)
                    }
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let tail = stderr_tail.clone();
        let server = name.to_string();
        let stderr_reader = std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                tracing::debug!("MCP server {server}: {l}");
                let mut t = tail.lock().unwrap();
                t.push_str(&l);
                t.push('\n');
                if t.len() > STDERR_TAIL {
                    let mut cut = t.len() - STDERR_TAIL;
                    while !t.is_char_boundary(cut) {
                        cut += 1;
                    }
                    t.drain(..cut);
                }
            }
        });
        Ok(StdioServer {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            incoming,
            stderr_tail,
            stderr_reader,
            abandoned: Abandoned::default(),
            gone: None,
            closed: false,
        })
    }

    fn send(&mut self, message: &Value) -> Result<(), TransportError> {
        if let Some(why) = &self.gone {
            return Err(TransportError::Broken(why.clone()));
        }
        let mut line = serde_json::to_vec(message).expect("a Value serialises");
        line.push(b'\n');
        let written = match self.stdin.as_mut() {
            Some(w) => w.write_all(&line).and_then(|_| w.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        written
            .map_err(|e| TransportError::Broken(self.died(&format!("writing to it failed ({e})"))))
    }

    /// Records that the server is gone and says so, with its exit status and stderr tail.
    fn died(&mut self, how: &str) -> String {
        // The pipe closes a moment before the process is reaped; give it that moment.
        let end = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => break None,
            }
        };
        // Its last words on stderr may still be in the pipe: let the reader take them (it ends
        // when the pipe closes, unless something the server started holds it open).
        while !self.stderr_reader.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut why = format!("MCP server {} {how}", self.name);
        match status {
            Some(st) => why.push_str(&format!("; it exited ({st})")),
            None => why.push_str("; it is still running but closed its stdout"),
        }
        let tail = self.stderr_tail.lock().unwrap().trim().to_string();
        if !tail.is_empty() {
            why.push_str(&format!(
                "; the end of its stderr: {}",
                jsonrpc::excerpt(last_lines(&tail, 5))
            ));
        }
        self.gone = Some(why.clone());
        why
    }
}

fn last_lines(text: &str, n: usize) -> &str {
    match text.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => &text[i + 1..],
        None => text,
    }
}

impl Transport for StdioServer {
    fn request(
        &mut self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Outcome, TransportError> {
        self.send(message)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = match self.incoming.recv_timeout(left) {
                Ok(Ok(batch)) => batch,
                Ok(Err(why)) => {
                    // The garbled message may have been our response: stop waiting for it.
                    self.abandoned.add(id);
                    return Err(TransportError::Broken(format!(
                        "MCP server {} sent {why}",
                        self.name
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.abandoned.add(id);
                    return Err(TransportError::TimedOut(timeout));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TransportError::Broken(self.died("closed its stdout")))
                }
            };
            let mut ours = None;
            for m in batch {
                match self.abandoned.route(id, m) {
                    Ok(Step::Ours(o)) => ours = Some(o),
                    Ok(Step::Reply(answer)) => self.send(&answer)?,
                    Ok(Step::Skip) => {}
                    Err(why) => {
                        self.abandoned.add(id);
                        return Err(TransportError::Broken(format!(
                            "MCP server {} sent {why}",
                            self.name
                        )));
                    }
                }
            }
            if let Some(o) = ours {
                return Ok(o);
            }
        }
    }

    fn notify(&mut self, message: &Value) -> Result<(), TransportError> {
        self.send(message)
    }

    /// The shutdown the spec describes for stdio: close its stdin, wait; SIGTERM, wait;
    /// SIGKILL. Signals go to its process group.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        drop(self.stdin.take());
        let pgid = self.child.id() as i32;
        for signal in [None, Some(libc::SIGTERM), Some(libc::SIGKILL)] {
            if let Some(s) = signal {
                unsafe { libc::killpg(pgid, s) };
            }
            let end = Instant::now() + EXIT_GRACE;
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    // What it started may outlive it in the group; they go too.
                    unsafe { libc::killpg(pgid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        self.close();
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named() {
        let e = match StdioServer::spawn(
            "ghost",
            "/nonexistent/mcp-server",
            &[],
            &BTreeMap::new(),
            Path::new("/"),
        ) {
            Err(e) => e,
            Ok(_) => panic!("started a program that does not exist"),
        };
        assert!(
            e.contains("MCP server ghost") && e.contains("/nonexistent/mcp-server"),
            "{e}"
        );
    }
}
