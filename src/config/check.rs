//! Settings that are valid but likely wrong, for `latchkey config check`.
//!
//! [`Config::validate`](super::Config::validate) refuses what cannot work;
//! these rules only warn, as each can be right in some setup (a test
//! instance on a LAN, a proxy that strips headers on its own).

use std::fmt;

use super::Config;

/// A likely mistake: the key it is about, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Common public suffixes: a cookie for one of these would go to every site
/// under it, and browsers refuse it. Not the full Public Suffix List (which
/// changes and runs to thousands of entries): a small list of the usual
/// ones, plus every single-label domain (see [`is_public_suffix`]).
const PUBLIC_SUFFIXES: &[&str] = &[
    "com",
    "net",
    "org",
    "io",
    "dev",
    "app",
    "edu",
    "gov",
    "info",
    "biz",
    "co",
    "me",
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "com.au",
    "net.au",
    "org.au",
    "co.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "com.br",
    "com.cn",
    "co.in",
    "co.za",
    "com.mx",
    "co.kr",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "netlify.app",
    "vercel.app",
    "pages.dev",
    "workers.dev",
    "azurewebsites.net",
    "cloudfront.net",
    "appspot.com",
    "web.app",
    "firebaseapp.com",
    "blogspot.com",
    "s3.amazonaws.com",
];

/// True for a domain in [`PUBLIC_SUFFIXES`] or with a single label (`com`,
/// `localhost`): leading and trailing dots and letter case do not count.
pub fn is_public_suffix(domain: &str) -> bool {
    let domain = domain.trim_start_matches('.').trim_end_matches('.');
    let domain = domain.to_ascii_lowercase();
    !domain.contains('.') || PUBLIC_SUFFIXES.contains(&domain.as_str())
}

/// The warnings for `config`. `has_client` is whether the database holds an
/// introspection client, or `None` when it was not looked at (no database).
pub fn warnings(config: &Config, has_client: Option<bool>) -> Vec<Warning> {
    let mut found = Vec::new();
    let listen = config.server.listen;
    let local = listen.ip().is_loopback();
    if !config.session.cookie_secure && !local {
        found.push(Warning {
            key: "session.cookie_secure",
            message: format!(
                "false while listening on {listen}, which is not loopback: \
                 the session cookie can travel over plain http"
            ),
        });
    }
    let domain = &config.session.cookie_domain;
    if !domain.is_empty() && is_public_suffix(domain) {
        found.push(Warning {
            key: "session.cookie_domain",
            message: format!(
                "{domain:?} is a public suffix: browsers refuse the cookie, or \
                 share it with every site under it; use your own domain, \
                 such as \".example.com\", or \"\" for a host-only cookie"
            ),
        });
    }
    if has_client == Some(false) {
        found.push(Warning {
            key: "clients",
            message: "no introspection client exists, so /introspect answers anyone; \
                      add one with `latchkey client add ID`"
                .to_owned(),
        });
    }
    if config.server.trusted_proxies.is_empty() && !local {
        found.push(Warning {
            key: "server.trusted_proxies",
            message: format!(
                "empty while listening on {listen}, which is not loopback: behind a \
                 proxy every client is seen as the proxy's address (one login ban \
                 locks everyone out) and X-Forwarded-* headers are ignored"
            ),
        });
    }
    if let Some(metrics) = config.metrics.listen.filter(|a| !a.ip().is_loopback()) {
        found.push(Warning {
            key: "metrics.listen",
            message: format!(
                "{metrics} is not loopback: /metrics has no authentication, so anyone \
                 who can reach it reads the login and ban counts; bind it to a \
                 loopback or private address only the scraper reaches"
            ),
        });
    }
    let retention = config.audit.retention;
    if !retention.is_zero() && retention < std::time::Duration::from_secs(7 * 86_400) {
        found.push(Warning {
            key: "audit.retention",
            message: format!(
                "{}s keeps less than a week of audit events: an incident noticed \
                 on Monday may already be purged",
                retention.as_secs()
            ),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(config: &Config, has_client: Option<bool>) -> Vec<&'static str> {
        warnings(config, has_client).iter().map(|w| w.key).collect()
    }

    fn listening_on(addr: &str) -> Config {
        let mut config = Config::default();
        config.server.listen = addr.parse().unwrap();
        config
    }

    #[test]
    fn the_defaults_with_a_client_give_no_warning() {
        assert!(keys(&Config::default(), Some(true)).is_empty());
        assert!(keys(&Config::default(), None).is_empty());
    }

    #[test]
    fn an_insecure_cookie_warns_only_off_loopback() {
        let mut config = listening_on("0.0.0.0:8080");
        config.server.trusted_proxies = vec![crate::config::IpNet::parse("10.0.0.1").unwrap()];
        config.session.cookie_secure = false;
        assert_eq!(keys(&config, Some(true)), ["session.cookie_secure"]);
        config.server.listen = "[::1]:8080".parse().unwrap();
        assert!(keys(&config, Some(true)).is_empty());
        config.server.listen = "127.0.0.2:8080".parse().unwrap();
        assert!(keys(&config, Some(true)).is_empty());
    }

    #[test]
    fn a_public_suffix_cookie_domain_warns() {
        for domain in [".com", "co.uk", ".GitHub.io", "localhost", ".example."] {
            let mut config = Config::default();
            config.session.cookie_domain = domain.to_owned();
            assert_eq!(
                keys(&config, Some(true)),
                ["session.cookie_domain"],
                "{domain}"
            );
        }
        for domain in ["", ".example.com", "auth.example.co.uk", "me.github.io"] {
            let mut config = Config::default();
            config.session.cookie_domain = domain.to_owned();
            assert!(keys(&config, Some(true)).is_empty(), "{domain}");
        }
    }

    #[test]
    fn no_introspection_client_warns_only_when_the_database_said_so() {
        assert_eq!(keys(&Config::default(), Some(false)), ["clients"]);
        assert!(keys(&Config::default(), None).is_empty());
    }

    #[test]
    fn an_audit_retention_under_a_week_warns_but_forever_does_not() {
        let mut config = Config::default();
        config.audit.retention = std::time::Duration::from_secs(86_400);
        assert_eq!(keys(&config, Some(true)), ["audit.retention"]);
        config.audit.retention = std::time::Duration::ZERO;
        assert!(keys(&config, Some(true)).is_empty());
        config.audit.retention = std::time::Duration::from_secs(7 * 86_400);
        assert!(keys(&config, Some(true)).is_empty());
    }

    #[test]
    fn a_metrics_listener_off_loopback_warns() {
        let mut config = Config::default();
        config.metrics.listen = Some("0.0.0.0:9464".parse().unwrap());
        assert_eq!(keys(&config, Some(true)), ["metrics.listen"]);
        config.metrics.listen = Some("127.0.0.1:9464".parse().unwrap());
        assert!(keys(&config, Some(true)).is_empty());
    }

    #[test]
    fn no_trusted_proxies_warns_only_off_loopback() {
        assert_eq!(
            keys(&listening_on("192.168.1.5:8080"), Some(true)),
            ["server.trusted_proxies"]
        );
        assert!(keys(&listening_on("127.0.0.1:9000"), Some(true)).is_empty());
        let mut config = listening_on("0.0.0.0:8080");
        config.server.trusted_proxies = vec![crate::config::IpNet::parse("::1").unwrap()];
        assert!(keys(&config, Some(true)).is_empty());
    }
}
