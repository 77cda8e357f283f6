//! Redaction of secrets in text and JSON: the one scrubber behind every log line, Sentry
//! event and error message that leaves the process.
//!
//! Two layers:
//! - [`scrub`] redacts by **shape**: JWTs, `Bearer ...`, Authorization header values, values of
//!   `*token` / `apikey` / `password` keys, URL query strings, and any base64url run of 32
//!   characters or more that mixes letters and digits.
//! - [`Scrubber`] adds redaction by **value**: shapes cannot recognise every opaque token a
//!   server echoes back in an error body, but the tokens this process holds are known. The
//!   session layer tells its `Scrubber` about every token it stores, and makes it forget
//!   them when the session ends or is replaced; telemetry and the wire boundary scrub with
//!   it. Known values are zeroed when forgotten.
//!
//! Prose is not a secret: `Invalid Refresh Token: Already Used` (GoTrue's message) keeps its
//! words. A `key: Value` whose value is one capitalised word is taken for prose; quoted
//! values and `key=value` are always redacted.
//!
//! A leaf module: it imports nothing of the crate, so anything may use it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// What every secret is replaced with.
pub const REDACTED: &str = "[redacted]";

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
        // Unquoted values come last, in `UNQUOTED_VALUE`: they need a look at the value.
    ]
});

/// Unquoted values of token-ish keys: `refresh_token=abc`, `token: abc123`. Applied after
/// [`RULES`], except to prose (see [`is_prose`]).
static UNQUOTED_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    let pattern = r#"(?i)\b(KEY["']?\s*[:=]\s*)([^\s"'&,;}\]\[]+)"#.replace("KEY", SECRET_KEY);
    Regex::new(&pattern).expect("scrub pattern")
});

/// Whether a `key: value` match is a sentence rather than a secret: a colon, not `=`, and
/// a value that is one capitalised word (`Token: Already Used`, `Token: Session Expired`).
/// Machine tokens are random and almost never a capital followed by lowercase letters only;
/// the tokens this process holds are redacted by value anyway.
fn is_prose(key_and_separator: &str, value: &str) -> bool {
    let mut letters = value.chars();
    key_and_separator.contains(':')
        && !key_and_separator.contains('=')
        && value.len() >= 2
        && letters.next().is_some_and(|c| c.is_ascii_uppercase())
        && letters.all(|c| c.is_ascii_lowercase())
}

/// Names of keys whose values are secrets (matched case-insensitively, whole word).
const SECRET_KEY: &str =
    r"(?:[a-z_]*token|apikey|api_key|api-key|password|secret|client_secret|code_verifier)";

/// Candidates for the last rule: long base64url runs. Only those mixing letters and digits
/// are redacted, so long identifiers (`handle_request_with_a_long_name`) survive.
static OPAQUE_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_-]{32,}").expect("scrub pattern"));

/// Replaces anything token-shaped in `text` with `[redacted]` (see the module docs). Use a
/// [`Scrubber`] where the tokens the process holds are known.
pub fn scrub(text: &str) -> String {
    scrub_shapes(Cow::Borrowed(text)).into_owned()
}

fn scrub_shapes(text: Cow<'_, str>) -> Cow<'_, str> {
    let mut out = text;
    for (regex, replacement) in RULES.iter() {
        if let Cow::Owned(replaced) = regex.replace_all(&out, *replacement) {
            out = Cow::Owned(replaced);
        }
    }
    let replaced = UNQUOTED_VALUE.replace_all(&out, |caps: &regex::Captures<'_>| {
        if is_prose(&caps[1], &caps[2]) {
            caps[0].to_string()
        } else {
            format!("{}{REDACTED}", &caps[1])
        }
    });
    if let Cow::Owned(replaced) = replaced {
        out = Cow::Owned(replaced);
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
    match replaced {
        Cow::Owned(replaced) => Cow::Owned(replaced),
        Cow::Borrowed(_) => out,
    }
}

/// How many values a [`Scrubber`] keeps at most (the oldest goes first). The session layer
/// forgets the tokens of sessions that ended, so this bound is only a backstop.
const KNOWN_SECRETS_KEPT: usize = 32;

/// Shorter values are not redacted by value: they would mangle ordinary words.
const KNOWN_SECRET_MIN_LEN: usize = 8;

/// A value redacted by value, zeroed when dropped.
struct Known {
    value: Zeroizing<String>,
    /// When it is to be forgotten ([`Scrubber::retire`]); `None` while it is in use.
    until: Option<Instant>,
}

impl Known {
    fn expired(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until <= now)
    }
}

/// Redacts by shape and by value. Cheap to clone: clones share the known values, so the
/// session layer's clone teaches the log writer's and Sentry's.
#[derive(Clone, Default)]
pub struct Scrubber {
    known: Arc<RwLock<VecDeque<Known>>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").finish_non_exhaustive()
    }
}

impl Scrubber {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, VecDeque<Known>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, VecDeque<Known>> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Redacts this exact value from now on, until it is forgotten (at most the
    /// [`KNOWN_SECRETS_KEPT`] most recent values are kept). Remembering a retired value
    /// keeps it again for good.
    pub fn remember(&self, secret: &str) {
        if secret.len() < KNOWN_SECRET_MIN_LEN {
            return;
        }
        let mut known = self.write();
        if let Some(entry) = known.iter_mut().find(|k| k.value.as_str() == secret) {
            entry.until = None;
            return;
        }
        if known.len() >= KNOWN_SECRETS_KEPT {
            known.pop_front(); // zeroed as it drops
        }
        known.push_back(Known {
            value: Zeroizing::new(secret.to_string()),
            until: None,
        });
    }

    /// Stops redacting this value and zeroes the scrubber's copy of it.
    pub fn forget(&self, secret: &str) {
        self.write().retain(|k| k.value.as_str() != secret);
    }

    /// Keeps redacting this value for `grace` more, then forgets it (at the first
    /// [`Scrubber::sweep`] or scrub after that). For the token of a session just replaced:
    /// a call still in flight with it may echo it.
    pub fn retire(&self, secret: &str, grace: Duration) {
        let until = Instant::now() + grace;
        let mut known = self.write();
        if let Some(entry) = known.iter_mut().find(|k| k.value.as_str() == secret) {
            entry.until = Some(entry.until.map_or(until, |before| before.min(until)));
        }
    }

    /// Forgets every retired value now, whatever its grace (a session ended: nothing of the
    /// sessions before it is kept).
    pub fn forget_retired(&self) {
        self.write().retain(|k| k.until.is_none());
    }

    /// Forgets the retired values whose grace is over.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.write().retain(|k| !k.expired(now));
    }

    /// How many values are redacted by value now (retired ones included).
    pub fn known_count(&self) -> usize {
        self.read().len()
    }

    /// [`scrub`], after replacing every known value.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = Cow::Borrowed(text);
        let mut expired = false;
        {
            let known = self.read();
            let now = known.iter().any(|k| k.until.is_some()).then(Instant::now);
            for entry in known.iter() {
                expired |= now.is_some_and(|now| entry.expired(now));
                let secret = entry.value.as_str();
                if out.contains(secret) {
                    let replaced = Cow::Owned(out.replace(secret, REDACTED));
                    // The text before this replacement may hold the next known value too.
                    if let Cow::Owned(mut before) = std::mem::replace(&mut out, replaced) {
                        before.zeroize();
                    }
                }
            }
        }
        if expired {
            self.sweep();
        }
        scrub_shapes(out).into_owned()
    }

    /// Scrubs every string of a JSON value, keys included; values of secret-named keys are
    /// replaced whole.
    pub fn scrub_json(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                let clean = self.scrub(text);
                if clean != *text {
                    *text = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.scrub_json(item)),
            Value::Object(map) => {
                // Keys can carry data too (tags, extra, headers): rebuild the map.
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    if is_secret_key(&key) && item.is_string() {
                        item = Value::String(REDACTED.into());
                    } else if !STRUCTURAL_KEYS.contains(&key.as_str()) {
                        self.scrub_json(&mut item);
                    }
                    map.insert(self.scrub(&key), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
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
    fn a_scrubber_redacts_the_values_it_was_told_and_no_others() {
        let scrubber = Scrubber::new();
        scrubber.remember("opaque-value-with-no-shape");
        assert_eq!(
            scrubber.scrub("echoed: opaque-value-with-no-shape."),
            "echoed: [redacted]."
        );
        // Another scrubber (another test, another process) knows nothing of it.
        assert_eq!(
            Scrubber::new().scrub("echoed: opaque-value-with-no-shape."),
            "echoed: opaque-value-with-no-shape."
        );
        // Short values would mangle words: not remembered.
        scrubber.remember("abc");
        assert_eq!(scrubber.scrub("abc"), "abc");
    }

    #[test]
    fn prose_survives_and_key_values_do_not() {
        for prose in [
            "Invalid Refresh Token: Already Used",
            "the auth server rejected the refresh token: Invalid Refresh Token: Refresh Token Not Found",
            "Invalid Refresh Token: Session Expired (Revoked by Newer Login)",
        ] {
            assert_eq!(scrub(prose), prose);
        }
        for (secret, text) in [
            ("abc123", "refresh_token: abc123"),
            ("abc123", "refresh_token:abc123"),
            ("x-y", r#"{"refresh_token":"x-y"}"#),
            ("abc", "token=abc"),
            ("Abc", "token=Abc"),
            ("Abc", "token: 'Abc'"),
            ("abcdef", "X-Refresh-Token: abcdef"),
            ("Zx8", "password: Zx8 rest"),
            ("ALLCAPS", "token: ALLCAPS"),
            ("lower", "token: lower"),
        ] {
            let out = scrub(text);
            assert!(!out.contains(secret), "{text} -> {out}");
            assert!(out.contains(REDACTED), "{text} -> {out}");
            assert_eq!(scrub(&out), out, "idempotent");
        }
    }

    #[test]
    fn forgotten_values_are_no_longer_known() {
        let scrubber = Scrubber::new();
        scrubber.remember("access-token-of-session-1");
        scrubber.remember("refresh-token-of-session-1");
        scrubber.forget("access-token-of-session-1");
        assert_eq!(
            scrubber.scrub("access-token-of-session-1"),
            "access-token-of-session-1"
        );
        assert_eq!(scrubber.scrub("refresh-token-of-session-1"), REDACTED);
        assert_eq!(scrubber.known_count(), 1);
        // Forgetting an unknown value is nothing.
        scrubber.forget("never-known-value");
        assert_eq!(scrubber.known_count(), 1);
    }

    #[test]
    fn retired_values_are_redacted_for_their_grace_then_forgotten() {
        let scrubber = Scrubber::new();
        scrubber.remember("retired-with-a-long-grace");
        scrubber.remember("retired-with-no-grace-left");
        scrubber.retire("retired-with-a-long-grace", Duration::from_secs(3600));
        scrubber.retire("retired-with-no-grace-left", Duration::ZERO);
        assert_eq!(scrubber.scrub("retired-with-a-long-grace"), REDACTED);
        // A scrub that meets an expired value sweeps it.
        assert_eq!(scrubber.known_count(), 1);
        assert_eq!(
            scrubber.scrub("retired-with-no-grace-left"),
            "retired-with-no-grace-left"
        );
        // Remembered again (the same token stored again): kept for good.
        scrubber.retire("retired-with-a-long-grace", Duration::ZERO);
        scrubber.remember("retired-with-a-long-grace");
        scrubber.sweep();
        assert_eq!(scrubber.scrub("retired-with-a-long-grace"), REDACTED);
        // A session ending takes every retired value with it.
        scrubber.remember("current-session-token");
        scrubber.retire("retired-with-a-long-grace", Duration::from_secs(3600));
        scrubber.forget_retired();
        assert_eq!(scrubber.known_count(), 1);
        assert_eq!(scrubber.scrub("current-session-token"), REDACTED);
    }

    #[test]
    fn text_holding_several_known_values_loses_them_all() {
        let scrubber = Scrubber::new();
        scrubber.remember("first-known-value");
        scrubber.remember("second-known-value");
        assert_eq!(
            scrubber.scrub("first-known-value and second-known-value"),
            "[redacted] and [redacted]"
        );
    }

    #[test]
    fn a_scrubber_keeps_only_the_most_recent_values() {
        let scrubber = Scrubber::new();
        for i in 0..=KNOWN_SECRETS_KEPT {
            scrubber.remember(&format!("secret-value-{i:04}"));
        }
        assert_eq!(scrubber.scrub("secret-value-0000"), "secret-value-0000");
        assert_eq!(scrubber.scrub("secret-value-0001"), REDACTED);
    }

    #[test]
    fn json_keys_and_values_are_scrubbed() {
        let scrubber = Scrubber::new();
        scrubber.remember("known-opaque-thing");
        let mut value = serde_json::json!({
            "refresh_token": "rt-123",
            "note": "said known-opaque-thing",
            "known-opaque-thing": 1,
            "event_id": "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4",
        });
        scrubber.scrub_json(&mut value);
        let text = value.to_string();
        assert!(
            !text.contains("rt-123") && !text.contains("known-opaque"),
            "{text}"
        );
        assert_eq!(value["event_id"], "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4");
    }
}
