//! The user's profile as the product backend knows it.
//!
//! `user_get_profile` returns the backend's user object as it is (its keys are the
//! backend's, not renamed), with two normalizations: a `data` of `{"user": {...}}` and
//! nothing else is unwrapped, and any token- or secret-shaped field is removed at every
//! depth, since no method ever returns a token.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::NoParams;
use crate::backend::BackendClient;
use crate::error::{Error, Result};

/// Field names never passed on to the shell, compared case-insensitively without `_`/`-`.
const SECRET_FIELDS: &[&str] = &[
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "providertoken",
    "providerrefreshtoken",
    "token",
    "password",
    "secret",
    "apikey",
];

/// The user object as the product backend knows it (`GET /auth/me`), keys as the backend
/// wrote them. Token- and secret-shaped fields are removed at every depth.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Profile(#[schemars(with = "Map<String, Value>")] pub Value);

/// `GET /auth/me` -> the user object.
pub async fn get_profile(api: BackendClient, _: NoParams) -> Result<Profile> {
    let data: Value = api.get("/auth/me").await?;
    normalize_profile(data).map(Profile)
}

fn normalize_profile(data: Value) -> Result<Value> {
    let mut user = match data {
        Value::Object(mut object) => {
            if object.len() == 1 && object.get("user").is_some_and(Value::is_object) {
                object.remove("user").unwrap_or_default()
            } else {
                Value::Object(object)
            }
        }
        _ => {
            return Err(Error::malformed_answer(
                None,
                "malformed backend response: /auth/me data is not a user object",
            ));
        }
    };
    strip_secrets(&mut user);
    Ok(user)
}

fn strip_secrets(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|key, _| {
                let key: String = key
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .flat_map(char::to_lowercase)
                    .collect();
                !SECRET_FIELDS.contains(&key.as_str())
            });
            object.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passes_the_user_through() {
        let user = json!({"id": "u1", "email": "a@example.com", "user_metadata": {"name": "A"}});
        assert_eq!(normalize_profile(user.clone()).unwrap(), user);
        assert_eq!(
            normalize_profile(json!({ "user": user.clone() })).unwrap(),
            user
        );
    }

    #[test]
    fn never_returns_tokens() {
        let data = json!({
            "id": "u1",
            "access_token": "eyJ.x.y",
            "refreshToken": "r",
            "identities": [{"provider": "github", "provider_token": "gho_x", "Provider-Refresh-Token": "y"}],
        });
        assert_eq!(
            normalize_profile(data).unwrap(),
            json!({"id": "u1", "identities": [{"provider": "github"}]})
        );
    }

    #[test]
    fn non_objects_are_malformed() {
        for bad in [json!(null), json!([1]), json!("u1")] {
            let err = normalize_profile(bad).unwrap_err();
            assert!(crate::telemetry::is_reportable(&err));
        }
    }
}
