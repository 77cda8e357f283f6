//! core-sidecar: a JSON-RPC 2.0 sidecar over stdio for a desktop app's shell.
//!
//! Module map, from the wire inwards:
//!
//! - [`rpc`]: the stdio transport. NDJSON framing over any reader/writer, batches,
//!   notifications, exact id echo, backpressure, panics contained, shutdown. Knows nothing
//!   about sessions or domains: it dispatches to a [`jsonrpsee`] method table.
//! - [`router`]: the method table. Every method is registered as public or gated; gated
//!   handlers can only be reached through the session gate.
//! - [`session`]: the session (cache + OS keyring store), the gate that hands domains an
//!   authenticated backend client, and the refresh against the auth server.
//! - [`backend`]: the only HTTP client; maps responses to [`error::Error`] kinds.
//! - [`domains`]: one file per domain (`core`, `auth`, `composio`, `user`); plain async
//!   functions over typed params, unaware of JSON-RPC.
//! - [`error`]: the error enum, its JSON-RPC codes and what reaches Sentry.
//! - [`telemetry`]: tracing to stderr and Sentry with scrubbing and dedupe.
//! - [`config`]: flags and environment variables.

// stdout is the wire and stderr carries tracing's logs: nothing in the library prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod app;
pub mod backend;
pub mod config;
pub mod domains;
pub mod error;
pub mod router;
pub mod rpc;
pub mod schema;
pub mod session;
pub mod telemetry;
