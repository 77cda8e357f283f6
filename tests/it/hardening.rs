//! A hostile neighbour or bad input gets neither the tokens nor the process, through the real
//! binary: cleartext URLs refused at start (unless allowed, with a warning), the process
//! non-dumpable (Linux), and param errors that never echo the value sent.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::harness::{Sidecar, TIMEOUT, bin, clean_env};

/// What a start that must fail printed: exit code, stdout, stderr.
async fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, env);
    let output = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("a bad configuration stops the start at once")
        .expect("run core-sidecar");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts, answers a ping, stops with exit 0 on EOF; returns its stderr.
async fn starts(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut sidecar = Sidecar::spawn_with_args(args, env);
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{args:?} {env:?}: {pong}");
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    sidecar.stderr()
}

#[tokio::test]
async fn bad_or_cleartext_urls_stop_the_start_naming_the_setting() {
    for (args, env, setting, why) in [
        (
            &["--auth-url", "not a url"][..],
            &[][..],
            "--auth-url",
            "relative URL",
        ),
        (
            &["--auth-url", "ftp://x"],
            &[],
            "--auth-url",
            "http or https",
        ),
        (
            &["--auth-url", "http://auth.example.com"],
            &[],
            "--auth-url",
            "clear text",
        ),
        (
            &["--backend-url", "http://api.example.com/v1"],
            &[],
            "--backend-url",
            "clear text",
        ),
        (
            &[],
            &[("CORE_SIDECAR_BACKEND_URL", "http://api.example.com")],
            "CORE_SIDECAR_BACKEND_URL",
            "clear text",
        ),
        (
            &[],
            &[("CORE_SIDECAR_AUTH_URL", "http://auth.example.com/auth/v1")],
            "CORE_SIDECAR_AUTH_URL",
            "clear text",
        ),
        (
            &[],
            &[("CORE_SIDECAR_AUTH_URL", "ftp://x")],
            "CORE_SIDECAR_AUTH_URL",
            "http or https",
        ),
        // The switch off says so.
        (
            &[],
            &[
                ("CORE_SIDECAR_BACKEND_URL", "http://api.example.com"),
                ("CORE_SIDECAR_ALLOW_INSECURE_HTTP", "false"),
            ],
            "CORE_SIDECAR_BACKEND_URL",
            "clear text",
        ),
    ] {
        let (code, stdout, stderr) = failed_start(args, env).await;
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} {env:?}: {stdout}");
        assert!(
            stderr.contains(&format!("'{setting}")),
            "{args:?} {env:?} must name {setting}: {stderr}"
        );
        assert!(stderr.contains(why), "{args:?} {env:?}: {stderr}");
        if why == "clear text" {
            assert!(stderr.contains("--allow-insecure-http"), "{stderr}");
        }
    }
}

#[tokio::test]
async fn loopback_http_starts_without_the_switch() {
    for url in [
        "http://127.0.0.1:1",
        "http://localhost:1",
        "http://[::1]:1",
        "http://127.0.0.2:1/api",
    ] {
        let stderr = starts(&["--auth-url", url, "--backend-url", url], &[]).await;
        assert!(!stderr.contains("clear text"), "{url}: {stderr}");
        let env = [
            ("CORE_SIDECAR_AUTH_URL", url),
            ("CORE_SIDECAR_BACKEND_URL", url),
        ];
        starts(&[], &env).await;
    }
}

#[tokio::test]
async fn the_switch_lets_cleartext_start_with_a_warning() {
    // Never called: the sidecar only connects when a method needs the URL.
    let stderr = starts(
        &[
            "--allow-insecure-http",
            "--auth-url",
            "http://auth.example.com",
        ],
        &[],
    )
    .await;
    let warning = stderr
        .lines()
        .find(|line| line.contains("WARN") && line.contains("clear text"))
        .unwrap_or_else(|| panic!("a warning at start:\n{stderr}"));
    assert!(warning.contains("CORE_SIDECAR_AUTH_URL"), "{warning}");
    assert!(warning.contains("http://auth.example.com"), "{warning}");

    let stderr = starts(
        &[],
        &[
            ("CORE_SIDECAR_ALLOW_INSECURE_HTTP", "1"),
            ("CORE_SIDECAR_BACKEND_URL", "http://user:pw@api.example.com"),
            ("CORE_SIDECAR_AUTH_URL", "https://auth.example.com"),
        ],
    )
    .await;
    let warnings: Vec<_> = stderr
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("clear text"))
        .collect();
    assert_eq!(warnings.len(), 1, "only the http URL: {stderr}");
    assert!(warnings[0].contains("CORE_SIDECAR_BACKEND_URL"), "{stderr}");
    assert!(
        !stderr.contains("pw@"),
        "credentials are not logged: {stderr}"
    );
}

/// The owner uid of a /proc entry.
#[cfg(target_os = "linux")]
fn owner(path: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .uid()
}

/// The real uid a process runs as, from its (world-readable) status.
#[cfg(target_os = "linux")]
fn running_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .expect("a Uid line");
    line.split_whitespace()
        .nth(1)
        .and_then(|uid| uid.parse().ok())
        .expect("a uid")
}

/// A command run as `nobody` (65534) when this test runs as root (root owns every /proc entry
/// of a process it can see as its own anyway), else as the test's own user.
#[cfg(target_os = "linux")]
fn unprivileged(program: &str) -> Command {
    let root = owner("/proc/self") == 0;
    let mut cmd = if root {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    } else {
        Command::new(program)
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A copy of the binary that any user can run: the checkout may sit under a directory only
/// its owner can enter (a home directory), which `nobody` could not exec from.
#[cfg(target_os = "linux")]
fn runnable_by_anyone(bin: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("core-sidecar-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let copy = dir.join("core-sidecar");
    std::fs::copy(bin, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// A non-dumpable process's /proc/<pid>/ entries (mem, environ, maps, fd) are owned by root
/// whatever user it runs as, which is what keeps a same-user `gcore`, `gdb -p` or a read of
/// /proc/<pid>/mem out. A process of the same user that is dumpable (`cat`) keeps its own.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_process_is_not_dumpable() {
    // The control: an ordinary process of that user owns its entries.
    let mut control = unprivileged("cat")
        .spawn()
        .expect("setpriv (util-linux) runs cat as nobody");
    let control_pid = control.id().expect("running");
    // Once cat echoes a line, setpriv has switched user and exec'd it.
    let mut control_in = control.stdin.take().expect("stdin");
    control_in.write_all(b"ready\n").await.expect("write");
    let mut echoed = String::new();
    let mut control_out = BufReader::new(control.stdout.take().expect("stdout"));
    tokio::time::timeout(TIMEOUT, control_out.read_line(&mut echoed))
        .await
        .expect("cat echoes in time")
        .expect("read");
    assert_eq!(echoed, "ready\n");
    let user = running_uid(control_pid);
    assert_eq!(owner(&format!("/proc/{control_pid}/environ")), user);
    assert_ne!(user, 0, "the check needs a process that is not root's");
    drop(control_in);
    control.wait().await.expect("cat ends on EOF");

    let bin = runnable_by_anyone(bin());
    let mut cmd = unprivileged(bin.to_str().expect("a UTF-8 path"));
    clean_env(&mut cmd, &[]);
    let mut sidecar = cmd.spawn().expect("spawn core-sidecar unprivileged");
    let pid = sidecar.id().expect("running");
    let mut stdin = sidecar.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(sidecar.stdout.take().expect("stdout"));
    // Once it answers, main has long passed the hardening step.
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"core_ping\"}\n")
        .await
        .expect("write");
    let line = crate::harness::read_answer_line(&mut stdout).await;
    let pong: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(pong["result"]["pong"], true, "{line}");

    assert_eq!(running_uid(pid), user, "runs as the unprivileged user");
    for entry in ["environ", "mem", "maps"] {
        assert_eq!(
            owner(&format!("/proc/{pid}/{entry}")),
            0,
            "/proc/{pid}/{entry} of a non-dumpable process is root's"
        );
    }
    drop(stdin);
    let status = tokio::time::timeout(TIMEOUT, sidecar.wait())
        .await
        .expect("exits on EOF")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(bin.parent().expect("the temp dir"));
}

/// What was sent never comes back in a param error: only the field and what was expected.
#[tokio::test]
async fn param_errors_never_echo_the_value_sent() {
    let mut sidecar = Sidecar::spawn(&[]);
    sidecar.secret("some-opaque-value-xyz");
    sidecar.secret("opaque-expiry-value");
    // Raw lines: a 23-digit number is not a JSON value serde_json can build.
    for (id, method, params, field, echoed) in [
        (
            1,
            "auth_store_session",
            r#"{"access_token": 12345678901234567890123}"#,
            "access_token",
            "1234567890",
        ),
        (
            2,
            "auth_sign_out",
            r#"{"scope": "some-opaque-value-xyz"}"#,
            "scope",
            "opaque-value",
        ),
        (
            3,
            "auth_store_session",
            r#"{"access_token": "t", "expires_at": "opaque-expiry-value"}"#,
            "expires_at",
            "opaque-expiry",
        ),
        (
            4,
            "auth_store_session",
            r#"{"access_token": "t", "expires_in": -3.25e3}"#,
            "expires_in",
            "325",
        ),
        (
            5,
            "auth_store_session",
            r#"{"access_token": "t", "token_type": true}"#,
            "token_type",
            "true",
        ),
        (
            6,
            "auth_store_session",
            r#"{"access_token": "t", "user": "opaque-user-value"}"#,
            "user",
            "opaque-user",
        ),
    ] {
        sidecar
            .send_line(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#
            ))
            .await;
        let response = sidecar.recv_response(&json!(id)).await;
        let error = &response["error"];
        assert_eq!(error["code"], -32602, "{params}: {response}");
        assert_eq!(error["data"]["field"], field, "{params}: {response}");
        let message = error["message"].as_str().expect("a message");
        assert!(!message.contains(echoed), "{params} echoed: {message}");
    }
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false, "{state}");
    sidecar.close_stdin();
    assert_eq!(sidecar.wait_exit(TIMEOUT).await.code(), Some(0));
}
