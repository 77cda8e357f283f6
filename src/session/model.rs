//! The session's data: what is stored in the keyring and what the shell may see of it.

use std::fmt;

use base64::Engine;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// A token. Its `Debug` never shows the value, so a stray `{:?}` cannot leak it, and it is
/// not `Serialize`: a struct holding one cannot be written out by accident. The one
/// serialized form of a session is [`StoredSession`]. Its bytes are overwritten with zeros
/// when it is dropped (`Zeroizing`), so a session that ended leaves no token in freed memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// `None` for an empty string: an empty token is no token. The string is taken as is
    /// (moved, not copied), so its one buffer is the one zeroed on drop.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = Zeroizing::new(value.into());
        if value.trim().is_empty() {
            return None;
        }
        Some(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A signed-in session. There is always an access token: "no session" is `None`, never a
/// session with an empty token.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub token_type: Option<String>,
    pub user: Option<Value>,
}

/// The session as the keyring holds it: one JSON object, so a write is atomic. The only
/// type that serializes a token. Its tokens are zeroed when it is dropped, like the JSON text
/// it is written to and read from ([`StoredSession::to_json`], [`StoredSession::from_json`]).
#[derive(Serialize, Deserialize)]
pub struct StoredSession {
    access_token: Zeroizing<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<Zeroizing<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<Value>,
}

impl StoredSession {
    /// The keyring secret of `session`, zeroed when the caller drops it (after the save).
    /// Written into a buffer of the exact size, so no reallocation leaves a partial copy of
    /// it in freed memory.
    pub fn to_json(session: &Session) -> Zeroizing<String> {
        let stored = StoredSession {
            access_token: session.access_token.0.clone(),
            refresh_token: session.refresh_token.as_ref().map(|t| t.0.clone()),
            expires_at: session.expires_at,
            token_type: session.token_type.clone(),
            user: session.user.clone(),
        };
        // Strings, numbers and a JSON value cannot fail to serialize.
        let mut size = ByteCount(0);
        serde_json::to_writer(&mut size, &stored).expect("a stored session serializes");
        let mut json = Zeroizing::new(Vec::with_capacity(size.0));
        serde_json::to_writer(&mut *json, &stored).expect("a stored session serializes");
        let json = std::mem::take(&mut *json);
        // serde_json writes UTF-8 only; the conversion keeps the buffer.
        Zeroizing::new(String::from_utf8(json).expect("serde_json writes UTF-8"))
    }

    /// The session in a keyring secret; `None` when it is not one (the reason is not given:
    /// a serde error can quote the input, which holds tokens).
    pub fn from_json(secret: &str) -> Option<Session> {
        let mut stored: StoredSession = serde_json::from_str(secret).ok()?;
        Some(Session {
            access_token: Secret::new(std::mem::take(&mut *stored.access_token))?,
            refresh_token: stored
                .refresh_token
                .and_then(|mut token| Secret::new(std::mem::take(&mut *token))),
            expires_at: stored.expires_at,
            token_type: stored.token_type,
            user: stored.user,
        })
    }
}

/// A writer that only counts: the exact size of a serialization, before allocating for it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Session {
    /// The tokens this session holds, for the scrubber to redact by value.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.access_token).chain(self.refresh_token.as_ref())
    }

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

    /// A one-way digest of the tokens (SHA-256, first 128 bits, hex): names this session in
    /// the pending sign-out markers on disk without holding a token. Sessions with the same
    /// tokens have the same fingerprint, whatever their user object.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        for token in self.secrets_in_order() {
            let token = token.map_or(&b""[..], |t| t.expose().as_bytes());
            digest.update((token.len() as u64).to_be_bytes());
            digest.update(token);
        }
        digest.finalize()[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn secrets_in_order(&self) -> [Option<&Secret>; 2] {
        [Some(&self.access_token), self.refresh_token.as_ref()]
    }

    /// Whether `other` continues this session (a rotation by a refresh) rather than being
    /// another sign-in: GoTrue's `session_id` claim when both access tokens carry one,
    /// else the same known user.
    pub fn same_sign_in(&self, other: &Session) -> bool {
        match (
            jwt_claim(self.access_token.expose(), "session_id"),
            jwt_claim(other.access_token.expose(), "session_id"),
        ) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => self.user_id().is_some() && self.user_id() == other.user_id(),
        }
    }

    /// The change from `self` to `other`, as the event a shell would have seen had it
    /// happened here: `None` when they are the same.
    pub fn change_to(&self, other: &Session) -> Option<AuthEvent> {
        if self == other {
            None
        } else if self.same_lineage(other) {
            Some(if self.user != other.user {
                AuthEvent::UserUpdated
            } else {
                AuthEvent::TokenRefreshed
            })
        } else if self.same_sign_in(other) {
            Some(AuthEvent::TokenRefreshed)
        } else {
            Some(AuthEvent::SignedIn)
        }
    }
}

/// `auth_get_state`'s result: what the shell may know about the session. No token.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    deny_unknown_fields,
    description = "What the shell may know about the session. Never carries a token."
)]
pub struct AuthState {
    /// Whether a session is stored.
    pub is_authenticated: bool,
    /// The stored user's `id` (a numeric id is given as a string); null when signed out or
    /// unknown.
    pub user_id: Option<String>,
    /// The user object as stored with the session (`auth_store_session`, refreshed by
    /// `auth_get_user` and token refreshes); null when signed out or unknown.
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub user: Option<Value>,
    /// When the access token expires, in unix seconds; null when signed out or unknown.
    pub expires_at: Option<i64>,
    /// False when the session is not in an OS keyring: it lives only in memory because no
    /// OS keyring works (or `CORE_SIDECAR_KEYRING=memory`), or the named keyring is
    /// unavailable (locked, not running) and is being retried.
    pub persistent: bool,
    /// Present, and true, only while a sign-out has not reached the keyring yet (it was
    /// locked, frozen or busy): the session is gone here, its removal from the keyring is
    /// retried until it lands, and completed at the next start if need be.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schemars(extend("const" = true))]
    pub pending_sign_out: bool,
}

impl AuthState {
    pub fn of(session: Option<&Session>, persistent: bool) -> Self {
        Self {
            is_authenticated: session.is_some(),
            user_id: session.and_then(Session::user_id),
            user: session.and_then(|s| s.user.clone()),
            expires_at: session.and_then(|s| s.expires_at),
            persistent,
            pending_sign_out: false,
        }
    }

    /// This state, saying whether a sign-out waits for the keyring.
    pub fn with_pending_sign_out(mut self, pending: bool) -> Self {
        self.pending_sign_out = pending;
        self
    }
}

/// Why a session ended, as `reason` on SIGNED_OUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(
    description = "`signed_out` (the shell asked), `expired` (the backend or auth server no longer accepts the session), `refresh_failed` (the refresh token was rejected), `external` (another process on the same keyring entry signed out, or the entry was removed)."
)]
pub enum SignOutReason {
    SignedOut,
    Expired,
    RefreshFailed,
    External,
}

/// The change carried by an `auth_state_changed` notification. A sign-out always has its
/// reason, and nothing else has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEvent {
    /// The stored session was loaded at start (or found absent): once, first.
    InitialSession,
    SignedIn,
    /// Signed in through a password-recovery link or code: the shell should ask for a new
    /// password (`auth_update_user`).
    PasswordRecovery,
    TokenRefreshed,
    /// Same tokens, another user object.
    UserUpdated,
    SignedOut(SignOutReason),
    /// The keyring, unusable at start, answered: the session is in it now.
    KeyringAvailable,
}

impl AuthEvent {
    pub fn name(self) -> EventName {
        match self {
            Self::InitialSession => EventName::InitialSession,
            Self::SignedIn => EventName::SignedIn,
            Self::PasswordRecovery => EventName::PasswordRecovery,
            Self::TokenRefreshed => EventName::TokenRefreshed,
            Self::UserUpdated => EventName::UserUpdated,
            Self::SignedOut(_) => EventName::SignedOut,
            Self::KeyringAvailable => EventName::KeyringAvailable,
        }
    }

    pub fn reason(self) -> Option<SignOutReason> {
        match self {
            Self::SignedOut(reason) => Some(reason),
            Self::InitialSession
            | Self::SignedIn
            | Self::PasswordRecovery
            | Self::TokenRefreshed
            | Self::UserUpdated
            | Self::KeyringAvailable => None,
        }
    }
}

/// `event` of an `auth_state_changed` notification, as the shell reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventName {
    /// The stored session was loaded at start, or found absent (then `state` is signed
    /// out): sent once, before any other event.
    InitialSession,
    /// A session was stored (a sign-in method, `auth_store_session`), or another process
    /// stored a session of another sign-in in the same keyring entry.
    SignedIn,
    /// Signed in from a password-recovery code or link (`auth_verify_otp` with `type`
    /// `recovery`, or `auth_exchange_code` of a flow started by
    /// `auth_reset_password_for_email`): ask the user for a new password and set it with
    /// `auth_update_user`.
    PasswordRecovery,
    /// The session was refreshed, here or by another process on the same entry.
    TokenRefreshed,
    /// The stored user object changed (`auth_get_user`, or another process), same tokens.
    UserUpdated,
    /// The session was removed; `reason` says why.
    SignedOut,
    /// The keyring, locked or absent at start, works now: `state` is the session it holds
    /// (or the one kept in memory meanwhile, now stored in it) and `persistent` is true.
    KeyringAvailable,
}

/// `auth_state_changed` params.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(
    deny_unknown_fields,
    description = "Params of the `auth_state_changed` notification, sent (without an id) each time the stored session changes: exactly one per change.",
    extend(
        "if" = {"properties": {"event": {"const": "SIGNED_OUT"}}},
        "then" = {
            "required": ["reason"],
            "properties": {"state": {"properties": {"isAuthenticated": {"const": false}}}}
        },
        "else" = {
            "not": {"required": ["reason"]},
            "if": {"properties": {"event": {"enum": ["INITIAL_SESSION", "KEYRING_AVAILABLE"]}}},
            "then": true,
            "else": {"properties": {"state": {"properties": {"isAuthenticated": {"const": true}}}}}
        }
    )
)]
pub struct AuthStateChanged {
    /// `INITIAL_SESSION` once at start; `SIGNED_IN` after a sign-in or `auth_store_session`;
    /// `PASSWORD_RECOVERY` after a sign-in from a password-recovery code or link;
    /// `TOKEN_REFRESHED` after a refresh; `USER_UPDATED` when the user object changed;
    /// `SIGNED_OUT` when the session is removed; `KEYRING_AVAILABLE` when a keyring unusable
    /// at start starts working. A change made by another process on the same keyring entry
    /// is announced with the event it means.
    pub event: EventName,
    /// `SIGNED_OUT` only: why the session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SignOutReason")]
    pub reason: Option<SignOutReason>,
    pub state: AuthState,
}

impl AuthStateChanged {
    pub fn new(event: AuthEvent, state: AuthState) -> Self {
        Self {
            event: event.name(),
            reason: event.reason(),
            state,
        }
    }
}

/// When an access token expires, from whichever the issuer gave: an absolute `expires_at`,
/// a relative `expires_in` (from `now`), or else the token's own `exp` claim. The one
/// derivation for tokens the shell stores and tokens the auth server issues.
pub fn derive_expiry(
    expires_at: Option<i64>,
    expires_in: Option<i64>,
    access_token: &Secret,
    now: i64,
) -> Option<i64> {
    expires_at
        .or_else(|| expires_in.map(|seconds| now.saturating_add(seconds)))
        .or_else(|| jwt_expiry(access_token.expose()))
}

/// The `exp` claim of a JWT, read without verifying the signature: it only decides when to
/// refresh, and the server verifies the token anyway.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    jwt_claims(token)?
        .get("exp")?
        .as_f64()
        .map(|exp| exp as i64)
}

/// A string claim of a JWT, unverified (see [`jwt_expiry`]).
fn jwt_claim(token: &str, name: &str) -> Option<String> {
    jwt_claims(token)?.get(name)?.as_str().map(str::to_owned)
}

fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
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

    /// A session with every field set, its tokens `tok-123` and `ref-456`.
    fn signed_in() -> Session {
        Session {
            access_token: Secret::new("tok-123").unwrap(),
            refresh_token: Secret::new("ref-456"),
            expires_at: Some(100),
            token_type: Some("bearer".into()),
            user: Some(serde_json::json!({"id": "u1"})),
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_is_the_only_one_with_tokens() {
        let session = signed_in();
        let json = StoredSession::to_json(&session);
        assert!(
            json.contains("tok-123") && json.contains("ref-456"),
            "{}",
            json.as_str()
        );
        // Written into a buffer of its exact size: no reallocation left a copy behind.
        assert_eq!(json.len(), json.capacity());
        assert_eq!(
            json.as_str(),
            r#"{"access_token":"tok-123","refresh_token":"ref-456","expires_at":100,"token_type":"bearer","user":{"id":"u1"}}"#
        );
        assert_eq!(StoredSession::from_json(&json), Some(session.clone()));
        assert!(!format!("{session:?}").contains("tok-123"));
        assert_eq!(StoredSession::from_json(r#"{"access_token":""}"#), None);
        assert_eq!(StoredSession::from_json("not json"), None);
    }

    #[test]
    fn expiry_comes_from_expires_at_then_expires_in_then_the_jwt() {
        // {"alg":"none"}.{"exp":1900000000}.sig
        let jwt = Secret::new("eyJhbGciOiJub25lIn0.eyJleHAiOjE5MDAwMDAwMDB9.c2ln").unwrap();
        assert_eq!(derive_expiry(Some(5), Some(10), &jwt, 1), Some(5));
        assert_eq!(derive_expiry(None, Some(10), &jwt, 1), Some(11));
        assert_eq!(derive_expiry(None, None, &jwt, 1), Some(1_900_000_000));
        assert_eq!(derive_expiry(None, Some(i64::MAX), &jwt, 1), Some(i64::MAX));
        let opaque = Secret::new("opaque").unwrap();
        assert_eq!(derive_expiry(None, None, &opaque, 1), None);
    }

    #[test]
    fn state_carries_no_token() {
        let session = signed_in();
        let state = serde_json::to_string(&AuthState::of(Some(&session), true)).unwrap();
        assert!(!state.contains("tok-123") && !state.contains("ref-456"));
        assert!(state.contains(r#""userId":"u1""#));
    }

    fn session(access: &str, refresh: &str, user: Value) -> Session {
        Session {
            access_token: Secret::new(access).unwrap(),
            refresh_token: Secret::new(refresh),
            expires_at: Some(100),
            token_type: None,
            user: Some(user),
        }
    }

    #[test]
    fn fingerprints_name_the_tokens_without_holding_them() {
        let one = session("tok-a", "ref-a", serde_json::json!({"id": "u"}));
        let print = one.fingerprint();
        assert_eq!(print.len(), 32);
        assert!(print.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!print.contains("tok") && !print.contains("ref"));
        // The user object is not part of it; each token is.
        let renamed = session("tok-a", "ref-a", serde_json::json!({"id": "u", "n": 1}));
        assert_eq!(renamed.fingerprint(), print);
        assert_ne!(session("tok-a", "ref-b", Value::Null).fingerprint(), print);
        assert_ne!(session("tok-b", "ref-a", Value::Null).fingerprint(), print);
        // Lengths are part of it: the boundary between the tokens cannot move.
        assert_ne!(
            session("tok-ar", "ef-a", Value::Null).fingerprint(),
            session("tok-a", "ref-a", Value::Null).fingerprint()
        );
    }

    #[test]
    fn a_change_is_named_by_what_changed() {
        let user = serde_json::json!({"id": "u1"});
        let base = session("tok-a", "ref-a", user.clone());
        assert_eq!(base.change_to(&base.clone()), None);
        let renamed = session("tok-a", "ref-a", serde_json::json!({"id": "u1", "n": 1}));
        assert_eq!(base.change_to(&renamed), Some(AuthEvent::UserUpdated));
        let rotated = session("tok-b", "ref-b", user);
        assert_eq!(base.change_to(&rotated), Some(AuthEvent::TokenRefreshed));
        let other = session("tok-c", "ref-c", serde_json::json!({"id": "u2"}));
        assert_eq!(base.change_to(&other), Some(AuthEvent::SignedIn));
        // GoTrue's session_id claim decides when both tokens carry one:
        // {"session_id":"s1"} and {"session_id":"s2"}, same user.
        let jwt = |claims: &str| {
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
            format!("eyJhbGciOiJub25lIn0.{claims}.c2ln")
        };
        let s1 = session(
            &jwt(r#"{"session_id":"s1"}"#),
            "r1",
            serde_json::json!({"id": "u"}),
        );
        let s1b = session(
            &jwt(r#"{"session_id":"s1","n":2}"#),
            "r2",
            serde_json::json!({"id": "u"}),
        );
        let s2 = session(
            &jwt(r#"{"session_id":"s2"}"#),
            "r3",
            serde_json::json!({"id": "u"}),
        );
        assert_eq!(s1.change_to(&s1b), Some(AuthEvent::TokenRefreshed));
        assert_eq!(
            s1.change_to(&s2),
            Some(AuthEvent::SignedIn),
            "a new sign-in"
        );
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
