//! The signed-in user's session.
//!
//! - [`Sessions`]: the in-memory cache (read per call, never the keyring) and every change
//!   of it, each written to the keyring first and announced with one `auth_state_changed`.
//! - [`store`]: the keyring, read once at start.
//! - [`gate`]: the only way into gated methods.
//! - [`refresh`]: single-flight refresh against the auth server, and the auto-refresh ticker.
//! - [`model`]: what a session is, and what the shell may see of it.

pub mod gate;
pub mod model;
pub mod refresh;
pub mod store;

use std::sync::{Arc, RwLock};

use tokio::sync::{Mutex, OnceCell};

use crate::error::Result;
use crate::telemetry::Telemetry;
pub use model::{
    AuthEvent, AuthState, AuthStateChanged, Secret, Session, SignOutReason, StoredSession,
};
use store::SessionStore;
pub use store::StoreOptions;

/// Receives every change of the stored session. The transport turns it into an
/// `auth_state_changed` notification; it must not block.
pub type EventSink = Arc<dyn Fn(AuthStateChanged) + Send + Sync>;

pub struct Sessions {
    current: RwLock<Option<Arc<Session>>>,
    store: OnceCell<SessionStore>,
    options: StoreOptions,
    /// Serializes changes so the keyring and the cache change in the same order, and each
    /// change emits its one notification before the next begins.
    changes: Mutex<()>,
    events: EventSink,
    /// Learns every token made current (so logs and errors redact it by value) and takes
    /// the keyring faults no caller sees (at start, on an expiry in the background).
    telemetry: Telemetry,
}

impl Sessions {
    pub fn new(options: StoreOptions, events: EventSink, telemetry: Telemetry) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(None),
            store: OnceCell::new(),
            options,
            changes: Mutex::new(()),
            events,
            telemetry,
        })
    }

    /// Opens the keyring and loads the stored session, once. Everything that reads or
    /// changes the session awaits this first; `core_ping` does not, so the first response
    /// never waits on D-Bus.
    async fn store(&self) -> &SessionStore {
        self.store
            .get_or_init(|| async {
                let store = SessionStore::open(&self.options).await;
                if let Some(error) = store.unusable_keyring() {
                    self.telemetry.report(error);
                }
                self.load_from(&store).await;
                store
            })
            .await
    }

    async fn load_from(&self, store: &SessionStore) {
        let secret = match store.load().await {
            Ok(Some(secret)) => secret,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored session; starting signed out");
                self.telemetry.report(&e);
                return;
            }
        };
        match StoredSession::from_json(&secret) {
            Some(session) => self.set_current(Some(Arc::new(session))),
            None => tracing::warn!("the stored session is unreadable; starting signed out"),
        }
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
    /// here, before anything can echo them.
    fn set_current(&self, session: Option<Arc<Session>>) {
        for secret in session.iter().flat_map(|s| s.secrets()) {
            self.telemetry.scrubber().remember(secret.expose());
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = session;
    }

    pub async fn state(&self) -> AuthState {
        let store = self.store().await;
        AuthState::of(self.cached().as_deref(), store.is_persistent())
    }

    /// Stores a new session (keyring first), emits SIGNED_IN.
    pub async fn sign_in(&self, session: Session) -> Result<AuthState> {
        let store = self.store().await;
        let _change = self.changes.lock().await;
        store.save(&StoredSession::to_json(&session)).await?;
        self.set_current(Some(Arc::new(session)));
        Ok(self.emit(AuthEvent::SignedIn, store))
    }

    /// Removes the session, if any, and emits SIGNED_OUT with `reason`. Returns whether a
    /// session was removed. The cache is cleared even when the keyring fails: the user asked
    /// to be signed out.
    pub async fn sign_out(&self, reason: SignOutReason) -> Result<bool> {
        let store = self.store().await;
        let _change = self.changes.lock().await;
        if self.cached().is_none() {
            return Ok(false);
        }
        self.set_current(None);
        let deleted = store.delete().await;
        self.emit(AuthEvent::SignedOut(reason), store);
        deleted.map(|_| true)
    }

    /// Ends the session `used` if it is still the stored one: a late failure for an old
    /// token must not sign out a session stored since. Returns whether it ended it.
    pub async fn end_if_current(&self, used: &Session, reason: SignOutReason) -> bool {
        let store = self.store().await;
        let _change = self.changes.lock().await;
        if !self
            .cached()
            .is_some_and(|current| current.same_access(used))
        {
            return false;
        }
        self.set_current(None);
        if let Err(e) = store.delete().await {
            // Nobody waits on this answer (a background refresh, a call that already failed):
            // the fault is reported here or not at all.
            tracing::warn!(error = %e, "could not remove the expired session from the keyring");
            self.telemetry.report(&e);
        }
        self.emit(AuthEvent::SignedOut(reason), store);
        true
    }

    /// Replaces the session `used` with `next` if `used` is still the stored one (same
    /// tokens), emitting `event`. Returns whether it was committed: a refresh that ends
    /// after a sign-out or a newer sign-in is discarded here.
    pub async fn replace_if_current(
        &self,
        used: &Session,
        next: Session,
        event: Option<AuthEvent>,
    ) -> Result<bool> {
        let store = self.store().await;
        let _change = self.changes.lock().await;
        if !self
            .cached()
            .is_some_and(|current| current.same_lineage(used))
        {
            return Ok(false);
        }
        store.save(&StoredSession::to_json(&next)).await?;
        self.set_current(Some(Arc::new(next)));
        if let Some(event) = event {
            self.emit(event, store);
        }
        Ok(true)
    }

    /// Stores the user as the auth server sees it now, if `used` is still the stored session.
    /// No notification: the session (tokens, expiry) did not change.
    pub async fn update_user_if_current(
        &self,
        used: &Session,
        user: serde_json::Value,
    ) -> Result<bool> {
        let next = Session {
            user: Some(user),
            ..used.clone()
        };
        self.replace_if_current(used, next, None).await
    }

    fn emit(&self, event: AuthEvent, store: &SessionStore) -> AuthState {
        let state = AuthState::of(self.cached().as_deref(), store.is_persistent());
        (self.events)(AuthStateChanged::new(event, state.clone()));
        state
    }
}
