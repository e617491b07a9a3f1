//! Wiring: store, use cases, routes and the background purge, on a listener.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App as ActixApp, HttpServer};

use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::http::{self, body::MAX_BODY_BYTES, AppState};
use crate::store::{clients, Store, StoreError};

/// How often expired sessions are deleted from the file.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot serve on the listener")]
    Io(#[from] std::io::Error),
}

/// A built server, ready to run.
pub struct App {
    server: Server,
    local_addr: SocketAddr,
    auth: Auth,
}

/// Opens the database, starts the hashing threads and binds the routes to
/// `listener`. Must be called inside a tokio (actix) runtime.
pub fn build(config: &Config, listener: TcpListener) -> Result<App, StartError> {
    let store = Store::open(&config.database.path, config.database.pool_size)?;
    if !clients::any_exist(&*store.connection()?)? {
        tracing::warn!(
            "no introspection clients exist: POST /introspect is open to anyone who can reach it. \
             Add one with `latchkey client add <id>`."
        );
    }
    let auth = Auth::new(config, store)?;
    let state = web::Data::new(AppState::new(config, auth.clone()));
    let local_addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(http::body::RejectOversized)
            .wrap(ErrorHandlers::new().default_handler(http::error::json_errors))
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(config.worker_count())
    // A proxy retries; a shutdown need not wait long for stragglers.
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(App {
        server,
        local_addr,
        auth,
    })
}

impl App {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (by the handle, SIGINT or SIGTERM), purging
    /// expired sessions in the background.
    pub async fn run(self) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_expired_sessions(self.auth));
        let result = self.server.await;
        purge.abort();
        result
    }
}

async fn purge_expired_sessions(auth: Auth) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        interval.tick().await;
        match auth.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "purged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
    }
}
