//! The configuration file and server profiles.
//!
//! `$XDG_CONFIG_HOME/tbq-agent/config.toml` (usually `~/.config/tbq-agent/config.toml`; override
//! with `--config` or `TBQ_AGENT_CONFIG`) holds named profiles of llama-server settings:
//!
//! ```toml
//! llama_server = "/opt/llama/bin/llama-server"   # optional; else $TBQ_LLAMA_SERVER, PATH, ./build/bin
//! default_profile = "gemma"
//!
//! [profiles.gemma]
//! model = "~/models/gemma-3-270m-q4_k_m.gguf"
//! ctx_size = 32768
//! cache_type_k = "tbq4_0"
//! cache_type_v = "tbq3_0"
//! flash_attn = "on"
//! n_gpu_layers = 99
//! port = 8080
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{fail, Exit};

/// A set of llama-server settings. Every field is optional: unset fields keep llama-server's
/// defaults. Field names follow llama-server's long options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The GGUF model (`-m`). `~` is expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Context size in tokens (`-c`); 0 = the model's training context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<u32>,
    /// K cache type (`-ctk`): f16, q8_0, q4_0, tbq4_0, tbq3_0, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_type_k: Option<String>,
    /// V cache type (`-ctv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_type_v: Option<String>,
    /// Flash attention (`-fa`): "on", "off" or "auto".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash_attn: Option<String>,
    /// Layers offloaded to the GPU (`-ngl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_gpu_layers: Option<i32>,
    /// CPU threads for generation (`-t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// CPU threads for prompt processing (`-tb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_batch: Option<u32>,
    /// Logical batch size (`-b`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Physical batch size (`-ub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ubatch_size: Option<u32>,
    /// Server slots (`-np`). Unset: llama-server's auto (4 slots, unified cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    /// One KV stream shared by all slots (`-kvu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_unified: Option<bool>,
    /// Full-size sliding-window cache (`--swa-full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa_full: Option<bool>,
    /// Memory-map the model (`--no-mmap` when false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmap: Option<bool>,
    /// Lock the model in RAM (`--mlock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlock: Option<bool>,
    /// Draft model for speculative decoding (`-md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_model: Option<PathBuf>,
    /// Maximum draft tokens (`--draft-max`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_max: Option<u32>,
    /// RPC workers (`--rpc`), each `HOST:PORT` of a `ggml-rpc-server`: `serve` asks each one
    /// before starting llama-server (it answers, speaks this protocol, and has the tbq types when
    /// a cache type is tbq).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<String>,
    /// How the offloaded layers are shared among the devices (`--tensor-split`, e.g. "3,1,2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_split: Option<String>,
    /// Listen address (`--host`); the agent's default is 127.0.0.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Listen port (`--port`); 0 = pick a free one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Further arguments passed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// The default listen address: never exposed beyond this machine unless asked.
pub const DEFAULT_HOST: &str = "127.0.0.1";

impl Profile {
    /// `self` with every field `over` sets replaced by `over`'s value.
    pub fn merged(&self, over: &Profile) -> Profile {
        macro_rules! pick {
            ($($f:ident),*) => { Profile { $($f: over.$f.clone().or_else(|| self.$f.clone()),)*
                rpc: if over.rpc.is_empty() { self.rpc.clone() } else { over.rpc.clone() },
                extra_args: if over.extra_args.is_empty() { self.extra_args.clone() } else { over.extra_args.clone() } } };
        }
        pick!(
            model,
            ctx_size,
            cache_type_k,
            cache_type_v,
            flash_attn,
            n_gpu_layers,
            threads,
            threads_batch,
            batch_size,
            ubatch_size,
            parallel,
            kv_unified,
            swa_full,
            mmap,
            mlock,
            draft_model,
            draft_max,
            tensor_split,
            host,
            port
        )
    }

    /// The model path with `~` expanded.
    pub fn model_path(&self) -> Option<PathBuf> {
        self.model.as_deref().map(expand_tilde)
    }

    /// The listen address.
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or(DEFAULT_HOST)
    }

    /// llama-server's arguments for this profile (the port as given).
    pub fn server_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        if let Some(m) = self.model_path() {
            push("--model", m.display().to_string());
        }
        if let Some(v) = self.ctx_size {
            push("--ctx-size", v.to_string());
        }
        if let Some(v) = &self.cache_type_k {
            push("--cache-type-k", v.clone());
        }
        if let Some(v) = &self.cache_type_v {
            push("--cache-type-v", v.clone());
        }
        if let Some(v) = &self.flash_attn {
            push("--flash-attn", v.clone());
        }
        if let Some(v) = self.n_gpu_layers {
            push("--n-gpu-layers", v.to_string());
        }
        if let Some(v) = self.threads {
            push("--threads", v.to_string());
        }
        if let Some(v) = self.threads_batch {
            push("--threads-batch", v.to_string());
        }
        if let Some(v) = self.batch_size {
            push("--batch-size", v.to_string());
        }
        if let Some(v) = self.ubatch_size {
            push("--ubatch-size", v.to_string());
        }
        if let Some(v) = self.parallel {
            push("--parallel", v.to_string());
        }
        if let Some(m) = &self.draft_model {
            push("--model-draft", expand_tilde(m).display().to_string());
        }
        if let Some(v) = self.draft_max {
            push("--draft-max", v.to_string());
        }
        if !self.rpc.is_empty() {
            push("--rpc", self.rpc.join(","));
        }
        if let Some(v) = &self.tensor_split {
            push("--tensor-split", v.clone());
        }
        push("--host", self.host().to_string());
        if let Some(p) = self.port {
            push("--port", p.to_string());
        }
        if self.kv_unified == Some(true) {
            a.push("--kv-unified".into());
        }
        if self.swa_full == Some(true) {
            a.push("--swa-full".into());
        }
        if self.mmap == Some(false) {
            a.push("--no-mmap".into());
        }
        if self.mlock == Some(true) {
            a.push("--mlock".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Whether a cache type of this profile is one of tbq's (a worker must then have them).
    pub fn uses_tbq(&self) -> bool {
        let tbq = |t: &Option<String>| t.as_deref().is_some_and(|t| t.starts_with("tbq"));
        tbq(&self.cache_type_k)
            || tbq(&self.cache_type_v)
            || self.extra_args.iter().any(|a| a.contains("tbq"))
    }

    /// The settings that differ from `base`, as `key=value` (for labels and reports).
    pub fn diff_label(&self, base: &Profile) -> String {
        let me = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(base).unwrap_or_default();
        let mut out = String::new();
        if let (Some(me), Some(b)) = (me.as_object(), b.as_object()) {
            for (k, v) in me {
                if b.get(k) != Some(v) && k != "port" {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}={}", v.to_string().trim_matches('"'));
                }
            }
        }
        if out.is_empty() {
            "base".into()
        } else {
            out
        }
    }

    /// The KV-cache settings the planner needs, as llama-server derives them: unset `-np` means
    /// 4 slots sharing a unified cache; an explicit `-np` means separate streams unless `-kvu`.
    pub fn cache_config(&self) -> tbq::plan::CacheConfig {
        let mut c = tbq::plan::CacheConfig::server(self.ctx_size.unwrap_or(0));
        if let Some(np) = self.parallel {
            c.n_seq_max = np.max(1);
            c.kv_unified = self.kv_unified.unwrap_or(false);
        } else if let Some(u) = self.kv_unified {
            c.kv_unified = u;
        }
        if let Some(b) = self.batch_size {
            c.n_batch = b;
        }
        if let Some(u) = self.ubatch_size {
            c.n_ubatch = u;
        }
        c.swa_full = self.swa_full.unwrap_or(false);
        c
    }
}

/// The configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of llama-server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_server: Option<PathBuf>,
    /// The profile used when none is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// Named profiles.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// `tbq-agent chat` settings (`[chat]`, `[chat.shell]`, …).
    #[serde(default)]
    pub chat: crate::chat::ChatConfig,
}

/// Where the configuration file lives by default.
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "tbq-agent").map(|d| d.config_dir().join("config.toml"))
}

impl Config {
    /// Loads `path` (or the default path). A missing default file is an empty configuration; a
    /// missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => match default_config_path() {
                Some(p) => (p, false),
                None => return Ok((Config::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((Config::default(), None))
            }
            Err(e) => {
                return Err(crate::error::wrap(
                    e,
                    fail(
                        Exit::Input,
                        format!("cannot read the config file {}", path.display()),
                    )
                    .fix("check the path given to --config (or TBQ_AGENT_CONFIG)"),
                ))
            }
        };
        let cfg = parse_toml::<Config>(&text, &path)?;
        Ok((cfg, Some(path)))
    }

    /// The profile `name` (or the default one; or an empty profile when there is none).
    pub fn profile(&self, name: Option<&str>) -> Result<Profile> {
        let name = name.or(self.default_profile.as_deref());
        match name {
            None => Ok(self.profiles.values().next().cloned().filter(|_| self.profiles.len() == 1).unwrap_or_default()),
            Some(n) => self.profiles.get(n).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                fail(Exit::Input, format!("no profile named {n:?} in the config file"))
                    .fix(if known.is_empty() {
                        "add a [profiles.NAME] table to the config file (tbq-agent config --example prints one)".to_string()
                    } else {
                        format!("known profiles: {}", known.join(", "))
                    })
                    .into()
            }),
        }
    }
}

/// Parses TOML, turning errors into an input failure that names the file, line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str::<T>(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        let msg = e.message().trim().to_string();
        fail(
            Exit::Input,
            format!("{}:{line}:{col}: {msg}", path.display()),
        )
        .fix(format!(
            "edit {} at line {line}, column {col}",
            path.display()
        ))
        .into()
    })
}

/// 1-based line and column of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// `~/x` → `$HOME/x`.
pub fn expand_tilde(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    p.to_path_buf()
}

/// An example configuration file, printed by `tbq-agent config --example`.
pub const EXAMPLE: &str = r#"# tbq-agent configuration: ~/.config/tbq-agent/config.toml
# llama_server = "/opt/llama.cpp/build/bin/llama-server"  # else $TBQ_LLAMA_SERVER, PATH, ./build/bin
default_profile = "gemma"

[profiles.gemma]
model = "~/.cache/tbq/models/gemma-3-270m-q4_k_m.gguf"
ctx_size = 32768
cache_type_k = "tbq4_0"
cache_type_v = "tbq3_0"
flash_attn = "on"
n_gpu_layers = 99
# threads = 8
# batch_size = 2048
# ubatch_size = 512
# parallel = 1
host = "127.0.0.1"
port = 8080
# extra_args = ["--jinja"]

# Layers over this machine and ggml-rpc-server workers (`tbq-agent plan --device` prints the split).
# `serve` asks each worker before starting llama-server: it must answer, and hold the tbq types.
# [profiles.big]
# model = "~/models/llama-3.1-70b-q4_k_m.gguf"
# cache_type_k = "tbq4_0"
# cache_type_v = "tbq3_0"
# flash_attn = "on"
# n_gpu_layers = 99
# rpc = ["10.0.0.2:50052", "10.0.0.3:50052"]
# tensor_split = "10,30,40"
"#;

/// `tbq-agent config --example`: the profiles, then the `[chat]` tables.
pub fn example() -> String {
    format!("{EXAMPLE}{}", crate::chat::settings::EXAMPLE)
}

/// Reads `path`'s configuration for display (`tbq-agent config`).
pub fn describe(cfg: &Config, path: Option<&Path>) -> Result<String> {
    let mut s = String::new();
    match path {
        Some(p) => writeln!(s, "# {}", p.display())?,
        None => writeln!(
            s,
            "# no config file (looked for {}); `tbq-agent config --example` prints one",
            default_config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )?,
    }
    s.push_str(&toml::to_string_pretty(cfg).context("serializing the configuration")?);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_builds_arguments() {
        let cfg: Config = parse_toml(EXAMPLE, Path::new("example.toml")).unwrap();
        let p = cfg.profile(None).unwrap();
        let args = p.server_args().join(" ");
        assert!(
            args.contains("--cache-type-k tbq4_0 --cache-type-v tbq3_0 --flash-attn on"),
            "{args}"
        );
        assert!(args.contains("--host 127.0.0.1 --port 8080"), "{args}");
        assert!(!args.contains('~'), "{args}");
    }

    #[test]
    fn example_rpc_profile_passes_the_workers_and_split() {
        // the example's commented-out [profiles.big], uncommented
        let big: String = EXAMPLE
            .split("# [profiles.big]")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!("[profiles.big]{big}");
        let cfg: Config = parse_toml(&text, Path::new("example.toml")).unwrap();
        let p = cfg.profile(Some("big")).unwrap();
        assert!(p.uses_tbq());
        let args = p.server_args().join(" ");
        assert!(
            args.contains("--rpc 10.0.0.2:50052,10.0.0.3:50052 --tensor-split 10,30,40"),
            "{args}"
        );
        // a command-line --rpc replaces the profile's workers
        let over = Profile {
            rpc: vec!["127.0.0.1:1".into()],
            ..Default::default()
        };
        assert_eq!(p.merged(&over).rpc, over.rpc);
        assert_eq!(p.merged(&Profile::default()).rpc, p.rpc);
    }

    #[test]
    fn example_with_chat_tables_parses() {
        let cfg: Config = parse_toml(&example(), Path::new("example.toml")).unwrap();
        assert_eq!(
            cfg.chat.workspace.as_deref(),
            Some(Path::new("~/tbq-workspace"))
        );
        assert!(!cfg.chat.web.enabled);
        assert!(cfg.chat.shell.allow.iter().any(|a| a == "ls *"));
        // Unset keys keep their defaults, the deny list among them.
        assert_eq!(
            cfg.chat.shell.deny,
            crate::chat::settings::ShellConfig::default().deny
        );
        // A typo in a safety setting is an error, not a silently ignored key.
        let e = parse_toml::<Config>("[chat.shell]\nalow = []\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("alow"), "{e}");
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "default_profile = \"x\"\n[profiles.x]\nctx_size = \"big\"\n";
        let e = parse_toml::<Config>(text, Path::new("c.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("c.toml:3:12:"), "{s}");
        let text = "[profiles.x]\nctx_sise = 4\n";
        let s = parse_toml::<Config>(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("c.toml:2:1") && s.contains("ctx_sise"), "{s}");
    }

    #[test]
    fn merge_and_planner_settings() {
        let base = Profile {
            ctx_size: Some(4096),
            threads: Some(2),
            ..Default::default()
        };
        let over = Profile {
            threads: Some(4),
            parallel: Some(1),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!((m.ctx_size, m.threads), (Some(4096), Some(4)));
        assert_eq!(m.diff_label(&base), "parallel=1 threads=4");
        let c = m.cache_config();
        assert_eq!((c.n_ctx, c.n_seq_max, c.kv_unified), (4096, 1, false));
        let c = base.cache_config();
        assert_eq!((c.n_seq_max, c.kv_unified), (4, true));
    }
}
