//! Public methods about the sidecar itself.

use schemars::JsonSchema;
use serde::Serialize;

/// Protocol version of this method set; bumped on breaking changes.
pub const PROTOCOL_VERSION: u32 = 1;

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
