//! Running llama.cpp tools as children: everything they print goes to a log file, stdout is
//! watched for progress, and a child never outlives tbq-validate (it is killed on drop, and on
//! Linux the kernel sends it SIGTERM if tbq-validate dies first).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;

use anyhow::{Context, Result};

/// Asks the kernel to send SIGTERM to the child when this process dies, however it dies, so a
/// killed tbq-validate leaves no llama-perplexity or llama-server behind.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            if let Ok(None) = c.try_wait() {
                // SIGTERM first so llama-server can close its socket; then make sure.
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGTERM);
                }
                for _ in 0..50 {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    thread::sleep(std::time::Duration::from_millis(100));
                }
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion. Its stdout and stderr are written, interleaved as they come, to
/// `log`; `on_stdout` sees the whole stdout so far after every read (for progress).
pub fn run_logged(
    cmd: &mut Command,
    log: &Path,
    mut on_stdout: impl FnMut(&str),
) -> Result<ExitStatus> {
    let mut file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    writeln!(file, "$ {}", display_command(cmd))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    let mut guard = ChildGuard(Some(child));
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    let mut readers = Vec::new();
    for (is_out, stream) in [
        (
            true,
            Box::new(guard.child().stdout.take().unwrap()) as Box<dyn Read + Send>,
        ),
        (
            false,
            Box::new(guard.child().stderr.take().unwrap()) as Box<dyn Read + Send>,
        ),
    ] {
        let tx = tx.clone();
        let mut stream = stream;
        readers.push(thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((is_out, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut stdout = Vec::new();
    for (is_out, bytes) in rx {
        file.write_all(&bytes)?;
        if is_out {
            stdout.extend_from_slice(&bytes);
            on_stdout(&String::from_utf8_lossy(&stdout));
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = guard.child().wait()?;
    guard.0 = None;
    writeln!(file, "\n[tbq-validate: exit status {status}]")?;
    Ok(status)
}

/// The command line as a shell would show it (environment overrides first).
pub fn display_command(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(' ') {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it): a killed run never
/// leaves a half-written result behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
