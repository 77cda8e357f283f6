//! The gated domain methods against a fake backend (docs/protocol.md, "Methods" and
//! "Errors"): each method's happy path, and every backend answer mapped to its error code,
//! `data` and Sentry outcome. The Composio tools, execute, GitHub repos and triggers methods:
//! the request the backend receives (method, path, query, body, bearer) and the result, a
//! provider's 401 inside `composio_execute` never taken for the session's, and which backend
//! answers are retried (only a 401, once, after a refresh).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend, Recorded, active_triggers, tools};
use crate::fake_sentry::FakeSentry;
use crate::harness::{Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT};
use crate::schema::assert_valid_result;

async fn sign_in(sidecar: &mut Sidecar) {
    let response = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(
        response["result"]["isAuthenticated"],
        true,
        "{response}\nstderr:\n{}",
        sidecar.stderr()
    );
}

async fn is_authenticated(sidecar: &mut Sidecar) -> bool {
    let state = sidecar.request("auth_get_state", Value::Null).await;
    state["result"]["isAuthenticated"]
        .as_bool()
        .unwrap_or_else(|| panic!("auth_get_state: {state}"))
}

/// Closes stdin and waits for a clean exit, which flushes Sentry.
async fn shut_down(sidecar: &mut Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

fn result(response: &Value) -> &Value {
    response
        .get("result")
        .unwrap_or_else(|| panic!("expected a result: {response}"))
}

#[tokio::test]
async fn every_method_works_against_the_backend() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;

    let response = sidecar.request("composio_list_toolkits", json!({})).await;
    assert_eq!(result(&response), &json!({"toolkits": ["github", "slack"]}));

    let response = sidecar
        .request("composio_list_connections", Value::Null)
        .await;
    assert_eq!(
        result(&response),
        &json!({"connections": [
            {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2024-05-01T10:00:00Z"},
            {"id": "ca_2", "toolkit": "slack", "status": "INITIATED", "createdAt": "2024-05-02T10:00:00Z"},
        ]})
    );

    let response = sidecar
        .request("composio_authorize", json!({"toolkit": "github"}))
        .await;
    assert_eq!(
        result(&response),
        &json!({"connectUrl": "https://connect.example/github", "connectionId": "ca_new"})
    );

    let response = sidecar
        .request(
            "composio_delete_connection",
            json!({"connectionId": "ca/1 x?"}),
        )
        .await;
    assert_eq!(result(&response), &json!({"deleted": true}));

    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(
        result(&response),
        &json!({"id": "user-1", "email": "user@example.com", "user_metadata": {"name": "Test User"}})
    );

    // What the backend saw: the token as a bearer on every call, the right routes, the
    // authorize body, and the connection id escaped as one path segment.
    let requests = backend.requests();
    let seen: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let expected = [
        ("GET", "/agent-integrations/composio/toolkits"),
        ("GET", "/agent-integrations/composio/connections"),
        ("POST", "/agent-integrations/composio/authorize"),
        (
            "DELETE",
            "/agent-integrations/composio/connections/ca%2F1%20x%3F",
        ),
        ("GET", "/auth/me"),
    ];
    assert_eq!(
        seen,
        expected
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect::<Vec<_>>()
    );
    let bearer = format!("Bearer {TEST_JWT}");
    for request in &requests {
        assert_eq!(request.authorization.as_deref(), Some(bearer.as_str()));
    }
    assert_eq!(
        serde_json::from_str::<Value>(&requests[2].body).unwrap(),
        json!({"toolkit": "github"})
    );

    // Still signed in: nothing above expired the session.
    assert!(is_authenticated(&mut sidecar).await);
    shut_down(&mut sidecar).await;
}

#[tokio::test]
async fn bad_params_are_refused_before_the_backend() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;
    let rows = [
        ("composio_authorize", json!({"toolkit": ""}), "toolkit"),
        ("composio_authorize", json!({"toolkit": "  "}), "toolkit"),
        ("composio_authorize", json!({}), "toolkit"),
        (
            "composio_authorize",
            json!({"toolkit": "github", "extra": 1}),
            "extra",
        ),
        (
            "composio_delete_connection",
            json!({"connectionId": ""}),
            "connectionId",
        ),
        (
            "composio_delete_connection",
            json!({"connectionId": ".."}),
            "connectionId",
        ),
        (
            "composio_delete_connection",
            json!({"connectionId": 5}),
            "connectionId",
        ),
        ("composio_list_toolkits", json!({"x": 1}), "x"),
        ("user_get_profile", json!({"x": 1}), "x"),
        ("composio_list_tools", json!({"toolkits": []}), "toolkits"),
        ("composio_list_tools", json!({"toolkits": [""]}), "toolkits"),
        (
            "composio_list_tools",
            json!({"toolkits": ["a,b"]}),
            "toolkits",
        ),
        (
            "composio_list_tools",
            json!({"toolkits": "github"}),
            "toolkits",
        ),
        ("composio_execute", json!({"arguments": {}}), "tool"),
        (
            "composio_execute",
            json!({"tool": " ", "arguments": {}}),
            "tool",
        ),
        ("composio_execute", json!({"tool": "GITHUB_X"}), "arguments"),
        (
            "composio_execute",
            json!({"tool": "GITHUB_X", "arguments": [1]}),
            "arguments",
        ),
        (
            "composio_execute",
            json!({"tool": "GITHUB_X", "arguments": {"k": "x".repeat(64 * 1024)}}),
            "arguments",
        ),
        (
            "composio_list_github_repos",
            json!({"connectionId": " "}),
            "connectionId",
        ),
        ("composio_list_available_triggers", json!({}), "toolkit"),
        (
            "composio_list_available_triggers",
            json!({"toolkit": "github", "connectionId": ""}),
            "connectionId",
        ),
        (
            "composio_list_active_triggers",
            json!({"toolkit": ""}),
            "toolkit",
        ),
        (
            "composio_enable_trigger",
            json!({"connectionId": "ca_1"}),
            "slug",
        ),
        (
            "composio_enable_trigger",
            json!({"slug": "GITHUB_PULL_REQUEST_EVENT"}),
            "connectionId",
        ),
        (
            "composio_enable_trigger",
            json!({"connectionId": "ca_1", "slug": "S", "triggerConfig": "x"}),
            "triggerConfig",
        ),
        (
            "composio_enable_trigger",
            json!({"connectionId": "ca_1", "slug": "S", "triggerConfig": {"k": "x".repeat(64 * 1024)}}),
            "triggerConfig",
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": "ti/1"}),
            "triggerId",
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": "/"}),
            "triggerId",
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": ".."}),
            "triggerId",
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": ""}),
            "triggerId",
        ),
        ("composio_disable_trigger", json!({}), "triggerId"),
    ];
    for (method, params, field) in rows {
        let response = sidecar.request(method, params.clone()).await;
        let error = &response["error"];
        assert_eq!(error["code"], -32602, "{method} {params}: {response}");
        assert_eq!(
            error["data"]["field"], field,
            "{method} {params}: {response}"
        );
    }
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
    assert!(is_authenticated(&mut sidecar).await);
    shut_down(&mut sidecar).await;
}

/// Where the sidecar's backend URL points for a row.
enum Setup {
    /// The fake backend, answering this on every route.
    Fake(Canned),
    /// A port nobody listens on.
    Refused,
    /// No `CORE_SIDECAR_BACKEND_URL` at all.
    NoUrl,
}

struct Row {
    name: &'static str,
    method: &'static str,
    params: Value,
    setup: Setup,
    env: &'static [(&'static str, &'static str)],
    code: i64,
    /// The whole `error.data`.
    data: Value,
    /// A piece of `error.message`.
    message: &'static str,
    /// Sentry events sent by the time the sidecar has exited.
    sentry_events: usize,
    /// Whether the session survives the call.
    still_signed_in: bool,
}

fn rows() -> Vec<Row> {
    let no_params = || Value::Null;
    vec![
        Row {
            name: "401 is auth-expired and signs out",
            method: "composio_list_toolkits",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(
                401,
                r#"{"success":false,"error":"jwt expired"}"#,
            )),
            env: &[],
            code: -32001,
            data: json!({"kind": "auth_expired", "retryable": false, "reason": "unauthorized"}),
            message: "the backend rejected the session token (401)",
            sentry_events: 0,
            still_signed_in: false,
        },
        Row {
            name: "429 with Retry-After is rate-limited",
            method: "composio_list_connections",
            params: no_params(),
            setup: Setup::Fake(
                Canned::reply(429, r#"{"success":false,"error":"slow down"}"#)
                    .header("retry-after", "7"),
            ),
            env: &[],
            code: -32002,
            data: json!({"kind": "rate_limited", "retryable": true, "status": 429, "retryAfterMs": 7000}),
            message: "rate limited",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "404 is a backend error, not reported",
            method: "composio_delete_connection",
            params: json!({"connectionId": "ca_missing"}),
            setup: Setup::Fake(Canned::reply(
                404,
                r#"{"success":false,"error":"connection not found"}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 404}),
            message: "connection not found",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "500 is a reported backend error",
            method: "user_get_profile",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(500, r#"{"success":false,"error":"boom"}"#)),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": true, "status": 500}),
            message: "backend returned 500",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "502 mentioning an upstream 401 stays a backend error",
            method: "composio_authorize",
            params: json!({"toolkit": "github"}),
            setup: Setup::Fake(Canned::reply(
                502,
                r#"{"success":false,"error":"upstream provider returned 401"}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": true, "status": 502}),
            message: "upstream provider returned 401",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "success:false on 200 is a backend error, not reported",
            method: "composio_list_toolkits",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(
                200,
                r#"{"success":false,"error":"composio is not enabled for this workspace"}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 200}),
            message: "composio is not enabled",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "malformed JSON is a reported backend error",
            method: "composio_list_toolkits",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(200, r#"{"success":true,"data":"#)),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 200}),
            message: "malformed backend response",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "missing data is a reported backend error",
            method: "composio_list_connections",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(200, r#"{"success":true}"#)),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false}),
            message: "malformed backend response",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "a refused port is unavailable",
            method: "composio_list_toolkits",
            params: no_params(),
            setup: Setup::Refused,
            env: &[],
            code: -32004,
            data: json!({"kind": "unavailable", "retryable": true}),
            message: "backend unreachable",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "a hanging backend times out as unavailable",
            method: "user_get_profile",
            params: no_params(),
            setup: Setup::Fake(Canned::Hang),
            env: &[("CORE_SIDECAR_HTTP_TIMEOUT_MS", "200")],
            code: -32004,
            data: json!({"kind": "unavailable", "retryable": true}),
            message: "no answer within 200 ms",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "no backend URL is unavailable, naming the variable",
            method: "composio_list_toolkits",
            params: no_params(),
            setup: Setup::NoUrl,
            env: &[],
            code: -32004,
            data: json!({"kind": "unavailable", "retryable": true}),
            message: "CORE_SIDECAR_BACKEND_URL",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "execute: a backend 5xx wrapping a provider 401 stays a backend error",
            method: "composio_execute",
            params: json!({"tool": "GITHUB_CREATE_AN_ISSUE", "arguments": {}}),
            setup: Setup::Fake(Canned::reply(
                502,
                r#"{"success":false,"error":"composio: GitHub returned 401 Unauthorized"}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": true, "status": 502}),
            message: "GitHub returned 401",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "execute: a malformed result is a reported backend error",
            method: "composio_execute",
            params: json!({"tool": "GITHUB_CREATE_AN_ISSUE", "arguments": {}}),
            setup: Setup::Fake(Canned::reply(
                200,
                r#"{"success":true,"data":{"data":{},"successful":"yes","costUsd":0}}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 200}),
            message: "unexpected shape at successful",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "a tool without a name is a reported backend error",
            method: "composio_list_tools",
            params: no_params(),
            setup: Setup::Fake(Canned::reply(
                200,
                r#"{"success":true,"data":{"tools":[{"type":"function","function":{"name":" "}}]}}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 200}),
            message: "unexpected shape at tools[0].function.name",
            sentry_events: 1,
            still_signed_in: true,
        },
        Row {
            name: "disable_trigger: 404 is a backend error, not reported",
            method: "composio_disable_trigger",
            params: json!({"triggerId": "ti_missing"}),
            setup: Setup::Fake(Canned::reply(
                404,
                r#"{"success":false,"error":"trigger not found"}"#,
            )),
            env: &[],
            code: -32003,
            data: json!({"kind": "backend", "retryable": false, "status": 404}),
            message: "trigger not found",
            sentry_events: 0,
            still_signed_in: true,
        },
        Row {
            name: "enable_trigger: 401 without a refresh token is auth-expired and signs out",
            method: "composio_enable_trigger",
            params: json!({"connectionId": "ca_1", "slug": "GITHUB_PULL_REQUEST_EVENT"}),
            setup: Setup::Fake(Canned::reply(
                401,
                r#"{"success":false,"error":"jwt expired"}"#,
            )),
            env: &[],
            code: -32001,
            data: json!({"kind": "auth_expired", "retryable": false, "reason": "unauthorized"}),
            message: "the backend rejected the session token (401)",
            sentry_events: 0,
            still_signed_in: false,
        },
    ]
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
    // dropped here: nothing listens on the port any more
}

#[tokio::test]
async fn backend_answers_map_to_errors_and_sentry() {
    for row in rows() {
        let name = row.name;
        let sentry = FakeSentry::start().await;
        let dsn = sentry.dsn();
        let backend = FakeBackend::start(TEST_JWT).await;
        let url = match &row.setup {
            Setup::Fake(canned) => {
                backend.set_canned(canned.clone());
                Some(backend.url())
            }
            Setup::Refused => Some(format!("http://127.0.0.1:{}", closed_port())),
            Setup::NoUrl => None,
        };
        let mut env: Vec<(&str, &str)> = vec![("SENTRY_DSN", &dsn)];
        if let Some(url) = &url {
            env.push(("CORE_SIDECAR_BACKEND_URL", url));
        }
        env.extend_from_slice(row.env);
        let mut sidecar = Sidecar::spawn(&env);
        sign_in(&mut sidecar).await;

        let response = sidecar.request(row.method, row.params.clone()).await;
        let error = &response["error"];
        assert_eq!(error["code"], row.code, "{name}: {response}");
        assert_eq!(error["data"], row.data, "{name}: {response}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(row.message),
            "{name}: message {message:?} lacks {:?}",
            row.message
        );

        assert_eq!(
            is_authenticated(&mut sidecar).await,
            row.still_signed_in,
            "{name}"
        );
        let signed_out: Vec<&Value> = sidecar
            .notifications()
            .iter()
            .filter(|n| n["params"]["event"] == "SIGNED_OUT")
            .collect();
        if row.still_signed_in {
            assert!(signed_out.is_empty(), "{name}: {signed_out:?}");
        } else {
            assert_eq!(signed_out.len(), 1, "{name}: {signed_out:?}");
            assert_eq!(signed_out[0]["params"]["reason"], "expired", "{name}");
        }

        shut_down(&mut sidecar).await;
        let envelopes = sentry.envelopes();
        assert_eq!(
            envelopes.len(),
            row.sentry_events,
            "{name}: Sentry envelopes {envelopes:?}"
        );
        for envelope in &envelopes {
            assert!(
                !envelope.contains(TEST_JWT) && !envelope.contains("eyJhbGci"),
                "{name}: Sentry envelope leaks the token: {envelope}"
            );
        }
        if let Setup::Fake(Canned::Reply { .. }) = row.setup {
            let requests = backend.requests();
            assert_eq!(
                requests.len(),
                1,
                "{name}: one call, no retry: {requests:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_same_backend_fault_is_reported_once() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let backend = FakeBackend::start(TEST_JWT).await;
    backend.set_canned(Canned::reply(503, r#"{"success":false,"error":"down"}"#));
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", &dsn), ("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;
    // A shell polling every few seconds must not flood Sentry.
    for _ in 0..5 {
        let response = sidecar
            .request("composio_list_connections", Value::Null)
            .await;
        assert_eq!(response["error"]["data"]["status"], 503, "{response}");
    }
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes().len(), 1, "{:?}", sentry.envelopes());
}

#[tokio::test]
async fn bad_params_are_invalid_params_even_without_a_session() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", &url)]);
    for (method, params, field) in [
        ("composio_authorize", json!({"toolkit": ""}), "toolkit"),
        (
            "composio_delete_connection",
            json!({"connectionId": "."}),
            "connectionId",
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": "a/b"}),
            "triggerId",
        ),
        ("composio_execute", json!({"arguments": {}}), "tool"),
    ] {
        let response = sidecar.request(method, params).await;
        assert_eq!(response["error"]["code"], -32602, "{response}");
        assert_eq!(response["error"]["data"]["field"], field, "{response}");
    }
    // Good params without a session: the gate answers auth-expired, no backend call.
    let response = sidecar
        .request("composio_authorize", json!({"toolkit": "github"}))
        .await;
    assert_eq!(response["error"]["code"], -32001, "{response}");
    assert_eq!(response["error"]["data"]["reason"], "no_session");
    assert!(backend.requests().is_empty());
    shut_down(&mut sidecar).await;
}

/// A request as the backend should see it: (HTTP method, path, query, JSON body or null).
type Expected = (&'static str, String, Option<&'static str>, Value);

/// A call: (method, params, expected result, the request the backend should see).
type Call = (&'static str, Value, Value, Expected);

/// The request the backend saw, as (method, path, query, JSON body or null).
fn seen(request: &Recorded) -> (String, String, Option<String>, Value) {
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&request.body).expect("a JSON body")
    };
    (
        request.method.clone(),
        request.path.clone(),
        request.query.clone(),
        body,
    )
}

#[tokio::test]
async fn tools_execute_repos_and_triggers_work_against_the_backend() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;
    let all_tools = tools();
    let github_tools = &all_tools[..2];
    let issue =
        json!({"owner": "acme", "repo": "app", "title": "Crash", "labels": ["bug"], "n": 1.5});
    let pr_config = json!({"owner": "acme", "repo": "app", "events": ["opened"]});

    const BASE: &str = "/agent-integrations/composio";
    // (method, params, expected result, (HTTP method, path, query, body) the backend sees)
    let calls: Vec<Call> = vec![
        (
            "composio_list_tools",
            Value::Null,
            json!({"tools": all_tools}),
            ("GET", format!("{BASE}/tools"), None, Value::Null),
        ),
        (
            "composio_list_tools",
            json!({"toolkits": ["github", " a b&c=d "]}),
            json!({"tools": github_tools}),
            (
                "GET",
                format!("{BASE}/tools"),
                Some("toolkits=github,a%20b%26c%3Dd"),
                Value::Null,
            ),
        ),
        (
            "composio_execute",
            json!({"tool": "GITHUB_CREATE_AN_ISSUE", "arguments": issue}),
            json!({
                "data": {"tool": "GITHUB_CREATE_AN_ISSUE", "arguments": issue},
                "successful": true,
                "costUsd": 0.0025,
                "markdownFormatted": "Ran `GITHUB_CREATE_AN_ISSUE`.",
            }),
            (
                "POST",
                format!("{BASE}/execute"),
                None,
                json!({"tool": "GITHUB_CREATE_AN_ISSUE", "arguments": issue}),
            ),
        ),
        (
            "composio_execute",
            json!({"tool": "GITHUB_GET_THE_AUTHENTICATED_USER", "arguments": {}}),
            json!({
                "data": {"tool": "GITHUB_GET_THE_AUTHENTICATED_USER", "arguments": {}},
                "successful": true,
                "costUsd": 0.0025,
                "markdownFormatted": "Ran `GITHUB_GET_THE_AUTHENTICATED_USER`.",
            }),
            (
                "POST",
                format!("{BASE}/execute"),
                None,
                json!({"tool": "GITHUB_GET_THE_AUTHENTICATED_USER", "arguments": {}}),
            ),
        ),
        (
            "composio_list_github_repos",
            json!({}),
            json!({"connectionId": "ca_1", "repositories": [
                {"owner": "acme", "repo": "app", "fullName": "acme/app", "private": true,
                 "defaultBranch": "main", "htmlUrl": "https://github.com/acme/app"},
                {"owner": "acme", "repo": "docs", "fullName": "acme/docs"},
            ]}),
            ("GET", format!("{BASE}/github/repos"), None, Value::Null),
        ),
        (
            "composio_list_github_repos",
            json!({"connectionId": "ca 2/?"}),
            json!({"connectionId": "ca 2/?", "repositories": [
                {"owner": "acme", "repo": "app", "fullName": "acme/app", "private": true,
                 "defaultBranch": "main", "htmlUrl": "https://github.com/acme/app"},
                {"owner": "acme", "repo": "docs", "fullName": "acme/docs"},
            ]}),
            (
                "GET",
                format!("{BASE}/github/repos"),
                Some("connectionId=ca%202%2F%3F"),
                Value::Null,
            ),
        ),
        (
            "composio_list_available_triggers",
            json!({"toolkit": "github"}),
            json!({"triggers": [
                {"slug": "GITHUB_PULL_REQUEST_EVENT", "scope": "repository",
                 "defaultConfig": {"owner": "acme", "repo": "app", "events": ["opened", "closed"]},
                 "requiredConfigKeys": ["owner", "repo"],
                 "repo": {"owner": "acme", "repo": "app"}},
                {"slug": "GITHUB_STAR_ADDED_EVENT", "scope": "account"},
            ]}),
            (
                "GET",
                format!("{BASE}/triggers/available"),
                Some("toolkit=github"),
                Value::Null,
            ),
        ),
        (
            "composio_list_available_triggers",
            json!({"toolkit": "slack", "connectionId": "ca_2"}),
            json!({"triggers": []}),
            (
                "GET",
                format!("{BASE}/triggers/available"),
                Some("toolkit=slack&connectionId=ca_2"),
                Value::Null,
            ),
        ),
        (
            "composio_list_active_triggers",
            Value::Null,
            json!({"triggers": active_triggers()}),
            ("GET", format!("{BASE}/triggers"), None, Value::Null),
        ),
        (
            "composio_list_active_triggers",
            json!({"toolkit": "slack"}),
            json!({"triggers": [active_triggers()[1]]}),
            (
                "GET",
                format!("{BASE}/triggers"),
                Some("toolkit=slack"),
                Value::Null,
            ),
        ),
        (
            "composio_enable_trigger",
            json!({"connectionId": "ca_1", "slug": "GITHUB_STAR_ADDED_EVENT"}),
            json!({"triggerId": "ti_new", "slug": "GITHUB_STAR_ADDED_EVENT", "connectionId": "ca_1"}),
            (
                "POST",
                format!("{BASE}/triggers"),
                None,
                json!({"connectionId": "ca_1", "slug": "GITHUB_STAR_ADDED_EVENT"}),
            ),
        ),
        (
            "composio_enable_trigger",
            json!({"connectionId": "ca_1", "slug": "GITHUB_PULL_REQUEST_EVENT", "triggerConfig": pr_config}),
            json!({"triggerId": "ti_new", "slug": "GITHUB_PULL_REQUEST_EVENT", "connectionId": "ca_1"}),
            (
                "POST",
                format!("{BASE}/triggers"),
                None,
                json!({"connectionId": "ca_1", "slug": "GITHUB_PULL_REQUEST_EVENT", "triggerConfig": pr_config}),
            ),
        ),
        (
            "composio_disable_trigger",
            json!({"triggerId": "ti 1?#%"}),
            json!({"deleted": true}),
            (
                "DELETE",
                format!("{BASE}/triggers/ti%201%3F%23%25"),
                None,
                Value::Null,
            ),
        ),
    ];

    for (method, params, expected, _) in &calls {
        let response = sidecar.request(method, params.clone()).await;
        let got = result(&response);
        assert_eq!(got, expected, "{method} {params}");
        assert_valid_result(method, got);
    }

    let requests = backend.requests();
    assert_eq!(
        requests.len(),
        calls.len(),
        "one request per call: {requests:?}"
    );
    let bearer = format!("Bearer {TEST_JWT}");
    for (request, (method, params, _, (verb, path, query, body))) in requests.iter().zip(&calls) {
        assert_eq!(
            seen(request),
            (
                verb.to_string(),
                path.clone(),
                query.map(str::to_string),
                body.clone()
            ),
            "{method} {params}"
        );
        assert_eq!(request.authorization.as_deref(), Some(bearer.as_str()));
    }
    assert!(is_authenticated(&mut sidecar).await);
    shut_down(&mut sidecar).await;
}

#[tokio::test]
async fn a_provider_401_inside_execute_is_never_the_sessions() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", &dsn), ("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;
    let params = json!({"tool": "GITHUB_GET_THE_AUTHENTICATED_USER", "arguments": {}});
    let execute = "/agent-integrations/composio/execute";

    // 1. The provider refused its own credentials; the backend ran the tool and says so.
    backend.set_canned_at(
        execute,
        Canned::reply(
            200,
            r#"{"success":true,"data":{"data":{"message":"Bad credentials","status":401},"successful":false,"error":"GitHub API returned 401 Unauthorized: Bad credentials","costUsd":0}}"#,
        ),
    );
    let response = sidecar.request("composio_execute", params.clone()).await;
    assert_eq!(
        result(&response),
        &json!({
            "data": {"message": "Bad credentials", "status": 401},
            "successful": false,
            "error": "GitHub API returned 401 Unauthorized: Bad credentials",
            "costUsd": 0.0,
        })
    );
    assert_valid_result("composio_execute", result(&response));

    // 2. The backend failed the call, wrapping the provider's 401 (or 403): a backend error.
    for (status, body, retryable) in [
        (
            502,
            r#"{"success":false,"error":"composio: provider returned 401 Unauthorized"}"#,
            true,
        ),
        (
            500,
            r#"{"success":false,"error":"upstream 403 Forbidden from GitHub"}"#,
            true,
        ),
        (
            200,
            r#"{"success":false,"error":"provider returned 401"}"#,
            false,
        ),
        (
            403,
            r#"{"success":false,"error":"provider returned 403"}"#,
            false,
        ),
    ] {
        backend.set_canned_at(execute, Canned::reply(status, body));
        let response = sidecar.request("composio_execute", params.clone()).await;
        let error = &response["error"];
        assert_eq!(error["code"], -32003, "{status}: {response}");
        assert_eq!(
            error["data"],
            json!({"kind": "backend", "retryable": retryable, "status": status}),
            "{status}: {response}"
        );
    }

    // The session stays; nothing signed out; each call went out once.
    assert!(is_authenticated(&mut sidecar).await);
    let signed_out = sidecar
        .notifications()
        .iter()
        .filter(|n| n["params"]["event"] == "SIGNED_OUT")
        .count();
    assert_eq!(signed_out, 0, "{:?}", sidecar.notifications());
    let requests = backend.requests();
    assert_eq!(requests.len(), 5, "no retry: {requests:?}");
    assert!(requests.iter().all(|r| r.path == execute));
    shut_down(&mut sidecar).await;
    // The two 5xx are one fingerprint each (502, 500); nothing is auth-expired.
    let envelopes = sentry.envelopes();
    assert_eq!(envelopes.len(), 2, "{envelopes:?}");
    for envelope in &envelopes {
        assert!(!envelope.contains("auth_expired"), "{envelope}");
    }
}

/// A GoTrue `/token` that always issues [`REFRESHED_JWT`], counting its calls.
struct FakeAuth {
    port: u16,
    refreshes: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

const REFRESHED_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIiwibiI6Mn0.cmVmcmVzaGVkLWNvbXBvc2lv";
const REFRESHED_REFRESH_TOKEN: &str = "rt-composio-refreshed-0123456789";

impl FakeAuth {
    async fn start() -> FakeAuth {
        let refreshes = Arc::new(AtomicUsize::new(0));
        let count = refreshes.clone();
        let app = Router::new().route(
            "/token",
            post(move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({
                        "access_token": REFRESHED_JWT,
                        "token_type": "bearer",
                        "expires_in": 3600,
                        "refresh_token": REFRESHED_REFRESH_TOKEN,
                        "user": {"id": "user-1"},
                    }))
                    .into_response()
                }
            }),
        );
        let (port, server) = crate::harness::serve_local(app).await;
        FakeAuth {
            port,
            refreshes,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAuth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A backend that accepts only the refreshed token, a GoTrue that issues it, and a sidecar
/// signed in with a token the backend refuses (401) but a refresh token that works.
async fn stale_session(env: &[(&'static str, &'static str)]) -> (FakeBackend, FakeAuth, Sidecar) {
    let backend = FakeBackend::start(REFRESHED_JWT).await;
    let auth = FakeAuth::start().await;
    let (backend_url, auth_url) = (backend.url(), auth.url());
    let mut all = vec![
        ("CORE_SIDECAR_BACKEND_URL", backend_url.as_str()),
        ("CORE_SIDECAR_AUTH_URL", auth_url.as_str()),
    ];
    all.extend_from_slice(env);
    let mut sidecar = Sidecar::spawn(&all);
    sidecar
        .secret(REFRESHED_JWT)
        .secret(REFRESHED_REFRESH_TOKEN);
    let response = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": TEST_JWT, "refresh_token": TEST_REFRESH_TOKEN, "expires_in": 3600}),
        )
        .await;
    assert_eq!(response["result"]["isAuthenticated"], true, "{response}");
    (backend, auth, sidecar)
}

fn events(sidecar: &Sidecar) -> Vec<String> {
    sidecar
        .notifications()
        .iter()
        .filter_map(|n| n["params"]["event"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_backend_401_on_list_active_triggers_refreshes_once_and_retries() {
    let (backend, auth, mut sidecar) = stale_session(&[]).await;
    let response = sidecar
        .request(
            "composio_list_active_triggers",
            json!({"toolkit": "github"}),
        )
        .await;
    assert_eq!(
        result(&response),
        &json!({"triggers": [active_triggers()[0]]})
    );

    assert_eq!(auth.refreshes(), 1, "one refresh");
    let requests = backend.requests();
    assert_eq!(requests.len(), 2, "the call and one retry: {requests:?}");
    for request in &requests {
        assert_eq!(
            (
                request.method.as_str(),
                request.path.as_str(),
                request.query.as_deref()
            ),
            (
                "GET",
                "/agent-integrations/composio/triggers",
                Some("toolkit=github")
            )
        );
    }
    let bearers: Vec<Option<String>> = requests.iter().map(|r| r.authorization.clone()).collect();
    assert_eq!(
        bearers,
        [
            Some(format!("Bearer {TEST_JWT}")),
            Some(format!("Bearer {REFRESHED_JWT}"))
        ]
    );
    assert!(is_authenticated(&mut sidecar).await);
    assert_eq!(events(&sidecar), ["SIGNED_IN", "TOKEN_REFRESHED"]);
    shut_down(&mut sidecar).await;
}

#[tokio::test]
async fn execute_is_retried_only_after_a_backend_401() {
    let (backend, auth, mut sidecar) =
        stale_session(&[("CORE_SIDECAR_HTTP_TIMEOUT_MS", "1000")]).await;
    let execute = "/agent-integrations/composio/execute";
    let params =
        json!({"tool": "SLACK_SEND_MESSAGE", "arguments": {"channel": "C1", "text": "hi"}});

    // The backend refused the stale token before running anything: one refresh, one retry
    // with the same body.
    let response = sidecar.request("composio_execute", params.clone()).await;
    assert_eq!(result(&response)["successful"], true, "{response}");
    assert_eq!(auth.refreshes(), 1);
    let requests = backend.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(seen(&requests[0]), seen(&requests[1]));
    assert_eq!(
        seen(&requests[0]).3,
        json!({"tool": "SLACK_SEND_MESSAGE", "arguments": {"channel": "C1", "text": "hi"}})
    );

    // Anything else may have run the action: sent once, never retried.
    for (canned, code) in [
        (
            Canned::reply(500, r#"{"success":false,"error":"boom"}"#),
            -32003,
        ),
        (Canned::reply(503, "<html>unavailable</html>"), -32003),
        (
            Canned::reply(429, r#"{"success":false,"error":"slow down"}"#)
                .header("retry-after", "1"),
            -32002,
        ),
        (Canned::Hang, -32004),
    ] {
        let before = backend.requests().len();
        backend.set_canned_at(execute, canned.clone());
        let response = sidecar.request("composio_execute", params.clone()).await;
        assert_eq!(response["error"]["code"], code, "{canned:?}: {response}");
        assert_eq!(backend.requests().len(), before + 1, "{canned:?}: no retry");
    }
    assert_eq!(auth.refreshes(), 1, "no other refresh");
    assert!(is_authenticated(&mut sidecar).await);
    assert_eq!(events(&sidecar), ["SIGNED_IN", "TOKEN_REFRESHED"]);
    shut_down(&mut sidecar).await;
}

#[tokio::test]
async fn a_malformed_answer_is_reported_once() {
    let sentry = FakeSentry::start().await;
    let dsn = sentry.dsn();
    let backend = FakeBackend::start(TEST_JWT).await;
    backend.set_canned(Canned::reply(
        200,
        r#"{"success":true,"data":{"triggers":[{"id":"ti_1","slug":"S","toolkit":"github"}]}}"#,
    ));
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("SENTRY_DSN", &dsn), ("CORE_SIDECAR_BACKEND_URL", &url)]);
    sign_in(&mut sidecar).await;
    for _ in 0..3 {
        let response = sidecar
            .request("composio_list_active_triggers", Value::Null)
            .await;
        assert_eq!(response["error"]["code"], -32003, "{response}");
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("triggers[0]"), "{message}");
    }
    shut_down(&mut sidecar).await;
    assert_eq!(sentry.envelopes().len(), 1, "{:?}", sentry.envelopes());
}
