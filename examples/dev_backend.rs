//! A development product backend for demos and manual testing: the routes the sidecar's
//! gated methods call and a GoTrue-compatible auth server, with state in memory, on
//! 127.0.0.1 only. No account anywhere: a newcomer can sign in for real.
//!
//! ```text
//! cargo run --example dev_backend -- --port 8787     # 0 (the default) = any free port
//! ```
//!
//! The first line on stdout is `LISTENING <port>`; request logs go to stderr, and so do the
//! one-time codes the auth server "sends" (`dev_backend: OTP for demo@example.com: 123456`).
//! Point the sidecar at both halves of the same server:
//! `CORE_SIDECAR_BACKEND_URL=http://127.0.0.1:PORT` and
//! `CORE_SIDECAR_AUTH_URL=http://127.0.0.1:PORT/auth/v1` (loopback http is allowed).
//!
//! Product routes (all need `Authorization: Bearer <token>`; any token is accepted unless
//! revoked; answers use the `{"success", "data", "error"}` envelope):
//!
//! - `GET  /agent-integrations/composio/toolkits`
//! - `GET  /agent-integrations/composio/connections`
//! - `POST /agent-integrations/composio/authorize` `{"toolkit"}` -> `{connectUrl, connectionId}`
//! - `DELETE /agent-integrations/composio/connections/{id}` -> `{deleted: true}` or 404
//! - `GET  /agent-integrations/composio/tools[?toolkits=a,b]` -> agent tools per toolkit
//! - `POST /agent-integrations/composio/execute` `{"tool", "arguments"}` -> an execution that
//!   echoes its arguments (`successful: true`, `costUsd: 0`)
//! - `GET  /agent-integrations/composio/github/repos[?connectionId=]` -> two repositories of
//!   the (given, else first) GitHub connection; 404 without one
//! - `GET  /agent-integrations/composio/triggers/available?toolkit=[&connectionId=]` -> two
//!   GitHub triggers (none for other toolkits)
//! - `GET  /agent-integrations/composio/triggers[?toolkit=]` -> the enabled triggers
//! - `POST /agent-integrations/composio/triggers` `{"connectionId", "slug", "triggerConfig"?}`
//!   -> `{triggerId, slug, connectionId}`
//! - `DELETE /agent-integrations/composio/triggers/{id}` -> `{deleted: true}` or 404
//! - `GET  /auth/me` -> the user (read from the token's JWT payload when it is one, as the
//!   access tokens of the auth server below are)
//!
//! Auth server routes, under `/auth/v1` (GoTrue's, as `@supabase/auth-js` calls them; JSON
//! bodies; no `apikey` needed, any is accepted). One user exists at start: **`demo@example.com`
//! with the password `demo-password`**; any other email or phone signs up or gets a code.
//! Sign-ups and emails are confirmed at once (no mail is sent: codes and links go to stderr).
//!
//! - `POST /signup` `{email|phone, password, data?, code_challenge?, ...}` -> a session
//!   (auto-confirm); 422 `user_already_exists`, 422 `weak_password` (under 6 characters)
//! - `POST /token?grant_type=password` `{email|phone, password}` -> a session; 400
//!   `invalid_credentials`
//! - `POST /otp` `{email|phone, create_user?, data?, code_challenge?, code_challenge_method?}`
//!   -> `{}`: makes a 6-digit code (valid 1 h, single use, replacing any earlier one) and
//!   prints it and its magic link on stderr; 422 `otp_disabled` for an unknown user with
//!   `create_user: false`
//! - `POST /verify` `{email|phone, token, type}` or `{token_hash, type}` -> a session; 403
//!   `otp_expired` for a wrong, used or expired code. `email`, `magiclink`, `signup` and `sms`
//!   take an `/otp` code, `recovery` a `/recover` one
//! - `GET  /verify?token=<token_hash>&type=&redirect_to=` (the magic link) -> 303 to
//!   `<redirect_to>?code=<auth code>` when the code was asked for with a `code_challenge`
//!   (PKCE), else to `<redirect_to>#access_token=...&refresh_token=...` (implicit flow)
//! - `GET  /authorize?provider=&redirect_to=&code_challenge=&code_challenge_method=` -> 302
//!   to `<redirect_to>?code=<auth code>` for `demo@example.com` (the provider's consent page
//!   is skipped), or with the tokens in the fragment without a `code_challenge`; 400
//!   `validation_failed` for an unknown provider
//! - `POST /token?grant_type=pkce` `{auth_code, code_verifier}` -> a session when
//!   BASE64URL-NOPAD(SHA256(code_verifier)) is the flow's challenge (or equals it, for
//!   `plain`); a code is used once and lives 5 min. 404 `flow_state_not_found`, 422
//!   `flow_state_expired`, 400 `bad_code_verifier` (the code stays usable)
//! - `POST /token?grant_type=refresh_token` `{refresh_token}` -> a session with a new access
//!   token and a new refresh token; the old one is spent: 400 `refresh_token_already_used`
//!   (and the session ends, as GoTrue's reuse detection does), 400 `refresh_token_not_found`
//! - `GET  /user` (Bearer) -> the user; `PUT /user` (Bearer) `{email?, password?, phone?,
//!   data?}` -> the user, changed at once (`data` merges into `user_metadata`, a null deletes
//!   a key); 422 `weak_password`, `same_password`, `email_exists`
//! - `POST /logout?scope=local|global|others` (Bearer) -> 204, ends this session, every
//!   session of the user, or the others
//! - `POST /recover` `{email, code_challenge?, ...}` -> `{}`; for a known user, prints a
//!   recovery code and link on stderr (`type: recovery`)
//!
//! Sessions are GoTrue's: `{access_token, token_type: "bearer", expires_in: 3600, expires_at,
//! refresh_token, user}`, the access token an HS256 JWT (key random per run) with GoTrue's
//! claims (`sub`, `email`, `session_id`, `role`, `aal`, `amr`, ...) and a unique `jti`, the
//! refresh token random.
//! A Bearer route answers 401 `no_authorization` without a token, 403 `bad_jwt` for a token
//! it did not sign or one past `exp`, 403 `session_not_found` once its session has ended.
//! Errors are GoTrue's: `{code: <status>, error_code, msg}` and the `x-sb-error-code` header.
//!
//! Dev routes (no auth; for scripts):
//!
//! - `POST /dev/revoke` ends everything server-side: every product token seen so far is
//!   refused (their next call gets 401) and every auth server session ends (its refresh token
//!   is refused). `{"authSessions": false}` refuses the product tokens only (a refresh then
//!   gets a token that works). `{"token": "..."}` refuses one token (and ends its session when
//!   the auth server issued it). A product token never seen before is accepted afterwards.
//! - `POST /dev/reset` forgets revocations, connections, triggers, queued failures, and every
//!   auth server user, session, code and flow (back to the one demo user).
//! - `POST /dev/fail` `{"status": 500, "count"?: 1, "error"?: "...", "retryAfter"?: secs}`
//!   makes the next `count` product calls answer that status (e.g. 429, 500, 502).
//! - `GET  /dev/connect/{id}` is the `connectUrl`: opening it marks the connection ACTIVE.
//! - `GET  /dev/otp?email=` (or `?phone=`) -> `{code, type, tokenHash, expiresAt}`: the code
//!   last sent to that address and not used yet; 404 without one.
//! - `GET  /dev/secrets` -> `{secrets: [...]}`: every access token, refresh token and auth code
//!   the auth server issued and every `code_verifier` it received, so a script can check that
//!   none of them leaked into what it printed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha224, Sha256};

const TOOLKITS: &[&str] = &[
    "github",
    "gmail",
    "google_calendar",
    "linear",
    "notion",
    "slack",
];

#[derive(Default)]
struct Inner {
    seen: HashSet<String>,
    revoked: HashSet<String>,
    connections: BTreeMap<String, Value>,
    triggers: BTreeMap<String, Value>,
    next_id: u64,
    failures: Vec<Failure>,
}

#[derive(Clone, Deserialize)]
struct Failure {
    status: u16,
    #[serde(default = "one")]
    count: u32,
    error: Option<String>,
    #[serde(rename = "retryAfter")]
    retry_after: Option<u64>,
}

fn one() -> u32 {
    1
}

#[derive(Clone)]
struct App {
    inner: Arc<Mutex<Inner>>,
    auth: Arc<Mutex<Auth>>,
    port: u16,
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn auth(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ok(data: Value) -> Response {
    Json(json!({"success": true, "data": data})).into_response()
}

fn fail(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"success": false, "error": error}))).into_response()
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

/// Checks the token, then plays any queued failure, for every product route.
async fn require_auth(State(app): State<App>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = {
        let token = bearer(request.headers());
        let mut inner = app.lock();
        match token {
            None => Some(fail(StatusCode::UNAUTHORIZED, "missing bearer token")),
            Some(token) if inner.revoked.contains(&token) => {
                Some(fail(StatusCode::UNAUTHORIZED, "token revoked"))
            }
            Some(token) => {
                inner.seen.insert(token);
                queued_failure(&mut inner)
            }
        }
    };
    let response = match response {
        Some(response) => response,
        None => next.run(request).await,
    };
    eprintln!(
        "dev_backend: {method} {path} -> {}",
        response.status().as_u16()
    );
    response
}

fn queued_failure(inner: &mut Inner) -> Option<Response> {
    let failure = inner.failures.first_mut()?;
    failure.count = failure.count.saturating_sub(1);
    let failure = if failure.count == 0 {
        inner.failures.remove(0)
    } else {
        failure.clone()
    };
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = failure
        .error
        .unwrap_or_else(|| format!("injected failure {}", status.as_u16()));
    let mut response = fail(status, &error);
    if let Some(secs) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(response)
}

async fn toolkits() -> Response {
    ok(json!({ "toolkits": TOOLKITS }))
}

async fn connections(State(app): State<App>) -> Response {
    let list: Vec<Value> = app.lock().connections.values().cloned().collect();
    ok(json!({ "connections": list }))
}

#[derive(Deserialize)]
struct AuthorizeBody {
    toolkit: Option<String>,
}

async fn authorize(State(app): State<App>, body: Option<Json<AuthorizeBody>>) -> Response {
    let Some(toolkit) = body.and_then(|Json(b)| b.toolkit) else {
        return fail(StatusCode::BAD_REQUEST, "toolkit is required");
    };
    if !TOOLKITS.contains(&toolkit.as_str()) {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!("unknown toolkit: {toolkit}"),
        );
    }
    let mut inner = app.lock();
    inner.next_id += 1;
    let id = format!("ca_{:04}", inner.next_id);
    inner.connections.insert(
        id.clone(),
        json!({
            "id": id,
            "toolkit": toolkit,
            "status": "INITIATED",
            "createdAt": rfc3339(SystemTime::now()),
        }),
    );
    ok(json!({
        "connectUrl": format!("http://127.0.0.1:{}/dev/connect/{id}", app.port),
        "connectionId": id,
    }))
}

async fn delete_connection(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.lock().connections.remove(&id) {
        Some(_) => ok(json!({ "deleted": true })),
        None => fail(StatusCode::NOT_FOUND, "connection not found"),
    }
}

/// Agent tools: name, description and JSON Schema parameters, as the backend lists them.
fn tools_of(toolkit: &str) -> Vec<Value> {
    let tool = |name: &str, description: &str, required: &[&str]| {
        let properties: serde_json::Map<String, Value> = required
            .iter()
            .map(|p| (p.to_string(), json!({"type": "string"})))
            .collect();
        json!({"type": "function", "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        }})
    };
    match toolkit {
        "github" => vec![
            tool(
                "GITHUB_CREATE_AN_ISSUE",
                "Create an issue in a repository",
                &["owner", "repo", "title"],
            ),
            tool(
                "GITHUB_LIST_PULL_REQUESTS",
                "List the pull requests of a repository",
                &["owner", "repo"],
            ),
        ],
        "slack" => vec![tool(
            "SLACK_SEND_MESSAGE",
            "Send a message to a channel",
            &["channel", "text"],
        )],
        "gmail" => vec![tool(
            "GMAIL_SEND_EMAIL",
            "Send an email",
            &["to", "subject", "body"],
        )],
        _ => Vec::new(),
    }
}

async fn tools(Query(query): Query<BTreeMap<String, String>>) -> Response {
    let wanted: Vec<&str> = match query.get("toolkits") {
        Some(list) => list.split(',').map(str::trim).collect(),
        None => TOOLKITS.to_vec(),
    };
    let tools: Vec<Value> = wanted.into_iter().flat_map(tools_of).collect();
    ok(json!({ "tools": tools }))
}

#[derive(Deserialize)]
struct ExecuteBody {
    tool: String,
    #[serde(default)]
    arguments: Value,
}

async fn execute(body: Option<Json<ExecuteBody>>) -> Response {
    let Some(Json(body)) = body else {
        return fail(StatusCode::BAD_REQUEST, "tool and arguments are required");
    };
    ok(json!({
        "data": {"tool": body.tool, "echo": body.arguments},
        "successful": true,
        "costUsd": 0.0,
        "markdownFormatted": format!("Ran `{}` (dev backend: arguments echoed).", body.tool),
    }))
}

/// The GitHub connection a call is about: the one named, else the first.
fn github_connection(inner: &Inner, named: Option<&String>) -> Option<String> {
    inner
        .connections
        .values()
        .filter(|c| c["toolkit"] == "github")
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .find(|id| named.is_none_or(|n| n == id))
}

async fn github_repos(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(connection) = github_connection(&app.lock(), query.get("connectionId")) else {
        return fail(StatusCode::NOT_FOUND, "no GitHub connection");
    };
    let repo = |name: &str, private: bool| {
        json!({
            "owner": "dev-user",
            "repo": name,
            "fullName": format!("dev-user/{name}"),
            "private": private,
            "defaultBranch": "main",
            "htmlUrl": format!("https://github.com/dev-user/{name}"),
        })
    };
    ok(json!({
        "connectionId": connection,
        "repositories": [repo("desktop-app", false), repo("notes", true)],
    }))
}

async fn available_triggers(Query(query): Query<BTreeMap<String, String>>) -> Response {
    let Some(toolkit) = query.get("toolkit") else {
        return fail(StatusCode::BAD_REQUEST, "toolkit is required");
    };
    if toolkit != "github" {
        return ok(json!({ "triggers": [] }));
    }
    ok(json!({ "triggers": [
        {
            "slug": "GITHUB_COMMIT_EVENT",
            "scope": "repository",
            "defaultConfig": {"branch": "main"},
            "requiredConfigKeys": ["owner", "repo"],
            "repo": {"owner": "dev-user", "repo": "desktop-app"},
        },
        {
            "slug": "GITHUB_PULL_REQUEST_EVENT",
            "scope": "repository",
            "requiredConfigKeys": ["owner", "repo"],
        },
    ]}))
}

async fn active_triggers(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let list: Vec<Value> = app
        .lock()
        .triggers
        .values()
        .filter(|t| {
            query
                .get("toolkit")
                .is_none_or(|k| t["toolkit"] == k.as_str())
        })
        .cloned()
        .collect();
    ok(json!({ "triggers": list }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnableBody {
    connection_id: String,
    slug: String,
    trigger_config: Option<Value>,
}

async fn enable_trigger(State(app): State<App>, body: Option<Json<EnableBody>>) -> Response {
    let Some(Json(body)) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "connectionId and slug are required",
        );
    };
    let mut inner = app.lock();
    let Some(connection) = inner.connections.get(&body.connection_id) else {
        return fail(StatusCode::NOT_FOUND, "connection not found");
    };
    let toolkit = connection["toolkit"].clone();
    inner.next_id += 1;
    let id = format!("ti_{:04}", inner.next_id);
    let mut trigger = json!({
        "id": id,
        "slug": body.slug,
        "toolkit": toolkit,
        "connectionId": body.connection_id,
        "state": "ACTIVE",
    });
    if let Some(config) = body.trigger_config {
        trigger["triggerConfig"] = config;
    }
    inner.triggers.insert(id.clone(), trigger);
    ok(json!({
        "triggerId": id,
        "slug": body.slug,
        "connectionId": body.connection_id,
    }))
}

async fn disable_trigger(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.lock().triggers.remove(&id) {
        Some(_) => ok(json!({ "deleted": true })),
        None => fail(StatusCode::NOT_FOUND, "trigger not found"),
    }
}

async fn me(headers: HeaderMap) -> Response {
    let token = bearer(&headers).unwrap_or_default();
    let claims = jwt_claims(&token).unwrap_or(Value::Null);
    let id = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("dev-user");
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("dev@example.com");
    let name = claims["user_metadata"]["name"]
        .as_str()
        .unwrap_or("Dev User");
    ok(json!({
        "id": id,
        "email": email,
        "name": name,
        "plan": "free",
    }))
}

/// The payload of a JWT, unverified (this is a dev server).
fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Deserialize, Default)]
struct RevokeBody {
    token: Option<String>,
    #[serde(rename = "authSessions", default = "yes")]
    auth_sessions: bool,
}

fn yes() -> bool {
    true
}

async fn revoke(State(app): State<App>, body: Option<Json<RevokeBody>>) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or(RevokeBody {
        token: None,
        auth_sessions: true,
    });
    let revoked = {
        let mut inner = app.lock();
        match &body.token {
            Some(token) => {
                inner.revoked.insert(token.clone());
                1
            }
            None => {
                let seen: Vec<String> = inner.seen.drain().collect();
                let n = seen.len();
                inner.revoked.extend(seen);
                n
            }
        }
    };
    let ended = match (&body.token, body.auth_sessions) {
        (_, false) => 0,
        (Some(token), true) => app.auth().end_session_of(token),
        (None, true) => app.auth().end_all_sessions(),
    };
    eprintln!("dev_backend: revoked {revoked} token(s), ended {ended} auth session(s)");
    ok(json!({ "revoked": revoked, "authSessionsEnded": ended }))
}

async fn reset(State(app): State<App>) -> Response {
    *app.lock() = Inner::default();
    app.auth().reset();
    eprintln!("dev_backend: reset");
    ok(json!({ "reset": true }))
}

async fn inject_failure(State(app): State<App>, Json(failure): Json<Failure>) -> Response {
    eprintln!(
        "dev_backend: next {} call(s) answer {}",
        failure.count, failure.status
    );
    app.lock().failures.push(failure);
    ok(json!({ "queued": true }))
}

async fn connect(State(app): State<App>, Path(id): Path<String>) -> Response {
    let mut inner = app.lock();
    match inner.connections.get_mut(&id) {
        Some(connection) => {
            connection["status"] = json!("ACTIVE");
            (StatusCode::OK, format!("connection {id} is now ACTIVE\n")).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such connection\n").into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// The dev auth server: GoTrue's routes under /auth/v1, in memory.

/// The password user every run starts with (documented in the module docs and the README).
const DEMO_EMAIL: &str = "demo@example.com";
const DEMO_PASSWORD: &str = "demo-password";
/// Lifetimes in seconds, as GoTrue's defaults.
const ACCESS_TOKEN_TTL: u64 = 3600;
const OTP_TTL: u64 = 3600;
const FLOW_STATE_TTL: u64 = 300;
/// Providers `/authorize` knows (GoTrue's external providers).
const PROVIDERS: &[&str] = &[
    "apple",
    "azure",
    "bitbucket",
    "discord",
    "facebook",
    "figma",
    "github",
    "gitlab",
    "google",
    "kakao",
    "keycloak",
    "linkedin_oidc",
    "notion",
    "slack_oidc",
    "spotify",
    "twitch",
    "twitter",
    "workos",
    "zoom",
];
const VERIFY_TYPES: &[&str] = &[
    "email",
    "sms",
    "magiclink",
    "signup",
    "recovery",
    "invite",
    "email_change",
    "phone_change",
];

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Random bytes for tokens and codes: SHA-256 over a counter and a key drawn from the OS
/// (`/dev/urandom` where it exists, and the OS-seeded keys of std's `RandomState`).
struct Rng {
    key: [u8; 32],
    counter: u64,
}

impl Rng {
    fn from_os() -> Rng {
        use std::hash::{BuildHasher, Hasher};
        let mut seed = Sha256::new();
        let mut urandom = [0u8; 32];
        if let Ok(mut file) = std::fs::File::open("/dev/urandom")
            && file.read_exact(&mut urandom).is_ok()
        {
            seed.update(urandom);
        }
        for i in 0..4u64 {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(i);
            seed.update(hasher.finish().to_le_bytes());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        seed.update(now.as_nanos().to_le_bytes());
        seed.update(std::process::id().to_le_bytes());
        Rng {
            key: seed.finalize().into(),
            counter: 0,
        }
    }

    fn next(&mut self) -> [u8; 32] {
        self.counter += 1;
        Sha256::new()
            .chain_update(self.key)
            .chain_update(self.counter.to_le_bytes())
            .finalize()
            .into()
    }

    fn token(&mut self) -> String {
        b64url(&self.next()[..24])
    }

    fn uuid(&mut self) -> String {
        let mut b: [u8; 16] = self.next()[..16].try_into().expect("16 bytes");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn six_digits(&mut self) -> String {
        let n = u64::from_le_bytes(self.next()[..8].try_into().expect("8 bytes"));
        format!("{:06}", n % 1_000_000)
    }
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// An email (lower-cased) or a phone number (digits only, as GoTrue stores it).
#[derive(Clone, PartialEq)]
enum Ident {
    Email(String),
    Phone(String),
}

impl Ident {
    fn key(&self) -> String {
        match self {
            Ident::Email(email) => format!("email:{email}"),
            Ident::Phone(phone) => format!("phone:{phone}"),
        }
    }
    fn shown(&self) -> String {
        match self {
            Ident::Email(email) => email.clone(),
            Ident::Phone(phone) => format!("+{phone}"),
        }
    }
    fn provider(&self) -> &'static str {
        match self {
            Ident::Email(_) => "email",
            Ident::Phone(_) => "phone",
        }
    }
}

struct User {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    user_metadata: Map<String, Value>,
    providers: Vec<String>,
    created_at: u64,
    updated_at: u64,
    confirmed_at: Option<u64>,
    last_sign_in_at: Option<u64>,
}

impl User {
    fn new(id: String, ident: &Ident) -> User {
        let now = now_secs();
        let (email, phone) = match ident {
            Ident::Email(e) => (Some(e.clone()), None),
            Ident::Phone(p) => (None, Some(p.clone())),
        };
        User {
            id,
            email,
            phone,
            password: None,
            user_metadata: Map::new(),
            providers: vec![ident.provider().to_string()],
            created_at: now,
            updated_at: now,
            confirmed_at: None,
            last_sign_in_at: None,
        }
    }

    fn has(&self, ident: &Ident) -> bool {
        match ident {
            Ident::Email(e) => self.email.as_ref() == Some(e),
            Ident::Phone(p) => self.phone.as_ref() == Some(p),
        }
    }

    fn app_metadata(&self) -> Value {
        json!({"provider": self.providers.first(), "providers": self.providers})
    }

    /// The user as GoTrue answers it.
    fn to_json(&self) -> Value {
        let time =
            |t: Option<u64>| t.map(|t| rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(t)));
        let email_confirmed = self.email.as_ref().and(self.confirmed_at);
        let phone_confirmed = self.phone.as_ref().and(self.confirmed_at);
        json!({
            "id": self.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email.clone().unwrap_or_default(),
            "email_confirmed_at": time(email_confirmed),
            "phone": self.phone.clone().unwrap_or_default(),
            "phone_confirmed_at": time(phone_confirmed),
            "confirmed_at": time(self.confirmed_at),
            "last_sign_in_at": time(self.last_sign_in_at),
            "app_metadata": self.app_metadata(),
            "user_metadata": self.user_metadata,
            "identities": [],
            "created_at": time(Some(self.created_at)),
            "updated_at": time(Some(self.updated_at)),
            "is_anonymous": false,
        })
    }
}

struct AuthSession {
    user_id: String,
    /// How the session was signed in (the JWT's `amr`).
    method: &'static str,
    signed_in_at: u64,
}

struct RefreshToken {
    session_id: String,
    used: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum OtpKind {
    SignIn,
    Recovery,
}

impl OtpKind {
    fn link_type(self) -> &'static str {
        match self {
            OtpKind::SignIn => "magiclink",
            OtpKind::Recovery => "recovery",
        }
    }
    fn accepts(self, verify_type: &str) -> bool {
        match self {
            OtpKind::SignIn => matches!(verify_type, "email" | "magiclink" | "signup" | "sms"),
            OtpKind::Recovery => verify_type == "recovery",
        }
    }
}

#[derive(Clone)]
struct Challenge {
    challenge: String,
    /// `s256` or `plain`.
    method: String,
}

impl Challenge {
    fn accepts(&self, verifier: &str) -> bool {
        let expected = match self.method.as_str() {
            "s256" => b64url(&Sha256::digest(verifier.as_bytes())),
            _ => verifier.to_string(),
        };
        expected.len() == self.challenge.len()
            && expected
                .bytes()
                .zip(self.challenge.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A one-time code sent by `/otp` or `/recover`, keyed by [`Ident::key`].
struct Otp {
    user_id: String,
    code: String,
    token_hash: String,
    kind: OtpKind,
    expires_at: u64,
    pkce: Option<Challenge>,
    redirect_to: Option<String>,
}

/// A PKCE flow waiting for `/token?grant_type=pkce`, keyed by its auth code.
struct Flow {
    user_id: String,
    challenge: Challenge,
    method: &'static str,
    created_at: u64,
}

struct Auth {
    /// `http://127.0.0.1:PORT`: the site URL and the issuer's origin.
    origin: String,
    jwt_key: [u8; 32],
    rng: Rng,
    users: Vec<User>,
    sessions: HashMap<String, AuthSession>,
    refresh_tokens: HashMap<String, RefreshToken>,
    otps: HashMap<String, Otp>,
    flows: HashMap<String, Flow>,
    /// Every token and auth code issued and every code_verifier received (`/dev/secrets`).
    secrets: Vec<String>,
}

/// GoTrue's error: `{code, error_code, msg}` and the `x-sb-error-code` header.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    msg: String,
    extra: Map<String, Value>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body =
            json!({"code": self.status.as_u16(), "error_code": self.code, "msg": self.msg});
        body.as_object_mut().expect("an object").extend(self.extra);
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-sb-error-code", HeaderValue::from_static(self.code));
        response
    }
}

type Answer = Result<Response, Refusal>;

fn auth_error(status: StatusCode, code: &'static str, msg: &str) -> Refusal {
    Refusal {
        status,
        code,
        msg: msg.to_string(),
        extra: Map::new(),
    }
}

fn validation(msg: &str) -> Refusal {
    auth_error(StatusCode::BAD_REQUEST, "validation_failed", msg)
}

fn weak_password() -> Refusal {
    let mut refusal = auth_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "weak_password",
        "Password should be at least 6 characters.",
    );
    refusal
        .extra
        .insert("weak_password".into(), json!({"reasons": ["length"]}));
    refusal
}

fn otp_expired() -> Refusal {
    auth_error(
        StatusCode::FORBIDDEN,
        "otp_expired",
        "Token has expired or is invalid",
    )
}

/// A JSON object body (an empty body is `{}`).
fn json_body(bytes: &Bytes) -> Result<Map<String, Value>, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(auth_error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "Could not parse request body as JSON",
        )),
    }
}

/// A non-empty string field (null and "" count as absent).
fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The email or phone of a body; an error when both are given or one is malformed.
fn ident_of(body: &Map<String, Value>) -> Result<Option<Ident>, Refusal> {
    match (text(body, "email"), text(body, "phone")) {
        (Some(_), Some(_)) => Err(validation(
            "Only an email address or phone number should be provided",
        )),
        (Some(email), None) => {
            let email = email.to_lowercase();
            let valid = email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            if valid {
                Ok(Some(Ident::Email(email)))
            } else {
                Err(validation(
                    "Unable to validate email address: invalid format",
                ))
            }
        }
        (None, Some(phone)) => {
            let digits: String = phone
                .chars()
                .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')'))
                .collect();
            if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Some(Ident::Phone(digits)))
            } else {
                Err(validation("Invalid phone number format (E.164 required)"))
            }
        }
        (None, None) => Ok(None),
    }
}

/// `code_challenge` and `code_challenge_method` (null or absent: no PKCE).
fn challenge_of(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<Option<Challenge>, Refusal> {
    let Some(challenge) = challenge else {
        return Ok(None);
    };
    match method.map(str::to_ascii_lowercase).as_deref() {
        Some(method @ ("s256" | "plain")) => Ok(Some(Challenge {
            challenge: challenge.to_string(),
            method: method.to_string(),
        })),
        _ => Err(validation(
            "PKCE flow requires code_challenge_method to be s256 or plain",
        )),
    }
}

/// `target` with `?name=value` (or `&name=value`) appended.
fn with_query(target: &str, name: &str, value: &str) -> String {
    let sep = if target.contains('?') { '&' } else { '?' };
    format!("{target}{sep}{name}={}", url_encode(value))
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

impl Auth {
    fn new(port: u16) -> Auth {
        let mut rng = Rng::from_os();
        let jwt_key = rng.next();
        let mut auth = Auth {
            origin: format!("http://127.0.0.1:{port}"),
            jwt_key,
            rng,
            users: Vec::new(),
            sessions: HashMap::new(),
            refresh_tokens: HashMap::new(),
            otps: HashMap::new(),
            flows: HashMap::new(),
            secrets: Vec::new(),
        };
        auth.reset();
        auth
    }

    /// Back to the one demo user, nothing else (the signing key stays).
    fn reset(&mut self) {
        self.sessions.clear();
        self.refresh_tokens.clear();
        self.otps.clear();
        self.flows.clear();
        let mut demo = User::new(self.rng.uuid(), &Ident::Email(DEMO_EMAIL.into()));
        demo.password = Some(DEMO_PASSWORD.into());
        demo.confirmed_at = Some(demo.created_at);
        demo.user_metadata.insert("name".into(), json!("Demo User"));
        self.users = vec![demo];
    }

    fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn user_mut(&mut self, id: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| u.id == id)
    }

    fn find(&self, ident: &Ident) -> Option<&User> {
        self.users.iter().find(|u| u.has(ident))
    }

    fn create_user(&mut self, ident: &Ident) -> String {
        let id = self.rng.uuid();
        self.users.push(User::new(id.clone(), ident));
        id
    }

    /// A new session for a user: GoTrue's token answer.
    fn sign_in(&mut self, user_id: &str, method: &'static str) -> Value {
        let now = now_secs();
        let session_id = self.rng.uuid();
        self.sessions.insert(
            session_id.clone(),
            AuthSession {
                user_id: user_id.to_string(),
                method,
                signed_in_at: now,
            },
        );
        if let Some(user) = self.user_mut(user_id) {
            user.last_sign_in_at = Some(now);
            user.confirmed_at.get_or_insert(now);
        }
        self.tokens(&session_id)
    }

    /// A fresh access token and refresh token for a session.
    fn tokens(&mut self, session_id: &str) -> Value {
        let now = now_secs();
        // A token of its own even when refreshed within the same second as the last one.
        let jti = self.rng.uuid();
        let session = &self.sessions[session_id];
        let user = self
            .user(&session.user_id)
            .expect("a session's user exists");
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let claims = json!({
            "iss": format!("{}/auth/v1", self.origin),
            "sub": user.id,
            "aud": "authenticated",
            "exp": now + ACCESS_TOKEN_TTL,
            "iat": now,
            "email": user.email.clone().unwrap_or_default(),
            "phone": user.phone.clone().unwrap_or_default(),
            "app_metadata": user.app_metadata(),
            "user_metadata": user.user_metadata,
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": session.method, "timestamp": session.signed_in_at}],
            "session_id": session_id,
            "is_anonymous": false,
            "jti": jti,
        });
        let user = user.to_json();
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let access = format!(
            "{signed}.{}",
            b64url(&hmac_sha256(&self.jwt_key, signed.as_bytes()))
        );
        let refresh = self.rng.token();
        self.refresh_tokens.insert(
            refresh.clone(),
            RefreshToken {
                session_id: session_id.to_string(),
                used: false,
            },
        );
        self.secrets.push(access.clone());
        self.secrets.push(refresh.clone());
        json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_TTL,
            "expires_at": now + ACCESS_TOKEN_TTL,
            "refresh_token": refresh,
            "user": user,
        })
    }

    fn end_session(&mut self, session_id: &str) -> bool {
        self.refresh_tokens
            .retain(|_, r| r.session_id != session_id);
        self.sessions.remove(session_id).is_some()
    }

    fn end_all_sessions(&mut self) -> usize {
        self.refresh_tokens.clear();
        self.sessions.drain().count()
    }

    /// Ends the session of an access token this server signed; how many ended (0 or 1).
    fn end_session_of(&mut self, token: &str) -> usize {
        match self.verify_jwt(token) {
            Some(claims) => {
                let id = claims["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                usize::from(self.end_session(&id))
            }
            None => 0,
        }
    }

    /// The claims of a token this server signed (expired or not).
    fn verify_jwt(&self, token: &str) -> Option<Value> {
        let (signed, signature) = token.rsplit_once('.')?;
        let expected = b64url(&hmac_sha256(&self.jwt_key, signed.as_bytes()));
        if expected != signature {
            return None;
        }
        let payload = signed.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The Bearer token's session id and user id, or GoTrue's refusal.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(String, String), Refusal> {
        let Some(token) = bearer(headers) else {
            return Err(auth_error(
                StatusCode::UNAUTHORIZED,
                "no_authorization",
                "This endpoint requires a Bearer token",
            ));
        };
        let Some(claims) = self.verify_jwt(&token) else {
            return Err(auth_error(
                StatusCode::FORBIDDEN,
                "bad_jwt",
                "invalid JWT: unable to parse or verify signature, signature is invalid",
            ));
        };
        if claims["exp"].as_u64().is_none_or(|exp| exp <= now_secs()) {
            return Err(auth_error(
                StatusCode::FORBIDDEN,
                "bad_jwt",
                "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired",
            ));
        }
        let session_id = claims["session_id"].as_str().unwrap_or_default();
        let Some(session) = self.sessions.get(session_id) else {
            return Err(auth_error(
                StatusCode::FORBIDDEN,
                "session_not_found",
                "Session from session_id claim in JWT does not exist",
            ));
        };
        if self.user(&session.user_id).is_none() {
            return Err(auth_error(
                StatusCode::FORBIDDEN,
                "user_not_found",
                "User from sub claim in JWT does not exist",
            ));
        }
        Ok((session_id.to_string(), session.user_id.clone()))
    }

    /// Makes and "sends" a one-time code (and its link): printed on stderr.
    fn send_code(
        &mut self,
        user_id: String,
        ident: &Ident,
        kind: OtpKind,
        pkce: Option<Challenge>,
        redirect_to: Option<String>,
    ) {
        let code = self.rng.six_digits();
        let hash = hex(&Sha224::digest(format!("{}{code}", ident.shown())));
        let token_hash = if pkce.is_some() {
            format!("pkce_{hash}")
        } else {
            hash
        };
        let mut link = format!(
            "{}/auth/v1/verify?token={token_hash}&type={}",
            self.origin,
            kind.link_type()
        );
        if let Some(to) = &redirect_to {
            link = with_query(&link, "redirect_to", to);
        }
        let what = match kind {
            OtpKind::SignIn => "OTP",
            OtpKind::Recovery => "Recovery code",
        };
        eprintln!("dev_backend: {what} for {}: {code}", ident.shown());
        if let Ident::Email(_) = ident {
            eprintln!("dev_backend:   link: {link}");
        }
        self.otps.insert(
            ident.key(),
            Otp {
                user_id,
                code,
                token_hash,
                kind,
                expires_at: now_secs() + OTP_TTL,
                pkce,
                redirect_to,
            },
        );
    }

    /// Takes the code a `/verify` names, if it is valid for `verify_type`.
    fn take_otp(
        &mut self,
        key: Option<String>,
        code: Option<&str>,
        hash: Option<&str>,
        verify_type: &str,
    ) -> Option<Otp> {
        let key = match (key, hash) {
            (Some(key), None) => key,
            (None, Some(hash)) => self
                .otps
                .iter()
                .find(|(_, otp)| otp.token_hash == hash)
                .map(|(key, _)| key.clone())?,
            _ => return None,
        };
        let otp = self.otps.get(&key)?;
        let matches = code.is_none_or(|c| c == otp.code) && otp.kind.accepts(verify_type);
        if !matches {
            return None;
        }
        let otp = self.otps.remove(&key)?;
        (otp.expires_at > now_secs()).then_some(otp)
    }

    /// A PKCE flow for a user: its auth code.
    fn start_flow(
        &mut self,
        user_id: String,
        challenge: Challenge,
        method: &'static str,
    ) -> String {
        let code = self.rng.uuid();
        self.secrets.push(code.clone());
        self.flows.insert(
            code.clone(),
            Flow {
                user_id,
                challenge,
                method,
                created_at: now_secs(),
            },
        );
        code
    }

    /// `redirect_to#access_token=...` (the implicit flow).
    fn implicit_redirect(
        &mut self,
        user_id: &str,
        method: &'static str,
        target: &str,
        kind: &str,
    ) -> String {
        let session = self.sign_in(user_id, method);
        let part = |key: &str| match &session[key] {
            Value::String(s) => url_encode(s),
            other => other.to_string(),
        };
        format!(
            "{target}#access_token={}&expires_at={}&expires_in={}&refresh_token={}&token_type=bearer&type={kind}",
            part("access_token"),
            part("expires_at"),
            part("expires_in"),
            part("refresh_token"),
        )
    }
}

fn session_answer(session: Value) -> Response {
    Json(session).into_response()
}

fn done(answer: Answer) -> Response {
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// Logs each auth request (method, path and `grant_type` only: never a token or code).
async fn auth_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let grant = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find(|p| p.starts_with("grant_type=")))
        .map(|p| format!("?{p}"))
        .unwrap_or_default();
    let response = next.run(request).await;
    let code = response
        .headers()
        .get("x-sb-error-code")
        .and_then(|v| v.to_str().ok())
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    eprintln!(
        "dev_backend: {method} {path}{grant} -> {}{code}",
        response.status().as_u16()
    );
    response
}

async fn auth_signup(State(app): State<App>, body: Bytes) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let ident = ident_of(&body)?
            .ok_or_else(|| validation("To signup, please provide your email or phone"))?;
        let Some(password) = body.get("password").and_then(Value::as_str) else {
            return Err(auth_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Signup requires a valid password",
            ));
        };
        if password.chars().count() < 6 {
            return Err(weak_password());
        }
        let mut auth = app.auth();
        let user_id = match auth.find(&ident) {
            Some(user) if user.password.is_some() || user.confirmed_at.is_some() => {
                return Err(auth_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "user_already_exists",
                    "User already registered",
                ));
            }
            Some(user) => user.id.clone(),
            None => auth.create_user(&ident),
        };
        let user = auth.user_mut(&user_id).expect("just found or made");
        user.password = Some(password.to_string());
        if let Some(Value::Object(data)) = body.get("data") {
            user.user_metadata.extend(data.clone());
        }
        Ok(session_answer(auth.sign_in(&user_id, "password")))
    })())
}

async fn auth_token(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let mut auth = app.auth();
        match query.get("grant_type").map(String::as_str) {
            Some("password") => {
                let ident = ident_of(&body)?;
                let password = body.get("password").and_then(Value::as_str);
                let user = ident
                    .and_then(|ident| auth.find(&ident))
                    .filter(|u| u.password.is_some() && u.password.as_deref() == password);
                let Some(user_id) = user.map(|u| u.id.clone()) else {
                    return Err(auth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_credentials",
                        "Invalid login credentials",
                    ));
                };
                Ok(session_answer(auth.sign_in(&user_id, "password")))
            }
            Some("refresh_token") => {
                let Some(token) = text(&body, "refresh_token") else {
                    return Err(validation("refresh_token required"));
                };
                let Some(refresh) = auth.refresh_tokens.get_mut(token) else {
                    return Err(auth_error(
                        StatusCode::BAD_REQUEST,
                        "refresh_token_not_found",
                        "Invalid Refresh Token: Refresh Token Not Found",
                    ));
                };
                let session_id = refresh.session_id.clone();
                if refresh.used {
                    // Reuse detection: a spent refresh token ends its session.
                    auth.end_session(&session_id);
                    return Err(auth_error(
                        StatusCode::BAD_REQUEST,
                        "refresh_token_already_used",
                        "Invalid Refresh Token: Already Used",
                    ));
                }
                refresh.used = true;
                Ok(session_answer(auth.tokens(&session_id)))
            }
            Some("pkce") => {
                let (Some(code), Some(verifier)) =
                    (text(&body, "auth_code"), text(&body, "code_verifier"))
                else {
                    return Err(validation(
                        "invalid request: both auth code and code verifier should be non-empty",
                    ));
                };
                auth.secrets.push(verifier.to_string());
                let Some(flow) = auth.flows.get(code) else {
                    return Err(auth_error(
                        StatusCode::NOT_FOUND,
                        "flow_state_not_found",
                        "invalid flow state, no valid flow state found",
                    ));
                };
                if flow.created_at + FLOW_STATE_TTL <= now_secs() {
                    auth.flows.remove(code);
                    return Err(auth_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "flow_state_expired",
                        "invalid flow state, flow state has expired",
                    ));
                }
                if !flow.challenge.accepts(verifier) {
                    return Err(auth_error(
                        StatusCode::BAD_REQUEST,
                        "bad_code_verifier",
                        "code challenge does not match previously saved code verifier",
                    ));
                }
                let flow = auth.flows.remove(code).expect("just found");
                if auth.user(&flow.user_id).is_none() {
                    return Err(auth_error(
                        StatusCode::NOT_FOUND,
                        "user_not_found",
                        "User from flow state does not exist",
                    ));
                }
                Ok(session_answer(auth.sign_in(&flow.user_id, flow.method)))
            }
            _ => Err(validation("unsupported_grant_type")),
        }
    })())
}

async fn auth_otp(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let ident = ident_of(&body)?
            .ok_or_else(|| validation("An email address or phone number is required"))?;
        let pkce = match ident {
            Ident::Email(_) => challenge_of(
                text(&body, "code_challenge"),
                text(&body, "code_challenge_method"),
            )?,
            Ident::Phone(_) => None,
        };
        let create_user = body
            .get("create_user")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let mut auth = app.auth();
        let user_id = match auth.find(&ident) {
            Some(user) => user.id.clone(),
            None if create_user => auth.create_user(&ident),
            None => {
                return Err(auth_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "otp_disabled",
                    "Signups not allowed for otp",
                ));
            }
        };
        if let Some(Value::Object(data)) = body.get("data")
            && let Some(user) = auth.user_mut(&user_id)
            && user.confirmed_at.is_none()
        {
            user.user_metadata.extend(data.clone());
        }
        let redirect_to = query.get("redirect_to").cloned();
        auth.send_code(user_id, &ident, OtpKind::SignIn, pkce, redirect_to);
        Ok(Json(json!({})).into_response())
    })())
}

async fn auth_recover(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let Some(ident @ Ident::Email(_)) = ident_of(&body)? else {
            return Err(validation("Password recovery requires an email"));
        };
        let pkce = challenge_of(
            text(&body, "code_challenge"),
            text(&body, "code_challenge_method"),
        )?;
        let mut auth = app.auth();
        // As GoTrue: the same answer whether or not the user exists.
        if let Some(user_id) = auth.find(&ident).map(|u| u.id.clone()) {
            let redirect_to = query.get("redirect_to").cloned();
            auth.send_code(user_id, &ident, OtpKind::Recovery, pkce, redirect_to);
        }
        Ok(Json(json!({})).into_response())
    })())
}

async fn auth_verify(State(app): State<App>, body: Bytes) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let Some(verify_type) = text(&body, "type").filter(|t| VERIFY_TYPES.contains(t)) else {
            return Err(validation("Verify requires a verification type"));
        };
        let hash = text(&body, "token_hash");
        let ident = ident_of(&body)?;
        let token = text(&body, "token");
        if hash.is_none() && (ident.is_none() || token.is_none()) {
            return Err(validation("Verify requires either a token or a token hash"));
        }
        let mut auth = app.auth();
        let key = if hash.is_some() {
            None
        } else {
            ident.map(|i| i.key())
        };
        let otp = auth
            .take_otp(key, token, hash, verify_type)
            .ok_or_else(otp_expired)?;
        if auth.user(&otp.user_id).is_none() {
            return Err(otp_expired());
        }
        let method = match otp.kind {
            OtpKind::SignIn => "otp",
            OtpKind::Recovery => "recovery",
        };
        Ok(session_answer(auth.sign_in(&otp.user_id, method)))
    })())
}

/// The link in a code's "email": to `redirect_to` with a PKCE auth code, or the tokens.
async fn auth_verify_link(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut auth = app.auth();
    let verify_type = query.get("type").map(String::as_str).unwrap_or("magiclink");
    let otp = query
        .get("token")
        .and_then(|hash| auth.take_otp(None, None, Some(hash), verify_type));
    let origin = auth.origin.clone();
    let target = |otp_redirect: Option<&String>| {
        query
            .get("redirect_to")
            .or(otp_redirect)
            .cloned()
            .unwrap_or(origin.clone())
    };
    let Some(otp) = otp.filter(|otp| auth.user(&otp.user_id).is_some()) else {
        let location = format!(
            "{}#error=access_denied&error_code=otp_expired&error_description={}",
            target(None),
            url_encode("Email link is invalid or has expired")
        );
        return redirect(StatusCode::SEE_OTHER, &location);
    };
    let target = target(otp.redirect_to.as_ref());
    let method = match otp.kind {
        OtpKind::SignIn => "otp",
        OtpKind::Recovery => "recovery",
    };
    let location = match otp.pkce {
        Some(challenge) => {
            let code = auth.start_flow(otp.user_id, challenge, method);
            with_query(&target, "code", &code)
        }
        None => auth.implicit_redirect(&otp.user_id, method, &target, verify_type),
    };
    redirect(StatusCode::SEE_OTHER, &location)
}

/// OAuth: the provider's consent is skipped; the demo user comes back signed in.
async fn auth_authorize(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    done((|| {
        let provider = query.get("provider").map(String::as_str).unwrap_or("");
        if !PROVIDERS.contains(&provider) {
            return Err(validation(&format!(
                "Unsupported provider: Provider {provider} could not be found"
            )));
        }
        let challenge = challenge_of(
            query
                .get("code_challenge")
                .map(String::as_str)
                .filter(|c| !c.is_empty()),
            query.get("code_challenge_method").map(String::as_str),
        )?;
        let mut auth = app.auth();
        let target = query
            .get("redirect_to")
            .cloned()
            .unwrap_or_else(|| auth.origin.clone());
        let Some(user) = auth
            .users
            .iter_mut()
            .find(|u| u.email.as_deref() == Some(DEMO_EMAIL))
        else {
            return Err(auth_error(
                StatusCode::NOT_FOUND,
                "user_not_found",
                "the dev provider signs in demo@example.com, which is gone",
            ));
        };
        if !user.providers.iter().any(|p| p == provider) {
            user.providers.push(provider.to_string());
        }
        let user_id = user.id.clone();
        eprintln!("dev_backend: {provider} consent skipped (dev): signing in {DEMO_EMAIL}");
        let location = match challenge {
            Some(challenge) => {
                let code = auth.start_flow(user_id, challenge, "oauth");
                with_query(&target, "code", &code)
            }
            None => auth.implicit_redirect(&user_id, "oauth", &target, "signup"),
        };
        Ok(redirect(StatusCode::FOUND, &location))
    })())
}

async fn auth_get_user(State(app): State<App>, headers: HeaderMap) -> Response {
    let auth = app.auth();
    match auth.authenticate(&headers) {
        Ok((_, user_id)) => {
            Json(auth.user(&user_id).expect("authenticated").to_json()).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn auth_put_user(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    done((|| {
        let body = json_body(&body)?;
        let mut auth = app.auth();
        let (_, user_id) = auth.authenticate(&headers)?;
        let email = match text(&body, "email") {
            Some(email) => {
                let mut one = Map::new();
                one.insert("email".into(), json!(email));
                match ident_of(&one)? {
                    Some(Ident::Email(email)) => Some(email),
                    _ => None,
                }
            }
            None => None,
        };
        if let Some(email) = &email
            && auth
                .users
                .iter()
                .any(|u| u.id != user_id && u.email.as_ref() == Some(email))
        {
            return Err(auth_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "email_exists",
                "A user with this email address has already been registered",
            ));
        }
        let phone = match text(&body, "phone") {
            Some(phone) => {
                let mut one = Map::new();
                one.insert("phone".into(), json!(phone));
                match ident_of(&one)? {
                    Some(Ident::Phone(phone)) => Some(phone),
                    _ => None,
                }
            }
            None => None,
        };
        let password = body.get("password").and_then(Value::as_str);
        let user = auth.user_mut(&user_id).expect("authenticated");
        if let Some(password) = password {
            if password.chars().count() < 6 {
                return Err(weak_password());
            }
            if user.password.as_deref() == Some(password) {
                return Err(auth_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "same_password",
                    "New password should be different from the old password.",
                ));
            }
            user.password = Some(password.to_string());
        }
        if let Some(email) = email {
            user.email = Some(email);
        }
        if let Some(phone) = phone {
            user.phone = Some(phone);
        }
        if let Some(Value::Object(data)) = body.get("data") {
            for (key, value) in data {
                if value.is_null() {
                    user.user_metadata.remove(key);
                } else {
                    user.user_metadata.insert(key.clone(), value.clone());
                }
            }
        }
        user.updated_at = now_secs();
        Ok(Json(user.to_json()).into_response())
    })())
}

async fn auth_logout(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    done((|| {
        let scope = query.get("scope").map(String::as_str).unwrap_or("global");
        if !matches!(scope, "local" | "global" | "others") {
            return Err(validation(
                "Unsupported logout scope. Must be one of (global, local, others)",
            ));
        }
        let mut auth = app.auth();
        let (session_id, user_id) = auth.authenticate(&headers)?;
        let ended: Vec<String> = match scope {
            "local" => vec![session_id],
            _ => auth
                .sessions
                .iter()
                .filter(|(id, s)| s.user_id == user_id && (scope == "global" || **id != session_id))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for id in ended {
            auth.end_session(&id);
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    })())
}

/// `GET /dev/otp?email=` or `?phone=`: the code waiting for that address.
async fn dev_otp(
    State(app): State<App>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let body: Map<String, Value> = query
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let ident = match ident_of(&body) {
        Ok(Some(ident)) => ident,
        _ => return fail(StatusCode::BAD_REQUEST, "email or phone is required"),
    };
    let auth = app.auth();
    match auth
        .otps
        .get(&ident.key())
        .filter(|o| o.expires_at > now_secs())
    {
        Some(otp) => ok(json!({
            "code": otp.code,
            "type": match otp.kind {
                OtpKind::SignIn => if matches!(ident, Ident::Phone(_)) { "sms" } else { "email" },
                OtpKind::Recovery => "recovery",
            },
            "tokenHash": otp.token_hash,
            "expiresAt": otp.expires_at,
        })),
        None => fail(StatusCode::NOT_FOUND, "no code waiting for that address"),
    }
}

async fn dev_secrets(State(app): State<App>) -> Response {
    ok(json!({ "secrets": app.auth().secrets }))
}

/// `YYYY-MM-DDTHH:MM:SSZ` without a date crate (days-from-civil, inverted).
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn port_from_args() -> u16 {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--port" | "-p" => args.next(),
            other if other.starts_with("--port=") => Some(other["--port=".len()..].to_string()),
            "-h" | "--help" => {
                eprintln!("usage: dev_backend [--port N]   (0 = any free port)");
                std::process::exit(0);
            }
            other => Some(other.to_string()),
        };
        port = value.and_then(|v| v.parse().ok());
        if port.is_none() {
            eprintln!("dev_backend: expected a port number, got {arg}");
            std::process::exit(2);
        }
    }
    port.unwrap_or(0)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port_from_args()))).await?;
    let port = listener.local_addr()?.port();
    let app = App {
        inner: Arc::default(),
        auth: Arc::new(Mutex::new(Auth::new(port))),
        port,
    };

    let product = Router::new()
        .route("/agent-integrations/composio/toolkits", get(toolkits))
        .route("/agent-integrations/composio/connections", get(connections))
        .route(
            "/agent-integrations/composio/connections/{id}",
            delete(delete_connection),
        )
        .route("/agent-integrations/composio/authorize", post(authorize))
        .route("/agent-integrations/composio/tools", get(tools))
        .route("/agent-integrations/composio/execute", post(execute))
        .route(
            "/agent-integrations/composio/github/repos",
            get(github_repos),
        )
        .route(
            "/agent-integrations/composio/triggers/available",
            get(available_triggers),
        )
        .route(
            "/agent-integrations/composio/triggers",
            get(active_triggers).post(enable_trigger),
        )
        .route(
            "/agent-integrations/composio/triggers/{id}",
            delete(disable_trigger),
        )
        .route("/auth/me", get(me))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_auth));
    let dev = Router::new()
        .route("/dev/revoke", post(revoke))
        .route("/dev/reset", post(reset))
        .route("/dev/fail", post(inject_failure))
        .route("/dev/connect/{id}", get(connect))
        .route("/dev/otp", get(dev_otp))
        .route("/dev/secrets", get(dev_secrets));
    let auth = Router::new()
        .route("/auth/v1/signup", post(auth_signup))
        .route("/auth/v1/token", post(auth_token))
        .route("/auth/v1/otp", post(auth_otp))
        .route("/auth/v1/verify", post(auth_verify).get(auth_verify_link))
        .route("/auth/v1/authorize", get(auth_authorize))
        .route("/auth/v1/user", get(auth_get_user).put(auth_put_user))
        .route("/auth/v1/logout", post(auth_logout))
        .route("/auth/v1/recover", post(auth_recover))
        .route_layer(middleware::from_fn(auth_log));
    let router = product.merge(dev).merge(auth).with_state(app);

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {port}")?;
        out.flush()?;
    }
    eprintln!("dev_backend: listening on http://127.0.0.1:{port}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59Z"
        );
    }
}
