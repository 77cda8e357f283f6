//! The auth server client (GoTrue, as Supabase Auth): refresh, `/user`, `/logout`.
//!
//! GoTrue errors come in three body shapes, `{code: int, error_code, msg}`,
//! `{code: str, message}` and `{error, error_description}`, and the `x-sb-error-code` header
//! wins over all of them. [`classify`] turns an answer into an [`Error`]:
//!
//! | answer | error |
//! |---|---|
//! | refresh: 4xx with a code that says the refresh token or session is gone, or OAuth's `invalid_grant` | `AuthExpired { RefreshRejected }` (fatal: never retried) |
//! | `/user`: 4xx with `session_not_found` / `user_not_found` | `AuthExpired { SessionNotFound }` |
//! | `/user`: 401, 403 `bad_jwt`, a gateway's 401 (`Invalid API key`) | `Backend` (not retried; the session is kept: the token is unusable, the session is not known gone) |
//! | 429 | `RateLimited` (transient) |
//! | 5xx | `Backend` (transient, reported) |
//! | other 4xx | `Backend` (not retried; the session is kept: a wrong API key is no reason to sign the user out) |
//! | no answer | `Unavailable` (transient) |
//!
//! Requests go through the shared upstream layer ([`super::upstream`]) as the "auth server"
//! upstream, with its own concurrency bound (a flood of backend calls never delays a refresh)
//! and a body cap of [`MAX_BODY_BYTES`]. Before [`classify`] sees an answer, that layer has
//! made these errors:
//!
//! | answer | error |
//! |---|---|
//! | 3xx (a redirect) | `Backend { status }`, not retryable and not a rejection: never followed (the refresh token and the `apikey` header never leave for another origin), the session is kept and the refresh is not retried |
//! | a body over the cap (after gzip inflation, chunked or not) | `Backend { malformed: true }`, "auth server response body over the 1 MiB cap": not retried at a 2xx, the session is kept |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::parse_retry_after;
use super::upstream::{Answer, Upstream};
use crate::config::BaseUrl;
use crate::error::{AuthExpiredReason, Error, Result};
use crate::scrub::scrub;

/// Refresh-token rejections after which the token can never work again.
const FATAL_REFRESH_CODES: &[&str] = &[
    "refresh_token_not_found",
    "refresh_token_already_used",
    "session_not_found",
    "session_expired",
    "user_not_found",
    "user_banned",
    "invalid_grant",
];

/// The auth server's name in errors and logs.
pub const AUTH_SERVER: &str = "auth server";

/// Largest answer body read from the auth server (after gzip inflation): a session or a user
/// is a few KiB. Past it the answer counts as malformed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `/user` answers meaning the auth server no longer knows this session or its user. Not
/// `bad_jwt` nor a bare 401: those say this access token is unusable (clock skew, a rotated
/// signing key, a gateway refusing the API key), not that the session is gone, and the
/// refresh token may still work.
const GONE_SESSION_CODES: &[&str] = &["session_not_found", "user_not_found"];

/// A session as GoTrue returns it from `/token`.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuedSession {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub user: Option<Value>,
}

/// Exchanges a refresh token for a new session. The refresh logic depends on this trait
/// rather than on HTTP, so its timing rules are unit-tested under a paused clock.
pub trait TokenEndpoint: Send + Sync + 'static {
    fn refresh(&self, refresh_token: String) -> BoxFuture<'static, Result<IssuedSession>>;
}

/// `auth_sign_out` scope, as GoTrue's `/logout?scope=`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogoutScope {
    #[default]
    Local,
    Global,
    Others,
}

impl LogoutScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Global => "global",
            Self::Others => "others",
        }
    }
}

/// What an answer was for: the same status means different things per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/token?grant_type=refresh_token`.
    Token,
    User,
    Logout,
    /// Where the user's own input is judged: `/signup`, `/token?grant_type=password` and
    /// `pkce`, `/otp`, `/verify`, `/recover`. A 4xx with an error code is the user's to fix.
    SignIn,
    /// `PUT /user`: the session is judged as at `GET /user`, the new values as at sign-in.
    UpdateUser,
}

/// What a sign-in endpoint answered: a session, or only the user (a confirmation email or
/// text was sent first, as `/signup` without auto-confirm answers), or nothing (`/otp`,
/// `/recover`).
#[derive(Debug)]
pub enum SignInAnswer {
    Session(IssuedSession),
    User(Value),
    Nothing,
}

impl SignInAnswer {
    /// GoTrue answers a session (with `access_token`) or, without one, the user itself.
    fn parse(body: &[u8], status: StatusCode) -> Result<Self> {
        let value: Value = match body.iter().all(u8::is_ascii_whitespace) {
            true => return Ok(Self::Nothing),
            false => serde_json::from_slice(body).map_err(|_| malformed(status))?,
        };
        if value.get("access_token").is_some() {
            let issued =
                serde_json::from_value::<IssuedSession>(value).map_err(|_| malformed(status))?;
            return Ok(Self::Session(issued));
        }
        match value {
            Value::Object(map) if map.contains_key("id") => Ok(Self::User(Value::Object(map))),
            Value::Object(_) => Ok(Self::Nothing),
            _ => Err(malformed(status)),
        }
    }
}

/// How much of a value the query string carries, as JavaScript's `encodeURIComponent`
/// (which auth-js uses for `redirect_to`, `provider` and `scopes`) leaves it: unreserved
/// characters and `!'()*` stay, everything else is percent-encoded.
const URI_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// `value` encoded as `encodeURIComponent` does.
pub fn uri_component(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, URI_COMPONENT).to_string()
}

/// The auth server client. Cheap to clone; clones share the concurrency bound.
#[derive(Clone)]
pub struct AuthServer {
    upstream: Upstream,
    base_url: Arc<str>,
    api_key: Option<Arc<str>>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("upstream", &self.upstream)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AuthServer {
    /// `http` is the process's one client, [`super::Backend::http`] (built without redirects);
    /// this client gets its own concurrency bound on it. `base_url` was checked when the
    /// configuration was parsed ([`BaseUrl`]).
    pub fn new(
        http: reqwest::Client,
        base_url: &BaseUrl,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Self {
        Self {
            upstream: Upstream::new(AUTH_SERVER, http, timeout, MAX_BODY_BYTES),
            base_url: Arc::from(base_url.as_prefix()),
            api_key: api_key.map(Arc::from),
        }
    }

    /// `POST /token?grant_type=refresh_token`.
    pub async fn refresh_session(&self, refresh_token: &str) -> Result<IssuedSession> {
        let body = serde_json::json!({ "refresh_token": refresh_token });
        let request = self
            .request(Method::POST, "/token?grant_type=refresh_token")
            .json(&body);
        let answer = self.upstream.send(request).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Endpoint::Token, &answer));
        }
        serde_json::from_slice::<IssuedSession>(&answer.body).map_err(|_| malformed(answer.status))
    }

    /// `GET /user`: the user as the auth server sees it now.
    pub async fn user(&self, access_token: &str) -> Result<Value> {
        let request = self
            .request(Method::GET, "/user")
            .header(AUTHORIZATION, bearer(access_token));
        let answer = self.upstream.send(request).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Endpoint::User, &answer));
        }
        user_in(&answer)
    }

    /// `POST /logout?scope=`. 401, 403 and 404 mean the session is already gone there.
    pub async fn logout(&self, access_token: &str, scope: LogoutScope) -> Result<()> {
        let path = format!("/logout?scope={}", scope.as_str());
        let request = self
            .request(Method::POST, &path)
            .header(AUTHORIZATION, bearer(access_token));
        let answer = self.upstream.send(request).await?;
        match answer.status.as_u16() {
            200..=299 | 401 | 403 | 404 => Ok(()),
            _ => Err(classify_answer(Endpoint::Logout, &answer)),
        }
    }

    /// `POST <path>[?redirect_to=]` of a sign-in endpoint with a JSON body. `redirect_to`
    /// joins the query as auth-js adds it (`?redirect_to=` or `&redirect_to=`).
    pub async fn sign_in_call(
        &self,
        path: &str,
        redirect_to: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<SignInAnswer> {
        let path = with_redirect(path, redirect_to);
        let request = self.request(Method::POST, &path).json(body);
        let answer = self.upstream.send(request).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Endpoint::SignIn, &answer));
        }
        SignInAnswer::parse(&answer.body, answer.status)
    }

    /// `PUT /user[?redirect_to=]`: changes the user's email, phone, password or data; the
    /// user as the auth server has it now.
    pub async fn update_user(
        &self,
        access_token: &str,
        redirect_to: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<Value> {
        let path = with_redirect("/user", redirect_to);
        let request = self
            .request(Method::PUT, &path)
            .header(AUTHORIZATION, bearer(access_token))
            .json(body);
        let answer = self.upstream.send(request).await?;
        if !answer.status.is_success() {
            return Err(classify_answer(Endpoint::UpdateUser, &answer));
        }
        user_in(&answer)
    }

    /// `{AUTH_URL}/authorize?...` for `provider`: what the browser opens to sign in with a
    /// third party. Built as auth-js builds it, parameter for parameter and in its order.
    pub fn authorize_url(&self, query: &[(&str, &str)], extra: &[(String, String)]) -> String {
        let mut parts: Vec<String> = query
            .iter()
            .map(|(key, value)| format!("{key}={}", uri_component(value)))
            .collect();
        if !extra.is_empty() {
            // As `new URLSearchParams(queryParams).toString()`: form encoding.
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in extra {
                form.append_pair(key, value);
            }
            parts.push(form.finish());
        }
        format!("{}/authorize?{}", self.base_url, parts.join("&"))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .upstream
            .http()
            .request(method, format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(key) => request.header("apikey", key.as_ref()),
            None => request,
        }
    }
}

impl TokenEndpoint for AuthServer {
    fn refresh(&self, refresh_token: String) -> BoxFuture<'static, Result<IssuedSession>> {
        let server = self.clone();
        Box::pin(async move { server.refresh_session(&refresh_token).await })
    }
}

fn with_redirect(path: &str, redirect_to: Option<&str>) -> String {
    match redirect_to {
        None => path.to_string(),
        Some(to) => {
            let joint = if path.contains('?') { '&' } else { '?' };
            format!("{path}{joint}redirect_to={}", uri_component(to))
        }
    }
}

fn bearer(access_token: &str) -> String {
    format!("Bearer {}", access_token.trim())
}

/// [`classify`] on a complete answer (its body read as text, invalid UTF-8 replaced).
fn classify_answer(endpoint: Endpoint, answer: &Answer) -> Error {
    classify(
        endpoint,
        answer.status,
        &answer.headers,
        &String::from_utf8_lossy(&answer.body),
    )
}

/// The user object an answer of `/user` carries.
fn user_in(answer: &Answer) -> Result<Value> {
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(user @ Value::Object(_)) => Ok(user),
        _ => Err(malformed(answer.status)),
    }
}

fn malformed(status: StatusCode) -> Error {
    Error::malformed_answer(
        Some(status.as_u16()),
        "the auth server sent a body that is not what it promised",
    )
}

/// GoTrue's error code: the `x-sb-error-code` header, else the body's `error_code`, a string
/// `code`, or OAuth's `error`.
pub fn error_code(headers: &HeaderMap, body: &Value) -> Option<String> {
    if let Some(code) = headers
        .get("x-sb-error-code")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some(code.to_string());
    }
    ["error_code", "code", "error"]
        .iter()
        .find_map(|key| body.get(*key)?.as_str().map(str::to_string))
}

/// The human part of a GoTrue error body: `msg`, `message` or `error_description`.
fn error_message(body: &Value) -> Option<String> {
    ["msg", "message", "error_description"]
        .iter()
        .find_map(|key| body.get(*key)?.as_str().map(str::to_string))
}

/// Turns a non-success answer of the auth server into an error (see the module table).
pub fn classify(endpoint: Endpoint, status: StatusCode, headers: &HeaderMap, text: &str) -> Error {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = error_code(headers, &body);
    let detail = error_message(&body)
        .or_else(|| code.clone())
        .map(|m| scrub(&m))
        .unwrap_or_else(|| status.to_string());
    let code_is = |codes: &[&str]| code.as_deref().is_some_and(|c| codes.contains(&c));
    let status_u16 = status.as_u16();

    match (endpoint, status_u16) {
        (_, 429) => Error::RateLimited {
            service: "auth server",
            status: status_u16,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        },
        (Endpoint::Token, 400..=499) if code_is(FATAL_REFRESH_CODES) => Error::auth_expired(
            AuthExpiredReason::RefreshRejected,
            format!("the auth server rejected the refresh token: {detail}"),
        ),
        (Endpoint::User | Endpoint::UpdateUser, 400..=499) if code_is(GONE_SESSION_CODES) => {
            Error::auth_expired(
                AuthExpiredReason::SessionNotFound,
                format!("the auth server no longer knows this session: {detail}"),
            )
        }
        // A refusal of what the user typed, when the auth server names it. Not a 401 (a
        // gateway refusing the API key: a configuration fault), and at `PUT /user` only the
        // input's statuses (its 401/403 judge the session, as `GET /user`'s do).
        (Endpoint::SignIn, 400..=499) | (Endpoint::UpdateUser, 400 | 409 | 422)
            if status_u16 != 401 && code.is_some() =>
        {
            Error::AuthFailed {
                reason: code.clone().unwrap_or_default(),
                status: Some(status_u16),
                message: format!("the auth server refused: {detail}"),
            }
        }
        _ => Error::backend_status(
            status_u16,
            format!("auth server returned {status_u16}: {detail}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn classify_body(endpoint: Endpoint, status: u16, header: Option<&str>, body: &str) -> Error {
        let mut headers = HeaderMap::new();
        if let Some(code) = header {
            headers.insert("x-sb-error-code", code.parse().unwrap());
        }
        classify(
            endpoint,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body,
        )
    }

    fn is_fatal(error: &Error) -> bool {
        matches!(
            error,
            Error::AuthExpired {
                reason: AuthExpiredReason::RefreshRejected,
                ..
            }
        )
    }

    #[test]
    fn each_error_body_shape_is_classified() {
        // {code: int, error_code, msg}
        let e = classify_body(
            Endpoint::Token,
            400,
            None,
            r#"{"code":400,"error_code":"refresh_token_already_used","msg":"Invalid Refresh Token: Already Used"}"#,
        );
        assert!(is_fatal(&e), "{e:?}");
        assert!(e.to_string().contains("rejected the refresh token"), "{e}");
        // {code: str, message}
        let e = classify_body(
            Endpoint::Token,
            400,
            None,
            r#"{"code":"refresh_token_not_found","message":"Invalid Refresh Token: Refresh Token Not Found"}"#,
        );
        assert!(is_fatal(&e), "{e:?}");
        // {error, error_description}
        let e = classify_body(
            Endpoint::Token,
            400,
            None,
            r#"{"error":"invalid_grant","error_description":"Invalid Refresh Token"}"#,
        );
        assert!(is_fatal(&e), "{e:?}");
    }

    #[test]
    fn the_header_code_wins() {
        let e = classify_body(
            Endpoint::Token,
            400,
            Some("session_expired"),
            r#"{"code":400,"error_code":"validation_failed","msg":"x"}"#,
        );
        assert!(is_fatal(&e), "{e:?}");
        let e = classify_body(
            Endpoint::Token,
            400,
            Some("validation_failed"),
            r#"{"code":400,"error_code":"refresh_token_not_found","msg":"x"}"#,
        );
        assert!(!is_fatal(&e), "{e:?}");
    }

    #[test]
    fn transient_and_other_answers_are_not_fatal() {
        let server = classify_body(Endpoint::Token, 503, None, "unavailable");
        assert_eq!(server.kind(), ErrorKind::Backend);
        assert!(server.retryable() && !is_fatal(&server));
        let limited = classify_body(Endpoint::Token, 429, None, "{}");
        assert_eq!(limited.kind(), ErrorKind::RateLimited);
        assert!(limited.retryable());
        // A wrong API key must not sign the user out.
        let key = classify_body(
            Endpoint::Token,
            401,
            None,
            r#"{"message":"Invalid API key"}"#,
        );
        assert!(!is_fatal(&key) && !key.retryable(), "{key:?}");
    }

    #[test]
    fn user_endpoint_gone_sessions() {
        for (status, header, body) in [
            (
                403,
                None,
                r#"{"code":403,"error_code":"session_not_found","msg":"gone"}"#,
            ),
            (
                403,
                None,
                r#"{"code":403,"error_code":"user_not_found","msg":"no user"}"#,
            ),
            // {code: str, message}, and the header alone.
            (
                403,
                None,
                r#"{"code":"session_not_found","message":"gone"}"#,
            ),
            (403, Some("user_not_found"), r#"{"msg":"no user"}"#),
            (
                404,
                None,
                r#"{"code":404,"error_code":"user_not_found","msg":"x"}"#,
            ),
        ] {
            let e = classify_body(Endpoint::User, status, header, body);
            assert_eq!(e.kind(), ErrorKind::AuthExpired, "{status} {body}");
            assert_eq!(e.data()["reason"], "session_not_found", "{status} {body}");
        }
    }

    /// None of these says the session is gone: the access token is unusable (clock skew, a
    /// rotated signing key) or the gateway refuses the API key. The session is kept, nothing
    /// is retried.
    #[test]
    fn user_endpoint_unusable_tokens_keep_the_session() {
        for (status, body) in [
            (401, "{}"),
            (
                401,
                r#"{"code":401,"error_code":"no_authorization","msg":"no"}"#,
            ),
            (401, r#"{"message":"Invalid API key"}"#),
            (403, r#"{"code":403,"error_code":"bad_jwt","msg":"bad"}"#),
            (403, r#"{"code":"bad_jwt","message":"bad"}"#),
            (403, r#"{"error_code":"not_admin"}"#),
        ] {
            let e = classify_body(Endpoint::User, status, None, body);
            assert_eq!(e.kind(), ErrorKind::Backend, "{status} {body}");
            assert!(!e.retryable(), "{status} {body}");
            assert_eq!(e.data()["status"], status, "{status} {body}");
        }
        // The header wins: a `bad_jwt` header over a gone-session body keeps the session.
        let e = classify_body(
            Endpoint::User,
            403,
            Some("bad_jwt"),
            r#"{"code":403,"error_code":"session_not_found","msg":"x"}"#,
        );
        assert_eq!(e.kind(), ErrorKind::Backend);
        let server = classify_body(Endpoint::User, 500, None, "{}");
        assert_eq!(server.kind(), ErrorKind::Backend);
        assert!(server.retryable());
    }

    #[test]
    fn the_users_mistakes_are_auth_failed_with_the_servers_code() {
        for (endpoint, status, header, body, reason) in [
            (
                Endpoint::SignIn,
                400,
                None,
                r#"{"code":400,"error_code":"invalid_credentials","msg":"Invalid login credentials"}"#,
                "invalid_credentials",
            ),
            (
                Endpoint::SignIn,
                403,
                None,
                r#"{"code":"otp_expired","message":"Token has expired or is invalid"}"#,
                "otp_expired",
            ),
            (
                Endpoint::SignIn,
                404,
                Some("flow_state_not_found"),
                "{}",
                "flow_state_not_found",
            ),
            (
                Endpoint::SignIn,
                422,
                None,
                r#"{"code":422,"error_code":"weak_password","msg":"weak"}"#,
                "weak_password",
            ),
            (
                Endpoint::SignIn,
                400,
                None,
                r#"{"error":"invalid_grant","error_description":"Invalid login credentials"}"#,
                "invalid_grant",
            ),
            (
                Endpoint::UpdateUser,
                422,
                None,
                r#"{"code":422,"error_code":"email_exists","msg":"taken"}"#,
                "email_exists",
            ),
        ] {
            let e = classify_body(endpoint, status, header, body);
            assert_eq!(e.kind(), ErrorKind::AuthFailed, "{status} {body}");
            assert_eq!(e.data()["reason"], reason, "{status} {body}");
            assert_eq!(e.data()["status"], status, "{status} {body}");
            assert!(!e.retryable());
        }
    }

    #[test]
    fn configuration_and_server_faults_at_sign_in_are_not_the_users() {
        // A gateway refusing the API key, a 4xx without a code, a 5xx, a 429.
        for (status, body, kind) in [
            (401, r#"{"message":"Invalid API key"}"#, ErrorKind::Backend),
            (
                401,
                r#"{"code":401,"error_code":"no_authorization","msg":"x"}"#,
                ErrorKind::Backend,
            ),
            (404, "not found", ErrorKind::Backend),
            (
                500,
                r#"{"code":500,"error_code":"unexpected_failure","msg":"x"}"#,
                ErrorKind::Backend,
            ),
            (
                429,
                r#"{"code":429,"error_code":"over_email_send_rate_limit","msg":"x"}"#,
                ErrorKind::RateLimited,
            ),
        ] {
            let e = classify_body(Endpoint::SignIn, status, None, body);
            assert_eq!(e.kind(), kind, "{status} {body}");
        }
        // `PUT /user` judges the session as `GET /user` does.
        let gone = classify_body(
            Endpoint::UpdateUser,
            403,
            None,
            r#"{"code":403,"error_code":"session_not_found","msg":"x"}"#,
        );
        assert_eq!(gone.kind(), ErrorKind::AuthExpired);
        let bad_jwt = classify_body(
            Endpoint::UpdateUser,
            403,
            None,
            r#"{"code":403,"error_code":"bad_jwt","msg":"x"}"#,
        );
        assert_eq!(bad_jwt.kind(), ErrorKind::Backend);
    }

    #[test]
    fn sign_in_answers_are_a_session_a_user_or_nothing() {
        let ok = StatusCode::OK;
        let session = SignInAnswer::parse(
            br#"{"access_token":"a","refresh_token":"r","expires_in":3600,"user":{"id":"u"}}"#,
            ok,
        )
        .unwrap();
        assert!(
            matches!(session, SignInAnswer::Session(ref s) if s.refresh_token.as_deref() == Some("r"))
        );
        let user = SignInAnswer::parse(br#"{"id":"u","email":"e@example.com"}"#, ok).unwrap();
        assert!(matches!(user, SignInAnswer::User(_)));
        for nothing in [&b"{}"[..], b"", b"  ", br#"{"message_id":"m"}"#] {
            assert!(matches!(
                SignInAnswer::parse(nothing, ok).unwrap(),
                SignInAnswer::Nothing
            ));
        }
        for bad in [&b"[]"[..], b"not json", br#"{"access_token":5}"#] {
            assert!(SignInAnswer::parse(bad, ok).is_err());
        }
    }

    #[test]
    fn query_values_are_encoded_as_encode_uri_component() {
        assert_eq!(
            uri_component("myapp://auth/callback?x=1&y=a b"),
            "myapp%3A%2F%2Fauth%2Fcallback%3Fx%3D1%26y%3Da%20b"
        );
        assert_eq!(uri_component("-_.!~*'()"), "-_.!~*'()");
        assert_eq!(
            with_redirect("/signup", Some("a/b")),
            "/signup?redirect_to=a%2Fb"
        );
        assert_eq!(
            with_redirect("/token?grant_type=pkce", None),
            "/token?grant_type=pkce"
        );
    }

    #[test]
    fn messages_never_carry_a_token() {
        let e = classify_body(
            Endpoint::Token,
            400,
            None,
            r#"{"error":"invalid_grant","error_description":"token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl is bad"}"#,
        );
        assert!(!e.to_string().contains("eyJ"), "{e}");
    }
}
