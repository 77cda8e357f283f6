//! The TypeScript client's example (clients/typescript/examples/quickstart.mjs, the README's
//! Node snippet) against the binary: it runs as printed, and what it prints validates against
//! the contract. The client's own tests (`npm test` in clients/typescript) cover the rest.
//!
//! Node is required, and the client built (`npm ci && npm run build` in clients/typescript;
//! scripts/test.sh does both): without them this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{TIMEOUT, bin, clean_env};
use crate::schema::assert_valid_result;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

/// Runs `node <script>` in clients/typescript with the sidecar's environment cleaned (memory
/// keyring) plus `env`.
async fn node(script: &Path, env: &[(&str, &str)]) -> Output {
    let built = client_dir().join("dist/index.js");
    assert!(
        built.exists(),
        "{} is missing: run `npm ci && npm run build` in clients/typescript (scripts/test.sh does)",
        built.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .current_dir(client_dir())
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

/// The example's `<what> <json>` lines, in order.
fn steps(stdout: &str) -> Vec<(String, Value)> {
    stdout
        .lines()
        .map(|line| {
            let at = line
                .find(['{', '['])
                .or_else(|| line.rfind(' ').map(|i| i + 1))
                .unwrap_or_else(|| panic!("not an example line: {line}"));
            let value = serde_json::from_str(&line[at..])
                .unwrap_or_else(|e| panic!("not JSON after the label ({e}): {line}"));
            (line[..at].trim().to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn the_readme_node_example_runs_against_the_binary() {
    // A backend URL nothing listens on: signed out, the gated call answers auth_expired
    // before any connection is tried.
    let output = node(
        &client_dir().join("examples/quickstart.mjs"),
        &[
            ("CORE_SIDECAR_BIN", bin()),
            ("CORE_SIDECAR_BACKEND_URL", "http://127.0.0.1:9"),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        !stderr.contains("core-sidecar said:"),
        "a line matched no request:\n{stderr}"
    );

    let steps = steps(&stdout);
    // The notification may come before or after the first response.
    let calls: Vec<&(String, Value)> = steps
        .iter()
        .filter(|(label, _)| label != "auth_state_changed")
        .collect();
    let labels: Vec<&str> = calls.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "core_ping",
            "auth_get_state",
            "composio_list_toolkits error",
            "exit"
        ],
        "{stdout}"
    );
    assert_valid_result("core_ping", &calls[0].1);
    assert_eq!(calls[0].1, json!({"pong": true}));
    assert_valid_result("auth_get_state", &calls[1].1);
    assert_eq!(calls[1].1["isAuthenticated"], false);
    assert_eq!(calls[1].1["persistent"], false, "the memory keyring");
    assert_eq!(
        calls[2].1,
        json!({"code": -32001, "kind": "auth_expired"}),
        "signed out, a gated call is auth_expired"
    );
    assert_eq!(calls[3].1, json!(0), "the sidecar exits 0 on EOF");

    let events: Vec<&Value> = steps
        .iter()
        .filter(|(label, _)| label == "auth_state_changed")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(
        events,
        [&json!({"event": "INITIAL_SESSION", "userId": null})],
        "{stdout}"
    );
}
