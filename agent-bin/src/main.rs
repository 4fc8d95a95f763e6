//! tbq-agent: runs the patched llama-server in production.
//!
//! `serve` supervises llama-server behind a health gate; `research` sweeps its configuration;
//! `compare` puts two OpenAI-compatible endpoints side by side; `plan` says what fits in
//! memory; `doctor` says what is missing.

mod chat;
mod client;
mod compare;
mod config;
mod doctor;
mod error;
mod fit;
mod measure;
mod quality;
mod report;
mod research;
mod rpc;
mod serve;
mod server;
mod split;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{Config, Profile};
use crate::error::{classify, fail, Exit, EXIT_CODES_HELP};
use tbq::plan::{CacheConfig, CacheType, ModelShape};

const AFTER_HELP: &str = "\
Examples:
    tbq-agent doctor                                   what is missing, and how to fix it
    tbq-agent plan model.gguf --ctk tbq4_0 --ctv tbq3_0 --budget 8GiB
    tbq-agent serve --profile gemma                    run a profile from the config file
    tbq-agent serve --model m.gguf --ctk tbq4_0 --ctv tbq3_0 --port 8080
    tbq-agent serve --profile gemma --systemd-unit > ~/.config/systemd/user/tbq-agent-gemma.service
    tbq-agent research --example > space.toml          then: tbq-agent research space.toml
    tbq-agent compare http://127.0.0.1:8080 http://127.0.0.1:8081

Configuration: ~/.config/tbq-agent/config.toml (XDG; --config or TBQ_AGENT_CONFIG to override),
profiles of llama-server settings; `tbq-agent config --example` prints one. llama-server is found
through --llama-server, the config's llama_server, TBQ_LLAMA_SERVER, TBQ_BUILD_DIR/bin, PATH, then
./build/bin.
";

const PLAN_HELP: &str = "\
Examples:
    tbq-agent plan model.gguf                    # all cache types, training context
    tbq-agent plan model.gguf --ctk tbq4_0 --ctv tbq3_0 -c 32768
    tbq-agent plan model.gguf --ctk tbq4_0 --ctv tbq3_0 --budget 8GiB --json
    tbq-agent plan --profile gemma --budget 24GiB
    tbq-agent plan model.gguf --fit -c 32768 --budget 2GiB       # KV cache within 2 GiB
    tbq-agent plan model.gguf --fit -c 32768 --gpu-memory 24GiB  # a GPU with 24 GiB free

Sizes follow llama.cpp's own rules (context padded to 256, unified or per-slot streams, a separate \
sliding-window cache) and agree with llama-server's `llama_kv_cache: size = ...` log lines. The defaults \
are llama-server's: 4 slots sharing a unified cache unless --parallel is given.

--fit: which K/V cache types to run, given a budget and the context you want (-c; default the \
model's training context). The answer is llama-server's arguments (-ctk K -ctv V -c N -fa on, and \
-ngl N with --gpu-memory).

  Quality is measured, not guessed: the mean KL divergence against f16/f16 from `tbq-validate ppl` \
(validation/results/<model>/ppl/results.json and the later ppl-*/ tables of the same text at -c 512, \
each pair's newest run; --results DIR for others), divided by q4_0/q4_0's on the same model and text (\"×q4_0\": 0.42 means 0.42 times q4_0's divergence; f16/f16 is 0). A model that \
was measured itself (same file name and size) is ranked by its own ratios. Any other model is ranked \
by the worst ratio over all measured models (--worst-case forces that): measured models disagree on \
whether keys or values carry the loss, and the worst case is safe for all of them. Pairs without a \
measurement on every model in use are not offered; --ctk/--ctv restrict the candidates. Ties go \
to the smaller cache.

  --budget SIZE: the KV cache alone must fit SIZE. Choice: the best ×q4_0 that fits.

  --gpu-memory SIZE: a GPU with SIZE free holds weights (the GGUF's tensor sizes), the KV cache of \
its layers and the compute buffer (estimated), leaving --fit-target MiB free (upstream's default \
1024). The layers are chosen as upstream llama-server --fit chooses them when -c is given: the \
largest -ngl whose device memory fits (output layer first, then layers from the last one back; \
token_embd stays on the CPU). Choice: the best ×q4_0 among pairs that put every layer on the GPU; \
if none does, the pair that puts the most layers there. Dense models; MoE expert placement \
(upstream moves experts to the CPU first) is not mirrored.

  On a CPU-only build upstream --fit has no layers to place: it compares the host's total memory \
with weights + KV + compute and, only when -c was not given, lowers the context toward --fit-ctx \
(4096); with -c given it warns and goes on. So on a CPU, --budget (the KV cache) is the budget \
that decides.

  Per-layer types (llama-server --cache-type-layers, e.g. k0-3=tbq5_1,v28-31=tbq4_1) pay off \
model by model: --fit offers a model measured itself its calibrated allocations (rows K/V +L) \
beside the uniform pairs, any other model uniform pairs only. `tbq-validate calibrate -m MODEL` \
finds a model's allocation for a bit budget; `plan --ctk K --ctv V --cache-type-layers SPEC` sizes it.";

/// Supervise, tune and size llama-server with TurboQuant-style KV caches (tbq4_0 / tbq3_0).
#[derive(Parser)]
#[command(name = "tbq-agent", version, about, after_long_help = format!("{AFTER_HELP}\n{EXIT_CODES_HELP}"), after_help = "See --help for examples and exit codes.")]
struct Cli {
    /// Configuration file [default: ~/.config/tbq-agent/config.toml]
    #[arg(long, global = true, env = "TBQ_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The llama-server binary (overrides the config and TBQ_LLAMA_SERVER)
    #[arg(long, global = true, value_name = "PATH")]
    llama_server: Option<PathBuf>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress bars (they are off anyway when stderr is not a terminal)
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run llama-server from a profile: health-gated, restarted on crash, stopped cleanly
    #[command(
        long_about = "Run llama-server from a profile: wait for /health (503 while loading, 200 when ready) with a \
timeout and a spinner, stop waiting at once if it exits, restart it with exponential back-off when it crashes or stops \
answering /health, and forward SIGINT/SIGTERM to it. llama-server runs in its own process group with PR_SET_PDEATHSIG, \
so it never outlives the agent, even one killed with SIGKILL.",
        after_long_help = "Examples:
    tbq-agent serve --profile gemma
    tbq-agent serve --model gemma.gguf -c 32768 --ctk tbq4_0 --ctv tbq3_0 --port 8080
    tbq-agent serve --profile gemma --json          # one JSON event per line: starting, ready, exited, restarting
    tbq-agent serve --profile gemma --systemd-unit  # print a systemd user unit for this profile"
    )]
    Serve(ServeArgs),
    /// Sweep llama-server configurations: quality, speed, context recall, memory; JSONL + report
    #[command(
        long_about = "The autoresearcher. Reads a search space (TOML: a [base] profile, [axes] of values to try, \
[measure] settings). Phase 1 varies each axis alone from the base; phase 2 combines the best value of every axis and \
tries its neighbours. Each experiment starts llama-server, waits for health, scores the quality prompts by keywords, \
measures prefill/decode tok/s and time to first token (server timings and client-side streaming), fills the context \
to recall_fill and asks for a planted fact, and records peak memory. Every record is appended to OUT/results.jsonl \
and fsynced the moment it is known; configurations the planner says cannot fit are skipped with the reason. \
--resume continues a killed run. Ends with OUT/report.md and OUT/report.png naming the best configuration for \
speed, context and quality.",
        after_long_help = "Examples:
    tbq-agent research --example > space.toml       # an annotated search space to edit
    tbq-agent research --print-prompts > prompts.toml
    tbq-agent research space.toml --out runs/gemma --dry-run
    tbq-agent research space.toml --out runs/gemma
    tbq-agent research space.toml --out runs/gemma --resume   # after a kill or a full disk
    tbq-agent research space.toml --out runs/gemma --report-only"
    )]
    Research(ResearchArgs),
    /// Compare two OpenAI-compatible endpoints on the same prompts
    #[command(after_long_help = "Examples:
    tbq-agent compare http://127.0.0.1:8080 http://127.0.0.1:8081
    tbq-agent compare http://127.0.0.1:8080 https://api.example.com --model-b big --api-key-b $KEY --json
Endpoints are base URLs (without /v1). Prompts go to /v1/completions (api = \"chat\" in the prompts file: \
/v1/chat/completions), greedy, streamed. https needs the build feature `tls`.")]
    Compare(CompareArgs),
    /// A local-first agent: tools (shell, files, memory, reminders, web), persistent memory, REPL or HTTP
    #[command(
        args_override_self = true,
        args_conflicts_with_subcommands = true,
        long_about = "A personal agent on the local llama-server. Each turn the model picks one JSON action at a \
time, constrained by llama-server's grammar (so even a 270M model's tool calls parse): call a tool (shell inside the \
workspace behind allow/deny patterns and a confirmation, read/write/list workspace files, remember/recall, remind, \
web_fetch when enabled) or answer. Conversations and memories live in one SQLite file per workspace \
(WORKSPACE/.tbq-agent/memory.sqlite), recalled by full text, and by vectors when an embedding server is set. \
Waits for the server's /health first; if the server dies mid-turn the step is retried once it is healthy again \
(run it under `tbq-agent serve`, which restarts it), or the failure is reported and the message kept for /retry. \
A fallback endpoint answers only when opted in. Every answer names the model that wrote it.",
        after_long_help = "Examples:
    tbq-agent serve --profile gemma &                 # the local model, supervised
    tbq-agent chat                                    # REPL: /help lists its commands
    tbq-agent chat \"what is in notes.txt?\"            # one turn, then exit
    tbq-agent chat --workspace ~/agent --json         # one JSON event per line (tool calls, answers)
    TBQ_CHAT_TOKEN=secret tbq-agent chat --http 127.0.0.1:8765
    curl -s http://127.0.0.1:8765/v1/chat/completions -H 'Authorization: Bearer secret' \\
         -d '{\"messages\":[{\"role\":\"user\",\"content\":\"remember that I like tea\"}]}'
    tbq-agent chat --embedding-url http://127.0.0.1:8081   # vector recall (llama-server --embeddings --pooling mean)
    tbq-agent chat --fallback                         # let [chat.fallback] answer when the local model cannot
    tbq-agent chat policy 'find . -delete'            # what the shell policy says about a command, and why

Settings: [chat], [chat.shell], [chat.web], [chat.fallback], [chat.http] in the config file \
(`tbq-agent config --example`). Shell: the command line is parsed as sh parses it and every simple command \
in it is judged (behind wrappers, inside sh -c); deny patterns win over allow patterns and over a yes; what \
is not allowed, or cannot be read, asks y/N on the terminal (refused over HTTP); commands run in a bubblewrap \
sandbox where installed (workspace writable, rest read-only, home secrets hidden, no network); timeout kills \
the command's whole process group.

HTTP (--http): any OpenAI client works (base URL http://ADDR/v1, the token as API key): GET /v1/models, \
POST /v1/chat/completions (stream, stream_options.include_usage), GET /health without the token. \
[chat.http] workers turns run at once (0: one per llama-server slot), queue more wait, the rest get 429 \
with Retry-After. Errors are OpenAI's {\"error\": {message, type, param, code}}."
    )]
    Chat(ChatArgs),
    /// KV-cache size of a model for given cache types, the largest context that fits a budget, and (--fit) the best cache types for a budget
    #[command(after_long_help = PLAN_HELP)]
    Plan(PlanArgs),
    /// Check llama-server, GPU and driver, model, memory and disk; say what to fix
    Doctor(DoctorArgs),
    /// Show the configuration, or print an example
    Config {
        /// Print an example configuration file
        #[arg(long)]
        example: bool,
        /// Print the configuration file's path
        #[arg(long)]
        path: bool,
    },
}

/// Settings that override the profile's.
#[derive(Args, Clone, Default)]
struct ProfileArgs {
    /// Profile from the config file [default: default_profile, or the only one]
    #[arg(short, long, value_name = "NAME")]
    profile: Option<String>,
    /// GGUF model
    #[arg(short, long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Context size (0 = the model's training context)
    #[arg(short = 'c', long)]
    ctx_size: Option<u32>,
    /// K cache type (f16, q8_0, q4_0, tbq4_0, tbq3_0, ...)
    #[arg(long = "cache-type-k", visible_alias = "ctk", value_name = "TYPE")]
    cache_type_k: Option<String>,
    /// V cache type
    #[arg(long = "cache-type-v", visible_alias = "ctv", value_name = "TYPE")]
    cache_type_v: Option<String>,
    /// Flash attention: on, off, auto
    #[arg(long = "flash-attn", value_name = "on|off|auto")]
    flash_attn: Option<String>,
    /// Layers offloaded to the GPU
    #[arg(long = "n-gpu-layers", visible_alias = "ngl")]
    n_gpu_layers: Option<i32>,
    /// CPU threads
    #[arg(short = 't', long)]
    threads: Option<u32>,
    /// Logical batch size
    #[arg(short = 'b', long = "batch-size")]
    batch_size: Option<u32>,
    /// Physical batch size
    #[arg(long = "ubatch-size")]
    ubatch_size: Option<u32>,
    /// Server slots (-np)
    #[arg(long)]
    parallel: Option<u32>,
    /// Listen address [default: 127.0.0.1]
    #[arg(long)]
    host: Option<String>,
    /// Listen port (0 = any free port) [default: 8080]
    #[arg(long)]
    port: Option<u16>,
}

impl ProfileArgs {
    fn overrides(&self) -> Profile {
        Profile {
            model: self.model.clone(),
            ctx_size: self.ctx_size,
            cache_type_k: self.cache_type_k.clone(),
            cache_type_v: self.cache_type_v.clone(),
            flash_attn: self.flash_attn.clone(),
            n_gpu_layers: self.n_gpu_layers,
            threads: self.threads,
            batch_size: self.batch_size,
            ubatch_size: self.ubatch_size,
            parallel: self.parallel,
            host: self.host.clone(),
            port: self.port,
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Seconds to wait for /health after each start
    #[arg(long, default_value_t = 300)]
    health_timeout: u64,
    /// Restarts allowed within --restart-window before giving up (exit 9)
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// Window for --max-restarts, seconds
    #[arg(long, default_value_t = 600)]
    restart_window: u64,
    /// First restart back-off, seconds (doubles each time, up to --backoff-max)
    #[arg(long, default_value_t = 1.0)]
    backoff: f64,
    /// Longest back-off, seconds
    #[arg(long, default_value_t = 60.0)]
    backoff_max: f64,
    /// Seconds between health checks while running (0: only watch the process)
    #[arg(long, default_value_t = 10.0)]
    health_interval: f64,
    /// Consecutive failed health checks that restart the server
    #[arg(long, default_value_t = 3)]
    health_failures: u32,
    /// llama-server's log file [default: $XDG_STATE_HOME/tbq-agent/llama-server-<port>.log]
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// RPC workers, HOST:PORT of a ggml-rpc-server each, comma-separated (llama-server's --rpc;
    /// replaces the profile's `rpc`). Each is asked before every start: it must answer, speak this
    /// llama.cpp's protocol, and have the tbq types when a cache type is tbq
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    rpc: Vec<String>,
    /// Share of the offloaded layers per device (llama-server's --tensor-split, e.g. 10,30,40:
    /// `tbq-agent plan --device` prints one)
    #[arg(long, value_name = "N,N,...")]
    tensor_split: Option<String>,
    /// Print a systemd user unit for this profile and exit
    #[arg(long)]
    systemd_unit: bool,
}

#[derive(Args)]
struct ResearchArgs {
    /// Search-space file (TOML; --example prints one)
    #[arg(required_unless_present_any = ["example", "print_prompts"])]
    space: Option<PathBuf>,
    /// Output directory: results.jsonl, logs/, report.md, report.png
    #[arg(short, long, default_value = "tbq-research")]
    out: PathBuf,
    /// Continue a run in --out: finished experiments are skipped
    #[arg(long, conflicts_with = "fresh")]
    resume: bool,
    /// Start over; an existing results.jsonl is kept as a .bak
    #[arg(long)]
    fresh: bool,
    /// Quality prompts file (overrides the search space's)
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Show the phase-1 experiments and what the planner says, run nothing
    #[arg(long)]
    dry_run: bool,
    /// Only rebuild report.md / report.png from results.jsonl
    #[arg(long)]
    report_only: bool,
    /// Print an example search space
    #[arg(long)]
    example: bool,
    /// Print the shipped quality prompts
    #[arg(long)]
    print_prompts: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// Endpoint A (base URL, e.g. http://127.0.0.1:8080)
    a: String,
    /// Endpoint B
    b: String,
    /// Prompts file [default: the shipped prompts]
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Model name sent to A
    #[arg(long)]
    model_a: Option<String>,
    /// Model name sent to B
    #[arg(long)]
    model_b: Option<String>,
    /// API key for A [env: OPENAI_API_KEY]
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key_a: Option<String>,
    /// API key for B
    #[arg(long, hide_env_values = true)]
    api_key_b: Option<String>,
    /// Seconds one request may take
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
struct ChatArgs {
    #[command(subcommand)]
    action: Option<ChatAction>,
    /// One message: answer it and exit [default: the interactive REPL]
    #[arg(value_name = "MESSAGE")]
    message: Vec<String>,
    /// The local llama-server [default: [chat] url, else the profile's host:port, else http://127.0.0.1:8080]
    #[arg(long)]
    url: Option<String>,
    /// Profile whose host and port locate the local server
    #[arg(short, long, value_name = "NAME")]
    profile: Option<String>,
    /// The workspace: tools stay inside it, memory.sqlite lives in it [default: [chat] workspace, else $XDG_DATA_HOME/tbq-agent/workspace]
    #[arg(short, long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Serve the OpenAI-compatible HTTP channel instead of the terminal [default address: [chat.http] listen]
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "")]
    http: Option<String>,
    /// Let [chat.fallback] answer when the local model cannot (opt-in)
    #[arg(long)]
    fallback: bool,
    /// Embedding endpoint for vector recall (a llama-server with --embeddings)
    #[arg(long, value_name = "URL")]
    embedding_url: Option<String>,
    /// Turn the web_fetch tool on for this run (public addresses only)
    #[arg(long)]
    web: bool,
    /// Turn the shell tool off for this run
    #[arg(long)]
    no_shell: bool,
    /// The first step of every turn must call this tool, then the model answers (scripts, tests, weak models)
    #[arg(long, value_name = "TOOL")]
    require_tool: Option<String>,
    /// With --require-tool: pin the call's arguments too (a JSON object), e.g. '{"command": "ls"}'
    #[arg(long, value_name = "JSON", requires = "require_tool", value_parser = parse_json_object)]
    tool_args: Option<serde_json::Value>,
    /// Seconds to wait for the server's /health
    #[arg(long)]
    health_timeout: Option<u64>,
    /// Model steps per turn (tool calls + answer)
    #[arg(long)]
    max_steps: Option<u32>,
    /// Tokens per model step
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Retries of a turn after the server failed mid-turn
    #[arg(long)]
    retries: Option<u32>,
}

#[derive(Subcommand)]
enum ChatAction {
    /// What the shell policy says about COMMAND (allow, ask or deny, and why), for tuning [chat.shell]
    #[command(
        after_long_help = "Prints the verdict as its first word (allow, ask or deny), then why, for \
[chat.shell] allow/deny of the configuration in effect (--config or TBQ_AGENT_CONFIG, else the default \
config file, else the defaults). --json prints {\"verdict\": ..., \"why\": ...}. Runs nothing.

Examples:
    tbq-agent chat policy 'ls -la'                   # allow
    tbq-agent chat policy 'sort -o ~/.bashrc x'      # ask: sort -o writes a file
    tbq-agent chat policy 'echo hi; rm -rf ~'        # deny

Exit codes:
    0    allow: runs without asking
    1    ask: runs only after a yes on the terminal (refused over HTTP)
    2    deny: never runs
    3    the configuration file is malformed (no verdict printed; a bad command line also exits 2
         without one)"
    )]
    Policy {
        /// The command line, as the model would send it (one argument: quote it)
        command: String,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// GGUF model (or --profile / --model)
    model_file: Option<PathBuf>,
    #[command(flatten)]
    profile: ProfileArgs,
    /// Memory for the KV cache, e.g. 8GiB, 512MiB, 24G
    #[arg(long, value_parser = parse_size)]
    budget: Option<u64>,
    /// One KV stream shared by all slots
    #[arg(long)]
    kv_unified: bool,
    /// Full-size sliding-window cache
    #[arg(long)]
    swa_full: bool,
    /// Per-layer cache types over each pair, as llama.cpp's --cache-type-layers takes them
    /// (`tbq-validate calibrate` prints one), e.g. k0-1=tbq5_1,v17=tbq4_0
    #[arg(long, value_name = "SPEC")]
    cache_type_layers: Option<String>,
    /// Choose the K/V pair with the best measured quality that fits --budget or --gpu-memory (see below)
    #[arg(long)]
    fit: bool,
    /// Memory of a machine that holds layers (repeat): local=SIZE (this one, its CPU) and
    /// rpc:HOST:PORT=SIZE per ggml-rpc-server worker, in --rpc order; for weights + KV + compute.
    /// Prints each device's layers and KV cache and the largest context (or the split at -c)
    #[arg(long = "device", value_name = "NAME=SIZE", value_parser = parse_device)]
    devices: Vec<split::Device>,
    /// With --fit: free GPU memory for weights + KV cache + compute; the layers are chosen as llama-server --fit would
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    gpu_memory: Option<u64>,
    /// With --gpu-memory: MiB to leave free on the GPU (upstream --fit-target)
    #[arg(long, default_value_t = 1024, value_name = "MiB")]
    fit_target: u64,
    /// With --fit: folder of tbq-validate results (<model>/ppl/results.json) [default: validation/results of the source tree]
    #[arg(long, value_name = "DIR", env = "TBQ_RESULTS")]
    results: Option<PathBuf>,
    /// With --fit: rank by the worst case over every measured model, even for a model that was measured
    #[arg(long)]
    worst_case: bool,
}

#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Where research results would go (for the disk check)
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn parse_json_object(s: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("expected a JSON object, like '{\"command\": \"ls\"}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn parse_device(s: &str) -> Result<split::Device, String> {
    split::parse_device(s, parse_size)
}

/// "8GiB", "512MiB", "24G", "1000000" → bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 8GiB, 512MiB, 24G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?} (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    Ok((n * mult as f64) as u64)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    init_tracing(cli.verbose);
    if let Err(e) = server::install_signal_handlers() {
        tracing::warn!("{e:#}");
    }
    if let Cmd::Chat(ChatArgs {
        action: Some(ChatAction::Policy { command }),
        ..
    }) = &cli.cmd
    {
        return cmd_chat_policy(&cli, command).unwrap_or_else(|e| report(&cli, e));
    }
    match run(&cli) {
        Ok(()) => ExitCode::from(Exit::Ok.code() as u8),
        Err(e) => report(&cli, e),
    }
}

/// Prints a failure (its causes and fix) and gives its exit code.
fn report(cli: &Cli, e: anyhow::Error) -> ExitCode {
    let (exit, fix) = classify(&e);
    if cli.json {
        println!(
            "{}",
            json!({ "error": format!("{e:#}"), "exit_code": exit.code(), "fix": fix })
        );
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(fix) = fix {
        eprintln!("  fix: {fix}");
    }
    ExitCode::from(exit.code() as u8)
}

/// `tbq-agent chat policy COMMAND`: the verdict as the first word, why after it; the exit code
/// says it too (0 allow, 1 ask, 2 deny).
fn cmd_chat_policy(cli: &Cli, command: &str) -> Result<ExitCode> {
    use chat::shell::{Policy, Verdict};
    let (cfg, _) = Config::load(cli.config.as_deref())?;
    let shell = &cfg.chat.shell;
    let (word, why, code) = match Policy::new(&shell.allow, &shell.deny).check(command) {
        Verdict::Allow => (
            "allow",
            "every command in it matches an allow pattern and uses no option known to write, delete or run".to_string(),
            0,
        ),
        Verdict::Ask(why) => ("ask", why, 1),
        Verdict::Deny(why) => ("deny", why, 2),
    };
    if cli.json {
        println!("{}", json!({ "verdict": word, "why": why }));
    } else {
        println!("{word} — {why}");
    }
    Ok(ExitCode::from(code))
}

fn init_tracing(v: u8) {
    let level = match v {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn progress(cli: &Cli) -> bool {
    !cli.no_progress && std::io::stderr().is_terminal()
}

fn load_profile(cli: &Cli, args: &ProfileArgs) -> Result<(Config, Option<PathBuf>, Profile)> {
    let (cfg, path) = Config::load(cli.config.as_deref())?;
    let profile = cfg
        .profile(args.profile.as_deref())?
        .merged(&args.overrides());
    Ok((cfg, path, profile))
}

fn llama_server(cli: &Cli, cfg: &Config) -> Result<PathBuf> {
    server::find_llama_server(cli.llama_server.as_deref().or(cfg.llama_server.as_deref()))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: &Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Serve(a) => cmd_serve(cli, a),
        Cmd::Research(a) => cmd_research(cli, a),
        Cmd::Compare(a) => {
            let prompts = measure::PromptSet::load(a.prompts.as_deref())?;
            let ep = |url: &str, model: &Option<String>, key: &Option<String>| compare::Endpoint {
                url: url
                    .trim_end_matches('/')
                    .trim_end_matches("/v1")
                    .to_string(),
                model: model.clone(),
                api_key: key.clone(),
            };
            let s = compare::compare(
                &ep(&a.a, &a.model_a, &a.api_key_a),
                &ep(
                    &a.b,
                    &a.model_b,
                    &a.api_key_b.clone().or(a.api_key_a.clone()),
                ),
                &prompts,
                Duration::from_secs(a.timeout),
                progress(cli),
            )?;
            if cli.json {
                print_json(&s)
            } else {
                print!("{}", compare::table(&s));
                Ok(())
            }
        }
        Cmd::Plan(a) => cmd_plan(cli, a),
        Cmd::Chat(a) => cmd_chat(cli, a),
        Cmd::Doctor(a) => {
            let (cfg, path, profile) = load_profile(cli, &a.profile)?;
            let checks = doctor::run(
                cli.llama_server.as_deref().or(cfg.llama_server.as_deref()),
                &profile,
                path.as_deref(),
                &a.out,
            );
            let failed = checks
                .iter()
                .filter(|c| c.level == doctor::Level::Fail)
                .count();
            if cli.json {
                print_json(&json!({ "checks": checks, "ok": failed == 0 }))?;
            } else {
                for c in &checks {
                    let mark = match c.level {
                        doctor::Level::Ok => "ok  ",
                        doctor::Level::Warn => "warn",
                        doctor::Level::Fail => "FAIL",
                    };
                    println!("[{mark}] {:<18} {}", c.name, c.detail);
                    if let Some(f) = &c.fix {
                        println!("       {:<18} fix: {f}", "");
                    }
                }
            }
            if failed > 0 {
                return Err(fail(Exit::Doctor, format!("{failed} check(s) failed"))
                    .fix("see the fixes above")
                    .into());
            }
            Ok(())
        }
        Cmd::Config { example, path } => {
            if *example {
                print!("{}", config::example());
                return Ok(());
            }
            let (cfg, p) = Config::load(cli.config.as_deref())?;
            if *path {
                println!(
                    "{}",
                    p.or_else(config::default_config_path)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                return Ok(());
            }
            if cli.json {
                print_json(&cfg)
            } else {
                print!("{}", config::describe(&cfg, p.as_deref())?);
                Ok(())
            }
        }
    }
}

fn cmd_serve(cli: &Cli, a: &ServeArgs) -> Result<()> {
    let (cfg, path, profile) = load_profile(cli, &a.profile)?;
    let profile = profile.merged(&Profile {
        rpc: a.rpc.clone(),
        tensor_split: a.tensor_split.clone(),
        ..Default::default()
    });
    if a.systemd_unit {
        print!(
            "{}",
            serve::systemd_unit(
                a.profile
                    .profile
                    .as_deref()
                    .or(cfg.default_profile.as_deref()),
                path.as_deref(),
                &profile
            )?
        );
        return Ok(());
    }
    let bin = llama_server(cli, &cfg)?;
    let log = match &a.log {
        Some(l) => l.clone(),
        None => {
            let dir = directories::ProjectDirs::from("", "", "tbq-agent")
                .map(|d| d.state_dir().unwrap_or(d.data_local_dir()).to_path_buf())
                .unwrap_or_else(|| PathBuf::from("."));
            dir.join(format!("llama-server-{}.log", profile.port.unwrap_or(8080)))
        }
    };
    serve::serve(&serve::ServeOptions {
        bin,
        profile,
        log,
        health_timeout: Duration::from_secs(a.health_timeout),
        max_restarts: a.max_restarts,
        restart_window: Duration::from_secs(a.restart_window),
        backoff: Duration::from_secs_f64(a.backoff),
        backoff_max: Duration::from_secs_f64(a.backoff_max),
        health_interval: Duration::from_secs_f64(a.health_interval),
        health_failures: a.health_failures.max(1),
        json: cli.json,
        progress: progress(cli),
    })
}

fn cmd_chat(cli: &Cli, a: &ChatArgs) -> Result<()> {
    let (cfg, _) = Config::load(cli.config.as_deref())?;
    let mut c = cfg.chat.clone();
    let url = match (&a.url, &c.url) {
        (Some(u), _) | (None, Some(u)) if a.profile.is_none() || a.url.is_some() => u.clone(),
        _ => {
            let p = cfg.profile(a.profile.as_deref())?;
            let host = match p.host() {
                "0.0.0.0" | "::" => "127.0.0.1",
                h => h,
            };
            format!(
                "http://{host}:{}",
                p.port.filter(|&p| p != 0).unwrap_or(8080)
            )
        }
    };
    if let Some(u) = &a.embedding_url {
        c.embedding_url = Some(u.clone());
    }
    if a.web {
        c.web.enabled = true;
    }
    if a.no_shell {
        c.shell.enabled = false;
    }
    if let Some(v) = a.health_timeout {
        c.health_timeout = v;
    }
    if let Some(v) = a.max_steps {
        c.max_steps = v;
    }
    if let Some(v) = a.max_tokens {
        c.max_tokens = v;
    }
    if let Some(v) = a.retries {
        c.retries = v;
    }
    let workspace = config::expand_tilde(
        &a.workspace
            .clone()
            .or(c.workspace.clone())
            .unwrap_or_else(chat::default_workspace),
    );
    let http = a.http.as_ref().map(|h| {
        if h.is_empty() {
            c.http.listen.clone()
        } else {
            h.clone()
        }
    });
    let message = (!a.message.is_empty()).then(|| a.message.join(" "));
    if http.is_some() && message.is_some() {
        return Err(
            fail(Exit::Usage, "--http serves requests; it takes no MESSAGE")
                .fix("drop the message, or drop --http")
                .into(),
        );
    }
    chat::run(chat::Options {
        cfg: c,
        url,
        workspace,
        message,
        http,
        fallback: a.fallback,
        require_tool: a.require_tool.clone(),
        tool_args: a.tool_args.clone(),
        json: cli.json,
        progress: progress(cli),
    })
}

fn cmd_research(cli: &Cli, a: &ResearchArgs) -> Result<()> {
    if a.example {
        print!("{}", research::EXAMPLE);
        return Ok(());
    }
    if a.print_prompts {
        print!("{}", measure::DEFAULT_PROMPTS);
        return Ok(());
    }
    let space_path = a.space.clone().expect("clap requires it");
    if a.report_only {
        let space = research::SearchSpace::load(&space_path)?;
        let (records, _) = research::read_records(&a.out.join("results.jsonl"))?;
        let p = report::write(&a.out, &space, &records)?;
        return finish_research(cli, &a.out, &p);
    }
    // Bad input first: a malformed search space is reported before anything else is looked for.
    research::SearchSpace::load(&space_path)?;
    let (cfg, _) = Config::load(cli.config.as_deref())?;
    let bin = llama_server(cli, &cfg)?;
    let p = research::run(&research::Options {
        space: space_path,
        out: a.out.clone(),
        resume: a.resume,
        fresh: a.fresh,
        prompts: a.prompts.clone(),
        dry_run: a.dry_run,
        llama_server: bin,
        progress: progress(cli),
    })?;
    if a.dry_run {
        return Ok(());
    }
    finish_research(cli, &a.out, &p)
}

fn finish_research(cli: &Cli, out: &Path, report: &Path) -> Result<()> {
    if cli.json {
        let (records, _) = research::read_records(&out.join("results.jsonl"))?;
        let done = research::finished(&records);
        print_json(
            &json!({ "report": report, "plot": out.join("report.png"), "results": out.join("results.jsonl"), "experiments": done.values().collect::<Vec<_>>() }),
        )
    } else {
        print!("{}", std::fs::read_to_string(report)?);
        eprintln!("report: {}", report.display());
        Ok(())
    }
}

fn cmd_plan(cli: &Cli, a: &PlanArgs) -> Result<()> {
    let mut args = a.profile.clone();
    if a.model_file.is_some() {
        args.model = a.model_file.clone();
    }
    // A model on the command line needs no config file.
    let profile = if args.model.is_some() && args.profile.is_none() {
        Profile::default().merged(&args.overrides())
    } else {
        load_profile(cli, &args)?.2
    };
    let model = profile.model_path().ok_or_else(|| {
        fail(Exit::Input, "no model given").fix("tbq-agent plan MODEL.gguf, or --profile NAME")
    })?;
    server::check_model(&model)?;
    let shape = ModelShape::open(&model)
        .map_err(|e| fail(Exit::Input, format!("{}: {e}", model.display())))?;
    let mut cfg: CacheConfig = profile.cache_config();
    if a.kv_unified {
        cfg.kv_unified = true;
    }
    if a.swa_full {
        cfg.swa_full = true;
    }
    if a.fit {
        return cmd_fit(cli, a, &model, &shape, &cfg, &profile);
    }
    let pairs = plan_pairs(&profile)?;
    if !a.devices.is_empty() {
        return cmd_split(cli, a, &model, &shape, &cfg, &pairs);
    }
    let mut rows = Vec::new();
    let spec = a.cache_type_layers.as_deref().unwrap_or("");
    // bits as the first layer stores them (tbq4_0 on heads of 64: 4.25, not 4.125)
    let (head_k, head_v) = (shape.layers[0].head_k, shape.layers[0].head_v);
    for (k, v) in pairs {
        let types = tbq::plan::LayerTypes::with_spec(k, v, spec)
            .map_err(|e| fail(Exit::Input, format!("--cache-type-layers: {e}")))?;
        let row = match tbq::plan::kv_bytes_layers(&shape, &types, &cfg) {
            Ok(size) => {
                let bpt = tbq::plan::bytes_per_token_layers(&shape, &types)?;
                let max = match a.budget {
                    Some(b) => tbq::plan::max_context_layers(&shape, &types, &cfg, b)?,
                    None => None,
                };
                json!({ "k": k.name(), "v": v.name(), "bits_k": k.bits_stored(head_k), "bits_v": v.bits_stored(head_v),
                        "layer_types": (!types.is_uniform()).then(|| types.spec()), "mean_bits": types.mean_bits(&shape),
                        "bytes_per_token": bpt, "n_ctx": size.n_ctx, "kv_bytes": size.total(), "kv_mib": size.total() as f64 / 1048576.0,
                        "full": research::cache_json(&size.full), "swa": size.swa.as_ref().map(research::cache_json), "max_ctx_in_budget": max })
            }
            Err(e) => json!({ "k": k.name(), "v": v.name(), "error": e.to_string() }),
        };
        rows.push(row);
    }
    let l = shape.layers[0];
    if cli.json {
        return print_json(&json!({
            "model": model, "arch": shape.arch, "name": shape.name, "n_layer": shape.layers.len(),
            "n_head_kv": shape.layers.iter().map(|l| l.n_head_kv).collect::<Vec<_>>(),
            "head_k": l.head_k, "head_v": l.head_v, "n_swa": shape.n_swa,
            "swa_layers": shape.layers.iter().filter(|l| l.swa).count(), "n_ctx_train": shape.n_ctx_train,
            "config": { "n_ctx": cfg.n_ctx, "n_seq_max": cfg.n_seq_max, "kv_unified": cfg.kv_unified, "n_batch": cfg.n_batch, "n_ubatch": cfg.n_ubatch, "swa_full": cfg.swa_full },
            "budget": a.budget, "notes": shape.notes, "plans": rows,
        }));
    }
    println!(
        "{} ({}): {} layers, {} KV heads × {}/{} (K/V){}; trained for {} tokens",
        model.display(),
        shape.arch,
        shape.layers.len(),
        l.n_head_kv,
        l.head_k,
        l.head_v,
        if shape.has_swa() {
            format!(
                ", sliding window {} on {} layers",
                shape.n_swa,
                shape.layers.iter().filter(|l| l.swa).count()
            )
        } else {
            String::new()
        },
        shape.n_ctx_train
    );
    println!(
        "context {} ({} slot(s), {}{})\n",
        if cfg.n_ctx == 0 {
            format!("{} (training)", shape.n_ctx_train)
        } else {
            cfg.n_ctx.to_string()
        },
        cfg.n_seq_max,
        if cfg.kv_unified {
            "unified"
        } else {
            "per-slot streams"
        },
        if cfg.swa_full { ", full SWA cache" } else { "" }
    );
    println!(
        "{:<16} {:>12} {:>12} {:>14} {:>14} {:>16}",
        "K/V",
        "bits K/V",
        "B/token",
        "KV MiB",
        "SWA part MiB",
        if a.budget.is_some() {
            "max ctx (budget)"
        } else {
            ""
        }
    );
    for r in &rows {
        let mut pair = format!("{}/{}", r["k"].as_str().unwrap(), r["v"].as_str().unwrap());
        if r["layer_types"].is_string() {
            pair.push_str(" +L");
        }
        if let Some(e) = r["error"].as_str() {
            println!("{pair:<16} refused: {e}");
            continue;
        }
        println!(
            "{pair:<16} {:>12} {:>12} {:>14.2} {:>14.2} {:>16}",
            format!("{}/{}", r["bits_k"], r["bits_v"]),
            r["bytes_per_token"].as_u64().unwrap_or(0),
            r["kv_mib"].as_f64().unwrap_or(0.0),
            r["swa"]["k_bytes"]
                .as_f64()
                .map_or(0.0, |k| (k + r["swa"]["v_bytes"].as_f64().unwrap_or(0.0))
                    / 1048576.0),
            r["max_ctx_in_budget"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        );
    }
    if let Some(s) = rows.iter().find_map(|r| r["layer_types"].as_str()) {
        println!("+L: with --cache-type-layers {s} (bits K/V are -ctk/-ctv's; B/token and MiB count every layer's own type)");
    }
    for n in &shape.notes {
        println!("note: {n}");
    }
    Ok(())
}

/// `plan --device`: each pair's split over this machine and the RPC workers (split.rs).
fn cmd_split(
    cli: &Cli,
    a: &PlanArgs,
    model: &Path,
    shape: &ModelShape,
    cfg: &CacheConfig,
    pairs: &[(CacheType, CacheType)],
) -> Result<()> {
    let locals = a.devices.iter().filter(|d| d.endpoint.is_none()).count();
    if locals != 1 {
        return Err(fail(Exit::Usage, format!("--device local=SIZE given {locals} times"))
            .fix("give this machine's memory once (--device local=8GiB) and one --device rpc:HOST:PORT=SIZE per worker")
            .into());
    }
    // local first, the workers in the order given (llama.cpp's --rpc order)
    let mut devices: Vec<&split::Device> =
        a.devices.iter().filter(|d| d.endpoint.is_none()).collect();
    devices.extend(a.devices.iter().filter(|d| d.endpoint.is_some()));
    let budgets: Vec<u64> = devices.iter().map(|d| d.budget).collect();
    let rpc: Vec<&str> = devices
        .iter()
        .filter_map(|d| d.endpoint.as_deref())
        .collect();
    let w = fit::Weights::open(model, shape)
        .map_err(|e| fail(Exit::Input, format!("{}: {e:#}", model.display())))?;
    let spec = a.cache_type_layers.as_deref().unwrap_or("");
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut rows = Vec::new();
    for &(k, v) in pairs {
        let types = tbq::plan::LayerTypes::with_spec(k, v, spec)
            .map_err(|e| fail(Exit::Input, format!("--cache-type-layers: {e}")))?;
        let found = if cfg.n_ctx == 0 {
            split::max_context(shape, &w, &types, cfg, &budgets)
        } else {
            split::split_at(shape, &w, &types, cfg, &budgets)
        };
        let row = match found {
            Err(e) => json!({ "k": k.name(), "v": v.name(), "error": e.to_string() }),
            Ok(None) => json!({ "k": k.name(), "v": v.name(), "fits": false }),
            Ok(Some((n_ctx, s))) => {
                let mut args: Vec<String> = vec![
                    "-c".into(),
                    n_ctx.to_string(),
                    "-fa".into(),
                    "on".into(),
                    "-ctk".into(),
                    k.name().into(),
                    "-ctv".into(),
                    v.name().into(),
                    "-ngl".into(),
                    s.ngl.to_string(),
                ];
                if !rpc.is_empty() {
                    args.extend([
                        "--rpc".into(),
                        rpc.join(","),
                        "-ts".into(),
                        s.ts.iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    ]);
                }
                if !types.is_uniform() {
                    args.extend(["--cache-type-layers".into(), types.spec()]);
                }
                let devs: Vec<_> = devices
                    .iter()
                    .zip(&s.shares)
                    .map(|(d, sh)| {
                        json!({
                    "name": d.name, "endpoint": d.endpoint, "budget": d.budget, "layers": sh.layers,
                    "first_layer": sh.first_layer, "output": sh.output, "weights_bytes": sh.weights,
                    "kv_bytes": sh.kv, "compute_bytes": sh.compute, "total_bytes": sh.total() })
                    })
                    .collect();
                json!({ "k": k.name(), "v": v.name(), "fits": true, "n_ctx": n_ctx, "ngl": s.ngl, "ts": s.ts,
                        "devices": devs, "args": args })
            }
        };
        rows.push(row);
    }
    if cli.json {
        return print_json(&json!({
            "model": model, "arch": shape.arch, "n_layer": shape.layers.len(), "n_ctx_train": shape.n_ctx_train,
            "config": { "n_ctx": cfg.n_ctx, "n_seq_max": cfg.n_seq_max, "kv_unified": cfg.kv_unified, "n_batch": cfg.n_batch, "n_ubatch": cfg.n_ubatch, "swa_full": cfg.swa_full },
            "devices": devices, "weights": fit::weights_json(&w), "notes": shape.notes, "plans": rows,
        }));
    }
    println!(
        "{} ({}, {} layers; weights {:.1} MiB): {}",
        model.display(),
        shape.arch,
        shape.layers.len(),
        mib(w.file_total),
        if cfg.n_ctx == 0 {
            "the largest context on these devices".to_string()
        } else {
            format!("context {}", cfg.n_ctx)
        }
    );
    for d in &devices {
        println!("  {:<28} {:>10.0} MiB", d.name, mib(d.budget));
    }
    for r in &rows {
        let pair = format!("{}/{}", r["k"].as_str().unwrap(), r["v"].as_str().unwrap());
        if let Some(e) = r["error"].as_str() {
            println!("\n{pair}: refused: {e}");
            continue;
        }
        if r["fits"] == false {
            println!(
                "\n{pair}: does not fit (not even 256 tokens of context, or the weights alone)"
            );
            continue;
        }
        println!("\n{pair}: context {}", r["n_ctx"]);
        for d in r["devices"].as_array().unwrap() {
            let (n, first) = (
                d["layers"].as_u64().unwrap(),
                d["first_layer"].as_u64().unwrap(),
            );
            let layers = match n {
                0 => "no layers".to_string(),
                1 => format!("layer {first}"),
                _ => format!("layers {first}-{}", first + n - 1),
            };
            println!(
                "  {:<28} {:<14}{:<8} KV {:>9.2} MiB, weights {:>8.1}, compute {:>6.1}: {:>8.1} of {:.0} MiB",
                d["name"].as_str().unwrap(),
                layers,
                if d["output"] == true { " +output" } else { "" },
                mib(d["kv_bytes"].as_u64().unwrap()),
                mib(d["weights_bytes"].as_u64().unwrap()),
                mib(d["compute_bytes"].as_u64().unwrap()),
                mib(d["total_bytes"].as_u64().unwrap()),
                mib(d["budget"].as_u64().unwrap()),
            );
        }
        let args: Vec<String> = r["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        println!(
            "  llama-server -m {} {}",
            shell_quote(&model.display().to_string()),
            args.join(" ")
        );
    }
    println!("\nworkers: ggml-rpc-server --host HOST --port PORT on each, built from this repository (a worker without the tbq types is refused by name)");
    for n in &shape.notes {
        println!("note: {n}");
    }
    Ok(())
}

/// The pairs `plan` sizes: -ctk/-ctv's, or the usual six.
fn plan_pairs(profile: &Profile) -> Result<Vec<(CacheType, CacheType)>> {
    Ok(match (&profile.cache_type_k, &profile.cache_type_v) {
        (None, None) => [
            "f16/f16",
            "q8_0/q8_0",
            "q4_0/q4_0",
            "tbq4_0/f16",
            "tbq4_0/tbq3_0",
            "tbq3_0/tbq3_0",
        ]
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('/').unwrap();
            (CacheType::parse(k).unwrap(), CacheType::parse(v).unwrap())
        })
        .collect(),
        (k, v) => {
            let parse = |t: &Option<String>| {
                CacheType::parse(t.as_deref().unwrap_or("f16"))
                    .map_err(|e| fail(Exit::Input, e.to_string()))
            };
            vec![(parse(k)?, parse(v)?)]
        }
    })
}

/// `plan --fit`: sizes every measured pair, picks one by `fit::choose`, prints llama-server's
/// arguments (the rule is in PLAN_HELP and fit.rs).
fn cmd_fit(
    cli: &Cli,
    a: &PlanArgs,
    model: &Path,
    shape: &ModelShape,
    cfg: &CacheConfig,
    profile: &Profile,
) -> Result<()> {
    if a.budget.is_none() && a.gpu_memory.is_none() {
        return Err(fail(Exit::Usage, "--fit needs a budget")
            .fix("--budget SIZE (the KV cache alone) or --gpu-memory SIZE (a GPU's free memory), e.g. --fit -c 32768 --budget 2GiB")
            .into());
    }
    let dir = a
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(quality::DEFAULT_RESULTS));
    let results = quality::load(&dir).map_err(|e| {
        fail(Exit::Input, format!("{e:#}"))
            .fix("point --results (or TBQ_RESULTS) at a folder of tbq-validate ppl results: DIR/<model>/ppl/results.json")
    })?;
    if results.is_empty() {
        return Err(fail(
            Exit::Input,
            format!("no <model>/ppl/results.json with a q4_0/q4_0 row under {}", dir.display()),
        )
        .fix("run tbq-validate ppl -o DIR/<model>/ppl (with q4_0/q4_0 among the pairs), then --results DIR")
        .into());
    }
    let ranking = quality::rank(&results, model, a.worst_case);
    let parse = |t: &Option<String>| {
        t.as_deref()
            .map(|s| CacheType::parse(s).map_err(|e| fail(Exit::Input, e.to_string())))
            .transpose()
    };
    let (only_k, only_v) = (parse(&profile.cache_type_k)?, parse(&profile.cache_type_v)?);
    let n_ctx = if cfg.n_ctx == 0 {
        shape.n_ctx_train
    } else {
        cfg.n_ctx
    };
    let weights = match a.gpu_memory {
        Some(_) => Some(
            fit::Weights::open(model, shape)
                .map_err(|e| fail(Exit::Input, format!("{}: {e:#}", model.display())))?,
        ),
        None => None,
    };
    let compute = weights
        .as_ref()
        .map(|w| fit::compute_estimate(w, shape, cfg));
    let device = a.gpu_memory.map(|free| fit::Device {
        free,
        margin: a.fit_target << 20,
    });
    let n_layer = shape.layers.len() as u32;
    let (head_k, head_v) = (shape.layers[0].head_k, shape.layers[0].head_v);
    let mut cands = Vec::new();
    // the uniform pairs, then this model's own per-layer allocations
    let uniform = ranking
        .scores
        .iter()
        .map(|&(k, v, score)| (k, v, None, score));
    let allocated = ranking
        .allocations
        .iter()
        .map(|(k, v, spec, score)| (*k, *v, Some(spec.clone()), *score));
    for (k, v, layers, score) in uniform.chain(allocated) {
        if only_k.is_some_and(|t| t != k) || only_v.is_some_and(|t| t != v) {
            continue;
        }
        let mut c = fit::Candidate {
            k: k.name().into(),
            v: v.name().into(),
            layers: layers.clone(),
            score,
            kv_bytes: 0,
            bits: (k.bits_stored(head_k), v.bits_stored(head_v)),
            kv_fits: false,
            ngl: None,
            device_bytes: None,
            full_offload: None,
            refused: None,
        };
        let sized = tbq::plan::LayerTypes::with_spec(k, v, layers.as_deref().unwrap_or(""))
            .and_then(|types| Ok((tbq::plan::kv_bytes_layers(shape, &types, cfg)?, types)));
        match sized {
            Err(e) => c.refused = Some(e.to_string()),
            Ok((kv, types)) => {
                c.kv_bytes = kv.total();
                c.kv_fits = a.budget.map_or(true, |b| kv.total() <= b);
                if let (Some(w), Some(d), Some(comp)) = (&weights, device, compute) {
                    let per = fit::kv_per_layer(shape, &types, &kv);
                    let (n, b) =
                        fit::layers_that_fit(w, &per, comp, d.free.saturating_sub(d.margin));
                    c.ngl = Some(n);
                    c.device_bytes = Some(b);
                    c.full_offload = Some(n == n_layer + 1);
                }
            }
        }
        cands.push(c);
    }
    let (cands, pick) = fit::choose(cands, device.is_some());
    let chosen = pick.map(|i| &cands[i]);
    let args = chosen.map(|c| fit::server_args(c, cfg, n_ctx, profile.parallel));
    let command = args.as_ref().map(|a| {
        format!(
            "llama-server -m {} {}",
            shell_quote(&model.display().to_string()),
            a.join(" ")
        )
    });
    const PER_LAYER: &str = "+L: a per-layer allocation (--cache-type-layers) measured on this model; they are model-specific, so another model is offered uniform pairs: `tbq-validate calibrate -m MODEL` finds one for it";
    let mib = |b: u64| b as f64 / 1048576.0;
    if cli.json {
        print_json(&json!({
            "model": model, "arch": shape.arch, "n_layer": n_layer, "n_ctx": n_ctx,
            "config": { "n_seq_max": cfg.n_seq_max, "kv_unified": cfg.kv_unified, "n_batch": cfg.n_batch, "n_ubatch": cfg.n_ubatch, "swa_full": cfg.swa_full },
            "budget": a.budget, "gpu_memory": a.gpu_memory, "fit_target_mib": device.map(|_| a.fit_target),
            "quality": { "score": "mean KLD vs f16/f16 divided by q4_0/q4_0's on the same model", "source": ranking.basis, "results": dir },
            "weights": weights.as_ref().map(fit::weights_json), "compute_estimate": compute,
            "candidates": cands, "choice": chosen, "args": args, "command": command,
            "per_layer_types": chosen.and_then(|c| c.layers.clone()), "notes": [PER_LAYER],
        }))?;
    } else {
        println!(
            "{} ({}, {n_layer} layers): context {n_ctx}, {} slot(s){}",
            model.display(),
            shape.arch,
            cfg.n_seq_max,
            if cfg.kv_unified {
                ", unified"
            } else {
                ", per-slot streams"
            }
        );
        println!(
            "quality: mean KLD vs f16/f16 ÷ q4_0/q4_0's, {}",
            ranking.basis.describe()
        );
        if let Some(b) = a.budget {
            println!("budget: KV cache ≤ {:.2} MiB", mib(b));
        }
        if let (Some(d), Some(w), Some(c)) = (device, &weights, compute) {
            println!(
                "GPU: {:.0} MiB free, {} MiB left free (--fit-target); weights {:.1} MiB (output layer {:.1}, on the CPU {:.1}), compute ≈ {:.1} MiB",
                mib(d.free), a.fit_target, mib(w.file_total), mib(w.output), mib(w.input), mib(c)
            );
            if w.n_expert > 0 {
                println!("note: a MoE model ({} experts): upstream --fit first moves the experts to the CPU; this plan places whole layers", w.n_expert);
            }
        }
        println!();
        print!(
            "{:<16} {:>9} {:>10} {:>11}",
            "K/V", "×q4_0", "bits", "KV MiB"
        );
        if device.is_some() {
            print!(" {:>6} {:>9}", "-ngl", "GPU MiB");
        }
        println!();
        for (i, c) in cands.iter().enumerate() {
            let pair = format!(
                "{}/{}{}",
                c.k,
                c.v,
                if c.layers.is_some() { " +L" } else { "" }
            );
            if let Some(r) = &c.refused {
                println!("{pair:<16} refused: {r}");
                continue;
            }
            print!(
                "{pair:<16} {:>9.3} {:>13} {:>11.2}",
                c.score,
                format!("{}/{}", c.bits.0, c.bits.1),
                mib(c.kv_bytes)
            );
            if let (Some(n), Some(b)) = (c.ngl, c.device_bytes) {
                print!(" {:>6} {:>9.1}", format!("{n}/{}", n_layer + 1), mib(b));
            }
            let mark = if Some(i) == pick {
                "  <- choice"
            } else if !c.kv_fits {
                "  over --budget"
            } else {
                ""
            };
            println!("{mark}");
        }
        println!();
        match (chosen, &command) {
            (Some(c), Some(cmd)) => {
                println!(
                    "choice: {}/{}{} ({:.3}× q4_0's mean KLD; KV cache {:.2} MiB{})",
                    c.k,
                    c.v,
                    c.layers
                        .as_deref()
                        .map(|l| format!(" with --cache-type-layers {l}"))
                        .unwrap_or_default(),
                    c.score,
                    mib(c.kv_bytes),
                    match c.ngl {
                        Some(n) if n == n_layer + 1 => " ; every layer on the GPU".to_string(),
                        Some(n) => format!("; {n} of {} layers on the GPU", n_layer + 1),
                        None => String::new(),
                    }
                );
                println!("  {cmd}");
            }
            _ => println!("choice: none fits"),
        }
        println!("note: {PER_LAYER}");
        for n in &shape.notes {
            println!("note: {n}");
        }
    }
    if chosen.is_none() {
        let smallest = cands
            .iter()
            .filter(|c| c.refused.is_none())
            .min_by_key(|c| c.kv_bytes);
        let fix = match smallest {
            Some(s) => format!(
                "the smallest measured pair, {}/{}, needs {:.2} MiB of KV cache at -c {n_ctx}: lower -c, or raise the budget (tbq-agent plan --ctk {} --ctv {} --budget SIZE shows the largest context that fits)",
                s.k, s.v, mib(s.kv_bytes), s.k, s.v
            ),
            None => "no measured pair can hold this model's heads".to_string(),
        };
        return Err(fail(
            Exit::Input,
            "no measured K/V pair fits the budget at this context",
        )
        .fix(fix)
        .into());
    }
    Ok(())
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
