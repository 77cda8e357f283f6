//! The session through the real binary: the keyring across restarts (real Secret Service and
//! keyutils, under scripts/with-keyring.sh), the gate's auth-expired rules, and what Sentry
//! hears about them.

use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::fake_backend::FakeBackend;
use crate::fake_sentry::FakeSentry;
use crate::harness::{
    Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT, secret_tool_lookup, unique_service,
};

fn session_params(access_token: &str, user_id: &str) -> Value {
    json!({
        "access_token": access_token,
        "refresh_token": TEST_REFRESH_TOKEN,
        "expires_in": 3600,
        "token_type": "bearer",
        "user": {"id": user_id, "email": "person@example.com"},
    })
}

async fn stop(mut sidecar: Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn secret_service_keeps_the_session_across_restarts_until_cleared() {
    let service = unique_service("ss");
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ];

    let mut sidecar = Sidecar::spawn(&env);
    let stored = sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-persist"))
        .await;
    assert_eq!(stored["result"]["persistent"], true, "{stored}");
    stop(sidecar).await;

    let secret = secret_tool_lookup(&service).expect("the session is in the Secret Service");
    let secret: Value = serde_json::from_str(&secret).expect("one JSON secret");
    assert_eq!(secret["access_token"], TEST_JWT);
    assert_eq!(secret["refresh_token"], TEST_REFRESH_TOKEN);
    assert_eq!(secret["user"]["id"], "u-persist");

    let mut sidecar = Sidecar::spawn(&env);
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
    assert_eq!(state["result"]["userId"], "u-persist");
    assert_eq!(state["result"]["persistent"], true);
    let cleared = sidecar.request("auth_clear_session", Value::Null).await;
    assert_eq!(cleared["result"]["removed"], true, "{cleared}");
    stop(sidecar).await;

    assert_eq!(
        secret_tool_lookup(&service),
        None,
        "cleared from the keyring"
    );
    let mut sidecar = Sidecar::spawn(&env);
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false, "{state}");
    stop(sidecar).await;
}

#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn keyutils_is_the_fallback_when_no_secret_service_is_reachable() {
    let service = unique_service("ku");
    let env = [
        ("CORE_SIDECAR_KEYRING", "auto"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
        (
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/core-sidecar-bus",
        ),
    ];

    let mut sidecar = Sidecar::spawn(&env);
    let stored = sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-keyutils"))
        .await;
    assert_eq!(stored["result"]["persistent"], true, "{stored}");
    stop(sidecar).await;
    assert_eq!(
        secret_tool_lookup(&service),
        None,
        "not in the Secret Service"
    );

    let mut sidecar = Sidecar::spawn(&env);
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["userId"], "u-keyutils", "{state}");
    assert!(
        sidecar.stderr().contains("keyutils"),
        "the fallback is logged: {}",
        sidecar.stderr()
    );
    sidecar.request("auth_clear_session", Value::Null).await;
    stop(sidecar).await;
}

#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn the_keyring_is_not_read_per_call() {
    let service = unique_service("cache");
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
    ];
    let mut sidecar = Sidecar::spawn(&env);
    sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-cache"))
        .await;
    // Remove the secret behind the sidecar's back: calls keep working from the cache.
    let cleared = Command::new("secret-tool")
        .args(["clear", "service", &service, "username", "default"])
        .status()
        .expect("secret-tool");
    assert!(cleared.success());
    for _ in 0..20 {
        let profile = sidecar.request("user_get_profile", Value::Null).await;
        assert_eq!(profile["result"]["id"], "user-1", "{profile}");
    }
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], true);
    stop(sidecar).await;
}

#[tokio::test]
async fn a_hundred_concurrent_401s_clear_the_session_once() {
    // The backend accepts another token: every call with ours is a 401.
    let backend = FakeBackend::start("another-token").await;
    let sentry = FakeSentry::start().await;
    let (url, dsn) = (backend.url(), sentry.dsn());
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("SENTRY_DSN", dsn.as_str()),
    ]);
    sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-401"))
        .await;
    sidecar.recv_notification("auth_state_changed").await; // SIGNED_IN

    for id in 1000..1100 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "composio_list_toolkits"}))
            .await;
    }
    for id in 1000..1100 {
        let response = sidecar.recv_response(&json!(id)).await;
        assert_eq!(response["error"]["code"], -32001, "{response}");
        assert_eq!(response["error"]["data"]["kind"], "auth_expired");
    }
    // Everything the sidecar wrote before this ping's response has been read by now.
    sidecar.request("core_ping", Value::Null).await;
    let signed_out: Vec<_> = sidecar
        .notifications()
        .iter()
        .filter(|n| n["params"]["event"] == "SIGNED_OUT")
        .collect();
    assert_eq!(signed_out.len(), 1, "{signed_out:?}");
    assert_eq!(signed_out[0]["params"]["reason"], "expired");
    assert_eq!(signed_out[0]["params"]["state"]["isAuthenticated"], false);
    stop(sidecar).await;
    assert!(
        sentry.envelopes().is_empty(),
        "auth-expired never reaches Sentry"
    );
}

#[tokio::test]
async fn no_session_is_auth_expired_and_not_reported() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let sentry = FakeSentry::start().await;
    let (url, dsn) = (backend.url(), sentry.dsn());
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("SENTRY_DSN", dsn.as_str()),
    ]);
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(response["error"]["code"], -32001, "{response}");
    assert_eq!(response["error"]["data"]["reason"], "no_session");
    assert_eq!(
        response["error"]["message"],
        "no session: sign in first (a sign-in method, or auth_store_session)"
    );
    assert!(backend.requests().is_empty(), "no call without a session");
    stop(sidecar).await;
    assert!(sentry.envelopes().is_empty());
}

/// A backend whose 401 for the old token is held until the test releases it.
async fn slow_401_backend(new_token: &'static str, release: Arc<Notify>) -> String {
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let release = release.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth == format!("Bearer {new_token}") {
                return axum::Json(json!({"success": true, "data": {"id": "u-new"}}))
                    .into_response();
            }
            release.notified().await;
            (StatusCode::UNAUTHORIZED, "{}").into_response()
        }
    });
    let (port, _server) = crate::harness::serve_local(app).await;
    let url = format!("http://127.0.0.1:{port}");
    url
}

#[tokio::test]
async fn a_late_401_for_an_old_token_keeps_the_newer_session() {
    const NEW_TOKEN: &str = "new-access-token-for-the-late-401-test";
    let release = Arc::new(Notify::new());
    let url = slow_401_backend(NEW_TOKEN, release.clone()).await;
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", url.as_str())]);
    sidecar.secret(NEW_TOKEN);
    sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-old"))
        .await;

    sidecar
        .send(json!({"jsonrpc": "2.0", "id": "old", "method": "user_get_profile"}))
        .await;
    // Once a ping sent after it is answered, the old call has been read and is in flight.
    sidecar.request("core_ping", Value::Null).await;
    let stored = sidecar
        .request("auth_store_session", session_params(NEW_TOKEN, "u-new"))
        .await;
    assert_eq!(stored["result"]["userId"], "u-new");
    release.notify_one();

    let old = sidecar.recv_response(&json!("old")).await;
    assert_eq!(old["error"]["code"], -32001, "{old}");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
    assert_eq!(state["result"]["userId"], "u-new");
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-new", "{profile}");
    assert!(
        !sidecar
            .notifications()
            .iter()
            .any(|n| n["params"]["event"] == "SIGNED_OUT"),
        "{:?}",
        sidecar.notifications()
    );
    stop(sidecar).await;
}

#[tokio::test]
async fn a_keyring_failure_is_a_storage_error_and_reported_without_tokens() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_KEYRING_FAULT", "fail"),
        ("SENTRY_DSN", dsn.as_str()),
    ]);
    let response = sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-fail"))
        .await;
    assert_eq!(response["error"]["code"], -32005, "{response}");
    assert_eq!(response["error"]["data"]["kind"], "storage");
    // Nothing half-done: still signed out, no SIGNED_IN.
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false);
    assert!(
        sidecar.notifications().is_empty(),
        "{:?}",
        sidecar.notifications()
    );
    stop(sidecar).await;

    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    assert!(!envelopes.is_empty());
    for envelope in &envelopes {
        assert!(!envelope.contains(TEST_JWT) && !envelope.contains(TEST_REFRESH_TOKEN));
    }
    assert!(
        envelopes.iter().any(|e| e.contains("storage")),
        "{envelopes:?}"
    );
}

#[tokio::test]
async fn supabase_session_objects_and_bad_params() {
    let mut sidecar = Sidecar::spawn(&[]);
    // A supabase-js Session as is, expiry from expires_at.
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({
                "access_token": TEST_JWT,
                "refresh_token": TEST_REFRESH_TOKEN,
                "expires_in": 3600,
                "expires_at": 1_900_000_000,
                "token_type": "bearer",
                "provider_token": null,
                "user": {"id": "8d0f", "aud": "authenticated", "email": "a@example.com"},
            }),
        )
        .await;
    assert_eq!(stored["result"]["expiresAt"], 1_900_000_000, "{stored}");
    assert_eq!(stored["result"]["userId"], "8d0f");
    let signed_in = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(signed_in["params"]["event"], "SIGNED_IN");
    assert_eq!(signed_in["params"]["state"]["userId"], "8d0f");

    for (params, field) in [
        (json!({}), "access_token"),
        (json!({"access_token": ""}), "access_token"),
        (json!({"access_token": 5}), "access_token"),
        (json!({"access_token": "t", "user": "me"}), "user"),
        (
            json!({"access_token": "t", "expires_at": "soon"}),
            "expires_at",
        ),
    ] {
        let response = sidecar.request("auth_store_session", params.clone()).await;
        assert_eq!(response["error"]["code"], -32602, "{params}: {response}");
        assert_eq!(
            response["error"]["data"]["field"], field,
            "{params}: {response}"
        );
    }
    let response = sidecar
        .request("auth_sign_out", json!({"scope": "everywhere"}))
        .await;
    assert_eq!(response["error"]["data"]["field"], "scope", "{response}");

    let signed_out = sidecar.request("auth_sign_out", Value::Null).await;
    assert_eq!(signed_out["result"]["removed"], true, "{signed_out}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(event["params"]["event"], "SIGNED_OUT");
    assert_eq!(event["params"]["reason"], "signed_out");
    let again = sidecar.request("auth_clear_session", Value::Null).await;
    assert_eq!(again["result"]["removed"], false);
    stop(sidecar).await;
}

#[tokio::test]
async fn a_user_object_over_64_kib_is_refused_and_nothing_is_stored() {
    let mut sidecar = Sidecar::spawn(&[]);
    let mut params = session_params(TEST_JWT, "u-big");
    params["user"]["blob"] = json!("b".repeat(1024 * 1024));
    let response = sidecar.request("auth_store_session", params).await;
    let error = &response["error"];
    assert_eq!(error["code"], -32602, "{}", &response.to_string()[..300]);
    assert_eq!(error["data"]["kind"], "invalid_params");
    assert_eq!(error["data"]["field"], "user");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("65536"), "{message}");
    assert!(
        !message.contains("bbbb"),
        "the value is not echoed: {message}"
    );

    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false, "{state}");
    assert_eq!(state["result"]["user"], Value::Null);
    assert!(
        sidecar.notifications().is_empty(),
        "no notification: {:?}",
        sidecar.notifications()
    );

    // A stored session is not replaced by a refused one either.
    sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-small"))
        .await;
    let mut params = session_params(TEST_JWT, "u-big");
    params["user"]["blob"] = json!("b".repeat(65 * 1024));
    let response = sidecar.request("auth_store_session", params).await;
    assert_eq!(response["error"]["data"]["field"], "user");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["userId"], "u-small", "{state}");
    let events: Vec<_> = sidecar
        .notifications()
        .iter()
        .map(|n| n["params"]["event"].clone())
        .collect();
    assert_eq!(events, [json!("SIGNED_IN")], "only the one stored");
    stop(sidecar).await;
}

/// INITIAL_SESSION: sent once, first, when the stored session has been loaded at start:
/// signed out when there is none, the session when there is one. Not sent with `memory`,
/// where there is nothing to load (a fresh process is always signed out).
#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn initial_session_comes_first_once_the_stored_session_is_loaded() {
    let service = unique_service("initial");
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ];
    let mut sidecar = Sidecar::spawn(&env);
    let initial = sidecar.recv_notification("auth_state_changed").await;
    crate::schema::assert_valid_notification(&initial);
    assert_eq!(initial["params"]["event"], "INITIAL_SESSION", "{initial}");
    assert_eq!(initial["params"]["state"]["isAuthenticated"], false);
    assert_eq!(initial["params"]["state"]["persistent"], true);
    assert!(initial["params"].get("reason").is_none());
    sidecar
        .request("auth_store_session", session_params(TEST_JWT, "u-initial"))
        .await;
    stop(sidecar).await;

    let mut sidecar = Sidecar::spawn(&env);
    let initial = sidecar.recv_notification("auth_state_changed").await;
    crate::schema::assert_valid_notification(&initial);
    assert_eq!(initial["params"]["event"], "INITIAL_SESSION", "{initial}");
    assert_eq!(initial["params"]["state"]["userId"], "u-initial");
    assert_eq!(initial["params"]["state"]["isAuthenticated"], true);
    sidecar.request("auth_clear_session", Value::Null).await;
    sidecar.request("core_ping", Value::Null).await;
    let events: Vec<_> = sidecar
        .notifications()
        .iter()
        .map(|n| n["params"]["event"].clone())
        .collect();
    assert_eq!(events, [json!("SIGNED_OUT")], "INITIAL_SESSION only once");
    stop(sidecar).await;

    let mut sidecar = Sidecar::spawn(&[]);
    sidecar.request("auth_get_state", Value::Null).await;
    assert!(sidecar.notifications().is_empty(), "none with memory");
    stop(sidecar).await;
}

/// USER_UPDATED when `auth_get_user` changes the stored user; nothing when it is the same.
#[tokio::test]
async fn auth_get_user_emits_user_updated_only_when_the_user_changed() {
    let fake = crate::gotrue::FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-upd", true);
    let auth = fake.auth_url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_AUTH_URL", auth.as_str())]);
    sidecar.secret(&access).secret(&refresh);
    sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh, "expires_in": 3600,
                   "user": {"id": "u-upd"}}),
        )
        .await;
    let user = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(user["result"]["email"], "u-upd@example.com", "{user}");
    let again = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(again["result"], user["result"]);
    sidecar.request("core_ping", Value::Null).await;
    let changes: Vec<&Value> = sidecar
        .notifications()
        .iter()
        .filter(|n| n["method"] == "auth_state_changed")
        .collect();
    let events: Vec<&Value> = changes.iter().map(|n| &n["params"]["event"]).collect();
    assert_eq!(events, ["SIGNED_IN", "USER_UPDATED"], "{changes:?}");
    let updated = &changes[1]["params"];
    crate::schema::assert_valid_notification(changes[1]);
    assert_eq!(updated["state"]["user"], user["result"], "{updated}");
    assert_eq!(updated["state"]["userId"], "u-upd");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["user"], user["result"]);
    stop(sidecar).await;
}

/// With the `memory` keyring there is nothing to load, and INITIAL_SESSION still comes, once,
/// signed out and not persistent: a shell can always wait for it instead of polling.
#[tokio::test]
async fn a_memory_keyring_still_sends_initial_session_signed_out() {
    let mut sidecar = Sidecar::spawn(&[]);
    let pong = sidecar.request("core_ping", serde_json::Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
    let initial = sidecar.initial_session().await;
    assert_eq!(initial["method"], "auth_state_changed", "{initial}");
    assert_eq!(initial["params"]["event"], "INITIAL_SESSION", "{initial}");
    assert_eq!(
        initial["params"]["state"]["isAuthenticated"], false,
        "{initial}"
    );
    assert_eq!(initial["params"]["state"]["persistent"], false, "{initial}");
    crate::schema::assert_valid_notification(&initial);
    // Only once: a sign-in afterwards is SIGNED_IN, and nothing else was announced.
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": "opaque-access-token-1"}),
        )
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(event["params"]["event"], "SIGNED_IN", "{event}");
}
