//! Tracing to stderr and Sentry, both scrubbed; Sentry events deduplicated.
//!
//! - Logs go to **stderr only** (stdout is the wire), through a writer that runs [`scrub`] over
//!   every formatted line, so a token that slips into a log field is still redacted.
//! - Sentry is on only with a DSN. Every event passes `before_send`, which serializes it to
//!   JSON, scrubs every string in it and deserializes it back: no field can be forgotten.
//!   Breadcrumbs get the same treatment in `before_breadcrumb`.
//! - [`report`] sends a reportable [`Error`] at most once per fingerprint per
//!   [`DEDUPE_WINDOW`] per process, so a shell that polls every 5 s cannot flood Sentry.
//! - Panics: [`init`] installs a panic hook that logs the scrubbed message (instead of the
//!   default hook, which would print it unscrubbed) and sends one Sentry event per panic
//!   location per window. The transport turns the panic into `-32603`; it must not report
//!   the panic a second time.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

use regex::Regex;
use sentry::protocol::{Breadcrumb, Event, Level};
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::Config;
use crate::error::Error;

/// The same fingerprint reaches Sentry at most once per this window.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);

const REDACTED: &str = "[redacted]";

/// Keeps Sentry alive; flush it on the way out. Dropping it closes the Sentry client
/// (draining queued events for up to its shutdown timeout).
#[must_use = "dropping the guard shuts Sentry down"]
pub struct TelemetryGuard {
    client: Option<Arc<sentry::Client>>,
}

impl TelemetryGuard {
    /// Whether Sentry is on (a valid DSN was configured).
    pub fn sentry_enabled(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.is_enabled())
    }

    /// Sends the events still queued, waiting at most `timeout`. Returns whether the queue
    /// drained in time (true when Sentry is off).
    pub fn flush(&self, timeout: Duration) -> bool {
        match &self.client {
            Some(client) => client.flush(Some(timeout)),
            None => true,
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            client.close(Some(Duration::from_secs(2)));
        }
    }
}

/// Sets up tracing (stderr, `config.log` filter) and, with a DSN, Sentry. Call once, early.
/// Calling it again leaves the first subscriber in place (useful in tests).
pub fn init(config: &Config) -> TelemetryGuard {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|err| {
        // The subscriber is not up yet: remember the problem and log it once it is.
        BAD_FILTER.get_or_init(|| err.to_string());
        EnvFilter::new("info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbingStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    if let Some(err) = BAD_FILTER.get() {
        tracing::warn!("invalid RUST_LOG filter ({err}); using `info`");
    }

    install_panic_hook();

    let client =
        config
            .sentry_dsn
            .as_deref()
            .and_then(|dsn| match dsn.parse::<sentry::types::Dsn>() {
                Ok(dsn) => Some(dsn),
                Err(err) => {
                    tracing::warn!("SENTRY_DSN is not a valid DSN ({err}); Sentry is off");
                    None
                }
            });
    let client = client.map(|dsn| {
        let mut options = client_options(config);
        options.dsn = Some(dsn);
        let client = Arc::new(sentry::Client::from(sentry::apply_defaults(options)));
        // The process-wide hub, so every thread (runtime workers included) sees it.
        sentry::Hub::main().bind_client(Some(client.clone()));
        tracing::info!("Sentry on");
        client
    });
    TelemetryGuard { client }
}

static BAD_FILTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The Sentry options, without DSN or transport. No default integrations: the panic one is
/// replaced by our hook (scrubbed log, dedupe), the others are added explicitly.
fn client_options(config: &Config) -> sentry::ClientOptions {
    use sentry::integrations::{backtrace::ProcessStacktraceIntegration, contexts};
    let release = config
        .sentry_release
        .clone()
        .unwrap_or_else(|| format!("core-sidecar@{}", env!("CARGO_PKG_VERSION")));
    sentry::ClientOptions {
        release: Some(release.into()),
        environment: config.sentry_environment.clone().map(Into::into),
        send_default_pii: false,
        default_integrations: false,
        integrations: vec![
            Arc::new(contexts::ContextIntegration::default()),
            Arc::new(ProcessStacktraceIntegration),
        ],
        before_send: Some(Arc::new(scrub_event)),
        before_breadcrumb: Some(Arc::new(scrub_breadcrumb)),
        ..Default::default()
    }
}

/// Sends a reportable error to Sentry (scrubbed, at most once per fingerprint per 10 min)
/// and logs it. Errors that are not real faults should not get here: see
/// [`Error::is_reportable`].
pub fn report(error: &Error) {
    let fingerprint = error.fingerprint();
    let message = scrub(&error.to_string());
    let kind = error.kind().as_str();
    if !DEDUPE.first_in_window(&fingerprint, Instant::now()) {
        tracing::debug!(kind, "{message} (already reported in the last 10 min)");
        return;
    }
    tracing::error!(kind, "{message}");
    let mut event = Event {
        message: Some(message),
        level: Level::Error,
        fingerprint: vec![fingerprint.into()].into(),
        ..Default::default()
    };
    event.tags.insert("kind".into(), kind.into());
    sentry::capture_event(event);
}

// ---------------------------------------------------------------------------------------------
// Dedupe

static DEDUPE: LazyLock<Dedupe> = LazyLock::new(|| Dedupe::new(DEDUPE_WINDOW));

/// Remembers when each key was last let through. The clock is passed in, so tests can
/// prove the window without sleeping.
struct Dedupe {
    window: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl Dedupe {
    fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// True when `key` was not let through within the window before `now` (and records it).
    fn first_in_window(&self, key: &str, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = seen.get(key)
            && now.saturating_duration_since(*last) < self.window
        {
            return false;
        }
        if seen.len() >= 1024 {
            let window = self.window;
            seen.retain(|_, last| now.saturating_duration_since(*last) < window);
        }
        seen.insert(key.to_string(), now);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Panics

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = scrub(sentry::integrations::panic::message_from_panic_info(info));
            let location = info.location().map_or_else(
                || "unknown".to_string(),
                |l| format!("{}:{}:{}", l.file(), l.line(), l.column()),
            );
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("<unnamed>");
            tracing::error!(%location, thread, "panic: {message}");

            let hub = sentry::Hub::current();
            if !hub.client().is_some_and(|c| c.is_enabled()) {
                return;
            }
            if !DEDUPE.first_in_window(&format!("panic:{location}"), Instant::now()) {
                return;
            }
            let mut event =
                sentry::integrations::panic::PanicIntegration::new().event_from_panic_info(info);
            event.fingerprint = vec!["panic".into(), location.into()].into();
            event.tags.insert("kind".into(), "internal".into());
            // Scrubbed again by before_send; the message above is only for the log.
            hub.capture_event(event);
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// Scrubbing

/// Applied in order. Each replacement is stable under the later rules and under itself, so
/// `scrub(scrub(x)) == scrub(x)`.
static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    let rule = |pattern: &str, replacement: &'static str| {
        (Regex::new(pattern).expect("scrub pattern"), replacement)
    };
    vec![
        // Authorization header values, as header lines, JSON members or debug output:
        // `Authorization: Basic xyz`, `"authorization":"Bearer xyz"`.
        rule(
            r#"(?i)(authorization["']?\s*[:=]\s*["']?)[^"'\r\n,;}]+"#,
            "${1}[redacted]",
        ),
        // `Bearer <anything>`.
        rule(
            r#"(?i)\b(bearer)\s+(?:\[redacted\]|[^\s"',;}\]]+)"#,
            "${1} [redacted]",
        ),
        // JWTs: three base64url segments, the first starting with eyJ (`{"`).
        rule(
            r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
            "[redacted]",
        ),
        // URL query strings: `https://x/y?a=b` -> `https://x/y?[redacted]`.
        rule(r#"([^\s?])\?[^\s"'<>`#]+"#, "${1}?[redacted]"),
        // Values of token-ish keys in JSON, debug output or form bodies:
        // `"refresh_token":"v1.abc"`, `refresh_token=abc`, `accessToken: 'abc'`, `apikey=...`.
        rule(
            &r#"(?i)\b(KEY["']?\s*[:=]\s*)"[^"]*""#.replace("KEY", SECRET_KEY),
            r#"${1}"[redacted]""#,
        ),
        rule(
            &r#"(?i)\b(KEY["']?\s*[:=]\s*)'[^']*'"#.replace("KEY", SECRET_KEY),
            "${1}'[redacted]'",
        ),
        rule(
            &r#"(?i)\b(KEY["']?\s*[:=]\s*)[^\s"'&,;}\]\[]+"#.replace("KEY", SECRET_KEY),
            "${1}[redacted]",
        ),
    ]
});

/// Names of keys whose values are secrets (matched case-insensitively, whole word).
const SECRET_KEY: &str =
    r"(?:[a-z_]*token|apikey|api_key|api-key|password|secret|client_secret|code_verifier)";

/// Candidates for the last rule: long base64url runs. Only those mixing letters and digits
/// are redacted, so long identifiers (`handle_request_with_a_long_name`) survive.
static OPAQUE_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_-]{32,}").expect("scrub pattern"));

/// How many of the most recent tokens [`remember_secret`] keeps.
const KNOWN_SECRETS_KEPT: usize = 32;

/// Shorter values are not redacted by value: they would mangle ordinary words.
const KNOWN_SECRET_MIN_LEN: usize = 8;

static KNOWN_SECRETS: LazyLock<std::sync::RwLock<std::collections::VecDeque<String>>> =
    LazyLock::new(Default::default);

fn known_secrets() -> std::sync::RwLockReadGuard<'static, std::collections::VecDeque<String>> {
    KNOWN_SECRETS.read().unwrap_or_else(|p| p.into_inner())
}

/// Makes [`scrub`] redact this exact value from now on. Shapes cannot recognise every
/// opaque token a server echoes back in an error body; the tokens this process holds are
/// known, so they are redacted by value too (the most recent few dozen).
pub fn remember_secret(secret: &str) {
    if secret.len() < KNOWN_SECRET_MIN_LEN || known_secrets().iter().any(|s| s == secret) {
        return;
    }
    let mut known = KNOWN_SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if known.len() == KNOWN_SECRETS_KEPT {
        known.pop_front();
    }
    known.push_back(secret.to_string());
}

/// Replaces anything token-shaped in `text` with `[redacted]`: JWTs, `Bearer ...`,
/// Authorization header values, values of `*token` / `apikey` / `password` keys, URL query
/// strings, and any base64url run of 32 characters or more that mixes letters and digits.
pub fn scrub(text: &str) -> String {
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in known_secrets().iter() {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    for (regex, replacement) in RULES.iter() {
        if let std::borrow::Cow::Owned(replaced) = regex.replace_all(&out, *replacement) {
            out = std::borrow::Cow::Owned(replaced);
        }
    }
    let replaced = OPAQUE_RUN.replace_all(&out, |caps: &regex::Captures<'_>| {
        let run = &caps[0];
        let digits = run.bytes().any(|b| b.is_ascii_digit());
        let letters = run.bytes().any(|b| b.is_ascii_alphabetic());
        if digits && letters {
            REDACTED.to_string()
        } else {
            run.to_string()
        }
    });
    if let std::borrow::Cow::Owned(replaced) = replaced {
        return replaced;
    }
    out.into_owned()
}

/// Whether an object key names a secret: its whole string value is redacted.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("authorization")
        || key.contains("cookie")
        || key.ends_with("token")
        || key.contains("apikey")
        || key.contains("api_key")
        || key.contains("api-key")
        || key.contains("password")
        || key.contains("secret")
}

/// Keys whose values are identifiers of the SDK's own making (ids, addresses) that look
/// like opaque runs but are needed for the event to parse and be useful.
const STRUCTURAL_KEYS: &[&str] = &[
    "event_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "debug_id",
    "code_id",
    "image_addr",
    "instruction_addr",
    "symbol_addr",
    "timestamp",
    "start_timestamp",
];

fn scrub_value(value: &mut Value) {
    match value {
        Value::String(text) => {
            let clean = scrub(text);
            if clean != *text {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(map) => {
            // Keys can carry data too (tags, extra, headers): rebuild the map.
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                if is_secret_key(&key) && item.is_string() {
                    item = Value::String(REDACTED.into());
                } else if !STRUCTURAL_KEYS.contains(&key.as_str()) {
                    scrub_value(&mut item);
                }
                map.insert(scrub(&key), item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Scrubs every string of a serializable value by a JSON round trip. `None` when the
/// round trip fails: better to drop an event than to send it unscrubbed.
fn scrub_serde<T: serde::Serialize + serde::de::DeserializeOwned>(item: &T) -> Option<T> {
    let mut value = serde_json::to_value(item).ok()?;
    scrub_value(&mut value);
    serde_json::from_value(value).ok()
}

fn scrub_event(event: Event<'static>) -> Option<Event<'static>> {
    let scrubbed = scrub_serde(&event);
    if scrubbed.is_none() {
        tracing::warn!("a Sentry event could not be scrubbed and was dropped");
    }
    scrubbed
}

fn scrub_breadcrumb(crumb: Breadcrumb) -> Option<Breadcrumb> {
    scrub_serde(&crumb)
}

/// stderr, with every formatted log line scrubbed before it is written.
struct ScrubbingStderr;

impl<'a> MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter
    }
}

struct ScrubbingWriter;

impl Write for ScrubbingWriter {
    /// The fmt layer formats a whole event into one buffer and writes it at once, so the
    /// buffer is a complete line and can be scrubbed as text.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr()
            .lock()
            .write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";

    #[test]
    fn scrubs_jwts() {
        let out = scrub(&format!("token was {JWT}, rejected"));
        assert_eq!(out, "token was [redacted], rejected");
        // alg none: empty signature.
        assert!(!scrub("x eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. y").contains("eyJzdWIi"));
    }

    #[test]
    fn scrubs_bearer_and_authorization() {
        assert_eq!(scrub("Bearer abc.def"), "Bearer [redacted]");
        assert_eq!(
            scrub("sent authorization: Basic dXNlcjpwYXNz to it"),
            "sent authorization: [redacted]"
        );
        let json = r#"{"Authorization":"Token s3cr3t","x":1}"#;
        let out = scrub(json);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains(r#""x":1"#), "{out}");
        assert!(!scrub("headers: {\"authorization\": \"Bearer zz9\"}").contains("zz9"));
    }

    #[test]
    fn scrubs_query_strings() {
        assert_eq!(
            scrub("POST https://auth.example.com/token?grant_type=refresh_token failed"),
            "POST https://auth.example.com/token?[redacted] failed"
        );
        assert_eq!(
            scrub(r#"{"url":"http://x/logout?scope=global"}"#),
            r#"{"url":"http://x/logout?[redacted]"}"#
        );
        // A question in prose is left alone.
        assert_eq!(scrub("is it up? yes"), "is it up? yes");
    }

    #[test]
    fn scrubs_refresh_tokens() {
        let out =
            scrub(r#"{"refresh_token":"v1abc","access_token":"short","token_type":"bearer"}"#);
        assert!(!out.contains("v1abc"), "{out}");
        assert!(!out.contains("short"), "{out}");
        assert!(out.contains(r#""token_type":"bearer""#), "{out}");
        let out = scrub("refresh_token=Zx8_kq-Lm2NpQrStUv refreshToken: 'abcdEFGH12345678'");
        assert!(!out.contains("Zx8_kq"), "{out}");
        assert!(!out.contains("abcdEFGH"), "{out}");
        // A standalone opaque run of 32+ characters.
        let raw = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8";
        assert_eq!(scrub(&format!("got {raw}")), "got [redacted]");
        // Ordinary words and short ids survive.
        assert_eq!(
            scrub("connection ca_123 is ACTIVE"),
            "connection ca_123 is ACTIVE"
        );
    }

    #[test]
    fn scrub_is_idempotent() {
        for text in [
            format!("Bearer {JWT} at https://x/y?refresh_token=abc"),
            r#"{"refresh_token":"v1abc"}"#.to_string(),
            "authorization: Basic abc".to_string(),
        ] {
            let once = scrub(&text);
            assert_eq!(scrub(&once), once);
        }
    }

    #[test]
    fn dedupe_lets_a_fingerprint_through_once_per_window() {
        let dedupe = Dedupe::new(DEDUPE_WINDOW);
        let t0 = Instant::now();
        assert!(dedupe.first_in_window("backend:502:status", t0));
        assert!(!dedupe.first_in_window("backend:502:status", t0 + Duration::from_secs(5)));
        assert!(dedupe.first_in_window("storage", t0 + Duration::from_secs(5)));
        assert!(!dedupe.first_in_window(
            "backend:502:status",
            t0 + DEDUPE_WINDOW - Duration::from_millis(1)
        ));
        assert!(dedupe.first_in_window("backend:502:status", t0 + DEDUPE_WINDOW));
        assert!(!dedupe.first_in_window(
            "backend:502:status",
            t0 + DEDUPE_WINDOW + Duration::from_secs(1)
        ));
    }

    /// A transport that keeps the envelopes in memory.
    #[derive(Default)]
    struct Capture(Mutex<Vec<sentry::Envelope>>);

    impl sentry::Transport for Capture {
        fn send_envelope(&self, envelope: sentry::Envelope) {
            self.0.lock().unwrap().push(envelope);
        }
    }

    fn with_capture(f: impl FnOnce()) -> Vec<String> {
        let capture = Arc::new(Capture::default());
        let config = <Config as clap::Parser>::parse_from(["core-sidecar"]);
        let mut options = client_options(&config);
        options.dsn = Some("http://public@127.0.0.1:9/1".parse().unwrap());
        let transport = capture.clone();
        options.transport = Some(Arc::new(move |_: &sentry::ClientOptions| {
            transport.clone() as Arc<dyn sentry::Transport>
        }));
        let client = Arc::new(sentry::Client::from(options));
        let hub = Arc::new(sentry::Hub::new(
            Some(client.clone()),
            Arc::new(Default::default()),
        ));
        sentry::Hub::run(hub, f);
        client.flush(Some(Duration::from_secs(1)));
        let envelopes = std::mem::take(&mut *capture.0.lock().unwrap());
        envelopes
            .into_iter()
            .map(|e| {
                let mut body = Vec::new();
                e.to_writer(&mut body).unwrap();
                String::from_utf8(body).unwrap()
            })
            .collect()
    }

    #[test]
    fn report_scrubs_and_dedupes() {
        let error = Error::Backend {
            status: Some(503),
            message: format!("upstream said Bearer {JWT} at https://api/x?refresh_token=r1"),
            malformed: true,
        };
        let sent = with_capture(|| {
            report(&error);
            report(&error);
        });
        assert_eq!(sent.len(), 1, "{sent:?}");
        let body = &sent[0];
        assert!(!body.contains(JWT), "{body}");
        assert!(!body.contains("eyJ"), "{body}");
        assert!(!body.contains("r1"), "{body}");
        assert!(body.contains("[redacted]"), "{body}");
        assert!(body.contains("backend:503:malformed"), "{body}");
        assert!(body.contains(r#""kind":"backend""#), "{body}");
    }

    #[test]
    fn before_send_scrubs_every_field_and_keeps_the_rest() {
        let mut event = Event {
            message: Some(format!("failed with {JWT}")),
            ..Default::default()
        };
        event
            .tags
            .insert("url".into(), "https://x/cb?code=abc".into());
        event.extra.insert(
            "body".into(),
            serde_json::json!({"refresh_token": "rt-123"}),
        );
        event.exception = vec![sentry::protocol::Exception {
            ty: "panic".into(),
            value: Some(format!("Authorization: Bearer {JWT}")),
            ..Default::default()
        }]
        .into();
        event.request = Some(sentry::protocol::Request {
            url: Some(
                "https://api.example.com/me?access_token=abc"
                    .parse()
                    .unwrap(),
            ),
            headers: [("Authorization".to_string(), format!("Bearer {JWT}"))]
                .into_iter()
                .collect(),
            ..Default::default()
        });
        let id = event.event_id;
        let clean = scrub_event(event).expect("round trip");
        assert_eq!(clean.event_id, id);
        let text = serde_json::to_string(&clean).unwrap();
        assert!(!text.contains("eyJ"), "{text}");
        assert!(!text.contains("rt-123"), "{text}");
        assert!(!text.contains("code=abc"), "{text}");
        assert!(!text.contains("access_token=abc"), "{text}");
        assert_eq!(clean.exception[0].ty, "panic");
    }

    #[test]
    fn breadcrumbs_are_scrubbed() {
        let crumb = Breadcrumb {
            message: Some(format!("GET https://x/y?token=t with Bearer {JWT}")),
            ..Default::default()
        };
        let clean = scrub_breadcrumb(crumb).unwrap();
        let message = clean.message.unwrap();
        assert!(
            !message.contains("eyJ") && !message.contains("token=t"),
            "{message}"
        );
    }
}
