//! The differential suite: the real binary and the real `@supabase/auth-js` (the reference
//! GoTrue client, pinned in tests/differential/package-lock.json) run the same scenarios
//! side by side, each against its own instance of the same fake GoTrue
//! ([`crate::gotrue::FakeGoTrue`]: rotating single-use refresh tokens, family revocation on
//! reuse, GoTrue's error shapes, expiring access tokens, scripted failures).
//!
//! A scenario is a stored session (its access token's expiry, stale or not), a script for
//! the fake, and one action, done once or N times at once:
//!
//! | action | sidecar | auth-js |
//! |---|---|---|
//! | `Refresh` | `auth_refresh_session` | `refreshSession()` |
//! | `GetUser` | `auth_get_user` | `getUser()` |
//! | `SignOut(scope)` | `auth_sign_out {scope}` | `signOut({scope})` |
//! | `Call` | `user_get_profile` (through the session gate) | an app on auth-js: `getSession()`, `GET /auth/me`, on a 401 one `refreshSession()` and one retry |
//!
//! Each side's outcome is normalized ([`Outcome`]): the results (`ok`, `auth`: sign in
//! again, `transient`: retry later, `failed`: other), the session held after (`none`, or the
//! label of its access token: `A0` stored, `A1` after one refresh, ...), the events
//! (`SIGNED_OUT`, `TOKEN_REFRESHED`; not `USER_UPDATED`, which auth-js has no counterpart
//! for in `getUser`), every request the fake saw with the label of its token, and the
//! sessions revoked at the fake. Every scenario pins the sidecar's outcome; auth-js's must
//! be the same, or the scenario names a row of [`DIFFERENCES`], where auth-js's outcome is
//! pinned too and the reason is given. Those rows are mirrored in docs/protocol.md,
//! "Differences from @supabase/auth-js" (checked below).
//!
//! Transient scenarios run the real retry schedule (200 ms × 2^n within 30 s on both sides:
//! 8 attempts, about 25 s): the sidecar has no setting to shorten it. They are few and
//! start first; everything runs concurrently, so the suite takes about as long as one of
//! them. Node and `npm ci` in tests/differential are required (scripts/test.sh does both).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::gotrue::{FakeGoTrue, Seed, unix_now};
use crate::harness::{Sidecar, TIMEOUT, clean_env, unique_service};

const API_KEY: &str = "anon-key-for-the-differential-suite";
const USER: &str = "u-diff";
/// Long enough for a whole retry schedule (about 25 s) and a loaded machine.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);
/// Fast scenarios run this many at a time (each is a sidecar and a Node process).
const FAST_AT_ONCE: usize = 12;

// ---------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, Debug)]
enum Scope {
    Local,
    Global,
    Others,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
            Scope::Others => "others",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Refresh,
    GetUser,
    SignOut(Scope),
    Call,
}

/// GoTrue's error body shapes (and a gateway's, and a bare 5xx).
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `{code: <status>, error_code, msg}` and `x-sb-error-code`.
    V1,
    /// `{code: "<code>", message}`, `x-sb-error-code` and `X-Supabase-Api-Version`.
    V2,
    /// `{msg}` with the code only in `x-sb-error-code`.
    HeaderOnly,
    /// OAuth's `{error, error_description}`, no header.
    OAuth,
    /// A gateway's `{"message": "Invalid API key"}`, no code.
    Gateway,
    /// A plain-text body, no code.
    Text,
}

/// One step of a scenario's setup.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The next `n` `/token` requests answer this.
    Token(usize, u16, Shape, &'static str),
    /// Every `/token` request answers 503 (an outage longer than any retry budget).
    TokenOutage,
    /// The next `n` connections are closed unanswered.
    Drop(usize),
    /// `/user` answers this.
    User(u16, Shape, &'static str),
    /// `/logout` answers this (and revokes nothing).
    Logout(u16, Shape, &'static str),
    /// The stored access token is refused (`bad_jwt` at `/user`, 401 at the backend).
    Stale,
    /// The same user has a session on another device (`other`).
    OtherDevice,
    /// Another client already spent the stored refresh token.
    Spent,
    /// GoTrue's refresh token reuse interval, in seconds.
    ReuseInterval(u64),
    /// The stored session was ended elsewhere (a `/logout` from another device).
    RevokedElsewhere,
    /// The backend answers 401 to every token, even fresh ones.
    BackendRefuses,
}

/// How auth-js compares.
#[derive(Clone, Copy, Debug)]
enum AuthJs {
    Same,
    /// A documented difference: the row of [`DIFFERENCES`] and auth-js's outcome.
    Differs(&'static str, &'static str),
}

struct Scenario {
    name: &'static str,
    /// The stored access token expires this many seconds from now (negative: expired);
    /// `None`: expiry unknown.
    expires_in: Option<i64>,
    steps: &'static [Step],
    action: Action,
    /// How many times the action runs at once.
    concurrent: usize,
    /// The sidecar's outcome, as [`Outcome::render`] writes it.
    sidecar: &'static str,
    auth_js: AuthJs,
}

impl Scenario {
    fn slow(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::TokenOutage) || matches!(s, Step::Drop(n) if *n >= 8))
    }

    fn has(&self, wanted: fn(&Step) -> bool) -> bool {
        self.steps.iter().any(wanted)
    }
}

/// The places where the sidecar deliberately differs from auth-js: (row, auth-js, sidecar,
/// reason). Mirrored in docs/protocol.md, "Differences from @supabase/auth-js", where each
/// row's first cell is its name here.
const DIFFERENCES: &[(&str, &str, &str, &str)] = &[
    (
        "`/token` error that is not a network failure",
        "any error that is not retried (a 400 of a code that is not fatal, a gateway's 401, a 429, an unparsable body) removes a session whose access token has expired, with `SIGNED_OUT`",
        "only the fatal codes sign out; everything else keeps the session",
        "a wrong API key, a proxy's 401 or a server bug must not sign every user out; only an answer that says the refresh token is dead does",
    ),
    (
        "which `/token` failures are retried",
        "network failures and 500-504, 520-530",
        "network failures, every 5xx, and 429 (honouring `Retry-After`)",
        "a 429 is a passing server condition; retrying within the same 30 s budget costs nothing, signing out costs the session",
    ),
    (
        "fatal rejection while the access token is still valid",
        "keeps the session until the access token expires (its 60 s failure cooldown then lets the dead refresh token be sent again)",
        "ends the session at once (`SIGNED_OUT` `refresh_failed`) and never sends that refresh token again",
        "the refresh token is dead, so the session cannot outlive its access token; keeping it only delays the sign-out and invites resending a dead token",
    ),
    (
        "GoTrue error code",
        "body `code` (API version 2024-01-01 and later) or `error_code`; not the `x-sb-error-code` header, not OAuth's `error`",
        "`x-sb-error-code` header first, then `error_code`, string `code`, OAuth `error`",
        "one classification whatever the body shape or API version; both sign out on such an answer once the access token has expired, but auth-js reports a plain API error",
    ),
    (
        "refresh before use",
        "when less than 90 s remain",
        "when 60 s or less remain (gate, `auth_get_user`, `auth_sign_out`); the ticker still refreshes at 90 s",
        "the ticker normally refreshes first; the gate's check catches what it missed (a machine that slept)",
    ),
    (
        "`refreshSession` on an expiring session",
        "refreshes twice: once while loading the session, once more as asked",
        "one refresh, shared with any in flight",
        "each refresh spends a single-use token; one answers the request",
    ),
    (
        "`getUser`",
        "removes the session only on `session_not_found`",
        "also ends it on `user_not_found`; stores the returned user",
        "a deleted user's session cannot come back; `auth_get_state` then shows the current user",
    ),
    (
        "`signOut` `local` when the refresh or `/logout` fails",
        "returns the error and keeps the session",
        "signs this device out anyway and answers success",
        "the user asked to be signed out here; an unreachable auth server must not keep them signed in. `global`/`others` do return the error and keep the session, as auth-js, so a failed revoke is never silent",
    ),
    (
        "product backend 401",
        "not its concern (an app refreshes and retries as it likes)",
        "one refresh cycle per call: a 401 for a token refreshed for this call, or for the retry, ends the session if it is still the one that failed",
        "a token that expired in flight is not a sign-out, but a backend refusing fresh tokens must not make every call refresh twice; a late 401 must not end a newer session",
    ),
];

use Action::*;
use Shape::*;
use Step::*;

const FATAL: u16 = 400;

/// The scenarios. `sidecar` is [`Outcome::render`]'s form:
/// `<results> | session <label> | events <list> | <requests> [| revoked <names>]`.
fn scenarios() -> Vec<Scenario> {
    let s = |name, expires_in: Option<i64>, steps: &'static [Step], action, sidecar, auth_js| {
        Scenario {
            name,
            expires_in,
            steps,
            action,
            concurrent: 1,
            sidecar,
            auth_js,
        }
    };
    let valid = Some(3000);
    let expired = Some(-30);
    let mut all = vec![
        // -- refresh: success, rotation, reuse ------------------------------------------
        s(
            "refresh: success rotates the refresh token",
            valid,
            &[],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: an expired stored session",
            expired,
            &[],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0",
            AuthJs::Differs(
                "`refreshSession` on an expiring session",
                "ok | session A2 | events TOKEN_REFRESHED, TOKEN_REFRESHED | POST /token R0; POST /token R1",
            ),
        ),
        s(
            "refresh: a refresh token spent elsewhere, past the reuse interval, revokes the family",
            expired,
            &[Spent],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0 | revoked -",
            AuthJs::Same,
        ),
        s(
            "refresh: a refresh token spent elsewhere, within the reuse interval, still works",
            valid,
            &[Spent, ReuseInterval(10)],
            Refresh,
            "ok | session A1' | events TOKEN_REFRESHED | POST /token R0",
            AuthJs::Same,
        ),
        // -- refresh: each fatal code (expired token: both sign out) --------------------
        s(
            "refresh: fatal refresh_token_not_found ({code:int, error_code, msg})",
            expired,
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal refresh_token_already_used ({code:str, message})",
            expired,
            &[Token(1, FATAL, V2, "refresh_token_already_used")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal session_not_found",
            expired,
            &[Token(1, FATAL, V1, "session_not_found")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal session_expired",
            expired,
            &[Token(1, FATAL, V2, "session_expired")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal user_not_found",
            expired,
            &[Token(1, 404, V1, "user_not_found")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal user_banned",
            expired,
            &[Token(1, FATAL, V1, "user_banned")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: fatal invalid_grant (OAuth shape)",
            expired,
            &[Token(1, FATAL, OAuth, "invalid_grant")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Differs(
                "GoTrue error code",
                "failed | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        s(
            "refresh: fatal code in the x-sb-error-code header only",
            expired,
            &[Token(1, FATAL, HeaderOnly, "refresh_token_not_found")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Differs(
                "GoTrue error code",
                "failed | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        s(
            "refresh: fatal code while the access token is still valid",
            valid,
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            Refresh,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Differs(
                "fatal rejection while the access token is still valid",
                "auth | session A0 | events - | POST /token R0",
            ),
        ),
        // -- refresh: answers that are not fatal ----------------------------------------
        s(
            "refresh: 400 validation_failed, access token still valid",
            valid,
            &[Token(1, 400, V1, "validation_failed")],
            Refresh,
            "failed | session A0 | events - | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "refresh: 400 validation_failed, access token expired",
            expired,
            &[Token(1, 400, V1, "validation_failed")],
            Refresh,
            "failed | session A0 | events - | POST /token R0",
            AuthJs::Differs(
                "`/token` error that is not a network failure",
                "failed | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        s(
            "refresh: a gateway's 401 Invalid API key, access token expired",
            expired,
            &[Token(1, 401, Gateway, "")],
            Refresh,
            "failed | session A0 | events - | POST /token R0",
            AuthJs::Differs(
                "`/token` error that is not a network failure",
                "failed | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        // -- refresh: transient failures, backoff ---------------------------------------
        s(
            "refresh: one 500, then success",
            expired,
            &[Token(1, 500, V1, "unexpected_failure")],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0 ×2",
            AuthJs::Differs(
                "`refreshSession` on an expiring session",
                "ok | session A2 | events TOKEN_REFRESHED, TOKEN_REFRESHED | POST /token R0 ×2; POST /token R1",
            ),
        ),
        s(
            "refresh: two 503s, then success",
            valid,
            &[Token(2, 503, Text, "")],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0 ×3",
            AuthJs::Same,
        ),
        s(
            "refresh: a dropped connection, a 502, then success",
            valid,
            &[Drop(1), Token(1, 502, Text, "")],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | DROPPED; POST /token R0 ×2",
            AuthJs::Same,
        ),
        s(
            "refresh: one 429, then success, access token still valid",
            valid,
            &[Token(1, 429, V1, "over_request_rate_limit")],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0 ×2",
            AuthJs::Differs(
                "which `/token` failures are retried",
                "transient | session A0 | events - | POST /token R0",
            ),
        ),
        s(
            "refresh: one 429, then success, access token expired",
            Some(-5),
            &[Token(1, 429, V2, "over_request_rate_limit")],
            Refresh,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0 ×2",
            AuthJs::Differs(
                "which `/token` failures are retried",
                "transient | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        s(
            "refresh: 503 throughout (8 attempts in about 25 s)",
            valid,
            &[TokenOutage],
            Refresh,
            "transient | session A0 | events - | POST /token R0 ×8",
            AuthJs::Same,
        ),
        s(
            "refresh: connections dropped throughout",
            valid,
            &[Drop(100)],
            Refresh,
            "transient | session A0 | events - | DROPPED ×8",
            AuthJs::Same,
        ),
        // -- getUser ----------------------------------------------------------------------
        s(
            "getUser: 200",
            valid,
            &[],
            GetUser,
            "ok | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: 401 keeps the session (item 2)",
            valid,
            &[User(401, V1, "no_authorization")],
            GetUser,
            "failed | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: 403 bad_jwt keeps the session (item 2)",
            valid,
            &[User(403, V1, "bad_jwt")],
            GetUser,
            "failed | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: a stale token the server calls bad_jwt keeps the session (item 2)",
            valid,
            &[Stale],
            GetUser,
            "failed | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: a gateway's 401 Invalid API key keeps the session (item 2)",
            valid,
            &[User(401, Gateway, "")],
            GetUser,
            "failed | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: 403 session_not_found ends the session",
            valid,
            &[User(403, V2, "session_not_found")],
            GetUser,
            "auth | session none | events SIGNED_OUT | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: a session ended elsewhere",
            valid,
            &[RevokedElsewhere],
            GetUser,
            "auth | session none | events SIGNED_OUT | GET /user A0 | revoked -",
            AuthJs::Same,
        ),
        s(
            "getUser: 403 user_not_found",
            valid,
            &[User(403, V1, "user_not_found")],
            GetUser,
            "auth | session none | events SIGNED_OUT | GET /user A0",
            AuthJs::Differs("`getUser`", "auth | session A0 | events - | GET /user A0"),
        ),
        s(
            "getUser: 500",
            valid,
            &[User(500, V1, "unexpected_failure")],
            GetUser,
            "transient | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: 429",
            valid,
            &[User(429, V1, "over_request_rate_limit")],
            GetUser,
            "transient | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: a dropped connection",
            valid,
            &[Drop(1)],
            GetUser,
            "transient | session A0 | events - | DROPPED",
            AuthJs::Same,
        ),
        s(
            "getUser: an expired token is refreshed first",
            expired,
            &[],
            GetUser,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /user A1",
            AuthJs::Same,
        ),
        s(
            "getUser: an expired token and a rejected refresh token",
            expired,
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            GetUser,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "getUser: an expired token and /token down throughout: no /user, kept (item 1)",
            expired,
            &[TokenOutage],
            GetUser,
            "transient | session A0 | events - | POST /token R0 ×8",
            AuthJs::Same,
        ),
        s(
            "getUser: 50 s left and /token down throughout: the still-valid token is used",
            Some(50),
            &[TokenOutage],
            GetUser,
            "ok | session A0 | events - | POST /token R0 ×8; GET /user A0",
            AuthJs::Same,
        ),
        s(
            "getUser: 30 s left: both refresh first",
            Some(30),
            &[],
            GetUser,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /user A1",
            AuthJs::Same,
        ),
        s(
            "getUser: 75 s left: inside auth-js's margin, outside the sidecar's",
            Some(75),
            &[],
            GetUser,
            "ok | session A0 | events - | GET /user A0",
            AuthJs::Differs(
                "refresh before use",
                "ok | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /user A1",
            ),
        ),
        s(
            "getUser: unknown expiry: never refreshed ahead",
            None,
            &[],
            GetUser,
            "ok | session A0 | events - | GET /user A0",
            AuthJs::Same,
        ),
        // -- signOut ----------------------------------------------------------------------
        s(
            "signOut local: 204 revokes this session",
            valid,
            &[OtherDevice],
            SignOut(Scope::Local),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=local A0 | revoked -",
            AuthJs::Same,
        ),
        s(
            "signOut global: 204 revokes every session of the user",
            valid,
            &[OtherDevice],
            SignOut(Scope::Global),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=global A0 | revoked -, other",
            AuthJs::Same,
        ),
        s(
            "signOut others: 204 revokes the other sessions, keeps this one",
            valid,
            &[OtherDevice],
            SignOut(Scope::Others),
            "ok | session A0 | events - | POST /logout?scope=others A0 | revoked other",
            AuthJs::Same,
        ),
        s(
            "signOut local: 401 counts as done",
            valid,
            &[Logout(401, V1, "no_authorization")],
            SignOut(Scope::Local),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=local A0",
            AuthJs::Same,
        ),
        s(
            "signOut global: 403 counts as done",
            valid,
            &[Logout(403, V1, "bad_jwt")],
            SignOut(Scope::Global),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=global A0",
            AuthJs::Same,
        ),
        s(
            "signOut global: 404 counts as done",
            valid,
            &[Logout(404, V2, "user_not_found")],
            SignOut(Scope::Global),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=global A0",
            AuthJs::Same,
        ),
        s(
            "signOut global: 500 is returned and the session kept (item 5)",
            valid,
            &[OtherDevice, Logout(500, V1, "unexpected_failure")],
            SignOut(Scope::Global),
            "transient | session A0 | events - | POST /logout?scope=global A0",
            AuthJs::Same,
        ),
        s(
            "signOut global: a dropped connection is returned and the session kept (item 5)",
            valid,
            &[OtherDevice, Drop(1)],
            SignOut(Scope::Global),
            "transient | session A0 | events - | DROPPED",
            AuthJs::Same,
        ),
        s(
            "signOut global: 429 is returned and the session kept",
            valid,
            &[Logout(429, V1, "over_request_rate_limit")],
            SignOut(Scope::Global),
            "transient | session A0 | events - | POST /logout?scope=global A0",
            AuthJs::Same,
        ),
        s(
            "signOut others: 500 is returned and the session kept",
            valid,
            &[OtherDevice, Logout(500, V1, "unexpected_failure")],
            SignOut(Scope::Others),
            "transient | session A0 | events - | POST /logout?scope=others A0",
            AuthJs::Same,
        ),
        s(
            "signOut local: 500 still signs this device out",
            valid,
            &[Logout(500, V1, "unexpected_failure")],
            SignOut(Scope::Local),
            "ok | session none | events SIGNED_OUT | POST /logout?scope=local A0",
            AuthJs::Differs(
                "`signOut` `local` when the refresh or `/logout` fails",
                "transient | session A0 | events - | POST /logout?scope=local A0",
            ),
        ),
        s(
            "signOut local: a dropped connection still signs this device out",
            valid,
            &[Drop(1)],
            SignOut(Scope::Local),
            "ok | session none | events SIGNED_OUT | DROPPED",
            AuthJs::Differs(
                "`signOut` `local` when the refresh or `/logout` fails",
                "transient | session A0 | events - | DROPPED",
            ),
        ),
        s(
            "signOut global with an expired token: refreshed first, then revoked (item 4)",
            expired,
            &[OtherDevice],
            SignOut(Scope::Global),
            "ok | session none | events TOKEN_REFRESHED, SIGNED_OUT | POST /token R0; POST /logout?scope=global A1 | revoked -, other",
            AuthJs::Same,
        ),
        s(
            "signOut local with an expired token: refreshed first, then revoked (item 4)",
            expired,
            &[],
            SignOut(Scope::Local),
            "ok | session none | events TOKEN_REFRESHED, SIGNED_OUT | POST /token R0; POST /logout?scope=local A1 | revoked -",
            AuthJs::Same,
        ),
        s(
            "signOut others with an expired token: refreshed first, then revoked (item 4)",
            expired,
            &[OtherDevice],
            SignOut(Scope::Others),
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0; POST /logout?scope=others A1 | revoked other",
            AuthJs::Same,
        ),
        s(
            "signOut global with an expired token and a rejected refresh token",
            expired,
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            SignOut(Scope::Global),
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "signOut local with an expired token and a rejected refresh token",
            expired,
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            SignOut(Scope::Local),
            "ok | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Differs(
                "`signOut` `local` when the refresh or `/logout` fails",
                "auth | session none | events SIGNED_OUT | POST /token R0",
            ),
        ),
        s(
            "signOut global with an expired token and /token down throughout (items 4, 5)",
            expired,
            &[OtherDevice, TokenOutage],
            SignOut(Scope::Global),
            "transient | session A0 | events - | POST /token R0 ×8",
            AuthJs::Same,
        ),
        // -- gated calls (an app on auth-js) ----------------------------------------------
        s(
            "call: a valid token",
            valid,
            &[],
            Call,
            "ok | session A0 | events - | GET /auth/me A0",
            AuthJs::Same,
        ),
        s(
            "call: an expired token is refreshed first",
            expired,
            &[],
            Call,
            "ok | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /auth/me A1",
            AuthJs::Same,
        ),
        s(
            "call: a backend 401 gets one refresh and one retry",
            valid,
            &[Stale],
            Call,
            "ok | session A1 | events TOKEN_REFRESHED | GET /auth/me A0; POST /token R0; GET /auth/me A1",
            AuthJs::Same,
        ),
        s(
            "call: an expired token and a rejected refresh token",
            expired,
            &[Token(1, FATAL, V2, "refresh_token_already_used")],
            Call,
            "auth | session none | events SIGNED_OUT | POST /token R0",
            AuthJs::Same,
        ),
        s(
            "call: an expired token and /token down throughout: nothing sent, kept (items 1, 3)",
            expired,
            &[TokenOutage],
            Call,
            "transient | session A0 | events - | POST /token R0 ×8",
            AuthJs::Same,
        ),
        s(
            "call: a backend 401 and /token down throughout: one refresh cycle (item 3)",
            valid,
            &[Stale, TokenOutage],
            Call,
            "transient | session A0 | events - | GET /auth/me A0; POST /token R0 ×8",
            AuthJs::Same,
        ),
        s(
            "call: 50 s left, /token down, then a backend 401: no second refresh (item 3)",
            Some(50),
            &[Stale, TokenOutage],
            Call,
            "transient | session A0 | events - | POST /token R0 ×8; GET /auth/me A0",
            AuthJs::Same,
        ),
        s(
            "call: a backend that refuses even a token refreshed for the call",
            expired,
            &[BackendRefuses],
            Call,
            "auth | session none | events TOKEN_REFRESHED, SIGNED_OUT | POST /token R0; GET /auth/me A1",
            AuthJs::Differs(
                "product backend 401",
                "auth | session A2 | events TOKEN_REFRESHED, TOKEN_REFRESHED | POST /token R0; GET /auth/me A1; POST /token R1; GET /auth/me A2",
            ),
        ),
    ];
    // -- concurrency: N callers, one /token --------------------------------------------------
    let concurrent = |name, steps: &'static [Step], action, n, sidecar| Scenario {
        name,
        expires_in: Some(-30),
        steps,
        action,
        concurrent: n,
        sidecar,
        auth_js: AuthJs::Same,
    };
    all.extend([
        concurrent(
            "concurrency: 10 getUser on an expired token share one refresh",
            &[],
            GetUser,
            10,
            "ok ×10 | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /user A1 ×10",
        ),
        concurrent(
            "concurrency: 10 calls on an expired token share one refresh",
            &[],
            Call,
            10,
            "ok ×10 | session A1 | events TOKEN_REFRESHED | POST /token R0; GET /auth/me A1 ×10",
        ),
        concurrent(
            "concurrency: 5 getUser and a rejected refresh token sign out once",
            &[Token(1, FATAL, V1, "refresh_token_not_found")],
            GetUser,
            5,
            "auth ×5 | session none | events SIGNED_OUT | POST /token R0",
        ),
    ]);
    all
}

// ---------------------------------------------------------------------------------------
// Outcomes

/// What one side did, normalized so the two can be compared.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    results: Vec<String>,
    session: String,
    events: Vec<String>,
    requests: Vec<String>,
    revoked: Vec<String>,
}

impl Outcome {
    fn render(&self) -> String {
        let mut out = vec![
            compress(&self.results).join(", "),
            format!("session {}", self.session),
            format!(
                "events {}",
                if self.events.is_empty() {
                    "-".to_string()
                } else {
                    self.events.join(", ")
                }
            ),
            if self.requests.is_empty() {
                "no requests".to_string()
            } else {
                compress(&self.requests).join("; ")
            },
        ];
        if !self.revoked.is_empty() {
            out.push(format!("revoked {}", self.revoked.join(", ")));
        }
        out.join(" | ")
    }
}

/// Runs of equal items as `item ×n`.
fn compress(items: &[String]) -> Vec<String> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some((last, n)) if last == item => *n += 1,
            _ => out.push((item.clone(), 1)),
        }
    }
    out.into_iter()
        .map(|(item, n)| {
            if n == 1 {
                item
            } else {
                format!("{item} ×{n}")
            }
        })
        .collect()
}

/// The sidecar's answer as a result class.
fn sidecar_result(response: &Value) -> String {
    if response.get("result").is_some() {
        return "ok".into();
    }
    let data = &response["error"]["data"];
    match data["kind"].as_str().unwrap_or_default() {
        "auth_expired" => "auth".into(),
        "rate_limited" | "unavailable" => "transient".into(),
        "backend" if data["retryable"] == true => "transient".into(),
        "backend" => "failed".into(),
        other => other.to_string(),
    }
}

/// Refresh-token codes auth-js (and the sidecar) take for "sign in again".
const FATAL_CODES: &[&str] = &[
    "refresh_token_not_found",
    "refresh_token_already_used",
    "session_not_found",
    "session_expired",
    "user_not_found",
    "user_banned",
];

/// auth-js's result as a result class.
fn auth_js_result(result: &Value) -> String {
    if result["ok"] == true {
        return "ok".into();
    }
    let error = &result["error"];
    let status = error["status"].as_u64();
    let code = error["code"].as_str();
    match error["name"].as_str().unwrap_or_default() {
        "AuthSessionMissingError" => "auth".into(),
        "AuthRetryableFetchError" => "transient".into(),
        "BackendError" if status == Some(401) => "auth".into(),
        _ if status == Some(429) || status.is_some_and(|s| s >= 500) => "transient".into(),
        "AuthApiError" if code.is_some_and(|c| FATAL_CODES.contains(&c)) => "auth".into(),
        _ => "failed".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Running a scenario

/// A fake GoTrue set up for a scenario, and the stored session.
struct Setup {
    fake: FakeGoTrue,
    access: String,
    refresh: String,
    expires_at: Option<i64>,
    user: Value,
    auth_url: String,
}

fn error_reply(status: u16, shape: Shape, code: &str) -> (Vec<(&'static str, String)>, String) {
    let json = ("content-type", "application/json".to_string());
    let msg = format!("scripted {status} {code}");
    match shape {
        Shape::V1 => (
            vec![json, ("x-sb-error-code", code.to_string())],
            json!({"code": status, "error_code": code, "msg": msg}).to_string(),
        ),
        Shape::V2 => (
            vec![
                json,
                ("x-sb-error-code", code.to_string()),
                ("x-supabase-api-version", "2024-01-01".to_string()),
            ],
            json!({"code": code, "message": msg}).to_string(),
        ),
        Shape::HeaderOnly => (
            vec![json, ("x-sb-error-code", code.to_string())],
            json!({"msg": msg}).to_string(),
        ),
        Shape::OAuth => (
            vec![json],
            json!({"error": code, "error_description": msg}).to_string(),
        ),
        Shape::Gateway => (
            vec![json],
            json!({"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}).to_string(),
        ),
        Shape::Text => (
            vec![("content-type", "text/plain".to_string())],
            "upstream unavailable".to_string(),
        ),
    }
}

async fn setup(scenario: &Scenario) -> Setup {
    let fake = FakeGoTrue::start().await;
    let expires_at = scenario.expires_in.map(|s| unix_now() + s);
    let (access, refresh) = fake.seed(Seed {
        user_id: USER,
        name: "",
        stale: scenario.has(|s| matches!(s, Stale)),
        access_expires_at: expires_at,
    });
    let user = json!({
        "id": USER,
        "aud": "authenticated",
        "role": "authenticated",
        "email": format!("{USER}@example.com"),
        "app_metadata": {"provider": "email"},
    });
    let auth_url = fake.auth_url();
    for step in scenario.steps {
        match *step {
            Token(n, status, shape, code) => {
                let (headers, body) = error_reply(status, shape, code);
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                for _ in 0..n {
                    fake.reply_next_token(status, &headers, &body);
                }
            }
            TokenOutage => {
                let (headers, body) = error_reply(503, Text, "");
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                for _ in 0..100 {
                    fake.reply_next_token(503, &headers, &body);
                }
            }
            Drop(n) => fake.drop_next_connections(n),
            User(status, shape, code) | Logout(status, shape, code) => {
                let (headers, body) = error_reply(status, shape, code);
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if matches!(step, User(..)) {
                    fake.set_user_reply(status, &headers, &body);
                } else {
                    fake.set_logout_reply(status, &headers, &body);
                }
            }
            Stale => {}
            OtherDevice => {
                fake.seed(Seed {
                    user_id: USER,
                    name: "other",
                    stale: false,
                    access_expires_at: Some(unix_now() + 3600),
                });
            }
            Spent => fake.spend_refresh_token(&refresh),
            ReuseInterval(secs) => fake.set_reuse_interval(Duration::from_secs(secs)),
            RevokedElsewhere => fake.revoke_family(""),
            BackendRefuses => fake.set_backend_refuses(true),
        }
    }
    Setup {
        fake,
        access,
        refresh,
        expires_at,
        user,
        auth_url,
    }
}

/// The session held after the action, by the label of its access token.
fn held_label(setup: &Setup, access: Option<&str>) -> String {
    match access {
        None => "none".into(),
        Some(token) => setup.fake.label(token),
    }
}

/// The sidecar's side: spawn, store the session, run the action, read the outcome.
async fn run_sidecar(scenario: &Scenario) -> Outcome {
    let setup = setup(scenario).await;
    let base = setup.fake.base_url();
    // Its own keyring entry: scenarios run at once and must not share anything.
    let service = unique_service("differential");
    let mut sidecar = Sidecar::spawn(&[
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
        ("CORE_SIDECAR_BACKEND_URL", base.as_str()),
        ("CORE_SIDECAR_AUTH_URL", setup.auth_url.as_str()),
        ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
        ("RUST_LOG", "debug"),
        ("CORE_SIDECAR_TEST_HOOKS", "1"),
    ]);
    for token in setup.fake.tokens() {
        sidecar.secret(&token);
    }
    let mut driver = Driver {
        sidecar,
        events: Vec::new(),
        next: 0,
    };
    // The ticker's first tick is due at start, and must be over before the session is
    // stored (else it may refresh a session inside its 90 s first): the stored session is
    // loaded (nothing), then the runtime runs its due timers while the test hook's timer,
    // due after the tick's, runs out. Then only the action talks to the fake: the next tick
    // is 30 s away.
    driver.requests("auth_get_state", Value::Null, 1).await;
    driver
        .requests("core_test_sleep", json!({"ms": 2}), 1)
        .await;
    let stored = driver
        .requests(
            "auth_store_session",
            json!({"access_token": setup.access, "refresh_token": setup.refresh,
                   "expires_at": setup.expires_at, "token_type": "bearer", "user": setup.user}),
            1,
        )
        .await;
    assert_eq!(
        stored[0]["result"]["isAuthenticated"], true,
        "{}: {}",
        scenario.name, stored[0]
    );
    driver.events.clear();

    let (method, params) = match scenario.action {
        Refresh => ("auth_refresh_session", Value::Null),
        GetUser => ("auth_get_user", Value::Null),
        SignOut(scope) => ("auth_sign_out", json!({"scope": scope.as_str()})),
        Call => ("user_get_profile", Value::Null),
    };
    let responses = driver.requests(method, params, scenario.concurrent).await;
    let requests = setup.fake.journal();
    let revoked = setup.fake.revoked();
    let state = driver.requests("auth_get_state", Value::Null, 1).await;
    let state = &state[0]["result"];
    let session = if state["isAuthenticated"] != true {
        "none".to_string()
    } else if state["expiresAt"] == json!(setup.expires_at) {
        setup.fake.label(&setup.access)
    } else {
        setup
            .fake
            .latest_access_label("")
            .unwrap_or_else(|| "?".into())
    };
    let events = driver
        .events
        .iter()
        .filter(|e| *e != "USER_UPDATED" && *e != "INITIAL_SESSION")
        .cloned()
        .collect();

    let mut sidecar = driver.sidecar;
    for token in setup.fake.tokens() {
        sidecar.secret(&token);
    }
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{}: the sidecar exit",
        scenario.name
    );
    sidecar.assert_no_secrets();

    Outcome {
        results: responses.iter().map(sidecar_result).collect(),
        session,
        events,
        requests,
        revoked,
    }
}

/// Requests and notifications over the harness's pipes, with the long timeout transient
/// scenarios need.
struct Driver {
    sidecar: Sidecar,
    /// `auth_state_changed` event names, in order.
    events: Vec<String>,
    next: u64,
}

impl Driver {
    /// Sends `n` identical requests at once and returns their responses in order.
    async fn requests(&mut self, method: &str, params: Value, n: usize) -> Vec<Value> {
        let ids: Vec<String> = (0..n)
            .map(|_| {
                self.next += 1;
                format!("d{}", self.next)
            })
            .collect();
        for id in &ids {
            let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
            if !params.is_null() {
                request["params"] = params.clone();
            }
            self.sidecar.send(request).await;
        }
        let deadline = Instant::now() + SCENARIO_TIMEOUT;
        let mut responses: Vec<Option<Value>> = vec![None; n];
        while responses.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.sidecar.recv_line(left).await else {
                panic!("{method}: no response; stderr:\n{}", self.sidecar.stderr());
            };
            let value: Value = serde_json::from_str(&line).expect("a JSON line");
            if value["method"] == "auth_state_changed" {
                let event = value["params"]["event"].as_str().unwrap_or_default();
                self.events.push(event.to_string());
            } else if let Some(pos) = ids.iter().position(|id| value["id"] == json!(id)) {
                responses[pos] = Some(value);
            }
        }
        responses.into_iter().map(Option::unwrap).collect()
    }
}

fn differential_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/differential")
}

/// auth-js's side: the same setup on its own fake, the scenario run by tests/differential/run.mjs.
async fn run_auth_js(scenario: &Scenario) -> Outcome {
    let setup = setup(scenario).await;
    let session = json!({
        "access_token": setup.access,
        "refresh_token": setup.refresh,
        "expires_at": setup.expires_at,
        "expires_in": setup.expires_at.map(|at| at - unix_now()),
        "token_type": "bearer",
        "user": setup.user,
    });
    let mut action = match scenario.action {
        Refresh => json!({"kind": "refresh"}),
        GetUser => json!({"kind": "get_user"}),
        SignOut(scope) => json!({"kind": "sign_out", "scope": scope.as_str()}),
        Call => json!({"kind": "call"}),
    };
    action["concurrent"] = json!(scenario.concurrent);
    let input = json!({
        "authUrl": setup.auth_url,
        "backendUrl": setup.fake.base_url(),
        "apiKey": API_KEY,
        "session": session,
        "action": action,
    });

    let mut cmd = Command::new("node");
    cmd.arg("run.mjs")
        .current_dir(differential_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    clean_env(&mut cmd, &[]);
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run `node` ({e}): Node.js >= 20 is required; scripts/test.sh installs it")
    });
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.to_string().as_bytes())
        .await
        .expect("write the scenario");
    drop(stdin);
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{}: auth-js did not finish", scenario.name))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The report holds the stored access token: it is labelled here and never printed.
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: run.mjs gave no report (exit {}); stderr:\n{}",
                scenario.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    Outcome {
        results: report["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(auth_js_result)
            .collect(),
        session: held_label(&setup, report["storedAccessToken"].as_str()),
        events: report["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_string())
            .collect(),
        requests: setup.fake.journal(),
        revoked: setup.fake.revoked(),
    }
}

/// Both sides of one scenario; the mismatches, if any, as text.
async fn check(scenario: Arc<Scenario>) -> Vec<String> {
    let (sidecar, auth_js) = tokio::join!(run_sidecar(&scenario), run_auth_js(&scenario));
    let (sidecar, auth_js) = (sidecar.render(), auth_js.render());
    let mut problems = Vec::new();
    if sidecar != scenario.sidecar {
        problems.push(format!(
            "{}:\n    sidecar:  {sidecar}\n    expected: {}",
            scenario.name, scenario.sidecar
        ));
    }
    match scenario.auth_js {
        AuthJs::Same if auth_js != sidecar => problems.push(format!(
            "{}: auth-js differs (not documented):\n    sidecar: {sidecar}\n    auth-js: {auth_js}",
            scenario.name
        )),
        AuthJs::Differs(row, expected) if auth_js != expected => {
            let (_, theirs, ours, why) = DIFFERENCES
                .iter()
                .find(|(r, ..)| *r == row)
                .expect("a row of DIFFERENCES");
            problems.push(format!(
                "{} (documented: {row}; auth-js: {theirs}; core-sidecar: {ours}; why: {why}):\n    auth-js:  {auth_js}\n    expected: {expected}",
                scenario.name
            ));
        }
        _ => {}
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn differential_suite_against_auth_js() {
    assert!(
        differential_dir()
            .join("node_modules/@supabase/auth-js/package.json")
            .exists(),
        "run `npm ci` in tests/differential first (scripts/test.sh does)"
    );
    let started = Instant::now();
    let mut scenarios: Vec<Arc<Scenario>> = scenarios().into_iter().map(Arc::new).collect();
    // Slow ones first: each waits out a whole retry schedule, so they all run at once.
    scenarios.sort_by_key(|s| !s.slow());
    let fast = Arc::new(Semaphore::new(FAST_AT_ONCE));
    let runs: Vec<_> = scenarios
        .iter()
        .cloned()
        .map(|scenario| {
            let fast = fast.clone();
            tokio::spawn(async move {
                let _permit = if scenario.slow() {
                    None
                } else {
                    Some(fast.acquire_owned().await.expect("semaphore"))
                };
                check(scenario).await
            })
        })
        .collect();
    let mut problems = Vec::new();
    for (run, scenario) in runs.into_iter().zip(&scenarios) {
        match run.await {
            Ok(found) => problems.extend(found),
            Err(error) => problems.push(format!("{}: panicked: {error}", scenario.name)),
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "differential: {} scenarios, {} documented differences, {:.1} s",
        scenarios.len(),
        scenarios
            .iter()
            .filter(|s| matches!(s.auth_js, AuthJs::Differs(..)))
            .count(),
        elapsed.as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} of {} scenarios do not match:\n{}",
        problems.len(),
        scenarios.len(),
        problems.join("\n")
    );
}

/// At least 40 scenarios, the items each covered, every difference row used and
/// every row mirrored in docs/protocol.md.
#[test]
fn the_differences_are_documented_and_used() {
    let scenarios = scenarios();
    assert!(scenarios.len() >= 40, "{} scenarios", scenarios.len());
    let mut names: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), scenarios.len(), "scenario names are unique");
    // Each of issue 12's items 1-5 is named by a scenario: `(item 2)`, `(items 1, 3)`.
    let items: Vec<u32> = scenarios
        .iter()
        .filter_map(|s| s.name.split("(item").nth(1)?.split(')').next())
        .flat_map(|list| list.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    for item in 1..=5 {
        assert!(
            items.contains(&item),
            "no scenario for issue 12, item {item}"
        );
    }
    let docs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md"))
            .expect("docs/protocol.md");
    let section = docs
        .split("## Differences from @supabase/auth-js")
        .nth(1)
        .expect("the Differences section")
        .split("\n## ")
        .next()
        .expect("its text");
    for (row, ..) in DIFFERENCES {
        assert!(
            section.contains(&format!("| {row} |")),
            "docs/protocol.md, Differences from @supabase/auth-js, has no row `{row}`"
        );
        assert!(
            scenarios
                .iter()
                .any(|s| matches!(s.auth_js, AuthJs::Differs(r, _) if r == *row)),
            "row {row} is used by no scenario"
        );
    }
    for scenario in &scenarios {
        if let AuthJs::Differs(row, _) = scenario.auth_js {
            assert!(
                DIFFERENCES.iter().any(|(r, ..)| *r == row),
                "{}: `{row}` is not a row of DIFFERENCES",
                scenario.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sign-in scenarios: the requests GoTrue receives
//
// The sidecar and auth-js (`flowType: 'pkce'`, tests/differential/sign_in.mjs) each run the
// same steps against their own fake GoTrue set up the same way. What each fake received is
// compared request by request: method, path, query pairs, body members and values. Values
// that differ by nature are compared structurally: a `code_challenge` must be 43 base64url
// characters (`<challenge>`), a `code_verifier` must hash to the latest challenge the same
// side sent (`<verifier of the challenge>`), and what the test copied from the fake (an
// OTP, a token hash, an auth code) is `<from the fake>`. Each step's outcome (`ok` or
// `failed <GoTrue code>`, and its events) and each OAuth URL (challenge and host left out)
// must be the same too, and the sidecar's outcomes are pinned.

/// A step, given to both sides.
#[derive(Clone, Debug)]
enum SignInStep {
    /// A method and its params (the sidecar's names; sign_in.mjs maps them to auth-js).
    Call(&'static str, Value),
    /// `auth_verify_otp` with the newest code the fake sent to this address, of this type.
    VerifyCode(&'static str, &'static str),
    /// `auth_verify_otp` with the token hash of the newest code sent to this address.
    VerifyHash(&'static str, &'static str),
    /// `auth_exchange_code` with the auth code of the newest emailed link to this address.
    ExchangeLink(&'static str),
    /// `auth_exchange_code` with the code of the last OAuth URL, fetched from the fake.
    ExchangeOAuth,
}

struct SignInScenario {
    name: &'static str,
    autoconfirm: bool,
    /// Accounts: (email or phone, password).
    users: &'static [(&'static str, &'static str)],
    steps: Vec<SignInStep>,
    /// The sidecar's outcomes, one per step, joined with `; `.
    sidecar: &'static str,
    /// A documented difference: the row of docs/protocol.md's "Differences from
    /// @supabase/auth-js" and auth-js's outcomes. The requests must then agree as far as
    /// both sides went.
    auth_js: Option<(&'static str, &'static str)>,
}

/// What one side did.
#[derive(Debug, PartialEq)]
struct SignInOutcome {
    steps: Vec<String>,
    requests: Vec<String>,
    urls: Vec<String>,
}

const SIGN_IN_PASSWORD: &str = "differential-password-5d1";
const SIGN_IN_REDIRECT: &str = "app://callback/path?x=1&y=a b";
/// A code no fake sends (its codes are six digits), compared as is.
const WRONG_CODE: &str = "000000x";

fn sign_in_scenarios() -> Vec<SignInScenario> {
    use SignInStep::*;
    let user = &[("known@example.com", SIGN_IN_PASSWORD)];
    let password = |email: &str| {
        Call(
            "auth_sign_in_with_password",
            json!({"email": email, "password": SIGN_IN_PASSWORD}),
        )
    };
    vec![
        SignInScenario {
            name: "sign-in: password",
            autoconfirm: false,
            users: user,
            steps: vec![password("known@example.com")],
            sidecar: "ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-in: wrong password",
            autoconfirm: false,
            users: user,
            steps: vec![Call(
                "auth_sign_in_with_password",
                json!({"email": "known@example.com", "password": "not-the-password"}),
            )],
            sidecar: "failed invalid_credentials",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-in: phone password",
            autoconfirm: false,
            users: &[("+15550199", SIGN_IN_PASSWORD)],
            steps: vec![Call(
                "auth_sign_in_with_password",
                json!({"phone": "+15550199", "password": SIGN_IN_PASSWORD}),
            )],
            sidecar: "ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-up: autoconfirm, data, redirect",
            autoconfirm: true,
            users: &[],
            steps: vec![Call(
                "auth_sign_up",
                json!({"email": "new@example.com", "password": SIGN_IN_PASSWORD,
                       "data": {"name": "Ada", "n": 1}, "redirect_to": SIGN_IN_REDIRECT}),
            )],
            sidecar: "ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-up: confirmation link exchanged",
            autoconfirm: false,
            users: &[],
            steps: vec![
                Call(
                    "auth_sign_up",
                    json!({"email": "new@example.com", "password": SIGN_IN_PASSWORD}),
                ),
                ExchangeLink("new@example.com"),
            ],
            sidecar: "ok; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-up: phone, SMS code",
            autoconfirm: false,
            users: &[],
            steps: vec![
                Call(
                    "auth_sign_up",
                    json!({"phone": "+15550142", "password": SIGN_IN_PASSWORD}),
                ),
                VerifyCode("+15550142", "sms"),
            ],
            sidecar: "ok; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "sign-up: an existing user (autoconfirm)",
            autoconfirm: true,
            users: user,
            steps: vec![Call(
                "auth_sign_up",
                json!({"email": "known@example.com", "password": SIGN_IN_PASSWORD}),
            )],
            sidecar: "failed user_already_exists",
            auth_js: None,
        },
        SignInScenario {
            name: "otp: email code, a wrong one first",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call(
                    "auth_sign_in_with_otp",
                    json!({"email": "known@example.com", "redirect_to": SIGN_IN_REDIRECT}),
                ),
                Call(
                    "auth_verify_otp",
                    json!({"email": "known@example.com", "token": WRONG_CODE, "type": "email"}),
                ),
                VerifyCode("known@example.com", "email"),
            ],
            sidecar: "ok; failed otp_expired; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "otp: create_user false, unknown address",
            autoconfirm: false,
            users: &[],
            steps: vec![Call(
                "auth_sign_in_with_otp",
                json!({"email": "stranger@example.com", "create_user": false,
                       "data": {"from": "test"}}),
            )],
            sidecar: "failed otp_disabled",
            auth_js: None,
        },
        SignInScenario {
            name: "otp: phone",
            autoconfirm: false,
            users: &[],
            steps: vec![
                Call("auth_sign_in_with_otp", json!({"phone": "+15550177"})),
                VerifyCode("+15550177", "sms"),
            ],
            sidecar: "ok; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "otp: magic link token hash",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call(
                    "auth_sign_in_with_otp",
                    json!({"email": "known@example.com"}),
                ),
                VerifyHash("known@example.com", "magiclink"),
            ],
            sidecar: "ok; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "otp: magic link code exchanged",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call(
                    "auth_sign_in_with_otp",
                    json!({"email": "known@example.com"}),
                ),
                ExchangeLink("known@example.com"),
            ],
            sidecar: "ok; ok SIGNED_IN",
            auth_js: None,
        },
        SignInScenario {
            name: "recovery: link exchanged, then a new password",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call(
                    "auth_reset_password_for_email",
                    json!({"email": "known@example.com", "redirect_to": SIGN_IN_REDIRECT}),
                ),
                ExchangeLink("known@example.com"),
                Call("auth_update_user", json!({"password": "a-new-password-77"})),
            ],
            sidecar: "ok; ok PASSWORD_RECOVERY; ok USER_UPDATED",
            auth_js: None,
        },
        SignInScenario {
            name: "recovery: code verified",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call(
                    "auth_reset_password_for_email",
                    json!({"email": "known@example.com"}),
                ),
                VerifyCode("known@example.com", "recovery"),
            ],
            sidecar: "ok; ok PASSWORD_RECOVERY",
            auth_js: None,
        },
        SignInScenario {
            name: "oauth: URL, exchange, the same code again",
            autoconfirm: false,
            users: &[],
            steps: vec![
                Call(
                    "auth_sign_in_with_oauth",
                    json!({"provider": "github", "redirect_to": SIGN_IN_REDIRECT,
                           "scopes": "repo read:user", "query_params": {"prompt": "consent"}}),
                ),
                ExchangeOAuth,
                ExchangeOAuth,
            ],
            sidecar: "ok; ok SIGNED_IN; failed flow_state_not_found",
            auth_js: Some((
                "`exchangeCodeForSession` with no verifier stored",
                "ok; ok SIGNED_IN; failed pkce_code_verifier_not_found",
            )),
        },
        SignInScenario {
            name: "update user: data, then an email change with its link",
            autoconfirm: false,
            users: user,
            steps: vec![
                password("known@example.com"),
                Call("auth_update_user", json!({"data": {"theme": "dark"}})),
                Call(
                    "auth_update_user",
                    json!({"email": "changed@example.com", "redirect_to": SIGN_IN_REDIRECT}),
                ),
                ExchangeLink("changed@example.com"),
            ],
            sidecar: "ok SIGNED_IN; ok USER_UPDATED; ok USER_UPDATED; ok SIGNED_IN",
            // auth-js's `updateUser` saves the session, and `_saveSession` removes the
            // verifier it has just stored for the email change.
            auth_js: Some((
                "a new session while a flow is in progress",
                "ok SIGNED_IN; ok USER_UPDATED; ok USER_UPDATED; failed pkce_code_verifier_not_found",
            )),
        },
        SignInScenario {
            name: "update user: weak password, email taken",
            autoconfirm: false,
            users: &[
                ("known@example.com", SIGN_IN_PASSWORD),
                ("taken@example.com", SIGN_IN_PASSWORD),
            ],
            steps: vec![
                password("known@example.com"),
                Call("auth_update_user", json!({"password": "123"})),
                Call("auth_update_user", json!({"email": "taken@example.com"})),
            ],
            sidecar: "ok SIGNED_IN; failed weak_password; failed email_exists",
            auth_js: None,
        },
        SignInScenario {
            name: "oauth: started, then a password sign-in, then the exchange",
            autoconfirm: false,
            users: user,
            steps: vec![
                Call("auth_sign_in_with_oauth", json!({"provider": "github"})),
                password("known@example.com"),
                ExchangeOAuth,
            ],
            sidecar: "ok; ok SIGNED_IN; ok SIGNED_IN",
            // auth-js's `_saveSession` removes any pending verifier.
            auth_js: Some((
                "a new session while a flow is in progress",
                "ok; ok SIGNED_IN; failed pkce_code_verifier_not_found",
            )),
        },
    ]
}

/// One side of a sign-in scenario.
enum SignInSide {
    Sidecar(Box<Sidecar>, u64),
    AuthJs(Box<AuthJsProcess>),
}

/// sign_in.mjs, running.
struct AuthJsProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SignInSide {
    /// Runs one step: its outcome (`ok [EVENTS]` / `failed <code>`) and the URL it answered.
    async fn call(&mut self, method: &str, params: Value) -> (String, Option<String>) {
        match self {
            SignInSide::Sidecar(sidecar, seen) => {
                let response = sidecar.request(method, params).await;
                let pong = sidecar.request("core_ping", Value::Null).await;
                assert_eq!(pong["result"]["pong"], true);
                let events: Vec<String> = sidecar
                    .notifications()
                    .iter()
                    .filter(|n| n["method"] == "auth_state_changed")
                    .filter(|n| n["params"]["event"] != "INITIAL_SESSION")
                    .map(|n| n["params"]["event"].as_str().unwrap_or("?").to_string())
                    .collect();
                let new: Vec<String> = events[*seen as usize..].to_vec();
                *seen = events.len() as u64;
                let url = response["result"]["url"].as_str().map(str::to_owned);
                let outcome = match response.get("error") {
                    None => "ok".to_string(),
                    Some(error) => {
                        let data = &error["data"];
                        format!(
                            "failed {}",
                            data["reason"]
                                .as_str()
                                .or(data["kind"].as_str())
                                .unwrap_or("?")
                        )
                    }
                };
                (render_step(outcome, &new), url)
            }
            SignInSide::AuthJs(process) => {
                let AuthJsProcess { stdin, lines, .. } = process.as_mut();
                let line = json!({"method": method, "params": params}).to_string() + "\n";
                stdin.write_all(line.as_bytes()).await.expect("to node");
                let answer = tokio::time::timeout(SCENARIO_TIMEOUT, lines.next_line())
                    .await
                    .expect("auth-js answers in time")
                    .expect("read")
                    .expect("a line from auth-js");
                let answer: Value = serde_json::from_str(&answer).expect("JSON");
                let outcome = if answer["ok"] == true {
                    "ok".to_string()
                } else {
                    format!(
                        "failed {}",
                        answer["error"]["code"]
                            .as_str()
                            .or(answer["error"]["name"].as_str())
                            .unwrap_or("?")
                    )
                };
                let events: Vec<String> = answer["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| e.as_str().unwrap_or("?").to_string())
                    .collect();
                (
                    render_step(outcome, &events),
                    answer["url"].as_str().map(str::to_owned),
                )
            }
        }
    }

    async fn finish(self, fake: &FakeGoTrue) {
        match self {
            SignInSide::Sidecar(mut sidecar, _) => {
                for token in fake.tokens() {
                    sidecar.secret(&token);
                }
                sidecar.secret(SIGN_IN_PASSWORD);
                sidecar.close_stdin();
                let status = sidecar.wait_exit(TIMEOUT).await;
                assert_eq!(status.code(), Some(0), "the sidecar exit");
                sidecar.assert_no_secrets();
            }
            SignInSide::AuthJs(process) => {
                let AuthJsProcess {
                    mut child, stdin, ..
                } = *process;
                drop(stdin);
                let _ = tokio::time::timeout(TIMEOUT, child.wait()).await;
            }
        }
    }
}

fn render_step(outcome: String, events: &[String]) -> String {
    if events.is_empty() {
        outcome
    } else {
        format!("{outcome} {}", events.join(", "))
    }
}

/// Requests with what differs by nature replaced by what it must be (see above).
fn normalize_requests(requests: &[crate::gotrue::Recorded]) -> Vec<String> {
    let mut challenge: Option<String> = None;
    let is_challenge = |v: &str| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    requests
        .iter()
        .map(|r| {
            let query: Vec<String> = r
                .query
                .iter()
                .map(|(k, v)| {
                    let v = if k == "code_challenge" {
                        let shown = if is_challenge(v) {
                            "<challenge>"
                        } else {
                            "<not a challenge>"
                        };
                        challenge = Some(v.clone());
                        shown.to_string()
                    } else {
                        v.clone()
                    };
                    format!("{k}={v}")
                })
                .collect();
            let mut body = r.body.clone();
            if let Some(map) = body.as_object_mut() {
                if let Some(Value::String(v)) = map.get("code_challenge").cloned() {
                    let shown = if is_challenge(&v) {
                        "<challenge>"
                    } else {
                        "<not a challenge>"
                    };
                    challenge = Some(v);
                    map.insert("code_challenge".into(), json!(shown));
                }
                if let Some(Value::String(v)) = map.get("code_verifier").cloned() {
                    let shown = if challenge.as_deref() == Some(crate::gotrue::s256(&v).as_str()) {
                        "<verifier of the challenge>"
                    } else {
                        "<verifier of another challenge>"
                    };
                    map.insert("code_verifier".into(), json!(shown));
                }
                for key in ["auth_code", "token", "token_hash"] {
                    let from_fake = match map.get(key) {
                        Some(Value::String(v)) => !(key == "token" && v == WRONG_CODE),
                        _ => false,
                    };
                    if from_fake {
                        map.insert(key.into(), json!("<from the fake>"));
                    }
                }
            }
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            let body = if body.is_null() {
                String::new()
            } else {
                format!(" {body}")
            };
            format!("{} {}{query}{body}", r.method, r.path)
        })
        .collect()
}

/// An OAuth URL without its host and with its challenge checked and left out.
fn normalize_url(url: &str, fake: &FakeGoTrue) -> String {
    let rest = url
        .strip_prefix(&fake.auth_url())
        .unwrap_or_else(|| panic!("{url} is under the auth URL"));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("code_challenge", v)) if v.len() == 43 => "code_challenge=<challenge>".into(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

async fn run_sign_in(scenario: &SignInScenario, auth_js: bool) -> SignInOutcome {
    let fake = FakeGoTrue::start().await;
    fake.set_autoconfirm(scenario.autoconfirm);
    for (who, password) in scenario.users {
        if who.contains('@') {
            fake.add_user(who, password);
        } else {
            fake.add_phone_user(who, password);
        }
    }
    let auth_url = fake.auth_url();
    let mut side = if auth_js {
        let mut cmd = Command::new("node");
        cmd.arg("sign_in.mjs")
            .current_dir(differential_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        clean_env(&mut cmd, &[]);
        let mut child = cmd.spawn().expect("node runs");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let first = json!({"authUrl": auth_url, "apiKey": API_KEY}).to_string() + "\n";
        stdin.write_all(first.as_bytes()).await.expect("to node");
        use tokio::io::AsyncBufReadExt;
        SignInSide::AuthJs(Box::new(AuthJsProcess {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }))
    } else {
        let base = fake.base_url();
        let sidecar = Sidecar::spawn(&[
            ("CORE_SIDECAR_BACKEND_URL", base.as_str()),
            ("CORE_SIDECAR_AUTH_URL", auth_url.as_str()),
            ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
            ("RUST_LOG", "debug"),
        ]);
        SignInSide::Sidecar(Box::new(sidecar), 0)
    };
    let (mut steps, mut urls) = (Vec::new(), Vec::new());
    let (mut last_url, mut oauth_code): (Option<String>, Option<String>) = (None, None);
    for step in &scenario.steps {
        let (method, params) = match step {
            SignInStep::Call(method, params) => (*method, params.clone()),
            SignInStep::VerifyCode(to, kind) => {
                let code = fake.last_otp(to).unwrap_or_else(|| "no-code".into());
                let contact = if to.contains('@') { "email" } else { "phone" };
                (
                    "auth_verify_otp",
                    json!({contact: to, "token": code, "type": kind}),
                )
            }
            SignInStep::VerifyHash(to, kind) => {
                let hash = fake.last_token_hash(to).unwrap_or_else(|| "no-hash".into());
                ("auth_verify_otp", json!({"token_hash": hash, "type": kind}))
            }
            SignInStep::ExchangeLink(email) => {
                let code = fake
                    .email_link_code(email)
                    .unwrap_or_else(|| "no-code".into());
                ("auth_exchange_code", json!({"auth_code": code}))
            }
            SignInStep::ExchangeOAuth => {
                // The first time from the provider; then the same code again.
                let code = match &oauth_code {
                    Some(code) => code.clone(),
                    None => {
                        let url = last_url.clone().expect("an OAuth URL first");
                        crate::sign_in::authorize(&url).await
                    }
                };
                oauth_code = Some(code.clone());
                ("auth_exchange_code", json!({"auth_code": code}))
            }
        };
        let (outcome, url) = side.call(method, params).await;
        if let Some(url) = url {
            urls.push(normalize_url(&url, &fake));
            last_url = Some(url);
        }
        steps.push(outcome);
    }
    side.finish(&fake).await;
    SignInOutcome {
        steps,
        requests: normalize_requests(&fake.requests()),
        urls,
    }
}

fn differences_section() -> String {
    let docs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md"))
            .expect("docs/protocol.md");
    docs.split("## Differences from @supabase/auth-js")
        .nth(1)
        .expect("the Differences section")
        .split("\n## ")
        .next()
        .expect("its text")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_requests_match_auth_js() {
    assert!(
        differential_dir()
            .join("node_modules/@supabase/auth-js/package.json")
            .exists(),
        "run `npm ci` in tests/differential first (scripts/test.sh does)"
    );
    let scenarios: Vec<Arc<SignInScenario>> =
        sign_in_scenarios().into_iter().map(Arc::new).collect();
    let at_once = Arc::new(Semaphore::new(4));
    let runs: Vec<_> = scenarios
        .iter()
        .cloned()
        .map(|scenario| {
            let at_once = at_once.clone();
            tokio::spawn(async move {
                let _permit = at_once.acquire_owned().await.expect("semaphore");
                let (sidecar, auth_js) =
                    tokio::join!(run_sign_in(&scenario, false), run_sign_in(&scenario, true));
                let mut problems = Vec::new();
                let rendered = sidecar.steps.join("; ");
                if rendered != scenario.sidecar {
                    problems.push(format!(
                        "{}: sidecar outcomes\n    got:      {rendered}\n    expected: {}",
                        scenario.name, scenario.sidecar
                    ));
                }
                match scenario.auth_js {
                    None if sidecar != auth_js => problems.push(format!(
                        "{}: differs from auth-js (not documented)\n    sidecar: {sidecar:#?}\n    auth-js: {auth_js:#?}",
                        scenario.name
                    )),
                    Some((row, expected)) => {
                        if !differences_section().contains(&format!("| {row} |")) {
                            problems.push(format!(
                                "{}: docs/protocol.md, Differences from @supabase/auth-js, has no row `{row}`",
                                scenario.name
                            ));
                        }
                        let theirs = auth_js.steps.join("; ");
                        let both = sidecar.requests.len().min(auth_js.requests.len());
                        if theirs != expected
                            || sidecar.requests[..both] != auth_js.requests[..both]
                            || sidecar.urls != auth_js.urls
                        {
                            problems.push(format!(
                                "{} (documented: {row}): auth-js\n    got:      {theirs}\n    expected: {expected}\n    sidecar: {sidecar:#?}\n    auth-js: {auth_js:#?}",
                                scenario.name
                            ));
                        }
                    }
                    None => {}
                }
                problems
            })
        })
        .collect();
    let mut problems = Vec::new();
    for (run, scenario) in runs.into_iter().zip(&scenarios) {
        match run.await {
            Ok(found) => problems.extend(found),
            Err(error) => problems.push(format!("{}: panicked: {error}", scenario.name)),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} sign-in scenarios do not match:\n{}",
        problems.len(),
        scenarios.len(),
        problems.join("\n")
    );
}
