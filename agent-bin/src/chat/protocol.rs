//! What the model may say: one JSON action per step, enforced by llama-server's grammar.
//!
//! Small local models call tools unreliably through their chat templates, so the agent does not
//! use them. Every model step is constrained to be either `{"answer": "…"}` or
//! `{"tool": "NAME", "args": {…}}` with exactly that tool's arguments. For llama-server the
//! constraint is a GBNF grammar written here: fixed key order and single spaces, because the
//! grammar llama-server derives from a JSON schema lets whitespace run free and a small model
//! fills it with tabs until `max_tokens`. Other endpoints (the fallback) get the same shape as a
//! JSON schema in `response_format`. Either way the output parses; what is left to check is what
//! the arguments mean, which the tools do.
//!
//! The system prompt is followed by a few example exchanges (one per kind of tool): a 270M
//! model imitates examples far better than it follows descriptions.
//!
//! The tools of MCP servers (`mcp/`) come with JSON schemas; their arguments are typed here
//! ([`Arg`]: integers, numbers, booleans, enums, any JSON, optional ones), so that the grammar
//! admits exactly what the server will accept and the parser refuses the rest.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// What an argument may hold. The built-in tools take strings; MCP tools' arguments follow
/// their JSON schemas (`mcp/schema.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Any string.
    Text,
    /// A reminder schedule the model can write: `in 10m`, `every 2h`, `at 07:30`.
    Schedule,
    /// A JSON integer.
    Integer,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Bool,
    /// One of these strings (a schema's `enum`).
    OneOf(&'static [&'static str]),
    /// Any JSON value: objects, arrays, and schemas this agent does not model more closely.
    Json,
    /// An argument the call may leave out (a property its schema does not require).
    Optional(&'static Arg),
}

impl Arg {
    /// Whether a call must give it.
    pub fn required(&self) -> bool {
        !matches!(self, Arg::Optional(_))
    }

    /// What it holds, optional or not.
    fn value(&self) -> &Arg {
        match self {
            Arg::Optional(a) => a.value(),
            a => a,
        }
    }

    /// Whether `v` is a value of this kind.
    pub fn accepts(&self, v: &Value) -> bool {
        match self.value() {
            Arg::Text | Arg::Schedule => v.is_string(),
            Arg::Integer => v.is_i64() || v.is_u64(),
            Arg::Number => v.is_number(),
            Arg::Bool => v.is_boolean(),
            Arg::OneOf(options) => v.as_str().is_some_and(|s| options.contains(&s)),
            Arg::Json | Arg::Optional(_) => true,
        }
    }

    /// The kind in words, for errors.
    fn describe(&self) -> String {
        match self.value() {
            Arg::Text | Arg::Schedule => "a string".into(),
            Arg::Integer => "an integer".into(),
            Arg::Number => "a number".into(),
            Arg::Bool => "true or false".into(),
            Arg::OneOf(options) => format!("one of {options:?}"),
            Arg::Json | Arg::Optional(_) => "a JSON value".into(),
        }
    }

    /// The GBNF for its value (rules in [`GBNF_STRING`]).
    fn gbnf(&self) -> String {
        match self.value() {
            Arg::Text => "str".into(),
            Arg::Schedule => "sched".into(),
            Arg::Integer => "int".into(),
            Arg::Number => "num".into(),
            Arg::Bool => "bool".into(),
            Arg::OneOf(options) => {
                let alts: Vec<String> = options
                    .iter()
                    .map(|o| gbnf_lit(&Value::from(*o).to_string()))
                    .collect();
                format!("({})", alts.join(" | "))
            }
            Arg::Json | Arg::Optional(_) => "value".into(),
        }
    }

    /// The JSON schema for its value.
    fn schema(&self) -> Value {
        match self.value() {
            Arg::Text => json!({"type": "string"}),
            Arg::Schedule => json!({"type": "string",
                "pattern": "^((in|every) [1-9][0-9]{0,3}[smhd]|at [0-2][0-9]:[0-5][0-9])$"}),
            Arg::Integer => json!({"type": "integer"}),
            Arg::Number => json!({"type": "number"}),
            Arg::Bool => json!({"type": "boolean"}),
            Arg::OneOf(options) => json!({"type": "string", "enum": options}),
            Arg::Json | Arg::Optional(_) => json!({}),
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// Its name in actions.
    pub name: &'static str,
    /// What it does, for the system prompt.
    pub help: &'static str,
    /// Argument names and kinds, in the order the model writes them.
    pub args: &'static [(&'static str, Arg)],
}

/// Every built-in tool; `web_fetch` is offered only when enabled, `shell` only when enabled.
pub const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "shell",
        help: "run a shell command in the workspace folder and see its output",
        args: &[("command", Arg::Text)],
    },
    ToolSpec {
        name: "read_file",
        help: "read a text file in the workspace",
        args: &[("path", Arg::Text)],
    },
    ToolSpec {
        name: "write_file",
        help: "create or replace a text file in the workspace",
        args: &[("path", Arg::Text), ("content", Arg::Text)],
    },
    ToolSpec {
        name: "list_files",
        help: "list a folder of the workspace (\".\" is the workspace itself)",
        args: &[("path", Arg::Text)],
    },
    ToolSpec {
        name: "remember",
        help: "save a fact about the user or their work, to recall in later conversations",
        args: &[("text", Arg::Text)],
    },
    ToolSpec {
        name: "recall",
        help: "search saved memories and past conversations",
        args: &[("query", Arg::Text)],
    },
    ToolSpec {
        name: "remind",
        help: "set a reminder; schedule is like \"in 10m\", \"every 2h\" or \"at 07:30\"",
        args: &[("schedule", Arg::Schedule), ("text", Arg::Text)],
    },
    ToolSpec {
        name: "web_fetch",
        help: "fetch a public web page (http/https) and read its text",
        args: &[("url", Arg::Text)],
    },
];

/// Example exchanges shown before the conversation: (user, the action the model should write,
/// the tool it needs, if any).
const EXAMPLES: &[(&str, &str, Option<&str>)] = &[
    (
        "Hi there!",
        r#"{"answer": "Hello! What can I do for you?"}"#,
        None,
    ),
    (
        "Make a file todo.md that says buy milk.",
        r#"{"tool": "write_file", "args": {"path": "todo.md", "content": "buy milk"}}"#,
        Some("write_file"),
    ),
    (
        "Remember that my cat is called Tom.",
        r#"{"tool": "remember", "args": {"text": "My cat is called Tom."}}"#,
        Some("remember"),
    ),
    (
        "What is my cat called?",
        r#"{"tool": "recall", "args": {"query": "cat name"}}"#,
        Some("recall"),
    ),
    (
        "Run df -h",
        r#"{"tool": "shell", "args": {"command": "df -h"}}"#,
        Some("shell"),
    ),
    (
        "Remind me in 20m to call Anna.",
        r#"{"tool": "remind", "args": {"schedule": "in 20m", "text": "call Anna"}}"#,
        Some("remind"),
    ),
    (
        "What is the capital of Italy?",
        r#"{"answer": "Rome."}"#,
        None,
    ),
];

/// The example exchanges for the offered tools, as chat messages.
pub fn examples(tools: &[&ToolSpec]) -> Vec<Value> {
    EXAMPLES
        .iter()
        .filter(|(_, _, t)| t.map_or(true, |t| tools.iter().any(|s| s.name == t)))
        .flat_map(|(u, a, _)| {
            [
                json!({"role": "user", "content": u}),
                json!({"role": "assistant", "content": a}),
            ]
        })
        .collect()
}

/// What a step may produce, in the two forms endpoints understand.
#[derive(Clone, Debug)]
pub struct Constraint {
    /// GBNF for llama-server's `grammar`.
    pub grammar: String,
    /// JSON schema for `response_format` (other OpenAI-compatible endpoints).
    pub schema: Value,
}

/// A GBNF string literal holding `s`.
fn gbnf_lit(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

const GBNF_STRING: &str = r#"str ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
sched ::= "\"" (("in " | "every ") [1-9] [0-9]{0,3} [smhd] | "at " [0-2] [0-9] ":" [0-5] [0-9]) "\""
int ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
num ::= int ("." [0-9]{1,15})?
bool ::= "true" | "false"
value ::= str | num | bool | "null" | obj | arr
obj ::= "{" (str ": " value (", " str ": " value)*)? "}"
arr ::= "[" (value (", " value)*)? "]"
"#;

/// The constraint for a step: a call of one of `tools`, or (when `answer`) an answer.
pub fn constraint(tools: &[&ToolSpec], answer: bool) -> Constraint {
    let mut alts = Vec::new();
    let mut rules = Vec::new();
    let mut schemas: Vec<Value> = Vec::new();
    if answer {
        alts.push("answer".to_string());
        rules.push(format!(
            "answer ::= {} str {}",
            gbnf_lit(r#"{"answer": "#),
            gbnf_lit("}")
        ));
        schemas.push(json!({
            "type": "object",
            "properties": { "answer": { "type": "string" } },
            "required": ["answer"],
            "additionalProperties": false,
        }));
    }
    for t in tools {
        let rule = rule_name(t.name, &alts);
        let mut parts = vec![gbnf_lit(&format!(r#"{{"tool": "{}", "args": {{"#, t.name))];
        parts.extend(args_gbnf(t.args));
        parts.push(gbnf_lit("}}"));
        rules.push(format!("{rule} ::= {}", parts.join(" ")));
        alts.push(rule);
        let props = t
            .args
            .iter()
            .map(|(name, kind)| (name.to_string(), kind.schema()))
            .collect();
        let required: Vec<&str> = t
            .args
            .iter()
            .filter(|a| a.1.required())
            .map(|a| a.0)
            .collect();
        schemas.push(call_schema(t.name, props, &required));
    }
    let schema = if schemas.len() == 1 {
        schemas.pop().unwrap()
    } else {
        json!({ "oneOf": schemas })
    };
    Constraint {
        grammar: format!(
            "root ::= {}\n{}\n{GBNF_STRING}",
            alts.join(" | "),
            rules.join("\n")
        ),
        schema,
    }
}

/// A GBNF rule name for tool `name` (letters, digits and dashes only), unlike any in `taken`.
fn rule_name(name: &str, taken: &[String]) -> String {
    let base: String = format!("call-{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut rule = base.clone();
    let mut n = 2;
    while taken.contains(&rule) {
        rule = format!("{base}-{n}");
        n += 1;
    }
    rule
}

/// The GBNF of a call's arguments, in a fixed order (and key order is all a small model can
/// get wrong in a grammar): the required ones as listed, then each optional one, or not.
fn args_gbnf(args: &[(&str, Arg)]) -> Vec<String> {
    let field = |sep: &str, name: &str, kind: &Arg| {
        format!(
            "{} {}",
            gbnf_lit(&format!(r#"{sep}"{name}": "#)),
            kind.gbnf()
        )
    };
    let (required, optional): (Vec<_>, Vec<_>) = args.iter().partition(|a| a.1.required());
    let mut parts: Vec<String> = required
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| field(if i == 0 { "" } else { ", " }, name, kind))
        .collect();
    if !required.is_empty() {
        parts.extend(
            optional
                .iter()
                .map(|(name, kind)| format!("({})?", field(", ", name, kind))),
        );
    } else if !optional.is_empty() {
        // No required argument to follow: whichever optional one comes first has no comma.
        let starts: Vec<String> = (0..optional.len())
            .map(|first| {
                let mut alt = vec![field("", optional[first].0, &optional[first].1)];
                alt.extend(
                    optional[first + 1..]
                        .iter()
                        .map(|(name, kind)| format!("({})?", field(", ", name, kind))),
                );
                alt.join(" ")
            })
            .collect();
        parts.push(format!("({})?", starts.join(" | ")));
    }
    parts
}

/// Checks a call's arguments against its tool: every required one given, each of its kind.
pub fn check_args(spec: &ToolSpec, args: &Value) -> Result<()> {
    let Some(given) = args.as_object() else {
        bail!("the arguments of {} must be a JSON object", spec.name);
    };
    for (name, kind) in spec.args {
        match given.get(*name) {
            None if !kind.required() => {}
            None => bail!("tool {} needs the argument {name:?}", spec.name),
            Some(v) if !kind.accepts(v) => bail!(
                "argument {name:?} of {} must be {}, not {v}",
                spec.name,
                kind.describe()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

fn call_schema(tool: &str, props: serde_json::Map<String, Value>, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "tool": { "const": tool },
            "args": { "type": "object", "properties": props, "required": required, "additionalProperties": false },
        },
        "required": ["tool", "args"],
        "additionalProperties": false,
    })
}

/// A constraint that admits one call only: `tool` with exactly `args`. For scripts and tests
/// that must exercise a tool deterministically through the real server and parser.
pub fn pinned(tool: &ToolSpec, args: &Value) -> Constraint {
    let mut text = format!(r#"{{"tool": "{}", "args": {{"#, tool.name);
    let mut props = serde_json::Map::new();
    let given: Vec<&str> = tool
        .args
        .iter()
        .map(|a| a.0)
        .filter(|name| args.get(*name).is_some())
        .collect();
    for (i, name) in given.iter().enumerate() {
        let v = &args[*name];
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("\"{name}\": {v}"));
        props.insert(name.to_string(), json!({ "const": v }));
    }
    text.push_str("}}");
    let required = given;
    Constraint {
        grammar: format!("root ::= {}\n", gbnf_lit(&text)),
        schema: call_schema(tool.name, props, &required),
    }
}

/// The system prompt: who the agent is, its tools, the time, and what it remembers.
///
/// The conversation so far (`history`: role, text) is told here as plain lines rather than
/// replayed as chat turns: a small model copies its own previous answers, word for word, when
/// they come back to it as its turns.
pub fn system_prompt(
    tools: &[&ToolSpec],
    recalled: &[String],
    history: &[(String, String)],
    now: &str,
) -> String {
    let mut s = String::from(
        "You are a helpful personal assistant running on the user's own computer. You can use tools.\n\
To use a tool, reply with a JSON object naming the tool and its arguments. To talk to the user, \
reply with a JSON object whose \"answer\" is your message.\nTools:\n",
    );
    for t in tools {
        let args: Vec<String> = t
            .args
            .iter()
            .map(|(name, kind)| match kind.required() {
                true => name.to_string(),
                false => format!("{name}?"),
            })
            .collect();
        s.push_str(&format!("- {} ({}): {}\n", t.name, args.join(", "), t.help));
    }
    s.push_str(
        "Use a tool only when the user asks for something a tool does. Never invent tool results.\n",
    );
    s.push_str(&format!("The time is {now}.\n"));
    if !recalled.is_empty() {
        s.push_str("What you remember that may be relevant:\n");
        for r in recalled {
            s.push_str(&format!("- {r}\n"));
        }
    }
    if !history.is_empty() {
        s.push_str("The conversation so far:\n");
        for (role, text) in history {
            let who = if role == "user" { "User" } else { "You" };
            s.push_str(&format!("{who}: {}\n", text.replace('\n', " ")));
        }
    }
    s
}

/// The message that shows the model a tool's result. Terse on purpose: a small model parrots
/// any instruction written here into its answer.
pub fn tool_result_message(tool: &str, text: &str) -> String {
    format!("({tool} result: {})", text.trim_end())
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

/// Parses a model step that may call one of `known`. Tolerates text around the object (a
/// model without a grammar, e.g. a fallback endpoint that ignores `response_format`).
pub fn parse(text: &str, known: &[&ToolSpec]) -> Result<Action> {
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
            Value::String(s) => strip_markers(s),
            other => other.to_string(),
        }));
    }
    let Some(name) = v.get("tool").and_then(Value::as_str) else {
        bail!("the reply has neither \"answer\" nor \"tool\": {t}");
    };
    let Some(spec) = known.iter().find(|t| t.name == name) else {
        bail!("there is no tool {name:?}");
    };
    let mut args = v.get("args").cloned().unwrap_or(json!({}));
    // Small models sometimes spell out an end-of-turn marker inside a string.
    if let Some(o) = args.as_object_mut() {
        for v in o.values_mut() {
            if let Value::String(s) = v {
                *s = strip_markers(s);
            }
        }
    }
    check_args(spec, &args)?;
    Ok(Action::Call {
        tool: name.to_string(),
        args,
    })
}

/// `s` without chat-template markers (`<|im_end|>`, `<end_of_turn>`, …) a model wrote as text.
pub fn strip_markers(s: &str) -> String {
    strip_markers_keep_space(s).trim().to_string()
}

const MARKERS: &[&str] = &[
    "<|im_end|>",
    "<|im_start|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|eot_id|>",
    "<|endoftext|>",
    "</s>",
];

/// Where a generation that has started to loop should be cut: when the text ends with the same
/// run of 16–256 bytes three times over, the byte offset after its first copy.
pub fn loop_cut(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let n = b.len();
    for l in 16..=256.min(n / 3) {
        if b[n - l..] == b[n - 2 * l..n - l] && b[n - 2 * l..n - l] == b[n - 3 * l..n - 2 * l] {
            let cut = n - 2 * l;
            if text.is_char_boundary(cut) {
                return Some(cut);
            }
        }
    }
    None
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
    /// Decoded text held back because it may be the start of a marker (`<|im_end|>`).
    held: String,
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
        // Markers spelled out as text are dropped; a `<` that may begin one waits for more.
        let mut out = strip_markers_keep_space(&format!("{}{out}", std::mem::take(&mut self.held)));
        if !self.finished {
            if let Some(i) = out
                .rfind('<')
                .filter(|&i| !out[i..].contains('>') && out.len() - i < 16)
            {
                self.held = out.split_off(i);
            }
        }
        out
    }
}

/// [`strip_markers`] without trimming (a streamed piece keeps its spaces).
fn strip_markers_keep_space(s: &str) -> String {
    let mut out = s.to_string();
    for m in MARKERS {
        out = out.replace(m, "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec of built-in tool `name`.
    fn tool(name: &str) -> Option<&'static ToolSpec> {
        TOOLS.iter().find(|t| t.name == name)
    }

    /// Parses a step that may call the built-in tools.
    fn parse(text: &str) -> Result<Action> {
        let builtin: Vec<&ToolSpec> = TOOLS.iter().collect();
        super::parse(text, &builtin)
    }

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
    fn constraints_offer_only_the_given_tools() {
        let c = constraint(&[tool("remember").unwrap()], false);
        assert_eq!(c.schema["properties"]["tool"]["const"], "remember");
        assert_eq!(c.schema["properties"]["args"]["required"], json!(["text"]));
        assert!(
            c.grammar.starts_with("root ::= call-remember\n"),
            "{}",
            c.grammar
        );
        assert!(
            c.grammar.contains(
                r#"call-remember ::= "{\"tool\": \"remember\", \"args\": {" "\"text\": " str "}}""#
            ),
            "{}",
            c.grammar
        );
        let c = constraint(&[tool("shell").unwrap(), tool("remind").unwrap()], true);
        assert_eq!(c.schema["oneOf"].as_array().unwrap().len(), 3);
        assert!(
            c.grammar
                .starts_with("root ::= answer | call-shell | call-remind\n"),
            "{}",
            c.grammar
        );
        assert!(
            c.grammar
                .contains(r#""\"schedule\": " sched ", \"text\": " str"#),
            "{}",
            c.grammar
        );
        assert_eq!(constraint(&[], true).schema["required"], json!(["answer"]));
        let p = pinned(tool("shell").unwrap(), &json!({"command": "echo \"a\\b\""}));
        let want =
            r#"root ::= "{\"tool\": \"shell\", \"args\": {\"command\": \"echo \\\"a\\\\b\\\"\"}}""#;
        assert_eq!(p.grammar, format!("{want}\n"));
        assert_eq!(
            p.schema["properties"]["args"]["properties"]["command"]["const"],
            "echo \"a\\b\""
        );
    }

    /// An MCP-like tool with typed, optional arguments.
    const TYPED: ToolSpec = ToolSpec {
        name: "notes.search",
        help: "search",
        args: &[
            ("query", Arg::Text),
            ("limit", Arg::Optional(&Arg::Integer)),
            ("order", Arg::Optional(&Arg::OneOf(&["new", "old"]))),
        ],
    };

    #[test]
    fn typed_and_optional_arguments_in_grammar_schema_and_parser() {
        let c = constraint(&[&TYPED], false);
        assert!(
            c.grammar.starts_with("root ::= call-notes-search\n"),
            "{}",
            c.grammar
        );
        assert!(
            c.grammar.contains(
                r#""\"query\": " str (", \"limit\": " int)? (", \"order\": " ("\"new\"" | "\"old\""))? "}}""#
            ),
            "{}",
            c.grammar
        );
        let args = &c.schema["properties"]["args"];
        assert_eq!(args["required"], json!(["query"]));
        assert_eq!(args["properties"]["limit"], json!({"type": "integer"}));
        assert_eq!(args["properties"]["order"]["enum"], json!(["new", "old"]));

        let known = [&TYPED];
        let a = super::parse(
            r#"{"tool": "notes.search", "args": {"query": "tax", "limit": 3}}"#,
            &known,
        );
        assert!(matches!(a, Ok(Action::Call { ref args, .. }) if args["limit"] == 3));
        for (bad, why) in [
            (
                r#"{"tool": "notes.search", "args": {"limit": 3}}"#,
                "needs the argument \"query\"",
            ),
            (
                r#"{"tool": "notes.search", "args": {"query": "a", "limit": "3"}}"#,
                "must be an integer",
            ),
            (
                r#"{"tool": "notes.search", "args": {"query": "a", "order": "random"}}"#,
                "one of [\"new\", \"old\"]",
            ),
        ] {
            let e = super::parse(bad, &known).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Only optional arguments: whichever comes first has no comma, and none is fine.
        const ALL_OPTIONAL: ToolSpec = ToolSpec {
            name: "x.list",
            help: "list",
            args: &[
                ("a", Arg::Optional(&Arg::Bool)),
                ("b", Arg::Optional(&Arg::Json)),
            ],
        };
        let g = constraint(&[&ALL_OPTIONAL], false).grammar;
        assert!(
            g.contains(r#"call-x-list ::= "{\"tool\": \"x.list\", \"args\": {" ("\"a\": " bool (", \"b\": " value)? | "\"b\": " value)? "}}""#),
            "{g}"
        );
        assert!(system_prompt(&[&TYPED], &[], &[], "now")
            .contains("- notes.search (query, limit?, order?): search"));
        let p = pinned(&TYPED, &json!({"query": "tax"}));
        assert_eq!(p.grammar, "root ::= \"{\\\"tool\\\": \\\"notes.search\\\", \\\"args\\\": {\\\"query\\\": \\\"tax\\\"}}\"\n");
    }

    #[test]
    fn examples_follow_the_offered_tools() {
        let all: Vec<&ToolSpec> = TOOLS.iter().collect();
        assert_eq!(examples(&all).len(), 14);
        let no_shell: Vec<&ToolSpec> = TOOLS.iter().filter(|t| t.name != "shell").collect();
        let ex = examples(&no_shell);
        assert_eq!(ex.len(), 12);
        assert!(ex
            .iter()
            .all(|m| !m["content"].as_str().unwrap().contains("\"shell\"")));
        // Every example action parses.
        for m in ex.iter().filter(|m| m["role"] == "assistant") {
            parse(m["content"].as_str().unwrap()).unwrap();
        }
    }

    #[test]
    fn loops_are_cut_after_their_first_copy() {
        let phrase = "I'm sorry, I can't help. ";
        let text = format!("{{\"answer\": \"Paris. {}", phrase.repeat(3));
        let cut = loop_cut(&text).unwrap();
        assert_eq!(&text[..cut], format!("{{\"answer\": \"Paris. {phrase}"));
        assert_eq!(
            loop_cut("{\"answer\": \"a normal sentence that does not repeat"),
            None
        );
        assert_eq!(loop_cut("aaa"), None);
        assert_eq!(strip_markers("rm -rf /<|im_end|>"), "rm -rf /");
        let a = parse(r#"{"answer": "4711.<|im_end|>"}"#).unwrap();
        assert_eq!(a, Action::Answer("4711.".into()));
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
        // A marker split over chunks never reaches the screen; a lone "<" does.
        let mut s = AnswerStream::default();
        let shown: String = ["{\"answer\": \"4711 <", "|im_", "end|> a < b", "\"}"]
            .iter()
            .map(|c| s.feed(c))
            .collect();
        assert_eq!(shown, "4711  a < b");
    }
}
