//! The README's Rust example, run by `cargo test -p core-sidecar-client` (tests/binary.rs).
//!
//! Starts the sidecar (`CORE_SIDECAR_BIN`, else `core-sidecar` on the PATH), waits for
//! INITIAL_SESSION, reads the auth state, tries a gated call without a session (a typed
//! `auth_expired`), and closes it.
//!
//! ```text
//! CORE_SIDECAR_BIN=target/debug/core-sidecar cargo run -p core-sidecar-client --example quickstart
//! ```

use core_sidecar_client::{
    AuthGetState, ComposioListToolkits, CoreVersion, Error, ErrorKind, EventName, Options, Sidecar,
};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut sidecar = Sidecar::spawn(Options {
        env: vec![
            ("CORE_SIDECAR_KEYRING".into(), "memory".into()),
            // The dev backend of scripts/demo.sh; nothing is sent to it without a session.
            (
                "CORE_SIDECAR_BACKEND_URL".into(),
                "http://127.0.0.1:8787".into(),
            ),
        ],
        ..Options::default()
    })
    .await?;
    let mut events = sidecar.notifications().expect("taken once");

    let version = sidecar.call(&CoreVersion {}).await?;
    println!(
        "{} {} (protocol {})",
        version.name, version.version, version.protocol
    );

    let first = events.next().await.expect("INITIAL_SESSION");
    assert_eq!(first.event, EventName::InitialSession);
    let state = sidecar.call(&AuthGetState {}).await?;
    println!("signed in: {}", state.is_authenticated);

    match sidecar.call(&ComposioListToolkits {}).await {
        Err(Error::Call {
            kind: Some(ErrorKind::AuthExpired),
            ..
        }) => println!("no session yet: sign in first"),
        other => println!("unexpected: {other:?}"),
    }

    let status = sidecar.close().await?;
    println!("exited: {status}");
    Ok(())
}
