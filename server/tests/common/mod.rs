//! Start-up of a real `antiphon serve` for the integration tests: one place that writes the
//! test config, spawns the binary on an ephemeral port, reads the address it prints, and (on
//! request) collects its log lines for assertions.
//!
//! Each test crate compiles this module on its own and uses part of it.
#![allow(dead_code)]

pub mod realtime;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

/// A server that runs the protocol without loading any engine.
pub const NO_ENGINES: &str =
    "[asr]\nenabled = false\n[llm]\nenabled = false\n[tts]\nenabled = false\n";

/// The small CI LLM keeps model tests fast (the server's default is the cpu set's Qwen); opens
/// the `[llm]` section, so more `[llm]` keys may follow.
pub const CI_LLM: &str = "[llm]\nmodel = \"smollm2-135m\"\n";

/// How to start one server.
pub struct ServerOptions<'a> {
    /// The whole config file.
    pub config: &'a str,
    /// Arguments after `serve --port 0 --host 127.0.0.1 --config FILE`.
    pub args: &'a [&'a str],
    /// `RUST_LOG` for the server; `ANTIPHON_TEST_LOG` overrides it when set.
    pub log_filter: &'a str,
    /// Keep the server's log lines (ANSI colours stripped) for [`TestServer::log_lines`];
    /// otherwise they go to the test's stderr.
    pub capture_log: bool,
}

impl Default for ServerOptions<'_> {
    fn default() -> Self {
        ServerOptions {
            config: CI_LLM,
            args: &[],
            log_filter: "warn",
            capture_log: false,
        }
    }
}

pub struct TestServer {
    pub port: u16,
    /// The rest of the server's stdout (after the address line), for tests that read more.
    pub stdout: Lines<BufReader<ChildStdout>>,
    log: Arc<Mutex<Vec<String>>>,
    _child: Child,
    _config: tempfile::NamedTempFile,
}

impl TestServer {
    /// Spawns the server and waits (up to 2 min: engines load slowly on a busy 2-core box)
    /// for the address line.
    pub async fn start(options: ServerOptions<'_>) -> TestServer {
        let config = tempfile::NamedTempFile::new().expect("temp config");
        std::fs::write(config.path(), options.config).expect("write test config");
        let log_filter =
            std::env::var("ANTIPHON_TEST_LOG").unwrap_or_else(|_| options.log_filter.into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_antiphon"))
            .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
            .arg(config.path())
            .args(options.args)
            .env("RUST_LOG", log_filter)
            .env("CANDLE_NUM_THREADS", "1")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(if options.capture_log {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("spawn antiphon serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    eprintln!("server: {line}");
                    sink.lock().expect("log lock").push(line);
                }
            });
        }
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), stdout.next_line())
            .await
            .expect("server loaded its engines and printed its address in time")
            .expect("read stdout")
            .expect("a line (the server exited: are the models in the store?)");
        let port = port_in(&line);
        TestServer {
            port,
            stdout,
            log,
            _child: child,
            _config: config,
        }
    }

    /// A server that runs the protocols without loading any engine.
    pub async fn without_engines() -> TestServer {
        TestServer::start(ServerOptions {
            config: NO_ENGINES,
            ..ServerOptions::default()
        })
        .await
    }

    /// The server's process id (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }

    /// Sends the server SIGTERM (a graceful drain).
    pub fn terminate(&self) {
        let pid = self.pid().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits up to `limit` for the server to exit; its exit status (`None`: still running).
    pub async fn exit_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self._child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for the server"))
    }

    /// The server's log lines so far (only with `capture_log`).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

/// The port in the address line the server prints first (`… 127.0.0.1:PORT`).
fn port_in(line: &str) -> u16 {
    line.rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// The workspace root (the server serves the web demo from `web-demo/` under it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ sits inside the workspace")
        .to_path_buf()
}

/// The same server for tests that run without a tokio runtime (blocking sockets, a str0m
/// peer's own loop), started from the workspace root. Killed on drop.
pub struct BlockingServer {
    pub port: u16,
    child: std::process::Child,
    _config: tempfile::NamedTempFile,
}

impl BlockingServer {
    /// Spawns the server with `config` and waits for its address line (`read_line` waits
    /// while engines load). `server_log`: where its stderr goes.
    pub fn start(config: &str, server_log: Stdio) -> BlockingServer {
        use std::io::BufRead;
        let file = tempfile::NamedTempFile::new().expect("temp config");
        std::fs::write(file.path(), config).expect("write test config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_antiphon"))
            .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
            .arg(file.path())
            .current_dir(workspace_root())
            .env("RUST_LOG", "warn")
            .env("CANDLE_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(server_log)
            .spawn()
            .expect("spawn antiphon serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server printed its address");
        BlockingServer {
            port: port_in(&line),
            child,
            _config: file,
        }
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET on loopback; the whole response, headers included.
pub async fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the server");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the response");
    out
}

/// One HTTP/1.0 POST with an empty body on loopback, with a bearer key if given; the whole
/// response, headers included.
pub async fn http_post(port: u16, path: &str, key: Option<&str>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the server");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    s.write_all(
        format!("POST {path} HTTP/1.0\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the response");
    out
}

/// The status code of a raw HTTP response.
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"))
}

/// The JSON body of a raw HTTP response.
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the `/metrics` series whose line starts with `prefix` (0 when absent).
pub fn metric(metrics: &str, prefix: &str) -> i64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The line without ANSI colour sequences (`ESC [ … letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
