//! schema/: the machine-readable contract, generated from the Rust types (src/schema.rs,
//! src/router.rs). Everything here is driven by the document and the method table: a new
//! method needs no line in this file.
//!
//! - schema/openrpc.json is what the generator produces, byte for byte: the test fails when
//!   it is stale, and `UPDATE_SCHEMA=1` (scripts/gen-openrpc.sh) rewrites it. `rpc.discover`
//!   through the real binary serves exactly that text.
//! - the document is well-formed OpenRPC 1.3.2; every schema in it is valid draft-07 and
//!   2020-12 (the subset meaning the same in both) and every `$ref` resolves; the error
//!   catalog is the library's; each params schema has exactly the fields serde reads
//!   (aliases included).
//! - results, notifications and errors the real binary sends validate against their
//!   schemas: every gated method is called with the example of its params schema (or `{}`)
//!   against the fake backend, with and without a session. The params schemas accept and
//!   refuse what the server does.
//!
//! Other test modules can check what they receive with [`assert_valid_result`],
//! [`assert_valid_response`], [`assert_valid_error`] and [`assert_valid_notification`].
#![allow(dead_code)] // the assert helpers are for every test module

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::harness::{Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT};

// ---------------------------------------------------------------------------------------
// schema/openrpc.json: generated, committed, served
// ---------------------------------------------------------------------------------------

fn openrpc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/openrpc.json")
}

fn committed_text() -> String {
    std::fs::read_to_string(openrpc_path()).expect("read schema/openrpc.json")
}

/// The document generated from the method table (what the binary serves).
fn served() -> &'static Value {
    core_sidecar::router::openrpc()
}

/// The names of the documented methods, in the document's order.
pub fn documented_methods() -> Vec<&'static str> {
    served()["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().expect("method name"))
        .collect()
}

#[test]
fn openrpc_json_is_generated_from_the_code() {
    let generated = core_sidecar::schema::openrpc_text(served());
    let committed = std::fs::read_to_string(openrpc_path()).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(openrpc_path(), generated).expect("write schema/openrpc.json");
        return;
    }
    panic!(
        "schema/openrpc.json is stale: it is not what the method table (src/router.rs) and \
         the Rust types generate. Run scripts/gen-openrpc.sh (UPDATE_SCHEMA=1 cargo test \
         --test it schema::openrpc_json_is_generated_from_the_code) and commit the result."
    );
}

#[tokio::test]
async fn rpc_discover_serves_the_committed_file_byte_for_byte() {
    let mut sidecar = Sidecar::spawn(&[]);
    let response = sidecar.request("rpc.discover", Value::Null).await;
    let document = response
        .get("result")
        .unwrap_or_else(|| panic!("rpc.discover: {response}"));
    assert_valid_result("rpc.discover", document);
    let received = core_sidecar::schema::openrpc_text(document);
    let committed = committed_text();
    if received != committed {
        let line = received
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "rpc.discover differs from schema/openrpc.json (first at {line}); run \
             scripts/gen-openrpc.sh"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The document, statically
// ---------------------------------------------------------------------------------------

/// Every `$ref` in a value, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                if key == "$ref" {
                    out.push((at.to_string(), value.as_str().unwrap_or("").to_string()));
                } else {
                    refs(value, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn assert_only_keys(object: &Value, allowed: &[&str], what: &str) {
    for key in object
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object"))
        .keys()
    {
        assert!(
            allowed.contains(&key.as_str()) || key.starts_with("x-"),
            "{what}: `{key}` is not an OpenRPC 1.3.2 field"
        );
    }
}

fn assert_schema_in_both_dialects(schema: &Value, what: &str) {
    // OpenRPC 1.3.2 reads its schemas as draft-07; they are generated in the subset that
    // means the same in draft-07 and 2020-12.
    if let Err(e) = jsonschema::draft7::meta::validate(schema) {
        panic!("{what}: not a valid draft-07 schema: {e}");
    }
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        panic!("{what}: not a valid 2020-12 schema: {e}");
    }
    let text = schema.to_string();
    for keyword in [
        "$defs",
        "definitions",
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$anchor",
        "$dynamicRef",
    ] {
        assert!(
            !text.contains(&format!("\"{keyword}\"")),
            "{what}: `{keyword}` does not mean the same in draft-07 (OpenRPC 1.3.2's dialect)"
        );
    }
    // In draft-07 a `$ref` ignores its siblings.
    let mut all = Vec::new();
    refs(schema, "", &mut all);
    for (at, _) in all {
        let holder = if at.is_empty() {
            schema
        } else {
            schema.pointer(&at).expect("pointer")
        };
        assert_eq!(
            holder.as_object().map(|o| o.len()),
            Some(1),
            "{what}{at}: a `$ref` with siblings means different things in draft-07 and 2020-12"
        );
    }
}

fn assert_content_descriptor(descriptor: &Value, what: &str) {
    assert_only_keys(
        descriptor,
        &[
            "name",
            "description",
            "summary",
            "schema",
            "required",
            "deprecated",
        ],
        what,
    );
    assert!(
        descriptor["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{what}: no name"
    );
    assert!(descriptor["required"].is_boolean() || descriptor.get("required").is_none());
    assert_schema_in_both_dialects(&descriptor["schema"], what);
}

#[test]
fn the_openrpc_document_is_well_formed() {
    let doc = served();
    assert_only_keys(
        doc,
        &["openrpc", "info", "servers", "methods", "components"],
        "document",
    );
    assert_eq!(doc["openrpc"], "1.3.2");
    assert_only_keys(
        &doc["info"],
        &[
            "title",
            "description",
            "termsOfService",
            "version",
            "contact",
            "license",
        ],
        "info",
    );
    assert_eq!(doc["info"]["title"], "core-sidecar");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let components = &doc["components"];
    let errors = components["errors"].as_object().expect("components.errors");
    let tags = components["tags"].as_object().expect("components.tags");
    for (name, schema) in components["schemas"]
        .as_object()
        .expect("components.schemas")
    {
        assert_schema_in_both_dialects(schema, &format!("components.schemas.{name}"));
        assert!(
            resolved(schema)["description"].is_string(),
            "components.schemas.{name} has no description: give its type a doc comment"
        );
    }
    for (key, error) in errors {
        assert_only_keys(
            error,
            &["code", "message", "data"],
            &format!("components.errors.{key}"),
        );
        assert!(
            error["code"].is_i64() && error["message"].is_string(),
            "{key}: {error}"
        );
    }

    let mut names = BTreeSet::new();
    for method in doc["methods"].as_array().expect("methods") {
        let name = method["name"].as_str().expect("method name");
        assert!(names.insert(name), "{name} listed twice");
        assert!(
            !core_sidecar::schema::is_test_hook(name),
            "{name}: a test hook"
        );
        assert_only_keys(
            method,
            &[
                "name",
                "description",
                "summary",
                "tags",
                "paramStructure",
                "params",
                "result",
                "errors",
                "links",
                "examples",
                "deprecated",
            ],
            name,
        );
        assert!(
            method["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}: no summary"
        );
        assert_eq!(method["paramStructure"], "by-name", "{name}");
        for tag in method["tags"].as_array().expect("tags") {
            let tag = tag["name"].as_str().expect("tag name");
            assert!(tags.contains_key(tag), "{name}: unknown tag {tag}");
        }
        assert_eq!(
            method["tags"].as_array().map(Vec::len),
            Some(1),
            "{name}: exactly one of public or gated"
        );
        for param in method["params"].as_array().expect("params") {
            assert_content_descriptor(param, &format!("{name} param"));
        }
        assert_content_descriptor(&method["result"], &format!("{name} result"));
        assert!(
            method["result"]["description"].is_string(),
            "{name}: its result type has no doc comment"
        );
        let params = &method["x-paramsSchema"];
        assert_schema_in_both_dialects(params, &format!("{name} params"));
        assert_eq!(params["type"], "object", "{name}: params are by name");
        let codes: BTreeSet<i64> = method["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                let reference = e["$ref"].as_str().expect("error $ref");
                let key = reference
                    .strip_prefix("#/components/errors/")
                    .unwrap_or_else(|| panic!("{name}: {reference}"));
                errors
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: no error {key}"))["code"]
                    .as_i64()
                    .expect("code")
            })
            .collect();
        assert!(
            codes.contains(&-32602) && codes.contains(&-32603),
            "{name}: {codes:?}"
        );
        if method["tags"][0]["name"] == "gated" {
            for code in -32005..=-32001 {
                assert!(
                    codes.contains(&code),
                    "{name}: gated methods can fail with {code}"
                );
            }
        }
    }

    // Every reference resolves within the document.
    let mut all = Vec::new();
    refs(doc, "", &mut all);
    for (at, reference) in all {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external reference {reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: {reference} does not resolve"
        );
    }
}

/// A schema, or the component its `$ref` names.
fn resolved(schema: &Value) -> &Value {
    match schema["$ref"].as_str() {
        Some(reference) => served()
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve")),
        None => schema,
    }
}

#[test]
fn params_schemas_have_exactly_the_fields_serde_reads() {
    // schemars does not read serde aliases: a forgotten `schema::Alias` shows here.
    for spec in core_sidecar::router::method_specs() {
        let method = served()["methods"]
            .as_array()
            .expect("methods")
            .iter()
            .find(|m| m["name"] == spec.name)
            .expect("every spec is in the document");
        let in_schema: BTreeSet<&str> = method["x-paramsSchema"]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: params schema without properties", spec.name))
            .keys()
            .map(String::as_str)
            .collect();
        let read_by_serde: BTreeSet<&str> = (spec.params_fields)()
            .unwrap_or_else(|| panic!("{}: params are not a struct", spec.name))
            .iter()
            .copied()
            .collect();
        assert_eq!(
            in_schema, read_by_serde,
            "{}: the params schema and serde disagree",
            spec.name
        );
        let descriptors: BTreeSet<&str> = method["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert_eq!(descriptors, in_schema, "{}", spec.name);
    }
}

#[test]
fn the_error_catalog_is_the_librarys() {
    use core_sidecar::error::ErrorKind;
    let doc = served();
    let catalog = doc["components"]["errors"].as_object().expect("errors");
    assert_eq!(catalog.len(), ErrorKind::ALL.len());
    for kind in ErrorKind::ALL {
        let entry = catalog
            .values()
            .find(|e| e["code"] == kind.code())
            .unwrap_or_else(|| panic!("no catalog entry with code {}", kind.code()));
        assert_eq!(entry["data"]["kind"], kind.as_str(), "{entry}");
        assert_valid_error(entry);
    }
    let codes: BTreeSet<i64> = catalog
        .values()
        .map(|e| e["code"].as_i64().unwrap())
        .collect();
    let expected: BTreeSet<i64> = [
        -32001, -32002, -32003, -32004, -32005, -32006, -32602, -32603,
    ]
    .into();
    assert_eq!(codes, expected);
}

// ---------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------

/// The validators of one schema of the document, read as draft-07 (OpenRPC's dialect) and
/// as 2020-12.
struct Validators {
    what: String,
    all: Vec<(&'static str, Validator)>,
}

impl Validators {
    fn new(what: String, pointer: &str) -> Self {
        let mut root = served().clone();
        root["$ref"] = json!(format!("#{pointer}"));
        let mut all = Vec::new();
        for (label, draft) in [("draft-07", Draft::Draft7), ("2020-12", Draft::Draft202012)] {
            let validator = jsonschema::options()
                .with_draft(draft)
                .build(&root)
                .unwrap_or_else(|e| panic!("{what} ({label}) does not compile: {e}"));
            all.push((label, validator));
        }
        Validators { what, all }
    }

    fn assert_valid(&self, instance: &Value) {
        for (label, validator) in &self.all {
            let errors: Vec<String> = validator
                .iter_errors(instance)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "{} ({label}) rejects {instance}:\n  {}",
                self.what,
                errors.join("\n  ")
            );
        }
    }

    fn is_valid(&self, instance: &Value) -> bool {
        let verdicts: Vec<bool> = self.all.iter().map(|(_, v)| v.is_valid(instance)).collect();
        assert!(
            verdicts.iter().all(|v| *v == verdicts[0]),
            "{}: the dialects disagree about {instance}: {verdicts:?}",
            self.what
        );
        verdicts[0]
    }
}

struct Registry {
    results: HashMap<String, Validators>,
    params: HashMap<String, Validators>,
    notifications: HashMap<String, Validators>,
    error: Validators,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let doc = served();
    let mut results = HashMap::new();
    let mut params = HashMap::new();
    for (i, method) in doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .enumerate()
    {
        let name = method["name"].as_str().expect("name").to_string();
        results.insert(
            name.clone(),
            Validators::new(
                format!("{name} result schema"),
                &format!("/methods/{i}/result/schema"),
            ),
        );
        params.insert(
            name.clone(),
            Validators::new(
                format!("{name} params schema"),
                &format!("/methods/{i}/x-paramsSchema"),
            ),
        );
    }
    let mut notifications = HashMap::new();
    for (i, notification) in doc["x-notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .enumerate()
    {
        let name = notification["name"].as_str().expect("name").to_string();
        notifications.insert(
            name.clone(),
            Validators::new(
                format!("{name} notification params schema"),
                &format!("/x-notifications/{i}/x-paramsSchema"),
            ),
        );
    }
    let error = Validators::new("error schema".into(), "/components/schemas/Error");
    Registry {
        results,
        params,
        notifications,
        error,
    }
});

/// Panics unless `result` is valid for `method`'s result schema (the served OpenRPC
/// document, read as draft-07 and as 2020-12).
pub fn assert_valid_result(method: &str, result: &Value) {
    REGISTRY
        .results
        .get(method)
        .unwrap_or_else(|| panic!("{method} is not in the OpenRPC document"))
        .assert_valid(result);
}

/// Whether `params` are valid for `method`'s params schema.
pub fn params_are_valid(method: &str, params: &Value) -> bool {
    REGISTRY
        .params
        .get(method)
        .unwrap_or_else(|| panic!("{method} is not in the OpenRPC document"))
        .is_valid(params)
}

/// Panics unless `error` (a response's `error` member) is valid for the `Error` schema.
pub fn assert_valid_error(error: &Value) {
    REGISTRY.error.assert_valid(error);
}

/// Panics unless the response to a `method` call is a valid result or a valid error.
pub fn assert_valid_response(method: &str, response: &Value) {
    match (response.get("result"), response.get("error")) {
        (Some(result), None) => assert_valid_result(method, result),
        (None, Some(error)) => assert_valid_error(error),
        _ => panic!("not a response: {response}"),
    }
}

/// Panics unless `notification` (the whole JSON-RPC notification) is one the document lists,
/// with valid params.
pub fn assert_valid_notification(notification: &Value) {
    assert_eq!(notification["jsonrpc"], "2.0", "{notification}");
    assert!(
        notification.get("id").is_none(),
        "a notification has no id: {notification}"
    );
    let method = notification["method"].as_str().expect("method");
    REGISTRY
        .notifications
        .get(method)
        .unwrap_or_else(|| panic!("notification {method} is not in the OpenRPC document"))
        .assert_valid(&notification["params"]);
}

#[test]
fn the_schemas_refuse_what_the_contract_refuses() {
    // A token in a state, a notification without its reason, an error whose kind is not
    // its code's: the schemas are strict enough to catch them.
    let state = json!({"isAuthenticated": true, "userId": "u", "user": {"id": "u"}, "expiresAt": 1, "persistent": true});
    assert_valid_result("auth_get_state", &state);
    let mut leaky = state.clone();
    leaky["accessToken"] = json!("eyJ...");
    assert!(!REGISTRY.results["auth_get_state"].is_valid(&leaky));

    let signed_out = json!({"event": "SIGNED_OUT", "reason": "expired", "state": {"isAuthenticated": false, "userId": null, "user": null, "expiresAt": null, "persistent": true}});
    assert!(REGISTRY.notifications["auth_state_changed"].is_valid(&signed_out));
    let mut no_reason = signed_out.clone();
    no_reason.as_object_mut().unwrap().remove("reason");
    assert!(!REGISTRY.notifications["auth_state_changed"].is_valid(&no_reason));
    let mut unknown_event = signed_out.clone();
    unknown_event["event"] = json!("SIGNED_UP");
    assert!(!REGISTRY.notifications["auth_state_changed"].is_valid(&unknown_event));

    assert!(
        REGISTRY
            .error
            .is_valid(&json!({"code": -32601, "message": "Method not found"}))
    );
    assert!(!REGISTRY.error.is_valid(
        &json!({"code": -32001, "message": "x", "data": {"kind": "backend", "retryable": false}})
    ));
    assert!(
        !REGISTRY
            .error
            .is_valid(&json!({"code": -32001, "message": "x"}))
    );
}

// ---------------------------------------------------------------------------------------
// What the binary sends
// ---------------------------------------------------------------------------------------

/// A GoTrue-like auth server: refresh, `/user` and logout always succeed.
struct FakeAuth {
    port: u16,
    refreshes: Arc<Mutex<u32>>,
    server: tokio::task::JoinHandle<()>,
}

/// The tokens FakeAuth hands out on refresh (never to be seen on stdout or stderr).
const REFRESHED_JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyIn0.cmVmcmVzaGVk";
const REFRESHED_REFRESH_TOKEN: &str = "rt-refreshed-9876543210";

impl FakeAuth {
    async fn start() -> FakeAuth {
        async fn token(State(count): State<Arc<Mutex<u32>>>) -> Response {
            *count.lock().unwrap() += 1;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            axum::Json(json!({
                "access_token": REFRESHED_JWT,
                "token_type": "bearer",
                "expires_in": 3600,
                "expires_at": now + 3600,
                "refresh_token": REFRESHED_REFRESH_TOKEN,
                "user": {"id": "user-1", "email": "user@example.com", "aud": "authenticated"},
            }))
            .into_response()
        }
        async fn user() -> Response {
            axum::Json(json!({"id": "user-1", "email": "user@example.com", "aud": "authenticated", "role": "authenticated"}))
                .into_response()
        }
        async fn logout() -> Response {
            StatusCode::NO_CONTENT.into_response()
        }
        /// `/otp` and `/recover`: sent.
        async fn sent() -> Response {
            axum::Json(json!({})).into_response()
        }
        /// `/verify`: the code `000000` is wrong, as GoTrue says it.
        async fn verify(
            state: State<Arc<Mutex<u32>>>,
            axum::Json(body): axum::Json<Value>,
        ) -> Response {
            if body["token"] == "000000" {
                let error = json!({"code": 403, "error_code": "otp_expired", "msg": "Token has expired or is invalid"});
                return (StatusCode::FORBIDDEN, axum::Json(error)).into_response();
            }
            token(state).await
        }
        let refreshes = Arc::new(Mutex::new(0));
        let app = Router::new()
            .route("/token", post(token))
            .route("/signup", post(token))
            .route("/otp", post(sent))
            .route("/recover", post(sent))
            .route("/verify", post(verify))
            .route("/user", get(user).put(user))
            .route("/logout", post(logout))
            .with_state(refreshes.clone());
        let (port, server) = crate::harness::serve_local(app).await;
        FakeAuth {
            port,
            refreshes,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeAuth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Calls `method`, validates the response either way, and returns its result.
async fn call_ok(sidecar: &mut Sidecar, method: &str, params: Value) -> Value {
    let response = sidecar.request(method, params).await;
    assert_valid_response(method, &response);
    response
        .get("result")
        .unwrap_or_else(|| {
            panic!(
                "{method}: expected a result: {response}\nstderr:\n{}",
                sidecar.stderr()
            )
        })
        .clone()
}

async fn call_err(sidecar: &mut Sidecar, method: &str, params: Value) -> Value {
    let response = sidecar.request(method, params).await;
    assert_valid_response(method, &response);
    response
        .get("error")
        .unwrap_or_else(|| panic!("{method}: expected an error: {response}"))
        .clone()
}

/// Each method's params for a call that should succeed: the first example of its params
/// schema (`#[schemars(example = ...)]` on the params type), else `{}`.
fn example_params(method: &Value) -> Value {
    let name = method["name"].as_str().expect("name");
    let schema = &method["x-paramsSchema"];
    let params = schema["examples"]
        .as_array()
        .and_then(|examples| examples.first())
        .cloned()
        .unwrap_or_else(|| json!({}));
    assert!(
        params_are_valid(name, &params),
        "{name}: its params schema refuses {params}; give its params type a valid \
         #[schemars(example = ...)]"
    );
    params
}

/// The example params of the documented method `name`.
fn method_example(name: &str) -> Value {
    let method = served()["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not documented"));
    example_params(method)
}

/// Every gated method of the document, with its example params.
fn gated_methods() -> Vec<(String, Value)> {
    served()["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter(|m| m["tags"][0]["name"] == "gated")
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_string(),
                example_params(m),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_method_result_and_notification_matches_its_schema() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let auth = FakeAuth::start().await;
    let (backend_url, auth_url) = (backend.url(), auth.url());
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", &backend_url),
        ("CORE_SIDECAR_AUTH_URL", &auth_url),
    ]);
    sidecar
        .secret(REFRESHED_JWT)
        .secret(REFRESHED_REFRESH_TOKEN);
    let mut called = BTreeSet::new();
    let mut call = async |sidecar: &mut Sidecar, method: &str, params: Value| {
        called.insert(method.to_string());
        call_ok(sidecar, method, params).await
    };

    call(&mut sidecar, "core_ping", Value::Null).await;
    call(&mut sidecar, "core_version", json!({})).await;
    let discovered = call(&mut sidecar, "rpc.discover", Value::Null).await;
    assert_eq!(&discovered, served());
    let signed_out = call(&mut sidecar, "auth_get_state", Value::Null).await;
    assert_eq!(signed_out["isAuthenticated"], false);

    // A supabase-js Session, as is.
    let state = call(
        &mut sidecar,
        "auth_store_session",
        json!({
            "access_token": TEST_JWT,
            "refresh_token": TEST_REFRESH_TOKEN,
            "expires_in": 3600,
            "expires_at": 4_102_444_800u64,
            "token_type": "bearer",
            "user": {"id": "user-1", "email": "user@example.com", "app_metadata": {}, "user_metadata": {}},
            "provider_token": null,
        }),
    )
    .await;
    assert_eq!(state["userId"], "user-1");
    call(&mut sidecar, "auth_get_state", json!({})).await;

    // Every gated method, from the document: no line here per method.
    for (method, params) in gated_methods() {
        call(&mut sidecar, &method, params).await;
    }

    call(&mut sidecar, "auth_get_user", Value::Null).await;
    // The refresh rotates the tokens: the backend must accept the new one from here on.
    let refreshed = call(&mut sidecar, "auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["isAuthenticated"], true);
    assert!(*auth.refreshes.lock().unwrap() >= 1);

    // Signing in inside the sidecar: every sign-in method, with its example params.
    for method in [
        "auth_sign_up",
        "auth_sign_in_with_password",
        "auth_sign_in_with_otp",
        "auth_verify_otp",
        "auth_reset_password_for_email",
        "auth_update_user",
        "auth_sign_in_with_oauth",
        "auth_exchange_code",
    ] {
        call(&mut sidecar, method, method_example(method)).await;
    }
    let refused = call_err(
        &mut sidecar,
        "auth_verify_otp",
        json!({"email": "user@example.com", "token": "000000", "type": "email"}),
    )
    .await;
    assert_eq!(refused["code"], -32006);
    assert_eq!(refused["data"]["reason"], "otp_expired");

    call(&mut sidecar, "auth_sign_out", json!({"scope": "others"})).await;
    let removed = call(&mut sidecar, "auth_sign_out", json!({"scope": "local"})).await;
    assert_eq!(removed["removed"], true);
    call(
        &mut sidecar,
        "auth_store_session",
        json!({"token": TEST_JWT}),
    )
    .await;
    let removed = call(&mut sidecar, "auth_clear_session", Value::Null).await;
    assert_eq!(removed["removed"], true);
    call(&mut sidecar, "auth_clear_session", Value::Null).await;

    let documented: BTreeSet<String> = documented_methods().into_iter().map(String::from).collect();
    let missed: Vec<_> = documented.difference(&called).collect();
    assert!(
        missed.is_empty(),
        "public methods not exercised here: {missed:?}"
    );

    // Every change of the session told the shell, each notification valid.
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    let mut events = Vec::new();
    for line in sidecar.stdout().lines() {
        let value: Value = serde_json::from_str(line).expect("JSON line");
        if value.get("method").is_some() {
            assert_valid_notification(&value);
            events.push(value["params"]["event"].as_str().unwrap().to_string());
        }
    }
    for event in ["SIGNED_IN", "TOKEN_REFRESHED", "USER_UPDATED", "SIGNED_OUT"] {
        assert!(
            events.iter().any(|e| e == event),
            "no {event} in {events:?}"
        );
    }
}

#[tokio::test]
async fn every_gated_method_fails_as_its_schema_says() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let backend_url = backend.url();
    let mut sidecar = Sidecar::spawn(&[("CORE_SIDECAR_BACKEND_URL", &backend_url)]);

    let gated = gated_methods();
    for (method, params) in &gated {
        let error = call_err(&mut sidecar, method, params.clone()).await;
        assert_eq!(error["code"], -32001, "{method}");
        assert_eq!(error["data"]["reason"], "no_session", "{method}");
    }
    call_ok(
        &mut sidecar,
        "auth_store_session",
        json!({"access_token": TEST_JWT}),
    )
    .await;
    for (status, code) in [(429, -32002), (502, -32003)] {
        backend.set_canned(Canned::reply(
            status,
            r#"{"success":false,"error":"canned"}"#,
        ));
        for (method, params) in &gated {
            let error = call_err(&mut sidecar, method, params.clone()).await;
            assert_eq!(error["code"], code, "{method} on {status}");
        }
    }
    // Malformed bodies are backend errors, never results that break the schema.
    backend.set_canned(Canned::reply(200, r#"{"success":true,"data":42}"#));
    for (method, params) in &gated {
        let response = sidecar.request(method, params.clone()).await;
        assert_valid_response(method, &response);
    }
}

#[tokio::test]
async fn errors_match_the_error_schema() {
    let backend = FakeBackend::start(TEST_JWT).await;
    let backend_url = backend.url();
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_BACKEND_URL", &backend_url),
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
    ]);

    let error = call_err(&mut sidecar, "composio_list_toolkits", Value::Null).await;
    assert_eq!(error["code"], -32001);
    assert_eq!(error["data"]["reason"], "no_session");

    let error = call_err(&mut sidecar, "composio_authorize", json!({"toolkit": 7})).await;
    assert_eq!(error["code"], -32602);
    assert_eq!(error["data"]["field"], "toolkit");

    call_ok(
        &mut sidecar,
        "auth_store_session",
        json!({"access_token": TEST_JWT}),
    )
    .await;
    backend.set_canned(
        Canned::reply(429, r#"{"success":false,"error":"slow down"}"#).header("retry-after", "2"),
    );
    let error = call_err(&mut sidecar, "composio_list_toolkits", Value::Null).await;
    assert_eq!(
        (error["code"].clone(), error["data"]["retryAfterMs"].clone()),
        (json!(-32002), json!(2000))
    );
    backend.set_canned(Canned::reply(
        502,
        r#"{"success":false,"error":"bad gateway"}"#,
    ));
    let error = call_err(&mut sidecar, "user_get_profile", Value::Null).await;
    assert_eq!(
        (error["code"].clone(), error["data"]["status"].clone()),
        (json!(-32003), json!(502))
    );
    backend.set_canned(Canned::reply(401, r#"{"success":false,"error":"expired"}"#));
    let error = call_err(&mut sidecar, "composio_list_connections", Value::Null).await;
    assert_eq!(error["code"], -32001);
    let signed_out = sidecar.recv_notification("auth_state_changed").await;
    assert_valid_notification(&signed_out);

    let error = call_err(&mut sidecar, "core_test_panic", json!({"message": "boom"})).await;
    assert_eq!(error["code"], -32603);

    // Protocol errors carry no data.
    for (line, code) in [
        ("{", -32700),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#, -32601),
    ] {
        sidecar.send_line(line).await;
        let response = sidecar.recv_json().await;
        assert_eq!(response["error"]["code"], code, "{response}");
        assert_valid_error(&response["error"]);
    }

    // Without a backend URL: unavailable.
    drop(sidecar);
    let mut offline = Sidecar::spawn(&[]);
    call_ok(
        &mut offline,
        "auth_store_session",
        json!({"access_token": TEST_JWT}),
    )
    .await;
    let error = call_err(&mut offline, "composio_list_toolkits", Value::Null).await;
    assert_eq!(error["code"], -32004);
}

#[tokio::test]
async fn params_schemas_accept_and_refuse_what_the_server_does() {
    // No session, no backend, no auth server: only param parsing can refuse with -32602, and
    // no call reaches the network.
    let mut sidecar = Sidecar::spawn(&[]);
    let mut cases: Vec<(String, Value)> = Vec::new();
    for method in served()["methods"].as_array().expect("methods") {
        let name = method["name"].as_str().expect("name").to_string();
        cases.push((name.clone(), json!({})));
        cases.push((name.clone(), json!({"unexpected_param": 1})));
        for example in method["x-paramsSchema"]["examples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            cases.push((name.clone(), example.clone()));
        }
    }
    for (method, params) in [
        ("auth_store_session", json!({"access_token": ""})),
        ("auth_store_session", json!({"access_token": 5})),
        (
            "auth_store_session",
            json!({"access_token": "a", "token": "b"}),
        ),
        (
            "auth_store_session",
            json!({"access_token": "a", "expires_at": "soon"}),
        ),
        ("auth_store_session", json!({"token": "a", "user": 5})),
        ("auth_sign_out", json!({"scope": "everywhere"})),
        ("auth_sign_out", json!({"scope": "global"})),
        ("composio_authorize", json!({"toolkit": ["github"]})),
        ("composio_authorize", json!({"toolkit": " "})),
        (
            "composio_delete_connection",
            json!({"connection_id": "ca_1"}),
        ),
        ("composio_delete_connection", json!({"connectionId": 5})),
        ("composio_delete_connection", json!({"connectionId": ".."})),
        (
            "composio_delete_connection",
            json!({"connectionId": "a", "connection_id": "b"}),
        ),
    ] {
        cases.push((method.to_string(), params));
    }
    for (method, params) in cases {
        let response = sidecar.request(&method, params.clone()).await;
        assert_valid_response(&method, &response);
        let refused = response["error"]["code"] == -32602;
        let valid = params_are_valid(&method, &params);
        assert_eq!(
            refused,
            !valid,
            "{method} {params}: the server {} but the params schema {}: {response}",
            if refused { "refuses" } else { "accepts" },
            if valid { "accepts" } else { "refuses" },
        );
        if response.get("result").is_some() && method == "auth_store_session" {
            call_ok(&mut sidecar, "auth_clear_session", Value::Null).await;
        }
    }
}
