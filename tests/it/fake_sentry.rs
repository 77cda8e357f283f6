//! A fake Sentry on 127.0.0.1:0 that stores the envelopes it receives.
//!
//! sentry's reqwest transport POSTs each envelope uncompressed to
//! `/api/<project>/envelope/`; a gzip body (other SDKs) is inflated all the same.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    envelopes: Mutex<Vec<String>>,
    arrived: Notify,
}

pub struct FakeSentry {
    port: u16,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeSentry {
    pub async fn start() -> FakeSentry {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/api/{project}/envelope/", post(envelope))
            .route("/api/{project}/store/", post(envelope))
            .with_state(shared.clone());
        let (port, server) = crate::harness::serve_local(app).await;
        FakeSentry {
            port,
            shared,
            server,
        }
    }

    pub fn dsn(&self) -> String {
        format!("http://public@127.0.0.1:{}/1", self.port)
    }

    pub fn envelopes(&self) -> Vec<String> {
        self.shared.envelopes.lock().unwrap().clone()
    }

    /// Waits until at least `n` envelopes arrived; returns them all. Panics on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let envelopes = self.envelopes();
            if envelopes.len() >= n {
                return envelopes;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} Sentry envelope(s), got {}: {envelopes:?}",
                    envelopes.len()
                );
            }
        }
    }
}

impl Drop for FakeSentry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn envelope(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let text = if gzip {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut out)
            .expect("gzip body");
        out
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    shared.envelopes.lock().unwrap().push(text);
    shared.arrived.notify_waiters();
    "{}"
}
