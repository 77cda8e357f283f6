//! Secret hygiene: one run that goes through every method and error path with recognisable
//! tokens, logging at trace level and reporting to a fake Sentry. The tokens may appear in
//! the keyring and nowhere else: not on stdout, not in stderr, not in any Sentry envelope.

use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::fake_sentry::FakeSentry;
use crate::harness::{Sidecar, TIMEOUT};

/// Shaped like the real thing, so scrubbing that only knows shapes would catch them, and
/// recognisable, so a leak is unmistakable.
const ACCESS: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJoeWdpZW5lIn0.aHlnaWVuZS1zaWduYXR1cmU";
const REFRESH: &str = "hygiene-refresh-7Qx9LmZp";
const OTHER_ACCESS: &str = "hygiene-second-access-token-5Kd8";

fn leaks(text: &str) -> Vec<&'static str> {
    [
        ACCESS,
        REFRESH,
        OTHER_ACCESS,
        "aHlnaWVuZS1zaWduYXR1cmU",
        "7Qx9LmZp",
    ]
    .into_iter()
    .filter(|secret| text.contains(secret))
    .collect()
}

fn session(access: &str) -> Value {
    json!({
        "access_token": access,
        "refresh_token": REFRESH,
        "expires_in": 3600,
        "user": {"id": "hygiene-user"},
    })
}

/// Every response must be free of tokens, whatever it is.
fn assert_clean_response(method: &str, response: &Value) {
    let text = response.to_string();
    assert!(leaks(&text).is_empty(), "{method} leaks: {text}");
}

async fn call(sidecar: &mut Sidecar, method: &str, params: Value) -> Value {
    let response = sidecar.request(method, params).await;
    assert_clean_response(method, &response);
    response
}

#[tokio::test]
async fn tokens_appear_nowhere_but_the_keyring() {
    let backend = FakeBackend::start(ACCESS).await;
    let sentry = FakeSentry::start().await;
    let (url, dsn) = (backend.url(), sentry.dsn());
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("SENTRY_DSN", dsn.as_str()),
        ("RUST_LOG", "trace"),
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
    ]);
    sidecar.secret(ACCESS).secret(REFRESH).secret(OTHER_ACCESS);

    for method in [
        "core_ping",
        "core_version",
        "rpc.discover",
        "auth_get_state",
    ] {
        call(&mut sidecar, method, Value::Null).await;
    }
    // Gated before sign-in, then bad params that carry a token in the wrong place.
    call(&mut sidecar, "composio_list_toolkits", Value::Null).await;
    let bad = call(
        &mut sidecar,
        "auth_store_session",
        json!({"access_token": 5, "refresh_token": REFRESH}),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602);
    let bad = call(
        &mut sidecar,
        "auth_store_session",
        json!({"access_token": ACCESS, "user": ACCESS}),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602);
    let bad = call(&mut sidecar, "user_get_profile", json!({"token": ACCESS})).await;
    assert_eq!(bad["error"]["code"], -32602);

    let stored = call(&mut sidecar, "auth_store_session", session(ACCESS)).await;
    assert_eq!(stored["result"]["isAuthenticated"], true);
    call(&mut sidecar, "auth_get_state", Value::Null).await;
    for method in [
        "composio_list_toolkits",
        "composio_list_connections",
        "user_get_profile",
    ] {
        let response = call(&mut sidecar, method, Value::Null).await;
        assert!(response.get("result").is_some(), "{method}: {response}");
    }
    call(
        &mut sidecar,
        "composio_authorize",
        json!({"toolkit": "github"}),
    )
    .await;
    call(
        &mut sidecar,
        "composio_delete_connection",
        json!({"connectionId": "ca_1"}),
    )
    .await;

    // Error paths: a reported 5xx whose body echoes the token, a 429, a malformed body.
    for canned in [
        Canned::reply(
            500,
            format!(
                r#"{{"success":false,"error":"upstream said Bearer {ACCESS} refresh={REFRESH}"}}"#
            ),
        ),
        Canned::reply(429, "{}").header("retry-after", "3"),
        Canned::reply(200, format!("not json {ACCESS}")),
    ] {
        backend.set_canned(canned);
        let response = call(&mut sidecar, "composio_list_connections", Value::Null).await;
        assert!(response.get("error").is_some(), "{response}");
    }
    // A panic whose message holds both tokens.
    let panicked = call(
        &mut sidecar,
        "core_test_panic",
        json!({"message": format!("{ACCESS} {REFRESH}")}),
    )
    .await;
    assert_eq!(panicked["error"]["code"], -32603);

    // A 401: auth-expired, the session is cleared.
    backend.set_canned(Canned::reply(401, r#"{"success":false,"error":"expired"}"#));
    let expired = call(&mut sidecar, "user_get_profile", Value::Null).await;
    assert_eq!(expired["error"]["code"], -32001);

    // A second session, signed out explicitly.
    call(&mut sidecar, "auth_store_session", session(OTHER_ACCESS)).await;
    call(&mut sidecar, "auth_sign_out", json!({"scope": "local"})).await;
    call(&mut sidecar, "auth_clear_session", Value::Null).await;

    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0));

    let stdout = sidecar.stdout();
    let stderr = sidecar.stderr();
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "logs at trace level"
    );
    assert!(
        leaks(&stdout).is_empty(),
        "stdout leaks {:?}",
        leaks(&stdout)
    );
    assert!(
        leaks(&stderr).is_empty(),
        "stderr leaks {:?}",
        leaks(&stderr)
    );
    for notification in sidecar.notifications() {
        assert_clean_response("notification", notification);
    }
    let envelopes = sentry.wait_for(3, TIMEOUT).await;
    assert!(
        envelopes.len() >= 3,
        "5xx, malformed and panic reach Sentry"
    );
    for envelope in &envelopes {
        assert!(
            leaks(envelope).is_empty(),
            "Sentry leaks {:?}:\n{envelope}",
            leaks(envelope)
        );
    }
}
