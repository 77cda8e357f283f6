//! The machine-readable contract: schema/openrpc.json, served by `rpc.discover`.
//!
//! schema/openrpc.json is generated from the files beside it (schema/index.json, one params
//! and one result JSON Schema per method under schema/methods/, shared definitions, the
//! notification and the error object); see schema/README.md. The integration tests check it
//! is up to date (`tests/it/schema.rs`), and the unit tests below check that it lists exactly
//! the methods of the router.

use std::sync::LazyLock;

use serde_json::Value;

const OPENRPC: &str = include_str!("../schema/openrpc.json");

/// The OpenRPC document, parsed once.
pub fn openrpc() -> &'static Value {
    static DOCUMENT: LazyLock<Value> =
        LazyLock::new(|| serde_json::from_str(OPENRPC).expect("schema/openrpc.json is valid JSON"));
    &DOCUMENT
}

/// The names of the methods the OpenRPC document describes, in its order.
pub fn method_names() -> Vec<&'static str> {
    openrpc()["methods"]
        .as_array()
        .map(|methods| methods.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default()
}

/// Methods registered only for the integration tests (`CORE_SIDECAR_TEST_HOOKS=1`): not part
/// of the contract, so not in the document.
pub fn is_test_hook(method: &str) -> bool {
    method.starts_with("core_test_")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::Parser;

    use super::*;
    use crate::config::{Config, KeyringKind};
    use crate::router;
    use crate::rpc::Outbox;

    /// The router's method names, test hooks left out, built as `app::run` builds it.
    fn router_methods(test_hooks: bool) -> BTreeSet<String> {
        let mut config = Config::try_parse_from(["core-sidecar"]).expect("default config");
        config.keyring = KeyringKind::Memory;
        config.backend_url = None;
        config.auth_url = None;
        config.test_hooks = test_hooks;
        let app = crate::app::build_app(&config, &Outbox::new(std::io::sink()))
            .expect("the app builds without a backend URL");
        let module = router::methods(app);
        router::method_names(&module)
            .into_iter()
            .filter(|name| !is_test_hook(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn openrpc_lists_exactly_the_methods_of_the_router() {
        let documented: BTreeSet<String> = method_names().into_iter().map(String::from).collect();
        let registered = router_methods(false);
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(
            undocumented.is_empty() && unregistered.is_empty(),
            "schema/openrpc.json and src/router.rs disagree.\n\
             registered but not in openrpc.json (add schema/methods/<name>.params.json and \
             .result.json, list it in schema/index.json, run scripts/gen-openrpc.sh): \
             {undocumented:?}\n\
             in openrpc.json but not registered: {unregistered:?}"
        );
    }

    #[test]
    fn test_hooks_add_only_test_methods() {
        assert_eq!(router_methods(true), router_methods(false));
    }

    #[test]
    fn document_names_each_method_once() {
        let names = method_names();
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(
            names.len(),
            unique.len(),
            "duplicate method names: {names:?}"
        );
        assert_eq!(openrpc()["openrpc"], "1.3.2");
        assert!(names.iter().all(|name| !is_test_hook(name)));
    }
}
