//! Fault injection, for tests only.
//!
//! `CORE_SIDECAR_KEYRING_FAULT` (the hidden setting [`Config::keyring_fault`], passed in
//! through [`StoreOptions::fault`](super::StoreOptions::fault)) is a test switch, not a
//! feature: integration tests use it to prove how storage failures surface.
//!
//! - `hang`: every `load`/`save`/`delete` hangs until the timeout, then fails with a
//!   `storage` error ("timed out"), exactly as a stuck keyring would.
//! - `fail`: every `load`/`save`/`delete` fails at once with a `storage` error.
//! - `fail-writes`: `save` and `delete` fail at once; `load` works.
//! - `late-writes`: `save` and `delete` on an OS keyring are carried out only once the
//!   timeout has passed: the caller is told they timed out, and they land afterwards, as
//!   with a frozen keyring that resumes. `load` works; on `memory` nothing is faulted.
//!
//! The backend is still chosen (and probed) as usual; only the operations on it are faulted.
//! Any other value stops the sidecar at start, naming the variable.
//!
//! [`Config::keyring_fault`]: crate::config::Config::keyring_fault

use std::time::Duration;

use super::Op;
use super::errors::Failure;
use crate::config::Fault;

impl Fault {
    /// What `op` comes to under this fault: a failure instead of the operation, or `None`
    /// when the operation runs as usual.
    pub(super) async fn strike(self, op: Op, timeout: Duration) -> Option<Failure> {
        match self {
            Self::Hang => {
                tokio::time::sleep(timeout).await;
                Some(Failure::TimedOut(timeout))
            }
            Self::Fail => Some(Failure::Injected(self)),
            Self::FailWrites if op.writes() => Some(Failure::Injected(self)),
            Self::FailWrites | Self::LateWrites => None,
        }
    }

    /// How long the keyring call of `op` waits before it is carried out (on its own
    /// thread), under this fault.
    pub(super) fn delay(self, op: Op, timeout: Duration) -> Option<Duration> {
        (self == Self::LateWrites && op.writes()).then(|| timeout + timeout / 2)
    }
}
