//! Options every subcommand shares, and where things are by default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::llama::Tools;

/// The repository this binary was built from (its default places are relative to it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `$TBQ_CACHE` or `~/.cache/tbq`: where scripts/fetch-model.sh keeps models.
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("TBQ_CACHE") {
        return c.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/tbq")
}

fn default_bin_dir() -> String {
    let build = std::env::var_os("TBQ_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build"));
    build.join("bin").display().to_string()
}

fn default_model() -> String {
    cache_dir()
        .join("models/gemma-3-270m-q4_k_m.gguf")
        .display()
        .to_string()
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// GGUF model to validate. Default: Gemma 3 270M Q4_K_M as scripts/fetch-model.sh
    /// gemma3-270m stores it (head_dim 256: two tbq blocks per head).
    #[arg(short, long, env = "TBQ_MODEL", default_value_t = default_model())]
    pub model: String,

    /// Folder of the patched llama.cpp binaries (llama-perplexity, llama-server). Default:
    /// $TBQ_BUILD_DIR/bin, else build/bin of this repository, where scripts/build-llama.sh puts
    /// them.
    #[arg(long, env = "TBQ_BIN_DIR", default_value_t = default_bin_dir())]
    pub bin_dir: String,

    /// CPU threads for llama.cpp.
    #[arg(short, long, env = "TBQ_THREADS", default_value_t = default_threads())]
    pub threads: usize,

    /// Output folder: per-configuration results (for resuming), logs, JSON, markdown, PNG.
    /// Default: build/validation/<model file stem>/<subcommand> in this repository.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

impl Common {
    pub fn tools(&self) -> Tools {
        Tools::new(PathBuf::from(&self.bin_dir))
    }

    pub fn model_path(&self) -> Result<PathBuf> {
        let p = PathBuf::from(&self.model);
        if !p.is_file() {
            bail!(
                "model not found: {} (fetch the default with scripts/fetch-model.sh gemma3-270m, or pass --model)",
                p.display()
            );
        }
        Ok(p)
    }

    pub fn out_dir(&self, sub: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let stem = Path::new(&self.model)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            repo_root().join("build/validation").join(stem).join(sub)
        })
    }
}

/// A file's identity for resuming: its path and size (cheap, and enough to notice a different
/// model or text behind the same name in practice).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: String,
    pub bytes: u64,
}

impl FileId {
    pub fn of(p: &Path) -> Result<FileId> {
        let meta = std::fs::metadata(p)?;
        let path = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(FileId {
            path: path.display().to_string(),
            bytes: meta.len(),
        })
    }

    pub fn name(&self) -> String {
        Path::new(&self.path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Seconds since the Unix epoch, for "finished at" stamps.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Prints a line above the progress bars, or on stderr when there are none (not a terminal).
pub fn say(pb: &ProgressBar, msg: impl AsRef<str>) {
    if pb.is_hidden() {
        eprintln!("{}", msg.as_ref());
    } else {
        pb.println(msg.as_ref());
    }
}

pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>12.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        .unwrap()
        .progress_chars("=> ")
}
