//! The session's data: what is stored in the keyring and what the shell may see of it.

use std::fmt;

use base64::Engine;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A token. Its `Debug` never shows the value, so a stray `{:?}` cannot leak it.
/// Every `Secret` made is remembered by [`crate::telemetry::scrub`], which then redacts it by
/// value wherever it shows up (an error body that echoes it, a log line).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// `None` for an empty string: an empty token is no token.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        if value.trim().is_empty() {
            return None;
        }
        crate::telemetry::remember_secret(&value);
        Some(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(value).ok_or_else(|| serde::de::Error::custom("empty token"))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A signed-in session. There is always an access token: "no session" is `None`, never a
/// session with an empty token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub access_token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
}

impl Session {
    pub fn user_id(&self) -> Option<String> {
        match self.user.as_ref()?.get("id")? {
            Value::String(id) => Some(id.clone()),
            Value::Number(id) => Some(id.to_string()),
            _ => None,
        }
    }

    /// Whether the access token expires within `seconds` of `now` (unix seconds). A session
    /// without a known expiry never counts as expiring.
    pub fn expires_within(&self, seconds: i64, now: i64) -> bool {
        self.expires_at
            .is_some_and(|at| at.saturating_sub(now) <= seconds)
    }

    /// Same access token: the identity the session gate compares ("is the stored session
    /// still the one this call used?").
    pub fn same_access(&self, other: &Session) -> bool {
        self.access_token == other.access_token
    }

    /// Same refresh token lineage: a refresh may only be committed over the session it
    /// started from, even if the user object was updated meanwhile.
    pub fn same_lineage(&self, other: &Session) -> bool {
        self.same_access(other) && self.refresh_token == other.refresh_token
    }
}

/// `auth_get_state`'s result: what the shell may know about the session. No token.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthState {
    pub is_authenticated: bool,
    pub user_id: Option<String>,
    pub user: Option<Value>,
    pub expires_at: Option<i64>,
    pub persistent: bool,
}

impl AuthState {
    pub fn of(session: Option<&Session>, persistent: bool) -> Self {
        Self {
            is_authenticated: session.is_some(),
            user_id: session.and_then(Session::user_id),
            user: session.and_then(|s| s.user.clone()),
            expires_at: session.and_then(|s| s.expires_at),
            persistent,
        }
    }
}

/// Why a session ended, as `reason` on SIGNED_OUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignOutReason {
    SignedOut,
    Expired,
    RefreshFailed,
}

/// The change carried by an `auth_state_changed` notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEvent {
    SignedIn,
    TokenRefreshed,
    SignedOut(SignOutReason),
}

/// `auth_state_changed` params.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthStateChanged {
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SignOutReason>,
    pub state: AuthState,
}

impl AuthStateChanged {
    pub fn new(event: AuthEvent, state: AuthState) -> Self {
        let (event, reason) = match event {
            AuthEvent::SignedIn => ("SIGNED_IN", None),
            AuthEvent::TokenRefreshed => ("TOKEN_REFRESHED", None),
            AuthEvent::SignedOut(reason) => ("SIGNED_OUT", Some(reason)),
        };
        Self {
            event,
            reason,
            state,
        }
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

/// Wall-clock unix seconds: expiries are wall-clock times set by the auth server.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_the_value() {
        let secret = Secret::new("abc.def.ghi").unwrap();
        assert!(!format!("{secret:?}").contains("abc"));
        assert!(Secret::new("  ").is_none());
    }

    #[test]
    fn a_secret_is_scrubbed_by_value_once_made() {
        let secret = Secret::new("opaque-value-with-no-shape").unwrap();
        let scrubbed = crate::telemetry::scrub("echoed: opaque-value-with-no-shape.");
        assert_eq!(scrubbed, "echoed: [redacted].");
        assert_eq!(secret.expose(), "opaque-value-with-no-shape");
    }

    #[test]
    fn state_carries_no_token() {
        let session = Session {
            access_token: Secret::new("tok-123").unwrap(),
            refresh_token: Secret::new("ref-456"),
            expires_at: Some(100),
            token_type: Some("bearer".into()),
            user: Some(serde_json::json!({"id": "u1"})),
        };
        let state = serde_json::to_string(&AuthState::of(Some(&session), true)).unwrap();
        assert!(!state.contains("tok-123") && !state.contains("ref-456"));
        assert!(state.contains(r#""userId":"u1""#));
    }

    #[test]
    fn expiry_window() {
        let mut session = Session {
            access_token: Secret::new("t").unwrap(),
            refresh_token: None,
            expires_at: Some(1_000),
            token_type: None,
            user: None,
        };
        assert!(session.expires_within(60, 950));
        assert!(!session.expires_within(60, 900));
        session.expires_at = None;
        assert!(!session.expires_within(60, 10_000));
    }
}
