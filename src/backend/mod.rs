//! The product backend client: the only user of reqwest. Maps every response to an error kind.
//!
//! Both HTTP clients, this one and the auth server's ([`auth_server`]), go through one
//! upstream layer, [`upstream`]: one [`reqwest::Client`] built there (rustls, gzip,
//! timeouts, **redirects never followed**), a capped streaming body read, a bound on
//! concurrent requests per upstream, the transport-error mapping and the request log, each
//! naming its upstream ("backend", "auth server"). The session gate turns a `Backend` into a
//! [`BackendClient`] that carries the access token; domain code only ever sees the latter and
//! gets typed `data` or an [`Error`].
//!
//! The backend wraps its results as `{"success": bool, "data": ..., "error"?: string}`.
//! The mapping from an HTTP answer to a result is [`map_response`], a pure function:
//!
//! | answer | result |
//! |---|---|
//! | 2xx, `success: true` (or absent) | `data` (absent `data` is `null`) |
//! | 2xx, `success: false` | `Backend { status, malformed: false }` |
//! | 2xx, not JSON / not an envelope | `Backend { malformed: true }` |
//! | 401 | `AuthExpired { reason: Unauthorized }` |
//! | 429 | `RateLimited { retry_after }` from `Retry-After` (seconds or HTTP date) |
//! | other 4xx, 5xx, unexpected 1xx/3xx | `Backend { status, malformed: false }` |
//!
//! Before an answer reaches [`map_response`], the upstream layer has already turned these
//! into errors:
//!
//! | answer | result |
//! |---|---|
//! | 3xx (a redirect) | `Backend { status, malformed: false }`, "backend redirected (307); the redirect was not followed": the target is never contacted |
//! | a body over [`MAX_BODY_BYTES`] (8 MiB, counted after gzip inflation) | `Backend { status, malformed: true }`, "backend response body over the 8 MiB cap" |
//! | no complete answer | `Unavailable`, "backend unreachable: ..." |
//!
//! Only the HTTP status 401 of the backend itself means the session is gone: a 5xx or a
//! `success: false` whose text mentions an upstream provider's 401 stays `Backend`.
//! Transport failures (refused, DNS, TLS, timeout, connection lost) are `Unavailable`.
//! At most [`upstream::MAX_CONCURRENT_REQUESTS`] backend requests are in flight at once;
//! more wait for a permit (the timeout counts from the permit, not from the wait).
//! URLs never reach messages or logs with their query string; backend text is scrubbed.

pub mod auth_server;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::BaseUrl;
use crate::error::{AuthExpiredReason, Error, Result};
use crate::scrub::scrub;
use upstream::Upstream;

/// The backend's name in errors and logs.
pub const BACKEND: &str = "backend";

/// Largest response body read from the backend (after gzip inflation); past it the answer
/// counts as malformed.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest piece of backend text carried into an error message.
const MAX_MESSAGE_CHARS: usize = 300;

/// The message of the `unavailable` error when no backend URL is configured.
pub const NO_BACKEND_MESSAGE: &str = "no backend configured: set CORE_SIDECAR_BACKEND_URL";
/// The message of the `auth_expired` error for a backend 401.
pub const UNAUTHORIZED_MESSAGE: &str = "the backend rejected the session token (401)";

/// The backend upstream (the shared HTTP client, its own concurrency bound) and the
/// backend's base URL. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    upstream: Upstream,
    base_url: Option<Arc<Base>>,
}

/// The backend's base URL, parsed once: requests are joined onto it.
struct Base {
    url: reqwest::Url,
}

impl Base {
    /// `{base}{path}` (`path` may carry a query). Joined as a path-absolute reference onto
    /// the parsed base: the same URL as parsing the whole text, without parsing the host
    /// again (a third of the URL work of a gated call). The result is checked to keep the
    /// base's scheme and authority (a `//host` path would name another).
    fn request_url(&self, path: &str) -> Result<reqwest::Url> {
        use url::Position::BeforePath;
        let base_path = self.url.path().trim_end_matches('/');
        let separator = if path.starts_with('/') { "" } else { "/" };
        let target = format!("{base_path}{separator}{path}");
        let url = self
            .url
            .join(&target)
            .map_err(|e| Error::Internal(format!("building a backend URL: {e}")))?;
        if url[..BeforePath] != self.url[..BeforePath] {
            return Err(Error::Internal(
                "building a backend URL: the path names another host".into(),
            ));
        }
        Ok(url)
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("configured", &self.base_url.is_some())
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl Backend {
    /// Builds the one HTTP client of the process ([`upstream::client`]). `base_url` is the
    /// product backend's base, checked when the configuration was parsed ([`BaseUrl`]). Fails
    /// only when the HTTP client cannot be built (no TLS roots, say).
    pub fn new(base_url: Option<BaseUrl>, timeout: Duration) -> Result<Self> {
        let http = upstream::client(timeout)?;
        let base_url = base_url.map(|url| {
            Arc::new(Base {
                url: url.as_url().clone(),
            })
        });
        Ok(Self {
            upstream: Upstream::new(BACKEND, http, timeout, MAX_BODY_BYTES),
            base_url,
        })
    }

    /// The shared client (connection pool, TLS, timeout, no redirects), for the auth-server
    /// client, which wraps it in its own [`Upstream`] (its own concurrency bound).
    pub fn http(&self) -> &reqwest::Client {
        self.upstream.http()
    }

    /// Whether a backend URL is configured.
    pub fn is_configured(&self) -> bool {
        self.base_url.is_some()
    }

    /// The per-request timeout the client was built with.
    pub fn timeout(&self) -> Duration {
        self.upstream.timeout()
    }

    /// A client that carries the access token. Cheap: no allocation beyond the header.
    pub fn authed(&self, access_token: &str) -> BackendClient {
        let auth = HeaderValue::from_str(&format!("Bearer {}", access_token.trim()))
            .ok()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        BackendClient {
            backend: self.clone(),
            auth,
        }
    }
}

/// The backend client of one call: carries the access token. Cheap to clone.
#[derive(Clone)]
pub struct BackendClient {
    backend: Backend,
    /// `None` when the token cannot be an HTTP header value (control characters).
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("backend", &self.backend)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl BackendClient {
    /// `GET {base}{path}`, returning the envelope's `data` as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Method::GET, path, None).await
    }

    /// `POST {base}{path}` with a JSON body, returning the envelope's `data` as `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::Internal(format!("serializing a backend request body: {e}")))?;
        self.send(Method::POST, path, Some(body)).await
    }

    /// `DELETE {base}{path}`, returning the envelope's `data` as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Method::DELETE, path, None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let base = self
            .backend
            .base_url
            .as_deref()
            .ok_or_else(|| Error::Unavailable(NO_BACKEND_MESSAGE.into()))?;
        let Some(auth) = self.auth.clone() else {
            // A token with control characters can never be sent: the session is unusable.
            return Err(Error::auth_expired(
                AuthExpiredReason::Unauthorized,
                "the stored session token is not a valid HTTP header value",
            ));
        };
        let url = base.request_url(path)?;
        let upstream = &self.backend.upstream;
        let mut request = upstream
            .http()
            .request(method, url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let answer = upstream.send(request).await?;
        if answer.status.is_success()
            && let Some(data) = plain_data(&answer.body)
        {
            return Ok(data);
        }
        let retry_after = answer
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        let data = envelope_data(answer.status, retry_after, &answer.body, SystemTime::now())?;
        decode_data(answer.status.as_u16(), data)
    }
}

/// The usual answer, `{"success": true, "data": ...}` with `data` fitting `T`, read in one
/// pass. `None` for anything else, which [`envelope_data`] and [`decode_data`] then read (and
/// explain) the long way: the same result for every answer this takes.
fn plain_data<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    #[derive(Deserialize)]
    struct Plain<T> {
        success: bool,
        data: T,
    }
    if !is_object(body) {
        return None;
    }
    match serde_json::from_slice::<Plain<T>>(body) {
        Ok(Plain {
            success: true,
            data,
        }) => Some(data),
        _ => None,
    }
}

/// Whether `body` is a JSON object, by its first byte: only an object is an envelope (a
/// struct would also read an array, by position).
fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Turns the envelope's `data` into `T`, straight from its text (no `Value` in between: this
/// is every gated call's hot path); a shape mismatch is a malformed answer.
fn decode_data<T: DeserializeOwned>(status: u16, data: Option<&RawValue>) -> Result<T> {
    let text = data.map_or("null", RawValue::get);
    // The fast read first; only a failure is read again to say where it failed (path
    // tracking costs as much as the read itself, and answers that fit are the rule).
    if let Ok(decoded) = serde_json::from_str(text) {
        return Ok(decoded);
    }
    let missing = text == "null";
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(&mut deserializer).map_err(|e| {
        if missing {
            return Error::malformed_answer(Some(status), "backend response has no data");
        }
        let path = e.path().to_string();
        let inner = truncate(&scrub(&e.into_inner().to_string()));
        let message = if path == "." {
            format!("backend response data has an unexpected shape: {inner}")
        } else {
            format!("backend response data has an unexpected shape at {path}: {inner}")
        };
        Error::malformed_answer(Some(status), message)
    })
}

/// Maps one complete HTTP answer of the backend to the envelope's `data` or an error.
/// Pure: `now` is only used to turn a `Retry-After` HTTP date into a delay.
pub fn map_response(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Value> {
    let data = envelope_data(status, retry_after, body, now)?;
    Ok(data
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null))
}

/// The envelope `{success, data, error?}` as the backend writes it: `data` is kept as text,
/// for the caller's type to read it once.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    success: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// A member that is there, `null` included (`Option`'s own reading takes `null` for absent).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// [`map_response`] without building a `Value`: the envelope's `data`, as text (`None`:
/// absent, or an empty body).
fn envelope_data<'a>(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &'a [u8],
    now: SystemTime,
) -> Result<Option<&'a RawValue>> {
    let code = status.as_u16();
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::auth_expired(
            AuthExpiredReason::Unauthorized,
            UNAUTHORIZED_MESSAGE,
        ));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::RateLimited {
            service: "backend",
            status: code,
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        });
    }
    if !status.is_success() {
        let message = match error_text(body) {
            Some(text) => format!("backend returned {code}: {text}"),
            None if status.is_client_error() || status.is_server_error() => {
                format!("backend returned {code}")
            }
            None => format!("backend returned unexpected status {code}"),
        };
        return Err(Error::backend_status(code, message));
    }

    let malformed = |why: &str| {
        Error::malformed_answer(Some(code), format!("malformed backend response: {why}"))
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        // 204 or an empty 200: nothing to decode; a caller that needs data says so.
        return Ok(None);
    }
    if !is_object(body) {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => malformed("not a {success, data} object"),
                Err(_) => malformed("not JSON"),
            },
        );
    }
    let envelope: Envelope<'a> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => malformed("not a {success, data} object"),
        _ => malformed("not JSON"),
    })?;
    match envelope.success.map(RawValue::get) {
        Some("false") => {
            let text = error_text(body);
            let message = match text {
                Some(text) => format!("backend reported a failure: {text}"),
                None => "backend reported a failure".to_string(),
            };
            return Err(Error::backend_status(code, message));
        }
        Some("true") => {}
        None if envelope.data.is_some() => {}
        Some(_) => return Err(malformed("`success` is not a boolean")),
        None => return Err(malformed("not a {success, data} object")),
    }
    // `"data": null` reads as no data, as before.
    Ok(envelope.data.filter(|raw| raw.get() != "null"))
}

/// The human-readable error text of a backend answer, scrubbed and truncated: the envelope's
/// `error` (a string or an object with a message), or `message`/`msg`/`detail`/
/// `error_description`, or a short plain-text body. HTML error pages are not quoted.
fn error_text(body: &[u8]) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let pick = |v: &Value| -> Option<String> {
                match v {
                    Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    Value::Object(inner) => ["message", "msg", "detail"]
                        .iter()
                        .find_map(|k| inner.get(*k).and_then(Value::as_str))
                        .map(|s| s.trim().to_string()),
                    _ => None,
                }
            };
            ["error", "message", "msg", "detail", "error_description"]
                .iter()
                .find_map(|k| map.get(*k).and_then(pick))?
        }
        Ok(Value::String(s)) => s,
        Ok(_) => return None,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() || text.starts_with('<') {
                return None;
            }
            text.to_string()
        }
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    Some(truncate(&scrub(&text)))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// `Retry-After` as a delay: delta-seconds (fractions tolerated) or an HTTP date, which is
/// counted from `now` (a date in the past is zero). Unparsable values are ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn map(status: u16, retry_after: Option<&str>, body: &str) -> Result<Value> {
        map_response(
            StatusCode::from_u16(status).unwrap(),
            retry_after,
            body.as_bytes(),
            now(),
        )
    }

    /// (status, Retry-After, body, expected kind, expected data.status, malformed,
    /// reportable, message contains)
    #[test]
    fn status_and_body_map_to_the_contract() {
        type Row = (
            u16,
            Option<&'static str>,
            &'static str,
            ErrorKind,
            Option<u16>,
            bool,
            bool,
            &'static str,
        );
        use ErrorKind::*;
        let rows: &[Row] = &[
            (
                401,
                None,
                r#"{"success":false,"error":"jwt expired"}"#,
                AuthExpired,
                None,
                false,
                false,
                "rejected the session token (401)",
            ),
            (401, None, "", AuthExpired, None, false, false, "(401)"),
            (
                429,
                Some("3"),
                "",
                RateLimited,
                Some(429),
                false,
                false,
                "rate limited",
            ),
            (
                429,
                None,
                "slow down",
                RateLimited,
                Some(429),
                false,
                false,
                "rate limited",
            ),
            (
                404,
                None,
                r#"{"success":false,"error":"connection not found"}"#,
                Backend,
                Some(404),
                false,
                false,
                "backend returned 404: connection not found",
            ),
            (
                400,
                None,
                r#"{"error":{"message":"toolkit is required"}}"#,
                Backend,
                Some(400),
                false,
                false,
                "toolkit is required",
            ),
            (
                403,
                None,
                "forbidden",
                Backend,
                Some(403),
                false,
                false,
                "backend returned 403: forbidden",
            ),
            (
                422,
                None,
                r#"{"detail":"bad toolkit"}"#,
                Backend,
                Some(422),
                false,
                false,
                "bad toolkit",
            ),
            (
                500,
                None,
                r#"{"success":false,"error":"boom"}"#,
                Backend,
                Some(500),
                false,
                true,
                "backend returned 500: boom",
            ),
            (
                502,
                None,
                r#"{"success":false,"error":"upstream provider returned 401"}"#,
                Backend,
                Some(502),
                false,
                true,
                "upstream provider returned 401",
            ),
            (
                503,
                None,
                "<html><body>Service Unavailable</body></html>",
                Backend,
                Some(503),
                false,
                true,
                "backend returned 503",
            ),
            (
                200,
                None,
                r#"{"success":false,"error":"composio: upstream 401 Unauthorized"}"#,
                Backend,
                Some(200),
                false,
                false,
                "backend reported a failure: composio: upstream 401",
            ),
            (
                200,
                None,
                r#"{"success":false}"#,
                Backend,
                Some(200),
                false,
                false,
                "backend reported a failure",
            ),
            (
                200,
                None,
                "not json",
                Backend,
                Some(200),
                true,
                true,
                "not JSON",
            ),
            (
                200,
                None,
                "[1,2]",
                Backend,
                Some(200),
                true,
                true,
                "not a {success, data} object",
            ),
            (
                200,
                None,
                r#"{"toolkits":[]}"#,
                Backend,
                Some(200),
                true,
                true,
                "not a {success, data} object",
            ),
            (
                200,
                None,
                r#"{"success":"yes","data":{}}"#,
                Backend,
                Some(200),
                true,
                true,
                "not a boolean",
            ),
            (
                302,
                None,
                "",
                Backend,
                Some(302),
                false,
                false,
                "unexpected status 302",
            ),
        ];
        for (status, retry_after, body, kind, data_status, malformed, reportable, contains) in rows
        {
            let err = map(*status, *retry_after, body).expect_err(&format!("{status} {body}"));
            assert_eq!(err.kind(), *kind, "{status} {body}");
            assert_eq!(
                err.data().get("status").and_then(Value::as_u64),
                data_status.map(u64::from),
                "{status} {body}"
            );
            assert_eq!(
                crate::telemetry::is_reportable(&err),
                *reportable,
                "{status} {body}"
            );
            if let Error::Backend { malformed: m, .. } = &err {
                assert_eq!(m, malformed, "{status} {body}");
            }
            assert!(err.to_string().contains(contains), "{status} {body}: {err}");
        }
    }

    #[test]
    fn unauthorized_has_reason_and_exact_message() {
        let err = map(401, None, "").unwrap_err();
        assert_eq!(err.data()["reason"], "unauthorized");
        assert_eq!(err.to_string(), UNAUTHORIZED_MESSAGE);
    }

    #[test]
    fn success_returns_data() {
        assert_eq!(
            map(
                200,
                None,
                r#"{"success":true,"data":{"toolkits":["github"]}}"#
            )
            .unwrap(),
            json!({"toolkits": ["github"]})
        );
        assert_eq!(map(201, None, r#"{"success":true}"#).unwrap(), Value::Null);
        assert_eq!(map(204, None, "").unwrap(), Value::Null);
        // No `success` but a `data`: lenient, `null` included.
        assert_eq!(map(200, None, r#"{"data":[1]}"#).unwrap(), json!([1]));
        assert_eq!(map(200, None, r#"{"data":null}"#).unwrap(), Value::Null);
        // Whitespace anywhere, unknown members ignored.
        assert_eq!(
            map(
                200,
                None,
                r#" { "success" : true , "error" : null, "data" : {"a": 1} } "#
            )
            .unwrap(),
            json!({"a": 1})
        );
    }

    /// The one-pass reading agrees with the long way wherever it answers.
    #[test]
    fn the_plain_reading_takes_only_what_the_long_way_reads_the_same() {
        fn long_way<T: DeserializeOwned>(body: &str) -> Result<T> {
            let data = envelope_data(StatusCode::OK, None, body.as_bytes(), SystemTime::now())?;
            decode_data(200, data)
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Typed {
            a: u32,
        }
        let bodies = [
            r#"{"success":true,"data":{"a":1}}"#,
            r#" {"data":{"a":2},"success":true,"error":null} "#,
            r#"{"success":true,"data":{"a":1},"data":{"a":2}}"#,
            r#"{"success":"true","data":{"a":1}}"#,
            r#"{"success":false,"data":{"a":1}}"#,
            r#"{"success":true}"#,
            r#"{"data":{"a":1}}"#,
            r#"{"success":true,"data":null}"#,
            r#"{"success":true,"data":{"b":1}}"#,
            r#"[true,{"a":1}]"#,
            r#"{"success":true,"data":{"a":1}"#,
        ];
        for body in bodies {
            if let Some(value) = plain_data::<Value>(body.as_bytes()) {
                assert_eq!(value, long_way::<Value>(body).unwrap(), "{body}");
            }
            if let Some(typed) = plain_data::<Typed>(body.as_bytes()) {
                assert_eq!(typed, long_way::<Typed>(body).unwrap(), "{body}");
            }
            if let Some(typed) = plain_data::<Option<Typed>>(body.as_bytes()) {
                assert_eq!(typed, long_way::<Option<Typed>>(body).unwrap(), "{body}");
            }
        }
        assert_eq!(
            plain_data::<Typed>(bodies[0].as_bytes()),
            Some(Typed { a: 1 })
        );
        assert!(plain_data::<Value>(bodies[3].as_bytes()).is_none());
        assert!(plain_data::<Value>(bodies[9].as_bytes()).is_none());
    }

    #[test]
    fn missing_data_is_malformed_for_typed_results() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            toolkits: Vec<String>,
        }
        let body = br#"{"success":true}"#;
        let data = envelope_data(StatusCode::OK, None, body, now()).unwrap();
        let err = decode_data::<Needs>(200, data).unwrap_err();
        assert!(matches!(
            err,
            Error::Backend {
                malformed: true,
                ..
            }
        ));
        assert_eq!(err.to_string(), "backend response has no data");

        let body = br#"{"success":true,"data":{"toolkits":[1]}}"#;
        let data = envelope_data(StatusCode::OK, None, body, now()).unwrap();
        let err = decode_data::<Needs>(200, data).unwrap_err();
        assert!(err.to_string().contains("toolkits[0]"), "{err}");
        assert!(crate::telemetry::is_reportable(&err));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
        let err = map(429, Some("Sun, 06 Nov 1994 08:49:39 GMT"), "").unwrap_err();
        assert_eq!(err.data()["retryAfterMs"], 2000);
    }

    #[test]
    fn long_error_text_is_truncated() {
        let body = format!(r#"{{"error":"{}"}}"#, "x".repeat(5000));
        let err = map(400, None, &body).unwrap_err();
        assert!(err.to_string().len() < MAX_MESSAGE_CHARS + 50);
    }

    #[test]
    fn request_urls_go_after_the_configured_base() {
        // Validation happens when the configuration is parsed (`config::BaseUrl`).
        let t = Duration::from_secs(1);
        assert!(!Backend::new(None, t).unwrap().is_configured());
        for (base, path, url) in [
            (
                "http://127.0.0.1:9/api/",
                "/x/y",
                "http://127.0.0.1:9/api/x/y",
            ),
            (
                "http://127.0.0.1:9/api",
                "x?a=1&b=%20",
                "http://127.0.0.1:9/api/x?a=1&b=%20",
            ),
            (
                "http://127.0.0.1:9",
                "/c/a%2Fb",
                "http://127.0.0.1:9/c/a%2Fb",
            ),
            (
                "https://api.example.com/v1/",
                "/c d",
                "https://api.example.com/v1/c%20d",
            ),
        ] {
            let b = Backend::new(Some(base.parse().unwrap()), t).unwrap();
            let base = b.base_url.as_ref().unwrap();
            assert_eq!(base.request_url(path).unwrap().as_str(), url, "{path}");
            // The same URL as parsing the whole text.
            let whole = format!(
                "{}{}{path}",
                base.url.as_str().trim_end_matches('/'),
                if path.starts_with('/') { "" } else { "/" }
            );
            assert_eq!(reqwest::Url::parse(&whole).unwrap().as_str(), url);
        }
        let b = Backend::new(Some("http://127.0.0.1:9".parse().unwrap()), t).unwrap();
        let base = b.base_url.as_ref().unwrap();
        assert!(
            base.request_url("//evil.example/x").is_err(),
            "never another host"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = Backend::new(
            Some("http://127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(1),
        )
        .unwrap();
        let client = b.authed("eyJhbGciOiJIUzI1NiJ9.secret.sig");
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[tokio::test]
    async fn no_base_url_is_unavailable() {
        let b = Backend::new(None, Duration::from_secs(1)).unwrap();
        let err = b.authed("t").get::<Value>("/auth/me").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(err.to_string(), NO_BACKEND_MESSAGE);
    }

    #[tokio::test]
    async fn refused_port_is_unavailable_without_query() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = Backend::new(
            Some(format!("http://127.0.0.1:{port}").parse().unwrap()),
            Duration::from_secs(5),
        )
        .unwrap();
        let err = b
            .authed("t")
            .get::<Value>("/auth/me?access_token=SECRET")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let text = err.to_string();
        assert!(text.starts_with("backend unreachable: "), "{text}");
        assert!(
            !text.contains("SECRET") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn control_characters_in_the_token_are_auth_expired() {
        let b = Backend::new(
            Some("http://127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(1),
        )
        .unwrap();
        let err = b.authed("a\nb").get::<Value>("/x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthExpired);
        assert!(!err.to_string().contains("a\nb"));
    }
}
