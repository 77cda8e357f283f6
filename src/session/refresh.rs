//! Refreshing the session the way GoTrue expects (docs/protocol.md, "Refresh").
//!
//! Refresh tokens are single-use and rotate: using one twice can sign the user out. So:
//! - **single-flight**: every caller (the gate, the ticker, `auth_refresh_session`) shares
//!   the one refresh in flight. It runs in a spawned task, so a caller that gives up does
//!   not cancel it, and its result is still saved.
//! - **commit guard**: the result is written only if the stored session is still the one the
//!   refresh started from ([`Sessions::replace_owned`]); after a sign-out or a newer
//!   sign-in it is discarded.
//! - **one owner across processes**: a refresh holds the keyring entry's cross-process
//!   lock from the re-read of the keyring before it to its commit, so two sidecars on one
//!   entry never spend the same refresh token; a session another process stored meanwhile
//!   is adopted instead.
//! - **retries**: transient failures (no answer, 5xx, 429) retry with backoff
//!   200 ms * 2^n inside a 30 s budget; a fatal rejection clears the session once (unless a
//!   newer one was stored meanwhile) and that refresh token is never tried again.
//! - **auto-refresh**: a ticker every 30 s, first tick at start, refreshes when 90 s or less
//!   remain; each tick also re-reads the keyring ([`Sessions::maintain`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backend::auth_server::{IssuedSession, TokenEndpoint};
use crate::error::{AuthExpiredReason, Error, Result};
use crate::session::model::{derive_expiry, unix_now};
use crate::session::{AuthEvent, OWNER_WAIT, Secret, Session, Sessions, SignOutReason};
use crate::telemetry::Telemetry;

pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);
pub const TICK_PERIOD: Duration = Duration::from_secs(30);
/// The ticker refreshes when this many seconds or fewer remain.
pub const TICK_THRESHOLD_S: i64 = 90;
/// The gate refreshes before a call when this many seconds or fewer remain.
pub const GATE_THRESHOLD_S: i64 = 60;
/// Fatally rejected refresh tokens remembered, so none is sent twice.
const REJECTED_KEPT: usize = 16;

type SharedRefresh = Shared<BoxFuture<'static, Result<Arc<Session>>>>;

/// A refresh under way: the session it started from and its shared result.
struct Flight {
    tag: u64,
    used: Arc<Session>,
    result: SharedRefresh,
}

pub struct Refresher {
    sessions: Arc<Sessions>,
    endpoint: Option<Arc<dyn TokenEndpoint>>,
    /// The refresh in flight, tagged so only its own task clears it.
    in_flight: Mutex<Option<Flight>>,
    next_tag: Mutex<u64>,
    rejected: Mutex<Vec<Secret>>,
    /// Where the ticker's failures go: nobody else sees them.
    telemetry: Telemetry,
}

impl Refresher {
    pub fn new(
        sessions: Arc<Sessions>,
        endpoint: Option<Arc<dyn TokenEndpoint>>,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions,
            endpoint,
            in_flight: Mutex::new(None),
            next_tag: Mutex::new(0),
            rejected: Mutex::new(Vec::new()),
            telemetry,
        })
    }

    /// Whether `session` can be refreshed at all: an auth server, a refresh token, and not
    /// one the auth server already rejected.
    pub fn can_refresh(&self, session: &Session) -> bool {
        self.endpoint.is_some()
            && session
                .refresh_token
                .as_ref()
                .is_some_and(|token| !self.was_rejected(token))
    }

    /// Refreshes `used` (single-flight) and returns the session to use now: the refreshed
    /// one, or a newer one stored meanwhile.
    ///
    /// `used` is what the caller read before asking. If the stored session is no longer
    /// `used` (another caller's refresh committed, or a newer session was stored), it is
    /// adopted as is: `used`'s refresh token may already be spent, and sending it again
    /// would be refused (and, past GoTrue's reuse interval, revoke the whole session). If a
    /// refresh of another session is under way, this one waits for it to end first.
    pub async fn refresh(self: &Arc<Self>, used: Arc<Session>) -> Result<Arc<Session>> {
        self.sessions.ready().await;
        loop {
            let (ours, result) = {
                let mut slot = lock(&self.in_flight);
                // A commit happens before its flight leaves the slot, so an empty slot here
                // means any refresh of `used` is already visible in the cache.
                match self.sessions.cached() {
                    None => return Err(Error::no_session()),
                    Some(current) if !current.same_lineage(&used) => return Ok(current),
                    Some(_) => {}
                }
                match slot.as_ref() {
                    Some(flight) => (flight.used.same_lineage(&used), flight.result.clone()),
                    None => {
                        let flight = self.start(used.clone());
                        let result = flight.result.clone();
                        *slot = Some(flight);
                        (true, result)
                    }
                }
            };
            if ours {
                return result.await;
            }
            // A refresh of a session that is no longer stored: it will be discarded.
            let _ = result.await;
        }
    }

    /// `session`, refreshed first (single-flight) when its access token expires within
    /// [`GATE_THRESHOLD_S`]: see [`Refresher::prepare`]. Only the session; the gate also wants
    /// to know whether this took the call's one refresh cycle.
    pub async fn fresh(self: &Arc<Self>, session: Arc<Session>) -> Result<Arc<Session>> {
        self.prepare(session).await.map(|prepared| prepared.session)
    }

    /// The session a call is to use, and what getting it did (docs/protocol.md, "The session
    /// gate", step 3). When the access token expires within [`GATE_THRESHOLD_S`]:
    /// - it can be refreshed: refresh (single-flight). A rejected refresh token (or a
    ///   sign-out meanwhile) is an error. Any other failure is an error if the access token
    ///   has expired by then: a token known to be expired is never sent. If it is still
    ///   valid it is used as is, as auth-js does, and the failure is kept
    ///   ([`Cycle::Failed`]) so that the call makes no second refresh.
    /// - it has expired and cannot be refreshed (no refresh token, or one the auth server
    ///   already rejected) while an auth server is configured: the refresh's own answer, an
    ///   error without any request (`refresh_rejected`; a rejected token also ends the
    ///   session).
    /// - otherwise (still valid, or no auth server to ask): as is; without an auth server the
    ///   backend judges the token.
    pub async fn prepare(self: &Arc<Self>, session: Arc<Session>) -> Result<Prepared> {
        let now = unix_now();
        if !session.expires_within(GATE_THRESHOLD_S, now) {
            return Ok(Prepared::as_is(session));
        }
        let expired = is_expired(&session, now);
        if self.endpoint.is_none() || !(expired || self.can_refresh(&session)) {
            return Ok(Prepared::as_is(session));
        }
        match self.refresh(session.clone()).await {
            Ok(fresh) => Ok(Prepared {
                session: fresh,
                cycle: Cycle::Refreshed,
            }),
            Err(error @ Error::AuthExpired { .. }) => Err(error),
            Err(error) if is_expired(&session, unix_now()) => Err(error),
            Err(error) => {
                tracing::warn!(error = %error, "refresh before the call failed; the access token is still valid, using it");
                Ok(Prepared {
                    session,
                    cycle: Cycle::Failed(error),
                })
            }
        }
    }

    fn start(self: &Arc<Self>, used: Arc<Session>) -> Flight {
        let tag = {
            let mut next = lock(&self.next_tag);
            *next += 1;
            *next
        };
        let this = self.clone();
        let task = tokio::spawn({
            let used = used.clone();
            async move {
                let result = this.run(&used).await;
                let mut slot = lock(&this.in_flight);
                if slot.as_ref().is_some_and(|flight| flight.tag == tag) {
                    *slot = None;
                }
                result
            }
        });
        let result = async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the refresh task failed: {e}"))))
        }
        .boxed()
        .shared();
        Flight { tag, used, result }
    }

    /// One refresh, under the keyring entry's cross-process lock: no other process refreshes
    /// (or writes the entry) meanwhile. The keyring is re-read first, and a session another
    /// process stored (a rotation, another sign-in, a sign-out) is adopted instead of
    /// spending `used`'s refresh token, which may be spent already. A rejected token is
    /// checked against the keyring again before the session is cleared. The commit skips a
    /// session signed out meanwhile, by any process.
    async fn run(&self, used: &Arc<Session>) -> Result<Arc<Session>> {
        let Some(endpoint) = &self.endpoint else {
            return Err(Error::no_auth_server());
        };
        let Some(refresh_token) = used.refresh_token.clone() else {
            return Err(Error::auth_expired(
                AuthExpiredReason::RefreshRejected,
                "the session has no refresh token",
            ));
        };
        let owned = self.sessions.own(OWNER_WAIT).await?;
        // A keyring that cannot be read now could not take the new tokens either: the old
        // refresh token is not spent for nothing.
        self.sessions.sync(&owned).await?;
        match self.sessions.cached() {
            None => return Err(Error::no_session()),
            Some(current) if !current.same_lineage(used) => return Ok(current),
            Some(_) => {}
        }
        let exchanged = if self.was_rejected(&refresh_token) {
            Err(rejected_before())
        } else {
            self.exchange(endpoint.as_ref(), &refresh_token).await
        };
        let issued = match exchanged {
            Ok(issued) => issued,
            Err(error) if is_fatal(&error) => {
                self.remember_rejected(refresh_token);
                if self
                    .sessions
                    .end_owned(&owned, used, SignOutReason::RefreshFailed)
                    .await
                {
                    tracing::info!("the auth server rejected the refresh token; signed out");
                    return Err(error);
                }
                // A session stored since the refresh began (here, or by another process, as
                // the re-read in `end_owned` shows) is adopted, not cleared.
                return match self.sessions.cached() {
                    Some(current) if !current.same_lineage(used) => Ok(current),
                    _ => Err(error),
                };
            }
            Err(error) => return Err(error),
        };
        let next = issued_session(issued, Some(used))?;
        let committed = self
            .sessions
            .replace_owned(&owned, used, next, Some(AuthEvent::TokenRefreshed))
            .await?;
        if !committed {
            tracing::info!("refresh finished after a sign-out or a newer sign-in; discarded");
        }
        drop(owned);
        self.sessions.current().await.ok_or_else(Error::no_session)
    }

    /// Calls the token endpoint, retrying transient failures with exponential backoff.
    async fn exchange(
        &self,
        endpoint: &dyn TokenEndpoint,
        refresh_token: &Secret,
    ) -> Result<IssuedSession> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let error = match endpoint.refresh(refresh_token.expose().to_string()).await {
                Ok(issued) => return Ok(issued),
                Err(error) if !error.retryable() => return Err(error),
                Err(error) => error,
            };
            let mut delay = BACKOFF_BASE * 2u32.saturating_pow(attempt);
            if let Error::RateLimited {
                retry_after: Some(after),
                ..
            } = &error
            {
                delay = delay.max(*after);
            }
            if started.elapsed() + delay > RETRY_BUDGET {
                return Err(error);
            }
            tracing::info!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "refresh failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Starts the ticker, every [`TICK_PERIOD`].
    pub fn spawn_ticker(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.spawn_ticker_every(TICK_PERIOD)
    }

    /// Starts the ticker: a first tick at start, then one every `period`. It runs also
    /// without an auth server: the keyring upkeep ([`Sessions::maintain`]) needs it.
    pub fn spawn_ticker_every(
        self: &Arc<Self>,
        period: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                this.tick().await;
            }
        }))
    }

    /// One tick: the keyring upkeep (retry a keyring that did not work, re-read the entry
    /// and adopt what another process changed, complete pending sign-outs and writes that
    /// timed out), then a refresh if the session is about to expire.
    pub async fn tick(self: &Arc<Self>) {
        self.sessions.maintain().await;
        if self.endpoint.is_none() {
            return;
        }
        let Some(session) = self.sessions.current().await else {
            return;
        };
        if !session.expires_within(TICK_THRESHOLD_S, unix_now()) || !self.can_refresh(&session) {
            return;
        }
        if let Err(error) = self.refresh(session).await {
            tracing::warn!(error = %error, "auto-refresh failed");
            // No caller waits on a tick: a fault here (a keyring that cannot store the new
            // session, an auth server answering garbage) is reported here or never.
            self.telemetry.report(&error);
        }
    }

    fn was_rejected(&self, token: &Secret) -> bool {
        lock(&self.rejected).contains(token)
    }

    fn remember_rejected(&self, token: Secret) {
        let mut rejected = lock(&self.rejected);
        if rejected.len() == REJECTED_KEPT {
            rejected.remove(0);
        }
        rejected.push(token);
    }
}

/// What [`Refresher::prepare`] did for a call: the session to use and its refresh cycle.
#[derive(Debug)]
pub struct Prepared {
    pub session: Arc<Session>,
    pub cycle: Cycle,
}

impl Prepared {
    fn as_is(session: Arc<Session>) -> Self {
        Self {
            session,
            cycle: Cycle::Unused,
        }
    }
}

/// A call's one refresh cycle (docs/protocol.md, "The session gate").
#[derive(Debug)]
pub enum Cycle {
    /// No refresh yet: a backend 401 may still get one refresh and one retry.
    Unused,
    /// Refreshed before the call: a backend 401 for that token is final.
    Refreshed,
    /// The refresh before the call failed for a passing reason and the still-valid token
    /// went out: a backend 401 answers this error, and nothing is refreshed again.
    Failed(Error),
}

/// Whether the access token has expired at `now` (unix seconds); unknown expiry is never.
fn is_expired(session: &Session, now: i64) -> bool {
    session.expires_within(0, now)
}

/// The error for a refresh token the auth server already rejected: not sent again.
fn rejected_before() -> Error {
    Error::auth_expired(
        AuthExpiredReason::RefreshRejected,
        "the auth server already rejected this refresh token",
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

/// The session the auth server issued (a refresh, a sign-in). What it left out (a refresh
/// token, the token type, the user) is kept from `previous`, the session it replaces when
/// it is a refresh.
pub fn issued_session(issued: IssuedSession, previous: Option<&Session>) -> Result<Session> {
    let access_token = Secret::new(issued.access_token).ok_or_else(|| {
        Error::malformed_answer(None, "the auth server returned an empty access token")
    })?;
    let expires_at = derive_expiry(
        issued.expires_at,
        issued.expires_in,
        &access_token,
        unix_now(),
    );
    Ok(Session {
        refresh_token: issued
            .refresh_token
            .and_then(Secret::new)
            .or_else(|| previous.and_then(|used| used.refresh_token.clone())),
        access_token,
        expires_at,
        token_type: issued
            .token_type
            .or_else(|| previous.and_then(|used| used.token_type.clone())),
        user: issued
            .user
            .or_else(|| previous.and_then(|used| used.user.clone())),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::session::{AuthStateChanged, StoreOptions};

    /// A token endpoint scripted answer by answer, recording when each call came.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Result<IssuedSession>>>,
        calls: Mutex<Vec<Instant>>,
        /// Each call takes this long (paused clock).
        latency: Duration,
    }

    impl TokenEndpoint for Arc<Script> {
        fn refresh(&self, _token: String) -> BoxFuture<'static, Result<IssuedSession>> {
            let script = self.clone();
            Box::pin(async move {
                lock(&script.calls).push(Instant::now());
                tokio::time::sleep(script.latency).await;
                let n = lock(&script.calls).len();
                lock(&script.answers)
                    .pop_front()
                    .unwrap_or_else(|| Ok(issued(n)))
            })
        }
    }

    fn issued(n: usize) -> IssuedSession {
        IssuedSession {
            access_token: format!("access-token-{n}"),
            refresh_token: Some(format!("refresh-token-{n}")),
            expires_in: Some(3600),
            expires_at: None,
            token_type: Some("bearer".into()),
            user: None,
        }
    }

    fn transient(status: u16) -> Error {
        Error::backend_status(status, "down")
    }

    fn fatal() -> Error {
        Error::auth_expired(AuthExpiredReason::RefreshRejected, "already used")
    }

    struct Fixture {
        sessions: Arc<Sessions>,
        refresher: Arc<Refresher>,
        script: Arc<Script>,
        events: Arc<Mutex<Vec<AuthStateChanged>>>,
    }

    async fn fixture(script: Script) -> Fixture {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let sessions = Sessions::new(
            StoreOptions::memory("refresh-tests"),
            Arc::new(move |change| lock(&sink).push(change)),
            Telemetry::new(),
        );
        let script = Arc::new(script);
        let endpoint: Arc<dyn TokenEndpoint> = Arc::new(script.clone());
        let refresher = Refresher::new(sessions.clone(), Some(endpoint), Telemetry::new());
        Fixture {
            sessions,
            refresher,
            script,
            events,
        }
    }

    fn session(access: &str, expires_in: i64) -> Session {
        Session {
            access_token: Secret::new(access).unwrap(),
            refresh_token: Secret::new("refresh-token-0"),
            expires_at: Some(unix_now() + expires_in),
            token_type: None,
            user: Some(serde_json::json!({"id": "u"})),
        }
    }

    impl Fixture {
        async fn signed_in(&self, expires_in: i64) -> Arc<Session> {
            self.sessions
                .sign_in(session("access-token-0", expires_in))
                .await
                .unwrap();
            self.sessions.current().await.unwrap()
        }

        /// The events' names as the shell reads them.
        /// (INITIAL_SESSION, always first, left out.)
        fn events(&self) -> Vec<String> {
            lock(&self.events)
                .iter()
                .filter(|e| e.event != crate::session::model::EventName::InitialSession)
                .map(|e| serde_json::to_value(e.event).expect("a name").to_string())
                .map(|name| name.trim_matches('"').to_string())
                .collect()
        }

        fn calls(&self) -> Vec<Instant> {
            lock(&self.script.calls).clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh() {
        let f = fixture(Script {
            latency: Duration::from_millis(50),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let refresher = f.refresher.clone();
                let used = used.clone();
                tokio::spawn(async move { refresher.refresh(used).await })
            })
            .collect();
        for caller in callers {
            let session = caller.await.unwrap().unwrap();
            assert_eq!(session.access_token.expose(), "access-token-1");
        }
        assert_eq!(f.calls().len(), 1);
        assert_eq!(f.events(), ["SIGNED_IN", "TOKEN_REFRESHED"]);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_retry_on_the_backoff_schedule() {
        let f = fixture(Script {
            answers: Mutex::new(VecDeque::from([
                Err(transient(500)),
                Err(transient(503)),
                Err(Error::Unavailable("refused".into())),
            ])),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let session = f.refresher.refresh(used).await.unwrap();
        assert_eq!(session.access_token.expose(), "access-token-4");
        let calls = f.calls();
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            gaps,
            [200, 400, 800].map(Duration::from_millis),
            "200 ms * 2^n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_give_up_within_the_budget() {
        let f = fixture(Script {
            answers: Mutex::new((0..100).map(|_| Err(transient(502))).collect()),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let started = Instant::now();
        let error = f.refresher.refresh(used).await.unwrap_err();
        assert_eq!(error.kind(), crate::error::ErrorKind::Backend);
        assert!(started.elapsed() <= RETRY_BUDGET);
        assert!(
            f.sessions.current().await.is_some(),
            "transient keeps the session"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_rejection_signs_out_once_and_is_never_retried() {
        let f = fixture(Script {
            answers: Mutex::new(VecDeque::from([Err(fatal())])),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(60).await;
        let ticker = f.refresher.spawn_ticker().unwrap();
        tokio::time::sleep(TICK_PERIOD * 5).await;
        assert!(f.sessions.current().await.is_none());
        assert_eq!(f.events(), ["SIGNED_IN", "SIGNED_OUT"]);
        assert_eq!(
            lock(&f.events).last().unwrap().reason,
            Some(SignOutReason::RefreshFailed)
        );
        assert_eq!(f.calls().len(), 1, "the ticker does not loop");
        // The same session stored again: its refresh token is not sent again.
        f.sessions.sign_in((*used).clone()).await.unwrap();
        let again = f.refresher.refresh(used).await.unwrap_err();
        assert!(is_fatal(&again));
        assert_eq!(f.calls().len(), 1);
        ticker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_caller_does_not_cancel_the_refresh() {
        let f = fixture(Script {
            latency: Duration::from_secs(2),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), f.refresher.refresh(used)).await;
        assert!(gave_up.is_err(), "the caller gave up");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let current = f.sessions.current().await.unwrap();
        assert_eq!(current.access_token.expose(), "access-token-1");
    }

    /// A cancelled request drops its wait on a shared refresh: the other callers still get
    /// the one refresh, which runs once.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_leaves_the_shared_refresh_to_the_others() {
        let f = fixture(Script {
            latency: Duration::from_secs(2),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let dropped = tokio::spawn({
            let (refresher, used) = (f.refresher.clone(), used.clone());
            async move { refresher.refresh(used).await }
        });
        let kept = tokio::spawn({
            let refresher = f.refresher.clone();
            async move { refresher.refresh(used).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        let fresh = kept.await.unwrap().expect("the refresh went on");
        assert_eq!(fresh.access_token.expose(), "access-token-1");
        assert_eq!(f.calls().len(), 1, "one refresh for both");
    }

    /// A signed-in fixture with a one-second refresh under way.
    async fn refresh_in_flight() -> (Fixture, tokio::task::JoinHandle<Result<Arc<Session>>>) {
        let f = fixture(Script {
            latency: Duration::from_secs(1),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let refresh = tokio::spawn({
            let refresher = f.refresher.clone();
            async move { refresher.refresh(used).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        (f, refresh)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_ends_after_sign_out_is_discarded() {
        let (f, refresh) = refresh_in_flight().await;
        f.sessions.sign_out(SignOutReason::SignedOut).await.unwrap();
        assert!(refresh.await.unwrap().is_err());
        assert!(f.sessions.current().await.is_none());
        assert_eq!(f.events(), ["SIGNED_IN", "SIGNED_OUT"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_that_ends_after_a_newer_sign_in_is_discarded() {
        let (f, refresh) = refresh_in_flight().await;
        f.sessions
            .sign_in(session("newer-access-token", 3600))
            .await
            .unwrap();
        let now = refresh.await.unwrap().unwrap();
        assert_eq!(now.access_token.expose(), "newer-access-token");
        assert_eq!(f.events(), ["SIGNED_IN", "SIGNED_IN"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ticker_refreshes_only_near_expiry() {
        let f = fixture(Script::default()).await;
        f.signed_in(3600).await;
        let ticker = f.refresher.spawn_ticker().unwrap();
        tokio::time::sleep(TICK_PERIOD * 3).await;
        assert!(f.calls().is_empty(), "an hour left: nothing to do");
        f.signed_in(80).await;
        tokio::time::sleep(TICK_PERIOD + Duration::from_secs(1)).await;
        assert_eq!(f.calls().len(), 1, "80 s left: refreshed on the next tick");
        ticker.abort();
    }

    /// A caller that read the session before another caller's refresh committed must not
    /// send the rotated (now used) refresh token again: GoTrue would refuse it, and reuse
    /// outside its reuse interval revokes the whole session.
    #[tokio::test(start_paused = true)]
    async fn a_late_caller_with_the_old_session_adopts_the_refreshed_one() {
        let f = fixture(Script::default()).await;
        let used = f.signed_in(10).await;
        let first = f.refresher.refresh(used.clone()).await.unwrap();
        assert_eq!(first.access_token.expose(), "access-token-1");
        let late = f.refresher.refresh(used).await.unwrap();
        assert_eq!(late.access_token.expose(), "access-token-1");
        assert_eq!(
            f.calls().len(),
            1,
            "the used refresh token is not sent again"
        );
        assert_eq!(f.events(), ["SIGNED_IN", "TOKEN_REFRESHED"]);
    }

    /// A caller with a session stored during another session's refresh does not take that
    /// refresh's result for its own: its session is refreshed in turn.
    #[tokio::test(start_paused = true)]
    async fn a_newer_session_is_refreshed_after_the_old_refresh_ends() {
        let (f, old) = refresh_in_flight().await;
        let newer = Session {
            refresh_token: Secret::new("newer-refresh-token"),
            ..session("newer-access-token", 10)
        };
        f.sessions.sign_in(newer).await.unwrap();
        let newer = f.sessions.current().await.unwrap();
        let fresh = f.refresher.refresh(newer).await.unwrap();
        assert_eq!(fresh.access_token.expose(), "access-token-2");
        let old = old.await.unwrap().unwrap();
        assert_ne!(
            old.access_token.expose(),
            "access-token-1",
            "old result discarded"
        );
        assert_eq!(f.calls().len(), 2);
        assert_eq!(
            f.sessions.current().await.unwrap().access_token.expose(),
            "access-token-2"
        );
        assert_eq!(f.events(), ["SIGNED_IN", "SIGNED_IN", "TOKEN_REFRESHED"]);
    }

    /// A fatal rejection after a newer session was stored adopts the newer session.
    #[tokio::test(start_paused = true)]
    async fn a_fatal_rejection_after_a_newer_sign_in_adopts_it() {
        let f = fixture(Script {
            answers: Mutex::new(VecDeque::from([Err(fatal())])),
            latency: Duration::from_secs(1),
            ..Script::default()
        })
        .await;
        let used = f.signed_in(10).await;
        let refresh = tokio::spawn({
            let refresher = f.refresher.clone();
            async move { refresher.refresh(used).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        f.sessions
            .sign_in(session("newer-access-token", 3600))
            .await
            .unwrap();
        let now = refresh.await.unwrap().unwrap();
        assert_eq!(now.access_token.expose(), "newer-access-token");
        assert!(f.sessions.current().await.is_some());
        assert_eq!(f.events(), ["SIGNED_IN", "SIGNED_IN"]);
    }

    /// A refresh after a sign-out finds no session: `no_session`, and nothing is sent.
    #[tokio::test(start_paused = true)]
    async fn a_refresh_after_sign_out_sends_nothing() {
        let f = fixture(Script::default()).await;
        let used = f.signed_in(10).await;
        f.sessions.sign_out(SignOutReason::SignedOut).await.unwrap();
        let error = f.refresher.refresh(used).await.unwrap_err();
        assert_eq!(error.data()["reason"], "no_session");
        assert!(f.calls().is_empty());
    }

    #[test]
    fn refreshed_sessions_keep_what_the_server_left_out() {
        let used = session("old-access-token", 10);
        let mut fresh = issued(1);
        fresh.refresh_token = None;
        let next = issued_session(fresh, Some(&used)).unwrap();
        assert_eq!(next.refresh_token, used.refresh_token);
        assert_eq!(next.user, used.user);
        assert!(next.expires_at.unwrap() > unix_now() + 3000);
    }
}
