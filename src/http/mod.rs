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

mod health;
mod introspect;
mod login;
mod logout;
mod me;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::{Auth, Identity};
use crate::config::{Config, IpNet};
use cookie::CookieSettings;
use error::ApiError;
use extract::{ClientAddress, TokenSource};
use redirect::HostPolicy;

/// What every handler shares: the use cases and the HTTP-side settings.
pub struct AppState {
    pub auth: Auth,
    pub cookie: CookieSettings,
    pub hosts: HostPolicy,
    pub trusted_proxies: Vec<IpNet>,
    warned_untrusted_forwarding: AtomicBool,
}

impl AppState {
    /// The HTTP state for `config` around `auth`.
    pub fn new(config: &Config, auth: Auth) -> AppState {
        AppState {
            auth,
            cookie: CookieSettings::from_config(&config.session),
            hosts: HostPolicy::from_config(config),
            trusted_proxies: config.server.trusted_proxies.clone(),
            warned_untrusted_forwarding: AtomicBool::new(false),
        }
    }

    /// The request's token and where it came from.
    fn token<'r>(&self, req: &'r HttpRequest) -> Option<(&'r str, TokenSource)> {
        extract::request_token(req, &self.cookie.name)
    }

    /// The client address; warns once when forwarding headers come from an
    /// untrusted peer (SPEC: `trusted_proxies` should then be set).
    fn client_address(&self, req: &HttpRequest) -> ClientAddress {
        let address = extract::client_address(req, &self.trusted_proxies);
        if address.untrusted_forwarding
            && !self
                .warned_untrusted_forwarding
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                peer = %address.ip,
                "X-Forwarded-For received from a peer not in server.trusted_proxies; \
                 the per-address login limit is skipped for such requests. \
                 Set server.trusted_proxies to your proxy's address."
            );
        }
        address
    }

    fn request_host(&self, req: &HttpRequest) -> Option<String> {
        extract::request_host(req, &self.trusted_proxies)
    }

    /// SPEC: a state-changing request authenticated by the cookie whose
    /// `Origin` names another site gets 403. Bearer requests are not subject
    /// to it: browsers never attach a bearer header on their own.
    fn check_origin(&self, req: &HttpRequest, source: TokenSource) -> Result<(), ApiError> {
        if source != TokenSource::Cookie {
            return Ok(());
        }
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let host = self.request_host(req);
        match origin.to_str() {
            Ok(origin) if self.hosts.origin_allowed(origin, host.as_deref()) => Ok(()),
            _ => Err(ApiError::Forbidden("cross-site request refused")),
        }
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
        .service(web::resource("/logout").route(web::post().to(logout::logout)))
        .service(web::resource("/me").route(web::get().to(me::me)))
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
