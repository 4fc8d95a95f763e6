//! Running the tool a model step asked for, and what the model is told about it.
//!
//! Every outcome, refusals included, goes back to the model as text (so it can say what
//! happened) and to the channel as an event (so the person sees it). A tool that fails never
//! ends the turn.

use std::time::Duration;

use serde_json::Value;

use super::reminders::{Schedule, Zone};
use super::shell::{self, Verdict};
use super::{Agent, Event, Io};

/// What the model is shown of a tool's output at most (its context is small); the person sees
/// all of it.
const MODEL_CAP: usize = 3000;

/// A tool's outcome.
pub struct ToolOutcome {
    /// Whether it did what was asked.
    pub ok: bool,
    /// The text for the model (and the person).
    pub text: String,
}

fn ok(text: impl Into<String>) -> ToolOutcome {
    ToolOutcome {
        ok: true,
        text: text.into(),
    }
}

fn refused(text: impl Into<String>) -> ToolOutcome {
    ToolOutcome {
        ok: false,
        text: text.into(),
    }
}

/// The model's view of an outcome: capped.
pub fn for_model(o: &ToolOutcome) -> String {
    if o.text.len() <= MODEL_CAP {
        return o.text.clone();
    }
    let mut end = MODEL_CAP;
    while !o.text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[cut: {} more bytes]",
        &o.text[..end],
        o.text.len() - end
    )
}

fn arg<'a>(args: &'a Value, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or("")
}

/// git runs programs named in a repository's `.git` folder (`core.fsmonitor` on `git status`,
/// diff drivers on `git diff`), and the default allow list runs those without asking: the model
/// must not be able to write there without a question.
fn git_config_guard(p: &str) -> Result<&str, String> {
    if std::path::Path::new(p.trim())
        .components()
        .any(|c| c.as_os_str() == ".git")
    {
        return Err("write_file does not write inside .git (git runs programs named there)".into());
    }
    Ok(p)
}

impl Agent {
    /// Runs `tool` with `args`.
    pub(super) fn call_tool(&mut self, tool: &str, args: &Value, io: &mut dyn Io) -> ToolOutcome {
        match tool {
            "shell" => self.shell(arg(args, "command"), io),
            "read_file" => match self.files_guard(arg(args, "path")) {
                Err(e) => refused(e),
                Ok(p) => match self.ws.read(p) {
                    Ok(t) => ok(t),
                    Err(e) => refused(format!("{e:#}")),
                },
            },
            "write_file" => match self
                .files_guard(arg(args, "path"))
                .and_then(git_config_guard)
            {
                Err(e) => refused(e),
                Ok(p) => match self.ws.write(p, arg(args, "content")) {
                    Ok(n) => ok(format!("wrote {n} bytes to {p}")),
                    Err(e) => refused(format!("{e:#}")),
                },
            },
            "list_files" => match self.files_guard(arg(args, "path")) {
                Err(e) => refused(e),
                Ok(p) => match self.ws.list(p) {
                    Ok(v) if v.is_empty() => ok("(empty)"),
                    Ok(v) => ok(v.join("\n")),
                    Err(e) => refused(format!("{e:#}")),
                },
            },
            "remember" => {
                let text = arg(args, "text").trim();
                if text.is_empty() {
                    return refused("nothing to remember: text is empty");
                }
                match self.remember(text, "tool") {
                    Ok(id) => ok(format!("saved as memory #{id}")),
                    Err(e) => refused(format!("{e:#}")),
                }
            }
            "recall" => match self.recall(arg(args, "query"), self.cfg.recall_k.max(1)) {
                Ok(v) if v.is_empty() => ok("nothing found"),
                Ok(v) => ok(v
                    .iter()
                    .map(|r| format!("- {}", r.text))
                    .collect::<Vec<_>>()
                    .join("\n")),
                Err(e) => refused(format!("{e:#}")),
            },
            "remind" => {
                let (sched, text) = (arg(args, "schedule"), arg(args, "text"));
                match self.add_reminder(sched, text) {
                    Ok((id, when)) => ok(format!("reminder #{id} set ({sched}); first at {when}")),
                    Err(e) => refused(format!("{e:#}")),
                }
            }
            "web_fetch" => {
                if !self.cfg.web.enabled {
                    return refused("web_fetch is off ([chat.web] enabled = false)");
                }
                match super::web::fetch(
                    arg(args, "url"),
                    Duration::from_secs(self.cfg.web.timeout),
                    self.cfg.web.max_bytes,
                ) {
                    Ok(p) => ok(format!("{} {}\n{}", p.status, p.url, p.text)),
                    Err(e) => refused(format!("{e:#}")),
                }
            }
            other if self.mcp.tool(other).is_some() => self.mcp_call(other, args, io),
            other => refused(format!("there is no tool {other:?}")),
        }
    }

    /// Calls an MCP tool, asking first when its server's `confirm` covers it (the same y/N as
    /// for shell commands outside the allow list).
    fn mcp_call(&mut self, tool: &str, args: &Value, io: &mut dyn Io) -> ToolOutcome {
        let Some(t) = self.mcp.tool(tool) else {
            return refused(format!("there is no tool {tool:?}"));
        };
        if t.confirm {
            let call = format!("{tool} {args}");
            let question = format!("call `{call}`? ([chat.mcp.{}] confirm)", t.server);
            // The HTTP channel answers for shell commands by its own setting; that setting
            // is about shell, so an MCP call that needs a "yes" is refused there, always.
            let answer = if self.over_http {
                None
            } else {
                io.confirm(&question)
            };
            match answer {
                Some(true) => {}
                Some(false) => {
                    io.event(Event::Declined { command: &call });
                    return refused(format!(
                        "the user declined the call {call}; it was not made"
                    ));
                }
                None => {
                    io.event(Event::Blocked {
                        command: &call,
                        why: "needs a confirmation and nobody can give one here",
                    });
                    return refused(format!(
                        "{call} needs the user's confirmation, which this channel cannot ask for; it was not made"
                    ));
                }
            }
        }
        let r = self.mcp.call(tool, args);
        ToolOutcome {
            ok: r.ok,
            text: r.text,
        }
    }

    /// The agent's own folder is off limits to the file tools.
    fn files_guard<'a>(&self, p: &'a str) -> Result<&'a str, String> {
        let first = std::path::Path::new(p.trim())
            .components()
            .find(|c| !matches!(c, std::path::Component::CurDir));
        if first.is_some_and(|c| c.as_os_str() == ".tbq-agent") {
            return Err("the agent's own folder .tbq-agent is not for tools".into());
        }
        Ok(p)
    }

    fn shell(&mut self, command: &str, io: &mut dyn Io) -> ToolOutcome {
        if !self.cfg.shell.enabled {
            return refused("the shell tool is off ([chat.shell] enabled = false)");
        }
        match self.policy.check(command) {
            Verdict::Deny(why) => {
                io.event(Event::Blocked { command, why: &why });
                return refused(format!("refused: {command:?} {why}; it was not run"));
            }
            Verdict::Ask(why) => match io.confirm(&format!("run `{command}`? ({why})")) {
                Some(true) => {}
                Some(false) => {
                    io.event(Event::Declined { command });
                    return refused(format!(
                        "the user declined to run {command:?}; it was not run"
                    ));
                }
                None => {
                    io.event(Event::Blocked {
                        command,
                        why: "needs a confirmation and nobody can give one here",
                    });
                    return refused(format!(
                        "{command:?} needs the user's confirmation, which this channel cannot ask for; it was not run"
                    ));
                }
            },
            Verdict::Allow => {}
        }
        match shell::run(
            command,
            self.ws.root(),
            &self.sandbox,
            Duration::from_secs(self.cfg.shell.timeout),
            self.cfg.shell.output_cap,
        ) {
            Ok(o) => {
                let mut t = o.output.clone();
                if o.truncated {
                    t.push_str(&format!(
                        "\n[output cut at {} bytes]",
                        self.cfg.shell.output_cap
                    ));
                }
                if o.timed_out {
                    t.push_str(&format!("\n[killed after {} s]", self.cfg.shell.timeout));
                }
                let mut status = match o.code {
                    Some(c) => format!("exit {c}"),
                    None => "killed".into(),
                };
                // Said once per session: the model and the person should know that nothing but
                // the patterns stood between this command and the machine.
                if matches!(self.sandbox, shell::Sandbox::Unsandboxed { .. })
                    && !self.told_unsandboxed
                {
                    self.told_unsandboxed = true;
                    status.push_str(&format!(" [{}]", self.sandbox.describe()));
                }
                ToolOutcome {
                    ok: o.code == Some(0),
                    text: format!("{status}\n{t}"),
                }
            }
            Err(e) => refused(format!("{e:#}")),
        }
    }

    /// Stores a reminder; returns its id and first firing (local time).
    pub(super) fn add_reminder(
        &mut self,
        sched: &str,
        text: &str,
    ) -> anyhow::Result<(i64, String)> {
        if text.trim().is_empty() {
            anyhow::bail!("a reminder needs a text");
        }
        let s = Schedule::parse(sched)?;
        let now = super::memory::now();
        let next = s
            .next_after(now, Zone::Local)
            .ok_or_else(|| anyhow::anyhow!("{sched:?} never fires"))?;
        let id = self.store.add_reminder(sched.trim(), text.trim(), next)?;
        Ok((id, super::local_time(next)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::settings::{CommandLine, ConfirmTools, McpServerConfig};
    use crate::chat::{ChatConfig, Options};

    /// A channel whose user answers every question with `answer`, keeping what it was asked.
    struct Answering {
        answer: Option<bool>,
        asked: Vec<String>,
        declined: Vec<String>,
    }

    impl Io for Answering {
        fn event(&mut self, e: Event) {
            if let Event::Declined { command } = e {
                self.declined.push(command.to_string());
            }
        }
        fn confirm(&mut self, question: &str) -> Option<bool> {
            self.asked.push(question.to_string());
            self.answer
        }
    }

    fn agent(ws: &std::path::Path, http: bool) -> Agent {
        let mut cfg = ChatConfig::default();
        cfg.mcp.insert(
            "t".into(),
            McpServerConfig {
                command: Some(CommandLine::Words(vec![
                    crate::chat::mcp::tests::python_with_mcp()
                        .display()
                        .to_string(),
                    format!("{}/tests/data/mcp_server.py", env!("CARGO_MANIFEST_DIR")),
                    "stdio".into(),
                ])),
                confirm: ConfirmTools::Only(vec!["touch".into()]),
                ..McpServerConfig::default()
            },
        );
        Agent::open(&Options {
            cfg,
            url: "http://127.0.0.1:9".into(),
            workspace: ws.to_path_buf(),
            message: None,
            http: http.then(|| "127.0.0.1:0".into()),
            fallback: false,
            require_tool: None,
            tool_args: None,
            json: false,
            progress: false,
        })
        .unwrap()
    }

    #[test]
    fn a_confirm_marked_mcp_tool_runs_only_after_a_yes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(dir.path(), false);
        let args = serde_json::json!({"name": "f"});
        let mut no = Answering {
            answer: Some(false),
            asked: vec![],
            declined: vec![],
        };
        let o = a.call_tool("t.touch", &args, &mut no);
        assert!(!o.ok);
        assert_eq!(
            o.text,
            r#"the user declined the call t.touch {"name":"f"}; it was not made"#
        );
        assert_eq!(
            no.asked,
            [r#"call `t.touch {"name":"f"}`? ([chat.mcp.t] confirm)"#]
        );
        assert_eq!(no.declined, [r#"t.touch {"name":"f"}"#]);
        assert!(!dir.path().join("f").exists(), "a declined call ran");
        // A tool not marked runs without a question.
        let o = a.call_tool("t.add", &serde_json::json!({"a": 1, "b": 2}), &mut no);
        assert_eq!((o.ok, o.text.as_str(), no.asked.len()), (true, "3", 1));

        let mut yes = Answering {
            answer: Some(true),
            asked: vec![],
            declined: vec![],
        };
        let o = a.call_tool("t.touch", &args, &mut yes);
        assert!(o.ok, "{}", o.text);
        assert!(dir.path().join("f").exists());
    }

    #[test]
    fn over_http_a_confirm_marked_mcp_tool_is_refused_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = agent(dir.path(), true);
        // Even a channel that would say yes (allow_unconfirmed_shell) is not asked.
        let mut yes = Answering {
            answer: Some(true),
            asked: vec![],
            declined: vec![],
        };
        let o = a.call_tool("t.touch", &serde_json::json!({"name": "g"}), &mut yes);
        assert!(!o.ok);
        assert!(
            o.text.contains("needs the user's confirmation"),
            "{}",
            o.text
        );
        assert!(yes.asked.is_empty());
        assert!(!dir.path().join("g").exists());
    }

    #[test]
    fn write_file_stays_out_of_git_folders() {
        assert!(git_config_guard(".git/config").is_err());
        assert!(git_config_guard("./sub/.git/hooks/pre-commit").is_err());
        assert_eq!(git_config_guard("notes/.gitignore"), Ok("notes/.gitignore"));
    }
}
