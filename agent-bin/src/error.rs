//! Failures the agent reports, and the exit code each one means.
//!
//! Any error can carry a [`Failure`] somewhere in its chain; `main` finds it, prints its fix and
//! exits with its code. Errors without one exit with [`Exit::Failure`].

use std::fmt;

/// Exit codes. Documented in `tbq-agent --help`; scripts may rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Ok = 0,
    /// A failure without a more precise code (a bug, an unexpected I/O error).
    Failure = 1,
    /// Bad command line (clap's usage errors).
    Usage = 2,
    /// Bad input: a missing or unreadable model, a malformed config or search-space file.
    Input = 3,
    /// llama-server could not be found or started, or exited while starting.
    Server = 4,
    /// llama-server never became healthy within the timeout.
    Unhealthy = 5,
    /// The port is already in use.
    PortInUse = 6,
    /// Results could not be written (disk full, read-only, permissions).
    Write = 7,
    /// An HTTP endpoint failed (compare, or a request during research).
    Endpoint = 8,
    /// The supervised server kept crashing: restarts exhausted.
    Crashing = 9,
    /// `doctor` found a problem that stops the agent from working.
    Doctor = 10,
    /// Interrupted by SIGINT (128 + 2).
    Interrupted = 130,
    /// Terminated by SIGTERM (128 + 15).
    Terminated = 143,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The text `--help` shows for the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
    0    success
    1    unexpected failure (a bug or an unclassified I/O error)
    2    bad command line
    3    bad input: missing model, malformed config or search-space file
    4    llama-server not found, would not start, or exited while loading
    5    llama-server never became healthy within --health-timeout
    6    the port is already in use
    7    results could not be written (disk full, read-only, permissions)
    8    an HTTP endpoint failed
    9    the supervised server kept crashing (restarts exhausted)
   10    doctor found a blocking problem
  130    interrupted (SIGINT); llama-server was stopped
  143    terminated (SIGTERM); llama-server was stopped";

/// A classified failure: what happened, and what to do about it.
#[derive(Debug)]
pub struct Failure {
    /// The exit code it maps to.
    pub exit: Exit,
    /// What went wrong, naming the cause.
    pub message: String,
    /// How to fix it.
    pub fix: Option<String>,
    /// The underlying error, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure with exit code `exit`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            fix: None,
            source: None,
        }
    }

    /// Adds the fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Failure {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `failure`, caused by `source`, as an error whose chain keeps both.
pub fn wrap(
    source: impl std::error::Error + Send + Sync + 'static,
    failure: Failure,
) -> anyhow::Error {
    anyhow::Error::new(Failure {
        source: Some(Box::new(source)),
        ..failure
    })
}

/// Shorthand: `Err(fail(Exit::Input, "…").fix("…"))?`.
pub fn fail(exit: Exit, message: impl Into<String>) -> Failure {
    Failure::new(exit, message)
}

/// The exit code and fix of an error chain: the outermost [`Failure`] in it, if any.
pub fn classify(err: &anyhow::Error) -> (Exit, Option<&str>) {
    if let Some(f) = err.downcast_ref::<Failure>() {
        return (f.exit, f.fix.as_deref());
    }
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.exit, f.fix.as_deref());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if is_disk_full(io) {
                return (
                    Exit::Write,
                    Some("free disk space (df -h), then rerun; records already written are kept"),
                );
            }
        }
    }
    (Exit::Failure, None)
}

/// Whether an I/O error means the disk (or quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
