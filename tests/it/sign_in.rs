//! The sign-in methods through the real binary against `gotrue::FakeGoTrue`: what GoTrue
//! receives for each (method, path, query, body, as @supabase/auth-js sends with
//! `flowType: 'pkce'`), the results (never a token), the events, the PKCE verifier's life
//! (in the keyring between the start of a flow and `auth_exchange_code`, then gone), and
//! the failures: `auth_failed` with GoTrue's code as `reason`, never reported to Sentry,
//! never touching the stored session; `rate_limited` for a 429.
//!
//! Every test runs with `RUST_LOG=trace` and a fake Sentry: at the end no token, verifier or
//! password may be on stdout, stderr or in a Sentry envelope, and none of these failures
//! may have reached Sentry at all.

use serde_json::{Value, json};

use crate::fake_sentry::FakeSentry;
use crate::gotrue::{FakeGoTrue, Recorded, s256, unix_now};
use crate::harness::{Sidecar, TIMEOUT, unique_service};

const API_KEY: &str = "anon-key-for-the-sign-in-tests";
const PASSWORD: &str = "correct-horse-battery-7f3a";
const OTHER_PASSWORD: &str = "another-long-password-91c2";
const REDIRECT: &str = "app://auth/callback?from=sidecar";

struct Run {
    sidecar: Sidecar,
    sentry: FakeSentry,
}

async fn start(fake: &FakeGoTrue, extra: &[(&str, &str)]) -> Run {
    let sentry = FakeSentry::start().await;
    let (base, auth, dsn) = (fake.base_url(), fake.auth_url(), sentry.dsn());
    let mut env = vec![
        ("CORE_SIDECAR_BACKEND_URL", base.as_str()),
        ("CORE_SIDECAR_AUTH_URL", auth.as_str()),
        ("CORE_SIDECAR_AUTH_API_KEY", API_KEY),
        ("SENTRY_DSN", dsn.as_str()),
        ("RUST_LOG", "trace"),
    ];
    env.extend_from_slice(extra);
    let mut sidecar = Sidecar::spawn(&env);
    sidecar.secret(PASSWORD).secret(OTHER_PASSWORD);
    Run { sidecar, sentry }
}

/// Stops the sidecar (exit 0, which flushes Sentry), then checks that no token or verifier
/// the fake knows, no password and nothing in `secrets` reached stdout, stderr or Sentry,
/// and that Sentry heard nothing at all (none of these outcomes is a fault).
async fn finish(run: Run, fake: &FakeGoTrue, secrets: &[&str]) {
    let envelopes = finish_reported(run, fake, secrets).await;
    assert_eq!(envelopes, Vec::<String>::new(), "nothing reaches Sentry");
}

/// [`finish`] that lets Sentry have events; returns them (checked free of secrets).
async fn finish_reported(run: Run, fake: &FakeGoTrue, secrets: &[&str]) -> Vec<String> {
    let Run {
        mut sidecar,
        sentry,
    } = run;
    let mut all: Vec<String> = fake.tokens();
    all.extend(secrets.iter().map(|s| s.to_string()));
    all.extend([PASSWORD.to_string(), OTHER_PASSWORD.to_string()]);
    for secret in &all {
        sidecar.secret(secret);
    }
    sidecar.close_stdin();
    let status = sidecar.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", sidecar.stderr());
    sidecar.assert_no_secrets();
    let envelopes = sentry.envelopes();
    for envelope in &envelopes {
        for secret in &all {
            assert!(
                !envelope.contains(secret.as_str()),
                "Sentry envelope leaks {secret}:\n{envelope}"
            );
        }
    }
    envelopes
}

/// Once a ping sent now is answered, every notification written before it has been read.
async fn settle(sidecar: &mut Sidecar) {
    let pong = sidecar.request("core_ping", Value::Null).await;
    assert_eq!(pong["result"]["pong"], true, "{pong}");
}

/// `(event, state)` of every `auth_state_changed` seen so far but `INITIAL_SESSION`.
async fn events(sidecar: &mut Sidecar) -> Vec<(String, Value)> {
    settle(sidecar).await;
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
                n["params"]["state"].clone(),
            )
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

async fn state(sidecar: &mut Sidecar) -> Value {
    let state = sidecar.request("auth_get_state", Value::Null).await;
    assert!(state.get("result").is_some(), "{state}");
    state["result"].clone()
}

/// Stores a seeded session of `user_id` at the fake; returns the state.
async fn store_existing(sidecar: &mut Sidecar, fake: &FakeGoTrue, user_id: &str) -> Value {
    let (access, refresh) = fake.seed_session_for(user_id, true);
    let stored = sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh,
                   "expires_at": unix_now() + 3600, "token_type": "bearer",
                   "user": {"id": user_id}}),
        )
        .await;
    assert_eq!(stored["result"]["userId"], user_id, "{stored}");
    stored["result"].clone()
}

/// The result of a successful call, checked to carry no token.
fn result(fake: &FakeGoTrue, response: &Value) -> Value {
    let result = response
        .get("result")
        .unwrap_or_else(|| panic!("a result: {response}"));
    assert_tokenless(fake, result);
    result.clone()
}

/// No member that holds a token, and no token the fake made.
fn assert_tokenless(fake: &FakeGoTrue, value: &Value) {
    fn walk(value: &Value, path: &str) {
        match value {
            Value::Object(map) => {
                for (key, member) in map {
                    assert!(
                        ![
                            "access_token",
                            "refresh_token",
                            "provider_token",
                            "provider_refresh_token",
                            "code_verifier",
                        ]
                        .contains(&key.as_str()),
                        "a token member {path}.{key} in a result"
                    );
                    walk(member, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path)),
            _ => {}
        }
    }
    walk(value, "result");
    let text = value.to_string();
    for token in fake.tokens() {
        assert!(!text.contains(&token), "a token in a result: {text}");
    }
}

fn assert_auth_failed(response: &Value, reason: &str, status: u16) {
    assert_eq!(response["error"]["data"]["status"], status, "{response}");
    assert_auth_failed_here(response, reason);
}

/// `auth_failed` of any status (absent when no request was sent).
fn assert_auth_failed_here(response: &Value, reason: &str) {
    assert_eq!(response["error"]["code"], -32006, "{response}");
    let data = &response["error"]["data"];
    assert_eq!(data["kind"], "auth_failed", "{response}");
    assert_eq!(data["retryable"], false, "{response}");
    assert_eq!(data["reason"], reason, "{response}");
}

/// `auth_failed` `flow_state_not_found` decided here: no verifier, no request, no status.
fn assert_no_flow_here(response: &Value) {
    assert_auth_failed_here(response, "flow_state_not_found");
    assert!(
        response["error"]["data"].get("status").is_none(),
        "no request, no status: {response}"
    );
}

fn assert_rate_limited(response: &Value) {
    assert_eq!(response["error"]["code"], -32002, "{response}");
    assert_eq!(
        response["error"]["data"]["kind"], "rate_limited",
        "{response}"
    );
    assert_eq!(response["error"]["data"]["status"], 429, "{response}");
}

fn assert_invalid_params(response: &Value, never_echoed: &[&str]) {
    assert_eq!(response["error"]["code"], -32602, "{response}");
    assert_eq!(
        response["error"]["data"]["kind"], "invalid_params",
        "{response}"
    );
    let text = response["error"].to_string();
    for value in never_echoed {
        assert!(!text.contains(value), "the error echoes {value}: {text}");
    }
}

/// The only request to `path` so far.
fn only(fake: &FakeGoTrue, path: &str) -> Recorded {
    let requests = fake.requests_to(path);
    assert_eq!(requests.len(), 1, "one request to {path}: {requests:?}");
    requests.into_iter().next().expect("one")
}

fn keys(names: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    keys.sort();
    keys
}

/// A PKCE S256 challenge as auth-js sends it: 43 base64url characters.
fn assert_challenge(request: &Recorded) -> String {
    let challenge = request.body["code_challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("a code_challenge: {request:?}"))
        .to_string();
    assert_challenge_shape(&challenge);
    assert_eq!(request.body["code_challenge_method"], "s256", "{request:?}");
    challenge
}

fn assert_challenge_shape(challenge: &str) {
    assert_eq!(challenge.len(), 43, "{challenge}");
    assert!(
        challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url without padding: {challenge}"
    );
}

/// The verifier of the one `/token?grant_type=pkce` request `n` (0-based), checked against
/// `challenge` and the spec's shape (64 random bytes, base64url: 86 characters).
fn exchanged_verifier(fake: &FakeGoTrue, n: usize, auth_code: &str, challenge: &str) -> String {
    let exchanges: Vec<Recorded> = fake
        .requests_to("/token")
        .into_iter()
        .filter(|r| r.query_value("grant_type") == Some("pkce"))
        .collect();
    let request = exchanges
        .get(n)
        .unwrap_or_else(|| panic!("pkce exchange #{n}: {exchanges:?}"));
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.query,
        [("grant_type".to_string(), "pkce".to_string())]
    );
    assert_eq!(request.body_keys(), keys(&["auth_code", "code_verifier"]));
    assert_eq!(request.body["auth_code"], auth_code);
    let verifier = request.body["code_verifier"]
        .as_str()
        .expect("a verifier")
        .to_string();
    assert_eq!(verifier.len(), 86, "64 bytes, base64url without padding");
    assert!(
        verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "base64url: the verifier's charset"
    );
    assert_eq!(
        s256(&verifier),
        challenge,
        "the verifier matches the challenge"
    );
    verifier
}

fn pkce_exchanges(fake: &FakeGoTrue) -> usize {
    fake.requests_to("/token")
        .iter()
        .filter(|r| r.query_value("grant_type") == Some("pkce"))
        .count()
}

fn redirect_query() -> Vec<(String, String)> {
    vec![("redirect_to".to_string(), REDIRECT.to_string())]
}

/// A signed-in state of this user, the one the event carried.
fn assert_signed_in_as(state: &Value, email: &str) {
    assert_eq!(state["isAuthenticated"], true, "{state}");
    assert_eq!(state["user"]["email"], email, "{state}");
    assert!(state["userId"].is_string(), "{state}");
}

// ---------------------------------------------------------------------------------------
// auth_sign_up

#[tokio::test]
async fn sign_up_with_autoconfirm_signs_in_at_once() {
    let fake = FakeGoTrue::start().await;
    fake.set_autoconfirm(true);
    let mut run = start(&fake, &[]).await;
    let signed = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"email": "ada@example.com", "password": PASSWORD,
                   "data": {"name": "Ada"}, "redirect_to": REDIRECT}),
        )
        .await;
    let signed = result(&fake, &signed);
    assert_eq!(signed["confirmationSent"], false, "{signed}");
    assert_signed_in_as(&signed["state"], "ada@example.com");
    assert_eq!(
        signed["state"]["user"]["user_metadata"]["name"], "Ada",
        "{signed}"
    );

    let request = only(&fake, "/signup");
    assert_eq!(request.method, "POST");
    assert_eq!(request.query, redirect_query());
    assert_eq!(
        request.body_keys(),
        keys(&[
            "email",
            "password",
            "data",
            "gotrue_meta_security",
            "code_challenge",
            "code_challenge_method"
        ])
    );
    assert_eq!(request.body["email"], "ada@example.com");
    assert_eq!(request.body["password"], PASSWORD);
    assert_eq!(request.body["data"], json!({"name": "Ada"}));
    assert_eq!(request.body["gotrue_meta_security"], json!({}));
    assert_challenge(&request);
    assert_eq!(fake.last_apikey().as_deref(), Some(API_KEY));

    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events), ["SIGNED_IN"]);
    assert_eq!(events[0].1, signed["state"], "the event carries the state");
    assert_eq!(state(&mut run.sidecar).await, signed["state"]);

    // The session works: /user with the new session's token.
    let user = run.sidecar.request("auth_get_user", Value::Null).await;
    assert_eq!(result(&fake, &user)["email"], "ada@example.com", "{user}");
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn sign_up_without_autoconfirm_sends_a_confirmation_then_the_link_signs_in() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let signed = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"email": "grace@example.com", "password": PASSWORD}),
        )
        .await;
    let signed = result(&fake, &signed);
    assert_eq!(signed["confirmationSent"], true, "{signed}");
    assert_eq!(signed["state"]["isAuthenticated"], false, "{signed}");
    let request = only(&fake, "/signup");
    assert_eq!(request.query, [], "no redirect_to given, none sent");
    assert_eq!(request.body["data"], json!({}), "data defaults to {{}}");
    let challenge = assert_challenge(&request);
    assert!(events(&mut run.sidecar).await.is_empty());

    // The confirmation link leads to the app with ?code=.
    let code = fake
        .email_link_code("grace@example.com")
        .expect("a PKCE flow for the sign-up");
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    let exchanged = result(&fake, &exchanged);
    assert_signed_in_as(&exchanged, "grace@example.com");
    let verifier = exchanged_verifier(&fake, 0, &code, &challenge);
    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events), ["SIGNED_IN"]);
    assert_eq!(events[0].1, exchanged);
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn sign_up_with_a_phone_sends_no_pkce() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let signed = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"phone": "+15550100", "password": PASSWORD, "data": {"plan": "pro"}}),
        )
        .await;
    let signed = result(&fake, &signed);
    assert_eq!(signed["confirmationSent"], true, "{signed}");
    let request = only(&fake, "/signup");
    assert_eq!(
        request.body_keys(),
        keys(&[
            "phone",
            "password",
            "data",
            "channel",
            "gotrue_meta_security"
        ])
    );
    assert_eq!(request.body["channel"], "sms");
    assert_eq!(request.body["data"], json!({"plan": "pro"}));

    // The SMS code signs in.
    let code = fake.last_otp("+15550100").expect("an SMS code");
    let verified = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"phone": "+15550100", "token": code, "type": "sms"}),
        )
        .await;
    let verified = result(&fake, &verified);
    assert_eq!(verified["isAuthenticated"], true, "{verified}");
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn sign_up_refusals_are_auth_failed_and_keep_the_session() {
    let fake = FakeGoTrue::start().await;
    fake.set_autoconfirm(true);
    fake.add_user("taken@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let before = store_existing(&mut run.sidecar, &fake, "u-before").await;
    let stored_events = events(&mut run.sidecar).await.len();

    let weak = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"email": "new@example.com", "password": "12345"}),
        )
        .await;
    assert_auth_failed(&weak, "weak_password", 422);
    let taken = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"email": "taken@example.com", "password": OTHER_PASSWORD}),
        )
        .await;
    assert_auth_failed(&taken, "user_already_exists", 422);
    assert_eq!(fake.requests_to("/signup").len(), 2);

    assert_eq!(state(&mut run.sidecar).await, before, "the session is kept");
    assert_eq!(
        events(&mut run.sidecar).await.len(),
        stored_events,
        "no event"
    );
    finish(run, &fake, &[]).await;
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_password

#[tokio::test]
async fn password_sign_in_replaces_the_session() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("lin@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    store_existing(&mut run.sidecar, &fake, "u-before").await;
    let before_events = events(&mut run.sidecar).await.len();

    let signed = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "lin@example.com", "password": PASSWORD}),
        )
        .await;
    let signed = result(&fake, &signed);
    assert_signed_in_as(&signed, "lin@example.com");
    assert_ne!(signed["userId"], "u-before");

    let request = only(&fake, "/token");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.query,
        [("grant_type".to_string(), "password".to_string())]
    );
    assert_eq!(
        request.body_keys(),
        keys(&["email", "password", "gotrue_meta_security"])
    );
    assert_eq!(request.body["email"], "lin@example.com");
    assert_eq!(request.body["password"], PASSWORD);
    assert_eq!(request.body["gotrue_meta_security"], json!({}));

    let events = events(&mut run.sidecar).await;
    assert_eq!(
        names(&events[before_events..]),
        ["SIGNED_IN"],
        "one SIGNED_IN, no SIGNED_OUT for the replaced session"
    );
    assert_eq!(events[before_events].1, signed);
    assert_eq!(state(&mut run.sidecar).await, signed);

    // The new session is the one used: the backend sees its token.
    let profile = run.sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["email"], "lin@example.com", "{profile}");
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn password_sign_in_with_a_phone() {
    let fake = FakeGoTrue::start().await;
    fake.add_phone_user("+15550111", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let signed = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"phone": "+15550111", "password": PASSWORD}),
        )
        .await;
    let signed = result(&fake, &signed);
    assert_eq!(signed["isAuthenticated"], true, "{signed}");
    let request = only(&fake, "/token");
    assert_eq!(
        request.body_keys(),
        keys(&["phone", "password", "gotrue_meta_security"])
    );
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn a_wrong_password_is_auth_failed_and_keeps_the_session() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("lin@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let before = store_existing(&mut run.sidecar, &fake, "u-before").await;
    let before_events = events(&mut run.sidecar).await.len();

    let wrong = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "lin@example.com", "password": OTHER_PASSWORD}),
        )
        .await;
    assert_auth_failed(&wrong, "invalid_credentials", 400);
    let unknown = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_auth_failed(&unknown, "invalid_credentials", 400);

    assert_eq!(state(&mut run.sidecar).await, before);
    assert_eq!(events(&mut run.sidecar).await.len(), before_events);
    // Still usable: the stored session's token goes to the backend.
    let profile = run.sidecar.request("user_get_profile", Value::Null).await;
    assert_eq!(profile["result"]["id"], "u-before", "{profile}");
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn a_429_is_rate_limited_and_not_retried() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("lin@example.com", PASSWORD);
    fake.fail_next_token(
        1,
        429,
        json!({"code": 429, "error_code": "over_request_rate_limit", "msg": "Request rate limit reached"}),
    );
    let mut run = start(&fake, &[]).await;
    let limited = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "lin@example.com", "password": PASSWORD}),
        )
        .await;
    assert_rate_limited(&limited);
    assert_eq!(fake.token_calls(), 1, "one request");
    assert_eq!(state(&mut run.sidecar).await["isAuthenticated"], false);
    assert!(events(&mut run.sidecar).await.is_empty());

    fake.set_email_rate_limited(true);
    let limited = run
        .sidecar
        .request("auth_sign_in_with_otp", json!({"email": "lin@example.com"}))
        .await;
    assert_rate_limited(&limited);
    let limited = run
        .sidecar
        .request(
            "auth_reset_password_for_email",
            json!({"email": "lin@example.com"}),
        )
        .await;
    assert_rate_limited(&limited);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn a_5xx_is_a_backend_error_and_reaches_sentry_without_secrets() {
    // The control for every other test here: in this setup a fault does reach Sentry.
    let fake = FakeGoTrue::start().await;
    fake.add_user("lin@example.com", PASSWORD);
    fake.fail_next_token(
        1,
        500,
        json!({"code": 500, "error_code": "unexpected_failure", "msg": "boom"}),
    );
    let mut run = start(&fake, &[]).await;
    let failed = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "lin@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(failed["error"]["code"], -32003, "{failed}");
    assert_eq!(failed["error"]["data"]["retryable"], true, "{failed}");
    assert_eq!(fake.token_calls(), 1, "a sign-in is not retried");
    let envelopes = finish_reported(run, &fake, &[]).await;
    assert_eq!(envelopes.len(), 1, "{envelopes:?}");
}

#[tokio::test]
async fn a_redirect_from_a_sign_in_endpoint_is_an_error_and_not_followed() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("lin@example.com", PASSWORD);
    let elsewhere = format!("{}/redirected", fake.auth_url());
    fake.reply_next_token(302, &[("location", &elsewhere)], "");
    let mut run = start(&fake, &[]).await;
    let redirected = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "lin@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(redirected["error"]["code"], -32003, "{redirected}");
    assert_eq!(
        redirected["error"]["data"]["kind"], "backend",
        "{redirected}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "not followed: {:?}",
        fake.requests()
    );
    assert_eq!(state(&mut run.sidecar).await["isAuthenticated"], false);
    finish(run, &fake, &[]).await;
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_otp, auth_verify_otp

#[tokio::test]
async fn email_otp_a_wrong_code_keeps_the_session_the_right_one_signs_in_once() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("otto@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let before = store_existing(&mut run.sidecar, &fake, "u-before").await;
    let before_events = events(&mut run.sidecar).await.len();

    let sent = run
        .sidecar
        .request(
            "auth_sign_in_with_otp",
            json!({"email": "otto@example.com", "redirect_to": REDIRECT}),
        )
        .await;
    assert_eq!(result(&fake, &sent), json!({"sent": true}));
    let request = only(&fake, "/otp");
    assert_eq!(request.method, "POST");
    assert_eq!(request.query, redirect_query());
    assert_eq!(
        request.body_keys(),
        keys(&[
            "email",
            "data",
            "create_user",
            "gotrue_meta_security",
            "code_challenge",
            "code_challenge_method"
        ])
    );
    assert_eq!(request.body["create_user"], true);
    assert_eq!(request.body["data"], json!({}));
    assert_challenge(&request);
    assert_eq!(
        state(&mut run.sidecar).await,
        before,
        "sending changes nothing"
    );

    let code = fake.last_otp("otto@example.com").expect("a code");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"email": "otto@example.com", "token": wrong, "type": "email"}),
        )
        .await;
    assert_auth_failed(&refused, "otp_expired", 403);
    assert_eq!(state(&mut run.sidecar).await, before, "the session is kept");
    assert_eq!(events(&mut run.sidecar).await.len(), before_events);

    let verified = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"email": "otto@example.com", "token": code, "type": "email"}),
        )
        .await;
    let verified = result(&fake, &verified);
    assert_signed_in_as(&verified, "otto@example.com");
    let request = fake.requests_to("/verify").pop().expect("a /verify");
    assert_eq!(
        request.body_keys(),
        keys(&["email", "token", "type", "gotrue_meta_security"])
    );
    assert_eq!(request.body["token"], code.as_str());
    assert_eq!(request.body["type"], "email");
    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events[before_events..]), ["SIGNED_IN"]);
    assert_eq!(events[before_events].1, verified);

    // Single use: the same code again fails and the new session stays.
    let again = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"email": "otto@example.com", "token": code, "type": "email"}),
        )
        .await;
    assert_auth_failed(&again, "otp_expired", 403);
    assert_eq!(state(&mut run.sidecar).await, verified);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn otp_without_create_user_for_an_unknown_address_is_otp_disabled() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let refused = run
        .sidecar
        .request(
            "auth_sign_in_with_otp",
            json!({"email": "stranger@example.com", "create_user": false,
                   "data": {"source": "test"}}),
        )
        .await;
    assert_auth_failed(&refused, "otp_disabled", 422);
    let request = only(&fake, "/otp");
    assert_eq!(request.body["create_user"], false);
    assert_eq!(request.body["data"], json!({"source": "test"}));
    assert!(fake.last_otp("stranger@example.com").is_none());
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn phone_otp_sends_sms_without_pkce() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let sent = run
        .sidecar
        .request("auth_sign_in_with_otp", json!({"phone": "+15550123"}))
        .await;
    assert_eq!(result(&fake, &sent), json!({"sent": true}));
    let request = only(&fake, "/otp");
    assert_eq!(
        request.body_keys(),
        keys(&[
            "phone",
            "data",
            "create_user",
            "gotrue_meta_security",
            "channel"
        ])
    );
    assert_eq!(request.body["channel"], "sms");
    assert_eq!(request.body["create_user"], true);
    let code = fake.last_otp("+15550123").expect("an SMS code");
    let verified = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"phone": "+15550123", "token": code, "type": "sms"}),
        )
        .await;
    assert_eq!(result(&fake, &verified)["isAuthenticated"], true);
    let request = fake.requests_to("/verify").pop().expect("a /verify");
    assert_eq!(
        request.body_keys(),
        keys(&["phone", "token", "type", "gotrue_meta_security"])
    );
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn verify_with_a_token_hash() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("hash@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let sent = run
        .sidecar
        .request(
            "auth_sign_in_with_otp",
            json!({"email": "hash@example.com"}),
        )
        .await;
    assert_eq!(result(&fake, &sent), json!({"sent": true}));
    let hash = fake.last_token_hash("hash@example.com").expect("a link");
    let verified = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"token_hash": hash, "type": "magiclink"}),
        )
        .await;
    assert_signed_in_as(&result(&fake, &verified), "hash@example.com");
    let request = fake.requests_to("/verify").pop().expect("a /verify");
    assert_eq!(
        request.body_keys(),
        keys(&["token_hash", "type", "gotrue_meta_security"])
    );
    assert_eq!(request.body["token_hash"], hash.as_str());
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn a_magic_link_code_is_exchanged() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("link@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    run.sidecar
        .request(
            "auth_sign_in_with_otp",
            json!({"email": "link@example.com"}),
        )
        .await;
    let challenge = assert_challenge(&only(&fake, "/otp"));
    let code = fake.email_link_code("link@example.com").expect("a flow");
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    assert_signed_in_as(&result(&fake, &exchanged), "link@example.com");
    let verifier = exchanged_verifier(&fake, 0, &code, &challenge);
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn invalid_params_name_the_field_and_never_echo_the_value() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let calls = [
        ("auth_sign_in_with_password", json!({"password": PASSWORD})),
        (
            "auth_sign_in_with_password",
            json!({"email": "echo-me@example.com", "phone": "+15559876", "password": PASSWORD}),
        ),
        (
            "auth_sign_up",
            json!({"email": "echo-me@example.com", "phone": "+15559876", "password": PASSWORD}),
        ),
        ("auth_sign_in_with_otp", json!({})),
        (
            "auth_verify_otp",
            json!({"email": "echo-me@example.com", "token": "123456", "type": "echo-me-type"}),
        ),
        (
            "auth_verify_otp",
            json!({"token": "123456", "type": "email"}),
        ),
        ("auth_exchange_code", json!({})),
        ("auth_sign_in_with_oauth", json!({})),
        (
            "auth_sign_in_with_otp",
            json!({"email": "echo-me@example.com", "redirectTo": "app://typo"}),
        ),
        (
            "auth_verify_otp",
            json!({"email": "echo-me@example.com", "token": "123456",
                   "token_hash": "echo-me-hash", "type": "email"}),
        ),
        ("auth_update_user", json!({})),
    ];
    for (method, params) in calls {
        let response = run.sidecar.request(method, params.clone()).await;
        assert_invalid_params(
            &response,
            &[
                PASSWORD,
                "echo-me@example.com",
                "+15559876",
                "echo-me-type",
                "echo-me-hash",
            ],
        );
        assert!(
            response["error"]["data"]["field"].is_string(),
            "{method} {params}: {response}"
        );
    }
    let bad_type = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"email": "a@example.com", "token": "123456", "type": "echo-me-type"}),
        )
        .await;
    assert_eq!(bad_type["error"]["data"]["field"], "type", "{bad_type}");
    assert_eq!(fake.requests(), [], "nothing sent");
    finish(run, &fake, &[]).await;
}

// ---------------------------------------------------------------------------------------
// auth_reset_password_for_email

#[tokio::test]
async fn password_recovery_by_code_emits_password_recovery() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("rec@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    let sent = run
        .sidecar
        .request(
            "auth_reset_password_for_email",
            json!({"email": "rec@example.com", "redirect_to": REDIRECT}),
        )
        .await;
    assert_eq!(result(&fake, &sent), json!({"sent": true}));
    let request = only(&fake, "/recover");
    assert_eq!(request.method, "POST");
    assert_eq!(request.query, redirect_query());
    assert_eq!(
        request.body_keys(),
        keys(&[
            "email",
            "code_challenge",
            "code_challenge_method",
            "gotrue_meta_security"
        ])
    );
    assert_challenge(&request);
    assert!(events(&mut run.sidecar).await.is_empty());

    let code = fake.last_otp("rec@example.com").expect("a recovery code");
    let verified = run
        .sidecar
        .request(
            "auth_verify_otp",
            json!({"email": "rec@example.com", "token": code, "type": "recovery"}),
        )
        .await;
    let verified = result(&fake, &verified);
    assert_signed_in_as(&verified, "rec@example.com");
    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events), ["PASSWORD_RECOVERY"]);
    assert_eq!(events[0].1, verified);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn password_recovery_by_link_then_a_new_password() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("rec@example.com", PASSWORD);
    let mut run = start(&fake, &[]).await;
    run.sidecar
        .request(
            "auth_reset_password_for_email",
            json!({"email": "rec@example.com"}),
        )
        .await;
    let challenge = assert_challenge(&only(&fake, "/recover"));
    let code = fake.email_link_code("rec@example.com").expect("a flow");
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    let exchanged = result(&fake, &exchanged);
    assert_signed_in_as(&exchanged, "rec@example.com");
    let verifier = exchanged_verifier(&fake, 0, &code, &challenge);
    assert_eq!(
        names(&events(&mut run.sidecar).await),
        ["PASSWORD_RECOVERY"]
    );

    // The new password.
    let updated = run
        .sidecar
        .request("auth_update_user", json!({"password": OTHER_PASSWORD}))
        .await;
    result(&fake, &updated);
    let request = only(&fake, "/user");
    assert_eq!(request.method, "PUT");
    assert_eq!(request.body["password"], OTHER_PASSWORD);
    let signed = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": "rec@example.com", "password": OTHER_PASSWORD}),
        )
        .await;
    assert_signed_in_as(&result(&fake, &signed), "rec@example.com");
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn recovery_for_an_unknown_address_answers_sent_all_the_same() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let sent = run
        .sidecar
        .request(
            "auth_reset_password_for_email",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(result(&fake, &sent), json!({"sent": true}));
    // Its verifier is stored, but no flow exists: an exchange fails as GoTrue says.
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": "not-a-code"}))
        .await;
    assert_auth_failed(&exchanged, "flow_state_not_found", 404);
    finish(run, &fake, &[]).await;
}

// ---------------------------------------------------------------------------------------
// auth_sign_in_with_oauth, auth_exchange_code

/// The OAuth URL's query pairs, checked to be under `{AUTH_URL}/authorize`.
fn oauth_query(fake: &FakeGoTrue, url: &str) -> Vec<(String, String)> {
    let prefix = format!("{}/authorize?", fake.auth_url());
    let query = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is under {prefix}"));
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// GETs the OAuth URL from the fake (no redirect followed); returns the auth code of the
/// redirect to the app.
pub(crate) async fn authorize(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = tokio::time::timeout(TIMEOUT, client.get(url).send())
        .await
        .expect("in time")
        .expect("the fake answers");
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"]
        .to_str()
        .expect("text")
        .to_string();
    let (_, query) = location
        .split_once('?')
        .unwrap_or_else(|| panic!("a query in {location}"));
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("?code= in {location}"))
}

async fn oauth_url(run: &mut Run, fake: &FakeGoTrue, params: Value) -> String {
    let started = run.sidecar.request("auth_sign_in_with_oauth", params).await;
    result(fake, &started)["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a url: {started}"))
        .to_string()
}

#[tokio::test]
async fn oauth_url_exchange_and_a_second_exchange_of_the_same_code() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let url = oauth_url(
        &mut run,
        &fake,
        json!({"provider": "github", "redirect_to": REDIRECT, "scopes": "repo read:user",
               "query_params": {"login_hint": "a b"}}),
    )
    .await;
    assert_eq!(fake.requests(), [], "no network call to start");
    // auth-js's encodings: encodeURIComponent for `scopes`, URLSearchParams for the rest.
    assert!(url.contains("&scopes=repo%20read%3Auser&"), "{url}");
    assert!(url.ends_with("&login_hint=a+b"), "{url}");
    let query = oauth_query(&fake, &url);
    let query_names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        query_names,
        [
            "provider",
            "redirect_to",
            "scopes",
            "code_challenge",
            "code_challenge_method",
            "login_hint"
        ],
        "auth-js's order: {url}"
    );
    assert_eq!(query[0].1, "github");
    assert_eq!(query[1].1, REDIRECT);
    assert_eq!(query[2].1, "repo read:user");
    let challenge = query[3].1.clone();
    assert_challenge_shape(&challenge);
    assert_eq!(query[4].1, "s256");
    assert_eq!(query[5].1, "a b");
    assert!(events(&mut run.sidecar).await.is_empty());

    let code = authorize(&url).await;
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    let exchanged = result(&fake, &exchanged);
    assert_signed_in_as(&exchanged, "github.user@example.com");
    let verifier = exchanged_verifier(&fake, 0, &code, &challenge);
    let events_after = events(&mut run.sidecar).await;
    assert_eq!(names(&events_after), ["SIGNED_IN"]);
    assert_eq!(events_after[0].1, exchanged);

    // The same code again: the verifier is gone, nothing is sent, the session stays.
    let again = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    assert_no_flow_here(&again);
    assert_eq!(pkce_exchanges(&fake), 1, "no verifier, no request");
    assert_eq!(state(&mut run.sidecar).await, exchanged);
    assert_eq!(names(&events(&mut run.sidecar).await), ["SIGNED_IN"]);
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn oauth_query_params_keep_the_order_they_were_given_in() {
    // auth-js appends `new URLSearchParams(queryParams)`: the object's own order.
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    // A raw line: json! would sort the members.
    run.sidecar
        .send_line(
            r#"{"jsonrpc":"2.0","id":"oauth","method":"auth_sign_in_with_oauth","params":{"provider":"github","query_params":{"prompt":"consent","login_hint":"x","access_type":"offline"}}}"#,
        )
        .await;
    let started = run.sidecar.recv_response(&json!("oauth")).await;
    let url = result(&fake, &started)["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a url: {started}"))
        .to_string();
    assert!(
        url.ends_with(
            "&code_challenge_method=s256&prompt=consent&login_hint=x&access_type=offline"
        ),
        "{url}"
    );
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn a_new_flow_replaces_the_verifier_and_a_failed_exchange_deletes_it() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let before = store_existing(&mut run.sidecar, &fake, "u-before").await;
    let before_events = events(&mut run.sidecar).await.len();

    let first = oauth_url(&mut run, &fake, json!({"provider": "google"})).await;
    let first_code = authorize(&first).await;
    let second = oauth_url(&mut run, &fake, json!({"provider": "google"})).await;
    let second_challenge = oauth_query(&fake, &second)
        .into_iter()
        .find(|(k, _)| k == "code_challenge")
        .expect("a challenge")
        .1;
    let second_code = authorize(&second).await;

    // The first code goes with the second flow's verifier: GoTrue refuses it.
    let refused = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": first_code}))
        .await;
    assert_auth_failed(&refused, "bad_code_verifier", 400);
    let sent = fake
        .requests_to("/token")
        .pop()
        .expect("the exchange was sent");
    let verifier = sent.body["code_verifier"]
        .as_str()
        .expect("a verifier")
        .to_string();
    assert_eq!(
        s256(&verifier),
        second_challenge,
        "the newest flow's verifier"
    );
    assert_eq!(state(&mut run.sidecar).await, before, "the session is kept");

    // Deleted whatever the answer: the right code now has no verifier.
    let gone = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": second_code}))
        .await;
    assert_no_flow_here(&gone);
    assert_eq!(pkce_exchanges(&fake), 1);
    assert_eq!(state(&mut run.sidecar).await, before);
    assert_eq!(events(&mut run.sidecar).await.len(), before_events);
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn a_refused_flow_and_a_sign_up_signed_in_at_once_leave_no_verifier() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let refused = run
        .sidecar
        .request(
            "auth_sign_in_with_otp",
            json!({"email": "stranger@example.com", "create_user": false}),
        )
        .await;
    assert_auth_failed(&refused, "otp_disabled", 422);
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": "any-code"}))
        .await;
    assert_no_flow_here(&exchanged);

    fake.set_autoconfirm(true);
    let signed = run
        .sidecar
        .request(
            "auth_sign_up",
            json!({"email": "quick@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(result(&fake, &signed)["confirmationSent"], false);
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": "any-code"}))
        .await;
    assert_no_flow_here(&exchanged);
    assert_eq!(pkce_exchanges(&fake), 0);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn an_expired_flow_is_auth_failed() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let url = oauth_url(&mut run, &fake, json!({"provider": "github"})).await;
    let code = authorize(&url).await;
    fake.age_flow_states(std::time::Duration::from_secs(301));
    let expired = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    // GoTrue answers 422 for an expired flow state.
    assert_auth_failed(&expired, "flow_state_expired", 422);
    assert_eq!(state(&mut run.sidecar).await["isAuthenticated"], false);
    let verifier = fake.requests_to("/token").pop().expect("sent").body["code_verifier"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    finish(run, &fake, &[&verifier]).await;
}

/// The PKCE entry the Secret Service holds for `service`, parsed.
fn pkce_entry(service: &str) -> Option<Value> {
    let output = std::process::Command::new("secret-tool")
        .args(["lookup", "service", service, "username", "default.pkce"])
        .output()
        .expect("secret-tool (package libsecret-tools) runs");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    (output.status.success() && !text.is_empty())
        .then(|| serde_json::from_str(&text).expect("one JSON secret"))
}

#[tokio::test]
#[ignore = "needs a real Secret Service: run under scripts/with-keyring.sh"]
async fn the_verifier_lives_in_the_keyring_until_the_exchange() {
    let service = unique_service("pkce");
    let fake = FakeGoTrue::start().await;
    let mut run = start(
        &fake,
        &[
            ("CORE_SIDECAR_KEYRING", "secret-service"),
            ("CORE_SIDECAR_KEYRING_SERVICE", service.as_str()),
        ],
    )
    .await;
    assert_eq!(pkce_entry(&service), None);
    let url = oauth_url(&mut run, &fake, json!({"provider": "github"})).await;
    let challenge = oauth_query(&fake, &url)
        .into_iter()
        .find(|(k, _)| k == "code_challenge")
        .expect("a challenge")
        .1;
    let entry = pkce_entry(&service).expect("the verifier is in the keyring");
    let verifier = entry["code_verifier"]
        .as_str()
        .unwrap_or_else(|| panic!("a code_verifier member"))
        .to_string();
    run.sidecar.secret(&verifier);
    assert_eq!(s256(&verifier), challenge);
    assert_eq!(entry["flow"], "oauth");
    let created = entry["created_at"].as_i64().expect("created_at, unix s");
    assert!((created - unix_now()).abs() < 60, "{created}");

    let code = authorize(&url).await;
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    assert_signed_in_as(&result(&fake, &exchanged), "github.user@example.com");
    assert_eq!(pkce_entry(&service), None, "deleted after the exchange");
    let session = crate::harness::secret_tool_json(&service).expect("the session is stored");
    assert_eq!(session["user"]["email"], "github.user@example.com");
    run.sidecar.request("auth_clear_session", Value::Null).await;
    finish(run, &fake, &[&verifier]).await;
}

// ---------------------------------------------------------------------------------------
// auth_update_user

async fn signed_in(run: &mut Run, fake: &FakeGoTrue, email: &str) -> Value {
    fake.add_user(email, PASSWORD);
    let signed = run
        .sidecar
        .request(
            "auth_sign_in_with_password",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    result(fake, &signed)
}

#[tokio::test]
async fn update_user_data_emits_user_updated() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    signed_in(&mut run, &fake, "upd@example.com").await;
    let before_events = events(&mut run.sidecar).await.len();

    let updated = run
        .sidecar
        .request("auth_update_user", json!({"data": {"theme": "dark"}}))
        .await;
    let updated = result(&fake, &updated);
    assert_eq!(
        updated["user"]["user_metadata"]["theme"], "dark",
        "{updated}"
    );
    assert_eq!(updated["user"]["email"], "upd@example.com");

    let request = only(&fake, "/user");
    assert_eq!(request.method, "PUT");
    assert_eq!(request.query, []);
    assert_eq!(request.body["data"], json!({"theme": "dark"}));
    // auth-js sends `code_challenge`/`code_challenge_method` null when no email is given.
    for key in ["code_challenge", "code_challenge_method"] {
        assert!(request.body[key].is_null(), "{key}: {request:?}");
    }
    for key in request.body_keys() {
        assert!(
            ["data", "code_challenge", "code_challenge_method"].contains(&key.as_str()),
            "only the given fields: {request:?}"
        );
    }
    let journal = fake.journal();
    assert!(
        journal
            .iter()
            .any(|j| j.starts_with("PUT /user ") && j.ends_with(".A0")),
        "PUT /user with the signed-in session's access token: {journal:?}"
    );

    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events[before_events..]), ["USER_UPDATED"]);
    assert_eq!(
        events[before_events].1["user"]["user_metadata"]["theme"],
        "dark"
    );
    assert_eq!(
        state(&mut run.sidecar).await["user"]["user_metadata"]["theme"],
        "dark"
    );
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn update_user_email_starts_a_pkce_email_change() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    signed_in(&mut run, &fake, "old@example.com").await;
    let updated = run
        .sidecar
        .request(
            "auth_update_user",
            json!({"email": "new@example.com", "redirect_to": REDIRECT}),
        )
        .await;
    let updated = result(&fake, &updated);
    assert_eq!(updated["user"]["new_email"], "new@example.com", "{updated}");
    let request = only(&fake, "/user");
    assert_eq!(request.query, redirect_query());
    assert_eq!(
        request.body_keys(),
        keys(&["email", "code_challenge", "code_challenge_method"])
    );
    let challenge = assert_challenge(&request);

    let code = fake.email_link_code("new@example.com").expect("a flow");
    let exchanged = run
        .sidecar
        .request("auth_exchange_code", json!({"auth_code": code}))
        .await;
    assert_signed_in_as(&result(&fake, &exchanged), "new@example.com");
    let verifier = exchanged_verifier(&fake, 0, &code, &challenge);
    finish(run, &fake, &[&verifier]).await;
}

#[tokio::test]
async fn update_user_refusals_are_auth_failed_and_keep_the_session() {
    let fake = FakeGoTrue::start().await;
    fake.add_user("taken@example.com", OTHER_PASSWORD);
    let mut run = start(&fake, &[]).await;
    let signed = signed_in(&mut run, &fake, "me@example.com").await;
    let before_events = events(&mut run.sidecar).await.len();

    let weak = run
        .sidecar
        .request("auth_update_user", json!({"password": "123"}))
        .await;
    assert_auth_failed(&weak, "weak_password", 422);
    let taken = run
        .sidecar
        .request("auth_update_user", json!({"email": "taken@example.com"}))
        .await;
    assert_auth_failed(&taken, "email_exists", 422);
    assert_eq!(state(&mut run.sidecar).await, signed);
    assert_eq!(events(&mut run.sidecar).await.len(), before_events);
    finish(run, &fake, &[]).await;
}

#[tokio::test]
async fn update_user_when_the_session_is_gone_or_the_token_refused() {
    let fake = FakeGoTrue::start().await;
    let mut run = start(&fake, &[]).await;
    let none = run
        .sidecar
        .request("auth_update_user", json!({"data": {"a": 1}}))
        .await;
    assert_eq!(none["error"]["data"]["kind"], "auth_expired", "{none}");
    assert_eq!(none["error"]["data"]["reason"], "no_session", "{none}");

    // A token GoTrue does not accept (bad_jwt): an error, the session kept.
    let (access, refresh) = fake.seed_session_for("u-stale", false);
    run.sidecar
        .request(
            "auth_store_session",
            json!({"access_token": access, "refresh_token": refresh,
                   "expires_at": unix_now() + 3600, "user": {"id": "u-stale"}}),
        )
        .await;
    let stale = run
        .sidecar
        .request("auth_update_user", json!({"data": {"a": 1}}))
        .await;
    assert_eq!(stale["error"]["code"], -32003, "{stale}");
    assert_eq!(state(&mut run.sidecar).await["userId"], "u-stale");

    // The session ended elsewhere: auth_expired, signed out.
    let before = store_existing(&mut run.sidecar, &fake, "u-gone").await;
    assert_eq!(before["userId"], "u-gone");
    let name = format!("u-gone#{}", fake.sessions_started() - 1);
    fake.revoke_family(&name);
    let gone = run
        .sidecar
        .request("auth_update_user", json!({"data": {"a": 1}}))
        .await;
    assert_eq!(gone["error"]["code"], -32001, "{gone}");
    assert_eq!(
        gone["error"]["data"]["reason"], "session_not_found",
        "{gone}"
    );
    assert_eq!(state(&mut run.sidecar).await["isAuthenticated"], false);
    let events = events(&mut run.sidecar).await;
    assert_eq!(names(&events).last(), Some(&"SIGNED_OUT"), "{events:?}");
    finish(run, &fake, &[]).await;
}
