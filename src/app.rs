//! Wiring: builds the session, backend, gate and method table from the config, runs the
//! transport on stdin/stdout, and shuts down cleanly (docs/protocol.md, "Shutdown").

use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::backend::Backend;
use crate::backend::auth_server::{AuthServer, TokenEndpoint};
use crate::config::Config;
use crate::error::Error;
use crate::router::{self, App};
use crate::rpc::{self, InFlight, Limits, Outbox, ReadEnd};
use crate::session::gate::Gate;
use crate::session::refresh::Refresher;
use crate::session::{EventSink, Sessions, StoreOptions};
use crate::telemetry::Telemetry;

/// Why the sidecar could not start. Not a wire error: nothing has been read yet, and
/// `main` logs it and exits non-zero. (A bad setting never gets this far: the configuration
/// is parsed, and its errors reported by clap, before anything runs.)
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    #[error("cannot set up the backend client")]
    Backend(#[source] Error),
    #[error("cannot start the reader thread")]
    ReaderThread(#[source] io::Error),
}

/// Why the sidecar stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    Read(ReadEnd),
    Signal(&'static str),
}

/// Runs the sidecar on this process's stdin and stdout until EOF or a signal.
pub fn run(config: Config, telemetry: Telemetry) -> Result<Stop, StartupError> {
    run_with(config, telemetry, raw_stdin(), raw_stdout())
}

/// Runs the sidecar on any input and output.
pub fn run_with(
    config: Config,
    telemetry: Telemetry,
    input: impl Read + Send + 'static,
    output: impl Write + Send + 'static,
) -> Result<Stop, StartupError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("core-sidecar-worker")
        .build()
        .map_err(StartupError::Runtime)?;
    let outbox = Outbox::new(output);
    let app = build_app(&config, &outbox, telemetry)?;
    let sessions = app.sessions.clone();
    let refresher = app.refresher.clone();
    let module = router::methods(app);

    // Load the stored session in the background: the first request must not wait on D-Bus.
    runtime.spawn(async move { sessions.ready().await });
    {
        let _enter = runtime.enter();
        refresher.spawn_ticker();
    }

    // Listen for signals before the first request is read: once the sidecar has answered
    // anything, SIGTERM/SIGINT mean a clean shutdown, never the default death.
    let signals = {
        let _enter = runtime.enter();
        ShutdownSignals::listen()
    };

    let limits = Limits {
        max_in_flight: config.max_in_flight,
        max_line_bytes: config.max_line_bytes,
    };
    let in_flight = InFlight::new(limits.max_in_flight);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let outbox = outbox.clone();
        let in_flight = in_flight.clone();
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("core-sidecar-reader".into())
            .spawn(move || {
                let end = rpc::serve_blocking(input, &outbox, module, limits, &in_flight, &handle);
                let _ = done_tx.send(end);
            })
            .map_err(StartupError::ReaderThread)?;
    }

    let stop = runtime.block_on(async {
        let stop = tokio::select! {
            end = done_rx => Stop::Read(end.unwrap_or(ReadEnd::Eof)),
            signal = signals.recv() => Stop::Signal(signal),
        };
        tracing::debug!(?stop, "shutting down");
        if !in_flight.drain(config.shutdown_timeout()).await {
            tracing::warn!("requests still in flight at shutdown; leaving them unanswered");
        }
        stop
    });
    outbox.flush();
    // Keyring calls may still block a thread of the pool; do not wait for them.
    runtime.shutdown_background();
    Ok(stop)
}

pub fn build_app(
    config: &Config,
    outbox: &Outbox,
    telemetry: Telemetry,
) -> Result<App, StartupError> {
    let events: EventSink = {
        let outbox = outbox.clone();
        Arc::new(move |change| outbox.notify("auth_state_changed", &change))
    };
    let sessions = Sessions::new(
        StoreOptions {
            kind: config.keyring,
            service: config.keyring_service.clone(),
            profile: config.profile.clone(),
            timeout: config.keyring_timeout(),
            fault: config.keyring_fault,
        },
        events,
        telemetry.clone(),
    );
    let backend = Backend::new(config.backend_url.clone(), config.http_timeout())
        .map_err(StartupError::Backend)?;
    let auth = config.auth_url.as_ref().map(|url| {
        AuthServer::new(
            backend.http().clone(),
            url,
            config.auth_api_key.as_deref(),
            config.http_timeout(),
        )
    });
    let endpoint = auth
        .clone()
        .map(|server| Arc::new(server) as Arc<dyn TokenEndpoint>);
    let refresher = Refresher::new(sessions.clone(), endpoint, telemetry.clone());
    Ok(App {
        gate: Gate::new(sessions.clone(), backend, refresher.clone()),
        sessions,
        auth,
        refresher,
        test_hooks: config.test_hooks,
        telemetry,
    })
}

/// SIGTERM and SIGINT (Ctrl-C elsewhere), registered once at start.
struct ShutdownSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    /// Must run inside the runtime.
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => {
                    tracing::warn!("cannot listen for signals");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn recv(self) -> &'static str {
        #[cfg(unix)]
        {
            let Some((mut term, mut int)) = self.streams else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

/// stdin without std's own buffer: the transport buffers, and needs to see what is buffered.
fn raw_stdin() -> Box<dyn Read + Send> {
    match unbuffered(&io::stdin()) {
        Some(file) => Box::new(file),
        None => Box::new(io::stdin()),
    }
}

/// stdout without std's line buffering: the transport's writer batches lines itself.
fn raw_stdout() -> Box<dyn Write + Send> {
    match unbuffered(&io::stdout()) {
        Some(file) => Box::new(file),
        None => Box::new(io::stdout()),
    }
}

/// A duplicate of a standard stream's file descriptor, so dropping it never closes the
/// stream itself. `None` where that is not possible (or not unix).
#[cfg(unix)]
fn unbuffered(stream: &impl std::os::fd::AsFd) -> Option<std::fs::File> {
    stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::fs::File::from)
}

#[cfg(not(unix))]
fn unbuffered<T>(_stream: &T) -> Option<std::fs::File> {
    None
}
