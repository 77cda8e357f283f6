//! The method table. Every method is registered here, as exactly one of:
//!
//! - **public**: runs without a session (`core_*`, `auth_*`, `rpc.discover`);
//! - **gated**: runs through the session gate, which hands the domain function an
//!   authenticated backend client. A gated handler has no other way to get one.
//!
//! Adding a domain is one file under `src/domains/` and one `gated(...)` line per method.

use std::future::Future;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::types::Params;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::BackendClient;
use crate::backend::auth_server::AuthServer;
use crate::domains::{NoParams, auth, composio, core, user};
use crate::error::{Error, Result};
use crate::session::Sessions;
use crate::session::gate::Gate;
use crate::session::refresh::Refresher;

/// What every handler can reach.
pub struct App {
    pub sessions: Arc<Sessions>,
    pub gate: Gate,
    /// The auth server, when `CORE_SIDECAR_AUTH_URL` is set.
    pub auth: Option<AuthServer>,
    pub refresher: Arc<Refresher>,
    /// Enables `core_test_*` methods, for the integration tests only.
    pub test_hooks: bool,
}

/// Builds the method table.
pub fn methods(app: App) -> RpcModule<App> {
    let test_hooks = app.test_hooks;
    let mut m = RpcModule::new(app);

    // Answered inline on the reader thread: must never block.
    public_sync(&mut m, "core_ping", |_, _: NoParams| Ok(core::ping()));
    public_sync(&mut m, "core_version", |_, _: NoParams| Ok(core::version()));
    public_sync(&mut m, "rpc.discover", |_, _: NoParams| {
        Ok(crate::schema::openrpc().clone())
    });

    public(&mut m, "auth_store_session", |app, p| async move {
        auth::store_session(&app.sessions, p).await
    });
    public(&mut m, "auth_get_state", |app, _: NoParams| async move {
        Ok(auth::get_state(&app.sessions).await)
    });
    public(
        &mut m,
        "auth_clear_session",
        |app, _: NoParams| async move { auth::clear_session(&app.sessions).await },
    );
    public(&mut m, "auth_sign_out", |app, p| async move {
        auth::sign_out(&app.sessions, app.auth.as_ref(), p).await
    });
    public(
        &mut m,
        "auth_refresh_session",
        |app, _: NoParams| async move { auth::refresh_session(&app.sessions, &app.refresher).await },
    );
    public(&mut m, "auth_get_user", |app, _: NoParams| async move {
        auth::get_user(&app.sessions, app.auth.as_ref(), &app.refresher).await
    });

    gated(&mut m, "composio_list_toolkits", composio::list_toolkits);
    gated(
        &mut m,
        "composio_list_connections",
        composio::list_connections,
    );
    gated(&mut m, "composio_authorize", composio::authorize);
    gated(
        &mut m,
        "composio_delete_connection",
        composio::delete_connection,
    );
    gated(&mut m, "user_get_profile", user::get_profile);

    if test_hooks {
        public_sync(
            &mut m,
            "core_test_panic",
            |_, p: core::PanicParams| -> Result<()> { panic!("test hook panic: {}", p.message) },
        );
        public(
            &mut m,
            "core_test_sleep",
            |_, p: core::SleepParams| async move {
                tokio::time::sleep(std::time::Duration::from_millis(p.ms)).await;
                Ok(core::ping())
            },
        );
    }
    m
}

/// The names of every registered method (test hooks included when enabled).
pub fn method_names(module: &RpcModule<App>) -> Vec<&'static str> {
    module.method_names().collect()
}

fn public_sync<P, R>(m: &mut RpcModule<App>, name: &'static str, f: fn(&App, P) -> Result<R>)
where
    P: DeserializeOwned + 'static,
    R: Serialize + Clone + 'static,
{
    m.register_method(name, move |params, app, _| f(app, parse_params(&params)?))
        .expect("method names are unique");
}

fn public<P, R, F, Fut>(m: &mut RpcModule<App>, name: &'static str, f: F)
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Clone + Send + 'static,
    F: Fn(Arc<App>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    m.register_async_method(name, move |params, app, _| {
        let f = f.clone();
        async move { f(app, parse_params(&params)?).await }
    })
    .expect("method names are unique");
}

fn gated<P, R, F, Fut>(m: &mut RpcModule<App>, name: &'static str, f: F)
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: Serialize + Clone + Send + 'static,
    F: Fn(BackendClient, P) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    m.register_async_method(name, move |params, app, _| async move {
        let params: P = parse_params(&params)?;
        app.gate.call(|api| f(api, params.clone())).await
    })
    .expect("method names are unique");
}

/// Params are by name. Absent params and `[]` mean "none"; errors name the field.
fn parse_params<P: DeserializeOwned>(params: &Params<'_>) -> Result<P> {
    let raw = match params.as_str().map(str::trim) {
        None | Some("[]") => "{}",
        Some(raw) if raw.starts_with('[') => {
            return Err(Error::invalid_params(
                "params",
                "params must be an object of named params",
            ));
        }
        Some(raw) => raw,
    };
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let message = crate::telemetry::scrub(&without_position(e.inner()));
        let path = e.path().to_string();
        let field = if path == "." {
            missing_or_unknown_field(&message).unwrap_or_else(|| "params".into())
        } else {
            path
        };
        Error::invalid_params(field, message)
    })
}

/// serde_json's message without its " at line 1 column 2" suffix, meaningless to the shell.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message,
    }
}

/// serde names a missing or unknown field only in its message: "missing field `x`".
fn missing_or_unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}
