//! Configuration: the SPEC's keys, their defaults, and how they are layered.
//!
//! Load order: built-in defaults, then the TOML file (a missing file is fine),
//! then `LATCHKEY_<SECTION>__<KEY>` environment variables, then [`Config::validate`].
//! Every error names the key it is about. This module depends on nothing else
//! in the crate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
}

/// `[database]`: the SQLite file and the size of its connection pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    pub pool_size: u32,
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

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            path: PathBuf::from("latchkey.db"),
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
        let file = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(cause) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    cause,
                })
            }
        };
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
            overlay_env(&mut table, &var, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError::Key {
                    key: e.path().to_string(),
                    message: one_line(&e.into_inner().to_string()),
                }
            })?;
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
        Ok(())
    }

    /// The number of HTTP workers to start: `server.workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Sets `table[section][key]` from `LATCHKEY_SECTION__KEY=value`.
///
/// The value is read as the type the key has by default: strings stay raw
/// (so `0.0.0.0:9000` and `7d` need no quoting), anything else is parsed as a
/// TOML value (`8`, `true`, `["127.0.0.1"]`).
fn overlay_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let env_error = |message: String| ConfigError::Env {
        var: var.to_owned(),
        message,
    };
    let rest = &var[ENV_PREFIX.len()..];
    let Some((section, key)) = rest.split_once("__") else {
        return Err(env_error(
            "expected LATCHKEY_<SECTION>__<KEY>, e.g. LATCHKEY_SERVER__LISTEN".to_owned(),
        ));
    };
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let defaults = default_table();
    let Some(default) = defaults
        .get(&section)
        .and_then(|s| s.as_table())
        .and_then(|s| s.get(&key))
    else {
        return Err(env_error(format!("unknown config key `{section}.{key}`")));
    };
    let parsed = if default.is_str() {
        toml::Value::String(value.to_owned())
    } else {
        parse_toml_value(value).ok_or_else(|| {
            env_error(format!(
                "{value:?} is not a valid value for `{section}.{key}`"
            ))
        })?
    };
    let section_table = table
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(section_table) = section_table.as_table_mut() else {
        return Err(ConfigError::Key {
            key: section,
            message: "must be a table".to_owned(),
        });
    };
    section_table.insert(key, parsed);
    Ok(())
}

/// Parses a lone TOML value such as `8`, `true` or `["a", "b"]`.
fn parse_toml_value(text: &str) -> Option<toml::Value> {
    let doc = format!("v = {text}").parse::<toml::Table>().ok()?;
    doc.get("v").cloned()
}

/// The defaults as a TOML table, used to learn each key's type for env overrides.
fn default_table() -> toml::Table {
    // Written out rather than serialized so `Config` needs no `Serialize`;
    // a unit test checks it against `config.toml` and `Config::default()`.
    DEFAULTS_TOML
        .parse()
        .expect("the embedded config.toml parses (checked by a unit test)")
}

/// The repository's `config.toml`: the SPEC defaults, commented.
pub const DEFAULTS_TOML: &str = include_str!("../config.toml");

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

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A DNS host name (letters, digits, hyphens and dots; no port).
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses a duration such as `"90s"`, `"30m"`, `"1h"`, `"7d"` or `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. \"90s\", \"30m\", \"1h\", \"7d\"".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration; use e.g. \"90s\", \"30m\", \"1h\", \"7d\""
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too long a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let seconds_per_unit = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "" => return Err(format!("{text:?} needs a unit: s, m, h or d")),
            unit => {
                return Err(format!(
                    "{text:?} has an unknown unit {unit:?}; use s, m, h or d"
                ))
            }
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(seconds_per_unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    // Longer than a century is a typo, and would overflow unix-second arithmetic.
    if total > 100 * 365 * 86_400 {
        return Err(format!("{text:?} is too long a duration (over 100 years)"));
    }
    Ok(Duration::from_secs(total))
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// An address range in CIDR form (`10.0.0.0/8`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// Parses `"127.0.0.1"`, `"10.0.0.0/8"` or `"::1/128"`.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix_text {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?} has an invalid prefix length")),
            },
        };
        Ok(IpNet { addr, prefix_len })
    }

    /// True when `ip` lies in this range; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IpNet::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_sources(file, Path::new("test.toml"), env)
    }

    #[test]
    fn the_shipped_config_toml_is_exactly_the_defaults() {
        assert_eq!(load(Some(DEFAULTS_TOML), &[]).unwrap(), Config::default());
    }

    #[test]
    fn no_file_means_defaults() {
        assert_eq!(load(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn durations_take_seconds_minutes_hours_days_and_sums() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for bad in [
            "",
            "10",
            "s",
            "5 minutes",
            "1w",
            "-1s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let file = "[server]\nlisten = \"127.0.0.1:7000\"\nworkers = 3\n[session]\nidle_timeout = \"2h\"\n";
        let config = load(
            Some(file),
            &[
                ("LATCHKEY_SERVER__LISTEN", "0.0.0.0:9000"),
                ("LATCHKEY_SESSION__COOKIE_SECURE", "false"),
                (
                    "LATCHKEY_SERVER__TRUSTED_PROXIES",
                    "[\"10.0.0.0/8\", \"::1\"]",
                ),
                ("OTHER_VARIABLE", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.server.workers, 3);
        assert_eq!(config.session.idle_timeout, Duration::from_secs(7200));
        assert!(!config.session.cookie_secure);
        assert_eq!(config.server.trusted_proxies.len(), 2);
        assert_eq!(
            config.session.max_lifetime,
            SessionConfig::default().max_lifetime
        );
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key() {
        let err = load(Some("[session]\nidle_timout = \"1h\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timout"), "{err}");
        let err = load(Some("[sesion]\n"), &[]).unwrap_err().to_string();
        assert!(err.contains("sesion"), "{err}");
        let err = load(None, &[("LATCHKEY_SERVER__LISTN", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LATCHKEY_SERVER__LISTN") && err.contains("server.listn"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases = [
            ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
            ("[server]\nworkers = \"four\"\n", "server.workers"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
                "server.trusted_proxies",
            ),
            ("[session]\nidle_timeout = \"10\"\n", "session.idle_timeout"),
            ("[session]\ncookie_name = \"a b\"\n", "session.cookie_name"),
            ("[database]\npool_size = 0\n", "database.pool_size"),
            (
                "[login]\ndefault_redirect = \"https://evil.example\"\n",
                "login.default_redirect",
            ),
            ("[password]\nmemory_kib = 1\n", "password"),
        ];
        for (file, key) in cases {
            let err = load(Some(file), &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{file:?} gave {err:?}");
            assert!(!err.contains('\n'), "multi-line error {err:?}");
        }
        let err = load(None, &[("LATCHKEY_DATABASE__POOL_SIZE", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("LATCHKEY_DATABASE__POOL_SIZE"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line_on_one_line() {
        let err = load(Some("[server]\nlisten = \n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml") && err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn cidr_ranges_match_their_members_only() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(IpNet::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
