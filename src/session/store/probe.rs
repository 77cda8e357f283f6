//! Whether a backend works, decided once at [`SessionStore::open`](super::SessionStore::open).
//!
//! A candidate backend is probed by building the entry and reading it, on its own thread
//! within the timeout: it works when the read succeeds or finds no entry. keyutils also
//! proves a write with a `<profile>.probe` key (written, then removed): a process without a
//! session keyring of its own may read the user's keyring but not write to it.

use std::time::Duration;

use keyring_core::Entry;

use super::errors::describe;
use super::runner::{OwnedEntry, off_thread};
use crate::config::Keyring;

/// Builds the entry and reads it once, within the timeout: the backend works when the read
/// succeeds or finds no entry.
pub(super) async fn probe<B>(
    keyring: Keyring,
    service: &str,
    profile: &str,
    timeout: Duration,
    build: B,
) -> Result<OwnedEntry, String>
where
    B: Fn(Keyring, &str, &str) -> keyring_core::Result<Entry> + Send + 'static,
{
    let (service, profile) = (service.to_owned(), profile.to_owned());
    let work = off_thread(move || {
        let entry = OwnedEntry::new(build(keyring, &service, &profile).map_err(|e| describe(&e))?);
        if keyring == Keyring::Keyutils {
            check_keyutils_writable(
                &entry,
                || build(keyring, &service, &profile),
                || build(keyring, &service, &format!("{profile}.probe")),
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
