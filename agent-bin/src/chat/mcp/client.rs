//! One MCP session over a transport: the initialisation handshake with its version
//! negotiation, `tools/list`, and `tools/call` with a timeout and a cap on what comes back.

use std::time::Duration;

use serde_json::{json, Value};

use super::jsonrpc::{self, excerpt, Outcome};
use super::transport::{Transport, TransportError};

/// The protocol revisions this client speaks, newest first. It asks for the newest and
/// accepts any of these in the server's answer; they differ in nothing the tools use here
/// except where the transports say so.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Pages of `tools/list` followed at most (a server whose cursor never ends must not hang
/// the start).
const MAX_LIST_PAGES: usize = 50;

/// A tool as the server lists it.
#[derive(Clone, Debug)]
pub struct ListedTool {
    /// Its name on the server.
    pub name: String,
    /// Its description, if any.
    pub description: String,
    /// Its `inputSchema` (a JSON schema of type object).
    pub input_schema: Value,
}

/// A call's outcome, as text for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct CallResult {
    /// False for a tool error (`isError`), a refused call, a timeout, a dead server.
    pub ok: bool,
    /// What happened.
    pub text: String,
}

/// An initialised session.
pub struct Client {
    name: String,
    transport: Box<dyn Transport>,
    next_id: u64,
    /// The protocol revision agreed on.
    pub protocol_version: String,
    /// `serverInfo` name and version, for the log.
    pub server_info: String,
}

impl Client {
    /// Runs the handshake: `initialize` (each step within `timeout`), a check of the version
    /// the server chose, then `notifications/initialized`.
    pub fn initialize(
        name: &str,
        transport: Box<dyn Transport>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let mut c = Client {
            name: name.into(),
            transport,
            next_id: 1,
            protocol_version: String::new(),
            server_info: String::new(),
        };
        let result = c.request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSIONS[0],
                // No roots, sampling or elicitation: the agent only calls tools.
                "capabilities": {},
                "clientInfo": {"name": "tbq-agent", "version": env!("CARGO_PKG_VERSION")},
            }),
            timeout,
        )?;
        let Some(version) = result.get("protocolVersion").and_then(Value::as_str) else {
            return Err(format!(
                "MCP server {name} answered initialize without a protocolVersion: {}",
                excerpt(&result.to_string())
            ));
        };
        if !PROTOCOL_VERSIONS.contains(&version) {
            return Err(format!(
                "MCP server {name} speaks protocol version {version}, and this agent speaks {}",
                PROTOCOL_VERSIONS.join(", ")
            ));
        }
        c.protocol_version = version.into();
        c.transport.set_protocol_version(version);
        let info = &result["serverInfo"];
        c.server_info = format!(
            "{} {}",
            info["name"].as_str().unwrap_or("(unnamed)"),
            info["version"].as_str().unwrap_or("")
        )
        .trim()
        .to_string();
        if result["capabilities"].get("tools").is_none() {
            tracing::warn!("MCP server {name} ({}) offers no tools", c.server_info);
        }
        c.transport
            .notify(&jsonrpc::notification("notifications/initialized", None))
            .map_err(|e| format!("MCP server {name}: {e}"))?;
        Ok(c)
    }

    /// The server's tools, all pages. Tools whose listing is unusable are left out with a
    /// warning; a listing that is not a list at all is an error.
    pub fn list_tools(&mut self, timeout: Duration) -> Result<Vec<ListedTool>, String> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params, timeout)?;
            let Some(listed) = page.get("tools").and_then(Value::as_array) else {
                return Err(format!(
                    "MCP server {} answered tools/list without a tools array: {}",
                    self.name,
                    excerpt(&page.to_string())
                ));
            };
            for t in listed {
                match listed_tool(t) {
                    Ok(t) => tools.push(t),
                    Err(why) => tracing::warn!("MCP server {}: a tool left out: {why}", self.name),
                }
            }
            match page.get("nextCursor") {
                Some(Value::String(c)) => cursor = Some(c.clone()),
                _ => return Ok(tools),
            }
        }
        Err(format!(
            "MCP server {} listed tools over more than {MAX_LIST_PAGES} pages",
            self.name
        ))
    }

    /// Calls `tool` with `args`; the result's text is cut at `cap` bytes.
    pub fn call_tool(
        &mut self,
        tool: &str,
        args: &Value,
        timeout: Duration,
        cap: usize,
    ) -> CallResult {
        let params = json!({ "name": tool, "arguments": args });
        match self.request("tools/call", params, timeout) {
            Ok(result) => {
                let failed = result.get("isError") == Some(&Value::Bool(true));
                CallResult {
                    ok: !failed,
                    text: capped(result_text(&result), cap),
                }
            }
            Err(why) => CallResult {
                ok: false,
                text: why,
            },
        }
    }

    /// Sends a request and returns its result; every failure is one sentence naming the
    /// server. A timeout also cancels the request on the server.
    fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let message = jsonrpc::request(id, method, params);
        match self.transport.request(id, &message, timeout) {
            Ok(Outcome::Result(r)) => Ok(r),
            Ok(Outcome::Error {
                code,
                message,
                data,
            }) => {
                let data = data
                    .map(|d| format!(" {}", excerpt(&d.to_string())))
                    .unwrap_or_default();
                Err(format!(
                    "MCP server {} refused {method}: {message} (error {code}){data}",
                    self.name
                ))
            }
            Err(TransportError::TimedOut(d)) => {
                let cancel = jsonrpc::notification(
                    "notifications/cancelled",
                    Some(json!({"requestId": id, "reason": "timed out"})),
                );
                self.transport.cancel(&cancel);
                Err(format!(
                    "MCP server {} did not answer {method} within {} s; the request was cancelled",
                    self.name,
                    d.as_secs_f64()
                ))
            }
            Err(TransportError::Broken(why)) => Err(why),
        }
    }

    /// Ends the session (and stops the server process, for stdio).
    pub fn close(&mut self) {
        self.transport.close();
    }
}

fn listed_tool(t: &Value) -> Result<ListedTool, String> {
    let Some(name) = t.get("name").and_then(Value::as_str) else {
        return Err(format!("no name: {}", excerpt(&t.to_string())));
    };
    // The names the spec recommends; anything else could not be told apart from the
    // grammar's and the prompt's own punctuation.
    let valid = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(valid) {
        return Err(format!(
            "the name {name:?} is not 1-128 of A-Z a-z 0-9 _ - ."
        ));
    }
    let schema = t.get("inputSchema").cloned().unwrap_or(Value::Null);
    if schema.get("type") != Some(&json!("object")) {
        return Err(format!("{name}: its inputSchema is not of type object"));
    }
    Ok(ListedTool {
        name: name.into(),
        description: t
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        input_schema: schema,
    })
}

/// A `tools/call` result as text: its content blocks in order (text as is, anything else
/// described), or its structured content when it has no blocks.
fn result_text(result: &Value) -> String {
    let blocks = result.get("content").and_then(Value::as_array);
    let mut parts = Vec::new();
    for b in blocks.into_iter().flatten() {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("?");
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
        parts.push(match kind {
            "text" => s("text").to_string(),
            "image" | "audio" => format!(
                "[{kind} {}, {} bytes base64]",
                s("mimeType"),
                s("data").len()
            ),
            "resource_link" => format!("[resource {} {}]", s("uri"), s("name")).replace("  ", " "),
            "resource" => {
                let r = &b["resource"];
                match r.get("text").and_then(Value::as_str) {
                    Some(t) => t.to_string(),
                    None => format!("[resource {}, binary]", r["uri"].as_str().unwrap_or("")),
                }
            }
            other => format!("[a content block of type {other:?}]"),
        });
    }
    if parts.is_empty() {
        if let Some(s) = result.get("structuredContent") {
            return s.to_string();
        }
        return "(no output)".into();
    }
    parts.join("\n")
}

/// `text` cut to at most `cap` bytes (at a character boundary), saying how much was cut.
fn capped(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[result cut at {end} of {} bytes]",
        &text[..end],
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_text_and_are_capped_at_a_char_boundary() {
        let r = json!({"content": [
            {"type": "text", "text": "one"},
            {"type": "image", "mimeType": "image/png", "data": "AAAA"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "inside"}},
        ]});
        assert_eq!(
            result_text(&r),
            "one\n[image image/png, 4 bytes base64]\ninside"
        );
        assert_eq!(
            result_text(&json!({"content": [], "structuredContent": {"n": 3}})),
            r#"{"n":3}"#
        );
        assert_eq!(result_text(&json!({})), "(no output)");
        assert_eq!(capped("héllo".into(), 2), "h\n[result cut at 1 of 6 bytes]");
        assert_eq!(capped("short".into(), 10), "short");
    }

    #[test]
    fn unusable_tool_listings_are_refused_with_the_reason() {
        let ok = json!({"name": "files.read-1", "inputSchema": {"type": "object"}});
        assert_eq!(listed_tool(&ok).unwrap().name, "files.read-1");
        for (t, want) in [
            (json!({"inputSchema": {"type": "object"}}), "no name"),
            (
                json!({"name": "rm -rf", "inputSchema": {"type": "object"}}),
                "is not 1-128",
            ),
            (json!({"name": "a"}), "not of type object"),
        ] {
            let e = listed_tool(&t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
