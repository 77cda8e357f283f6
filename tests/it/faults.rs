//! Faults injected around the real binary: a backend that hangs, breaks off or floods, a
//! keyring that hangs or refuses, a parent that closes our stdout, stdin closed or SIGTERM
//! with requests in flight. The process must answer what it can, lose nothing it accepted,
//! and exit cleanly.
//!
//! Every wait is on an event (a response, a notification, the process's exit) under a
//! timeout; nothing sleeps and hopes.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake_backend::{Canned, FakeBackend};
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT, bin, clean_env};

const HOOKS: (&str, &str) = ("CORE_SIDECAR_TEST_HOOKS", "1");

async fn signed_in(env: &[(&str, &str)]) -> Sidecar {
    let mut sidecar = Sidecar::spawn(env);
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    // SIGNED_IN is written before the response: take it, so later reads see only what the
    // test sends.
    let signed_in = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(signed_in["params"]["event"], "SIGNED_IN", "{signed_in}");
    sidecar
}

/// The process still answers, and the session is still there (a transport fault is not a
/// reason to sign anybody out).
async fn alive_and_signed_in(sidecar: &mut Sidecar) {
    let ping = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(ping["result"]["pong"], true, "{ping}");
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
    assert!(
        sidecar.notifications().is_empty(),
        "no auth_state_changed: {:?}",
        sidecar.notifications()
    );
}

async fn exit_zero(mut sidecar: Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...).
fn proc_status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Every stdout line is one whole JSON value, and the output ends with a newline (no line
/// was cut off). Returns the ids of the responses, each seen once.
fn whole_lines_once_each(stdout: &str) -> HashSet<i64> {
    assert!(
        stdout.is_empty() || stdout.ends_with('\n'),
        "stdout ends in a partial line: {:?}",
        &stdout[stdout.len().saturating_sub(200)..]
    );
    let mut ids = HashSet::new();
    for line in stdout.lines() {
        let message: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line}"));
        if message.get("method").is_none() {
            let id = message["id"].as_i64().expect("numeric id");
            assert!(ids.insert(id), "id {id} answered twice");
        }
    }
    ids
}

/// A backend that answers every connection with `head`, then `body` in pieces, then closes
/// the connection (whatever `head` declared). Write errors (the client gave up) end the
/// connection quietly.
async fn raw_backend(head: impl Into<String>, body: Vec<u8>) -> String {
    let head = std::sync::Arc::new(head.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (head, body) = (head.clone(), body.clone());
            tokio::spawn(async move {
                // The sidecar's requests are small GETs: one read holds the whole head.
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for piece in body.chunks(64 * 1024) {
                    if socket.write_all(piece).await.is_err() {
                        return;
                    }
                }
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
    assert_eq!(slow["error"]["data"]["kind"], "unavailable", "{slow}");
    assert_eq!(slow["error"]["data"]["retryable"], true, "{slow}");
    assert!(
        slow["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms"),
        "the message says it timed out: {slow}"
    );
    // The request did reach the backend: the timeout ended a hang, not a refused connection.
    assert_eq!(backend.requests().len(), 1, "{:?}", backend.requests());
    alive_and_signed_in(&mut sidecar).await;
    exit_zero(sidecar).await;
}

/// Decision (from `src/backend`): a body cut off before its declared `Content-Length` is a
/// transport failure, `unavailable` (-32004, retryable), like any answer that never arrived
/// whole; it is not `backend` (that is for complete answers the backend got wrong).
#[tokio::test]
async fn a_backend_that_breaks_off_mid_body_is_unavailable_not_a_crash() {
    let url = raw_backend(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        br#"{"success":true,"data":{"id":"user-1","em"#.to_vec(),
    )
    .await;
    let mut sidecar = signed_in(&[("CORE_SIDECAR_BACKEND_URL", url.as_str())]).await;
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(response["error"]["code"], -32004, "{response}");
    assert_eq!(
        response["error"]["data"]["kind"], "unavailable",
        "{response}"
    );
    assert_eq!(response["error"]["data"]["retryable"], true, "{response}");
    alive_and_signed_in(&mut sidecar).await;
    exit_zero(sidecar).await;
}

/// A 10 MB JSON answer, over the backend client's 8 MiB cap: `backend` (-32003), malformed.
fn ten_megabyte_envelope() -> Vec<u8> {
    let mut body = br#"{"success":true,"data":{"id":"user-1","blob":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    body.extend_from_slice(br#""}}"#);
    body
}

async fn assert_refused_and_memory_sane(url: &str) {
    let mut sidecar = signed_in(&[("CORE_SIDECAR_BACKEND_URL", url)]).await;
    let response = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(response["error"]["code"], -32003, "{response}");
    assert_eq!(response["error"]["data"]["kind"], "backend", "{response}");
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over"),
        "the message says the body was too large: {response}"
    );
    alive_and_signed_in(&mut sidecar).await;
    let rss = proc_status_kb(sidecar.pid(), "VmRSS");
    let peak = proc_status_kb(sidecar.pid(), "VmHWM");
    eprintln!("after a 10 MB answer: VmRSS {rss} kB, peak VmHWM {peak} kB");
    assert!(rss < 100 * 1024, "VmRSS {rss} kB after a 10 MB answer");
    assert!(peak < 100 * 1024, "VmHWM {peak} kB during a 10 MB answer");
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_ten_megabyte_response_with_its_length_declared_is_refused() {
    let body = ten_megabyte_envelope();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let url = raw_backend(head, body).await;
    assert_refused_and_memory_sane(&url).await;
}

/// Without a `Content-Length` the client has to stop reading at the cap itself.
#[tokio::test]
async fn a_ten_megabyte_chunked_response_is_refused_at_the_cap() {
    let mut body = Vec::new();
    for piece in ten_megabyte_envelope().chunks(256 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let url = raw_backend(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        body,
    )
    .await;
    assert_refused_and_memory_sane(&url).await;
}

/// `CORE_SIDECAR_KEYRING_FAULT` faults the operations of whichever backend is chosen,
/// `memory` included (see `src/session/store.rs`), so this runs on the harness's `memory`.
/// The fault is there from the start, so "nothing lost" means: the state stays as it was
/// (signed out) and no SIGNED_IN is announced for a session that was never stored.
#[tokio::test]
async fn a_hanging_or_refusing_keyring_is_a_storage_error_and_nothing_changes() {
    for fault in ["hang", "fail"] {
        let mut sidecar = Sidecar::spawn(&[
            ("CORE_SIDECAR_KEYRING_FAULT", fault),
            ("CORE_SIDECAR_KEYRING_TIMEOUT_MS", "200"),
            ("CORE_SIDECAR_BACKEND_URL", "http://127.0.0.1:9"),
        ]);
        let stored = sidecar
            .request("auth_store_session", json!({"access_token": TEST_JWT}))
            .await;
        assert_eq!(stored["error"]["code"], -32005, "{fault}: {stored}");
        assert_eq!(
            stored["error"]["data"]["kind"], "storage",
            "{fault}: {stored}"
        );
        assert_eq!(
            stored["error"]["data"]["retryable"], true,
            "{fault}: {stored}"
        );
        if fault == "hang" {
            assert!(
                stored["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("timed out"),
                "{stored}"
            );
        }
        let state = sidecar.request("auth_get_state", Value::Null).await;
        assert_eq!(
            state["result"]["isAuthenticated"], false,
            "{fault}: {state}"
        );
        // The gate did not pick up the session that failed to persist.
        let gated = sidecar.request("user_get_profile", Value::Null).await;
        assert_eq!(gated["error"]["code"], -32001, "{fault}: {gated}");
        assert_eq!(gated["error"]["data"]["reason"], "no_session", "{gated}");
        let ping = sidecar.request("core_ping", Value::Null).await;
        assert_eq!(ping["result"]["pong"], true);
        assert!(
            sidecar.notifications().is_empty(),
            "{fault}: no SIGNED_IN for a session not stored: {:?}",
            sidecar.notifications()
        );
        exit_zero(sidecar).await;
    }
}

/// `utime + stime` of a process, in clock ticks (USER_HZ, 100 per second on Linux), and
/// its state letter.
fn cpu_ticks_and_state(pid: u32) -> (u64, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let state = fields[0].chars().next().expect("state");
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (ticks, state)
}

#[tokio::test]
async fn a_closed_stdout_ends_the_process_cleanly_without_spinning() {
    let mut cmd = tokio::process::Command::new(bin());
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
    let lines = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"core_ping\"}\n".repeat(64);
    // Keep sending: the first answer that hits the closed pipe ends the process, after
    // which our own writes fail (EPIPE), which ends the loop.
    for _ in 0..1000 {
        if stdin.write_all(&lines).await.is_err() {
            break;
        }
    }
    // The event is the exit: wait for it without reaping (WNOWAIT), so the zombie's CPU
    // times can still be read, then reap.
    let exited = tokio::task::spawn_blocking(move || {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        )
    });
    tokio::time::timeout(TIMEOUT, exited)
        .await
        .expect("the sidecar exits by itself once its stdout is closed")
        .unwrap()
        .expect("waitid");
    let (ticks, state) = cpu_ticks_and_state(pid);
    assert_eq!(state, 'Z', "exited, not yet reaped");
    eprintln!("CPU time until exit after stdout closed: {ticks} ticks");
    assert!(ticks < 100, "{ticks} ticks (>= 1 s) of CPU: it spun");
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn stdin_closed_with_a_hundred_requests_in_flight_answers_them_all() {
    let mut sidecar = Sidecar::spawn(&[HOOKS]);
    let mut batch = String::new();
    for id in 0..100 {
        batch.push_str(
            &json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": 200}})
                .to_string(),
        );
        batch.push('\n');
    }
    // All 100 lines and the EOF right behind them: every request is read while the first
    // ones sleep.
    sidecar.send_bytes(batch.as_bytes()).await;
    sidecar.close_stdin();
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let line = sidecar.recv_line(TIMEOUT).await.expect("a response");
        let response: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(response["result"]["pong"], true, "{response}");
        assert!(
            seen.insert(response["id"].as_i64().unwrap()),
            "answered once: {response}"
        );
    }
    assert_eq!(seen.len(), 100);
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    assert_eq!(whole_lines_once_each(&sidecar.stdout()).len(), 100);
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
    let stdout = sidecar.stdout();
    let ids = whole_lines_once_each(&stdout);
    let missing: Vec<i64> = (1000..1200).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "every request read was answered; missing {missing:?}"
    );
    // In-flight work was allowed to finish, not cut short with errors.
    for line in stdout.lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        if message["id"].as_i64().is_some_and(|id| id >= 1000) {
            assert!(message.get("result").is_some(), "{message}");
        }
    }
}

/// The other half of the shutdown rule: requests that cannot finish within the shutdown
/// timeout are left unanswered, and the process still exits 0, on time, with whole lines.
#[tokio::test]
async fn sigterm_with_requests_that_never_finish_exits_zero_within_the_shutdown_timeout() {
    let backend = FakeBackend::start(TEST_JWT).await;
    backend.set_canned(Canned::Hang);
    let url = backend.url();
    let mut sidecar = signed_in(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS", "1000"),
        HOOKS,
    ])
    .await;
    for id in 1000..1100 {
        let request = if id % 2 == 0 {
            json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": 50}})
        } else {
            json!({"jsonrpc": "2.0", "id": id, "method": "user_get_profile"})
        };
        sidecar.send(request).await;
    }
    sidecar.request("core_ping", Value::Null).await;
    let started = Instant::now();
    sidecar.kill_term();
    let status = sidecar.wait_exit(TIMEOUT).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    eprintln!("exit {took:?} after SIGTERM with hanging requests (shutdown timeout 1 s)");
    assert!(
        took < Duration::from_secs(5),
        "bounded by the shutdown timeout: {took:?}"
    );
    let ids = whole_lines_once_each(&sidecar.stdout());
    let sleeps_missing: Vec<i64> = (1000..1100)
        .filter(|id| id % 2 == 0 && !ids.contains(id))
        .collect();
    assert!(
        sleeps_missing.is_empty(),
        "short requests finish: {sleeps_missing:?}"
    );
    let hung_answered: Vec<i64> = (1000..1100)
        .filter(|id| id % 2 == 1 && ids.contains(id))
        .collect();
    assert!(
        hung_answered.is_empty(),
        "hanging calls (30 s HTTP timeout) cannot have been answered: {hung_answered:?}"
    );
}
