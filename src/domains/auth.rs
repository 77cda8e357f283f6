//! The session methods (public: they work without a session): store, read, clear, sign out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::auth_server::{AuthServer, LogoutScope};
use crate::error::{Error, Result};
use crate::session::model::{jwt_expiry, unix_now};
use crate::session::refresh::Refresher;
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
            .or_else(|| self.expires_in.map(|seconds| now.saturating_add(seconds)))
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutParams {
    #[serde(default)]
    pub scope: LogoutScope,
}

/// Signs out. With an auth server, the session is revoked there first (`local`: this
/// session, `global`: all of the user's, `others`: all but this one); a failure there does
/// not keep the user signed in here. `others` keeps the local session.
pub async fn sign_out(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: SignOutParams,
) -> Result<Removed> {
    let current = sessions.current().await;
    if let (Some(auth), Some(session)) = (auth, current.as_deref()) {
        let revoked = auth
            .logout(session.access_token.expose(), params.scope)
            .await;
        match revoked {
            Err(error) if params.scope == LogoutScope::Others => return Err(error),
            Err(error) => {
                tracing::warn!(error = %error, "the auth server did not confirm the sign-out; signing out locally");
            }
            Ok(()) => {}
        }
    }
    if params.scope == LogoutScope::Others {
        return Ok(Removed { removed: false });
    }
    clear_session(sessions).await
}

/// `auth_refresh_session`: a single-flight refresh, then the state.
pub async fn refresh_session(sessions: &Sessions, refresher: &Arc<Refresher>) -> Result<AuthState> {
    let session = sessions.current().await.ok_or_else(Error::no_session)?;
    refresher.refresh(session).await?;
    Ok(sessions.state().await)
}

/// `auth_get_user`: the user as the auth server sees it now. A session it no longer knows
/// is ended (if it is still the stored one); other failures leave the session alone.
///
/// As supabase-js `getUser`, an access token about to expire is refreshed first: an expired
/// one would be refused by `/user` and taken for a session the server no longer knows.
pub async fn get_user(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    refresher: &Arc<Refresher>,
) -> Result<Value> {
    let auth = auth.ok_or_else(|| {
        Error::Unavailable("no auth server configured: set CORE_SIDECAR_AUTH_URL".into())
    })?;
    let session = sessions.current().await.ok_or_else(Error::no_session)?;
    let session = refresher.fresh(session).await?;
    match auth.user(session.access_token.expose()).await {
        Ok(user) => {
            sessions
                .update_user_if_current(&session, user.clone())
                .await?;
            Ok(user)
        }
        Err(error @ Error::AuthExpired { .. }) => {
            sessions
                .end_if_current(&session, SignOutReason::Expired)
                .await;
            Err(error)
        }
        Err(error) => Err(error),
    }
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
