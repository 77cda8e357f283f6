//! How a blocking keyring call is run: serialized, off the async threads, under a timeout.
//!
//! # Blocking calls
//!
//! Every keyring call blocks (D-Bus round trips, Keychain prompts). Each runs on its own
//! short-lived OS thread and is awaited under [`tokio::time::timeout`]; on timeout the caller
//! gets an error at once while the stuck call is left to finish on its own. A plain thread is
//! used rather than `spawn_blocking` on purpose: a keyring call stuck forever (a locked
//! collection waiting on an unlock prompt nobody answers) must not keep the tokio runtime
//! from shutting down, and dropping a runtime waits for its blocking-pool tasks.
//!
//! Operations are serialized (FIFO: tokio's mutex is fair) until the underlying call has
//! really returned, so a timed-out write can never land after a later one.
//!
//! The `memory` backend runs inline, without a thread, so it is safe under a paused tokio
//! clock. (With a paused clock a real keyring call would race the auto-advanced timeout.)
//!
//! A keyring [`Entry`] is dropped on a plain thread too ([`OwnedEntry`]): the Secret Service
//! entry owns a blocking zbus connection whose drop runs `block_on`, which panics on a tokio
//! runtime thread.

use std::sync::Arc;
use std::time::Duration;

use keyring_core::Entry;

use super::errors::Failure;

/// Runs the store's operations one at a time, each under the timeout.
pub(super) struct Runner {
    timeout: Duration,
    /// Serializes operations. The guard is held by the thread doing the keyring call until
    /// that call returns, even when the caller has already given up on it.
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Where an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// On the calling task: the operation does not block (memory).
    Inline,
    /// On its own OS thread: a real keyring call.
    Thread,
}

impl Runner {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves once every operation started before has returned (without a timeout: a
    /// stuck call is waited for until it really ends).
    pub(super) async fn settled(&self) {
        drop(self.lock.lock().await);
    }

    /// Runs `f` after every operation started before it has returned, giving up after the
    /// timeout (the call itself then finishes on its own, still holding the queue).
    pub(super) async fn run<T, F>(&self, place: Place, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, String> + Send + 'static,
    {
        let lock = self.lock.clone();
        let work = async move {
            let guard = lock.lock_owned().await;
            match place {
                Place::Inline => f(),
                Place::Thread => {
                    off_thread(move || {
                        let _guard = guard;
                        f()
                    })
                    .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(Failure::Failed),
            Err(_) => Err(Failure::TimedOut(self.timeout)),
        }
    }
}

/// Runs a blocking keyring call on its own OS thread (see the module docs for why not
/// `spawn_blocking`).
pub(super) async fn off_thread<T, F>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a keyring thread: {e}"))?;
    rx.await
        .unwrap_or_else(|_| Err("the keyring call panicked".to_string()))
}

/// A keyring entry that is dropped on a plain thread: the Secret Service entry owns a
/// blocking zbus connection whose drop runs `block_on`, which panics on a tokio runtime thread.
pub(super) struct OwnedEntry(Option<Entry>);

impl OwnedEntry {
    pub(super) fn new(entry: Entry) -> Self {
        Self(Some(entry))
    }
}

impl std::ops::Deref for OwnedEntry {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        self.0.as_ref().expect("entry present until drop")
    }
}

impl Drop for OwnedEntry {
    fn drop(&mut self) {
        let Some(entry) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(entry);
        }
        let (tx, rx) = std::sync::mpsc::channel::<Entry>();
        let dropper = std::thread::Builder::new()
            .name("keyring-drop".into())
            .spawn(move || drop(rx.recv()));
        match dropper {
            Ok(_) => {
                if let Err(unsent) = tx.send(entry) {
                    std::mem::forget(unsent.0);
                }
            }
            // Leak rather than risk a panic on an async thread.
            Err(_) => std::mem::forget(entry),
        }
    }
}
