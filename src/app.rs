//! Wiring: store, use cases, routes and the background purges, on a listener.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App as ActixApp, HttpServer};

use crate::access::SharedRules;
use crate::auth::{Auth, AuthError};
use crate::config::Config;
use crate::http::{self, body::MAX_BODY_BYTES, AppState};
use crate::ops::metrics::Metrics;
use crate::store::{clients, Store, StoreError};

/// How often expired sessions are deleted from the file.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How long, once the server has stopped, closing the database waits for
/// the workers to let go of it: they do within milliseconds, unless a
/// request cut off by `server.shutdown_timeout` still holds it.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot serve on the listener")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {address} ({key}): {cause}")]
    Listen {
        key: &'static str,
        address: SocketAddr,
        cause: std::io::Error,
    },
}

/// A built server, ready to run.
pub struct App {
    server: Server,
    local_addr: SocketAddr,
    /// The `metrics.listen` listener and its address, when set.
    metrics_server: Option<(Server, SocketAddr)>,
    auth: Auth,
    /// Closed last, once the server has stopped.
    store: Store,
    access: SharedRules,
    shutdown_timeout: Duration,
    /// `audit.retention`, when old audit events are purged.
    audit_retention: Option<Duration>,
    /// The `SIGHUP` listener, when one was started.
    reloader: Option<tokio::task::JoinHandle<()>>,
    /// The `SIGTERM`/`SIGINT`/`SIGQUIT` listener, when one was started.
    stopper: Option<tokio::task::JoinHandle<()>>,
}

/// Opens the database, starts the hashing threads and binds the routes to
/// `listener`. Must be called inside a tokio (actix) runtime.
pub fn build(config: &Config, listener: TcpListener) -> Result<App, StartError> {
    // First, like the main listener: a taken port is the one error said.
    let metrics_listener = match config.metrics.listen {
        Some(address) => Some(
            TcpListener::bind(address).map_err(|cause| StartError::Listen {
                key: "metrics.listen",
                address,
                cause,
            })?,
        ),
        None => None,
    };
    let store = Store::open_config(&config.database)?;
    if !clients::any_exist(&store.conn()?)? {
        tracing::warn!(
            "no introspection clients exist: POST /introspect is open to anyone who can reach it. \
             Add one with `latchkey client add <id>`."
        );
    }
    let readers = store.reader_closer();
    let metrics = config
        .metrics
        .listen
        .map(|_| Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))));
    let auth = Auth::new(config, store.clone(), metrics.clone())?;
    let metrics_server = match (metrics_listener, metrics.clone()) {
        (Some(listener), Some(metrics)) => Some(metrics_server(listener, metrics, auth.clone())?),
        _ => None,
    };
    let state = web::Data::new(AppState::new(config, auth.clone(), metrics));
    let access = state.access.clone();
    tracing::info!(
        "access rules loaded ({} rules, default_policy {})",
        access.current().len(),
        config.access.default_policy
    );
    let local_addr = listener.local_addr()?;
    let shutdown_timeout = config.server.shutdown_timeout;
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(state.clone())
            // Dropped on the worker's thread when the worker stops.
            .app_data(readers.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(http::body::RejectOversized)
            .wrap(ErrorHandlers::new().default_handler(http::error::json_errors))
            // Outermost, so that lines logged by the layers above carry it.
            .wrap(http::request_id::RequestIds)
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(config.worker_count())
    .shutdown_timeout(shutdown_timeout.as_secs())
    // `serve` handles the signals itself (App::stop_on_signals): actix's
    // handlers would stop at once on SIGINT, and tests in this process
    // must not have their signals taken.
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(App {
        server,
        local_addr,
        metrics_server,
        auth,
        store,
        access,
        shutdown_timeout,
        audit_retention: config.audit.purge_after(),
        reloader: None,
        stopper: None,
    })
}

impl App {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(_, address)| *address)
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

    /// From now on, `SIGTERM` and `SIGINT` stop the server gracefully: no
    /// new connection is accepted, requests in flight get up to
    /// `server.shutdown_timeout` to finish, then [`App::run`] closes the
    /// database and returns. Later ones are ignored (the wait is bounded).
    /// `SIGQUIT` exits at once, also during that wait: what was answered
    /// is on disk, and SQLite folds the rest of its WAL in at the next
    /// start. Call it before announcing that the server is ready.
    #[cfg(unix)]
    pub fn stop_on_signals(&mut self) -> std::io::Result<()> {
        use std::task::Poll;
        use tokio::signal::unix::{signal, SignalKind};
        let mut terms = signal(SignalKind::terminate())?;
        let mut interrupts = signal(SignalKind::interrupt())?;
        let mut quits = signal(SignalKind::quit())?;
        let (handle, timeout) = (self.server.handle(), self.shutdown_timeout);
        self.stopper = Some(tokio::spawn(async move {
            let mut stopping = false;
            loop {
                let name = std::future::poll_fn(|cx| {
                    for (name, signals) in [
                        ("SIGTERM", &mut terms),
                        ("SIGINT", &mut interrupts),
                        ("SIGQUIT", &mut quits),
                    ] {
                        if signals.poll_recv(cx).is_ready() {
                            return Poll::Ready(name);
                        }
                    }
                    Poll::Pending
                })
                .await;
                if name == "SIGQUIT" {
                    tracing::warn!(
                        "SIGQUIT received; exiting without waiting for requests in flight"
                    );
                    std::process::exit(0);
                }
                if stopping {
                    tracing::info!("{name} received; already stopping");
                    continue;
                }
                stopping = true;
                tracing::info!(
                    "{name} received; no new connections, waiting up to {}s for requests in flight",
                    timeout.as_secs()
                );
                // Sent at once; the server future (App::run) does the rest.
                drop(handle.stop(true));
            }
        }));
        Ok(())
    }

    /// Serves until stopped (by the handle or, after
    /// [`App::stop_on_signals`], a signal), purging expired sessions in the
    /// background; then stops the background tasks and closes the database.
    pub async fn run(self) -> std::io::Result<()> {
        let (stop_purging, stop) = tokio::sync::oneshot::channel();
        let purge = tokio::spawn(purge_in_background(
            self.auth.clone(),
            self.audit_retention,
            stop,
        ));
        let metrics = self.metrics_server.map(|(server, _)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        // Scrapes go on while requests in flight finish, then stop too.
        if let Some((handle, task)) = metrics {
            handle.stop(true).await;
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the metrics listener did not stop cleanly");
            }
        }
        // No request runs any more (or shutdown_timeout cut it off). A
        // purge under way finishes; the listeners hold no database handle.
        drop(stop_purging);
        if let Err(e) = purge.await {
            tracing::warn!(error = %e, "the session purge did not stop cleanly");
        }
        for task in [self.reloader, self.stopper].into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        drop(self.auth);
        match self.store.close(CLOSE_WAIT).await {
            Ok(true) => tracing::info!("database closed"),
            Ok(false) => tracing::info!(
                "database closed while requests cut off by the shutdown timeout still held \
                 it; SQLite keeps its -wal and -shm files until the next start"
            ),
            Err(e) => tracing::warn!(error = %e, "closing the database failed"),
        }
        result
    }
}

/// The `metrics.listen` listener: `GET /metrics` on one worker, apart from
/// the main listener, which never serves it.
fn metrics_server(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    auth: Auth,
) -> Result<(Server, SocketAddr), StartError> {
    let local_addr = listener.local_addr()?;
    let state = web::Data::new(http::metrics::MetricsState { metrics, auth });
    let server = HttpServer::new(move || {
        ActixApp::new()
            .app_data(state.clone())
            .configure(http::metrics::configure)
            .default_service(web::to(http::metrics::not_found))
    })
    .workers(1)
    // A scrape takes milliseconds; nothing to wait long for at a stop.
    .shutdown_timeout(2)
    .disable_signals()
    .listen(listener)?
    .run();
    tracing::info!("metrics listening on http://{local_addr}/metrics");
    Ok((server, local_addr))
}

/// Deletes expired sessions, login challenges and idle login limits, and
/// audit events older than `audit_retention`, now and every
/// [`PURGE_INTERVAL`], until `stop` is sent or dropped (a purge under way
/// finishes first).
async fn purge_in_background(
    auth: Auth,
    audit_retention: Option<Duration>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        match auth.purge_expired().await {
            Ok((0, 0)) => {}
            Ok((sessions, challenges)) => {
                tracing::debug!(
                    sessions,
                    challenges,
                    "purged expired sessions and challenges"
                )
            }
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
        if let Some(retention) = audit_retention {
            match auth.purge_audit(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(events = n, "purged old audit events"),
                Err(e) => tracing::warn!(error = %e, "purging old audit events failed"),
            }
        }
        if tokio::time::timeout(PURGE_INTERVAL, &mut stop)
            .await
            .is_ok()
        {
            return;
        }
    }
}
