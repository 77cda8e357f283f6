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
use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};

use crate::config::KeyringKind;
use crate::error::Result;
pub use model::{AuthEvent, AuthState, AuthStateChanged, Secret, Session, SignOutReason};
use store::SessionStore;

/// Receives every change of the stored session. The transport turns it into an
/// `auth_state_changed` notification; it must not block.
pub type EventSink = Arc<dyn Fn(AuthStateChanged) + Send + Sync>;

/// Where the session is kept.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub kind: KeyringKind,
    pub service: String,
    pub profile: String,
    pub timeout: Duration,
}

pub struct Sessions {
    current: RwLock<Option<Arc<Session>>>,
    store: OnceCell<SessionStore>,
    options: StoreOptions,
    /// Serializes changes so the keyring and the cache change in the same order, and each
    /// change emits its one notification before the next begins.
    changes: Mutex<()>,
    events: EventSink,
}

impl Sessions {
    pub fn new(options: StoreOptions, events: EventSink) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(None),
            store: OnceCell::new(),
            options,
            changes: Mutex::new(()),
            events,
        })
    }

    /// Opens the keyring and loads the stored session, once. Everything that reads or
    /// changes the session awaits this first; `core_ping` does not, so the first response
    /// never waits on D-Bus.
    async fn store(&self) -> &SessionStore {
        self.store
            .get_or_init(|| async {
                let o = &self.options;
                let store = SessionStore::open(o.kind, &o.service, &o.profile, o.timeout).await;
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
                return;
            }
        };
        match serde_json::from_str::<Session>(&secret) {
            Ok(session) => self.set_current(Some(Arc::new(session))),
            // The message of a serde error can quote the input: keep it out of the log.
            Err(_) => tracing::warn!("the stored session is unreadable; starting signed out"),
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

    fn set_current(&self, session: Option<Arc<Session>>) {
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
        store.save(&serialize(&session)).await?;
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
            tracing::warn!(error = %e, "could not remove the expired session from the keyring");
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
        store.save(&serialize(&next)).await?;
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

fn serialize(session: &Session) -> String {
    // A struct of strings, numbers and a JSON value cannot fail to serialize.
    serde_json::to_string(session).expect("session serializes")
}
