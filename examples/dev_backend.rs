//! A development product backend for demos and manual testing: the routes the sidecar's
//! gated methods call, with state in memory, on 127.0.0.1 only.
//!
//! ```text
//! cargo run --example dev_backend -- --port 8787     # 0 (the default) = any free port
//! ```
//!
//! The first line on stdout is `LISTENING <port>`; request logs go to stderr.
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
//! - `GET  /auth/me` -> the user (read from the token's JWT payload when it is one)
//!
//! Dev routes (no auth; for scripts):
//!
//! - `POST /dev/revoke` revokes every token seen so far (their next call gets 401), or one
//!   token with body `{"token": "..."}`. A token never seen before is accepted afterwards, so
//!   a demo can sign in again with a new fake JWT.
//! - `POST /dev/reset` forgets revocations, connections, triggers and queued failures.
//! - `POST /dev/fail` `{"status": 500, "count"?: 1, "error"?: "...", "retryAfter"?: secs}`
//!   makes the next `count` product calls answer that status (e.g. 429, 500, 502).
//! - `GET  /dev/connect/{id}` is the `connectUrl`: opening it marks the connection ACTIVE.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

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
    port: u16,
}

impl App {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
    ok(json!({
        "id": id,
        "email": email,
        "name": "Dev User",
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
}

async fn revoke(State(app): State<App>, body: Option<Json<RevokeBody>>) -> Response {
    let mut inner = app.lock();
    let revoked = match body.and_then(|Json(b)| b.token) {
        Some(token) => {
            inner.revoked.insert(token);
            1
        }
        None => {
            let seen: Vec<String> = inner.seen.drain().collect();
            let n = seen.len();
            inner.revoked.extend(seen);
            n
        }
    };
    eprintln!("dev_backend: revoked {revoked} token(s)");
    ok(json!({ "revoked": revoked }))
}

async fn reset(State(app): State<App>) -> Response {
    *app.lock() = Inner::default();
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
        .route("/dev/connect/{id}", get(connect));
    let router = product.merge(dev).with_state(app);

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
