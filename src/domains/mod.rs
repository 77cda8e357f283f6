//! One file per domain. Domain functions take typed params and an authenticated backend
//! client (for gated domains) and return typed results; they never see JSON-RPC.

pub mod composio;
pub mod user;
