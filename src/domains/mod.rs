//! One file per domain. Domain functions take typed params and an authenticated backend
//! client (for gated domains) and return typed results; they never see JSON-RPC.

pub mod auth;
pub mod composio;
pub mod core;
pub mod user;

use schemars::JsonSchema;
use serde::Deserialize;

/// The params of a method that takes none: `{}` or absent. Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    description = "Takes no params: send `{}`, `[]` or leave `params` out. Unknown params are refused (-32602)."
)]
pub struct NoParams {}
