//! An MCP tool as the agent's protocol sees it: its JSON `inputSchema` turned into the typed
//! argument list that the grammar, the JSON schema for other endpoints and the parser share.

use serde_json::Value;

use super::client::ListedTool;
use crate::chat::protocol::{Arg, ToolSpec};

/// Characters of a tool's description kept for the system prompt (a small model's context is
/// small, and a long description is mostly lost on it anyway).
const HELP_CHARS: usize = 300;

/// The spec of `tool` of server `server`, named `server.tool`, with the arguments its schema
/// does not require when `optional_args`.
///
/// Specs are built once per chat, when the servers start, and leaked: built-in and MCP tools
/// then share one `&'static ToolSpec` type everywhere, for a few KB per process.
pub fn tool_spec(server: &str, tool: &ListedTool, optional_args: bool) -> &'static ToolSpec {
    let schema = &tool.input_schema;
    let props = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // Required arguments in the schema's order for them, then the optional ones (in the
    // properties' order, which serde_json keeps sorted).
    let mut args: Vec<(&'static str, Arg)> = Vec::new();
    for name in &required {
        let kind = props.and_then(|p| p.get(*name)).map_or(Arg::Json, arg_kind);
        args.push((leak(name), kind));
    }
    for (name, prop) in props.into_iter().flatten().filter(|_| optional_args) {
        if !required.contains(&name.as_str()) {
            args.push((
                leak(name),
                Arg::Optional(Box::leak(Box::new(arg_kind(prop)))),
            ));
        }
    }
    Box::leak(Box::new(ToolSpec {
        name: leak(&format!("{server}.{}", tool.name)),
        help: leak(&help(&tool.description)),
        args: Box::leak(args.into_boxed_slice()),
    }))
}

/// The kind of one property's value.
fn arg_kind(prop: &Value) -> Arg {
    if let Some(options) = prop.get("enum").and_then(Value::as_array) {
        let strings: Vec<&'static str> =
            options.iter().filter_map(Value::as_str).map(leak).collect();
        if strings.len() == options.len() && !strings.is_empty() {
            return Arg::OneOf(Box::leak(strings.into_boxed_slice()));
        }
        return Arg::Json;
    }
    match prop.get("type").and_then(Value::as_str) {
        Some("string") => Arg::Text,
        Some("integer") => Arg::Integer,
        Some("number") => Arg::Number,
        Some("boolean") => Arg::Bool,
        // Objects, arrays, unions (`anyOf`, `["string", "null"]`), references: any JSON value,
        // checked by the server.
        _ => Arg::Json,
    }
}

fn help(description: &str) -> String {
    // The first paragraph, on one line.
    let first = description.trim().split("\n\n").next().unwrap_or("");
    let one_line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut h: String = one_line.chars().take(HELP_CHARS).collect();
    if h.len() < one_line.len() {
        h.push('…');
    }
    if h.is_empty() {
        h = "(no description)".into();
    }
    h
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_become_typed_arguments_required_first() {
        let t = ListedTool {
            name: "search".into(),
            description: "Search the notes.\n\n    Args: query — what to look for".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer"},
                    "query": {"type": "string"},
                    "exact": {"type": "boolean"},
                    "order": {"type": "string", "enum": ["new", "old"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "score": {"type": "number"},
                },
                "required": ["query", "score"],
            }),
        };
        let s = tool_spec("notes", &t, false);
        assert_eq!(
            s.args.to_vec(),
            [("query", Arg::Text), ("score", Arg::Number)]
        );
        let s = tool_spec("notes", &t, true);
        assert_eq!(s.name, "notes.search");
        assert_eq!(s.help, "Search the notes.");
        let args: Vec<(&str, Arg)> = s.args.to_vec();
        assert_eq!(args[0], ("query", Arg::Text));
        assert_eq!(args[1], ("score", Arg::Number));
        assert_eq!(args[2], ("exact", Arg::Optional(&Arg::Bool)));
        assert_eq!(args[3], ("limit", Arg::Optional(&Arg::Integer)));
        assert_eq!(
            args[4],
            ("order", Arg::Optional(&Arg::OneOf(&["new", "old"])))
        );
        assert_eq!(args[5], ("tags", Arg::Optional(&Arg::Json)));
    }
}
