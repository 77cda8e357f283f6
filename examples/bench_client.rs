//! Transport benchmark client, driven by `scripts/bench-transport.sh`.
//!
//! Spawns each server under test as a child with piped stdin/stdout and measures, over
//! those pipes:
//!
//! - **latency**: sequential `core_ping` round trips (send one line, wait for its response
//!   line), rotating between the servers request by request so every server sees the same
//!   moments of machine noise; p50 and p99 per server.
//! - **throughput**: `--inflight` requests kept in flight (a writer thread and a reader
//!   thread, a credit channel between them), `--throughput-n` requests, req/s. Servers take
//!   turns, `--rounds` times; the median round is reported.
//! - **idle RSS** of each server after spawn and one ping (`VmRSS` in `/proc/<pid>/status`).
//! - **spawn to first response**: spawn, write one ping at once, time until its response
//!   line arrives; median and max over `--spawns` spawns.
//!
//! The floor (`examples/echo_floor.rs`) echoes each line back: no parsing, no dispatch.
//! `--tokio-floor PATH` (`examples/echo_floor_tokio.rs`) adds the same echo built as the
//! sidecar is (one tokio thread, stdin read when the reactor says so, a timer pending), in a
//! second latency pass interleaved with the floor alone: what the sidecar's design costs
//! before any JSON-RPC work, reported as its own ratio to the floor.
//! Pinning (`taskset -c 0`) is done by the script; children inherit the affinity.
//!
//! ```text
//! bench_client --floor PATH --sidecar PATH [--tokio-floor PATH] [--baseline PATH] [--node-script PATH]
//!              [--node-bin node] [--latency-n 20000] [--warmup 2000] [--throughput-n 200000]
//!              [--inflight 64] [--rounds 3] [--spawns 20] [--timeout-secs 600]
//!              [--server-stderr] [--strict] [--json]
//! ```
//! `--baseline PATH` adds a second sidecar binary (an older build, say) as one more server,
//! interleaved with the others, for an A/B comparison under the same noise.
//! `--strict` exits 1 when the sidecar misses a target. `--json` adds one last line with every
//! figure as a flat JSON object (read by `scripts/bench.sh`). Every response is checked
//! (`"pong":true` and, for latency, the id), so a broken server fails loudly instead of
//! looking fast.

// A command-line tool: progress and failures go to stderr, the table to stdout.
#![allow(clippy::print_stderr)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{TrySendError, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

const PONG: &[u8] = b"\"pong\":true";

// Targets, the sidecar pinned to one core.
const TARGET_P50_RATIO: f64 = 1.1;
const TARGET_P99_RATIO: f64 = 3.0;
const TARGET_TPUT_VS_NODE: f64 = 1.5;
const TARGET_RSS_KB: u64 = 15 * 1024;
const TARGET_FIRST_RESPONSE: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Echoes the request line: the response is the request.
    Floor,
    /// A JSON-RPC server: the response carries `"pong":true` and the id.
    JsonRpc,
}

#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    kind: Kind,
}

impl Spec {
    /// A server that is a program run with no arguments.
    fn binary(name: &'static str, program: String, kind: Kind) -> Spec {
        Spec {
            name,
            program: program.into(),
            args: vec![],
            kind,
        }
    }
}

struct Opts {
    floor: Spec,
    sidecar: Spec,
    tokio_floor: Option<Spec>,
    node: Option<Spec>,
    baseline: Option<Spec>,
    latency_n: usize,
    warmup: usize,
    throughput_n: u64,
    inflight: usize,
    rounds: usize,
    spawns: usize,
    timeout: Duration,
    server_stderr: bool,
    strict: bool,
    json: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_client --floor PATH --sidecar PATH [--baseline PATH] [--node-script PATH] \
         [--node-bin node] [--latency-n N] [--warmup N] [--throughput-n N] [--inflight N] [--rounds N] \
         [--spawns N] [--timeout-secs N] [--server-stderr] [--strict] [--json]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut floor = None;
    let mut sidecar = None;
    let mut node_script = None;
    let mut node_bin = String::from("node");
    let mut o = Opts {
        floor: Spec {
            name: "floor",
            program: PathBuf::new(),
            args: vec![],
            kind: Kind::Floor,
        },
        sidecar: Spec {
            name: "sidecar",
            program: PathBuf::new(),
            args: vec![],
            kind: Kind::JsonRpc,
        },
        tokio_floor: None,
        node: None,
        baseline: None,
        latency_n: 20_000,
        warmup: 2_000,
        throughput_n: 200_000,
        inflight: 64,
        rounds: 3,
        spawns: 20,
        timeout: Duration::from_secs(600),
        server_stderr: false,
        strict: false,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let num = |s: String| s.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--floor" => floor = Some(value()),
            "--sidecar" => sidecar = Some(value()),
            "--tokio-floor" => {
                o.tokio_floor = Some(Spec::binary("tokio-floor", value(), Kind::Floor))
            }
            "--baseline" => o.baseline = Some(Spec::binary("baseline", value(), Kind::JsonRpc)),
            "--node-script" => node_script = Some(value()),
            "--node-bin" => node_bin = value(),
            "--latency-n" => o.latency_n = num(value()) as usize,
            "--warmup" => o.warmup = num(value()) as usize,
            "--throughput-n" => o.throughput_n = num(value()),
            "--inflight" => o.inflight = num(value()).max(1) as usize,
            "--rounds" => o.rounds = num(value()).max(1) as usize,
            "--spawns" => o.spawns = num(value()).max(1) as usize,
            "--timeout-secs" => o.timeout = Duration::from_secs(num(value())),
            "--server-stderr" => o.server_stderr = true,
            "--strict" => o.strict = true,
            "--json" => o.json = true,
            _ => usage(),
        }
    }
    o.floor.program = floor.unwrap_or_else(|| usage()).into();
    o.sidecar.program = sidecar.unwrap_or_else(|| usage()).into();
    o.node = node_script.map(|script| Spec {
        name: "node",
        program: node_bin.into(),
        args: vec![script],
        kind: Kind::JsonRpc,
    });
    o
}

struct Server {
    spec: Spec,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn spawn(spec: &Spec, server_stderr: bool) -> Server {
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if server_stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "{}: cannot spawn {:?}: {e}",
                    spec.name, spec.program
                ))
            });
        let stdin = child.stdin.take();
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped"));
        Server {
            spec: spec.clone(),
            child,
            stdin,
            stdout,
        }
    }

    /// One request line, written with a single `write` (stdin is unbuffered).
    fn send(&mut self, request: &[u8]) {
        let name = self.spec.name;
        self.stdin
            .as_mut()
            .expect("stdin open")
            .write_all(request)
            .unwrap_or_else(|e| fail(&format!("{name}: write failed: {e}")));
    }

    /// The next line that is not a notification (the sidecar announces its session with
    /// `auth_state_changed` INITIAL_SESSION at start).
    fn recv(&mut self, line: &mut Vec<u8>) {
        loop {
            line.clear();
            let n = self
                .stdout
                .read_until(b'\n', line)
                .unwrap_or_else(|e| fail(&format!("{}: read failed: {e}", self.spec.name)));
            if n == 0 {
                fail(&format!("{}: closed stdout (exited?)", self.spec.name));
            }
            if !is_notification(line) {
                return;
            }
        }
    }

    fn check(&self, request: &[u8], id: u64, response: &[u8]) {
        let ok = match self.spec.kind {
            Kind::Floor => response == request,
            Kind::JsonRpc => match serde_json::from_slice::<serde_json::Value>(response) {
                Ok(v) => v["id"] == serde_json::json!(id) && v["result"]["pong"] == true,
                Err(_) => false,
            },
        };
        if !ok {
            fail(&format!(
                "{}: unexpected response to id {id}: {}",
                self.spec.name,
                String::from_utf8_lossy(response).trim_end()
            ));
        }
    }

    fn ping(&mut self, id: u64, request: &mut Vec<u8>, response: &mut Vec<u8>) -> Duration {
        ping_line(request, id);
        let start = Instant::now();
        self.send(request);
        self.recv(response);
        let elapsed = start.elapsed();
        self.check(request, id, response);
        elapsed
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Close stdin (EOF: the servers exit on it) and reap; kill after 10 s.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                _ => {
                    eprintln!(
                        "{}: did not exit on stdin EOF within 10 s; killing",
                        self.spec.name
                    );
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

fn ping_line(buf: &mut Vec<u8>, id: u64) {
    buf.clear();
    writeln!(
        buf,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"core_ping\"}}"
    )
    .expect("vec");
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_client: {msg}");
    std::process::exit(1)
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Latency {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: *v.last().expect("non-empty"),
    }
}

/// Sequential round trips, rotating the order of the servers each step.
/// Spawns the servers, measures their latency interleaved, and ends them.
fn latency_pass<'a>(specs: impl Iterator<Item = &'a Spec>, o: &Opts) -> Vec<Latency> {
    let mut servers: Vec<Server> = specs.map(|s| Server::spawn(s, o.server_stderr)).collect();
    let lat = latency(&mut servers, o.warmup, o.latency_n.max(1));
    for s in servers {
        s.finish();
    }
    lat
}

fn latency(servers: &mut [Server], warmup: usize, n: usize) -> Vec<Latency> {
    let k = servers.len();
    let mut samples: Vec<Vec<Duration>> = (0..k).map(|_| Vec::with_capacity(n)).collect();
    let (mut req, mut resp) = (Vec::with_capacity(128), Vec::with_capacity(128));
    for step in 0..warmup + n {
        for j in 0..k {
            let i = (step + j) % k;
            let d = servers[i].ping(step as u64 + 1, &mut req, &mut resp);
            if step >= warmup {
                samples[i].push(d);
            }
        }
    }
    samples.into_iter().map(percentiles).collect()
}

/// `inflight` requests outstanding at all times; returns req/s.
fn throughput(spec: &Spec, n: u64, inflight: usize, server_stderr: bool) -> f64 {
    let mut server = Server::spawn(spec, server_stderr);
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for id in 1..=1000 {
        server.ping(id, &mut req, &mut resp);
    }
    let stdin = server.stdin.take().expect("stdin");
    let name = spec.name;
    let kind = spec.kind;
    let reader = &mut server.stdout;
    // One credit per request in flight: the writer puts one in before each request, the
    // reader takes one out after each response.
    let (credit_tx, credit_rx) = sync_channel::<()>(inflight);
    let start = Instant::now();
    let secs = thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut out = BufWriter::with_capacity(64 * 1024, stdin);
            let mut line = Vec::with_capacity(128);
            for id in 1..=n {
                if let Err(TrySendError::Full(())) = credit_tx.try_send(()) {
                    // Window full: everything buffered must reach the server before we wait.
                    out.flush()
                        .unwrap_or_else(|e| fail(&format!("{name}: write: {e}")));
                    credit_tx.send(()).expect("reader alive");
                }
                ping_line(&mut line, id);
                out.write_all(&line)
                    .unwrap_or_else(|e| fail(&format!("{name}: write: {e}")));
            }
            out.flush()
                .unwrap_or_else(|e| fail(&format!("{name}: write: {e}")));
            // `out` stays open until the reader is done: dropping it here would send EOF.
            out
        });
        let reader = s.spawn(move || {
            let mut line = Vec::with_capacity(128);
            let mut answered = 0;
            while answered < n {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => fail(&format!("{name}: closed stdout mid-run")),
                    Ok(_) => {}
                    Err(e) => fail(&format!("{name}: read: {e}")),
                }
                if is_notification(&line) {
                    continue;
                }
                answered += 1;
                if kind == Kind::JsonRpc && !line.windows(PONG.len()).any(|w| w == PONG) {
                    fail(&format!(
                        "{name}: unexpected response: {}",
                        String::from_utf8_lossy(&line).trim_end()
                    ));
                }
                credit_rx.recv().expect("writer credit");
            }
        });
        reader.join().expect("reader thread");
        let secs = start.elapsed().as_secs_f64();
        drop(writer.join().expect("writer thread"));
        secs
    });
    server.finish();
    n as f64 / secs
}

struct Spawn {
    median: Duration,
    max: Duration,
    rss_kb: u64,
}

/// Time from `spawn()` to the first response line, over `count` fresh processes; RSS of the
/// first one after that ping.
fn spawn_stats(spec: &Spec, count: usize, server_stderr: bool) -> Spawn {
    let mut times = Vec::with_capacity(count);
    let mut rss_kb = 0;
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    for i in 0..count {
        ping_line(&mut req, 1);
        let start = Instant::now();
        let mut server = Server::spawn(spec, server_stderr);
        server.send(&req);
        server.recv(&mut resp);
        times.push(start.elapsed());
        server.check(&req, 1, &resp);
        if i == 0 {
            rss_kb = server.rss_kb();
        }
        server.finish();
    }
    times.sort_unstable();
    Spawn {
        median: times[times.len() / 2],
        max: *times.last().expect("non-empty"),
        rss_kb,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
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

fn main() {
    let o = parse_opts();
    let timeout = o.timeout;
    thread::spawn(move || {
        thread::sleep(timeout);
        fail(&format!("timed out after {timeout:?}"));
    });

    let mut specs = vec![o.floor.clone(), o.sidecar.clone()];
    specs.extend(o.node.clone());
    specs.extend(o.baseline.clone());

    // Latency: all servers alive at once, requests interleaved.
    eprintln!(
        "latency: {} sequential pings per server ({} warm-up), interleaved...",
        o.latency_n, o.warmup
    );
    let lat = latency_pass(specs.iter(), &o);
    // The tokio floor against the floor alone: interleaved with the others it would move
    // their figures (every process sharing the core costs the others cache).
    let tokio_lat = o.tokio_floor.as_ref().map(|tokio_floor| {
        eprintln!("latency: the one-thread tokio floor against the floor...");
        latency_pass([&o.floor, tokio_floor].into_iter(), &o)
    });

    // Throughput: one server at a time, taking turns each round.
    eprintln!(
        "throughput: {} requests, {} in flight, {} round(s)...",
        o.throughput_n, o.inflight, o.rounds
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    for _ in 0..o.rounds {
        for (i, spec) in specs.iter().enumerate() {
            rates[i].push(throughput(
                spec,
                o.throughput_n.max(1),
                o.inflight,
                o.server_stderr,
            ));
        }
    }
    let rate: Vec<f64> = rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();

    eprintln!("spawn: {} spawns per server...", o.spawns);
    let spawn: Vec<Spawn> = specs
        .iter()
        .map(|s| spawn_stats(s, o.spawns, o.server_stderr))
        .collect();

    // Report.
    let (f, sc) = (0, 1);
    let node = o.node.as_ref().map(|_| 2);
    let baseline = o.baseline.as_ref().map(|_| specs.len() - 1);
    let p50_ratio = lat[sc].p50.as_secs_f64() / lat[f].p50.as_secs_f64();
    let p99_ratio = lat[sc].p99.as_secs_f64() / lat[f].p99.as_secs_f64();
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(
        w,
        "core-sidecar transport benchmark (CPU affinity: {})",
        affinity()
    );
    let _ = writeln!(
        w,
        "latency: {} sequential core_ping round trips per server, interleaved",
        o.latency_n
    );
    let _ = writeln!(
        w,
        "  {:<10} {:>12} {:>12} {:>12}",
        "server", "p50", "p99", "max"
    );
    for (i, spec) in specs.iter().enumerate() {
        let _ = writeln!(
            w,
            "  {:<10} {:>12} {:>12} {:>12}",
            spec.name,
            us(lat[i].p50),
            us(lat[i].p99),
            us(lat[i].max)
        );
    }
    let _ = writeln!(
        w,
        "  sidecar/floor p50 {:.2}x (target <= {TARGET_P50_RATIO}x) {}",
        p50_ratio,
        verdict(p50_ratio <= TARGET_P50_RATIO)
    );
    let _ = writeln!(
        w,
        "  sidecar/floor p99 {:.2}x (target <= {TARGET_P99_RATIO}x) {}",
        p99_ratio,
        verdict(p99_ratio <= TARGET_P99_RATIO)
    );
    if let Some(pair) = &tokio_lat {
        let _ = writeln!(
            w,
            "  second pass: floor {} p50, one-thread tokio floor {} p50: {:.2}x (what the design costs before any JSON-RPC work)",
            us(pair[0].p50),
            us(pair[1].p50),
            pair[1].p50.as_secs_f64() / pair[0].p50.as_secs_f64()
        );
    }
    if let Some(b) = baseline {
        let _ = writeln!(
            w,
            "  baseline/floor p50 {:.2}x, p99 {:.2}x",
            lat[b].p50.as_secs_f64() / lat[f].p50.as_secs_f64(),
            lat[b].p99.as_secs_f64() / lat[f].p99.as_secs_f64()
        );
    }
    let _ = writeln!(
        w,
        "throughput: {} requests, {} in flight, median of {} round(s)",
        o.throughput_n, o.inflight, o.rounds
    );
    for (i, spec) in specs.iter().enumerate() {
        let _ = writeln!(w, "  {:<10} {:>12.0} req/s", spec.name, rate[i]);
    }
    let _ = writeln!(w, "  sidecar/floor {:.2}x", rate[sc] / rate[f]);
    if let Some(b) = baseline {
        let _ = writeln!(w, "  sidecar/baseline {:.2}x", rate[sc] / rate[b]);
    }
    let mut tput_ok = true;
    if let Some(n) = node {
        let r = rate[sc] / rate[n];
        tput_ok = r >= TARGET_TPUT_VS_NODE;
        let _ = writeln!(
            w,
            "  sidecar/node  {r:.2}x (target >= {TARGET_TPUT_VS_NODE}x) {}",
            verdict(tput_ok)
        );
    }
    let _ = writeln!(
        w,
        "process: spawn to first response (median / max of {}), RSS after one ping",
        o.spawns
    );
    let _ = writeln!(
        w,
        "  {:<10} {:>10} {:>10} {:>10}",
        "server", "median", "max", "VmRSS"
    );
    for (i, spec) in specs.iter().enumerate() {
        let _ = writeln!(
            w,
            "  {:<10} {:>10} {:>10} {:>7.1} MB",
            spec.name,
            ms(spawn[i].median),
            ms(spawn[i].max),
            spawn[i].rss_kb as f64 / 1024.0
        );
    }
    let rss_ok = spawn[sc].rss_kb > 0 && spawn[sc].rss_kb < TARGET_RSS_KB;
    let first_ok = spawn[sc].median <= TARGET_FIRST_RESPONSE;
    let _ = writeln!(
        w,
        "  sidecar idle RSS {:.1} MB (target < 15 MB) {}",
        spawn[sc].rss_kb as f64 / 1024.0,
        verdict(rss_ok)
    );
    let _ = writeln!(
        w,
        "  sidecar first response {} (target <= 20 ms) {}",
        ms(spawn[sc].median),
        verdict(first_ok)
    );
    let all_ok = p50_ratio <= TARGET_P50_RATIO
        && p99_ratio <= TARGET_P99_RATIO
        && tput_ok
        && rss_ok
        && first_ok;
    let _ = writeln!(
        w,
        "overall: {}",
        if all_ok {
            "all targets met"
        } else {
            "targets missed"
        }
    );
    if o.json {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let mut figures = serde_json::json!({
            "bench": "transport",
            "affinity": affinity(),
            "latency_n": o.latency_n,
            "floor_p50_us": us(lat[f].p50), "floor_p99_us": us(lat[f].p99),
            "sidecar_p50_us": us(lat[sc].p50), "sidecar_p99_us": us(lat[sc].p99),
            "p50_ratio": p50_ratio, "p99_ratio": p99_ratio,
            "inflight": o.inflight,
            "floor_rps": rate[f], "sidecar_rps": rate[sc],
            "sidecar_first_response_ms": spawn[sc].median.as_secs_f64() * 1e3,
            "sidecar_first_response_max_ms": spawn[sc].max.as_secs_f64() * 1e3,
            "sidecar_idle_rss_kb": spawn[sc].rss_kb,
            "floor_idle_rss_kb": spawn[f].rss_kb,
            "all_targets_met": all_ok,
        });
        if let Some(pair) = &tokio_lat {
            figures["floor2_p50_us"] = us(pair[0].p50).into();
            figures["tokio_floor_p50_us"] = us(pair[1].p50).into();
            figures["tokio_floor_ratio"] =
                (pair[1].p50.as_secs_f64() / pair[0].p50.as_secs_f64()).into();
        }
        if let Some(n) = node {
            figures["node_p50_us"] = us(lat[n].p50).into();
            figures["node_p99_us"] = us(lat[n].p99).into();
            figures["node_rps"] = rate[n].into();
            figures["sidecar_vs_node_rps"] = (rate[sc] / rate[n]).into();
            figures["node_idle_rss_kb"] = spawn[n].rss_kb.into();
        }
        if let Some(b) = baseline {
            figures["baseline_p50_us"] = us(lat[b].p50).into();
            figures["baseline_p99_us"] = us(lat[b].p99).into();
            figures["baseline_p50_ratio"] =
                (lat[b].p50.as_secs_f64() / lat[f].p50.as_secs_f64()).into();
            figures["baseline_p99_ratio"] =
                (lat[b].p99.as_secs_f64() / lat[f].p99.as_secs_f64()).into();
            figures["baseline_rps"] = rate[b].into();
            figures["baseline_first_response_ms"] = (spawn[b].median.as_secs_f64() * 1e3).into();
            figures["baseline_idle_rss_kb"] = spawn[b].rss_kb.into();
            if let Some(n) = node {
                figures["baseline_vs_node_rps"] = (rate[b] / rate[n]).into();
            }
        }
        let _ = writeln!(w, "{figures}");
    }
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(t.as_bytes());
    let _ = stdout.flush();
    if o.strict && !all_ok {
        std::process::exit(1);
    }
}

/// A line the server sent on its own (a JSON-RPC notification), not an answer.
fn is_notification(line: &[u8]) -> bool {
    const MARK: &[u8] = b"\"method\":\"auth_state_changed\"";
    line.windows(MARK.len()).any(|w| w == MARK)
}
