//! Backend round trip benchmark: `composio_list_connections` through the sidecar next to the
//! same HTTP call made directly with reqwest, in the same run, against the same local backend.
//!
//! ```text
//! bench_backend --sidecar PATH [--baseline PATH] [--n 5000] [--warmup 500] [--quick]
//!               [--json] [--profile-n 2000] [--sidecar-stderr]
//! ```
//!
//! - The backend is this program re-run as a child (`--serve`): an axum server on
//!   127.0.0.1:0 serving `GET /agent-integrations/composio/connections` with a Bearer check
//!   and the `{success, data: {connections: [...]}}` envelope. It is its own process, as a
//!   real backend is, so neither path shares a thread with it.
//! - The sidecar is spawned with `CORE_SIDECAR_BACKEND_URL` pointing at it and
//!   `CORE_SIDECAR_KEYRING=memory`, and signed in with `auth_store_session` (a fake token).
//! - Four series, interleaved call by call (the order rotates every step, so every series
//!   sees the same moments of machine noise), each call sequential:
//!   1. `composio_list_connections` through the sidecar (write a line to its stdin, read the
//!      response line);
//!   2. the same GET made directly with reqwest, client built as `src/backend` builds it (one
//!      reused client, rustls, gzip, timeouts, user agent, Bearer and Accept headers, the
//!      envelope parsed into a `Value`), driven from this thread with `block_on` on a
//!      multi-thread tokio runtime: the reference of the first target (<= 1.2x);
//!   3. the same direct call on a current-thread runtime, like the sidecar's (the connection
//!      task runs on the calling thread: no thread hop at all, the lowest a direct call can
//!      go): the reference of the second target (<= 1.4x);
//!   4. `core_ping` through the sidecar: the pipe round trip alone.
//! - A profile phase then runs `--profile-n` calls of each kind alone and counts context
//!   switches per call (`/proc/<pid>/task/*/status`) in the sidecar (per thread), in this
//!   process and in the backend: each voluntary switch is a thread going to sleep to wait for
//!   another one, i.e. a thread hop.
//! - VmRSS of the sidecar after the run (loaded RSS).
//! - `--baseline PATH`: a second sidecar binary (an older build, say) run alongside, its
//!   `composio_list_connections` and `core_ping` series interleaved with the others, so an
//!   A/B comparison sees the same machine noise; reported as extra rows and `baseline_*`
//!   figures.
//!
//! Prints a table; `--json` adds one line with every figure as a flat JSON object (for
//! `scripts/bench.sh`). Responses are checked (the ids, three connections, `success: true`),
//! so a broken path fails loudly instead of looking fast.

// A command-line tool: the table goes to stdout, progress and failures to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

const TOKEN: &str = "bench-access-token-0123456789";
const PATH: &str = "/agent-integrations/composio/connections";
const CONNECTIONS: usize = 3;
/// The reference target: sidecar p50 <= 1.2x the direct call's p50 (multi-thread runtime).
const TARGET_RATIO: f64 = 1.2;
/// Against the fastest direct call (current-thread runtime): p50 <= 1.4x.
const TARGET_RATIO_CURRENT: f64 = 1.4;

async fn connections(headers: HeaderMap) -> impl IntoResponse {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(TOKEN));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"success": false, "error": "unauthorized"})),
        )
            .into_response();
    }
    axum::Json(json!({"success": true, "data": {"connections": [
        {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2026-01-01T00:00:00Z"},
        {"id": "ca_2", "toolkit": "slack", "status": "ACTIVE", "createdAt": "2026-01-02T00:00:00Z"},
        {"id": "ca_3", "toolkit": "notion", "status": "INITIATED"},
    ]}}))
    .into_response()
}

/// `--serve`: the backend process. Prints `LISTENING <port>`, serves until stdin closes.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        println!("LISTENING {port}");
        std::io::stdout().flush().expect("stdout");
        let app = Router::new().route(PATH, get(connections));
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stdin_closed.await;
            })
            .await
            .expect("serve");
    });
}

struct Args {
    sidecar: String,
    baseline: Option<String>,
    n: usize,
    warmup: usize,
    profile_n: usize,
    json: bool,
    sidecar_stderr: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_backend --sidecar PATH [--baseline PATH] [--n N] [--warmup N] \
         [--profile-n N] [--quick] [--json] [--sidecar-stderr]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        sidecar: String::new(),
        baseline: None,
        n: 5000,
        warmup: 500,
        profile_n: 2000,
        json: false,
        sidecar_stderr: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        let num = |s: String| s.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--sidecar" => args.sidecar = value(),
            "--baseline" => args.baseline = Some(value()),
            "--n" => args.n = num(value()).max(1),
            "--warmup" => args.warmup = num(value()),
            "--profile-n" => args.profile_n = num(value()).max(1),
            "--quick" => {
                args.n = 200;
                args.warmup = 20;
                args.profile_n = 100;
            }
            "--json" => args.json = true,
            "--sidecar-stderr" => args.sidecar_stderr = true,
            _ => usage(),
        }
    }
    if args.sidecar.is_empty() {
        usage();
    }
    args
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_backend: {msg}");
    std::process::exit(1)
}

/// A child process that speaks lines over its pipes.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Peer {
    fn spawn(mut command: Command, name: &str) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("cannot spawn the {name}: {e}")));
        let stdin = child.stdin.take();
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped"));
        Peer {
            child,
            stdin,
            stdout,
            line: String::with_capacity(1024),
        }
    }

    fn read_line(&mut self) -> &str {
        self.line.clear();
        match self.stdout.read_line(&mut self.line) {
            Ok(0) => fail("a child closed its stdout (exited?)"),
            Ok(_) => &self.line,
            Err(e) => fail(&format!("read from a child: {e}")),
        }
    }

    /// One request line written with one `write`; returns the response line to `id`
    /// (notifications in between are skipped).
    fn call(&mut self, request: &[u8], id: &str) -> &str {
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(request)
            .unwrap_or_else(|e| fail(&format!("write to the sidecar: {e}")));
        loop {
            self.line.clear();
            match self.stdout.read_line(&mut self.line) {
                Ok(0) => fail("the sidecar closed its stdout (exited?)"),
                Ok(_) if self.line.contains(id) => return &self.line,
                Ok(_) => {}
                Err(e) => fail(&format!("read from the sidecar: {e}")),
            }
        }
    }

    /// Closes stdin (both children exit on EOF) and reaps; kills after 10 s.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The response line of a sidecar call: the id, and a result (`check` looks at it).
fn check_rpc(line: &str, id: u64, check: impl Fn(&Value) -> bool) {
    let ok = serde_json::from_str::<Value>(line)
        .is_ok_and(|v| v["id"] == json!(id) && check(&v["result"]));
    if !ok {
        fail(&format!("unexpected sidecar response: {}", line.trim_end()));
    }
}

fn connections_ok(data: &Value) -> bool {
    data["connections"]
        .as_array()
        .is_some_and(|c| c.len() == CONNECTIONS)
}

/// The direct call: one reused client built as `src/backend` builds it.
struct Direct {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    url: String,
}

impl Direct {
    fn new(runtime: tokio::runtime::Runtime, base: &str) -> Direct {
        let timeout = Duration::from_secs(30);
        let client = {
            let _enter = runtime.enter();
            reqwest::Client::builder()
                .use_rustls_tls()
                .gzip(true)
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .user_agent("core-sidecar-bench/0")
                .build()
                .expect("reqwest client")
        };
        Direct {
            runtime,
            client,
            url: format!("{base}{PATH}"),
        }
    }

    fn call(&self) {
        let data = self.runtime.block_on(async {
            let response = self
                .client
                .get(&self.url)
                .bearer_auth(TOKEN)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap_or_else(|e| fail(&format!("direct GET: {e}")));
            let status = response.status();
            let body = response
                .bytes()
                .await
                .unwrap_or_else(|e| fail(&format!("direct GET body: {e}")));
            let mut envelope: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| fail(&format!("direct GET: not JSON: {e}")));
            if !status.is_success() || envelope["success"] != true {
                fail(&format!("direct GET: {status} {envelope}"));
            }
            envelope["data"].take()
        });
        if !connections_ok(&data) {
            fail(&format!("direct GET: unexpected data {data}"));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Series {
    Sidecar,
    Direct,
    DirectCurrent,
    Ping,
    /// `--baseline`'s sidecar: `composio_list_connections`.
    Baseline,
    /// `--baseline`'s sidecar: `core_ping`.
    BaselinePing,
}

const SERIES: [Series; 4] = [
    Series::Sidecar,
    Series::Direct,
    Series::DirectCurrent,
    Series::Ping,
];

struct Bench {
    sidecar: Peer,
    baseline: Option<Peer>,
    direct: Direct,
    direct_current: Direct,
    next_id: u64,
    request: Vec<u8>,
}

impl Bench {
    fn run(&mut self, series: Series) -> Duration {
        self.next_id += 1;
        let id = self.next_id;
        match series {
            Series::Sidecar | Series::Ping | Series::Baseline | Series::BaselinePing => {
                let gated = matches!(series, Series::Sidecar | Series::Baseline);
                let method = if gated {
                    "composio_list_connections"
                } else {
                    "core_ping"
                };
                let peer = match series {
                    Series::Baseline | Series::BaselinePing => {
                        self.baseline.as_mut().expect("--baseline given")
                    }
                    _ => &mut self.sidecar,
                };
                self.request.clear();
                let _ = writeln!(
                    self.request,
                    "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\"}}"
                );
                let id_text = format!("\"id\":{id},");
                let start = Instant::now();
                let line = peer.call(&self.request, &id_text);
                let elapsed = start.elapsed();
                if gated {
                    check_rpc(line, id, connections_ok);
                } else {
                    check_rpc(line, id, |r| r["pong"] == true);
                }
                elapsed
            }
            Series::Direct => {
                let start = Instant::now();
                self.direct.call();
                start.elapsed()
            }
            Series::DirectCurrent => {
                let start = Instant::now();
                self.direct_current.call();
                start.elapsed()
            }
        }
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64,
    }
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Per thread name: context switches (voluntary + involuntary) and time on a CPU (ns, from
/// `schedstat`), summed over every thread of `pid`.
fn threads(pid: u32) -> BTreeMap<String, [u64; 2]> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let mut name = String::from("?");
        let mut count = 0;
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("Name:") {
                name = v.trim().to_string();
            } else if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                count += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
        let cpu_ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let entry = by_name.entry(name).or_insert([0, 0]);
        entry[0] += count;
        entry[1] += cpu_ns;
    }
    by_name
}

/// Per call of one kind: context switches and CPU time.
#[derive(Default)]
struct Cost {
    /// Sidecar threads by name: switches per call.
    sidecar_threads: BTreeMap<String, f64>,
    sidecar_switches: f64,
    sidecar_cpu_us: f64,
    bench_switches: f64,
    bench_cpu_us: f64,
    backend_switches: f64,
    backend_cpu_us: f64,
}

/// Runs `series` alone `n` times and returns its cost per call.
fn profile(bench: &mut Bench, series: Series, n: usize, backend_pid: u32) -> Cost {
    let sidecar = match (series, &bench.baseline) {
        (Series::Baseline | Series::BaselinePing, Some(baseline)) => baseline,
        _ => &bench.sidecar,
    };
    let pids = [sidecar.child.id(), std::process::id(), backend_pid];
    let before: Vec<_> = pids.iter().map(|&p| threads(p)).collect();
    for _ in 0..n {
        bench.run(series);
    }
    let after: Vec<_> = pids.iter().map(|&p| threads(p)).collect();
    let per = |d: u64| d as f64 / n as f64;
    // Per process: (switches, cpu ns) deltas by thread name.
    let deltas: Vec<BTreeMap<String, [u64; 2]>> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            a.iter()
                .map(|(k, v)| {
                    let old = b.get(k).copied().unwrap_or([0, 0]);
                    (
                        k.clone(),
                        [v[0].saturating_sub(old[0]), v[1].saturating_sub(old[1])],
                    )
                })
                .collect()
        })
        .collect();
    let total = |m: &BTreeMap<String, [u64; 2]>, i: usize| m.values().map(|v| v[i]).sum::<u64>();
    Cost {
        sidecar_threads: deltas[0]
            .iter()
            .filter(|(_, v)| v[0] > 0)
            .map(|(k, v)| (k.clone(), per(v[0])))
            .collect(),
        sidecar_switches: per(total(&deltas[0], 0)),
        sidecar_cpu_us: per(total(&deltas[0], 1)) / 1e3,
        bench_switches: per(total(&deltas[1], 0)),
        bench_cpu_us: per(total(&deltas[1], 1)) / 1e3,
        backend_switches: per(total(&deltas[2], 0)),
        backend_cpu_us: per(total(&deltas[2], 1)) / 1e3,
    }
}

fn affinity() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// A sidecar signed in with the bench token, calling the backend at `base`.
fn spawn_sidecar(path: &str, base: &str, stderr: bool) -> Peer {
    let mut command = Command::new(path);
    command
        .env("CORE_SIDECAR_BACKEND_URL", base)
        .env("CORE_SIDECAR_KEYRING", "memory")
        .env("RUST_LOG", "warn")
        .env_remove("CORE_SIDECAR_AUTH_URL")
        .env_remove("SENTRY_DSN")
        .stderr(if stderr {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let mut sidecar = Peer::spawn(command, "sidecar");
    let signin = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"auth_store_session\",\"params\":{{\"access_token\":\"{TOKEN}\",\"expires_in\":86400,\"user\":{{\"id\":\"bench-user\"}}}}}}\n"
    );
    let line = sidecar.call(signin.as_bytes(), "\"id\":0");
    check_rpc(line, 0, |r| r["isAuthenticated"] == true);
    sidecar
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        return serve();
    }
    let args = parse_args();

    // The backend: this program again, in its own process.
    let mut backend_cmd = Command::new(std::env::current_exe().expect("current exe"));
    backend_cmd.arg("--serve").stderr(Stdio::inherit());
    let mut backend = Peer::spawn(backend_cmd, "backend");
    let port: u16 = backend
        .read_line()
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| fail("the backend did not print LISTENING <port>"));
    let base = format!("http://127.0.0.1:{port}");

    let sidecar = spawn_sidecar(&args.sidecar, &base, args.sidecar_stderr);
    let baseline = args
        .baseline
        .as_deref()
        .map(|path| spawn_sidecar(path, &base, args.sidecar_stderr));
    let mut series: Vec<Series> = SERIES.to_vec();
    if baseline.is_some() {
        series.extend([Series::Baseline, Series::BaselinePing]);
    }

    // As many workers as the sidecar's runtime gets by default (CPUs this process may use);
    // explicit, so TOKIO_WORKER_THREADS set for an experiment changes only the sidecar.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut bench = Bench {
        sidecar,
        baseline,
        direct: Direct::new(multi, &base),
        direct_current: Direct::new(current, &base),
        next_id: 0,
        request: Vec::with_capacity(128),
    };

    eprintln!(
        "backend round trip: {} calls per series ({} warm-up), interleaved...",
        args.n, args.warmup
    );
    let mut samples: Vec<Vec<Duration>> =
        series.iter().map(|_| Vec::with_capacity(args.n)).collect();
    for step in 0..args.warmup + args.n {
        for j in 0..series.len() {
            let i = (step + j) % series.len();
            let d = bench.run(series[i]);
            if step >= args.warmup {
                samples[i].push(d);
            }
        }
    }
    let loaded_rss_kb = vm_rss_kb(bench.sidecar.child.id());
    let baseline_loaded_rss_kb = bench.baseline.as_ref().map(|b| vm_rss_kb(b.child.id()));

    eprintln!(
        "profile: {} calls of each kind alone, counting context switches...",
        args.profile_n
    );
    let backend_pid = backend.child.id();
    let profiles: Vec<_> = series
        .iter()
        .map(|&s| profile(&mut bench, s, args.profile_n, backend_pid))
        .collect();

    let Bench {
        sidecar,
        baseline,
        direct,
        direct_current,
        ..
    } = bench;
    sidecar.finish();
    if let Some(baseline) = baseline {
        baseline.finish();
    }
    drop((direct, direct_current));
    backend.finish();

    let st: Vec<Stats> = samples.into_iter().map(stats).collect();
    let (s, d, dc, p) = (&st[0], &st[1], &st[2], &st[3]);
    let ratio = s.p50 / d.p50;
    let mut out = String::new();
    let w = &mut out;
    use std::fmt::Write as _;
    let _ = writeln!(
        w,
        "backend round trip (CPU affinity: {}): {} sequential calls per series ({} warm-up), interleaved",
        affinity(),
        args.n,
        args.warmup
    );
    let _ = writeln!(
        w,
        "  {:<52} {:>10} {:>10} {:>10}",
        "series", "p50 us", "p99 us", "mean us"
    );
    let names = [
        "composio_list_connections through the sidecar",
        "direct reqwest (multi-thread runtime)",
        "direct reqwest (current-thread runtime)",
        "core_ping through the sidecar (the pipe alone)",
        "composio_list_connections through the baseline",
        "core_ping through the baseline",
    ];
    for (name, x) in names.iter().zip(&st) {
        let _ = writeln!(
            w,
            "  {:<52} {:>10.1} {:>10.1} {:>10.1}",
            name, x.p50, x.p99, x.mean
        );
    }
    let verdict = |r: f64| if r <= TARGET_RATIO { "PASS" } else { "MISS" };
    let verdict_current = |r: f64| {
        if r <= TARGET_RATIO_CURRENT {
            "PASS"
        } else {
            "MISS"
        }
    };
    let ratio_current = s.p50 / dc.p50;
    // `--baseline`'s two series, when run.
    let base = (st.len() > 4).then(|| (&st[4], &st[5]));
    let _ = writeln!(
        w,
        "  sidecar/direct (multi-thread) p50 {ratio:.2}x, mean {:.2}x (target <= {TARGET_RATIO}x) {}",
        s.mean / d.mean,
        verdict(ratio)
    );
    let _ = writeln!(
        w,
        "  sidecar/direct (current-thread) p50 {ratio_current:.2}x, mean {:.2}x (target <= {TARGET_RATIO_CURRENT}x) {}",
        s.mean / dc.mean,
        verdict_current(ratio_current)
    );
    if let Some((b, bp)) = base {
        let _ = writeln!(
            w,
            "  baseline/direct (current-thread) p50 {:.2}x; sidecar/baseline p50 {:.2}x (gated), {:.2}x (core_ping)",
            b.p50 / dc.p50,
            s.p50 / b.p50,
            p.p50 / bp.p50
        );
    }
    let _ = writeln!(
        w,
        "  sidecar - direct p50: {:.1} us (multi-thread), {:.1} us (current-thread); core_ping p50 {:.1} us",
        s.p50 - d.p50,
        s.p50 - dc.p50,
        p.p50
    );
    let _ = writeln!(
        w,
        "  sidecar VmRSS after the run: {:.1} MB",
        loaded_rss_kb as f64 / 1024.0
    );
    let _ = writeln!(
        w,
        "cost per call, {} calls of each kind alone: context switches (a thread going to sleep \
         to wait for another: a hop) and CPU time",
        args.profile_n
    );
    for (name, c) in names.iter().zip(&profiles) {
        let threads: Vec<String> = c
            .sidecar_threads
            .iter()
            .filter(|(_, v)| **v >= 0.05)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let _ = writeln!(
            w,
            "  {name:<52} sidecar {:.2} sw {:.1} us cpu [{}]; bench {:.2} sw {:.1} us; backend {:.2} sw {:.1} us",
            c.sidecar_switches,
            c.sidecar_cpu_us,
            threads.join(", "),
            c.bench_switches,
            c.bench_cpu_us,
            c.backend_switches,
            c.backend_cpu_us
        );
    }
    if args.json {
        let mut figures = json!({
            "bench": "backend",
            "n": args.n,
            "sidecar_p50_us": s.p50, "sidecar_p99_us": s.p99, "sidecar_mean_us": s.mean,
            "direct_p50_us": d.p50, "direct_p99_us": d.p99, "direct_mean_us": d.mean,
            "direct_current_p50_us": dc.p50, "direct_current_p99_us": dc.p99,
            "direct_current_mean_us": dc.mean,
            "ping_p50_us": p.p50, "ping_p99_us": p.p99, "ping_mean_us": p.mean,
            "ratio_p50": ratio, "ratio_mean": s.mean / d.mean,
            "ratio_current_p50": ratio_current, "ratio_current_mean": s.mean / dc.mean,
            "loaded_rss_kb": loaded_rss_kb,
            "sidecar_switches_per_call": profiles[0].sidecar_switches,
            "sidecar_cpu_us_per_call": profiles[0].sidecar_cpu_us,
            "sidecar_switches_per_ping": profiles[3].sidecar_switches,
            "sidecar_cpu_us_per_ping": profiles[3].sidecar_cpu_us,
            "bench_switches_per_sidecar_call": profiles[0].bench_switches,
            "bench_switches_per_direct_call": profiles[1].bench_switches,
            "bench_switches_per_direct_current_call": profiles[2].bench_switches,
        });
        if let Some((b, bp)) = base {
            let extra = json!({
                "baseline_p50_us": b.p50, "baseline_p99_us": b.p99, "baseline_mean_us": b.mean,
                "baseline_ping_p50_us": bp.p50, "baseline_ping_p99_us": bp.p99,
                "baseline_ratio_p50": b.p50 / d.p50,
                "baseline_ratio_current_p50": b.p50 / dc.p50,
                "sidecar_vs_baseline_p50": s.p50 / b.p50,
                "sidecar_vs_baseline_ping_p50": p.p50 / bp.p50,
                "baseline_loaded_rss_kb": baseline_loaded_rss_kb,
                "baseline_switches_per_call": profiles[4].sidecar_switches,
                "baseline_cpu_us_per_call": profiles[4].sidecar_cpu_us,
                "baseline_switches_per_ping": profiles[5].sidecar_switches,
                "baseline_cpu_us_per_ping": profiles[5].sidecar_cpu_us,
            });
            if let (Some(figures), Some(extra)) = (figures.as_object_mut(), extra.as_object()) {
                figures.extend(extra.clone());
            }
        }
        let _ = writeln!(w, "{figures}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
