//! `composio_list_connections` through the sidecar next to the same HTTP call made directly
//! with reqwest, in the same run against the same local backend on 127.0.0.1.
//!
//! usage: bench_backend --sidecar PATH [--n N] [--warmup N]
//! Prints a small table and one `RESULT key=value ...` line for scripts/bench.sh.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

const TOKEN: &str = "bench-access-token-0123456789";

async fn connections(headers: HeaderMap) -> impl IntoResponse {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "{}").into_response();
    }
    axum::Json(json!({"success": true, "data": {"connections": [
        {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2026-01-01T00:00:00Z"},
        {"id": "ca_2", "toolkit": "slack", "status": "ACTIVE", "createdAt": "2026-01-02T00:00:00Z"},
        {"id": "ca_3", "toolkit": "notion", "status": "INITIATED"},
    ]}}))
    .into_response()
}

struct Args {
    sidecar: String,
    n: usize,
    warmup: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        sidecar: "target/release/core-sidecar".into(),
        n: 5000,
        warmup: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("a value after each flag");
        match flag.as_str() {
            "--sidecar" => args.sidecar = value,
            "--n" => args.n = value.parse().expect("--n N"),
            "--warmup" => args.warmup = value.parse().expect("--warmup N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(async move {
        let app = Router::new().route("/agent-integrations/composio/connections", get(connections));
        axum::serve(listener, app).await.expect("serve");
    });

    let mut child = Command::new(&args.sidecar)
        .env("CORE_SIDECAR_BACKEND_URL", &base)
        .env("CORE_SIDECAR_KEYRING", "memory")
        .env("RUST_LOG", "warn")
        .env_remove("SENTRY_DSN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the sidecar");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut call = |request: &str, id: &str| {
        stdin.write_all(request.as_bytes()).expect("write");
        stdin.flush().expect("flush");
        loop {
            line.clear();
            stdout.read_line(&mut line).expect("read");
            // Skip notifications (auth_state_changed).
            if line.contains(id) {
                assert!(line.contains("\"result\""), "sidecar error: {line}");
                return;
            }
        }
    };
    call(
        &format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":\"signin\",\"method\":\"auth_store_session\",\"params\":{{\"access_token\":\"{TOKEN}\",\"expires_in\":86400}}}}\n"
        ),
        "\"signin\"",
    );

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .gzip(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("{base}/agent-integrations/composio/connections");
    let direct = || {
        runtime.block_on(async {
            let text = client
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("send")
                .text()
                .await
                .expect("body");
            let envelope: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(envelope["success"], true);
        })
    };

    let request = "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"composio_list_connections\"}\n";
    let (mut through, mut plain) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.n {
        let start = Instant::now();
        call(request, "\"id\":7");
        let sidecar = start.elapsed();
        let start = Instant::now();
        direct();
        let reqwest = start.elapsed();
        if i >= args.warmup {
            through.push(sidecar);
            plain.push(reqwest);
        }
    }
    let rss = vm_rss_kb(child.id());
    drop(stdin);
    let _ = child.wait();

    through.sort();
    plain.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    let (s50, s99, sm) = (
        percentile(&through, 0.5),
        percentile(&through, 0.99),
        mean(&through),
    );
    let (d50, d99, dm) = (
        percentile(&plain, 0.5),
        percentile(&plain, 0.99),
        mean(&plain),
    );
    println!(
        "backend round trip: {} interleaved calls each ({} warm-up)",
        args.n, args.warmup
    );
    println!("  path                      p50        p99       mean");
    println!("  through the sidecar  {s50:8.1} us {s99:8.1} us {sm:8.1} us");
    println!("  direct reqwest       {d50:8.1} us {d99:8.1} us {dm:8.1} us");
    println!(
        "  ratio p50 {:.2}x, mean {:.2}x (target <= 1.2x)",
        s50 / d50,
        sm / dm
    );
    println!(
        "  sidecar VmRSS after the run: {:.1} MB",
        rss as f64 / 1024.0
    );
    println!(
        "RESULT backend_p50_us={s50:.1} direct_p50_us={d50:.1} backend_ratio={:.2} loaded_rss_kb={rss}",
        s50 / d50
    );
}
