//! The signed-in user's session.
//!
//! - [`Sessions`]: the in-memory cache (read per call, never the keyring) and every change
//!   of it, each written to the keyring first and announced with one `auth_state_changed`.
//!   It owns the keyring entry together with any other process on the same entry: every
//!   write, and every refresh, holds the entry's cross-process lock ([`lock`]), re-reads the
//!   keyring first and adopts what another process stored or cleared (with the event that
//!   change means). Sign-outs that the keyring could not take yet stay pending (on disk)
//!   and are completed by whichever process gets there first; a write that timed out is
//!   reconciled once the keyring answers; a keyring unusable at start is retried.
//! - [`store`]: the keyring.
//! - [`lock`]: the cross-process lock and the pending sign-out markers.
//! - [`gate`]: the only way into gated methods.
//! - [`refresh`]: single-flight refresh against the auth server, and the ticker.
//! - [`model`]: what a session is, and what the shell may see of it.
//! - [`pkce`]: the verifier of a sign-in flow that ends in a browser or an emailed link,
//!   in its own keyring entry beside the session.

pub mod gate;
pub mod lock;
pub mod model;
pub mod pkce;
pub mod refresh;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use crate::config::KeyringKind;
use crate::error::{Error, Result};
use crate::telemetry::Telemetry;
use lock::{EntryLock, Held, LockError, LockGuard, Markers};
pub use model::{
    AuthEvent, AuthState, AuthStateChanged, Secret, Session, SignOutReason, StoredSession,
};
pub use store::StoreOptions;
use store::{KeepAlive, SessionStore, StoreError};

/// How long the scrubber still redacts the tokens of a session replaced by a newer one (a
/// refresh, another `auth_store_session`) before forgetting and zeroing them. A call still in
/// flight with the old session (at most the HTTP timeout, 30 s by default) may echo its
/// tokens, the old access token stays valid at the auth server until it expires, and GoTrue
/// still accepts a just-rotated refresh token for its reuse interval (10 s by default). A
/// session that *ends* keeps no grace: its tokens, and any still in grace, are forgotten at
/// once.
pub const REPLACED_TOKENS_GRACE: Duration = Duration::from_secs(60);

/// How long a refresh or a sign-in waits for the entry's cross-process lock: longer than
/// another process's refresh can hold it (30 s of retries, a last request under the default
/// 30 s HTTP timeout, a few keyring calls). Past it the caller gets `storage` (retryable).
pub const OWNER_WAIT: Duration = Duration::from_secs(75);

/// Receives every change of the stored session. The transport turns it into an
/// `auth_state_changed` notification; it must not block.
pub type EventSink = Arc<dyn Fn(AuthStateChanged) + Send + Sync>;

/// The entry's lock and pending sign-out markers (none for `memory`, or without a place).
struct Owner {
    lock: EntryLock,
    markers: Markers,
}

/// The entry's cross-process lock, held (shared by this process's tasks) while this lives;
/// `None` when there is no lock to take (memory, no lock directory).
#[derive(Clone)]
pub struct Owned(Option<Held>);

impl Owned {
    fn keep(&self) -> Option<KeepAlive> {
        self.0.clone().map(|held| held as KeepAlive)
    }
}

/// A keyring write that timed out: the fingerprints the entry may hold because of it (what
/// was there before, what was being written; `None`: no entry). Once the keyring answers,
/// an entry holding one of them is made to hold what this process told its caller.
#[derive(Debug, Default)]
struct Unsettled {
    ours: Vec<Option<String>>,
}

pub struct Sessions {
    me: Weak<Sessions>,
    current: RwLock<Option<Arc<Session>>>,
    /// The first load, once: opening the keyring, completing pending sign-outs, reading the
    /// stored session, INITIAL_SESSION.
    loaded: OnceCell<()>,
    /// The store, set by the first load; replaced once when a keyring that did not work at
    /// start answers.
    store: RwLock<Option<SessionStore>>,
    options: StoreOptions,
    owner: Option<Owner>,
    /// The lock this process holds now, shared by its tasks: other processes are what it
    /// keeps out; inside the process `changes` and the commit guards order things.
    holder: Mutex<Weak<LockGuard>>,
    /// Serializes changes so the keyring and the cache change in the same order, and each
    /// change emits its one notification before the next begins. Taken after the lock.
    changes: Mutex<()>,
    events: EventSink,
    /// Learns every token made current (so logs and errors redact it by value) and takes
    /// the keyring faults no caller sees (at start, on an expiry in the background).
    telemetry: Telemetry,
    /// Fingerprints of sessions signed out here whose removal from the keyring is not
    /// confirmed (also written to the markers, when there are any).
    pending: StdMutex<Vec<String>>,
    unsettled: StdMutex<Option<Unsettled>>,
    /// The session was changed here while no keyring held it (`auto` fell back to
    /// memory): when a keyring answers, this process's session is moved into it.
    changed_in_memory: AtomicBool,
    /// The lock file could not be used: said once.
    lock_trouble_told: AtomicBool,
    /// The PKCE verifier's store, opened on first use (see [`pkce`]). Its lock also
    /// serializes the flows of this process.
    flows: Mutex<Option<pkce::FlowSlot>>,
}

impl Sessions {
    /// Sessions without cross-process ownership: for `memory` and tests. The binary uses
    /// [`Sessions::owning`].
    pub fn new(options: StoreOptions, events: EventSink, telemetry: Telemetry) -> Arc<Self> {
        Self::owning(options, None, events, telemetry)
    }

    /// Sessions that share the keyring entry with other processes through the lock file and
    /// markers in `place` (none for `memory`).
    pub fn owning(
        options: StoreOptions,
        place: Option<lock::Place>,
        events: EventSink,
        telemetry: Telemetry,
    ) -> Arc<Self> {
        let owner = match (options.kind, place) {
            (KeyringKind::Memory, _) | (_, None) => None,
            (_, Some(place)) => {
                let name = lock::entry_name(&options.service, &options.profile);
                Some(Owner {
                    lock: EntryLock::new(&place.lock_dir, &name),
                    markers: Markers::new(&place.marker_dir, &name),
                })
            }
        };
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            current: RwLock::new(None),
            loaded: OnceCell::new(),
            store: RwLock::new(None),
            options,
            owner,
            holder: Mutex::new(Weak::new()),
            changes: Mutex::new(()),
            events,
            telemetry,
            pending: StdMutex::new(Vec::new()),
            unsettled: StdMutex::new(None),
            changed_in_memory: AtomicBool::new(false),
            lock_trouble_told: AtomicBool::new(false),
            flows: Mutex::new(None),
        })
    }

    /// Opens the keyring and loads the stored session, once. Everything that reads or
    /// changes the session awaits this first; `core_ping` does not, so the first response
    /// never waits on D-Bus.
    async fn store(&self) -> SessionStore {
        self.loaded.get_or_init(|| self.load()).await;
        self.store_now()
    }

    /// The store as it is now (after the first load).
    fn store_now(&self) -> SessionStore {
        read(&self.store)
            .clone()
            .expect("the store is opened by the first load")
    }

    /// The first load: a pending sign-out is completed (or at least honoured) before the
    /// stored session is loaded; then INITIAL_SESSION, whatever was found (with `memory`:
    /// always signed out).
    async fn load(&self) {
        let store = SessionStore::open(&self.options).await;
        if let Some(error) = store.unusable_keyring() {
            self.telemetry.report(error);
        }
        *write(&self.store) = Some(store.clone());
        if let Some(owner) = &self.owner {
            match owner.markers.pending() {
                Ok(marked) => lock_std(&self.pending).extend(marked),
                Err(e) => tracing::warn!(error = %e, "cannot read the pending sign-outs"),
            }
        }
        let owned = if store.is_persistent() {
            self.own(self.options.timeout).await.ok()
        } else {
            None
        };
        let _change = self.changes.lock().await;
        let session = match self.read_stored(&store, owned.as_ref()).await {
            Ok(stored) => {
                let (session, failure) = self.settle_pending(&store, stored, owned.as_ref()).await;
                if let Some(failure) = failure {
                    tracing::warn!(error = %failure.error, "could not complete a pending sign-out; retrying");
                }
                session
            }
            Err(e) => {
                if !store.is_unavailable() {
                    tracing::warn!(error = %e.error, "could not read the stored session; starting signed out");
                    self.telemetry.report(&e.error);
                }
                None
            }
        };
        self.set_current(session.map(Arc::new));
        // Whatever the keyring (with `memory` a fresh process is always signed out): a shell
        // waits for this event instead of polling, so it must always come.
        self.emit(AuthEvent::InitialSession, &store);
    }

    /// The session the keyring holds. An unreadable secret counts as none (and is left as
    /// it is).
    async fn read_stored(
        &self,
        store: &SessionStore,
        owned: Option<&Owned>,
    ) -> Result<Option<Session>, StoreError> {
        let Some(secret) = store.load_keeping(owned.and_then(Owned::keep)).await? else {
            return Ok(None);
        };
        // The keyring's text holds both tokens: zeroed once parsed.
        let secret = Zeroizing::new(secret);
        let session = StoredSession::from_json(&secret);
        if session.is_none() {
            tracing::warn!("the stored session is unreadable; taken as signed out");
        }
        Ok(session)
    }

    /// Waits until the stored session has been loaded.
    pub async fn ready(&self) {
        self.store().await;
    }

    /// The cached session. Cheap: a read lock and a reference count.
    pub async fn current(&self) -> Option<Arc<Session>> {
        self.ready().await;
        self.cached()
    }

    fn cached(&self) -> Option<Arc<Session>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The one place a session becomes current: its tokens are made known to the scrubber
    /// here, before anything can echo them, and the previous session's are let go. Replaced
    /// (a refresh, a new sign-in): its tokens stay redacted for [`REPLACED_TOKENS_GRACE`],
    /// then are forgotten. Ended (`None`): its tokens, and any still in grace, are forgotten
    /// now. The scrubber never keeps the tokens of sessions that are over.
    fn set_current(&self, session: Option<Arc<Session>>) {
        let scrubber = self.telemetry.scrubber();
        for secret in session.iter().flat_map(|s| s.secrets()) {
            scrubber.remember(secret.expose());
        }
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            session.clone(),
        );
        let Some(previous) = previous else {
            return;
        };
        let Some(next) = session else {
            for secret in previous.secrets() {
                scrubber.forget(secret.expose());
            }
            scrubber.forget_retired();
            return;
        };
        let mut retired = false;
        for secret in previous.secrets() {
            if !next.secrets().any(|kept| kept == secret) {
                scrubber.retire(secret.expose(), REPLACED_TOKENS_GRACE);
                retired = true;
            }
        }
        // Forget them when the grace is over even if nothing is logged by then (a scrub
        // would sweep them too).
        if retired && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let scrubber = scrubber.clone();
            runtime.spawn(async move {
                tokio::time::sleep(REPLACED_TOKENS_GRACE).await;
                scrubber.sweep();
            });
        }
    }

    pub async fn state(&self) -> AuthState {
        let store = self.store().await;
        self.state_of(&store)
    }

    fn state_of(&self, store: &SessionStore) -> AuthState {
        AuthState::of(self.cached().as_deref(), store.is_persistent())
            .with_pending_sign_out(self.sign_out_pending())
    }

    /// Whether a sign-out made here has not reached the keyring yet (it is retried each
    /// tick, and completed at the next start if need be).
    pub fn sign_out_pending(&self) -> bool {
        !lock_std(&self.pending).is_empty()
    }

    /// Takes the entry's cross-process lock, waiting at most `wait` (none to take for
    /// `memory`; a lock file that cannot be used is said once and done without).
    pub async fn own(&self, wait: Duration) -> Result<Owned> {
        let Some(owner) = &self.owner else {
            return Ok(Owned(None));
        };
        let busy = || {
            Error::Storage(format!(
                "the session is being changed by another core-sidecar process on the same \
                 keyring entry (lock {}); retry",
                owner.lock.path().display()
            ))
        };
        let mut holder = tokio::time::timeout(wait, self.holder.lock())
            .await
            .map_err(|_| busy())?;
        if let Some(held) = holder.upgrade() {
            return Ok(Owned(Some(held)));
        }
        match owner.lock.acquire(wait).await {
            Ok(guard) => {
                let held = Arc::new(guard);
                *holder = Arc::downgrade(&held);
                Ok(Owned(Some(held)))
            }
            Err(LockError::Busy { .. }) => Err(busy()),
            Err(trouble @ LockError::Io { .. }) => {
                if !self.lock_trouble_told.swap(true, Ordering::Relaxed) {
                    let error = Error::Storage(format!(
                        "{trouble}; other processes on the same keyring entry are not kept out"
                    ));
                    tracing::warn!("{error}");
                    self.telemetry.report(&error);
                }
                Ok(Owned(None))
            }
        }
    }

    /// Stores a new session (keyring first, under the lock, after re-reading it), emits
    /// SIGNED_IN. A write that timed out is undone once the keyring answers: the caller was
    /// told it failed.
    pub async fn sign_in(&self, session: Session) -> Result<AuthState> {
        self.sign_in_as(session, AuthEvent::SignedIn).await
    }

    /// [`Sessions::sign_in`], announced as `event` (`SIGNED_IN` or `PASSWORD_RECOVERY`).
    pub async fn sign_in_as(&self, session: Session, event: AuthEvent) -> Result<AuthState> {
        self.ready().await;
        let owned = self.own(OWNER_WAIT).await?;
        let _change = self.changes.lock().await;
        let store = self.store_now();
        if store.is_persistent() {
            self.sync_with(&store, &owned).await?;
        }
        let before = self.cached().map(|s| s.fingerprint());
        let secret = StoredSession::to_json(&session);
        if let Err(failure) = store.save_keeping(&secret, owned.keep()).await {
            if failure.timed_out && store.is_persistent() {
                self.unsettle(vec![before, Some(session.fingerprint())], &store, &owned);
            }
            return Err(failure.error);
        }
        drop(secret); // zeroed
        if !store.is_persistent() {
            self.changed_in_memory.store(true, Ordering::Relaxed);
        }
        self.set_current(Some(Arc::new(session)));
        Ok(self.emit(event, &store))
    }

    /// Removes the session, if any, and emits SIGNED_OUT with `reason`. Returns whether a
    /// session was removed. The session is gone here at once; if the keyring cannot take
    /// the removal now (locked, frozen, another process holding the entry), the sign-out is
    /// pending ([`Sessions::sign_out_pending`], `pendingSignOut` in the state): retried
    /// each tick until it lands, and completed at the next start if need be.
    pub async fn sign_out(&self, reason: SignOutReason) -> Result<bool> {
        Ok(self.end(None, reason, None).await)
    }

    /// Ends the session `used` if it is still the stored one (after re-reading the keyring):
    /// a late failure for an old token must not sign out a session stored since, here or by
    /// another process. Returns whether it ended it.
    pub async fn end_if_current(&self, used: &Session, reason: SignOutReason) -> bool {
        self.end(Some(used), reason, None).await
    }

    /// [`Sessions::end_if_current`] by a holder of the lock.
    pub async fn end_owned(&self, owned: &Owned, used: &Session, reason: SignOutReason) -> bool {
        self.end(Some(used), reason, Some(owned)).await
    }

    async fn end(
        &self,
        used: Option<&Session>,
        reason: SignOutReason,
        owned: Option<&Owned>,
    ) -> bool {
        self.ready().await;
        let owned = match owned {
            Some(owned) => Some(owned.clone()),
            None => self.own(self.options.timeout).await.ok(),
        };
        let _change = self.changes.lock().await;
        let store = self.store_now();
        let mut synced = !store.is_persistent();
        if let (true, Some(owned)) = (store.is_persistent(), &owned) {
            match self.sync_with(&store, owned).await {
                Ok(()) => synced = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not re-read the keyring before signing out")
                }
            }
        }
        let Some(current) = self.cached() else {
            return false;
        };
        if used.is_some_and(|used| !current.same_access(used)) {
            return false;
        }
        // Recorded first: it survives a crash, and any process on the entry completes it.
        self.add_pending(&current, &store);
        self.set_current(None);
        if synced {
            // The keyring holds `current` (just re-read, or memory): remove it now.
            let failure = if store.is_persistent() {
                self.settle_pending(&store, Some((*current).clone()), owned.as_ref())
                    .await
                    .1
            } else {
                self.delete_from_memory(&store).await
            };
            if let Some(failure) = failure {
                tracing::warn!(error = %failure.error, "could not remove the session from the keyring; the sign-out is pending");
                if reason != SignOutReason::SignedOut {
                    // Nobody waits on this answer (a background refresh, a call that already
                    // failed): the fault is reported here or not at all.
                    self.telemetry.report(&failure.error);
                }
            }
        }
        self.emit(AuthEvent::SignedOut(reason), &store);
        true
    }

    /// Replaces the session `used` with `next` if `used` is still the stored one (same
    /// tokens), emitting `event`. Returns whether it was committed: a refresh that ends
    /// after a sign-out or a newer sign-in (here or in another process) is discarded here.
    pub async fn replace_if_current(
        &self,
        used: &Session,
        next: Session,
        event: Option<AuthEvent>,
    ) -> Result<bool> {
        self.ready().await;
        let owned = self.own(OWNER_WAIT).await?;
        self.replace_owned(&owned, used, next, event).await
    }

    /// [`Sessions::replace_if_current`] by a holder of the lock. A write that timed out is
    /// made true: this process goes on with `next`, and the keyring is made to hold it once
    /// it answers.
    pub async fn replace_owned(
        &self,
        owned: &Owned,
        used: &Session,
        next: Session,
        event: Option<AuthEvent>,
    ) -> Result<bool> {
        self.ready().await;
        let _change = self.changes.lock().await;
        let store = self.store_now();
        if store.is_persistent() && self.anything_pending() {
            // A sign-out recorded meanwhile (by any process) wins over this change.
            self.sync_with(&store, owned).await?;
        }
        let Some(current) = self.cached() else {
            return Ok(false);
        };
        if !current.same_lineage(used) {
            return Ok(false);
        }
        if *current == next {
            return Ok(true);
        }
        let secret = StoredSession::to_json(&next);
        match store.save_keeping(&secret, owned.keep()).await {
            Ok(()) => {}
            Err(failure) if failure.timed_out && store.is_persistent() => {
                tracing::warn!(error = %failure.error, "the keyring did not confirm the new session in time; it is written again once the keyring answers");
                self.unsettle(
                    vec![Some(used.fingerprint()), Some(next.fingerprint())],
                    &store,
                    owned,
                );
            }
            Err(failure) => return Err(failure.error),
        }
        drop(secret); // zeroed
        if !store.is_persistent() {
            self.changed_in_memory.store(true, Ordering::Relaxed);
        }
        self.set_current(Some(Arc::new(next)));
        if let Some(event) = event {
            self.emit(event, &store);
        }
        Ok(true)
    }

    /// Stores the user as the auth server sees it now, if `used` is still the stored
    /// session: USER_UPDATED when it differs from the stored one, nothing (no write, no
    /// event) when it is the same.
    pub async fn update_user_if_current(
        &self,
        used: &Session,
        user: serde_json::Value,
    ) -> Result<bool> {
        let next = Session {
            user: Some(user),
            ..used.clone()
        };
        self.replace_if_current(used, next, Some(AuthEvent::UserUpdated))
            .await
    }

    /// Re-reads the keyring under the lock and adopts what another process stored or
    /// cleared (first completing pending sign-outs and reconciling a write that timed out).
    /// For a refresh about to start, and the ticker.
    pub async fn sync(&self, owned: &Owned) -> Result<()> {
        self.ready().await;
        let _change = self.changes.lock().await;
        let store = self.store_now();
        if !store.is_persistent() {
            return Ok(());
        }
        self.sync_with(&store, owned).await
    }

    /// One tick of upkeep: a keyring that did not work is tried again; the keyring is
    /// re-read (a cheap read) and what another process stored or cleared is adopted;
    /// pending sign-outs and writes that timed out are completed. Faults are logged and
    /// reported (nobody else sees them).
    pub async fn maintain(&self) {
        let store = self.store().await;
        if store.needs_retry() {
            self.retry_keyring().await;
        }
        let store = self.store_now();
        if !store.is_persistent() {
            if self.sign_out_pending() {
                let _change = self.changes.lock().await;
                self.delete_from_memory(&store).await;
            }
            return;
        }
        let Ok(owned) = self.own(self.options.timeout).await else {
            // Another process holds the entry (refreshing): next tick.
            return;
        };
        let _change = self.changes.lock().await;
        if let Err(error) = self.sync_with(&store, &owned).await {
            tracing::warn!(error = %error, "could not re-read the keyring");
            self.telemetry.report(&error);
        }
    }

    /// Re-reads the keyring (the lock held by the caller, `changes` too) and brings this
    /// process in line with it: a write that timed out is reconciled first, then pending
    /// sign-outs completed, then the stored session adopted with the event its change
    /// means (SIGNED_IN, TOKEN_REFRESHED, USER_UPDATED, SIGNED_OUT `external`).
    async fn sync_with(&self, store: &SessionStore, owned: &Owned) -> Result<()> {
        let mut stored = self.read_stored(store, Some(owned)).await?;
        let unsettled = lock_std(&self.unsettled).take();
        if let Some(unsettled) = unsettled {
            let found = stored.as_ref().map(Session::fingerprint);
            let memory = self.cached();
            if unsettled.ours.contains(&found) && stored.as_ref() != memory.as_deref() {
                let written = match &memory {
                    Some(session) => {
                        let secret = StoredSession::to_json(session);
                        store.save_keeping(&secret, owned.keep()).await.map(|_| ())
                    }
                    None => store.delete_keeping(owned.keep()).await.map(|_| ()),
                };
                if let Err(failure) = written {
                    *lock_std(&self.unsettled) = Some(unsettled);
                    return Err(failure.error);
                }
                tracing::info!(
                    "a keyring write that timed out is reconciled: the keyring holds what the caller was told"
                );
                stored = memory.map(|s| (*s).clone());
            }
        }
        let (stored, failure) = self.settle_pending(store, stored, Some(owned)).await;
        self.adopt(stored, store);
        match failure {
            Some(failure) => Err(failure.error),
            None => Ok(()),
        }
    }

    /// Makes `stored` (what the keyring holds) current if it differs, with the event.
    fn adopt(&self, stored: Option<Session>, store: &SessionStore) {
        let memory = self.cached();
        let event = match (memory.as_deref(), stored.as_ref()) {
            (None, None) => None,
            (Some(_), None) => Some(AuthEvent::SignedOut(SignOutReason::External)),
            (None, Some(_)) => Some(AuthEvent::SignedIn),
            (Some(memory), Some(stored)) => memory.change_to(stored),
        };
        let Some(event) = event else {
            return;
        };
        tracing::info!(event = ?event.name(), "the keyring entry was changed by another process; adopted");
        self.set_current(stored.map(Arc::new));
        self.emit(event, store);
    }

    /// Completes the pending sign-outs (this process's and any other's on the entry): the
    /// stored session is removed when it is one of them. Returns what the keyring holds
    /// now (never a session signed out), and the failure that left them pending. Without
    /// the lock nothing is removed.
    async fn settle_pending(
        &self,
        store: &SessionStore,
        stored: Option<Session>,
        owned: Option<&Owned>,
    ) -> (Option<Session>, Option<StoreError>) {
        let pending = self.pending_everywhere();
        if pending.is_empty() {
            return (stored, None);
        }
        let marked = stored
            .as_ref()
            .is_some_and(|s| pending.contains(&s.fingerprint()));
        let Some(owned) = owned else {
            return (stored.filter(|_| !marked), None);
        };
        if marked {
            if let Err(failure) = store.delete_keeping(owned.keep()).await {
                if failure.timed_out {
                    // It may land later, or not: the marker stays until a read shows.
                    tracing::warn!("the keyring did not confirm the removal in time");
                }
                return (None, Some(failure));
            }
            tracing::info!("a pending sign-out reached the keyring");
        }
        self.clear_pending(&pending);
        (stored.filter(|_| !marked), None)
    }

    /// The memory store's delete (only injected faults fail it), pending on failure.
    async fn delete_from_memory(&self, store: &SessionStore) -> Option<StoreError> {
        match store.delete_keeping(None).await {
            Ok(_) => {
                lock_std(&self.pending).clear();
                None
            }
            Err(failure) => Some(failure),
        }
    }

    fn add_pending(&self, session: &Session, store: &SessionStore) {
        let fingerprint = session.fingerprint();
        {
            let mut pending = lock_std(&self.pending);
            if !pending.contains(&fingerprint) {
                pending.push(fingerprint.clone());
            }
        }
        if let (true, Some(owner)) = (store.is_persistent(), &self.owner)
            && let Err(e) = owner.markers.add(&fingerprint)
        {
            tracing::warn!(error = %e, path = %owner.markers.path().display(), "cannot record the pending sign-out on disk; it is retried while this process runs");
        }
    }

    /// This process's pending sign-outs and those on disk (any process's).
    fn pending_everywhere(&self) -> Vec<String> {
        let mut pending = lock_std(&self.pending).clone();
        if let Some(owner) = &self.owner {
            match owner.markers.pending() {
                Ok(marked) => {
                    for fingerprint in marked {
                        if !pending.contains(&fingerprint) {
                            pending.push(fingerprint);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the pending sign-outs"),
            }
        }
        pending
    }

    fn anything_pending(&self) -> bool {
        !self.pending_everywhere().is_empty()
    }

    fn clear_pending(&self, done: &[String]) {
        lock_std(&self.pending).retain(|p| !done.contains(p));
        if let Some(owner) = &self.owner
            && let Err(e) = owner.markers.remove(done)
        {
            tracing::warn!(error = %e, "cannot update the pending sign-outs on disk");
        }
    }

    /// Records a write that timed out and reconciles once the keyring has answered: a task
    /// keeps the lock (no other process writes meanwhile) until the stuck call returned,
    /// then re-reads and writes what this process told its caller if the entry holds one of
    /// `ours`. If that fails too, the next tick tries again.
    fn unsettle(&self, ours: Vec<Option<String>>, store: &SessionStore, owned: &Owned) {
        lock_std(&self.unsettled)
            .get_or_insert_with(Unsettled::default)
            .ours
            .extend(ours);
        let (me, store, owned) = (self.me.clone(), store.clone(), owned.clone());
        tokio::spawn(async move {
            store.settled().await;
            let Some(this) = me.upgrade() else {
                return;
            };
            let _change = this.changes.lock().await;
            if let Err(error) = this.sync_with(&store, &owned).await {
                tracing::warn!(error = %error, "could not reconcile a keyring write that timed out; retrying each tick");
            }
            drop(owned);
        });
    }

    /// A keyring that did not work at start is tried again. When one answers: pending
    /// sign-outs are completed, then the stored session is loaded, or, if the session was
    /// changed here meanwhile (memory), this process's session is written to it;
    /// `persistent` turns true; KEYRING_AVAILABLE.
    async fn retry_keyring(&self) {
        let Some(opened) = SessionStore::reopen(&self.options).await else {
            return;
        };
        let Ok(owned) = self.own(self.options.timeout).await else {
            return;
        };
        let _change = self.changes.lock().await;
        let stored = match self.read_stored(&opened, Some(&owned)).await {
            Ok(stored) => stored,
            Err(failure) => {
                tracing::info!(error = %failure.error, "the keyring answers but cannot be read yet");
                return;
            }
        };
        let (mut stored, failure) = self.settle_pending(&opened, stored, Some(&owned)).await;
        if failure.is_some() {
            return;
        }
        if self.changed_in_memory.load(Ordering::Relaxed) {
            let memory = self.cached();
            let written = match &memory {
                Some(session) => {
                    let secret = StoredSession::to_json(session);
                    opened.save_keeping(&secret, owned.keep()).await.map(|_| ())
                }
                None => opened.delete_keeping(owned.keep()).await.map(|_| ()),
            };
            if let Err(failure) = written {
                tracing::info!(error = %failure.error, "the keyring answers but cannot be written yet");
                return;
            }
            stored = memory.map(|s| (*s).clone());
            self.changed_in_memory.store(false, Ordering::Relaxed);
        }
        *write(&self.store) = Some(opened.clone());
        self.set_current(stored.map(Arc::new));
        tracing::info!("the keyring answers now: the session is kept in it from here on");
        self.emit(AuthEvent::KeyringAvailable, &opened);
    }

    fn emit(&self, event: AuthEvent, store: &SessionStore) -> AuthState {
        let state = self.state_of(store);
        (self.events)(AuthStateChanged::new(event, state.clone()));
        state
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn lock_std<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(telemetry: &Telemetry) -> Arc<Sessions> {
        Sessions::new(
            StoreOptions::memory("session-tests"),
            Arc::new(|_| {}),
            telemetry.clone(),
        )
    }

    fn session(access: &str, refresh: &str) -> Session {
        Session {
            access_token: Secret::new(access).unwrap(),
            refresh_token: Secret::new(refresh),
            expires_at: None,
            token_type: None,
            user: Some(serde_json::json!({"id": "u"})),
        }
    }

    fn redacted(telemetry: &Telemetry, token: &str) -> bool {
        telemetry.scrubber().scrub(token) != token
    }

    #[tokio::test]
    async fn the_scrubber_knows_the_current_tokens_and_forgets_ended_ones() {
        let telemetry = Telemetry::new();
        let sessions = sessions(&telemetry);
        sessions
            .sign_in(session("access-one-opaque", "refresh-one-opaque"))
            .await
            .unwrap();
        assert!(redacted(&telemetry, "access-one-opaque"));
        assert!(redacted(&telemetry, "refresh-one-opaque"));

        // A new user object, same tokens: nothing is retired.
        let used = sessions.current().await.unwrap();
        let updated = serde_json::json!({"id": "u", "name": "n"});
        assert!(
            sessions
                .update_user_if_current(&used, updated)
                .await
                .unwrap()
        );
        assert_eq!(telemetry.scrubber().known_count(), 2);

        // Replaced (a refresh): the old tokens stay redacted for the grace, the new ones too.
        let used = sessions.current().await.unwrap();
        let next = session("access-two-opaque", "refresh-two-opaque");
        assert!(
            sessions
                .replace_if_current(&used, next, None)
                .await
                .unwrap()
        );
        for token in [
            "access-one-opaque",
            "refresh-one-opaque",
            "access-two-opaque",
            "refresh-two-opaque",
        ] {
            assert!(redacted(&telemetry, token), "{token}");
        }
        drop(used);

        // Ended: nothing of it, or of the session it replaced, is kept.
        assert!(sessions.sign_out(SignOutReason::SignedOut).await.unwrap());
        assert_eq!(telemetry.scrubber().known_count(), 0);
        for token in [
            "access-one-opaque",
            "access-two-opaque",
            "refresh-two-opaque",
        ] {
            assert!(!redacted(&telemetry, token), "{token}");
        }
    }

    /// Sessions on `memory` that record their events' names.
    fn recording(
        fault: Option<crate::config::Fault>,
    ) -> (Arc<Sessions>, Arc<StdMutex<Vec<AuthStateChanged>>>) {
        let events = Arc::new(StdMutex::new(Vec::new()));
        let sink = events.clone();
        let sessions = Sessions::new(
            StoreOptions {
                fault,
                ..StoreOptions::memory("session-tests")
            },
            Arc::new(move |change| lock_std(&sink).push(change)),
            Telemetry::new(),
        );
        (sessions, events)
    }

    fn names(events: &StdMutex<Vec<AuthStateChanged>>) -> Vec<String> {
        lock_std(events)
            .iter()
            .map(|e| {
                serde_json::to_value(e.event)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn user_updated_only_when_the_user_changed_and_initial_session_first() {
        let (sessions, events) = recording(None);
        sessions
            .sign_in(session("access-upd-opaque", "refresh-upd-opaque"))
            .await
            .unwrap();
        let used = sessions.current().await.unwrap();
        let same = used.user.clone().unwrap();
        assert!(sessions.update_user_if_current(&used, same).await.unwrap());
        let other = serde_json::json!({"id": "u", "email": "u@example.com"});
        assert!(
            sessions
                .update_user_if_current(&used, other.clone())
                .await
                .unwrap()
        );
        let used = sessions.current().await.unwrap();
        assert!(
            sessions
                .update_user_if_current(&used, other.clone())
                .await
                .unwrap()
        );
        assert_eq!(
            names(&events),
            ["INITIAL_SESSION", "SIGNED_IN", "USER_UPDATED"]
        );
        assert_eq!(lock_std(&events)[2].state.user, Some(other));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sign_out_the_store_refuses_is_pending_and_still_a_sign_out() {
        // Writes refused (the memory store with the `fail-writes` fault), a session held.
        let (sessions, events) = recording(Some(crate::config::Fault::FailWrites));
        sessions.ready().await;
        sessions.set_current(Some(Arc::new(session(
            "access-pend-opaque",
            "refresh-pend-opaque",
        ))));
        assert!(sessions.sign_out(SignOutReason::SignedOut).await.unwrap());
        assert!(sessions.sign_out_pending());
        let state = sessions.state().await;
        assert!(!state.is_authenticated && state.pending_sign_out);
        let last = lock_std(&events).last().cloned().unwrap();
        assert_eq!(last.reason, Some(SignOutReason::SignedOut));
        assert!(last.state.pending_sign_out);
        // Upkeep retries it (still refused here): still pending, nothing announced again.
        sessions.maintain().await;
        assert!(sessions.sign_out_pending());
        assert_eq!(names(&events), ["INITIAL_SESSION", "SIGNED_OUT"]);
    }

    #[tokio::test]
    async fn storing_the_same_tokens_again_keeps_them_known() {
        let telemetry = Telemetry::new();
        let sessions = sessions(&telemetry);
        for _ in 0..2 {
            sessions
                .sign_in(session("access-same-opaque", "refresh-same-opaque"))
                .await
                .unwrap();
        }
        assert_eq!(telemetry.scrubber().known_count(), 2);
        telemetry.scrubber().sweep();
        assert!(redacted(&telemetry, "access-same-opaque"));
        // A new session with a new access token but the same refresh token: only the old
        // access token is retired.
        sessions
            .sign_in(session("access-other-opaque", "refresh-same-opaque"))
            .await
            .unwrap();
        assert!(
            sessions
                .end_if_current(
                    &session("access-other-opaque", "refresh-same-opaque"),
                    SignOutReason::Expired
                )
                .await
        );
        assert_eq!(telemetry.scrubber().known_count(), 0);
    }
}
