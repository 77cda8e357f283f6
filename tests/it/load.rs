//! 10,000 mixed requests with up to 256 in flight: pings, gated calls that succeed, fail
//! with 500, and now and then a 401 that ends the session (the client signs in again, as a
//! shell would on SIGNED_OUT). None is lost, each id is answered once, and memory returns
//! near idle afterwards.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::harness::{Sidecar, TEST_JWT, TIMEOUT};

const TOTAL: u64 = 10_000;
const WINDOW: u64 = 256;

async fn mixed_backend() -> String {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/auth/me",
            get(|| async { axum::Json(json!({"success": true, "data": {"id": "u"}})) }),
        )
        .route(
            "/agent-integrations/composio/toolkits",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "{}") }),
        )
        .route(
            "/agent-integrations/composio/connections",
            get(move || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n % 200 == 199 {
                        return (StatusCode::UNAUTHORIZED, "{}").into_response();
                    }
                    axum::Json(json!({"success": true, "data": {"connections": []}}))
                        .into_response()
                }
            }),
        );
    let (port, _server) = crate::harness::serve_local(app).await;
    let url = format!("http://127.0.0.1:{port}");
    url
}

fn vm_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn request(id: u64) -> Value {
    let method = match id % 4 {
        0 => "core_ping",
        1 => "user_get_profile",
        2 => "composio_list_toolkits",
        _ => "composio_list_connections",
    };
    json!({"jsonrpc": "2.0", "id": id, "method": method})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_requests_none_lost_memory_back_near_idle() {
    let url = mixed_backend().await;
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("RUST_LOG", "warn"),
    ]);
    let sign_in = json!({"access_token": TEST_JWT});
    sidecar.request("auth_store_session", sign_in.clone()).await;
    let idle_kb = vm_rss_kb(sidecar.pid());

    let mut answered = HashSet::new();
    let (mut sent, mut in_flight, mut restores) = (0u64, 0u64, 0u64);
    let (mut ok, mut failed) = (0u64, 0u64);
    while (answered.len() as u64) < TOTAL {
        while in_flight < WINDOW && sent < TOTAL {
            sidecar.send(request(sent)).await;
            sent += 1;
            in_flight += 1;
        }
        let line = sidecar
            .recv_line(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("stalled with {in_flight} in flight"));
        let message: Value = serde_json::from_str(&line).expect("whole JSON lines");
        if message["method"] == "auth_state_changed" {
            if message["params"]["event"] == "SIGNED_OUT" {
                restores += 1;
                let mut again = json!({"jsonrpc": "2.0", "id": format!("restore-{restores}"),
                                       "method": "auth_store_session"});
                again["params"] = sign_in.clone();
                sidecar.send(again).await;
                in_flight += 1;
            }
            continue;
        }
        in_flight -= 1;
        if message["id"].is_string() {
            continue; // a restore's answer
        }
        let id = message["id"].as_u64().expect("numeric id");
        assert!(answered.insert(id), "id {id} answered twice");
        if message.get("result").is_some() {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    assert_eq!(answered.len() as u64, TOTAL, "none lost");
    assert!(
        restores > 0 && ok > 0 && failed > 0,
        "ok {ok}, failed {failed}, restores {restores}"
    );

    sidecar.request("core_ping", Value::Null).await;
    // Let the allocator settle: a few idle pings, then read.
    for _ in 0..3 {
        sidecar.request("core_ping", Value::Null).await;
        tokio::task::yield_now().await;
    }
    let after_kb = vm_rss_kb(sidecar.pid());
    eprintln!("VmRSS idle {idle_kb} kB, after 10k requests {after_kb} kB");
    assert!(
        after_kb < idle_kb + 20 * 1024,
        "memory back near idle: {idle_kb} kB -> {after_kb} kB"
    );
    sidecar.close_stdin();
    assert_eq!(sidecar.wait_exit(TIMEOUT).await.code(), Some(0));
}
