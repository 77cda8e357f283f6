//! Command-line flags, each also read from its environment variable (DESIGN.md section 3).

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which OS keyring holds the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyringKind {
    /// The platform's own: Secret Service then keyutils on Linux, Keychain, Credential Manager.
    Auto,
    SecretService,
    Keyutils,
    Macos,
    Windows,
    /// Process memory only: the session does not survive a restart.
    Memory,
}

/// JSON-RPC 2.0 sidecar over stdin/stdout: keeps the user's session in the OS keyring and
/// calls the product backend on the user's behalf.
#[derive(Debug, Clone, Parser)]
#[command(name = "core-sidecar", version, about, long_about = None)]
pub struct Config {
    /// Product backend base URL. Without it, domain methods answer `unavailable`.
    #[arg(long, env = "CORE_SIDECAR_BACKEND_URL")]
    pub backend_url: Option<String>,

    /// GoTrue (Supabase Auth) base URL, e.g. https://<ref>.supabase.co/auth/v1.
    /// Without it there is no refresh and sign-out is local only.
    #[arg(long, env = "CORE_SIDECAR_AUTH_URL")]
    pub auth_url: Option<String>,

    /// `apikey` header sent to the auth server.
    #[arg(long, env = "CORE_SIDECAR_AUTH_API_KEY", hide_env_values = true)]
    pub auth_api_key: Option<String>,

    /// Keyring that stores the session.
    #[arg(long, env = "CORE_SIDECAR_KEYRING", value_enum, default_value = "auto")]
    pub keyring: KeyringKind,

    /// Keyring service name.
    #[arg(
        long,
        env = "CORE_SIDECAR_KEYRING_SERVICE",
        default_value = "core-sidecar"
    )]
    pub keyring_service: String,

    /// Keyring entry name (one session per profile).
    #[arg(long, env = "CORE_SIDECAR_PROFILE", default_value = "default")]
    pub profile: String,

    /// Per-request timeout to the backend and the auth server, in milliseconds.
    #[arg(long, env = "CORE_SIDECAR_HTTP_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_timeout_ms: u64,

    /// Timeout of one keyring operation, in milliseconds.
    #[arg(long, env = "CORE_SIDECAR_KEYRING_TIMEOUT_MS", default_value_t = 5_000)]
    pub keyring_timeout_ms: u64,

    /// Requests handled at once; past it the reader waits.
    #[arg(long, env = "CORE_SIDECAR_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Longest accepted input line, in bytes; longer lines get -32600.
    #[arg(long, env = "CORE_SIDECAR_MAX_LINE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_line_bytes: usize,

    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(
        long,
        env = "CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub shutdown_timeout_ms: u64,

    /// Sentry DSN. Without it Sentry is off.
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,

    /// Sentry environment.
    #[arg(long, env = "SENTRY_ENVIRONMENT")]
    pub sentry_environment: Option<String>,

    /// Sentry release (defaults to core-sidecar@<version>).
    #[arg(long, env = "SENTRY_RELEASE")]
    pub sentry_release: Option<String>,

    /// Registers `core_test_*` methods used by the integration tests. Never set in products.
    #[arg(
        long,
        env = "CORE_SIDECAR_TEST_HOOKS",
        hide = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub test_hooks: bool,

    /// Tracing filter for the logs on stderr.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    pub fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }

    pub fn keyring_timeout(&self) -> Duration {
        Duration::from_millis(self.keyring_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Empty values count as unset: a shell that exports `VAR=` means "none".
    pub fn normalized(mut self) -> Self {
        for value in [
            &mut self.backend_url,
            &mut self.auth_url,
            &mut self.auth_api_key,
            &mut self.sentry_dsn,
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *value = None;
            }
        }
        for url in [&mut self.backend_url, &mut self.auth_url]
            .into_iter()
            .flatten()
        {
            *url = url.trim_end_matches('/').to_string();
        }
        self
    }
}
