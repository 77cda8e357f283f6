//! Signing in inside the sidecar: the shell passes what the user typed (an email, a
//! password, a one-time code) or the `code` a browser or an emailed link brought back, never
//! a token, and gets back the auth state. The tokens go from the auth server to the keyring
//! and nowhere else.
//!
//! Each method sends what @supabase/auth-js sends for the same call with `flowType: 'pkce'`
//! (method, path, query, body fields; the differential suite checks it), so a link in an
//! email carries a `code` for `auth_exchange_code` rather than tokens in a URL fragment. A
//! session that comes back is committed as `auth_store_session` commits one (under the
//! cross-process lock, keyring first, one event). A refusal of the user's input is
//! `auth_failed` and leaves any stored session as it was.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::{Zeroize, Zeroizing};

use super::within_free_form_limit;
use crate::backend::auth_server::{AuthServer, SignInAnswer};
use crate::error::{Error, Result};
use crate::session::gate::Gate;
use crate::session::pkce::{Challenge, FlowKind};
use crate::session::refresh::issued_session;
use crate::session::{AuthEvent, AuthState, Sessions};

/// Who signs in: an email address or a phone number, exactly one.
enum Identity<'a> {
    Email(&'a str),
    Phone(&'a str),
}

impl Identity<'_> {
    /// The body member naming the user: `{"email": ..}` or `{"phone": ..}`.
    fn member(&self) -> (&'static str, Value) {
        match self {
            Self::Email(email) => ("email", json!(email)),
            Self::Phone(phone) => ("phone", json!(phone)),
        }
    }
}

fn identity<'a>(email: &'a Option<String>, phone: &'a Option<String>) -> Result<Identity<'a>> {
    match (nonempty(email), nonempty(phone)) {
        (Some(email), None) => Ok(Identity::Email(email)),
        (None, Some(phone)) => Ok(Identity::Phone(phone)),
        (Some(_), Some(_)) => Err(Error::invalid_params(
            "email",
            "give `email` or `phone`, not both",
        )),
        (None, None) => Err(Error::invalid_params(
            "email",
            "`email` or `phone` is required",
        )),
    }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    match value.trim().is_empty() {
        true => Err(Error::invalid_params(
            field,
            format!("`{field}` must not be empty"),
        )),
        false => Ok(value),
    }
}

fn auth_server(auth: Option<&AuthServer>) -> Result<&AuthServer> {
    auth.ok_or_else(Error::no_auth_server)
}

/// A request body: what auth-js sends, built member by member. Zeroed when dropped, since a
/// password or a verifier may be in it.
struct Body(Map<String, Value>);

impl Body {
    fn new() -> Self {
        Self(Map::new())
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_string(), value);
        self
    }

    fn with_identity(self, who: &Identity<'_>) -> Self {
        let (key, value) = who.member();
        self.with(key, value)
    }

    /// auth-js sends `gotrue_meta_security: {captcha_token}`; without a captcha it is `{}`.
    fn with_meta_security(self) -> Self {
        self.with("gotrue_meta_security", json!({}))
    }

    /// `code_challenge` and `code_challenge_method`, `null` without a flow (as auth-js).
    fn with_challenge(self, challenge: Option<&Challenge>) -> Self {
        let (code, method) = match challenge {
            Some(c) => (json!(c.code_challenge), json!(c.method)),
            None => (Value::Null, Value::Null),
        };
        self.with("code_challenge", code)
            .with("code_challenge_method", method)
    }
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            if let Value::String(text) = value {
                text.zeroize();
            }
        }
    }
}

/// Commits the session the auth server issued, announced as `event`.
async fn commit(sessions: &Sessions, answer: SignInAnswer, event: AuthEvent) -> Result<AuthState> {
    match answer {
        SignInAnswer::Session(issued) => {
            let session = issued_session(issued, None)?;
            sessions.sign_in_as(session, event).await
        }
        SignInAnswer::User(_) | SignInAnswer::Nothing => Err(Error::malformed_answer(
            None,
            "the auth server signed the user in but sent no session",
        )),
    }
}

/// Starts a PKCE flow when `pkce`, runs `call` with its challenge, and ends the flow again
/// when the call failed (no link will come), as auth-js does.
async fn with_flow<T, F, Fut>(sessions: &Sessions, kind: Option<FlowKind>, call: F) -> Result<T>
where
    F: FnOnce(Option<Challenge>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let challenge = match kind {
        Some(kind) => Some(sessions.start_flow(kind).await?),
        None => None,
    };
    let started = challenge.is_some();
    let outcome = call(challenge).await;
    if outcome.is_err() && started {
        sessions.discard_flow().await;
    }
    outcome
}

// ---------------------------------------------------------------------------------------
// auth_sign_up

/// `auth_sign_up` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "A new account: `email` or `phone` (exactly one) and `password`.",
    example = json!({"email": "user@example.com", "password": "<password>", "redirect_to": "myapp://auth/callback"})
)]
pub struct SignUpParams {
    /// The account's email: a confirmation link may be sent to it (PKCE: its `code` goes to
    /// `auth_exchange_code`).
    #[serde(default)]
    pub email: Option<String>,
    /// The account's phone number (E.164); a confirmation code may be sent by SMS.
    #[serde(default)]
    pub phone: Option<String>,
    /// The password; never stored by the sidecar.
    #[schemars(with = "String", length(min = 1))]
    pub password: Zeroizing<String>,
    /// The user's metadata (`user_metadata`), at most 64 KiB as JSON.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// Where the confirmation link leads (email only), e.g. the app's deep link.
    #[serde(default)]
    pub redirect_to: Option<String>,
}

/// `auth_sign_up` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct SignUpResult {
    /// True when the account must be confirmed first (a link or code was sent): no session
    /// yet. False when the auth server signed the user in at once (SIGNED_IN).
    pub confirmation_sent: bool,
    pub state: AuthState,
}

/// `POST /signup`: a session when the auth server confirms at once, else a confirmation
/// is sent.
pub async fn sign_up(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: SignUpParams,
) -> Result<SignUpResult> {
    let auth = auth_server(auth)?;
    let who = identity(&params.email, &params.phone)?;
    required("password", &params.password)?;
    within_free_form_limit("data", &params.data)?;
    let data = Value::Object(params.data.clone().unwrap_or_default());
    let (kind, redirect_to) = match who {
        Identity::Email(_) => (Some(FlowKind::SignUp), params.redirect_to.as_deref()),
        Identity::Phone(_) => (None, None),
    };
    let answer = with_flow(sessions, kind, |challenge| {
        let body = Body::new()
            .with_identity(&who)
            .with("password", json!(params.password.as_str()))
            .with("data", data);
        let body = match who {
            Identity::Email(_) => body.with_meta_security().with_challenge(challenge.as_ref()),
            Identity::Phone(_) => body.with("channel", json!("sms")).with_meta_security(),
        };
        async move { auth.sign_in_call("/signup", redirect_to, &body).await }
    })
    .await?;
    match answer {
        SignInAnswer::Session(_) => {
            // Signed in at once: no link will come for the flow.
            sessions.discard_flow().await;
            let state = commit(sessions, answer, AuthEvent::SignedIn).await?;
            Ok(SignUpResult {
                confirmation_sent: false,
                state,
            })
        }
        SignInAnswer::User(_) | SignInAnswer::Nothing => Ok(SignUpResult {
            confirmation_sent: true,
            state: sessions.state().await,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_password

/// `auth_sign_in_with_password` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "`email` or `phone` (exactly one) and `password`.",
    example = json!({"email": "user@example.com", "password": "<password>"})
)]
pub struct PasswordParams {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[schemars(with = "String", length(min = 1))]
    pub password: Zeroizing<String>,
}

/// `POST /token?grant_type=password`.
pub async fn sign_in_with_password(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: PasswordParams,
) -> Result<AuthState> {
    let auth = auth_server(auth)?;
    let who = identity(&params.email, &params.phone)?;
    required("password", &params.password)?;
    let body = Body::new()
        .with_identity(&who)
        .with("password", json!(params.password.as_str()))
        .with_meta_security();
    let answer = auth
        .sign_in_call("/token?grant_type=password", None, &body)
        .await?;
    commit(sessions, answer, AuthEvent::SignedIn).await
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_otp

/// `auth_sign_in_with_otp` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Sends a one-time code (and, for an email, a magic link) to `email` or `phone` (exactly one).",
    example = json!({"email": "user@example.com", "redirect_to": "myapp://auth/callback"})
)]
pub struct OtpParams {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// Create the user when there is none (default true); false: only existing users.
    #[serde(default = "yes")]
    pub create_user: bool,
    /// Where the magic link leads (email only), e.g. the app's deep link.
    #[serde(default)]
    pub redirect_to: Option<String>,
    /// The new user's metadata, at most 64 KiB as JSON.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

/// `{"sent": true}`: the auth server accepted to send a code or link.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Sent {
    #[schemars(extend("const" = true))]
    pub sent: bool,
}

/// `POST /otp`. For an email a PKCE flow is started, so the magic link's `code` can be
/// exchanged; the code itself goes to `auth_verify_otp`.
pub async fn sign_in_with_otp(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: OtpParams,
) -> Result<Sent> {
    let auth = auth_server(auth)?;
    let who = identity(&params.email, &params.phone)?;
    within_free_form_limit("data", &params.data)?;
    let data = Value::Object(params.data.clone().unwrap_or_default());
    let (kind, redirect_to) = match who {
        Identity::Email(_) => (Some(FlowKind::Otp), params.redirect_to.as_deref()),
        Identity::Phone(_) => (None, None),
    };
    with_flow(sessions, kind, |challenge| {
        let body = Body::new()
            .with_identity(&who)
            .with("data", data)
            .with("create_user", json!(params.create_user))
            .with_meta_security();
        let body = match who {
            Identity::Email(_) => body.with_challenge(challenge.as_ref()),
            Identity::Phone(_) => body.with("channel", json!("sms")),
        };
        async move { auth.sign_in_call("/otp", redirect_to, &body).await }
    })
    .await?;
    Ok(Sent { sent: true })
}

// ---------------------------------------------------------------------------------------
// auth_verify_otp

/// What a one-time code was sent for, as the auth server names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtpType {
    Email,
    Sms,
    Magiclink,
    Signup,
    Recovery,
    Invite,
    EmailChange,
    PhoneChange,
}

/// `auth_verify_otp` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "A one-time code: `token` with the `email` or `phone` it was sent to, or a `token_hash` (from an email link) alone; and its `type`.",
    example = json!({"email": "user@example.com", "token": "123456", "type": "email"})
)]
pub struct VerifyOtpParams {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// The code the user typed.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token: Option<Zeroizing<String>>,
    /// The hashed token of an email link, instead of `token` with `email`/`phone`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub token_hash: Option<Zeroizing<String>>,
    /// What the code was sent for: `recovery` signs in for a password reset
    /// (PASSWORD_RECOVERY).
    #[serde(rename = "type")]
    pub kind: OtpType,
}

/// `POST /verify`: signs in with a one-time code (SIGNED_IN, or PASSWORD_RECOVERY for
/// `recovery`). A code that confirms without signing in (the first half of an email change)
/// answers the state as it is.
pub async fn verify_otp(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: VerifyOtpParams,
) -> Result<AuthState> {
    let auth = auth_server(auth)?;
    let body = match (&params.token_hash, &params.token) {
        (Some(hash), None) => Body::new().with("token_hash", json!(required("token_hash", hash)?)),
        (None, Some(token)) => {
            let who = identity(&params.email, &params.phone)?;
            Body::new()
                .with_identity(&who)
                .with("token", json!(required("token", token)?))
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid_params(
                "token",
                "give `token` or `token_hash`, not both",
            ));
        }
        (None, None) => {
            return Err(Error::invalid_params(
                "token",
                "`token` (with `email` or `phone`) or `token_hash` is required",
            ));
        }
    };
    let body = body.with("type", json!(params.kind)).with_meta_security();
    let answer = auth.sign_in_call("/verify", None, &body).await?;
    let event = match params.kind {
        OtpType::Recovery => AuthEvent::PasswordRecovery,
        _ => AuthEvent::SignedIn,
    };
    match answer {
        SignInAnswer::Session(_) => commit(sessions, answer, event).await,
        SignInAnswer::User(_) | SignInAnswer::Nothing => Ok(sessions.state().await),
    }
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_oauth

/// `auth_sign_in_with_oauth` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "A third-party sign-in (`github`, `google`, ...). The shell opens the returned `url` in the browser; the provider sends the user back to `redirect_to` with a `code` for `auth_exchange_code`.",
    example = json!({"provider": "github", "redirect_to": "myapp://auth/callback"})
)]
pub struct OAuthParams {
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Where the browser is sent back, with `?code=`: the app's deep link.
    #[serde(default)]
    pub redirect_to: Option<String>,
    /// Extra provider scopes, space-separated.
    #[serde(default)]
    pub scopes: Option<String>,
    /// Extra query parameters for the provider (e.g. `{"prompt": "consent"}`), added in
    /// the order given.
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub query_params: Option<OrderedPairs>,
}

/// A JSON object of strings, its members kept in the order the shell wrote them (auth-js
/// adds `queryParams` in its object's order).
#[derive(Debug, Clone, Default)]
pub struct OrderedPairs(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(OrderedPairs(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

impl Serialize for OrderedPairs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `auth_sign_in_with_oauth` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OAuthUrl {
    /// `{AUTH_URL}/authorize?provider=...&code_challenge=...&code_challenge_method=s256`: open
    /// it in the system browser. It carries no secret.
    pub url: String,
}

/// Starts a PKCE flow (replacing any in progress) and builds the `/authorize` URL, as
/// auth-js `signInWithOAuth({skipBrowserRedirect: true})` does. No request is sent.
pub async fn sign_in_with_oauth(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: OAuthParams,
) -> Result<OAuthUrl> {
    let auth = auth_server(auth)?;
    let provider = required("provider", &params.provider)?;
    within_free_form_limit("query_params", &params.query_params)?;
    let challenge = sessions.start_flow(FlowKind::Oauth).await?;
    let mut query = vec![("provider", provider)];
    if let Some(to) = nonempty(&params.redirect_to) {
        query.push(("redirect_to", to));
    }
    if let Some(scopes) = nonempty(&params.scopes) {
        query.push(("scopes", scopes));
    }
    query.push(("code_challenge", &challenge.code_challenge));
    query.push(("code_challenge_method", challenge.method));
    let extra = params.query_params.unwrap_or_default().0;
    Ok(OAuthUrl {
        url: auth.authorize_url(&query, &extra),
    })
}

// ---------------------------------------------------------------------------------------
// auth_exchange_code

/// `auth_exchange_code` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "The `code` the browser or an emailed link brought back to the app (`?code=` of the redirect).",
    example = json!({"auth_code": "<code>"})
)]
pub struct ExchangeCodeParams {
    #[schemars(with = "String", length(min = 1))]
    pub auth_code: Zeroizing<String>,
}

/// `POST /token?grant_type=pkce` with the stored verifier, which is used once: it is taken
/// out of the keyring first, whatever the answer. No flow in progress: `auth_failed`
/// `flow_state_not_found` and nothing is sent.
pub async fn exchange_code(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: ExchangeCodeParams,
) -> Result<AuthState> {
    let auth = auth_server(auth)?;
    let code = required("auth_code", &params.auth_code)?;
    let Some(flow) = sessions.take_flow().await? else {
        return Err(Error::AuthFailed {
            reason: "flow_state_not_found".into(),
            status: None,
            message: "no sign-in flow in progress here: the code was already exchanged, or \
                      its flow was replaced by a newer one; start the sign-in again"
                .into(),
        });
    };
    let body = Body::new()
        .with("auth_code", json!(code))
        .with("code_verifier", json!(flow.verifier.expose()));
    let answer = auth
        .sign_in_call("/token?grant_type=pkce", None, &body)
        .await?;
    let event = match flow.kind {
        FlowKind::Recovery => AuthEvent::PasswordRecovery,
        _ => AuthEvent::SignedIn,
    };
    commit(sessions, answer, event).await
}

// ---------------------------------------------------------------------------------------
// auth_reset_password_for_email

/// `auth_reset_password_for_email` params.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Sends a password-recovery link to `email`. Its `code` goes to `auth_exchange_code`, which signs in with PASSWORD_RECOVERY; then set the new password with `auth_update_user`.",
    example = json!({"email": "user@example.com", "redirect_to": "myapp://auth/reset"})
)]
pub struct ResetPasswordParams {
    #[schemars(length(min = 1))]
    pub email: String,
    /// Where the link leads, e.g. the app's deep link.
    #[serde(default)]
    pub redirect_to: Option<String>,
}

/// `POST /recover`, starting a PKCE recovery flow.
pub async fn reset_password_for_email(
    sessions: &Sessions,
    auth: Option<&AuthServer>,
    params: ResetPasswordParams,
) -> Result<Sent> {
    let auth = auth_server(auth)?;
    let email = required("email", &params.email)?;
    let redirect_to = params.redirect_to.as_deref();
    with_flow(sessions, Some(FlowKind::Recovery), |challenge| {
        let body = Body::new()
            .with("email", json!(email))
            .with_challenge(challenge.as_ref())
            .with_meta_security();
        async move { auth.sign_in_call("/recover", redirect_to, &body).await }
    })
    .await?;
    Ok(Sent { sent: true })
}

// ---------------------------------------------------------------------------------------
// auth_update_user

/// `auth_update_user` params: the fields to change (at least one).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Changes the signed-in user: any of `email`, `phone`, `password`, `data`. A new email is confirmed through a link (PKCE: its `code` goes to `auth_exchange_code`); a new phone through a code (`auth_verify_otp` `phone_change`).",
    example = json!({"password": "<new password>"})
)]
pub struct UpdateUserParams {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub password: Option<Zeroizing<String>>,
    /// Merged into the user's metadata; at most 64 KiB as JSON.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// The reauthentication code, when the auth server asks for one to change a password.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub nonce: Option<Zeroizing<String>>,
    /// Where the email-change confirmation link leads.
    #[serde(default)]
    pub redirect_to: Option<String>,
}

/// `auth_update_user` result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct UpdatedUser {
    /// The user as the auth server has it now.
    #[schemars(with = "Map<String, Value>")]
    pub user: Value,
}

/// `PUT /user` through the session gate (refreshed first when about to expire), as auth-js
/// `updateUser`; the stored user is updated (USER_UPDATED when it changed).
pub async fn update_user(
    gate: &Gate,
    auth: Option<&AuthServer>,
    params: UpdateUserParams,
) -> Result<UpdatedUser> {
    let auth = auth_server(auth)?;
    within_free_form_limit("data", &params.data)?;
    let mut body = Body::new();
    if let Some(email) = &params.email {
        body = body.with("email", json!(email));
    }
    if let Some(phone) = &params.phone {
        body = body.with("phone", json!(phone));
    }
    if let Some(password) = &params.password {
        body = body.with("password", json!(required("password", password)?));
    }
    if let Some(data) = &params.data {
        body = body.with("data", Value::Object(data.clone()));
    }
    if let Some(nonce) = &params.nonce {
        body = body.with("nonce", json!(nonce.as_str()));
    }
    if body.0.is_empty() {
        return Err(Error::invalid_params(
            "params",
            "nothing to change: give `email`, `phone`, `password` or `data`",
        ));
    }
    let sessions = gate.sessions();
    let kind = params.email.is_some().then_some(FlowKind::EmailChange);
    let redirect_to = params.redirect_to.as_deref();
    let body = &body;
    let user = gate
        .with_session(|session| async move {
            with_flow(sessions, kind, |challenge| {
                let body = Body(body.0.clone()).with_challenge(challenge.as_ref());
                let token = session.access_token.clone();
                async move { auth.update_user(token.expose(), redirect_to, &body).await }
            })
            .await
            .map(|user| (session, user))
        })
        .await;
    let (session, user) = user?;
    sessions
        .update_user_if_current(&session, user.clone())
        .await?;
    Ok(UpdatedUser { user })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_keep_their_order() {
        // As the params arrive: JSON text (a `Value` would have sorted them already).
        let params: OAuthParams = serde_json::from_str(
            r#"{"provider": "github", "query_params": {"z": "1", "a": "2", "m": "3"}}"#,
        )
        .unwrap();
        let pairs = params.query_params.unwrap().0;
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        let refused = serde_json::from_value::<OAuthParams>(json!({
            "provider": "github",
            "query_params": {"n": 1}
        }));
        assert!(refused.is_err());
    }
}
