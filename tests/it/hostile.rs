//! Hostile upstreams (docs/protocol.md, "Upstream answers"): an auth server or a backend that
//! redirects to another origin, answers with a body of gigabytes (chunked, or a gzip bomb),
//! or holds thousands of requests open. The sidecar follows no redirect (the other origin
//! gets nothing), reads no body past its cap (peak memory stays small), keeps at most
//! `MAX_CONCURRENT_REQUESTS` requests open per upstream, and never lets a flood of backend
//! calls delay a refresh. The session survives all of it.
//!
//! Every wait is on an event (a response, a notification, a count reached in a fake) under
//! the harness timeout; nothing sleeps and hopes.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::routing::post;
use flate2::{Compress, Compression, Crc, FlushCompress};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::fake_backend::{Canned, FakeBackend};
use crate::gotrue::FakeGoTrue;
use crate::harness::{Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT, serve_local};

/// The sidecar's concurrency bound per upstream (`backend::upstream::MAX_CONCURRENT_REQUESTS`).
const BOUND: usize = 64;
/// The peak RSS allowed while a hostile body arrives.
const PEAK_RSS_KB: u64 = 64 * 1024;
const API_KEY: &str = "anon-key-for-the-hostile-tests-0123456789";
const MIB: usize = 1024 * 1024;

/// A server on another port (so another origin) that counts every connection it accepts
/// and answers each with `body` as a 200 JSON answer: a valid session, or a valid backend
/// envelope, so that a client that followed a redirect there would take it.
async fn other_origin(body: Value) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, accepted)
}

/// A sidecar signed in with `access`/`refresh` (an hour left), SIGNED_IN taken; returns it
/// with its `AuthState`.
async fn signed_in(env: &[(&str, &str)], access: &str, refresh: &str) -> (Sidecar, Value) {
    let mut sidecar = Sidecar::spawn(env);
    sidecar.secret(API_KEY).secret(access).secret(refresh);
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh, "expires_in": 3600,
                   "user": {"id": "user-1"}}),
        )
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    let signed_in = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(signed_in["params"]["event"], "SIGNED_IN", "{signed_in}");
    let state = stored["result"].clone();
    (sidecar, state)
}

/// Still signed in with the same session, and no `auth_state_changed` since sign-in.
async fn session_unchanged(sidecar: &mut Sidecar, before: &Value) {
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(
        &state["result"], before,
        "the session is unchanged: {state}"
    );
    assert!(
        sidecar.notifications().is_empty(),
        "no SIGNED_OUT or TOKEN_REFRESHED: {:?}",
        sidecar.notifications()
    );
}

async fn exit_zero(mut sidecar: Sidecar) {
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
}

fn error_message(response: &Value) -> &str {
    response["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error: {response}"))
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

// ---------------------------------------------------------------------------------------
// (1) and (2): redirects to another origin are not followed.

#[tokio::test]
async fn a_token_redirect_to_another_origin_is_not_followed_and_the_session_is_kept() {
    let gotrue = FakeGoTrue::start().await;
    let (access, refresh) = gotrue.seed_session(true);
    // What a hostile origin would hand out: a session the sidecar must never adopt.
    let (other, other_hits) = other_origin(json!({
        "access_token": "hostile-access-token", "refresh_token": "hostile-refresh-token",
        "expires_in": 3600, "token_type": "bearer", "user": {"id": "intruder"},
    }))
    .await;
    let auth = gotrue.auth_url();
    let (mut sidecar, before) = signed_in(
        &[
            ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
            ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
            ("RUST_LOG", "trace"),
        ],
        &access,
        &refresh,
    )
    .await;

    let target = format!("{other}/auth/v1/token?grant_type=refresh_token");
    for status in [307u16, 308] {
        gotrue.reply_next_token(status, &[("location", &target)], "");
        let response = sidecar.request("auth_refresh_session", Value::Null).await;
        assert_eq!(response["error"]["code"], -32003, "{status}: {response}");
        let data = &response["error"]["data"];
        assert_eq!(data["kind"], "backend", "{status}: {response}");
        assert_eq!(data["status"], status, "{status}: {response}");
        assert_eq!(data["retryable"], false, "{status}: {response}");
        assert_eq!(
            error_message(&response),
            format!("auth server redirected ({status}); the redirect was not followed"),
        );
        session_unchanged(&mut sidecar, &before).await;
    }
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other origin got no connection: no refresh token, no apikey"
    );
    assert_eq!(gotrue.token_calls(), 2, "one request each: not retried");

    // The refresh token was neither spent nor taken for rejected: a normal refresh works.
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(event["params"]["event"], "TOKEN_REFRESHED", "{event}");
    assert_eq!(gotrue.presented(), vec![refresh.clone(); 3]);
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    for token in gotrue.tokens() {
        sidecar.secret(&token);
    }
    sidecar.secret("hostile-access-token");
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_backend_redirect_to_another_origin_is_not_followed() {
    let (other, other_hits) = other_origin(json!({
        "success": true,
        "data": {"id": "intruder", "connectUrl": "https://evil.example", "connectionId": "x"},
    }))
    .await;
    let backend = FakeBackend::start(TEST_JWT).await;
    let url = backend.url();
    let (mut sidecar, before) = signed_in(
        &[("CORE_SIDECAR_BACKEND_URL", url.as_str())],
        TEST_JWT,
        TEST_REFRESH_TOKEN,
    )
    .await;
    let calls = [
        (301u16, "user_get_profile", Value::Null),
        (302, "user_get_profile", Value::Null),
        (307, "composio_authorize", json!({"toolkit": "github"})),
        (308, "composio_authorize", json!({"toolkit": "github"})),
    ];
    for (status, method, params) in calls {
        backend.set_canned(
            Canned::reply(status, "").header("location", &format!("{other}/landing?x=1")),
        );
        let response = sidecar.request(method, params).await;
        assert_eq!(response["error"]["code"], -32003, "{status}: {response}");
        let data = &response["error"]["data"];
        assert_eq!(data["kind"], "backend", "{status}: {response}");
        assert_eq!(data["status"], status, "{status}: {response}");
        assert_eq!(data["retryable"], false, "{status}: {response}");
        assert_eq!(
            error_message(&response),
            format!("backend redirected ({status}); the redirect was not followed"),
        );
    }
    assert_eq!(backend.requests().len(), 4, "each call sent once");
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the other origin got no connection: no token, no body"
    );
    session_unchanged(&mut sidecar, &before).await;
    exit_zero(sidecar).await;
}

// ---------------------------------------------------------------------------------------
// (3): bodies of gigabytes are not read past the cap.

/// A gzip stream of `mib` MiB of zeros, in pieces, built with flate2 at its best compression
/// without ever holding the zeros: one MiB of zeros is deflated with a full flush (which
/// resets the compressor, so each further MiB deflates to the same bytes), and the CRC of the
/// whole is combined from the CRC of one MiB.
fn gzip_zeros(mib: usize) -> Vec<Bytes> {
    fn deflate(compress: &mut Compress, input: &[u8], flush: FlushCompress) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 4096 {
                out.reserve(64 * 1024);
            }
            let before = compress.total_in();
            compress
                .compress_vec(&input[consumed..], &mut out, flush)
                .expect("deflate");
            consumed += (compress.total_in() - before) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
    let zeros = vec![0u8; MIB];
    let mut compress = Compress::new(Compression::best(), false);
    let first = deflate(&mut compress, &zeros, FlushCompress::Full);
    let next = deflate(&mut compress, &zeros, FlushCompress::Full);
    assert_eq!(
        next,
        deflate(&mut compress, &zeros, FlushCompress::Full),
        "after a full flush each MiB of zeros deflates the same"
    );
    let end = deflate(&mut compress, &[], FlushCompress::Finish);
    let mut one = Crc::new();
    one.update(&zeros);
    let mut crc = Crc::new();
    for _ in 0..mib {
        crc.combine(&one);
    }
    let mut trailer = crc.sum().to_le_bytes().to_vec();
    trailer.extend_from_slice(&crc.amount().to_le_bytes());

    // Header: magic, deflate, no flags, no mtime, best compression, unknown OS.
    let mut pieces = vec![Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff])];
    pieces.push(Bytes::from(first));
    let next = Bytes::from(next);
    pieces.extend(std::iter::repeat_n(next, mib - 1));
    pieces.push(Bytes::from(end));
    pieces.push(Bytes::from(trailer));
    pieces
}

#[test]
fn the_gzip_bomb_is_a_valid_gzip_stream() {
    let small: Vec<u8> = gzip_zeros(8).concat();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&small[..])
        .read_to_end(&mut inflated)
        .expect("valid gzip, CRC and length checked");
    assert_eq!(inflated.len(), 8 * MIB);
    assert!(inflated.iter().all(|b| *b == 0));
    let bomb = gzip_zeros(1024);
    let compressed: usize = bomb.iter().map(Bytes::len).sum();
    eprintln!("gzip bomb: {compressed} bytes inflating to 1 GiB");
    assert!(compressed < 2 * MIB, "{compressed}");
}

/// An auth server whose `/token` answers 200 with `pieces` streamed lazily, without a
/// `Content-Length` (so chunked), with these headers. Counts its `/token` requests.
async fn streaming_auth_server(
    headers: &'static [(&'static str, &'static str)],
    pieces: impl Fn() -> Box<dyn Iterator<Item = Bytes> + Send> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let pieces = Arc::new(pieces);
    let app = Router::new().route(
        "/auth/v1/token",
        post(move || {
            let (count, pieces) = (count.clone(), pieces.clone());
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let stream = futures::stream::iter(pieces()).map(Ok::<_, Infallible>);
                let mut response = Response::new(Body::from_stream(stream));
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(*name, value.parse().expect("header value"));
                }
                response
            }
        }),
    );
    let (port, _server) = serve_local(app).await;
    (format!("http://127.0.0.1:{port}/auth/v1"), calls)
}

/// Refreshes against `auth`: the call fails with a malformed `backend` error naming the auth
/// server and its cap, the session is kept, and the peak RSS stays under [`PEAK_RSS_KB`].
async fn refresh_is_refused_with_little_memory(auth: &str, calls: &AtomicUsize, what: &str) {
    let (mut sidecar, before) = signed_in(
        &[("CORE_SIDECAR_AUTH_URL", auth), ("RUST_LOG", "debug")],
        TEST_JWT,
        TEST_REFRESH_TOKEN,
    )
    .await;
    let started = Instant::now();
    let response = sidecar.request("auth_refresh_session", Value::Null).await;
    let took = started.elapsed();
    assert_eq!(response["error"]["code"], -32003, "{what}: {response}");
    let data = &response["error"]["data"];
    assert_eq!(data["kind"], "backend", "{what}: {response}");
    assert_eq!(data["status"], 200, "{what}: {response}");
    assert_eq!(data["retryable"], false, "{what}: {response}");
    assert_eq!(
        error_message(&response),
        "auth server response body over the 1 MiB cap; not read further",
        "{what}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "{what}: not retried");
    session_unchanged(&mut sidecar, &before).await;
    let peak = proc_status_kb(sidecar.pid(), "VmHWM");
    let rss = proc_status_kb(sidecar.pid(), "VmRSS");
    eprintln!("{what}: refused in {took:?}; VmRSS {rss} kB, peak VmHWM {peak} kB");
    assert!(
        peak < PEAK_RSS_KB,
        "{what}: peak VmHWM {peak} kB, over {PEAK_RSS_KB} kB"
    );
    exit_zero(sidecar).await;
}

#[tokio::test]
async fn a_two_gibibyte_chunked_token_answer_is_cut_at_the_cap() {
    // 32,768 pieces of 64 KiB: 2 GiB, every piece the same shared buffer.
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let (auth, calls) = streaming_auth_server(&[("content-type", "application/json")], {
        move || {
            let head = Bytes::from_static(br#"{"access_token":""#);
            let body = std::iter::repeat_n(piece.clone(), 32 * 1024);
            Box::new(std::iter::once(head).chain(body))
        }
    })
    .await;
    refresh_is_refused_with_little_memory(&auth, &calls, "2 GiB chunked").await;
}

#[tokio::test]
async fn a_gzip_bomb_token_answer_is_cut_at_the_cap_after_inflation() {
    let bomb = Arc::new(gzip_zeros(1024));
    let (auth, calls) = streaming_auth_server(
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        move || {
            let bomb = bomb.clone();
            Box::new((0..bomb.len()).map(move |i| bomb[i].clone()))
        },
    )
    .await;
    refresh_is_refused_with_little_memory(&auth, &calls, "1 GiB gzip bomb").await;
}

// ---------------------------------------------------------------------------------------
// (4): a flood of gated calls keeps to the bound and does not starve a refresh.

/// A backend that holds every request until released, counting those it holds at once.
struct HoldingBackend {
    url: String,
    held: watch::Receiver<usize>,
    peak: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

async fn holding_backend() -> HoldingBackend {
    let (release, released) = watch::channel(false);
    let (held_tx, held) = watch::channel(0usize);
    let held_tx = Arc::new(held_tx);
    let peak = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback({
        let (peak, total) = (peak.clone(), total.clone());
        move || {
            let (peak, total, held_tx) = (peak.clone(), total.clone(), held_tx.clone());
            let mut released = released.clone();
            async move {
                total.fetch_add(1, Ordering::SeqCst);
                let mut now = 0;
                held_tx.send_modify(|n| {
                    *n += 1;
                    now = *n;
                });
                peak.fetch_max(now, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                held_tx.send_modify(|n| *n -= 1);
                axum::Json(json!({"success": true, "data": {"toolkits": ["github"]}}))
            }
        }
    });
    let (port, _server) = serve_local(app).await;
    HoldingBackend {
        url: format!("http://127.0.0.1:{port}"),
        held,
        peak,
        total,
        release,
    }
}

#[tokio::test]
async fn two_thousand_gated_calls_keep_to_the_bound_and_a_refresh_still_goes_through() {
    const CALLS: usize = 2_000;
    let mut backend = holding_backend().await;
    let gotrue = FakeGoTrue::start().await;
    let (access, refresh) = gotrue.seed_session(true);
    let auth = gotrue.auth_url();
    let (mut sidecar, _) = signed_in(
        &[
            ("CORE_SIDECAR_BACKEND_URL", backend.url.as_str()),
            ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
            // The transport's own in-flight bound must not be what holds the calls back.
            ("CORE_SIDECAR_MAX_IN_FLIGHT", "4096"),
        ],
        &access,
        &refresh,
    )
    .await;

    let batch: Vec<Value> = (0..CALLS)
        .map(|id| json!({"jsonrpc": "2.0", "id": 10_000 + id, "method": "composio_list_toolkits"}))
        .collect();
    sidecar.send(Value::Array(batch)).await;
    // The event: the backend holds as many requests as the bound lets through.
    tokio::time::timeout(TIMEOUT, backend.held.wait_for(|n| *n >= BOUND))
        .await
        .expect("the backend gets requests")
        .expect("the backend runs");
    // Once a ping sent after the batch is answered, every member has been started.
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");

    // The auth server has its own bound: a refresh goes through while the backend's is full.
    let started = Instant::now();
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    let took = started.elapsed();
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(event["params"]["event"], "TOKEN_REFRESHED", "{event}");
    eprintln!("refresh with {CALLS} backend calls queued: {took:?}");
    assert!(took < Duration::from_secs(3), "refresh took {took:?}");
    assert_eq!(
        *backend.held.borrow(),
        BOUND,
        "still exactly the bound held"
    );

    backend.release.send_replace(true);
    let line = sidecar
        .recv_line(TIMEOUT * 3)
        .await
        .expect("the batch answer");
    let answers: Vec<Value> = serde_json::from_str(&line).expect("a JSON array");
    assert_eq!(answers.len(), CALLS);
    for answer in &answers {
        assert_eq!(
            answer["result"],
            json!({"toolkits": ["github"]}),
            "{answer}"
        );
    }
    assert_eq!(backend.total.load(Ordering::SeqCst), CALLS);
    let peak = backend.peak.load(Ordering::SeqCst);
    eprintln!("{CALLS} gated calls: at most {peak} backend requests open at once");
    assert_eq!(peak, BOUND, "never more than the bound at once");
    for token in gotrue.tokens() {
        sidecar.secret(&token);
    }
    exit_zero(sidecar).await;
}

/// The number of file descriptors a process holds open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the sidecar's /proc entry (same user)")
        .count()
}

/// With the default in-flight bound and the file limit of a typical desktop session
/// (`ulimit -n 1024`), a 2,000-member batch of gated calls against a backend that holds them:
/// the transport admits its bound and refuses the rest at once, the backend layer opens at
/// most its own bound of connections, descriptors stay far from the limit, and a concurrent
/// `auth_refresh_session` (a session method, with a reserve of its own, against the auth
/// server, with a connection bound of its own) completes promptly.
#[tokio::test]
async fn a_two_thousand_member_batch_under_ulimit_1024_leaves_fds_and_a_refresh_goes_through() {
    const CALLS: usize = 2_000;
    const IN_FLIGHT: usize = 256; // the default
    const FD_LIMIT: usize = 1024;
    let mut backend = holding_backend().await;
    let gotrue = FakeGoTrue::start().await;
    let (access, refresh) = gotrue.seed_session(true);
    let auth = gotrue.auth_url();
    let (mut sidecar, _) = signed_in(
        &[
            ("CORE_SIDECAR_BACKEND_URL", backend.url.as_str()),
            ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
        ],
        &access,
        &refresh,
    )
    .await;
    let pid = sidecar.pid();
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={FD_LIMIT}:{FD_LIMIT}"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit failed: {status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&FD_LIMIT.to_string())),
        "{limits}"
    );
    let fds_before = open_fds(pid);

    let batch: Vec<Value> = (0..CALLS)
        .map(|id| json!({"jsonrpc": "2.0", "id": 20_000 + id, "method": "composio_list_toolkits"}))
        .collect();
    sidecar.send(Value::Array(batch)).await;
    tokio::time::timeout(TIMEOUT, backend.held.wait_for(|n| *n >= BOUND))
        .await
        .expect("the backend gets requests")
        .expect("the backend runs");
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
    let fds_loaded = open_fds(pid);
    eprintln!("fds: {fds_before} idle, {fds_loaded} with {CALLS} gated calls sent");
    assert!(
        fds_loaded <= fds_before + BOUND + 16,
        "at most the backend bound of new connections: {fds_before} -> {fds_loaded}"
    );
    assert!(
        fds_loaded < FD_LIMIT / 2,
        "far from the limit: {fds_loaded}"
    );

    let started = Instant::now();
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    let took = started.elapsed();
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    assert!(took < Duration::from_secs(3), "refresh took {took:?}");
    let event = sidecar.recv_notification("auth_state_changed").await;
    assert_eq!(event["params"]["event"], "TOKEN_REFRESHED", "{event}");

    backend.release.send_replace(true);
    let line = sidecar
        .recv_line(TIMEOUT * 3)
        .await
        .expect("the batch answer");
    let answers: Vec<Value> = serde_json::from_str(&line).expect("a JSON array");
    assert_eq!(answers.len(), CALLS);
    let served = answers.iter().filter(|a| a.get("result").is_some()).count();
    let refused = answers
        .iter()
        .filter(|a| {
            a["error"]["data"]["kind"] == "rate_limited"
                && a["error"]["data"].get("status").is_none()
        })
        .count();
    assert_eq!(served, IN_FLIGHT, "the transport's bound was admitted");
    assert_eq!(refused, CALLS - IN_FLIGHT, "the rest refused, not started");
    assert_eq!(backend.total.load(Ordering::SeqCst), IN_FLIGHT);
    assert_eq!(backend.peak.load(Ordering::SeqCst), BOUND);
    for token in gotrue.tokens() {
        sidecar.secret(&token);
    }
    exit_zero(sidecar).await;
}
