//! The session gate: the only code that reads the session for a domain call, attaches the
//! token, and decides that a session has expired (DESIGN.md section 5).

use std::future::Future;
use std::sync::Arc;

use crate::backend::{Backend, BackendClient};
use crate::error::{AuthExpiredReason, Error, Result};
use crate::session::{Session, Sessions, SignOutReason};

#[derive(Clone)]
pub struct Gate {
    sessions: Arc<Sessions>,
    backend: Backend,
}

impl Gate {
    pub fn new(sessions: Arc<Sessions>, backend: Backend) -> Self {
        Self { sessions, backend }
    }

    /// Runs a domain call with a client that carries the session's access token.
    ///
    /// A backend 401 means the session is gone: the stored session is cleared if it is still
    /// the one this call used, with one SIGNED_OUT `expired`, and the call fails with
    /// `auth_expired`.
    pub async fn call<R, F, Fut>(&self, domain_call: F) -> Result<R>
    where
        F: Fn(BackendClient) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        if !self.backend.is_configured() {
            return Err(Error::Unavailable(
                "no backend configured: set CORE_SIDECAR_BACKEND_URL".into(),
            ));
        }
        let session = self
            .sessions
            .current()
            .await
            .ok_or_else(Error::no_session)?;
        let result = domain_call(self.backend.authed(session.access_token.expose())).await;
        match result {
            Err(error) if is_backend_unauthorized(&error) => {
                self.expire(&session).await;
                Err(error)
            }
            other => other,
        }
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
