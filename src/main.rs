//! The `core-sidecar` binary: harden the process, parse the config, start telemetry, run,
//! exit 0 on a clean stop.

// stdout is the wire (clap's --help/--version are the only other output, before any request).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use core_sidecar::config::Config;

// mimalloc instead of the system allocator: a gated call allocates a few hundred times
// (request, headers, the answer's JSON); glibc malloc took ~19% of its instructions, and this
// cut the call's p50 by ~3% (scripts/bench.sh, pinned). Built with `no_thp`: with
// transparent huge pages its arenas took idle RSS from 10 MB to 19 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First, before anything can hold a token: no core dumps, no same-user debugger. Logged
    // below, once tracing is up.
    let hardening = core_sidecar::hardening::harden();
    // A setting that does not parse, or a cleartext URL to another host, ends the process
    // here (exit code 2, clap's message).
    let config = Config::load();
    let telemetry = core_sidecar::telemetry::init(&config);
    core_sidecar::telemetry::log_start(
        &config,
        core_sidecar::domains::core::PROTOCOL_VERSION,
        telemetry.sentry_enabled(),
    );
    hardening.log();
    for (setting, url) in config.cleartext_urls() {
        tracing::warn!(
            "{setting} is {url}: plain http to a host that is not this machine, allowed by \
             --allow-insecure-http (CORE_SIDECAR_ALLOW_INSECURE_HTTP); the session's tokens travel in clear text (development only)",
            url = url.shown()
        );
    }
    let result = core_sidecar::app::run(config, telemetry.telemetry().clone());
    telemetry.flush(Duration::from_secs(2));
    match result {
        Ok(stop) => {
            tracing::info!(?stop, "stopped");
            // A reader thread (stdin that is not a pipe or a socket) may be blocked in read(2)
            // on a stdin nobody closes (signal case); exiting the process ends it.
            std::process::exit(0)
        }
        Err(e) => {
            let mut error = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                error = format!("{error}: {inner}");
                cause = inner.source();
            }
            tracing::error!(%error, "core-sidecar failed to start");
            ExitCode::FAILURE
        }
    }
}
