//! What answer each request must get: the rules of the SPEC that hold for
//! any input. Where the rule is latchkey's own policy (which hosts a
//! redirect may go to), the oracle asks that policy rather than restating it.

use latchkey::http::extract::{strip_port, RequestOrigin};
use serde_json::Value;

use super::raw::{Answer, Request};
use super::{World, BASE64URL};

/// What the login page must never echo unescaped: the start of [`super::MARKUP`].
const MARKUP_SEEN: &str = "<x-fuzz";

/// The path the server routes on: no authority, no query, percent-decoded.
fn route_of(target: &str) -> String {
    let path = ["http://", "https://"]
        .iter()
        .find_map(|scheme| target.strip_prefix(scheme))
        .map_or(target, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when one of `tokens` appears in `haystack` as a whole token: not
/// run together with other token characters. A near miss (one character
/// changed, a suffix, a prefix) does not count.
fn carries_token(haystack: &[u8], tokens: &[String]) -> bool {
    let is_token_byte = |b: &u8| BASE64URL.contains(b);
    tokens.iter().any(|token| {
        let token = token.as_bytes();
        haystack
            .windows(token.len())
            .enumerate()
            .any(|(at, window)| {
                window == token
                    && (at == 0 || !is_token_byte(&haystack[at - 1]))
                    && haystack
                        .get(at + token.len())
                        .is_none_or(|b| !is_token_byte(b))
            })
    })
}

/// The SPEC's error codes, by status; actix's own 404 and 405 answer
/// `not_found` and `method_not_allowed`, other client errors `invalid_request`.
fn codes_for(status: u16) -> &'static [&'static str] {
    match status {
        401 => &["invalid_credentials", "unauthorized"],
        403 => &["forbidden"],
        404 => &["not_found"],
        405 => &["method_not_allowed"],
        413 => &["payload_too_large"],
        415 => &["unsupported_media_type"],
        429 => &["too_many_requests"],
        _ => &["invalid_request"],
    }
}

/// True when `location` sends the browser only where latchkey's own host
/// policy allows a redirect: a path on this site, or an http(s) URL on a
/// friendly host. Lenient on purpose: any host the request itself named
/// counts as the request's host, reached with the scheme and port the
/// location names (the policy's same-origin rule is pinned by its own tests).
///
/// The policy is asked about the part before the query: that part alone
/// says where the browser goes, and a 302 from `/verify` appends the whole
/// original URL to the login URL (which may take it past the length the
/// policy allows a redirect target itself).
fn friendly_location(location: &str, request: &Request, world: &World) -> bool {
    let target = location.split(['?', '#']).next().unwrap_or_default();
    let mut named: Vec<String> = vec![world.host.clone()];
    for header in ["host", "x-forwarded-host"] {
        for value in request.header_values(header) {
            let value = String::from_utf8_lossy(value);
            named.extend(value.split(',').map(|v| v.trim().to_ascii_lowercase()));
        }
    }
    let (scheme, port) = url::Url::parse(target).map_or(("http".to_owned(), 80), |url| {
        let port = url.port_or_known_default().unwrap_or(80);
        (url.scheme().to_owned(), port)
    });
    named.iter().any(|host| {
        [host.as_str(), strip_port(host)].into_iter().any(|host| {
            let origin = RequestOrigin {
                scheme: scheme.clone(),
                host: host.to_owned(),
                port,
            };
            world.hosts.redirect_allowed(target, Some(&origin))
        })
    })
}

/// Everything that must hold of one answer.
pub(super) fn check(request: &Request, answer: &Answer, world: &World) -> Result<(), String> {
    let status = answer.status;
    if status >= 500 {
        return Err(format!("a {status} server error"));
    }
    let head_only = request.method == "HEAD";
    let route = route_of(&request.target);
    let content_type = answer
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let html = content_type.starts_with("text/html");
    if html && String::from_utf8_lossy(&answer.body).contains(MARKUP_SEEN) {
        return Err("the HTML page echoes markup unescaped".into());
    }

    if status >= 400 {
        // Rejected by actix's HTTP parser before any application code runs.
        if answer.refused_by_parser() {
            return Ok(());
        }
        if head_only {
            return Ok(());
        }
        if request.method == "POST" && route == "/login" && html {
            return if String::from_utf8_lossy(&answer.body).contains("action=\"/login\"") {
                Ok(())
            } else {
                Err("an HTML error that is not the login form".into())
            };
        }
        if !content_type.starts_with("application/json") {
            return Err(format!("an error with content type {content_type:?}"));
        }
        let body: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("an error body that is not JSON: {e}"))?;
        let object = body
            .as_object()
            .ok_or("an error body that is not an object")?;
        let code = body["error"].as_str().ok_or("no `error` string")?;
        let description = body["error_description"]
            .as_str()
            .ok_or("no `error_description` string")?;
        if object.len() != 2 || description.is_empty() {
            return Err("an error body beyond the SPEC's two fields".into());
        }
        if !codes_for(status).contains(&code) {
            return Err(format!("error code {code:?} with status {status}"));
        }
        if code == "unauthorized" && answer.header("www-authenticate").is_none() {
            return Err("a 401 without WWW-Authenticate".into());
        }
        if status == 429
            && !answer
                .header("retry-after")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("a 429 without Retry-After in seconds".into());
        }
        return Ok(());
    }

    if content_type.starts_with("application/json") && !head_only && status != 204 {
        serde_json::from_slice::<Value>(&answer.body)
            .map_err(|e| format!("a JSON answer that does not parse: {e}"))?;
    }
    if (300..400).contains(&status) {
        let location = answer
            .header("location")
            .ok_or("a redirect without Location")?;
        if !friendly_location(location, request, world) {
            return Err(format!("an open redirect to {location:?}"));
        }
    }
    let authenticated = match (request.method.as_str(), route.as_str()) {
        (_, "/verify") => status == 200,
        ("GET", "/me" | "/sessions") => status == 200,
        ("DELETE", path) => path.starts_with("/sessions/") && status == 204,
        _ => false,
    };
    if authenticated {
        let credentials: Vec<u8> = request
            .header_values("authorization")
            .chain(request.header_values("cookie"))
            .flat_map(|v| [v, b"\n"].concat())
            .collect();
        if !carries_token(&credentials, &world.held) {
            return Err("authenticated without a token the client holds".into());
        }
    }
    if route == "/verify" && status == 200 && answer.header("remote-user").is_none() {
        return Err("a 200 from /verify without Remote-User".into());
    }
    if request.method == "POST" && route == "/introspect" && status == 200 {
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        match body["active"].as_bool() {
            Some(false) if body.as_object().is_some_and(|o| o.len() == 1) => {}
            Some(true) => {
                let decoded: Vec<u8> = url::form_urlencoded::parse(&request.body)
                    .flat_map(|(_, v)| [v.as_bytes(), b"\n"].concat())
                    .collect();
                if !carries_token(&request.body, &world.held)
                    && !carries_token(&decoded, &world.held)
                {
                    return Err("active for a token the client does not hold".into());
                }
                if !body["username"].is_string() || !body["sub"].is_string() {
                    return Err("an active answer without username and sub".into());
                }
            }
            _ => return Err("an introspection answer that is not RFC 7662".into()),
        }
    }
    if request.method == "GET" && route == "/healthz" && status == 200 {
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        if body != serde_json::json!({ "status": "ok" }) {
            return Err("/healthz without {\"status\": \"ok\"}".into());
        }
    }
    Ok(())
}
