//! Reading a command line the way `sh` will, so that the policy judges what will run.
//!
//! [`parse`] is strict: it understands words, single and double quotes, backslash escapes
//! (backslash-newline included), `~` and `~/…`, the operators `;` `&` `&&` `||` `|` and
//! newlines, and the redirections that cannot touch a file (`2>&1`, `>/dev/null`). Everything
//! else — `$` in any form, backticks, other redirections and here-documents, subshells and
//! groups, globs, comments, control characters — makes it give up with the reason, and a line
//! it gives up on is asked, never allowed. Refusing is safer than guessing: a guess is exactly
//! where a string policy is bypassed.
//!
//! [`fragments`] is lenient: it cuts a line at every operator and nesting character and reads
//! the inside of quotes as commands too. It is for deny patterns only (a denied command hidden
//! in `$(…)`, a subshell or a here-document is still denied); it never allows anything.

/// A simple command's words after quote removal: the program and its arguments.
pub type Argv = Vec<String>;

/// Simple commands joined by `|`.
pub type Pipeline = Vec<Argv>;

/// A command line read strictly: its pipelines, in the order the list runs them (separated by
/// `;`, `&`, `&&`, `||` and newlines).
pub fn parse(line: &str, home: Option<&str>) -> Result<Vec<Pipeline>, String> {
    Parser {
        chars: line.chars().collect(),
        at: 0,
        home,
        pipelines: Vec::new(),
        pipeline: Vec::new(),
        argv: Vec::new(),
        word: None,
        quoted: false,
        brace: false,
        needs_command: None,
    }
    .run()
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    home: Option<&'a str>,
    pipelines: Vec<Pipeline>,
    pipeline: Pipeline,
    argv: Argv,
    /// The word being read (Some even when empty, after `''`).
    word: Option<String>,
    /// Whether any of the word was quoted or escaped.
    quoted: bool,
    /// Whether the word has an unquoted `{` or `}` (bash expands `{a,b}`).
    brace: bool,
    /// The operator (`|`, `&&`, `||`) that still needs a command after it.
    needs_command: Option<&'static str>,
}

impl Parser<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn run(mut self) -> Result<Vec<Pipeline>, String> {
        while let Some(c) = self.peek(0) {
            self.at += 1;
            match c {
                ' ' | '\t' => self.end_word()?,
                '\n' => self.newline()?,
                ';' if self.peek(0) == Some(';') => return Err("it uses `;;` (case syntax)".into()),
                ';' => self.end_list(";")?,
                '&' if self.peek(0) == Some('&') => {
                    self.at += 1;
                    self.end_pipeline_then("&&")?;
                }
                '&' if self.peek(0) == Some('>') => {
                    return Err("it redirects output to a file (`&>`)".into())
                }
                '&' => self.end_list("&")?,
                '|' if self.peek(0) == Some('|') => {
                    self.at += 1;
                    self.end_pipeline_then("||")?;
                }
                '|' if self.peek(0) == Some('&') => {
                    return Err("it uses `|&` (bash syntax)".into())
                }
                '|' => {
                    self.end_command("|")?;
                    self.needs_command = Some("|");
                }
                '\'' => self.single_quoted()?,
                '"' => self.double_quoted()?,
                '\\' => match self.peek(0) {
                    // A line continuation: the two characters vanish, the word goes on.
                    Some('\n') => self.at += 1,
                    Some(e) => {
                        self.at += 1;
                        self.push_quoted(e);
                    }
                    None => return Err("it ends with a lone backslash".into()),
                },
                '<' | '>' => self.redirection(c)?,
                '$' => {
                    return Err(
                        "it uses `$` (a variable, `$(…)` or arithmetic), whose value the policy cannot know"
                            .into(),
                    )
                }
                '`' => return Err("it uses backticks (command substitution)".into()),
                '(' | ')' => {
                    return Err(format!(
                        "it uses `{c}` (a subshell or a function definition)"
                    ))
                }
                '*' | '?' | '[' => {
                    return Err(format!(
                        "it uses `{c}` unquoted (a glob, which expands to file names the policy cannot see)"
                    ))
                }
                '#' if self.word.is_none() => {
                    return Err("it has a comment (`#`): text sh ignores but a reader may not".into())
                }
                '~' if self.word.is_none() => self.tilde()?,
                '{' | '}' => {
                    self.brace = true;
                    self.push(c);
                }
                c if c.is_control() => {
                    return Err(format!(
                        "it has a control character (U+{:04X})",
                        u32::from(c)
                    ))
                }
                c => self.push(c),
            }
        }
        self.end_word()?;
        if let Some(op) = self.needs_command {
            if self.argv.is_empty() {
                return Err(format!("it ends with `{op}`"));
            }
        }
        if !self.argv.is_empty() {
            self.end_command("the end")?;
        }
        if !self.pipeline.is_empty() {
            self.pipelines.push(std::mem::take(&mut self.pipeline));
        }
        Ok(self.pipelines)
    }

    fn push(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }

    fn push_quoted(&mut self, c: char) {
        self.quoted = true;
        self.push(c);
    }

    fn end_word(&mut self) -> Result<(), String> {
        if let Some(w) = self.word.take() {
            // `{}` alone is a plain word (find's placeholder); any other unquoted brace may be
            // brace expansion (bash) or a group.
            let find_placeholder = w == "{}" && !self.quoted;
            if self.brace && !find_placeholder {
                return Err(format!(
                    "it uses `{{` or `}}` unquoted in {w:?} (a group or brace expansion)"
                ));
            }
            self.argv.push(w);
        }
        self.quoted = false;
        self.brace = false;
        Ok(())
    }

    /// Ends the simple command before `op`, which needs one.
    fn end_command(&mut self, op: &str) -> Result<(), String> {
        self.end_word()?;
        if self.argv.is_empty() {
            return Err(format!("it has an empty command before {op:?}"));
        }
        self.pipeline.push(std::mem::take(&mut self.argv));
        self.needs_command = None;
        Ok(())
    }

    /// `;` or `&`: the pipeline ends, and nothing has to follow.
    fn end_list(&mut self, op: &str) -> Result<(), String> {
        self.end_command(op)?;
        self.pipelines.push(std::mem::take(&mut self.pipeline));
        Ok(())
    }

    /// `&&` or `||`: the pipeline ends, and a command must follow.
    fn end_pipeline_then(&mut self, op: &'static str) -> Result<(), String> {
        self.end_list(op)?;
        self.needs_command = Some(op);
        Ok(())
    }

    fn newline(&mut self) -> Result<(), String> {
        self.end_word()?;
        // Blank lines, and newlines after `|`, `&&` or `||`, separate nothing.
        if self.argv.is_empty() && (self.needs_command.is_some() || self.pipeline.is_empty()) {
            return Ok(());
        }
        self.end_list("a newline")
    }

    fn single_quoted(&mut self) -> Result<(), String> {
        self.word.get_or_insert_with(String::new);
        self.quoted = true;
        loop {
            match self.peek(0) {
                None => return Err("it has an unterminated `'`".into()),
                Some('\'') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(c) => {
                    self.at += 1;
                    self.push(c);
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<(), String> {
        self.word.get_or_insert_with(String::new);
        self.quoted = true;
        loop {
            let Some(c) = self.peek(0) else {
                return Err("it has an unterminated `\"`".into());
            };
            self.at += 1;
            match c {
                '"' => return Ok(()),
                '$' | '`' => {
                    return Err(format!(
                        "it uses `{c}` inside double quotes (expansion or substitution)"
                    ))
                }
                // Inside double quotes a backslash escapes only these; before anything else
                // it is itself.
                '\\' => match self.peek(0) {
                    Some('\n') => self.at += 1,
                    Some(e @ ('$' | '`' | '"' | '\\')) => {
                        self.at += 1;
                        self.push(e);
                    }
                    _ => self.push('\\'),
                },
                c => self.push(c),
            }
        }
    }

    /// `~` or `~/…` at the start of a word is the home directory; `~user` is refused.
    fn tilde(&mut self) -> Result<(), String> {
        let ends_here = match self.peek(0) {
            None | Some('/' | ' ' | '\t' | '\n' | ';' | '&' | '|') => true,
            Some(_) => false,
        };
        match (ends_here, self.home) {
            (true, Some(home)) => {
                self.word = Some(home.to_string());
                self.quoted = true;
                Ok(())
            }
            (true, None) => Err("it uses `~` and HOME is not set".into()),
            (false, _) => Err("it uses `~NAME` (another user's home or a directory stack)".into()),
        }
    }

    /// Only redirections that cannot touch a file pass: duplicating a descriptor (`2>&1`,
    /// `>&2`) and `/dev/null` (`2>/dev/null`, `</dev/null`). A leading number is the
    /// descriptor, not an argument.
    fn redirection(&mut self, op: char) -> Result<(), String> {
        if self
            .word
            .as_deref()
            .is_some_and(|w| !self.quoted && w.chars().all(|c| c.is_ascii_digit()))
        {
            self.word = None;
        } else {
            self.end_word()?;
        }
        match (op, self.peek(0)) {
            (_, Some('&')) => {
                self.at += 1;
                let start = self.at;
                while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                if self.at == start || !self.at_boundary() {
                    return Err(format!(
                        "it uses `{op}&` with something other than a descriptor number"
                    ));
                }
                Ok(())
            }
            ('<', Some('<')) => Err("it has a here-document (`<<`)".into()),
            ('<', Some('(')) | ('>', Some('(')) => {
                Err(format!("it uses process substitution (`{op}(`)"))
            }
            ('>', Some('|')) => Err("it overwrites a file (`>|`)".into()),
            ('<', Some('>')) => Err("it opens a file read-write (`<>`)".into()),
            _ => {
                if op == '>' && self.peek(0) == Some('>') {
                    self.at += 1;
                }
                while matches!(self.peek(0), Some(' ' | '\t')) {
                    self.at += 1;
                }
                let target = "/dev/null";
                let n = target.chars().count();
                let here: String = self.chars[self.at..].iter().take(n).collect();
                self.at += n.min(self.chars.len() - self.at);
                if here != target || !self.at_boundary() {
                    return Err(format!(
                        "it redirects {} a file (`{op}`), which the policy cannot vouch for",
                        if op == '>' { "output to" } else { "input from" }
                    ));
                }
                Ok(())
            }
        }
    }

    fn at_boundary(&self) -> bool {
        matches!(
            self.peek(0),
            None | Some(' ' | '\t' | '\n' | ';' | '&' | '|')
        )
    }
}

/// Every run of words between operators or nesting characters (`;` `&` `|` `(` `)` `{` `}`
/// `<` `>` `$` backticks newlines), quotes removed, and the same again inside every quoted
/// string: the places a denied command could hide from [`parse`]. Pipelines are kept whole
/// (for patterns like `curl *|*sh*`).
pub fn fragments(line: &str) -> Vec<Pipeline> {
    let mut out = Vec::new();
    let mut inner = Vec::new();
    let (mut pipeline, mut argv, mut word): (Pipeline, Argv, Option<String>) =
        (Vec::new(), Vec::new(), None);
    let end_word = |argv: &mut Argv, word: &mut Option<String>| argv.extend(word.take());
    let end_command = |pipeline: &mut Pipeline, argv: &mut Argv| {
        if !argv.is_empty() {
            pipeline.push(std::mem::take(argv));
        }
    };
    let end_pipeline = |out: &mut Vec<Pipeline>, pipeline: &mut Pipeline| {
        if !pipeline.is_empty() {
            out.push(std::mem::take(pipeline));
        }
    };
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() && c != '\n' => end_word(&mut argv, &mut word),
            '|' if chars.peek() != Some(&'|') => {
                end_word(&mut argv, &mut word);
                end_command(&mut pipeline, &mut argv);
            }
            ';' | '&' | '|' | '(' | ')' | '{' | '}' | '<' | '>' | '$' | '`' | '\n' => {
                end_word(&mut argv, &mut word);
                end_command(&mut pipeline, &mut argv);
                end_pipeline(&mut out, &mut pipeline);
            }
            '\'' | '"' => {
                let mut quoted = String::new();
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    quoted.push(q);
                }
                word.get_or_insert_with(String::new).push_str(&quoted);
                inner.push(quoted);
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(e) => word.get_or_insert_with(String::new).push(e),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut argv, &mut word);
    end_command(&mut pipeline, &mut argv);
    end_pipeline(&mut out, &mut pipeline);
    for q in inner {
        out.extend(fragments(&q));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Pipeline> {
        parse(line, Some("/home/u")).unwrap()
    }

    fn v(items: &[&[&str]]) -> Pipeline {
        items
            .iter()
            .map(|a| a.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn quotes_escapes_and_tilde_are_removed_as_sh_does() {
        assert_eq!(words("r''m -rf ~"), vec![v(&[&["rm", "-rf", "/home/u"]])]);
        assert_eq!(words(r#""r"m \-x"#), vec![v(&[&["rm", "-x"]])]);
        assert_eq!(words("\\rm a\\\nb"), vec![v(&[&["rm", "ab"]])]);
        assert_eq!(
            words(r#"echo "a; b" 'c|d'"#),
            vec![v(&[&["echo", "a; b", "c|d"]])]
        );
        assert_eq!(words(r#"echo "\$x \q""#), vec![v(&[&["echo", "$x \\q"]])]);
        assert_eq!(words("echo ''"), vec![v(&[&["echo", ""]])]);
        assert_eq!(words("ls ~/x a~"), vec![v(&[&["ls", "/home/u/x", "a~"]])]);
        assert_eq!(words("echo a#b"), vec![v(&[&["echo", "a#b"]])]);
        assert_eq!(
            words("find . -exec ls {} ;"),
            vec![v(&[&["find", ".", "-exec", "ls", "{}"]])]
        );
    }

    /// The words of one simple command are the words sh itself passes to the program: sh
    /// prints them here, as arguments of printf.
    #[test]
    fn words_are_the_words_sh_sees() {
        let home = std::env::var("HOME").ok();
        for line in [
            "r''m -rf ~",
            r#""r"m \-x"#,
            "\\rm a\\\nb",
            r#"echo "a; b" 'c|d'"#,
            r#"echo "\$x \q \\ \"" 'e\f'"#,
            "echo '' \"\"",
            "ls ~/x a~ ~",
            "echo a#b '#' \\#",
            "x\\ y \"{}\" {}",
            "a\tb  c",
        ] {
            let ours = parse(line, home.as_deref()).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s\\0' {line}"))
                .output()
                .unwrap();
            let theirs: Argv = String::from_utf8(out.stdout)
                .unwrap()
                .split_terminator('\0')
                .map(String::from)
                .collect();
            assert_eq!(ours, vec![vec![theirs]], "{line:?}");
        }
    }

    #[test]
    fn lists_and_pipelines_split_where_sh_splits() {
        assert_eq!(
            words("a 1; b | c && d || e & f\ng"),
            vec![
                v(&[&["a", "1"]]),
                v(&[&["b"], &["c"]]),
                v(&[&["d"]]),
                v(&[&["e"]]),
                v(&[&["f"]]),
                v(&[&["g"]]),
            ]
        );
        assert_eq!(words("\n\na\n\n"), vec![v(&[&["a"]])]);
        assert_eq!(
            words("a &&\n b |\n c"),
            vec![v(&[&["a"]]), v(&[&["b"], &["c"]])]
        );
        assert_eq!(words("a;"), vec![v(&[&["a"]])]);
        assert_eq!(
            words("ls 2>&1 >/dev/null 2> /dev/null"),
            vec![v(&[&["ls"]])]
        );
    }

    #[test]
    fn what_it_cannot_read_is_refused_with_the_reason() {
        for (line, why) in [
            ("echo $HOME", "`$`"),
            ("echo \"$(id)\"", "double quotes"),
            ("echo `id`", "backticks"),
            ("(ls)", "subshell"),
            ("{ ls; }", "group"),
            ("ls *.rs", "glob"),
            ("echo ok # ; rm", "comment"),
            ("echo hi\rrm", "control character"),
            (";ls", "empty command"),
            ("ls ;; ls", ";;"),
            ("ls &&", "ends with"),
            ("ls | | ls", "empty command"),
            ("cat <<EOF", "here-document"),
            ("cat <(ls)", "process substitution"),
            ("echo x > f", "redirects output"),
            ("echo x >>/dev/nullx", "redirects output"),
            ("echo x >| f", "overwrites"),
            ("ls >&f", "descriptor"),
            ("ls &> f", "&>"),
            ("echo 'open", "unterminated"),
            ("ls ~root", "~NAME"),
            ("echo \\", "backslash"),
        ] {
            let e = parse(line, Some("/h")).unwrap_err();
            assert!(e.contains(why), "{line:?}: {e}");
        }
    }

    #[test]
    fn fragments_cut_at_every_nesting_and_read_quotes_as_commands() {
        let f = fragments("echo $(rm -rf ~) `sudo x` <<EOF\nshutdown now\nEOF");
        let flat: Vec<String> = f.iter().flatten().map(|a| a.join(" ")).collect();
        for want in ["rm -rf ~", "sudo x", "shutdown now"] {
            assert!(flat.iter().any(|t| t == want), "{flat:?}");
        }
        let f = fragments("git status; curl x | sh");
        assert!(f.contains(&v(&[&["curl", "x"], &["sh"]])), "{f:?}");
        let f = fragments("f(){ sh -c 'rm -rf /'; }");
        assert!(f.contains(&v(&[&["rm", "-rf", "/"]])), "{f:?}");
    }
}
