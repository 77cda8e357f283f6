//! The benchmark programs `scripts/bench.sh` reads, run in their smallest modes against the
//! binary under test: they must finish, check every response, and print their table and
//! the JSON line the script parses, with numbers in it. No timing target is asserted here
//! (a debug build on a busy machine proves nothing about speed); `scripts/bench.sh` does that.
//!
//! The examples are found next to the binary, as in `demo`: `cargo test` builds them.

use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::process::Command;

use crate::harness::{bin, clean_env, example};

/// Debug builds of the benchmarks, even in quick mode, take a few seconds at most.
const BENCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn run(program: PathBuf, args: &[&str]) -> (String, Value) {
    let mut cmd = Command::new(&program);
    clean_env(&mut cmd, &[]);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(BENCH_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {BENCH_TIMEOUT:?}", program.display()))
        .expect("run the benchmark");
    let stdout = String::from_utf8(stdout).expect("UTF-8 stdout");
    assert!(
        status.success(),
        "{} failed ({status}):\nstdout:\n{stdout}\nstderr:\n{}",
        program.display(),
        String::from_utf8_lossy(&stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let figures: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not the JSON figures ({e}): {last}"));
    (stdout, figures)
}

/// A figure that must be a positive, finite number.
fn positive(figures: &Value, key: &str) -> f64 {
    let v = figures[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {figures}"));
    assert!(v.is_finite() && v > 0.0, "{key} = {v} in {figures}");
    v
}

#[tokio::test]
async fn bench_backend_quick_prints_a_table_and_its_figures() {
    let (table, figures) = run(
        example("bench_backend"),
        &["--sidecar", bin(), "--quick", "--json"],
    )
    .await;
    assert_eq!(figures["bench"], "backend");
    assert_eq!(figures["n"], 200);
    for key in [
        "sidecar_p50_us",
        "sidecar_p99_us",
        "sidecar_mean_us",
        "direct_p50_us",
        "direct_p99_us",
        "direct_mean_us",
        "direct_current_p50_us",
        "ping_p50_us",
        "ratio_p50",
        "ratio_current_p50",
        "loaded_rss_kb",
    ] {
        positive(&figures, key);
    }
    assert!(positive(&figures, "sidecar_p99_us") >= positive(&figures, "sidecar_p50_us"));
    let ratio = positive(&figures, "sidecar_p50_us") / positive(&figures, "direct_p50_us");
    assert!((ratio - positive(&figures, "ratio_p50")).abs() < 1e-9);
    // A gated call has the sidecar's thread wait for the next line at least once.
    assert!(positive(&figures, "sidecar_switches_per_call") >= 1.0);

    // The human table: one row per series with three numbers, and a verdict line.
    for series in [
        "composio_list_connections through the sidecar",
        "direct reqwest (multi-thread runtime)",
        "direct reqwest (current-thread runtime)",
        "core_ping through the sidecar",
    ] {
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with(series))
            .unwrap_or_else(|| panic!("no row for {series} in:\n{table}"));
        let numbers = row
            .split_whitespace()
            .filter(|w| w.parse::<f64>().is_ok())
            .count();
        assert!(numbers >= 3, "row without p50/p99/mean: {row}");
    }
    for target in ["(target <= 1.2x)", "(target <= 1.4x)"] {
        assert!(
            table.contains(&format!("{target} PASS")) || table.contains(&format!("{target} MISS")),
            "no verdict line {target} in:\n{table}"
        );
    }
}

#[tokio::test]
async fn bench_client_json_mode_reports_every_figure() {
    let (table, figures) = run(
        example("bench_client"),
        &[
            "--floor",
            example("echo_floor").to_str().expect("UTF-8 path"),
            "--tokio-floor",
            example("echo_floor_tokio").to_str().expect("UTF-8 path"),
            "--sidecar",
            bin(),
            "--latency-n",
            "50",
            "--warmup",
            "5",
            "--throughput-n",
            "500",
            "--rounds",
            "1",
            "--spawns",
            "1",
            "--json",
        ],
    )
    .await;
    assert!(table.contains("sidecar/floor p50"), "{table}");
    assert_eq!(figures["bench"], "transport");
    for key in [
        "floor_p50_us",
        "floor_p99_us",
        "sidecar_p50_us",
        "sidecar_p99_us",
        "p50_ratio",
        "p99_ratio",
        "floor_rps",
        "sidecar_rps",
        "sidecar_first_response_ms",
        "sidecar_idle_rss_kb",
        "floor2_p50_us",
        "tokio_floor_p50_us",
        "tokio_floor_ratio",
    ] {
        positive(&figures, key);
    }
    assert!(table.contains("one-thread tokio floor"), "{table}");
    assert!(figures["all_targets_met"].is_boolean());
    assert!(
        figures.get("node_rps").is_none(),
        "no Node server was asked for"
    );
}

/// `--baseline`: a second sidecar interleaved with the first, its figures alongside (the
/// binary under test stands in for an older build).
#[tokio::test]
async fn both_benchmarks_take_a_baseline_binary() {
    let (table, figures) = run(
        example("bench_backend"),
        &["--sidecar", bin(), "--baseline", bin(), "--quick", "--json"],
    )
    .await;
    for key in [
        "baseline_p50_us",
        "baseline_ping_p50_us",
        "baseline_ratio_current_p50",
        "sidecar_vs_baseline_p50",
        "baseline_switches_per_call",
    ] {
        positive(&figures, key);
    }
    assert!(
        table.contains("composio_list_connections through the baseline"),
        "{table}"
    );

    let (table, figures) = run(
        example("bench_client"),
        &[
            "--floor",
            example("echo_floor").to_str().expect("UTF-8 path"),
            "--sidecar",
            bin(),
            "--baseline",
            bin(),
            "--latency-n",
            "50",
            "--warmup",
            "5",
            "--throughput-n",
            "500",
            "--rounds",
            "1",
            "--spawns",
            "1",
            "--json",
        ],
    )
    .await;
    for key in ["baseline_p50_us", "baseline_p50_ratio", "baseline_rps"] {
        positive(&figures, key);
    }
    assert!(table.contains("sidecar/baseline"), "{table}");
}
