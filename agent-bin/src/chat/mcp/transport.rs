//! What the MCP session needs from a transport, and what both transports share: matching
//! responses to the request that waits for them, and reading lines (stdio messages, SSE
//! fields) with a bound on their length.

use std::collections::HashSet;
use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

use super::jsonrpc::{self, Incoming, Outcome};

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq)]
pub enum TransportError {
    /// Nothing came back within the timeout. The request may still be running on the server;
    /// its late response, if any, is dropped.
    TimedOut(Duration),
    /// The server is gone, unreachable, or broke the protocol: what happened, in words.
    Broken(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::TimedOut(d) => write!(f, "no answer within {:.1} s", d.as_secs_f64()),
            TransportError::Broken(why) => f.write_str(why),
        }
    }
}

/// A connection to one MCP server.
pub trait Transport: Send {
    /// Sends request `message` (whose id is `id`) and waits at most `timeout` for the response
    /// with that id, answering the server's own requests and passing over its notifications
    /// meanwhile.
    fn request(
        &mut self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Outcome, TransportError>;

    /// Sends a notification (no response expected).
    fn notify(&mut self, message: &Value) -> Result<(), TransportError>;

    /// Sends a cancellation: like [`Transport::notify`], but it must not hold up the call that
    /// timed out (a busy server may be slow to take it), and its failure is only logged.
    fn cancel(&mut self, message: &Value) {
        if let Err(e) = self.notify(message) {
            tracing::debug!("sending a cancellation: {e}");
        }
    }

    /// The protocol version agreed at initialisation (streamable HTTP repeats it in a header
    /// on every later request).
    fn set_protocol_version(&mut self, _version: &str) {}

    /// Ends the session and stops the server where we started it. Idempotent.
    fn close(&mut self);
}

/// What to do with one checked message while waiting for response `id`.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// The response we wait for.
    Ours(Outcome),
    /// A server request: send this answer back, then keep waiting.
    Reply(Value),
    /// Nothing to do (a notification, a late response to an abandoned request).
    Skip,
}

/// Ids of requests given up on (timed out), whose responses may still arrive.
#[derive(Default)]
pub struct Abandoned(HashSet<u64>);

impl Abandoned {
    /// Remembers that request `id` is no longer waited for.
    pub fn add(&mut self, id: u64) {
        self.0.insert(id);
    }

    /// Decides what `message` means to the request `waiting` for its response.
    pub fn route(&mut self, waiting: u64, message: Incoming) -> Result<Step, String> {
        match message {
            Incoming::Response { id, outcome } if id == waiting => Ok(Step::Ours(outcome)),
            Incoming::Response { id, .. } if self.0.remove(&id) => {
                tracing::debug!("dropped the late response to abandoned request {id}");
                Ok(Step::Skip)
            }
            Incoming::Response { id, .. } => Err(format!(
                "a response to request {id}, which is not waiting (request {waiting} is)"
            )),
            Incoming::Request { id, method } => {
                tracing::debug!("the server asked {method}; answering");
                Ok(Step::Reply(jsonrpc::answer_server_request(&id, &method)))
            }
            Incoming::Notification { method } => {
                tracing::debug!("server notification {method}");
                Ok(Step::Skip)
            }
        }
    }
}

/// How a bounded line read ended.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// `buf` holds one line, without its newline.
    Complete,
    /// The line had at least this many bytes, over the bound; it was read past and dropped.
    TooLong(usize),
    /// The stream ended (a last line without a newline counts as complete first).
    Eof,
}

/// Reads one `\n`-terminated line into `buf`, holding at most `max` bytes of it.
pub fn read_line_bounded(
    r: &mut impl BufRead,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buf.clear();
    let mut seen = 0usize;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match seen {
                0 => Line::Eof,
                n if n > max => Line::TooLong(n),
                _ => Line::Complete,
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if seen + take <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf.clear();
        }
        seen += take;
        r.consume(take + usize::from(done));
        if done {
            return Ok(if seen > max {
                Line::TooLong(seen)
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::BufReader;

    fn response(id: u64) -> Incoming {
        Incoming::Response {
            id,
            outcome: Outcome::Result(json!({})),
        }
    }

    #[test]
    fn late_responses_are_dropped_once_and_strangers_refused() {
        let mut a = Abandoned::default();
        a.add(2);
        assert_eq!(a.route(3, response(2)).unwrap(), Step::Skip);
        // A second response to 2 is no longer expected by anyone.
        assert!(a.route(3, response(2)).unwrap_err().contains("request 2"));
        assert!(a.route(3, response(7)).is_err());
        assert_eq!(
            a.route(3, response(3)).unwrap(),
            Step::Ours(Outcome::Result(json!({})))
        );
        let ping = Incoming::Request {
            id: json!(1),
            method: "ping".into(),
        };
        assert!(matches!(a.route(3, ping).unwrap(), Step::Reply(_)));
    }

    #[test]
    fn long_lines_are_skipped_whole_and_reading_goes_on() {
        let text = format!("short\n{}\nafter\nlast", "y".repeat(100));
        let mut r = BufReader::with_capacity(16, text.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, 50, &mut buf).unwrap() {
                Line::Eof => break,
                Line::TooLong(n) => got.push(format!("too long {n}")),
                Line::Complete => got.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(got, ["short", "too long 100", "after", "last"]);
    }
}
