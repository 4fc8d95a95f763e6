//! The `[chat]` tables of the configuration file, with the defaults a first run needs.
//!
//! Every key has a default, so `tbq-agent chat` works with no `[chat]` table at all against a
//! llama-server on 127.0.0.1:8080. Unknown keys are refused (a typo in a safety setting must not
//! pass silently).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::shell::SandboxMode;

/// `[chat]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// The local llama-server (base URL, without /v1). Unset: the profile's host and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The folder the tools work in (files, shell's working directory) and where the memory
    /// database lives (`.tbq-agent/memory.sqlite`). `~` is expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    /// Sampling temperature (0: greedy, reproducible).
    pub temperature: f64,
    /// Sampling seed (llama-server).
    pub seed: u64,
    /// Tokens one model step may generate.
    pub max_tokens: u32,
    /// Model steps (tool calls + the answer) one turn may take.
    pub max_steps: u32,
    /// Whether the model may call another tool after seeing a tool's result (off: one tool
    /// call, then the answer). Small models loop through tools when allowed; turn it on for a
    /// model that plans.
    pub chain_tools: bool,
    /// Earlier user/assistant exchanges of this conversation told to the model with each turn.
    /// 0 by default: Gemma 270M copies earlier answers instead of answering; raise it for a
    /// larger model. Memories and past conversations are recalled either way.
    pub history_turns: usize,
    /// Memories recalled by full text (and vectors) into each turn's context.
    pub recall_k: usize,
    /// Seconds to wait for the local server's `/health` (at start and after a failure).
    pub health_timeout: u64,
    /// Times a turn is retried after the local server failed mid-turn (and came back).
    pub retries: u32,
    /// Seconds one model request may take.
    pub request_timeout: u64,
    /// An embedding endpoint (a llama-server started with `--embeddings`), for vector recall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_url: Option<String>,
    /// `[chat.shell]`.
    pub shell: ShellConfig,
    /// `[chat.web]`.
    pub web: WebConfig,
    /// `[chat.fallback]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
    /// `[chat.http]`.
    pub http: HttpConfig,
    /// `[chat.mcp.NAME]`: MCP servers whose tools are offered as `NAME.tool`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp: BTreeMap<String, McpServerConfig>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            url: None,
            workspace: None,
            temperature: 0.0,
            seed: 42,
            max_tokens: 256,
            max_steps: 6,
            chain_tools: false,
            history_turns: 0,
            recall_k: 3,
            health_timeout: 120,
            retries: 2,
            request_timeout: 300,
            embedding_url: None,
            shell: ShellConfig::default(),
            web: WebConfig::default(),
            fallback: None,
            http: HttpConfig::default(),
            mcp: BTreeMap::new(),
        }
    }
}

/// `[chat.shell]`: what runs without asking, what never runs, and the limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShellConfig {
    /// Whether the model may use the shell at all.
    pub enabled: bool,
    /// Glob patterns (`*` any text, `?` one character) of simple commands that run without
    /// asking, matched against the command's words as sh will see them (quotes removed, joined
    /// by single spaces). A line runs without asking only if every simple command in it (in
    /// lists, pipelines, behind `nice`/`env`/`timeout`, inside `sh -c`) matches, and none uses
    /// an option known to write, delete or run (`find -delete`, `sort -o`, `--output`).
    pub allow: Vec<String>,
    /// Patterns that are always refused, matched against every simple command (also by the
    /// program's basename), every pipeline and the whole line; they win over `allow` and over a
    /// "yes".
    pub deny: Vec<String>,
    /// The OS sandbox: `auto` (bubblewrap where it works, else the patterns alone, said so),
    /// `bwrap` (required), `off`.
    pub sandbox: SandboxMode,
    /// Whether sandboxed commands may use the network.
    pub network: bool,
    /// Seconds before the command's whole process group is killed.
    pub timeout: u64,
    /// Bytes of output (stdout and stderr together) kept; the rest is cut.
    pub output_cap: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ShellConfig {
            enabled: true,
            allow: s(DEFAULT_ALLOW),
            deny: s(DEFAULT_DENY),
            sandbox: SandboxMode::Auto,
            network: false,
            timeout: 30,
            output_cap: 16 * 1024,
        }
    }
}

/// Commands that run without asking by default: programs that cannot write, delete or run
/// anything with any option, and programs whose options that do are known to the policy
/// (find's `-delete`/`-exec`/`-fprint`, sort's `-o`/`--compress-program`, git's `--output`,
/// date's `-s`, uniq's OUTPUT operand): those ask.
pub const DEFAULT_ALLOW: &[&str] = &[
    "ls",
    "ls *",
    "pwd",
    "date",
    "date *",
    "whoami",
    "echo",
    "echo *",
    "cat",
    "cat *",
    "head",
    "head *",
    "tail",
    "tail *",
    "wc",
    "wc *",
    "grep *",
    "find *",
    "du",
    "du *",
    "df",
    "df *",
    "uname",
    "uname *",
    "uptime",
    "sort",
    "sort *",
    "uniq",
    "uniq *",
    "git status",
    "git status *",
    "git log",
    "git log *",
    "git diff",
    "git diff *",
];

/// Commands refused by default, whatever the user answers: destruction, privilege, the disk,
/// the machine's power, and piping downloads into a shell.
pub const DEFAULT_DENY: &[&str] = &[
    "rm -rf *",
    "rm -fr *",
    "rm -r *",
    "rm -R *",
    "rm --recursive*",
    "sudo*",
    "su",
    "su *",
    "doas *",
    "mkfs*",
    "dd *",
    "shred *",
    "wipefs*",
    "fdisk*",
    "parted*",
    "shutdown*",
    "reboot*",
    "poweroff*",
    "halt*",
    "init *",
    "systemctl *",
    "chmod -R *",
    "chown -R *",
    "*:(){*",
    "curl *|*sh*",
    "wget *|*sh*",
    "* > /dev/sd*",
    "*>/dev/sd*",
    "kill -9 -1*",
    "killall *",
    "pkill *",
    "crontab *",
];

/// `[chat.web]`: the `web_fetch` tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Off by default: a model that can fetch URLs can be steered by what it reads.
    pub enabled: bool,
    /// Bytes of a page kept.
    pub max_bytes: usize,
    /// Seconds a fetch may take.
    pub timeout: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: false,
            max_bytes: 64 * 1024,
            timeout: 20,
        }
    }
}

/// `[chat.fallback]`: a second OpenAI-compatible endpoint, used only when the user opts in
/// (`enabled = true` here, or `--fallback`) and only when the local model cannot answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Base URL (without /v1).
    pub url: String,
    /// Model name to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Name of the environment variable that holds the API key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Opt in from the config file (`--fallback` opts in for one run).
    #[serde(default)]
    pub enabled: bool,
}

/// `[chat.http]`: the OpenAI-compatible endpoint of `tbq-agent chat --http`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; must be a loopback address.
    pub listen: String,
    /// Name of the environment variable holding the bearer token (default `TBQ_CHAT_TOKEN`).
    pub token_env: String,
    /// Whether shell commands that would need a confirmation run anyway over HTTP (there is
    /// nobody to ask). Off: they are refused.
    pub allow_unconfirmed_shell: bool,
    /// Requests answered at the same time. 0: one per slot of the llama-server (its `/props`
    /// `total_slots`), so every slot has a turn to work on and none waits behind another.
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that the endpoint answers 429 with a
    /// `Retry-After`, so a client backs off instead of piling up timeouts.
    pub queue: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8765".into(),
            token_env: "TBQ_CHAT_TOKEN".into(),
            allow_unconfirmed_shell: false,
            workers: 0,
            queue: 8,
        }
    }
}

/// `[chat.mcp.NAME]`: one MCP server, started (stdio) or connected to (streamable HTTP) when
/// the chat starts. Exactly one of `command` and `url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerConfig {
    /// The program to start, as one word or as a list (program, then arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandLine>,
    /// Arguments after `command`'s own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables added for the server process.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The streamable HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Which of its tools ask the user before each call, like shell commands outside the
    /// allow list: `true` (all), `false` (none), or a list of tool names (as the server
    /// names them).
    pub confirm: ConfirmTools,
    /// Seconds one tool call may take (then it is cancelled and the model told).
    pub timeout: u64,
    /// Seconds the start (initialize and tools/list) may take.
    pub startup_timeout: u64,
    /// Bytes of a tool result kept; the rest is cut.
    pub max_result_bytes: usize,
    /// Whether the model may write the arguments a tool's schema does not require. Off by
    /// default, like `chain_tools`: Gemma 270M, offered them, fills them with nonsense
    /// (`"tail": 1000000000000000`); turn it on for a larger model.
    pub optional_args: bool,
    /// Off: the server is neither started nor offered.
    pub enabled: bool,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        McpServerConfig {
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            url: None,
            confirm: ConfirmTools::All(false),
            timeout: 30,
            startup_timeout: 30,
            max_result_bytes: 16 * 1024,
            optional_args: false,
            enabled: true,
        }
    }
}

/// `command = "prog"` or `command = ["prog", "arg", …]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    /// A program.
    Program(String),
    /// A program and its first arguments.
    Words(Vec<String>),
}

/// `confirm = true | false | ["tool", …]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfirmTools {
    /// Every tool, or none.
    All(bool),
    /// These tools.
    Only(Vec<String>),
}

impl ConfirmTools {
    /// Whether calls of `tool` (its name on the server) need a "yes".
    pub fn applies_to(&self, tool: &str) -> bool {
        match self {
            ConfirmTools::All(all) => *all,
            ConfirmTools::Only(tools) => tools.iter().any(|t| t == tool),
        }
    }
}

/// The `[chat]` part of `tbq-agent config --example`.
pub const EXAMPLE: &str = r#"
[chat]
# url = "http://127.0.0.1:8080"         # the local llama-server (default: the profile's host:port)
workspace = "~/tbq-workspace"           # files and shell stay inside; memory.sqlite lives here
temperature = 0.0
max_steps = 6                           # tool calls + answer per turn
chain_tools = false                     # true: more than one tool call per turn (larger models)
# embedding_url = "http://127.0.0.1:8081"   # llama-server --embeddings --pooling mean: vector recall

[chat.shell]
# The command line is parsed as sh parses it; every simple command in it (lists, pipelines,
# behind env/nice/timeout/xargs, inside sh -c and find -exec) is judged. Deny wins, also over a
# "yes"; a line whose every command is allowed runs; what the policy cannot read ($, globs,
# redirections to files, subshells) or vouch for (find -delete, sort -o, --output) asks.
# `tbq-agent chat policy "COMMAND"` says what a line gets, and why.
allow = ["ls *", "cat *", "echo *", "date", "git status*"]   # run without asking
# deny = [...]                          # default: rm -rf, sudo, mkfs, dd, shutdown, curl|sh, ...
sandbox = "auto"                        # bubblewrap: workspace writable (not .git), rest read-only, secrets hidden
network = false                         # sandboxed commands get no network
timeout = 30
output_cap = 16384

[chat.web]
enabled = false                         # web_fetch; private and loopback addresses are refused

# [chat.fallback]                       # only with enabled = true or --fallback
# url = "https://api.openai.com"
# model = "gpt-4o-mini"
# api_key_env = "OPENAI_API_KEY"

[chat.http]
listen = "127.0.0.1:8765"               # loopback only
token_env = "TBQ_CHAT_TOKEN"            # Authorization: Bearer $TBQ_CHAT_TOKEN
workers = 0                             # turns at once; 0: one per llama-server slot
queue = 8                               # waiting requests; beyond: 429 + Retry-After

# MCP servers: their tools are offered to the model as NAME.tool (here files.read_text_file).
# [chat.mcp.files]                      # started with the chat (stdio), stopped at exit
# command = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]
# env = { NODE_NO_WARNINGS = "1" }
# confirm = ["write_file", "edit_file", "move_file"]   # or true: every call asks y/N
# timeout = 30                          # seconds per call; then it is cancelled
# max_result_bytes = 16384
# optional_args = false                 # true: the model may also write non-required arguments
# [chat.mcp.tracker]                    # streamable HTTP, already running
# url = "http://127.0.0.1:8000/mcp"
# confirm = true                        # over HTTP (chat --http) confirm-marked calls are refused
"#;
