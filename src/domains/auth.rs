//! The session methods (public: they work without a session): store, read, clear, sign out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::within_free_form_limit;

use crate::backend::auth_server::{AuthServer, LogoutScope};
use crate::error::{AuthExpiredReason, Error, Result};
use crate::session::gate::Gate;
use crate::session::model::{derive_expiry, unix_now};
use crate::session::refresh::Refresher;
use crate::session::{AuthState, Secret, Session, Sessions, SignOutReason};

/// The most a free-form param of `auth_store_session` may take: `user` serialized as JSON,
/// and each of `access_token`, `refresh_token`, `token_type`, in bytes (64 KiB). The session
/// is written to the keyring and `user` is echoed by every `auth_state_changed` and
/// `auth_get_state`: a bigger one is refused rather than stored.
pub const MAX_FREE_FORM_BYTES: usize = 64 * 1024;

/// `auth_store_session` params: a supabase-js `Session` passes as is; unknown fields are
/// ignored. Each free-form param is at most [`MAX_FREE_FORM_BYTES`]. The tokens are zeroed
/// when dropped, and there is no `Debug` to print them.
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[schemars(
    description = "The session to store. A supabase-js `Session` object passes as is: unknown fields are ignored. `access_token` (or its alias `token`) is required. Without `expires_at` and `expires_in`, the access token's JWT `exp` claim is read (not verified). Not both `access_token` and `token`.",
    transform = crate::schema::Alias("access_token", "token"),
    example = serde_json::json!({"access_token": "<access token>", "refresh_token": "<refresh token>", "expires_in": 3600, "user": {"id": "user-1"}})
)]
pub struct StoreSessionParams {
    /// The access token sent to the backend as `Authorization: Bearer`. Required (or
    /// `token`); must not be empty.
    #[serde(alias = "token")]
    #[schemars(with = "String", regex(pattern = r"\S"))]
    pub access_token: Zeroizing<String>,
    /// The GoTrue refresh token; without it (or without an auth URL) the session cannot be
    /// refreshed.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub refresh_token: Option<Zeroizing<String>>,
    /// When the access token expires, in unix seconds. Wins over `expires_in`.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Seconds from now until the access token expires.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Usually `bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// The user object; its `id` becomes `userId`.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub user: Option<Value>,
}

impl StoreSessionParams {
    fn into_session(mut self, now: i64) -> Result<Session> {
        self.check_sizes()?;
        // Moved out of their zeroing wrappers into `Secret`s (which zero them in turn).
        let access_token = Secret::new(std::mem::take(&mut *self.access_token))
            .ok_or_else(|| Error::invalid_params("access_token", "must be a non-empty string"))?;
        let user = match self.user {
            None | Some(Value::Null) => None,
            Some(user @ Value::Object(_)) => Some(user),
            Some(_) => return Err(Error::invalid_params("user", "must be an object")),
        };
        let expires_at = derive_expiry(self.expires_at, self.expires_in, &access_token, now);
        Ok(Session {
            refresh_token: self
                .refresh_token
                .and_then(|mut token| Secret::new(std::mem::take(&mut *token))),
            access_token,
            expires_at,
            token_type: self.token_type,
            user,
        })
    }

    /// Refuses a free-form param over [`MAX_FREE_FORM_BYTES`], naming it (never quoting it).
    fn check_sizes(&self) -> Result<()> {
        let strings = [
            ("access_token", Some(self.access_token.as_str())),
            (
                "refresh_token",
                self.refresh_token.as_deref().map(String::as_str),
            ),
            ("token_type", self.token_type.as_deref()),
        ];
        for (field, value) in strings {
            if value.is_some_and(|v| v.len() > MAX_FREE_FORM_BYTES) {
                return Err(too_big(field));
            }
        }
        within_free_form_limit("user", &self.user)
    }
}

fn too_big(field: &str) -> Error {
    Error::invalid_params(
        field,
        format!("`{field}` is larger than the limit of {MAX_FREE_FORM_BYTES} bytes (64 KiB)"),
    )
}

pub async fn store_session(sessions: &Sessions, params: StoreSessionParams) -> Result<AuthState> {
    let session = params.into_session(unix_now())?;
    sessions.sign_in(session).await
}

pub async fn get_state(sessions: &Sessions) -> AuthState {
    sessions.state().await
}

/// Whether a stored session was removed (always false for `auth_sign_out` `others`).
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Removed {
    /// Whether a stored session was removed.
    pub removed: bool,
    /// Present (true) when the keyring could not delete the entry yet: the sign-out holds in
    /// this process and is retried until the keyring takes it, across restarts
    /// (`pendingSignOut` in the state says the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schemars(extend("const" = true))]
    pub pending: bool,
}

impl Removed {
    fn nothing() -> Self {
        Self {
            removed: false,
            pending: false,
        }
    }
}

/// The user as the auth server sees it now (GoTrue `GET /user`, as supabase-js `getUser`),
/// keys as the auth server wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
#[schemars(
    extend("required" = ["id"], "properties" = {"id": {"description": "The user's id.", "type": "string", "minLength": 1}})
)]
pub struct AuthUser(#[schemars(with = "serde_json::Map<String, Value>")] pub Value);

pub async fn clear_session(sessions: &Sessions) -> Result<Removed> {
    let removed = sessions.sign_out(SignOutReason::SignedOut).await?;
    Ok(Removed {
        removed,
        pending: sessions.sign_out_pending(),
    })
}

/// How far to sign out, as GoTrue's `/logout?scope=`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOutParams {
    /// `local` (default): this session; `global`: every session of the user; `others`: every
    /// other session, keeping this one.
    #[serde(default)]
    pub scope: LogoutScope,
}

/// Signs out, as auth-js `signOut({scope})` but for the deliberate differences below
/// (docs/protocol.md, "auth_sign_out").
///
/// With an auth server and a session, the access token is refreshed first when it expires
/// within 60 s (as auth-js: an expired token revokes nothing), then
/// `POST /logout?scope=<scope>` revokes it (`local`: this session, `global`: all of the
/// user's, `others`: all but this one); 401/403/404 there mean it is already gone.
/// - `local`: this device is signed out whatever the refresh or the revoke did (a failure
///   is logged).
/// - `global`, `others`: a refresh or revoke that failed is the answer and the session is
///   kept, so the user can retry: the token needed to revoke the other sessions must not
///   be thrown away with nothing revoked. A rejected refresh token has already ended the
///   session; its `auth_expired` is the answer.
/// - `others` keeps the local session.
pub async fn sign_out(
    gate: &Gate,
    auth: Option<&AuthServer>,
    params: SignOutParams,
) -> Result<Removed> {
    let sessions = gate.sessions();
    let scope = params.scope;
    let current = sessions.current().await;
    let revoked = match (auth, current) {
        (Some(auth), Some(current)) => revoke(gate, auth, current, scope).await,
        _ => Ok(()),
    };
    if let Err(error) = revoked {
        match (scope, &error) {
            (
                _,
                Error::AuthExpired {
                    reason: AuthExpiredReason::NoSession,
                    ..
                },
            ) => return Ok(Removed::nothing()),
            (LogoutScope::Local, _) => {
                tracing::warn!(error = %error, "the auth server did not confirm the sign-out; signing out locally");
                // A rejected refresh token has ended the session already (SIGNED_OUT
                // `refresh_failed`): this sign-out did remove it.
                let ended = matches!(
                    error,
                    Error::AuthExpired {
                        reason: AuthExpiredReason::RefreshRejected,
                        ..
                    }
                );
                let cleared = clear_session(sessions).await?;
                return Ok(Removed {
                    removed: cleared.removed || ended,
                    ..cleared
                });
            }
            _ => return Err(error),
        }
    }
    if scope == LogoutScope::Others {
        return Ok(Removed::nothing());
    }
    clear_session(sessions).await
}

/// Refreshes `session` first when it is about to expire, then revokes it at the auth server.
async fn revoke(
    gate: &Gate,
    auth: &AuthServer,
    session: Arc<Session>,
    scope: LogoutScope,
) -> Result<()> {
    let session = gate.refresher().fresh(session).await?;
    auth.logout(session.access_token.expose(), scope).await
}

/// `auth_refresh_session`: a single-flight refresh, then the state.
pub async fn refresh_session(sessions: &Sessions, refresher: &Arc<Refresher>) -> Result<AuthState> {
    let session = sessions.current().await.ok_or_else(Error::no_session)?;
    refresher.refresh(session).await?;
    Ok(sessions.state().await)
}

/// `auth_get_user`: the user as the auth server sees it now, through the session gate, as
/// auth-js `getUser`: the access token is refreshed first when about to expire, and a
/// token known to be expired is never sent (a refresh that failed is the answer). Only a
/// `/user` answer saying the session or its user is gone (`session_not_found`,
/// `user_not_found`) ends the session; a 401, a 403 `bad_jwt` or a gateway's 401 is an
/// error that keeps it, like every other failure.
pub async fn get_user(gate: &Gate, auth: Option<&AuthServer>) -> Result<Value> {
    let auth = auth.ok_or_else(Error::no_auth_server)?;
    gate.with_session(|session| async move {
        let user = auth.user(session.access_token.expose()).await?;
        gate.sessions()
            .update_user_if_current(&session, user.clone())
            .await?;
        Ok(user)
    })
    .await
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
    fn free_form_params_are_capped_and_named() {
        let big = "x".repeat(MAX_FREE_FORM_BYTES);
        // Exactly at the limit, serialized: `"` + payload + `"` inside `{"n":...}`.
        let fits = serde_json::json!({"n": "x".repeat(MAX_FREE_FORM_BYTES - 8)});
        assert_eq!(
            serde_json::to_string(&fits).unwrap().len(),
            MAX_FREE_FORM_BYTES
        );
        params(serde_json::json!({"access_token": "t", "user": fits}))
            .into_session(0)
            .unwrap();
        let over = serde_json::json!({"n": "x".repeat(MAX_FREE_FORM_BYTES - 7)});
        for (json, field) in [
            (
                serde_json::json!({"access_token": "t", "user": over}),
                "user",
            ),
            (
                serde_json::json!({"access_token": format!("{big}y")}),
                "access_token",
            ),
            (
                serde_json::json!({"access_token": "t", "refresh_token": format!("{big}y")}),
                "refresh_token",
            ),
            (
                serde_json::json!({"access_token": "t", "token_type": format!("{big}y")}),
                "token_type",
            ),
        ] {
            let err = params(json).into_session(0).unwrap_err();
            assert_eq!(err.data()["field"], field);
            let message = err.to_string();
            assert!(message.contains("65536"), "{message}");
            assert!(message.contains(field), "{message}");
            assert!(!message.contains("xxxx"), "{message}");
        }
        params(serde_json::json!({"access_token": big}))
            .into_session(0)
            .unwrap();
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
