//! Refresh through the real binary against a fake GoTrue that really rotates refresh tokens
//! (each one single-use; reuse is `refresh_token_already_used`). The same fake serves the
//! product backend's `/auth/me`, accepting only access tokens it issued and still honours.
//! The timing rules (backoff, ticker, dropped callers) are unit-tested under a paused clock
//! in `src/session/refresh.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::harness::{Sidecar, TIMEOUT};

#[derive(Default)]
struct Gotrue {
    access: HashSet<String>,
    refresh: HashSet<String>,
    used: HashSet<String>,
    issued: usize,
    token_calls: usize,
    logout_scopes: Vec<String>,
    user_answer: Option<(u16, Value)>,
    apikeys: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeGotrue(Arc<Mutex<Gotrue>>);

impl FakeGotrue {
    async fn start() -> (FakeGotrue, String) {
        let fake = FakeGotrue::default();
        let app = Router::new()
            .route("/auth/v1/token", post(token))
            .route("/auth/v1/user", get(user))
            .route("/auth/v1/logout", post(logout))
            .route("/auth/me", get(profile))
            .with_state(fake.clone());
        let (port, _server) = crate::harness::serve_local(app).await;
        let url = format!("http://127.0.0.1:{port}");
        (fake, url)
    }

    /// A session the fake knows; its access token is refused by the backend unless valid.
    fn seed(&self, access_valid: bool) -> (String, String) {
        let mut g = self.0.lock().unwrap();
        g.issued += 1;
        let access = format!("seeded-access-{}-valid-{access_valid}", g.issued);
        let refresh = format!("seeded-refresh-{}-rotating", g.issued);
        if access_valid {
            g.access.insert(access.clone());
        }
        g.refresh.insert(refresh.clone());
        (access, refresh)
    }

    fn token_calls(&self) -> usize {
        self.0.lock().unwrap().token_calls
    }

    fn with<T>(&self, f: impl FnOnce(&mut Gotrue) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

fn gotrue_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "error_code": code, "msg": code})),
    )
        .into_response()
}

async fn token(State(fake): State<FakeGotrue>, headers: HeaderMap, body: String) -> Response {
    let presented = serde_json::from_str::<Value>(&body).unwrap_or_default()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut g = fake.0.lock().unwrap();
    g.token_calls += 1;
    if let Some(key) = headers.get("apikey").and_then(|v| v.to_str().ok()) {
        g.apikeys.push(key.to_string());
    }
    if g.used.contains(&presented) {
        return gotrue_error(StatusCode::BAD_REQUEST, "refresh_token_already_used");
    }
    if !g.refresh.remove(&presented) {
        return gotrue_error(StatusCode::BAD_REQUEST, "refresh_token_not_found");
    }
    g.used.insert(presented);
    g.issued += 1;
    let access = format!("issued-access-{}-fresh-token", g.issued);
    let refresh = format!("issued-refresh-{}-rotated", g.issued);
    g.access.insert(access.clone());
    g.refresh.insert(refresh.clone());
    axum::Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": 3600,
        "user": {"id": "gotrue-user", "email": "person@example.com"},
    }))
    .into_response()
}

async fn user(State(fake): State<FakeGotrue>, headers: HeaderMap) -> Response {
    let g = fake.0.lock().unwrap();
    if let Some((status, body)) = &g.user_answer {
        return (
            StatusCode::from_u16(*status).unwrap(),
            axum::Json(body.clone()),
        )
            .into_response();
    }
    if !g.access.contains(&bearer(&headers)) {
        return gotrue_error(StatusCode::FORBIDDEN, "bad_jwt");
    }
    axum::Json(json!({"id": "gotrue-user", "email": "person@example.com", "role": "authenticated"}))
        .into_response()
}

async fn logout(
    State(fake): State<FakeGotrue>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let scope = query.get("scope").cloned().unwrap_or_default();
    fake.0.lock().unwrap().logout_scopes.push(scope);
    StatusCode::NO_CONTENT.into_response()
}

async fn profile(State(fake): State<FakeGotrue>, headers: HeaderMap) -> Response {
    let g = fake.0.lock().unwrap();
    if !g.access.contains(&bearer(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"success": false})),
        )
            .into_response();
    }
    axum::Json(json!({"success": true, "data": {"id": "gotrue-user"}})).into_response()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn spawn(url: &str, extra: &[(&str, &str)]) -> Sidecar {
    let auth = format!("{url}/auth/v1");
    let mut env = vec![
        ("CORE_SIDECAR_BACKEND_URL", url),
        ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
        ("CORE_SIDECAR_AUTH_API_KEY", "anon-key-for-tests"),
        // Secret hygiene for the refresh paths: the harness checks that no token below
        // reaches stdout or the trace-level logs.
        ("RUST_LOG", "trace"),
    ];
    env.extend_from_slice(extra);
    let mut sidecar = Sidecar::spawn(&env);
    for secret in [
        "seeded-access",
        "seeded-refresh",
        "issued-access",
        "issued-refresh",
    ] {
        sidecar.secret(secret);
    }
    sidecar
}

async fn store(sidecar: &mut Sidecar, access: &str, refresh: &str, expires_at: i64) {
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh, "expires_at": expires_at,
                   "user": {"id": "gotrue-user"}}),
        )
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
}

fn events(sidecar: &Sidecar) -> Vec<(String, Value)> {
    sidecar
        .notifications()
        .iter()
        .map(|n| {
            (
                n["params"]["event"].as_str().unwrap().to_string(),
                n["params"]["reason"].clone(),
            )
        })
        .collect()
}

async fn stop(mut sidecar: Sidecar) {
    sidecar.close_stdin();
    assert_eq!(sidecar.wait_exit(TIMEOUT).await.code(), Some(0));
}

#[tokio::test]
async fn fifty_gated_calls_with_an_expired_token_refresh_once() {
    let (fake, url) = FakeGotrue::start().await;
    let (access, refresh) = fake.seed(false);
    let mut sidecar = spawn(&url, &[]);
    store(&mut sidecar, &access, &refresh, now() - 10).await;
    for id in 0..50 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "user_get_profile"}))
            .await;
    }
    for id in 0..50 {
        let response = sidecar.recv_response(&json!(id)).await;
        assert_eq!(response["result"]["id"], "gotrue-user", "{response}");
    }
    assert_eq!(fake.token_calls(), 1, "one POST /token for everyone");
    sidecar.request("core_ping", Value::Null).await;
    let refreshed = events(&sidecar)
        .into_iter()
        .filter(|(e, _)| e == "TOKEN_REFRESHED")
        .count();
    assert_eq!(refreshed, 1);
    assert_eq!(fake.with(|g| g.apikeys.clone()), ["anon-key-for-tests"]);
    stop(sidecar).await;
}

#[tokio::test]
async fn a_backend_401_refreshes_once_and_the_retry_succeeds() {
    let (fake, url) = FakeGotrue::start().await;
    let (stale, refresh) = fake.seed(false);
    let mut sidecar = spawn(&url, &[]);
    store(&mut sidecar, &stale, &refresh, now() + 3600).await;
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "gotrue-user", "{profile}");
    assert_eq!(fake.token_calls(), 1);
    let kinds: Vec<String> = events(&sidecar).into_iter().map(|(e, _)| e).collect();
    assert_eq!(kinds, ["SIGNED_IN", "TOKEN_REFRESHED"]);
    stop(sidecar).await;
}

#[tokio::test]
async fn a_reused_refresh_token_signs_out_once() {
    let (fake, url) = FakeGotrue::start().await;
    let (stale, refresh) = fake.seed(false);
    let mut sidecar = spawn(&url, &[]);
    store(&mut sidecar, &stale, &refresh, now() + 3600).await;
    sidecar.request("auth_refresh_session", Value::Null).await;
    // The shell stores the old session again: its refresh token was used already.
    store(&mut sidecar, &stale, &refresh, now() + 3600).await;
    for id in ["a", "b", "c"] {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "user_get_profile"}))
            .await;
    }
    for id in ["a", "b", "c"] {
        let response = sidecar.recv_response(&json!(id)).await;
        assert_eq!(response["error"]["code"], -32001, "{response}");
    }
    assert_eq!(
        fake.token_calls(),
        2,
        "the rejected token is not sent again"
    );
    sidecar.request("core_ping", Value::Null).await;
    let signed_out: Vec<_> = events(&sidecar)
        .into_iter()
        .filter(|(e, _)| e == "SIGNED_OUT")
        .collect();
    assert_eq!(
        signed_out,
        [("SIGNED_OUT".to_string(), json!("refresh_failed"))]
    );
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], false);
    stop(sidecar).await;
}

#[tokio::test]
async fn auth_get_user_updates_clears_or_keeps() {
    let (fake, url) = FakeGotrue::start().await;
    let (access, refresh) = fake.seed(true);
    let sentry = crate::fake_sentry::FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = spawn(&url, &[("SENTRY_DSN", dsn.as_str())]);
    store(&mut sidecar, &access, &refresh, now() + 3600).await;

    let user = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(user["result"]["role"], "authenticated", "{user}");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(
        state["result"]["user"]["role"], "authenticated",
        "stored user updated"
    );

    fake.with(|g| g.user_answer = Some((500, json!({"code": 500, "msg": "down"}))));
    let failed = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(failed["error"]["code"], -32003, "{failed}");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(
        state["result"]["isAuthenticated"], true,
        "a 500 keeps the session"
    );

    fake.with(|g| {
        g.user_answer = Some((
            403,
            json!({"code": 403, "error_code": "session_not_found", "msg": "Session not found"}),
        ))
    });
    let gone = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(gone["error"]["code"], -32001, "{gone}");
    sidecar.request("core_ping", Value::Null).await;
    let signed_out: Vec<_> = events(&sidecar)
        .into_iter()
        .filter(|(e, _)| e == "SIGNED_OUT")
        .collect();
    assert_eq!(signed_out, [("SIGNED_OUT".to_string(), json!("expired"))]);
    stop(sidecar).await;
    // The 500 is a real fault: reported, and without a token.
    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    for envelope in &envelopes {
        assert!(!envelope.contains(&access) && !envelope.contains(&refresh));
        assert!(!envelope.contains("seeded-") && !envelope.contains("issued-"));
    }
}

#[tokio::test]
async fn sign_out_scopes_reach_the_auth_server() {
    let (fake, url) = FakeGotrue::start().await;
    let (access, refresh) = fake.seed(true);
    let mut sidecar = spawn(&url, &[]);
    store(&mut sidecar, &access, &refresh, now() + 3600).await;
    let others = sidecar
        .request("auth_sign_out", json!({"scope": "others"}))
        .await;
    assert_eq!(others["result"]["removed"], false, "{others}");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(
        state["result"]["isAuthenticated"], true,
        "others keeps this session"
    );
    let global = sidecar
        .request("auth_sign_out", json!({"scope": "global"}))
        .await;
    assert_eq!(global["result"]["removed"], true, "{global}");
    assert_eq!(fake.with(|g| g.logout_scopes.clone()), ["others", "global"]);
    stop(sidecar).await;
}

#[tokio::test]
async fn a_refresh_rotates_the_token_in_the_keyring_across_restarts() {
    if std::env::var_os("CORE_SIDECAR_TEST_KEYRING").is_none_or(|v| v != "1") {
        return; // needs the Secret Service of scripts/with-keyring.sh
    }
    let (fake, url) = FakeGotrue::start().await;
    let (access, refresh) = fake.seed(true);
    let service = format!("core-sidecar-it-rotate-{}-{}", std::process::id(), now());
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ];
    let mut sidecar = spawn(&url, &env);
    store(&mut sidecar, &access, &refresh, now() + 3600).await;
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    let event = if event["params"]["event"] == "SIGNED_IN" {
        sidecar.recv_notification("auth_state_changed").await
    } else {
        event
    };
    assert_eq!(event["params"]["event"], "TOKEN_REFRESHED");
    stop(sidecar).await;

    let lookup = std::process::Command::new("secret-tool")
        .args(["lookup", "service", &service, "username", "default"])
        .output()
        .unwrap();
    let stored: Value = serde_json::from_slice(&lookup.stdout).expect("the session is stored");
    let rotated = stored["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, refresh, "the rotated refresh token is stored");
    assert!(rotated.starts_with("issued-refresh-"));

    let mut sidecar = spawn(&url, &env);
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "gotrue-user", "{profile}");
    assert_eq!(
        fake.token_calls(),
        1,
        "the new access token came from the keyring"
    );
    sidecar.request("auth_clear_session", Value::Null).await;
    stop(sidecar).await;
}
