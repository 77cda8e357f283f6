//! The session gate: the only code that reads the session for a call, decides "fresh enough,
//! or refresh first", attaches the token, and ends a session that turned out to be gone
//! (docs/protocol.md, "The session gate").
//!
//! Both ways through it refresh first a token about to expire ([`Refresher::prepare`]) and
//! never send an access token known to be expired: a refresh that failed is then the answer.
//! - [`Gate::call`], for the product backend: the domain gets a [`BackendClient`] that
//!   carries the token. One call makes at most one refresh cycle: a backend 401 gets one
//!   refresh and one retry only if the token was not refreshed (or failed to be) for this
//!   call.
//! - [`Gate::with_session`], for the auth server's session endpoints (`/user`): the caller
//!   gets the session itself, and an `auth_expired` answer ends it.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{Backend, BackendClient, NO_BACKEND_MESSAGE};
use crate::error::{AuthExpiredReason, Error, Result};
use crate::session::refresh::{Cycle, Prepared, Refresher};
use crate::session::{Session, Sessions, SignOutReason};

#[derive(Clone)]
pub struct Gate {
    sessions: Arc<Sessions>,
    backend: Backend,
    refresher: Arc<Refresher>,
}

impl Gate {
    pub fn new(sessions: Arc<Sessions>, backend: Backend, refresher: Arc<Refresher>) -> Self {
        Self {
            sessions,
            backend,
            refresher,
        }
    }

    /// Whether a product backend URL is configured (without one every call is
    /// `unavailable`).
    pub fn backend_configured(&self) -> bool {
        self.backend.is_configured()
    }

    /// The session store the gate reads.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The refresher the gate uses (sign-out refreshes an expiring token through it).
    pub fn refresher(&self) -> &Arc<Refresher> {
        &self.refresher
    }

    /// Runs `call` with the session, refreshed first when about to expire (never with an
    /// access token known to be expired). When `call` says the session is gone
    /// (`auth_expired`), the session is ended if it is still the stored one, with one
    /// SIGNED_OUT `expired`. Nothing is retried.
    pub async fn with_session<R, F, Fut>(&self, call: F) -> Result<R>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let session = self.prepare().await?.session;
        match call(session.clone()).await {
            Err(error @ Error::AuthExpired { .. }) => {
                self.expire(&session).await;
                Err(error)
            }
            other => other,
        }
    }

    /// Runs a domain call with a client that carries the session's access token. One call
    /// makes at most one refresh cycle (one single-flight refresh, its retries included).
    ///
    /// 1. No session: `auth_expired` (`no_session`).
    /// 2. The token expires within 60 s: refresh first ([`Refresher::prepare`]). If that
    ///    fails and the token has expired, the call fails with the refresh's error before
    ///    anything is sent.
    /// 3. A backend 401:
    ///    - the token was not refreshed for this call: one refresh and one retry when
    ///      possible; a failed refresh answers its error (the session is kept unless the
    ///      refresh token was rejected);
    ///    - the refresh before the call failed (the still-valid token went out): that
    ///      failure is the answer, no second refresh, the session is kept;
    ///    - otherwise (refreshed for this call, the retry's 401, or no refresh possible): the
    ///      stored session is cleared if it is still the one this call used, with one
    ///      SIGNED_OUT `expired`, and the call fails with `auth_expired`.
    pub async fn call<R, F, Fut>(&self, domain_call: F) -> Result<R>
    where
        F: Fn(BackendClient) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        if !self.backend.is_configured() {
            return Err(Error::Unavailable(NO_BACKEND_MESSAGE.into()));
        }
        let Prepared { session, cycle } = self.prepare().await?;
        let error = match domain_call(self.client(&session)).await {
            Err(error) if is_backend_unauthorized(&error) => error,
            other => return other,
        };
        match cycle {
            Cycle::Failed(refresh_error) => return Err(refresh_error),
            Cycle::Unused if self.refresher.can_refresh(&session) => {
                let refreshed = self.refresher.refresh(session.clone()).await?;
                if !refreshed.same_access(&session) {
                    return match domain_call(self.client(&refreshed)).await {
                        Err(error) if is_backend_unauthorized(&error) => {
                            self.expire(&refreshed).await;
                            Err(error)
                        }
                        other => other,
                    };
                }
            }
            Cycle::Unused | Cycle::Refreshed => {}
        }
        self.expire(&session).await;
        Err(error)
    }

    /// The cached session, prepared for a call: the one place that decides "fresh enough,
    /// or refresh first".
    async fn prepare(&self) -> Result<Prepared> {
        let session = self
            .sessions
            .current()
            .await
            .ok_or_else(Error::no_session)?;
        self.refresher.prepare(session).await
    }

    fn client(&self, session: &Session) -> BackendClient {
        self.backend.authed(session.access_token.expose())
    }

    /// The one place a call ends a session it found gone. In a task of its own: a call
    /// dropped meanwhile (the shell cancelled it) must not leave the change half-done.
    async fn expire(&self, session: &Arc<Session>) {
        let sessions = self.sessions.clone();
        let session = session.clone();
        let ending = tokio::spawn(async move {
            if sessions
                .end_if_current(&session, SignOutReason::Expired)
                .await
            {
                tracing::info!("the session token was rejected; session cleared");
            }
        });
        let _ = ending.await;
    }
}

fn is_backend_unauthorized(error: &Error) -> bool {
    matches!(
        error,
        Error::AuthExpired {
            reason: AuthExpiredReason::Unauthorized,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    //! The gate's timing rules under a paused clock: one refresh cycle per call, and never a
    //! token known to be expired. The domain call is a closure that records the access
    //! token it would carry (the stored one when it runs) and answers as scripted.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::future::BoxFuture;
    use tokio::time::Instant;

    use super::*;
    use crate::backend::auth_server::{IssuedSession, TokenEndpoint};
    use crate::error::ErrorKind;
    use crate::session::model::unix_now;
    use crate::session::refresh::{GATE_THRESHOLD_S, RETRY_BUDGET};
    use crate::session::{Secret, StoreOptions};
    use crate::telemetry::Telemetry;

    /// A token endpoint answering from a script, then with fresh sessions.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Result<IssuedSession>>>,
        calls: Mutex<usize>,
        /// Every answer after the script runs out is this failure (an outage).
        outage: Option<Error>,
    }

    impl TokenEndpoint for Arc<Script> {
        fn refresh(&self, _token: String) -> BoxFuture<'static, Result<IssuedSession>> {
            let script = self.clone();
            Box::pin(async move {
                let n = {
                    let mut calls = script.calls.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                if let Some(answer) = script.answers.lock().unwrap().pop_front() {
                    return answer;
                }
                match &script.outage {
                    Some(error) => Err(error.clone()),
                    None => Ok(IssuedSession {
                        access_token: format!("access-{n}"),
                        refresh_token: Some(format!("refresh-{n}")),
                        expires_in: Some(3600),
                        expires_at: None,
                        token_type: Some("bearer".into()),
                        user: None,
                    }),
                }
            })
        }
    }

    struct Fixture {
        gate: Gate,
        script: Arc<Script>,
        /// The access token each domain call carried, in order.
        sent: Arc<Mutex<Vec<String>>>,
    }

    fn fixture(script: Script, auth_server: bool) -> Fixture {
        let sessions = Sessions::new(
            StoreOptions::memory("gate-tests"),
            Arc::new(|_| {}),
            Telemetry::new(),
        );
        let script = Arc::new(script);
        let endpoint: Option<Arc<dyn TokenEndpoint>> = auth_server.then(|| {
            let endpoint: Arc<dyn TokenEndpoint> = Arc::new(script.clone());
            endpoint
        });
        let refresher = Refresher::new(sessions.clone(), endpoint, Telemetry::new());
        let backend = Backend::new(
            Some("http://127.0.0.1:9".parse().unwrap()),
            Duration::from_secs(5),
        )
        .unwrap();
        Fixture {
            gate: Gate::new(sessions, backend, refresher),
            script,
            sent: Arc::default(),
        }
    }

    fn outage() -> Script {
        Script {
            outage: Some(Error::backend_status(503, "down")),
            ..Script::default()
        }
    }

    fn unauthorized() -> Error {
        Error::auth_expired(AuthExpiredReason::Unauthorized, "401")
    }

    impl Fixture {
        async fn signed_in(&self, expires_in: i64, refresh_token: Option<&str>) {
            self.gate
                .sessions()
                .sign_in(Session {
                    access_token: Secret::new("access-0").unwrap(),
                    refresh_token: refresh_token.and_then(Secret::new),
                    expires_at: Some(unix_now() + expires_in),
                    token_type: None,
                    user: Some(serde_json::json!({"id": "u"})),
                })
                .await
                .unwrap();
        }

        /// A gated call whose backend answers 401 to every token in `refused`, else 200.
        async fn call(&self, refused: &[&str]) -> Result<String> {
            let refused: Vec<String> = refused.iter().map(|t| t.to_string()).collect();
            self.gate
                .call(|_client| {
                    let (sessions, sent) = (self.gate.sessions().clone(), self.sent.clone());
                    let refused = refused.clone();
                    async move {
                        let session = sessions.cached().expect("a session when called");
                        let token = session.access_token.expose().to_string();
                        sent.lock().unwrap().push(token.clone());
                        if refused.contains(&token) {
                            Err(unauthorized())
                        } else {
                            Ok(token)
                        }
                    }
                })
                .await
        }

        fn sent(&self) -> Vec<String> {
            self.sent.lock().unwrap().clone()
        }

        fn token_calls(&self) -> usize {
            *self.script.calls.lock().unwrap()
        }

        async fn stored(&self) -> Option<String> {
            let session = self.gate.sessions().current().await?;
            Some(session.access_token.expose().to_string())
        }
    }

    /// Issue 12, item 1: an expired token and an auth server failing throughout. The refresh
    /// runs its retries once, its error is the answer, and the expired token is never sent.
    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_never_sent_when_the_refresh_fails() {
        let f = fixture(outage(), true);
        f.signed_in(-10, Some("refresh-0")).await;
        let started = Instant::now();
        let error = f.call(&[]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Backend, "{error}");
        assert!(error.retryable());
        assert!(
            f.sent().is_empty(),
            "nothing was sent with the expired token"
        );
        assert_eq!(f.token_calls(), 8, "one refresh cycle: 8 attempts");
        assert!(started.elapsed() <= RETRY_BUDGET);
        assert_eq!(f.stored().await.as_deref(), Some("access-0"), "kept");

        // The same through `with_session` (`auth_get_user`): `/user` is not called.
        let called = Mutex::new(false);
        let error = f
            .gate
            .with_session(|_| async {
                *called.lock().unwrap() = true;
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Backend);
        assert!(!*called.lock().unwrap());
        assert_eq!(f.stored().await.as_deref(), Some("access-0"), "kept");
    }

    /// Issue 12, item 3: the refresh before the call failed but the token is still valid, so
    /// it goes out (as auth-js); the backend's 401 then answers the refresh's error, with no
    /// second refresh, and the session is kept.
    #[tokio::test(start_paused = true)]
    async fn a_401_after_a_failed_refresh_makes_no_second_refresh() {
        let f = fixture(outage(), true);
        f.signed_in(GATE_THRESHOLD_S - 10, Some("refresh-0")).await;
        let started = Instant::now();
        let error = f.call(&["access-0"]).await.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::Backend,
            "the refresh's error: {error}"
        );
        assert_eq!(f.sent(), ["access-0"], "the still-valid token, once");
        assert_eq!(f.token_calls(), 8, "one refresh cycle, not two");
        assert!(started.elapsed() <= RETRY_BUDGET);
        assert_eq!(f.stored().await.as_deref(), Some("access-0"), "kept");
    }

    /// The still-valid token after a failed refresh also serves a call the backend accepts.
    #[tokio::test(start_paused = true)]
    async fn a_still_valid_token_is_used_when_the_refresh_fails() {
        let f = fixture(outage(), true);
        f.signed_in(GATE_THRESHOLD_S - 10, Some("refresh-0")).await;
        assert_eq!(f.call(&[]).await.unwrap(), "access-0");
        assert_eq!(f.token_calls(), 8);
    }

    /// A 401 for a token not known to be expired: one refresh, one retry (one cycle).
    #[tokio::test(start_paused = true)]
    async fn a_401_refreshes_once_and_retries() {
        let f = fixture(Script::default(), true);
        f.signed_in(3600, Some("refresh-0")).await;
        assert_eq!(f.call(&["access-0"]).await.unwrap(), "access-1");
        assert_eq!(f.sent(), ["access-0", "access-1"]);
        assert_eq!(f.token_calls(), 1);
    }

    /// A token refreshed for this call and refused by the backend: that was the call's
    /// cycle. No second refresh; the session is gone.
    #[tokio::test(start_paused = true)]
    async fn a_401_for_a_token_refreshed_for_the_call_is_final() {
        let f = fixture(Script::default(), true);
        f.signed_in(-10, Some("refresh-0")).await;
        let error = f.call(&["access-1"]).await.unwrap_err();
        assert_eq!(error.data()["reason"], "unauthorized", "{error}");
        assert_eq!(f.sent(), ["access-1"], "never the expired access-0");
        assert_eq!(f.token_calls(), 1, "one refresh");
        assert_eq!(f.stored().await, None);
    }

    /// A 401, then a refresh that fails for a passing reason: its error, the session kept.
    #[tokio::test(start_paused = true)]
    async fn a_401_then_a_failed_refresh_keeps_the_session() {
        let f = fixture(outage(), true);
        f.signed_in(3600, Some("refresh-0")).await;
        let error = f.call(&["access-0"]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Backend, "{error}");
        assert_eq!(f.sent(), ["access-0"]);
        assert_eq!(f.token_calls(), 8);
        assert_eq!(f.stored().await.as_deref(), Some("access-0"));
    }

    /// Expired and not refreshable (no refresh token) with an auth server: an error, no
    /// request anywhere, the session kept (as `auth_refresh_session` answers).
    #[tokio::test(start_paused = true)]
    async fn an_expired_token_without_a_refresh_token_is_not_sent() {
        let f = fixture(Script::default(), true);
        f.signed_in(-10, None).await;
        let error = f.call(&[]).await.unwrap_err();
        assert_eq!(error.data()["reason"], "refresh_rejected", "{error}");
        assert!(f.sent().is_empty());
        assert_eq!(f.token_calls(), 0);
        assert_eq!(f.stored().await.as_deref(), Some("access-0"));
    }

    /// Without an auth server nothing can be refreshed and the backend judges the token.
    #[tokio::test(start_paused = true)]
    async fn without_an_auth_server_the_backend_judges_the_token() {
        let f = fixture(Script::default(), false);
        f.signed_in(-10, Some("refresh-0")).await;
        assert_eq!(f.call(&[]).await.unwrap(), "access-0");
        assert_eq!(f.token_calls(), 0);
    }
}
