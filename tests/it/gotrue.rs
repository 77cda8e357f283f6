//! A fake GoTrue (under `/auth/v1`) that is also the product backend (`/auth/me`,
//! `/agent-integrations/composio/toolkits`), on one 127.0.0.1:0 server.
//!
//! It rotates like GoTrue: each refresh token is single-use; a used one is
//! `400 refresh_token_already_used`, an unknown one `400 refresh_token_not_found`. A refresh
//! issues a new access token (`access-<n>-<random>`) and refresh token
//! (`refresh-<n>-<random>`). Old access tokens stay valid (as GoTrue JWTs do until they
//! expire); a *stale* one the backend refuses comes from `seed_session(false)`.
//!
//! Test switches: canned `/token` failures, holding the next `/token` request until released,
//! a canned `/user` and `/logout` answer, a raw `/token` answer with headers (a redirect).
//! Every token it ever made is in [`FakeGoTrue::tokens`] so tests can register them as
//! secrets with the harness.
#![allow(dead_code)] // shared helpers; not every test uses each one

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::TIMEOUT;

struct RefreshEntry {
    user: Value,
    used: bool,
}

/// The next `/token` request waits for `released` once it has set `arrived`.
struct Hold {
    armed: bool,
    arrived: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

/// A raw answer: status, headers, body.
type RawReply = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct Inner {
    n: usize,
    /// Access tokens the backend routes and `/user` accept, with their user.
    access: HashMap<String, Value>,
    refresh: HashMap<String, RefreshEntry>,
    token_calls: usize,
    /// Refresh tokens presented to `/token`, in order.
    presented: Vec<String>,
    logout_calls: Vec<String>,
    logout_bearers: Vec<String>,
    logout_response: Option<(u16, String)>,
    failures: VecDeque<(u16, String)>,
    /// Canned `/token` answers with headers, taken after `failures`.
    replies: VecDeque<RawReply>,
    user_response: Option<(u16, String)>,
    user_calls: usize,
    last_apikey: Option<String>,
    /// Bearer tokens the backend routes saw, in order.
    backend_tokens: Vec<String>,
    /// Every token made, for the harness's secret check.
    tokens: Vec<String>,
    hold: Option<Hold>,
}

impl Inner {
    fn next_token(&mut self, kind: &str) -> String {
        self.n += 1;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let token = format!("{kind}-{}-{random:016x}", self.n);
        self.tokens.push(token.clone());
        token
    }
}

pub struct FakeGoTrue {
    port: u16,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoTrue {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

impl FakeGoTrue {
    pub async fn start() -> FakeGoTrue {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/auth/v1/token", post(token))
            .route("/auth/v1/user", get(user))
            .route("/auth/v1/logout", post(logout))
            .route("/auth/me", get(profile))
            .route("/agent-integrations/composio/toolkits", get(toolkits))
            .with_state(inner.clone());
        let (port, server) = crate::harness::serve_local(app).await;
        FakeGoTrue {
            port,
            inner,
            server,
        }
    }

    /// The product backend's base URL (`CORE_SIDECAR_BACKEND_URL`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `CORE_SIDECAR_AUTH_URL`.
    pub fn auth_url(&self) -> String {
        format!("{}/auth/v1", self.base_url())
    }

    /// Registers a session of user `user-<n>`; returns its (access, refresh) tokens. The
    /// access token is refused by the backend unless `access_valid`.
    pub fn seed_session(&self, access_valid: bool) -> (String, String) {
        let id = format!("user-{}", lock(&self.inner).n + 1);
        self.seed_session_for(&id, access_valid)
    }

    /// As [`FakeGoTrue::seed_session`] for this user id.
    pub fn seed_session_for(&self, user_id: &str, access_valid: bool) -> (String, String) {
        let mut g = lock(&self.inner);
        let user = json!({
            "id": user_id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": format!("{user_id}@example.com"),
            "app_metadata": {"provider": "email"},
        });
        let access = g.next_token("access");
        let refresh = g.next_token("refresh");
        if access_valid {
            g.access.insert(access.clone(), user.clone());
        }
        g.refresh
            .insert(refresh.clone(), RefreshEntry { user, used: false });
        (access, refresh)
    }

    /// A token-shaped string the fake never issued (not a known refresh token); registered
    /// among [`FakeGoTrue::tokens`].
    pub fn unknown_token(&self) -> String {
        lock(&self.inner).next_token("refresh-unknown")
    }

    /// Every `/token` request, failed ones included.
    pub fn token_calls(&self) -> usize {
        lock(&self.inner).token_calls
    }

    /// The refresh tokens presented to `/token`, in order.
    pub fn presented(&self) -> Vec<String> {
        lock(&self.inner).presented.clone()
    }

    /// The `scope` of each `/logout` request.
    pub fn logout_calls(&self) -> Vec<String> {
        lock(&self.inner).logout_calls.clone()
    }

    /// The bearer token of each `/logout` request.
    pub fn logout_bearers(&self) -> Vec<String> {
        lock(&self.inner).logout_bearers.clone()
    }

    pub fn user_calls(&self) -> usize {
        lock(&self.inner).user_calls
    }

    /// Bearer tokens the backend routes saw, in order.
    pub fn backend_tokens(&self) -> Vec<String> {
        lock(&self.inner).backend_tokens.clone()
    }

    /// Every token this fake made (seeded, issued, unknown ones).
    pub fn tokens(&self) -> Vec<String> {
        lock(&self.inner).tokens.clone()
    }

    /// The next `n` `/token` requests answer this (a JSON body; its `error_code`, if any, is
    /// also sent as `x-sb-error-code`).
    pub fn fail_next_token(&self, n: usize, status: u16, body: Value) {
        let mut g = lock(&self.inner);
        for _ in 0..n {
            g.failures.push_back((status, body.to_string()));
        }
    }

    /// The next `/token` request answers this status, these headers and this body as is (a
    /// redirect, say). Queued after [`FakeGoTrue::fail_next_token`]'s answers.
    pub fn reply_next_token(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        lock(&self.inner)
            .replies
            .push_back((status, headers, body.to_string()));
    }

    /// The next `/token` request waits until [`FakeGoTrue::release_token`].
    pub fn hold_token(&self) {
        let (arrived, _) = watch::channel(false);
        let (released, _) = watch::channel(false);
        lock(&self.inner).hold = Some(Hold {
            armed: true,
            arrived,
            released,
        });
    }

    /// Resolves once the held `/token` request has arrived (panics after the harness timeout).
    pub async fn wait_token_request(&self) {
        let mut arrived = {
            let g = lock(&self.inner);
            g.hold
                .as_ref()
                .expect("hold_token first")
                .arrived
                .subscribe()
        };
        tokio::time::timeout(TIMEOUT, arrived.wait_for(|a| *a))
            .await
            .expect("a /token request arrives")
            .expect("hold kept");
    }

    /// Lets the held `/token` request go on.
    pub fn release_token(&self) {
        let g = lock(&self.inner);
        g.hold
            .as_ref()
            .expect("hold_token first")
            .released
            .send_replace(true);
    }

    /// `/user` answers this from now on (default: 200 with the user of the access token,
    /// 403 `bad_jwt` for a token it does not accept).
    pub fn set_user_response(&self, status: u16, body: Value) {
        lock(&self.inner).user_response = Some((status, body.to_string()));
    }

    /// `/logout` answers this from now on (default: 204).
    pub fn set_logout_response(&self, status: u16, body: Value) {
        lock(&self.inner).logout_response = Some((status, body.to_string()));
    }

    /// The `apikey` header of the last auth-server request.
    pub fn last_apikey(&self) -> Option<String> {
        lock(&self.inner).last_apikey.clone()
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

fn note_apikey(inner: &Shared, headers: &HeaderMap) {
    lock(inner).last_apikey = headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
}

/// A JSON answer; a GoTrue `error_code` in the body is also sent as `x-sb-error-code`.
fn canned(status: u16, body: String) -> Response {
    let code = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error_code"].as_str().map(str::to_owned));
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response();
    if let Some(code) = code {
        response
            .headers_mut()
            .insert("x-sb-error-code", code.parse().expect("header value"));
    }
    response
}

fn gotrue_error(status: u16, code: &str, msg: &str) -> Response {
    canned(
        status,
        json!({"code": status, "error_code": code, "msg": msg}).to_string(),
    )
}

async fn token(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let presented = serde_json::from_slice::<Value>(&body).unwrap_or_default()["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hold = {
        let mut g = lock(&inner);
        g.token_calls += 1;
        g.presented.push(presented.clone());
        match g.hold.as_mut() {
            Some(hold) if hold.armed => {
                hold.armed = false;
                hold.arrived.send_replace(true);
                Some(hold.released.subscribe())
            }
            _ => None,
        }
    };
    if let Some(mut released) = hold {
        let _ = released.wait_for(|r| *r).await;
    }

    if query.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return gotrue_error(400, "unsupported_grant_type", "Unsupported grant type");
    }
    let mut g = lock(&inner);
    if let Some((status, body)) = g.failures.pop_front() {
        return canned(status, body);
    }
    if let Some((status, headers, body)) = g.replies.pop_front() {
        let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
        for (name, value) in headers {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
            response
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        return response;
    }
    let user = match g.refresh.get_mut(&presented) {
        None => {
            return gotrue_error(
                400,
                "refresh_token_not_found",
                "Invalid Refresh Token: Refresh Token Not Found",
            );
        }
        Some(entry) if entry.used => {
            return gotrue_error(
                400,
                "refresh_token_already_used",
                "Invalid Refresh Token: Already Used",
            );
        }
        Some(entry) => {
            entry.used = true;
            entry.user.clone()
        }
    };
    let access = g.next_token("access");
    let refresh = g.next_token("refresh");
    g.access.insert(access.clone(), user.clone());
    g.refresh.insert(
        refresh.clone(),
        RefreshEntry {
            user: user.clone(),
            used: false,
        },
    );
    axum::Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": unix_now() + 3600,
        "refresh_token": refresh,
        "user": user,
    }))
    .into_response()
}

async fn user(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    note_apikey(&inner, &headers);
    let mut g = lock(&inner);
    g.user_calls += 1;
    if let Some((status, body)) = g.user_response.clone() {
        return canned(status, body);
    }
    match g.access.get(&bearer(&headers)) {
        Some(user) => axum::Json(user.clone()).into_response(),
        None => gotrue_error(
            403,
            "bad_jwt",
            "invalid JWT: unable to parse or verify signature",
        ),
    }
}

async fn logout(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    note_apikey(&inner, &headers);
    let mut g = lock(&inner);
    g.logout_calls
        .push(query.get("scope").cloned().unwrap_or_default());
    g.logout_bearers.push(bearer(&headers));
    match g.logout_response.clone() {
        Some((status, body)) => canned(status, body),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The backend side: the user of an access token the fake accepts.
fn backend_user(inner: &Shared, headers: &HeaderMap) -> Option<Value> {
    let token = bearer(headers);
    let mut g = lock(inner);
    g.backend_tokens.push(token.clone());
    g.access.get(&token).cloned()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"success": false, "error": "invalid token"})),
    )
        .into_response()
}

async fn profile(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers) {
        Some(user) => axum::Json(json!({"success": true, "data": user})).into_response(),
        None => unauthorized(),
    }
}

async fn toolkits(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers) {
        Some(_) => axum::Json(json!({"success": true, "data": {"toolkits": ["github", "slack"]}}))
            .into_response(),
        None => unauthorized(),
    }
}
