//! Host matching: exact names and `*.` patterns, ignoring case, port and a
//! trailing dot. Compiled once; matching allocates nothing.

use crate::config::DomainPattern;

/// A rule's `domains`, split by kind (lowercase, no trailing dot).
#[derive(Debug)]
pub(super) struct Domains {
    exact: Box<[Box<str>]>,
    /// Matches hosts strictly below these domains.
    subdomains: Box<[Box<str>]>,
}

impl Domains {
    pub(super) fn compile(patterns: &[DomainPattern]) -> Domains {
        let mut exact = Vec::new();
        let mut subdomains = Vec::new();
        for pattern in patterns {
            match pattern {
                DomainPattern::Exact(name) => exact.push(name.as_str().into()),
                DomainPattern::Subdomains(name) => subdomains.push(name.as_str().into()),
            }
        }
        Domains {
            exact: exact.into(),
            subdomains: subdomains.into(),
        }
    }

    /// True when `host` (as [`host_name`] returns it) is one of the names or
    /// lies below one of the `*.` domains.
    pub(super) fn matches(&self, host: &str) -> bool {
        self.exact
            .iter()
            .any(|name| host.eq_ignore_ascii_case(name))
            || self.subdomains.iter().any(|domain| is_below(host, domain))
    }
}

/// `host` without its port and without one trailing dot.
///
/// An IPv6 literal keeps its brackets (`[::1]`); no pattern names one.
pub(super) fn host_name(host: &str) -> &str {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// True when `host` ends in `.domain` (ASCII case ignored) with a non-empty
/// label before it: `a.example.com` is below `example.com`, `example.com` is not.
fn is_below(host: &str, domain: &str) -> bool {
    let (host, domain) = (host.as_bytes(), domain.as_bytes());
    host.len() > domain.len() + 1 && {
        let dot = host.len() - domain.len() - 1;
        host[dot] == b'.' && host[dot + 1..].eq_ignore_ascii_case(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(patterns: &[&str]) -> Domains {
        let patterns: Vec<DomainPattern> = patterns
            .iter()
            .map(|p| DomainPattern::parse(p).unwrap())
            .collect();
        Domains::compile(&patterns)
    }

    fn matches(patterns: &[&str], host: &str) -> bool {
        domains(patterns).matches(host_name(host))
    }

    #[test]
    fn exact_names_match_ignoring_case_port_and_a_trailing_dot() {
        let names = ["app.example.com"];
        for host in [
            "app.example.com",
            "APP.Example.Com",
            "app.example.com:8443",
            "app.example.com.",
            "app.example.com.:443",
        ] {
            assert!(matches(&names, host), "{host:?}");
        }
        for host in [
            "example.com",
            "x.app.example.com",
            "app.example.com.evil.net",
            "app.example.co",
            "evilapp.example.com",
            "",
            "app.example.com..",
        ] {
            assert!(!matches(&names, host), "{host:?}");
        }
    }

    #[test]
    fn a_wildcard_matches_every_subdomain_but_not_the_domain() {
        let wildcard = ["*.example.com"];
        for host in [
            "a.example.com",
            "a.b.example.com",
            "A.EXAMPLE.COM:80",
            "x.example.com.",
        ] {
            assert!(matches(&wildcard, host), "{host:?}");
        }
        for host in [
            "example.com",
            ".example.com",
            "example.com.",
            "badexample.com",
            "example.com.evil.net",
            "a.example.org",
        ] {
            assert!(!matches(&wildcard, host), "{host:?}");
        }
    }

    #[test]
    fn a_list_matches_when_any_entry_does() {
        let list = ["example.com", "*.example.com", "other.net"];
        assert!(matches(&list, "example.com"));
        assert!(matches(&list, "www.example.com"));
        assert!(matches(&list, "other.net"));
        assert!(!matches(&list, "www.other.net"));
    }

    #[test]
    fn ports_and_ipv6_literals_are_taken_apart() {
        assert_eq!(host_name("h.example:8080"), "h.example");
        assert_eq!(host_name("h.example"), "h.example");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(host_name("h.example:x"), "h.example:x");
        assert!(matches(&["10.0.0.1"], "10.0.0.1:8080"));
    }
}
