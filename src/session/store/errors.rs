//! The text of the store's errors: it names the backend and the operation, never the secret.

use std::time::Duration;

use clap::ValueEnum;

use crate::config::{Fault, KEYRING_FAULT_ENV};
use crate::error::Error;

/// Why one operation did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The keyring answered with an error (already described, see [`describe`]).
    Failed(String),
    /// No answer within the timeout.
    TimedOut(Duration),
    /// `CORE_SIDECAR_KEYRING_FAULT=fail` or `fail-writes` (see [`super::fault`]).
    Injected(Fault),
}

impl Failure {
    /// The [`Error::Storage`] the caller gets for operation `op` on backend `name`.
    pub(super) fn into_error(self, name: &str, op: &str) -> Error {
        Error::Storage(match self {
            Self::Failed(reason) => format!("{name}: {op} failed: {reason}"),
            Self::TimedOut(timeout) => {
                format!("{name}: {op} timed out after {} ms", timeout.as_millis())
            }
            Self::Injected(fault) => {
                let value = fault.to_possible_value().expect("no variant is skipped");
                let value = value.get_name();
                format!("{name}: {op} failed (injected by {KEYRING_FAULT_ENV}={value})")
            }
        })
    }
}

/// A keyring error as text that never carries the secret (`BadEncoding` and `BadDataFormat`
/// hold the stored bytes; they are not printed).
pub(super) fn describe(error: &keyring_core::Error) -> String {
    use keyring_core::Error as K;
    match error {
        K::PlatformFailure(e) => format!("platform failure: {e}"),
        K::NoStorageAccess(e) => format!("no access to the keyring: {e}"),
        K::NoEntry => "no matching entry".into(),
        K::BadEncoding(_) => "the stored secret is not valid UTF-8".into(),
        K::BadDataFormat(..) => "the stored secret is malformed".into(),
        K::BadStoreFormat(reason) => format!("the keyring is malformed: {reason}"),
        K::TooLong(what, limit) => format!("{what} is longer than the platform limit of {limit}"),
        K::Invalid(what, reason) => format!("invalid {what}: {reason}"),
        K::Ambiguous(items) => format!("{} keyring items match the entry", items.len()),
        K::NoDefaultStore => "no keyring store".into(),
        K::NotSupportedByStore(reason) => format!("not supported: {reason}"),
        _ => "unknown keyring error".into(),
    }
}
