//! Session-gate overhead per call with a cached session.
//!
//! Runs N gated calls whose domain function returns at once, and the same N calls made
//! without the gate, on one current-thread runtime. The difference per call is the gate's
//! cost: a read lock on the cache, a reference count, and the authenticated client.
//! Run: `cargo bench --bench gate` (prints a table; no assertion).

use std::sync::Arc;
use std::time::{Duration, Instant};

use core_sidecar::backend::{Backend, BackendClient};
use core_sidecar::domains::auth::{self, StoreSessionParams};
use core_sidecar::error::Result;
use core_sidecar::session::gate::Gate;
use core_sidecar::session::refresh::Refresher;
use core_sidecar::session::{Sessions, StoreOptions};
use core_sidecar::telemetry::Telemetry;

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test.
fn calls() -> u32 {
    if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        1_000
    }
}

async fn domain_call(api: BackendClient) -> Result<usize> {
    Ok(std::hint::black_box(&api) as *const _ as usize)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let sessions = Sessions::new(
            StoreOptions::memory("core-sidecar-bench"),
            Arc::new(|_| {}),
            Telemetry::new(),
        );
        let params: StoreSessionParams = serde_json::from_value(serde_json::json!({
            "access_token": "bench-access-token",
            "expires_in": 3600,
            "user": {"id": "bench-user"},
        }))
        .expect("params");
        auth::store_session(&sessions, params)
            .await
            .expect("signed in");
        let backend = Backend::new(
            Some("http://127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(1),
        )
        .expect("backend");
        // No auth server: the session is an hour from expiry, so no refresh is due anyway.
        let refresher = Refresher::new(sessions.clone(), None, Telemetry::new());
        let gate = Gate::new(sessions.clone(), backend.clone(), refresher);

        // Warm up both paths.
        for _ in 0..calls() / 100 {
            gate.call(domain_call).await.expect("gated");
            domain_call(backend.authed("bench-access-token"))
                .await
                .expect("direct");
        }

        let calls = calls();
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(gate.call(domain_call).await.expect("gated"));
        }
        let gated = start.elapsed();

        let start = Instant::now();
        for _ in 0..calls {
            let api = backend.authed("bench-access-token");
            std::hint::black_box(domain_call(api).await.expect("direct"));
        }
        let direct = start.elapsed();

        let per = |d: Duration| d.as_nanos() as f64 / f64::from(calls);
        println!("| path | ns per call |");
        println!("|---|---|");
        println!("| through the gate (cached session) | {:.0} |", per(gated));
        println!(
            "| domain call alone (client built directly) | {:.0} |",
            per(direct)
        );
        println!("| gate overhead | {:.0} |", per(gated) - per(direct));
    });
}
