//! The OS sandbox around shell commands: bubblewrap (`bwrap`), where the machine has it.
//!
//! One value, [`SandboxPolicy`], decides the whole sandbox, and one function turns it into
//! bwrap's arguments ([`SandboxPolicy::bwrap_args`]): the workspace read-write (but for its
//! `.git` and `.tbq-agent` folders), the rest of the file system read-only, a private `/tmp`,
//! the home directory's secrets hidden (an empty directory or an unreadable file in their
//! place), no network unless the policy allows it (a network namespace of its own, with only
//! its own loopback), its own PID namespace, a new session (no terminal injection), and death
//! with the agent. The pattern policy decides what may run; the sandbox limits what a command
//! that runs can do, including one the user said "yes" to.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::{fail, Exit};

/// `[chat.shell] sandbox`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// bubblewrap where it is installed and works; the pattern policy alone (said so) where not.
    #[default]
    Auto,
    /// bubblewrap, or the shell tool refuses to start.
    Bwrap,
    /// No sandbox: the pattern policy alone.
    Off,
}

/// Paths under the home directory that hold credentials or private history.
pub const HOME_SECRETS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    ".gitconfig",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".password-store",
    ".vault-token",
    ".terraform.d",
    ".local/share/keyrings",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".mozilla",
];

/// Folders of the workspace that stay read-only inside it: git runs programs named in `.git`
/// (hooks, `core.fsmonitor`, diff drivers) on commands the allow list runs without asking, and
/// `.tbq-agent` holds the agent's own memory.
pub const WORKSPACE_PROTECTED: &[&str] = &[".git", ".tbq-agent"];

/// Everything that decides the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// Writable; everything else is read-only.
    pub workspace: PathBuf,
    /// Hidden: these exist, and the command sees an empty directory or an unreadable file.
    pub hidden: Vec<PathBuf>,
    /// Whether the command shares the machine's network.
    pub network: bool,
}

impl SandboxPolicy {
    /// The policy for `workspace`, hiding the [`HOME_SECRETS`] that exist under `home`.
    pub fn new(workspace: &Path, home: Option<&Path>, network: bool) -> SandboxPolicy {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let hidden = home
            .map(|h| {
                HOME_SECRETS
                    .iter()
                    .map(|s| h.join(s))
                    .filter(|p| p.symlink_metadata().is_ok())
                    .map(|p| canonical(&p))
                    .collect()
            })
            .unwrap_or_default();
        SandboxPolicy {
            workspace: canonical(workspace),
            hidden,
            network,
        }
    }

    /// bwrap's arguments for this policy (the command follows them).
    pub fn bwrap_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .map(OsString::from)
        .into();
        // A secret that holds the workspace is hidden first, the workspace mounted back inside
        // it, and only then is it made read-only (a read-only tmpfs could not take the mount
        // point); every other secret is hidden after the workspace, so one inside the
        // workspace is hidden too. A directory becomes an empty read-only one, a file an
        // unreadable device node.
        let (around, rest): (Vec<&PathBuf>, Vec<&PathBuf>) = self
            .hidden
            .iter()
            .partition(|h| self.workspace.starts_with(h));
        let hide = |a: &mut Vec<OsString>, h: &Path| {
            if h.is_dir() {
                a.extend(["--tmpfs".into(), h.into()]);
            } else {
                a.extend(["--ro-bind".into(), "/dev/null".into(), h.into()]);
            }
        };
        let read_only = |a: &mut Vec<OsString>, h: &Path| {
            if h.is_dir() {
                a.extend(["--remount-ro".into(), h.into()]);
            }
        };
        for h in &around {
            hide(&mut a, h);
        }
        a.extend(["--bind".into(), self.workspace.clone().into_os_string()]);
        a.push(self.workspace.clone().into_os_string());
        for h in &around {
            read_only(&mut a, h);
        }
        // Looked for at each command, so that a `.git` made by `git init` is protected from the
        // next command on.
        for name in WORKSPACE_PROTECTED {
            let p = self.workspace.join(name);
            if p.exists() {
                a.extend(["--ro-bind".into(), p.clone().into(), p.into()]);
            }
        }
        for h in rest {
            hide(&mut a, h);
            read_only(&mut a, h);
        }
        if !self.network {
            a.push("--unshare-net".into());
        }
        for flag in [
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--new-session",
        ] {
            a.push(flag.into());
        }
        a.push("--chdir".into());
        a.push(self.workspace.clone().into_os_string());
        a
    }

    /// One line for people: what the sandbox allows.
    pub fn describe(&self) -> String {
        format!(
            "bubblewrap: workspace {} read-write (not .git, .tbq-agent), the rest read-only, {} home secret(s) hidden, {}",
            self.workspace.display(),
            self.hidden.len(),
            if self.network {
                "network allowed"
            } else {
                "no network"
            }
        )
    }
}

/// Where shell commands run.
#[derive(Clone, Debug)]
pub enum Sandbox {
    /// Inside bubblewrap.
    Bwrap {
        bwrap: PathBuf,
        policy: SandboxPolicy,
    },
    /// Directly, under the pattern policy alone (why).
    Unsandboxed { why: String },
}

impl Sandbox {
    /// The sandbox `mode` asks for, checked by running `true` in it once. `auto` without a
    /// working bubblewrap gives [`Sandbox::Unsandboxed`] with the reason; `bwrap` fails.
    pub fn open(mode: SandboxMode, policy: SandboxPolicy) -> Result<Sandbox> {
        if mode == SandboxMode::Off {
            return Ok(Sandbox::Unsandboxed {
                why: "[chat.shell] sandbox = \"off\"".into(),
            });
        }
        let probe = find_bwrap()
            .ok_or_else(|| "bubblewrap (bwrap) is not installed".to_string())
            .and_then(|bwrap| match probe(&bwrap, &policy) {
                Ok(()) => Ok(bwrap),
                Err(e) => Err(format!("bubblewrap does not work here: {e}")),
            });
        match (probe, mode) {
            (Ok(bwrap), _) => Ok(Sandbox::Bwrap { bwrap, policy }),
            (Err(why), SandboxMode::Auto) => Ok(Sandbox::Unsandboxed { why }),
            (Err(why), _) => Err(fail(Exit::Input, format!("[chat.shell] sandbox = \"bwrap\": {why}"))
                .fix("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or set sandbox = \"auto\" to run without it")
                .into()),
        }
    }

    /// `sh -c script`, inside the sandbox if there is one.
    pub fn command(&self, script: &str) -> Command {
        let mut c = match self {
            Sandbox::Bwrap { bwrap, policy } => {
                let mut c = Command::new(bwrap);
                c.args(policy.bwrap_args()).arg("--").arg("sh");
                c
            }
            Sandbox::Unsandboxed { .. } => Command::new("sh"),
        };
        c.arg("-c").arg(script);
        c
    }

    /// One line for people: the sandbox, or that there is none and why.
    pub fn describe(&self) -> String {
        match self {
            Sandbox::Bwrap { policy, .. } => format!("shell sandbox: {}", policy.describe()),
            Sandbox::Unsandboxed { why } => format!(
                "shell sandbox: none ({why}); commands run under the allow/deny policy alone"
            ),
        }
    }
}

fn find_bwrap() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
}

fn probe(bwrap: &Path, policy: &SandboxPolicy) -> Result<(), String> {
    let out = Command::new(bwrap)
        .args(policy.bwrap_args())
        .arg("--")
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err.lines().next().unwrap_or("it failed").trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chat::shell::run::{run, Outcome};

    /// bubblewrap, or None with a message where it is not installed (TBQ_REQUIRE_BWRAP, set by
    /// scripts/test-agent.sh, which installs it, makes that a failure too). Installed but not
    /// working is a failure.
    fn bwrap(policy: SandboxPolicy) -> Option<Sandbox> {
        if find_bwrap().is_none() && std::env::var_os("TBQ_REQUIRE_BWRAP").is_none() {
            eprintln!(
                "SKIPPED: bubblewrap is not installed; apt-get install bubblewrap to run this test"
            );
            return None;
        }
        Some(Sandbox::open(SandboxMode::Bwrap, policy).unwrap())
    }

    fn sh(sandbox: &Sandbox, ws: &Path, script: &str) -> Outcome {
        run(script, ws, sandbox, Duration::from_secs(20), 8192).unwrap()
    }

    /// A temporary folder outside /tmp (the sandbox has a /tmp of its own, which would hide
    /// what these tests look for): a home with secrets, a workspace, a folder outside both.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        let (home, ws, outside) = (
            t.path().join("home"),
            t.path().join("ws"),
            t.path().join("outside"),
        );
        for d in [&home.join(".ssh"), &ws, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(home.join(".ssh/id_ed25519"), "SECRET-KEY").unwrap();
        std::fs::write(home.join(".netrc"), "SECRET-NETRC").unwrap();
        std::fs::write(home.join("notes.txt"), "visible").unwrap();
        (t, home, ws, outside)
    }

    #[test]
    fn secrets_are_hidden_and_only_the_workspace_but_its_git_folder_is_writable() {
        let (_t, home, ws, outside) = layout();
        let policy = SandboxPolicy::new(&ws, Some(&home), false);
        assert_eq!(policy.hidden.len(), 2, "{policy:?}");
        let Some(sb) = bwrap(policy) else { return };
        let h = home.display();
        let o = sh(&sb, &ws, &format!("cat {h}/notes.txt"));
        assert_eq!(
            (o.code, o.output.as_str()),
            (Some(0), "visible"),
            "the rest of home is readable"
        );
        let o = sh(&sb, &ws, &format!("ls -A {h}/.ssh"));
        assert_eq!(
            (o.code, o.output.as_str()),
            (Some(0), ""),
            "~/.ssh looks empty"
        );
        let o = sh(&sb, &ws, &format!("cat {h}/.ssh/id_ed25519 {h}/.netrc"));
        assert_ne!(o.code, Some(0), "{o:?}");
        assert!(!o.output.contains("SECRET"), "{o:?}");

        let o = sh(&sb, &ws, "echo made > inside.txt");
        assert_eq!(o.code, Some(0), "{o:?}");
        assert_eq!(
            std::fs::read_to_string(ws.join("inside.txt")).unwrap(),
            "made\n"
        );
        for target in [outside.join("x"), home.join("x"), home.join(".ssh/x")] {
            let o = sh(&sb, &ws, &format!("echo x > {}", target.display()));
            assert_ne!(o.code, Some(0), "{o:?}");
            assert!(
                !target.exists(),
                "{} was written from the sandbox",
                target.display()
            );
        }
        // The workspace's .git stays read-only (it appears at the next command after `git init`).
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        let o = sh(&sb, &ws, "echo '[core] fsmonitor = evil' > .git/config");
        assert_ne!(o.code, Some(0), "{o:?}");
        assert!(!ws.join(".git/config").exists());
        // /tmp is the sandbox's own: writable, gone afterwards.
        let o = sh(
            &sb,
            &ws,
            "echo x > /tmp/tbq-sandbox-probe && cat /tmp/tbq-sandbox-probe",
        );
        assert_eq!(o.code, Some(0), "{o:?}");
        assert!(!Path::new("/tmp/tbq-sandbox-probe").exists());
    }

    #[test]
    fn a_secret_inside_the_workspace_is_hidden_and_a_workspace_inside_a_secret_is_not() {
        let (_t, home, _, _) = layout();
        // The home directory is the workspace: writable, its secrets still hidden.
        let Some(sb) = bwrap(SandboxPolicy::new(&home, Some(&home), false)) else {
            return;
        };
        let o = sh(
            &sb,
            &home,
            "cat notes.txt && echo y > new.txt && cat .ssh/id_ed25519",
        );
        assert!(
            o.output.starts_with("visible") && !o.output.contains("SECRET"),
            "{o:?}"
        );
        assert!(home.join("new.txt").exists());
        // The workspace lies inside a hidden folder: it is mounted back, its siblings are not.
        let ws = home.join(".ssh/agent-ws");
        std::fs::create_dir_all(&ws).unwrap();
        let Some(sb) = bwrap(SandboxPolicy::new(&ws, Some(&home), false)) else {
            return;
        };
        let o = sh(&sb, &ws, "echo z > w.txt && cat ../id_ed25519");
        assert!(!o.output.contains("SECRET"), "{o:?}");
        assert!(ws.join("w.txt").exists(), "{o:?}");
    }

    #[test]
    fn no_network_unless_the_policy_allows_it() {
        let (_t, _, ws, _) = layout();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                drop(c)
            }
        });
        let connect = format!("bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo connected");
        let Some(closed) = bwrap(SandboxPolicy::new(&ws, None, false)) else {
            return;
        };
        let o = sh(&closed, &ws, &connect);
        assert!(
            o.code != Some(0) && !o.output.contains("connected"),
            "{o:?}"
        );
        let Some(open) = bwrap(SandboxPolicy::new(&ws, None, true)) else {
            return;
        };
        let o = sh(&open, &ws, &connect);
        assert!(o.code == Some(0) && o.output.contains("connected"), "{o:?}");
    }

    #[test]
    fn a_timeout_kills_everything_in_the_sandbox() {
        let (_t, _, ws, _) = layout();
        let Some(sb) = bwrap(SandboxPolicy::new(&ws, None, false)) else {
            return;
        };
        let o = run(
            "(sleep 1; touch late) & sleep 30",
            &ws,
            &sb,
            Duration::from_millis(500),
            1000,
        )
        .unwrap();
        assert!(o.timed_out, "{o:?}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !ws.join("late").exists(),
            "a background job outlived the sandbox"
        );
    }

    #[test]
    fn the_policy_decides_the_arguments() {
        let p = SandboxPolicy {
            workspace: "/h/.config/ws".into(),
            hidden: vec!["/h/.config".into(), "/h/.netrc".into()],
            network: false,
        };
        let args: Vec<String> = p
            .bwrap_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert!(at("/h/.config") < at("--bind"), "{args:?}");
        assert!(at("--bind") < at("/h/.netrc"), "{args:?}");
        for flag in [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag}: {args:?}");
        }
        let open = SandboxPolicy { network: true, ..p };
        assert!(!open.bwrap_args().iter().any(|a| a == "--unshare-net"));
        let off = Sandbox::open(SandboxMode::Off, open).unwrap();
        assert!(off.describe().contains("none"), "{}", off.describe());
    }
}
