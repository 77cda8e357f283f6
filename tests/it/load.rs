//! 10,000 mixed requests with up to 256 in flight from the client side, against the shared
//! fake backend: pings, gated calls that succeed, gated calls the backend fails with 500,
//! and now and then a session whose token the backend rejects (401), after which the client
//! signs in again with a good one, as a shell does on SIGNED_OUT. None is lost, each id is
//! answered exactly once, every answer is one the contract allows, and memory returns near
//! idle afterwards.
//!
//! The client's window is the sidecar's in-flight bound (`CORE_SIDECAR_MAX_IN_FLIGHT`, 256):
//! a client that keeps to it is never refused (-32002 would fail the test), since a slot is
//! free before its response can be read. The sign-ins sent on SIGNED_OUT may take the client
//! past it: `auth_store_session` is a session method, admitted into the reserve past the bound.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT};

const TOTAL: u64 = 10_000;
/// The sidecar's default in-flight bound.
const WINDOW: u64 = 256;
/// Every this many requests the client stores a session the backend rejects.
const BAD_EVERY: u64 = 1_000;
/// JWT-shaped (`{"sub":"2"}`), and not the token the fake backend accepts.
const REJECTED_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyIn0.cmVqZWN0ZWQtc2lnbmF0dXJl";
const FAILING_PATH: &str = "/agent-integrations/composio/toolkits";

fn vm_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn request(id: u64) -> Value {
    let method = match id % 4 {
        0 => "core_ping",
        1 => "user_get_profile",
        2 => "composio_list_toolkits", // always 500
        _ => "composio_list_connections",
    };
    json!({"jsonrpc": "2.0", "id": id, "method": method})
}

fn store(id: String, token: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "auth_store_session",
           "params": {"access_token": token}})
}

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    backend_500: u64,
    unauthorized: u64,
    no_session: u64,
    signed_in: u64,
    signed_out: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_requests_none_lost_memory_back_near_idle() {
    let backend = FakeBackend::start(TEST_JWT).await;
    backend.set_canned_at(
        FAILING_PATH,
        Canned::reply(500, r#"{"success":false,"error":"upstream down"}"#),
    );
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("RUST_LOG", "warn"),
    ]);
    sidecar.secret(REJECTED_JWT);
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    sidecar.recv_notification("auth_state_changed").await;
    let idle_kb = vm_rss_kb(sidecar.pid());

    let started = Instant::now();
    let mut answered = HashSet::new();
    let mut stores_sent = HashSet::new();
    let mut stores_answered = HashSet::new();
    let mut tally = Tally::default();
    let (mut sent, mut in_flight, mut bad_stores, mut restores) = (0u64, 0u64, 0u64, 0u64);
    while (answered.len() as u64) < TOTAL || in_flight > 0 {
        while in_flight < WINDOW && sent < TOTAL {
            if sent % BAD_EVERY == BAD_EVERY / 2 && bad_stores < sent / BAD_EVERY + 1 {
                bad_stores += 1;
                let id = format!("bad-{bad_stores}");
                stores_sent.insert(id.clone());
                sidecar.send(store(id, REJECTED_JWT)).await;
                in_flight += 1;
                continue;
            }
            sidecar.send(request(sent)).await;
            sent += 1;
            in_flight += 1;
        }
        let line = sidecar.recv_line(TIMEOUT).await.unwrap_or_else(|| {
            panic!(
                "stalled with {in_flight} in flight, {} answered; stderr:\n{}",
                answered.len(),
                sidecar.stderr()
            )
        });
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line}"));
        if message["method"] == "auth_state_changed" {
            match message["params"]["event"].as_str() {
                Some("SIGNED_IN") => tally.signed_in += 1,
                Some("SIGNED_OUT") => {
                    assert_eq!(message["params"]["reason"], "expired", "{message}");
                    tally.signed_out += 1;
                    // Sign in again with a good token, as a shell would. (It goes out even
                    // when the window is full: a session method, admitted past the bound.)
                    restores += 1;
                    let id = format!("restore-{restores}");
                    stores_sent.insert(id.clone());
                    sidecar.send(store(id, TEST_JWT)).await;
                    in_flight += 1;
                }
                _ => panic!("unexpected notification: {message}"),
            }
            continue;
        }
        assert!(message.get("method").is_none(), "{message}");
        in_flight -= 1;
        if let Some(id) = message["id"].as_str() {
            assert!(stores_sent.contains(id), "unknown id: {message}");
            assert!(
                stores_answered.insert(id.to_string()),
                "{id} answered twice"
            );
            assert_eq!(message["result"]["isAuthenticated"], true, "{message}");
            continue;
        }
        let id = message["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("id: {message}"));
        assert!(id < sent, "an id never sent: {message}");
        assert!(answered.insert(id), "id {id} answered twice");
        if message.get("result").is_some() {
            tally.ok += 1;
            assert_ne!(id % 4, 2, "the failing route succeeded: {message}");
            continue;
        }
        let error = &message["error"];
        match (error["code"].as_i64(), error["data"]["reason"].as_str()) {
            (Some(-32003), _) => {
                assert_eq!(id % 4, 2, "{message}");
                assert_eq!(error["data"]["status"], 500, "{message}");
                tally.backend_500 += 1;
            }
            (Some(-32001), Some("unauthorized")) => tally.unauthorized += 1,
            (Some(-32001), Some("no_session")) => tally.no_session += 1,
            _ => panic!("an answer the contract does not allow here: {message}"),
        }
    }
    let took = started.elapsed();
    assert_eq!(answered.len() as u64, TOTAL, "none lost");
    assert_eq!(stores_answered, stores_sent, "every sign-in answered");
    eprintln!(
        "{TOTAL} requests + {} sign-ins in {took:?}: {tally:?}",
        stores_sent.len()
    );
    assert!(tally.ok > TOTAL / 4, "{tally:?}");
    assert!(tally.backend_500 > 0 && tally.unauthorized > 0, "{tally:?}");
    // Each SIGNED_OUT ended one rejected session; a rejected session replaced by a restore
    // before any call used it ends without one, so at most one each.
    assert!(
        tally.signed_out >= 1 && tally.signed_out <= bad_stores,
        "{tally:?}, {bad_stores} rejected sessions stored"
    );
    assert_eq!(
        tally.signed_in,
        bad_stores + restores,
        "one SIGNED_IN per store"
    );

    // Back to a good session (the last rejected one may still be stored), and still healthy.
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "user-1", "{profile}");
    for _ in 0..3 {
        sidecar.request("core_ping", Value::Null).await;
    }
    let after_kb = vm_rss_kb(sidecar.pid());
    eprintln!("VmRSS idle {idle_kb} kB, after {TOTAL} requests {after_kb} kB");
    assert!(
        after_kb < idle_kb + 20 * 1024,
        "memory back near idle: {idle_kb} kB -> {after_kb} kB"
    );
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    assert!(sidecar.stdout().ends_with('\n'), "no partial last line");
}
