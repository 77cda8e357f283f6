//! The method table (src/router.rs) against the contract it generates: the jsonrpsee module
//! registers exactly the documented methods, test hooks aside. Builds the whole app in
//! process, as `app::run` does (memory keyring, no backend or auth server).

use std::collections::BTreeSet;

use clap::Parser;
use core_sidecar::app::build_app;
use core_sidecar::config::{Config, KeyringKind};
use core_sidecar::router::{self, App};
use core_sidecar::rpc::Outbox;
use core_sidecar::schema;
use core_sidecar::telemetry::Telemetry;

/// The app as `app::run` builds it: memory keyring, no backend or auth server.
pub fn app(test_hooks: bool) -> App {
    let mut config = Config::try_parse_from(["core-sidecar"]).expect("default config");
    config.keyring = KeyringKind::Memory;
    config.backend_url = None;
    config.auth_url = None;
    config.test_hooks = test_hooks;
    build_app(&config, &Outbox::new(std::io::sink()), Telemetry::new())
        .expect("the app builds without a backend URL")
}

/// The names the jsonrpsee module registers, test hooks left out.
fn registered(test_hooks: bool) -> BTreeSet<String> {
    let module = router::methods(app(test_hooks));
    router::method_names(&module)
        .into_iter()
        .filter(|name| !schema::is_test_hook(name))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_document_lists_exactly_the_registered_methods() {
    let documented: BTreeSet<String> = crate::schema::documented_methods()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(registered(false), documented);
    let specs: Vec<&str> = router::method_specs().iter().map(|s| s.name).collect();
    assert_eq!(
        crate::schema::documented_methods(),
        specs,
        "in the table's order"
    );
}

#[test]
fn test_hooks_add_only_test_methods() {
    assert_eq!(registered(true), registered(false));
    let module = router::methods(app(true));
    assert!(router::method_names(&module).contains(&"core_test_panic"));
}

#[test]
fn each_method_is_registered_once() {
    let names: Vec<&str> = router::method_specs().iter().map(|s| s.name).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        names.len(),
        unique.len(),
        "duplicate method names: {names:?}"
    );
    assert!(names.iter().all(|name| !schema::is_test_hook(name)));
}
