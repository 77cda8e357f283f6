//! A fake GoTrue (under `/auth/v1`) that is also the product backend (`/auth/me`,
//! `/agent-integrations/composio/toolkits`), on one 127.0.0.1:0 server.
//!
//! It rotates like GoTrue: each refresh token is single-use; an unknown one is
//! `400 refresh_token_not_found`. A refresh issues a new access token (`access-<n>-<random>`)
//! and refresh token (`refresh-<n>-<random>`). Reusing a spent refresh token within the
//! reuse interval ([`FakeGoTrue::set_reuse_interval`], zero unless set) answers a new access
//! token with the family's current refresh token, as GoTrue does; past it, the whole token
//! family (the session) is revoked and the answer is `400 refresh_token_already_used`. Old
//! access tokens stay valid (as GoTrue JWTs do until they expire) unless the session was
//! revoked (reuse, `/logout`) or they have expired (seeded with an expiry); a *stale* one
//! the backend refuses comes from `seed_session(false)`.
//!
//! `/user`, `/logout` and the backend routes judge the bearer token as GoTrue would: 403
//! `bad_jwt` (backend: 401) for an unknown, stale or expired one, 403 `session_not_found`
//! (backend: 401) for one of a revoked session. A successful `/logout` revokes by scope:
//! `local` this session, `global` every session of the user, `others` every other one.
//!
//! Errors the fake makes itself come in the shape GoTrue picks for the request: with
//! `X-Supabase-Api-Version: 2024-01-01` (auth-js sends it) `{code: "<code>", message}` and
//! that header back; without (the sidecar) `{code: <status>, error_code, msg}`. Both carry
//! `x-sb-error-code`.
//!
//! It also signs in as GoTrue does with PKCE (see the impl block for the sign-in tests):
//! `/signup`, `/token?grant_type=password`, `/otp`, `/verify`, `/recover`, `/authorize`,
//! `/token?grant_type=pkce` and `PUT /user`, over accounts added with
//! [`FakeGoTrue::add_user`] or signed up; codes it "emails" are read with
//! [`FakeGoTrue::last_otp`], flow states expire after 300 s and are used up only by a
//! successful exchange. Every auth-server request is also recorded in full (method, path,
//! query pairs, JSON body: [`FakeGoTrue::requests`]) for comparison with what auth-js sends.
//!
//! Test switches: canned `/token` failures, raw `/token` answers with headers, holding the
//! next `/token` request until released, canned `/user` and `/logout` answers (with or
//! without headers), dropping the next connections unanswered (a network failure for the
//! client: every answer says `Connection: close`, so each request opens its own). Every
//! request is journalled with a label for its token ([`FakeGoTrue::journal`]), and every
//! token it ever made is in [`FakeGoTrue::tokens`] so tests can register them as secrets
//! with the harness.
#![allow(dead_code)] // shared helpers; not every test uses each one

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::TIMEOUT;

/// The API version auth-js asks for, and GoTrue's answer shape for it.
const API_VERSION: &str = "2024-01-01";

/// How a token family (one GoTrue session) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revoked {
    /// A spent refresh token was reused past the reuse interval.
    Reuse,
    /// `/logout` (the session row is gone).
    Logout,
}

/// One GoTrue session: its refresh tokens form a chain, the last one active.
struct Family {
    /// Prefix of its tokens' labels (empty for the first family of the differential tests).
    name: String,
    user_id: String,
    user: Value,
    revoked: Option<Revoked>,
    /// The current refresh token and its generation.
    active: String,
    generation: usize,
}

struct RefreshEntry {
    family: usize,
    generation: usize,
    used_at: Option<Instant>,
}

struct AccessEntry {
    family: usize,
    /// Refused by the backend and `/user` whatever else holds (`seed_session(false)`).
    stale: bool,
    /// Unix seconds; `None`: never expires here.
    expires_at: Option<i64>,
}

/// Why a bearer token is refused.
enum Refusal {
    BadJwt(&'static str),
    SessionGone,
}

/// The next `/token` request waits for `released` once it has set `arrived`.
struct Hold {
    armed: bool,
    arrived: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

/// A raw answer: status, headers, body.
type RawReply = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct Inner {
    n: usize,
    families: Vec<Family>,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    /// A label for every token made: `A<generation>` / `R<generation>`, prefixed with the
    /// family's name and a dot when it has one.
    labels: HashMap<String, String>,
    reuse_interval: Duration,
    token_calls: usize,
    /// Refresh tokens presented to `/token`, in order.
    presented: Vec<String>,
    logout_calls: Vec<String>,
    logout_bearers: Vec<String>,
    logout_response: Option<RawReply>,
    failures: VecDeque<(u16, String)>,
    /// Canned `/token` answers with headers, taken after `failures`.
    replies: VecDeque<RawReply>,
    user_response: Option<RawReply>,
    user_calls: usize,
    last_apikey: Option<String>,
    /// Bearer tokens the backend routes saw, in order.
    backend_tokens: Vec<String>,
    /// Every request in order: what, and the raw token it carried (or "").
    journal: Vec<(String, String)>,
    /// Connections to accept and close unanswered.
    drop_connections: usize,
    /// The backend routes answer 401 to every token.
    backend_refuses: bool,
    /// Every token made, for the harness's secret check.
    tokens: Vec<String>,
    hold: Option<Hold>,
    /// Every auth-server request in full, in order.
    requests: Vec<Recorded>,
    /// The accounts sign-ins know (seeded sessions' users join on their first `PUT /user`).
    accounts: Vec<Account>,
    /// GoTrue's `flow_state` table.
    flows: Vec<FlowState>,
    /// One-time codes "sent" by email or SMS and not used yet.
    otps: Vec<Otp>,
    /// GoTrue's `MAILER_AUTOCONFIRM` / `SMS_AUTOCONFIRM`.
    autoconfirm: bool,
    /// Whatever would send an email answers `429 over_email_send_rate_limit`.
    email_rate_limited: bool,
    user_seq: usize,
}

/// One auth-server request as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// Under `/auth/v1`: `/token`, `/signup`, `/user`, ...
    pub path: String,
    /// The query's pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The JSON body; `Null` when empty, a string when not JSON.
    pub body: Value,
}

impl Recorded {
    /// The first value of `key` in the query.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The body's member names, sorted.
    pub fn body_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .body
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

/// A GoTrue user row.
struct Account {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    user_metadata: serde_json::Map<String, Value>,
    confirmed: bool,
    provider: String,
    /// An email / phone change waiting for its confirmation code.
    new_email: Option<String>,
    new_phone: Option<String>,
    confirmation_sent: bool,
    /// Bumped by every `PUT /user`, as GoTrue's `updated_at`.
    updates: u32,
}

impl Account {
    fn json(&self) -> Value {
        let mut user = json!({
            "id": self.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email.clone().unwrap_or_default(),
            "phone": self.phone.clone().unwrap_or_default(),
            "app_metadata": {"provider": self.provider, "providers": [self.provider]},
            "user_metadata": self.user_metadata,
            "identities": [],
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": format!("2024-01-01T00:{:02}:{:02}Z", self.updates / 60 % 60, self.updates % 60),
            "is_anonymous": false,
        });
        if self.confirmed {
            user["confirmed_at"] = json!("2024-01-01T00:00:00Z");
            if self.email.is_some() {
                user["email_confirmed_at"] = json!("2024-01-01T00:00:00Z");
            } else {
                user["phone_confirmed_at"] = json!("2024-01-01T00:00:00Z");
            }
        }
        if self.confirmation_sent {
            user["confirmation_sent_at"] = json!("2024-01-01T00:00:00Z");
        }
        if let Some(new_email) = &self.new_email {
            user["new_email"] = json!(new_email);
            user["email_change_sent_at"] = json!("2024-01-01T00:00:00Z");
        }
        if let Some(new_phone) = &self.new_phone {
            user["new_phone"] = json!(new_phone);
        }
        user
    }
}

/// A row of GoTrue's `flow_state`: a PKCE flow waiting for `/token?grant_type=pkce`.
struct FlowState {
    auth_code: String,
    code_challenge: String,
    code_challenge_method: String,
    /// Unix seconds.
    created_at: i64,
    /// Set once the user is known (at once here, but for an OAuth flow without PKCE).
    user_id: Option<String>,
    /// GoTrue's authentication method: `oauth`, `email/signup`, `magiclink`, `recovery`,
    /// `email_change`.
    method: String,
    /// The address its email went to (none for OAuth).
    email: Option<String>,
}

/// A flow state as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub auth_code: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub method: String,
    pub email: Option<String>,
}

/// A one-time code sent to an address, single use.
struct Otp {
    /// The email or phone it went to.
    to: String,
    user_id: String,
    code: String,
    /// What a link carries instead of the code: hex SHA-224 of address and code, as GoTrue.
    token_hash: String,
    /// `signup`, `magiclink`, `recovery`, `sms`, `email_change`, `phone_change`.
    kind: String,
}

/// GoTrue's flow-state lifetime (`GOTRUE_EXTERNAL_FLOW_STATE_EXPIRY_DURATION`, 300 s).
const FLOW_STATE_EXPIRY: i64 = 300;
/// GoTrue's default minimum password length.
const MIN_PASSWORD: usize = 6;
const VERIFY_TYPES: &[&str] = &[
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change",
    "email",
    "sms",
    "phone_change",
];

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Whether a code sent as `kind` verifies as `wanted` (GoTrue's `/verify` `type`).
fn verifies_as(kind: &str, wanted: &str) -> bool {
    match wanted {
        "email" | "magiclink" => kind == "signup" || kind == "magiclink",
        _ => kind == wanted,
    }
}

/// BASE64URL-NOPAD(SHA-256(verifier)): an S256 code challenge.
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

impl Inner {
    fn next_token(&mut self, kind: &str) -> String {
        self.n += 1;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let token = format!("{kind}-{}-{random:016x}", self.n);
        self.tokens.push(token.clone());
        token
    }

    /// A new token of `family` at `generation`, labelled.
    fn family_token(
        &mut self,
        family: usize,
        kind: char,
        generation: usize,
        suffix: &str,
    ) -> String {
        let token = self.next_token(if kind == 'A' { "access" } else { "refresh" });
        let name = &self.families[family].name;
        let label = if name.is_empty() {
            format!("{kind}{generation}{suffix}")
        } else {
            format!("{name}.{kind}{generation}{suffix}")
        };
        self.labels.insert(token.clone(), label);
        token
    }

    fn issue_access(&mut self, family: usize, generation: usize, suffix: &str) -> String {
        let access = self.family_token(family, 'A', generation, suffix);
        self.access.insert(
            access.clone(),
            AccessEntry {
                family,
                stale: false,
                expires_at: Some(unix_now() + 3600),
            },
        );
        access
    }

    fn label(&self, token: &str) -> String {
        if token.is_empty() {
            return "-".into();
        }
        self.labels
            .get(token)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    /// The user of a bearer token GoTrue would accept.
    fn check_access(&self, token: &str) -> Result<Value, Refusal> {
        let entry = self.access.get(token).ok_or(Refusal::BadJwt(
            "invalid JWT: unable to parse or verify signature",
        ))?;
        if entry.stale {
            return Err(Refusal::BadJwt(
                "invalid JWT: unable to parse or verify signature",
            ));
        }
        if entry.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(Refusal::BadJwt(
                "invalid JWT: unable to parse or verify signature, token has invalid claims: token is expired",
            ));
        }
        let family = &self.families[entry.family];
        if family.revoked.is_some() {
            return Err(Refusal::SessionGone);
        }
        Ok(self
            .account(&family.user_id)
            .map(|a| self.accounts[a].json())
            .unwrap_or_else(|| family.user.clone()))
    }

    fn account(&self, id: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.id == id)
    }

    /// The account with this email (case-insensitive) or phone.
    fn find_account(&self, email: Option<&str>, phone: Option<&str>) -> Option<usize> {
        self.accounts.iter().position(|a| match (email, phone) {
            (Some(email), _) => a
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email)),
            (None, Some(phone)) => a.phone.as_deref() == Some(phone),
            (None, None) => false,
        })
    }

    fn create_account(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
        password: Option<&str>,
        confirmed: bool,
        provider: &str,
    ) -> usize {
        self.user_seq += 1;
        self.accounts.push(Account {
            id: format!("gotrue-user-{}", self.user_seq),
            email: email.map(str::to_ascii_lowercase),
            phone: phone.map(str::to_owned),
            password: password.map(str::to_owned),
            user_metadata: serde_json::Map::new(),
            confirmed,
            provider: provider.to_string(),
            new_email: None,
            new_phone: None,
            confirmation_sent: false,
            updates: 0,
        });
        self.accounts.len() - 1
    }

    /// A new session (token family) for an account: GoTrue's session answer.
    fn sign_in(&mut self, account: usize) -> Value {
        let user = self.accounts[account].json();
        let user_id = self.accounts[account].id.clone();
        let family = self.families.len();
        self.families.push(Family {
            name: format!("{user_id}#{family}"),
            user_id,
            user: user.clone(),
            revoked: None,
            active: String::new(),
            generation: 0,
        });
        let access = self.issue_access(family, 0, "");
        let refresh = self.family_token(family, 'R', 0, "");
        self.refresh.insert(
            refresh.clone(),
            RefreshEntry {
                family,
                generation: 0,
                used_at: None,
            },
        );
        self.families[family].active = refresh.clone();
        json!({
            "access_token": access,
            "token_type": "bearer",
            "expires_in": 3600,
            "expires_at": unix_now() + 3600,
            "refresh_token": refresh,
            "user": user,
        })
    }

    /// "Sends" a code of `kind` to `to`; it replaces an earlier one of that kind there.
    fn send_otp(&mut self, to: &str, user_id: &str, kind: &str) {
        self.otps.retain(|o| !(o.to == to && o.kind == kind));
        let code = format!("{:06}", random_u64() % 1_000_000);
        let token_hash = sha2::Sha224::digest(format!("{to}{code}").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.otps.push(Otp {
            to: to.to_string(),
            user_id: user_id.to_string(),
            code,
            token_hash,
            kind: kind.to_string(),
        });
    }

    /// A flow state for a body's `code_challenge`, if it has one.
    fn start_flow(
        &mut self,
        challenge: Option<&str>,
        challenge_method: Option<&str>,
        user_id: Option<String>,
        method: &str,
        email: Option<&str>,
    ) -> Option<String> {
        let challenge = challenge.filter(|c| !c.is_empty())?;
        let auth_code = format!("{:016x}{:016x}", random_u64(), random_u64());
        self.flows.push(FlowState {
            auth_code: auth_code.clone(),
            code_challenge: challenge.to_string(),
            code_challenge_method: challenge_method.unwrap_or_default().to_string(),
            created_at: unix_now(),
            user_id,
            method: method.to_string(),
            email: email.map(str::to_ascii_lowercase),
        });
        Some(auth_code)
    }

    /// What using a code of `kind` does to its account.
    fn apply_verified(&mut self, account: usize, kind: &str) {
        let a = &mut self.accounts[account];
        match kind {
            "email_change" => {
                if let Some(new_email) = a.new_email.take() {
                    a.email = Some(new_email);
                }
            }
            "phone_change" => {
                if let Some(new_phone) = a.new_phone.take() {
                    a.phone = Some(new_phone);
                }
            }
            _ => a.confirmed = true,
        }
    }

    fn revoke_by_scope(&mut self, token: &str, scope: &str) {
        let Some(mine) = self.access.get(token).map(|a| a.family) else {
            return;
        };
        let user = self.families[mine].user_id.clone();
        for (index, family) in self.families.iter_mut().enumerate() {
            let hit = match scope {
                "global" => family.user_id == user,
                "others" => family.user_id == user && index != mine,
                _ => index == mine,
            };
            if hit && family.revoked.is_none() {
                family.revoked = Some(Revoked::Logout);
            }
        }
    }
}

pub struct FakeGoTrue {
    port: u16,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoTrue {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A session to seed: see [`FakeGoTrue::seed`].
pub struct Seed<'a> {
    pub user_id: &'a str,
    /// Label prefix of the family's tokens (empty: `A0`, `R0`, ...).
    pub name: &'a str,
    /// Refused by the backend and `/user` (a stale token).
    pub stale: bool,
    /// When the access token expires here (unix seconds); `None`: never.
    pub access_expires_at: Option<i64>,
}

/// Accepts connections, closing the ones [`FakeGoTrue::drop_next_connections`] asked for
/// unanswered.
struct DroppingListener {
    listener: TcpListener,
    inner: Shared,
}

impl axum::serve::Listener for DroppingListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.listener.accept().await else {
                continue;
            };
            {
                let mut g = lock(&self.inner);
                if g.drop_connections > 0 {
                    g.drop_connections -= 1;
                    g.journal.push(("DROPPED".into(), String::new()));
                    // Read the request, then close without an answer. (Closed before the
                    // request arrives, Node's fetch would wait forever.)
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let mut request = [0u8; 8192];
                        let _ = tokio::time::timeout(TIMEOUT, stream.read(&mut request)).await;
                    });
                    continue;
                }
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl FakeGoTrue {
    pub async fn start() -> FakeGoTrue {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/auth/v1/token", post(token))
            .route("/auth/v1/user", get(user).put(update_user))
            .route("/auth/v1/logout", post(logout))
            .route("/auth/v1/signup", post(signup))
            .route("/auth/v1/otp", post(otp))
            .route("/auth/v1/verify", post(verify))
            .route("/auth/v1/recover", post(recover))
            .route("/auth/v1/authorize", get(authorize))
            .route("/auth/me", get(profile))
            .route("/agent-integrations/composio/toolkits", get(toolkits))
            .layer(axum::middleware::map_response(close_connection))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let listener = DroppingListener {
            listener,
            inner: inner.clone(),
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        FakeGoTrue {
            port,
            inner,
            server,
        }
    }

    /// The product backend's base URL (`CORE_SIDECAR_BACKEND_URL`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `CORE_SIDECAR_AUTH_URL`.
    pub fn auth_url(&self) -> String {
        format!("{}/auth/v1", self.base_url())
    }

    /// Registers a session of user `user-<n>`; returns its (access, refresh) tokens. The
    /// access token is refused by the backend unless `access_valid`.
    pub fn seed_session(&self, access_valid: bool) -> (String, String) {
        let id = format!("user-{}", lock(&self.inner).n + 1);
        self.seed_session_for(&id, access_valid)
    }

    /// As [`FakeGoTrue::seed_session`] for this user id.
    pub fn seed_session_for(&self, user_id: &str, access_valid: bool) -> (String, String) {
        let name = format!("{user_id}#{}", lock(&self.inner).families.len());
        self.seed(Seed {
            user_id,
            name: &name,
            stale: !access_valid,
            access_expires_at: None,
        })
    }

    /// Registers a session (a new token family) as described; returns its (access, refresh)
    /// tokens, labelled `A0` and `R0` (with the seed's name as prefix).
    pub fn seed(&self, seed: Seed<'_>) -> (String, String) {
        let mut g = lock(&self.inner);
        let user = json!({
            "id": seed.user_id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": format!("{}@example.com", seed.user_id),
            "app_metadata": {"provider": "email"},
        });
        let family = g.families.len();
        g.families.push(Family {
            name: seed.name.to_string(),
            user_id: seed.user_id.to_string(),
            user,
            revoked: None,
            active: String::new(),
            generation: 0,
        });
        let access = g.family_token(family, 'A', 0, "");
        let refresh = g.family_token(family, 'R', 0, "");
        g.access.insert(
            access.clone(),
            AccessEntry {
                family,
                stale: seed.stale,
                expires_at: seed.access_expires_at,
            },
        );
        g.refresh.insert(
            refresh.clone(),
            RefreshEntry {
                family,
                generation: 0,
                used_at: None,
            },
        );
        g.families[family].active = refresh.clone();
        (access, refresh)
    }

    /// A token-shaped string the fake never issued (not a known refresh token); registered
    /// among [`FakeGoTrue::tokens`].
    pub fn unknown_token(&self) -> String {
        lock(&self.inner).next_token("refresh-unknown")
    }

    /// How long a spent refresh token may be used again (GoTrue's reuse interval, 10 s by
    /// default there; zero here unless set).
    pub fn set_reuse_interval(&self, interval: Duration) {
        lock(&self.inner).reuse_interval = interval;
    }

    /// Every `/token` request, failed ones included.
    pub fn token_calls(&self) -> usize {
        lock(&self.inner).token_calls
    }

    /// The refresh tokens presented to `/token`, in order.
    pub fn presented(&self) -> Vec<String> {
        lock(&self.inner).presented.clone()
    }

    /// The `scope` of each `/logout` request.
    pub fn logout_calls(&self) -> Vec<String> {
        lock(&self.inner).logout_calls.clone()
    }

    /// The bearer token of each `/logout` request.
    pub fn logout_bearers(&self) -> Vec<String> {
        lock(&self.inner).logout_bearers.clone()
    }

    pub fn user_calls(&self) -> usize {
        lock(&self.inner).user_calls
    }

    /// Bearer tokens the backend routes saw, in order.
    pub fn backend_tokens(&self) -> Vec<String> {
        lock(&self.inner).backend_tokens.clone()
    }

    /// Every request in order, as `<what> <label of its token>`: `POST /token R0`,
    /// `GET /user A1`, `POST /logout?scope=global A1`, `GET /auth/me A0`, and `DROPPED` for
    /// a connection closed unanswered. Labels never show a token.
    pub fn journal(&self) -> Vec<String> {
        let g = lock(&self.inner);
        g.journal
            .iter()
            .map(|(what, token)| match what.as_str() {
                "DROPPED" => what.clone(),
                _ => format!("{what} {}", g.label(token)),
            })
            .collect()
    }

    /// The label of a token this fake made (`A1`, `R0`, `other.A0`), `?` for one it did not
    /// make.
    pub fn label(&self, token: &str) -> String {
        lock(&self.inner).label(token)
    }

    /// The names of the revoked families (sessions), in seed order; the unnamed one is `-`.
    pub fn revoked(&self) -> Vec<String> {
        lock(&self.inner)
            .families
            .iter()
            .filter(|f| f.revoked.is_some())
            .map(|f| {
                if f.name.is_empty() {
                    "-".to_string()
                } else {
                    f.name.clone()
                }
            })
            .collect()
    }

    /// Every token this fake made (seeded, issued, unknown ones), and every PKCE code
    /// verifier it received.
    pub fn tokens(&self) -> Vec<String> {
        lock(&self.inner).tokens.clone()
    }

    /// The next `n` `/token` requests answer this (a JSON body; its `error_code`, if any, is
    /// also sent as `x-sb-error-code`).
    pub fn fail_next_token(&self, n: usize, status: u16, body: Value) {
        let mut g = lock(&self.inner);
        for _ in 0..n {
            g.failures.push_back((status, body.to_string()));
        }
    }

    /// The next `/token` request answers this status, these headers and this body as is (a
    /// redirect, say). Queued after [`FakeGoTrue::fail_next_token`]'s answers.
    pub fn reply_next_token(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.inner)
            .replies
            .push_back(raw(status, headers, body));
    }

    /// The next `n` connections are accepted and closed unanswered: the client sees a
    /// network failure (its request was never read, so nothing is journalled for it but
    /// `DROPPED`).
    pub fn drop_next_connections(&self, n: usize) {
        lock(&self.inner).drop_connections += n;
    }

    /// The next `/token` request waits until [`FakeGoTrue::release_token`].
    pub fn hold_token(&self) {
        let (arrived, _) = watch::channel(false);
        let (released, _) = watch::channel(false);
        lock(&self.inner).hold = Some(Hold {
            armed: true,
            arrived,
            released,
        });
    }

    /// Resolves once the held `/token` request has arrived (panics after the harness timeout).
    pub async fn wait_token_request(&self) {
        let mut arrived = {
            let g = lock(&self.inner);
            g.hold
                .as_ref()
                .expect("hold_token first")
                .arrived
                .subscribe()
        };
        tokio::time::timeout(TIMEOUT, arrived.wait_for(|a| *a))
            .await
            .expect("a /token request arrives")
            .expect("hold kept");
    }

    /// Lets the held `/token` request go on.
    pub fn release_token(&self) {
        let g = lock(&self.inner);
        g.hold
            .as_ref()
            .expect("hold_token first")
            .released
            .send_replace(true);
    }

    /// `/user` answers this from now on (default: 200 with the user of an access token it
    /// accepts, else 403 `bad_jwt` or `session_not_found`). A GoTrue `error_code` in the
    /// body is also sent as `x-sb-error-code`.
    pub fn set_user_response(&self, status: u16, body: Value) {
        lock(&self.inner).user_response = Some(canned_raw(status, body.to_string()));
    }

    /// `/user` answers this status, these headers and this body as is from now on.
    pub fn set_user_reply(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.inner).user_response = Some(raw(status, headers, body));
    }

    /// `/logout` answers this from now on, and revokes nothing (default: 204 and the scope's
    /// sessions revoked for an access token it accepts, else 403 as `/user`).
    pub fn set_logout_response(&self, status: u16, body: Value) {
        lock(&self.inner).logout_response = Some(canned_raw(status, body.to_string()));
    }

    /// `/logout` answers as GoTrue again (204 and revoked, or 403).
    pub fn clear_logout_response(&self) {
        lock(&self.inner).logout_response = None;
    }

    /// `/logout` answers this status, these headers and this body as is from now on, and
    /// revokes nothing.
    pub fn set_logout_reply(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.inner).logout_response = Some(raw(status, headers, body));
    }

    /// The backend routes answer 401 to every token from now on (a backend that refuses
    /// even freshly issued tokens).
    pub fn set_backend_refuses(&self, refuses: bool) {
        lock(&self.inner).backend_refuses = refuses;
    }

    /// Spends `refresh` as another client would (a rotation this fake's journal does not
    /// show): it is used from now on, and its family has a newer refresh token.
    pub fn spend_refresh_token(&self, refresh: &str) {
        let mut g = lock(&self.inner);
        let entry = g
            .refresh
            .get_mut(refresh)
            .expect("a refresh token of this fake");
        assert!(entry.used_at.is_none(), "not spent yet");
        entry.used_at = Some(Instant::now());
        let (family, next) = (entry.family, entry.generation + 1);
        g.issue_access(family, next, "");
        let rotated = g.family_token(family, 'R', next, "");
        g.refresh.insert(
            rotated.clone(),
            RefreshEntry {
                family,
                generation: next,
                used_at: None,
            },
        );
        g.families[family].active = rotated;
        g.families[family].generation = next;
    }

    /// Ends the session (family) named `name` as a `/logout` elsewhere would.
    pub fn revoke_family(&self, name: &str) {
        let mut g = lock(&self.inner);
        let family = g
            .families
            .iter_mut()
            .find(|f| f.name == name)
            .expect("a seeded family");
        family.revoked = Some(Revoked::Logout);
    }

    /// The label of the newest access token of the family named `name`.
    pub fn latest_access_label(&self, name: &str) -> Option<String> {
        let g = lock(&self.inner);
        let index = g.families.iter().position(|f| f.name == name)?;
        g.tokens
            .iter()
            .rev()
            .find(|t| g.access.get(*t).is_some_and(|a| a.family == index))
            .map(|t| g.label(t))
    }

    /// The `apikey` header of the last auth-server request.
    pub fn last_apikey(&self) -> Option<String> {
        lock(&self.inner).last_apikey.clone()
    }
}

fn raw(status: u16, headers: &[(&str, &str)], body: &str) -> RawReply {
    let headers = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A JSON answer's raw form; a GoTrue `error_code` in the body is also sent as
/// `x-sb-error-code`.
fn canned_raw(status: u16, body: String) -> RawReply {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(code) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error_code"].as_str().map(str::to_owned))
    {
        headers.push(("x-sb-error-code".into(), code));
    }
    (status, headers, body)
}

fn reply(raw: RawReply) -> Response {
    let (status, headers, body) = raw;
    let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
    for (name, value) in headers {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

async fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

fn note_apikey(inner: &Shared, headers: &HeaderMap) {
    lock(inner).last_apikey = headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
}

/// Whether the request asked for GoTrue's 2024-01-01 API (auth-js does).
fn wants_v2(headers: &HeaderMap) -> bool {
    headers
        .get("x-supabase-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= API_VERSION)
}

/// A GoTrue error in the shape the request asked for, with `x-sb-error-code`.
fn gotrue_error(headers: &HeaderMap, status: u16, code: &str, msg: &str) -> Response {
    if wants_v2(headers) {
        reply(raw(
            status,
            &[
                ("content-type", "application/json"),
                ("x-sb-error-code", code),
                ("x-supabase-api-version", API_VERSION),
            ],
            &json!({"code": code, "message": msg}).to_string(),
        ))
    } else {
        reply(canned_raw(
            status,
            json!({"code": status, "error_code": code, "msg": msg}).to_string(),
        ))
    }
}

fn refused(headers: &HeaderMap, refusal: Refusal) -> Response {
    match refusal {
        Refusal::BadJwt(msg) => gotrue_error(headers, 403, "bad_jwt", msg),
        Refusal::SessionGone => gotrue_error(
            headers,
            403,
            "session_not_found",
            "Session from session_id claim in JWT does not exist",
        ),
    }
}

async fn token(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (query, body) = record(&inner, "POST", "/token", query.as_deref(), &body);
    let grant = query
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let presented = body["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hold = {
        let mut g = lock(&inner);
        g.token_calls += 1;
        if grant == "refresh_token" {
            g.presented.push(presented.clone());
            g.journal.push(("POST /token".into(), presented.clone()));
        } else {
            g.journal
                .push((format!("POST /token?grant_type={grant}"), String::new()));
        }
        match g.hold.as_mut() {
            Some(hold) if hold.armed => {
                hold.armed = false;
                hold.arrived.send_replace(true);
                Some(hold.released.subscribe())
            }
            _ => None,
        }
    };
    if let Some(mut released) = hold {
        let _ = released.wait_for(|r| *r).await;
    }

    if !["refresh_token", "password", "pkce"].contains(&grant.as_str()) {
        return gotrue_error(
            &headers,
            400,
            "unsupported_grant_type",
            "Unsupported grant type",
        );
    }
    let mut g = lock(&inner);
    if let Some((status, body)) = g.failures.pop_front() {
        return reply(canned_raw(status, body));
    }
    if let Some(answer) = g.replies.pop_front() {
        return reply(answer);
    }
    match grant.as_str() {
        "password" => return password_grant(&mut g, &headers, &body),
        "pkce" => return pkce_grant(&mut g, &headers, &body),
        _ => {}
    }
    let Some(entry) = g.refresh.get(&presented) else {
        return not_found(&headers);
    };
    let (family, generation, used_at) = (entry.family, entry.generation, entry.used_at);
    match g.families[family].revoked {
        Some(Revoked::Logout) => return not_found(&headers),
        Some(Revoked::Reuse) => return already_used(&headers),
        None => {}
    }
    let (access, refresh) = match used_at {
        Some(used) => {
            let is_parent = g.families[family].generation == generation + 1;
            if !(is_parent && used.elapsed() < g.reuse_interval) {
                g.families[family].revoked = Some(Revoked::Reuse);
                return already_used(&headers);
            }
            // Within the reuse interval: a new access token, the current refresh token.
            let active_generation = g.families[family].generation;
            let access = g.issue_access(family, active_generation, "'");
            (access, g.families[family].active.clone())
        }
        None => {
            g.refresh.get_mut(&presented).expect("entry").used_at = Some(Instant::now());
            let next = generation + 1;
            let access = g.issue_access(family, next, "");
            let refresh = g.family_token(family, 'R', next, "");
            g.refresh.insert(
                refresh.clone(),
                RefreshEntry {
                    family,
                    generation: next,
                    used_at: None,
                },
            );
            g.families[family].active = refresh.clone();
            g.families[family].generation = next;
            (access, refresh)
        }
    };
    let user = g.families[family].user.clone();
    axum::Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": unix_now() + 3600,
        "refresh_token": refresh,
        "user": user,
    }))
    .into_response()
}

fn not_found(headers: &HeaderMap) -> Response {
    gotrue_error(
        headers,
        400,
        "refresh_token_not_found",
        "Invalid Refresh Token: Refresh Token Not Found",
    )
}

fn already_used(headers: &HeaderMap) -> Response {
    gotrue_error(
        headers,
        400,
        "refresh_token_already_used",
        "Invalid Refresh Token: Already Used",
    )
}

async fn user(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    note_apikey(&inner, &headers);
    record(&inner, "GET", "/user", query.as_deref(), &[]);
    let token = bearer(&headers);
    let mut g = lock(&inner);
    g.user_calls += 1;
    g.journal.push(("GET /user".into(), token.clone()));
    if let Some(answer) = g.user_response.clone() {
        return reply(answer);
    }
    match g.check_access(&token) {
        Ok(user) => axum::Json(user).into_response(),
        Err(refusal) => refused(&headers, refusal),
    }
}

async fn logout(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (query, _) = record(&inner, "POST", "/logout", query.as_deref(), &body);
    let token = bearer(&headers);
    let scope = query
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut g = lock(&inner);
    g.logout_calls.push(scope.clone());
    g.logout_bearers.push(token.clone());
    g.journal
        .push((format!("POST /logout?scope={scope}"), token.clone()));
    if let Some(answer) = g.logout_response.clone() {
        return reply(answer);
    }
    match g.check_access(&token) {
        Ok(_) => {
            g.revoke_by_scope(&token, &scope);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refused(&headers, refusal),
    }
}

/// The backend side: the user of an access token the fake accepts.
fn backend_user(inner: &Shared, headers: &HeaderMap, route: &str) -> Option<Value> {
    let token = bearer(headers);
    let mut g = lock(inner);
    g.backend_tokens.push(token.clone());
    g.journal.push((format!("GET {route}"), token.clone()));
    if g.backend_refuses {
        return None;
    }
    g.check_access(&token).ok()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"success": false, "error": "invalid token"})),
    )
        .into_response()
}

async fn profile(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers, "/auth/me") {
        Some(user) => axum::Json(json!({"success": true, "data": user})).into_response(),
        None => unauthorized(),
    }
}

async fn toolkits(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    match backend_user(&inner, &headers, "/agent-integrations/composio/toolkits") {
        Some(_) => axum::Json(json!({"success": true, "data": {"toolkits": ["github", "slack"]}}))
            .into_response(),
        None => unauthorized(),
    }
}

/// For the cross-process ownership tests (`ownership.rs`).
impl FakeGoTrue {
    /// Whether `refresh` would be taken by `/token` now, as a first use: known, not spent,
    /// and its session (family) not revoked.
    pub fn refresh_token_works(&self, refresh: &str) -> bool {
        let g = lock(&self.inner);
        g.refresh.get(refresh).is_some_and(|entry| {
            entry.used_at.is_none() && g.families[entry.family].revoked.is_none()
        })
    }
}

/// For the sign-in tests (`sign_in.rs`, the differential suite's sign-in scenarios).
///
/// The sign-in routes behave as GoTrue's with PKCE: `/signup`, `/token?grant_type=password`,
/// `/otp`, `/verify`, `/recover`, `/authorize` (which answers at once with a redirect to
/// `redirect_to?code=<auth code>`, as if the provider had said yes), `/token?grant_type=pkce`
/// and `PUT /user`. Each sign-in starts a new token family named `<user id>#<n>`, so refresh,
/// `/user` and `/logout` work on it as on a seeded one. Codes "sent" by email or SMS are read
/// with [`FakeGoTrue::last_otp`], and the auth code an emailed link would lead to with
/// [`FakeGoTrue::email_link_code`].
impl FakeGoTrue {
    /// A confirmed email + password account; returns its user id.
    pub fn add_user(&self, email: &str, password: &str) -> String {
        let mut g = lock(&self.inner);
        let index = g.create_account(Some(email), None, Some(password), true, "email");
        g.accounts[index].id.clone()
    }

    /// A confirmed phone + password account; returns its user id.
    pub fn add_phone_user(&self, phone: &str, password: &str) -> String {
        let mut g = lock(&self.inner);
        let index = g.create_account(None, Some(phone), Some(password), true, "phone");
        g.accounts[index].id.clone()
    }

    /// GoTrue's autoconfirm switch: `/signup` answers a session at once, email and phone
    /// changes apply at once (off by default: a confirmation is "sent").
    pub fn set_autoconfirm(&self, on: bool) {
        lock(&self.inner).autoconfirm = on;
    }

    /// Whatever would send an email (`/otp`, `/recover`, `/signup` unconfirmed) answers
    /// `429 over_email_send_rate_limit` while on.
    pub fn set_email_rate_limited(&self, on: bool) {
        lock(&self.inner).email_rate_limited = on;
    }

    /// The newest unused code sent to this email or phone.
    pub fn last_otp(&self, to: &str) -> Option<String> {
        let to = normalize_address(to);
        lock(&self.inner)
            .otps
            .iter()
            .rev()
            .find(|o| o.to == to)
            .map(|o| o.code.clone())
    }

    /// The token hash (what an emailed link carries) of the newest unused code sent to `to`.
    pub fn last_token_hash(&self, to: &str) -> Option<String> {
        let to = normalize_address(to);
        lock(&self.inner)
            .otps
            .iter()
            .rev()
            .find(|o| o.to == to)
            .map(|o| o.token_hash.clone())
    }

    /// Follows the newest emailed link of a PKCE flow started for `email` (`/signup`, `/otp`,
    /// `/recover`, an email change): its code is used up as GoTrue's `GET /verify` would, and
    /// the auth code its redirect carries (`?code=`) is returned.
    pub fn email_link_code(&self, email: &str) -> Option<String> {
        let email = email.to_ascii_lowercase();
        let mut g = lock(&self.inner);
        let flow = g
            .flows
            .iter()
            .rev()
            .find(|f| f.email.as_deref() == Some(email.as_str()))?;
        let (auth_code, kind) = (
            flow.auth_code.clone(),
            match flow.method.as_str() {
                "email/signup" => "signup",
                other => other,
            }
            .to_string(),
        );
        let position = g
            .otps
            .iter()
            .rposition(|o| o.to == email && verifies_as(&o.kind, &kind))?;
        let otp = g.otps.remove(position);
        if let Some(account) = g.account(&otp.user_id) {
            g.apply_verified(account, &otp.kind);
        }
        Some(auth_code)
    }

    /// The flow states not used yet, oldest first.
    pub fn flow_states(&self) -> Vec<FlowInfo> {
        lock(&self.inner)
            .flows
            .iter()
            .map(|f| FlowInfo {
                auth_code: f.auth_code.clone(),
                code_challenge: f.code_challenge.clone(),
                code_challenge_method: f.code_challenge_method.clone(),
                method: f.method.clone(),
                email: f.email.clone(),
            })
            .collect()
    }

    /// Makes every flow state this much older (past 300 s one is expired).
    pub fn age_flow_states(&self, by: Duration) {
        for flow in &mut lock(&self.inner).flows {
            flow.created_at -= by.as_secs() as i64;
        }
    }

    /// Every auth-server request in full, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner).requests.clone()
    }

    /// The requests to this path (under `/auth/v1`), in order.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        lock(&self.inner)
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The user object GoTrue has now for this email.
    pub fn user_by_email(&self, email: &str) -> Option<Value> {
        let g = lock(&self.inner);
        g.find_account(Some(email), None)
            .map(|a| g.accounts[a].json())
    }

    /// The number of token families (sessions) ever started, seeded ones included.
    pub fn sessions_started(&self) -> usize {
        lock(&self.inner).families.len()
    }
}

fn normalize_address(to: &str) -> String {
    if to.contains('@') {
        to.to_ascii_lowercase()
    } else {
        to.to_string()
    }
}

/// Journals a request in full; returns its query pairs and JSON body.
fn record(
    inner: &Shared,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (Vec<(String, String)>, Value) {
    let query: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    lock(inner).requests.push(Recorded {
        method: method.to_string(),
        path: path.to_string(),
        query: query.clone(),
        body: body.clone(),
    });
    (query, body)
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body[key].as_str().filter(|s| !s.is_empty())
}

/// GoTrue's 422 `weak_password`, with its `weak_password.reasons`.
fn weak_password(headers: &HeaderMap) -> Response {
    let msg = format!("Password should be at least {MIN_PASSWORD} characters.");
    let (body, extra): (Value, Vec<(&str, &str)>) = if wants_v2(headers) {
        (
            json!({"code": "weak_password", "message": msg, "weak_password": {"reasons": ["length"]}}),
            vec![("x-supabase-api-version", API_VERSION)],
        )
    } else {
        (
            json!({"code": 422, "error_code": "weak_password", "msg": msg, "weak_password": {"reasons": ["length"]}}),
            vec![],
        )
    };
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-sb-error-code", "weak_password"),
    ];
    headers.extend(extra);
    reply(raw(422, &headers, &body.to_string()))
}

fn email_rate_limit(headers: &HeaderMap) -> Response {
    gotrue_error(
        headers,
        429,
        "over_email_send_rate_limit",
        "email rate limit exceeded",
    )
}

/// GoTrue's `validatePKCEParams`: both or neither, and a challenge of 43-128 URL-safe
/// characters.
fn check_pkce_params(
    headers: &HeaderMap,
    challenge: Option<&str>,
    method: Option<&str>,
) -> Option<Response> {
    let challenge = challenge.unwrap_or_default();
    let method = method.unwrap_or_default();
    if challenge.is_empty() != method.is_empty() {
        return Some(gotrue_error(
            headers,
            400,
            "validation_failed",
            "PKCE flow requires code_challenge_method and code_challenge",
        ));
    }
    if !challenge.is_empty()
        && (!(43..=128).contains(&challenge.len())
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)))
    {
        return Some(gotrue_error(
            headers,
            400,
            "validation_failed",
            "code challenge has to be between 43 and 128 characters",
        ));
    }
    None
}

fn session_reply(session: Value) -> Response {
    axum::Json(session).into_response()
}

async fn signup(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (_, body) = record(&inner, "POST", "/signup", query.as_deref(), &body);
    lock(&inner)
        .journal
        .push(("POST /signup".into(), String::new()));
    let (email, phone) = (text(&body, "email"), text(&body, "phone"));
    if email.is_none() && phone.is_none() {
        return gotrue_error(
            &headers,
            422,
            "validation_failed",
            "To signup, please provide your email or phone number",
        );
    }
    let (challenge, method) = (
        text(&body, "code_challenge"),
        text(&body, "code_challenge_method"),
    );
    if let Some(response) = check_pkce_params(&headers, challenge, method) {
        return response;
    }
    let password = text(&body, "password").unwrap_or_default();
    if password.chars().count() < MIN_PASSWORD {
        return weak_password(&headers);
    }
    let mut g = lock(&inner);
    if let Some(existing) = g.find_account(email, phone) {
        if g.autoconfirm {
            return gotrue_error(
                &headers,
                422,
                "user_already_exists",
                "User already registered",
            );
        }
        // GoTrue does not tell who has an account: an obfuscated user, nothing sent.
        let mut user = g.accounts[existing].json();
        user["id"] = json!(format!("{:016x}", random_u64()));
        user["identities"] = json!([]);
        return axum::Json(user).into_response();
    }
    if !g.autoconfirm && email.is_some() && g.email_rate_limited {
        return email_rate_limit(&headers);
    }
    let autoconfirm = g.autoconfirm;
    let account = g.create_account(email, phone, Some(password), autoconfirm, "email");
    if let Some(data) = body["data"].as_object() {
        g.accounts[account].user_metadata = data.clone();
    }
    if phone.is_some() && email.is_none() {
        g.accounts[account].provider = "phone".into();
    }
    if autoconfirm {
        return session_reply(g.sign_in(account));
    }
    let user_id = g.accounts[account].id.clone();
    let (to, kind) = match (email, phone) {
        (Some(email), _) => (email.to_ascii_lowercase(), "signup"),
        (None, Some(phone)) => (phone.to_string(), "sms"),
        (None, None) => unreachable!("checked above"),
    };
    g.send_otp(&to, &user_id, kind);
    if email.is_some() {
        g.start_flow(challenge, method, Some(user_id), "email/signup", email);
    }
    g.accounts[account].confirmation_sent = true;
    g.accounts[account].updates += 1;
    axum::Json(g.accounts[account].json()).into_response()
}

fn password_grant(g: &mut Inner, headers: &HeaderMap, body: &Value) -> Response {
    let (email, phone) = (text(body, "email"), text(body, "phone"));
    let password = text(body, "password").unwrap_or_default();
    let invalid = || {
        gotrue_error(
            headers,
            400,
            "invalid_credentials",
            "Invalid login credentials",
        )
    };
    let Some(account) = g.find_account(email, phone) else {
        return invalid();
    };
    if g.accounts[account].password.as_deref() != Some(password) {
        return invalid();
    }
    if !g.accounts[account].confirmed {
        return if email.is_some() {
            gotrue_error(headers, 400, "email_not_confirmed", "Email not confirmed")
        } else {
            gotrue_error(headers, 400, "phone_not_confirmed", "Phone not confirmed")
        };
    }
    session_reply(g.sign_in(account))
}

/// GoTrue's `PKCE` grant: the flow state is deleted only when a session is issued.
fn pkce_grant(g: &mut Inner, headers: &HeaderMap, body: &Value) -> Response {
    let auth_code = text(body, "auth_code").unwrap_or_default().to_string();
    let verifier = text(body, "code_verifier").unwrap_or_default().to_string();
    if !verifier.is_empty() {
        g.tokens.push(verifier.clone());
    }
    if auth_code.is_empty() || verifier.is_empty() {
        return gotrue_error(
            headers,
            400,
            "validation_failed",
            "invalid request: both auth code and code verifier should be non-empty",
        );
    }
    let Some(index) = g
        .flows
        .iter()
        .position(|f| f.auth_code == auth_code && f.user_id.is_some())
    else {
        return gotrue_error(
            headers,
            404,
            "flow_state_not_found",
            "invalid flow state, no valid flow state found",
        );
    };
    let flow = &g.flows[index];
    if unix_now() > flow.created_at + FLOW_STATE_EXPIRY {
        return gotrue_error(
            headers,
            422,
            "flow_state_expired",
            "invalid flow state, flow state has expired",
        );
    }
    let matches = match flow.code_challenge_method.to_ascii_lowercase().as_str() {
        "s256" => s256(&verifier) == flow.code_challenge,
        "plain" => verifier == flow.code_challenge,
        _ => {
            return gotrue_error(
                headers,
                400,
                "bad_code_verifier",
                "code challenge method not supported",
            );
        }
    };
    if !matches {
        return gotrue_error(
            headers,
            400,
            "bad_code_verifier",
            "code challenge does not match previously saved code verifier",
        );
    }
    let user_id = flow.user_id.clone().expect("checked above");
    let Some(account) = g.account(&user_id) else {
        return gotrue_error(headers, 404, "user_not_found", "User not found");
    };
    g.flows.remove(index);
    session_reply(g.sign_in(account))
}

async fn otp(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (_, body) = record(&inner, "POST", "/otp", query.as_deref(), &body);
    lock(&inner)
        .journal
        .push(("POST /otp".into(), String::new()));
    let (email, phone) = (text(&body, "email"), text(&body, "phone"));
    if email.is_none() == phone.is_none() {
        return gotrue_error(
            &headers,
            400,
            "validation_failed",
            "Only an email address or phone number should be provided",
        );
    }
    let (challenge, method) = (
        text(&body, "code_challenge"),
        text(&body, "code_challenge_method"),
    );
    if let Some(response) = check_pkce_params(&headers, challenge, method) {
        return response;
    }
    let create_user = body["create_user"].as_bool().unwrap_or(true);
    let mut g = lock(&inner);
    if email.is_some() && g.email_rate_limited {
        return email_rate_limit(&headers);
    }
    let account = match g.find_account(email, phone) {
        Some(account) => account,
        None if !create_user => {
            return gotrue_error(&headers, 422, "otp_disabled", "Signups not allowed for otp");
        }
        None => {
            let provider = if email.is_some() { "email" } else { "phone" };
            let account = g.create_account(email, phone, None, false, provider);
            if let Some(data) = body["data"].as_object() {
                g.accounts[account].user_metadata = data.clone();
            }
            account
        }
    };
    let user_id = g.accounts[account].id.clone();
    match (email, phone) {
        (Some(email), _) => {
            let kind = if g.accounts[account].confirmed {
                "magiclink"
            } else {
                "signup"
            };
            g.send_otp(&email.to_ascii_lowercase(), &user_id, kind);
            let flow = if kind == "signup" {
                "email/signup"
            } else {
                "magiclink"
            };
            g.start_flow(challenge, method, Some(user_id), flow, Some(email));
            axum::Json(json!({})).into_response()
        }
        (None, Some(phone)) => {
            g.send_otp(phone, &user_id, "sms");
            axum::Json(json!({"message_id": format!("sms-{}", g.otps.len())})).into_response()
        }
        (None, None) => unreachable!("checked above"),
    }
}

async fn verify(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (_, body) = record(&inner, "POST", "/verify", query.as_deref(), &body);
    lock(&inner)
        .journal
        .push(("POST /verify".into(), String::new()));
    let Some(kind) = text(&body, "type").filter(|t| VERIFY_TYPES.contains(t)) else {
        return gotrue_error(
            &headers,
            400,
            "validation_failed",
            "Verify requires a verification type",
        );
    };
    let mut g = lock(&inner);
    let position = match (
        text(&body, "token_hash"),
        text(&body, "email").or(text(&body, "phone")),
        text(&body, "token"),
    ) {
        (Some(hash), _, _) => g
            .otps
            .iter()
            .position(|o| o.token_hash == hash && verifies_as(&o.kind, kind)),
        (None, Some(to), Some(code)) => {
            let to = normalize_address(to);
            g.otps
                .iter()
                .position(|o| o.to == to && o.code == code && verifies_as(&o.kind, kind))
        }
        _ => {
            return gotrue_error(
                &headers,
                400,
                "validation_failed",
                "Verify requires either a token or a token hash",
            );
        }
    };
    let Some(position) = position else {
        return gotrue_error(
            &headers,
            403,
            "otp_expired",
            "Token has expired or is invalid",
        );
    };
    let otp = g.otps.remove(position);
    let Some(account) = g.account(&otp.user_id) else {
        return gotrue_error(&headers, 404, "user_not_found", "User not found");
    };
    g.apply_verified(account, &otp.kind);
    session_reply(g.sign_in(account))
}

async fn recover(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (_, body) = record(&inner, "POST", "/recover", query.as_deref(), &body);
    lock(&inner)
        .journal
        .push(("POST /recover".into(), String::new()));
    let Some(email) = text(&body, "email") else {
        return gotrue_error(
            &headers,
            422,
            "validation_failed",
            "Password recovery requires an email",
        );
    };
    let (challenge, method) = (
        text(&body, "code_challenge"),
        text(&body, "code_challenge_method"),
    );
    if let Some(response) = check_pkce_params(&headers, challenge, method) {
        return response;
    }
    let mut g = lock(&inner);
    if g.email_rate_limited {
        return email_rate_limit(&headers);
    }
    // An unknown address gets the same answer: GoTrue does not tell who has an account.
    if let Some(account) = g.find_account(Some(email), None) {
        let user_id = g.accounts[account].id.clone();
        g.send_otp(&email.to_ascii_lowercase(), &user_id, "recovery");
        g.start_flow(challenge, method, Some(user_id), "recovery", Some(email));
    }
    axum::Json(json!({})).into_response()
}

/// `GET /authorize`: as if the provider had said yes at once, a redirect to `redirect_to`
/// with the flow's auth code (PKCE), or with the session in the fragment (implicit).
async fn authorize(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    note_apikey(&inner, &headers);
    let (query, _) = record(&inner, "GET", "/authorize", query.as_deref(), &[]);
    lock(&inner)
        .journal
        .push(("GET /authorize".into(), String::new()));
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(provider) = get("provider") else {
        return gotrue_error(
            &headers,
            400,
            "validation_failed",
            "Unsupported provider: missing provider",
        );
    };
    if let Some(response) = check_pkce_params(
        &headers,
        get("code_challenge"),
        get("code_challenge_method"),
    ) {
        return response;
    }
    let redirect_to = get("redirect_to")
        .unwrap_or("http://localhost:3000")
        .to_string();
    let mut g = lock(&inner);
    let email = format!("{provider}.user@example.com");
    let account = match g.find_account(Some(&email), None) {
        Some(account) => account,
        None => g.create_account(Some(&email), None, None, true, provider),
    };
    let user_id = g.accounts[account].id.clone();
    let location = match g.start_flow(
        get("code_challenge"),
        get("code_challenge_method"),
        Some(user_id),
        "oauth",
        None,
    ) {
        Some(code) => {
            let separator = if redirect_to.contains('?') { '&' } else { '?' };
            format!("{redirect_to}{separator}code={code}")
        }
        None => {
            let session = g.sign_in(account);
            format!(
                "{redirect_to}#access_token={}&refresh_token={}&expires_in=3600&token_type=bearer",
                session["access_token"].as_str().unwrap_or_default(),
                session["refresh_token"].as_str().unwrap_or_default(),
            )
        }
    };
    reply(raw(302, &[("location", &location)], ""))
}

/// `PUT /user`: GoTrue's `UserUpdate`.
async fn update_user(
    State(inner): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    note_apikey(&inner, &headers);
    let (_, body) = record(&inner, "PUT", "/user", query.as_deref(), &body);
    let token = bearer(&headers);
    let mut g = lock(&inner);
    g.journal.push(("PUT /user".into(), token.clone()));
    let user = match g.check_access(&token) {
        Ok(user) => user,
        Err(refusal) => return refused(&headers, refusal),
    };
    let user_id = user["id"].as_str().unwrap_or_default().to_string();
    let account = match g.account(&user_id) {
        Some(account) => account,
        None => {
            // A seeded session's user joins the accounts.
            let email = user["email"].as_str().map(str::to_owned);
            let account = g.create_account(email.as_deref(), None, None, true, "email");
            g.accounts[account].id = user_id.clone();
            g.user_seq -= 1;
            account
        }
    };
    let (challenge, method) = (
        text(&body, "code_challenge"),
        text(&body, "code_challenge_method"),
    );
    if let Some(response) = check_pkce_params(&headers, challenge, method) {
        return response;
    }
    if let Some(password) = body["password"].as_str()
        && password.chars().count() < MIN_PASSWORD
    {
        return weak_password(&headers);
    }
    if let Some(email) = text(&body, "email") {
        let current = g.accounts[account].email.clone().unwrap_or_default();
        if !email.eq_ignore_ascii_case(&current) {
            if g.find_account(Some(email), None)
                .is_some_and(|other| other != account)
            {
                return gotrue_error(
                    &headers,
                    422,
                    "email_exists",
                    "A user with this email address has already been registered",
                );
            }
            if g.autoconfirm {
                g.accounts[account].email = Some(email.to_ascii_lowercase());
            } else {
                if g.email_rate_limited {
                    return email_rate_limit(&headers);
                }
                g.accounts[account].new_email = Some(email.to_ascii_lowercase());
                g.send_otp(&email.to_ascii_lowercase(), &user_id, "email_change");
                g.start_flow(
                    challenge,
                    method,
                    Some(user_id.clone()),
                    "email_change",
                    Some(email),
                );
            }
        }
    }
    if let Some(phone) = text(&body, "phone")
        && g.accounts[account].phone.as_deref() != Some(phone)
    {
        if g.find_account(None, Some(phone))
            .is_some_and(|other| other != account)
        {
            return gotrue_error(
                &headers,
                422,
                "phone_exists",
                "A user with this phone number has already been registered",
            );
        }
        if g.autoconfirm {
            g.accounts[account].phone = Some(phone.to_string());
        } else {
            g.accounts[account].new_phone = Some(phone.to_string());
            g.send_otp(phone, &user_id, "phone_change");
        }
    }
    if let Some(password) = body["password"].as_str() {
        g.accounts[account].password = Some(password.to_string());
    }
    if let Some(data) = body["data"].as_object() {
        let metadata = &mut g.accounts[account].user_metadata;
        for (key, value) in data {
            if value.is_null() {
                metadata.remove(key);
            } else {
                metadata.insert(key.clone(), value.clone());
            }
        }
    }
    g.accounts[account].updates += 1;
    axum::Json(g.accounts[account].json()).into_response()
}
