//! A client for core-sidecar, for the Rust side of a desktop shell (a Tauri app, say).
//!
//! [`Sidecar::spawn`] starts the binary with piped stdin/stdout and speaks JSON-RPC 2.0 over
//! them through jsonrpsee's async client (its request/response matching, timeouts and
//! notification routing, on a transport of newline-delimited lines over the child's pipes).
//! Every method of the contract is a params struct implementing [`Request`], generated from
//! `schema/openrpc.json` (`generated.rs`), so `call` is typed both ways:
//!
//! ```no_run
//! # async fn demo() -> Result<(), core_sidecar_client::Error> {
//! use core_sidecar_client::{AuthGetState, AuthSignInWithPassword, Options, Sidecar};
//!
//! let mut sidecar = Sidecar::spawn(Options::default()).await?;
//! let mut events = sidecar.notifications().expect("taken once");
//! let state = sidecar
//!     .call(&AuthSignInWithPassword {
//!         email: Some("user@example.com".into()),
//!         password: "<password>".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("signed in: {}", state.is_authenticated);
//! let state = sidecar.call(&AuthGetState {}).await?;
//! # let _ = (state, &mut events);
//! sidecar.close().await?;
//! # Ok(()) }
//! ```
//!
//! Errors are typed: [`Error::Call`] carries the code, the [`ErrorKind`] and `data` of the
//! sidecar's answer; a sidecar that exits fails every pending call with [`Error::Exited`].

mod generated;
mod transport;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jsonrpsee::core::client::{ClientT, Error as ClientError, Subscription, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::process::{Child, Command};

pub use generated::*;

/// A method of the contract: its params (this type, serialized as the params object), its
/// name and its result type.
pub trait Request: Serialize {
    const METHOD: &'static str;
    type Response: DeserializeOwned;
}

/// The protocol version this client speaks (`core_version`'s `protocol`).
pub const PROTOCOL: i64 = 1;

/// How to start the sidecar.
#[derive(Debug, Clone)]
pub struct Options {
    /// The binary. Default: the environment variable `CORE_SIDECAR_BIN`, else
    /// `core-sidecar` on the `PATH`. A Tauri app passes the path of its bundled
    /// `externalBin`.
    pub path: Option<PathBuf>,
    pub args: Vec<String>,
    /// Added to the inherited environment (`CORE_SIDECAR_BACKEND_URL`, ...).
    pub env: Vec<(String, String)>,
    /// Where the sidecar's logs go. Default: inherited (the shell's own stderr).
    pub stderr: StderrTo,
    /// How long a call may take before it fails with [`Error::Timeout`]. Default 120 s: a
    /// refresh retried through an outage takes up to about 30 s, plus the call itself.
    pub request_timeout: Duration,
    /// How long [`Sidecar::close`] waits for the process to exit after closing its stdin
    /// before killing it. Default 10 s (the sidecar drains for at most 5 s).
    pub exit_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            path: None,
            args: Vec::new(),
            env: Vec::new(),
            stderr: StderrTo::Inherit,
            request_timeout: Duration::from_secs(120),
            exit_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the sidecar's stderr (its logs) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrTo {
    Inherit,
    Null,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sidecar answered with an error.
    #[error("{method}: {message} ({code})")]
    Call {
        method: &'static str,
        code: i32,
        /// `data.kind`; `None` for the protocol errors (-32700, -32600, -32601).
        kind: Option<ErrorKind>,
        message: String,
        /// The whole `data` member (`retryable`, `reason`, `status`, `field`, ...).
        data: Option<Value>,
    },
    /// The sidecar exited (or closed its stdout) before answering.
    #[error("the sidecar exited")]
    Exited,
    #[error("{0}: no answer within the request timeout")]
    Timeout(&'static str),
    #[error("cannot start the sidecar ({path}): {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    /// An answer this client cannot read (a sidecar of another protocol version?).
    #[error("unexpected answer: {0}")]
    Protocol(String),
    #[error("waiting for the sidecar to exit: {0}")]
    Wait(std::io::Error),
}

impl Error {
    /// Whether the same call may succeed later (`data.retryable`).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Call { data, .. } => data
                .as_ref()
                .and_then(|d| d["retryable"].as_bool())
                .unwrap_or(false),
            Self::Timeout(_) => true,
            _ => false,
        }
    }

    /// `data.reason` (`auth_expired`, `auth_failed`).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Call { data, .. } => data.as_ref()?.get("reason")?.as_str(),
            _ => None,
        }
    }
}

/// A running sidecar. Dropping it closes its stdin (the sidecar then drains and exits) and
/// kills it if it is still running when the `Child` is dropped.
pub struct Sidecar {
    client: jsonrpsee::core::client::Client,
    child: Child,
    notifications: Option<Subscription<AuthStateChanged>>,
    exit_timeout: Duration,
}

impl Sidecar {
    /// Starts the sidecar and subscribes to its notifications before reading any of its
    /// output, so `INITIAL_SESSION` is never missed.
    pub async fn spawn(options: Options) -> Result<Self, Error> {
        let path = options
            .path
            .clone()
            .or_else(|| std::env::var_os("CORE_SIDECAR_BIN").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("core-sidecar"));
        let mut command = Command::new(&path);
        command
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match options.stderr {
                StderrTo::Inherit => Stdio::inherit(),
                StderrTo::Null => Stdio::null(),
            })
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            path: path.display().to_string(),
            source,
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (sender, receiver, open) = transport::pipes(stdin, stdout);
        let client = jsonrpsee::core::client::ClientBuilder::default()
            .request_timeout(options.request_timeout)
            .build_with_tokio(sender, receiver);
        let notifications = client
            .subscribe_to_method::<AuthStateChanged>("auth_state_changed")
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        open.open();
        Ok(Self {
            client,
            child,
            notifications: Some(notifications),
            exit_timeout: options.exit_timeout,
        })
    }

    /// Calls the method `R` names with `request` as its params.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Response, Error> {
        let params = to_params(request)?;
        self.client
            .request::<R::Response, _>(R::METHOD, params)
            .await
            .map_err(|e| call_error(R::METHOD, e))
    }

    /// Every `auth_state_changed`, in order, starting with `INITIAL_SESSION`. Taken once.
    /// Read it (or drop it): when too many pile up unread, the stream ends.
    pub fn notifications(
        &mut self,
    ) -> Option<impl Stream<Item = AuthStateChanged> + Unpin + Send + use<>> {
        let subscription = self.notifications.take()?;
        Some(subscription.filter_map(|item| futures::future::ready(item.ok())))
    }

    /// The process id, for the shell's own supervision.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes the sidecar's stdin and waits for it to exit (it finishes the calls in flight
    /// first); kills it if it has not exited within the exit timeout.
    pub async fn close(self) -> Result<ExitStatus, Error> {
        let Self {
            client,
            mut child,
            notifications,
            exit_timeout,
        } = self;
        drop(notifications);
        // The transport's sender owns the child's stdin: dropping the client closes it.
        drop(client);
        match tokio::time::timeout(exit_timeout, child.wait()).await {
            Ok(status) => status.map_err(Error::Wait),
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await.map_err(Error::Wait)
            }
        }
    }
}

fn to_params(request: &impl Serialize) -> Result<ObjectParams, Error> {
    let value = serde_json::to_value(request).map_err(|e| Error::Protocol(e.to_string()))?;
    let mut params = ObjectParams::new();
    if let Value::Object(members) = value {
        for (key, value) in members {
            params
                .insert(&key, value)
                .map_err(|e| Error::Protocol(e.to_string()))?;
        }
    }
    Ok(params)
}

fn call_error(method: &'static str, error: ClientError) -> Error {
    match error {
        ClientError::Call(object) => {
            let data: Option<Value> = object
                .data()
                .and_then(|raw| serde_json::from_str(raw.get()).ok());
            let kind = data
                .as_ref()
                .and_then(|d| serde_json::from_value(d["kind"].clone()).ok());
            Error::Call {
                method,
                code: object.code(),
                kind,
                message: object.message().to_string(),
                data,
            }
        }
        ClientError::RestartNeeded(_) => Error::Exited,
        ClientError::RequestTimeout => Error::Timeout(method),
        other => Error::Protocol(other.to_string()),
    }
}
