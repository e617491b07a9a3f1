//! Reading credentials and client facts out of requests.
//!
//! Plain functions over `HttpRequest` rather than actix extractors: each
//! handler decides what a missing value means (401, 204, a redirect).

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::ClientCredentials;
use crate::config::IpNet;

/// Where a request's token came from; the `Origin` check applies to cookies only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Cookie,
}

/// The token of a request: `Authorization: Bearer` first, else the session cookie.
///
/// Borrowed from the request's headers: the token check runs on every
/// proxied request, and the token is only hashed.
pub fn request_token<'r>(
    req: &'r HttpRequest,
    cookie_name: &str,
) -> Option<(&'r str, TokenSource)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        if let Some(token) = value.to_str().ok().and_then(|v| strip_scheme(v, "Bearer")) {
            return Some((token, TokenSource::Bearer));
        }
    }
    cookie_value(req, cookie_name).map(|token| (token, TokenSource::Cookie))
}

/// The value of cookie `name` from the `Cookie` header(s), if present.
pub fn cookie_value<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// HTTP Basic credentials (RFC 7617), as an introspection client sends them.
pub fn basic_credentials(req: &HttpRequest) -> Option<ClientCredentials> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = strip_scheme(value, "Basic")?;
    let decoded = STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some(ClientCredentials {
        id: id.to_owned(),
        secret: secret.to_owned(),
    })
}

/// `Bearer abc` → `abc`, with the scheme matched case-insensitively.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    (given.eq_ignore_ascii_case(scheme) && !rest.is_empty()).then_some(rest)
}

/// The client address of a request, as far as it can be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// Best knowledge of the client address, recorded with a new session.
    pub ip: IpAddr,
    /// The address the per-address login limit counts; `None` only for a
    /// trusted proxy that names no usable client, so that a proxy is never
    /// banned as a whole.
    pub limited: Option<IpAddr>,
    /// `X-Forwarded-For` came from a peer that is not a trusted proxy.
    pub untrusted_forwarding: bool,
}

/// Built once: a header name given as text is parsed into a fresh
/// allocation on every lookup.
const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// Works out the client address from the TCP peer and `X-Forwarded-For`.
///
/// SPEC: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Forwarding
/// headers from an untrusted peer are ignored: the peer itself is counted,
/// or anyone could pick a fresh address per guess.
pub fn client_address(req: &HttpRequest, trusted: &[IpNet]) -> ClientAddress {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| canonical(a.ip()));
    // Read from the right, across every header (a later header continues
    // the list), without collecting: `/verify` asks on every request.
    let mut forwarded = req
        .headers()
        .get_all(X_FORWARDED_FOR)
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
        .peekable();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if forwarded.peek().is_none() {
        return ClientAddress {
            ip: peer,
            // A trusted proxy that names no client would otherwise be counted
            // for every user behind it.
            limited: (!is_trusted(peer)).then_some(peer),
            untrusted_forwarding: false,
        };
    }
    if !is_trusted(peer) {
        return ClientAddress {
            ip: peer,
            limited: Some(peer),
            untrusted_forwarding: true,
        };
    }
    for entry in forwarded {
        match parse_forwarded_ip(entry) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => {
                return ClientAddress {
                    ip,
                    limited: Some(ip),
                    untrusted_forwarding: false,
                }
            }
            // Garbage in the chain: nothing left of it can be believed.
            None => break,
        }
    }
    ClientAddress {
        ip: peer,
        limited: None,
        untrusted_forwarding: false,
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:80`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where a request was sent, as the client addressed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOrigin {
    /// Lowercased: `http` or `https` (or whatever a trusted proxy said).
    pub scheme: String,
    /// Lowercased, without the port; IPv6 in brackets, as URLs write it.
    pub host: String,
    pub port: u16,
}

/// The scheme, host and port the client addressed.
///
/// From a trusted proxy, `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `X-Forwarded-Port` (first values) say them, each falling back to what
/// the request itself says. From any other peer they are ignored: the
/// scheme is `http` (latchkey speaks plain HTTP) and the host is `Host`.
/// The port is the forwarded port, else the one in the host, else the
/// scheme's default. `None` without a usable host.
pub fn request_origin(req: &HttpRequest, trusted: &[IpNet]) -> Option<RequestOrigin> {
    let from_trusted_proxy = req
        .peer_addr()
        .is_some_and(|a| trusted.iter().any(|net| net.contains(canonical(a.ip()))));
    let header_value = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or(v).trim())
            .filter(|v| !v.is_empty())
    };
    let forwarded = |name: &str| from_trusted_proxy.then(|| header_value(name)).flatten();
    let scheme = forwarded("x-forwarded-proto")
        .unwrap_or("http")
        .to_ascii_lowercase();
    let authority = forwarded("x-forwarded-host").or_else(|| header_value("host"))?;
    let host = strip_port(authority);
    let port = forwarded("x-forwarded-port")
        .and_then(|p| p.parse().ok())
        .or_else(|| authority[host.len()..].strip_prefix(':')?.parse().ok())
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some(RequestOrigin {
        host: host.to_ascii_lowercase(),
        scheme,
        port,
    })
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The `User-Agent` header, or an empty string.
pub fn user_agent(req: &HttpRequest) -> String {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| IpNet::parse(s).unwrap()).collect()
    }

    fn request(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(format!("{peer}:4000").parse().unwrap());
        if let Some(xff) = xff {
            req = req.insert_header(("X-Forwarded-For", xff));
        }
        req.to_http_request()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let addr = client_address(&request("10.0.0.5", None), &[]);
        assert_eq!(addr.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(addr.limited, Some(addr.ip));
    }

    #[test]
    fn forwarding_from_an_untrusted_peer_is_ignored_and_the_peer_is_limited() {
        let addr = client_address(&request("10.0.0.5", Some("1.2.3.4")), &[]);
        assert_eq!(addr.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(addr.limited, Some(addr.ip));
        assert!(addr.untrusted_forwarding);
    }

    #[test]
    fn a_trusted_proxy_yields_the_rightmost_untrusted_forwarded_address() {
        let trusted = nets(&["127.0.0.1", "10.0.0.0/8"]);
        let req = request("127.0.0.1", Some("6.6.6.6, 1.2.3.4, 10.1.1.1"));
        let addr = client_address(&req, &trusted);
        assert_eq!(addr.limited, Some("1.2.3.4".parse().unwrap()));
        let req = request("127.0.0.1", Some("[2001:db8::1]:443"));
        assert_eq!(
            client_address(&req, &trusted).ip,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_client_is_never_limited() {
        let trusted = nets(&["127.0.0.1"]);
        assert_eq!(
            client_address(&request("127.0.0.1", None), &trusted).limited,
            None
        );
        assert_eq!(
            client_address(&request("127.0.0.1", Some("junk")), &trusted).limited,
            None
        );
        assert_eq!(
            client_address(&request("127.0.0.1", Some("127.0.0.1")), &trusted).limited,
            None
        );
    }

    #[test]
    fn bearer_comes_before_the_cookie() {
        let req = TestRequest::default()
            .insert_header(("Authorization", "bearer abc"))
            .insert_header(("Cookie", "other=1; sid=xyz"))
            .to_http_request();
        assert_eq!(
            request_token(&req, "sid"),
            Some(("abc", TokenSource::Bearer))
        );
        let req = TestRequest::default()
            .insert_header(("Cookie", "other=1; sid=xyz"))
            .to_http_request();
        assert_eq!(
            request_token(&req, "sid"),
            Some(("xyz", TokenSource::Cookie))
        );
        assert_eq!(request_token(&req, "missing"), None);
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let req = TestRequest::default()
            .insert_header((
                "Authorization",
                format!("Basic {}", STANDARD.encode("proxy:s3:cr3t")),
            ))
            .to_http_request();
        let creds = basic_credentials(&req).unwrap();
        assert_eq!(
            (creds.id.as_str(), creds.secret.as_str()),
            ("proxy", "s3:cr3t")
        );
        let req = TestRequest::default()
            .insert_header(("Authorization", "Basic %%%"))
            .to_http_request();
        assert!(basic_credentials(&req).is_none());
    }

    fn origin(peer: &str, headers: &[(&str, &str)], trusted: &[IpNet]) -> Option<RequestOrigin> {
        let mut req = TestRequest::default().peer_addr(format!("{peer}:4000").parse().unwrap());
        for &header in headers {
            req = req.insert_header(header);
        }
        request_origin(&req.to_http_request(), trusted)
    }

    fn expected(scheme: &str, host: &str, port: u16) -> Option<RequestOrigin> {
        Some(RequestOrigin {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    }

    #[test]
    fn the_origin_comes_from_host_unless_a_trusted_proxy_says_otherwise() {
        let forwarded = [
            ("Host", "Auth.Example.com:8080"),
            ("X-Forwarded-Proto", "HTTPS"),
            ("X-Forwarded-Host", "login.example.com"),
        ];
        let trusted = nets(&["127.0.0.1"]);
        assert_eq!(
            origin("10.0.0.5", &forwarded, &trusted),
            expected("http", "auth.example.com", 8080)
        );
        assert_eq!(
            origin("127.0.0.1", &forwarded, &trusted),
            expected("https", "login.example.com", 443)
        );
        let with_port = [("X-Forwarded-Port", "8443"), forwarded[1], forwarded[2]];
        assert_eq!(
            origin("127.0.0.1", &with_port, &trusted),
            expected("https", "login.example.com", 8443)
        );
        assert_eq!(
            origin("127.0.0.1", &[("Host", "[::1]:81")], &trusted),
            expected("http", "[::1]", 81)
        );
        assert_eq!(
            origin(
                "127.0.0.1",
                &[("Host", "h"), ("X-Forwarded-Proto", "https")],
                &trusted
            ),
            expected("https", "h", 443)
        );
        assert_eq!(origin("127.0.0.1", &[], &trusted), None);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
