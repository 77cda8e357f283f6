//! PKCE (RFC 7636, `S256`) for the sign-in flows that finish outside the sidecar: a browser
//! (`auth_sign_in_with_oauth`) or an emailed link (sign-up confirmation, magic link, password
//! recovery, email change) comes back to the shell with a `code`, which only this process can
//! exchange (`auth_exchange_code`), because only it holds the verifier.
//!
//! The verifier is 64 bytes from the OS CSPRNG, base64url (86 characters). It is kept in the
//! same keyring as the session, in its own entry `service`/`<profile>.pkce`, as a JSON object
//! `{code_verifier, flow, created_at}`, so a link opened after a restart still works. One flow
//! at a time: starting one replaces the one in progress, and the exchange takes the verifier
//! out (used once, whatever the answer). It never leaves the process except in the
//! exchange's request body; the auth server sees only its SHA-256 until then.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Sessions;
use super::model::{Secret, unix_now};
use super::store::SessionStore;
use crate::error::{Error, Result};

/// The verifier's entry is the session's profile with this suffix.
pub const PROFILE_SUFFIX: &str = ".pkce";

/// `code_challenge_method`, as auth-js spells it.
pub const METHOD: &str = "s256";

/// Random bytes in a verifier (86 base64url characters; RFC 7636 allows 43 to 128).
const VERIFIER_BYTES: usize = 64;

/// What started a flow: says which event its exchange emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    Oauth,
    SignUp,
    Otp,
    Recovery,
    EmailChange,
}

/// A flow in progress, as the keyring entry holds it.
#[derive(Serialize, Deserialize)]
struct StoredFlow {
    code_verifier: Zeroizing<String>,
    flow: FlowKind,
    created_at: i64,
}

/// What the auth server is told when a flow starts.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// BASE64URL(SHA-256(verifier)), no padding.
    pub code_challenge: String,
    pub method: &'static str,
}

/// A flow taken out of the keyring for its exchange.
pub struct Flow {
    pub verifier: Secret,
    pub kind: FlowKind,
}

/// The verifier's store, opened beside the session store it was derived from.
pub(super) struct FlowSlot {
    beside: SessionStore,
    store: SessionStore,
}

/// BASE64URL(SHA-256(`verifier`)): the `S256` challenge.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn new_verifier() -> Result<Zeroizing<String>> {
    let mut bytes = Zeroizing::new([0u8; VERIFIER_BYTES]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| Error::Internal(format!("the OS random source failed: {e}")))?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
}

impl Sessions {
    /// Starts a flow: a new verifier replaces the one in progress, if any. Returns the
    /// challenge to send.
    pub async fn start_flow(&self, kind: FlowKind) -> Result<Challenge> {
        let verifier = new_verifier()?;
        let challenge = Challenge {
            code_challenge: challenge_of(&verifier),
            method: METHOD,
        };
        let stored = StoredFlow {
            code_verifier: verifier,
            flow: kind,
            created_at: unix_now(),
        };
        let text = Zeroizing::new(
            serde_json::to_string(&stored)
                .map_err(|e| Error::Internal(format!("cannot serialize a flow: {e}")))?,
        );
        let mut slot = self.flows.lock().await;
        let store = self.flow_store(&mut slot).await;
        store.save(&text).await?;
        self.telemetry.scrubber().remember(&stored.code_verifier);
        Ok(challenge)
    }

    /// Takes the flow in progress out of the keyring: it can be used once. `None` when
    /// there is none (never started, already exchanged, replaced and exchanged, or
    /// unreadable).
    pub async fn take_flow(&self) -> Result<Option<Flow>> {
        let mut slot = self.flows.lock().await;
        let store = self.flow_store(&mut slot).await;
        let Some(text) = store.load().await?.map(Zeroizing::new) else {
            return Ok(None);
        };
        if let Err(e) = store.delete().await {
            // The code is single-use at the auth server: a verifier left behind is harmless,
            // and the next flow replaces it.
            tracing::warn!(error = %e, "could not remove the used PKCE verifier");
        }
        let Ok(stored) = serde_json::from_str::<StoredFlow>(&text) else {
            tracing::warn!("the stored PKCE flow is unreadable; taken as none");
            return Ok(None);
        };
        self.telemetry.scrubber().forget(&stored.code_verifier);
        let StoredFlow {
            mut code_verifier,
            flow,
            ..
        } = stored;
        Ok(
            Secret::new(std::mem::take(&mut *code_verifier)).map(|verifier| Flow {
                verifier,
                kind: flow,
            }),
        )
    }

    /// Ends the flow in progress unused: its request failed, so no link will come.
    pub async fn discard_flow(&self) {
        if let Err(e) = self.take_flow().await {
            tracing::warn!(error = %e, "could not remove a PKCE verifier no longer needed");
        }
    }

    /// The verifier's store: an entry beside the session's, in the keyring the session is
    /// in now (re-derived when the session store changes, as when a keyring answers late).
    async fn flow_store(&self, slot: &mut Option<FlowSlot>) -> SessionStore {
        let beside = self.store().await;
        if let Some(open) = slot.as_ref().filter(|open| open.beside.same_as(&beside)) {
            return open.store.clone();
        }
        let profile = format!("{}{PROFILE_SUFFIX}", self.options.profile);
        let store = beside.sibling(&self.options.service, &profile).await;
        *slot = Some(FlowSlot {
            beside,
            store: store.clone(),
        });
        store
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::session::StoreOptions;
    use crate::telemetry::Telemetry;

    fn sessions() -> Arc<Sessions> {
        Sessions::new(
            StoreOptions::memory("pkce-tests"),
            Arc::new(|_| {}),
            Telemetry::new(),
        )
    }

    #[test]
    fn the_challenge_is_base64url_sha256() {
        // Computed independently: Python's
        // `urlsafe_b64encode(sha256(v).digest()).rstrip(b"=")`.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc"
        );
    }

    #[test]
    fn verifiers_are_long_random_and_url_safe() {
        let (a, b) = (new_verifier().unwrap(), new_verifier().unwrap());
        assert_eq!(a.len(), 86);
        assert_ne!(*a, *b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[tokio::test]
    async fn a_flow_is_used_once_and_a_new_one_replaces_it() {
        let sessions = sessions();
        let first = sessions.start_flow(FlowKind::Oauth).await.unwrap();
        let second = sessions.start_flow(FlowKind::Recovery).await.unwrap();
        assert_ne!(first.code_challenge, second.code_challenge);
        assert_eq!(second.method, "s256");
        let flow = sessions.take_flow().await.unwrap().unwrap();
        assert_eq!(flow.kind, FlowKind::Recovery);
        assert_eq!(challenge_of(flow.verifier.expose()), second.code_challenge);
        assert!(sessions.take_flow().await.unwrap().is_none());
    }
}
