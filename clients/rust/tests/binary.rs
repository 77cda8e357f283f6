//! The client against the real binary: typed calls and errors, notifications in order, a
//! pending call ended by the process's exit, a clean close, and the README example.
//!
//! The binary is `CORE_SIDECAR_BIN`, else the workspace's `target/debug/core-sidecar`
//! (`cargo build --bins` first; scripts/test.sh does). Missing, the tests fail: they do not
//! skip.

use std::path::PathBuf;
use std::time::Duration;

use core_sidecar_client::{
    AuthGetState, AuthSignInWithOauth, AuthStoreSession, ComposioListToolkits, CorePing, Error,
    ErrorKind, EventName, Options, Request, Sidecar, StderrTo,
};
use futures::StreamExt;
use serde::Serialize;

/// `{"alg":"HS256"}.{"sub":"1"}.signature`: JWT-shaped, never valid anywhere.
const FAKE_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
const WAIT: Duration = Duration::from_secs(20);

fn binary() -> PathBuf {
    let path = std::env::var_os("CORE_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/core-sidecar")
        });
    assert!(
        path.exists(),
        "no sidecar binary at {}: run `cargo build --bins` (or set CORE_SIDECAR_BIN)",
        path.display()
    );
    path
}

fn options(env: &[(&str, &str)]) -> Options {
    let mut all = vec![
        ("CORE_SIDECAR_KEYRING", "memory"),
        ("RUST_LOG", "warn"),
        // Nothing listens there: no test sends anything to the backend.
        ("CORE_SIDECAR_BACKEND_URL", "http://127.0.0.1:9"),
    ];
    all.extend_from_slice(env);
    Options {
        path: Some(binary()),
        env: all
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stderr: StderrTo::Null,
        ..Options::default()
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("no answer in time")
}

#[tokio::test]
async fn typed_calls_errors_and_notifications_in_order() {
    let mut sidecar = within(Sidecar::spawn(options(&[]))).await.unwrap();
    let mut events = sidecar.notifications().unwrap();
    assert!(sidecar.notifications().is_none(), "taken once");

    assert!(within(sidecar.call(&CorePing {})).await.unwrap().pong);
    let first = within(events.next()).await.unwrap();
    assert_eq!(first.event, EventName::InitialSession);
    assert!(!first.state.is_authenticated);

    // A gated call with no session: a typed auth_expired with its reason.
    let error = within(sidecar.call(&ComposioListToolkits {}))
        .await
        .unwrap_err();
    match &error {
        Error::Call { code, kind, .. } => {
            assert_eq!(*code, -32001);
            assert_eq!(*kind, Some(ErrorKind::AuthExpired));
        }
        other => panic!("expected a call error: {other:?}"),
    }
    assert_eq!(error.reason(), Some("no_session"));
    assert!(!error.retryable());

    // No auth server configured: OAuth is unavailable (retryable).
    let error = within(sidecar.call(&AuthSignInWithOauth {
        provider: "github".into(),
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert!(matches!(
        error,
        Error::Call {
            kind: Some(ErrorKind::Unavailable),
            ..
        }
    ));
    assert!(error.retryable());

    // A stored session: SIGNED_IN, with the state the call returned; never a token.
    let state = within(
        sidecar.call(&AuthStoreSession {
            access_token: FAKE_JWT.into(),
            expires_in: Some(3600),
            user: Some(
                serde_json::json!({"id": "user-1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(state.is_authenticated);
    assert_eq!(state.user_id.as_deref(), Some("user-1"));
    let signed_in = within(events.next()).await.unwrap();
    assert_eq!(signed_in.event, EventName::SignedIn);
    assert_eq!(signed_in.state, state);
    assert_eq!(within(sidecar.call(&AuthGetState {})).await.unwrap(), state);

    let status = within(sidecar.close()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `core_test_sleep`, a test hook of the binary (not in the contract).
#[derive(Serialize)]
struct TestSleep {
    ms: u64,
}

impl Request for TestSleep {
    const METHOD: &'static str = "core_test_sleep";
    type Response = serde_json::Value;
}

#[tokio::test]
async fn a_pending_call_ends_when_the_sidecar_dies() {
    let sidecar = within(Sidecar::spawn(options(&[("CORE_SIDECAR_TEST_HOOKS", "1")])))
        .await
        .unwrap();
    let pid = sidecar.id().unwrap();
    let pending = sidecar.call(&TestSleep { ms: 60_000 });
    let kill = async {
        // Once the request is surely written: a ping sent after it is answered first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    let (outcome, ()) = within(async { tokio::join!(pending, kill) }).await;
    assert!(matches!(outcome, Err(Error::Exited)), "{outcome:?}");
}

#[test]
fn the_readme_shows_the_example_as_it_is() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/quickstart.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md's Rust example is not clients/rust/examples/quickstart.rs as it is"
    );
}

#[tokio::test]
async fn the_readme_example_runs() {
    let output = tokio::process::Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "core-sidecar-client",
            "--example",
            "quickstart",
        ])
        .env("CORE_SIDECAR_BIN", binary())
        .env("RUST_LOG", "warn")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the example finished")
        .expect("cargo ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("signed in: false"), "{stdout}");
    assert!(stdout.contains("no session yet: sign in first"), "{stdout}");
    assert!(stdout.contains("exited: exit status: 0"), "{stdout}");
}
