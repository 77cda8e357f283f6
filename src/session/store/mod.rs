//! The session as one JSON secret in the OS keyring.
//!
//! The whole session (tokens, expiry, user) is serialized by the caller into one string and
//! stored as a single keyring entry named `service`/`profile`, so a write is atomic: there is
//! never half a session on disk.
//!
//! # Backends
//!
//! | [`KeyringKind`] | backend ([`SessionStore::backend_name`]) | persistent |
//! |---|---|---|
//! | `auto` on Linux | `secret-service`, else `keyutils` (warns: lost on reboot), else `memory` | yes / yes / no |
//! | `auto` on macOS / Windows | `macos` (login Keychain) / `windows` (Credential Manager) | yes |
//! | `secret-service`, `keyutils`, `macos`, `windows` | that one, else `memory` | yes / no |
//! | `memory` | `memory` (asked for: no warning) | no |
//!
//! "Persistent" means the session outlives the sidecar process. keyutils keys live in kernel
//! memory: they survive restarts of the sidecar but not a reboot.
//!
//! Each candidate backend is probed at [`SessionStore::open`] (`probe`). When no asked-for
//! backend works, the session is kept in process memory, [`SessionStore::is_persistent`] is
//! false, one `tracing` warning says so, and [`SessionStore::unusable_keyring`] holds the
//! [`Error::Storage`] for the owner to report.
//!
//! # Modules
//!
//! - `choice`: which [`Keyring`]s to try for a configured kind, how an entry is built in
//!   each, and where the secret lives. A new backend is two edits: a line in the list of
//!   [`Keyring`] (in `config`, where the names are parsed) and its arm in `choice` (see its
//!   docs).
//! - `probe`: whether a backend works, decided once at open.
//! - `runner`: blocking calls off the async threads, serialized, under the timeout.
//! - `fault`: the `hang`/`fail`/`fail-writes` test switch.
//! - `errors`: error text, which names the backend and the operation, never the secret.

mod choice;
mod errors;
mod fault;
mod probe;
mod runner;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use keyring_core::Entry;

use crate::config::{Fault, Keyring, KeyringKind};
use crate::error::{Error, Result};
use errors::{Failure, describe};
use runner::{OwnedEntry, Place, Runner};

/// Where the session is kept, as configured.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub kind: KeyringKind,
    pub service: String,
    pub profile: String,
    /// Timeout of one keyring operation.
    pub timeout: Duration,
    /// Test switch: fault the operations (see `fault`). `None` in products.
    pub fault: Option<Fault>,
}

/// A store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Load,
    Save,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Save => "save",
            Self::Delete => "delete",
        }
    }

    fn writes(self) -> bool {
        self != Self::Load
    }
}

/// Where the secret is kept.
enum Slot {
    Keyring(OwnedEntry),
    Memory(StdMutex<Option<String>>),
}

struct Inner {
    slot: Slot,
    name: &'static str,
    persistent: bool,
    runner: Runner,
    fault: Option<Fault>,
    /// Why the store fell back to memory (see [`SessionStore::unusable_keyring`]).
    unusable: Option<Error>,
}

/// The session's home: one secret in one keyring entry. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("backend", &self.inner.name)
            .field("persistent", &self.inner.persistent)
            .field("timeout", &self.inner.runner.timeout())
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Picks and probes the backend for `options.kind` (see the module docs), never failing:
    /// when no keyring works the store falls back to memory, warns once and keeps the reason
    /// for its owner to report ([`SessionStore::unusable_keyring`]).
    pub async fn open(options: &StoreOptions) -> SessionStore {
        Self::open_with(
            Keyring::candidates(options.kind),
            &options.service,
            &options.profile,
            options.timeout,
            options.fault,
            Keyring::entry,
        )
        .await
    }

    /// `open` with the candidates and the entry builder passed in, so the selection and
    /// fallback logic can be tested without a real keyring.
    async fn open_with<B>(
        candidates: Option<Vec<Keyring>>,
        service: &str,
        profile: &str,
        timeout: Duration,
        fault: Option<Fault>,
        build: B,
    ) -> SessionStore
    where
        B: Fn(Keyring, &str, &str) -> keyring_core::Result<Entry> + Clone + Send + 'static,
    {
        if let Some(fault) = fault {
            tracing::warn!(
                ?fault,
                "{} is set: keyring operations are faulted (test switch)",
                crate::config::KEYRING_FAULT_ENV
            );
        }
        let Some(candidates) = candidates else {
            tracing::info!("session store: memory (as configured); not persisted");
            return Self::memory(timeout, fault, None);
        };
        let mut failures = Vec::new();
        for keyring in candidates {
            match probe::probe(keyring, service, profile, timeout, build.clone()).await {
                Ok(entry) => {
                    match keyring.caveat() {
                        Some(caveat) => tracing::warn!("{caveat}"),
                        None => tracing::info!(backend = keyring.name(), "session store opened"),
                    }
                    return SessionStore::new(
                        Slot::Keyring(entry),
                        keyring.name(),
                        true,
                        timeout,
                        fault,
                        None,
                    );
                }
                Err(reason) => {
                    tracing::info!(backend = keyring.name(), %reason, "keyring backend unusable");
                    failures.push(format!("{}: {reason}", keyring.name()));
                }
            }
        }
        let tried = if failures.is_empty() {
            "no OS keyring on this platform".to_string()
        } else {
            failures.join("; ")
        };
        let error = Error::Storage(format!(
            "no usable OS keyring ({tried}); the session is kept in memory only and will not \
             survive a restart"
        ));
        tracing::warn!("{error}");
        Self::memory(timeout, fault, Some(error))
    }

    fn memory(timeout: Duration, fault: Option<Fault>, unusable: Option<Error>) -> SessionStore {
        let slot = Slot::Memory(StdMutex::new(None));
        SessionStore::new(slot, "memory", false, timeout, fault, unusable)
    }

    fn new(
        slot: Slot,
        name: &'static str,
        persistent: bool,
        timeout: Duration,
        fault: Option<Fault>,
        unusable: Option<Error>,
    ) -> SessionStore {
        SessionStore {
            inner: Arc::new(Inner {
                slot,
                name,
                persistent,
                runner: Runner::new(timeout),
                fault,
                unusable,
            }),
        }
    }

    /// False when the session lives only in this process (no keyring, or `memory` asked for).
    pub fn is_persistent(&self) -> bool {
        self.inner.persistent
    }

    /// `"secret-service"`, `"keyutils"`, `"macos"`, `"windows"` (see [`Keyring::name`]) or
    /// `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.name
    }

    /// Why no OS keyring could be used, when the store fell back to memory for that reason
    /// (not when memory was asked for). The owner reports it: a fault, once.
    pub fn unusable_keyring(&self) -> Option<&Error> {
        self.inner.unusable.as_ref()
    }

    /// The stored secret, `None` when there is no entry.
    pub async fn load(&self) -> Result<Option<String>> {
        self.call(Op::Load, |slot| match slot {
            Slot::Keyring(entry) => match entry.get_password() {
                Ok(secret) => Ok(Some(secret)),
                Err(keyring_core::Error::NoEntry) => Ok(None),
                Err(e) => Err(describe(&e)),
            },
            Slot::Memory(secret) => Ok(lock(secret).clone()),
        })
        .await
    }

    /// Creates or replaces the entry with `secret`.
    pub async fn save(&self, secret: &str) -> Result<()> {
        let secret = secret.to_owned();
        self.call(Op::Save, move |slot| match slot {
            Slot::Keyring(entry) => entry.set_password(&secret).map_err(|e| describe(&e)),
            Slot::Memory(stored) => {
                *lock(stored) = Some(secret);
                Ok(())
            }
        })
        .await
    }

    /// Removes the entry; `true` when there was one.
    pub async fn delete(&self) -> Result<bool> {
        self.call(Op::Delete, |slot| match slot {
            Slot::Keyring(entry) => match entry.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring_core::Error::NoEntry) => Ok(false),
                Err(e) => Err(describe(&e)),
            },
            Slot::Memory(secret) => Ok(lock(secret).take().is_some()),
        })
        .await
    }

    /// Runs one operation through the [`Runner`] (or the injected fault instead). Errors
    /// become [`Error::Storage`].
    async fn call<T, F>(&self, op: Op, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Slot) -> Result<T, String> + Send + 'static,
    {
        let runner = &self.inner.runner;
        let struck = match self.inner.fault {
            Some(fault) => fault.strike(op, runner.timeout()).await,
            None => None,
        };
        let outcome = match struck {
            Some(failure) => Err(failure),
            None => {
                let place = match self.inner.slot {
                    Slot::Keyring(_) => Place::Thread,
                    Slot::Memory(_) => Place::Inline,
                };
                let inner = self.inner.clone();
                runner.run(place, move || f(&inner.slot)).await
            }
        };
        outcome.map_err(|failure: Failure| failure.into_error(self.inner.name, op.name()))
    }
}

fn lock(slot: &StdMutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
