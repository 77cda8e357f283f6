//! The method table. Every method is registered here, once, as exactly one of:
//!
//! - **public**: runs without a session (`core_*`, `auth_*`, `rpc.discover`);
//! - **gated**: runs through the session gate, which hands the domain function an
//!   authenticated backend client. A gated handler has no other way to get one.
//!
//! Each registration also says what the contract says about the method: its summary (and a
//! description when there is more to say), its class, and the errors it adds to its class's.
//! The registration helpers capture the params and result types, so the same table yields
//! both the transport's method table ([`methods`]) and the [`MethodSpec`]s the OpenRPC document is
//! generated from ([`method_specs`], [`crate::schema`]).
//!
//! Adding a gated method is a domain function over typed params and result (deriving
//! `Deserialize`/`Serialize` and `schemars::JsonSchema`) and one `t.gated(...)` line here.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::task::Poll;

use futures::FutureExt;
use jsonrpsee_types::ErrorObjectOwned;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backend::BackendClient;
use crate::backend::auth_server::AuthServer;
use crate::domains::{NoParams, auth, composio, core, sign_in, user};
use crate::error::ErrorKind::{
    AuthExpired, AuthFailed, Backend, RateLimited, Storage, Unavailable,
};
use crate::error::{Error, Result};
use crate::rpc::Methods;
use crate::schema::{self, Access, MethodSpec};
use crate::session::Sessions;
use crate::session::gate::Gate;
use crate::session::refresh::Refresher;
use crate::telemetry::{self, Telemetry};

/// What every handler can reach.
pub struct App {
    pub sessions: Arc<Sessions>,
    pub gate: Gate,
    /// The auth server, when `CORE_SIDECAR_AUTH_URL` is set.
    pub auth: Option<AuthServer>,
    pub refresher: Arc<Refresher>,
    /// Enables `core_test_*` methods, for the integration tests only.
    pub test_hooks: bool,
    /// Reports the errors handlers end with (the policy decides which reach Sentry) and
    /// scrubs their messages.
    pub telemetry: Telemetry,
}

/// Every method of the contract, in the order of the OpenRPC document.
fn declare(t: &mut Table<'_>) {
    // Answered inline on the reader thread: must never block.
    t.public_sync(
        "core_ping",
        "Liveness check, answered inline.",
        |_, _: NoParams| Ok(core::ping()),
    );
    t.public_sync(
        "core_version",
        "The sidecar's name, version and protocol version.",
        |_, _: NoParams| Ok(core::version()),
    );
    t.public_sync(
        "rpc.discover",
        "This OpenRPC document.",
        |_, _: NoParams| Ok(schema::Discover(openrpc())),
    );

    // The handshake: optional, waits for the keyring to be open (docs/protocol.md).
    t.public(
        "core_initialize",
        "The handshake: checks the shell's protocol version; says what this sidecar is and can \
         do.",
        |app, p| async move { initialize(&app, p).await },
    )
    .describe(
        "Optional: every other method works without it. Answered once the stored session has \
         been loaded (so after INITIAL_SESSION), since `keyring` is known only then. A \
         `protocolVersion` the sidecar does not speak is -32602 with `data.supported`, the \
         versions it does; a supported one comes back as `protocolVersion`. Unknown params \
         are ignored.",
    );

    t.public(
        "auth_store_session",
        "Stores a session in the OS keyring and emits SIGNED_IN.",
        |app, p| async move { auth::store_session(&app.sessions, p).await },
    )
    .can_fail_with(&[Storage])
    .describe(
        "Replaces any stored session. Emits `auth_state_changed` SIGNED_IN, then returns the \
         new state. When no keyring works the session is kept in memory (`persistent: false`).",
    );
    t.public(
        "auth_get_state",
        "The session's state: signed in or not, user, expiry. Never a token.",
        |app, _: NoParams| async move { Ok(auth::get_state(&app.sessions).await) },
    );
    t.public(
        "auth_refresh_session",
        "Refreshes the session against the auth server now.",
        |app, _: NoParams| async move { auth::refresh_session(&app.sessions, &app.refresher).await },
    )
    .can_fail_with(&[AuthExpired, RateLimited, Backend, Unavailable, Storage])
    .describe(
        "`POST {AUTH_URL}/token?grant_type=refresh_token`, single-flight: concurrent callers \
         (and the auto-refresh ticker) share one refresh, since GoTrue refresh tokens are \
         single-use. Emits TOKEN_REFRESHED on success. A rejected refresh token clears the \
         session (SIGNED_OUT `refresh_failed`) and answers -32001; no session or no refresh \
         token answers -32001.",
    );
    t.public(
        "auth_get_user",
        "The user as the auth server sees it now (GoTrue GET /user).",
        |app, _: NoParams| async move {
            auth::get_user(&app.gate, app.auth.as_ref())
                .await
                .map(auth::AuthUser)
        },
    )
    .can_fail_with(&[AuthExpired, RateLimited, Backend, Unavailable, Storage])
    .describe(
        "Sends the access token to `GET {AUTH_URL}/user`, as supabase-js `getUser`. A token \
         that expires within 60 s is refreshed first; if that refresh fails and the token has \
         expired, the refresh's error is the answer and `/user` is not called. A 4xx with \
         `session_not_found` or `user_not_found` is -32001 `session_not_found`: the session is \
         cleared if it is still the one used (SIGNED_OUT `expired`). Every other failure (a \
         401, a 403 `bad_jwt`, a gateway's 401, 5xx, network) is an error that keeps the \
         session. On success the stored user is updated.",
    );
    t.public(
        "auth_clear_session",
        "Removes the stored session locally (no network); emits SIGNED_OUT `signed_out` when \
         there was one.",
        |app, _: NoParams| async move { auth::clear_session(&app.sessions).await },
    )
    .can_fail_with(&[Storage]);
    t.public(
        "auth_sign_out",
        "Signs out, as supabase-js `signOut({scope})`; emits SIGNED_OUT.",
        |app, p| async move { auth::sign_out(&app.gate, app.auth.as_ref(), p).await },
    )
    .can_fail_with(&[AuthExpired, RateLimited, Backend, Unavailable, Storage])
    .describe(
        "With an auth URL and a session, the access token is refreshed first when it expires \
         within 60 s, then `POST {AUTH_URL}/logout?scope=<scope>` revokes it; 401, 403 and 404 \
         from it count as done (the session is gone there already). `local` then removes the \
         local session whatever the refresh or `/logout` did. `global` and `others`: a failed \
         refresh or `/logout` (network, 5xx, 429, another 4xx) is the answer and the session \
         is kept so the sign-out can be retried (a rejected refresh token has ended it: \
         -32001); on success `global` removes the local session and `others` keeps it.",
    );

    declare_sign_in(t);

    t.gated(
        "composio_list_toolkits",
        "The Composio toolkits the user can connect (GET /agent-integrations/composio/toolkits).",
        composio::list_toolkits,
    );
    t.gated(
        "composio_list_connections",
        "The user's Composio connections (GET /agent-integrations/composio/connections).",
        composio::list_connections,
    );
    t.gated(
        "composio_authorize",
        "Starts connecting a toolkit (POST /agent-integrations/composio/authorize); open \
         `connectUrl` in the browser.",
        composio::authorize,
    );
    t.gated(
        "composio_delete_connection",
        "Deletes a connection (DELETE /agent-integrations/composio/connections/{id}).",
        composio::delete_connection,
    );
    t.gated(
        "composio_list_tools",
        "The agent's Composio tools as function-calling definitions \
         (GET /agent-integrations/composio/tools).",
        composio::tools::list,
    );
    t.gated(
        "composio_execute",
        "Runs a Composio tool (POST /agent-integrations/composio/execute); a tool that failed \
         is `successful: false`.",
        composio::tools::execute,
    )
    .describe(
        "Runs a third-party action, which may have side effects, so it is sent once: only the \
         backend's own 401 is retried (once, after a refresh: the backend refused it before \
         running it). A provider's own 401/403 is a result with `successful: false` and \
         `error`, or a `backend` error when the backend fails the call (a 5xx); neither is \
         `auth_expired` and the session is kept.",
    );
    t.gated(
        "composio_list_github_repos",
        "The repositories of a GitHub connection \
         (GET /agent-integrations/composio/github/repos).",
        composio::github::list_repos,
    );
    t.gated(
        "composio_list_available_triggers",
        "The triggers a toolkit offers (GET /agent-integrations/composio/triggers/available).",
        composio::triggers::list_available,
    );
    t.gated(
        "composio_list_active_triggers",
        "The user's active triggers (GET /agent-integrations/composio/triggers).",
        composio::triggers::list_active,
    );
    t.gated(
        "composio_enable_trigger",
        "Enables a trigger on a connection (POST /agent-integrations/composio/triggers).",
        composio::triggers::enable,
    );
    t.gated(
        "composio_disable_trigger",
        "Disables a trigger (DELETE /agent-integrations/composio/triggers/{triggerId}).",
        composio::triggers::disable,
    );
    t.gated(
        "user_get_profile",
        "The user's profile as the product backend knows it (GET /auth/me).",
        user::get_profile,
    );

    // Not part of the contract: only with `CORE_SIDECAR_TEST_HOOKS=1`, never documented.
    if t.test_hooks {
        t.test_hook_sync("core_test_panic", |_, p: core::PanicParams| -> Result<()> {
            panic!("test hook panic: {}", p.message)
        });
        t.test_hook("core_test_sleep", |_, p: core::SleepParams| async move {
            tokio::time::sleep(std::time::Duration::from_millis(p.ms)).await;
            Ok(core::ping())
        });
    }
}

/// The sign-in methods: the shell passes what the user typed or the code a link brought
/// back, never a token. Public (no session needed), except that `auth_update_user` uses the
/// session as `auth_get_user` does.
fn declare_sign_in(t: &mut Table<'_>) {
    /// What every method that asks the auth server can answer besides its class's errors.
    const SIGN_IN: &[crate::error::ErrorKind] =
        &[AuthFailed, RateLimited, Backend, Unavailable, Storage];
    t.public(
        "auth_sign_up",
        "Creates an account (GoTrue POST /signup); SIGNED_IN when the auth server signs the \
         user in at once, else a confirmation is sent.",
        |app, p| async move { sign_in::sign_up(&app.sessions, app.auth.as_ref(), p).await },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "`POST {AUTH_URL}/signup[?redirect_to=]`. With an email, a PKCE flow is started (its \
         verifier kept in the keyring) so the confirmation link's `code` can be passed to \
         `auth_exchange_code`. An existing account, a weak password or signups disabled are \
         -32006 `auth_failed` with the auth server's code in `data.reason` \
         (`user_already_exists`, `weak_password`, `signup_disabled`, ...); any stored \
         session is kept.",
    );
    t.public(
        "auth_sign_in_with_password",
        "Signs in with an email or phone and a password (GoTrue POST \
         /token?grant_type=password); emits SIGNED_IN.",
        |app, p| async move {
            sign_in::sign_in_with_password(&app.sessions, app.auth.as_ref(), p).await
        },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "Replaces any stored session. Wrong credentials are -32006 `auth_failed` \
         `invalid_credentials` (an unconfirmed email: `email_not_confirmed`), and any stored \
         session is kept.",
    );
    t.public(
        "auth_sign_in_with_otp",
        "Sends a one-time code (and, for an email, a magic link) to an email or phone \
         (GoTrue POST /otp).",
        |app, p| async move {
            sign_in::sign_in_with_otp(&app.sessions, app.auth.as_ref(), p).await
        },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "The code goes to `auth_verify_otp`; an email's magic link carries a `code` for \
         `auth_exchange_code` (a PKCE flow is started for it). The auth server's send limit \
         (429 `over_email_send_rate_limit`) is -32002 `rate_limited`.",
    );
    t.public(
        "auth_verify_otp",
        "Signs in with a one-time code (GoTrue POST /verify); emits SIGNED_IN, or \
         PASSWORD_RECOVERY for `recovery`.",
        |app, p| async move { sign_in::verify_otp(&app.sessions, app.auth.as_ref(), p).await },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "A wrong, used or expired code is -32006 `auth_failed` `otp_expired`, and any stored \
         session is kept. A code that confirms without signing in (the first half of an \
         email change) answers the state unchanged.",
    );
    t.public(
        "auth_sign_in_with_oauth",
        "Starts a third-party sign-in with PKCE: the URL to open in the browser.",
        |app, p| async move {
            sign_in::sign_in_with_oauth(&app.sessions, app.auth.as_ref(), p).await
        },
    )
    .can_fail_with(&[Unavailable, Storage])
    .describe(
        "No request is sent. A new verifier is kept in the keyring (replacing any flow in \
         progress) and its SHA-256 goes in the URL (`code_challenge`, \
         `code_challenge_method=s256`). The provider sends the browser back to `redirect_to` \
         with `?code=`; pass it to `auth_exchange_code`.",
    );
    t.public(
        "auth_exchange_code",
        "Exchanges the `code` a browser or emailed link brought back for a session (GoTrue \
         POST /token?grant_type=pkce); emits SIGNED_IN, or PASSWORD_RECOVERY.",
        |app, p| async move { sign_in::exchange_code(&app.sessions, app.auth.as_ref(), p).await },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "Sends the code with the flow's verifier, which is used once: it is removed from the \
         keyring whatever the answer. No flow in progress (none started, already exchanged) \
         is -32006 `auth_failed` `flow_state_not_found` without a request; a code the auth \
         server does not know, has expired or does not match the verifier is \
         `flow_state_not_found`, `flow_state_expired` or `bad_code_verifier`. Any stored \
         session is kept on failure. A flow started by `auth_reset_password_for_email` emits \
         PASSWORD_RECOVERY.",
    );
    t.public(
        "auth_reset_password_for_email",
        "Sends a password-recovery link (GoTrue POST /recover), starting a PKCE flow.",
        |app, p| async move {
            sign_in::reset_password_for_email(&app.sessions, app.auth.as_ref(), p).await
        },
    )
    .can_fail_with(SIGN_IN)
    .describe(
        "The link's `code` goes to `auth_exchange_code`, which signs in with \
         PASSWORD_RECOVERY; then set the new password with `auth_update_user`.",
    );
    t.public(
        "auth_update_user",
        "Changes the signed-in user's email, phone, password or data (GoTrue PUT /user); \
         emits USER_UPDATED.",
        |app, p| async move { sign_in::update_user(&app.gate, app.auth.as_ref(), p).await },
    )
    .can_fail_with(&[
        AuthExpired,
        AuthFailed,
        RateLimited,
        Backend,
        Unavailable,
        Storage,
    ])
    .describe(
        "Through the session, as `auth_get_user`: refreshed first when about to expire; \
         `session_not_found`/`user_not_found` end the session (-32001). A weak password, an \
         email already taken or the same password are -32006 `auth_failed` (`weak_password`, \
         `email_exists`, `same_password`) and the session is kept. A new email starts a PKCE \
         flow for its confirmation link.",
    );
}

/// `core_initialize`: what the handshake says besides the version.
async fn initialize(app: &App, params: core::InitializeParams) -> Result<core::Initialized> {
    let (backend, persistent) = app.sessions.keyring().await;
    core::initialize(
        params,
        core::Capabilities {
            methods: method_specs().iter().map(|spec| spec.name).collect(),
            notifications: schema::notification_names(),
            cancellation: true,
        },
        core::KeyringInfo {
            backend,
            persistent,
        },
        core::Configured {
            backend: app.gate.backend_configured(),
            auth: app.auth.is_some(),
        },
    )
}

/// Builds the method table.
pub fn methods(app: App) -> Methods {
    let test_hooks = app.test_hooks;
    let mut module = Registry {
        app: Arc::new(app),
        methods: Methods::new(),
    };
    declare(&mut Table {
        module: Some(&mut module),
        test_hooks,
        specs: Vec::new(),
    });
    module.methods
}

/// The session methods: every public method, which the transport admits past its in-flight
/// bound into a reserve of its own (`rpc::Limits::reserved_methods`). The bound is for gated
/// calls, the ones a slow product backend can hold; a shell must still be able to read its
/// state, sign out and refresh while every gated slot hangs. Public methods that call the auth
/// server (`auth_refresh_session`, `auth_get_user`, `auth_sign_out`) are bounded by the reserve
/// and by the auth server's own connection bound (`backend::upstream`), which gated calls
/// never take. The test hooks are not reserved: tests fill the bound with `core_test_sleep`.
pub fn reserved_methods() -> &'static [&'static str] {
    static RESERVED: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        method_specs()
            .iter()
            .filter(|spec| spec.access == Access::Public)
            .map(|spec| spec.name)
            .collect()
    });
    &RESERVED
}

/// What the contract says about every method of the table, in order (test hooks excluded).
/// Needs no [`App`]: nothing is registered.
pub fn method_specs() -> Vec<MethodSpec> {
    let mut table = Table {
        module: None,
        test_hooks: false,
        specs: Vec::new(),
    };
    declare(&mut table);
    table.specs
}

/// The OpenRPC document of this table (what `rpc.discover` serves), generated once. Without
/// the `contract` feature (the shipped binary), the committed schema/openrpc.json, which the
/// tests prove is the generated document byte for byte.
pub fn openrpc() -> &'static Value {
    #[cfg(feature = "contract")]
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| schema::openrpc_document(&method_specs()));
    #[cfg(not(feature = "contract"))]
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        serde_json::from_str(include_str!("../schema/openrpc.json"))
            .expect("schema/openrpc.json is JSON (the tests read it)")
    });
    &DOCUMENT
}

/// The names of every registered method (test hooks included when enabled).
pub fn method_names(module: &Methods) -> Vec<&'static str> {
    let mut names: Vec<_> = module.names().collect();
    names.sort_unstable();
    names
}

/// The method table being built, and the app its handlers share.
struct Registry {
    app: Arc<App>,
    methods: Methods,
}

/// The table being declared: the method table when one is being built, and the specs.
struct Table<'a> {
    module: Option<&'a mut Registry>,
    test_hooks: bool,
    specs: Vec<MethodSpec>,
}

impl Table<'_> {
    fn spec(&mut self, spec: MethodSpec) -> &mut MethodSpec {
        self.specs.push(spec);
        let last = self.specs.len() - 1;
        &mut self.specs[last]
    }

    /// A public method answered inline, on the reader thread.
    fn public_sync<P, R>(
        &mut self,
        name: &'static str,
        summary: &'static str,
        f: fn(&App, P) -> Result<R>,
    ) -> &mut MethodSpec
    where
        P: DeserializeOwned + JsonSchema + 'static,
        R: Serialize + JsonSchema + 'static,
    {
        if let Some(m) = self.module.as_deref_mut() {
            public_sync(m, name, f);
        }
        self.spec(MethodSpec::new::<P, R>(name, Access::Public, summary).answered_inline())
    }

    /// A public method.
    fn public<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        summary: &'static str,
        f: F,
    ) -> &mut MethodSpec
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(Arc<App>, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        if let Some(m) = self.module.as_deref_mut() {
            public(m, name, f);
        }
        self.spec(MethodSpec::new::<P, R>(name, Access::Public, summary))
    }

    /// A gated method: `f` gets the authenticated backend client from the session gate.
    fn gated<P, R, F, Fut>(
        &mut self,
        name: &'static str,
        summary: &'static str,
        f: F,
    ) -> &mut MethodSpec
    where
        P: DeserializeOwned + JsonSchema + Clone + Send + Sync + 'static,
        R: Serialize + JsonSchema + Send + 'static,
        F: Fn(BackendClient, P) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        if let Some(m) = self.module.as_deref_mut() {
            gated(m, name, f);
        }
        self.spec(MethodSpec::new::<P, R>(name, Access::Gated, summary))
    }

    fn test_hook_sync<P, R>(&mut self, name: &'static str, f: fn(&App, P) -> Result<R>)
    where
        P: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        if let Some(m) = self.module.as_deref_mut() {
            public_sync(m, name, f);
        }
    }

    fn test_hook<P, R, F, Fut>(&mut self, name: &'static str, f: F)
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Arc<App>, P) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        if let Some(m) = self.module.as_deref_mut() {
            public(m, name, f);
        }
    }
}

fn public_sync<P, R>(m: &mut Registry, name: &'static str, f: fn(&App, P) -> Result<R>)
where
    P: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    let app = m.app.clone();
    m.methods.add_sync(name, move |params| {
        parse_params(params)
            .and_then(|params| f(&app, params))
            .and_then(|result| result_text(&result))
            .map_err(|error| to_wire(&app, name, error))
    });
}

fn public<P, R, F, Fut>(m: &mut Registry, name: &'static str, f: F)
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Arc<App>, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let app = m.app.clone();
    m.methods.add_async(name, move |params| {
        let app = app.clone();
        let params = match parse_params(params) {
            Ok(params) => params,
            Err(error) => return futures::future::ready(Err(to_wire(&app, name, error))).boxed(),
        };
        let f = f.clone();
        // The call's scope (its method, its last upstream answer) goes into the task with
        // it, so its upstream calls log the method and its error is tagged.
        let work = telemetry::in_call(name, async move {
            f(app.clone(), params)
                .await
                .and_then(|result| result_text(&result))
                .map_err(|error| to_wire(&app, name, error))
        });
        to_the_end(work).boxed()
    });
}

/// Runs `work` to its end even if the request is dropped (the shell cancelled it, see
/// `rpc`): polled once here (what is done at once stays answered inline), then, if pending,
/// moved into a task of its own that this awaits. The public methods change the session
/// (the keyring first, then the cache, then the event): a change dropped half-way would
/// leave the keyring and the cache disagreeing. A cancel ends the request, never the change.
/// A panic in the task is resumed here, where the transport catches it (-32603).
async fn to_the_end<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    let mut work = Box::pin(work);
    if let Poll::Ready(done) = futures::poll!(&mut work) {
        return done;
    }
    match tokio::spawn(work).await {
        Ok(done) => done,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down: nobody waits for this answer any more.
            Err(_) => std::future::pending().await,
        },
    }
}

fn gated<P, R, F, Fut>(m: &mut Registry, name: &'static str, f: F)
where
    P: DeserializeOwned + Clone + Send + Sync + 'static,
    R: Serialize + Send + 'static,
    F: Fn(BackendClient, P) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    let app = m.app.clone();
    m.methods.add_async(name, move |params| {
        let app = app.clone();
        // Params are read before the gate: a bad one is `invalid_params` even without a
        // session.
        let params = parse_params::<P>(params);
        telemetry::in_call(name, async move {
            let result = match params {
                Ok(params) => app.gate.call(|api| f(api, params.clone())).await,
                Err(error) => Err(error),
            };
            result
                .and_then(|result| result_text(&result))
                .map_err(|error| to_wire(&app, name, error))
        })
        .boxed()
    });
}

/// A handler's result as the JSON text of the response's `result`.
fn result_text<R: Serialize>(result: &R) -> Result<String> {
    serde_json::to_string(result)
        .map_err(|e| Error::Internal(format!("serializing a method's result: {e}")))
}

/// The JSON-RPC boundary: the one place an [`Error`] becomes a wire error. Every handler
/// error passes here, so this is also where the reporting policy sees it (real faults reach
/// Sentry, deduplicated, tagged with the method) and where its message is scrubbed by value
/// as well as by shape.
fn to_wire(app: &App, method: &str, error: Error) -> ErrorObjectOwned {
    app.telemetry.report_call(method, &error);
    let message = app.telemetry.scrubber().scrub(&error.to_string());
    ErrorObjectOwned::owned(error.kind().code(), message, Some(error.data()))
}

/// Params are by name. Absent params and `[]` mean "none"; errors name the field and what
/// was expected, never the value that was sent (see [`without_values`]).
fn parse_params<P: DeserializeOwned>(params: Option<&str>) -> Result<P> {
    let raw = match params.map(str::trim) {
        None | Some("[]") => "{}",
        Some(raw) if raw.starts_with('[') => {
            return Err(Error::invalid_params(
                "params",
                "params must be an object of named params",
            ));
        }
        Some(raw) => raw,
    };
    // The plain read first; only a failure is read again, with path tracking, to name the
    // field (tracking costs as much as the read, and params that fit are the rule).
    if let Ok(params) = serde_json::from_str(raw) {
        return Ok(params);
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let message = without_values(&without_position(e.inner()));
        let message = crate::scrub::scrub(&message);
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

/// serde's message without the offending value, which can be anything the shell sent (an
/// opaque token in the wrong param): `invalid type: string "abc", expected u64` becomes
/// `invalid type: string, expected u64`, and `unknown variant `abc`, expected one of ...`
/// becomes `unknown variant, expected one of ...`. What was expected is kept: it comes from
/// the params types, never from the input. Field names (missing, unknown, duplicate) are
/// kept too: the shell needs them to fix its call.
fn without_values(message: &str) -> String {
    for (prefix, kinds) in [
        ("invalid type: ", UNEXPECTED_KINDS),
        ("invalid value: ", UNEXPECTED_KINDS),
        ("unknown variant ", &[][..]),
    ] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let head = prefix.trim_end().trim_end_matches(':');
        // What was expected follows the value; the last ", expected " is past any such text
        // inside the value.
        let tail = match rest.rfind(", expected ") {
            Some(at) => &rest[at..],
            None if prefix == "unknown variant " => ", there are no variants",
            None => "",
        };
        // The kind of value (`string`, `integer`, `map`, ...), without the value itself.
        let kind = kinds
            .iter()
            .find(|kind| rest.starts_with(**kind))
            .map_or(String::new(), |kind| format!(": {kind}"));
        return format!("{head}{kind}{tail}");
    }
    message.to_string()
}

/// How serde (and serde_json) describe a value of the wrong type or value, longest first so a
/// prefix does not shadow a longer name. What follows the kind is the value itself.
const UNEXPECTED_KINDS: &[&str] = &[
    "floating point",
    "newtype variant",
    "newtype struct",
    "struct variant",
    "tuple variant",
    "unit variant",
    "Option value",
    "unit value",
    "byte array",
    "character",
    "sequence",
    "boolean",
    "integer",
    "string",
    "enum",
    "null",
    "map",
];

/// serde names a missing or unknown field only in its message: "missing field `x`".
fn missing_or_unknown_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod parse_params_tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Probe {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Local,
        Global,
        Others,
    }

    fn error(raw: &str) -> Error {
        parse_params::<Probe>(Some(raw)).expect_err(raw)
    }

    #[test]
    fn param_errors_name_the_field_and_not_the_value() {
        for (raw, field, expected) in [
            (
                r#"{"text": 12345678901234567890123}"#,
                "text",
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"text": 98765}"#,
                "text",
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"count": "opaque-value-xyz"}"#,
                "count",
                "invalid type: string, expected u64",
            ),
            (
                r#"{"count": "tricky \", expected u64 opaque-value-xyz"}"#,
                "count",
                "invalid type: string, expected u64",
            ),
            (
                r#"{"count": -7}"#,
                "count",
                "invalid value: integer, expected u64",
            ),
            (
                r#"{"flag": {"opaque-value-xyz": 1}}"#,
                "flag",
                "invalid type: map, expected a boolean",
            ),
            (
                r#"{"mode": "opaque-value-xyz"}"#,
                "mode",
                "unknown variant, expected one of `local`, `global`, `others`",
            ),
            (
                r#"{"mode": "x`, expected opaque-value-xyz"}"#,
                "mode",
                "unknown variant, expected one of `local`, `global`, `others`",
            ),
        ] {
            let error = error(raw);
            assert_eq!(error.data()["field"], field, "{raw}");
            let message = error.to_string();
            assert!(message.ends_with(expected), "{raw}: {message}");
            for echoed in ["opaque-value-xyz", "98765", "12345", "-7", "tricky"] {
                assert!(!message.contains(echoed), "{raw}: {message}");
            }
        }
    }

    #[test]
    fn field_names_are_kept() {
        let error = error(r#"{"other": 1}"#);
        assert_eq!(error.data()["field"], "other");
        assert!(
            error.to_string().contains("unknown field `other`"),
            "{error}"
        );
        let error = error_of::<Required>(r#"{}"#);
        assert_eq!(error.data()["field"], "needed");
        assert!(
            error.to_string().contains("missing field `needed`"),
            "{error}"
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read by serde only
    struct Required {
        needed: String,
    }

    fn error_of<P: DeserializeOwned + std::fmt::Debug>(raw: &str) -> Error {
        parse_params::<P>(Some(raw)).expect_err(raw)
    }

    #[test]
    fn messages_without_values_are_left_alone() {
        for message in [
            "missing field `x`",
            "unknown field `x`, expected `a`",
            "invalid length 2, expected a pair",
            "EOF while parsing a value",
        ] {
            assert_eq!(without_values(message), message);
        }
        assert_eq!(
            without_values("unknown variant `abc`, there are no variants"),
            "unknown variant, there are no variants"
        );
        assert_eq!(
            without_values("invalid type: something new `abc`"),
            "invalid type"
        );
    }
}
