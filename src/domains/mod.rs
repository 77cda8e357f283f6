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

/// Refuses a free-form param (an object, a map) over [`auth::MAX_FREE_FORM_BYTES`] as compact
/// JSON, naming it, never quoting it: the one check for every domain's free-form params.
pub(crate) fn within_free_form_limit(
    field: &str,
    value: &impl serde::Serialize,
) -> crate::error::Result<()> {
    let limit = auth::MAX_FREE_FORM_BYTES;
    if fits_serialized(value, limit) {
        return Ok(());
    }
    Err(crate::error::Error::invalid_params(
        field,
        format!("`{field}` is larger than the limit of {limit} bytes serialized as JSON (64 KiB)"),
    ))
}

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
