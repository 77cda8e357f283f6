//! core-sidecar: a JSON-RPC 2.0 sidecar over stdio for a desktop app's shell.
//!
//! Module map, from the wire inwards (ARCHITECTURE.md has a paragraph and the invariants of
//! each; docs/protocol.md is the contract):
//!
//! - [`app`]: wiring. Builds everything from the config, runs the transport on
//!   stdin/stdout, shuts down on EOF or a signal.
//! - [`rpc`]: the stdio transport. NDJSON framing over any reader/writer, batches,
//!   notifications, exact id echo, backpressure, panics contained. Knows nothing about
//!   sessions or domains: it dispatches to a method table of its own ([`rpc::Methods`]).
//! - [`router`]: the method table. Every method is registered once, as public or gated, with
//!   its summary; gated handlers can only be reached through the session gate. `to_wire`
//!   is the one place an [`error::Error`] becomes a JSON-RPC error.
//! - [`schema`]: the OpenRPC document (`rpc.discover`, schema/openrpc.json), generated from
//!   the method table and the Rust types.
//! - [`session`]: the session (cache + OS keyring store), the gate that decides "fresh or
//!   refresh first" and ends a session found gone, and the refresh against the auth server.
//! - [`domains`]: one module per domain (`core`, `auth`, `composio`, `user`); plain async
//!   functions over typed params and results, unaware of JSON-RPC and of the keyring.
//! - [`backend`]: the only HTTP client; maps every upstream answer to an [`error::Error`].
//! - [`error`]: the error enum, its kinds, codes and `data`. Transport-free, a leaf.
//! - [`telemetry`]: tracing to stderr and Sentry; the one reporting policy (what reaches
//!   Sentry, deduplicated), as a handle that owns its state.
//! - [`scrub`]: redaction of tokens by shape and by value. A leaf.
//! - [`config`]: every flag and environment variable, typed at the edge.
//! - [`hardening`]: the process made non-dumpable / undebuggable at start, before any token
//!   exists. A leaf.

// stdout is the wire and stderr carries tracing's logs: nothing in the library prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The version of the protocol, the contract of docs/protocol.md ("Versioning" says what
/// bumps it). The one source of `core_version`'s `protocol`, `core_initialize` and
/// `--version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this sidecar speaks (`core_initialize` accepts these).
pub const SUPPORTED_PROTOCOL_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

pub mod app;
pub mod backend;
pub mod config;
pub mod domains;
pub mod error;
pub mod hardening;
pub mod router;
pub mod rpc;
pub mod schema;
pub mod scrub;
pub mod session;
pub mod telemetry;
