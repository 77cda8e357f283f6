//! The one error type of the library: its kinds, their codes and the `data` the shell reads.
//!
//! Transport-free: nothing here knows JSON-RPC or Sentry. The JSON-RPC boundary
//! (`router::to_wire`) turns an [`Error`] into the wire error, and the reporting policy
//! (`telemetry::Telemetry::report`) decides what reaches Sentry.
//!
//! Messages are written for the shell's developers and must never carry a token: text that
//! comes from outside (backend bodies, keyring errors) is scrubbed by shape before it is
//! stored here, and scrubbed again (by value too) wherever an error leaves the process.

use std::time::Duration;

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
    AuthFailed,
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
            Self::AuthFailed => -32006,
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
            Self::AuthFailed => "auth_failed",
            Self::InvalidParams => "invalid_params",
            Self::Internal => "internal",
        }
    }

    /// Every kind, in the order of the contract's error catalog.
    pub const ALL: [ErrorKind; 8] = [
        Self::AuthExpired,
        Self::RateLimited,
        Self::Backend,
        Self::Unavailable,
        Self::Storage,
        Self::AuthFailed,
        Self::InvalidParams,
        Self::Internal,
    ];
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
    /// The auth server refused a sign-in, a code, or a user change for what the user gave
    /// (a wrong password, an expired code, a weak password, an email already taken). The
    /// user can act on it; the session, if any, is untouched.
    #[error("{message}")]
    AuthFailed {
        /// The auth server's error code (`invalid_credentials`, `otp_expired`, ...).
        reason: String,
        /// Its HTTP status; `None` when the sidecar decided without asking (a code to
        /// exchange with no flow in progress).
        status: Option<u16>,
        message: String,
    },
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
            message: "no session: sign in first (a sign-in method, or auth_store_session)".into(),
        }
    }

    pub fn auth_expired(reason: AuthExpiredReason, message: impl Into<String>) -> Self {
        Self::AuthExpired {
            reason,
            message: message.into(),
        }
    }

    /// An answer of the backend or auth server that is not what it promised (not JSON, not
    /// the envelope, a wrong shape, too large). A fault of the upstream: reported.
    pub fn malformed_answer(status: Option<u16>, message: impl Into<String>) -> Self {
        Self::Backend {
            status,
            message: message.into(),
            malformed: true,
        }
    }

    /// A well-formed refusal of the backend or auth server (a 4xx/5xx other than the auth and
    /// rate-limit ones, or `success: false`).
    pub fn backend_status(status: u16, message: impl Into<String>) -> Self {
        Self::Backend {
            status: Some(status),
            message: message.into(),
            malformed: false,
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
            Self::AuthFailed { .. } => ErrorKind::AuthFailed,
            Self::InvalidParams { .. } => ErrorKind::InvalidParams,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the same call may succeed if the shell tries again later.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::Storage(_) => true,
            Self::Backend { status, .. } => status.is_some_and(|s| s >= 500),
            Self::AuthExpired { .. }
            | Self::AuthFailed { .. }
            | Self::InvalidParams { .. }
            | Self::Internal(_) => false,
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
            Self::AuthFailed { reason, status, .. } => {
                data.insert("reason".into(), json!(reason));
                if let Some(status) = status {
                    data.insert("status".into(), json!(status));
                }
            }
            Self::InvalidParams { field, .. } => {
                data.insert("field".into(), json!(field));
            }
            _ => {}
        }
        Value::Object(data)
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
    fn backend_errors_say_whether_a_retry_may_help() {
        assert!(Error::backend_status(502, "bad gateway").retryable());
        assert!(!Error::backend_status(404, "not found").retryable());
        assert!(!Error::malformed_answer(None, "not JSON").retryable());
        assert_eq!(Error::backend_status(404, "x").data()["status"], 404);
        assert_eq!(Error::no_session().data()["reason"], "no_session");
    }
}
