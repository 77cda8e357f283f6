//! The session gate: the only code that reads the session for a call, decides "fresh enough,
//! or refresh first", attaches the token, and ends a session that turned out to be gone
//! (docs/protocol.md, "The session gate").
//!
//! Two ways through it:
//! - [`Gate::call`], for the product backend: the domain gets a [`BackendClient`] that
//!   carries the token, and a backend 401 gets one refresh and one retry.
//! - [`Gate::with_session`], for the auth server's session endpoints (`/user`): the caller
//!   gets the session itself, and an `auth_expired` answer ends it.

use std::future::Future;
use std::sync::Arc;

use crate::backend::{Backend, BackendClient, NO_BACKEND_MESSAGE};
use crate::error::{AuthExpiredReason, Error, Result};
use crate::session::refresh::Refresher;
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

    /// The session store the gate reads.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Runs `call` with the session (refreshed first when about to expire). When `call` says
    /// the session is gone (`auth_expired`), the session is ended if it is still the stored
    /// one, with one SIGNED_OUT `expired`.
    pub async fn with_session<R, F, Fut>(&self, call: F) -> Result<R>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let session = self.session().await?;
        match call(session.clone()).await {
            Err(error @ Error::AuthExpired { .. }) => {
                self.expire(&session).await;
                Err(error)
            }
            other => other,
        }
    }

    /// Runs a domain call with a client that carries the session's access token.
    ///
    /// 1. No session: `auth_expired` (`no_session`).
    /// 2. The token expires within 60 s: refresh first (single-flight).
    /// 3. A backend 401: one refresh and one retry when possible; still 401, or no refresh
    ///    possible: the stored session is cleared if it is still the one this call used,
    ///    with one SIGNED_OUT `expired`, and the call fails with `auth_expired`.
    pub async fn call<R, F, Fut>(&self, domain_call: F) -> Result<R>
    where
        F: Fn(BackendClient) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        if !self.backend.is_configured() {
            return Err(Error::Unavailable(NO_BACKEND_MESSAGE.into()));
        }
        let session = self.session().await?;
        let error = match domain_call(self.client(&session)).await {
            Err(error) if is_backend_unauthorized(&error) => error,
            other => return other,
        };
        if self.refresher.can_refresh(&session) {
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
        self.expire(&session).await;
        Err(error)
    }

    /// The cached session, refreshed first when it is about to expire: the one place that
    /// decides.
    async fn session(&self) -> Result<Arc<Session>> {
        let session = self
            .sessions
            .current()
            .await
            .ok_or_else(Error::no_session)?;
        self.refresher.fresh(session).await
    }

    fn client(&self, session: &Session) -> BackendClient {
        self.backend.authed(session.access_token.expose())
    }

    /// The one place a call ends a session it found gone.
    async fn expire(&self, session: &Session) {
        if self
            .sessions
            .end_if_current(session, SignOutReason::Expired)
            .await
        {
            tracing::info!("the session token was rejected; session cleared");
        }
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
