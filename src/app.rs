//! Wiring: store, use cases, routes and the background purge, on a listener.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App as ActixApp, HttpServer};

use crate::access::SharedRules;
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
    access: SharedRules,
    /// The `SIGHUP` listener, when one was started.
    reloader: Option<tokio::task::JoinHandle<()>>,
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
    let access = state.access.clone();
    tracing::info!(
        "access rules loaded ({} rules, default_policy {})",
        access.current().len(),
        config.access.default_policy
    );
    let local_addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(http::body::RejectOversized)
            .wrap(ErrorHandlers::new().default_handler(http::error::json_errors))
            // Outermost, so that lines logged by the layers above carry it.
            .wrap(http::request_id::RequestIds)
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
        access,
        reloader: None,
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

    /// The access rules in force (what `SIGHUP` replaces).
    pub fn access_rules(&self) -> &SharedRules {
        &self.access
    }

    /// From now on, each `SIGHUP` re-reads `[access]` from `config_path`
    /// (and the environment) and swaps the rules; a bad file keeps the old
    /// ones. `required`: whether a missing file is an error. Call it before
    /// announcing that the server is ready: until then a `SIGHUP` ends the
    /// process, as it does by default.
    #[cfg(unix)]
    pub fn reload_access_rules_on_sighup(
        &mut self,
        config_path: PathBuf,
        required: bool,
    ) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let access = self.access.clone();
        self.reloader = Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let (access, path) = (access.clone(), config_path.clone());
                // Reading and parsing a file is blocking work.
                let reload =
                    tokio::task::spawn_blocking(move || access.reload_and_log(&path, required));
                if let Err(e) = reload.await {
                    tracing::error!(error = %e, "the access rules reload did not finish");
                }
            }
        }));
        Ok(())
    }

    /// Serves until stopped (by the handle, SIGINT or SIGTERM), purging
    /// expired sessions in the background.
    pub async fn run(self) -> std::io::Result<()> {
        let purge = tokio::spawn(purge_expired_sessions(self.auth));
        let result = self.server.await;
        purge.abort();
        if let Some(reloader) = self.reloader {
            reloader.abort();
        }
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
