//! The demo (`scripts/demo.sh` = dev backend + `examples/demo.rs` driving the sidecar) as a
//! smoke test: the built `demo` and `dev_backend` examples are run against the binary under
//! test, so the walkthrough a newcomer sees keeps working, never prints the token, and fails
//! loudly when a step misbehaves.
//!
//! The examples are found next to the binary (`target/<profile>/examples/`): `cargo test`
//! builds them before running tests. `cargo test --test it` alone does not, so a missing or
//! stale example fails with a message saying what to build (building from inside a test
//! would wait forever on cargo's lock).

use std::path::Path;
use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{TIMEOUT, bin, clean_env, example};

/// The dev backend on 127.0.0.1, any port: the child (killed on drop) and its base URL.
async fn dev_backend() -> (Child, String) {
    let mut child = Command::new(example("dev_backend"))
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dev_backend");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, stdout.read_line(&mut line))
        .await
        .expect("dev_backend printed nothing")
        .expect("read dev_backend stdout");
    let port: u16 = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `LISTENING <port>`, got {line:?}"));
    (child, format!("http://127.0.0.1:{port}"))
}

/// Runs the demo driver against `backend` with the sidecar under test (memory keyring).
async fn demo(backend: &str) -> Output {
    let mut cmd = Command::new(example("demo"));
    cmd.args(["--backend", backend, "--sidecar", bin()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[]);
    cmd.env_remove("NO_COLOR");
    let child = cmd.spawn().expect("spawn demo");
    tokio::time::timeout(TIMEOUT * 3, child.wait_with_output())
        .await
        .expect("the demo did not finish")
        .expect("demo output")
}

/// Fails if anything JWT-shaped (`eyJ`: base64 of `{"`) was printed.
fn assert_no_token(stdout: &str, stderr: &str) {
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        assert!(
            !text.contains("eyJ"),
            "a JWT appeared on the demo's {name}:\n{text}"
        );
    }
}

#[tokio::test]
async fn the_demo_walks_through_the_whole_flow() {
    let (_backend, url) = dev_backend().await;
    let output = demo(&url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_no_token(&stdout, &stderr);

    let expected = [
        " 1. → core_version",
        r#""name": "core-sidecar""#,
        r#""isAuthenticated": false"#,
        " 3. → composio_list_toolkits",
        "error -32001 auth_expired (reason: no_session)",
        r#"auth_store_session {"access_token": "<fake JWT>""#,
        "◆ notification auth_state_changed: SIGNED_IN",
        r#""expiresAt": 4102444800"#,
        r#""toolkits": ["github""#,
        r#"composio_authorize {"toolkit": "github"}"#,
        r#""connectUrl": "http://127.0.0.1:"#,
        r#""connectionId": "ca_"#,
        r#""status": "ACTIVE""#,
        " 9. → composio_list_tools",
        "10. → composio_execute",
        r#""successful": true"#,
        "11. → composio_list_github_repos",
        r#""fullName": "dev-user/desktop-app""#,
        "12. → composio_list_available_triggers",
        "13. → composio_enable_trigger",
        r#""triggerId": "ti_"#,
        "14. → composio_list_active_triggers",
        "15. → composio_disable_trigger",
        r#""deleted": true"#,
        "16. → composio_delete_connection",
        r#""deleted": true"#,
        "17. → user_get_profile",
        "POST /dev/revoke",
        "◆ notification auth_state_changed: SIGNED_OUT (reason: expired)",
        "19. → auth_get_state",
        "exited with status 0",
        "✓ all 19 steps behaved as expected",
    ];
    let mut from = 0;
    for needle in expected {
        let at = stdout[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("missing (in order) {needle:?} in:\n{stdout}"));
        from += at + needle.len();
    }
    assert_eq!(
        stdout.matches("error -32001 auth_expired").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("notification auth_state_changed: INITIAL_SESSION")
            .count(),
        1,
        "the start is announced once:\n{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "colors on a pipe:\n{stdout}");
    let lines = stdout.lines().count();
    assert!(
        lines <= 60,
        "{lines} lines is too long for a newcomer:\n{stdout}"
    );
    assert!(
        stderr.trim().is_empty(),
        "the demo wrote to stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn the_demo_fails_when_a_step_misbehaves() {
    let (_backend, url) = dev_backend().await;
    // The first backend call (step 5) answers 503.
    let response = reqwest::Client::new()
        .post(format!("{url}/dev/fail"))
        .json(&serde_json::json!({"status": 503}))
        .send()
        .await
        .expect("POST /dev/fail");
    assert!(response.status().is_success());

    let output = demo(&url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("demo failed") && stderr.contains("composio_list_toolkits failed"),
        "{stderr}"
    );
    assert!(!stdout.contains("✓ all 19 steps"), "{stdout}");
    assert_no_token(&stdout, &stderr);
}

#[test]
fn demo_sh_is_valid_bash() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("run bash -n");
    assert!(status.success(), "bash -n {} failed", script.display());
}
