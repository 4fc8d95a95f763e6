//! `doctor`: what is missing, and how to fix it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::config::Profile;
use crate::server;

/// The outcome of one check.
#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Stops the agent from working.
    Fail,
}

/// One check.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &str, level: Level, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        level,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Runs every check.
pub fn run(
    explicit_server: Option<&Path>,
    profile: &Profile,
    config_path: Option<&Path>,
    out_dir: &Path,
) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match config_path {
        Some(p) => check("config", Level::Ok, format!("{}", p.display()), None),
        None => check(
            "config",
            Level::Warn,
            format!("no config file at {}", crate::config::default_config_path().map(|p| p.display().to_string()).unwrap_or_default()),
            Some("tbq-agent config --example > ~/.config/tbq-agent/config.toml, then edit the model path"),
        ),
    });

    let mut server_bin: Option<PathBuf> = None;
    match server::find_llama_server(explicit_server) {
        Ok(bin) => {
            let version = Command::new(&bin).arg("--version").output();
            match version {
                Ok(o) => {
                    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
                    let v = text.lines().find(|l| l.starts_with("version:")).unwrap_or("version unknown").trim().to_string();
                    out.push(check("llama-server", Level::Ok, format!("{} ({v})", bin.display()), None));
                    let help = Command::new(&bin).arg("--help").output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
                    out.push(if help.contains("tbq4_0") {
                        check("tbq cache types", Level::Ok, "llama-server accepts tbq4_0 / tbq3_0", None)
                    } else {
                        check("tbq cache types", Level::Warn, "this llama-server does not list tbq4_0 among its cache types",
                            Some("build the patched llama.cpp from this repository (scripts/build-llama.sh) to use tbq4_0/tbq3_0"))
                    });
                    server_bin = Some(bin);
                }
                Err(e) => out.push(check("llama-server", Level::Fail, format!("{} does not run: {e}", bin.display()),
                    Some("rebuild it (scripts/build-llama.sh), or point TBQ_LLAMA_SERVER at a working binary"))),
            }
        }
        Err(e) => {
            let fix = crate::error::classify(&e).1.map(str::to_string);
            out.push(Check {
                name: "llama-server".into(),
                level: Level::Fail,
                detail: format!("{e:#}"),
                fix,
            });
        }
    }
    let _ = server_bin;

    let gpus = server::nvidia_gpus();
    if gpus.is_empty() {
        let has_smi = Command::new("nvidia-smi").arg("-L").output().is_ok();
        out.push(check(
            "GPU",
            if profile.n_gpu_layers.unwrap_or(0) > 0 { Level::Warn } else { Level::Ok },
            if has_smi { "nvidia-smi found no usable GPU" } else { "no nvidia-smi: running on the CPU" },
            (profile.n_gpu_layers.unwrap_or(0) > 0).then_some("the profile offloads layers (n_gpu_layers) but no GPU was found: install the NVIDIA driver, or set n_gpu_layers = 0"),
        ));
    } else {
        for (i, g) in gpus.iter().enumerate() {
            out.push(check(
                &format!("GPU {i}"),
                Level::Ok,
                format!(
                    "{}, driver {}, {} MiB used of {} MiB",
                    g.name,
                    g.driver,
                    g.memory_used >> 20,
                    g.memory_total >> 20
                ),
                None,
            ));
        }
    }

    match profile.model_path() {
        None => out.push(check("model", Level::Warn, "no model in the profile", Some("set model = \"...\" in the profile or pass --model PATH (scripts/fetch-model.sh gemma3-270m fetches a small one)"))),
        Some(m) => match server::check_model(&m) {
            Err(e) => {
                let fix = crate::error::classify(&e).1.map(str::to_string);
                out.push(Check { name: "model".into(), level: Level::Fail, detail: format!("{e:#}"), fix });
            }
            Ok(()) => match tbq::plan::ModelShape::open(&m) {
                Err(e) => out.push(check("model", Level::Fail, format!("{}: {e}", m.display()), Some("the GGUF header is unreadable: download the model again"))),
                Ok(shape) => {
                    let size = std::fs::metadata(&m).map(|x| x.len()).unwrap_or(0);
                    let l = shape.layers[0];
                    out.push(check("model", Level::Ok, format!(
                        "{} ({}, {:.0} MiB): {} layers, {} KV heads × {} (K) / {} (V){}",
                        m.display(), shape.arch, size as f64 / 1048576.0, shape.layers.len(), l.n_head_kv, l.head_k, l.head_v,
                        if shape.has_swa() { format!(", sliding window {}", shape.n_swa) } else { String::new() }
                    ), None));
                    let tbq_ok = shape.check_type(tbq::plan::CacheType::Tbq(tbq::TbqType::Tbq4_0), false).is_ok();
                    let wants_tbq = [&profile.cache_type_k, &profile.cache_type_v].iter().any(|t| t.as_deref().is_some_and(|t| t.starts_with("tbq")));
                    if !tbq_ok {
                        out.push(check("tbq for this model", if wants_tbq { Level::Fail } else { Level::Warn },
                            format!("head size {} is not a multiple of 64: llama.cpp refuses tbq4_0/tbq3_0 for it", l.head_k),
                            Some("use f16, q8_0 or q4_0 cache types for this model")));
                    }
                    for n in &shape.notes {
                        out.push(check("planner", Level::Warn, n.clone(), None));
                    }
                }
            },
        },
    }

    if let Some((total, avail)) = server::meminfo() {
        let level = if avail < 1 << 30 {
            Level::Warn
        } else {
            Level::Ok
        };
        out.push(check("memory", level, format!("{} MiB available of {} MiB", avail >> 20, total >> 20),
            (level == Level::Warn).then_some("less than 1 GiB free: close other programs or plan a smaller context (tbq-agent plan)")));
    }
    if let Some(free) = disk_free(out_dir) {
        let level = if free < 100 << 20 {
            Level::Warn
        } else {
            Level::Ok
        };
        out.push(check(
            "disk",
            level,
            format!("{} MiB free at {}", free >> 20, out_dir.display()),
            (level == Level::Warn).then_some(
                "research writes logs and results there: free some space or use --out elsewhere",
            ),
        ));
    }
    out
}

/// Free bytes on the filesystem holding `p` (or its nearest existing parent).
pub fn disk_free(p: &Path) -> Option<u64> {
    let mut p = p.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0)
        .then(|| s.f_bavail as u64 * s.f_frsize as u64)
}
