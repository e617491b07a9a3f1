//! `/verify`: forward auth for nginx `auth_request`, Traefik `ForwardAuth`
//! and Caddy `forward_auth`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::Guard;

use super::error::ApiError;
use super::{proxied, AppState};
use crate::access::{Decision, Outcome, ProxiedRequest, Subject, Why};
use crate::auth::Identity;
use crate::config::Policy;
use crate::ops::metrics::VerifyResult;

/// Judges the proxied request with the access rules: 200 with the
/// `Remote-*` identity headers (or, for `bypass`, with them all empty), 401
/// or (with `?rd=`) 302 to the login page, or 403. Counted and timed when
/// metrics are on.
pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(metrics) = &state.metrics else {
        return judge(&req, &state).await.map(|(_, response)| response);
    };
    let started = Instant::now();
    let answer = judge(&req, &state).await;
    let result = match &answer {
        Ok((result, _)) => *result,
        Err(ApiError::Unauthorized) => VerifyResult::Unauthenticated,
        Err(ApiError::Forbidden(_)) => VerifyResult::Forbidden,
        Err(_) => VerifyResult::Error,
    };
    metrics.verify(result, started.elapsed());
    answer.map(|(_, response)| response)
}

/// The answer, and which success it is.
///
/// The session is checked only when the decision needs one: `bypass` and
/// `deny` answer without it. With no rules (the default) the rules cost a
/// look at the path and nothing more.
async fn judge(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(VerifyResult, HttpResponse), ApiError> {
    let coordinates = match proxied::coordinates(req, &state.trusted_proxies) {
        Ok(coordinates) => coordinates,
        Err(unreadable) => {
            tracing::debug!("verify: 403, the request is refused: {unreadable}");
            return Err(ApiError::Forbidden(REFUSED));
        }
    };
    let rules = state.access.current();
    let request = ProxiedRequest {
        host: coordinates.host,
        path: coordinates.path,
        method: coordinates.method,
        // Resolved only for rules that look at it: the forwarded-for chain
        // is walked per request otherwise for nothing.
        ip: if rules.use_networks() {
            state.client_address(req).ip
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
    };
    // Without a user first: up to the first rule naming subjects, the walk
    // is the same for every user, and most requests end before one.
    let anonymous = rules.decide(&request, None);
    match anonymous.outcome {
        Outcome::Bypass => return Ok((VerifyResult::Bypass, bypass_response())),
        Outcome::Deny => return Err(denied(&anonymous)),
        Outcome::NeedsLogin | Outcome::Allow => {}
    }
    // A rule names subjects: the same list judges again with the user, so
    // a reload during the token check cannot mix two lists. Otherwise the
    // list is let go before waiting.
    let needs_otp = anonymous.why == Why::Policy(Policy::TwoFactor);
    let rules = match anonymous.why {
        Why::SubjectsNeedLogin => Some(Guard::into_inner(rules)),
        _ => {
            drop(rules);
            None
        }
    };
    if let Some((token, _)) = state.token(req) {
        if let Some(identity) = state.auth.check_token(token).await? {
            let outcome = match &rules {
                // The anonymous walk ended on a policy: the session is
                // enough, unless that policy wants a second factor.
                None if needs_otp && !identity.amr.has_otp() => Outcome::NeedsLogin,
                None => Outcome::Allow,
                Some(rules) => {
                    let subject = Subject {
                        username: &identity.username,
                        groups: &identity.groups,
                        two_factor: identity.amr.has_otp(),
                    };
                    let decision = rules.decide(&request, Some(&subject));
                    if decision.outcome == Outcome::Deny {
                        // Never the login page: the user is logged in, and
                        // would come straight back here.
                        return Err(denied(&decision));
                    }
                    decision.outcome
                }
            };
            match outcome {
                Outcome::Allow => return Ok((VerifyResult::Allow, identity_response(identity))),
                Outcome::Bypass => return Ok((VerifyResult::Bypass, bypass_response())),
                // A session without the factor a `two_factor` rule needs:
                // as if not logged in, so the login page can step it up.
                Outcome::NeedsLogin | Outcome::Deny => {}
            }
        }
    }
    let login_url = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    if let Some(login_url) = login_url {
        let origin = state.request_origin(req);
        // The login URL comes from the query string: hold it to the same
        // allow-list as any redirect, or /verify becomes an open redirect.
        if state.hosts.redirect_allowed(&login_url, origin.as_ref()) {
            let location = with_rd(&login_url, &original_url(req));
            let response = HttpResponse::Found()
                .insert_header((header::LOCATION, location))
                .insert_header(super::error::no_store())
                .finish();
            return Ok((VerifyResult::Unauthenticated, response));
        }
    }
    Err(ApiError::Unauthorized)
}

const REFUSED: &str = "the request is refused: its path or forwarded headers are read \
                       differently by different servers";
const DENIED: &str = "the access rules deny this request";

/// The 403 for a `deny` decision (a rule, the default, or a refused path).
fn denied(decision: &Decision) -> ApiError {
    tracing::debug!("verify: 403, {decision}");
    ApiError::Forbidden(match decision.why {
        Why::UnsafePath(_) => REFUSED,
        _ => DENIED,
    })
}

// Built once: a header name given as text is parsed and lowercased into a
// fresh allocation on every request, and this answer is the hot path.
const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
const REMOTE_USER_ID: HeaderName = HeaderName::from_static("remote-user-id");
const REMOTE_EMAIL: HeaderName = HeaderName::from_static("remote-email");
const REMOTE_NAME: HeaderName = HeaderName::from_static("remote-name");
const REMOTE_GROUPS: HeaderName = HeaderName::from_static("remote-groups");

/// `bypass`: 200 with every `Remote-*` header present and empty, so that a
/// proxy copying them overwrites any a client sent.
fn bypass_response() -> HttpResponse {
    let mut response = HttpResponse::new(StatusCode::OK);
    let headers = response.headers_mut();
    let (name, value) = super::error::no_store();
    headers.insert(name, value);
    for name in [
        REMOTE_USER,
        REMOTE_USER_ID,
        REMOTE_EMAIL,
        REMOTE_NAME,
        REMOTE_GROUPS,
    ] {
        headers.insert(name, HeaderValue::from_static(""));
    }
    response
}

fn identity_response(identity: Identity) -> HttpResponse {
    let mut response = HttpResponse::new(StatusCode::OK);
    let headers = response.headers_mut();
    let (name, value) = super::error::no_store();
    headers.insert(name, value);
    let mut put = |name: HeaderName, value: String| {
        // The text moves into the header as is (no copy). UTF-8 names go
        // out as raw bytes (obs-text), as other forward-auth servers do; a
        // value that is not a valid header is left out.
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.insert(name, value);
        }
    };
    put(REMOTE_USER, identity.username);
    if let Some(email) = identity.email {
        put(REMOTE_EMAIL, email);
    }
    if let Some(name) = identity.display_name {
        put(REMOTE_NAME, name);
    }
    headers.insert(REMOTE_USER_ID, HeaderValue::from(identity.user_id));
    // Always present, empty for no group: a proxy copying it then
    // overwrites whatever a client sent under that name.
    headers.insert(REMOTE_GROUPS, groups_header(identity.groups));
    response
}

/// The groups joined by commas, in the identity's (sorted) order: no copy
/// for one group, one allocation for several, none for none. Group names
/// hold no comma and only header-safe ASCII (`GroupName`, schema.sql).
fn groups_header(mut groups: Vec<String>) -> HeaderValue {
    let joined = match groups.len() {
        0 => return HeaderValue::from_static(""),
        1 => groups.pop().unwrap_or_default(),
        _ => groups.join(","),
    };
    HeaderValue::from_maybe_shared(Bytes::from(joined))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The URL the user originally asked for, as the proxy reports it.
fn original_url(req: &HttpRequest) -> String {
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(url) = get("x-original-url") {
        return url.to_owned();
    }
    let proto = get("x-forwarded-proto").unwrap_or("http");
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or("localhost");
    let uri = get("x-forwarded-uri").unwrap_or("/");
    format!("{proto}://{host}{uri}")
}

/// `login_url` with `rd=<original>` added to its query.
fn with_rd(login_url: &str, original: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
    let (base, fragment) = match login_url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (login_url, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut location = format!("{base}{separator}rd={encoded}");
    if let Some(fragment) = fragment {
        location.push('#');
        location.push_str(fragment);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_groups_header_joins_the_names_with_commas() {
        let groups = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert_eq!(groups_header(groups(&[])), "");
        assert_eq!(groups_header(groups(&["admins"])), "admins");
        assert_eq!(
            groups_header(groups(&["Admins", "beta", "ops"])),
            "Admins,beta,ops"
        );
    }

    #[test]
    fn the_original_url_comes_from_forwarded_headers_or_x_original_url() {
        let req = TestRequest::default()
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header(("X-Forwarded-Host", "app.example.com"))
            .insert_header(("X-Forwarded-Uri", "/a?b=c"))
            .to_http_request();
        assert_eq!(original_url(&req), "https://app.example.com/a?b=c");
        let req = TestRequest::default()
            .insert_header(("X-Original-URL", "https://x.example.com/y"))
            .to_http_request();
        assert_eq!(original_url(&req), "https://x.example.com/y");
    }

    #[test]
    fn rd_is_appended_encoded() {
        assert_eq!(
            with_rd(
                "https://auth.example.com/login",
                "https://app.example.com/a?b=c&d"
            ),
            "https://auth.example.com/login?rd=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3Dc%26d"
        );
        assert_eq!(
            with_rd("/login?x=1#f", "http://h/"),
            "/login?x=1&rd=http%3A%2F%2Fh%2F#f"
        );
    }
}
