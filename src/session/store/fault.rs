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
            Self::FailWrites => None,
        }
    }
}
