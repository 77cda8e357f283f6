//! Logs for operators (docs/protocol.md, "Configuration" and "Telemetry"): with
//! `--log-format json` every stderr line is a JSON object; the start-up line says what the
//! process is and what it talks to, never a secret; a failed upstream call is one `warn`
//! line with the JSON-RPC method, the upstream, the status and the duration; the Sentry
//! event of a failed call is tagged with the method, the upstream and the status.

use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::fake_sentry::FakeSentry;
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT};

const API_KEY: &str = "anon-key-that-must-not-be-logged-0123456789";

/// Closes stdin and waits for a clean exit (which flushes Sentry).
async fn shut_down(sidecar: &mut Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

/// Every stderr line, parsed: panics on a line that is not a JSON object.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("a stderr line is not a JSON object: {line:?}\nstderr:\n{stderr}"),
        })
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| line["fields"]["message"] == message)
        .collect()
}

/// A signed-in sidecar on a fake backend that answers `composio_list_connections` with a
/// 503, and a few calls that work, fail locally or fail upstream.
async fn run_calls(extra_env: &[(&str, &str)]) -> (Sidecar, FakeBackend) {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut env = vec![
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        // Nothing listens there: the auth server is configured, never called.
        ("CORE_SIDECAR_AUTH_URL", "http://127.0.0.1:9/auth/v1"),
        ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
    ];
    env.extend_from_slice(extra_env);
    let mut sidecar = Sidecar::spawn(&env);
    sidecar.secret(API_KEY);
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
    let bad = sidecar.request("composio_authorize", json!({})).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    let toolkits = sidecar.request("composio_list_toolkits", json!({})).await;
    assert!(toolkits.get("result").is_some(), "{toolkits}");
    backend.set_canned(Canned::reply(503, r#"{"success":false,"error":"down"}"#));
    let failed = sidecar
        .request("composio_list_connections", Value::Null)
        .await;
    assert_eq!(failed["error"]["code"], -32003, "{failed}");
    assert_eq!(failed["error"]["data"]["status"], 503, "{failed}");
    (sidecar, backend)
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_start_and_the_failed_call() {
    let (mut sidecar, _backend) = run_calls(&[
        ("CORE_SIDECAR_LOG_FORMAT", "json"),
        // Every level, so every line any module writes is checked.
        ("RUST_LOG", "trace"),
    ])
    .await;
    shut_down(&mut sidecar).await;
    let stderr = sidecar.stderr();
    let lines = json_lines(&stderr);
    assert!(lines.len() > 5, "{stderr}");
    for line in &lines {
        for key in ["timestamp", "level", "fields"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }

    let start = with_message(&lines, "core-sidecar starting");
    assert_eq!(start.len(), 1, "one start-up line:\n{stderr}");
    let start = start[0];
    assert_eq!(start["level"], "INFO", "{start}");
    let fields = &start["fields"];
    assert_eq!(fields["version"], env!("CARGO_PKG_VERSION"), "{start}");
    assert_eq!(fields["protocol"], 1, "{start}");
    assert_eq!(fields["keyring"], "memory", "{start}");
    assert_eq!(fields["backend"], true, "{start}");
    let backend_host = fields["backend_host"].as_str().unwrap_or_default();
    assert!(backend_host.starts_with("127.0.0.1:"), "{start}");
    assert_eq!(fields["auth"], true, "{start}");
    assert_eq!(fields["auth_host"], "127.0.0.1:9", "{start}");
    assert_eq!(fields["auth_api_key"], true, "{start}");
    assert_eq!(fields["sentry"], false, "{start}");
    let text = start.to_string();
    assert!(!text.contains("/auth/v1"), "hosts only, no paths: {text}");
    assert!(!stderr.contains(API_KEY), "the API key is never logged");

    let failed = with_message(&lines, "upstream call failed");
    assert_eq!(failed.len(), 1, "one warn line per failed call:\n{stderr}");
    let failed = failed[0];
    assert_eq!(failed["level"], "WARN", "{failed}");
    let fields = &failed["fields"];
    assert_eq!(
        fields["rpc_method"], "composio_list_connections",
        "{failed}"
    );
    assert_eq!(fields["upstream"], "backend", "{failed}");
    assert_eq!(fields["status"], 503, "{failed}");
    assert!(fields["elapsed_ms"].is_u64(), "{failed}");
}

#[tokio::test]
async fn text_logs_are_the_default_and_carry_the_same_lines() {
    let (mut sidecar, _backend) = run_calls(&[]).await;
    shut_down(&mut sidecar).await;
    let stderr = sidecar.stderr();
    assert!(
        stderr
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text by default:\n{stderr}"
    );
    let start = stderr
        .lines()
        .find(|l| l.contains("core-sidecar starting"))
        .unwrap_or_else(|| panic!("no start-up line:\n{stderr}"));
    assert!(start.contains("INFO"), "{start}");
    assert!(start.contains("protocol=1"), "{start}");
    assert!(start.contains("auth_api_key=true"), "{start}");
    let failed = stderr
        .lines()
        .find(|l| l.contains("upstream call failed"))
        .unwrap_or_else(|| panic!("no failed call line:\n{stderr}"));
    assert!(failed.contains("WARN"), "{failed}");
    assert!(
        failed.contains(r#"rpc_method="composio_list_connections""#),
        "{failed}"
    );
    assert!(failed.contains("status=503"), "{failed}");
    assert!(!stderr.contains(API_KEY));
}

#[tokio::test]
async fn a_bad_log_format_is_a_start_up_error() {
    let output = tokio::process::Command::new(crate::harness::bin())
        .env("CORE_SIDECAR_LOG_FORMAT", "yaml")
        .env("CORE_SIDECAR_KEYRING", "memory")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run core-sidecar");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CORE_SIDECAR_LOG_FORMAT"), "{stderr}");
}

#[tokio::test]
async fn sentry_events_of_a_failed_call_carry_method_upstream_and_status() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let (mut sidecar, _backend) =
        run_calls(&[("SENTRY_DSN", &dsn), ("CORE_SIDECAR_LOG_FORMAT", "json")]).await;
    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes().len(), 1, "only the 503 is a fault");
    let event = envelopes[0]
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v.get("tags").is_some())
        .unwrap_or_else(|| panic!("no event: {}", envelopes[0]));
    let tags = &event["tags"];
    assert_eq!(tags["kind"], "backend", "{event}");
    assert_eq!(tags["method"], "composio_list_connections", "{event}");
    assert_eq!(tags["upstream"], "backend", "{event}");
    assert_eq!(tags["status"], "503", "{event}");
    assert!(!envelopes[0].contains(API_KEY));
    let lines = json_lines(&sidecar.stderr());
    assert_eq!(
        with_message(&lines, "core-sidecar starting")[0]["fields"]["sentry"],
        true
    );
}
