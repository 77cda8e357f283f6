//! A fake product backend on 127.0.0.1:0: the composio and `/auth/me` routes with fixed
//! data (tools, an execute that echoes its arguments, a GitHub connection with two repos,
//! two available and two active triggers), every request recorded (query included), and a switch that makes every route answer a canned
//! response (or never answer) for the error-mapping tests.
#![allow(dead_code)] // shared helpers; not every test uses each one

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path as sent, percent-escapes kept.
    pub path: String,
    /// The query string as sent (escapes kept), without the `?`; `None` when there was none.
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// What every route answers while set.
#[derive(Debug, Clone)]
pub enum Canned {
    /// This status, these headers, this body.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers (the client's timeout has to end it).
    Hang,
}

impl Canned {
    pub fn reply(status: u16, body: impl Into<String>) -> Self {
        Canned::Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Canned::Reply { headers, .. } = &mut self {
            headers.push((name, value.to_string()));
        }
        self
    }
}

#[derive(Default)]
struct Shared {
    /// `Authorization` value the routes accept; others get 401.
    accepted: Mutex<String>,
    canned: Mutex<Option<Canned>>,
    /// Canned answers for one path only (checked after `canned`).
    canned_at: Mutex<Vec<(String, Canned)>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct FakeBackend {
    port: u16,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeBackend {
    /// Starts the fake; it accepts `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> FakeBackend {
        let shared = Arc::new(Shared::default());
        *shared.accepted.lock().unwrap() = format!("Bearer {token}");
        let app = Router::new().fallback(route).with_state(shared.clone());
        let (port, server) = crate::harness::serve_local(app).await;
        FakeBackend {
            port,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every route answers `canned` from now on.
    pub fn set_canned(&self, canned: Canned) {
        *self.shared.canned.lock().unwrap() = Some(canned);
    }

    /// Requests to `path` (exactly, query excluded) answer `canned` from now on; the other
    /// routes keep working.
    pub fn set_canned_at(&self, path: &str, canned: Canned) {
        let mut at = self.shared.canned_at.lock().unwrap();
        at.retain(|(p, _)| p != path);
        at.push((path.to_string(), canned));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"success": true, "data": data})).into_response()
}

fn failure(status: StatusCode, error: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "error": error})),
    )
        .into_response()
}

async fn route(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_string();
    shared.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        authorization: authorization.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });

    let canned = shared.canned.lock().unwrap().clone().or_else(|| {
        let at = shared.canned_at.lock().unwrap();
        at.iter().find(|(p, _)| *p == path).map(|(_, c)| c.clone())
    });
    match canned {
        Some(Canned::Hang) => return std::future::pending::<Response>().await,
        Some(Canned::Reply {
            status,
            headers,
            body,
        }) => {
            let mut response =
                (StatusCode::from_u16(status).expect("status"), body).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            return response;
        }
        None => {}
    }

    if authorization.as_deref() != Some(shared.accepted.lock().unwrap().as_str()) {
        return failure(StatusCode::UNAUTHORIZED, "invalid token");
    }
    const BASE: &str = "/agent-integrations/composio";
    match (method.as_str(), path.as_str()) {
        ("GET", p) if p == format!("{BASE}/toolkits") => ok(json!({
            // Strings and objects both occur; the sidecar normalizes to slugs.
            "toolkits": ["github", {"slug": "slack", "name": "Slack"}],
        })),
        ("GET", p) if p == format!("{BASE}/connections") => ok(json!({
            "connections": [
                {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2024-05-01T10:00:00Z"},
                {"id": "ca_2", "toolkit_slug": "slack", "status": "INITIATED", "created_at": "2024-05-02T10:00:00Z"},
            ],
        })),
        ("POST", p) if p == format!("{BASE}/authorize") => {
            let toolkit = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|b| b["toolkit"].as_str().map(str::to_owned));
            match toolkit {
                Some(toolkit) => ok(json!({
                    "connectUrl": format!("https://connect.example/{toolkit}"),
                    "connectionId": "ca_new",
                })),
                None => failure(StatusCode::BAD_REQUEST, "toolkit is required"),
            }
        }
        ("DELETE", p) if p.starts_with(&format!("{BASE}/connections/")) => {
            ok(json!({"deleted": true}))
        }
        ("GET", p) if p == format!("{BASE}/tools") => {
            // `toolkits=a,b` filters by the slug's prefix, as the backend does.
            let toolkits = query_param(&uri, "toolkits")
                .map(|t| t.split(',').map(str::to_uppercase).collect::<Vec<_>>());
            let tools: Vec<Value> = tools()
                .into_iter()
                .filter(|tool| {
                    let name = tool["function"]["name"].as_str().unwrap_or_default();
                    toolkits.as_ref().is_none_or(|toolkits| {
                        toolkits.iter().any(|t| name.starts_with(&format!("{t}_")))
                    })
                })
                .collect();
            ok(json!({"tools": tools}))
        }
        ("POST", p) if p == format!("{BASE}/execute") => {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            match (body["tool"].as_str(), body["arguments"].as_object()) {
                (Some(tool), Some(arguments)) => ok(json!({
                    "data": {"tool": tool, "arguments": arguments},
                    "successful": true,
                    "error": null,
                    "costUsd": 0.0025,
                    "markdownFormatted": format!("Ran `{tool}`."),
                })),
                _ => failure(StatusCode::BAD_REQUEST, "tool and arguments are required"),
            }
        }
        ("GET", p) if p == format!("{BASE}/github/repos") => ok(json!({
            "connectionId": query_param(&uri, "connectionId").unwrap_or_else(|| "ca_1".into()),
            "repositories": [
                {"owner": "acme", "repo": "app", "fullName": "acme/app", "private": true,
                 "defaultBranch": "main", "htmlUrl": "https://github.com/acme/app"},
                {"owner": "acme", "repo": "docs", "fullName": "acme/docs"},
            ],
        })),
        ("GET", p) if p == format!("{BASE}/triggers/available") => {
            match query_param(&uri, "toolkit").as_deref() {
                None => failure(StatusCode::BAD_REQUEST, "toolkit is required"),
                Some("github") => ok(json!({"triggers": [
                    {"slug": "GITHUB_PULL_REQUEST_EVENT", "scope": "repository",
                     "defaultConfig": {"owner": "acme", "repo": "app", "events": ["opened", "closed"]},
                     "requiredConfigKeys": ["owner", "repo"],
                     "repo": {"owner": "acme", "repo": "app"}},
                    {"slug": "GITHUB_STAR_ADDED_EVENT", "scope": "account"},
                ]})),
                Some(_) => ok(json!({"triggers": []})),
            }
        }
        ("GET", p) if p == format!("{BASE}/triggers") => {
            let toolkit = query_param(&uri, "toolkit");
            let triggers: Vec<Value> = active_triggers()
                .into_iter()
                .filter(|t| {
                    toolkit
                        .as_ref()
                        .is_none_or(|toolkit| t["toolkit"] == *toolkit)
                })
                .collect();
            ok(json!({"triggers": triggers}))
        }
        ("POST", p) if p == format!("{BASE}/triggers") => {
            let body: Value = serde_json::from_slice(&body).unwrap_or_default();
            match (body["connectionId"].as_str(), body["slug"].as_str()) {
                (Some(connection_id), Some(slug)) => ok(json!({
                    "triggerId": "ti_new",
                    "slug": slug,
                    "connectionId": connection_id,
                })),
                _ => failure(
                    StatusCode::BAD_REQUEST,
                    "connectionId and slug are required",
                ),
            }
        }
        ("DELETE", p) if p.starts_with(&format!("{BASE}/triggers/")) => {
            ok(json!({"deleted": true}))
        }
        ("GET", "/auth/me") => ok(json!({
            "id": "user-1",
            "email": "user@example.com",
            "user_metadata": {"name": "Test User"},
        })),
        _ => failure(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// A query parameter, decoded; `None` when absent.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The tools `GET /tools` lists: with and without the optional `description` and
/// `parameters`.
pub fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "GITHUB_CREATE_AN_ISSUE",
            "description": "Creates an issue in a GitHub repository.",
            "parameters": {
                "type": "object",
                "properties": {
                    "owner": {"type": "string"},
                    "repo": {"type": "string"},
                    "title": {"type": "string"},
                    "labels": {"type": "array", "items": {"type": "string"}, "default": []},
                },
                "required": ["owner", "repo", "title"],
            },
        }}),
        json!({"type": "function", "function": {"name": "GITHUB_GET_THE_AUTHENTICATED_USER"}}),
        json!({"type": "function", "function": {
            "name": "SLACK_SEND_MESSAGE",
            "description": "Posts a message to a Slack channel.",
            "parameters": {"type": "object", "properties": {"channel": {"type": "string"}, "text": {"type": "string"}}},
        }}),
    ]
}

/// The triggers `GET /triggers` lists: with and without the optional `triggerConfig` and
/// `state`.
pub fn active_triggers() -> Vec<Value> {
    vec![
        json!({"id": "ti_1", "slug": "GITHUB_PULL_REQUEST_EVENT", "toolkit": "github",
               "connectionId": "ca_1", "triggerConfig": {"owner": "acme", "repo": "app"},
               "state": "ACTIVE"}),
        json!({"id": "ti_2", "slug": "SLACK_RECEIVE_MESSAGE", "toolkit": "slack",
               "connectionId": "ca_2"}),
    ]
}

/// A backend that accepts connections and never answers them: every call to it hangs until
/// the client's timeout (or the client gives up). It reads what it is sent, only to see each
/// connection closed by the client. Counts the connections it accepted and those closed.
pub struct SilentBackend {
    port: u16,
    accepted: tokio::sync::watch::Receiver<usize>,
    closed: tokio::sync::watch::Receiver<usize>,
    server: tokio::task::JoinHandle<()>,
}

impl SilentBackend {
    pub async fn start() -> SilentBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let (accepted_tx, accepted) = tokio::sync::watch::channel(0);
        let (closed_tx, closed) = tokio::sync::watch::channel(0);
        let closed_tx = Arc::new(closed_tx);
        let server = tokio::spawn(async move {
            // Held, never answered, until the client closes it or the fake is dropped.
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted_tx.send_modify(|n| *n += 1);
                let closed_tx = closed_tx.clone();
                held.spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = [0u8; 4096];
                    while let Ok(1..) = socket.read(&mut buf).await {}
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        SilentBackend {
            port,
            accepted,
            closed,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits (at most the test timeout) until `n` connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        let mut accepted = self.accepted.clone();
        tokio::time::timeout(crate::harness::TIMEOUT, accepted.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} connections within the timeout"))
            .expect("the server runs");
    }

    /// Waits (at most the test timeout) until the client has closed `n` connections.
    pub async fn wait_for_closed(&self, n: usize) {
        let mut closed = self.closed.clone();
        tokio::time::timeout(crate::harness::TIMEOUT, closed.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} connections closed by the client within the timeout"))
            .expect("the server runs");
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}
