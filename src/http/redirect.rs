//! Which hosts latchkey trusts to send a browser to, or to accept a form from.
//!
//! One policy serves both the `rd` allow-list (no open redirects) and the
//! cross-site `Origin` check: a host is friendly when it is the host the
//! request was sent to, a host in `login.allowed_redirect_hosts`, or
//! `session.cookie_domain` or a subdomain of it.

use url::Url;

use crate::config::Config;

/// Longest `rd` accepted; longer values fall back to the default.
const MAX_REDIRECT_LEN: usize = 2048;

/// The friendly hosts and the default landing place.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    default_redirect: String,
    allowed_hosts: Vec<String>,
    cookie_domain: Option<String>,
}

impl HostPolicy {
    /// The policy of `[login]` and `[session]`.
    pub fn from_config(config: &Config) -> HostPolicy {
        let domain = config
            .session
            .cookie_domain
            .trim_start_matches('.')
            .to_ascii_lowercase();
        HostPolicy {
            default_redirect: config.login.default_redirect.clone(),
            allowed_hosts: config
                .login
                .allowed_redirect_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            cookie_domain: (!domain.is_empty()).then_some(domain),
        }
    }

    /// Where to send the browser after a login: `rd` when allowed, else the default.
    pub fn redirect_target(&self, rd: Option<&str>, request_host: Option<&str>) -> String {
        match rd {
            Some(rd) if self.redirect_allowed(rd, request_host) => rd.to_owned(),
            _ => self.default_redirect.clone(),
        }
    }

    /// True when `rd` is a path on this host or an http(s) URL on a friendly host.
    ///
    /// Refuses everything a browser might read as another host: `//evil`,
    /// `/\evil`, control characters (browsers strip tabs and newlines),
    /// userinfo (`https://good@evil`), and schemes other than http and https.
    pub fn redirect_allowed(&self, rd: &str, request_host: Option<&str>) -> bool {
        if rd.is_empty()
            || rd.len() > MAX_REDIRECT_LEN
            || rd.contains('\\')
            || rd.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return false;
        }
        if rd.starts_with('/') {
            return !rd.starts_with("//");
        }
        let Ok(url) = Url::parse(rd) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        url.host_str()
            .is_some_and(|host| self.is_friendly_host(host, request_host))
    }

    /// True for this request's host, an allowed host, or the cookie domain's hosts.
    pub fn is_friendly_host(&self, host: &str, request_host: Option<&str>) -> bool {
        let host = host.to_ascii_lowercase();
        request_host.is_some_and(|h| h.eq_ignore_ascii_case(&host))
            || self.allowed_hosts.contains(&host)
            || self.cookie_domain.as_deref().is_some_and(|domain| {
                host == domain
                    || host
                        .strip_suffix(domain)
                        .is_some_and(|prefix| prefix.ends_with('.'))
            })
    }

    /// True when an `Origin` header names a friendly site; `null` and
    /// unparseable origins are not.
    pub fn origin_allowed(&self, origin: &str, request_host: Option<&str>) -> bool {
        match Url::parse(origin) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url
                .host_str()
                .is_some_and(|host| self.is_friendly_host(host, request_host)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPolicy {
        let mut config = Config::default();
        config.session.cookie_domain = ".example.com".into();
        config.login.allowed_redirect_hosts = vec!["Partner.org".into()];
        config.login.default_redirect = "/home".into();
        HostPolicy::from_config(&config)
    }

    const HOST: Option<&str> = Some("auth.local");

    #[test]
    fn paths_and_friendly_hosts_are_allowed() {
        let p = policy();
        for rd in [
            "/",
            "/app?x=1#y",
            "http://auth.local/x",
            "https://app.example.com/path",
            "https://example.com",
            "https://deep.sub.example.com:8443/",
            "https://partner.org/",
        ] {
            assert!(p.redirect_allowed(rd, HOST), "{rd} refused");
        }
    }

    #[test]
    fn hostile_redirects_are_refused() {
        let p = policy();
        for rd in [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.example.com@evil.com/",
            "https://user:pw@app.example.com/",
            "https://evil.com\\@app.example.com",
            "/\t/evil.com",
            "/%0a/evil.com\n",
            "%2F%2Fevil.com",
            "https:%2F%2Fevil.com",
            "evil.com",
            "ftp://app.example.com/",
            "",
        ] {
            assert!(!p.redirect_allowed(rd, HOST), "{rd:?} allowed");
        }
        assert_eq!(p.redirect_target(Some("//evil.com"), HOST), "/home");
        assert_eq!(p.redirect_target(None, HOST), "/home");
        assert_eq!(p.redirect_target(Some("/ok"), HOST), "/ok");
    }

    #[test]
    fn origins_are_friendly_only_for_friendly_hosts() {
        let p = policy();
        assert!(p.origin_allowed("https://auth.local", HOST));
        assert!(p.origin_allowed("https://app.example.com", HOST));
        assert!(!p.origin_allowed("https://evil.com", HOST));
        assert!(!p.origin_allowed("null", HOST));
    }
}
