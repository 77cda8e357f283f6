//! Wiring: builds the session, backend, gate and method table from the config, runs the
//! transport on stdin/stdout on one current-thread runtime, and shuts down cleanly
//! (docs/protocol.md, "Shutdown").

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::backend::Backend;
use crate::backend::auth_server::{AuthServer, TokenEndpoint};
use crate::config::Config;
use crate::error::Error;
use crate::router::{self, App};
use crate::rpc::{self, Dispatcher, InFlight, Input, Limits, Outbox, ReadEnd};
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
    /// The reader stopped (EOF, a read error), or stdout was found closed (by a failed write
    /// or the hang-up watcher: `ReadEnd::OutputClosed`).
    Read(ReadEnd),
    /// The shell closed stdin, as the hang-up watcher saw it (the reader may be held by a full
    /// stdout and never get to the EOF).
    InputClosed,
    Signal(&'static str),
}

/// The longest the final write of stdout may take once the drain is over: a shell that does
/// not read stdout must not hold the exit (docs/protocol.md, "Shutdown").
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the sidecar on this process's stdin and stdout until EOF, a signal, or stdout closed.
/// stdin and stdout are read and written on the runtime's one thread when they are pipes or
/// sockets (Linux, macOS), by helper threads otherwise (`rpc::stdio`).
pub fn run(config: Config, telemetry: Telemetry) -> Result<Stop, StartupError> {
    let runtime = runtime()?;
    let stdio = {
        let _enter = runtime.enter();
        rpc::stdio::open().map_err(StartupError::ReaderThread)?
    };
    let stop = serve(runtime, config, telemetry, stdio.input, stdio.outbox, true);
    // The runtime is gone: nothing reads or writes the descriptors any more.
    drop(stdio.restore);
    stop
}

/// Runs the sidecar on any input and output (read and written by helper threads).
pub fn run_with(
    config: Config,
    telemetry: Telemetry,
    input: impl Read + Send + 'static,
    output: impl Write + Send + 'static,
) -> Result<Stop, StartupError> {
    let runtime = runtime()?;
    let input = Input::from_reader(input).map_err(StartupError::ReaderThread)?;
    serve(
        runtime,
        config,
        telemetry,
        input,
        Outbox::new(output),
        false,
    )
}

/// The one runtime: current-thread, so the reader, the handlers and the HTTP client's
/// connection tasks share one thread and a call never hops between threads.
fn runtime() -> Result<tokio::runtime::Runtime, StartupError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)
}

/// `watch_std_pipes`: `input` and `output` are this process's stdin and stdout, to be watched
/// for hang-up (`rpc::hangup`).
fn serve(
    runtime: tokio::runtime::Runtime,
    config: Config,
    telemetry: Telemetry,
    input: Input,
    outbox: Outbox,
    watch_std_pipes: bool,
) -> Result<Stop, StartupError> {
    let app = build_app(&config, &outbox, telemetry)?;
    let sessions = app.sessions.clone();
    let refresher = app.refresher.clone();
    let reserved_methods = router::reserved_methods();
    let dispatcher = Dispatcher::new(router::methods(app));
    let limits = Limits {
        max_in_flight: config.max_in_flight,
        max_line_bytes: config.max_line_bytes,
        reserved_methods,
    };
    let in_flight = InFlight::new(limits.max_in_flight);

    // Nothing below waits for the reader or for a write to stdout without a deadline: both can
    // be held by a shell that stopped reading our stdout. The exit ends them.
    let stop = runtime.block_on(async {
        // Load the stored session in the background: the first request must not wait on D-Bus.
        tokio::spawn(async move { sessions.ready().await });
        refresher.spawn_ticker_every(config.refresh_tick());
        // Listen for signals before the first request is read: once the sidecar has answered
        // anything, SIGTERM/SIGINT mean a clean shutdown, never the default death.
        let signals = ShutdownSignals::listen();
        let input_closed = Arc::new(Notify::new());
        if watch_std_pipes {
            watch_hangups(&outbox, input_closed.clone());
        }
        let mut reader = tokio::spawn(rpc::serve(
            input,
            outbox.clone(),
            dispatcher,
            limits,
            in_flight.clone(),
        ));

        let stop = tokio::select! {
            // A reader that panicked (a bug) stops like one that met EOF.
            end = &mut reader => Stop::Read(end.unwrap_or(ReadEnd::Eof)),
            signal = signals.recv() => Stop::Signal(signal),
            () = outbox.closed() => Stop::Read(ReadEnd::OutputClosed),
            () = input_closed.notified() => Stop::InputClosed,
        };
        tracing::debug!(?stop, "shutting down");
        if stop == Stop::Read(ReadEnd::OutputClosed) {
            // Nobody can read an answer any more: nothing to wait for.
            return stop;
        }
        let answered = async {
            if stop == Stop::InputClosed {
                // The lines sent before the EOF are read first (the reader gets there unless
                // stdout is full, and then the timeout below ends the wait).
                let _ = (&mut reader).await;
            }
            in_flight.idle().await;
        };
        tokio::select! {
            finished = tokio::time::timeout(config.shutdown_timeout(), answered) => {
                if finished.is_err() {
                    tracing::warn!(
                        pending = in_flight.pending(),
                        "requests still in flight at shutdown; leaving them unanswered"
                    );
                }
            }
            () = outbox.closed() => {}
        }
        if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, outbox.drained())
            .await
            .is_err()
        {
            tracing::warn!("stdout is not being read; exiting with output unwritten");
        }
        stop
    });
    // Keyring calls may still block threads of their own; do not wait for them.
    runtime.shutdown_background();
    Ok(stop)
}

/// Watches this process's stdin and stdout for hang-up (Linux; elsewhere a closed stdout is
/// seen at the next write, and stdin's EOF by the reader).
#[cfg(target_os = "linux")]
fn watch_hangups(outbox: &Outbox, input_closed: Arc<Notify>) {
    use std::os::fd::AsFd;

    use crate::rpc::hangup::{self, Hangup};

    let input = io::stdin().as_fd().try_clone_to_owned().ok();
    let output = io::stdout().as_fd().try_clone_to_owned().ok();
    let outbox = outbox.clone();
    let started = hangup::watch(input, output, move |hangup| match hangup {
        Hangup::Input => input_closed.notify_one(),
        Hangup::Output => outbox.close(),
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot watch stdin and stdout for hang-up");
    }
}

#[cfg(not(target_os = "linux"))]
fn watch_hangups(_outbox: &Outbox, _input_closed: Arc<Notify>) {}

pub fn build_app(
    config: &Config,
    outbox: &Outbox,
    telemetry: Telemetry,
) -> Result<App, StartupError> {
    let events: EventSink = {
        let outbox = outbox.clone();
        Arc::new(move |change| outbox.notify("auth_state_changed", &change))
    };
    // The keyring entry is shared with any other process on it through a lock file and
    // pending sign-out markers (session::lock).
    let place = config
        .lock_dir()
        .zip(config.marker_dir())
        .map(|(lock_dir, marker_dir)| crate::session::lock::Place {
            lock_dir,
            marker_dir,
        });
    let sessions = Sessions::owning(
        StoreOptions {
            kind: config.keyring,
            service: config.keyring_service.clone(),
            profile: config.profile.clone(),
            timeout: config.keyring_timeout(),
            fault: config.keyring_fault,
        },
        place,
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
