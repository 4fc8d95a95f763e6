//! The streamable HTTP transport (MCP 2025-03-26 and later): every message we send is a POST
//! to the server's one endpoint; a request's response comes back either as a JSON body or as
//! a stream of server-sent events that carries it (with, possibly, the server's own requests
//! and notifications before it).
//!
//! The session id the server gives at initialisation (`Mcp-Session-Id`) goes back on every
//! later request, with the negotiated `MCP-Protocol-Version`; the session is ended with a
//! DELETE at exit. A server that forgets the session (404) is reported, not silently
//! re-initialised: tools may hold state tied to it. The optional GET stream for unprompted
//! server messages is not opened: this client takes nothing from a server unasked.

use std::io::{BufReader, Read};
use std::time::Duration;

use serde_json::Value;

use super::jsonrpc::{self, excerpt, Outcome, MAX_MESSAGE_BYTES};
use super::transport::{read_line_bounded, Abandoned, Line, Step, Transport, TransportError};

/// How long the session's closing DELETE, a cancellation or a reply to a server request may
/// take.
const SHORT: Duration = Duration::from_secs(5);

/// A session with a server at a URL.
pub struct StreamableHttp {
    name: String,
    url: String,
    http: ureq::Agent,
    session: Option<String>,
    protocol_version: Option<String>,
    abandoned: Abandoned,
    closed: bool,
}

impl StreamableHttp {
    /// A transport for `url` (nothing is sent until the first request).
    pub fn new(name: &str, url: &str) -> StreamableHttp {
        StreamableHttp {
            name: name.into(),
            url: url.into(),
            http: ureq::AgentBuilder::new().redirects(0).build(),
            session: None,
            protocol_version: None,
            abandoned: Abandoned::default(),
            closed: false,
        }
    }

    /// A POST of a message, with the session's headers.
    fn post_request(&self, timeout: Duration) -> ureq::Request {
        let mut req = self
            .http
            .post(&self.url)
            .timeout(timeout)
            .set("Content-Type", "application/json")
            .set("Accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            req = req.set("Mcp-Session-Id", s);
        }
        if let Some(v) = &self.protocol_version {
            req = req.set("MCP-Protocol-Version", v);
        }
        req
    }

    fn post(&self, body: &Value, timeout: Duration) -> Result<ureq::Response, TransportError> {
        match self.post_request(timeout).send_string(&body.to_string()) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(404, _)) if self.session.is_some() => Err(self.broken(
                "no longer knows this session (HTTP 404); restart the chat to start a new one",
            )),
            Err(ureq::Error::Status(code, r)) => {
                let mut text = String::new();
                let _ = r.into_reader().take(512).read_to_string(&mut text);
                Err(self.broken(&format!("answered HTTP {code}: {}", excerpt(&text))))
            }
            Err(ureq::Error::Transport(t)) if is_timeout(&t) => {
                Err(TransportError::TimedOut(timeout))
            }
            Err(ureq::Error::Transport(t)) => {
                Err(self.broken(&format!("cannot be reached at {} ({t})", self.url)))
            }
        }
    }

    fn broken(&self, what: &str) -> TransportError {
        TransportError::Broken(format!("MCP server {} {what}", self.name))
    }

    /// Sends our answer to a server request (it expects 202 Accepted, and nothing hangs on it).
    fn reply(&self, answer: &Value) {
        if let Err(e) = self.post(answer, SHORT) {
            tracing::warn!("answering a request of MCP server {}: {e}", self.name);
        }
    }

    /// Goes through the messages of an SSE body until the response to `id`.
    fn read_event_stream(
        &mut self,
        id: u64,
        body: Box<dyn Read + Send + Sync>,
        timeout: Duration,
    ) -> Result<Outcome, TransportError> {
        let mut r = BufReader::new(body);
        let mut line = Vec::new();
        let mut data = String::new();
        loop {
            let read = read_line_bounded(&mut r, MAX_MESSAGE_BYTES, &mut line);
            let end_of_event = match read {
                Err(e) if is_io_timeout(&e) => {
                    self.abandoned.add(id);
                    return Err(TransportError::TimedOut(timeout));
                }
                Err(e) => return Err(self.broken(&format!("broke off its event stream ({e})"))),
                Ok(Line::TooLong(n)) => {
                    self.abandoned.add(id);
                    return Err(self.broken(&format!(
                        "sent an event line of {n} bytes or more, over the limit of {MAX_MESSAGE_BYTES}"
                    )));
                }
                Ok(Line::Eof) if data.is_empty() => {
                    return Err(self.broken("closed its event stream without answering"))
                }
                Ok(Line::Eof) => true,
                Ok(Line::Complete) => {
                    let l = String::from_utf8_lossy(&line);
                    let l = l.strip_suffix('\r').unwrap_or(&l);
                    if l.is_empty() {
                        true
                    } else {
                        // Fields other than data (event, id, retry) and comments carry no
                        // message; resuming a broken stream by id is not supported.
                        if let Some(d) = l.strip_prefix("data:") {
                            if data.len() + d.len() > MAX_MESSAGE_BYTES {
                                self.abandoned.add(id);
                                return Err(self.broken(&format!(
                                    "sent an event over the limit of {MAX_MESSAGE_BYTES} bytes"
                                )));
                            }
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(d.strip_prefix(' ').unwrap_or(d));
                        }
                        false
                    }
                }
            };
            if !end_of_event || data.is_empty() {
                continue;
            }
            let messages = jsonrpc::parse(&std::mem::take(&mut data)).map_err(|why| {
                self.abandoned.add(id);
                self.broken(&format!("sent {why}"))
            })?;
            for m in messages {
                match self.abandoned.route(id, m) {
                    Ok(Step::Ours(o)) => return Ok(o),
                    Ok(Step::Reply(answer)) => self.reply(&answer),
                    Ok(Step::Skip) => {}
                    Err(why) => {
                        self.abandoned.add(id);
                        return Err(self.broken(&format!("sent {why}")));
                    }
                }
            }
        }
    }

    /// The response to `id` in a JSON body.
    fn read_json_body(
        &mut self,
        id: u64,
        body: Box<dyn Read + Send + Sync>,
        timeout: Duration,
    ) -> Result<Outcome, TransportError> {
        let mut bytes = Vec::new();
        match body
            .take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
        {
            Err(e) if is_io_timeout(&e) => {
                self.abandoned.add(id);
                return Err(TransportError::TimedOut(timeout));
            }
            Err(e) => return Err(self.broken(&format!("broke off its response ({e})"))),
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&bytes);
        let messages = jsonrpc::parse(&text).map_err(|why| self.broken(&format!("sent {why}")))?;
        let mut ours = None;
        for m in messages {
            match self.abandoned.route(id, m) {
                Ok(Step::Ours(o)) => ours = Some(o),
                Ok(Step::Reply(answer)) => self.reply(&answer),
                Ok(Step::Skip) => {}
                Err(why) => return Err(self.broken(&format!("sent {why}"))),
            }
        }
        ours.ok_or_else(|| self.broken(&format!("answered without the response to request {id}")))
    }
}

impl Transport for StreamableHttp {
    fn request(
        &mut self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Outcome, TransportError> {
        let resp = self.post(message, timeout).inspect_err(|e| {
            if matches!(e, TransportError::TimedOut(_)) {
                self.abandoned.add(id);
            }
        })?;
        if let Some(s) = resp.header("Mcp-Session-Id") {
            // The spec allows visible ASCII only; anything else cannot go back in a header.
            if s.is_empty() || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(self.broken(&format!("gave an invalid session id {}", excerpt(s))));
            }
            self.session = Some(s.to_string());
        }
        if resp.status() == 202 {
            return Err(self.broken(&format!(
                "accepted request {id} (HTTP 202) without answering it"
            )));
        }
        let content_type = resp.content_type().to_ascii_lowercase();
        let body = resp.into_reader();
        match content_type.as_str() {
            "text/event-stream" => self.read_event_stream(id, body, timeout),
            "application/json" => self.read_json_body(id, body, timeout),
            other => Err(self.broken(&format!(
                "answered with content type {other:?}, neither JSON nor an event stream"
            ))),
        }
    }

    fn notify(&mut self, message: &Value) -> Result<(), TransportError> {
        let resp = self.post(message, SHORT)?;
        match resp.status() {
            200..=299 => Ok(()),
            s => Err(self.broken(&format!("answered a notification with HTTP {s}"))),
        }
    }

    /// Posted from a thread of its own: the POST may wait on a server busy with the very
    /// request being cancelled.
    fn cancel(&mut self, message: &Value) {
        let req = self.post_request(SHORT);
        let body = message.to_string();
        let name = self.name.clone();
        std::thread::spawn(move || {
            if let Err(e) = req.send_string(&body) {
                tracing::debug!("sending a cancellation to MCP server {name}: {e}");
            }
        });
    }

    fn set_protocol_version(&mut self, version: &str) {
        self.protocol_version = Some(version.into());
    }

    /// Ends the session (DELETE; a server that does not allow it answers 405, which is fine).
    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let Some(s) = &self.session else { return };
        let mut req = self
            .http
            .delete(&self.url)
            .timeout(SHORT)
            .set("Mcp-Session-Id", s);
        if let Some(v) = &self.protocol_version {
            req = req.set("MCP-Protocol-Version", v);
        }
        if let Err(e) = req.call() {
            tracing::debug!("ending the session with MCP server {}: {e}", self.name);
        }
    }
}

impl Drop for StreamableHttp {
    fn drop(&mut self) {
        self.close();
    }
}

fn is_io_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn is_timeout(t: &ureq::Transport) -> bool {
    let mut source = std::error::Error::source(t);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return is_io_timeout(io);
        }
        source = e.source();
    }
    t.to_string().contains("timed out")
}
