//! Which OS keyrings the store tries for a configured [`KeyringKind`], and how an entry is
//! built in each.
//!
//! [`Keyring`] is the one list of backends. It is declared in [`crate::config`] (the list
//! and the names: what `CORE_SIDECAR_KEYRING` accepts and what
//! [`SessionStore::backend_name`](super::SessionStore::backend_name) reports), which stays a
//! leaf; everything it takes to reach a backend is implemented here.
//!
//! # Adding a backend
//!
//! Two edits: a line in the `keyrings!` list of `src/config.rs` (its name and doc), and its
//! arm in [`Keyring::entry`] here (behind its `cfg`). Plus, when the platform should pick it
//! for `auto`, its place in [`Keyring::AUTO`]; and its store crate in `Cargo.toml`. The
//! backend table of the [store docs](super) and the README list the backends for people.
//!
//! # Where the secret lives
//!
//! The entry is named `service`/`profile`:
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

use keyring_core::Entry;

use crate::config::{Keyring, KeyringKind};

impl Keyring {
    /// What `auto` tries, in order, on this platform.
    pub const AUTO: &'static [Keyring] = if cfg!(target_os = "linux") {
        &[Self::SecretService, Self::Keyutils]
    } else if cfg!(target_os = "macos") {
        &[Self::Macos]
    } else if cfg!(target_os = "windows") {
        &[Self::Windows]
    } else {
        &[]
    };

    /// The backends to try, in order, for a configured kind. `None`: memory, as asked.
    pub(super) fn candidates(kind: KeyringKind) -> Option<Vec<Keyring>> {
        match kind {
            KeyringKind::Auto => Some(Self::AUTO.to_vec()),
            KeyringKind::One(keyring) => Some(vec![keyring]),
            KeyringKind::Memory => None,
        }
    }

    /// What the user should know when the store sits on this backend, logged as a warning.
    pub(super) fn caveat(self) -> Option<&'static str> {
        match self {
            Self::Keyutils => Some(
                "session store: kernel keyutils (no Secret Service); the session survives \
                 restarts of the sidecar but not a reboot",
            ),
            _ => None,
        }
    }

    /// Builds the entry `service`/`profile` in this backend. Blocking (connects to D-Bus).
    /// A backend of another platform is `NotSupportedByStore`.
    pub(super) fn entry(self, service: &str, profile: &str) -> keyring_core::Result<Entry> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_configuration() {
        assert_eq!(Keyring::candidates(KeyringKind::Memory), None);
        assert_eq!(
            Keyring::candidates(KeyringKind::One(Keyring::Keyutils)),
            Some(vec![Keyring::Keyutils])
        );
        assert_eq!(
            Keyring::candidates(KeyringKind::One(Keyring::Macos)),
            Some(vec![Keyring::Macos])
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            Keyring::candidates(KeyringKind::Auto),
            Some(vec![Keyring::SecretService, Keyring::Keyutils])
        );
    }
}
