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
//! | `secret-service`, `keyutils`, `macos`, `windows` | that one, else unavailable (retried) | yes / no |
//! | `memory` | `memory` (asked for: no warning) | no |
//!
//! "Persistent" means the session outlives the sidecar process. keyutils keys live in kernel
//! memory: they survive restarts of the sidecar but not a reboot.
//!
//! Each candidate backend is probed at [`SessionStore::open`] (`probe`). When no candidate
//! of `auto` works, the session is kept in process memory; when the one named backend does
//! not work, the store is *unavailable*: every operation fails with [`Error::Storage`]
//! (an explicitly chosen keyring never silently becomes memory). Either way
//! [`SessionStore::is_persistent`] is false, one `tracing` warning says so,
//! [`SessionStore::unusable_keyring`] holds the [`Error::Storage`] for the owner to report,
//! and [`SessionStore::needs_retry`] is true: the owner calls [`SessionStore::reopen`] later
//! (each tick) until a keyring works.
//!
//! An operation that timed out says so ([`StoreError::timed_out`]): its call is still under
//! way and may land later, and the owner reconciles once it has returned
//! ([`SessionStore::settled`]). The `keep` value given with an operation lives until the
//! call really returns (the cross-process lock, so no other process writes in between).
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

impl StoreOptions {
    /// Process memory only, entry `service`/`default`, the default keyring timeout and no
    /// fault: what unit tests and benchmarks run on.
    pub fn memory(service: &str) -> Self {
        Self {
            kind: KeyringKind::Memory,
            service: service.to_string(),
            profile: "default".into(),
            timeout: Duration::from_secs(5),
            fault: None,
        }
    }
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
    /// Zeroed when replaced or removed, as every other copy of a token.
    Memory(StdMutex<Option<zeroize::Zeroizing<String>>>),
    /// The named keyring does not work (yet): every operation fails.
    Unavailable,
}

/// Kept alive until the keyring call it was given with has really returned.
pub type KeepAlive = Arc<dyn std::any::Any + Send + Sync>;

/// A failed operation: the [`Error::Storage`] the caller gets, and whether the call timed
/// out (it may still land: see [`SessionStore::settled`]).
#[derive(Debug)]
pub struct StoreError {
    pub error: Error,
    pub timed_out: bool,
}

impl From<StoreError> for Error {
    fn from(failure: StoreError) -> Self {
        failure.error
    }
}

struct Inner {
    slot: Slot,
    /// The keyring the slot is in (none for memory), to build [`SessionStore::sibling`]s.
    keyring: Option<Keyring>,
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
            matches!(options.kind, KeyringKind::One(_)),
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
        named: bool,
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
        let candidates_tried = candidates.clone();
        let mut failures = Vec::new();
        for keyring in candidates {
            match probe::probe(keyring, service, profile, timeout, build.clone()).await {
                Ok(entry) => {
                    match keyring.caveat() {
                        Some(caveat) => tracing::warn!("{caveat}"),
                        None => tracing::info!(backend = keyring.name(), "session store opened"),
                    }
                    let slot = Slot::Keyring(entry);
                    return SessionStore::new(slot, Some(keyring), true, timeout, fault, None);
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
        if let ([keyring], true) = (&candidates_tried[..], named) {
            let error = Error::Storage(format!(
                "the {} keyring is unavailable ({tried}); retrying, and nothing is stored \
                 until it answers",
                keyring.name()
            ));
            tracing::warn!("{error}");
            let slot = Slot::Unavailable;
            return SessionStore::new(slot, Some(*keyring), false, timeout, fault, Some(error));
        }
        let error = Error::Storage(format!(
            "no usable OS keyring ({tried}); the session is kept in memory only and will not \
             survive a restart"
        ));
        tracing::warn!("{error}");
        Self::memory(timeout, fault, Some(error))
    }

    /// When [`SessionStore::needs_retry`]: probes the configured keyring again, and returns
    /// a working, persistent store if one answers now. Quiet: only a success is logged.
    pub async fn reopen(options: &StoreOptions) -> Option<SessionStore> {
        let candidates = Keyring::candidates(options.kind)?;
        Self::reopen_with(
            candidates,
            &options.service,
            &options.profile,
            options.timeout,
            options.fault,
            Keyring::entry,
        )
        .await
    }

    async fn reopen_with<B>(
        candidates: Vec<Keyring>,
        service: &str,
        profile: &str,
        timeout: Duration,
        fault: Option<Fault>,
        build: B,
    ) -> Option<SessionStore>
    where
        B: Fn(Keyring, &str, &str) -> keyring_core::Result<Entry> + Clone + Send + 'static,
    {
        for keyring in candidates {
            if let Ok(entry) = probe::probe(keyring, service, profile, timeout, build.clone()).await
            {
                tracing::info!(
                    backend = keyring.name(),
                    "the keyring answers now; session store opened"
                );
                let slot = Slot::Keyring(entry);
                return Some(SessionStore::new(
                    slot,
                    Some(keyring),
                    true,
                    timeout,
                    fault,
                    None,
                ));
            }
        }
        None
    }

    fn memory(timeout: Duration, fault: Option<Fault>, unusable: Option<Error>) -> SessionStore {
        let slot = Slot::Memory(StdMutex::new(None));
        SessionStore::new(slot, None, false, timeout, fault, unusable)
    }

    /// A store for another entry of the same backend, `service`/`profile`: the PKCE verifier
    /// is kept beside the session. Not probed (the backend answered for the session); an
    /// entry that cannot be built is an unavailable store. A memory store's sibling is a new,
    /// empty memory store, which the caller keeps for as long as it needs the value.
    pub async fn sibling(&self, service: &str, profile: &str) -> SessionStore {
        let inner = &self.inner;
        let timeout = inner.runner.timeout();
        let slot = match (&inner.slot, inner.keyring) {
            (Slot::Memory(_), _) => Slot::Memory(StdMutex::new(None)),
            (Slot::Keyring(_), Some(keyring)) => {
                let (service, profile) = (service.to_owned(), profile.to_owned());
                let built = runner::off_thread(move || {
                    keyring
                        .entry(&service, &profile)
                        .map(OwnedEntry::new)
                        .map_err(|e| describe(&e))
                });
                match tokio::time::timeout(timeout, built).await {
                    Ok(Ok(entry)) => Slot::Keyring(entry),
                    Ok(Err(reason)) => {
                        tracing::warn!(%reason, "cannot open a keyring entry beside the session");
                        Slot::Unavailable
                    }
                    Err(_) => Slot::Unavailable,
                }
            }
            _ => Slot::Unavailable,
        };
        SessionStore::new(
            slot,
            inner.keyring,
            inner.persistent,
            timeout,
            inner.fault,
            None,
        )
    }

    fn new(
        slot: Slot,
        keyring: Option<Keyring>,
        persistent: bool,
        timeout: Duration,
        fault: Option<Fault>,
        unusable: Option<Error>,
    ) -> SessionStore {
        SessionStore {
            inner: Arc::new(Inner {
                slot,
                keyring,
                name: keyring.map_or("memory", Keyring::name),
                persistent,
                runner: Runner::new(timeout),
                fault,
                unusable,
            }),
        }
    }

    /// Whether `other` is this very store (a clone of it).
    pub fn same_as(&self, other: &SessionStore) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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

    /// Why no OS keyring could be used, when the store fell back to memory or is
    /// unavailable for that reason (not when memory was asked for). The owner reports it: a
    /// fault, once.
    pub fn unusable_keyring(&self) -> Option<&Error> {
        self.inner.unusable.as_ref()
    }

    /// Whether a keyring was wanted and none works yet: the owner should
    /// [`SessionStore::reopen`] now and then.
    pub fn needs_retry(&self) -> bool {
        self.inner.unusable.is_some()
    }

    /// Whether this is the named keyring that does not work yet (every operation fails),
    /// rather than memory.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.inner.slot, Slot::Unavailable)
    }

    /// Resolves once every operation started before has really returned (also one whose
    /// caller gave up on it after the timeout).
    pub async fn settled(&self) {
        self.inner.runner.settled().await;
    }

    /// The stored secret, `None` when there is no entry.
    pub async fn load(&self) -> Result<Option<String>> {
        Ok(self.load_keeping(None).await?)
    }

    /// Creates or replaces the entry with `secret`.
    pub async fn save(&self, secret: &str) -> Result<()> {
        Ok(self.save_keeping(secret, None).await?)
    }

    /// Removes the entry; `true` when there was one.
    pub async fn delete(&self) -> Result<bool> {
        Ok(self.delete_keeping(None).await?)
    }

    /// [`SessionStore::load`], keeping `keep` alive until the call has returned.
    pub async fn load_keeping(
        &self,
        keep: Option<KeepAlive>,
    ) -> Result<Option<String>, StoreError> {
        self.call(Op::Load, keep, |slot| match slot {
            Slot::Keyring(entry) => match entry.get_password() {
                Ok(secret) => Ok(Some(secret)),
                Err(keyring_core::Error::NoEntry) => Ok(None),
                Err(e) => Err(describe(&e)),
            },
            Slot::Memory(secret) => Ok(lock(secret).as_deref().cloned()),
            Slot::Unavailable => Err(UNAVAILABLE.into()),
        })
        .await
    }

    /// [`SessionStore::save`], keeping `keep` alive until the call has returned.
    pub async fn save_keeping(
        &self,
        secret: &str,
        keep: Option<KeepAlive>,
    ) -> Result<(), StoreError> {
        let mut secret = zeroize::Zeroizing::new(secret.to_owned());
        self.call(Op::Save, keep, move |slot| match slot {
            Slot::Keyring(entry) => entry.set_password(&secret).map_err(|e| describe(&e)),
            Slot::Memory(stored) => {
                *lock(stored) = Some(zeroize::Zeroizing::new(std::mem::take(&mut *secret)));
                Ok(())
            }
            Slot::Unavailable => Err(UNAVAILABLE.into()),
        })
        .await
    }

    /// [`SessionStore::delete`], keeping `keep` alive until the call has returned.
    pub async fn delete_keeping(&self, keep: Option<KeepAlive>) -> Result<bool, StoreError> {
        self.call(Op::Delete, keep, |slot| match slot {
            Slot::Keyring(entry) => match entry.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring_core::Error::NoEntry) => Ok(false),
                Err(e) => Err(describe(&e)),
            },
            Slot::Memory(secret) => Ok(lock(secret).take().is_some()),
            Slot::Unavailable => Err(UNAVAILABLE.into()),
        })
        .await
    }

    /// Runs one operation through the [`Runner`] (or the injected fault instead). Errors
    /// become [`Error::Storage`].
    async fn call<T, F>(&self, op: Op, keep: Option<KeepAlive>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Slot) -> Result<T, String> + Send + 'static,
    {
        let runner = &self.inner.runner;
        let struck = match (self.inner.fault, &self.inner.slot) {
            (_, Slot::Unavailable) | (None, _) => None,
            (Some(fault), _) => fault.strike(op, runner.timeout()).await,
        };
        let outcome = match struck {
            Some(failure) => Err(failure),
            None => {
                let place = match self.inner.slot {
                    Slot::Keyring(_) => Place::Thread,
                    Slot::Memory(_) | Slot::Unavailable => Place::Inline,
                };
                let inner = self.inner.clone();
                let late = match (self.inner.fault, place) {
                    (Some(fault), Place::Thread) => fault.delay(op, runner.timeout()),
                    _ => None,
                };
                runner
                    .run(place, move || {
                        if let Some(late) = late {
                            std::thread::sleep(late);
                        }
                        let result = f(&inner.slot);
                        drop(keep);
                        result
                    })
                    .await
            }
        };
        outcome.map_err(|failure: Failure| {
            let timed_out = matches!(failure, Failure::TimedOut(_));
            StoreError {
                error: failure.into_error(self.inner.name, op.name()),
                timed_out,
            }
        })
    }
}

/// What every operation on an unavailable keyring fails with.
const UNAVAILABLE: &str =
    "the keyring is unavailable (locked, or not running); retried every tick until it answers";

fn lock(
    slot: &StdMutex<Option<zeroize::Zeroizing<String>>>,
) -> std::sync::MutexGuard<'_, Option<zeroize::Zeroizing<String>>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
