//! Inputs found by fuzzing the transport (`fuzz/`, `scripts/fuzz.sh`), replayed through the
//! real method table: memory keyring, no backend URL, no test hooks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Dispatcher, Reply};
use crate::backend::Backend;
use crate::config::KeyringKind;
use crate::router::{self, App};
use crate::session::gate::Gate;
use crate::session::{EventSink, Sessions, StoreOptions};

fn dispatcher() -> Dispatcher {
    let events: EventSink = Arc::new(|_| {});
    let sessions = Sessions::new(
        StoreOptions {
            kind: KeyringKind::Memory,
            service: "core-sidecar-test".into(),
            profile: "fuzz-regressions".into(),
            timeout: Duration::from_secs(5),
        },
        events,
    );
    let backend = Backend::new(None, Duration::from_secs(5)).expect("HTTP client");
    Dispatcher::new(router::methods(App {
        gate: Gate::new(sessions.clone(), backend),
        sessions,
        test_hooks: false,
    }))
}

async fn reply(line: &[u8]) -> Option<Value> {
    let reply = match dispatcher().handle_line(line) {
        Reply::Now(reply) => reply,
        Reply::Later(future) => future.await,
    };
    reply.map(|reply| serde_json::from_str(&reply).expect("a reply is JSON"))
}

fn error_code(reply: &Value) -> Option<i64> {
    reply["error"]["code"].as_i64()
}

/// Found by `request_parsing`: serde_json skips an unknown member without checking its
/// UTF-8, so this line was answered as a valid request (id 3). DESIGN.md section 2: invalid
/// UTF-8 is a parse error.
#[tokio::test]
async fn invalid_utf8_in_an_ignored_member_is_a_parse_error() {
    for line in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"core_ping\",\"x\":\"\xb7\"}"[..],
        b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"auth_get_state\",\"i]params\":{\"token\":\"(\xb79.=y\"}}",
        b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"core_ping\",\"x\":\"\xff\"}]",
    ] {
        let reply = reply(line).await.expect("a parse error");
        assert_eq!(error_code(&reply), Some(-32700), "{reply}");
        assert_eq!(reply["id"], Value::Null, "{reply}");
    }
}

/// Checked by `request_parsing`'s batch oracle: serde's derived `Deserialize` also takes a
/// struct as a sequence, so a batch member `["2.0", 1, "core_ping"]` was run as a request.
/// A batch member that is not an object is an invalid request.
#[tokio::test]
async fn array_batch_member_is_an_invalid_request() {
    let reply = reply(br#"[["2.0",1,"core_ping"],{"jsonrpc":"2.0","id":2,"method":"core_ping"}]"#)
        .await
        .expect("replies");
    let replies = reply.as_array().expect("a batch reply");
    assert_eq!(replies.len(), 2, "{reply}");
    assert_eq!(error_code(&replies[0]), Some(-32600), "{reply}");
    assert_eq!(replies[0]["id"], Value::Null, "{reply}");
    assert_eq!(replies[1]["id"], 2, "{reply}");
    assert!(replies[1]["result"].is_object(), "{reply}");
}
