//! docs/protocol.md, "Concurrency and backpressure" and "Shutdown", through the real binary:
//! a slow upstream never delays what needs none, requests past the in-flight bound (batch
//! members counted one each) are refused at once, and the process exits on time even when
//! the shell stops reading its stdout or closes it.
//!
//! Every wait is on an event (a response, the exit, the stdout pipe found full) under a
//! timeout. The 50 ms figures are the issue's acceptance bound on a round trip (send to
//! receipt), generous for what takes well under a millisecond.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::fake_backend::SilentBackend;
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT, bin, clean_env};

/// `CORE_SIDECAR_MAX_IN_FLIGHT`'s default.
const BOUND: usize = 256;
/// The acceptance bound on a local call's round trip while every slot hangs.
const LOCAL_ROUND_TRIP: Duration = Duration::from_millis(50);
/// How long a call to the silent backend hangs before it is `unavailable`.
const HTTP_TIMEOUT_MS: &str = "1000";

async fn signed_in(env: &[(&str, &str)]) -> Sidecar {
    let mut sidecar = Sidecar::spawn(env);
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    let signed_in = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(signed_in["params"]["event"], "SIGNED_IN", "{signed_in}");
    sidecar
}

fn gated(id: impl Into<Value>) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": "composio_list_toolkits"})
}

/// The documented answer past the bound: -32002 `rate_limited`, retryable, no HTTP status.
fn assert_refused(answer: &Value) {
    assert_eq!(answer["error"]["code"], -32002, "{answer}");
    assert_eq!(answer["error"]["data"]["kind"], "rate_limited", "{answer}");
    assert_eq!(answer["error"]["data"]["retryable"], true, "{answer}");
    assert!(
        answer["error"]["data"].get("status").is_none(),
        "no status: the sidecar refused it itself: {answer}"
    );
}

fn assert_unavailable(answer: &Value) {
    assert_eq!(answer["error"]["code"], -32004, "{answer}");
    assert_eq!(answer["error"]["data"]["kind"], "unavailable", "{answer}");
}

/// Sends a local call and returns its response and round trip.
async fn timed(sidecar: &mut Sidecar, method: &str, params: Value) -> (Value, Duration) {
    let started = Instant::now();
    let response = sidecar.request(method, params).await;
    (response, started.elapsed())
}

fn assert_quick(method: &str, took: Duration) {
    eprintln!("{method} round trip with every slot hanging: {took:?}");
    assert!(
        took < LOCAL_ROUND_TRIP,
        "{method} took {took:?} while the gated calls hang"
    );
}

#[tokio::test]
async fn with_every_slot_hanging_on_a_silent_backend_local_calls_are_answered_at_once() {
    const CALLS: usize = 300;
    let backend = SilentBackend::start().await;
    let url = backend.url();
    let mut sidecar = signed_in(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("CORE_SIDECAR_HTTP_TIMEOUT_MS", HTTP_TIMEOUT_MS),
    ])
    .await;
    let mut burst = String::new();
    for id in 0..CALLS {
        burst.push_str(&gated(format!("g{id}")).to_string());
        burst.push('\n');
    }
    sidecar.send_bytes(burst.as_bytes()).await;

    // The first 256 take the slots and hang; the 44 past the bound are refused at once,
    // before they start, in the order they were read.
    for id in BOUND..CALLS {
        let answer = sidecar.recv_json().await;
        assert_eq!(answer["id"], format!("g{id}"), "{answer}");
        assert_refused(&answer);
    }

    // Every slot hangs on the silent backend now. What needs no upstream is answered at once.
    for _ in 0..3 {
        let (pong, took) = timed(&mut sidecar, "core_ping", Value::Null).await;
        assert_eq!(pong["result"]["pong"], true, "{pong}");
        assert_quick("core_ping", took);
        let (state, took) = timed(&mut sidecar, "auth_get_state", Value::Null).await;
        assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
        assert_quick("auth_get_state", took);
    }
    // No auth server: sign-out is local (a keyring call, from the reserve of slots).
    let (out, took) = timed(&mut sidecar, "auth_sign_out", json!({"scope": "local"})).await;
    assert_eq!(out["result"]["removed"], true, "{out}");
    assert_quick("auth_sign_out", took);
    let (stored, took) = timed(
        &mut sidecar,
        "auth_store_session",
        json!({"access_token": TEST_JWT}),
    )
    .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    assert_quick("auth_store_session", took);

    // The hanging calls end with the HTTP timeout (64 at a time to one upstream), each
    // answered once, none refused: admitted work is never dropped.
    for id in 0..BOUND {
        let answer =
            tokio::time::timeout(TIMEOUT * 3, sidecar.recv_response(&json!(format!("g{id}"))))
                .await
                .expect("every admitted call is answered");
        assert_unavailable(&answer);
    }
    let connections = backend.connections();
    eprintln!("{CALLS} gated calls: {connections} backend connections");
    assert!(
        (1..=BOUND).contains(&connections),
        "at most the bound reached the backend: {connections}"
    );
    // The slots are free again: a new gated call is admitted (and hangs until its timeout).
    sidecar.send(gated("after")).await;
    let after = tokio::time::timeout(TIMEOUT, sidecar.recv_response(&json!("after")))
        .await
        .expect("answered");
    assert_unavailable(&after);

    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

#[tokio::test]
async fn a_two_thousand_member_batch_gets_at_most_the_bound_pending_and_one_ordered_answer() {
    const MEMBERS: usize = 2_000;
    let backend = SilentBackend::start().await;
    let url = backend.url();
    let mut sidecar = signed_in(&[
        ("CORE_SIDECAR_BACKEND_URL", url.as_str()),
        ("CORE_SIDECAR_HTTP_TIMEOUT_MS", HTTP_TIMEOUT_MS),
    ])
    .await;
    let batch: Vec<Value> = (0..MEMBERS).map(|id| gated(10_000 + id)).collect();
    sidecar.send(Value::Array(batch)).await;

    // Once this ping is answered the reader has admitted or refused every member; the next
    // one measures a round trip while the admitted members hang.
    sidecar.request("core_ping", Value::Null).await;
    let (pong, took) = timed(&mut sidecar, "core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
    assert_quick("core_ping", took);

    // One line, once every admitted member has ended (its HTTP timeout, 64 at a time).
    let line = sidecar
        .recv_line(TIMEOUT * 3)
        .await
        .expect("the batch answer");
    let answers: Vec<Value> = serde_json::from_str(&line).expect("one JSON array line");
    assert_eq!(answers.len(), MEMBERS);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer["id"], 10_000 + i, "member order");
        if i < BOUND {
            assert_unavailable(answer);
        } else {
            assert_refused(answer);
        }
    }
    let connections = backend.connections();
    eprintln!("a {MEMBERS}-member batch: {connections} backend connections");
    assert!(
        (1..=BOUND).contains(&connections),
        "at most the bound reached the backend: {connections}"
    );

    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

/// A sidecar whose stdout the test holds but does not read.
struct Unread {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
}

fn spawn_unread(env: &[(&str, &str)]) -> Unread {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    clean_env(&mut cmd, env);
    let mut child = cmd.spawn().expect("spawn core-sidecar");
    Unread {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        child,
    }
}

/// Bytes waiting in the stdout pipe, and the pipe's capacity.
fn pipe_fill(stdout: &ChildStdout) -> (usize, usize) {
    let fd = stdout.as_raw_fd();
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer; F_GETPIPE_SZ takes no argument.
    let (read, size) = unsafe {
        (
            nix::libc::ioctl(fd, nix::libc::FIONREAD, &mut queued),
            nix::libc::fcntl(fd, nix::libc::F_GETPIPE_SZ),
        )
    };
    assert!(read == 0 && size > 0, "FIONREAD / F_GETPIPE_SZ on the pipe");
    (queued as usize, size as usize)
}

#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sigterm,
    Sigint,
    StdinClosed,
}

/// The shell stops reading stdout (the pipe is full and the sidecar blocked writing to it),
/// a request in flight never finishes, then the trigger: the exit comes within the drain
/// bound plus 1 s.
async fn exits_on_time_with_stdout_full(trigger: Trigger) {
    const DRAIN_MS: u64 = 1000;
    let drain = DRAIN_MS.to_string();
    let mut sidecar = spawn_unread(&[
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
        ("CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS", drain.as_str()),
    ]);
    let mut input = String::new();
    input.push_str(
        r#"{"jsonrpc":"2.0","id":"sleeper","method":"core_test_sleep","params":{"ms":600000}}"#,
    );
    input.push('\n');
    // About 50 KB of answer each: far more than the pipe holds. The requests themselves fit
    // in stdin's pipe, so this write does not block.
    for id in 0..200 {
        input.push_str(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"rpc.discover"}}"#
        ));
        input.push('\n');
    }
    let stdin = sidecar.stdin.as_mut().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    stdin.flush().await.expect("flush");

    // The event: the stdout pipe is full (nothing more fits until someone reads).
    let stdout = sidecar.stdout.as_ref().expect("stdout");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (queued, capacity) = pipe_fill(stdout);
        if queued + 4096 > capacity {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stdout never filled: {queued} of {capacity} bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let pid = nix::unistd::Pid::from_raw(sidecar.child.id().expect("running") as i32);
    let started = Instant::now();
    match trigger {
        Trigger::Sigterm => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill")
        }
        Trigger::Sigint => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("kill")
        }
        Trigger::StdinClosed => drop(sidecar.stdin.take()),
    }
    let status = tokio::time::timeout(TIMEOUT, sidecar.child.wait())
        .await
        .unwrap_or_else(|_| panic!("{trigger:?} with stdout full: still alive after {TIMEOUT:?}"))
        .expect("wait");
    let took = started.elapsed();
    eprintln!("{trigger:?} with stdout full and a request hanging: exit after {took:?}");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took < Duration::from_millis(DRAIN_MS) + Duration::from_secs(1),
        "exit after {took:?}: more than the drain bound ({DRAIN_MS} ms) + 1 s"
    );
}

#[tokio::test]
async fn sigterm_exits_within_the_drain_bound_while_stdout_is_not_read() {
    exits_on_time_with_stdout_full(Trigger::Sigterm).await;
}

#[tokio::test]
async fn sigint_exits_within_the_drain_bound_while_stdout_is_not_read() {
    exits_on_time_with_stdout_full(Trigger::Sigint).await;
}

#[tokio::test]
async fn stdin_eof_exits_within_the_drain_bound_while_stdout_is_not_read() {
    exits_on_time_with_stdout_full(Trigger::StdinClosed).await;
}

/// The shell closes our stdout and leaves stdin open and silent: no write and no input will
/// ever reveal it, yet the process ends promptly.
#[tokio::test]
async fn a_closed_stdout_with_stdin_open_and_idle_ends_the_process_promptly() {
    let mut sidecar = spawn_unread(&[]);
    let stdin = sidecar.stdin.as_mut().expect("stdin");
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"core_ping\"}\n")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let mut stdout = BufReader::new(sidecar.stdout.take().expect("stdout"));
    let first = crate::harness::read_answer_line(&mut stdout).await;
    assert!(first.contains(r#""pong":true"#), "{first}");

    drop(stdout); // the shell stops listening; stdin stays open, nothing more is sent
    let started = Instant::now();
    let status = tokio::time::timeout(TIMEOUT, sidecar.child.wait())
        .await
        .expect("the sidecar exits by itself once its stdout is closed")
        .expect("wait");
    let took = started.elapsed();
    eprintln!("exit {took:?} after stdout was closed (stdin open, idle)");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit after {took:?}");
    assert!(sidecar.stdin.is_some(), "stdin was open all along");
}
