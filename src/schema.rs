//! The machine-readable contract: the OpenRPC document `rpc.discover` serves, generated from
//! the Rust types.
//!
//! One source: each method's params and result schemas are derived (with [`schemars`]) from
//! the types its handler takes and returns, and its name, summary and public/gated class come
//! from where it is registered in the method table (`router`), as a [`MethodSpec`]. The
//! error catalog comes from [`ErrorKind`], the notification from [`AuthStateChanged`].
//! [`openrpc_document`] turns the specs into the document; schema/openrpc.json is that
//! document written out by [`openrpc_text`]. The tests fail when it is stale, and
//! `scripts/gen-openrpc.sh` rewrites it (see schema/README.md).
//!
//! Schemas are generated for JSON Schema draft-07, the dialect OpenRPC 1.3.2 reads, with
//! shared definitions under `#/components/schemas/`. Params are read with serde's
//! deserialize rules (defaults and `Option`s are optional), results with its serialize rules.
//!
//! This module imports neither the router nor the domains (they import it): the router hands
//! it the specs and serves the document it makes.

use std::borrow::Cow;
use std::cell::Cell;

use schemars::generate::SchemaSettings;
use schemars::transform::Transform;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value, json};

use crate::error::{AuthExpiredReason, Error, ErrorKind};
use crate::session::AuthStateChanged;

const TITLE: &str = "core-sidecar";
const DESCRIPTION: &str = "JSON-RPC 2.0 over stdio (one JSON value per line) between a desktop shell and its sidecar, which keeps the user's session in the OS keyring and calls the product backend. Params are by name; results are objects with camelCase keys; no method ever returns a token. Server-to-shell notifications are listed under `x-notifications`. `core_initialize` is an optional handshake that negotiates the protocol version. A pending request is cancelled with the notification `$/cancelRequest` `{id}` (as in LSP): it is answered -32800 `cancelled`.";

/// Where shared schemas live in the document.
const COMPONENTS: &str = "#/components/schemas/";

/// Who may call a method: its class, the OpenRPC tag it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Runs without a session.
    Public,
    /// Runs through the session gate.
    Gated,
}

impl Access {
    pub fn tag(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Gated => "gated",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Public => "Runs without a session.",
            Self::Gated => {
                "Runs through the session gate: needs a stored session (else -32001 with reason \
                 `no_session`), refreshes a token about to expire, and calls the product backend \
                 with `Authorization: Bearer <access token>`."
            }
        }
    }

    /// The errors every method of the class can answer with. Every method parses params
    /// (even none: unknown params are refused), so every one can answer invalid params; the
    /// gate can end in any kind but `auth_failed` (no session, the backend's answers, the
    /// keyring); `auth_failed` comes only from the sign-in methods, which say so.
    pub fn errors(self) -> &'static [ErrorKind] {
        use ErrorKind::*;
        match self {
            Self::Public => &[InvalidParams, Internal],
            Self::Gated => &[
                AuthExpired,
                RateLimited,
                Backend,
                Unavailable,
                Storage,
                InvalidParams,
                Internal,
            ],
        }
    }
}

/// What the contract says about one method: captured where the method is registered (the
/// registration helpers of the method table know its params and result types), read by
/// [`openrpc_document`].
#[derive(Debug, Clone)]
pub struct MethodSpec {
    pub name: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub description: Option<&'static str>,
    /// Errors the method can answer with beyond its class's.
    pub adds_errors: &'static [ErrorKind],
    /// The JSON Schema of its params type (the params object).
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    /// The names serde accepts for its params (aliases included).
    pub params_fields: fn() -> Option<&'static [&'static str]>,
    /// The JSON Schema of its result type.
    pub result_schema: fn(&mut SchemaGenerator) -> Schema,
    /// Whether a `$/cancelRequest` can end it (`cancelled`): any method that can be pending,
    /// so every method but the ones answered inline, while read.
    pub cancellable: bool,
}

/// A method's params schema, params field names and result schema.
type SchemaFns = (
    fn(&mut SchemaGenerator) -> Schema,
    fn() -> Option<&'static [&'static str]>,
    fn(&mut SchemaGenerator) -> Schema,
);

/// Without the `contract` feature (the shipped binary, `scripts/dist.sh`) no schema is
/// generated: `rpc.discover` serves the committed schema/openrpc.json, which the tests (built
/// with the feature) prove is what generation gives. Not a line of schema code ships.
#[cfg(not(feature = "contract"))]
fn not_generated(_: &mut SchemaGenerator) -> Schema {
    Schema::default()
}

impl MethodSpec {
    /// The spec of a method taking `P` and answering `R`.
    pub fn new<P, R>(name: &'static str, access: Access, summary: &'static str) -> Self
    where
        P: DeserializeOwned + JsonSchema,
        R: JsonSchema,
    {
        #[cfg(feature = "contract")]
        let (params_schema, params_fields, result_schema): SchemaFns = (
            P::json_schema,
            serde_field_names::<P>,
            SchemaGenerator::subschema_for::<R>,
        );
        #[cfg(not(feature = "contract"))]
        let (params_schema, params_fields, result_schema): SchemaFns =
            (not_generated, || None, not_generated);
        Self {
            name,
            access,
            summary,
            description: None,
            adds_errors: &[],
            params_schema,
            params_fields,
            result_schema,
            cancellable: true,
        }
    }

    /// A method answered inline, while read: it is never pending, so never `cancelled`.
    pub fn answered_inline(mut self) -> Self {
        self.cancellable = false;
        self
    }

    /// Adds errors to those of the method's class.
    pub fn can_fail_with(&mut self, errors: &'static [ErrorKind]) -> &mut Self {
        self.adds_errors = errors;
        self
    }

    /// A description, for what the summary cannot say.
    pub fn describe(&mut self, description: &'static str) -> &mut Self {
        self.description = Some(description);
        self
    }

    /// Every error the method can answer with, in the order of the catalog.
    pub fn errors(&self) -> Vec<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .filter(|kind| match kind {
                ErrorKind::Cancelled => self.cancellable,
                _ => self.access.errors().contains(kind) || self.adds_errors.contains(kind),
            })
            .collect()
    }
}

/// The document as schema/openrpc.json holds it: pretty-printed, keys sorted, one final
/// newline. The same text for the document `rpc.discover` sends once parsed back.
pub fn openrpc_text(document: &Value) -> String {
    let mut document = document.clone();
    document.sort_all_objects();
    serde_json::to_string_pretty(&document).expect("a Value always serializes") + "\n"
}

/// Methods registered only for the integration tests (`CORE_SIDECAR_TEST_HOOKS=1`): not part
/// of the contract, so not in the document.
pub fn is_test_hook(method: &str) -> bool {
    method.starts_with("core_test_")
}

/// The result of `rpc.discover`: the OpenRPC document.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Discover(pub &'static Value);

impl JsonSchema for Discover {
    fn schema_name() -> Cow<'static, str> {
        "OpenRpcDocument".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "This OpenRPC 1.3.2 document (schema/openrpc.json).",
            "type": "object",
            "required": ["openrpc", "info", "methods"],
            "properties": {
                "openrpc": {"const": "1.3.2"},
                "info": {
                    "type": "object",
                    "required": ["title", "version"],
                    "properties": {"title": {"type": "string"}, "version": {"type": "string"}}
                },
                "methods": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "params", "result"],
                        "properties": {"name": {"type": "string", "minLength": 1}}
                    }
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the types' schemas
// ---------------------------------------------------------------------------------------

/// A serde alias in a params schema: `#[schemars(transform = Alias("name", "alias"))]` next
/// to `#[serde(alias = "alias")]`, since schemars does not read aliases. The alias becomes a
/// property of the same schema; "one of them is required" is written
/// `anyOf: [{required: [name]}, {required: [alias]}]` (the first is the one OpenRPC marks
/// required), and "not both" as `not: {required: [name, alias]}`.
#[derive(Debug, Clone, Copy)]
pub struct Alias(pub &'static str, pub &'static str);

impl Transform for Alias {
    fn transform(&mut self, schema: &mut Schema) {
        let Alias(name, alias) = *self;
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        let Some(Value::Object(properties)) = object.get_mut("properties") else {
            return;
        };
        let Some(original) = properties.get(name).cloned() else {
            return;
        };
        let mut copy = original;
        if let Value::Object(copy) = &mut copy {
            copy.insert("description".into(), json!(format!("Alias of `{name}`.")));
        }
        properties.insert(alias.into(), copy);
        let mut was_required = false;
        if let Some(Value::Array(required)) = object.get_mut("required") {
            let before = required.len();
            required.retain(|field| field != name);
            was_required = required.len() != before;
            if required.is_empty() {
                object.remove("required");
            }
        }
        if was_required {
            object.insert(
                "anyOf".into(),
                json!([{"required": [name]}, {"required": [alias]}]),
            );
        }
        object.insert("not".into(), json!({"required": [name, alias]}));
    }
}

/// The field names serde's derived `Deserialize` accepts for the struct `T`, aliases
/// included (`None` when `T` is not a plain struct). The tests check that a params schema
/// has exactly these properties, so no alias or field is left out of the contract.
pub fn serde_field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let seen = Cell::new(None);
    let _ = T::deserialize(FieldRecorder(&seen));
    seen.get()
}

/// A deserializer that only records the field list a struct asks for.
struct FieldRecorder<'a>(&'a Cell<Option<&'static [&'static str]>>);

impl<'de> Deserializer<'de> for FieldRecorder<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set(Some(fields));
        Err(serde::de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

// ---------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------

/// A notification the sidecar sends (server to shell).
struct Notification {
    name: &'static str,
    summary: &'static str,
    params: fn(&mut SchemaGenerator) -> Schema,
}

const NOTIFICATIONS: &[Notification] = &[Notification {
    name: "auth_state_changed",
    summary: "The stored session changed: SIGNED_IN, TOKEN_REFRESHED or SIGNED_OUT (with a reason). Exactly one per change.",
    params: |generator| generator.subschema_for::<AuthStateChanged>(),
}];

/// The name of every notification the sidecar sends, in the document's order.
pub fn notification_names() -> Vec<&'static str> {
    NOTIFICATIONS.iter().map(|n| n.name).collect()
}

fn generator(serialize: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft07().with(|settings| {
        settings.definitions_path = COMPONENTS.trim_end_matches('/').into();
        settings.meta_schema = None;
    });
    let settings = if serialize {
        settings.for_serialize()
    } else {
        settings.for_deserialize()
    };
    settings.into_generator()
}

/// A schema generated for one method, with the generator's draft-07 transforms applied.
fn generate(
    generator: &mut SchemaGenerator,
    schema_for: fn(&mut SchemaGenerator) -> Schema,
) -> Value {
    let mut schema = schema_for(generator);
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

/// Generates the OpenRPC 1.3.2 document of these methods.
pub fn openrpc_document(methods: &[MethodSpec]) -> Value {
    // Params are what serde reads, results what it writes: one generator for each.
    let mut params_generator = generator(false);
    let mut results_generator = generator(true);

    let mut params = Vec::new();
    let mut results = Vec::new();
    for method in methods {
        params.push(generate(&mut params_generator, method.params_schema));
        results.push(generate(&mut results_generator, method.result_schema));
    }
    let notification_params: Vec<Value> = NOTIFICATIONS
        .iter()
        .map(|n| generate(&mut results_generator, n.params))
        .collect();

    let mut schemas = params_generator.take_definitions(true);
    for (name, schema) in results_generator.take_definitions(true) {
        if let Some(existing) = schemas.get(&name) {
            assert_eq!(
                existing, &schema,
                "two types named {name} have different schemas (as params and as a result)"
            );
        }
        schemas.insert(name, schema);
    }
    schemas.insert("ErrorData".into(), error_data_schema());
    schemas.insert("Error".into(), error_schema());

    let methods: Vec<Value> = methods
        .iter()
        .zip(params)
        .zip(results)
        .map(|((method, params), result)| method_object(method, params, result, &schemas))
        .collect();
    let notifications: Vec<Value> = NOTIFICATIONS
        .iter()
        .zip(notification_params)
        .map(|(notification, params)| {
            json!({
                "name": notification.name,
                "summary": notification.summary,
                "paramStructure": "by-name",
                "params": param_descriptors(&params, &schemas),
                "x-paramsSchema": params,
            })
        })
        .collect();

    let tags: Map<String, Value> = [Access::Public, Access::Gated]
        .into_iter()
        .map(|access| {
            (
                access.tag().to_string(),
                json!({"name": access.tag(), "description": access.description()}),
            )
        })
        .collect();
    let errors: Map<String, Value> = ErrorKind::ALL
        .into_iter()
        .map(|kind| (error_key(kind), catalog_entry(kind)))
        .collect();

    let mut document = json!({
        "openrpc": "1.3.2",
        "info": {
            "title": TITLE,
            "description": DESCRIPTION,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "methods": methods,
        "components": {
            "schemas": schemas,
            "errors": errors,
            "tags": tags,
        },
        "x-notifications": notifications,
    });
    unwrap_doc_lines(&mut document);
    document.sort_all_objects();
    document
}

fn method_object(
    method: &MethodSpec,
    mut params: Value,
    mut result: Value,
    schemas: &Map<String, Value>,
) -> Value {
    if let Value::Object(object) = &mut params {
        object.insert("title".into(), json!(format!("{} params", method.name)));
        // Params are by name, even when there are none.
        object.entry("properties").or_insert_with(|| json!({}));
    }
    // An inline result's description moves to the content descriptor; a shared one stays
    // in its component and is repeated there.
    let result_description = match result.as_object_mut() {
        Some(object) if object.contains_key("$ref") => resolve(&result, schemas)["description"]
            .as_str()
            .map(str::to_string),
        Some(object) => object
            .remove("description")
            .and_then(|d| d.as_str().map(str::to_string)),
        None => None,
    };
    let mut result_descriptor = json!({"name": "result", "schema": result});
    if let Some(description) = result_description {
        result_descriptor["description"] = json!(description);
    }
    let mut object = json!({
        "name": method.name,
        "summary": method.summary,
        "tags": [{"name": method.access.tag()}],
        "paramStructure": "by-name",
        "params": param_descriptors(&params, schemas),
        "result": result_descriptor,
        "errors": method
            .errors()
            .into_iter()
            .map(|kind| json!({"$ref": format!("#/components/errors/{}", error_key(kind))}))
            .collect::<Vec<_>>(),
        "x-paramsSchema": params,
    });
    if let Some(description) = method.description {
        object["description"] = json!(description);
    }
    object
}

/// A schema, or the component it refers to.
fn resolve<'a>(schema: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    schema["$ref"]
        .as_str()
        .and_then(|reference| reference.strip_prefix(COMPONENTS))
        .and_then(|name| schemas.get(name))
        .unwrap_or(schema)
}

/// One OpenRPC content descriptor per named param. A param is required when the params
/// schema requires it, or when it is the first of `anyOf: [{required: [name]},
/// {required: [alias]}]` (see [`Alias`]).
fn param_descriptors(params: &Value, schemas: &Map<String, Value>) -> Vec<Value> {
    let params = resolve(params, schemas);
    let mut required: Vec<&str> = params["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(first) = params["anyOf"].as_array().and_then(|a| a.first())
        && let Some([name]) = first["required"].as_array().map(Vec::as_slice)
        && let Some(name) = name.as_str()
    {
        required.push(name);
    }
    let Some(properties) = params["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut descriptor = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(description) = description {
                descriptor["description"] = description;
            }
            descriptor
        })
        .collect()
}

/// Doc comments wrap at 100 columns: a single line break in a description is a space.
/// Paragraph breaks stay.
fn unwrap_doc_lines(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_doc_lines(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_doc_lines),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Errors: the catalog, `ErrorData` and `Error`, from `ErrorKind`
// ---------------------------------------------------------------------------------------

/// The catalog key of a kind: `AuthExpired`, `InvalidParams`, ...
fn error_key(kind: ErrorKind) -> String {
    format!("{kind:?}")
}

/// What the catalog says about one kind.
struct KindDoc {
    message: &'static str,
    /// A typical error of this kind: the catalog's example `data` is its `data()`.
    example: Error,
    /// `data.retryable` when it is the same for every error of this kind.
    retryable: Option<bool>,
    /// A `data` member every error of this kind carries besides `kind` and `retryable`.
    requires: Option<&'static str>,
}

fn kind_doc(kind: ErrorKind) -> KindDoc {
    match kind {
        ErrorKind::AuthExpired => KindDoc {
            message: "Auth expired: no session is stored, the backend answered 401, or the auth server rejected the session or its refresh token. The stored session has been cleared (SIGNED_OUT `expired`); sign in again. Not retryable.",
            example: Error::no_session(),
            retryable: Some(false),
            requires: Some("reason"),
        },
        ErrorKind::RateLimited => KindDoc {
            message: "Rate limited: the backend or auth server answered 429. Retry after `data.retryAfterMs` when given.",
            example: Error::RateLimited {
                service: "backend",
                status: 429,
                retry_after: Some(std::time::Duration::from_secs(1)),
            },
            retryable: Some(true),
            requires: None,
        },
        ErrorKind::Backend => KindDoc {
            message: "Backend error: another 4xx/5xx status (`data.status`), `success: false`, or a malformed body. Retryable for 5xx.",
            example: Error::Backend {
                status: Some(502),
                message: String::new(),
                malformed: false,
            },
            retryable: None,
            requires: None,
        },
        ErrorKind::Unavailable => KindDoc {
            message: "Unavailable: the backend or auth server cannot be reached (connection refused, DNS, timeout, offline) or its URL is not configured. Retryable.",
            example: Error::Unavailable(String::new()),
            retryable: Some(true),
            requires: None,
        },
        ErrorKind::Storage => KindDoc {
            message: "Storage error: the OS keyring failed or timed out. Retryable.",
            example: Error::Storage(String::new()),
            retryable: Some(true),
            requires: None,
        },
        ErrorKind::AuthFailed => KindDoc {
            message: "Auth failed: the auth server refused a sign-in, a one-time code, a code exchange or a user change for what the user gave. `data.reason` is the auth server's error code (`invalid_credentials`, `otp_expired`, `flow_state_not_found`, `bad_code_verifier`, `weak_password`, `user_already_exists`, `email_exists`, ...) and `data.status` its HTTP status (absent when no request was sent: `flow_state_not_found` for a code with no flow in progress here). Any stored session is kept. Not retryable as is: the user corrects the input.",
            example: Error::AuthFailed {
                reason: "invalid_credentials".into(),
                status: Some(400),
                message: String::new(),
            },
            retryable: Some(false),
            requires: Some("reason"),
        },
        ErrorKind::InvalidParams => KindDoc {
            message: "Invalid params: `data.field` names the param at fault (`params` for the params as a whole). Not retryable.",
            example: Error::invalid_params("toolkit", ""),
            retryable: Some(false),
            requires: Some("field"),
        },
        ErrorKind::Internal => KindDoc {
            message: "Internal error: a bug in the sidecar (reported to Sentry). Not retryable.",
            example: Error::Internal(String::new()),
            retryable: Some(false),
            requires: None,
        },
        ErrorKind::Cancelled => KindDoc {
            message: "Cancelled by the client: the shell sent `$/cancelRequest` with this request's id while it was pending. Its work was dropped (a change of the session under way still completes). Not retryable: send it again if it is still wanted.",
            example: Error::Cancelled,
            retryable: Some(false),
            requires: None,
        },
    }
}

fn catalog_entry(kind: ErrorKind) -> Value {
    let doc = kind_doc(kind);
    json!({"code": kind.code(), "message": doc.message, "data": doc.example.data()})
}

/// Every [`AuthExpiredReason`], as `data.reason` spells it.
fn auth_expired_reasons() -> Vec<&'static str> {
    use AuthExpiredReason::{NoSession, RefreshRejected, SessionNotFound, Unauthorized};
    // A new reason does not compile here until it is listed below.
    let _listed_below = |reason: AuthExpiredReason| match reason {
        NoSession | Unauthorized | RefreshRejected | SessionNotFound => {}
    };
    [NoSession, Unauthorized, RefreshRejected, SessionNotFound]
        .map(AuthExpiredReason::as_str)
        .to_vec()
}

/// JSON-RPC's own errors, answered by the transport: they carry no `data`.
const PROTOCOL_CODES: [i32; 3] = [-32700, -32600, -32601];

fn error_data_schema() -> Value {
    json!({
        "description": "The `data` member of every error the sidecar's methods return.",
        "type": "object",
        "required": ["kind", "retryable"],
        "additionalProperties": false,
        "properties": {
            "kind": {
                "description": "What went wrong, one kind per error code.",
                "type": "string",
                "enum": ErrorKind::ALL.map(ErrorKind::as_str),
            },
            "retryable": {
                "description": "Whether the same call may succeed if tried again later.",
                "type": "boolean",
            },
            "status": {
                "description": "The HTTP status the backend or auth server answered, when there was one.",
                "type": "integer",
                "minimum": 100,
                "maximum": 599,
            },
            "retryAfterMs": {
                "description": "`rate_limited` only: how long to wait before trying again, from `Retry-After`.",
                "type": "integer",
                "minimum": 0,
            },
            "reason": {
                "description": "`auth_expired`: why the session is considered gone (one of the reasons listed for -32001). `auth_failed`: the auth server's error code, e.g. `invalid_credentials`, `otp_expired`, `flow_state_not_found`.",
                "type": "string",
                "minLength": 1,
            },
            "field": {
                "description": "`invalid_params` only: the param at fault (`params` when it is the params as a whole).",
                "type": "string",
            },
            "supported": {
                "description": "`invalid_params` of `core_initialize` only, when `protocolVersion` is one this sidecar does not speak: the protocol versions it does.",
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
            },
        },
    })
}

fn error_schema() -> Value {
    let mut rules = vec![json!({
        "if": {"properties": {"code": {"enum": PROTOCOL_CODES}}},
        "then": {"not": {"required": ["data"]}},
    })];
    for kind in ErrorKind::ALL {
        let doc = kind_doc(kind);
        let mut data = json!({"properties": {"kind": {"const": kind.as_str()}}});
        if let Some(retryable) = doc.retryable {
            data["properties"]["retryable"] = json!({"const": retryable});
        }
        if let Some(member) = doc.requires {
            data["required"] = json!([member]);
        }
        if kind == ErrorKind::AuthExpired {
            data["properties"]["reason"] = json!({"enum": auth_expired_reasons()});
        }
        rules.push(json!({
            "if": {"properties": {"code": {"const": kind.code()}}},
            "then": {"required": ["data"], "properties": {"data": data}},
        }));
    }
    let codes: Vec<i32> = PROTOCOL_CODES
        .into_iter()
        .chain(ErrorKind::ALL.map(ErrorKind::code))
        .collect();
    json!({
        "description": "The `error` member of a JSON-RPC response from the sidecar. Protocol errors of the transport (-32700, -32600, -32601) carry no `data`; every other error carries `data` whose `kind` matches its code.",
        "type": "object",
        "required": ["code", "message"],
        "additionalProperties": false,
        "properties": {
            "code": {"type": "integer", "enum": codes},
            "message": {
                "description": "For the shell's developers; never carries a token.",
                "type": "string",
            },
            "data": {"$ref": format!("{COMPONENTS}ErrorData")},
        },
        "allOf": rules,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// Params with an alias, as the domains write them.
    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[schemars(transform = Alias("connectionId", "connection_id"))]
    #[allow(dead_code)]
    struct Aliased {
        /// The id.
        #[serde(rename = "connectionId", alias = "connection_id")]
        connection_id: String,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn serde_field_names_include_aliases() {
        assert_eq!(
            serde_field_names::<Aliased>(),
            Some(&["connectionId", "connection_id", "note"][..])
        );
        assert_eq!(serde_field_names::<String>(), None);
    }

    #[test]
    fn alias_makes_one_of_two_names_required() {
        let mut generator = generator(false);
        let schema = generate(&mut generator, Aliased::json_schema);
        assert_eq!(
            schema["anyOf"],
            json!([{"required": ["connectionId"]}, {"required": ["connection_id"]}])
        );
        assert_eq!(
            schema["not"],
            json!({"required": ["connectionId", "connection_id"]})
        );
        assert!(schema.get("required").is_none());
        assert_eq!(
            schema["properties"]["connection_id"]["description"],
            "Alias of `connectionId`."
        );
        assert_eq!(
            schema["properties"]["connectionId"]["description"],
            "The id."
        );
    }

    #[test]
    fn the_catalog_examples_are_of_their_kind() {
        for kind in ErrorKind::ALL {
            let doc = kind_doc(kind);
            assert_eq!(doc.example.kind(), kind);
            if let Some(retryable) = doc.retryable {
                assert_eq!(doc.example.retryable(), retryable, "{kind:?}");
            }
            if let Some(member) = doc.requires {
                assert!(doc.example.data().get(member).is_some(), "{kind:?}");
            }
        }
    }

    #[test]
    fn errors_come_from_the_class() {
        let mut spec = MethodSpec::new::<Aliased, bool>("m", Access::Public, "s");
        assert_eq!(
            spec.errors(),
            [
                ErrorKind::InvalidParams,
                ErrorKind::Internal,
                ErrorKind::Cancelled
            ]
        );
        spec.can_fail_with(&[ErrorKind::Storage]);
        assert_eq!(
            spec.errors(),
            [
                ErrorKind::Storage,
                ErrorKind::InvalidParams,
                ErrorKind::Internal,
                ErrorKind::Cancelled
            ]
        );
        spec.access = Access::Gated;
        let gated: Vec<_> = ErrorKind::ALL
            .into_iter()
            .filter(|kind| *kind != ErrorKind::AuthFailed)
            .collect();
        assert_eq!(spec.errors(), gated);
        let inline = MethodSpec::new::<Aliased, bool>("m", Access::Public, "s").answered_inline();
        assert_eq!(
            inline.errors(),
            [ErrorKind::InvalidParams, ErrorKind::Internal]
        );
    }

    #[test]
    fn the_document_is_deterministic() {
        let specs = [
            MethodSpec::new::<Aliased, bool>("a", Access::Public, "A."),
            MethodSpec::new::<Aliased, String>("b", Access::Gated, "B."),
        ];
        let document = openrpc_document(&specs);
        assert_eq!(
            openrpc_text(&document),
            openrpc_text(&openrpc_document(&specs))
        );
        assert_eq!(document["openrpc"], "1.3.2");
        assert_eq!(document["methods"][1]["tags"], json!([{"name": "gated"}]));
        assert_eq!(
            document["methods"][0]["params"][0],
            json!({"name": "connectionId", "required": true, "description": "The id.", "schema": {"type": "string"}})
        );
    }
}
