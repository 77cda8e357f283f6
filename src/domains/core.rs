//! Public methods about the sidecar itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::{PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS};

/// Always `{"pong": true}`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Pong {
    #[schemars(extend("const" = true))]
    pub pong: bool,
}

pub fn ping() -> Pong {
    Pong { pong: true }
}

/// The sidecar's name and version, and the protocol version of this method set.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Version {
    /// The crate name, `core-sidecar`.
    #[schemars(length(min = 1))]
    pub name: &'static str,
    /// The sidecar's semver version.
    #[schemars(length(min = 1))]
    pub version: &'static str,
    /// The protocol version of this method set; bumped on breaking changes.
    #[schemars(extend("const" = PROTOCOL_VERSION))]
    pub protocol: u32,
}

pub fn version() -> Version {
    Version {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        protocol: PROTOCOL_VERSION,
    }
}

/// The longest `clientInfo.name` or `clientInfo.version`, in characters.
pub const CLIENT_INFO_MAX_CHARS: usize = 256;

/// `core_initialize` params. Members this sidecar does not know are ignored, so the
/// handshake of a newer shell still works.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(example = serde_json::json!({"protocolVersion": 1, "clientInfo": {"name": "my-shell", "version": "1.4.0"}}))]
pub struct InitializeParams {
    /// The protocol version the shell speaks. One the sidecar does not speak is -32602 with
    /// `data.supported`, the versions it does.
    pub protocol_version: i64,
    /// Who is calling, for the sidecar's logs.
    #[serde(default)]
    pub client_info: Option<ClientInfo>,
}

/// The shell's name and version.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ClientInfo {
    /// The shell's name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The shell's version.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub version: Option<String>,
}

/// What the sidecar is and can do: the answer to the handshake.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Initialized {
    /// The protocol version both sides speak from now on: the one the shell asked for.
    #[schemars(range(min = 1))]
    pub protocol_version: u32,
    pub server_info: ServerInfo,
    pub capabilities: Capabilities,
    pub keyring: KeyringInfo,
    pub configured: Configured,
}

/// The sidecar's name and version.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ServerInfo {
    /// `core-sidecar`.
    #[schemars(length(min = 1))]
    pub name: &'static str,
    /// The sidecar's semver version.
    #[schemars(length(min = 1))]
    pub version: &'static str,
}

/// What the shell may use.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Capabilities {
    /// Every method of the contract (what `rpc.discover` lists), in its order.
    pub methods: Vec<&'static str>,
    /// Every notification the sidecar sends.
    pub notifications: Vec<&'static str>,
    /// `$/cancelRequest` ends a pending request with -32800 `cancelled`.
    #[schemars(extend("const" = true))]
    pub cancellation: bool,
}

/// Where the session is kept.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KeyringInfo {
    /// The keyring in use: `secret-service`, `keyutils`, `macos`, `windows` or `memory` (a
    /// named keyring that does not answer yet keeps its name, with `persistent: false`).
    #[schemars(length(min = 1))]
    pub backend: &'static str,
    /// False when the session lives only in this process's memory (as in `AuthState`).
    pub persistent: bool,
}

/// Which upstreams are configured.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Configured {
    /// `CORE_SIDECAR_BACKEND_URL` is set: gated methods can work.
    pub backend: bool,
    /// `CORE_SIDECAR_AUTH_URL` is set: refresh, `auth_get_user` and revoking sign-outs can
    /// work.
    pub auth: bool,
}

/// `core_initialize`: checks the shell's protocol version and says what this sidecar is.
/// `capabilities`, `keyring` and `configured` come from the caller, which knows them.
pub fn initialize(
    params: InitializeParams,
    capabilities: Capabilities,
    keyring: KeyringInfo,
    configured: Configured,
) -> Result<Initialized> {
    let protocol_version = u32::try_from(params.protocol_version)
        .ok()
        .filter(|version| SUPPORTED_PROTOCOL_VERSIONS.contains(version))
        .ok_or_else(|| {
            Error::unsupported_protocol(
                "protocolVersion",
                params.protocol_version,
                SUPPORTED_PROTOCOL_VERSIONS,
            )
        })?;
    if let Some(client) = &params.client_info {
        for (field, value) in [
            ("clientInfo.name", Some(&client.name)),
            ("clientInfo.version", client.version.as_ref()),
        ] {
            let chars = value.map_or(0, |v| v.chars().count());
            if chars > CLIENT_INFO_MAX_CHARS {
                return Err(Error::invalid_params(
                    field,
                    format!("longer than {CLIENT_INFO_MAX_CHARS} characters"),
                ));
            }
        }
        if client.name.is_empty() {
            return Err(Error::invalid_params(
                "clientInfo.name",
                "must not be empty",
            ));
        }
        tracing::info!(
            client = %client.name,
            client_version = client.version.as_deref().unwrap_or("unknown"),
            protocol = protocol_version,
            "handshake"
        );
    }
    Ok(Initialized {
        protocol_version,
        server_info: ServerInfo {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        },
        capabilities,
        keyring,
        configured,
    })
}

/// `core_test_panic` params (test hook, only with `CORE_SIDECAR_TEST_HOOKS=1`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PanicParams {
    #[serde(default)]
    pub message: String,
}

/// `core_test_sleep` params (test hook, only with `CORE_SIDECAR_TEST_HOOKS=1`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SleepParams {
    pub ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: serde_json::Value) -> InitializeParams {
        serde_json::from_value(value).expect("params")
    }

    fn answer(value: serde_json::Value) -> Result<Initialized> {
        initialize(
            params(value),
            Capabilities {
                methods: vec!["core_ping"],
                notifications: vec!["auth_state_changed"],
                cancellation: true,
            },
            KeyringInfo {
                backend: "memory",
                persistent: false,
            },
            Configured {
                backend: false,
                auth: true,
            },
        )
    }

    #[test]
    fn a_supported_version_is_answered_with_itself() {
        let done = answer(serde_json::json!({"protocolVersion": 1, "later": true})).unwrap();
        assert_eq!(done.protocol_version, PROTOCOL_VERSION);
        assert_eq!(done.server_info.name, "core-sidecar");
    }

    #[test]
    fn an_unsupported_version_lists_the_supported_ones() {
        for version in [0, 2, -1, i64::MAX] {
            let error = answer(serde_json::json!({"protocolVersion": version})).unwrap_err();
            assert_eq!(error.data()["field"], "protocolVersion");
            assert_eq!(error.data()["supported"], serde_json::json!([1]));
        }
    }

    #[test]
    fn client_info_is_bounded() {
        let long = "x".repeat(CLIENT_INFO_MAX_CHARS + 1);
        let error = answer(serde_json::json!({"protocolVersion": 1, "clientInfo": {"name": long}}))
            .unwrap_err();
        assert_eq!(error.data()["field"], "clientInfo.name");
        let error = answer(serde_json::json!({"protocolVersion": 1, "clientInfo": {"name": ""}}))
            .unwrap_err();
        assert_eq!(error.data()["field"], "clientInfo.name");
    }
}
