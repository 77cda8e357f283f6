//! Faults injected around the real binary: a backend that hangs, breaks off or floods, a
//! keyring that hangs or refuses, a parent that closes our stdout, stdin closed or SIGTERM
//! with requests in flight. The process must answer what it can, lose nothing it accepted,
//! and exit cleanly.

use std::collections::HashSet;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_backend::{Canned, FakeBackend};
use crate::harness::{BIN, Sidecar, TEST_JWT, TIMEOUT, clean_env};

const HOOKS: (&str, &str) = ("CORE_SIDECAR_TEST_HOOKS", "1");

async fn signed_in(env: &[(&str, &str)]) -> Sidecar {
    let mut sidecar = Sidecar::spawn(env);
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    sidecar
}

async fn exit_zero(mut sidecar: Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

fn vm_rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A backend that answers every request with these raw bytes, then closes the connection.
async fn raw_backend(response: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_hanging_backend_times_out_without_delaying_other_requests() {
    let backend = FakeBackend::start(TEST_JWT).await;
    backend.set_canned(Canned::Hang);
    let url = backend.url();
    let mut sidecar = signed_in(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("CORE_SIDECAR_HTTP_TIMEOUT_MS", "300"),
    ])
    .await;
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": "slow", "method": "user_get_profile"}))
        .await;
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": "ping", "method": "core_ping"}))
        .await;
    let first: Value = serde_json::from_str(&sidecar.recv_line(TIMEOUT).await.unwrap()).unwrap();
    assert_eq!(first["id"], "ping", "the ping is not held up: {first}");
    let slow = sidecar.recv_response(&json!("slow")).await;
    assert_eq!(slow["error"]["code"], -32004, "{slow}");
    assert_eq!(slow["error"]["data"]["retryable"], true);
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_backend_that_breaks_off_mid_body_is_an_error_not_a_crash() {
    let url = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"success\":true,\"da"
            .to_vec(),
    )
    .await;
    let mut sidecar = signed_in(&[("CORE_SIDECAR_BACKEND_URL", url.as_str())]).await;
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(response["error"]["code"], -32004, "{response}");
    let ping = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(ping["result"]["pong"], true);
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_ten_megabyte_response_is_refused_and_memory_stays_sane() {
    let mut body = br#"{"success":true,"data":{"blob":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    body.extend_from_slice(br#""}}"#);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend(body);
    let url = raw_backend(response).await;
    let mut sidecar = signed_in(&[("CORE_SIDECAR_BACKEND_URL", url.as_str())]).await;
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(response["error"]["code"], -32003, "{response}");
    assert_eq!(response["error"]["data"]["kind"], "backend");
    let rss = vm_rss_kb(sidecar.pid());
    assert!(rss < 100 * 1024, "VmRSS {rss} kB after a 10 MB answer");
    let ping = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(ping["result"]["pong"], true);
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_hanging_or_refusing_keyring_is_a_storage_error_and_nothing_changes() {
    for fault in ["hang", "fail"] {
        let mut sidecar = Sidecar::spawn(&[
            ("CORE_SIDECAR_KEYRING_FAULT", fault),
            ("CORE_SIDECAR_KEYRING_TIMEOUT_MS", "200"),
        ]);
        let stored = sidecar
            .request("auth_store_session", json!({"access_token": TEST_JWT}))
            .await;
        assert_eq!(stored["error"]["code"], -32005, "{fault}: {stored}");
        let state = sidecar.request("auth_get_state", Value::Null).await;
        assert_eq!(
            state["result"]["isAuthenticated"], false,
            "{fault}: {state}"
        );
        let ping = sidecar.request("core_ping", Value::Null).await;
        assert_eq!(ping["result"]["pong"], true);
        assert!(
            sidecar.notifications().is_empty(),
            "no SIGNED_IN for a session not stored"
        );
        exit_zero(sidecar).await;
    }
}

/// Total CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::test]
async fn a_closed_stdout_ends_the_process_cleanly_without_spinning() {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[]);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"core_ping\"}\n")
        .await
        .unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).await.unwrap();
    drop(stdout); // the parent stops listening
    let line = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"core_ping\"}\n".repeat(64);
    // The write that hits the closed pipe ends it; our own writes may fail once it is gone.
    for _ in 0..100 {
        if stdin.write_all(&line).await.is_err() {
            break;
        }
    }
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exits by itself")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // It exited: it did not spin. A zombie's stat is still readable until reaped; after
    // wait() it is gone, which is itself the proof. Keep the check where it is measurable.
    assert!(cpu_ticks(pid).is_none_or(|ticks| ticks < 100));
}

#[tokio::test]
async fn stdin_closed_with_a_hundred_requests_in_flight_answers_them_all() {
    let mut sidecar = Sidecar::spawn(&[HOOKS]);
    for id in 0..100 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": 200}}))
            .await;
    }
    sidecar.close_stdin();
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let line = sidecar.recv_line(TIMEOUT).await.expect("a response");
        let response: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(response["result"]["pong"], true, "{response}");
        assert!(
            seen.insert(response["id"].as_i64().unwrap()),
            "answered once"
        );
    }
    assert_eq!(seen.len(), 100);
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_under_load_answers_what_was_read_and_exits_zero() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let mut sidecar = signed_in(&[("CORE_SIDECAR_BACKEND_URL", url.as_str()), HOOKS]).await;
    // Ids from 1000: the harness numbers its own requests from 1.
    for id in 1000..1200 {
        let request = if id % 2 == 0 {
            json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": 300}})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": "composio_list_toolkits"})
        };
        sidecar.send(request).await;
    }
    // Once this ping is answered, all 200 were read.
    sidecar.request("core_ping", Value::Null).await;
    sidecar.kill_term();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    let mut ids = HashSet::new();
    for line in sidecar.stdout().lines() {
        let message: Value = serde_json::from_str(line).expect("only whole JSON lines");
        if let Some(id) = message["id"].as_i64() {
            assert!(ids.insert(id), "id {id} answered twice");
        }
    }
    let missing: Vec<i64> = (1000..1200).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "every request read was answered; missing {missing:?}"
    );
}
