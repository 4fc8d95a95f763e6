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
            other => refused(format!("there is no tool {other:?}")),
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
    use super::git_config_guard;

    #[test]
    fn write_file_stays_out_of_git_folders() {
        assert!(git_config_guard(".git/config").is_err());
        assert!(git_config_guard("./sub/.git/hooks/pre-commit").is_err());
        assert_eq!(git_config_guard("notes/.gitignore"), Ok("notes/.gitignore"));
    }
}
