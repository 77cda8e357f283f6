//! Command-line flags, each also read from its environment variable (docs/protocol.md,
//! "Configuration"), typed at the edge.
//!
//! Every environment variable the sidecar reads is read here, by clap, once, and parsed into
//! its type at start-up: URLs into [`BaseUrl`], the keyring into [`KeyringKind`], the test
//! fault into [`Fault`]. A value that does not parse stops the sidecar before it answers
//! anything (exit code 2), with a message naming the flag, or the variable when the value
//! came from one. Optional settings count an empty value as unset: a shell that exports
//! `VAR=` means "none".
//!
//! The backend and auth URLs carry bearer and refresh tokens, so [`Config::load`] also
//! refuses a plain `http://` URL unless its host is a loopback one (127.0.0.0/8, `::1`,
//! `localhost`) or `--allow-insecure-http` is set (development only; the binary then warns
//! at start, see [`Config::cleartext_urls`]).
//!
//! The types here are plain values and this module imports nothing of the crate but the
//! transport's defaults, so anything may use it; what the values do lives with their users
//! (`session/store/` implements [`Keyring`] and [`Fault`]).
//!
//! Defaults shared with code that also runs without a `Config` (the transport's
//! [`Limits`](crate::rpc::Limits)) are constants there, used here.

use std::ffi::{OsStr, OsString};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use clap::builder::{EnumValueParser, PossibleValue, StringValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches, Parser, ValueEnum};
use url::Url;

use crate::rpc::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_LINE_BYTES};

/// The environment variable of the keyring fault test switch ([`Config::keyring_fault`]).
pub const KEYRING_FAULT_ENV: &str = "CORE_SIDECAR_KEYRING_FAULT";

/// The environment variable of [`Config::allow_insecure_http`].
pub const INSECURE_HTTP_ENV: &str = "CORE_SIDECAR_ALLOW_INSECURE_HTTP";

/// Declares [`Keyring`]: each backend's name, which is both its configuration value and its
/// [`Keyring::name`], is written once.
macro_rules! keyrings {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)+) => {
        /// An OS keyring the session store can sit on (`memory` is not one: it is the
        /// fallback). The store builds entries in each (`session/store/choice.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
        pub enum Keyring {
            $($(#[doc = $doc])* #[value(name = $name)] $variant,)+
        }

        impl Keyring {
            /// The configuration value, and the store's `backend_name`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}

// Adding a backend: a line here, and its arm in `Keyring::entry` (session/store/choice.rs).
keyrings! {
    /// Secret Service over D-Bus (Linux).
    SecretService = "secret-service",
    /// Kernel keyutils (Linux): survives restarts of the sidecar, not a reboot.
    Keyutils = "keyutils",
    /// The login Keychain (macOS).
    Macos = "macos",
    /// Credential Manager (Windows).
    Windows = "windows",
}

/// A fault injected into the session store's operations: a test switch
/// ([`Config::keyring_fault`]), never set in products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Every operation hangs until the keyring timeout.
    Hang,
    /// Every operation fails at once.
    Fail,
    /// Writes (save, delete) fail at once; reads work.
    FailWrites,
    /// Writes (save, delete) to an OS keyring reach it only after the keyring timeout (their
    /// caller is told they timed out), as with a frozen keyring that resumes; reads work.
    LateWrites,
}

/// Which OS keyring holds the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringKind {
    /// The platform's own, in order ([`Keyring::AUTO`]), else memory.
    Auto,
    /// That keyring, else memory.
    One(Keyring),
    /// Process memory only: the session does not survive a restart.
    Memory,
}

/// `auto`, each [`Keyring`] by its name, `memory`.
impl ValueEnum for KeyringKind {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: OnceLock<Vec<KeyringKind>> = OnceLock::new();
        ALL.get_or_init(|| {
            let keyrings = Keyring::value_variants().iter().copied().map(Self::One);
            std::iter::once(Self::Auto)
                .chain(keyrings)
                .chain(std::iter::once(Self::Memory))
                .collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            Self::Auto => Some(PossibleValue::new("auto").help(
                "The platform's own: Secret Service then keyutils on Linux, Keychain, Credential \
                 Manager",
            )),
            Self::One(keyring) => keyring.to_possible_value(),
            Self::Memory => Some(
                PossibleValue::new("memory")
                    .help("Process memory only: the session does not survive a restart"),
            ),
        }
    }
}

/// JSON-RPC 2.0 sidecar over stdin/stdout: keeps the user's session in the OS keyring and
/// calls the product backend on the user's behalf.
//
// Every typed setting has a `named` parser, so an unparsable value from the environment is
// reported under the variable's name. Optional settings are declared
// `::std::option::Option<T>` with `default_value = ""` and an `optional` parser: spelled that
// way clap leaves the `Option` to the parser, which turns an empty value into `None` (clap's
// own `Option<T>` would hand `""` to `T`'s parser).
#[derive(Debug, Clone, Parser)]
#[command(name = "core-sidecar", version = version_text(), about, long_about = None)]
pub struct Config {
    /// Product backend base URL. Without it, domain methods answer `unavailable`.
    #[arg(
        long,
        env = "CORE_SIDECAR_BACKEND_URL",
        value_parser = optional(BaseUrlParser),
        default_value = "",
        hide_default_value = true
    )]
    pub backend_url: ::std::option::Option<BaseUrl>,

    /// GoTrue (Supabase Auth) base URL, e.g. https://<ref>.supabase.co/auth/v1.
    /// Without it there is no refresh and sign-out is local only.
    #[arg(
        long,
        env = "CORE_SIDECAR_AUTH_URL",
        value_parser = optional(BaseUrlParser),
        default_value = "",
        hide_default_value = true
    )]
    pub auth_url: ::std::option::Option<BaseUrl>,

    /// `apikey` header sent to the auth server.
    #[arg(
        long,
        env = "CORE_SIDECAR_AUTH_API_KEY",
        hide_env_values = true,
        value_parser = optional(StringValueParser::new()),
        default_value = "",
        hide_default_value = true
    )]
    pub auth_api_key: ::std::option::Option<String>,

    /// Development only: allow plain http:// backend and auth URLs to non-loopback hosts
    /// (tokens then travel in clear text; a warning is logged at start). Without it such a
    /// URL stops the start; loopback hosts (127.0.0.0/8, ::1, localhost) never need it.
    #[arg(
        long,
        env = INSECURE_HTTP_ENV,
        value_parser = BlankIsFalse(named(clap::builder::BoolishValueParser::new()))
    )]
    pub allow_insecure_http: bool,

    /// Keyring that stores the session.
    #[arg(
        long,
        env = "CORE_SIDECAR_KEYRING",
        value_parser = named(EnumValueParser::<KeyringKind>::new()),
        default_value = "auto"
    )]
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
    #[arg(
        long,
        env = "CORE_SIDECAR_HTTP_TIMEOUT_MS",
        value_parser = named(u64::from_str),
        default_value_t = 30_000
    )]
    pub http_timeout_ms: u64,

    /// Timeout of one keyring operation, in milliseconds.
    #[arg(
        long,
        env = "CORE_SIDECAR_KEYRING_TIMEOUT_MS",
        value_parser = named(u64::from_str),
        default_value_t = 5_000
    )]
    pub keyring_timeout_ms: u64,

    /// Gated requests pending at once (batch members count one each); past it new ones are
    /// refused with `rate_limited`. Session methods have a reserve of as many again.
    #[arg(
        long,
        env = "CORE_SIDECAR_MAX_IN_FLIGHT",
        value_parser = named(usize::from_str),
        default_value_t = DEFAULT_MAX_IN_FLIGHT
    )]
    pub max_in_flight: usize,

    /// Longest accepted input line, in bytes; longer lines get -32600.
    #[arg(
        long,
        env = "CORE_SIDECAR_MAX_LINE_BYTES",
        value_parser = named(usize::from_str),
        default_value_t = DEFAULT_MAX_LINE_BYTES
    )]
    pub max_line_bytes: usize,

    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(
        long,
        env = "CORE_SIDECAR_SHUTDOWN_TIMEOUT_MS",
        value_parser = named(u64::from_str),
        default_value_t = 5_000
    )]
    pub shutdown_timeout_ms: u64,

    /// Sentry DSN. Without it Sentry is off.
    #[arg(
        long,
        env = "SENTRY_DSN",
        hide_env_values = true,
        value_parser = optional(StringValueParser::new()),
        default_value = "",
        hide_default_value = true
    )]
    pub sentry_dsn: ::std::option::Option<String>,

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
        value_parser = named(clap::builder::BoolishValueParser::new())
    )]
    pub test_hooks: bool,

    /// Test switch: keyring operations hang until the timeout (`hang`), fail at once
    /// (`fail`), or fail when they write (`fail-writes`). Never set in products.
    #[arg(
        long,
        env = KEYRING_FAULT_ENV,
        hide = true,
        value_parser = optional(EnumValueParser::<Fault>::new()),
        default_value = "",
        hide_default_value = true
    )]
    pub keyring_fault: ::std::option::Option<Fault>,

    /// Period of the ticker (keyring upkeep and auto-refresh), in milliseconds. Hidden: a
    /// test setting (a short period keeps the keyring tests fast).
    #[arg(
        long,
        env = "CORE_SIDECAR_REFRESH_TICK_MS",
        hide = true,
        value_parser = named(clap::value_parser!(u64).range(1..)),
        default_value_t = 30_000
    )]
    pub refresh_tick_ms: u64,

    /// Directory of the keyring entry's lock file and pending sign-out markers. Hidden: by
    /// default the lock is in `$XDG_RUNTIME_DIR/core-sidecar` and the markers in the cache
    /// directory (`$XDG_CACHE_HOME`, `~/.cache`, `~/Library/Caches`, `%LOCALAPPDATA%`), each
    /// falling back on the other ([`Config::lock_dir`], [`Config::marker_dir`]).
    #[arg(
        long,
        env = "CORE_SIDECAR_LOCK_DIR",
        hide = true,
        value_parser = optional(clap::builder::PathBufValueParser::new()),
        default_value = "",
        hide_default_value = true
    )]
    pub lock_dir: ::std::option::Option<std::path::PathBuf>,

    /// Tracing filter for the logs on stderr.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Format of the logs on stderr: `text` (one readable line per event) or `json` (one JSON
    /// object per line, for log collectors).
    #[arg(
        long,
        env = "CORE_SIDECAR_LOG_FORMAT",
        value_parser = named(EnumValueParser::<LogFormat>::new()),
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr ([`Config::log_format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (`message` and the
    /// event's fields).
    Json,
}

/// What `--version` prints after the name: the sidecar's version and its protocol version,
/// `0.1.0 (protocol 1)`.
fn version_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            crate::PROTOCOL_VERSION
        )
    })
}

impl Config {
    /// The configuration of this process (flags, then environment), checked: exits with
    /// clap's message and code 2 on a bad value or a cleartext URL (see
    /// [`Config::try_load_from`]), 0 after `--help`/`--version`. What the binary calls.
    pub fn load() -> Config {
        Self::try_load_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
    }

    /// [`Parser::try_parse_from`], plus the rule no single value can check: a plain http
    /// URL to a non-loopback host needs `--allow-insecure-http`. The error names the flag
    /// or the variable the URL came from.
    pub fn try_load_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = Self::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let config = Self::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        if !config.allow_insecure_http {
            for (id, url) in config.urls() {
                if url.is_cleartext_remote() {
                    let message = cleartext_refused(&cmd, &matches, id, url);
                    return Err(cmd.error(ErrorKind::ValueValidation, message));
                }
            }
        }
        Ok(config)
    }

    /// The configured URLs that send tokens in clear text to a non-loopback host (allowed
    /// only with `--allow-insecure-http`), each with its setting's variable and flag, for
    /// the warning at start.
    pub fn cleartext_urls(&self) -> Vec<(String, &BaseUrl)> {
        let cmd = Self::command();
        self.urls()
            .filter(|(_, url)| url.is_cleartext_remote())
            .map(|(id, url)| {
                let arg = cmd.get_arguments().find(|a| a.get_id() == id);
                let env = arg.and_then(Arg::get_env).and_then(OsStr::to_str);
                let long = arg.and_then(Arg::get_long).unwrap_or(id);
                (format!("{} (--{long})", env.unwrap_or(id)), url)
            })
            .collect()
    }

    /// The URLs tokens are sent to, by setting id.
    fn urls(&self) -> impl Iterator<Item = (&'static str, &BaseUrl)> {
        [
            ("backend_url", self.backend_url.as_ref()),
            ("auth_url", self.auth_url.as_ref()),
        ]
        .into_iter()
        .filter_map(|(id, url)| Some((id, url?)))
    }

    pub fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }

    pub fn keyring_timeout(&self) -> Duration {
        Duration::from_millis(self.keyring_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn refresh_tick(&self) -> Duration {
        Duration::from_millis(self.refresh_tick_ms)
    }

    /// Where the keyring entry's lock file goes: `--lock-dir`, else
    /// `$XDG_RUNTIME_DIR/core-sidecar` (local, per login), else the cache directory's.
    /// `None` when there is none: then nothing keeps other processes out.
    pub fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.lock_dir
            .clone()
            .or_else(|| Some(absolute_env("XDG_RUNTIME_DIR")?.join("core-sidecar")))
            .or_else(|| Some(cache_dir()?.join("core-sidecar")))
    }

    /// Where pending sign-outs are recorded: `--lock-dir`, else the cache directory's
    /// `core-sidecar` (it outlives a reboot, as the keyring does), else the lock's.
    pub fn marker_dir(&self) -> Option<std::path::PathBuf> {
        self.lock_dir
            .clone()
            .or_else(|| Some(cache_dir()?.join("core-sidecar")))
            .or_else(|| self.lock_dir())
    }
}

/// An environment variable holding an absolute path (a relative one is ignored, as the XDG
/// base directory specification says).
fn absolute_env(name: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(std::env::var_os(name)?);
    path.is_absolute().then_some(path)
}

/// The user's cache directory on this platform.
fn cache_dir() -> Option<std::path::PathBuf> {
    if cfg!(target_os = "windows") {
        absolute_env("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        Some(absolute_env("HOME")?.join("Library/Caches"))
    } else {
        absolute_env("XDG_CACHE_HOME").or_else(|| Some(absolute_env("HOME")?.join(".cache")))
    }
}

/// An http(s) base URL with a host and no query string or fragment; its path has no trailing
/// slash, so `{base}{path}` (see [`BaseUrl::as_prefix`]) is a request URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(Url);

impl BaseUrl {
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The URL without the slash a bare host ends with: request paths (`/user`) go after it.
    pub fn as_prefix(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    /// Whether the host is this machine: 127.0.0.0/8, `::1` (also as `::ffff:127.x.y.z`) or
    /// `localhost`. Traffic to it never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        match self.0.host() {
            Some(url::Host::Domain(name)) => {
                name.trim_end_matches('.').eq_ignore_ascii_case("localhost")
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            None => false,
        }
    }

    /// Plain http to a host that is not this machine: tokens would cross the network in
    /// clear text.
    pub fn is_cleartext_remote(&self) -> bool {
        self.0.scheme() == "http" && !self.is_loopback()
    }

    /// The URL as it may be shown: without user info (query and fragment it has none).
    pub fn shown(&self) -> String {
        let mut url = self.0.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.as_str().trim_end_matches('/').to_string()
    }
}

/// The message refusing the cleartext URL of setting `id`, naming the variable when the
/// value came from the environment and the flag otherwise (as clap's own errors do).
fn cleartext_refused(cmd: &Command, matches: &ArgMatches, id: &str, url: &BaseUrl) -> String {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id);
    let env = arg.and_then(Arg::get_env).and_then(OsStr::to_str);
    let setting = match (matches.value_source(id), env) {
        (Some(ValueSource::EnvVariable), Some(env)) => env.to_string(),
        _ => arg.map_or_else(|| id.to_string(), Arg::to_string),
    };
    format!(
        "invalid value '{}' for '{setting}': plain http would send the session's tokens in \
         clear text; use https, a loopback host (127.0.0.1, ::1, localhost), or for \
         development only --allow-insecure-http ({INSECURE_HTTP_ENV}=1)",
        url.shown()
    )
}

impl FromStr for BaseUrl {
    type Err = String;

    /// Trailing slashes of the path are dropped (`https://h/api/` is `https://h/api`).
    fn from_str(value: &str) -> Result<Self, String> {
        let mut url = Url::parse(value.trim()).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a base URL takes no query string or fragment".into());
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err("the URL has no host".into());
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        Ok(Self(url))
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_prefix())
    }
}

/// Parses a [`BaseUrl`]. A rejected value is shown in the error without its user info, query
/// string and fragment: that is where URLs carry credentials.
#[derive(Debug, Clone, Copy)]
struct BaseUrlParser;

impl TypedValueParser for BaseUrlParser {
    type Value = BaseUrl;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<BaseUrl, clap::Error> {
        let parse = |text: &str| text.parse::<BaseUrl>();
        parse.parse_ref(cmd, arg, value).map_err(|mut error| {
            if let Some(Ok(mut url)) = value.to_str().map(|v| Url::parse(v.trim())) {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                let shown = ContextValue::String(url.to_string());
                error.insert(ContextKind::InvalidValue, shown);
            }
            error
        })
    }
}

/// A setting parsed by `parser`, reported under its variable's name when its value came from
/// the environment (clap alone names the flag, which a shell setting `CORE_SIDECAR_*` never
/// used).
fn named<P: TypedValueParser>(parser: P) -> Named<P> {
    Named(parser)
}

/// An optional setting parsed by `parser`: empty (or blank) is unset. See [`named`].
fn optional<P: TypedValueParser>(parser: P) -> Optional<P> {
    Optional(Named(parser))
}

#[derive(Debug, Clone)]
struct Named<P>(P);

impl<P: TypedValueParser> TypedValueParser for Named<P> {
    type Value = P::Value;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<P::Value, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<P::Value, clap::Error> {
        self.0
            .parse_ref_(cmd, arg, value, source)
            .map_err(|mut error| {
                let env = arg.and_then(Arg::get_env).and_then(OsStr::to_str);
                if let (ValueSource::EnvVariable, Some(env)) = (source, env) {
                    error.insert(ContextKind::InvalidArg, ContextValue::String(env.into()));
                }
                error
            })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// A boolish switch whose empty (or blank) value is false, as an unset one. See [`named`].
#[derive(Debug, Clone)]
struct BlankIsFalse<P>(Named<P>);

impl<P: TypedValueParser<Value = bool>> TypedValueParser for BlankIsFalse<P> {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<bool, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<bool, clap::Error> {
        if value.to_str().is_some_and(|v| v.trim().is_empty()) {
            return Ok(false);
        }
        self.0.parse_ref_(cmd, arg, value, source)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

#[derive(Debug, Clone)]
struct Optional<P>(Named<P>);

impl<P: TypedValueParser> TypedValueParser for Optional<P> {
    type Value = Option<P::Value>;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<Self::Value, clap::Error> {
        if value.to_str().is_some_and(|v| v.trim().is_empty()) {
            return Ok(None);
        }
        self.0.parse_ref_(cmd, arg, value, source).map(Some)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        // Whatever the test process's environment holds, the flags win.
        Config::try_parse_from(std::iter::once("core-sidecar").chain(args.iter().copied()))
    }

    fn error(args: &[&str]) -> String {
        parse(args).expect_err("rejected").to_string()
    }

    #[test]
    fn urls_are_parsed_and_trimmed() {
        let config = parse(&[
            "--backend-url",
            " http://127.0.0.1:9/api/ ",
            "--auth-url",
            "https://ref.supabase.co/auth/v1//",
        ])
        .unwrap();
        let backend = config.backend_url.expect("set");
        assert_eq!(backend.as_prefix(), "http://127.0.0.1:9/api");
        assert_eq!(backend.as_url().path(), "/api");
        let auth = config.auth_url.expect("set");
        assert_eq!(auth.to_string(), "https://ref.supabase.co/auth/v1");
        let bare: BaseUrl = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(bare.as_prefix(), "http://127.0.0.1:9");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = parse(&[
            "--backend-url",
            "",
            "--auth-url",
            "  ",
            "--auth-api-key",
            "",
            "--sentry-dsn",
            "",
            "--keyring-fault",
            "",
        ])
        .unwrap();
        assert_eq!(config.backend_url, None);
        assert_eq!(config.auth_url, None);
        assert_eq!(config.auth_api_key, None);
        assert_eq!(config.sentry_dsn, None);
        assert_eq!(config.keyring_fault, None);
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(parse(&[]).unwrap().log_format, LogFormat::Text);
        let config = parse(&["--log-format", "json"]).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        let text = error(&["--log-format", "yaml"]);
        assert!(text.contains("--log-format"), "{text}");
        assert!(text.contains("text") && text.contains("json"), "{text}");
    }

    #[test]
    fn bad_urls_are_start_up_errors_naming_the_setting() {
        for flag in ["--backend-url", "--auth-url"] {
            for (bad, why) in [
                ("ftp://x", "the scheme must be http or https"),
                ("not a url", "relative URL without a base"),
                ("http://u:pw@x/?key=1", "no query string or fragment"),
                ("http://x/#secret-frag", "no query string or fragment"),
                ("mailto:a@b", "the scheme must be http or https"),
            ] {
                let text = error(&[flag, bad]);
                assert!(text.contains(flag), "{text}");
                assert!(text.contains(why), "{bad}: {text}");
                for hidden in ["key=1", "pw@", "secret-frag"] {
                    assert!(!text.contains(hidden), "{text}");
                }
            }
        }
    }

    fn load(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_load_from(std::iter::once("core-sidecar").chain(args.iter().copied()))
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        for flag in ["--backend-url", "--auth-url"] {
            for remote in [
                "http://auth.example.com",
                "http://u:pw@api.example.com/v1",
                "http://10.0.0.1:8080",
                "http://[::2]:1",
                "http://0.0.0.0:1",
                "http://localhost.example.com",
                "http://127.0.0.1.nip.io",
            ] {
                let text = load(&[flag, remote]).expect_err(remote).to_string();
                assert!(text.contains(flag), "{remote}: {text}");
                assert!(text.contains("--allow-insecure-http"), "{remote}: {text}");
                assert!(text.contains("clear text"), "{remote}: {text}");
                assert!(!text.contains("pw@"), "{text}");
                let allowed = load(&["--allow-insecure-http", flag, remote]).expect(remote);
                let listed = allowed.cleartext_urls();
                assert_eq!(listed.len(), 1, "{remote}");
                assert!(listed[0].0.contains(flag), "{:?}", listed[0].0);
                assert!(!listed[0].1.shown().contains("pw@"));
            }
            for local in [
                "http://127.0.0.1:1",
                "http://127.1.2.3/api",
                "http://[::1]:8",
                "http://[::ffff:127.0.0.1]:8",
                "http://localhost:1",
                "http://LOCALHOST./x",
                "https://auth.example.com",
                "https://10.0.0.1",
            ] {
                let config = load(&[flag, local]).unwrap_or_else(|e| panic!("{local}: {e}"));
                assert!(config.cleartext_urls().is_empty(), "{local}");
            }
        }
        // Unparsable values are still refused first, with or without the switch.
        for bad in ["not a url", "ftp://x"] {
            let text = load(&["--allow-insecure-http", "--auth-url", bad])
                .expect_err(bad)
                .to_string();
            assert!(text.contains("--auth-url"), "{text}");
        }
        // `--help` and `--version` still end the parse.
        let help = load(&["--help"]).expect_err("help");
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
    }

    /// What `parser` says of `value` for the setting `id` when it came from the environment.
    fn env_error<P: TypedValueParser>(parser: P, id: &str, value: &str) -> String {
        let mut cmd = Config::command();
        cmd.build();
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).expect(id);
        let value = OsStr::new(value);
        let parsed = parser.parse_ref_(&cmd, Some(arg), value, ValueSource::EnvVariable);
        parsed.map(drop).expect_err("rejected").to_string()
    }

    #[test]
    fn an_unparsable_value_from_the_environment_names_the_variable() {
        let fault = optional(EnumValueParser::<Fault>::new());
        let text = env_error(fault, "keyring_fault", "sometimes");
        assert!(text.contains("'CORE_SIDECAR_KEYRING_FAULT'"), "{text}");
        assert!(text.contains("hang, fail, fail-writes"), "{text}");
        let keyring = named(EnumValueParser::<KeyringKind>::new());
        let text = env_error(keyring, "keyring", "kwallet");
        assert!(text.contains("'CORE_SIDECAR_KEYRING'"), "{text}");
        let text = env_error(named(usize::from_str), "max_in_flight", "many");
        assert!(text.contains("'CORE_SIDECAR_MAX_IN_FLIGHT'"), "{text}");
        let text = env_error(optional(BaseUrlParser), "auth_url", "ftp://x");
        assert!(text.contains("'CORE_SIDECAR_AUTH_URL'"), "{text}");
        // From the command line, the flag.
        let text = error(&["--keyring-fault", "sometimes"]);
        assert!(text.contains("'--keyring-fault <KEYRING_FAULT>'"), "{text}");
    }

    #[test]
    fn keyring_kinds_and_faults_parse() {
        let config = parse(&["--keyring", "keyutils", "--keyring-fault", "hang"]).unwrap();
        assert_eq!(config.keyring, KeyringKind::One(Keyring::Keyutils));
        assert_eq!(config.keyring_fault, Some(Fault::Hang));
        for (value, kind) in [
            ("auto", KeyringKind::Auto),
            ("secret-service", KeyringKind::One(Keyring::SecretService)),
            ("macos", KeyringKind::One(Keyring::Macos)),
            ("windows", KeyringKind::One(Keyring::Windows)),
            ("memory", KeyringKind::Memory),
        ] {
            assert_eq!(parse(&["--keyring", value]).unwrap().keyring, kind);
        }
        assert!(error(&["--keyring", "kwallet"]).contains("--keyring"));
        assert!(error(&["--max-in-flight", "many"]).contains("--max-in-flight"));
    }

    #[test]
    fn a_keyring_value_is_its_backend_name() {
        for keyring in Keyring::value_variants() {
            let value = keyring.to_possible_value().expect("no variant is skipped");
            assert_eq!(value.get_name(), keyring.name());
            let parsed = parse(&["--keyring", keyring.name()]).unwrap().keyring;
            assert_eq!(parsed, KeyringKind::One(*keyring));
        }
    }

    #[test]
    fn fault_values() {
        assert_eq!(Fault::from_str("hang", false), Ok(Fault::Hang));
        assert_eq!(Fault::from_str("FAIL", true), Ok(Fault::Fail));
        assert_eq!(Fault::from_str("fail-writes", false), Ok(Fault::FailWrites));
        assert_eq!(Fault::from_str("late-writes", false), Ok(Fault::LateWrites));
        assert!(Fault::from_str("sometimes", true).is_err());
    }

    #[test]
    fn transport_defaults_are_the_transports() {
        let config = Config::try_parse_from(["core-sidecar"]).unwrap();
        assert_eq!(
            config.max_in_flight,
            crate::rpc::Limits::default().max_in_flight
        );
        assert_eq!(
            config.max_line_bytes,
            crate::rpc::Limits::default().max_line_bytes
        );
    }

    #[test]
    fn the_definition_is_consistent() {
        Config::command().debug_assert();
    }
}
