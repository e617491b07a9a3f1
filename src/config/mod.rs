//! Configuration: the SPEC's keys, their defaults, and how they are layered.
//!
//! Load order: built-in defaults, then the TOML file (a missing file is fine),
//! then `LATCHKEY_<SECTION>__<KEY>` environment variables, then [`Config::validate`].
//! Every error names the key it is about. This module depends on nothing else
//! in the crate.

mod access;
pub mod check;
mod effective;
mod env;
mod log;
mod metrics;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use access::{
    AccessConfig, DomainPattern, Method, PathPrefix, Policy, RuleConfig, SubjectPattern,
};
pub use effective::{effective_settings, format_settings};
pub use env::DEFAULTS_TOML;
pub use log::{LogConfig, LogFormat, LogLevel};
pub use metrics::MetricsConfig;
use values::{duration, is_cookie_name_byte};
pub use values::{is_host_name, parse_duration, IpNet};

/// The prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "LATCHKEY_";

/// Everything latchkey can be configured with, one field per SPEC section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub session: SessionConfig,
    pub password: PasswordConfig,
    pub login: LoginConfig,
    pub access: AccessConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
}

/// `[server]`: where to listen and whom to believe about client addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Number of HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR ranges.
    pub trusted_proxies: Vec<IpNet>,
    /// How long a stop (`SIGTERM`, `SIGINT`) waits for requests in flight.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

/// `[database]`: the SQLite file (or a PostgreSQL URL, which wins) and
/// the size of the connection pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    /// `postgres://user:password@host:port/database`; empty for SQLite.
    pub url: String,
    pub pool_size: u32,
}

impl DatabaseConfig {
    /// The database as messages name it: the file, or the URL without its
    /// password.
    pub fn shown(&self) -> String {
        if self.url.is_empty() {
            self.path.display().to_string()
        } else {
            redacted_url(&self.url)
        }
    }
}

/// A `database.url` without its password, for messages and `config check`.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the database.url".to_owned(),
    }
}

/// `[session]`: lifetimes and the cookie that carries the token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_lifetime: Duration,
    /// Slide `expires_at` when less than this remains; zero means a fixed lifetime.
    #[serde(deserialize_with = "duration")]
    pub refresh_within: Duration,
    pub cookie_name: String,
    /// Empty for a host-only cookie; `.example.com` shares it with subdomains.
    pub cookie_domain: String,
    pub cookie_secure: bool,
}

/// `[password]`: argon2id cost parameters for new hashes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// `[login]`: brute-force limits and where a form login lands.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    pub max_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub failure_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub ban_duration: Duration,
    pub default_redirect: String,
    /// Hosts (besides this one and subdomains of `cookie_domain`) that `rd` may name.
    pub allowed_redirect_hosts: Vec<String>,
}

/// `[audit]`: how long the audit trail keeps its events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this are purged in the background; zero keeps them forever.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

impl AuditConfig {
    /// The retention to purge with, or `None` when events are kept forever.
    pub fn purge_after(&self) -> Option<Duration> {
        (!self.retention.is_zero()).then_some(self.retention)
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention: Duration::from_secs(90 * 86_400),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            trusted_proxies: Vec::new(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("latchkey.db"),
            url: String::new(),
            pool_size: 8,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(7 * 86_400),
            refresh_within: Duration::from_secs(30 * 60),
            cookie_name: "latchkey_session".to_owned(),
            cookie_domain: String::new(),
            cookie_secure: true,
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        // OWASP's argon2id recommendation, and argon2's own default.
        PasswordConfig {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures: 5,
            failure_window: Duration::from_secs(10 * 60),
            ban_duration: Duration::from_secs(15 * 60),
            default_redirect: "/".to_owned(),
            allowed_redirect_hosts: Vec::new(),
        }
    }
}

/// Why a configuration was refused; the message names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `cause`, not `source`: the message already carries it, and a source
    // would print it twice in `main`'s `{:#}` chain.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl Config {
    /// Loads the layered configuration: defaults, then `path`, then the environment.
    ///
    /// A missing file is not an error only when `path` was not given explicitly
    /// (`required == false`): running without a file means running on defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let file = read_file(path, required)?;
        Config::from_sources(file.as_deref(), path, std::env::vars())
    }

    /// Builds a config from file text (if any) and `(name, value)` environment pairs.
    ///
    /// Separate from [`Config::load`] so the layering can be tested without
    /// touching the process environment.
    pub fn from_sources(
        file_text: Option<&str>,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config: Config = deserialize(layered_table(file_text, path, env)?)?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        if self.database.path.as_os_str().is_empty() {
            return bad("database.path", "must not be empty");
        }
        let url = &self.database.url;
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !url.is_empty() && !postgres {
            return bad(
                "database.url",
                "must be a postgres:// URL, or empty for the SQLite file at database.path",
            );
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if self.session.idle_timeout.is_zero() {
            return bad("session.idle_timeout", "must be longer than 0s");
        }
        if self.session.max_lifetime.is_zero() {
            return bad("session.max_lifetime", "must be longer than 0s");
        }
        let name = &self.session.cookie_name;
        if name.is_empty() || !name.bytes().all(is_cookie_name_byte) {
            return bad(
                "session.cookie_name",
                "must be a non-empty token of letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        let domain = &self.session.cookie_domain;
        if !domain.is_empty() && !is_host_name(domain.trim_start_matches('.')) {
            return bad(
                "session.cookie_domain",
                "must be a domain name such as \".example.com\"",
            );
        }
        let p = &self.password;
        if let Err(e) = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None) {
            return bad("password", &format!("invalid argon2id parameters: {e}"));
        }
        if self.login.max_failures == 0 {
            return bad("login.max_failures", "must be at least 1");
        }
        if self.login.failure_window.is_zero() {
            return bad("login.failure_window", "must be longer than 0s");
        }
        let target = &self.login.default_redirect;
        if !target.starts_with('/') || target.starts_with("//") || target.contains('\\') {
            return bad(
                "login.default_redirect",
                "must be a path on this host, such as \"/\"",
            );
        }
        for host in &self.login.allowed_redirect_hosts {
            if !is_host_name(host) {
                return bad(
                    "login.allowed_redirect_hosts",
                    &format!("{host:?} is not a host name"),
                );
            }
        }
        if let Some(metrics) = self.metrics.listen {
            if metrics == self.server.listen && metrics.port() != 0 {
                return bad(
                    "metrics.listen",
                    "must differ from server.listen: /metrics has a listener of its own",
                );
            }
        }
        let retention = self.audit.retention;
        if !retention.is_zero() && retention < Duration::from_secs(3600) {
            return bad(
                "audit.retention",
                "must be at least 1h, or \"0s\" to keep events forever",
            );
        }
        self.access.validate()
    }

    /// The number of HTTP workers to start: `server.workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl AccessConfig {
    /// Reads only `[access]` from the layered sources (defaults, `path`, the
    /// environment), for a reload: the other sections are not looked at, as
    /// they only change with a restart.
    pub fn load(path: &Path, required: bool) -> Result<AccessConfig, ConfigError> {
        let file = read_file(path, required)?;
        AccessConfig::from_sources(file.as_deref(), path, std::env::vars())
    }

    /// [`AccessConfig::load`] from file text and `(name, value)` environment pairs.
    pub fn from_sources(
        file_text: Option<&str>,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AccessConfig, ConfigError> {
        // Not `deny_unknown_fields`: the other sections are skipped, not judged.
        #[derive(Deserialize)]
        struct AccessOnly {
            #[serde(default)]
            access: AccessConfig,
        }
        let only: AccessOnly = deserialize(layered_table(file_text, path, env)?)?;
        only.access.validate()?;
        Ok(only.access)
    }
}

/// The file's text, or `None` when it is missing and not `required`.
fn read_file(path: &Path, required: bool) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(cause) => Err(ConfigError::Read {
            path: path.to_owned(),
            cause,
        }),
    }
}

/// The file's table with the `LATCHKEY_` variables laid over it.
fn layered_table(
    file_text: Option<&str>,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    let mut table = match file_text {
        Some(text) => text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: one_line(&toml_error_message(text, &e)),
            })?,
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (var, value) in env {
        env::overlay_env(&mut table, &var, &value)?;
    }
    Ok(table)
}

/// Deserializes a layered table; an error names the key by its path
/// (`access.rules[2].paths[0]`).
fn deserialize<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Key {
        key: e.path().to_string(),
        message: one_line(&e.into_inner().to_string()),
    })
}

fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
