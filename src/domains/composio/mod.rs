//! Composio integrations. This file: toolkits, connections, authorize, delete, and what the
//! submodules share (param checks, path and query escaping, the free-form size cap). The
//! submodules: [`tools`] (list the agent's tools, execute one), [`github`] (a GitHub
//! connection's repositories), [`triggers`] (available and active triggers, enable, disable).
//!
//! Each function takes the authenticated [`BackendClient`] the session gate hands it and
//! typed params, and returns a typed result (camelCase on the wire). The backend's `data`
//! for the four methods of this file is read leniently and normalized, since its exact shape
//! is not pinned down:
//!
//! - toolkits: `{toolkits: [...]}` or a bare array; each item a string or an object with a
//!   `slug`, `key`, `name` or `id`.
//! - connections: `{connections: [...]}`, `{items: [...]}` or a bare array; fields in
//!   camelCase or snake_case (`createdAt`/`created_at`, `toolkit`/`toolkitSlug`/`appName`,
//!   the toolkit possibly an object with a `slug`); `status` defaults to `"unknown"`.
//! - authorize: `connectUrl`/`connect_url`/`redirectUrl`/`redirect_url`, and
//!   `connectionId`/`connection_id`/`id`.
//! - delete: `{deleted: bool}`, or no data at all (the backend said `success: true`), which
//!   means deleted.
//!
//! The submodules' answers have a pinned shape (camelCase, as the backend sends it): typed
//! fields are checked, free-form ones (a tool's `parameters`, an execution's `data`, a
//! trigger's `defaultConfig`/`triggerConfig`) pass through unchanged.
//!
//! Anything that cannot be normalized or decoded is a malformed backend answer (reported to
//! Sentry).

mod connections;
pub mod github;
pub mod tools;
pub mod triggers;

use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{NoParams, within_free_form_limit};
use crate::backend::BackendClient;
use crate::error::{Error, Result};

const BASE: &str = "/agent-integrations/composio";

/// Characters escaped in one path segment (RFC 3986 `pchar` complement, plus `%` and `/`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Longest toolkit slug or connection id accepted in params.
const MAX_PARAM_CHARS: usize = 256;

/// The control characters refused in params (`char::is_control`), as a JSON Schema pattern.
const CONTROL_CHARS: &str = r"[\x00-\x1f\x7f-\x9f]";

/// The Composio toolkits the user can connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ToolkitList {
    /// Toolkit slugs, e.g. `github`.
    #[schemars(inner(length(min = 1)))]
    pub toolkits: Vec<String>,
}

/// One Composio connection of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Connection {
    /// The connection id, as `composio_delete_connection` takes it.
    #[schemars(length(min = 1))]
    pub id: String,
    /// The toolkit slug.
    #[schemars(length(min = 1))]
    pub toolkit: String,
    /// The backend's status, e.g. `ACTIVE` or `INITIATED`; `unknown` when it gave none.
    #[schemars(length(min = 1))]
    pub status: String,
    /// When the connection was made, as the backend wrote it (usually RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub created_at: Option<String>,
}

/// The user's Composio connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ConnectionList {
    pub connections: Vec<Connection>,
}

/// The toolkit to connect.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"toolkit": "github"}))]
pub struct AuthorizeParams {
    /// The toolkit slug, e.g. `github`: not blank, at most 256 characters, no control
    /// characters.
    #[serde(deserialize_with = "toolkit_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub toolkit: String,
}

/// A connection started; the shell opens `connectUrl` in the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Authorization {
    /// The URL where the user grants access.
    #[schemars(length(min = 1))]
    pub connect_url: String,
    /// The id of the new connection.
    #[schemars(length(min = 1))]
    pub connection_id: String,
}

/// The connection to delete. `connectionId` (or its alias `connection_id`) is required. Not
/// both `connectionId` and `connection_id`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    transform = crate::schema::Alias("connectionId", "connection_id"),
    example = serde_json::json!({"connectionId": "ca_1"})
)]
pub struct DeleteConnectionParams {
    /// The connection id, from `composio_list_connections` or `composio_authorize`: not
    /// blank, at most 256 characters, no control characters, not `.` or `..`. Required (or
    /// `connection_id`).
    #[serde(
        rename = "connectionId",
        alias = "connection_id",
        deserialize_with = "connection_id_param"
    )]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"anyOf": [{"pattern": CONTROL_CHARS}, {"enum": [".", ".."]}]})
    )]
    pub connection_id: String,
}

/// Whether the backend deleted the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Deleted {
    pub deleted: bool,
}

/// `GET /agent-integrations/composio/toolkits`.
pub async fn list_toolkits(api: BackendClient, _: NoParams) -> Result<ToolkitList> {
    let data: Value = api.get(&format!("{BASE}/toolkits")).await?;
    normalize_toolkits(data)
}

/// `GET /agent-integrations/composio/connections`.
pub async fn list_connections(api: BackendClient, _: NoParams) -> Result<ConnectionList> {
    let data: connections::RawList = api.get(&format!("{BASE}/connections")).await?;
    connections::normalize(data)
}

/// `POST /agent-integrations/composio/authorize` with `{toolkit}`: starts an OAuth
/// connection; the shell opens `connectUrl` in the browser.
pub async fn authorize(api: BackendClient, params: AuthorizeParams) -> Result<Authorization> {
    let toolkit = required("toolkit", &params.toolkit)?;
    let data: Value = api
        .post(
            &format!("{BASE}/authorize"),
            &serde_json::json!({ "toolkit": toolkit }),
        )
        .await?;
    normalize_authorization(data)
}

/// `DELETE /agent-integrations/composio/connections/{id}`, the id escaped as one segment.
pub async fn delete_connection(
    api: BackendClient,
    params: DeleteConnectionParams,
) -> Result<Deleted> {
    let id = required("connectionId", &params.connection_id)?;
    let data: Value = api.delete(&connection_path(id)?).await?;
    normalize_deleted(data)
}

// Params are validated while they are parsed, so a bad value is `invalid params` before the
// session gate runs (even without a session); the domain functions check again.
fn toolkit_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let value = String::deserialize(d)?;
    required("toolkit", &value).map_err(param_error::<D>)?;
    Ok(value)
}

fn connection_id_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let value = String::deserialize(d)?;
    let id = required("connectionId", &value).map_err(param_error::<D>)?;
    connection_path(id).map_err(param_error::<D>)?;
    Ok(value)
}

fn param_error<'de, D: Deserializer<'de>>(error: Error) -> D::Error {
    match error {
        Error::InvalidParams { message, .. } => D::Error::custom(message),
        other => D::Error::custom(other),
    }
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid_params(
            field,
            format!("`{field}` must be a non-empty string"),
        ));
    }
    if value.chars().count() > MAX_PARAM_CHARS {
        return Err(Error::invalid_params(
            field,
            format!("`{field}` is longer than {MAX_PARAM_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_params(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(value)
}

fn connection_path(id: &str) -> Result<String> {
    // `.` and `..` (escaped or not, URL parsers treat `%2e` as a dot) would climb out of
    // `/connections/` and hit another route.
    if id == "." || id == ".." {
        return Err(Error::invalid_params(
            "connectionId",
            "`connectionId` must not be `.` or `..`",
        ));
    }
    Ok(format!(
        "{BASE}/connections/{}",
        utf8_percent_encode(id, SEGMENT)
    ))
}

/// Characters escaped in a query value: all but RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~`
/// (so `,`, `&`, `=`, `+`, `#`, `%`, spaces and non-ASCII are escaped).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An id sent as one path segment (`/triggers/{triggerId}`): a [`required`] param that holds
/// no `/` or `\` and is not `.` or `..` (which would reach another route), escaped.
fn segment(field: &str, value: &str) -> Result<String> {
    let value = required(field, value)?;
    if value.contains(['/', '\\']) {
        return Err(Error::invalid_params(
            field,
            format!("`{field}` must not contain `/` or `\\`"),
        ));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid_params(
            field,
            format!("`{field}` must not be `.` or `..`"),
        ));
    }
    Ok(utf8_percent_encode(value, SEGMENT).to_string())
}

/// One query value, escaped.
fn query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `path`, then `?name=value&...` for the pairs that have a value (values already escaped);
/// `path` alone when none has.
fn with_query(path: String, pairs: &[(&str, Option<String>)]) -> String {
    let mut url = path;
    let mut separator = '?';
    for (name, value) in pairs {
        if let Some(value) = value {
            url.push(separator);
            url.push_str(name);
            url.push('=');
            url.push_str(value);
            separator = '&';
        }
    }
    url
}

// The submodules' params checks, run while params are parsed (so a bad value is `invalid
// params` before the gate) and again by the domain functions.

/// A [`required`] string param, trimmed.
fn text_param<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<String, D::Error> {
    let value = String::deserialize(d)?;
    Ok(required(field, &value)
        .map_err(param_error::<D>)?
        .to_string())
}

/// An optional [`required`] string param, trimmed; `null` is absent.
fn optional_text_param<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|value| {
            Ok(required(field, &value)
                .map_err(param_error::<D>)?
                .to_string())
        })
        .transpose()
}

/// A string param sent as one path segment (see [`segment`]), trimmed.
fn segment_param<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<String, D::Error> {
    let value = String::deserialize(d)?;
    segment(field, &value).map_err(param_error::<D>)?;
    Ok(value.trim().to_string())
}

/// A free-form object param, within the shared cap ([`within_free_form_limit`]).
fn free_form_param<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<Map<String, Value>, D::Error> {
    let value = Map::deserialize(d)?;
    within_free_form_limit(field, &value).map_err(param_error::<D>)?;
    Ok(value)
}

/// An optional free-form object param; `null` is absent.
fn optional_free_form_param<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
) -> std::result::Result<Option<Map<String, Value>>, D::Error> {
    let value = Option::<Map<String, Value>>::deserialize(d)?;
    if let Some(value) = &value {
        within_free_form_limit(field, value).map_err(param_error::<D>)?;
    }
    Ok(value)
}

/// A string of a backend answer that must not be blank (an id, a slug, a name).
fn non_blank<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    let value = String::deserialize(d)?;
    if value.trim().is_empty() {
        return Err(D::Error::custom("expected a non-blank string"));
    }
    Ok(value)
}

fn malformed(message: impl Into<String>) -> Error {
    Error::malformed_answer(
        None,
        format!("malformed backend response: {}", message.into()),
    )
}

/// A string, or a number written as a string.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_text(object: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| object.get(*k).and_then(as_text))
}

/// The list in `data`: a bare array, or the array under one of `keys`.
fn list_in(data: Value, keys: &[&str], what: &str) -> Result<Vec<Value>> {
    match data {
        Value::Array(items) => Ok(items),
        Value::Object(mut object) => keys
            .iter()
            .find_map(|k| match object.remove(*k) {
                Some(Value::Array(items)) => Some(items),
                _ => None,
            })
            .ok_or_else(|| malformed(format!("no `{what}` list in data"))),
        Value::Null => Err(malformed("no data")),
        _ => Err(malformed(format!("data is not a `{what}` list"))),
    }
}

fn toolkit_name(value: &Value) -> Option<String> {
    match value {
        Value::Object(object) => first_text(object, &["slug", "key", "name", "id"]),
        other => as_text(other),
    }
}

fn normalize_toolkits(data: Value) -> Result<ToolkitList> {
    let items = list_in(data, &["toolkits", "items"], "toolkits")?;
    let toolkits = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            toolkit_name(item).ok_or_else(|| malformed(format!("toolkits[{i}] has no slug")))
        })
        .collect::<Result<_>>()?;
    Ok(ToolkitList { toolkits })
}

fn normalize_authorization(data: Value) -> Result<Authorization> {
    let Value::Object(object) = data else {
        return Err(malformed("authorize data is not an object"));
    };
    let connect_url = first_text(
        &object,
        &[
            "connectUrl",
            "connect_url",
            "redirectUrl",
            "redirect_url",
            "url",
        ],
    )
    .ok_or_else(|| malformed("authorize data has no connectUrl"))?;
    let connection_id = first_text(
        &object,
        &["connectionId", "connection_id", "connectedAccountId", "id"],
    )
    .ok_or_else(|| malformed("authorize data has no connectionId"))?;
    Ok(Authorization {
        connect_url,
        connection_id,
    })
}

fn normalize_deleted(data: Value) -> Result<Deleted> {
    match data {
        // `{"success": true}` and nothing else: the backend says it is done.
        Value::Null => Ok(Deleted { deleted: true }),
        Value::Bool(deleted) => Ok(Deleted { deleted }),
        Value::Object(object) => match object.get("deleted") {
            Some(Value::Bool(deleted)) => Ok(Deleted { deleted: *deleted }),
            None => Ok(Deleted { deleted: true }),
            Some(_) => Err(malformed("`deleted` is not a boolean")),
        },
        _ => Err(malformed("delete data is not an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn toolkits_as_strings_or_objects() {
        let cases = [
            json!({"toolkits": ["github", "slack"]}),
            json!(["github", "slack"]),
            json!({"toolkits": [{"slug": "github"}, {"name": "slack"}]}),
            json!({"items": [{"key": "github", "name": "GitHub"}, "slack"]}),
        ];
        for data in cases {
            assert_eq!(
                normalize_toolkits(data.clone()).unwrap().toolkits,
                ["github", "slack"],
                "{data}"
            );
        }
        for bad in [json!(null), json!({"other": []}), json!([{}]), json!("x")] {
            let err = normalize_toolkits(bad.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Backend {
                        malformed: true,
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    fn normalize_connections(data: Value) -> Result<ConnectionList> {
        connections::normalize(serde_json::from_str(&data.to_string()).unwrap())
    }

    #[test]
    fn connections_camel_or_snake() {
        let data = json!({"connections": [
            {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2024-01-01T00:00:00Z"},
            {"id": 7, "toolkit_slug": "slack", "status": "INITIATED", "created_at": "2024-02-01"},
            {"connection_id": "ca_3", "toolkit": {"slug": "gmail"}},
        ]});
        let list = normalize_connections(data).unwrap();
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"connections": [
                {"id": "ca_1", "toolkit": "github", "status": "ACTIVE", "createdAt": "2024-01-01T00:00:00Z"},
                {"id": "7", "toolkit": "slack", "status": "INITIATED", "createdAt": "2024-02-01"},
                {"id": "ca_3", "toolkit": "gmail", "status": "unknown"},
            ]})
        );
        assert!(normalize_connections(json!([{"toolkit": "x"}])).is_err());
        assert!(normalize_connections(json!([{"id": "x"}])).is_err());
        assert_eq!(
            normalize_connections(json!([])).unwrap().connections,
            vec![]
        );
    }

    #[test]
    fn authorization_shapes() {
        let want = Authorization {
            connect_url: "https://connect.example/x".into(),
            connection_id: "ca_1".into(),
        };
        for data in [
            json!({"connectUrl": "https://connect.example/x", "connectionId": "ca_1"}),
            json!({"redirect_url": "https://connect.example/x", "connection_id": "ca_1"}),
            json!({"redirectUrl": "https://connect.example/x", "id": "ca_1"}),
        ] {
            assert_eq!(normalize_authorization(data).unwrap(), want);
        }
        assert_eq!(
            serde_json::to_value(&want).unwrap(),
            json!({"connectUrl": "https://connect.example/x", "connectionId": "ca_1"})
        );
        assert!(normalize_authorization(json!({"connectionId": "x"})).is_err());
        assert!(normalize_authorization(json!(null)).is_err());
    }

    #[test]
    fn deleted_shapes() {
        assert!(normalize_deleted(json!(null)).unwrap().deleted);
        assert!(normalize_deleted(json!({"deleted": true})).unwrap().deleted);
        assert!(
            !normalize_deleted(json!({"deleted": false}))
                .unwrap()
                .deleted
        );
        assert!(normalize_deleted(json!({"id": "x"})).unwrap().deleted);
        assert!(normalize_deleted(json!({"deleted": "yes"})).is_err());
    }

    #[test]
    fn params_are_validated() {
        for (field, value) in [
            ("toolkit", ""),
            ("toolkit", "   "),
            ("connectionId", "a\nb"),
        ] {
            let err = required(field, value).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParams);
            assert_eq!(err.data()["field"], field);
        }
        assert!(required("toolkit", &"x".repeat(300)).is_err());
        assert_eq!(required("toolkit", " github ").unwrap(), "github");

        let p: DeleteConnectionParams =
            serde_json::from_value(json!({"connectionId": "a"})).unwrap();
        assert_eq!(p.connection_id, "a");
        for bad in [json!({"connectionId": ""}), json!({"connectionId": ".."})] {
            assert!(serde_json::from_value::<DeleteConnectionParams>(bad).is_err());
        }
        let err = serde_json::from_value::<AuthorizeParams>(json!({"toolkit": " "})).unwrap_err();
        assert!(err.to_string().contains("non-empty"), "{err}");
        assert!(
            serde_json::from_value::<AuthorizeParams>(json!({"toolkit": "a", "x": 1})).is_err()
        );
        assert!(serde_json::from_value::<NoParams>(json!({"x": 1})).is_err());
    }

    #[test]
    fn connection_ids_are_one_escaped_segment() {
        assert_eq!(
            connection_path("ca_1").unwrap(),
            "/agent-integrations/composio/connections/ca_1"
        );
        assert_eq!(
            connection_path("a/b?c#d %").unwrap(),
            "/agent-integrations/composio/connections/a%2Fb%3Fc%23d%20%25"
        );
        assert_eq!(
            connection_path("é").unwrap(),
            "/agent-integrations/composio/connections/%C3%A9"
        );
        for dots in [".", ".."] {
            assert_eq!(
                connection_path(dots).unwrap_err().kind(),
                ErrorKind::InvalidParams
            );
        }
    }
}
