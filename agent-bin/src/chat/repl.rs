//! The terminal channel: a line editor with history when stdin is a terminal, plain lines
//! otherwise (scripts, tests); answers streamed as they are generated and labelled with the
//! model that wrote them; confirmations asked on the same input.
//!
//! With `--json` every event is one JSON object per line on stdout, and a confirmation is a
//! `{"event": "confirm"}` line answered by the next input line.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use serde_json::json;

use super::{reminders::Fired, Agent, Event, Io};

/// Help for the REPL's own commands.
pub const COMMANDS: &str = "\
Commands:
  /help                      this help
  /memory [QUERY]            the newest memories, or those matching QUERY
  /remember TEXT             save a memory yourself
  /forget ID                 delete memory ID
  /reminders                 pending reminders
  /remind SCHEDULE -- TEXT   e.g. /remind every 2h -- stretch; /remind 30 7 * * 1-5 -- standup
  /cancel ID                 cancel reminder ID
  /retry                     answer your last message again (after a failed turn)
  /model                     which endpoints answer
  /quit                      leave (also Ctrl-D)
Anything else is a message to the agent.";

enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Lines(std::io::StdinLock<'static>),
}

/// The terminal (or a pipe pretending to be one).
pub struct Terminal {
    json: bool,
    input: Input,
    /// Whether answer text has been streamed since the last answer (to end the line).
    streamed: bool,
    color: bool,
}

fn history_path() -> Option<std::path::PathBuf> {
    directories::ProjectDirs::from("", "", "tbq-agent")
        .map(|d| d.data_dir().join("chat-history.txt"))
}

impl Terminal {
    /// The terminal channel; a line editor when stdin and stdout are terminals and not `json`.
    pub fn new(json: bool, color: bool) -> Terminal {
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let input = match (tty && !json).then(rustyline::DefaultEditor::new) {
            Some(Ok(mut ed)) => {
                if let Some(p) = history_path() {
                    let _ = ed.load_history(&p);
                }
                Input::Editor(Box::new(ed))
            }
            _ => Input::Lines(std::io::stdin().lock()),
        };
        Terminal {
            json,
            input,
            streamed: false,
            color: color && tty,
        }
    }

    /// Reads a line; None at end of input (Ctrl-D).
    pub fn read_line(&mut self, prompt: &str) -> Option<String> {
        match &mut self.input {
            Input::Editor(ed) => loop {
                match ed.readline(prompt) {
                    Ok(l) => {
                        if !l.trim().is_empty() {
                            let _ = ed.add_history_entry(l.as_str());
                            if let Some(p) = history_path() {
                                if let Some(d) = p.parent() {
                                    let _ = std::fs::create_dir_all(d);
                                }
                                let _ = ed.save_history(&p);
                            }
                        }
                        return Some(l);
                    }
                    // Ctrl-C on the prompt clears the line, as in a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(_) => return None,
                }
            },
            Input::Lines(l) => {
                if !self.json && !prompt.is_empty() {
                    print!("{prompt}");
                    let _ = std::io::stdout().flush();
                }
                let mut s = String::new();
                match l.read_line(&mut s) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => {
                        if !self.json && !std::io::stdin().is_terminal() {
                            // Echo piped input, so a saved session reads like a conversation.
                            print!("{s}");
                        }
                        Some(s.trim_end_matches(['\n', '\r']).to_string())
                    }
                }
            }
        }
    }

    /// Where the reminder clock delivers: above the prompt on a terminal, a line otherwise.
    pub fn reminder_sink(&mut self) -> Box<dyn FnMut(Fired) + Send> {
        let json = self.json;
        let render = move |f: &Fired| {
            if json {
                Event::Reminder(f).to_json().to_string()
            } else {
                format!(
                    "⏰ reminder #{}: {}{}",
                    f.id,
                    f.text,
                    if f.late {
                        format!(" (was due {})", f.due)
                    } else {
                        String::new()
                    }
                )
            }
        };
        if let Input::Editor(ed) = &mut self.input {
            if let Ok(mut p) = ed.create_external_printer() {
                return Box::new(move |f| {
                    use rustyline::ExternalPrinter;
                    let _ = p.print(format!("{}\n", render(&f)));
                });
            }
        }
        Box::new(move |f| println!("{}", render(&f)))
    }

    fn dim(&self, s: &str) -> String {
        if self.color {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn end_stream(&mut self) {
        if self.streamed {
            println!();
            self.streamed = false;
        }
    }

    fn say(&mut self, s: &str) {
        self.end_stream();
        println!("{}", self.dim(s));
    }
}

/// The first lines of a tool's output, for the terminal.
fn preview(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let mut p = lines
        .iter()
        .take(8)
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > 8 {
        p.push_str(&format!("\n    … {} more lines", lines.len() - 8));
    }
    p
}

impl Io for Terminal {
    fn event(&mut self, e: Event) {
        if self.json {
            // Deltas are for people; the answer event carries the whole text.
            if !matches!(e, Event::Delta(_)) {
                println!("{}", e.to_json());
            }
            let _ = std::io::stdout().flush();
            return;
        }
        match e {
            Event::Waiting { url, why } => eprintln!("waiting for {url} ({why})"),
            Event::Ready {
                url,
                model,
                workspace,
                sandbox,
            } => println!(
                "{}",
                self.dim(&format!(
                    "tbq-agent chat — local model {model} at {url}; workspace {}; {sandbox}; /help for commands",
                    workspace.display()
                ))
            ),
            Event::Delta(t) => {
                print!("{t}");
                self.streamed = true;
                let _ = std::io::stdout().flush();
            }
            Event::ToolCall { tool, args } => {
                let shown = match args.as_object() {
                    Some(o) if o.len() == 1 => o.values().next().unwrap().as_str().unwrap_or("").to_string(),
                    _ => args.to_string(),
                };
                self.say(&format!("  → {tool}: {shown}"));
            }
            Event::ToolResult { tool: _, ok, text } => {
                let mark = if ok { "✓" } else { "✗" };
                self.say(&format!("  {mark} {}", preview(text).trim_start()));
            }
            Event::Blocked { command, why } => self.say(&format!("  ⛔ blocked `{command}`: {why}")),
            Event::Declined { command } => self.say(&format!("  ✗ not run: `{command}` (you said no)")),
            Event::Retry { attempt, why } => {
                self.say(&format!("  ⟳ the local server failed mid-answer ({why}); retry {attempt} once it is healthy again"))
            }
            Event::Back { waited } => self.say(&format!("  ⟳ the server is back after {:.1} s", waited.as_secs_f64())),
            Event::Fallback { why } => self.say(&format!("  ↪ the fallback endpoint answers (local: {why})")),
            Event::Invalid { why } => self.say(&format!("  ({why}; asking for an answer)")),
            Event::Answer(a) => {
                if !self.streamed {
                    print!("{}", a.text);
                }
                self.streamed = true;
                self.end_stream();
                println!(
                    "{}",
                    self.dim(&format!(
                        "  — {} ({}, {} step{}, {:.1} s)",
                        a.model,
                        a.endpoint,
                        a.steps,
                        if a.steps == 1 { "" } else { "s" },
                        a.ms as f64 / 1000.0
                    ))
                );
            }
            Event::TurnFailed { error } => {
                self.end_stream();
                eprintln!("error: {error}\n  your message is kept: /retry sends it again");
            }
            Event::Reminder(f) => self.say(&format!("⏰ reminder #{}: {}", f.id, f.text)),
            Event::Recalled(items) => self.say(&format!("  ⌕ recalled: {}", items.join(" | "))),
        }
        let _ = std::io::stdout().flush();
    }

    fn confirm(&mut self, question: &str) -> Option<bool> {
        self.end_stream();
        if self.json {
            println!("{}", json!({"event": "confirm", "question": question}));
            let _ = std::io::stdout().flush();
        }
        loop {
            let a = self.read_line(&format!("  ? {question} [y/N] "))?;
            match a.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return Some(true),
                "" | "n" | "no" => return Some(false),
                _ => {
                    if !self.json {
                        println!("  answer y or n");
                    }
                }
            }
        }
    }
}

/// The read-eval-print loop, until /quit or the end of input.
pub fn run(agent: &mut Agent, io: &mut Terminal, model: &str) -> Result<()> {
    let _ticker =
        super::reminders::Ticker::spawn(agent.db_path(), agent.conversation(), io.reminder_sink())?;
    while let Some(line) = io.read_line("you> ") {
        crate::server::check_stop()?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            if !command(agent, io, cmd, model)? {
                break;
            }
            continue;
        }
        if let Err(e) = agent.turn(line, io) {
            // Stopped by a signal: leave. Anything else was reported; take the next message.
            crate::server::check_stop()?;
            tracing::debug!("turn failed: {e:#}");
        }
    }
    Ok(())
}

/// A REPL command; false to quit.
fn command(agent: &mut Agent, io: &mut Terminal, cmd: &str, model: &str) -> Result<bool> {
    let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let rest = rest.trim();
    let out = |io: &mut Terminal, v: serde_json::Value, text: String| {
        if io.json {
            println!("{v}");
        } else {
            println!("{text}");
        }
    };
    match name {
        "quit" | "exit" | "q" => return Ok(false),
        "help" | "h" | "?" => out(io, json!({"event": "help", "text": COMMANDS}), COMMANDS.into()),
        "memory" | "memories" => {
            let v = if rest.is_empty() {
                agent.store().memories(20)?
            } else {
                agent.recall(rest, 10)?
            };
            let text = if v.is_empty() {
                "no memories".to_string()
            } else {
                v.iter()
                    .map(|r| format!("  #{} [{} {}] {}", r.id, r.kind, super::local_time(r.created_at), r.text))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            out(io, json!({"event": "memories", "items": v}), text);
        }
        "remember" if !rest.is_empty() => {
            let id = agent.remember(rest, "user")?;
            out(io, json!({"event": "remembered", "id": id}), format!("  saved as memory #{id}"));
        }
        "forget" => match rest.parse::<i64>() {
            Ok(id) => {
                let done = agent.store().forget(id)?;
                out(
                    io,
                    json!({"event": "forgotten", "id": id, "found": done}),
                    if done { format!("  memory #{id} deleted") } else { format!("  no memory #{id}") },
                );
            }
            Err(_) => println!("  usage: /forget ID (ids are shown by /memory)"),
        },
        "reminders" => {
            let v = agent.store().reminders()?;
            let text = if v.is_empty() {
                "no pending reminders".to_string()
            } else {
                v.iter()
                    .map(|r| {
                        format!(
                            "  #{} {} — next {} — {}",
                            r.id,
                            r.schedule,
                            r.next_fire.map(super::local_time).unwrap_or_default(),
                            r.text
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            out(io, json!({"event": "reminders", "items": v}), text);
        }
        "remind" => match rest.split_once(" -- ") {
            Some((s, t)) => match agent.add_reminder(s, t) {
                Ok((id, when)) => out(
                    io,
                    json!({"event": "reminder_set", "id": id, "first": when}),
                    format!("  reminder #{id} set; first at {when}"),
                ),
                Err(e) => println!("  {e:#}"),
            },
            None => println!("  usage: /remind SCHEDULE -- TEXT   (in 10m, every 2h, at 07:30, or 5 cron fields)"),
        },
        "cancel" => match rest.parse::<i64>() {
            Ok(id) => {
                let done = agent.store().cancel_reminder(id)?;
                out(
                    io,
                    json!({"event": "cancelled", "id": id, "found": done}),
                    if done { format!("  reminder #{id} cancelled") } else { format!("  no pending reminder #{id}") },
                );
            }
            Err(_) => println!("  usage: /cancel ID (ids are shown by /reminders)"),
        },
        "retry" => match agent.retry(io) {
            Ok(None) => println!("  nothing to retry: your last message was answered"),
            Ok(Some(_)) | Err(_) => crate::server::check_stop()?,
        },
        "model" => out(
            io,
            json!({"event": "model", "local": model, "local_url": agent.router.local.url,
                   "fallback": agent.router.fallback.as_ref().map(|f| &f.url)}),
            format!(
                "  local: {model} at {}\n  fallback: {}",
                agent.router.local.url,
                agent
                    .router
                    .fallback
                    .as_ref()
                    .map(|f| format!("{} ({})", f.url, f.model.as_deref().unwrap_or("default model")))
                    .unwrap_or_else(|| "none (opt in with [chat.fallback] and --fallback)".into())
            ),
        ),
        _ => println!("  unknown command /{name}; /help lists them"),
    }
    Ok(true)
}
