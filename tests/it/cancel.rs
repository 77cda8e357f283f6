//! docs/protocol.md, "Cancellation", through the real binary: `$/cancelRequest` ends a
//! pending request with -32800 `cancelled` at once, drops its work (a gated call's backend
//! connection is closed), frees its slot, ends only the batch member it names, and is
//! ignored for an id nothing pending has.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_backend::SilentBackend;
use crate::harness::{Sidecar, TEST_JWT, TIMEOUT};
use crate::schema::assert_valid_error;

/// The contract: a cancelled request is answered within 100 ms of the cancel.
const CANCEL_BOUND: Duration = Duration::from_millis(100);

fn cancel_line(id: Value) -> String {
    json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}}).to_string()
}

fn sleep_line(id: Value, ms: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "core_test_sleep", "params": {"ms": ms}})
        .to_string()
}

fn assert_cancelled(answer: &Value, id: &Value) {
    assert_eq!(&answer["id"], id, "{answer}");
    assert_eq!(answer["error"]["code"], -32800, "{answer}");
    assert_eq!(
        answer["error"]["message"], "cancelled by the client",
        "{answer}"
    );
    assert_eq!(
        answer["error"]["data"],
        json!({"kind": "cancelled", "retryable": false}),
        "{answer}"
    );
    assert_valid_error(&answer["error"]);
}

/// Sends the cancel of `id` and returns its answer and how long it took, from the cancel
/// written to the answer read.
async fn cancel(sidecar: &mut Sidecar, id: &Value) -> (Value, Duration) {
    let started = Instant::now();
    sidecar.send_line(&cancel_line(id.clone())).await;
    let answer = sidecar.recv_response(id).await;
    (answer, started.elapsed())
}

fn assert_in_time(what: &str, took: Duration) {
    eprintln!("{what}: answered {took:?} after the cancel");
    assert!(took < CANCEL_BOUND, "{what} took {took:?}");
}

/// Sends a ping and asserts that the very next line is its answer: nothing else was written.
async fn next_line_is_pong(sidecar: &mut Sidecar, id: &str) {
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": id, "method": "core_ping"}))
        .await;
    let answer = sidecar.recv_json().await;
    assert_eq!(answer["id"], id, "the ping's answer comes next: {answer}");
}

#[tokio::test]
async fn a_gated_call_hanging_on_a_silent_backend_is_cancelled_and_its_connection_closed() {
    let backend = SilentBackend::start().await;
    let url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", url.as_str())]);
    let stored = sidecar
        .request("auth_store_session", json!({"access_token": TEST_JWT}))
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");

    let id = json!("toolkits");
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": id, "method": "composio_list_toolkits"}))
        .await;
    // The request has reached the backend, which will never answer (30 s timeout).
    backend.wait_for_connections(1).await;

    // An id nothing pending has is ignored: no answer, and the call still hangs.
    sidecar.send_line(&cancel_line(json!("other"))).await;
    sidecar.send_line(&cancel_line(json!(7))).await;
    next_line_is_pong(&mut sidecar, "p1").await;

    let (answer, took) = cancel(&mut sidecar, &id).await;
    assert_cancelled(&answer, &id);
    assert_in_time("a gated call on a silent backend", took);
    // Its future was dropped, and with it the HTTP request: the connection is closed.
    backend.wait_for_closed(1).await;
    assert_eq!(backend.connections(), 1);
    // Answered once: a second cancel of the same id is ignored.
    sidecar.send_line(&cancel_line(id.clone())).await;
    next_line_is_pong(&mut sidecar, "p2").await;
    // The session is untouched.
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["isAuthenticated"], true, "{state}");
}

#[tokio::test]
async fn a_cancelled_request_frees_its_slot() {
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
        ("CORE_SIDECAR_MAX_IN_FLIGHT", "1"),
    ]);
    // The id's text is kept as sent (`1.50`, not `1.5`), and the cancel names it so.
    sidecar
        .send_line(
            r#"{"jsonrpc":"2.0","id":1.50,"method":"core_test_sleep","params":{"ms":600000}}"#,
        )
        .await;
    // The one slot is taken.
    let refused = sidecar.request("core_test_sleep", json!({"ms": 0})).await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");

    sidecar
        .send_line(r#"{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":1.50}}"#)
        .await;
    let line = sidecar
        .recv_line(TIMEOUT)
        .await
        .expect("the cancelled answer");
    assert!(
        line.starts_with(r#"{"jsonrpc":"2.0","id":1.50,"error":{"code":-32800"#),
        "the id comes back as sent: {line}"
    );
    // The slot is free again at once.
    let slept = sidecar.request("core_test_sleep", json!({"ms": 0})).await;
    assert_eq!(slept["result"]["pong"], true, "{slept}");
}

#[tokio::test]
async fn a_sleep_is_cancelled_in_time() {
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_TEST_HOOKS", "1")]);
    for round in 0..3 {
        let id = json!(format!("sleep-{round}"));
        sidecar.send_line(&sleep_line(id.clone(), 600_000)).await;
        // The sleep is read and pending once a ping sent after it is answered.
        next_line_is_pong(&mut sidecar, "ready").await;
        let (answer, took) = cancel(&mut sidecar, &id).await;
        assert_cancelled(&answer, &id);
        assert_in_time("core_test_sleep", took);
    }
}

#[tokio::test]
async fn a_cancel_ends_only_the_batch_member_it_names() {
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_TEST_HOOKS", "1")]);
    let batch = format!(
        "[{},{},{}]",
        sleep_line(json!("long"), 600_000),
        json!({"jsonrpc": "2.0", "id": "ping", "method": "core_ping"}),
        sleep_line(json!("short"), 300),
    );
    sidecar.send_line(&batch).await;
    next_line_is_pong(&mut sidecar, "ready").await;
    sidecar.send_line(&cancel_line(json!("long"))).await;
    let line = sidecar.recv_line(TIMEOUT).await.expect("the batch answer");
    let answers: Vec<Value> = serde_json::from_str(&line).expect("one array line");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!("long"), &json!("ping"), &json!("short")]);
    assert_cancelled(&answers[0], &json!("long"));
    assert_eq!(answers[1]["result"]["pong"], true, "{line}");
    assert_eq!(
        answers[2]["result"]["pong"], true,
        "the other member ran to its end: {line}"
    );
}

#[tokio::test]
async fn a_cancel_sent_as_a_request_is_answered_null() {
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_TEST_HOOKS", "1")]);
    sidecar.send_line(&sleep_line(json!(1), 600_000)).await;
    next_line_is_pong(&mut sidecar, "ready").await;
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "$/cancelRequest", "params": {"id": 1}}))
        .await;
    let mut answers = [sidecar.recv_json().await, sidecar.recv_json().await];
    answers.sort_by_key(|a| a["id"].as_u64());
    assert_cancelled(&answers[0], &json!(1));
    assert_eq!(
        answers[1],
        json!({"jsonrpc": "2.0", "id": 2, "result": null})
    );
}
