//! Runs the real `core-sidecar` binary with piped stdio and talks JSON-RPC to it.
#![allow(dead_code)] // shared by every test module; not each uses every helper
//!
//! Every test that spawns a [`Sidecar`] also gets, when it ends, a check that no registered
//! secret (the defaults below plus anything passed to [`Sidecar::secret`]) ever appeared on
//! the sidecar's stdout or stderr.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Generous: tests wait on events, so a long timeout only costs time when something is broken.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A JWT-shaped fake access token (header `{"alg":"HS256"}`, payload `{"sub":"1"}`).
pub const TEST_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
/// A fake refresh token.
pub const TEST_REFRESH_TOKEN: &str = "rt-test-0123456789-abcdef";

/// Tokens that must never leave the sidecar, whatever the test.
pub const DEFAULT_SECRETS: &[&str] = &[TEST_JWT, TEST_REFRESH_TOKEN];

/// The binary under test: `CORE_SIDECAR_TEST_BIN` when set (a path, e.g. the shipped build
/// `dist/core-sidecar-<target-triple>` that scripts/dist.sh writes), else the one cargo built
/// for this test run.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("CORE_SIDECAR_TEST_BIN") {
        Ok(path) if !path.is_empty() => std::fs::canonicalize(&path)
            .unwrap_or_else(|e| panic!("CORE_SIDECAR_TEST_BIN={path}: {e}"))
            .to_string_lossy()
            .into_owned(),
        _ => env!("CARGO_BIN_EXE_core-sidecar").to_string(),
    })
}

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read by `recv_response` that were not the awaited response.
    buffered: VecDeque<Value>,
    notifications: Vec<Value>,
    stdout_all: Arc<Mutex<Vec<u8>>>,
    stderr_all: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    secrets: Vec<String>,
    next_id: u64,
    /// The INITIAL_SESSION of a `memory` sidecar, set aside (see [`Sidecar::spawn_with_args`]).
    initial_session: tokio::sync::watch::Receiver<Option<Value>>,
}

/// Whether a stdout line is the INITIAL_SESSION notification every sidecar sends once at
/// start (tests that read the raw pipe leave it out with this).
pub fn is_initial_session(line: &str) -> bool {
    line.contains(r#""method":"auth_state_changed""#)
        && line.contains(r#""event":"INITIAL_SESSION""#)
}

/// Removes the inherited settings of the sidecar from a command, so only what a test passes
/// counts. `CORE_SIDECAR_KEYRING=memory` unless the test says otherwise.
pub fn clean_env(cmd: &mut Command, env: &[(&str, &str)]) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CORE_SIDECAR_") || key.starts_with("SENTRY_") || key == "RUST_LOG" {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("CORE_SIDECAR_KEYRING", "memory");
    for (key, value) in env {
        cmd.env(key, value);
    }
}

impl Sidecar {
    /// Spawns the binary with these environment variables (on top of a cleaned environment).
    pub fn spawn(env: &[(&str, &str)]) -> Sidecar {
        Self::spawn_with_args(&[], env)
    }

    /// With the `memory` keyring (the default here) the one INITIAL_SESSION the sidecar
    /// sends at start, always signed out, is set aside rather than read as a line: the tests
    /// of everything else then see stdout as they would without it, and
    /// [`Sidecar::initial_session`] has it. With any other keyring it is read like any line.
    pub fn spawn_with_args(args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let memory = env
            .iter()
            .rev()
            .find(|(key, _)| *key == "CORE_SIDECAR_KEYRING")
            .is_none_or(|(_, value)| *value == "memory");
        let (initial_tx, initial_session) = tokio::sync::watch::channel(None);
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        clean_env(&mut cmd, env);
        let mut child = cmd.spawn().expect("spawn core-sidecar");

        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stdout_all = Arc::new(Mutex::new(Vec::new()));
        let stderr_all = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();

        let out = stdout_all.clone();
        let stdout_task = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
                        if memory && initial_tx.borrow().is_none() && is_initial_session(&text) {
                            initial_tx
                                .send_replace(Some(serde_json::from_str(&text).expect("JSON")));
                            continue;
                        }
                        out.lock().unwrap().extend_from_slice(&line);
                        let _ = tx.send(text);
                    }
                }
            }
        });
        let err = stderr_all.clone();
        let stderr_task = tokio::spawn(async move {
            let mut stderr = stderr;
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });

        Sidecar {
            stdin: child.stdin.take(),
            child,
            lines,
            buffered: VecDeque::new(),
            notifications: Vec::new(),
            stdout_all,
            stderr_all,
            readers: vec![stdout_task, stderr_task],
            secrets: DEFAULT_SECRETS.iter().map(|s| s.to_string()).collect(),
            next_id: 1,
            initial_session,
        }
    }

    /// The INITIAL_SESSION a `memory` sidecar sent, once it has arrived (it may come after
    /// the first answers: `core_ping` does not wait for the session to load).
    pub async fn initial_session(&self) -> Value {
        let mut initial = self.initial_session.clone();
        let arrived = tokio::time::timeout(TIMEOUT, initial.wait_for(Option::is_some))
            .await
            .unwrap_or_else(|_| panic!("no INITIAL_SESSION within {TIMEOUT:?}"))
            .expect("the stdout reader keeps the sender until stdout closes");
        arrived.clone().expect("waited for Some")
    }

    /// Registers a string that must never appear on stdout or stderr.
    pub fn secret(&mut self, secret: &str) -> &mut Self {
        self.secrets.push(secret.to_string());
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Writes raw bytes to stdin (no newline added).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// Writes one line (a `\n` is added).
    pub async fn send_line(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_bytes(&bytes).await;
    }

    pub async fn send(&mut self, value: Value) {
        self.send_line(&value.to_string()).await;
    }

    /// The next stdout line, or `None` on timeout or when stdout is closed.
    pub async fn recv_line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next stdout line parsed as JSON; panics on timeout or invalid JSON.
    pub async fn recv_json(&mut self) -> Value {
        let line = self
            .recv_line(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no line on stdout; stderr:\n{}", self.stderr()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends a request with a fresh numeric id and waits for its response (the whole
    /// response object). `params` of `Value::Null` are left out.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            request["params"] = params;
        }
        self.send(request).await;
        self.recv_response(&json!(id)).await
    }

    /// Waits for the response with this id; notifications and other responses seen
    /// meanwhile are kept (see [`Sidecar::notifications`]).
    pub async fn recv_response(&mut self, id: &Value) -> Value {
        if let Some(pos) = self
            .buffered
            .iter()
            .position(|v| v.get("id") == Some(id) && v.get("method").is_none())
        {
            return self.buffered.remove(pos).expect("position");
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(line) = self.recv_line(left).await else {
                panic!("no response with id {id}; stderr:\n{}", self.stderr());
            };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if value.get("method").is_some() {
                self.notifications.push(value);
            } else if value.get("id") == Some(id) {
                return value;
            } else {
                self.buffered.push_back(value);
            }
        }
    }

    /// Waits for the next notification with this method (already seen ones first).
    pub async fn recv_notification(&mut self, method: &str) -> Value {
        if let Some(pos) = self
            .notifications
            .iter()
            .position(|n| n["method"] == method)
        {
            return self.notifications.remove(pos);
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(line) = self.recv_line(left).await else {
                panic!("no {method} notification; stderr:\n{}", self.stderr());
            };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if value["method"] == method {
                return value;
            } else if value.get("method").is_some() {
                self.notifications.push(value);
            } else {
                self.buffered.push_back(value);
            }
        }
    }

    /// Notifications seen so far by `recv_response` (and not taken by `recv_notification`).
    pub fn notifications(&self) -> &[Value] {
        &self.notifications
    }

    /// Closes stdin: the sidecar sees EOF.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit, then for its stdout and stderr to be fully read.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sidecar did not exit; stderr:\n{}", self.stderr()))
            .expect("wait");
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(TIMEOUT, reader).await;
        }
        status
    }

    /// Sends SIGTERM.
    pub fn kill_term(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Sends SIGINT.
    pub fn kill_int(&self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Everything read from stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_all.lock().unwrap()).into_owned()
    }

    /// Everything read from stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout_all.lock().unwrap()).into_owned()
    }

    /// Panics if a registered secret appeared on stdout or stderr.
    pub fn assert_no_secrets(&self) {
        let stdout = self.stdout();
        let stderr = self.stderr();
        for secret in &self.secrets {
            assert!(
                !stdout.contains(secret.as_str()),
                "a secret leaked to stdout: {secret}\n{stdout}"
            );
            assert!(
                !stderr.contains(secret.as_str()),
                "a secret leaked to stderr: {secret}\n{stderr}"
            );
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_secrets();
        }
    }
}

/// The raw text of each top-level member of a JSON object line, as sent on the wire.
/// (`serde_json::Value` would turn `1e3` into `1000.0`; the raw text proves exact echo.)
pub fn raw_members(line: &str) -> std::collections::HashMap<String, String> {
    let map: std::collections::HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
    map.into_iter()
        .map(|(k, v)| (k, v.get().to_string()))
        .collect()
}

/// Serves a fake on 127.0.0.1 on a free port; returns the port and the server task.
pub async fn serve_local(app: axum::Router) -> (u16, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (port, server)
}

/// A built example (next to the binary cargo built, whatever [`bin`] is), checked to be
/// newer than its source.
pub fn example(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_core-sidecar"))
        .parent()
        .expect("the binary has a directory")
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let hint = format!(
        "run `cargo test` (it builds the examples) or `cargo build --example {name}` first"
    );
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("example {} not found ({e}): {hint}", path.display()));
    let written = std::fs::metadata(&source)
        .and_then(|m| m.modified())
        .expect("example source");
    assert!(
        built >= written,
        "{} is older than {}: {hint}",
        path.display(),
        source.display()
    );
    path
}

// The real-keyring tests are `#[ignore = "needs a real Secret Service / keyutils: ..."]`:
// a plain `cargo test` lists them as ignored, and `scripts/test.sh` runs them with
// `--include-ignored` inside `scripts/with-keyring.sh`, where an unreachable keyring fails.

/// A keyring service name no other test (or run) uses.
pub fn unique_service(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("core-sidecar-it-{name}-{}-{nanos}", std::process::id())
}

pub fn secret_tool_lookup(service: &str) -> Option<String> {
    let output = std::process::Command::new("secret-tool")
        .args(["lookup", "service", service, "username", "default"])
        .output()
        .expect("secret-tool (package libsecret-tools) runs");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    (output.status.success() && !text.is_empty()).then_some(text)
}

/// The session secret the Secret Service holds for `service`, parsed.
pub fn secret_tool_json(service: &str) -> Option<serde_json::Value> {
    secret_tool_lookup(service).map(|text| serde_json::from_str(&text).expect("one JSON secret"))
}

/// Raw stdout without the INITIAL_SESSION line, for tests that compare the whole output.
pub fn without_initial_session(stdout: &str) -> String {
    stdout
        .split_inclusive('\n')
        .filter(|line| !is_initial_session(line))
        .collect()
}

/// The next line of a raw stdout pipe that is not the INITIAL_SESSION notification.
pub async fn read_answer_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> String {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
            .await
            .expect("a line in time")
            .expect("read");
        if !is_initial_session(&line) {
            return line;
        }
    }
}
