//! The file tools (`read_file`, `write_file`, `list_files`), confined to the workspace.
//!
//! A path is resolved against the workspace lexically first (so `../x` and `/etc/passwd` are
//! refused without touching the disk), then the deepest part that exists is canonicalised, so
//! that a symbolic link inside the workspace cannot lead outside it either.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The workspace folder (canonical).
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

/// Bytes `read_file` returns at most; the model's context is small.
pub const READ_CAP: usize = 16 * 1024;

impl Workspace {
    /// Opens (and creates) the workspace folder.
    pub fn open(root: &Path) -> Result<Workspace> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the workspace {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("resolving the workspace {}", root.display()))?;
        Ok(Workspace { root })
    }

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` inside the workspace, or an error that says why not.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let rel = rel.trim();
        let p = Path::new(if rel.is_empty() { "." } else { rel });
        let mut out = self.root.clone();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::Normal(n) => out.push(n),
                Component::ParentDir => {
                    if !out.pop() || !out.starts_with(&self.root) {
                        bail!("{rel:?} leads outside the workspace (\"..\" past its root)");
                    }
                }
                // An absolute path is accepted only if it already lies in the workspace.
                Component::RootDir | Component::Prefix(_) => {
                    if !p.starts_with(&self.root) {
                        bail!("{rel:?} is outside the workspace; use a path relative to it");
                    }
                    return self.resolve(&p.strip_prefix(&self.root)?.to_string_lossy());
                }
            }
        }
        if !out.starts_with(&self.root) {
            bail!("{rel:?} leads outside the workspace");
        }
        // Symbolic links: the deepest existing ancestor must resolve inside the workspace.
        let mut existing = out.as_path();
        while !existing.exists() {
            existing = match existing.parent() {
                Some(p) => p,
                None => break,
            };
        }
        let real = existing
            .canonicalize()
            .unwrap_or_else(|_| existing.to_path_buf());
        if !real.starts_with(&self.root) {
            bail!("{rel:?} goes through a symbolic link that leads outside the workspace");
        }
        Ok(out)
    }

    /// The text of a file (at most [`READ_CAP`] bytes).
    pub fn read(&self, rel: &str) -> Result<String> {
        let p = self.resolve(rel)?;
        let bytes = std::fs::read(&p).with_context(|| format!("reading {rel}"))?;
        let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(READ_CAP)]).into_owned();
        if bytes.len() > READ_CAP {
            s.push_str(&format!(
                "\n[cut: {} of {} bytes shown]",
                READ_CAP,
                bytes.len()
            ));
        }
        Ok(s)
    }

    /// Writes a file (creating folders), returning the bytes written.
    pub fn write(&self, rel: &str, content: &str) -> Result<usize> {
        let p = self.resolve(rel)?;
        if p == self.root {
            bail!("a file name is needed");
        }
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, content).with_context(|| format!("writing {rel}"))?;
        Ok(content.len())
    }

    /// Entries of a folder: `name/` for folders, `name (N bytes)` for files, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let p = self.resolve(rel)?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&p).with_context(|| format!("listing {rel}"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".tbq-agent" {
                continue; // the agent's own database is not the model's business
            }
            let m = e.metadata()?;
            out.push(if m.is_dir() {
                format!("{name}/")
            } else {
                format!("{name} ({} bytes)", m.len())
            });
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_absolute_paths_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(&dir.path().join("ws")).unwrap();
        assert!(ws.resolve("a/b.txt").unwrap().starts_with(ws.root()));
        assert!(ws.resolve("a/../b.txt").is_ok());
        assert!(ws.resolve("../x").is_err());
        assert!(ws.resolve("a/../../x").is_err());
        assert!(ws.resolve("/etc/passwd").is_err());
        let inside = ws.root().join("in.txt");
        assert_eq!(ws.resolve(inside.to_str().unwrap()).unwrap(), inside);
        std::os::unix::fs::symlink("/etc", ws.root().join("link")).unwrap();
        assert!(ws.resolve("link/passwd").is_err());
        assert!(ws.write("link/x", "no").is_err());
    }

    #[test]
    fn write_read_list() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        ws.write("notes/a.txt", "hello").unwrap();
        assert_eq!(ws.read("notes/a.txt").unwrap(), "hello");
        assert_eq!(ws.list(".").unwrap(), vec!["notes/"]);
        assert_eq!(ws.list("notes").unwrap(), vec!["a.txt (5 bytes)"]);
        assert!(ws.write("", "x").is_err());
    }
}
