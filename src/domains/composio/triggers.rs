//! Composio triggers: the ones a toolkit offers, the user's active ones, enabling and
//! disabling one.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{
    BASE, CONTROL_CHARS, Deleted, MAX_PARAM_CHARS, non_blank, normalize_deleted,
    optional_free_form_param, optional_text_param, query_value, required, segment, segment_param,
    text_param, with_query,
};
use crate::backend::BackendClient;
use crate::domains::within_free_form_limit;
use crate::error::Result;

/// The control characters, `/` or `\`, as a JSON Schema pattern.
const CONTROL_CHARS_OR_SLASH: &str = r"[\x00-\x1f\x7f-\x9f/\\]";

/// The toolkit whose triggers to list, and optionally the connection they would run on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"toolkit": "github", "connectionId": "ca_1"}))]
pub struct ListAvailableTriggersParams {
    /// The toolkit slug, e.g. `github`: not blank, at most 256 characters, no control
    /// characters.
    #[serde(deserialize_with = "toolkit_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub toolkit: String,
    /// A connection of that toolkit (same rules as `toolkit`); with it, repository-scoped
    /// triggers come per repository it can reach. Absent (or null): none.
    #[serde(
        default,
        rename = "connectionId",
        deserialize_with = "optional_connection_id"
    )]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub connection_id: Option<String>,
}

/// The triggers a toolkit offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct AvailableTriggerList {
    pub triggers: Vec<AvailableTrigger>,
}

/// One trigger a toolkit offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct AvailableTrigger {
    /// The trigger's slug, what `composio_enable_trigger` takes, e.g.
    /// `GITHUB_PULL_REQUEST_EVENT`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub slug: String,
    /// Where it applies, as the backend says (e.g. `repository` or `account`).
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub scope: String,
    /// A `triggerConfig` to start from, passed through as the backend sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub default_config: Option<Map<String, Value>>,
    /// The keys `triggerConfig` must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub required_config_keys: Option<Vec<String>>,
    /// The repository a repository-scoped trigger is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "TriggerRepo")]
    pub repo: Option<TriggerRepo>,
}

/// A repository a trigger is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct TriggerRepo {
    /// The owner's login.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub owner: String,
    /// The repository's name.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub repo: String,
}

/// Which active triggers to list.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"toolkit": "github"}))]
pub struct ListActiveTriggersParams {
    /// Only this toolkit's (not blank, at most 256 characters, no control characters).
    /// Absent (or null): every toolkit's.
    #[serde(default, deserialize_with = "optional_toolkit")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub toolkit: Option<String>,
}

/// The user's active triggers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ActiveTriggerList {
    pub triggers: Vec<ActiveTrigger>,
}

/// One active trigger of the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ActiveTrigger {
    /// The trigger's id, what `composio_disable_trigger` takes as `triggerId`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub id: String,
    /// The trigger's slug.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub slug: String,
    /// The toolkit slug.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub toolkit: String,
    /// The connection it runs on.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub connection_id: String,
    /// Its configuration, passed through as the backend sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub trigger_config: Option<Map<String, Value>>,
    /// Its state as the backend words it (e.g. `ACTIVE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub state: Option<String>,
}

/// The trigger to enable, on which connection, configured how.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "connectionId": "ca_1",
    "slug": "GITHUB_PULL_REQUEST_EVENT",
    "triggerConfig": {"owner": "acme", "repo": "app"},
}))]
pub struct EnableTriggerParams {
    /// The connection to run it on: not blank, at most 256 characters, no control characters.
    #[serde(rename = "connectionId", deserialize_with = "connection_id_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub connection_id: String,
    /// The trigger's slug, from `composio_list_available_triggers` (same rules).
    #[serde(deserialize_with = "slug_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub slug: String,
    /// Its configuration (the keys of `requiredConfigKeys`, say), sent as is: an object of at
    /// most 64 KiB (65536 bytes) as compact JSON. Absent (or null): not sent.
    #[serde(
        default,
        rename = "triggerConfig",
        deserialize_with = "trigger_config_param"
    )]
    pub trigger_config: Option<Map<String, Value>>,
}

/// The trigger enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct EnabledTrigger {
    /// The new trigger's id, what `composio_disable_trigger` takes.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub trigger_id: String,
    /// The trigger's slug.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub slug: String,
    /// The connection it runs on.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub connection_id: String,
}

/// The trigger to disable.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"triggerId": "ti_1"}))]
pub struct DisableTriggerParams {
    /// The trigger's id, from `composio_list_active_triggers` (`id`) or
    /// `composio_enable_trigger`: not blank, at most 256 characters, no control characters,
    /// no `/` or `\`, not `.` or `..`.
    #[serde(rename = "triggerId", deserialize_with = "trigger_id_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"anyOf": [{"pattern": CONTROL_CHARS_OR_SLASH}, {"enum": [".", ".."]}]})
    )]
    pub trigger_id: String,
}

/// `GET /agent-integrations/composio/triggers/available?toolkit=<slug>[&connectionId=<id>]`
/// (values escaped).
pub async fn list_available(
    api: BackendClient,
    params: ListAvailableTriggersParams,
) -> Result<AvailableTriggerList> {
    let toolkit = query_value(required("toolkit", &params.toolkit)?);
    let connection_id = params
        .connection_id
        .as_deref()
        .map(|id| required("connectionId", id).map(query_value))
        .transpose()?;
    api.get(&with_query(
        format!("{BASE}/triggers/available"),
        &[("toolkit", Some(toolkit)), ("connectionId", connection_id)],
    ))
    .await
}

/// `GET /agent-integrations/composio/triggers[?toolkit=<slug>]` (the slug escaped).
pub async fn list_active(
    api: BackendClient,
    params: ListActiveTriggersParams,
) -> Result<ActiveTriggerList> {
    let toolkit = params
        .toolkit
        .as_deref()
        .map(|slug| required("toolkit", slug).map(query_value))
        .transpose()?;
    api.get(&with_query(
        format!("{BASE}/triggers"),
        &[("toolkit", toolkit)],
    ))
    .await
}

/// `POST /agent-integrations/composio/triggers` with `{connectionId, slug, triggerConfig?}`
/// (`triggerConfig` only when given).
pub async fn enable(api: BackendClient, params: EnableTriggerParams) -> Result<EnabledTrigger> {
    let mut body = Map::new();
    body.insert(
        "connectionId".into(),
        required("connectionId", &params.connection_id)?.into(),
    );
    body.insert("slug".into(), required("slug", &params.slug)?.into());
    if let Some(config) = params.trigger_config {
        within_free_form_limit("triggerConfig", &config)?;
        body.insert("triggerConfig".into(), Value::Object(config));
    }
    api.post(&format!("{BASE}/triggers"), &body).await
}

/// `DELETE /agent-integrations/composio/triggers/{triggerId}`, the id one escaped segment.
pub async fn disable(api: BackendClient, params: DisableTriggerParams) -> Result<Deleted> {
    let id = segment("triggerId", &params.trigger_id)?;
    let data: Value = api.delete(&format!("{BASE}/triggers/{id}")).await?;
    normalize_deleted(data)
}

fn toolkit_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    text_param(d, "toolkit")
}

fn optional_toolkit<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    optional_text_param(d, "toolkit")
}

fn optional_connection_id<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    optional_text_param(d, "connectionId")
}

fn connection_id_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    text_param(d, "connectionId")
}

fn slug_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    text_param(d, "slug")
}

fn trigger_config_param<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Map<String, Value>>, D::Error> {
    optional_free_form_param(d, "triggerConfig")
}

fn trigger_id_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    segment_param(d, "triggerId")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn trigger_ids_are_one_segment() {
        assert_eq!(segment("triggerId", " ti_1 ").unwrap(), "ti_1");
        assert_eq!(
            segment("triggerId", "a b?c#d%é").unwrap(),
            "a%20b%3Fc%23d%25%C3%A9"
        );
        for bad in ["", "  ", "a/b", "/", "a\\b", ".", "..", "a\nb"] {
            let err = segment("triggerId", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParams, "{bad:?}");
            assert_eq!(err.data()["field"], "triggerId", "{bad:?}");
        }
        assert!(segment("triggerId", &"x".repeat(300)).is_err());
        let parse = |v: Value| serde_json::from_value::<DisableTriggerParams>(v);
        assert_eq!(
            parse(json!({"triggerId": " ti_1 "})).unwrap().trigger_id,
            "ti_1"
        );
        for bad in [
            json!({"triggerId": "a/b"}),
            json!({"triggerId": ".."}),
            json!({"triggerId": ""}),
            json!({"triggerId": 5}),
            json!({}),
            json!({"trigger_id": "ti_1"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            with_query(
                "/p".into(),
                &[
                    ("toolkit", Some(query_value("a&b=c d"))),
                    ("connectionId", None)
                ]
            ),
            "/p?toolkit=a%26b%3Dc%20d"
        );
        assert_eq!(
            with_query(
                "/p".into(),
                &[
                    ("toolkit", None),
                    ("connectionId", Some(query_value("ca/1?#")))
                ]
            ),
            "/p?connectionId=ca%2F1%3F%23"
        );
        assert_eq!(with_query("/p".into(), &[("toolkit", None)]), "/p");
    }

    #[test]
    fn params_are_checked() {
        let available = |v: Value| serde_json::from_value::<ListAvailableTriggersParams>(v);
        let p = available(json!({"toolkit": " github "})).unwrap();
        assert_eq!((p.toolkit.as_str(), p.connection_id), ("github", None));
        for bad in [
            json!({}),
            json!({"toolkit": ""}),
            json!({"toolkit": "github", "connectionId": " "}),
        ] {
            assert!(available(bad.clone()).is_err(), "{bad}");
        }

        let active = |v: Value| serde_json::from_value::<ListActiveTriggersParams>(v);
        assert_eq!(active(json!({})).unwrap().toolkit, None);
        assert_eq!(active(json!({"toolkit": null})).unwrap().toolkit, None);
        assert!(active(json!({"toolkit": "\u{7}"})).is_err());

        let enable = |v: Value| serde_json::from_value::<EnableTriggerParams>(v);
        let p = enable(json!({"connectionId": "ca_1", "slug": "S"})).unwrap();
        assert_eq!(p.trigger_config, None);
        let p = enable(json!({"connectionId": "ca_1", "slug": "S", "triggerConfig": {"a": 1}}))
            .unwrap();
        assert_eq!(
            p.trigger_config,
            Some(json!({"a": 1}).as_object().unwrap().clone())
        );
        let limit = crate::domains::auth::MAX_FREE_FORM_BYTES;
        let over =
            json!({"connectionId": "c", "slug": "S", "triggerConfig": {"k": "x".repeat(limit)}});
        let err = enable(over).unwrap_err().to_string();
        assert!(
            err.contains("`triggerConfig` is larger than the limit"),
            "{err}"
        );
        for bad in [
            json!({"slug": "S"}),
            json!({"connectionId": "ca_1"}),
            json!({"connectionId": "ca_1", "slug": "S", "triggerConfig": [1]}),
            json!({"connectionId": "ca_1", "slug": "S", "trigger_config": {}}),
        ] {
            assert!(enable(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_typed_and_free_form_fields_pass_through() {
        let available: AvailableTriggerList = serde_json::from_value(json!({"triggers": [
            {"slug": "GITHUB_PULL_REQUEST_EVENT", "scope": "repository",
             "defaultConfig": {"owner": "acme", "repo": "app", "events": ["opened"]},
             "requiredConfigKeys": ["owner", "repo"], "repo": {"owner": "acme", "repo": "app"}},
            {"slug": "GITHUB_STAR_ADDED_EVENT", "scope": "account", "repo": null},
        ]}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&available).unwrap(),
            json!({"triggers": [
                {"slug": "GITHUB_PULL_REQUEST_EVENT", "scope": "repository",
                 "defaultConfig": {"owner": "acme", "repo": "app", "events": ["opened"]},
                 "requiredConfigKeys": ["owner", "repo"], "repo": {"owner": "acme", "repo": "app"}},
                {"slug": "GITHUB_STAR_ADDED_EVENT", "scope": "account"},
            ]})
        );
        assert!(
            serde_json::from_value::<AvailableTriggerList>(
                json!({"triggers": [{"slug": "S", "scope": "x", "repo": {"owner": "a"}}]})
            )
            .is_err()
        );

        let active: ActiveTriggerList = serde_json::from_value(json!({"triggers": [
            {"id": "ti_1", "slug": "S", "toolkit": "github", "connectionId": "ca_1",
             "triggerConfig": {"owner": "acme"}, "state": "ACTIVE"},
        ]}))
        .unwrap();
        assert_eq!(
            active.triggers[0].trigger_config,
            Some(json!({"owner": "acme"}).as_object().unwrap().clone())
        );
        for bad in [
            json!({"triggers": [{"id": "", "slug": "S", "toolkit": "t", "connectionId": "c"}]}),
            json!({"triggers": [{"id": "i", "slug": "S", "toolkit": "t"}]}),
            json!({"triggers": [{"id": 1, "slug": "S", "toolkit": "t", "connectionId": "c"}]}),
            json!({"triggers": [{"id": "i", "slug": "S", "toolkit": "t", "connectionId": "c", "triggerConfig": "x"}]}),
        ] {
            assert!(
                serde_json::from_value::<ActiveTriggerList>(bad.clone()).is_err(),
                "{bad}"
            );
        }

        let enabled: EnabledTrigger = serde_json::from_value(
            json!({"triggerId": "ti_9", "slug": "S", "connectionId": "ca_1", "status": "x"}),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&enabled).unwrap(),
            json!({"triggerId": "ti_9", "slug": "S", "connectionId": "ca_1"})
        );
        assert!(
            serde_json::from_value::<EnabledTrigger>(json!({"slug": "S", "connectionId": "c"}))
                .is_err()
        );
    }
}
