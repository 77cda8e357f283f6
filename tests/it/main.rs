//! The integration test crate: spawns the real `core-sidecar` binary and talks to it over
//! its pipes, with fake servers on 127.0.0.1:0.
//!
//! - `harness`: spawn the binary, send lines, read responses and notifications, signals,
//!   and the end-of-test check that no token reached stdout or stderr.
//! - `fake_sentry`: an HTTP server that stores Sentry envelopes.
//! - `architecture`: ARCHITECTURE.md's import rules, read from src/, and no import cycle.
//! - `wire`: docs/protocol.md's wire rules (JSON-RPC framing, errors, ids, shutdown), the
//!   handshake and `--version`.
//! - `cancel`: `$/cancelRequest` ends a pending request (-32800) in time, drops its work (a
//!   silent backend sees its connection closed), frees its slot, one batch member only.
//! - `telemetry`: what reaches Sentry, scrubbed and deduplicated.
//! - `fake_backend`: a fake product backend (composio, `/auth/me`) with canned failures.
//! - `backend`: the gated domain methods, their happy paths and every error mapping.
//! - `schema`: schema/openrpc.json, generated from the Rust types and up to date, served
//!   byte for byte by `rpc.discover`; every result, notification and error the binary sends
//!   validates against its schema (`assert_valid_result`, ...), driven by the document.
//! - `method_table`: the router's registered methods are exactly the documented ones
//!   (builds the app in process).
//! - `fuzz_regressions`: inputs found by `fuzz/`, replayed through the real method table.
//! - `js_client`: the TypeScript client's example (the README's Node snippet) against the binary.
//! - `demo`: scripts/demo.sh's walkthrough (examples/demo.rs + examples/dev_backend.rs).
//! - `gotrue`: a fake GoTrue that rotates refresh tokens and is also the product backend.
//! - `auth_refresh`: refresh, commit guard, `auth_get_user` and `auth_sign_out` against it.
//! - `sign_in`: the sign-in methods (password, sign-up, OTP, magic link, OAuth with PKCE,
//!   recovery, `auth_update_user`) against the fake GoTrue: what it receives, results without
//!   tokens, events, the PKCE verifier's life in the keyring, `auth_failed` kept from Sentry.
//! - `differential`: the binary and `@supabase/auth-js` (tests/differential) side by side on
//!   the same fake GoTrue scenarios; equal, or a difference documented in docs/protocol.md.
//! - `hardening`: cleartext URLs refused, the process non-dumpable, no value echoed in errors.
//! - `faults`: injected faults (hanging, cut-off and oversized backend answers, a hanging or
//!   refusing keyring, closed stdout, stdin EOF and SIGTERM with requests in flight).
//! - `hostile`: upstreams that redirect, send gigabytes or gzip bombs, or hold thousands of
//!   requests: nothing followed, bodies capped, memory small, connections bounded.
//! - `ownership`: two sidecars on one Secret Service entry, and a frozen or locked one (each
//!   test runs a private gnome-keyring): no token spent twice, nothing lost or undone.
//! - `load`: 10,000 mixed requests with 256 in flight; none lost, memory back near idle.
//! - `backpressure`: a silent backend never delays local calls; past the in-flight bound
//!   (batch members each) new requests are refused; exits on time with stdout unread or closed.
//! - `bench_smoke`: the benchmark programs behind scripts/bench.sh, in their quick modes.
//! - `logs`: `--log-format json` (every stderr line a JSON object), the start-up line, the
//!   warn line of a failed upstream call, the Sentry tags of a failed call.
//!
//! `CORE_SIDECAR_TEST_BIN=<path>` runs every test against that binary instead of the one cargo
//! built (e.g. the shipped `dist/core-sidecar-<target-triple>`; see `harness::bin`).

mod architecture;
mod auth_refresh;
mod backend;
mod backpressure;
mod bench_smoke;
mod cancel;
mod demo;
mod differential;
mod fake_backend;
mod fake_sentry;
mod faults;
mod fuzz_regressions;
mod gotrue;
mod hardening;
mod harness;
mod hostile;
mod hygiene;
mod js_client;
mod load;
mod logs;
mod method_table;
#[cfg(target_os = "linux")]
mod ownership;
mod schema;
mod session;
mod sign_in;
mod telemetry;
mod wire;
