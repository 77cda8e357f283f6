//! Tracing to stderr and Sentry, both scrubbed; what reaches Sentry, decided in one place.
//!
//! - Logs go to **stderr only** (stdout is the wire), through a writer that runs the
//!   [`Scrubber`] over every formatted line, so a token that slips into a log field is still
//!   redacted.
//! - Sentry is on only with a DSN. Every event passes `before_send`, which serializes it to
//!   JSON, scrubs every string in it and deserializes it back: no field can be forgotten.
//!   Breadcrumbs get the same treatment in `before_breadcrumb`.
//! - [`Telemetry::report`] is the one reporting policy, used by the JSON-RPC boundary and by
//!   background work alike (auto-refresh, keyring at start, keyring deletes): only real faults
//!   ([`is_reportable`]) are sent, each [`fingerprint`] at most once per [`DEDUPE_WINDOW`], so
//!   a shell that polls every 5 s cannot flood Sentry. Fingerprints never carry message text.
//! - Panics: [`init`] installs a panic hook that logs the scrubbed message (instead of the
//!   default hook, which would print it unscrubbed) and sends one Sentry event per panic
//!   location per window. The transport turns the panic into `-32603`; it must not report
//!   the panic a second time.
//!
//! The dedupe map and the known secrets are values owned by a [`Telemetry`] handle, not
//! process globals: every test builds its own.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use sentry::protocol::{Breadcrumb, Event, Level};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{BaseUrl, Config, LogFormat};
use crate::error::Error;
use crate::scrub::Scrubber;

/// The same fingerprint reaches Sentry at most once per this window.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What the rest of the process reports through: the scrubber that knows the session's
/// tokens, and the dedupe of Sentry events. Cheap to clone; clones share both.
#[derive(Clone, Debug)]
pub struct Telemetry {
    scrubber: Scrubber,
    dedupe: Arc<Dedupe>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A fresh handle: nothing known, nothing reported yet. Events go to the Sentry client of
    /// the current hub, if any ([`init`] binds one when a DSN is set).
    pub fn new() -> Self {
        Self {
            scrubber: Scrubber::new(),
            dedupe: Arc::new(Dedupe::new(DEDUPE_WINDOW)),
        }
    }

    /// The scrubber every log line, Sentry event and wire error passes through.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }

    /// Sends `error` to Sentry when it is a real fault ([`is_reportable`]), scrubbed, at most
    /// once per fingerprint per [`DEDUPE_WINDOW`], and logs it. Anything else is ignored here:
    /// callers report every error they end with and let this decide.
    pub fn report(&self, error: &Error) {
        self.report_in(None, error);
    }

    /// [`Telemetry::report`] for an error that ends the JSON-RPC call `method`: the event is
    /// also tagged with the method and, when the error is an upstream's answer, with the
    /// upstream and the HTTP status (see [`in_call`]).
    pub fn report_call(&self, method: &str, error: &Error) {
        self.report_in(Some(method), error);
    }

    fn report_in(&self, method: Option<&str>, error: &Error) {
        if !is_reportable(error) {
            return;
        }
        let fingerprint = fingerprint(error);
        let message = self.scrubber.scrub(&error.to_string());
        let kind = error.kind().as_str();
        if !self.dedupe.first_in_window(&fingerprint, Instant::now()) {
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
        if let Some(method) = method {
            event.tags.insert("method".into(), method.into());
        }
        let (upstream, status) = upstream_of(error);
        if let Some(upstream) = upstream {
            event.tags.insert("upstream".into(), upstream.into());
        }
        if let Some(status) = status {
            event.tags.insert("status".into(), status.to_string());
        }
        sentry::capture_event(event);
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON-RPC call being handled

/// What the logs and Sentry know of the JSON-RPC call a future works for: its method, and
/// the last upstream that answered it (or failed to).
#[derive(Debug)]
struct Call {
    method: &'static str,
    upstream: Cell<Option<(&'static str, Option<u16>)>>,
}

tokio::task_local! {
    static CALL: Call;
}

/// Runs `future` as the handling of the JSON-RPC call `method`: upstream requests it makes
/// log the method ([`current_method`]) and record which upstream answered
/// ([`note_upstream`]), for the Sentry tags of [`Telemetry::report_call`]. Work the call
/// hands to a spawned task (a shared refresh) is outside the call.
pub async fn in_call<F: Future>(method: &'static str, future: F) -> F::Output {
    let call = Call {
        method,
        upstream: Cell::new(None),
    };
    CALL.scope(call, future).await
}

/// The JSON-RPC method of the call being handled, if any.
pub fn current_method() -> Option<&'static str> {
    CALL.try_with(|call| call.method).ok()
}

/// Records that `upstream` answered with `status` (`None`: no answer) for the call being
/// handled, if any.
pub fn note_upstream(upstream: &'static str, status: Option<u16>) {
    let _ = CALL.try_with(|call| call.upstream.set(Some((upstream, status))));
}

/// The upstream and status an error came from: its own status when it has one, and the
/// call's last upstream when that upstream answered with this status.
fn upstream_of(error: &Error) -> (Option<&'static str>, Option<u16>) {
    let status = match error {
        Error::Backend { status, .. } => *status,
        _ => None,
    };
    let noted = CALL.try_with(|call| call.upstream.get()).ok().flatten();
    let upstream = match (noted, status) {
        (Some((upstream, Some(answered))), Some(status)) if answered == status => Some(upstream),
        (Some((upstream, None)), None) if error.kind() == crate::error::ErrorKind::Unavailable => {
            Some(upstream)
        }
        _ => None,
    };
    (upstream, status)
}

/// Whether an error is a real fault worth a Sentry event. Session expiry, rate limits,
/// offline machines and bad input are expected in the life of a desktop app: reporting them
/// would flood Sentry from every shell that polls.
pub fn is_reportable(error: &Error) -> bool {
    match error {
        Error::Backend {
            status, malformed, ..
        } => *malformed || status.is_some_and(|s| s >= 500),
        Error::Storage(_) | Error::Internal(_) => true,
        Error::AuthExpired { .. }
        | Error::AuthFailed { .. }
        | Error::RateLimited { .. }
        | Error::Unavailable(_)
        | Error::InvalidParams { .. }
        | Error::Cancelled => false,
    }
}

/// A stable grouping key for Sentry and its dedupe: the kind and status, never the message,
/// which varies per call (a task id, a path, a body).
pub fn fingerprint(error: &Error) -> String {
    match error {
        Error::Backend {
            status, malformed, ..
        } => format!(
            "backend:{}:{}",
            status.map_or_else(|| "none".to_string(), |s| s.to_string()),
            if *malformed { "malformed" } else { "status" }
        ),
        other => other.kind().as_str().to_string(),
    }
}

/// Keeps Sentry alive; flush it on the way out. Dropping it closes the Sentry client
/// (draining queued events for up to its shutdown timeout).
#[must_use = "dropping the guard shuts Sentry down"]
pub struct TelemetryGuard {
    client: Option<Arc<sentry::Client>>,
    telemetry: Telemetry,
}

impl TelemetryGuard {
    /// The handle the app reports through.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

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
/// Calling it again leaves the first subscriber and panic hook in place (useful in tests).
pub fn init(config: &Config) -> TelemetryGuard {
    let telemetry = Telemetry::new();
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|err| {
        // The subscriber is not up yet: remember the problem and log it once it is.
        BAD_FILTER.get_or_init(|| err.to_string());
        EnvFilter::new("info")
    });
    let writer = ScrubbingStderr {
        scrubber: telemetry.scrubber.clone(),
        json: config.log_format == LogFormat::Json,
    };
    let _ = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
    };
    if let Some(err) = BAD_FILTER.get() {
        tracing::warn!("invalid RUST_LOG filter ({err}); using `info`");
    }

    install_panic_hook(&telemetry);

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
        let mut options = client_options(config, &telemetry.scrubber);
        options.dsn = Some(dsn);
        let client = Arc::new(sentry::Client::from(sentry::apply_defaults(options)));
        // The process-wide hub, so every thread (runtime workers included) sees it.
        sentry::Hub::main().bind_client(Some(client.clone()));
        tracing::info!("Sentry on");
        client
    });
    TelemetryGuard { client, telemetry }
}

static BAD_FILTER: OnceLock<String> = OnceLock::new();

/// The start-up line (info): what this process is and what it was configured to talk to.
/// Hosts only: never a path, a key or a DSN. `protocol` is the contract's version.
pub fn log_start(config: &Config, protocol: u32, sentry: bool) {
    let host = |url: Option<&BaseUrl>| {
        url.map(|url| {
            let url = url.as_url();
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            }
        })
    };
    let keyring = clap::ValueEnum::to_possible_value(&config.keyring)
        .map_or_else(String::new, |value| value.get_name().to_string());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        protocol,
        keyring,
        backend = config.backend_url.is_some(),
        backend_host = host(config.backend_url.as_ref()),
        auth = config.auth_url.is_some(),
        auth_host = host(config.auth_url.as_ref()),
        auth_api_key = config.auth_api_key.is_some(),
        sentry,
        "core-sidecar starting"
    );
}

/// The Sentry options, without DSN or transport. No default integrations: the panic one is
/// replaced by our hook (scrubbed log, dedupe), the contexts one (OS, runtime) is added
/// explicitly. No stack traces: the shipped binary is stripped, so its frames would be bare
/// addresses; a panic's event names its location instead (see [`install_panic_hook`]).
fn client_options(config: &Config, scrubber: &Scrubber) -> sentry::ClientOptions {
    use sentry::integrations::contexts;
    let release = config
        .sentry_release
        .clone()
        .unwrap_or_else(|| format!("core-sidecar@{}", env!("CARGO_PKG_VERSION")));
    let for_events = scrubber.clone();
    let for_crumbs = scrubber.clone();
    sentry::ClientOptions {
        release: Some(release.into()),
        environment: config.sentry_environment.clone().map(Into::into),
        send_default_pii: false,
        default_integrations: false,
        integrations: vec![Arc::new(contexts::ContextIntegration::default())],
        before_send: Some(Arc::new(move |event| scrub_event(&for_events, event))),
        before_breadcrumb: Some(Arc::new(move |crumb| scrub_breadcrumb(&for_crumbs, crumb))),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Dedupe

/// Remembers when each key was last let through. The clock is passed in, so tests can
/// prove the window without sleeping.
#[derive(Debug)]
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

/// The hook is process-wide: the first handle installed with it is the one it uses.
fn install_panic_hook(telemetry: &Telemetry) {
    static ONCE: Once = Once::new();
    let telemetry = telemetry.clone();
    ONCE.call_once(move || {
        std::panic::set_hook(Box::new(move |info| {
            let message = telemetry.scrubber.scrub(panic_message(info.payload()));
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
            if !telemetry
                .dedupe
                .first_in_window(&format!("panic:{location}"), Instant::now())
            {
                return;
            }
            let mut event = Event {
                level: Level::Fatal,
                exception: vec![sentry::protocol::Exception {
                    ty: "panic".into(),
                    value: Some(message),
                    mechanism: Some(sentry::protocol::Mechanism {
                        ty: "panic".into(),
                        handled: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
                .into(),
                fingerprint: vec!["panic".into(), location.clone().into()].into(),
                ..Default::default()
            };
            event.tags.insert("kind".into(), "internal".into());
            event.tags.insert("location".into(), location);
            if let Some(method) = current_method() {
                event.tags.insert("method".into(), method.into());
            }
            // Scrubbed again by before_send; the message above is only for the log.
            hub.capture_event(event);
        }));
    });
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "Box<dyn Any>"
    }
}

// ---------------------------------------------------------------------------------------------
// Scrubbing of what leaves through Sentry and stderr

/// Scrubs every string of a serializable value by a JSON round trip. `None` when the
/// round trip fails: better to drop an event than to send it unscrubbed.
fn scrub_serde<T: serde::Serialize + serde::de::DeserializeOwned>(
    scrubber: &Scrubber,
    item: &T,
) -> Option<T> {
    let mut value = serde_json::to_value(item).ok()?;
    scrubber.scrub_json(&mut value);
    serde_json::from_value(value).ok()
}

fn scrub_event(scrubber: &Scrubber, event: Event<'static>) -> Option<Event<'static>> {
    let scrubbed = scrub_serde(scrubber, &event);
    if scrubbed.is_none() {
        tracing::warn!("a Sentry event could not be scrubbed and was dropped");
    }
    scrubbed
}

fn scrub_breadcrumb(scrubber: &Scrubber, crumb: Breadcrumb) -> Option<Breadcrumb> {
    scrub_serde(scrubber, &crumb)
}

/// stderr, with every formatted log line scrubbed before it is written.
struct ScrubbingStderr {
    scrubber: Scrubber,
    /// Lines are JSON objects: scrubbed value by value, so they stay JSON.
    json: bool,
}

impl<'a> MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter {
            scrubber: &self.scrubber,
            json: self.json,
        }
    }
}

struct ScrubbingWriter<'a> {
    scrubber: &'a Scrubber,
    json: bool,
}

impl Write for ScrubbingWriter<'_> {
    /// The fmt layer formats a whole event into one buffer and writes it at once, so the
    /// buffer is a complete line and can be scrubbed as text.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let line = if self.json {
            scrub_json_line(self.scrubber, &text)
        } else {
            self.scrubber.scrub(&text)
        };
        std::io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A JSON log line, scrubbed string by string (scrubbing the text could cut a JSON escape in
/// two). A line that is not JSON (none is) is scrubbed as text and wrapped in an object.
fn scrub_json_line(scrubber: &Scrubber, line: &str) -> String {
    let mut value = serde_json::from_str::<serde_json::Value>(line.trim_end())
        .unwrap_or_else(|_| serde_json::json!({ "message": line.trim_end() }));
    scrubber.scrub_json(&mut value);
    let mut line = value.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";

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

    fn with_capture(telemetry: &Telemetry, f: impl FnOnce()) -> Vec<String> {
        let capture = Arc::new(Capture::default());
        let config = <Config as clap::Parser>::parse_from(["core-sidecar"]);
        let mut options = client_options(&config, &telemetry.scrubber);
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
        let error = Error::malformed_answer(
            Some(503),
            format!("upstream said Bearer {JWT} at https://api/x?refresh_token=r1"),
        );
        let telemetry = Telemetry::new();
        let sent = with_capture(&telemetry, || {
            telemetry.report(&error);
            telemetry.report(&error);
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
    fn a_call_tags_its_method_and_the_upstream_that_answered() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let telemetry = Telemetry::new();
        let sent = with_capture(&telemetry, || {
            runtime.block_on(in_call("user_get_profile", async {
                assert_eq!(current_method(), Some("user_get_profile"));
                note_upstream("auth server", Some(502));
                telemetry.report_call("user_get_profile", &Error::backend_status(502, "a"));
                // Another status than the upstream's last answer: not that upstream's.
                note_upstream("backend", Some(401));
                telemetry.report_call("user_get_profile", &Error::backend_status(500, "b"));
            }));
            assert_eq!(current_method(), None);
            telemetry.report(&Error::Storage("locked".into()));
        });
        assert_eq!(sent.len(), 3, "{sent:?}");
        let tags = |body: &str| -> serde_json::Value {
            body.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v.get("tags").cloned())
                .unwrap_or_default()
        };
        let first = tags(&sent[0]);
        assert_eq!(first["method"], "user_get_profile", "{first}");
        assert_eq!(first["upstream"], "auth server", "{first}");
        assert_eq!(first["status"], "502", "{first}");
        let second = tags(&sent[1]);
        assert_eq!(second["status"], "500", "{second}");
        assert!(second.get("upstream").is_none(), "{second}");
        let third = tags(&sent[2]);
        assert_eq!(third["kind"], "storage", "{third}");
        assert!(third.get("method").is_none(), "{third}");
    }

    #[test]
    fn json_log_lines_stay_json_when_scrubbed() {
        let scrubber = Scrubber::new();
        let line = serde_json::json!({
            "fields": {"message": format!("authorization: abc\"quoted\" Bearer {JWT}"),
                       "refresh_token": "r1"},
            "level": "INFO",
        })
        .to_string();
        let out = scrub_json_line(&scrubber, &format!("{line}\n"));
        assert!(out.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(out.trim_end()).expect("JSON");
        assert!(!out.contains("eyJ") && !out.contains("r1"), "{out}");
        assert_eq!(value["level"], "INFO");
        let text = scrub_json_line(&scrubber, "not json\n");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim_end()).is_ok());
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
        let clean = scrub_event(&Scrubber::new(), event).expect("round trip");
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
        let clean = scrub_breadcrumb(&Scrubber::new(), crumb).unwrap();
        let message = clean.message.unwrap();
        assert!(
            !message.contains("eyJ") && !message.contains("token=t"),
            "{message}"
        );
    }

    #[test]
    fn internal_errors_share_one_fingerprint_whatever_their_message() {
        let a = Error::Internal("the refresh task failed: task 17 panicked".into());
        let b = Error::Internal("the refresh task failed: task 18 panicked".into());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), "internal");
        let telemetry = Telemetry::new();
        let sent = with_capture(&telemetry, || {
            telemetry.report(&a);
            telemetry.report(&b);
        });
        assert_eq!(sent.len(), 1, "{sent:?}");
    }

    #[test]
    fn only_real_faults_are_reported() {
        let telemetry = Telemetry::new();
        let sent = with_capture(&telemetry, || {
            telemetry.report(&Error::no_session());
            telemetry.report(&Error::Unavailable("offline".into()));
            telemetry.report(&Error::backend_status(404, "not found"));
            telemetry.report(&Error::invalid_params("a", "b"));
        });
        assert!(sent.is_empty(), "{sent:?}");
        assert!(is_reportable(&Error::backend_status(502, "bad gateway")));
        assert!(is_reportable(&Error::Storage("locked".into())));
    }

    #[test]
    fn each_handle_has_its_own_dedupe_and_known_secrets() {
        let one = Telemetry::new();
        let two = Telemetry::new();
        one.scrubber().remember("value-known-to-one");
        assert_eq!(one.scrubber().scrub("value-known-to-one"), "[redacted]");
        assert_eq!(
            two.scrubber().scrub("value-known-to-one"),
            "value-known-to-one"
        );
        let error = Error::Storage("locked".into());
        assert_eq!(with_capture(&one, || one.report(&error)).len(), 1);
        assert_eq!(with_capture(&two, || two.report(&error)).len(), 1);
        assert_eq!(with_capture(&one, || one.report(&error)).len(), 0);
    }
}
