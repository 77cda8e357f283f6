//! One module per domain. Domain functions take typed params and an authenticated backend
//! client (for gated domains) and return typed results; they never see JSON-RPC.

pub mod auth;
pub mod composio;
pub mod core;
pub mod sign_in;
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

/// Whether `value` serializes to at most `limit` bytes of compact JSON. Writing stops at the
/// first byte past the budget, so a huge value costs no more than the limit.
pub(crate) fn fits_serialized(value: &impl serde::Serialize, limit: usize) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(limit), value).is_ok()
}
