//! JSON-RPC 2.0 as MCP uses it: building the client's messages and checking every message the
//! server sends before anything else looks at it.
//!
//! The checks are strict on purpose. A server is another program, possibly buggy, possibly
//! not an MCP server at all (a `command` that prints a banner); a message that is not exactly
//! a JSON-RPC 2.0 request, notification or response becomes an error that says what was wrong,
//! never a panic, a guess, or a wait for an answer that will not come.

use serde_json::{json, Value};

/// Largest message (one stdio line, one HTTP body or SSE event) read from a server. Tool
/// results are capped far lower before the model sees them; this bounds the memory a
/// misbehaving server can make the agent hold.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// JSON-RPC's "method not found", the answer to server requests this client does not serve.
const METHOD_NOT_FOUND: i64 = -32601;

/// A message from the server, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// The answer to one of our requests.
    Response { id: u64, outcome: Outcome },
    /// The server asks something of us (`ping`, `roots/list`, `sampling/createMessage`, …).
    Request { id: Value, method: String },
    /// The server tells us something (logging, progress, list changed).
    Notification { method: String },
}

/// What a response carried.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// `result`.
    Result(Value),
    /// `error`.
    Error {
        code: i64,
        message: String,
        data: Option<Value>,
    },
}

/// A request of ours.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A notification of ours.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    match params {
        Some(p) => json!({"jsonrpc": "2.0", "method": method, "params": p}),
        None => json!({"jsonrpc": "2.0", "method": method}),
    }
}

/// Our answer to a server request: `ping` gets the empty result the spec asks for; anything
/// else is "method not found", since this client declares no capabilities (no roots, no
/// sampling, no elicitation) and a server must not expect them.
pub fn answer_server_request(id: &Value, method: &str) -> Value {
    if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id,
               "error": {"code": METHOD_NOT_FOUND, "message": format!("tbq-agent does not serve {method}")}})
    }
}

/// Parses and checks one message's text. `Err` says what was wrong, quoting the start of it.
pub fn parse(text: &str) -> Result<Vec<Incoming>, String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "a message of {} bytes, over the limit of {MAX_MESSAGE_BYTES}",
            text.len()
        ));
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("a message that is not JSON ({e}): {}", excerpt(text)))?;
    match v {
        // A batch (allowed by the 2025-03-26 revision, dropped later): each member on its own.
        Value::Array(items) if !items.is_empty() => items.iter().map(check).collect(),
        Value::Array(_) => Err("an empty JSON-RPC batch".into()),
        v => Ok(vec![check(&v)?]),
    }
}

fn check(v: &Value) -> Result<Incoming, String> {
    let Some(o) = v.as_object() else {
        return Err(format!(
            "a message that is not a JSON object: {}",
            excerpt(&v.to_string())
        ));
    };
    if o.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(format!(
            "a message without \"jsonrpc\": \"2.0\": {}",
            excerpt(&v.to_string())
        ));
    }
    if let Some(method) = o.get("method") {
        let Some(method) = method.as_str() else {
            return Err(format!(
                "a method that is not a string: {}",
                excerpt(&v.to_string())
            ));
        };
        if o.contains_key("result") || o.contains_key("error") {
            return Err(format!(
                "a message that is both a request and a response: {}",
                excerpt(&v.to_string())
            ));
        }
        return match o.get("id") {
            None => Ok(Incoming::Notification {
                method: method.into(),
            }),
            Some(id @ (Value::String(_) | Value::Number(_))) => Ok(Incoming::Request {
                id: id.clone(),
                method: method.into(),
            }),
            Some(id) => Err(format!(
                "a request whose id {id} is neither a string nor a number"
            )),
        };
    }
    // A response. Our ids are unsigned integers; any other id cannot answer us.
    let id = match o.get("id") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap(),
        Some(Value::Null) | None => {
            // The server could not read something we sent (a parse error has no id to give).
            let what = o
                .get("error")
                .map(|e| e.to_string())
                .unwrap_or_else(|| v.to_string());
            return Err(format!(
                "an error for no request (id null): {}",
                excerpt(&what)
            ));
        }
        Some(id) => {
            return Err(format!(
                "a response to id {id}, which this client never sends"
            ))
        }
    };
    let outcome = match (o.get("result"), o.get("error")) {
        (Some(r), None) => Outcome::Result(r.clone()),
        (None, Some(e)) => {
            let code = e.get("code").and_then(Value::as_i64);
            let message = e.get("message").and_then(Value::as_str);
            match (code, message) {
                (Some(code), Some(message)) => Outcome::Error {
                    code,
                    message: message.into(),
                    data: e.get("data").cloned(),
                },
                _ => {
                    return Err(format!(
                        "an error without an integer code and a string message: {}",
                        excerpt(&e.to_string())
                    ))
                }
            }
        }
        (Some(_), Some(_)) => {
            return Err(format!("a response with both result and error (id {id})"))
        }
        (None, None) => {
            return Err(format!(
                "a response with neither result nor error (id {id})"
            ))
        }
    };
    Ok(Incoming::Response { id, outcome })
}

/// The start of `text`, for an error message.
pub fn excerpt(text: &str) -> String {
    const SHOWN: usize = 200;
    let t = text.trim();
    if t.len() <= SHOWN {
        return format!("{t:?}");
    }
    let mut end = SHOWN;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &t[..end], t.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Incoming, String> {
        parse(text).map(|mut v| {
            assert_eq!(v.len(), 1);
            v.remove(0)
        })
    }

    #[test]
    fn responses_requests_and_notifications_are_told_apart() {
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#).unwrap(),
            Incoming::Response {
                id: 3,
                outcome: Outcome::Result(json!({"tools": []}))
            }
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"bad"}}"#).unwrap(),
            Incoming::Response {
                id: 4,
                outcome: Outcome::Error {
                    code: -32602,
                    message: "bad".into(),
                    data: None
                }
            }
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":"s1","method":"ping"}"#).unwrap(),
            Incoming::Request {
                id: json!("s1"),
                method: "ping".into()
            }
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#).unwrap(),
            Incoming::Notification {
                method: "notifications/message".into()
            }
        );
        let batch =
            parse(r#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":1,"result":{}}]"#);
        assert_eq!(batch.unwrap().len(), 2);
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        let cases = [
            ("Server starting on port 80", "not JSON"),
            (r#"{"id":1,"result":{}}"#, "without \"jsonrpc\""),
            (
                r#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
                "without \"jsonrpc\"",
            ),
            (r#"[1]"#, "not a JSON object"),
            ("[]", "empty JSON-RPC batch"),
            (r#"{"jsonrpc":"2.0","id":"x","result":{}}"#, "never sends"),
            (r#"{"jsonrpc":"2.0","id":-1,"result":{}}"#, "never sends"),
            (r#"{"jsonrpc":"2.0","id":1}"#, "neither result nor error"),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                "both result and error",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}"#,
                "integer code",
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
                "no request",
            ),
            (
                r#"{"jsonrpc":"2.0","method":7}"#,
                "method that is not a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
                "neither a string nor a number",
            ),
        ];
        for (text, want) in cases {
            let e = one(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let huge = format!("\"{}\"", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(parse(&huge).unwrap_err().contains("over the limit"));
    }

    #[test]
    fn server_requests_get_ping_answered_and_the_rest_refused() {
        assert_eq!(
            answer_server_request(&json!(9), "ping"),
            json!({"jsonrpc": "2.0", "id": 9, "result": {}})
        );
        let r = answer_server_request(&json!("a"), "sampling/createMessage");
        assert_eq!(r["error"]["code"], METHOD_NOT_FOUND);
    }
}
