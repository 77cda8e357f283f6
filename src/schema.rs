//! The machine-readable contract: schema/openrpc.json, served by `rpc.discover`.

use std::sync::LazyLock;

use serde_json::Value;

const OPENRPC: &str = include_str!("../schema/openrpc.json");

/// The OpenRPC document, parsed once.
pub fn openrpc() -> &'static Value {
    static DOCUMENT: LazyLock<Value> =
        LazyLock::new(|| serde_json::from_str(OPENRPC).expect("schema/openrpc.json is valid JSON"));
    &DOCUMENT
}
