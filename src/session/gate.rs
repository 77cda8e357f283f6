//! The session gate: the only code that reads the session for a domain call, attaches the
//! token, and decides that a session has expired (DESIGN.md section 5).

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
        let session = self.fresh_session().await?;
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

    /// The cached session, refreshed first when it is about to expire.
    async fn fresh_session(&self) -> Result<Arc<Session>> {
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

    async fn expire(&self, session: &Session) {
        if self
            .sessions
            .end_if_current(session, SignOutReason::Expired)
            .await
        {
            tracing::info!("backend rejected the session token; session cleared");
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
