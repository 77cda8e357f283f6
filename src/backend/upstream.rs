//! The one upstream layer: every HTTP request of the process, to the product backend and to
//! the auth server, goes through [`Upstream::send`]. What it does is the same for both, and
//! each upstream is named ("backend", "auth server") in every error and log line:
//!
//! - **One client** ([`client`]): rustls, gzip, the per-request timeout
//!   (`CORE_SIDECAR_HTTP_TIMEOUT_MS`, connecting at most [`MAX_CONNECT_TIMEOUT`] of it), at most
//!   [`POOL_MAX_IDLE_PER_HOST`] idle connections kept per host, and **no redirects**
//!   ([`redirect::Policy::none`]). A redirect is never followed because following one would
//!   send what the request carries to wherever the upstream points: reqwest re-posts the body
//!   of a 307/308 (the refresh token, at `/token`) and keeps the `apikey` header and any
//!   header it does not know to be sensitive, even to another origin, and the answer of that
//!   origin would be taken as the upstream's (a session adopted, backend data returned). So a
//!   3xx answer is an error ([`redirected`]): `backend`, with its status, not retryable, and
//!   the target is never contacted. The auth server's callers see the same error; at `/token`
//!   it is neither a fatal rejection nor a transient failure, so the session stays as it is
//!   and the refresh is not retried.
//! - **Capped, streaming body read** ([`read_capped`]): the body is read chunk by chunk and
//!   the read stops as soon as it would pass the upstream's cap (a declared `Content-Length`
//!   over the cap is refused before reading). The chunks are counted after gzip inflation
//!   (reqwest's `chunk()` yields inflated bytes), so the cap holds for a chunked body without
//!   a length and for a gzip bomb alike. An answer over the cap is a malformed answer
//!   ([`Error::malformed_answer`]) naming the upstream and the cap.
//! - **A bound on concurrent requests per upstream**: a [`Semaphore`] of
//!   [`MAX_CONCURRENT_REQUESTS`] permits per [`Upstream`], held from before the request is
//!   sent until its body is read (or abandoned), so the sockets (file descriptors) the
//!   process opens stay bounded whatever arrives on stdin: a 2,000-member batch of gated calls
//!   opens at most that many connections to the backend. The backend and the auth server have
//!   separate semaphores, so a flood of gated calls never delays a refresh. A request past the
//!   bound waits for a permit, in arrival order; **the HTTP timeout starts when the permit is
//!   granted** and covers the request itself (connect, send, headers, body), not the wait.
//!   The wait is still bounded: each request ahead holds its permit for at most the timeout.
//! - **Transport errors** ([`unreachable()`]): no complete answer (refused, DNS, TLS, timeout,
//!   connection lost mid-body) is `unavailable`, "`<upstream>` unreachable: ...", without the
//!   URL's query.
//! - **Logging**: one line per request with the upstream, the HTTP method, the path without
//!   its query, the status (or the error), the time spent waiting for a permit and the time
//!   the request took: `debug` for an answer below 400, `warn` for a 4xx/5xx answer or no
//!   usable answer, with the JSON-RPC method of the call when there is one
//!   ([`telemetry::current_method`]). Never a header, a body or a token. The call also
//!   learns which upstream answered ([`telemetry::note_upstream`]), for the Sentry tags.
//!
//! What an answer *means* stays with each client: [`super::map_response`] (backend) and
//! [`super::auth_server::classify`] (auth server) are pure functions of a complete answer.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{StatusCode, redirect};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::scrub::scrub;
use crate::telemetry;

/// Concurrent requests per upstream (backend, auth server), each holding one connection.
/// Past it, requests wait for a permit. 64 keeps file descriptors far below a default
/// `ulimit -n` of 1024 for both upstreams together, and is far more parallelism than a
/// desktop app's backend calls need.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Idle connections kept per host for reuse. Enough for steady traffic without re-connecting;
/// the rest of a burst's connections close when their request ends.
pub const POOL_MAX_IDLE_PER_HOST: usize = 16;

/// The longest time connecting may take, within the request timeout.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the one HTTP client of the process (see the module docs). Fails only when the
/// client cannot be built (no TLS roots, say).
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .gzip(true)
        .redirect(redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| Error::Internal(format!("building the HTTP client: {}", chain(&e))))
}

/// One upstream: its name, the shared client, its timeout, body cap and concurrency bound.
/// Cheap to clone; clones share the bound.
#[derive(Clone)]
pub struct Upstream {
    name: &'static str,
    http: reqwest::Client,
    timeout: Duration,
    max_body_bytes: usize,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("available_permits", &self.permits.available_permits())
            .finish()
    }
}

/// A complete answer: a status that is not a redirect, its headers, the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// How a request ended, before it becomes an [`Error`].
enum Failure {
    Transport(reqwest::Error),
    Redirect { status: StatusCode, location: bool },
    TooLarge(StatusCode),
}

impl Upstream {
    /// `http` should be the client of [`client`] (the one without redirects).
    pub fn new(
        name: &'static str,
        http: reqwest::Client,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> Self {
        Self::with_bound(name, http, timeout, max_body_bytes, MAX_CONCURRENT_REQUESTS)
    }

    fn with_bound(
        name: &'static str,
        http: reqwest::Client,
        timeout: Duration,
        max_body_bytes: usize,
        max_concurrent: usize,
    ) -> Self {
        Self {
            name,
            http,
            timeout,
            max_body_bytes,
            permits: Arc::new(Semaphore::new(max_concurrent)),
        }
    }

    /// The name used in errors and logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The shared client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The per-request timeout the client was built with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest body read from this upstream.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Sends `request` under this upstream's concurrency bound and reads its body under the
    /// cap. A 3xx answer, an answer over the cap and a transport failure are errors; every
    /// other answer is returned whole, for the caller to map.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer> {
        let request = request
            .build()
            .map_err(|e| unreachable(self.name, e, self.timeout))?;
        let method = request.method().clone();
        // `path()` has neither the query nor the fragment.
        let path = request.url().path().to_owned();

        let queued = Instant::now();
        // Held until the body is read or dropped; never closed, so `acquire` cannot fail.
        let _permit =
            self.permits.acquire().await.map_err(|_| {
                Error::Internal(format!("the {} request bound is closed", self.name))
            })?;
        let queued_ms = queued.elapsed().as_millis() as u64;
        let started = Instant::now();
        let outcome = self.exchange(request).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;

        match outcome {
            Ok(answer) => {
                let status = answer.status.as_u16();
                telemetry::note_upstream(self.name, Some(status));
                if answer.status.is_client_error() || answer.status.is_server_error() {
                    tracing::warn!(
                        rpc_method = telemetry::current_method(),
                        upstream = self.name,
                        http_method = %method,
                        path,
                        status,
                        queued_ms,
                        elapsed_ms,
                        "upstream call failed"
                    );
                } else {
                    tracing::debug!(
                        upstream = self.name,
                        %method,
                        path,
                        status,
                        queued_ms,
                        elapsed_ms,
                        "upstream call"
                    );
                }
                Ok(answer)
            }
            Err(failure) => {
                let status = match &failure {
                    Failure::Redirect { status, .. } | Failure::TooLarge(status) => {
                        Some(status.as_u16())
                    }
                    Failure::Transport(_) => None,
                };
                let error = self.error(failure);
                telemetry::note_upstream(self.name, status);
                tracing::warn!(
                    rpc_method = telemetry::current_method(),
                    upstream = self.name,
                    http_method = %method,
                    path,
                    status,
                    queued_ms,
                    elapsed_ms,
                    error = %error,
                    "upstream call failed"
                );
                Err(error)
            }
        }
    }

    async fn exchange(&self, request: reqwest::Request) -> Result<Answer, Failure> {
        let response = self
            .http
            .execute(request)
            .await
            .map_err(Failure::Transport)?;
        let status = response.status();
        if status.is_redirection() {
            // Not read: the connection is dropped with the response.
            return Err(Failure::Redirect {
                status,
                location: response.headers().contains_key(LOCATION),
            });
        }
        let headers = response.headers().clone();
        match read_capped(response, self.max_body_bytes).await {
            Ok(Some(body)) => Ok(Answer {
                status,
                headers,
                body,
            }),
            Ok(None) => Err(Failure::TooLarge(status)),
            Err(err) => Err(Failure::Transport(err)),
        }
    }

    fn error(&self, failure: Failure) -> Error {
        match failure {
            Failure::Transport(err) => unreachable(self.name, err, self.timeout),
            Failure::Redirect { status, location } => redirected(self.name, status, location),
            Failure::TooLarge(status) => over_cap(self.name, status, self.max_body_bytes),
        }
    }
}

/// Reads the body up to `cap` bytes (after inflation); `None` when it is longer. Stops
/// reading at the first chunk past the cap: the rest is never received into memory.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> reqwest::Result<Option<Vec<u8>>> {
    // With gzip on, `content_length` is the inflated length when known, else `None`.
    let declared = response.content_length();
    if declared.is_some_and(|len| len > cap as u64) {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > cap - body.len() {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The error of a 3xx answer: never followed. The `Location` is not quoted (it may carry a
/// query with anything in it).
pub fn redirected(upstream: &str, status: StatusCode, location: bool) -> Error {
    let code = status.as_u16();
    let message = if location {
        format!("{upstream} redirected ({code}); the redirect was not followed")
    } else {
        format!("{upstream} returned unexpected status {code}")
    };
    Error::backend_status(code, message)
}

/// The error of an answer whose body is over the cap: malformed.
pub fn over_cap(upstream: &str, status: StatusCode, cap: usize) -> Error {
    Error::malformed_answer(
        Some(status.as_u16()),
        format!(
            "{upstream} response body over the {} cap; not read further",
            size(cap)
        ),
    )
}

/// `8 MiB`, `512 KiB` or `100 bytes`.
fn size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A request to `upstream` that got no complete answer, as an error without the URL.
pub fn unreachable(upstream: &str, err: reqwest::Error, timeout: Duration) -> Error {
    let err = err.without_url();
    if err.is_builder() {
        return Error::Internal(format!(
            "could not build the {upstream} request: {}",
            scrub(&chain(&err))
        ));
    }
    if err.is_timeout() {
        return Error::Unavailable(format!(
            "{upstream} unreachable: no answer within {} ms",
            timeout.as_millis()
        ));
    }
    Error::Unavailable(format!("{upstream} unreachable: {}", scrub(&chain(&err))))
}

/// An error and its sources, as one line, consecutive repeats removed.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if parts.last() != Some(&text) && !text.is_empty() {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::error::ErrorKind;

    /// A server on 127.0.0.1 that answers every connection with `head` then `body`, and
    /// counts the connections it accepted.
    async fn raw_server(head: String, body: Arc<Vec<u8>>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (head, body) = (head.clone(), body.clone());
                tokio::spawn(async move {
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
        (url, accepted)
    }

    fn upstream(cap: usize) -> Upstream {
        let timeout = Duration::from_secs(5);
        Upstream::new("test upstream", client(timeout).unwrap(), timeout, cap)
    }

    #[tokio::test]
    async fn redirects_are_errors_and_never_followed() {
        let (other, other_hits) = raw_server(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".into(),
            Arc::new(b"{}".to_vec()),
        )
        .await;
        for status in [301, 302, 303, 307, 308] {
            let head = format!(
                "HTTP/1.1 {status} Moved\r\nlocation: {other}/x?token=SECRET\r\ncontent-length: 0\r\n\r\n"
            );
            let (url, _) = raw_server(head, Arc::default()).await;
            let up = upstream(1024);
            let err = up
                .send(up.http().post(format!("{url}/token")).body("secret body"))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Backend, "{status}");
            assert_eq!(err.data()["status"], status, "{status}");
            assert!(!err.retryable(), "{status}");
            let text = err.to_string();
            assert!(text.contains("test upstream redirected"), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_cap_is_malformed() {
        let mut body = Vec::new();
        for _ in 0..64 {
            body.extend_from_slice(b"400\r\n");
            body.extend(std::iter::repeat_n(b'x', 0x400));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let (url, _) = raw_server(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".into(),
            Arc::new(body),
        )
        .await;
        let up = upstream(16 * 1024);
        let err = up.send(up.http().get(&url)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(matches!(
            err,
            Error::Backend {
                malformed: true,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "test upstream response body over the 16 KiB cap; not read further"
        );
        // At the cap exactly, it is read.
        let up = upstream(64 * 1024);
        let answer = up.send(up.http().get(&url)).await;
        assert_eq!(answer.unwrap().body.len(), 64 * 1024);
    }

    #[tokio::test]
    async fn the_cap_counts_inflated_bytes() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 4 * 1024 * 1024]).unwrap();
        let gz = encoder.finish().unwrap();
        assert!(gz.len() < 64 * 1024);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
            gz.len()
        );
        let (url, _) = raw_server(head, Arc::new(gz)).await;
        let up = upstream(1024 * 1024);
        let err = up.send(up.http().get(&url)).await.unwrap_err();
        assert!(err.to_string().contains("over the 1 MiB cap"), "{err}");
    }

    #[tokio::test]
    async fn concurrent_requests_wait_for_a_permit() {
        // A server that holds every request until told, counting those it holds at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (release, released) = tokio::sync::watch::channel(false);
        let (now, mut seen) = tokio::sync::watch::channel(0usize);
        let peak = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        {
            let peak = peak.clone();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let (peak, held, now) = (peak.clone(), held.clone(), now.clone());
                    let mut released = released.clone();
                    tokio::spawn(async move {
                        loop {
                            let mut request = [0u8; 4096];
                            match socket.read(&mut request).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let n = held.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            now.send_replace(n);
                            let _ = released.wait_for(|r| *r).await;
                            held.fetch_sub(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if socket.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        let up = Upstream::with_bound(
            "test upstream",
            client(Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5),
            1024,
            3,
        );
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let up = up.clone();
                let url = url.clone();
                tokio::spawn(async move { up.send(up.http().get(&url)).await })
            })
            .collect();
        seen.wait_for(|n| *n == 3).await.unwrap();
        assert_eq!(up.permits.available_permits(), 0);
        release.send_replace(true);
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().body, b"ok");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(up.permits.available_permits(), 3);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(8 * 1024 * 1024), "8 MiB");
        assert_eq!(size(16 * 1024), "16 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
