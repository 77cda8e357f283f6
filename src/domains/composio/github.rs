//! A GitHub connection's repositories (for repository-scoped triggers).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::{
    BASE, CONTROL_CHARS, MAX_PARAM_CHARS, non_blank, optional_text_param, query_value, required,
    with_query,
};
use crate::backend::BackendClient;
use crate::error::Result;

/// Which GitHub connection's repositories to list.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"connectionId": "ca_1"}))]
pub struct ListReposParams {
    /// The GitHub connection, from `composio_list_connections`: not blank, at most 256
    /// characters, no control characters. Absent (or null): the backend picks the user's
    /// GitHub connection.
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

/// The repositories a GitHub connection can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct GithubRepoList {
    /// The connection listed (the one the backend picked when none was given).
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub connection_id: String,
    pub repositories: Vec<GithubRepo>,
}

/// One GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct GithubRepo {
    /// The owner's login, e.g. `acme`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub owner: String,
    /// The repository's name, e.g. `app`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub repo: String,
    /// `owner/repo`.
    #[serde(deserialize_with = "non_blank")]
    #[schemars(length(min = 1))]
    pub full_name: String,
    /// Whether the repository is private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool")]
    pub private: Option<bool>,
    /// The default branch, e.g. `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub default_branch: Option<String>,
    /// The repository's page on GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub html_url: Option<String>,
}

/// `GET /agent-integrations/composio/github/repos[?connectionId=<id>]` (the id escaped).
pub async fn list_repos(api: BackendClient, params: ListReposParams) -> Result<GithubRepoList> {
    let connection_id = params
        .connection_id
        .as_deref()
        .map(|id| required("connectionId", id).map(query_value))
        .transpose()?;
    api.get(&with_query(
        format!("{BASE}/github/repos"),
        &[("connectionId", connection_id)],
    ))
    .await
}

fn optional_connection_id<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    optional_text_param(d, "connectionId")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn params_are_checked() {
        let parse = |v: Value| serde_json::from_value::<ListReposParams>(v);
        assert_eq!(parse(json!({})).unwrap().connection_id, None);
        assert_eq!(
            parse(json!({"connectionId": null})).unwrap().connection_id,
            None
        );
        assert_eq!(
            parse(json!({"connectionId": " ca_1 "}))
                .unwrap()
                .connection_id
                .as_deref(),
            Some("ca_1")
        );
        for bad in [
            json!({"connectionId": ""}),
            json!({"connectionId": 5}),
            json!({"connection_id": "ca_1"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_typed() {
        let data = json!({"connectionId": "ca_1", "repositories": [
            {"owner": "acme", "repo": "app", "fullName": "acme/app", "private": true,
             "defaultBranch": "main", "htmlUrl": "https://github.com/acme/app", "stars": 3},
            {"owner": "acme", "repo": "docs", "fullName": "acme/docs", "private": null},
        ]});
        let list: GithubRepoList = serde_json::from_value(data).unwrap();
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"connectionId": "ca_1", "repositories": [
                {"owner": "acme", "repo": "app", "fullName": "acme/app", "private": true,
                 "defaultBranch": "main", "htmlUrl": "https://github.com/acme/app"},
                {"owner": "acme", "repo": "docs", "fullName": "acme/docs"},
            ]})
        );
        for bad in [
            json!({"repositories": []}),
            json!({"connectionId": "ca_1", "repositories": [{"owner": "a", "repo": "b"}]}),
            json!({"connectionId": "ca_1", "repositories": [{"owner": "a", "repo": "b", "fullName": "a/b", "private": "no"}]}),
        ] {
            assert!(
                serde_json::from_value::<GithubRepoList>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
