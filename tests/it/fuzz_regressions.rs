//! Inputs found by fuzzing the transport (`fuzz/`, `scripts/fuzz.sh`), replayed in process
//! through the real method table: memory keyring, no backend URL, no test hooks.

use core_sidecar::router;
use core_sidecar::rpc::{Dispatcher, Reply};
use serde_json::Value;

/// The method table as `app::run` builds it: memory keyring, no backend or auth server.
fn dispatcher() -> Dispatcher {
    Dispatcher::new(router::methods(crate::method_table::app(false)))
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
/// UTF-8, so this line was answered as a valid request (id 3). The wire rules: invalid
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

/// Reachable by `request_parsing` (the `expires_in` seed and the dictionary's i64::MAX): an
/// `expires_in` near `i64::MAX` overflowed `now + seconds` in `auth_store_session`, a panic
/// with overflow checks (debug builds: -32603 and a Sentry event from client input) and a
/// wrapped, negative expiry in release. Client input must never be an internal error.
#[tokio::test]
async fn huge_expires_in_is_not_an_internal_error() {
    for expires_in in [i64::MAX, i64::MIN] {
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"auth_store_session","params":{{"access_token":"t","expires_in":{expires_in}}}}}"#
        );
        let reply = reply(line.as_bytes()).await.expect("a reply");
        assert_ne!(error_code(&reply), Some(-32603), "{reply}");
        if let Some(expires_at) = reply["result"]["expiresAt"].as_i64() {
            assert_eq!(
                expires_at.signum(),
                expires_in.signum(),
                "the expiry wrapped around: {reply}"
            );
        }
    }
}
