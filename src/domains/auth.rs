//! The session methods (public: they work without a session): store, read, clear, sign out.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::session::{AuthState, Secret, Session, Sessions, SignOutReason};

/// `auth_store_session` params: a supabase-js `Session` passes as is; unknown fields are
/// ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSessionParams {
    #[serde(alias = "token")]
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub user: Option<Value>,
}

impl StoreSessionParams {
    fn into_session(self, now: i64) -> Result<Session> {
        let access_token = Secret::new(self.access_token)
            .ok_or_else(|| Error::invalid_params("access_token", "must be a non-empty string"))?;
        let user = match self.user {
            None | Some(Value::Null) => None,
            Some(user @ Value::Object(_)) => Some(user),
            Some(_) => return Err(Error::invalid_params("user", "must be an object")),
        };
        let expires_at = self
            .expires_at
            .or_else(|| self.expires_in.map(|seconds| now + seconds))
            .or_else(|| jwt_expiry(access_token.expose()));
        Ok(Session {
            refresh_token: self.refresh_token.and_then(Secret::new),
            access_token,
            expires_at,
            token_type: self.token_type,
            user,
        })
    }
}

/// The `exp` claim of a JWT, read without verifying the signature: it only decides when to
/// refresh, and the server verifies the token anyway.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_f64().map(|exp| exp as i64)
}

pub async fn store_session(sessions: &Sessions, params: StoreSessionParams) -> Result<AuthState> {
    let session = params.into_session(unix_now())?;
    sessions.sign_in(session).await
}

pub async fn get_state(sessions: &Sessions) -> AuthState {
    sessions.state().await
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Removed {
    pub removed: bool,
}

pub async fn clear_session(sessions: &Sessions) -> Result<Removed> {
    let removed = sessions.sign_out(SignOutReason::SignedOut).await?;
    Ok(Removed { removed })
}

/// `auth_sign_out` scope, as GoTrue's `/logout?scope=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignOutScope {
    #[default]
    Local,
    Global,
    Others,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutParams {
    #[serde(default)]
    pub scope: SignOutScope,
}

/// Signs out. The auth server part (`global`, `others`) comes with the refresh client; until
/// then every scope ends the local session except `others`, which keeps it by definition.
pub async fn sign_out(sessions: &Sessions, params: SignOutParams) -> Result<Removed> {
    if params.scope == SignOutScope::Others {
        return Ok(Removed { removed: false });
    }
    clear_session(sessions).await
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: Value) -> StoreSessionParams {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_the_jwt_exp_claim_when_no_expiry_is_given() {
        // {"alg":"none"}.{"exp":1900000000}.sig
        let token = "eyJhbGciOiJub25lIn0.eyJleHAiOjE5MDAwMDAwMDB9.c2ln";
        let session = params(serde_json::json!({"token": token}))
            .into_session(0)
            .unwrap();
        assert_eq!(session.expires_at, Some(1_900_000_000));
    }

    #[test]
    fn expires_in_is_relative_to_now() {
        let session = params(serde_json::json!({"access_token": "t", "expires_in": 3600}))
            .into_session(1_000)
            .unwrap();
        assert_eq!(session.expires_at, Some(4_600));
    }

    #[test]
    fn empty_token_and_bad_user_are_invalid_params() {
        let err = params(serde_json::json!({"access_token": ""}))
            .into_session(0)
            .unwrap_err();
        assert_eq!(err.data()["field"], "access_token");
        let err = params(serde_json::json!({"access_token": "t", "user": 5}))
            .into_session(0)
            .unwrap_err();
        assert_eq!(err.data()["field"], "user");
    }
}
