//! What the model may say: one JSON action per step, enforced by llama-server's grammar.
//!
//! Small local models call tools unreliably through their chat templates, so the agent does not
//! use them. Every model step is constrained (`response_format` with a JSON schema, which
//! llama-server compiles into a grammar) to be either `{"answer": "…"}` or
//! `{"tool": "NAME", "args": {…}}` with exactly that tool's arguments. The output then always
//! parses; what is left to check is what the arguments mean, which the tools do.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A tool the model may call.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// Its name in actions.
    pub name: &'static str,
    /// What it does, for the system prompt.
    pub help: &'static str,
    /// Argument names and their JSON schemas, in the order the model writes them.
    pub args: &'static [(&'static str, &'static str)],
}

/// Every tool; `web_fetch` is offered only when enabled, `shell` only when enabled.
pub const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "shell",
        help: "run a shell command in the workspace folder and see its output",
        args: &[("command", r#"{"type":"string"}"#)],
    },
    ToolSpec {
        name: "read_file",
        help: "read a text file in the workspace",
        args: &[("path", r#"{"type":"string"}"#)],
    },
    ToolSpec {
        name: "write_file",
        help: "create or replace a text file in the workspace",
        args: &[
            ("path", r#"{"type":"string"}"#),
            ("content", r#"{"type":"string"}"#),
        ],
    },
    ToolSpec {
        name: "list_files",
        help: "list a folder of the workspace (\".\" is the workspace itself)",
        args: &[("path", r#"{"type":"string"}"#)],
    },
    ToolSpec {
        name: "remember",
        help: "save a fact about the user or their work, to recall in later conversations",
        args: &[("text", r#"{"type":"string"}"#)],
    },
    ToolSpec {
        name: "recall",
        help: "search saved memories and past conversations",
        args: &[("query", r#"{"type":"string"}"#)],
    },
    ToolSpec {
        name: "remind",
        help: "set a reminder: schedule is \"in 10m\", \"every 2h\" or \"at 07:30\"",
        args: &[
            (
                "schedule",
                r#"{"type":"string","pattern":"^((in|every) [1-9][0-9]{0,3}[smhd]|at [0-2][0-9]:[0-5][0-9])$"}"#,
            ),
            ("text", r#"{"type":"string"}"#),
        ],
    },
    ToolSpec {
        name: "web_fetch",
        help: "fetch a public web page (http/https) and read its text",
        args: &[("url", r#"{"type":"string"}"#)],
    },
];

/// The spec of tool `name`.
pub fn tool(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

/// One model step's decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The final answer to the user.
    Answer(String),
    /// A tool call.
    Call {
        /// Tool name.
        tool: String,
        /// Its arguments (an object).
        args: Value,
    },
}

/// The JSON schema a step must follow: a call of one of `tools`, or (when `answer`) an answer.
pub fn schema(tools: &[&ToolSpec], answer: bool) -> Value {
    let mut alts: Vec<Value> = Vec::new();
    if answer {
        alts.push(json!({
            "type": "object",
            "properties": { "answer": { "type": "string" } },
            "required": ["answer"],
            "additionalProperties": false,
        }));
    }
    for t in tools {
        let mut props = serde_json::Map::new();
        for (name, s) in t.args {
            props.insert(
                name.to_string(),
                serde_json::from_str(s).expect("tool schemas are valid JSON"),
            );
        }
        let required: Vec<&str> = t.args.iter().map(|a| a.0).collect();
        alts.push(json!({
            "type": "object",
            "properties": {
                "tool": { "const": t.name },
                "args": { "type": "object", "properties": props, "required": required, "additionalProperties": false },
            },
            "required": ["tool", "args"],
            "additionalProperties": false,
        }));
    }
    if alts.len() == 1 {
        alts.pop().unwrap()
    } else {
        json!({ "oneOf": alts })
    }
}

/// The system prompt: who the agent is, its tools, the JSON format, and what it remembers.
pub fn system_prompt(tools: &[&ToolSpec], recalled: &[String], now: &str) -> String {
    let mut s = String::from(
        "You are a helpful personal assistant running on the user's own computer. \
Reply with exactly one JSON object and nothing else:\n\
{\"answer\": \"...\"} to answer the user, or\n\
{\"tool\": \"NAME\", \"args\": {...}} to use a tool first; you will then see its result.\n\
Use a tool only when it is needed. Never invent tool results.\nTools:\n",
    );
    for t in tools {
        let args: Vec<&str> = t.args.iter().map(|a| a.0).collect();
        s.push_str(&format!(
            "- {} {{{}}}: {}\n",
            t.name,
            args.join(", "),
            t.help
        ));
    }
    s.push_str(&format!("The time is {now}.\n"));
    if !recalled.is_empty() {
        s.push_str("What you remember that may be relevant:\n");
        for r in recalled {
            s.push_str(&format!("- {r}\n"));
        }
    }
    s
}

/// Parses a model step. Tolerates text around the object (a model without a grammar, e.g. a
/// fallback endpoint that ignores `response_format`).
pub fn parse(text: &str) -> Result<Action> {
    let t = text.trim();
    let v: Value = match serde_json::from_str(t) {
        Ok(v) => v,
        Err(e) => {
            let (a, b) = (t.find('{'), t.rfind('}'));
            match (a, b) {
                (Some(a), Some(b)) if a < b => serde_json::from_str(&t[a..=b])
                    .with_context(|| format!("the model's reply is not JSON ({e})"))?,
                // Plain text from an endpoint without grammars: take it as the answer.
                _ if !t.is_empty() && !t.starts_with('{') => return Ok(Action::Answer(t.into())),
                _ => bail!("the model's reply is not JSON ({e}): {t:?}"),
            }
        }
    };
    if let Some(a) = v.get("answer") {
        return Ok(Action::Answer(match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    let Some(name) = v.get("tool").and_then(Value::as_str) else {
        bail!("the reply has neither \"answer\" nor \"tool\": {t}");
    };
    let Some(spec) = tool(name) else {
        bail!("there is no tool {name:?}");
    };
    let args = v.get("args").cloned().unwrap_or(json!({}));
    for (a, _) in spec.args {
        if !args.get(*a).is_some_and(Value::is_string) {
            bail!("tool {name} needs the string argument {a:?}");
        }
    }
    Ok(Action::Call {
        tool: name.to_string(),
        args,
    })
}

/// Picks the answer text out of a streamed action as it arrives, so the terminal can show the
/// answer token by token while the JSON around it stays hidden.
#[derive(Default)]
pub struct AnswerStream {
    raw: String,
    /// Byte offset in `raw` where the answer string's content starts, once known.
    start: Option<usize>,
    /// Bytes of `raw` already decoded.
    done: usize,
    finished: bool,
}

impl AnswerStream {
    /// Feeds a chunk; returns newly decoded answer text (empty if none yet, or not an answer).
    pub fn feed(&mut self, chunk: &str) -> String {
        self.raw.push_str(chunk);
        if self.finished {
            return String::new();
        }
        if self.start.is_none() {
            let t = self.raw.trim_start();
            let lead = self.raw.len() - t.len();
            let Some(rest) = t.strip_prefix('{') else {
                return String::new();
            };
            let r = rest.trim_start();
            if !r.starts_with("\"answer\"") {
                return String::new();
            }
            let after_key = &r["\"answer\"".len()..];
            let a = after_key.trim_start();
            let Some(a) = a.strip_prefix(':') else {
                return String::new();
            };
            let a2 = a.trim_start();
            if !a2.starts_with('"') {
                return String::new();
            }
            let start = self.raw.len() - a2.len() + 1;
            debug_assert!(start > lead);
            self.start = Some(start);
            self.done = start;
        }
        let mut out = String::new();
        let bytes = &self.raw[self.done..];
        let mut chars = bytes.char_indices().peekable();
        let mut consumed = 0;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.finished = true;
                    consumed = i + 1;
                    break;
                }
                '\\' => {
                    let rest = &bytes[i..];
                    // Wait for the whole escape before decoding it.
                    let need = if rest.starts_with("\\u") { 6 } else { 2 };
                    if rest.len() < need {
                        break;
                    }
                    let esc = &rest[..need];
                    if let Ok(Value::String(s)) =
                        serde_json::from_str::<Value>(&format!("\"{esc}\""))
                    {
                        out.push_str(&s);
                    }
                    for _ in 1..esc.chars().count() {
                        chars.next();
                    }
                    consumed = i + need;
                }
                c => {
                    out.push(c);
                    consumed = i + c.len_utf8();
                }
            }
        }
        self.done += consumed;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_calls_and_refuses_bad_ones() {
        assert_eq!(
            parse(r#"{"answer": "hi"}"#).unwrap(),
            Action::Answer("hi".into())
        );
        let a =
            parse("{\n \"tool\": \"write_file\", \"args\": {\"path\": \"a\", \"content\": \"b\"}}")
                .unwrap();
        assert!(matches!(a, Action::Call { ref tool, .. } if tool == "write_file"));
        assert!(parse(r#"{"tool": "rm", "args": {}}"#).is_err());
        assert!(parse(r#"{"tool": "shell", "args": {"cmd": "ls"}}"#).is_err());
        assert!(parse(r#"{"tool": "shell", "args": {"command": "ls"#).is_err());
        // Text around the object, and plain text, from endpoints without grammars.
        let a = parse("Sure: {\"answer\": \"ok\"} done").unwrap();
        assert_eq!(a, Action::Answer("ok".into()));
        assert_eq!(
            parse("Plain words.").unwrap(),
            Action::Answer("Plain words.".into())
        );
    }

    #[test]
    fn schema_offers_only_the_given_tools() {
        let s = schema(&[tool("remember").unwrap()], false);
        assert_eq!(s["properties"]["tool"]["const"], "remember");
        assert_eq!(s["properties"]["args"]["required"], json!(["text"]));
        let s = schema(&[tool("shell").unwrap(), tool("recall").unwrap()], true);
        assert_eq!(s["oneOf"].as_array().unwrap().len(), 3);
        assert_eq!(schema(&[], true)["required"], json!(["answer"]));
    }

    #[test]
    fn answer_stream_decodes_across_chunk_boundaries() {
        let text = "{\n  \"answer\": \"Hi \\\"you\\\"\\n caf\\u00e9 ok\"\n}";
        for size in 1..8 {
            let mut s = AnswerStream::default();
            let mut out = String::new();
            let chars: Vec<char> = text.chars().collect();
            for c in chars.chunks(size) {
                out.push_str(&s.feed(&c.iter().collect::<String>()));
            }
            assert_eq!(out, "Hi \"you\"\n café ok", "chunk size {size}");
        }
        let mut s = AnswerStream::default();
        assert_eq!(
            s.feed("{\"tool\": \"shell\", \"args\": {\"command\": \"ls\"}}"),
            ""
        );
    }
}
