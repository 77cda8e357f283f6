//! schema/: the machine-readable contract (DESIGN.md sections 2, 4 and 6).
//!
//! - schema/openrpc.json is generated from the files beside it, here: the test fails when it
//!   is stale, and `UPDATE_SCHEMA=1` (scripts/gen-openrpc.sh) rewrites it.
//! - every schema file is a valid JSON Schema 2020-12 whose `$ref`s resolve; the OpenRPC
//!   document is well formed and its error catalog is the library's.
//! - results, notifications and errors the real binary sends validate against their
//!   schemas, and the params schemas accept and refuse what the server does.
//!
//! Other test modules can check what they receive with [`assert_valid_result`],
//! [`assert_valid_response`], [`assert_valid_error`] and [`assert_valid_notification`].
#![allow(dead_code)] // the assert helpers are for every test module

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonschema::{Draft, Validator};
use serde_json::{Map, Value, json};

use crate::fake_backend::{Canned, FakeBackend};
use crate::harness::{Sidecar, TEST_JWT, TEST_REFRESH_TOKEN, TIMEOUT};

// ---------------------------------------------------------------------------------------
// The generator: schema files -> openrpc.json
// ---------------------------------------------------------------------------------------

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn read_json(relative: &Path) -> Value {
    let path = schema_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                assert!(out.pop(), "{} climbs out of schema/", path.display());
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The shared schemas, each a component of the OpenRPC document named by its `title`:
/// everything under schema/defs/ and schema/notifications/, and schema/errors.json.
fn shared_schema_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("errors.json")];
    for dir in ["defs", "notifications"] {
        files.extend(json_files_in(dir));
    }
    files
}

/// The `.json` files of a directory of schema/, relative to schema/, sorted.
fn json_files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(schema_dir().join(dir))
        .unwrap_or_else(|e| panic!("cannot list schema/{dir}: {e}"))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| Path::new(dir).join(path.file_name().expect("file name")))
        .collect();
    files.sort();
    files
}

struct Generator {
    /// Shared schema file (relative to schema/) -> component name.
    components: BTreeMap<PathBuf, String>,
}

impl Generator {
    fn new() -> Self {
        let mut components = BTreeMap::new();
        let mut names = BTreeSet::new();
        for file in shared_schema_files() {
            let name = read_json(&file)["title"]
                .as_str()
                .unwrap_or_else(|| panic!("schema/{} has no title", file.display()))
                .to_string();
            assert!(
                names.insert(name.clone()),
                "two shared schemas named {name}"
            );
            components.insert(file, name);
        }
        Generator { components }
    }

    /// A schema as embedded in the document: no `$schema`/`$id`, and each `$ref` to a
    /// shared file turned into a reference to its component.
    fn embed(&self, schema: &Value, file: &Path) -> Value {
        match schema {
            Value::Object(object) => {
                let mut out = Map::new();
                for (key, value) in object {
                    match key.as_str() {
                        "$schema" | "$id" => {}
                        "$ref" => {
                            let reference = value.as_str().expect("$ref is a string");
                            assert!(
                                !reference.starts_with('#') && !reference.contains(':'),
                                "schema/{}: only relative file references are supported, \
                                 not {reference}",
                                file.display()
                            );
                            let target =
                                normalize(&file.parent().unwrap_or(Path::new("")).join(reference));
                            let name = self.components.get(&target).unwrap_or_else(|| {
                                panic!(
                                    "schema/{}: $ref {reference} is not a shared schema \
                                     (schema/defs/, schema/notifications/, schema/errors.json)",
                                    file.display()
                                )
                            });
                            out.insert(key.clone(), json!(format!("#/components/schemas/{name}")));
                        }
                        _ => {
                            out.insert(key.clone(), self.embed(value, file));
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.embed(v, file)).collect())
            }
            other => other.clone(),
        }
    }

    /// One OpenRPC content descriptor per named param. A param is required when the params
    /// schema requires it, or when it is the first of `anyOf: [{required: [name]},
    /// {required: [alias]}]` (a param with an alias).
    fn param_descriptors(&self, params: &Value, file: &Path) -> Vec<Value> {
        let mut required: BTreeSet<&str> = params["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(first) = params["anyOf"].as_array().and_then(|a| a.first())
            && let Some([name]) = first["required"].as_array().map(Vec::as_slice)
        {
            required.insert(name.as_str().expect("param name"));
        }
        let properties = params["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema/{} has no properties", file.display()));
        properties
            .iter()
            .map(|(name, schema)| {
                let mut schema = schema.clone();
                let description = schema.as_object_mut().and_then(|s| s.remove("description"));
                let mut descriptor = json!({
                    "name": name,
                    "required": required.contains(name.as_str()),
                    "schema": self.embed(&schema, file),
                });
                if let Some(description) = description {
                    descriptor["description"] = description;
                }
                descriptor
            })
            .collect()
    }

    fn method(&self, entry: &Value) -> Value {
        let name = entry["name"].as_str().expect("index method name");
        let params_file = PathBuf::from(format!("methods/{name}.params.json"));
        let result_file = PathBuf::from(format!("methods/{name}.result.json"));
        let params = read_json(&params_file);
        let mut result = read_json(&result_file);
        assert_eq!(params["type"], "object", "{name}: params are by name");

        let result_description = result
            .as_object_mut()
            .and_then(|r| r.remove("description"))
            .unwrap_or_else(|| panic!("schema/{} has no description", result_file.display()));
        let mut method = json!({
            "name": name,
            "summary": entry["summary"],
            "tags": entry["tags"]
                .as_array()
                .expect("index method tags")
                .iter()
                .map(|tag| json!({"name": tag}))
                .collect::<Vec<_>>(),
            "paramStructure": "by-name",
            "params": self.param_descriptors(&params, &params_file),
            "result": {
                "name": "result",
                "description": result_description,
                "schema": self.embed(&result, &result_file),
            },
            "errors": entry["errors"]
                .as_array()
                .expect("index method errors")
                .iter()
                .map(|key| json!({"$ref": format!("#/components/errors/{}", key.as_str().expect("error key"))}))
                .collect::<Vec<_>>(),
            "x-paramsSchema": self.embed(&params, &params_file),
        });
        if let Some(description) = entry.get("description") {
            method["description"] = description.clone();
        }
        method
    }

    fn notification(&self, entry: &Value) -> Value {
        let file = PathBuf::from(entry["schema"].as_str().expect("notification schema"));
        let params = read_json(&file);
        let component = &self.components[&file];
        json!({
            "name": entry["name"],
            "summary": entry["summary"],
            "paramStructure": "by-name",
            "params": self.param_descriptors(&params, &file),
            "x-paramsSchema": {"$ref": format!("#/components/schemas/{component}")},
        })
    }

    fn document(&self) -> Value {
        let index = read_json(Path::new("index.json"));
        let schemas: Map<String, Value> = self
            .components
            .iter()
            .map(|(file, name)| (name.clone(), self.embed(&read_json(file), file)))
            .collect();
        let tags: Map<String, Value> = index["tags"]
            .as_object()
            .expect("index tags")
            .iter()
            .map(|(name, description)| {
                (
                    name.clone(),
                    json!({"name": name, "description": description}),
                )
            })
            .collect();
        json!({
            "openrpc": "1.3.2",
            "info": {
                "title": index["info"]["title"],
                "description": index["info"]["description"],
                "version": env!("CARGO_PKG_VERSION"),
            },
            "methods": index["methods"]
                .as_array()
                .expect("index methods")
                .iter()
                .map(|entry| self.method(entry))
                .collect::<Vec<_>>(),
            "components": {
                "schemas": schemas,
                "errors": index["errors"],
                "tags": tags,
            },
            "x-notifications": index["notifications"]
                .as_array()
                .expect("index notifications")
                .iter()
                .map(|entry| self.notification(entry))
                .collect::<Vec<_>>(),
        })
    }
}

/// The OpenRPC document as generated from the schema files now.
pub fn generate_openrpc() -> Value {
    Generator::new().document()
}

/// The document the binary serves (compiled in from schema/openrpc.json).
fn served() -> &'static Value {
    core_sidecar::schema::openrpc()
}

#[test]
fn openrpc_json_is_generated_from_the_schema_files() {
    let generated = generate_openrpc();
    let path = schema_dir().join("openrpc.json");
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
        .expect("schema/openrpc.json is JSON");
    if on_disk == generated {
        return;
    }
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("serialize") + "\n";
        std::fs::write(&path, text).expect("write schema/openrpc.json");
        return;
    }
    panic!(
        "schema/openrpc.json is stale: it does not match schema/index.json and the schema \
         files. Run scripts/gen-openrpc.sh (UPDATE_SCHEMA=1 cargo test --test it \
         schema::openrpc_json_is_generated_from_the_schema_files) and commit the result."
    );
}

#[test]
fn the_binary_serves_the_current_openrpc_json() {
    // Differs only between an `UPDATE_SCHEMA=1` run and the next build.
    let on_disk: Value = read_json(Path::new("openrpc.json"));
    assert_eq!(served(), &on_disk, "rebuild: the served document is stale");
}

// ---------------------------------------------------------------------------------------
// The schema files and the document, statically
// ---------------------------------------------------------------------------------------

fn file_uri(relative: &Path) -> String {
    format!("file://{}", schema_dir().join(relative).display())
}

/// A validator for a source schema file, its relative `$ref`s resolved from the disk.
fn file_validator(relative: &Path) -> Validator {
    let schema = read_json(relative);
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_base_uri(file_uri(relative))
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema/{} does not compile: {e}", relative.display()))
}

fn index_methods() -> Vec<String> {
    read_json(Path::new("index.json"))["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn every_schema_file_is_a_valid_2020_12_schema() {
    let mut files = shared_schema_files();
    files.extend(json_files_in("methods"));
    for file in &files {
        let schema = read_json(file);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema",
            "schema/{} declares its dialect",
            file.display()
        );
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!(
                "schema/{} is not a valid 2020-12 schema: {e}",
                file.display()
            );
        }
        file_validator(file);
    }
}

#[test]
fn each_listed_method_has_a_params_and_a_result_schema_and_nothing_else_is_there() {
    let mut expected: BTreeSet<PathBuf> = BTreeSet::new();
    for name in index_methods() {
        expected.insert(format!("methods/{name}.params.json").into());
        expected.insert(format!("methods/{name}.result.json").into());
    }
    let present: BTreeSet<PathBuf> = json_files_in("methods").into_iter().collect();
    let missing: Vec<_> = expected.difference(&present).collect();
    let orphans: Vec<_> = present.difference(&expected).collect();
    assert!(missing.is_empty(), "missing schema files: {missing:?}");
    assert!(
        orphans.is_empty(),
        "schema files of methods not in schema/index.json: {orphans:?}"
    );
}

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
    // OpenRPC 1.3.2 reads its schemas as draft-07; ours are written in the subset that means
    // the same in draft-07 and 2020-12.
    if let Err(e) = jsonschema::draft7::meta::validate(schema) {
        panic!("{what}: not a valid draft-07 schema: {e}");
    }
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        panic!("{what}: not a valid 2020-12 schema: {e}");
    }
    for keyword in [
        "$defs",
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$anchor",
        "$dynamicRef",
    ] {
        let text = schema.to_string();
        assert!(
            !text.contains(&format!("\"{keyword}\"")),
            "{what}: `{keyword}` means nothing in draft-07 (OpenRPC 1.3.2's dialect)"
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
        assert_schema_in_both_dialects(&method["x-paramsSchema"], &format!("{name} params"));
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

#[test]
fn the_error_catalog_is_the_librarys() {
    use core_sidecar::error::ErrorKind;
    let doc = served();
    let catalog = doc["components"]["errors"].as_object().expect("errors");
    let kinds = [
        ErrorKind::AuthExpired,
        ErrorKind::RateLimited,
        ErrorKind::Backend,
        ErrorKind::Unavailable,
        ErrorKind::Storage,
        ErrorKind::InvalidParams,
        ErrorKind::Internal,
    ];
    assert_eq!(catalog.len(), kinds.len());
    for kind in kinds {
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
    let expected: BTreeSet<i64> = [-32001, -32002, -32003, -32004, -32005, -32602, -32603].into();
    assert_eq!(codes, expected);
}

// ---------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------

/// The validators of one schema: the document's embedded copy read as 2020-12 and as
/// draft-07 (OpenRPC's dialect), and the source file with its `$ref`s resolved from disk.
struct Validators {
    what: String,
    all: Vec<(&'static str, Validator)>,
}

impl Validators {
    fn new(what: String, pointer: &str, source: Option<&Path>) -> Self {
        let mut root = served().clone();
        root["$ref"] = json!(format!("#{pointer}"));
        let mut all = Vec::new();
        for (label, draft) in [("2020-12", Draft::Draft202012), ("draft-07", Draft::Draft7)] {
            let validator = jsonschema::options()
                .with_draft(draft)
                .build(&root)
                .unwrap_or_else(|e| panic!("{what} ({label}) does not compile: {e}"));
            all.push((label, validator));
        }
        if let Some(source) = source {
            all.push(("source file", file_validator(source)));
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
                Some(&PathBuf::from(format!("methods/{name}.result.json"))),
            ),
        );
        params.insert(
            name.clone(),
            Validators::new(
                format!("{name} params schema"),
                &format!("/methods/{i}/x-paramsSchema"),
                Some(&PathBuf::from(format!("methods/{name}.params.json"))),
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
        let source = notification["x-paramsSchema"]["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(|component| {
                Generator::new()
                    .components
                    .into_iter()
                    .find(|(_, name)| name == component)
                    .map(|(file, _)| file)
                    .expect("notification component file")
            });
        notifications.insert(
            name.clone(),
            Validators::new(
                format!("{name} notification params schema"),
                &format!("/x-notifications/{i}/x-paramsSchema"),
                source.as_deref(),
            ),
        );
    }
    let error = Validators::new(
        "error schema".into(),
        "/components/schemas/Error",
        Some(Path::new("errors.json")),
    );
    Registry {
        results,
        params,
        notifications,
        error,
    }
});

/// Panics unless `result` is valid for `method`'s result schema (the served OpenRPC document
/// in both dialects, and the source file).
pub fn assert_valid_result(method: &str, result: &Value) {
    REGISTRY
        .results
        .get(method)
        .unwrap_or_else(|| panic!("{method} is not in schema/openrpc.json"))
        .assert_valid(result);
}

/// Whether `params` are valid for `method`'s params schema.
pub fn params_are_valid(method: &str, params: &Value) -> bool {
    REGISTRY
        .params
        .get(method)
        .unwrap_or_else(|| panic!("{method} is not in schema/openrpc.json"))
        .is_valid(params)
}

/// Panics unless `error` (a response's `error` member) is valid for schema/errors.json.
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
        .unwrap_or_else(|| panic!("notification {method} is not in schema/openrpc.json"))
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
        let refreshes = Arc::new(Mutex::new(0));
        let app = Router::new()
            .route("/token", post(token))
            .route("/user", get(user))
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
    let mut call = async |sidecar: &mut Sidecar, method: &'static str, params: Value| {
        called.insert(method);
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

    call(&mut sidecar, "composio_list_toolkits", Value::Null).await;
    call(&mut sidecar, "composio_list_connections", Value::Null).await;
    call(
        &mut sidecar,
        "composio_authorize",
        json!({"toolkit": "github"}),
    )
    .await;
    call(
        &mut sidecar,
        "composio_delete_connection",
        json!({"connectionId": "ca_1"}),
    )
    .await;
    call(&mut sidecar, "user_get_profile", Value::Null).await;

    call(&mut sidecar, "auth_get_user", Value::Null).await;
    // The refresh rotates the tokens: the backend must accept the new one from here on.
    let refreshed = call(&mut sidecar, "auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["isAuthenticated"], true);
    assert!(*auth.refreshes.lock().unwrap() >= 1);

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

    let documented: BTreeSet<&str> = core_sidecar::schema::method_names().into_iter().collect();
    let missed: Vec<_> = documented.difference(&called).collect();
    assert!(missed.is_empty(), "not exercised here: {missed:?}");

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
    for event in ["SIGNED_IN", "TOKEN_REFRESHED", "SIGNED_OUT"] {
        assert!(
            events.iter().any(|e| e == event),
            "no {event} in {events:?}"
        );
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
    for method in core_sidecar::schema::method_names() {
        cases.push((method.to_string(), json!({})));
        cases.push((method.to_string(), json!({"unexpected_param": 1})));
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
        ("auth_sign_out", json!({"scope": "everywhere"})),
        ("auth_sign_out", json!({"scope": "global"})),
        ("composio_authorize", json!({"toolkit": ["github"]})),
        (
            "composio_delete_connection",
            json!({"connection_id": "ca_1"}),
        ),
        ("composio_delete_connection", json!({"connectionId": 5})),
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
