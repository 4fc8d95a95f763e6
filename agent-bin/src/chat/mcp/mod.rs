//! MCP (Model Context Protocol) client: the tools of the servers in `[chat.mcp.NAME]` are
//! offered to the model beside the built-in ones, as `NAME.tool`.
//!
//! Servers are started (stdio) or connected to (streamable HTTP) when the chat starts,
//! initialised (`initialize` with version negotiation, `notifications/initialized`), asked
//! for their tools once, and stopped at exit. A call is `tools/call` with the server's
//! `timeout`; its text is cut at `max_result_bytes`. Whether a call needs the user's "yes"
//! is the server's `confirm` setting; asking is the tool runner's job (`tools.rs`), as for
//! shell commands.
//!
//! # Why our own client, not `rmcp`
//!
//! The official Rust SDK, `rmcp`, is async on tokio. The agent is synchronous (threads,
//! `ureq`, `tiny_http`) and uses a small part of MCP: one handshake, `tools/list`,
//! `tools/call`, cancellation, `ping`. Pulling rmcp would bring tokio, hyper/reqwest and
//! their trees into a binary that has none of them, with a runtime to keep beside the agent's
//! threads and a build that takes minutes longer on the 2-core machines, to replace some
//! 900 lines of plain code. This client is those lines: JSON-RPC 2.0 with strict checks of
//! every message (`jsonrpc.rs`), newline-delimited JSON over a child's pipes (`stdio.rs`),
//! POST with JSON or server-sent-event answers and session ids (`streamable_http.rs`), and
//! the session on top (`client.rs`). The day the agent needs more of MCP (resources,
//! sampling, OAuth), rmcp is worth its weight; not for this.
//!
//! It is tested against servers made with the official Python SDK, over both transports and
//! both kinds of HTTP answer (tests at the end of this file).

pub mod client;
pub mod jsonrpc;
pub mod schema;
pub mod stdio;
pub mod streamable_http;
pub mod transport;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::protocol::ToolSpec;
use super::settings::{CommandLine, McpServerConfig};
use crate::error::{fail, Exit};
use client::{CallResult, Client};

/// A tool of an MCP server, as offered to the model.
pub struct McpTool {
    /// Its spec (named `server.tool`).
    pub spec: &'static ToolSpec,
    /// Its server's name in the config.
    pub server: String,
    /// Its name on the server.
    pub remote: String,
    /// Whether each call asks the user first.
    pub confirm: bool,
}

struct Server {
    name: String,
    client: Client,
    timeout: Duration,
    max_result_bytes: usize,
}

/// The connected servers and their tools.
#[derive(Default)]
pub struct Servers {
    servers: Vec<Server>,
    tools: Vec<McpTool>,
}

impl Servers {
    /// Starts (or connects to) every enabled server of `config`, stdio servers in `cwd`, and
    /// lists their tools. A server that cannot be started, initialised or listed stops the
    /// chat from starting, with its name: it was asked for, and a chat that silently lacks
    /// its tools would answer as if they did not exist.
    pub fn start(config: &BTreeMap<String, McpServerConfig>, cwd: &Path) -> Result<Servers> {
        let mut all = Servers::default();
        for (name, cfg) in config.iter().filter(|(_, c)| c.enabled) {
            let server = connect(name, cfg, cwd).map_err(|why| {
                fail(Exit::Input, why).fix(format!(
                    "check [chat.mcp.{name}] in the config file, or set enabled = false there"
                ))
            })?;
            all.add(server, cfg)?;
        }
        Ok(all)
    }

    fn add(&mut self, mut server: Server, cfg: &McpServerConfig) -> Result<()> {
        let listed = server
            .client
            .list_tools(Duration::from_secs(cfg.startup_timeout))
            .map_err(|why| fail(Exit::Input, why))?;
        tracing::info!(
            "MCP server {} ({}, protocol {}): {} tools",
            server.name,
            server.client.server_info,
            server.client.protocol_version,
            listed.len()
        );
        for t in &listed {
            self.tools.push(McpTool {
                spec: schema::tool_spec(&server.name, t, cfg.optional_args),
                server: server.name.clone(),
                remote: t.name.clone(),
                confirm: cfg.confirm.applies_to(&t.name),
            });
        }
        self.servers.push(server);
        Ok(())
    }

    /// Every MCP tool.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// The MCP tool named `name` (`server.tool`).
    pub fn tool(&self, name: &str) -> Option<&McpTool> {
        self.tools.iter().find(|t| t.spec.name == name)
    }

    /// Calls the MCP tool `name` with `args` (no confirmation asked here).
    pub fn call(&mut self, name: &str, args: &Value) -> CallResult {
        let Some(tool) = self.tools.iter().find(|t| t.spec.name == name) else {
            return CallResult {
                ok: false,
                text: format!("there is no MCP tool {name:?}"),
            };
        };
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.name == tool.server)
            .expect("every tool's server is kept");
        server
            .client
            .call_tool(&tool.remote, args, server.timeout, server.max_result_bytes)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.client.close();
        }
    }
}

/// Server names become the first half of tool names (`NAME.tool`): no dots, nothing the
/// grammar or the prompt would have to escape.
fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn connect(name: &str, cfg: &McpServerConfig, cwd: &Path) -> Result<Server, String> {
    if !valid_server_name(name) {
        return Err(format!(
            "[chat.mcp.{name}]: a server name is letters, digits, _ and - only"
        ));
    }
    let startup = Duration::from_secs(cfg.startup_timeout);
    let transport: Box<dyn transport::Transport> = match (&cfg.command, &cfg.url) {
        (Some(command), None) => {
            let mut words = match command {
                CommandLine::Program(p) => vec![p.clone()],
                CommandLine::Words(w) => w.clone(),
            };
            if words.is_empty() || words[0].trim().is_empty() {
                return Err(format!("[chat.mcp.{name}]: command is empty"));
            }
            let program = words.remove(0);
            words.extend(cfg.args.iter().cloned());
            Box::new(stdio::StdioServer::spawn(name, &program, &words, &cfg.env, cwd)?)
        }
        (None, Some(url)) => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("[chat.mcp.{name}]: url {url:?} is not http:// or https://"));
            }
            if url.starts_with("https://") && !cfg!(feature = "tls") {
                return Err(format!(
                    "[chat.mcp.{name}]: {url} needs HTTPS, and this tbq-agent was built without the tls feature"
                ));
            }
            Box::new(streamable_http::StreamableHttp::new(name, url))
        }
        (Some(_), Some(_)) => {
            return Err(format!("[chat.mcp.{name}]: give command or url, not both"))
        }
        (None, None) => {
            return Err(format!(
                "[chat.mcp.{name}]: give command (a program to start) or url (a streamable HTTP endpoint)"
            ))
        }
    };
    let client = Client::initialize(name, transport, startup)?;
    Ok(Server {
        name: name.into(),
        client,
        timeout: Duration::from_secs(cfg.timeout),
        max_result_bytes: cfg.max_result_bytes,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    //! Against real MCP servers: `tests/data/mcp_server.py` (the official Python SDK, installed
    //! into a virtual environment under the target folder on first use), and, for the checks
    //! of what a broken server sends, small shell programs that send it.

    use super::*;
    use crate::chat::settings::ConfirmTools;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::Instant;

    /// A Python with the `mcp` package (`tests/data/mcp-python.sh`: `TBQ_MCP_PYTHON`, or a
    /// virtual environment made once in the target folder).
    pub(crate) fn python_with_mcp() -> PathBuf {
        static FOUND: OnceLock<PathBuf> = OnceLock::new();
        FOUND
            .get_or_init(|| {
                // <target>/<profile>/deps/<test binary>
                let exe = std::env::current_exe().unwrap();
                let venv = exe.ancestors().nth(3).unwrap().join("mcp-venv");
                let out = Command::new("bash")
                    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mcp-python.sh"))
                    .arg(venv)
                    .stderr(Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "no Python with the mcp package (tests/data/mcp-python.sh failed); set TBQ_MCP_PYTHON to one"
                );
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            })
            .clone()
    }

    fn server_script() -> String {
        format!("{}/tests/data/mcp_server.py", env!("CARGO_MANIFEST_DIR"))
    }

    fn stdio_config(extra: impl FnOnce(&mut McpServerConfig)) -> McpServerConfig {
        let mut c = McpServerConfig {
            command: Some(CommandLine::Words(vec![
                python_with_mcp().display().to_string(),
                server_script(),
            ])),
            args: vec!["stdio".into()],
            timeout: 5,
            ..McpServerConfig::default()
        };
        extra(&mut c);
        c
    }

    fn start(name: &str, cfg: McpServerConfig, cwd: &Path) -> Servers {
        Servers::start(&BTreeMap::from([(name.to_string(), cfg)]), cwd)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn start_err(cfg: McpServerConfig) -> String {
        match Servers::start(
            &BTreeMap::from([("bad".to_string(), cfg)]),
            Path::new("/tmp"),
        ) {
            Ok(_) => panic!("a broken server started"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// The Python server over streamable HTTP on a free port, listening.
    struct HttpServer(Child, u16);

    impl HttpServer {
        fn start(json: bool) -> HttpServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut c = Command::new(python_with_mcp());
            c.arg(server_script()).args(["http", &port.to_string()]);
            if json {
                c.arg("json");
            }
            let child = c.stderr(Stdio::null()).spawn().unwrap();
            let s = HttpServer(child, port);
            let t0 = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "the HTTP MCP server never listened"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            s
        }

        fn config(&self) -> McpServerConfig {
            McpServerConfig {
                url: Some(format!("http://127.0.0.1:{}/mcp", self.1)),
                timeout: 5,
                ..McpServerConfig::default()
            }
        }
    }

    impl Drop for HttpServer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// What every transport must do: list, call with arguments, report tool errors, cap, time
    /// out without losing the session.
    fn exercise(s: &mut Servers) {
        let names: Vec<&str> = s.tools().iter().map(|t| t.spec.name).collect();
        for want in [
            "t.add",
            "t.word_count",
            "t.sleep",
            "t.big",
            "t.touch",
            "t.crash",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        let add = s.tool("t.add").unwrap().spec;
        assert_eq!(add.help, "Add two integers and return the sum.");
        assert_eq!(
            add.args.to_vec(),
            [
                ("a", crate::chat::protocol::Arg::Integer),
                ("b", crate::chat::protocol::Arg::Integer)
            ]
        );

        let r = s.call("t.add", &serde_json::json!({"a": 2, "b": 40}));
        assert_eq!((r.ok, r.text.as_str()), (true, "42"));
        let r = s.call(
            "t.word_count",
            &serde_json::json!({"text": "one two three"}),
        );
        assert_eq!((r.ok, r.text.as_str()), (true, "3 words"));

        let r = s.call("t.fail", &serde_json::json!({"why": "the disk is on fire"}));
        assert!(!r.ok && r.text.contains("the disk is on fire"), "{r:?}");

        let r = s.call("t.big", &serde_json::json!({"n": 100_000}));
        assert!(r.ok);
        assert!(
            r.text.ends_with("\n[result cut at 1000 of 100000 bytes]"),
            "{}",
            &r.text[900..]
        );
        assert_eq!(r.text.matches('x').count(), 1000);

        let t0 = Instant::now();
        let r = s.call("t.sleep", &serde_json::json!({"seconds": 4}));
        let waited = t0.elapsed();
        assert!(!r.ok, "{r:?}");
        assert!(
            r.text
                .contains("MCP server t did not answer tools/call within 1 s"),
            "{r:?}"
        );
        assert!(
            waited < Duration::from_secs(3),
            "the timeout took {waited:?}"
        );
        // The session survives: the next call is answered, the late one is not taken for it.
        let r = s.call("t.add", &serde_json::json!({"a": 1, "b": 1}));
        assert_eq!((r.ok, r.text.as_str()), (true, "2"), "after a timeout");
    }

    fn fast(mut c: McpServerConfig) -> McpServerConfig {
        c.timeout = 1;
        c.max_result_bytes = 1000;
        c
    }

    #[test]
    fn stdio_server_lists_calls_caps_times_out_and_is_stopped_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = start("t", fast(stdio_config(|_| {})), dir.path());
        exercise(&mut s);
        // The server runs in the workspace.
        let r = s.call("t.touch", &serde_json::json!({"name": "made-here"}));
        assert!(r.ok, "{r:?}");
        assert!(dir.path().join("made-here").exists());
        let transport_pid = server_pid(&s);
        drop(s);
        assert!(
            !std::path::Path::new(&format!("/proc/{transport_pid}")).exists(),
            "the server outlived the chat"
        );
    }

    /// The stdio server's process id, through /proc (the transport keeps it private).
    fn server_pid(s: &Servers) -> u32 {
        let me = std::process::id();
        let script = server_script();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if ppid == Some(me) && cmdline.contains(&script) && cmdline.contains("stdio") {
                return pid;
            }
        }
        panic!(
            "no server process among this test's children ({} tools)",
            s.tools().len()
        );
    }

    #[test]
    fn streamable_http_server_answering_with_event_streams() {
        let srv = HttpServer::start(false);
        let mut s = start("t", fast(srv.config()), Path::new("/tmp"));
        exercise(&mut s);
    }

    #[test]
    fn streamable_http_server_answering_with_json() {
        let srv = HttpServer::start(true);
        let mut s = start("t", fast(srv.config()), Path::new("/tmp"));
        exercise(&mut s);
    }

    #[test]
    fn a_crashed_server_gives_an_error_naming_it_at_once() {
        let mut s = start("notes", stdio_config(|_| {}), Path::new("/tmp"));
        let t0 = Instant::now();
        let r = s.call("notes.crash", &serde_json::json!({}));
        assert!(!r.ok);
        assert!(
            r.text
                .starts_with("MCP server notes closed its stdout; it exited (exit status: 3)"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("crashing as asked"),
            "the stderr tail: {}",
            r.text
        );
        let r = s.call("notes.add", &serde_json::json!({"a": 1, "b": 2}));
        assert!(!r.ok && r.text.contains("MCP server notes"), "{r:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t0.elapsed()
        );

        // Over HTTP: the server process is gone, and the call says where it was looked for.
        let mut srv = HttpServer::start(false);
        let mut s = start("remote", srv.config(), Path::new("/tmp"));
        srv.0.kill().unwrap();
        srv.0.wait().unwrap();
        let r = s.call("remote.add", &serde_json::json!({"a": 1, "b": 2}));
        assert!(!r.ok);
        assert!(
            r.text
                .contains("MCP server remote cannot be reached at http://127.0.0.1:"),
            "{}",
            r.text
        );
    }

    fn sh(script: &str) -> McpServerConfig {
        McpServerConfig {
            command: Some(CommandLine::Words(vec![
                "sh".into(),
                "-c".into(),
                script.into(),
            ])),
            startup_timeout: 5,
            ..McpServerConfig::default()
        }
    }

    #[test]
    fn servers_that_break_the_protocol_are_refused_with_the_reason() {
        let e = start_err(sh("echo 'Server listening on stdio'; sleep 10"));
        assert!(
            e.contains("MCP server bad sent a message that is not JSON"),
            "{e}"
        );
        assert!(e.contains("Server listening on stdio"), "{e}");

        let e = start_err(sh(
            r#"read l; echo '{"jsonrpc":"2.0","id":99,"result":{}}'; sleep 10"#,
        ));
        assert!(
            e.contains("a response to request 99, which is not waiting (request 1 is)"),
            "{e}"
        );

        let e = start_err(sh(
            "read l; head -c 5000000 /dev/zero | tr '\\0' x; echo; sleep 10",
        ));
        assert!(e.contains("over the limit of 4194304"), "{e}");

        let e = start_err(sh(
            r#"read l; echo '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"1999-01-01","capabilities":{}}}'; sleep 10"#,
        ));
        assert!(e.contains("speaks protocol version 1999-01-01"), "{e}");

        let t0 = Instant::now();
        let e = start_err(sh("read l; sleep 30"));
        assert!(e.contains("did not answer initialize within 5 s"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(9));

        let e = start_err(sh("exit 7"));
        assert!(e.contains("exited (exit status: 7)"), "{e}");

        let e = start_err(McpServerConfig::default());
        assert!(e.contains("give command"), "{e}");
        let e = start_err(McpServerConfig {
            url: Some("ftp://x".into()),
            ..McpServerConfig::default()
        });
        assert!(e.contains("not http://"), "{e}");
    }

    #[test]
    fn config_tables_take_both_command_forms_and_both_confirm_forms() {
        let c: crate::chat::ChatConfig = toml::from_str(
            r#"
            [mcp.files]
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
            env = { NODE_NO_WARNINGS = "1" }
            confirm = ["write_file"]
            [mcp.py]
            command = ["python3", "server.py"]
            [mcp.remote]
            url = "http://127.0.0.1:8000/mcp"
            confirm = true
            timeout = 5
            "#,
        )
        .unwrap();
        let files = &c.mcp["files"];
        assert_eq!(files.command, Some(CommandLine::Program("npx".into())));
        assert!(files.confirm.applies_to("write_file") && !files.confirm.applies_to("read_file"));
        assert_eq!(files.env["NODE_NO_WARNINGS"], "1");
        assert_eq!(
            c.mcp["py"].command,
            Some(CommandLine::Words(vec![
                "python3".into(),
                "server.py".into()
            ]))
        );
        assert!(!c.mcp["py"].confirm.applies_to("anything"));
        assert!(c.mcp["remote"].confirm.applies_to("anything"));
        assert_eq!(
            (c.mcp["remote"].timeout, c.mcp["remote"].max_result_bytes),
            (5, 16384)
        );
        // A typo in a safety setting must not pass.
        let e = toml::from_str::<crate::chat::ChatConfig>(
            "[mcp.x]\nurl = \"http://h/mcp\"\nconfrim = true\n",
        );
        assert!(e.unwrap_err().to_string().contains("confrim"));
        assert!(
            valid_server_name("my-files_2") && !valid_server_name("a.b") && !valid_server_name("")
        );
    }

    #[test]
    fn confirm_and_optional_arguments_follow_the_config() {
        use crate::chat::protocol::Arg;
        let s = start("t", stdio_config(|_| {}), Path::new("/tmp"));
        assert!(!s.tool("t.touch").unwrap().confirm);
        // By default the model is offered the required arguments only.
        assert_eq!(
            s.tool("t.greet").unwrap().spec.args.to_vec(),
            [("name", Arg::Text)]
        );
        drop(s);

        let cfg = stdio_config(|c| {
            c.confirm = ConfirmTools::Only(vec!["touch".into()]);
            c.optional_args = true;
        });
        let mut s = start("t", cfg, Path::new("/tmp"));
        assert!(s.tool("t.touch").unwrap().confirm);
        assert!(!s.tool("t.add").unwrap().confirm);
        let greet = s.tool("t.greet").unwrap().spec;
        assert_eq!(
            greet.args.to_vec(),
            [("name", Arg::Text), ("greeting", Arg::Optional(&Arg::Text))]
        );
        let r = s.call("t.greet", &serde_json::json!({"name": "Ada"}));
        assert_eq!(r.text, "Hello, Ada");
        let r = s.call(
            "t.greet",
            &serde_json::json!({"name": "Ada", "greeting": "Hi"}),
        );
        assert_eq!(r.text, "Hi, Ada");
    }
}
