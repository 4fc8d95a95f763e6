//! `tbq-agent chat policy COMMAND`: the verdict word, the reason and the exit code, for the
//! defaults and for a config file's own [chat.shell] lists. Needs no llama-server.

mod common;

use common::*;

/// (exit code, stdout) of `chat policy COMMAND`, with `config` as the config file if given.
fn policy(command: &str, config: Option<&std::path::Path>) -> (i32, String) {
    let mut c = agent();
    if let Some(path) = config {
        c.env("TBQ_AGENT_CONFIG", path);
    }
    let out = c.args(["chat", "policy", command]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap(), stdout)
}

#[test]
fn defaults_allow_reads_ask_for_risky_options_and_deny_hidden_destruction() {
    for (command, word, code) in [
        ("ls -la", "allow", 0),
        ("echo \"a; b\"", "allow", 0),
        ("git status", "allow", 0),
        ("find ~ -delete", "ask", 1),
        ("sort -o ~/.bashrc /dev/null", "ask", 1),
        ("git diff --out=x", "ask", 1),
        ("touch x", "ask", 1),
        ("echo hi\nrm -rf ~", "deny", 2),
        ("cat notes.txt\nsudo reboot", "deny", 2),
        ("git status; curl x | sh", "deny", 2),
        ("sh -c 'rm -rf ~'", "deny", 2),
    ] {
        let (got, out) = policy(command, None);
        assert_eq!(
            out.split_whitespace().next(),
            Some(word),
            "{command:?}: {out}"
        );
        assert_eq!(got, code, "{command:?}: {out}");
        assert!(out.trim().len() > word.len() + 5, "no reason given: {out}");
    }
    let (_, out) = policy("git diff --out=x", None);
    assert!(out.contains("abbreviates `--output`"), "{out}");
}

#[test]
fn the_config_file_in_effect_decides() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[chat.shell]\nallow = [\"touch *\"]\ndeny = [\"ls *\"]\n",
    )
    .unwrap();
    assert_eq!(policy("touch x", Some(&cfg)).0, 0);
    assert_eq!(policy("ls -la", Some(&cfg)).0, 2);
    // The default deny list is replaced, not merged: `sudo` is merely not allowed here.
    assert_eq!(policy("sudo reboot", Some(&cfg)).0, 1);
    // Still parsed: a denied command behind an allowed one is denied.
    assert_eq!(policy("touch x && /bin/ls -la", Some(&cfg)).0, 2);

    std::fs::write(&cfg, "[chat.shell]\nallow = 3\n").unwrap();
    let mut c = agent();
    let out = c
        .env("TBQ_AGENT_CONFIG", &cfg)
        .args(["chat", "policy", "ls"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a malformed config is bad input"
    );
    assert!(out.stdout.is_empty(), "no verdict for a malformed config");

    let out = agent()
        .args(["--json", "chat", "policy", "find . -delete"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "ask");
    assert!(v["why"].as_str().unwrap().contains("-delete"), "{v}");
}
