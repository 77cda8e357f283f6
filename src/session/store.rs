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
//! Each candidate backend is probed at [`SessionStore::open`] by reading the entry, within the
//! timeout (keyutils also writes and removes a `<profile>.probe` key: a process without a
//! session keyring of its own may read the user's but not write to it). When no asked-for backend works, the session is kept in process memory,
//! [`SessionStore::is_persistent`] is false, and one `tracing` warning plus one Sentry report
//! ([`Error::Storage`]) say so.
//!
//! ## Where the secret lives
//!
//! - **Secret Service** (GNOME Keyring, KWallet, KeePassXC, ... over D-Bus, through the
//!   pure-Rust `zbus-secret-service-keyring-store`): an item in the default collection with
//!   the attributes `service` = `<service>` and `username` = `<profile>`, labelled
//!   `<service> session (<profile>)`. From a shell:
//!   `secret-tool lookup service core-sidecar username default`.
//! - **keyutils**: a `user` key with description `keyring:<profile>@<service>` in the session
//!   keyring (and the persistent keyring when the kernel has one):
//!   `keyctl pipe $(keyctl search @s user keyring:default@core-sidecar)`.
//! - **macOS**: a generic password in the login Keychain, service `<service>`, account
//!   `<profile>`.
//! - **Windows**: a generic credential with target name `<profile>.<service>`.
//!
//! # Blocking calls
//!
//! Every keyring call blocks (D-Bus round trips, Keychain prompts). Each runs on its own
//! short-lived OS thread and is awaited under [`tokio::time::timeout`]; on timeout the caller
//! gets [`Error::Storage`] at once while the stuck call is left to finish on its own. A plain
//! thread is used rather than `spawn_blocking` on purpose: a keyring call stuck forever (a
//! locked collection waiting on an unlock prompt nobody answers) must not keep the tokio
//! runtime from shutting down, and dropping a runtime waits for its blocking-pool tasks.
//! Operations are serialized (FIFO) until the underlying call has really returned, so a
//! timed-out write can never land after a later one.
//!
//! The `memory` backend runs inline, without a thread, so it is safe under a paused tokio
//! clock. (With a paused clock a real keyring call would race the auto-advanced timeout.)
//!
//! # Fault injection (tests only)
//!
//! `CORE_SIDECAR_KEYRING_FAULT` is read once by [`SessionStore::open`]. It is a test switch,
//! not a feature: integration tests use it to prove how storage failures surface.
//! - `hang`: every `load`/`save`/`delete` hangs until the timeout, then fails with a
//!   `storage` error ("timed out"), exactly as a stuck keyring would.
//! - `fail`: every `load`/`save`/`delete` fails at once with a `storage` error.
//!
//! The backend is still chosen as usual; only the operations on it are faulted. Any other
//! value is ignored with a warning.
//!
//! Error messages name the backend and the operation, never the secret.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use keyring_core::Entry;

use crate::config::KeyringKind;
use crate::error::{Error, Result};

/// Environment variable of the fault-injection test switch (see the module docs).
pub const FAULT_ENV: &str = "CORE_SIDECAR_KEYRING_FAULT";

/// A fault injected into every store operation, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Hang,
    Fail,
}

impl Fault {
    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hang" => Some(Self::Hang),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }

    fn from_env() -> Option<Self> {
        let value = std::env::var(FAULT_ENV).ok()?;
        if value.trim().is_empty() {
            return None;
        }
        let fault = Self::parse(&value);
        match fault {
            Some(fault) => tracing::warn!(
                ?fault,
                "{FAULT_ENV} is set: keyring operations are faulted (test switch)"
            ),
            None => tracing::warn!("{FAULT_ENV}={value:?} is not `hang` or `fail`: ignored"),
        }
        fault
    }
}

/// An OS keyring the store can sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Native {
    SecretService,
    Keyutils,
    Macos,
    Windows,
}

impl Native {
    fn name(self) -> &'static str {
        match self {
            Self::SecretService => "secret-service",
            Self::Keyutils => "keyutils",
            Self::Macos => "macos",
            Self::Windows => "windows",
        }
    }

    /// The backends to try, in order, for a configured kind. `None`: memory, as asked.
    fn candidates(kind: KeyringKind) -> Option<Vec<Self>> {
        Some(match kind {
            KeyringKind::Memory => return None,
            KeyringKind::Auto => {
                if cfg!(target_os = "linux") {
                    vec![Self::SecretService, Self::Keyutils]
                } else if cfg!(target_os = "macos") {
                    vec![Self::Macos]
                } else if cfg!(target_os = "windows") {
                    vec![Self::Windows]
                } else {
                    Vec::new()
                }
            }
            KeyringKind::SecretService => vec![Self::SecretService],
            KeyringKind::Keyutils => vec![Self::Keyutils],
            KeyringKind::Macos => vec![Self::Macos],
            KeyringKind::Windows => vec![Self::Windows],
        })
    }

    /// Builds the entry `service`/`profile` in this backend. Blocking (connects to D-Bus).
    fn entry(self, service: &str, profile: &str) -> keyring_core::Result<Entry> {
        #[allow(unused_imports)]
        use keyring_core::api::CredentialStoreApi;
        match self {
            #[cfg(target_os = "linux")]
            Self::SecretService => {
                let store = zbus_secret_service_keyring_store::Store::new()?;
                let label = format!("{service} session ({profile})");
                let modifiers = std::collections::HashMap::from([("label", label.as_str())]);
                store.build(service, profile, Some(&modifiers))
            }
            #[cfg(target_os = "linux")]
            Self::Keyutils => {
                linux_keyutils_keyring_store::Store::new()?.build(service, profile, None)
            }
            #[cfg(target_os = "macos")]
            Self::Macos => {
                apple_native_keyring_store::keychain::Store::new()?.build(service, profile, None)
            }
            #[cfg(target_os = "windows")]
            Self::Windows => {
                windows_native_keyring_store::Store::new()?.build(service, profile, None)
            }
            #[allow(unreachable_patterns)]
            other => Err(keyring_core::Error::NotSupportedByStore(format!(
                "{} is not available on this platform",
                other.name()
            ))),
        }
    }
}

/// Where the secret is kept.
enum Backend {
    Keyring(OwnedEntry),
    Memory(StdMutex<Option<String>>),
}

/// A keyring entry that is dropped on a plain thread: the Secret Service entry owns a
/// blocking zbus connection whose drop runs `block_on`, which panics on a tokio runtime thread.
struct OwnedEntry(Option<Entry>);

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

struct Inner {
    backend: Backend,
    name: &'static str,
    persistent: bool,
    timeout: Duration,
    fault: Option<Fault>,
    /// Serializes operations. The guard is held by the thread doing the keyring call until
    /// that call returns, even when the caller has already given up on it.
    lock: Arc<tokio::sync::Mutex<()>>,
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
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Picks and probes the backend for `kind` (see the module docs), never failing: when no
    /// keyring works the store falls back to memory, warns once and reports once to Sentry.
    /// Reads [`FAULT_ENV`].
    pub async fn open(
        kind: KeyringKind,
        service: &str,
        profile: &str,
        timeout: Duration,
    ) -> SessionStore {
        Self::open_with(
            Native::candidates(kind),
            service,
            profile,
            timeout,
            Fault::from_env(),
            Native::entry,
        )
        .await
    }

    /// `open` with the candidates, the fault and the entry builder passed in, so the
    /// selection and fallback logic can be tested without a real keyring.
    async fn open_with<B>(
        candidates: Option<Vec<Native>>,
        service: &str,
        profile: &str,
        timeout: Duration,
        fault: Option<Fault>,
        build: B,
    ) -> SessionStore
    where
        B: Fn(Native, &str, &str) -> keyring_core::Result<Entry> + Clone + Send + 'static,
    {
        let Some(candidates) = candidates else {
            tracing::info!("session store: memory (as configured); not persisted");
            return Self::memory(timeout, fault);
        };
        let mut failures = Vec::new();
        for native in candidates {
            match probe(native, service, profile, timeout, build.clone()).await {
                Ok(entry) => {
                    if native == Native::Keyutils {
                        tracing::warn!(
                            "session store: kernel keyutils (no Secret Service); the session \
                             survives restarts of the sidecar but not a reboot"
                        );
                    } else {
                        tracing::info!(backend = native.name(), "session store opened");
                    }
                    return SessionStore::new(
                        Backend::Keyring(entry),
                        native.name(),
                        true,
                        timeout,
                        fault,
                    );
                }
                Err(reason) => {
                    tracing::info!(backend = native.name(), %reason, "keyring backend unusable");
                    failures.push(format!("{}: {reason}", native.name()));
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
        crate::telemetry::report(&error);
        Self::memory(timeout, fault)
    }

    fn memory(timeout: Duration, fault: Option<Fault>) -> SessionStore {
        SessionStore::new(
            Backend::Memory(StdMutex::new(None)),
            "memory",
            false,
            timeout,
            fault,
        )
    }

    fn new(
        backend: Backend,
        name: &'static str,
        persistent: bool,
        timeout: Duration,
        fault: Option<Fault>,
    ) -> SessionStore {
        SessionStore {
            inner: Arc::new(Inner {
                backend,
                name,
                persistent,
                timeout,
                fault,
                lock: Arc::new(tokio::sync::Mutex::new(())),
            }),
        }
    }

    /// False when the session lives only in this process (no keyring, or `memory` asked for).
    pub fn is_persistent(&self) -> bool {
        self.inner.persistent
    }

    /// `"secret-service"`, `"keyutils"`, `"macos"`, `"windows"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.name
    }

    /// The stored secret, `None` when there is no entry.
    pub async fn load(&self) -> Result<Option<String>> {
        self.call("load", |backend| match backend {
            Backend::Keyring(entry) => match entry.get_password() {
                Ok(secret) => Ok(Some(secret)),
                Err(keyring_core::Error::NoEntry) => Ok(None),
                Err(e) => Err(describe(&e)),
            },
            Backend::Memory(slot) => Ok(lock(slot).clone()),
        })
        .await
    }

    /// Creates or replaces the entry with `secret`.
    pub async fn save(&self, secret: &str) -> Result<()> {
        let secret = secret.to_owned();
        self.call("save", move |backend| match backend {
            Backend::Keyring(entry) => entry.set_password(&secret).map_err(|e| describe(&e)),
            Backend::Memory(slot) => {
                *lock(slot) = Some(secret);
                Ok(())
            }
        })
        .await
    }

    /// Removes the entry; `true` when there was one.
    pub async fn delete(&self) -> Result<bool> {
        self.call("delete", |backend| match backend {
            Backend::Keyring(entry) => match entry.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring_core::Error::NoEntry) => Ok(false),
                Err(e) => Err(describe(&e)),
            },
            Backend::Memory(slot) => Ok(lock(slot).take().is_some()),
        })
        .await
    }

    /// Runs one operation: serialized, off the async threads for real keyrings, under the
    /// timeout, with the injected fault if any. Errors become [`Error::Storage`].
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Backend) -> Result<T, String> + Send + 'static,
    {
        let name = self.inner.name;
        let timeout = self.inner.timeout;
        if self.inner.fault == Some(Fault::Fail) {
            return Err(Error::Storage(format!(
                "{name}: {op} failed (injected by {FAULT_ENV}=fail)"
            )));
        }
        let inner = self.inner.clone();
        let work = async move {
            let guard = inner.lock.clone().lock_owned().await;
            if let Backend::Memory(_) = inner.backend {
                return f(&inner.backend);
            }
            off_thread(move || {
                let _guard = guard;
                f(&inner.backend)
            })
            .await
        };
        let outcome = if self.inner.fault == Some(Fault::Hang) {
            drop(work);
            tokio::time::timeout(timeout, std::future::pending::<Result<T, String>>()).await
        } else {
            tokio::time::timeout(timeout, work).await
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(reason)) => Err(Error::Storage(format!("{name}: {op} failed: {reason}"))),
            Err(_) => Err(Error::Storage(format!(
                "{name}: {op} timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

/// Builds the entry and reads it once, within the timeout: the backend works when the read
/// succeeds or finds no entry.
async fn probe<B>(
    native: Native,
    service: &str,
    profile: &str,
    timeout: Duration,
    build: B,
) -> Result<OwnedEntry, String>
where
    B: Fn(Native, &str, &str) -> keyring_core::Result<Entry> + Send + 'static,
{
    let (service, profile) = (service.to_owned(), profile.to_owned());
    let work = off_thread(move || {
        let entry = OwnedEntry(Some(
            build(native, &service, &profile).map_err(|e| describe(&e))?,
        ));
        if native == Native::Keyutils {
            check_keyutils_writable(
                &entry,
                || build(native, &service, &profile),
                || build(native, &service, &format!("{profile}.probe")),
            )?;
        }
        match entry.get_password() {
            Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(entry),
            Err(e) => Err(describe(&e)),
        }
    });
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// keyutils in a process without a session keyring of its own (started outside a login
/// session, some sandboxes) reads the user's keyring but cannot keep what it writes: building
/// an entry there swaps the calling thread onto a new anonymous session keyring, and linking a
/// new key to the persistent keyring fails with EACCES. Detect the swap (two builds disagree
/// on the session keyring), then prove a write with a `<profile>.probe` key.
fn check_keyutils_writable(
    entry: &Entry,
    rebuild: impl FnOnce() -> keyring_core::Result<Entry>,
    probe: impl FnOnce() -> keyring_core::Result<Entry>,
) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use linux_keyutils_keyring_store::Cred;
        let again = rebuild().map_err(|e| describe(&e))?;
        let first = entry.as_any().downcast_ref::<Cred>();
        let second = again.as_any().downcast_ref::<Cred>();
        if let (Some(first), Some(second)) = (first, second)
            && first.session != second.session
        {
            return Err(
                "this process has no session keyring of its own (start it in a \
                        login session, or under `keyctl session -`)"
                    .into(),
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (entry, rebuild);
    let probe = probe().map_err(|e| describe(&e))?;
    let written = probe.set_password("probe");
    // Also after a failed write: the key may have been added before a link failed.
    let _ = probe.delete_credential();
    written.map_err(|e| format!("cannot write: {}", describe(&e)))
}

/// Runs a blocking keyring call on its own OS thread (see the module docs for why not
/// `spawn_blocking`).
async fn off_thread<T, F>(f: F) -> Result<T, String>
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

fn lock(slot: &StdMutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A keyring error as text that never carries the secret (`BadEncoding` and `BadDataFormat`
/// hold the stored bytes; they are not printed).
fn describe(error: &keyring_core::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use keyring_core::api::CredentialStoreApi;
    use keyring_core::mock;

    const SECRET: &str = r#"{"access_token":"header.payload.sig","refresh_token":"r-123","user":{"id":"u1","name":"Zoë \"q\""}}"#;

    fn mock_entry(store: &Arc<mock::Store>) -> Entry {
        store.build("svc", "profile", None).unwrap()
    }

    /// An entry builder for `open_with`: the listed backends answer from a fresh mock store,
    /// the others fail as a missing keyring would.
    fn working(
        ok: &'static [Native],
    ) -> impl Fn(Native, &str, &str) -> keyring_core::Result<Entry> + Clone + Send + 'static {
        move |native, service, profile| {
            if ok.contains(&native) {
                mock::Store::new()?.build(service, profile, None)
            } else {
                Err(keyring_core::Error::NoStorageAccess(
                    format!("{} not running", native.name()).into(),
                ))
            }
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn memory_round_trip() {
        let store = SessionStore::open(KeyringKind::Memory, "svc", "profile", T).await;
        assert_eq!(store.backend_name(), "memory");
        assert!(!store.is_persistent());
        assert_eq!(store.load().await.unwrap(), None);
        assert!(!store.delete().await.unwrap());
        store.save(SECRET).await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));
        store.save("second").await.unwrap();
        // Clones share the entry.
        assert_eq!(
            store.clone().load().await.unwrap().as_deref(),
            Some("second")
        );
        assert!(store.delete().await.unwrap());
        assert_eq!(store.load().await.unwrap(), None);
        assert!(!store.delete().await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_works_under_a_paused_clock() {
        let store = SessionStore::open_with(None, "s", "p", T, None, working(&[])).await;
        store.save("x").await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn store_is_send_sync_clone() {
        fn check<S: Send + Sync + Clone + 'static>() {}
        check::<SessionStore>();
    }

    #[test]
    fn candidates_follow_the_configuration() {
        assert_eq!(Native::candidates(KeyringKind::Memory), None);
        assert_eq!(
            Native::candidates(KeyringKind::Keyutils),
            Some(vec![Native::Keyutils])
        );
        assert_eq!(
            Native::candidates(KeyringKind::Macos),
            Some(vec![Native::Macos])
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            Native::candidates(KeyringKind::Auto),
            Some(vec![Native::SecretService, Native::Keyutils])
        );
    }

    #[tokio::test]
    async fn auto_takes_the_first_working_backend() {
        let all = vec![Native::SecretService, Native::Keyutils];
        let store = SessionStore::open_with(
            Some(all.clone()),
            "s",
            "p",
            T,
            None,
            working(&[Native::SecretService, Native::Keyutils]),
        )
        .await;
        assert_eq!(store.backend_name(), "secret-service");
        assert!(store.is_persistent());

        let store =
            SessionStore::open_with(Some(all), "s", "p", T, None, working(&[Native::Keyutils]))
                .await;
        assert_eq!(store.backend_name(), "keyutils");
        assert!(store.is_persistent());
        store.save(SECRET).await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));
        assert!(store.delete().await.unwrap());
        assert!(!store.delete().await.unwrap());
    }

    #[tokio::test]
    async fn keyutils_that_cannot_write_is_skipped() {
        let build = |_: Native, s: &str, p: &str| {
            let entry = mock::Store::new()?.build(s, p, None)?;
            if p.ends_with(".probe") {
                let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();
                cred.set_error(keyring_core::Error::NoStorageAccess("EACCES".into()));
            }
            Ok(entry)
        };
        let store =
            SessionStore::open_with(Some(vec![Native::Keyutils]), "s", "p", T, None, build).await;
        assert_eq!(store.backend_name(), "memory");
    }

    #[tokio::test]
    async fn no_working_backend_falls_back_to_memory() {
        let all = Some(vec![Native::SecretService, Native::Keyutils]);
        let store = SessionStore::open_with(all, "s", "p", T, None, working(&[])).await;
        assert_eq!(store.backend_name(), "memory");
        assert!(!store.is_persistent());
        store.save(SECRET).await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

        // An explicit kind that does not work falls back the same way.
        let one = Some(vec![Native::Keyutils]);
        let store =
            SessionStore::open_with(one, "s", "p", T, None, working(&[Native::SecretService]))
                .await;
        assert_eq!(store.backend_name(), "memory");
        assert!(!store.is_persistent());

        // So does a platform without any keyring.
        let store = SessionStore::open_with(Some(vec![]), "s", "p", T, None, working(&[])).await;
        assert_eq!(store.backend_name(), "memory");
    }

    #[tokio::test]
    async fn unavailable_platform_backend_falls_back_to_memory() {
        // The real builder: `windows` on Linux/macOS (or `macos` elsewhere) is not available.
        let kind = if cfg!(target_os = "windows") {
            KeyringKind::Macos
        } else {
            KeyringKind::Windows
        };
        let store = SessionStore::open(kind, "core-sidecar-test", "p", T).await;
        assert_eq!(store.backend_name(), "memory");
        assert!(!store.is_persistent());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_backend_is_given_up_after_the_timeout() {
        // Every backend blocks until the test releases it; the paused clock makes the timeout
        // fire as soon as the runtime is idle, so this takes no real time.
        let release = Arc::new((StdMutex::new(false), std::sync::Condvar::new()));
        let gate = release.clone();
        let hang = move |_: Native, _: &str, _: &str| -> keyring_core::Result<Entry> {
            let (released, wake) = &*gate;
            let mut released = released.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            Err(keyring_core::Error::NoEntry)
        };
        let started = tokio::time::Instant::now();
        let all = Some(vec![Native::SecretService, Native::Keyutils]);
        let store = SessionStore::open_with(all, "s", "p", T, None, hang).await;
        assert_eq!(store.backend_name(), "memory");
        assert!(!store.is_persistent());
        // Both probes waited for the timeout, one after the other.
        assert_eq!(started.elapsed(), T * 2);
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
    }

    #[tokio::test]
    async fn keyring_errors_are_storage_errors_without_the_secret() {
        // Mock stores hand out one credential per name, so the test reaches the very
        // credential the store uses and can make its next call fail.
        let mocks = mock::Store::new().unwrap();
        let shared = mocks.clone();
        let build = move |_: Native, s: &str, p: &str| shared.build(s, p, None);
        let store = SessionStore::open_with(
            Some(vec![Native::Keyutils]),
            "svc",
            "profile",
            T,
            None,
            build,
        )
        .await;
        assert_eq!(store.backend_name(), "keyutils");
        let entry = mock_entry(&mocks);
        let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();

        cred.set_error(keyring_core::Error::PlatformFailure(
            "dbus went away".into(),
        ));
        let err = store.save(SECRET).await.unwrap_err();
        assert!(matches!(err, Error::Storage(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("keyutils: save failed"), "{text}");
        assert!(text.contains("dbus went away"), "{text}");
        assert!(!text.contains("header.payload.sig"), "{text}");

        store.save(SECRET).await.unwrap();
        cred.set_error(keyring_core::Error::BadEncoding(SECRET.as_bytes().to_vec()));
        let err = store.load().await.unwrap_err();
        assert!(!err.to_string().contains("payload"), "{err}");
        assert_eq!(err.kind(), crate::error::ErrorKind::Storage);
        assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

        cred.set_error(keyring_core::Error::NoStorageAccess("locked".into()));
        assert!(store.delete().await.is_err());
        assert!(store.delete().await.unwrap());
    }

    #[tokio::test]
    async fn fault_fail_fails_every_operation() {
        let store =
            SessionStore::open_with(None, "s", "p", T, Some(Fault::Fail), working(&[])).await;
        for err in [
            store.load().await.unwrap_err(),
            store.save(SECRET).await.unwrap_err(),
            store.delete().await.unwrap_err(),
        ] {
            assert!(matches!(err, Error::Storage(_)), "{err:?}");
            assert!(err.to_string().contains("injected"), "{err}");
            assert!(!err.to_string().contains("payload"), "{err}");
        }
    }

    #[tokio::test]
    async fn fault_hang_times_out_every_operation() {
        let timeout = Duration::from_millis(1500);
        let store = SessionStore::open_with(
            Some(vec![Native::Keyutils]),
            "s",
            "p",
            timeout,
            Some(Fault::Hang),
            working(&[Native::Keyutils]),
        )
        .await;
        assert_eq!(store.backend_name(), "keyutils");
        // Opened on the real clock (the probe runs on a thread); the hang needs no real time.
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        let err = store.save(SECRET).await.unwrap_err();
        // Paused mid-millisecond: the timer wheel rounds up to the next one.
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited <= timeout + Duration::from_millis(1),
            "{waited:?}"
        );
        assert_eq!(
            err.to_string(),
            "keyring: keyutils: save timed out after 1500 ms"
        );
        assert!(store.load().await.is_err());
        assert!(store.delete().await.is_err());
    }

    #[test]
    fn fault_values() {
        assert_eq!(Fault::parse("hang"), Some(Fault::Hang));
        assert_eq!(Fault::parse(" FAIL "), Some(Fault::Fail));
        assert_eq!(Fault::parse("sometimes"), None);
    }

    /// Tests against the machine's real keyrings. Outside `scripts/with-keyring.sh` they
    /// return early; inside it (`CORE_SIDECAR_TEST_KEYRING=1`) an unreachable keyring fails.
    #[cfg(target_os = "linux")]
    mod real {
        use super::*;

        fn required() -> bool {
            std::env::var("CORE_SIDECAR_TEST_KEYRING").as_deref() == Ok("1")
        }

        fn unique_service(tag: &str) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            format!("core-sidecar-test-{tag}-{}-{nanos}", std::process::id())
        }

        /// A large session (a user object with many claims), to catch size limits.
        fn large_secret() -> String {
            let claims: Vec<String> = (0..600).map(|i| format!("\"claim{i}\":\"v{i}\"")).collect();
            format!(
                "{{\"access_token\":\"a.b.c\",\"user\":{{{}}}}}",
                claims.join(",")
            )
        }

        fn run(cmd: &str, args: &[&str]) -> String {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
            assert!(out.status.success(), "{cmd} {args:?}: {:?}", out);
            String::from_utf8(out.stdout).unwrap()
        }

        async fn round_trip(kind: KeyringKind, expected: &str) -> (SessionStore, String) {
            let service = unique_service(expected);
            let store = SessionStore::open(kind, &service, "profile-a", T).await;
            assert_eq!(
                store.backend_name(),
                expected,
                "CORE_SIDECAR_TEST_KEYRING=1 but the {expected} keyring is not reachable"
            );
            assert!(store.is_persistent());
            assert_eq!(store.load().await.unwrap(), None);
            assert!(!store.delete().await.unwrap());

            store.save(SECRET).await.unwrap();
            assert_eq!(store.load().await.unwrap().as_deref(), Some(SECRET));

            // Another store on the same entry (as after a restart) sees it: it is in the
            // keyring, not in this process.
            let again = SessionStore::open(kind, &service, "profile-a", T).await;
            assert_eq!(again.backend_name(), expected);
            assert_eq!(again.load().await.unwrap().as_deref(), Some(SECRET));

            // Another profile is another entry.
            let other = SessionStore::open(kind, &service, "profile-b", T).await;
            assert_eq!(other.load().await.unwrap(), None);

            let large = large_secret();
            store.save(&large).await.unwrap();
            assert_eq!(again.load().await.unwrap().as_deref(), Some(large.as_str()));
            store.save(SECRET).await.unwrap();
            (store, service)
        }

        async fn finish(store: SessionStore) {
            assert!(store.delete().await.unwrap());
            assert_eq!(store.load().await.unwrap(), None);
            assert!(!store.delete().await.unwrap());
        }

        #[tokio::test]
        async fn secret_service_round_trip() {
            if !required() {
                return;
            }
            let (store, service) = round_trip(KeyringKind::SecretService, "secret-service").await;
            // The attributes a user (or secret-tool) looks the item up by.
            let found = run(
                "secret-tool",
                &["lookup", "service", &service, "username", "profile-a"],
            );
            assert_eq!(found, SECRET);
            finish(store).await;
            let out = std::process::Command::new("secret-tool")
                .args(["lookup", "service", &service, "username", "profile-a"])
                .output()
                .unwrap();
            assert!(out.stdout.is_empty(), "item still present after delete");
        }

        #[tokio::test]
        async fn keyutils_round_trip() {
            if !required() {
                return;
            }
            let (store, service) = round_trip(KeyringKind::Keyutils, "keyutils").await;
            let description = format!("keyring:profile-a@{service}");
            let id = run("keyctl", &["search", "@s", "user", &description]);
            assert_eq!(run("keyctl", &["pipe", id.trim()]), SECRET);
            finish(store).await;
        }

        #[tokio::test]
        async fn auto_prefers_secret_service() {
            if !required() {
                return;
            }
            let service = unique_service("auto");
            let store = SessionStore::open(KeyringKind::Auto, &service, "p", T).await;
            assert_eq!(store.backend_name(), "secret-service");
            store.save("x").await.unwrap();
            finish(store).await;
        }

        #[tokio::test]
        async fn concurrent_saves_apply_in_call_order() {
            if !required() {
                return;
            }
            let service = unique_service("order");
            let store = SessionStore::open(KeyringKind::SecretService, &service, "p", T).await;
            assert_eq!(store.backend_name(), "secret-service");
            let writes: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    async move { store.save(&format!("v{i}")).await }
                })
                .collect();
            // join_all polls in order, so the lock is queued for v0..v7 in that order.
            for result in futures::future::join_all(writes).await {
                result.unwrap();
            }
            assert_eq!(store.load().await.unwrap().as_deref(), Some("v7"));
            finish(store).await;
        }
    }
}
