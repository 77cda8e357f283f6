//! A fake GoTrue (under `/auth/v1`) that is also the product backend (`/auth/me`,
//! `/agent-integrations/composio/toolkits`), on one 127.0.0.1:0 server.
//!
//! It rotates like GoTrue: each refresh token is single-use; an unknown one is
//! `400 refresh_token_not_found`. A refresh issues a new access token (`access-<n>-<random>`)
//! and refresh token (`refresh-<n>-<random>`). Reusing a spent refresh token within the
//! reuse interval ([`FakeGoTrue::set_reuse_interval`], zero unless set) answers a new access
//! token with the family's current refresh token, as GoTrue does; past it, the whole token
//! family (the session) is revoked and the answer is `400 refresh_token_already_used`. Old
//! access tokens stay valid (as GoTrue JWTs do until they expire) unless the session was
//! revoked (reuse, `/logout`) or they have expired (seeded with an expiry); a *stale* one
//! the backend refuses comes from `seed_session(false)`.
//!
//! `/user`, `/logout` and the backend routes judge the bearer token as GoTrue would: 403
//! `bad_jwt` (backend: 401) for an unknown, stale or expired one, 403 `session_not_found`
//! (backend: 401) for one of a revoked session. A successful `/logout` revokes by scope:
//! `local` this session, `global` every session of the user, `others` every other one.
//!
//! Errors the fake makes itself come in the shape GoTrue picks for the request: with
//! `X-Supabase-Api-Version: 2024-01-01` (auth-js sends it) `{code: "<code>", message}` and
//! that header back; without (the sidecar) `{code: <status>, error_code, msg}`. Both carry
//! `x-sb-error-code`.
//!
//! Test switches: canned `/token` failures, raw `/token` answers with headers, holding the
//! next `/token` request until released, canned `/user` and `/logout` answers (with or
//! without headers), dropping the next connections unanswered (a network failure for the
//! client: every answer says `Connection: close`, so each request opens its own). Every
//! request is journalled with a label for its token ([`FakeGoTrue::journal`]), and every
//! token it ever made is in [`FakeGoTrue::tokens`] so tests can register them as secrets
//! with the harness.
#![allow(dead_code)] // shared helpers; not every test uses each one

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::TIMEOUT;

/// The API version auth-js asks for, and GoTrue's answer shape for it.
const API_VERSION: &str = "2024-01-01";

/// How a token family (one GoTrue session) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revoked {
    /// A spent refresh token was reused past the reuse interval.
    Reuse,
    /// `/logout` (the session row is gone).
    Logout,
}

/// One GoTrue session: its refresh tokens form a chain, the last one active.
struct Family {
    /// Prefix of its tokens' labels (empty for the first family of the differential tests).
    name: String,
    user_id: String,
    user: Value,
    revoked: Option<Revoked>,
    /// The current refresh token and its generation.
    active: String,
    generation: usize,
}

struct RefreshEntry {
    family: usize,
    generation: usize,
    used_at: Option<Instant>,
}

struct AccessEntry {
    family: usize,
    /// Refused by the backend and `/user` whatever else holds (`seed_session(false)`).
    stale: bool,
    /// Unix seconds; `None`: never expires here.
    expires_at: Option<i64>,
}

/// Why a bearer token is refused.
enum Refusal {
    BadJwt(&'static str),
    SessionGone,
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
    families: Vec<Family>,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    /// A label for every token made: `A<generation>` / `R<generation>`, prefixed with the
    /// family's name and a dot when it has one.
    labels: HashMap<String, String>,
    reuse_interval: Duration,
    token_calls: usize,
    /// Refresh tokens presented to `/token`, in order.
    presented: Vec<String>,
    logout_calls: Vec<String>,
    logout_bearers: Vec<String>,
    logout_response: Option<RawReply>,
    failures: VecDeque<(u16, String)>,
    /// Canned `/token` answers with headers, taken after `failures`.
    replies: VecDeque<RawReply>,
    user_response: Option<RawReply>,
    user_calls: usize,
    last_apikey: Option<String>,
    /// Bearer tokens the backend routes saw, in order.
    backend_tokens: Vec<String>,
    /// Every request in order: what, and the raw token it carried (or "").
    journal: Vec<(String, String)>,
    /// Connections to accept and close unanswered.
    drop_connections: usize,
    /// The backend routes answer 401 to every token.
    backend_refuses: bool,
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

    /// A new token of `family` at `generation`, labelled.
    fn family_token(
        &mut self,
        family: usize,
        kind: char,
        generation: usize,
        suffix: &str,
    ) -> String {
        let token = self.next_token(if kind == 'A' { "access" } else { "refresh" });
        let name = &self.families[family].name;
        let label = if name.is_empty() {
            format!("{kind}{generation}{suffix}")
        } else {
            format!("{name}.{kind}{generation}{suffix}")
        };
        self.labels.insert(token.clone(), label);
        token
    }

    fn issue_access(&mut self, family: usize, generation: usize, suffix: &str) -> String {
        let access = self.family_token(family, 'A', generation, suffix);
        self.access.insert(
            access.clone(),
            AccessEntry {
                family,
                stale: false,
                expires_at: Some(unix_now() + 3600),
            },
        );
        access
    }

    fn label(&self, token: &str) -> String {
        if token.is_empty() {
            return "-".into();
        }
        self.labels
            .get(token)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    /// The user of a bearer token GoTrue would accept.
    fn check_access(&self, token: &str) -> Result<Value, Refusal> {
        let entry = self.access.get(token).ok_or(Refusal::BadJwt(
            "invalid JWT: unable to parse or verify signature",
        ))?;
        if entry.stale {
            return Err(Refusal::BadJwt(
                "invalid JWT: unable to parse or verify signature",
            ));
        }
        if entry.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(Refusal::BadJwt(
                "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired",
            ));
        }
        let family = &self.families[entry.family];
        if family.revoked.is_some() {
            return Err(Refusal::SessionGone);
        }
        Ok(family.user.clone())
    }

    fn revoke_by_scope(&mut self, token: &str, scope: &str) {
        let Some(mine) = self.access.get(token).map(|a| a.family) else {
            return;
        };
        let user = self.families[mine].user_id.clone();
        for (index, family) in self.families.iter_mut().enumerate() {
            let hit = match scope {
                "global" => family.user_id == user,
                "others" => family.user_id == user && index != mine,
                _ => index == mine,
            };
            if hit && family.revoked.is_none() {
                family.revoked = Some(Revoked::Logout);
            }
        }
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

/// A session to seed: see [`FakeGoTrue::seed`].
pub struct Seed<'a> {
    pub user_id: &'a str,
    /// Label prefix of the family's tokens (empty: `A0`, `R0`, ...).
    pub name: &'a str,
    /// Refused by the backend and `/user` (a stale token).
    pub stale: bool,
    /// When the access token expires here (unix seconds); `None`: never.
    pub access_expires_at: Option<i64>,
}

/// Accepts connections, closing the ones [`FakeGoTrue::drop_next_connections`] asked for
/// unanswered.
struct DroppingListener {
    listener: TcpListener,
    inner: Shared,
}

impl axum::serve::Listener for DroppingListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.listener.accept().await else {
                continue;
            };
            {
                let mut g = lock(&self.inner);
                if g.drop_connections > 0 {
                    g.drop_connections -= 1;
                    g.journal.push(("DROPPED".into(), String::new()));
                    // Read the request, then close without an answer. (Closed before the
                    // request arrives, Node's fetch would wait forever.)
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let mut request = [0u8; 8192];
                        let _ = tokio::time::timeout(TIMEOUT, stream.read(&mut request)).await;
                    });
                    continue;
                }
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
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
            .layer(axum::middleware::map_response(close_connection))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let listener = DroppingListener {
            listener,
            inner: inner.clone(),
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
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
        let name = format!("{user_id}#{}", lock(&self.inner).families.len());
        self.seed(Seed {
            user_id,
            name: &name,
            stale: !access_valid,
            access_expires_at: None,
        })
    }

    /// Registers a session (a new token family) as described; returns its (access, refresh)
    /// tokens, labelled `A0` and `R0` (with the seed's name as prefix).
    pub fn seed(&self, seed: Seed<'_>) -> (String, String) {
        let mut g = lock(&self.inner);
        let user = json!({
            "id": seed.user_id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": format!("{}@example.com", seed.user_id),
            "app_metadata": {"provider": "email"},
        });
        let family = g.families.len();
        g.families.push(Family {
            name: seed.name.to_string(),
            user_id: seed.user_id.to_string(),
            user,
            revoked: None,
            active: String::new(),
            generation: 0,
        });
        let access = g.family_token(family, 'A', 0, "");
        let refresh = g.family_token(family, 'R', 0, "");
        g.access.insert(
            access.clone(),
            AccessEntry {
                family,
                stale: seed.stale,
                expires_at: seed.access_expires_at,
            },
        );
        g.refresh.insert(
            refresh.clone(),
            RefreshEntry {
                family,
                generation: 0,
                used_at: None,
            },
        );
        g.families[family].active = refresh.clone();
        (access, refresh)
    }

    /// A token-shaped string the fake never issued (not a known refresh token); registered
    /// among [`FakeGoTrue::tokens`].
    pub fn unknown_token(&self) -> String {
        lock(&self.inner).next_token("refresh-unknown")
    }

    /// How long a spent refresh token may be used again (GoTrue's reuse interval, 10 s by
    /// default there; zero here unless set).
    pub fn set_reuse_interval(&self, interval: Duration) {
        lock(&self.inner).reuse_interval = interval;
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

    /// Every request in order, as `<what> <label of its token>`: `POST /token R0`,
    /// `GET /user A1`, `POST /logout?scope=global A1`, `GET /auth/me A0`, and `DROPPED` for
    /// a connection closed unanswered. Labels never show a token.
    pub fn journal(&self) -> Vec<String> {
        let g = lock(&self.inner);
        g.journal
            .iter()
            .map(|(what, token)| match what.as_str() {
                "DROPPED" => what.clone(),
                _ => format!("{what} {}", g.label(token)),
            })
            .collect()
    }

    /// The label of a token this fake made (`A1`, `R0`, `other.A0`), `?` for one it did not
    /// make.
    pub fn label(&self, token: &str) -> String {
        lock(&self.inner).label(token)
    }

    /// The names of the revoked families (sessions), in seed order; the unnamed one is `-`.
    pub fn revoked(&self) -> Vec<String> {
        lock(&self.inner)
            .families
            .iter()
            .filter(|f| f.revoked.is_some())
            .map(|f| {
                if f.name.is_empty() {
                    "-".to_string()
                } else {
                    f.name.clone()
                }
            })
            .collect()
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
        lock(&self.inner)
            .replies
            .push_back(raw(status, headers, body));
    }

    /// The next `n` connections are accepted and closed unanswered: the client sees a
    /// network failure (its request was never read, so nothing is journalled for it but
    /// `DROPPED`).
    pub fn drop_next_connections(&self, n: usize) {
        lock(&self.inner).drop_connections += n;
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

    /// `/user` answers this from now on (default: 200 with the user of an access token it
    /// accepts, else 403 `bad_jwt` or `session_not_found`). A GoTrue `error_code` in the
    /// body is also sent as `x-sb-error-code`.
    pub fn set_user_response(&self, status: u16, body: Value) {
        lock(&self.inner).user_response = Some(canned_raw(status, body.to_string()));
    }

    /// `/user` answers this status, these headers and this body as is from now on.
    pub fn set_user_reply(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.inner).user_response = Some(raw(status, headers, body));
    }

    /// `/logout` answers this from now on, and revokes nothing (default: 204 and the scope's
    /// sessions revoked for an access token it accepts, else 403 as `/user`).
    pub fn set_logout_response(&self, status: u16, body: Value) {
        lock(&self.inner).logout_response = Some(canned_raw(status, body.to_string()));
    }

    /// `/logout` answers as GoTrue again (204 and revoked, or 403).
    pub fn clear_logout_response(&self) {
        lock(&self.inner).logout_response = None;
    }

    /// `/logout` answers this status, these headers and this body as is from now on, and
    /// revokes nothing.
    pub fn set_logout_reply(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.inner).logout_response = Some(raw(status, headers, body));
    }

    /// The backend routes answer 401 to every token from now on (a backend that refuses
    /// even freshly issued tokens).
    pub fn set_backend_refuses(&self, refuses: bool) {
        lock(&self.inner).backend_refuses = refuses;
    }

    /// Spends `refresh` as another client would (a rotation this fake's journal does not
    /// show): it is used from now on, and its family has a newer refresh token.
    pub fn spend_refresh_token(&self, refresh: &str) {
        let mut g = lock(&self.inner);
        let entry = g
            .refresh
            .get_mut(refresh)
            .expect("a refresh token of this fake");
        assert!(entry.used_at.is_none(), "not spent yet");
        entry.used_at = Some(Instant::now());
        let (family, next) = (entry.family, entry.generation + 1);
        g.issue_access(family, next, "");
        let rotated = g.family_token(family, 'R', next, "");
        g.refresh.insert(
            rotated.clone(),
            RefreshEntry {
                family,
                generation: next,
                used_at: None,
            },
        );
        g.families[family].active = rotated;
        g.families[family].generation = next;
    }

    /// Ends the session (family) named `name` as a `/logout` elsewhere would.
    pub fn revoke_family(&self, name: &str) {
        let mut g = lock(&self.inner);
        let family = g
            .families
            .iter_mut()
            .find(|f| f.name == name)
            .expect("a seeded family");
        family.revoked = Some(Revoked::Logout);
    }

    /// The label of the newest access token of the family named `name`.
    pub fn latest_access_label(&self, name: &str) -> Option<String> {
        let g = lock(&self.inner);
        let index = g.families.iter().position(|f| f.name == name)?;
        g.tokens
            .iter()
            .rev()
            .find(|t| g.access.get(*t).is_some_and(|a| a.family == index))
            .map(|t| g.label(t))
    }

    /// The `apikey` header of the last auth-server request.
    pub fn last_apikey(&self) -> Option<String> {
        lock(&self.inner).last_apikey.clone()
    }
}

fn raw(status: u16, headers: &[(&str, &str)], body: &str) -> RawReply {
    let headers = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A JSON answer's raw form; a GoTrue `error_code` in the body is also sent as
/// `x-sb-error-code`.
fn canned_raw(status: u16, body: String) -> RawReply {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(code) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error_code"].as_str().map(str::to_owned))
    {
        headers.push(("x-sb-error-code".into(), code));
    }
    (status, headers, body)
}

fn reply(raw: RawReply) -> Response {
    let (status, headers, body) = raw;
    let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
    for (name, value) in headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

async fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
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

/// Whether the request asked for GoTrue's 2024-01-01 API (auth-js does).
fn wants_v2(headers: &HeaderMap) -> bool {
    headers
        .get("x-supabase-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= API_VERSION)
}

/// A GoTrue error in the shape the request asked for, with `x-sb-error-code`.
fn gotrue_error(headers: &HeaderMap, status: u16, code: &str, msg: &str) -> Response {
    if wants_v2(headers) {
        reply(raw(
            status,
            &[
                ("content-type", "application/json"),
                ("x-sb-error-code", code),
                ("x-supabase-api-version", API_VERSION),
            ],
            &json!({"code": code, "message": msg}).to_string(),
        ))
    } else {
        reply(canned_raw(
            status,
            json!({"code": status, "error_code": code, "msg": msg}).to_string(),
        ))
    }
}

fn refused(headers: &HeaderMap, refusal: Refusal) -> Response {
    match refusal {
        Refusal::BadJwt(msg) => gotrue_error(headers, 403, "bad_jwt", msg),
        Refusal::SessionGone => gotrue_error(
            headers,
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ),
    }
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
        g.journal.push(("POST /token".into(), presented.clone()));
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
        return gotrue_error(
            &headers,
            400,
            "unsupported_grant_type",
            "Unsupported grant type",
        );
    }
    let mut g = lock(&inner);
    if let Some((status, body)) = g.failures.pop_front() {
        return reply(canned_raw(status, body));
    }
    if let Some(answer) = g.replies.pop_front() {
        return reply(answer);
    }
    let Some(entry) = g.refresh.get(&presented) else {
        return not_found(&headers);
    };
    let (family, generation, used_at) = (entry.family, entry.generation, entry.used_at);
    match g.families[family].revoked {
        Some(Revoked::Logout) => return not_found(&headers),
        Some(Revoked::Reuse) => return already_used(&headers),
        None => {}
    }
    let (access, refresh) = match used_at {
        Some(used) => {
            let is_parent = g.families[family].generation == generation + 1;
            if !(is_parent && used.elapsed() < g.reuse_interval) {
                g.families[family].revoked = Some(Revoked::Reuse);
                return already_used(&headers);
            }
            // Within the reuse interval: a new access token, the current refresh token.
            let active_generation = g.families[family].generation;
            let access = g.issue_access(family, active_generation, "'");
            (access, g.families[family].active.clone())
        }
        None => {
            g.refresh.get_mut(&presented).expect("entry").used_at = Some(Instant::now());
            let next = generation + 1;
            let access = g.issue_access(family, next, "");
            let refresh = g.family_token(family, 'R', next, "");
            g.refresh.insert(
                refresh.clone(),
                RefreshEntry {
                    family,
                    generation: next,
                    used_at: None,
                },
            );
            g.families[family].active = refresh.clone();
            g.families[family].generation = next;
            (access, refresh)
        }
    };
    let user = g.families[family].user.clone();
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

fn not_found(headers: &HeaderMap) -> Response {
    gotrue_error(
        headers,
        400,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
    )
}

fn already_used(headers: &HeaderMap) -> Response {
    gotrue_error(
        headers,
        400,
        "refresh_token_already_used",
        "Invalid Refresh Token: Already Used",
    )
}

async fn user(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    note_apikey(&inner, &headers);
    let token = bearer(&headers);
    let mut g = lock(&inner);
    g.user_calls += 1;
    g.journal.push(("GET /user".into(), token.clone()));
    if let Some(answer) = g.user_response.clone() {
        return reply(answer);
    }
    match g.check_access(&token) {
        Ok(user) => axum::Json(user).into_response(),
        Err(refusal) => refused(&headers, refusal),
    }
}

async fn logout(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    note_apikey(&inner, &headers);
    let token = bearer(&headers);
    let scope = query.get("scope").cloned().unwrap_or_default();
    let mut g = lock(&inner);
    g.logout_calls.push(scope.clone());
    g.logout_bearers.push(token.clone());
    g.journal
        .push((format!("POST /logout?scope={scope}"), token.clone()));
    if let Some(answer) = g.logout_response.clone() {
        return reply(answer);
    }
    match g.check_access(&token) {
        Ok(_) => {
            g.revoke_by_scope(&token, &scope);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refused(&headers, refusal),
    }
}

/// The backend side: the user of an access token the fake accepts.
fn backend_user(inner: &Shared, headers: &HeaderMap, route: &str) -> Option<Value> {
    let token = bearer(headers);
    let mut g = lock(inner);
    g.backend_tokens.push(token.clone());
    g.journal.push((format!("GET {route}"), token.clone()));
    if g.backend_refuses {
        return None;
    }
    g.check_access(&token).ok()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"success": false, "error": "invalid token"})),
    )
        .into_response()
}

async fn profile(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers, "/auth/me") {
        Some(user) => axum::Json(json!({"success": true, "data": user})).into_response(),
        None => unauthorized(),
    }
}

async fn toolkits(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers, "/agent-integrations/composio/toolkits") {
        Some(_) => axum::Json(json!({"success": true, "data": {"toolkits": ["github", "slack"]}}))
            .into_response(),
        None => unauthorized(),
    }
}

/// For the cross-process ownership tests (`ownership.rs`).
impl FakeGoTrue {
    /// Whether `refresh` would be taken by `/token` now, as a first use: known, not spent,
    /// and its session (family) not revoked.
    pub fn refresh_token_works(&self, refresh: &str) -> bool {
        let g = lock(&self.inner);
        g.refresh.get(refresh).is_some_and(|entry| {
            entry.used_at.is_none() && g.families[entry.family].revoked.is_none()
        })
    }
}
