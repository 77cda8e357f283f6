//! What reaches Sentry (docs/protocol.md, "Errors"): real faults only, scrubbed, deduplicated,
//! whether they end a request or happen in the background.

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

/// A keyring fault no caller sees still reaches Sentry, once and scrubbed: a session stored
/// with 80 s left is refreshed by the ticker's first tick after a restart, the auth server
/// issues new tokens, and the keyring refuses to store them (`fail-writes`: reads work, writes
/// fail). The fault is reported by the background refresh itself, deduplicated, with none of
/// the old or new tokens in the event.
#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh (scripts/test.sh does)"]
async fn a_keyring_fault_in_a_background_refresh_is_reported_once_scrubbed() {
    use crate::gotrue::{FakeGoTrue, unix_now};
    use crate::harness::unique_service;

    let fake = FakeGoTrue::start().await;
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let service = unique_service("bg-fault");
    let (base, auth) = (fake.base_url(), fake.auth_url());
    let env = |fault: &'static str| {
        vec![
            ("CORE_SIDECAR_BACKEND_URL", base.clone()),
            ("CORE_SIDECAR_AUTH_URL", auth.clone()),
            ("CORE_SIDECAR_KEYRING", "secret-service".to_string()),
            ("CORE_SIDECAR_KEYRING_SERVICE", service.clone()),
            ("CORE_SIDECAR_KEYRING_FAULT", fault.to_string()),
            ("SENTRY_DSN", dsn.clone()),
            ("RUST_LOG", "trace".to_string()),
        ]
    };
    let spawn = |env: &[(&'static str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut sidecar = Sidecar::spawn(&env);
        for token in fake.tokens() {
            sidecar.secret(&token);
        }
        sidecar
    };

    let (access, refresh) = fake.seed_session_for("u-bg-fault", true);
    let mut sidecar = spawn(&env(""));
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh,
                   "expires_at": unix_now() + 80, "user": {"id": "u-bg-fault"}}),
        )
        .await;
    assert_eq!(stored["result"]["persistent"], true, "{stored}");
    shut_down(&mut sidecar).await;

    let mut sidecar = spawn(&env("fail-writes"));
    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    assert_eq!(fake.token_calls(), 1, "the first tick refreshed");
    // Calls after the fault do not report it again.
    for _ in 0..3 {
        let state = sidecar.request("auth_get_state", Value::Null).await;
        assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
    }
    shut_down(&mut sidecar).await;
    let envelopes_after = sentry.envelopes();
    assert_eq!(envelopes_after.len(), 1, "{envelopes_after:?}");
    assert_eq!(envelopes, envelopes_after);

    let envelope = &envelopes[0];
    assert_clean(envelope);
    for token in fake.tokens() {
        assert!(!envelope.contains(&token), "leaks {token}:\n{envelope}");
    }
    let event = event_of(envelope);
    assert_eq!(event["tags"]["kind"], "storage", "{event}");
    let message = event["message"]
        .as_str()
        .or_else(|| event["message"]["formatted"].as_str())
        .or_else(|| event["logentry"]["message"].as_str())
        .unwrap_or_else(|| panic!("no message: {event}"));
    assert!(message.contains("save"), "{message}");
    assert_eq!(event["fingerprint"], json!(["storage"]), "{event}");

    // Leave the keyring clean.
    let mut sidecar = spawn(&env(""));
    sidecar.request("auth_clear_session", Value::Null).await;
    shut_down(&mut sidecar).await;
}
