//! Tracing to stderr and Sentry (scrubbed, deduplicated). Placeholder until filled in.

use crate::error::Error;

/// Sends a reportable error to Sentry (scrubbed, at most once per fingerprint per 10 min).
pub fn report(_error: &Error) {}
