//! The request a proxy asks `/verify` about: its host, path and method,
//! read from the forwarded headers in the SPEC's order ("Access rules").
//!
//! Borrowed from the request's headers, never copied: this runs on every
//! proxied request. Header names are constants, since a name given as text
//! is parsed into a fresh allocation on every lookup.

use actix_web::http::header::{self, HeaderName};
use actix_web::HttpRequest;

use super::extract::canonical;
use crate::access::check::split_url;
use crate::config::IpNet;

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// Host, raw path and method of the proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coordinates<'r> {
    /// May carry a port; empty when no header names a host.
    pub host: &'r str,
    /// As the client sent it (with any query): the rules normalise it.
    pub path: &'r str,
    pub method: &'r str,
}

/// A forwarded header that cannot be read without guessing: the request
/// is refused (403) rather than judged as some other request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Bytes that are not visible ASCII (raw UTF-8 included): upstream
    /// servers decode them in different ways.
    #[error("{0} holds bytes that are not visible ASCII")]
    NotAscii(HeaderName),
    /// Sent twice: which one the proxy meant cannot be known.
    #[error("{0} is sent more than once")]
    Repeated(HeaderName),
    /// A path that does not start with `/`, or an `X-Original-URL` that is
    /// neither a path nor an `http(s)://` URL.
    #[error("{0} is not a path or an http(s) URL")]
    NotAPath(HeaderName),
}

/// Where the proxied request was going.
///
/// SPEC: host from `X-Forwarded-Host` (its first value), else the host of
/// `X-Original-URL`, else `Host`; path from `X-Forwarded-Uri`, else the
/// path of `X-Original-URL`, else `/`; method from `X-Forwarded-Method`,
/// else `X-Original-Method`, else the request's own. When `trusted` is not
/// empty and the peer is not in it, the forwarded headers are ignored (the
/// peer is a client, not the proxy); with `trusted` empty they are taken
/// as sent. An empty header counts as absent.
pub fn coordinates<'r>(
    req: &'r HttpRequest,
    trusted: &[IpNet],
) -> Result<Coordinates<'r>, Unreadable> {
    let own_method = req.method().as_str();
    let own_host = || text(req, &header::HOST).map(|host| host.unwrap_or(""));
    let believed = trusted.is_empty()
        || req
            .peer_addr()
            .is_some_and(|a| trusted.iter().any(|net| net.contains(canonical(a.ip()))));
    if !believed {
        return Ok(Coordinates {
            host: own_host()?,
            path: "/",
            method: own_method,
        });
    }
    let original = match single(req, &X_ORIGINAL_URL)? {
        None => None,
        Some(url) if url.starts_with('/') => Some((None, url)),
        Some(url) => {
            let (host, path) = split_url(url).map_err(|_| Unreadable::NotAPath(X_ORIGINAL_URL))?;
            Some((Some(host), path))
        }
    };
    let host = match text(req, &X_FORWARDED_HOST)? {
        Some(list) => list.split(',').next().unwrap_or(list).trim(),
        None => match original {
            Some((Some(host), _)) => host,
            _ => own_host()?,
        },
    };
    let path = match single(req, &X_FORWARDED_URI)? {
        // A proxy sends the request target; anything else (an absolute
        // URL, say) would be judged as a path no rule names.
        Some(uri) if !uri.starts_with('/') => return Err(Unreadable::NotAPath(X_FORWARDED_URI)),
        Some(uri) => uri,
        None => original.map_or("/", |(_, path)| path),
    };
    let method = match single(req, &X_FORWARDED_METHOD)? {
        Some(method) => method,
        None => single(req, &X_ORIGINAL_METHOD)?.unwrap_or(own_method),
    };
    Ok(Coordinates { host, path, method })
}

/// The trimmed text of the first `name` header; `None` when absent or empty.
fn text<'r>(req: &'r HttpRequest, name: &HeaderName) -> Result<Option<&'r str>, Unreadable> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| Unreadable::NotAscii(name.clone()))?
                .trim();
            Ok((!value.is_empty()).then_some(value))
        }
    }
}

/// [`text`] for a header that must be sent at most once (one lookup: this
/// runs for four headers on every `/verify`).
fn single<'r>(req: &'r HttpRequest, name: &HeaderName) -> Result<Option<&'r str>, Unreadable> {
    let mut values = req.headers().get_all(name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Unreadable::Repeated(name.clone()));
    }
    let value = value
        .to_str()
        .map_err(|_| Unreadable::NotAscii(name.clone()))?
        .trim();
    Ok((!value.is_empty()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| IpNet::parse(s).unwrap()).collect()
    }

    /// Header lines as a test writes them: name and raw value.
    type Headers<'a> = &'a [(&'a str, &'a [u8])];

    fn request(peer: &str, method: &str, headers: Headers<'_>) -> HttpRequest {
        let mut req = TestRequest::default()
            .method(method.parse().unwrap())
            .peer_addr(format!("{peer}:4000").parse().unwrap());
        for &(name, value) in headers {
            req = req.append_header((name, value));
        }
        req.to_http_request()
    }

    fn judged(
        headers: &[(&str, &[u8])],
        trusted: &[IpNet],
    ) -> Result<(String, String, String), Unreadable> {
        let req = request("127.0.0.1", "GET", headers);
        coordinates(&req, trusted)
            .map(|c| (c.host.to_owned(), c.path.to_owned(), c.method.to_owned()))
    }

    fn ok(host: &str, path: &str, method: &str) -> Result<(String, String, String), Unreadable> {
        Ok((host.to_owned(), path.to_owned(), method.to_owned()))
    }

    #[test]
    fn forwarded_headers_come_first_then_x_original_then_the_request_itself() {
        let traefik: &[(&str, &[u8])] = &[
            ("Host", b"auth.example.com"),
            ("X-Forwarded-Host", b"app.example.com, proxy.internal"),
            ("X-Forwarded-Uri", b"/admin?x=1"),
            ("X-Forwarded-Method", b"POST"),
            ("X-Original-URL", b"https://other.example.com/public"),
            ("X-Original-Method", b"GET"),
        ];
        assert_eq!(
            judged(traefik, &[]),
            ok("app.example.com", "/admin?x=1", "POST")
        );
        let nginx: &[(&str, &[u8])] = &[
            ("Host", b"auth.example.com"),
            ("X-Original-URL", b"https://App.example.com:8443/a/../b?c"),
            ("X-Original-Method", b"DELETE"),
        ];
        assert_eq!(
            judged(nginx, &[]),
            ok("App.example.com:8443", "/a/../b?c", "DELETE")
        );
        assert_eq!(
            judged(&[("Host", b"h.example:81")], &[]),
            ok("h.example:81", "/", "GET")
        );
        assert_eq!(judged(&[], &[]), ok("", "/", "GET"));
        // An empty header counts as absent; a path-only X-Original-URL
        // gives a path and no host.
        assert_eq!(
            judged(
                &[
                    ("Host", b"h"),
                    ("X-Forwarded-Uri", b" "),
                    ("X-Original-URL", b"/only/a/path")
                ],
                &[]
            ),
            ok("h", "/only/a/path", "GET")
        );
    }

    #[test]
    fn a_peer_outside_trusted_proxies_is_judged_by_its_own_request() {
        let forged: &[(&str, &[u8])] = &[
            ("Host", b"auth.example.com"),
            ("X-Forwarded-Host", b"app.example.com"),
            ("X-Forwarded-Uri", b"/public"),
            ("X-Forwarded-Method", b"GET"),
            ("X-Original-URL", b"http://app.example.com/public"),
        ];
        let req = request("10.0.0.5", "POST", forged);
        assert_eq!(
            coordinates(&req, &nets(&["127.0.0.1"])),
            Ok(Coordinates {
                host: "auth.example.com",
                path: "/",
                method: "POST"
            })
        );
        let req = request("[::ffff:127.0.0.1]", "POST", forged);
        assert_eq!(
            coordinates(&req, &nets(&["127.0.0.1"])).map(|c| c.path),
            Ok("/public")
        );
    }

    #[test]
    fn unreadable_coordinates_are_refused_not_guessed() {
        let cases: &[(Headers<'_>, Unreadable)] = &[
            (
                &[("X-Forwarded-Uri", "/caf\u{e9}".as_bytes())],
                Unreadable::NotAscii(X_FORWARDED_URI),
            ),
            (
                &[("X-Forwarded-Host", b"\xffevil")],
                Unreadable::NotAscii(X_FORWARDED_HOST),
            ),
            (
                &[
                    ("X-Forwarded-Uri", b"/public"),
                    ("X-Forwarded-Uri", b"/admin"),
                ],
                Unreadable::Repeated(X_FORWARDED_URI),
            ),
            (
                &[("X-Forwarded-Uri", b"http://app.example.com/admin")],
                Unreadable::NotAPath(X_FORWARDED_URI),
            ),
            (
                &[("X-Original-URL", b"ftp://app.example.com/admin")],
                Unreadable::NotAPath(X_ORIGINAL_URL),
            ),
            (
                &[
                    ("X-Forwarded-Method", b"GET"),
                    ("X-Forwarded-Method", b"POST"),
                ],
                Unreadable::Repeated(X_FORWARDED_METHOD),
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(judged(headers, &[]), Err(expected.clone()), "{headers:?}");
        }
    }
}
