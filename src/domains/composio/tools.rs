//! Composio tools: the agent's tools (function-calling definitions), and executing one.
//!
//! `composio_execute` runs a third-party action, which may have side effects. What the
//! provider says about it (including its own 401 or 403) comes back in the result
//! (`successful: false`, `error`), or as a `backend` error when the backend fails the call;
//! only the backend's own HTTP 401 for the session token is `auth_expired`, and only that is
//! retried (once, after a refresh, by the session gate: the backend refused the request before
//! running it). Nothing else is retried.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{
    BASE, CONTROL_CHARS, MAX_PARAM_CHARS, free_form_param, non_blank, param_error, query_value,
    required, text_param, with_query,
};
use crate::backend::BackendClient;
use crate::domains::within_free_form_limit;
use crate::error::{Error, Result};

/// Most toolkit slugs `composio_list_tools` takes at once.
pub const MAX_TOOLKITS: usize = 100;

/// One toolkit slug of `toolkits`, as a JSON Schema pattern: not blank, and no control
/// character or comma (which would split the comma-separated list).
const TOOLKIT_ITEM: &str =
    r"^[^\x00-\x1f\x7f-\x9f,]*[^\s\x00-\x1f\x7f-\x9f,][^\x00-\x1f\x7f-\x9f,]*$";

/// Which toolkits' tools to list.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"toolkits": ["github", "slack"]}))]
pub struct ListToolsParams {
    /// Toolkit slugs, e.g. `["github"]`: 1 to 100, each not blank, at most 256 characters,
    /// without control characters or commas. Absent (or null): the tools of every toolkit
    /// the backend offers the user.
    #[serde(default, deserialize_with = "toolkits_param")]
    #[schemars(
        length(min = 1, max = MAX_TOOLKITS),
        inner(regex(pattern = TOOLKIT_ITEM), length(max = MAX_PARAM_CHARS))
    )]
    pub toolkits: Option<Vec<String>>,
}

/// The tools the agent can call, as function-calling definitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ToolList {
    pub tools: Vec<Tool>,
}

/// One tool, in the function-calling format (`{type: "function", function: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Tool {
    /// The tool's kind, as the backend sends it (`function`).
    #[serde(rename = "type", deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub kind: String,
    pub function: ToolFunction,
}

/// The function a tool defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct ToolFunction {
    /// The tool's slug, what `composio_execute` takes as `tool`, e.g.
    /// `GITHUB_CREATE_AN_ISSUE`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub description: Option<String>,
    /// The JSON Schema of the tool's `arguments`, passed through as the backend sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub parameters: Option<Map<String, Value>>,
}

/// The tool to run and its arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "tool": "GITHUB_CREATE_AN_ISSUE",
    "arguments": {"owner": "acme", "repo": "app", "title": "Crash on start"},
}))]
pub struct ExecuteParams {
    /// The tool's slug, from `composio_list_tools` (`function.name`): not blank, at most 256
    /// characters, no control characters.
    #[serde(deserialize_with = "tool_param")]
    #[schemars(
        regex(pattern = r"\S"),
        length(max = MAX_PARAM_CHARS),
        extend("not" = {"pattern": CONTROL_CHARS})
    )]
    pub tool: String,
    /// The tool's arguments, an object as its `parameters` schema describes (`{}` for none),
    /// sent as is: at most 64 KiB (65536 bytes) as compact JSON.
    #[serde(deserialize_with = "arguments_param")]
    pub arguments: Map<String, Value>,
}

/// What the tool did. A tool that failed, including a provider refusing its own credentials
/// (401/403), is `successful: false` with `error`: a result, not a JSON-RPC error, and the
/// session is untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Execution {
    /// The tool's output, passed through as the backend sends it (any JSON; null when it
    /// sent none).
    #[serde(default)]
    pub data: Value,
    /// Whether the tool succeeded.
    pub successful: bool,
    /// Why the tool failed, as the provider or the backend put it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub error: Option<String>,
    /// What the call cost, in US dollars.
    pub cost_usd: f64,
    /// `data` rendered as Markdown, when the backend renders it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub markdown_formatted: Option<String>,
}

/// `GET /agent-integrations/composio/tools?toolkits=<slug>,<slug>` (each slug escaped; no
/// query when `toolkits` is absent).
pub async fn list(api: BackendClient, params: ListToolsParams) -> Result<ToolList> {
    let toolkits = params.toolkits.as_deref().map(toolkits_query).transpose()?;
    api.get(&with_query(
        format!("{BASE}/tools"),
        &[("toolkits", toolkits)],
    ))
    .await
}

/// `POST /agent-integrations/composio/execute` with `{tool, arguments}`. Sent once: only a
/// backend 401 is retried, by the gate, after a refresh.
pub async fn execute(api: BackendClient, params: ExecuteParams) -> Result<Execution> {
    let tool = required("tool", &params.tool)?;
    within_free_form_limit("arguments", &params.arguments)?;
    api.post(
        &format!("{BASE}/execute"),
        &serde_json::json!({ "tool": tool, "arguments": params.arguments }),
    )
    .await
}

/// The `toolkits` query value: each slug checked and escaped, joined with `,`.
fn toolkits_query(toolkits: &[String]) -> Result<String> {
    if toolkits.is_empty() {
        return Err(Error::invalid_params(
            "toolkits",
            "`toolkits` must not be empty; leave it out for every toolkit",
        ));
    }
    if toolkits.len() > MAX_TOOLKITS {
        return Err(Error::invalid_params(
            "toolkits",
            format!("`toolkits` has more than {MAX_TOOLKITS} slugs"),
        ));
    }
    let mut slugs = Vec::with_capacity(toolkits.len());
    for slug in toolkits {
        let slug = required("toolkits", slug)?;
        if slug.contains(',') {
            return Err(Error::invalid_params(
                "toolkits",
                "a `toolkits` slug must not contain a comma",
            ));
        }
        slugs.push(query_value(slug));
    }
    Ok(slugs.join(","))
}

fn toolkits_param<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    let Some(toolkits) = Option::<Vec<String>>::deserialize(d)? else {
        return Ok(None);
    };
    toolkits_query(&toolkits).map_err(param_error::<D>)?;
    Ok(Some(
        toolkits
            .iter()
            .map(|slug| slug.trim().to_string())
            .collect(),
    ))
}

fn tool_param<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    text_param(d, "tool")
}

fn arguments_param<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Map<String, Value>, D::Error> {
    free_form_param(d, "arguments")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn toolkits_are_escaped_and_comma_joined() {
        let query = |slugs: &[&str]| {
            toolkits_query(&slugs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(query(&["github", " slack "]).unwrap(), "github,slack");
        assert_eq!(
            query(&["a&b=c", "x y+z#", "é%"]).unwrap(),
            "a%26b%3Dc,x%20y%2Bz%23,%C3%A9%25"
        );
        for bad in [&[][..], &[""], &["  "], &["a,b"], &["a\nb"]] {
            let err = query(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParams, "{bad:?}");
            assert_eq!(err.data()["field"], "toolkits", "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_TOOLKITS).map(|i| format!("t{i}")).collect();
        assert!(toolkits_query(&many).is_err());
        assert!(toolkits_query(&many[..MAX_TOOLKITS]).is_ok());
    }

    #[test]
    fn list_params_absent_null_or_a_list() {
        let parse = |v: Value| serde_json::from_value::<ListToolsParams>(v);
        assert_eq!(parse(json!({})).unwrap().toolkits, None);
        assert_eq!(parse(json!({"toolkits": null})).unwrap().toolkits, None);
        assert_eq!(
            parse(json!({"toolkits": [" github "]})).unwrap().toolkits,
            Some(vec!["github".to_string()])
        );
        for bad in [
            json!({"toolkits": []}),
            json!({"toolkits": "github"}),
            json!({"toolkits": ["a,b"]}),
            json!({"other": 1}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn execute_params_are_checked() {
        let parse = |v: Value| serde_json::from_value::<ExecuteParams>(v);
        let p = parse(json!({"tool": " GITHUB_X ", "arguments": {"a": [1, {"b": null}]}})).unwrap();
        assert_eq!(p.tool, "GITHUB_X");
        assert_eq!(Value::Object(p.arguments), json!({"a": [1, {"b": null}]}));
        for bad in [
            json!({"arguments": {}}),
            json!({"tool": "X"}),
            json!({"tool": "", "arguments": {}}),
            json!({"tool": "X", "arguments": []}),
            json!({"tool": "X", "arguments": "{}"}),
            json!({"tool": "X", "arguments": {}, "extra": 1}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        // 64 KiB as compact JSON: `{"k":"…"}` is 8 bytes plus the string.
        let limit = crate::domains::auth::MAX_FREE_FORM_BYTES;
        let fits = json!({"tool": "X", "arguments": {"k": "x".repeat(limit - 8)}});
        assert!(parse(fits).is_ok());
        let over = json!({"tool": "X", "arguments": {"k": "x".repeat(limit - 7)}});
        let err = parse(over).unwrap_err().to_string();
        assert!(
            err.contains("`arguments` is larger than the limit of 65536"),
            "{err}"
        );
    }

    #[test]
    fn answers_are_typed_and_free_form_fields_pass_through() {
        let data = json!({"tools": [
            {"type": "function", "function": {
                "name": "GITHUB_CREATE_AN_ISSUE",
                "description": "Creates an issue.",
                "parameters": {"type": "object", "properties": {"n": {"type": "integer", "x-any": [1.5, null]}}},
                "extra": "ignored",
            }},
            {"type": "function", "function": {"name": "SLACK_X", "description": null}},
        ]});
        let list: ToolList = serde_json::from_value(data).unwrap();
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"tools": [
                {"type": "function", "function": {
                    "name": "GITHUB_CREATE_AN_ISSUE",
                    "description": "Creates an issue.",
                    "parameters": {"type": "object", "properties": {"n": {"type": "integer", "x-any": [1.5, null]}}},
                }},
                {"type": "function", "function": {"name": "SLACK_X"}},
            ]})
        );
        for bad in [
            json!({"tools": [{"type": "function", "function": {"name": ""}}]}),
            json!({"tools": [{"type": "function", "function": {}}]}),
            json!({"tools": [{"function": {"name": "X"}}]}),
            json!({"tools": [{"type": "function", "function": {"name": "X", "parameters": []}}]}),
            json!({"items": []}),
        ] {
            assert!(
                serde_json::from_value::<ToolList>(bad.clone()).is_err(),
                "{bad}"
            );
        }

        let execution: Execution = serde_json::from_value(json!({
            "data": [{"id": 1}], "successful": false, "error": "provider returned 401",
            "costUsd": 0.002, "markdownFormatted": null,
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&execution).unwrap(),
            json!({"data": [{"id": 1}], "successful": false, "error": "provider returned 401", "costUsd": 0.002})
        );
        let no_data: Execution =
            serde_json::from_value(json!({"successful": true, "costUsd": 0})).unwrap();
        assert_eq!(no_data.data, Value::Null);
        for bad in [
            json!({"data": {}, "successful": "yes", "costUsd": 0}),
            json!({"data": {}, "successful": true}),
            json!({"data": {}, "successful": true, "costUsd": "0.1"}),
        ] {
            assert!(
                serde_json::from_value::<Execution>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
