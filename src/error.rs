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
    /// The shell cancelled the request (`$/cancelRequest`). Answered by the transport, never
    /// by a handler.
    Cancelled,
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
            Self::Cancelled => -32800,
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
            Self::Cancelled => "cancelled",
        }
    }

    /// Every kind, in the order of the contract's error catalog.
    pub const ALL: [ErrorKind; 9] = [
        Self::AuthExpired,
        Self::RateLimited,
        Self::Backend,
        Self::Unavailable,
        Self::Storage,
        Self::AuthFailed,
        Self::InvalidParams,
        Self::Internal,
        Self::Cancelled,
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
    /// `supported`: the protocol versions this sidecar speaks, when the param at fault is
    /// a protocol version it does not (`core_initialize`); `data.supported`.
    #[error("invalid params: {message}")]
    InvalidParams {
        field: String,
        message: String,
        supported: Option<&'static [u32]>,
    },
    #[error("internal error: {0}")]
    Internal(String),
    /// The shell cancelled the request. The transport writes this answer itself (the
    /// handler's future is dropped); the variant names the kind for the contract.
    #[error("cancelled by the client")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn no_session() -> Self {
        Self::AuthExpired {
            reason: AuthExpiredReason::NoSession,
            message: "no session: sign in first (a sign-in method, or auth_store_session)".into(),
        }
    }

    /// A method that needs the auth server, without one configured.
    pub fn no_auth_server() -> Self {
        Self::Unavailable("no auth server configured: set CORE_SIDECAR_AUTH_URL".into())
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
            supported: None,
        }
    }

    /// A protocol version this sidecar does not speak: `invalid_params` naming `field`, with
    /// the versions it does in `data.supported`.
    pub fn unsupported_protocol(
        field: impl Into<String>,
        requested: impl std::fmt::Display,
        supported: &'static [u32],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(u32::to_string).collect();
        Self::InvalidParams {
            field: field.into(),
            message: format!(
                "protocol version {requested} is not supported; supported: {}",
                list.join(", ")
            ),
            supported: Some(supported),
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
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// Whether the same call may succeed if the shell tries again later.
    pub fn retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unavailable(_) | Self::Storage(_) => true,
            Self::Backend { status, .. } => status.is_some_and(|s| s >= 500),
            // A cancelled call may well succeed if sent again, but the shell chose to stop it:
            // a shell that retries whatever is retryable must not undo its own cancel.
            Self::AuthExpired { .. }
            | Self::AuthFailed { .. }
            | Self::InvalidParams { .. }
            | Self::Internal(_)
            | Self::Cancelled => false,
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
            Self::InvalidParams {
                field, supported, ..
            } => {
                data.insert("field".into(), json!(field));
                if let Some(supported) = supported {
                    data.insert("supported".into(), json!(supported));
                }
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
        let unsupported = Error::unsupported_protocol("protocolVersion", 9, &[1]);
        assert_eq!(unsupported.kind().code(), -32602);
        assert_eq!(
            unsupported.data(),
            json!({"kind": "invalid_params", "retryable": false, "field": "protocolVersion", "supported": [1]})
        );
        assert_eq!(
            Error::Cancelled.data(),
            json!({"kind": "cancelled", "retryable": false})
        );
        assert_eq!(Error::Cancelled.kind().code(), -32800);
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
