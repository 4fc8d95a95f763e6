//! Programs that run other programs: what they will run, so that the policy judges that too.
//!
//! `nice rm -rf ~` is `rm -rf ~`; `sh -c 'STRING'` is STRING, read again as a command line;
//! `find . -exec CMD {} ;` runs CMD. A wrapper's options are read as its own getopt reads them;
//! one it does not know makes the command unreadable (asked), never skipped over.

use super::parse::Argv;

/// What a program will run besides itself.
#[derive(Debug, PartialEq)]
pub enum Runs {
    /// Nothing: it is not a wrapper (or, like `env` alone, runs nothing).
    Nothing,
    /// This command; `hidden` says what the policy cannot see about it (xargs' extra
    /// arguments), which makes it asked whatever the command.
    Command {
        argv: Argv,
        hidden: Option<&'static str>,
    },
    /// This text, as a shell command line.
    Script(String),
    /// Something the policy cannot make out (why).
    Unknown(String),
}

/// Shells whose `-c STRING` is read as a POSIX command line.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "posh", "yash",
];

/// What `program` (a basename) run with `args` will run.
pub fn runs(program: &str, args: &[String]) -> Runs {
    match program {
        "env" => env(args),
        "nice" => after_options(program, args, &["-n", "--adjustment"], &[], 0, |a| {
            a.len() > 1 && a[1..].chars().all(|c| c.is_ascii_digit() || c == '-')
        }),
        "nohup" | "exec" => after_options(program, args, &[], &[], 0, |_| false),
        "command" => after_options(program, args, &[], &["-p"], 0, |_| false),
        "time" => after_options(program, args, &[], &["-p"], 0, |_| false),
        "timeout" => after_options(
            program,
            args,
            &["-s", "-k", "--signal", "--kill-after"],
            &["-v", "--verbose", "--preserve-status", "--foreground"],
            1,
            |_| false,
        ),
        "stdbuf" => after_options(
            program,
            args,
            &["-i", "-o", "-e", "--input", "--output", "--error"],
            &[],
            0,
            |_| false,
        ),
        "xargs" => xargs(args),
        "busybox" => match args.first() {
            None => Runs::Nothing,
            Some(a) if a.starts_with('-') => {
                Runs::Unknown(format!("`busybox {a}` is not an applet the policy can read"))
            }
            Some(_) => Runs::Command {
                argv: args.to_vec(),
                hidden: None,
            },
        },
        shell if SHELLS.contains(&shell) => match args {
            [c, script, ..] if c == "-c" => Runs::Script(script.clone()),
            _ => Runs::Unknown(format!(
                "`{shell}` without `-c STRING` runs a script file or its input, which the policy cannot see"
            )),
        },
        _ => Runs::Nothing,
    }
}

/// The commands find runs for `-exec`, `-execdir`, `-ok` and `-okdir` (up to `;` or `+`).
pub fn find_actions(args: &[String]) -> Vec<Argv> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            out.push(
                it.by_ref()
                    .take_while(|w| *w != ";" && *w != "+")
                    .cloned()
                    .collect(),
            );
        }
    }
    out.retain(|argv: &Argv| !argv.is_empty());
    out
}

/// The command after a wrapper's options and `skip` positional arguments (timeout's
/// DURATION). `with_value`: options that take a value (`-n 5`, `-n5`, `--adjustment=5`, and
/// any unambiguous-looking prefix of the long ones); `flags`: options without one;
/// `numeric`: options like nice's `-5`.
fn after_options(
    program: &str,
    args: &[String],
    with_value: &[&str],
    flags: &[&str],
    skip: usize,
    numeric: impl Fn(&str) -> bool,
) -> Runs {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let long_name = a
            .strip_prefix("--")
            .map(|l| l.split('=').next().unwrap_or(l));
        let matches = |o: &&str| match (long_name, o.strip_prefix("--")) {
            (Some(n), Some(full)) => !n.is_empty() && full.starts_with(n),
            (None, None) => a.starts_with(*o),
            _ => false,
        };
        if flags
            .iter()
            .any(|o| matches(o) && (long_name.is_some() || a == *o))
            || numeric(a)
        {
            i += 1;
        } else if let Some(o) = with_value.iter().find(|o| matches(o)) {
            // The value is in the same word (`-n5`, `--signal=KILL`) or the next one.
            let attached = if long_name.is_some() {
                a.contains('=')
            } else {
                a.len() > o.len()
            };
            i += if attached { 1 } else { 2 };
        } else {
            return Runs::Unknown(format!(
                "`{program} {a}` is an option the policy does not know"
            ));
        }
    }
    let rest = args.get(i + skip..).unwrap_or_default();
    if rest.is_empty() {
        return Runs::Nothing;
    }
    Runs::Command {
        argv: rest.to_vec(),
        hidden: None,
    }
}

/// `env [-i] [-u NAME] [NAME=VALUE]... COMMAND`: assignments can change what a command does
/// (PATH, LD_PRELOAD), so a command after one is asked.
fn env(args: &[String]) -> Runs {
    let mut hidden = None;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "--" => {
                i += 1;
                break;
            }
            "-i" | "--ignore-environment" | "-0" | "--null" | "-" => i += 1,
            "-u" | "--unset" | "-C" | "--chdir" => i += 2,
            s if s.starts_with("--unset=") || s.starts_with("--chdir=") => i += 1,
            s if s.starts_with("-S") || s.starts_with("--split-string") => {
                return Runs::Unknown("`env -S` splits a string into a command".into())
            }
            s if s.starts_with('-') => {
                return Runs::Unknown(format!("`env {s}` is an option the policy does not know"))
            }
            s if s.contains('=') => {
                hidden = Some("env sets variables for it, which can change what runs");
                i += 1;
            }
            _ => break,
        }
    }
    match args.get(i..) {
        Some(rest) if !rest.is_empty() => Runs::Command {
            argv: rest.to_vec(),
            hidden,
        },
        _ => Runs::Nothing,
    }
}

/// xargs appends arguments read from its input, so whatever it runs is asked; the command
/// itself is still checked against the deny patterns.
fn xargs(args: &[String]) -> Runs {
    const HIDDEN: Option<&str> =
        Some("xargs adds arguments read from its input, which the policy cannot see");
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        let Some(opts) = a.strip_prefix('-').filter(|o| !o.is_empty()) else {
            break;
        };
        if let Some(long) = opts.strip_prefix('-') {
            let takes_value = [
                "arg-file",
                "delimiter",
                "max-lines",
                "max-args",
                "max-procs",
                "max-chars",
                "process-slot-var",
            ]
            .iter()
            .any(|o| o.starts_with(long));
            i += if takes_value && !long.contains('=') {
                2
            } else {
                1
            };
            continue;
        }
        // Letters up to the first that takes a value; optional values (-e, -i, -l) only attached.
        let mut step = 1;
        for (k, c) in opts.char_indices() {
            if "adEILnPs".contains(c) {
                if k + 1 == opts.len() {
                    step = 2;
                }
                break;
            }
            if "eil".contains(c) {
                break;
            }
            if !"0rtpxo".contains(c) {
                return Runs::Unknown(format!("`xargs {a}` is an option the policy does not know"));
            }
        }
        i += step;
    }
    let argv = match args.get(i..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => vec!["echo".to_string()],
    };
    Runs::Command {
        argv,
        hidden: HIDDEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(line: &str) -> Runs {
        let argv: Vec<String> = line.split(' ').map(String::from).collect();
        runs(&argv[0], &argv[1..])
    }

    fn command(line: &str) -> String {
        match of(line) {
            Runs::Command { argv, .. } => argv.join(" "),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn wrappers_are_seen_through() {
        assert_eq!(command("env rm -rf x"), "rm -rf x");
        assert_eq!(command("env -i -u HOME -- rm x"), "rm x");
        assert_eq!(command("nice -n 5 rm x"), "rm x");
        assert_eq!(command("nice -n5 rm x"), "rm x");
        assert_eq!(command("nice -5 rm x"), "rm x");
        assert_eq!(command("nice --adj=5 rm x"), "rm x");
        assert_eq!(command("nohup rm x"), "rm x");
        assert_eq!(command("timeout 1 rm x"), "rm x");
        assert_eq!(command("timeout -s KILL -k 2 1 rm x"), "rm x");
        assert_eq!(command("timeout --signal=KILL --preserve 1 rm x"), "rm x");
        assert_eq!(command("stdbuf -oL rm x"), "rm x");
        assert_eq!(command("stdbuf -o L --error=0 rm x"), "rm x");
        assert_eq!(command("command -p rm x"), "rm x");
        assert_eq!(command("exec rm x"), "rm x");
        assert_eq!(command("time -p rm x"), "rm x");
        assert_eq!(command("xargs rm"), "rm");
        assert_eq!(command("xargs -0 -n 1 -I{} rm {}"), "rm {}");
        assert_eq!(command("xargs -r0P4 rm"), "rm");
        assert_eq!(command("xargs"), "echo");
        assert_eq!(command("busybox rm -rf x"), "rm -rf x");
        assert!(matches!(
            of("env A=1 rm"),
            Runs::Command {
                hidden: Some(_),
                ..
            }
        ));
        assert!(matches!(
            of("xargs rm"),
            Runs::Command {
                hidden: Some(_),
                ..
            }
        ));
        assert_eq!(of("sh -c ls;rm"), Runs::Script("ls;rm".into()));
        assert_eq!(of("bash -c x y z"), Runs::Script("x".into()));
        assert_eq!(of("env"), Runs::Nothing);
        assert_eq!(of("ls -la"), Runs::Nothing);
        for unknown in [
            "sh x.sh",
            "bash",
            "sh -ec x",
            "env -S x",
            "nice --x rm",
            "time -o f rm",
            "command -v rm",
            "xargs -Z rm",
            "busybox --install",
        ] {
            assert!(matches!(of(unknown), Runs::Unknown(_)), "{unknown}");
        }
    }

    #[test]
    fn find_actions_are_the_commands_find_runs() {
        let args: Vec<String> = ". -name x -exec rm -rf {} ; -ok mv {} y +"
            .split(' ')
            .map(String::from)
            .collect();
        let got: Vec<String> = find_actions(&args).iter().map(|a| a.join(" ")).collect();
        assert_eq!(got, ["rm -rf {}", "mv {} y"]);
    }
}
