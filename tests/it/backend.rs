//! The gated domain methods against a fake backend (docs/protocol.md, "Methods" and
//! "Errors"): each method's happy path, and every backend answer mapped to its error code,
//! `data` and Sentry outcome.

use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::fake_sentry::FakeSentry;
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT};

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
