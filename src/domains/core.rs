//! Public methods about the sidecar itself.

use serde::Serialize;

/// Protocol version of this method set; bumped on breaking changes.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pong {
    pub pong: bool,
}

pub fn ping() -> Pong {
    Pong { pong: true }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Version {
    pub name: &'static str,
    pub version: &'static str,
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
