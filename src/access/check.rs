//! `latchkey access check`: a URL judged as `/verify` would judge it, and
//! the walk down the rules written out for an operator.

use std::fmt;
use std::net::IpAddr;

use super::{Explanation, ProxiedRequest};

/// The host (with any port) and the raw path of an `http(s)://` URL.
///
/// Split by hand, not parsed by a URL library: a library would resolve the
/// dot segments and re-encode the path, and the point is to show what the
/// rules make of the path as a client would send it. The fragment is
/// dropped (browsers never send it); the query stays, and is ignored later.
pub fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            url.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &url[scheme.len()..])
        })
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // user:password@host: the host is after the last '@'.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok((host, if path.is_empty() { "/" } else { path }))
}

/// An [`Explanation`] ready to print: one line per rule passed over, then
/// the decision and the reason for it.
pub struct Report<'a> {
    pub request: &'a ProxiedRequest<'a>,
    /// False when no address was given and `request.ip` is a stand-in.
    pub ip_given: bool,
    /// "without a session", or who the user is.
    pub who: &'a str,
    pub explanation: &'a Explanation,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.explanation;
        let path = match &e.path {
            Ok(path) => path.as_str(),
            Err(_) => self.request.path,
        };
        write!(
            f,
            "request   {} {} {} from ",
            self.request.method, e.host, path
        )?;
        if self.ip_given {
            write!(f, "{}", self.request.ip)?;
        } else {
            write!(f, "an unknown address ({}; give --ip)", self.request.ip)?;
        }
        writeln!(f, ", {}", self.who)?;
        for skipped in &e.skipped {
            writeln!(
                f,
                "rule {:<4} does not apply: its {} do not match",
                skipped.rule, skipped.criterion
            )?;
        }
        writeln!(f, "decision  {}", e.decision.outcome)?;
        writeln!(f, "because   {}", e.decision)
    }
}

/// The address assumed without `--ip`: one that no client has, so that
/// only a rule for every address (`0.0.0.0/0`) takes it in.
pub const UNKNOWN_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_raw_path() {
        assert_eq!(
            split_url("https://App.example.com:8443/a/../b?x#f"),
            Ok(("App.example.com:8443", "/a/../b?x"))
        );
        assert_eq!(split_url("HTTP://h.example"), Ok(("h.example", "/")));
        assert_eq!(split_url("http://h.example?q"), Ok(("h.example", "?q")));
        assert_eq!(split_url("http://u:p@h.example/x"), Ok(("h.example", "/x")));
        assert_eq!(split_url("http://[::1]:80/%2e"), Ok(("[::1]:80", "/%2e")));
        for bad in ["h.example/x", "ftp://h/x", "https:///x", "https://"] {
            assert!(split_url(bad).is_err(), "{bad:?}");
        }
    }
}
