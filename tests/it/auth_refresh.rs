//! GoTrue refresh through the real binary against `gotrue::FakeGoTrue`, a fake that really
//! rotates refresh tokens and is also the product backend: single-flight under load, the
//! commit guard (sign-out / newer sign-in while a refresh is in flight), fatal and transient
//! `/token` failures, the gate's 401 retry, reuse refused, `auth_get_user`, `auth_sign_out`
//! scopes, and rotation persisted in a real Secret Service across restarts (including the
//! ticker's first tick at start). Tests wait on events (responses, notifications, the fake's
//! held request), never on sleeps.

use std::time::Duration;

use serde_json::{Value, json};

use crate::gotrue::{FakeGoTrue, unix_now};
use crate::harness::{Sidecar, TIMEOUT, secret_tool_json, unique_service};

const API_KEY: &str = "anon-key-for-the-auth-refresh-tests";

fn spawn(fake: &FakeGoTrue, extra: &[(&str, &str)]) -> Sidecar {
    let (base, auth) = (fake.base_url(), fake.auth_url());
    let mut env = vec![
        ("CORE_SIDECAR_BACKEND_URL", base.as_str()),
        ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
        ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
        // The secret check at the end covers trace-level logs of the refresh paths.
        ("RUST_LOG", "trace"),
    ];
    env.extend_from_slice(extra);
    let mut sidecar = Sidecar::spawn(&env);
    for token in fake.tokens() {
        sidecar.secret(&token);
    }
    sidecar
}

/// Stores a session for `user_id`; returns the state.
async fn store(
    sidecar: &mut Sidecar,
    access: &str,
    refresh: &str,
    expires_at: i64,
    user_id: &str,
) -> Value {
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh, "expires_at": expires_at,
                   "token_type": "bearer", "user": {"id": user_id}}),
        )
        .await;
    assert_eq!(stored["result"]["isAuthenticated"], true, "{stored}");
    assert_eq!(stored["result"]["userId"], user_id, "{stored}");
    stored["result"].clone()
}

/// Once a ping sent now is answered, every notification written before it has been read.
async fn settle(sidecar: &mut Sidecar) {
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
}

/// `(event, reason)` of every `auth_state_changed` seen so far, but the `INITIAL_SESSION`
/// sent once at start (these tests are about what changes the session after it).
fn events(sidecar: &Sidecar) -> Vec<(String, Value)> {
    sidecar
        .notifications()
        .iter()
        .filter(|n| n["method"] == "auth_state_changed")
        .filter(|n| n["params"]["event"] != "INITIAL_SESSION")
        .map(|n| {
            (
                n["params"]["event"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["params"]["reason"].clone(),
            )
        })
        .collect()
}

fn count(sidecar: &Sidecar, event: &str) -> usize {
    events(sidecar).iter().filter(|(e, _)| e == event).count()
}

fn signed_out_reasons(sidecar: &Sidecar) -> Vec<Value> {
    events(sidecar)
        .into_iter()
        .filter(|(e, _)| e == "SIGNED_OUT")
        .map(|(_, r)| r)
        .collect()
}

async fn is_authenticated(sidecar: &mut Sidecar) -> Value {
    let state = sidecar.request("auth_get_state", Value::Null).await;
    state["result"]["isAuthenticated"].clone()
}

/// Registers every token the fake made as a secret, stops the sidecar (exit 0) and checks
/// that none of them reached stdout or stderr.
async fn stop(mut sidecar: Sidecar, fake: &FakeGoTrue) {
    for token in fake.tokens() {
        sidecar.secret(&token);
    }
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    sidecar.assert_no_secrets();
}

fn assert_auth_expired(response: &Value, reason: &str) {
    assert_eq!(response["error"]["code"], -32001, "{response}");
    assert_eq!(
        response["error"]["data"]["kind"], "auth_expired",
        "{response}"
    );
    assert_eq!(response["error"]["data"]["reason"], reason, "{response}");
}

// 1.
#[tokio::test]
async fn fifty_concurrent_calls_on_an_expired_token_make_one_token_request() {
    let fake = FakeGoTrue::start().await;
    // The old access token is also refused by the backend: a call made with it would show.
    let (access, refresh) = fake.seed_session_for("u-fifty", false);
    let mut sidecar = spawn(&fake, &[]);
    store(&mut sidecar, &access, &refresh, unix_now() - 10, "u-fifty").await;

    for id in 0..50 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "user_get_profile"}))
            .await;
    }
    for id in 0..50 {
        let response = sidecar.recv_response(&json!(id)).await;
        assert_eq!(response["result"]["id"], "u-fifty", "{response}");
    }
    assert_eq!(fake.token_calls(), 1, "one POST /token for all 50 calls");
    assert_eq!(fake.presented(), [refresh]);
    assert_eq!(fake.last_apikey().as_deref(), Some(API_KEY));
    let seen = fake.backend_tokens();
    assert_eq!(seen.len(), 50, "no call needed a retry");
    assert!(
        seen.iter().all(|t| *t == seen[0] && *t != access),
        "every call used the one refreshed token, none the expired one"
    );
    settle(&mut sidecar).await;
    assert_eq!(
        count(&sidecar, "TOKEN_REFRESHED"),
        1,
        "{:?}",
        events(&sidecar)
    );
    assert!(signed_out_reasons(&sidecar).is_empty());
    stop(sidecar, &fake).await;
}

// 2.
#[tokio::test]
async fn a_sign_out_during_a_refresh_wins() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-leaving", true);
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-leaving",
    )
    .await;

    fake.hold_token();
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": "refresh", "method": "auth_refresh_session"}))
        .await;
    fake.wait_token_request().await;
    let out = sidecar.request("auth_sign_out", Value::Null).await;
    assert_eq!(out["result"]["removed"], true, "{out}");
    fake.release_token();

    let refreshed = sidecar.recv_response(&json!("refresh")).await;
    assert_ne!(
        refreshed["result"]["isAuthenticated"], true,
        "a refresh finishing after the sign-out must not sign back in: {refreshed}"
    );
    if refreshed.get("error").is_some() {
        assert_eq!(refreshed["error"]["code"], -32001, "{refreshed}");
    }
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_auth_expired(&profile, "no_session");
    settle(&mut sidecar).await;
    assert_eq!(
        count(&sidecar, "TOKEN_REFRESHED"),
        0,
        "{:?}",
        events(&sidecar)
    );
    assert_eq!(signed_out_reasons(&sidecar), [json!("signed_out")]);
    assert_eq!(fake.token_calls(), 1);
    stop(sidecar, &fake).await;
}

// 3.
#[tokio::test]
async fn a_session_stored_during_a_refresh_wins() {
    let fake = FakeGoTrue::start().await;
    let (old_access, old_refresh) = fake.seed_session_for("u-old", true);
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &old_access,
        &old_refresh,
        unix_now() + 3600,
        "u-old",
    )
    .await;

    fake.hold_token();
    sidecar
        .send(json!({"jsonrpc": "2.0", "id": "refresh", "method": "auth_refresh_session"}))
        .await;
    fake.wait_token_request().await;
    let (new_access, new_refresh) = fake.seed_session_for("u-new", true);
    sidecar.secret(&new_access).secret(&new_refresh);
    store(
        &mut sidecar,
        &new_access,
        &new_refresh,
        unix_now() + 3600,
        "u-new",
    )
    .await;
    fake.release_token();

    let refreshed = sidecar.recv_response(&json!("refresh")).await;
    if refreshed.get("result").is_some() {
        assert_eq!(refreshed["result"]["userId"], "u-new", "{refreshed}");
    }
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(state["result"]["userId"], "u-new", "{state}");
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-new", "{profile}");
    assert_eq!(
        fake.backend_tokens().last(),
        Some(&new_access),
        "the gated call used the newer session's token"
    );
    assert_eq!(fake.token_calls(), 1, "the newer session was not refreshed");
    settle(&mut sidecar).await;
    assert_eq!(
        count(&sidecar, "TOKEN_REFRESHED"),
        0,
        "{:?}",
        events(&sidecar)
    );
    assert!(
        signed_out_reasons(&sidecar).is_empty(),
        "{:?}",
        events(&sidecar)
    );
    stop(sidecar, &fake).await;
}

// 4.
#[tokio::test]
async fn an_unknown_refresh_token_signs_out_once_and_is_not_sent_again() {
    let fake = FakeGoTrue::start().await;
    let (access, _) = fake.seed_session_for("u-unknown", true);
    let unknown = fake.unknown_token();
    let mut sidecar = spawn(&fake, &[]);
    // 120 s left: outside the ticker's 90 s, so only the call below refreshes and its
    // answer is deterministic (a ticker refresh that finished first would make it
    // `no_session`). Near expiry through the gate or the ticker: the two tests below.
    store(
        &mut sidecar,
        &access,
        &unknown,
        unix_now() + 120,
        "u-unknown",
    )
    .await;

    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_auth_expired(&refreshed, "refresh_rejected");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    settle(&mut sidecar).await;
    assert_eq!(signed_out_reasons(&sidecar), [json!("refresh_failed")]);

    let again = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_auth_expired(&again, "no_session");
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_auth_expired(&profile, "no_session");
    assert_eq!(fake.token_calls(), 1);
    settle(&mut sidecar).await;
    assert_eq!(
        signed_out_reasons(&sidecar).len(),
        1,
        "{:?}",
        events(&sidecar)
    );
    stop(sidecar, &fake).await;
}

// 4b. The gate's own refresh near expiry (or the ticker's, whichever comes first), under
// concurrency, with a rejected token.
#[tokio::test]
async fn gated_calls_near_expiry_with_a_rejected_token_sign_out_once() {
    let fake = FakeGoTrue::start().await;
    let (access, _) = fake.seed_session_for("u-near", true);
    let unknown = fake.unknown_token();
    let mut sidecar = spawn(&fake, &[]);
    store(&mut sidecar, &access, &unknown, unix_now() + 30, "u-near").await;

    for id in 0..10 {
        sidecar
            .send(json!({"jsonrpc": "2.0", "id": id, "method": "composio_list_toolkits"}))
            .await;
    }
    for id in 0..10 {
        let response = sidecar.recv_response(&json!(id)).await;
        assert_eq!(response["error"]["code"], -32001, "{response}");
    }
    assert_eq!(fake.token_calls(), 1, "one /token for all, never resent");
    assert!(
        fake.backend_tokens().is_empty(),
        "no call reached the backend"
    );
    settle(&mut sidecar).await;
    assert_eq!(signed_out_reasons(&sidecar), [json!("refresh_failed")]);
    stop(sidecar, &fake).await;
}

// 5.
#[tokio::test]
async fn transient_token_failures_are_retried() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-retry", true);
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-retry",
    )
    .await;

    fake.fail_next_token(
        1,
        500,
        json!({"code": 500, "error_code": "unexpected_failure", "msg": "Unexpected failure"}),
    );
    fake.fail_next_token(1, 503, json!({"message": "upstream unavailable"}));
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    assert_eq!(refreshed["result"]["userId"], "u-retry", "{refreshed}");
    assert_eq!(fake.token_calls(), 3);
    assert_eq!(
        fake.presented(),
        [refresh.clone(), refresh.clone(), refresh.clone()],
        "a retry sends the same (unused) refresh token"
    );

    // A 429 is transient too.
    fake.fail_next_token(
        1,
        429,
        json!({"code": 429, "error_code": "over_request_rate_limit", "msg": "Too many requests"}),
    );
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    assert_eq!(fake.token_calls(), 5);

    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-retry", "{profile}");
    assert_ne!(
        fake.backend_tokens().last(),
        Some(&access),
        "rotated token in use"
    );
    settle(&mut sidecar).await;
    assert_eq!(
        count(&sidecar, "TOKEN_REFRESHED"),
        2,
        "{:?}",
        events(&sidecar)
    );
    assert!(signed_out_reasons(&sidecar).is_empty());
    stop(sidecar, &fake).await;
}

// 6.
#[tokio::test]
async fn a_backend_401_refreshes_once_and_the_retry_succeeds() {
    let fake = FakeGoTrue::start().await;
    let (stale, refresh) = fake.seed_session_for("u-stale", false);
    let mut sidecar = spawn(&fake, &[]);
    store(&mut sidecar, &stale, &refresh, unix_now() + 3600, "u-stale").await;

    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-stale", "{profile}");
    assert_eq!(fake.token_calls(), 1);
    let seen = fake.backend_tokens();
    assert_eq!(seen.len(), 2, "one call, one retry: {}", seen.len());
    assert_eq!(seen[0], stale);
    assert_ne!(seen[1], stale);
    settle(&mut sidecar).await;
    let kinds: Vec<String> = events(&sidecar).into_iter().map(|(e, _)| e).collect();
    assert_eq!(kinds, ["SIGNED_IN", "TOKEN_REFRESHED"]);
    stop(sidecar, &fake).await;
}

// 7.
#[tokio::test]
async fn a_reused_refresh_token_is_refused_and_signs_out_once() {
    let fake = FakeGoTrue::start().await;
    let (stale, old_refresh) = fake.seed_session_for("u-reuse", false);
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &stale,
        &old_refresh,
        unix_now() + 3600,
        "u-reuse",
    )
    .await;
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    assert_eq!(fake.token_calls(), 1);

    // The old session again: its refresh token was used by the refresh above.
    store(
        &mut sidecar,
        &stale,
        &old_refresh,
        unix_now() + 3600,
        "u-reuse",
    )
    .await;
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_auth_expired(&profile, "refresh_rejected");
    assert_eq!(fake.token_calls(), 2);
    assert_eq!(is_authenticated(&mut sidecar).await, false);

    let again = sidecar.request("user_get_profile", Value::Null).await;
    assert_auth_expired(&again, "no_session");
    assert_eq!(fake.token_calls(), 2, "the refused token is not sent again");
    settle(&mut sidecar).await;
    assert_eq!(signed_out_reasons(&sidecar), [json!("refresh_failed")]);
    stop(sidecar, &fake).await;
}

// 8.
#[tokio::test]
async fn auth_get_user_updates_the_user_or_signs_out_or_keeps_the_session() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-get", true);
    let sentry = crate::fake_sentry::FakeSentry::start().await;
    let dsn = sentry.dsn();
    let mut sidecar = spawn(&fake, &[("SENTRY_DSN", dsn.as_str())]);
    store(&mut sidecar, &access, &refresh, unix_now() + 3600, "u-get").await;

    // 200: the auth server's user (with fields the stored one lacks) replaces the stored one.
    let user = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(user["result"]["id"], "u-get", "{user}");
    assert_eq!(user["result"]["email"], "u-get@example.com", "{user}");
    assert_eq!(fake.user_calls(), 1);
    assert_eq!(fake.last_apikey().as_deref(), Some(API_KEY));
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert_eq!(
        state["result"]["user"]["email"], "u-get@example.com",
        "{state}"
    );
    assert_eq!(state["result"]["user"]["app_metadata"]["provider"], "email");

    // 500: a backend error, the session stays.
    fake.set_user_response(
        500,
        json!({"code": 500, "error_code": "unexpected_failure", "msg": "Unexpected failure"}),
    );
    let failed = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(failed["error"]["code"], -32003, "{failed}");
    assert_eq!(is_authenticated(&mut sidecar).await, true);

    // 401 (issue 12, item 2): the token is unusable, the session is not known gone. A
    // non-auth-expired error, the session stays, no notification.
    fake.set_user_response(
        401,
        json!({"code": 401, "error_code": "no_authorization", "msg": "This endpoint requires a valid Bearer token"}),
    );
    let unusable = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(unusable["error"]["code"], -32003, "{unusable}");
    assert_eq!(unusable["error"]["data"]["status"], 401, "{unusable}");
    assert_eq!(is_authenticated(&mut sidecar).await, true);

    // 403 session_not_found: auth-expired, signed out once.
    fake.set_user_response(
        403,
        json!({"code": 403, "error_code": "session_not_found",
               "msg": "Session from session_id claim in JWT does not exist"}),
    );
    let gone = sidecar.request("auth_get_user", Value::Null).await;
    assert_auth_expired(&gone, "session_not_found");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    settle(&mut sidecar).await;
    assert_eq!(signed_out_reasons(&sidecar), [json!("expired")]);

    // 403 user_not_found: the same.
    let (access, refresh) = fake.seed_session_for("u-get-2", true);
    sidecar.secret(&access).secret(&refresh);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-get-2",
    )
    .await;
    fake.set_user_response(
        403,
        json!({"code": 403, "error_code": "user_not_found", "msg": "User from sub claim in JWT does not exist"}),
    );
    let gone = sidecar.request("auth_get_user", Value::Null).await;
    assert_auth_expired(&gone, "session_not_found");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    settle(&mut sidecar).await;
    assert_eq!(
        signed_out_reasons(&sidecar),
        [json!("expired"), json!("expired")]
    );
    assert_eq!(fake.token_calls(), 0);
    stop(sidecar, &fake).await;
    // The 500 is a real fault: reported, and without any token the fake issued.
    let envelopes = sentry.wait_for(1, TIMEOUT).await;
    for envelope in &envelopes {
        for token in fake.tokens() {
            assert!(!envelope.contains(&token), "Sentry envelope leaks a token");
        }
    }
}

/// As supabase-js `getUser`: an access token that has expired (the machine slept through the
/// ticker) is refreshed first, not sent to `/user` and taken for a session the server forgot.
#[tokio::test]
async fn auth_get_user_refreshes_an_expired_token_first() {
    let fake = FakeGoTrue::start().await;
    let (stale, refresh) = fake.seed_session_for("u-slept", false);
    let mut sidecar = spawn(&fake, &[]);
    store(&mut sidecar, &stale, &refresh, unix_now() - 10, "u-slept").await;

    let user = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(user["result"]["id"], "u-slept", "{user}");
    assert_eq!(fake.token_calls(), 1);
    assert_eq!(
        fake.user_calls(),
        1,
        "only the refreshed token went to /user"
    );
    assert_eq!(is_authenticated(&mut sidecar).await, true);
    settle(&mut sidecar).await;
    let kinds: Vec<String> = events(&sidecar).into_iter().map(|(e, _)| e).collect();
    assert_eq!(kinds, ["SIGNED_IN", "TOKEN_REFRESHED"]);
    stop(sidecar, &fake).await;
}

// 9.
#[tokio::test]
async fn sign_out_scopes_call_logout_and_clear_or_keep() {
    let fake = FakeGoTrue::start().await;
    let mut sidecar = spawn(&fake, &[]);
    let mut bearers = Vec::new();

    let (access, refresh) = fake.seed_session_for("u-scope", true);
    sidecar.secret(&access).secret(&refresh);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-scope",
    )
    .await;
    let others = sidecar
        .request("auth_sign_out", json!({"scope": "others"}))
        .await;
    assert_eq!(others["result"]["removed"], false, "{others}");
    assert_eq!(
        is_authenticated(&mut sidecar).await,
        true,
        "others keeps it"
    );
    bearers.push(access.clone());
    let local = sidecar
        .request("auth_sign_out", json!({"scope": "local"}))
        .await;
    assert_eq!(local["result"]["removed"], true, "{local}");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    bearers.push(access);

    let (access, refresh) = fake.seed_session_for("u-scope", true);
    sidecar.secret(&access).secret(&refresh);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-scope",
    )
    .await;
    let global = sidecar
        .request("auth_sign_out", json!({"scope": "global"}))
        .await;
    assert_eq!(global["result"]["removed"], true, "{global}");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    bearers.push(access);

    // A 404 (session already gone there) is ignored: still signed out here.
    let (access, refresh) = fake.seed_session_for("u-scope", true);
    sidecar.secret(&access).secret(&refresh);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-scope",
    )
    .await;
    fake.set_logout_response(
        404,
        json!({"code": 404, "error_code": "session_not_found", "msg": "Session not found"}),
    );
    let default = sidecar.request("auth_sign_out", Value::Null).await;
    assert_eq!(default["result"]["removed"], true, "{default}");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    bearers.push(access);

    assert_eq!(fake.logout_calls(), ["others", "local", "global", "local"]);
    assert_eq!(fake.logout_bearers(), bearers, "each with its access token");
    assert_eq!(fake.last_apikey().as_deref(), Some(API_KEY));
    assert_eq!(fake.token_calls(), 0);
    settle(&mut sidecar).await;
    assert_eq!(
        signed_out_reasons(&sidecar),
        [
            json!("signed_out"),
            json!("signed_out"),
            json!("signed_out")
        ]
    );
    stop(sidecar, &fake).await;
}

// 11. Issue 12, items 1-5: never a wrong sign-out, never an expired token sent, one refresh
// cycle per call, sign-out revokes with a fresh token and a failed revoke is not silent.

/// Long enough for a whole refresh retry schedule (about 25 s) on a loaded machine.
const RETRY_SCHEDULE_WAIT: Duration = Duration::from_secs(60);

/// What [`send_all`] saw: the responses in the order of the ids, and every
/// `auth_state_changed` `(event, reason)` meanwhile.
struct Answers {
    responses: Vec<Value>,
    events: Vec<(String, Value)>,
}

/// Sends each `(method, params)` at once and waits up to [`RETRY_SCHEDULE_WAIT`] for all
/// the responses (the harness's own wait is shorter than a retry schedule).
async fn send_all(sidecar: &mut Sidecar, calls: &[(&str, Value)]) -> Answers {
    let ids: Vec<Value> = (0..calls.len())
        .map(|n| json!(format!("all-{n}")))
        .collect();
    for ((method, params), id) in calls.iter().zip(&ids) {
        let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            request["params"] = params.clone();
        }
        sidecar.send(request).await;
    }
    let deadline = tokio::time::Instant::now() + RETRY_SCHEDULE_WAIT;
    let mut responses: Vec<Option<Value>> = vec![None; calls.len()];
    let mut events = Vec::new();
    while responses.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let line = sidecar
            .recv_line(left)
            .await
            .unwrap_or_else(|| panic!("no response; stderr:\n{}", sidecar.stderr()));
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        if value["method"] == "auth_state_changed" {
            let event = value["params"]["event"].as_str().unwrap_or_default();
            if event != "INITIAL_SESSION" {
                events.push((event.to_string(), value["params"]["reason"].clone()));
            }
        } else if let Some(pos) = ids.iter().position(|id| value["id"] == *id) {
            responses[pos] = Some(value);
        }
    }
    Answers {
        responses: responses.into_iter().map(Option::unwrap).collect(),
        events,
    }
}

/// A sidecar whose auto-refresh ticker's first tick (due at start) is over, so a session
/// stored now inside the ticker's 90 s is refreshed only by the calls of the test: the
/// stored session is loaded, then the test hook's timer, due after the tick's, runs out.
async fn spawn_settled(fake: &FakeGoTrue) -> Sidecar {
    let mut sidecar = spawn(fake, &[("CORE_SIDECAR_TEST_HOOKS", "1")]);
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    let slept = sidecar.request("core_test_sleep", json!({"ms": 2})).await;
    assert!(slept.get("result").is_some(), "{slept}");
    sidecar
}

/// `/token` answers 503 to the next 100 requests: longer than any retry schedule.
fn token_outage(fake: &FakeGoTrue) {
    fake.fail_next_token(100, 503, json!({"message": "upstream unavailable"}));
}

fn assert_transient(response: &Value, status: u16) {
    assert_eq!(response["error"]["code"], -32003, "{response}");
    assert_eq!(response["error"]["data"]["status"], status, "{response}");
    assert_eq!(response["error"]["data"]["retryable"], true, "{response}");
}

/// Item 1 (and 3): an expired access token while `/token` answers 503 throughout. The
/// refresh runs its schedule once (8 attempts, shared by every call), its error is the
/// answer, and the expired token goes nowhere: no `/user`, no backend call, no sign-out.
#[tokio::test]
async fn an_outage_never_sends_an_expired_token_and_signs_nobody_out() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-outage", true);
    let mut sidecar = spawn_settled(&fake).await;
    store(&mut sidecar, &access, &refresh, unix_now() - 10, "u-outage").await;
    token_outage(&fake);

    let answers = send_all(
        &mut sidecar,
        &[
            ("auth_get_user", Value::Null),
            ("user_get_profile", Value::Null),
            ("composio_list_toolkits", Value::Null),
        ],
    )
    .await;
    for response in &answers.responses {
        assert_transient(response, 503);
    }
    assert_eq!(
        fake.token_calls(),
        8,
        "one refresh cycle for the three calls"
    );
    assert_eq!(
        fake.user_calls(),
        0,
        "the expired token never went to /user"
    );
    assert!(
        fake.backend_tokens().is_empty(),
        "nor to the backend: {} calls",
        fake.backend_tokens().len()
    );
    assert!(answers.events.is_empty(), "{:?}", answers.events);
    assert_eq!(is_authenticated(&mut sidecar).await, true, "kept");
    stop(sidecar, &fake).await;
}

/// Item 1, without the wait: a configuration error at `/token` (a gateway's 401, not
/// retried) with an expired access token is the answer; `/user` is not called.
#[tokio::test]
async fn a_failed_refresh_of_an_expired_token_is_the_answer() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-config", true);
    let mut sidecar = spawn_settled(&fake).await;
    store(&mut sidecar, &access, &refresh, unix_now() - 10, "u-config").await;
    fake.fail_next_token(2, 401, json!({"message": "Invalid API key"}));

    let user = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(user["error"]["code"], -32003, "{user}");
    assert_eq!(user["error"]["data"]["status"], 401, "{user}");
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["error"]["data"]["status"], 401, "{profile}");
    assert_eq!(fake.token_calls(), 2, "one refresh per call, not retried");
    assert_eq!(fake.user_calls(), 0);
    assert!(fake.backend_tokens().is_empty());
    assert_eq!(is_authenticated(&mut sidecar).await, true, "kept");
    settle(&mut sidecar).await;
    assert!(signed_out_reasons(&sidecar).is_empty());
    stop(sidecar, &fake).await;
}

/// Item 2: `/user` 401, 403 `bad_jwt` (canned, and the fake's own answer for a token it
/// refuses) and a gateway's 401 keep the session and answer a non-auth-expired error; only
/// `session_not_found` / `user_not_found` end it (test 8).
#[tokio::test]
async fn user_401_bad_jwt_and_a_gateway_401_keep_the_session() {
    let fake = FakeGoTrue::start().await;
    // A stale access token: the fake's own `/user` answer is 403 `bad_jwt`.
    let (stale, refresh) = fake.seed_session_for("u-bad-jwt", false);
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &stale,
        &refresh,
        unix_now() + 3600,
        "u-bad-jwt",
    )
    .await;

    let bad_jwt = sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(bad_jwt["error"]["code"], -32003, "{bad_jwt}");
    assert_eq!(bad_jwt["error"]["data"]["status"], 403, "{bad_jwt}");
    assert_eq!(bad_jwt["error"]["data"]["retryable"], false, "{bad_jwt}");

    for (status, headers, body) in [
        (
            401,
            vec![("x-sb-error-code", "no_authorization")],
            r#"{"code":401,"error_code":"no_authorization","msg":"This endpoint requires a valid Bearer token"}"#,
        ),
        (
            403,
            vec![
                ("x-sb-error-code", "bad_jwt"),
                ("x-supabase-api-version", "2024-01-01"),
            ],
            r#"{"code":"bad_jwt","message":"invalid JWT: unable to parse or verify signature"}"#,
        ),
        (401, vec![], r#"{"message":"Invalid API key"}"#),
    ] {
        fake.set_user_reply(status, &headers, body);
        let answer = sidecar.request("auth_get_user", Value::Null).await;
        assert_eq!(answer["error"]["code"], -32003, "{status}: {answer}");
        assert_eq!(answer["error"]["data"]["status"], status, "{answer}");
        assert_eq!(is_authenticated(&mut sidecar).await, true, "{status}: kept");
    }
    assert_eq!(fake.user_calls(), 4);
    assert_eq!(
        fake.token_calls(),
        0,
        "/user is not retried after a refresh"
    );
    settle(&mut sidecar).await;
    assert!(events(&sidecar).iter().all(|(e, _)| e == "SIGNED_IN"));
    stop(sidecar, &fake).await;
}

/// Item 3: the refresh before the call failed (50 s left, `/token` down), the still-valid
/// token went out and the backend answered 401. The refresh's error is the answer, with no
/// second refresh: 8 `/token` requests, not 16, and the session is kept.
#[tokio::test]
async fn a_backend_401_after_a_failed_refresh_makes_no_second_refresh() {
    let fake = FakeGoTrue::start().await;
    let (stale, refresh) = fake.seed_session_for("u-one-cycle", false);
    let mut sidecar = spawn_settled(&fake).await;
    store(
        &mut sidecar,
        &stale,
        &refresh,
        unix_now() + 50,
        "u-one-cycle",
    )
    .await;
    token_outage(&fake);

    let answers = send_all(&mut sidecar, &[("user_get_profile", Value::Null)]).await;
    assert_transient(&answers.responses[0], 503);
    assert_eq!(fake.token_calls(), 8, "one refresh cycle");
    assert_eq!(fake.backend_tokens(), [stale], "sent once, not retried");
    assert!(answers.events.is_empty(), "{:?}", answers.events);
    assert_eq!(is_authenticated(&mut sidecar).await, true, "kept");
    stop(sidecar, &fake).await;
}

/// Item 3: a token refreshed for this call and refused by the backend is that call's one
/// cycle: no second refresh, no retry; the session is ended.
#[tokio::test]
async fn a_401_for_a_token_refreshed_for_the_call_is_final() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-refused", true);
    let mut sidecar = spawn_settled(&fake).await;
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() - 10,
        "u-refused",
    )
    .await;
    fake.set_backend_refuses(true);

    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_auth_expired(&profile, "unauthorized");
    assert_eq!(fake.token_calls(), 1, "one refresh");
    let seen = fake.backend_tokens();
    assert_eq!(seen.len(), 1, "one call with the refreshed token, no retry");
    assert_ne!(seen[0], access, "never the expired token");
    settle(&mut sidecar).await;
    assert_eq!(signed_out_reasons(&sidecar), [json!("expired")]);
    stop(sidecar, &fake).await;
}

/// Item 4: a sign-out with an expired access token refreshes first (as auth-js), then
/// revokes with the fresh token, for every scope. The fake refuses the expired token at
/// `/logout` (403 `bad_jwt`), so a revoke that used it would revoke nothing.
#[tokio::test]
async fn sign_out_with_an_expired_token_refreshes_first_then_revokes() {
    let fake = FakeGoTrue::start().await;
    let mut sidecar = spawn_settled(&fake).await;
    for (scope, removed, revoked) in [
        ("others", false, vec!["other-others"]),
        ("local", true, vec!["other-others", "this-local"]),
        (
            "global",
            true,
            vec!["other-others", "this-local", "this-global", "other-global"],
        ),
    ] {
        let expired_at = unix_now() - 10;
        let user = format!("u-{scope}");
        let (access, refresh) = fake.seed(crate::gotrue::Seed {
            user_id: &user,
            name: &format!("this-{scope}"),
            stale: false,
            access_expires_at: Some(expired_at),
        });
        fake.seed(crate::gotrue::Seed {
            user_id: &user,
            name: &format!("other-{scope}"),
            stale: false,
            access_expires_at: None,
        });
        for token in fake.tokens() {
            sidecar.secret(&token);
        }
        store(&mut sidecar, &access, &refresh, expired_at, &user).await;
        let calls_before = fake.token_calls();
        let out = sidecar
            .request("auth_sign_out", json!({"scope": scope}))
            .await;
        assert_eq!(out["result"]["removed"], removed, "{scope}: {out}");
        assert_eq!(
            fake.token_calls(),
            calls_before + 1,
            "{scope}: refreshed first"
        );
        let bearer = fake.logout_bearers().last().cloned().expect("a /logout");
        assert_ne!(bearer, access, "{scope}: never the expired token");
        assert_eq!(
            fake.label(&bearer),
            format!("this-{scope}.A1"),
            "{scope}: the refreshed one"
        );
        assert_eq!(fake.revoked(), revoked, "{scope}");
        assert_eq!(is_authenticated(&mut sidecar).await, !removed, "{scope}");
    }
    assert_eq!(fake.logout_calls(), ["others", "local", "global"]);
    settle(&mut sidecar).await;
    let kinds: Vec<String> = events(&sidecar).into_iter().map(|(e, _)| e).collect();
    assert_eq!(
        kinds,
        [
            "SIGNED_IN",
            "TOKEN_REFRESHED",
            "SIGNED_IN",
            "TOKEN_REFRESHED",
            "SIGNED_OUT",
            "SIGNED_IN",
            "TOKEN_REFRESHED",
            "SIGNED_OUT"
        ]
    );
    stop(sidecar, &fake).await;
}

/// Item 5: for `global` and `others`, a `/logout` that failed (5xx, a dropped connection,
/// 429) is the answer and the session is kept, so the sign-out can be retried; `local`
/// still signs this device out. Once the auth server answers, the retried `global` revokes.
#[tokio::test]
async fn a_failed_global_revoke_is_returned_and_keeps_the_session() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed(crate::gotrue::Seed {
        user_id: "u-revoke",
        name: "this",
        stale: false,
        access_expires_at: None,
    });
    fake.seed(crate::gotrue::Seed {
        user_id: "u-revoke",
        name: "other",
        stale: false,
        access_expires_at: None,
    });
    let mut sidecar = spawn(&fake, &[]);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-revoke",
    )
    .await;

    fake.set_logout_response(
        500,
        json!({"code": 500, "error_code": "unexpected_failure", "msg": "Unexpected failure"}),
    );
    for scope in ["global", "others"] {
        let out = sidecar
            .request("auth_sign_out", json!({"scope": scope}))
            .await;
        assert_transient(&out, 500);
        assert_eq!(is_authenticated(&mut sidecar).await, true, "{scope}: kept");
    }
    fake.set_logout_response(
        429,
        json!({"code": 429, "error_code": "over_request_rate_limit", "msg": "Too many requests"}),
    );
    let limited = sidecar
        .request("auth_sign_out", json!({"scope": "global"}))
        .await;
    assert_eq!(limited["error"]["code"], -32002, "{limited}");
    fake.clear_logout_response();
    fake.drop_next_connections(1);
    let dropped = sidecar
        .request("auth_sign_out", json!({"scope": "global"}))
        .await;
    assert_eq!(dropped["error"]["code"], -32004, "{dropped}");
    assert_eq!(dropped["error"]["data"]["kind"], "unavailable", "{dropped}");
    assert_eq!(is_authenticated(&mut sidecar).await, true, "kept");
    assert!(fake.revoked().is_empty(), "nothing was revoked yet");
    settle(&mut sidecar).await;
    assert!(signed_out_reasons(&sidecar).is_empty());

    // The retry, once the auth server answers: every session of the user revoked.
    let out = sidecar
        .request("auth_sign_out", json!({"scope": "global"}))
        .await;
    assert_eq!(out["result"]["removed"], true, "{out}");
    assert_eq!(fake.revoked(), ["this", "other"]);
    assert_eq!(
        fake.logout_calls(),
        ["global", "others", "global", "global"],
        "the dropped connection never reached /logout"
    );
    assert!(fake.logout_bearers().iter().all(|b| *b == access));

    // `local` signs this device out whatever `/logout` did.
    let (access, refresh) = fake.seed_session_for("u-revoke-local", true);
    sidecar.secret(&access).secret(&refresh);
    store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-revoke-local",
    )
    .await;
    fake.set_logout_response(
        500,
        json!({"code": 500, "error_code": "unexpected_failure", "msg": "Unexpected failure"}),
    );
    let local = sidecar
        .request("auth_sign_out", json!({"scope": "local"}))
        .await;
    assert_eq!(local["result"]["removed"], true, "{local}");
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    settle(&mut sidecar).await;
    assert_eq!(
        signed_out_reasons(&sidecar),
        [json!("signed_out"), json!("signed_out")]
    );
    stop(sidecar, &fake).await;
}

// 10. Real keyring (scripts/with-keyring.sh).

/// The next `auth_state_changed` that is not SIGNED_IN (nor the INITIAL_SESSION at start).
async fn next_change(sidecar: &mut Sidecar) -> Value {
    loop {
        let event = sidecar.recv_notification("auth_state_changed").await;
        if !["SIGNED_IN", "INITIAL_SESSION"]
            .contains(&event["params"]["event"].as_str().unwrap_or_default())
        {
            return event;
        }
    }
}

#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn a_rotated_session_survives_a_restart_in_the_secret_service() {
    let fake = FakeGoTrue::start().await;
    let (access, refresh) = fake.seed_session_for("u-keyring", true);
    let service = unique_service("rotate");
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ];
    let mut sidecar = spawn(&fake, &env);
    let stored = store(
        &mut sidecar,
        &access,
        &refresh,
        unix_now() + 3600,
        "u-keyring",
    )
    .await;
    assert_eq!(stored["persistent"], true, "{stored}");
    let refreshed = sidecar.request("auth_refresh_session", Value::Null).await;
    assert_eq!(refreshed["result"]["isAuthenticated"], true, "{refreshed}");
    assert_eq!(
        next_change(&mut sidecar).await["params"]["event"],
        "TOKEN_REFRESHED"
    );
    stop(sidecar, &fake).await;
    assert_eq!(fake.token_calls(), 1);

    let secret = secret_tool_json(&service).expect("the session is in the Secret Service");
    let rotated = secret["refresh_token"].as_str().expect("a refresh token");
    assert_ne!(rotated, refresh, "the old refresh token is gone");
    assert!(rotated.starts_with("refresh-"), "the one the fake issued");
    assert_ne!(secret["access_token"], access);

    let mut sidecar = spawn(&fake, &env);
    let profile = sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-keyring", "{profile}");
    assert_eq!(
        fake.backend_tokens().last().map(String::as_str),
        secret["access_token"].as_str()
    );
    assert_eq!(fake.token_calls(), 1, "no refresh after the restart");
    sidecar.request("auth_clear_session", Value::Null).await;
    stop(sidecar, &fake).await;
    assert_eq!(secret_tool_json(&service), None);
}

/// The ticker's first tick runs at start, once the stored session is loaded: a session
/// persisted with 80 s left (inside the ticker's 90 s, outside the gate's 60 s) is refreshed
/// after a restart without any call; one persisted with an unknown refresh token is signed
/// out the same way.
#[tokio::test]
#[ignore = "needs a real Secret Service / keyutils: run under scripts/with-keyring.sh"]
async fn the_first_tick_at_start_refreshes_or_signs_out_a_loaded_session() {
    let fake = FakeGoTrue::start().await;
    let service = unique_service("tick");
    let env = [
        ("CORE_SIDECAR_KEYRING", "secret-service"),
        ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
    ];

    let (access, refresh) = fake.seed_session_for("u-tick", true);
    let mut sidecar = spawn(&fake, &env);
    store(&mut sidecar, &access, &refresh, unix_now() + 80, "u-tick").await;
    stop(sidecar, &fake).await;
    assert_eq!(fake.token_calls(), 0);

    let mut sidecar = spawn(&fake, &env);
    let event = next_change(&mut sidecar).await;
    assert_eq!(event["params"]["event"], "TOKEN_REFRESHED", "{event}");
    assert_eq!(event["params"]["state"]["userId"], "u-tick", "{event}");
    assert_eq!(fake.token_calls(), 1);
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert!(
        state["result"]["expiresAt"].as_i64().unwrap_or(0) > unix_now() + 600,
        "{state}"
    );

    let (access, _) = fake.seed_session_for("u-tick-bad", true);
    let unknown = fake.unknown_token();
    sidecar.secret(&access).secret(&unknown);
    store(
        &mut sidecar,
        &access,
        &unknown,
        unix_now() + 80,
        "u-tick-bad",
    )
    .await;
    stop(sidecar, &fake).await;
    assert_eq!(fake.token_calls(), 1);

    let mut sidecar = spawn(&fake, &env);
    let event = next_change(&mut sidecar).await;
    assert_eq!(event["params"]["event"], "SIGNED_OUT", "{event}");
    assert_eq!(event["params"]["reason"], "refresh_failed", "{event}");
    assert_eq!(fake.token_calls(), 2);
    assert_eq!(is_authenticated(&mut sidecar).await, false);
    settle(&mut sidecar).await;
    assert_eq!(count(&sidecar, "SIGNED_OUT"), 0, "only the one taken above");
    stop(sidecar, &fake).await;
    assert_eq!(secret_tool_json(&service), None, "cleared from the keyring");
}
