//! Which hosts latchkey trusts to send a browser to, or to accept a form from.
//!
//! One policy serves both the `rd` allow-list (no open redirects) and the
//! cross-site `Origin` check. A host is friendly when it is the host the
//! request was sent to, a host in `login.allowed_redirect_hosts`, or
//! `session.cookie_domain` or a subdomain of it. A redirect is stricter
//! than an `Origin`: to this very host it must keep the request's scheme
//! and port (another port may be another program), and to the other
//! friendly hosts it must use `https` while the cookie is `Secure`.

use url::Url;

use super::extract::RequestOrigin;
use crate::config::Config;

/// Longest `rd` accepted; longer values fall back to the default.
const MAX_REDIRECT_LEN: usize = 2048;

/// The friendly hosts and the default landing place.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    default_redirect: String,
    allowed_hosts: Vec<String>,
    cookie_domain: Option<String>,
    /// `session.cookie_secure`: redirects to other hosts must be `https`.
    https_only: bool,
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
            https_only: config.session.cookie_secure,
        }
    }

    /// Where to send the browser after a login: `rd` when allowed, else the default.
    pub fn redirect_target(&self, rd: Option<&str>, origin: Option<&RequestOrigin>) -> String {
        match rd {
            Some(rd) if self.redirect_allowed(rd, origin) => rd.to_owned(),
            _ => self.default_redirect.clone(),
        }
    }

    /// True when `rd` is a path on this host, a URL of this very origin
    /// (the request's scheme, host and port), or an http(s) URL on an
    /// allowed host or the cookie domain (`https` only while cookies are
    /// `Secure`: a plain-HTTP hop would expose the session).
    ///
    /// Refuses everything a browser might read as another host: `//evil`,
    /// `/\evil`, control characters (browsers strip tabs and newlines),
    /// userinfo (`https://good@evil`), and schemes other than http and https.
    pub fn redirect_allowed(&self, rd: &str, origin: Option<&RequestOrigin>) -> bool {
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
        let Some(host) = url.host_str() else {
            return false;
        };
        let same_origin = origin.is_some_and(|o| {
            o.host.eq_ignore_ascii_case(host)
                && o.scheme == url.scheme()
                && url.port_or_known_default() == Some(o.port)
        });
        same_origin || (self.is_listed_host(host) && (url.scheme() == "https" || !self.https_only))
    }

    /// True for this request's host, an allowed host, or the cookie domain's hosts.
    pub fn is_friendly_host(&self, host: &str, request_host: Option<&str>) -> bool {
        request_host.is_some_and(|h| h.eq_ignore_ascii_case(host)) || self.is_listed_host(host)
    }

    /// True for a host in `login.allowed_redirect_hosts`, or the cookie
    /// domain or a subdomain of it.
    fn is_listed_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
            || self.cookie_domain.as_deref().is_some_and(|domain| {
                host == domain
                    || host
                        .strip_suffix(domain)
                        .is_some_and(|prefix| prefix.ends_with('.'))
            })
    }

    /// True when an `Origin` header names a friendly site; `null` and
    /// unparseable origins are not. Scheme and port are not compared: an
    /// origin check asks which site sent a request, not where it may go.
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

    fn policy_with(cookie_secure: bool) -> HostPolicy {
        let mut config = Config::default();
        config.session.cookie_domain = ".example.com".into();
        config.session.cookie_secure = cookie_secure;
        config.login.allowed_redirect_hosts = vec!["Partner.org".into()];
        config.login.default_redirect = "/home".into();
        HostPolicy::from_config(&config)
    }

    fn policy() -> HostPolicy {
        policy_with(true)
    }

    fn origin(scheme: &str, host: &str, port: u16) -> RequestOrigin {
        RequestOrigin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        }
    }

    /// latchkey reached over plain HTTP on port 80.
    fn here() -> RequestOrigin {
        origin("http", "auth.local", 80)
    }

    #[test]
    fn paths_and_friendly_hosts_are_allowed() {
        let p = policy();
        for rd in [
            "/",
            "/app?x=1#y",
            "http://auth.local/x",
            "http://auth.local:80/x",
            "https://app.example.com/path",
            "https://example.com",
            "https://deep.sub.example.com:8443/",
            "https://partner.org/",
        ] {
            assert!(p.redirect_allowed(rd, Some(&here())), "{rd} refused");
        }
        let tls = origin("https", "auth.local", 8443);
        assert!(p.redirect_allowed("https://auth.local:8443/x", Some(&tls)));
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
            // This host, but another port or scheme: maybe another program.
            "http://auth.local:8080/",
            "https://auth.local/",
            // Plain HTTP to other friendly hosts while cookies are Secure.
            "http://partner.org/",
            "http://app.example.com/",
        ] {
            assert!(!p.redirect_allowed(rd, Some(&here())), "{rd:?} allowed");
        }
        // A scheme downgrade from a request that came in over https.
        let tls = origin("https", "auth.local", 443);
        assert!(!p.redirect_allowed("http://auth.local/", Some(&tls)));
        assert!(!p.redirect_allowed("https://auth.local:444/", Some(&tls)));
        // Without a known origin, this host is not recognised at all.
        assert!(!p.redirect_allowed("http://auth.local/", None));
        assert_eq!(
            p.redirect_target(Some("//evil.com"), Some(&here())),
            "/home"
        );
        assert_eq!(p.redirect_target(None, Some(&here())), "/home");
        assert_eq!(p.redirect_target(Some("/ok"), Some(&here())), "/ok");
    }

    #[test]
    fn plain_http_to_other_friendly_hosts_is_allowed_only_without_secure_cookies() {
        let p = policy_with(false);
        assert!(p.redirect_allowed("http://partner.org/", Some(&here())));
        assert!(p.redirect_allowed("http://app.example.com:8080/", Some(&here())));
        // The same-origin rule does not depend on the cookie.
        assert!(!p.redirect_allowed("http://auth.local:8080/", Some(&here())));
    }

    #[test]
    fn origins_are_friendly_only_for_friendly_hosts() {
        let p = policy();
        const HOST: Option<&str> = Some("auth.local");
        assert!(p.origin_allowed("https://auth.local", HOST));
        assert!(p.origin_allowed("https://app.example.com", HOST));
        assert!(!p.origin_allowed("https://evil.com", HOST));
        assert!(!p.origin_allowed("null", HOST));
    }
}
