//! The `core-sidecar` binary: parse the config, start telemetry, run, exit 0 on a clean stop.

// stdout is the wire (clap's --help/--version are the only other output, before any request).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use core_sidecar::config::Config;

fn main() -> ExitCode {
    // A setting that does not parse ends the process here (exit code 2, clap's message).
    let config = Config::parse();
    let telemetry = core_sidecar::telemetry::init(&config);
    let result = core_sidecar::app::run(config, telemetry.telemetry().clone());
    telemetry.flush(Duration::from_secs(2));
    match result {
        Ok(stop) => {
            tracing::info!(?stop, "stopped");
            // The reader thread may be blocked in read(2) on a stdin nobody closes (signal
            // case); exiting the process ends it.
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
