//! The one error type of the library, and the one place that turns it into a JSON-RPC error
//! and decides what Sentry sees.
//!
//! Messages are written for the shell's developers and must never carry a token: text that
//! comes from outside (backend bodies, keyring errors) is scrubbed before it is stored here.

use std::time::Duration;

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Map, Value, json};

/// Why a session is considered gone. Carried as `data.reason` on `auth_expired` errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthExpiredReason {
    /// No session is stored.
    NoSession,
    /// The backend answered 401 for the access token.
    Unauthorized,
    /// The auth server rejected the refresh token.
    RefreshRejected,
    /// The auth server no longer knows the session or user (`/user` 401/403).
    SessionNotFound,
}

impl AuthExpiredReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSession => "no_session",
            Self::Unauthorized => "unauthorized",
            Self::RefreshRejected => "refresh_rejected",
            Self::SessionNotFound => "session_not_found",
        }
    }
}

/// The kind of an [`Error`], as the shell sees it in `data.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    AuthExpired,
    RateLimited,
    Backend,
    Unavailable,
    Storage,
    InvalidParams,
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> i32 {
        match self {
            Self::AuthExpired => -32001,
            Self::RateLimited => -32002,
            Self::Backend => -32003,
            Self::Unavailable => -32004,
            Self::Storage => -32005,
            Self::InvalidParams => -32602,
            Self::Internal => -32603,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthExpired => "auth_expired",
            Self::RateLimited => "rate_limited",
            Self::Backend => "backend",
            Self::Unavailable => "unavailable",
            Self::Storage => "storage",
            Self::InvalidParams => "invalid_params",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    AuthExpired {
        reason: AuthExpiredReason,
        message: String,
    },
    #[error("rate limited by the {service}")]
    RateLimited {
        service: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A response the backend or auth server should not have sent: a 4xx/5xx other than the
    /// auth and rate-limit ones, `success: false`, or a body that is not what it promised.
    #[error("{message}")]
    Backend {
        status: Option<u16>,
        message: String,
        malformed: bool,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("keyring: {0}")]
    Storage(String),
    #[error("invalid params: {message}")]
    InvalidParams { field: String, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn no_session() -> Self {
        Self::AuthExpired {
            reason: AuthExpiredReason::NoSession,
            message: "no backend session token. Sign in first (auth_store_session)".into(),
        }
    }

    pub fn auth_expired(reason: AuthExpiredReason, message: impl Into<String>) -> Self {
        Self::AuthExpired {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid_params(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParams {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::AuthExpired { .. } => ErrorKind::AuthExpired,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Backend { .. } => ErrorKind::Backend,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Storage(_) => ErrorKind::Storage,
            Self::InvalidParams { .. } => ErrorKind::InvalidParams,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the same call may succeed if the shell tries again later.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::Storage(_) => true,
            Self::Backend { status, .. } => status.is_some_and(|s| s >= 500),
            Self::AuthExpired { .. } | Self::InvalidParams { .. } | Self::Internal(_) => false,
        }
    }

    /// Whether this error is a real fault worth a Sentry event. Session expiry, rate limits,
    /// offline machines and bad input are expected in the life of a desktop app: reporting
    /// them would flood Sentry from every shell that polls.
    pub fn is_reportable(&self) -> bool {
        match self {
            Self::Backend {
                status, malformed, ..
            } => *malformed || status.is_some_and(|s| s >= 500),
            Self::Storage(_) | Self::Internal(_) => true,
            Self::AuthExpired { .. }
            | Self::RateLimited { .. }
            | Self::Unavailable(_)
            | Self::InvalidParams { .. } => false,
        }
    }

    /// A stable grouping key for Sentry and its dedupe: the kind and status, never the
    /// message, which may vary per call.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::Backend {
                status, malformed, ..
            } => format!(
                "backend:{}:{}",
                status.map_or_else(|| "none".to_string(), |s| s.to_string()),
                if *malformed { "malformed" } else { "status" }
            ),
            Self::Storage(_) => "storage".into(),
            Self::Internal(message) => format!("internal:{message}"),
            other => other.kind().as_str().to_string(),
        }
    }

    /// The JSON-RPC `data` member.
    pub fn data(&self) -> Value {
        let mut data = Map::new();
        data.insert("kind".into(), json!(self.kind().as_str()));
        data.insert("retryable".into(), json!(self.retryable()));
        match self {
            Self::AuthExpired { reason, .. } => {
                data.insert("reason".into(), json!(reason.as_str()));
            }
            Self::RateLimited {
                status,
                retry_after,
                ..
            } => {
                data.insert("status".into(), json!(status));
                if let Some(after) = retry_after {
                    data.insert("retryAfterMs".into(), json!(after.as_millis() as u64));
                }
            }
            Self::Backend {
                status: Some(status),
                ..
            } => {
                data.insert("status".into(), json!(status));
            }
            Self::InvalidParams { field, .. } => {
                data.insert("field".into(), json!(field));
            }
            _ => {}
        }
        Value::Object(data)
    }

    /// The one place an error leaves the library: reported to Sentry when it is a real fault,
    /// then turned into the JSON-RPC error object the shell receives.
    pub fn into_rpc_error(self) -> ErrorObjectOwned {
        if self.is_reportable() {
            crate::telemetry::report(&self);
        }
        ErrorObjectOwned::owned(self.kind().code(), self.to_string(), Some(self.data()))
    }
}

impl From<Error> for ErrorObjectOwned {
    fn from(error: Error) -> Self {
        error.into_rpc_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract() {
        assert_eq!(Error::no_session().kind().code(), -32001);
        let limited = Error::RateLimited {
            service: "backend",
            status: 429,
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(limited.kind().code(), -32002);
        assert_eq!(limited.data()["retryAfterMs"], 1500);
        assert_eq!(Error::Unavailable("x".into()).kind().code(), -32004);
        assert_eq!(Error::Storage("x".into()).kind().code(), -32005);
        assert_eq!(Error::invalid_params("a", "b").data()["field"], "a");
    }

    #[test]
    fn only_real_faults_are_reportable() {
        let server = Error::Backend {
            status: Some(502),
            message: "bad gateway".into(),
            malformed: false,
        };
        let client = Error::Backend {
            status: Some(404),
            message: "not found".into(),
            malformed: false,
        };
        assert!(server.is_reportable());
        assert!(!client.is_reportable());
        assert!(!Error::no_session().is_reportable());
        assert!(Error::Storage("locked".into()).is_reportable());
        assert_eq!(Error::no_session().data()["reason"], "no_session");
    }
}
