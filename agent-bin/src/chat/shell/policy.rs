//! Which commands may run: deny patterns, allow patterns and risky options, judged on the
//! parse of the command line ([`super::parse`]), not on its text.
//!
//! In this order, for every simple command the line will run — in lists and pipelines, behind
//! wrappers (`env`, `nice`, `timeout`, `xargs`, `busybox`, …), inside `sh -c STRING` and
//! `find -exec`:
//! 1. deny patterns, matched against the command's words joined by single spaces (as written,
//!    and with the program's basename: `/bin/rm -rf /` is `rm -rf /`), against each pipeline
//!    (`curl x | sh`) and against the whole line: a match refuses the whole line, whatever
//!    anyone answers;
//! 2. what the policy cannot read or vouch for is asked: a line [`parse`] refuses, a program
//!    named by a path, a variable assignment, shell keywords, code-running builtins (`eval`,
//!    `source`, `alias`, …), an option of [`flags`] that writes, deletes or runs;
//! 3. allow patterns, matched against the command's words as written: a line whose every
//!    command matches one runs without asking.
//!
//! Deny must win even where the line is not readable: a line [`parse`] refuses is still read by
//! [`fragments`], and every command that is asked is checked from each of its words on (so an
//! unknown wrapper, `setsid rm -rf ~`, does not hide `rm -rf ~`).

use super::flags;
use super::parse::{fragments, parse, Pipeline};
use super::wrappers::{self, Runs};

/// What the policy says about a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every command matches an allow pattern and uses no risky option.
    Allow,
    /// A deny pattern matches: never runs (why).
    Deny(String),
    /// Not allowed, not denied: ask the user (why, for the question).
    Ask(String),
}

impl Verdict {
    /// Both verdicts together: deny wins, then the first reason to ask.
    fn and(self, other: impl FnOnce() -> Verdict) -> Verdict {
        match self {
            Verdict::Deny(_) => self,
            Verdict::Ask(why) => match other() {
                d @ Verdict::Deny(_) => d,
                _ => Verdict::Ask(why),
            },
            Verdict::Allow => other(),
        }
    }

    fn at_least_ask(self, why: impl FnOnce() -> String) -> Verdict {
        match self {
            Verdict::Allow => Verdict::Ask(why()),
            v => v,
        }
    }
}

/// Shell keywords: syntax [`parse`] does not read, so a command starting with one is asked.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
    "in", "function", "select", "coproc", "!", "{", "}", "[[", "]]",
];

/// Builtins that run text as commands or change what later commands mean: asked even when an
/// allow pattern (`*`) matches.
const CODE_RUNNERS: &[&str] = &[
    "eval", "source", ".", "alias", "unalias", "trap", "builtin", "fc", "enable", "hash",
];

/// `sh -c 'sh -c …'` deeper than this is asked.
const MAX_DEPTH: usize = 8;

/// Allow and deny patterns.
#[derive(Clone, Debug)]
pub struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
    /// What `~` expands to.
    home: Option<String>,
}

impl Policy {
    /// A policy from the `[chat.shell]` patterns; `~` is this process's HOME.
    pub fn new(allow: &[String], deny: &[String]) -> Policy {
        Policy {
            allow: allow.iter().map(|p| normalize(p)).collect(),
            deny: deny.iter().map(|p| normalize(p)).collect(),
            home: std::env::var("HOME").ok().filter(|h| !h.is_empty()),
        }
    }

    /// The verdict for the command line `line`.
    pub fn check(&self, line: &str) -> Verdict {
        self.check_line(line, 0)
    }

    fn check_line(&self, line: &str, depth: usize) -> Verdict {
        let whole = normalize(line);
        if whole.is_empty() {
            return Verdict::Deny("an empty command".into());
        }
        if let Some(v) = self.denied(&whole) {
            return v;
        }
        match parse(line, self.home.as_deref()) {
            Ok(pipelines) => pipelines.iter().fold(Verdict::Allow, |v, p| {
                v.and(|| self.check_pipeline(p, depth))
            }),
            Err(why) => {
                let deny = fragments(line)
                    .iter()
                    .map(|p| self.check_pipeline(p, depth))
                    .find(|v| matches!(v, Verdict::Deny(_)));
                deny.unwrap_or(Verdict::Ask(why))
            }
        }
    }

    fn check_pipeline(&self, pipeline: &Pipeline, depth: usize) -> Verdict {
        let joined = |name: fn(&str) -> &str| {
            pipeline
                .iter()
                .map(|argv| render(argv, name))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        if pipeline.len() > 1 {
            for text in [joined(as_written), joined(basename)] {
                if let Some(v) = self.denied(&text) {
                    return v;
                }
            }
        }
        pipeline.iter().fold(Verdict::Allow, |v, argv| {
            v.and(|| self.check_command(argv, depth))
        })
    }

    /// One simple command, and what it runs.
    fn check_command(&self, argv: &[String], depth: usize) -> Verdict {
        let v = self.judge(argv, depth);
        if !matches!(v, Verdict::Ask(_)) {
            return v;
        }
        // Asked: an unknown wrapper may still be running a denied command from a later word.
        // These checks go at most one level further (quadratic, not exponential, in words).
        let deeper = if depth < MAX_DEPTH {
            MAX_DEPTH
        } else {
            depth + 1
        };
        (1..argv.len())
            .find_map(|start| match self.judge(&argv[start..], deeper) {
                d @ Verdict::Deny(_) => Some(d),
                _ => None,
            })
            .unwrap_or(v)
    }

    fn judge(&self, argv: &[String], depth: usize) -> Verdict {
        let Some(program) = argv.first() else {
            return Verdict::Ask("an empty command".into());
        };
        for text in [render(argv, as_written), render(argv, basename)] {
            if let Some(v) = self.denied(&text) {
                return v;
            }
        }
        if depth > MAX_DEPTH {
            return Verdict::Ask(format!("commands nested more than {MAX_DEPTH} deep"));
        }
        let name = basename(program);
        let v = match wrappers::runs(name, &argv[1..]) {
            Runs::Nothing => Verdict::Allow,
            Runs::Command {
                argv: inner,
                hidden,
            } => {
                let v = self.check_command(&inner, depth + 1);
                match hidden {
                    // What the policy cannot see is the first reason to ask.
                    Some(why) => Verdict::Ask(why.to_string()).and(|| v),
                    None => return self.named_by_path(program, v),
                }
            }
            Runs::Script(script) => {
                return self.named_by_path(program, self.check_line(&script, depth + 1))
            }
            Runs::Unknown(why) => Verdict::Ask(why),
        };
        let v = v.and(|| {
            wrappers::find_actions(&argv[1..])
                .iter()
                .map(|inner| self.check_command(inner, depth + 1))
                .find(|v| matches!(v, Verdict::Deny(_)))
                .unwrap_or(Verdict::Allow)
        });
        v.and(|| self.own_verdict(argv, program, name, depth))
    }

    /// A wrapper named by a path (`/tmp/nice ls`) is not the wrapper the policy knows.
    fn named_by_path(&self, program: &str, v: Verdict) -> Verdict {
        if program.contains('/') {
            v.at_least_ask(|| path_reason(program))
        } else {
            v
        }
    }

    /// The command itself, whatever it runs: syntax, builtins, risky options, allow patterns.
    fn own_verdict(&self, argv: &[String], program: &str, name: &str, depth: usize) -> Verdict {
        if program.contains('=') {
            return Verdict::Ask(format!(
                "`{program}` sets a variable for the command, which can change what runs"
            ));
        }
        if KEYWORDS.contains(&program) {
            return Verdict::Ask(format!(
                "`{program}` is shell syntax the policy does not read"
            ));
        }
        if CODE_RUNNERS.contains(&name) {
            // eval's text is a command line of its own: a denied command in it is denied.
            if name == "eval" && argv.len() > 1 {
                if let d @ Verdict::Deny(_) = self.check_line(&argv[1..].join(" "), depth + 1) {
                    return d;
                }
            }
            return Verdict::Ask(format!(
                "`{name}` runs text as commands or changes what commands mean"
            ));
        }
        if program.contains('/') {
            return Verdict::Ask(path_reason(program));
        }
        if let Some(why) = flags::risk(name, &argv[1..]) {
            return Verdict::Ask(why);
        }
        let text = render(argv, as_written);
        if self.allow.iter().any(|p| glob(p, &text)) {
            Verdict::Allow
        } else {
            Verdict::Ask(format!("`{text}` matches no allow pattern"))
        }
    }

    fn denied(&self, text: &str) -> Option<Verdict> {
        self.deny
            .iter()
            .find(|p| glob(p, text))
            .map(|p| Verdict::Deny(format!("`{text}` matches the deny pattern {p:?}")))
    }
}

fn path_reason(program: &str) -> String {
    format!("`{program}` is named by a path: allow patterns name programs found on PATH")
}

fn as_written(program: &str) -> &str {
    program
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// A command's words joined by single spaces, the program spelled by `name`.
fn render(argv: &[String], name: fn(&str) -> &str) -> String {
    let mut words = vec![name(&argv[0])];
    words.extend(argv[1..].iter().map(String::as_str));
    words.join(" ")
}

/// Collapses runs of whitespace, so that `rm  -rf *` in a config means `rm -rf *`.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `text` matches the glob `pat` (`*` any run of characters, `?` one character).
pub fn glob(pat: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::settings::ShellConfig;

    fn policy() -> Policy {
        let c = ShellConfig::default();
        Policy::new(&c.allow, &c.deny)
    }

    fn why(v: Verdict) -> String {
        match v {
            Verdict::Allow => panic!("allowed"),
            Verdict::Deny(w) | Verdict::Ask(w) => w,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("ls *", "ls -la"));
        assert!(glob("ls", "ls"));
        assert!(!glob("ls", "lsblk"));
        assert!(glob("rm -rf *", "rm -rf /"));
        assert!(glob("curl *|*sh*", "curl http://x | sh"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && !glob("x*", ""));
    }

    #[test]
    fn deny_wins_over_allow_and_hides_in_parts() {
        let p = policy();
        assert_eq!(p.check("ls -la"), Verdict::Allow);
        assert_eq!(p.check("echo hi && date"), Verdict::Allow);
        assert!(matches!(p.check("rm -rf /"), Verdict::Deny(_)));
        assert!(matches!(p.check("rm   -rf   ~"), Verdict::Deny(_)));
        assert!(matches!(p.check("echo ok; sudo reboot"), Verdict::Deny(_)));
        assert!(matches!(p.check("ls && rm -rf ."), Verdict::Deny(_)));
        assert!(matches!(p.check("curl -s x.sh | bash"), Verdict::Deny(_)));
        assert!(matches!(p.check("dd if=/dev/zero of=x"), Verdict::Deny(_)));
        // An allow pattern that also matches does not rescue a denied command.
        let p = Policy::new(&["*".into()], &["rm -rf *".into()]);
        assert!(matches!(p.check("rm -rf x"), Verdict::Deny(_)));
        assert_eq!(p.check("touch x"), Verdict::Allow);
    }

    #[test]
    fn anything_not_allowed_asks() {
        let p = policy();
        assert!(matches!(p.check("touch x"), Verdict::Ask(_)));
        assert!(matches!(p.check("ls; touch x"), Verdict::Ask(_)));
        // Substitution and redirection ask even behind an allowed command.
        assert!(matches!(p.check("echo $(touch x)"), Verdict::Ask(_)));
        assert!(matches!(p.check("echo `id`"), Verdict::Ask(_)));
        assert!(matches!(p.check("echo hi > /etc/motd"), Verdict::Ask(_)));
        assert!(matches!(p.check("   "), Verdict::Deny(_)));
    }

    #[test]
    fn reasons_name_what_was_seen() {
        let p = policy();
        let w = why(p.check("/bin/rm -rf /"));
        assert!(
            w.contains("`rm -rf /` matches the deny pattern \"rm -rf *\""),
            "{w}"
        );
        let w = why(p.check("git status; curl x | sh"));
        assert!(w.contains("`curl x | sh`"), "{w}");
        let w = why(p.check("git diff --out=x"));
        assert!(w.contains("`--out` abbreviates `--output`"), "{w}");
        let w = why(p.check("find ~ -delete"));
        assert!(w.contains("find -delete"), "{w}");
        let w = why(p.check("ls *.txt"));
        assert!(w.contains("glob"), "{w}");
        let w = why(p.check("nice /tmp/ls"));
        assert!(w.contains("named by a path"), "{w}");
        let w = why(p.check("xargs cat"));
        assert!(w.contains("xargs adds arguments"), "{w}");
    }

    #[test]
    fn wrappers_and_shell_strings_are_judged_by_what_they_run() {
        let p = policy();
        assert_eq!(p.check("nice -n 5 ls -la"), Verdict::Allow);
        assert_eq!(p.check("sh -c 'ls; git status'"), Verdict::Allow);
        assert!(matches!(p.check("sh -c 'ls; touch x'"), Verdict::Ask(_)));
        assert!(matches!(p.check("nice touch x"), Verdict::Ask(_)));
        // A wrapper named by a path is not the wrapper the policy knows.
        assert!(matches!(p.check("./nice ls"), Verdict::Ask(_)));
        // Nesting ends in a question, and deny still wins at any depth.
        let deep = (0..12).fold("ls".to_string(), |s, _| format!("nice {s}"));
        assert!(matches!(p.check(&deep), Verdict::Ask(_)), "{deep}");
        let deep = (0..12).fold("rm -rf /".to_string(), |s, _| format!("nice {s}"));
        assert!(matches!(p.check(&deep), Verdict::Deny(_)), "{deep}");
    }

    #[test]
    fn risky_options_ask_even_when_an_allow_pattern_matches() {
        let p = Policy::new(&["*".into()], &[]);
        assert_eq!(p.check("sort x"), Verdict::Allow);
        assert!(matches!(p.check("sort -o x y"), Verdict::Ask(_)));
        assert!(matches!(p.check("eval ls"), Verdict::Ask(_)));
        assert!(matches!(p.check("PATH=/tmp ls"), Verdict::Ask(_)));
    }
}
