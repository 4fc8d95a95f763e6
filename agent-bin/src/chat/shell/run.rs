//! Running a shell command: `sh -c` in the workspace (inside the sandbox when there is one),
//! in a process group of its own so that a timeout kills the command and everything it
//! started, with stdout and stderr in one capped stream.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::sandbox::Sandbox;

/// What a command did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// stdout and stderr, interleaved, at most the cap.
    pub output: String,
    /// Whether output was cut at the cap.
    pub truncated: bool,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// Runs `command` with `sh -c` in `cwd`, inside `sandbox`; kills its process group after
/// `timeout`; keeps at most `cap` bytes of output. Anything the command left running in its
/// group is killed when it ends. (Under bubblewrap the command is in a session of its own; bwrap
/// dies with the group, and `--die-with-parent` and the PID namespace take everything in the
/// sandbox with it.)
pub fn run(
    command: &str,
    cwd: &Path,
    sandbox: &Sandbox,
    timeout: Duration,
    cap: usize,
) -> Result<Outcome> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut cmd = sandbox.command(command);
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end.try_clone()?))
        .stderr(Stdio::from(write_end));
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting sh")?;
    // `cmd` holds the parent's copies of the write end; drop them so EOF can come.
    drop(cmd);
    let pgid = child.id() as i32;
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        let mut truncated = false;
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    // Keep draining past the cap so the command never blocks on a full pipe.
                    truncated |= n > room;
                }
            }
        }
        (kept, truncated)
    });
    let t0 = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() >= timeout {
            timed_out = true;
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Background jobs of the command would hold the pipe open and outlive the turn.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let (kept, truncated) = reader.join().unwrap_or_default();
    Ok(Outcome {
        code: status.code(),
        output: String::from_utf8_lossy(&kept).into_owned(),
        truncated,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_cwd_caps_output_and_kills_the_group_on_timeout() {
        // Unsandboxed, so that the background job's PID is this machine's (not a namespace's).
        let unsandboxed = Sandbox::Unsandboxed { why: "test".into() };
        let dir = tempfile::tempdir().unwrap();
        let o = run(
            "pwd; echo err >&2; exit 3",
            dir.path(),
            &unsandboxed,
            Duration::from_secs(5),
            4096,
        )
        .unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert!(o.output.contains(real.to_str().unwrap()), "{o:?}");
        assert!(o.output.contains("err"));
        assert_eq!(o.code, Some(3));

        let o = run(
            "yes | head -c 100000",
            dir.path(),
            &unsandboxed,
            Duration::from_secs(5),
            1000,
        )
        .unwrap();
        assert_eq!(o.output.len(), 1000);
        assert!(o.truncated);

        let marker = dir.path().join("pid");
        let t0 = Instant::now();
        let o = run(
            &format!("sleep 30 & echo $! > {}; sleep 30", marker.display()),
            dir.path(),
            &unsandboxed,
            Duration::from_millis(500),
            1000,
        )
        .unwrap();
        assert!(
            o.timed_out && t0.elapsed() < Duration::from_secs(5),
            "{o:?}"
        );
        let bg: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let gone = !std::path::Path::new(&format!("/proc/{bg}")).exists()
            || std::fs::read_to_string(format!("/proc/{bg}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true);
        assert!(gone, "the background sleep survived the timeout");
    }
}
