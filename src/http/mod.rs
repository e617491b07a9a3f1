//! HTTP: actix-web handlers over [`Auth`], and no rules of their own.
//!
//! [`configure`] is the whole route table. Handlers parse requests, call one
//! `Auth` use case and shape its answer; status codes and JSON shapes follow
//! SPEC.md, errors go through [`error::ApiError`].

pub mod body;
pub mod cookie;
pub mod error;
pub mod extract;
pub mod page;
pub mod redirect;
pub mod request_id;

mod account;
mod health;
mod introspect;
mod login;
mod logout;
mod me;
pub mod metrics;
mod proxied;
mod qr;
mod second_factor;
mod verify;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::access::{Outcome, ProxiedRequest, Rules, SharedRules, Subject, Why};
use crate::auth::audit::Requester;
use crate::auth::{Auth, Identity};
use crate::config::{Config, IpNet, Policy};
use crate::ops::metrics::Metrics;
use cookie::CookieSettings;
use error::ApiError;
use extract::{ClientAddress, RequestOrigin, TokenSource};
use redirect::HostPolicy;

/// Most peers remembered as already warned about; past that, new ones are
/// not named, so a flood of peers cannot grow the set or the log.
const MAX_WARNED_PEERS: usize = 1024;

/// What every handler shares: the use cases and the HTTP-side settings.
pub struct AppState {
    pub auth: Auth,
    pub cookie: CookieSettings,
    pub hosts: HostPolicy,
    pub trusted_proxies: Vec<IpNet>,
    /// The access rules in force; replaced on `SIGHUP`.
    pub access: SharedRules,
    /// Where answers are counted, when `metrics.listen` is set.
    pub metrics: Option<Arc<Metrics>>,
    warned_peers: Mutex<WarnedPeers>,
}

impl AppState {
    /// The HTTP state for `config` around `auth`, counting answers in
    /// `metrics` when given.
    pub fn new(config: &Config, auth: Auth, metrics: Option<Arc<Metrics>>) -> AppState {
        AppState {
            auth,
            cookie: CookieSettings::from_config(&config.session),
            hosts: HostPolicy::from_config(config),
            trusted_proxies: config.server.trusted_proxies.clone(),
            access: SharedRules::new(Rules::compile(&config.access)),
            metrics,
            warned_peers: Mutex::default(),
        }
    }

    /// The request's token and where it came from.
    fn token<'r>(&self, req: &'r HttpRequest) -> Option<(&'r str, TokenSource)> {
        extract::request_token(req, &self.cookie.name)
    }

    /// The client address; warns once per peer that sends `X-Forwarded-For`
    /// without being a trusted proxy (SPEC: the header is ignored then).
    fn client_address(&self, req: &HttpRequest) -> ClientAddress {
        let address = extract::client_address(req, &self.trusted_proxies);
        if address.untrusted_forwarding {
            match first_sighting(&self.warned_peers, address.ip) {
                Sighting::New => tracing::warn!(
                    peer = %address.ip,
                    "X-Forwarded-For received from a peer not in server.trusted_proxies; \
                     the header is ignored and the peer's own address is what the login \
                     limits count, sessions record and access rules with networks match. \
                     If this peer is your proxy, add its address to server.trusted_proxies."
                ),
                Sighting::LastNamed => tracing::warn!(
                    "X-Forwarded-For received from more than {MAX_WARNED_PEERS} untrusted \
                     peers; further ones are not logged"
                ),
                Sighting::Known => {}
            }
        }
        address
    }

    /// Who sent the request, as its audit rows record them.
    fn requester(&self, req: &HttpRequest) -> Requester {
        Requester::new(self.client_address(req).ip, &extract::user_agent(req))
    }

    /// Scheme, host and port the client addressed (forwarded ones only from
    /// trusted proxies).
    fn request_origin(&self, req: &HttpRequest) -> Option<RequestOrigin> {
        extract::request_origin(req, &self.trusted_proxies)
    }

    /// True when the request's `Origin` names a site that is not friendly
    /// (`null` included). A request without `Origin` is not cross-site.
    fn sent_by_another_site(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return false;
        };
        let host = self.request_origin(req).map(|o| o.host);
        !origin
            .to_str()
            .is_ok_and(|origin| self.hosts.origin_allowed(origin, host.as_deref()))
    }

    /// SPEC: a state-changing request authenticated by the cookie whose
    /// `Origin` names another site gets 403. Bearer requests are not subject
    /// to it: browsers never attach a bearer header on their own.
    fn check_origin(&self, req: &HttpRequest, source: TokenSource) -> Result<(), ApiError> {
        if source == TokenSource::Cookie && self.sent_by_another_site(req) {
            return Err(ApiError::Forbidden("cross-site request refused"));
        }
        Ok(())
    }

    /// SPEC (login CSRF): a form login sent by another site, by its
    /// `Origin` or by the browser's `Sec-Fetch-Site: cross-site`, gets 403,
    /// so no other site can log a browser into an account of its choosing.
    fn check_login_origin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let cross_site_fetch = req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site_fetch || self.sent_by_another_site(req) {
            return Err(ApiError::Forbidden("cross-site login refused"));
        }
        Ok(())
    }

    /// True when the access rules at `rd`, a page a login would send the
    /// browser back to, need a second factor that `identity`'s session
    /// lacks: what makes the login page step the session up (or lead its
    /// user to enrollment). Judged as `/verify` would judge a GET of it from
    /// this client; an `rd` a login would not follow counts for nothing.
    fn wants_second_factor(&self, req: &HttpRequest, rd: &str, identity: &Identity) -> bool {
        let origin = self.request_origin(req);
        if !self.hosts.redirect_allowed(rd, origin.as_ref()) {
            return false;
        }
        let (host, path) = if rd.starts_with('/') {
            match &origin {
                Some(origin) => (origin.host.as_str(), rd),
                None => return false,
            }
        } else {
            match crate::access::check::split_url(rd) {
                Ok(split) => split,
                Err(_) => return false,
            }
        };
        let request = ProxiedRequest {
            host,
            path,
            method: "GET",
            ip: self.client_address(req).ip,
        };
        let subject = Subject {
            username: &identity.username,
            groups: &identity.groups,
            two_factor: false,
        };
        let decision = self.access.current().decide(&request, Some(&subject));
        decision.outcome == Outcome::NeedsLogin && decision.why == Why::Policy(Policy::TwoFactor)
    }

    /// The identity behind the request's token, or 401.
    async fn identity(&self, req: &HttpRequest) -> Result<(Identity, TokenSource), ApiError> {
        let (token, source) = self.token(req).ok_or(ApiError::Unauthorized)?;
        let identity = self
            .auth
            .check_token(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok((identity, source))
    }
}

/// Whether a peer is new to the warned set.
#[derive(Debug, PartialEq, Eq)]
enum Sighting {
    /// Not seen before: name it.
    New,
    /// Seen, or the set is full and that was said already.
    Known,
    /// The set just became full: say so, once.
    LastNamed,
}

/// The untrusted peers already warned about.
#[derive(Debug, Default)]
struct WarnedPeers {
    peers: HashSet<IpAddr>,
    /// The set is full and the log said so.
    full: bool,
}

/// Records `peer` among the `warned` (at most [`MAX_WARNED_PEERS`]).
fn first_sighting(warned: &Mutex<WarnedPeers>, peer: IpAddr) -> Sighting {
    // Plain values only: a poisoned set is still sound.
    let mut warned = warned.lock().unwrap_or_else(|p| p.into_inner());
    if warned.peers.contains(&peer) {
        Sighting::Known
    } else if warned.peers.len() < MAX_WARNED_PEERS {
        warned.peers.insert(peer);
        Sighting::New
    } else if !warned.full {
        warned.full = true;
        Sighting::LastNamed
    } else {
        Sighting::Known
    }
}

/// The route table.
///
/// Routes are matched in order, so the two behind proxied requests come
/// first. No two patterns overlap: the order changes nothing else.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Forward auth: proxies may send the original method, so every method.
    cfg.service(web::resource("/verify").to(verify::verify))
        .service(web::resource("/introspect").route(web::post().to(introspect::introspect)))
        .service(
            web::resource("/login")
                .route(web::get().to(login::login_page))
                .route(web::post().to(login::login)),
        )
        .service(web::resource("/account").route(web::get().to(account::account)))
        .service(web::resource("/account/totp").route(web::post().to(account::begin)))
        .service(web::resource("/account/totp/confirm").route(web::post().to(account::confirm)))
        .service(web::resource("/account/totp/remove").route(web::post().to(account::remove)))
        .service(
            web::resource("/account/recovery-codes").route(web::post().to(account::recovery_codes)),
        )
        .service(web::resource("/logout").route(web::post().to(logout::logout)))
        .service(web::resource("/me").route(web::get().to(me::me)))
        .service(
            web::resource("/me/totp")
                .route(web::post().to(second_factor::begin))
                .route(web::delete().to(second_factor::remove)),
        )
        .service(web::resource("/me/totp/confirm").route(web::post().to(second_factor::confirm)))
        .service(
            web::resource("/me/recovery-codes")
                .route(web::post().to(second_factor::recovery_codes)),
        )
        .service(web::resource("/sessions").route(web::get().to(me::sessions)))
        .service(web::resource("/sessions/{id}").route(web::delete().to(me::delete_session)))
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .route(web::head().to(health::healthz)),
        );
}

/// Answer for unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_untrusted_peer_is_named_once_and_the_set_stays_bounded() {
        let warned = Mutex::default();
        let peer = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        assert_eq!(first_sighting(&warned, peer(1)), Sighting::New);
        assert_eq!(first_sighting(&warned, peer(1)), Sighting::Known);
        assert_eq!(first_sighting(&warned, peer(2)), Sighting::New);
        for i in 3..=MAX_WARNED_PEERS as u32 {
            assert_eq!(first_sighting(&warned, peer(i)), Sighting::New);
        }
        let more = MAX_WARNED_PEERS as u32 + 1;
        assert_eq!(first_sighting(&warned, peer(more)), Sighting::LastNamed);
        assert_eq!(first_sighting(&warned, peer(more + 1)), Sighting::Known);
        assert_eq!(first_sighting(&warned, peer(1)), Sighting::Known);
        assert_eq!(warned.lock().unwrap().peers.len(), MAX_WARNED_PEERS);
    }
}
