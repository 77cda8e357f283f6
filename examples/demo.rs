//! The guided demo driven by `scripts/demo.sh`: spawns the sidecar over pipes, as a desktop
//! shell would, and walks through the whole flow against a local dev backend
//! (`examples/dev_backend.rs`: the product routes and a GoTrue-compatible auth server under
//! `/auth/v1`), printing each request, its result and every notification.
//!
//! ```text
//! demo --backend http://127.0.0.1:PORT [--sidecar PATH] [--sidecar-pid-file PATH]
//! ```
//!
//! - `--sidecar` defaults to `core-sidecar` next to this example's directory
//!   (`target/debug/examples/demo` -> `target/debug/core-sidecar`).
//! - `--sidecar-pid-file` writes the sidecar's pid there (for the script's cleanup trap).
//!
//! The sidecar runs with `CORE_SIDECAR_BACKEND_URL` set to `--backend`,
//! `CORE_SIDECAR_AUTH_URL` to `--backend` + `/auth/v1`, `RUST_LOG=warn`,
//! `CORE_SIDECAR_KEYRING=memory` unless the caller sets `CORE_SIDECAR_KEYRING`, and
//! `CORE_SIDECAR_PROFILE=demo` unless set (so a real keyring's session is never touched).
//! The auth API key and Sentry settings are removed: nothing leaves the machine.
//!
//! It signs in for real, twice: with an emailed one-time code (the dev auth server prints it
//! on its log; the driver reads it from `GET /dev/otp`), then with OAuth and PKCE (the driver
//! plays the browser: it opens the sign-in URL without following the redirect and takes the
//! `code` from its `Location`, as the OS would hand the app its callback URL).
//!
//! Every step is checked: the driver exits 1 at the first step that does not behave as
//! expected, if any access token, refresh token, auth code or PKCE verifier (the dev auth
//! server lists every one it issued or received at `GET /dev/secrets`) shows up in the
//! sidecar's stdout or stderr or in what the driver printed, or if the sidecar does not exit
//! 0 when its stdin closes. So it doubles as a smoke test (`tests/it/demo.rs`). Colors only
//! when stdout is a terminal (and `NO_COLOR` is unset).

// A command-line tool: the walkthrough goes to stdout, failures to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// How long one response or notification may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The dev auth server's one user (examples/dev_backend.rs).
const DEMO_EMAIL: &str = "demo@example.com";
/// Where the OAuth provider sends the browser back: the app's own URL scheme.
const REDIRECT_TO: &str = "coresidecar-demo://auth/callback";

/// Everything the walkthrough printed, checked for secrets at the end.
static PRINTED: Mutex<String> = Mutex::new(String::new());

/// `println!` that also keeps the line for the final leak check.
macro_rules! say {
    () => { say!("") };
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        if let Ok(mut printed) = PRINTED.lock() {
            printed.push_str(&line);
            printed.push('\n');
        }
        println!("{line}");
    }};
}

type Outcome<T = ()> = Result<T, String>;

struct Args {
    backend: String,
    sidecar: PathBuf,
    pid_file: Option<PathBuf>,
}

fn usage() -> String {
    "usage: demo --backend http://127.0.0.1:PORT [--sidecar PATH] [--sidecar-pid-file PATH]"
        .to_string()
}

fn parse_args() -> Outcome<Args> {
    let mut backend = None;
    let mut sidecar = None;
    let mut pid_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .map(str::to_string)
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match name.as_str() {
            "--backend" => backend = Some(value()?),
            "--sidecar" => sidecar = Some(PathBuf::from(value()?)),
            "--sidecar-pid-file" => pid_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    let backend = backend
        .ok_or_else(|| format!("--backend is required\n{}", usage()))?
        .trim_end_matches('/')
        .to_string();
    let sidecar = match sidecar {
        Some(path) => path,
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("core-sidecar")))
            .ok_or("cannot locate core-sidecar; pass --sidecar")?,
    };
    Ok(Args {
        backend,
        sidecar,
        pid_file,
    })
}

/// ANSI styling, on only for a terminal.
#[derive(Clone, Copy)]
struct Style {
    on: bool,
}

impl Style {
    fn detect(terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            on: terminal && !no_color,
        }
    }
    fn paint(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn magenta(self, t: &str) -> String {
        self.paint("35", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("31", t)
    }
}

/// JSON on one line, with a space after `:` and `,` so it reads like prose.
fn compact(value: &Value) -> String {
    let mut out = String::new();
    write_compact(value, &mut out);
    out
}

fn write_compact(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_compact(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}: ", Value::String(key.clone()));
                write_compact(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Raw JSON text as sent on the wire (keys in the sidecar's order), with a space after `:`
/// and `,` outside strings.
fn spaced(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + raw.len() / 8);
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        out.push(c);
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_string = true,
                ':' | ',' => out.push(' '),
                _ => {}
            }
        }
    }
    out
}

/// The raw text of the `result` member of a response line, if any.
fn raw_result(line: &str) -> Option<String> {
    let members: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(line).ok()?;
    Some(members.get("result")?.get().to_string())
}

/// A result's `user` object cut to its id and email (GoTrue's whole user is a screenful).
fn shorten_user(raw: &str) -> String {
    let Ok(members) = serde_json::from_str::<
        std::collections::HashMap<String, Box<serde_json::value::RawValue>>,
    >(raw) else {
        return raw.to_string();
    };
    let Some(user_raw) = members.get("user").map(|u| u.get()) else {
        return raw.to_string();
    };
    let Ok(Value::Object(user)) = serde_json::from_str::<Value>(user_raw) else {
        return raw.to_string();
    };
    let mut short = String::from("{");
    for key in ["id", "email"] {
        if let Some(value) = user.get(key) {
            let _ = write!(short, "{}:{value},", json!(key));
        }
    }
    short.push_str("…}");
    raw.replacen(user_raw, &short, 1)
}

/// An HTTP answer from the dev backend.
struct HttpAnswer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl HttpAnswer {
    /// The `data` of a `{"success", "data"}` answer.
    fn data(&self, what: &str) -> Outcome<Value> {
        let value: Value = serde_json::from_str(&self.body)
            .map_err(|e| format!("{what}: not JSON ({e}): {}", self.body))?;
        match value.get("data") {
            Some(data) if self.status == 200 => Ok(data.clone()),
            _ => Err(format!("{what} answered {}: {}", self.status, self.body)),
        }
    }
}

/// One plain HTTP/1.1 request to the dev backend (127.0.0.1 only), never following a
/// redirect: status, `Location` and body.
fn http(method: &str, url: &str, body: Option<&Value>) -> Outcome<HttpAnswer> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let shown = url.split('?').next().unwrap_or(url);
    let fail = |e: std::io::Error| format!("{method} {shown}: {e}");
    let mut stream = TcpStream::connect(host).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    let (content_type, body) = match body {
        Some(body) => ("Content-Type: application/json\r\n", body.to_string()),
        None => ("", String::new()),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{content_type}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or((response.as_str(), ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {shown}: not an HTTP response"))?;
    let location = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_string())
    });
    Ok(HttpAnswer {
        status,
        location,
        body: body.to_string(),
    })
}

/// Every token, auth code and verifier the dev auth server issued or received: none may
/// appear in any output. Short values (the 6-digit codes) are not listed there.
fn issued_secrets(backend: &str) -> Outcome<Vec<String>> {
    let data = http("GET", &format!("{backend}/dev/secrets"), None)?.data("GET /dev/secrets")?;
    Ok(data["secrets"]
        .as_array()
        .ok_or_else(|| format!("GET /dev/secrets: no list in {data}"))?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect())
}

/// The running sidecar and what it has said so far.
struct Sidecar {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    next_id: u64,
    /// Every notification received, in order.
    notifications: Vec<Value>,
    /// How many of `notifications` a step has already claimed.
    claimed: usize,
    /// Values the driver sends but never shows (the one-time code, the auth code), with
    /// what is shown instead.
    hidden: Vec<(String, &'static str)>,
    style: Style,
}

impl Sidecar {
    fn spawn(args: &Args, style: Style) -> Outcome<Sidecar> {
        let mut cmd = Command::new(&args.sidecar);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("CORE_SIDECAR_BACKEND_URL", &args.backend)
            .env("CORE_SIDECAR_AUTH_URL", format!("{}/auth/v1", args.backend))
            .env("RUST_LOG", "warn")
            .env_remove("CORE_SIDECAR_AUTH_API_KEY")
            .env_remove("SENTRY_DSN");
        for (key, default) in [
            ("CORE_SIDECAR_KEYRING", "memory"),
            ("CORE_SIDECAR_PROFILE", "demo"),
        ] {
            if std::env::var(key).map_or(true, |v| v.is_empty()) {
                cmd.env(key, default);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.sidecar.display()))?;
        if let Some(path) = &args.pid_file {
            std::fs::write(path, child.id().to_string())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }

        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = (child.stdout.take().expect("piped"), stdout.clone());
        let stdout_reader = std::thread::spawn(move || {
            let (pipe, all) = out;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push_str(&line);
                all.lock().unwrap().push('\n');
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = (child.stderr.take().expect("piped"), stderr.clone());
        let stderr_reader = std::thread::spawn(move || {
            let (mut pipe, all) = err;
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            all.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
        });

        Ok(Sidecar {
            stdin: child.stdin.take(),
            child,
            lines,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
            stderr,
            stdout,
            next_id: 1,
            notifications: Vec::new(),
            claimed: 0,
            hidden: Vec::new(),
            style,
        })
    }

    /// From now on, `value` is shown as `label` in what the driver prints.
    fn hide(&mut self, value: &str, label: &'static str) {
        self.hidden.push((value.to_string(), label));
    }

    /// What the user sees of a value we send: the hidden values replaced.
    fn redact(&self, text: &str) -> String {
        self.hidden
            .iter()
            .fold(text.to_string(), |text, (value, label)| {
                text.replace(value, label)
            })
    }

    /// Reads one stdout line, or fails after `deadline`: the parsed value and the raw line.
    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> Outcome<(Value, String)> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no {waiting_for} within {}s", TIMEOUT.as_secs()));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "the sidecar closed stdout while the demo waited for {waiting_for}"
                ));
            }
        };
        let value =
            serde_json::from_str(&line).map_err(|e| format!("not JSON on stdout ({e}): {line}"))?;
        Ok((value, line))
    }

    fn show_notification(&mut self, message: Value) -> Outcome {
        if message.get("method").and_then(Value::as_str) != Some("auth_state_changed") {
            return Err(format!("unexpected notification: {message}"));
        }
        let params = &message["params"];
        let mut text = format!(
            "notification auth_state_changed: {}",
            params["event"].as_str().unwrap_or("?")
        );
        if let Some(reason) = params["reason"].as_str() {
            let _ = write!(text, " (reason: {reason})");
        }
        let state = &params["state"];
        let _ = write!(
            text,
            ", isAuthenticated {}, userId {}",
            state["isAuthenticated"], state["userId"]
        );
        say!("    {}", self.style.magenta(&format!("◆ {text}")));
        self.notifications.push(message);
        Ok(())
    }

    /// Sends a request and waits for its response, showing notifications as they arrive.
    /// Returns the whole response (`result` or `error`).
    /// `step` 0 continues the previous step (no number).
    fn call(&mut self, step: u32, method: &str, params: Value, why: &str) -> Outcome<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let shown = match &params {
            Value::Object(map) if map.is_empty() => method.to_string(),
            params => format!("{method} {}", self.redact(&compact(params))),
        };
        say!(
            "{} {} {}",
            self.style.bold(&if step == 0 {
                "    →".to_string()
            } else {
                format!("{step:>2}. →")
            }),
            self.style.bold(&shown),
            self.style.dim(&format!("  # {why}"))
        );
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to the sidecar: {e}"))?;

        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (message, line) = self.next_line(deadline, &format!("response to {method}"))?;
            match message.get("id") {
                None => self.show_notification(message)?,
                Some(got) if *got == json!(id) => {
                    self.show_response(&message, &line);
                    return Ok(message);
                }
                Some(_) => return Err(format!("a response to another request: {message}")),
            }
        }
    }

    fn show_response(&self, response: &Value, line: &str) {
        let s = self.style;
        if let Some(result) = response.get("result") {
            let text =
                raw_result(line).map_or_else(|| compact(result), |raw| spaced(&shorten_user(&raw)));
            say!("    {} {text}", s.green("←"));
        } else {
            let error = &response["error"];
            let data = &error["data"];
            let mut text = format!(
                "error {} {}",
                error["code"],
                data["kind"].as_str().unwrap_or("")
            );
            if let Some(reason) = data["reason"].as_str() {
                let _ = write!(text, " (reason: {reason})");
            }
            let _ = write!(text, ": {}", error["message"].as_str().unwrap_or(""));
            say!("    {} {}", s.yellow("←"), s.yellow(&text));
        }
    }

    /// Waits (if needed) for the next notification and checks its event and reason.
    fn expect_notification(&mut self, event: &str, reason: Option<&str>) -> Outcome {
        let deadline = Instant::now() + TIMEOUT;
        while self.notifications.len() <= self.claimed {
            let (message, _) = self.next_line(deadline, &format!("{event} notification"))?;
            if message.get("id").is_some() {
                return Err(format!("an unexpected response: {message}"));
            }
            self.show_notification(message)?;
        }
        let params = &self.notifications[self.claimed]["params"];
        self.claimed += 1;
        check(
            params["event"] == event && params["reason"].as_str() == reason,
            format!(
                "expected auth_state_changed {event}{}, got {params}",
                reason.map(|r| format!(" (reason {r})")).unwrap_or_default()
            ),
        )
    }

    /// Closes stdin and waits for the exit status.
    fn close(&mut self) -> Outcome<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => return Err("the sidecar did not exit after stdin closed".into()),
                Err(e) => return Err(format!("cannot wait for the sidecar: {e}")),
            }
        };
        for reader in [self.stdout_reader.take(), self.stderr_reader.take()]
            .into_iter()
            .flatten()
        {
            let _ = reader.join();
        }
        // Anything still unread on stdout must be a notification.
        while let Ok(line) = self.lines.try_recv() {
            let message: Value =
                serde_json::from_str(&line).map_err(|e| format!("not JSON on stdout ({e})"))?;
            if message.get("id").is_some() {
                return Err(format!("an unexpected response: {message}"));
            }
            self.show_notification(message)?;
        }
        Ok(status)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn check(ok: bool, what: impl Into<String>) -> Outcome {
    if ok { Ok(()) } else { Err(what.into()) }
}

fn result<'a>(response: &'a Value, method: &str) -> Outcome<&'a Value> {
    response
        .get("result")
        .ok_or_else(|| format!("{method} failed: {}", response["error"]))
}

fn expect_auth_expired(response: &Value, reason: Option<&str>) -> Outcome {
    let error = &response["error"];
    check(
        error["code"] == -32001
            && error["data"]["kind"] == "auth_expired"
            && reason.is_none_or(|r| error["data"]["reason"] == r),
        format!(
            "expected error -32001 auth_expired{}, got {response}",
            reason.map(|r| format!(" reason {r}")).unwrap_or_default()
        ),
    )
}

fn run(args: &Args, style: Style) -> Outcome {
    let keyring = std::env::var("CORE_SIDECAR_KEYRING")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "memory".into());
    say!(
        "{}",
        style.bold(
            "core-sidecar demo: this program plays the desktop app, talking JSON-RPC to the sidecar over its pipes."
        )
    );
    say!(
        "{}",
        style.dim(&format!(
            "dev backend and auth server {} (no accounts) · keyring {keyring} · → request  ← response  ◆ notification",
            args.backend
        ))
    );
    say!();

    let mut sc = Sidecar::spawn(args, style)?;
    walk(args, style, &mut sc).map_err(|e| {
        let _ = sc.child.kill();
        let _ = sc.child.wait();
        if let Some(reader) = sc.stderr_reader.take() {
            let _ = reader.join();
        }
        let secrets = issued_secrets(&args.backend).unwrap_or_default();
        let stderr = secrets
            .iter()
            .fold(sc.redact(&sc.stderr()), |text, secret| {
                text.replace(secret.as_str(), "<secret>")
            });
        if stderr.trim().is_empty() {
            e
        } else {
            format!("{e}\nsidecar stderr:\n{stderr}")
        }
    })
}

/// A state with this user signed in, its access token valid for about an hour.
fn check_signed_in(state: &Value, user_id: Option<&str>) -> Outcome<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let id = state["userId"].as_str().unwrap_or_default().to_string();
    check(
        state["isAuthenticated"] == true
            && !id.is_empty()
            && user_id.is_none_or(|u| u == id)
            && state["user"]["email"] == DEMO_EMAIL
            && state["expiresAt"]
                .as_u64()
                .is_some_and(|at| at > now + 3000 && at <= now + 3700),
        format!("expected {DEMO_EMAIL} signed in for an hour, got {state}"),
    )?;
    Ok(id)
}

/// The twenty-three steps, then the shutdown.
fn walk(args: &Args, style: Style, sc: &mut Sidecar) -> Outcome {
    // 1. Which sidecar is this?
    let r = sc.call(1, "core_version", json!({}), "which sidecar and protocol?")?;
    let v = result(&r, "core_version")?;
    check(
        v["name"] == "core-sidecar" && v["protocol"] == 1,
        format!("unexpected core_version result {v}"),
    )?;

    // 2. Signed out at start: the sidecar announced it (INITIAL_SESSION), and says so.
    let r = sc.call(2, "auth_get_state", json!({}), "nobody is signed in yet")?;
    sc.expect_notification("INITIAL_SESSION", None)?;
    if result(&r, "auth_get_state")?["isAuthenticated"] == true {
        // Only possible with a persistent keyring and a session left by an earlier run.
        say!(
            "    {}",
            style.dim("a session from an earlier demo run is stored: clearing it first")
        );
        let r = sc.call(0, "auth_clear_session", json!({}), "start from signed out")?;
        result(&r, "auth_clear_session")?;
        sc.expect_notification("SIGNED_OUT", Some("signed_out"))?;
    }

    // 3. Gated calls need a session.
    let r = sc.call(
        3,
        "composio_list_toolkits",
        json!({}),
        "a gated method before sign-in: refused",
    )?;
    expect_auth_expired(&r, Some("no_session"))?;

    // 4-5. Sign in with an emailed one-time code.
    let r = sc.call(
        4,
        "auth_sign_in_with_otp",
        json!({"email": DEMO_EMAIL}),
        "sign in: email me a code",
    )?;
    check(
        result(&r, "auth_sign_in_with_otp")?["sent"] == true,
        format!("expected sent: true, got {r}"),
    )?;
    let otp = http(
        "GET",
        &format!(
            "{}/dev/otp?email={}",
            args.backend,
            DEMO_EMAIL.replace('@', "%40")
        ),
        None,
    )?
    .data("GET /dev/otp")?;
    let Some(code) = otp["code"].as_str().map(str::to_string) else {
        return Err(format!("GET /dev/otp: no code in {otp}"));
    };
    sc.hide(&code, "<the code>");
    say!(
        "    {}",
        style.dim("(the dev auth server \"emailed\" a 6-digit code to its log; the demo reads it at GET /dev/otp)")
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = sc.call(
        5,
        "auth_verify_otp",
        json!({"email": DEMO_EMAIL, "token": wrong, "type": "email"}),
        "a wrong code: refused, nothing changes",
    )?;
    let error = &r["error"];
    check(
        error["code"] == -32006
            && error["data"]["kind"] == "auth_failed"
            && error["data"]["reason"] == "otp_expired"
            && error["data"]["status"] == 403,
        format!("expected error -32006 auth_failed reason otp_expired, got {r}"),
    )?;
    let r = sc.call(
        0,
        "auth_verify_otp",
        json!({"email": DEMO_EMAIL, "token": code, "type": "email"}),
        "the right one: signed in",
    )?;
    let user_id = check_signed_in(result(&r, "auth_verify_otp")?, None)?;
    sc.expect_notification("SIGNED_IN", None)?;

    // 6-7. Gated calls now reach the backend with the auth server's access token.
    let r = sc.call(
        6,
        "composio_list_toolkits",
        json!({}),
        "now through the session gate",
    )?;
    check(
        result(&r, "composio_list_toolkits")?["toolkits"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("github"))),
        format!("expected a toolkit list with github, got {r}"),
    )?;
    let r = sc.call(
        7,
        "user_get_profile",
        json!({}),
        "another domain; the backend reads the user from the JWT",
    )?;
    check(
        result(&r, "user_get_profile")?["id"] == user_id.as_str()
            && r["result"]["email"] == DEMO_EMAIL,
        format!("expected the profile of {user_id}, got {r}"),
    )?;

    // 8. Sign out: the auth server ends the session too.
    let r = sc.call(
        8,
        "auth_sign_out",
        json!({}),
        "sign out (POST /logout on the auth server)",
    )?;
    check(
        result(&r, "auth_sign_out")?["removed"] == true,
        format!("expected removed: true, got {r}"),
    )?;
    sc.expect_notification("SIGNED_OUT", Some("signed_out"))?;

    // 9-10. Sign in again with OAuth (PKCE): the browser part is played by the driver.
    let r = sc.call(
        9,
        "auth_sign_in_with_oauth",
        json!({"provider": "github", "redirect_to": REDIRECT_TO}),
        "sign in with GitHub: the URL to open",
    )?;
    let Some(url) = result(&r, "auth_sign_in_with_oauth")?["url"]
        .as_str()
        .map(str::to_string)
    else {
        return Err(format!("expected a url, got {r}"));
    };
    let challenge = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code_challenge="))
        .unwrap_or_default();
    check(
        url.starts_with(&format!(
            "{}/auth/v1/authorize?provider=github&",
            args.backend
        )) && url.contains("redirect_to=coresidecar-demo%3A%2F%2Fauth%2Fcallback")
            && url.contains("code_challenge_method=s256")
            && challenge.len() == 43
            && !url.contains("verifier"),
        format!("expected an /authorize URL with an S256 challenge, got {url}"),
    )?;
    let answer = http("GET", &url, None)?;
    let callback = answer.location.unwrap_or_default();
    let Some(auth_code) = callback
        .strip_prefix(&format!("{REDIRECT_TO}?code="))
        .filter(|c| !c.is_empty() && answer.status == 302)
        .map(str::to_string)
    else {
        return Err(format!(
            "GET the sign-in URL: expected 302 to {REDIRECT_TO}?code=..., got {}",
            answer.status
        ));
    };
    sc.hide(&auth_code, "<code from the redirect>");
    say!(
        "    {}",
        style.dim(&format!(
            "(a browser would open it; the dev auth server skips GitHub's consent and redirects to {REDIRECT_TO}?code=…, which the OS hands to the app)"
        ))
    );
    let r = sc.call(
        10,
        "auth_exchange_code",
        json!({"auth_code": auth_code}),
        "code + the verifier only the sidecar holds",
    )?;
    let state = result(&r, "auth_exchange_code")?;
    check_signed_in(state, Some(&user_id))?;
    check(
        state["user"]["app_metadata"]["providers"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("github"))),
        format!("expected the github identity on the user, got {state}"),
    )?;
    sc.expect_notification("SIGNED_IN", None)?;

    // 11. Connect GitHub to the agent: the app would open connectUrl in a browser.
    let r = sc.call(
        11,
        "composio_authorize",
        json!({"toolkit": "github"}),
        "start connecting GitHub",
    )?;
    let v = result(&r, "composio_authorize")?;
    let (Some(url), Some(connection_id)) = (v["connectUrl"].as_str(), v["connectionId"].as_str())
    else {
        return Err(format!("expected connectUrl and connectionId, got {v}"));
    };
    let connection_id = connection_id.to_string();
    let answer = http("GET", url, None)?;
    check(
        answer.status == 200,
        format!("GET connectUrl answered {}", answer.status),
    )?;
    say!(
        "    {}",
        style.dim(
            "(the user would open connectUrl in a browser; the demo opened it: connection ACTIVE)"
        )
    );

    // 12. It shows up.
    let r = sc.call(
        12,
        "composio_list_connections",
        json!({}),
        "the new connection",
    )?;
    check(
        result(&r, "composio_list_connections")?["connections"]
            .as_array()
            .is_some_and(|list| {
                list.iter()
                    .any(|c| c["id"] == connection_id.as_str() && c["status"] == "ACTIVE")
            }),
        format!("expected {connection_id} ACTIVE in the list, got {r}"),
    )?;

    // 13-19. What the agent and the integrations page do with a connection.
    let r = sc.call(
        13,
        "composio_list_tools",
        json!({"toolkits": ["github"]}),
        "the agent's GitHub tools",
    )?;
    let tools = result(&r, "composio_list_tools")?["tools"].clone();
    let Some(tool) = tools[0]["function"]["name"].as_str().map(str::to_string) else {
        return Err(format!("expected a list of tools, got {r}"));
    };
    let r = sc.call(
        14,
        "composio_execute",
        json!({"tool": tool, "arguments": {"owner": "dev-user", "repo": "desktop-app", "title": "Hello from the demo"}}),
        "run one (the dev backend echoes it)",
    )?;
    check(
        result(&r, "composio_execute")?["successful"] == true
            && r["result"]["data"]["echo"]["repo"] == "desktop-app",
        format!("expected a successful execution echoing its arguments, got {r}"),
    )?;
    let r = sc.call(
        15,
        "composio_list_github_repos",
        json!({"connectionId": connection_id}),
        "the connection's repositories",
    )?;
    check(
        result(&r, "composio_list_github_repos")?["repositories"]
            .as_array()
            .is_some_and(|repos| repos.len() == 2),
        format!("expected two repositories, got {r}"),
    )?;
    let r = sc.call(
        16,
        "composio_list_available_triggers",
        json!({"toolkit": "github", "connectionId": connection_id}),
        "triggers it offers",
    )?;
    let available = result(&r, "composio_list_available_triggers")?["triggers"].clone();
    let Some(slug) = available[0]["slug"].as_str().map(str::to_string) else {
        return Err(format!("expected available triggers, got {r}"));
    };
    let r = sc.call(
        17,
        "composio_enable_trigger",
        json!({"connectionId": connection_id, "slug": slug,
               "triggerConfig": {"owner": "dev-user", "repo": "desktop-app"}}),
        "turn one on",
    )?;
    let Some(trigger_id) = result(&r, "composio_enable_trigger")?["triggerId"]
        .as_str()
        .map(str::to_string)
    else {
        return Err(format!("expected a triggerId, got {r}"));
    };
    let r = sc.call(
        18,
        "composio_list_active_triggers",
        json!({"toolkit": "github"}),
        "it is on",
    )?;
    check(
        result(&r, "composio_list_active_triggers")?["triggers"]
            .as_array()
            .is_some_and(|list| list.iter().any(|t| t["id"] == trigger_id.as_str())),
        format!("expected {trigger_id} among the active triggers, got {r}"),
    )?;
    let r = sc.call(
        19,
        "composio_disable_trigger",
        json!({"triggerId": trigger_id}),
        "and off again",
    )?;
    check(
        result(&r, "composio_disable_trigger")?["deleted"] == true,
        format!("expected deleted: true, got {r}"),
    )?;

    // 20. The connection goes away.
    let r = sc.call(
        20,
        "composio_delete_connection",
        json!({"connectionId": connection_id}),
        "disconnect it",
    )?;
    check(
        result(&r, "composio_delete_connection")?["deleted"] == true,
        format!("expected deleted: true, got {r}"),
    )?;

    // 21. The backend refuses the access token; the refresh token still works.
    say!(
        "{} {}",
        style.bold("21. ⚡"),
        style.bold(
            "The backend refuses the access token (POST /dev/revoke {\"authSessions\": false})."
        )
    );
    say!(
        "      {}",
        style.bold("The next gated call gets 401, refreshes once and retries:")
    );
    let revoke = |body: Option<Value>| -> Outcome {
        let answer = http(
            "POST",
            &format!("{}/dev/revoke", args.backend),
            body.as_ref(),
        )?;
        answer.data("POST /dev/revoke").map(|_| ())
    };
    revoke(Some(json!({"authSessions": false})))?;
    let r = sc.call(
        0,
        "composio_list_connections",
        json!({}),
        "401 -> one refresh -> retried",
    )?;
    result(&r, "composio_list_connections")?;
    sc.expect_notification("TOKEN_REFRESHED", None)?;

    // 22. The server side ends the session.
    say!(
        "{} {}",
        style.bold("22. ⚡"),
        style.bold("Now the session ends server-side (POST /dev/revoke: the backend refuses the")
    );
    say!(
        "      {}",
        style.bold("token and the auth server the refresh token). The next gated call:")
    );
    revoke(None)?;
    let r = sc.call(
        0,
        "composio_list_connections",
        json!({}),
        "401 -> refresh rejected -> signed out",
    )?;
    expect_auth_expired(&r, Some("refresh_rejected"))?;
    sc.expect_notification("SIGNED_OUT", Some("refresh_failed"))?;

    // 23. Signed out, session cleared.
    let r = sc.call(
        23,
        "auth_get_state",
        json!({}),
        "the stored session is gone",
    )?;
    check(
        result(&r, "auth_get_state")?["isAuthenticated"] == false,
        format!("expected signed out, got {r}"),
    )?;

    // The end: the shell closes stdin.
    say!();
    let status = sc.close()?;
    check(
        status.success(),
        format!("the sidecar exited with {status}, expected 0"),
    )?;
    say!(
        "{}",
        style.dim("closed the sidecar's stdin: it finished its work and exited with status 0")
    );
    check(
        sc.notifications.len() == sc.claimed,
        format!(
            "unexpected extra notifications: {:?}",
            &sc.notifications[sc.claimed..]
        ),
    )?;
    let stderr = sc.stderr();
    let secrets = issued_secrets(&args.backend)?;
    // Two sign-ins and a refresh: three access tokens, three refresh tokens, the auth code
    // and the verifier the sidecar sent with it.
    check(
        secrets.len() >= 8,
        format!(
            "expected at least 8 secrets from the dev auth server, got {}",
            secrets.len()
        ),
    )?;
    check(
        secrets.contains(&auth_code),
        "the dev auth server does not list the auth code",
    )?;
    let leaked = |text: &str| secrets.iter().any(|s| text.contains(s.as_str()));
    check(!leaked(&stderr), "the sidecar wrote a secret to stderr")?;
    check(
        !leaked(&sc.stdout.lock().unwrap()),
        "the sidecar wrote a secret to stdout",
    )?;
    check(
        !leaked(&PRINTED.lock().unwrap()),
        "the demo printed a secret",
    )?;
    if !stderr.trim().is_empty() {
        say!("{}", style.dim("sidecar stderr (RUST_LOG=warn):"));
        for line in stderr.lines() {
            say!("  {}", style.dim(line));
        }
    }
    say!(
        "{}",
        style.green(&format!(
            "✓ all 23 steps behaved as expected, and none of the {} tokens, codes and verifiers ever appeared in any output.",
            secrets.len()
        ))
    );
    Ok(())
}

fn main() -> ExitCode {
    let err_style = Style::detect(std::io::stderr().is_terminal());
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args, Style::detect(std::io::stdout().is_terminal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("{} {e}", err_style.red("✗ demo failed:"));
            ExitCode::FAILURE
        }
    }
}
