//! Options that make a read-only program write, delete or run something.
//!
//! An allow pattern like `sort *` cannot tell `sort notes.txt` from `sort -o ~/.bashrc x`; this
//! table can. A command that uses one of these options is asked even when an allow pattern
//! matches it. Long options are matched the way GNU getopt reads them: any prefix of a long
//! option's name selects it (`--out` is `--output`), so a prefix of a risky one counts as the
//! risky one, ambiguous or not. Short options count anywhere in a cluster (`-uo` has `-o`).

/// A program's risky options.
struct Risky {
    program: &'static str,
    /// Short option letters.
    short: &'static str,
    /// Long option names, without `--`.
    long: &'static [&'static str],
    /// Whole words, as find spells its actions (`-delete`).
    words: &'static [&'static str],
    /// More operands than this and the next one is written to (uniq's OUTPUT). Option values
    /// (`uniq -f 1`) count as operands here: that asks too often, never too rarely.
    max_operands: Option<usize>,
    /// What the options do, for the question.
    does: &'static str,
}

const RISKY: &[Risky] = &[
    Risky {
        program: "find",
        short: "",
        long: &[],
        words: &[
            "-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fprint0", "-fprintf",
            "-fls",
        ],
        max_operands: None,
        does: "deletes files, runs commands or writes files",
    },
    Risky {
        program: "sort",
        short: "o",
        long: &["output", "compress-program"],
        words: &[],
        max_operands: None,
        does: "writes a file or runs a program",
    },
    Risky {
        program: "git",
        short: "",
        long: &[
            "output",
            "ext-diff",
            "exec-path",
            "upload-pack",
            "receive-pack",
        ],
        words: &[],
        max_operands: None,
        does: "writes a file or runs a program",
    },
    Risky {
        program: "date",
        short: "s",
        long: &["set"],
        words: &[],
        max_operands: None,
        does: "sets the system clock",
    },
    Risky {
        program: "sed",
        short: "if",
        long: &["in-place", "file"],
        words: &[],
        max_operands: None,
        does: "edits files in place or runs a script file",
    },
    Risky {
        program: "tee",
        short: "",
        long: &[],
        words: &[],
        max_operands: Some(0),
        does: "writes every file it names",
    },
    Risky {
        program: "uniq",
        short: "",
        long: &[],
        words: &[],
        max_operands: Some(1),
        does: "writes its second operand",
    },
];

/// Why `args` make `program` (a basename) write, delete or run something; None when they do not
/// (as far as this table knows).
pub fn risk(program: &str, args: &[String]) -> Option<String> {
    let r = RISKY.iter().find(|r| r.program == program)?;
    let mut operands = 0;
    let mut options_end = false;
    for a in args {
        if options_end || a == "-" || !a.starts_with('-') {
            operands += 1;
            if r.max_operands.is_some_and(|max| operands > max) {
                return Some(format!("`{program} … {a}`: {program} {}", r.does));
            }
            continue;
        }
        if a == "--" {
            options_end = true;
            continue;
        }
        if r.words.contains(&a.as_str()) {
            return Some(format!("`{program} {a}` {}", r.does));
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or_default();
            if let Some(full) = r.long.iter().find(|l| l.starts_with(name)) {
                let spelled = if *full == name {
                    String::new()
                } else {
                    format!(" (`--{name}` abbreviates `--{full}`)")
                };
                return Some(format!("`{program} --{full}`{spelled} {}", r.does));
            }
            continue;
        }
        if let Some(letter) = a[1..].chars().find(|c| r.short.contains(*c)) {
            let cluster = if a.len() > 2 {
                format!(" (in `{a}`)")
            } else {
                String::new()
            };
            return Some(format!("`{program} -{letter}`{cluster} {}", r.does));
        }
    }
    if program == "sed" {
        return sed_script_risk(args);
    }
    None
}

/// sed's `w`/`W` commands and `w` flag write files, and GNU sed's `e` runs commands; a script is
/// not parsed here, so any script with one of those letters is asked.
fn sed_script_risk(args: &[String]) -> Option<String> {
    let mut scripts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-e" || a == "--expression" {
            scripts.extend(it.next().map(String::as_str));
        } else if let Some(s) = a.strip_prefix("--expression=").or(a.strip_prefix("-e")) {
            scripts.push(s);
        }
    }
    if scripts.is_empty() {
        scripts.extend(
            args.iter()
                .map(String::as_str)
                .find(|a| !a.starts_with('-')),
        );
    }
    scripts
        .iter()
        .find(|s| s.contains(['w', 'W', 'e']))
        .map(|s| format!("the sed script {s:?} may write files (`w`) or run commands (`e`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn risky(line: &str) -> bool {
        let argv: Vec<String> = line.split(' ').map(String::from).collect();
        risk(&argv[0], &argv[1..]).is_some()
    }

    #[test]
    fn risky_options_are_found_however_they_are_spelled() {
        for line in [
            "find . -delete",
            "find ~ -name x -execdir rm {} ;",
            "find . -fprint out",
            "sort -o f x",
            "sort -ruo f x",
            "sort --output=f x",
            "sort --out=f x",
            "sort --o f",
            "sort --compress-prog=sh x",
            "git diff --output=x",
            "git log -p --outp x",
            "git diff --ext-diff",
            "date -s 2020-01-01",
            "date --set=x",
            "sed -i s/a/b/ f",
            "sed --in-pl s/a/b/ f",
            "sed -n w/tmp/x f",
            "sed -e 1e\\ id f",
            "tee f",
            "uniq a b",
        ] {
            assert!(risky(line), "{line}");
        }
        for line in [
            "find . -name x -print",
            "sort -n -k 2 f",
            "sort -- -o",
            "git diff --stat",
            "git log --oneline --exit-code",
            "date +%s",
            "sed -n 1,5p f",
            "tee",
            "uniq -c f",
            "ls -o",
        ] {
            assert!(!risky(line), "{line}");
        }
    }
}
