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
use zeroize::Zeroizing;

use crate::error::Result;
use crate::telemetry::Telemetry;
pub use model::{
    AuthEvent, AuthState, AuthStateChanged, Secret, Session, SignOutReason, StoredSession,
};
use store::SessionStore;
pub use store::StoreOptions;

/// How long the scrubber still redacts the tokens of a session replaced by a newer one (a
/// refresh, another `auth_store_session`) before forgetting and zeroing them. A call still in
/// flight with the old session (at most the HTTP timeout, 30 s by default) may echo its
/// tokens, the old access token stays valid at the auth server until it expires, and GoTrue
/// still accepts a just-rotated refresh token for its reuse interval (10 s by default). A
/// session that *ends* keeps no grace: its tokens, and any still in grace, are forgotten at
/// once.
pub const REPLACED_TOKENS_GRACE: Duration = Duration::from_secs(60);

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
        // The keyring's text holds both tokens: zeroed once parsed.
        let secret = Zeroizing::new(secret);
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
        AuthState::of(self.cached().as_deref(), store.is_persistent())
    }

    /// Stores a new session (keyring first), emits SIGNED_IN.
    pub async fn sign_in(&self, session: Session) -> Result<AuthState> {
        let store = self.store().await;
        let _change = self.changes.lock().await;
        let secret = StoredSession::to_json(&session);
        store.save(&secret).await?;
        drop(secret); // zeroed
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
        let secret = StoredSession::to_json(&next);
        store.save(&secret).await?;
        drop(secret); // zeroed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyringKind;

    fn sessions(telemetry: &Telemetry) -> Arc<Sessions> {
        Sessions::new(
            StoreOptions {
                kind: KeyringKind::Memory,
                service: "session-tests".into(),
                profile: "default".into(),
                timeout: Duration::from_secs(5),
                fault: None,
            },
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
