//! scripts/js/client.mjs, the Node client example, against the real binary: its demo runs
//! end to end, and its exported class matches responses to requests out of order.
//!
//! Node is required (scripts/test.sh installs it): without it these tests fail, they do not
//! skip.

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{TIMEOUT, bin, clean_env};
use crate::schema::{assert_valid_error, assert_valid_notification, assert_valid_result};

fn client_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/js/client.mjs")
        .display()
        .to_string()
}

/// Runs `node <args>` with the sidecar's environment cleaned (memory keyring) plus `env`.
async fn node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("node");
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, env);
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run `node` ({e}): Node.js >= 18 is required for the JS client tests; scripts/test.sh installs it")
    });
    tokio::time::timeout(TIMEOUT * 2, child.wait_with_output())
        .await
        .expect("node did not finish")
        .expect("node output")
}

/// The demo's `<what> <json>` lines, in order.
fn steps(stdout: &str) -> Vec<(String, Value)> {
    stdout
        .lines()
        .map(|line| {
            let at = line
                .find(['{', '['])
                .or_else(|| line.rfind(' ').map(|i| i + 1))
                .unwrap_or_else(|| panic!("not a demo line: {line}"));
            let value = serde_json::from_str(&line[at..])
                .unwrap_or_else(|e| panic!("not JSON after the label ({e}): {line}"));
            (line[..at].trim().to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn the_demo_runs_against_the_binary() {
    // A backend URL nothing listens on: signed out, the gated call answers auth_expired
    // before any connection is tried.
    let output = node(
        &[&client_path(), bin()],
        &[("CORE_SIDECAR_BACKEND_URL", "http://127.0.0.1:9")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for token in ["demo-access-token-not-a-real-jwt", "demo-refresh-token"] {
        assert!(
            !stdout.contains(token) && !stderr.contains(token),
            "a token was printed"
        );
    }

    let steps = steps(&stdout);
    let labels: Vec<&str> = steps.iter().map(|(label, _)| label.as_str()).collect();
    // Notifications may come before or after the response of the call that caused them.
    let calls: Vec<&str> = labels
        .iter()
        .copied()
        .filter(|l| !l.starts_with("notification"))
        .collect();
    assert_eq!(
        calls,
        [
            "core_ping",
            "core_version",
            "auth_get_state",
            "auth_store_session",
            "auth_get_state",
            "auth_clear_session",
            "auth_get_state",
            "composio_list_toolkits error",
            "exit",
        ],
        "{stdout}"
    );
    let results: Vec<(&str, &Value)> = steps
        .iter()
        .filter(|(l, _)| !l.starts_with("notification") && !l.contains(' ') && l != "exit")
        .map(|(l, v)| (l.as_str(), v))
        .collect();
    for (method, result) in &results {
        assert_valid_result(method, result);
    }
    assert_eq!(results[0].1, &json!({"pong": true}));
    assert_eq!(results[1].1["name"], "core-sidecar");
    assert_eq!(results[2].1["isAuthenticated"], false);
    assert_eq!(results[3].1["isAuthenticated"], true);
    assert_eq!(results[3].1["userId"], "demo-user");
    assert_eq!(results[4].1["userId"], "demo-user");
    assert_eq!(results[5].1, &json!({"removed": true}));
    assert_eq!(results[6].1["isAuthenticated"], false);

    let notifications: Vec<&Value> = steps
        .iter()
        .filter(|(l, _)| l == "notification auth_state_changed")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(notifications.len(), 3, "{stdout}");
    assert_eq!(notifications[0]["event"], "INITIAL_SESSION", "{stdout}");
    for params in &notifications {
        assert_valid_notification(
            &json!({"jsonrpc": "2.0", "method": "auth_state_changed", "params": params}),
        );
    }
    assert_eq!(notifications[1]["event"], "SIGNED_IN");
    assert_eq!(notifications[2]["event"], "SIGNED_OUT");
    assert_eq!(notifications[2]["reason"], "signed_out");

    let (_, error) = &steps[labels.iter().position(|l| l.ends_with("error")).unwrap()];
    assert_eq!(error["code"], -32001);
    assert_eq!(error["kind"], "auth_expired");
    assert_valid_error(&json!({"code": error["code"], "message": "m", "data": error["data"]}));
    assert_eq!(
        steps.last().unwrap().1,
        json!(0),
        "the sidecar exits 0 on EOF"
    );
}

/// The exported class as a shell uses it: concurrent requests answered out of order, each
/// promise settled by its own response, errors as `RpcError`, close -> exit code 0.
const CONCURRENT: &str = r#"
import { SidecarClient, RpcError } from './scripts/js/client.mjs';
const sidecar = SidecarClient.spawn(process.argv[1], { stderr: 'ignore' });
const order = [];
const slow = sidecar.request('core_test_sleep', { ms: 300 }).then((r) => { order.push('slow'); return r; });
const pings = Promise.all(Array.from({ length: 20 }, () => sidecar.request('core_ping')))
  .then((r) => { order.push('pings'); return r; });
const bad = sidecar.request('composio_authorize', { toolkit: 7 }).catch((e) => e);
const [slowResult, pingResults, error] = await Promise.all([slow, pings, bad]);
console.log(JSON.stringify({
  order,
  slow: slowResult,
  pings: pingResults.length,
  allPong: pingResults.every((r) => r.pong === true),
  isRpcError: error instanceof RpcError,
  code: error.code,
  kind: error.kind,
  field: error.data?.field,
  exit: await sidecar.close(),
  pending: sidecar.pending.size,
}));
"#;

#[tokio::test]
async fn the_client_class_matches_out_of_order_responses() {
    let output = node(
        &["--input-type=module", "-e", CONCURRENT, bin()],
        &[("CORE_SIDECAR_TEST_HOOKS", "1")],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        report,
        json!({
            "order": ["pings", "slow"],
            "slow": {"pong": true},
            "pings": 20,
            "allPong": true,
            "isRpcError": true,
            "code": -32602,
            "kind": "invalid_params",
            "field": "toolkit",
            "exit": 0,
            "pending": 0,
        })
    );
}
