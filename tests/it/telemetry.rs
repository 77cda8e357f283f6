//! What reaches Sentry (DESIGN.md section 6): real faults only, scrubbed, deduplicated.

use serde_json::{Value, json};

use crate::fake_sentry::FakeSentry;
use crate::harness::{Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT};

fn panic_message() -> String {
    format!(
        "leaking {TEST_JWT} with Bearer {TEST_JWT} and {{\"refresh_token\":\"{TEST_REFRESH_TOKEN}\"}} at https://auth.example/token?refresh_token={TEST_REFRESH_TOKEN}"
    )
}

async fn panic_once(sidecar: &mut Sidecar) {
    let response = sidecar
        .request("core_test_panic", json!({"message": panic_message()}))
        .await;
    assert_eq!(response["error"]["code"], -32603, "{response}");
}

/// Closes stdin and waits for a clean exit, which flushes Sentry: after it, the fake has
/// everything the sidecar will ever send.
async fn shut_down(sidecar: &mut Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

fn assert_clean(envelope: &str) {
    for secret in [TEST_JWT, TEST_REFRESH_TOKEN, "eyJhbGci", "rt-test"] {
        assert!(
            !envelope.contains(secret),
            "Sentry envelope leaks {secret}:\n{envelope}"
        );
    }
}

/// The event item of an envelope (header line, item header line, payload).
fn event_of(envelope: &str) -> Value {
    envelope
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v.get("exception").is_some() || v.get("message").is_some())
        .unwrap_or_else(|| panic!("no event in envelope:\n{envelope}"))
}

#[tokio::test]
async fn panic_sends_one_scrubbed_event() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = Sidecar::spawn(&[
        ("SENTRY_DSN", &dsn),
        ("SENTRY_ENVIRONMENT", "it-tests"),
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
    ]);
    panic_once(&mut sidecar).await;
    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    assert_clean(&envelopes[0]);
    let event = event_of(&envelopes[0]);
    let value = event["exception"]["values"][0]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("panic exception: {event}"));
    assert!(value.contains("test hook panic"), "{value}");
    assert!(value.contains("[redacted]"), "{value}");
    assert_eq!(event["environment"], "it-tests");
    assert_eq!(
        event["release"],
        format!("core-sidecar@{}", env!("CARGO_PKG_VERSION"))
    );
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes().len(), 1);
    let stderr = sidecar.stderr();
    assert!(
        stderr.contains("[redacted]"),
        "the panic is logged scrubbed:\n{stderr}"
    );
}

#[tokio::test]
async fn the_same_panic_twice_is_sent_once() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", &dsn), ("CORE_SIDECAR_TEST_HOOKS", "1")]);
    panic_once(&mut sidecar).await;
    panic_once(&mut sidecar).await;
    panic_once(&mut sidecar).await;
    shut_down(&mut sidecar).await;
    let envelopes = sentry.envelopes();
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
    assert_clean(&envelopes[0]);
}

#[tokio::test]
async fn ping_sends_nothing() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", &dsn)]);
    let response = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(response["result"]["pong"], true);
    // Expected failures are not faults: no session is auth-expired, never reported.
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert!(response.get("error").is_some(), "{response}");
    let response = sidecar.request("nope_nope", Value::Null).await;
    assert_eq!(response["error"]["code"], -32601);
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes(), Vec::<String>::new());
}

#[tokio::test]
async fn without_a_dsn_nothing_is_sent() {
    let sentry = FakeSentry::start().await;
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", ""), ("CORE_SIDECAR_TEST_HOOKS", "1")]);
    panic_once(&mut sidecar).await;
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes(), Vec::<String>::new());
    let stderr = sidecar.stderr();
    assert!(
        stderr.contains("[redacted]"),
        "the panic is still logged scrubbed:\n{stderr}"
    );
}

#[tokio::test]
async fn an_invalid_dsn_leaves_sentry_off_and_the_sidecar_up() {
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", "not a dsn")]);
    let response = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(response["result"]["pong"], true);
    shut_down(&mut sidecar).await;
    assert!(
        sidecar.stderr().contains("SENTRY_DSN"),
        "{}",
        sidecar.stderr()
    );
}
