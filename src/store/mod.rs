//! Storage: everything that touches the database, and nothing else does.
//!
//! The table modules' functions are synchronous and take a [`db::Db`] (a
//! connection, or a transaction where several statements must land
//! together); they know SQL, not the rules of sessions or passwords, and
//! write it once for every engine `Db` may stand for. What is SQLite's own
//! (the pool, WAL, the inline reader, migrations, backups, the token check's
//! point read) stays in this module and its SQLite-only neighbours.
//!
//! Async callers reach the functions through [`Store::run`], which moves
//! the work onto a blocking thread, or, for the token check's point reads,
//! through [`Store::read`], which runs them inline on the worker when that
//! cannot wait and falls back to `run`.
//! Synchronous callers (the admin use cases) take a [`Store::connection`].

pub mod audit;
pub mod backup;
pub mod clients;
pub mod copy;
pub mod db;
mod error;
pub mod files;
pub mod groups;
pub mod limits;
pub mod migrate;
pub mod pg;
mod reader;
pub mod sessions;
pub mod totp;
pub mod users;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode};
use tokio::sync::Semaphore;

pub use db::{snapshot, write, Db, DbExt, Engine, Tx};
pub use error::StoreError;
pub use reader::ReaderCloser;

use reader::Readers;

/// The pool settings of either engine: `pool_size` connections, one kept
/// open, a checkout that gives up in time, and no test query on checkout
/// (a `SELECT 1`, or a round trip, on every request of the hot path).
fn pool_builder<M: r2d2::ManageConnection>(pool_size: u32) -> r2d2::Builder<M> {
    r2d2::Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        .connection_timeout(CHECKOUT_TIMEOUT)
        .test_on_check_out(false)
}

/// A pooled SQLite connection, as handed out by [`Store::connection`].
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a writer waits for SQLite's lock before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a free pooled connection before answering 503:
/// a proxy waiting 30 s (r2d2's default) for an auth answer is a hang.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// The database: a pool of configured connections to one SQLite file, or
/// to one PostgreSQL database (chosen once, at [`Store::open_config`]).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// One permit per pooled connection. Async callers wait for a permit,
    /// not for a connection on a blocking thread: under load, waiting costs
    /// a parked task instead of one more blocking thread (tokio would start
    /// up to 512 of them, each with its stack and malloc arena).
    permits: Arc<Semaphore>,
    /// Reads [`Store::read`] could not run inline and sent to the pool.
    inline_fallbacks: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        pool: r2d2::Pool<SqliteConnectionManager>,
        /// The file, for the per-thread read connections of [`Store::read_now`].
        reader: Arc<Readers>,
    },
    Postgres {
        pool: r2d2::Pool<pg::PgManager>,
    },
}

/// A connection for synchronous callers (the administrator's use cases):
/// whichever engine the store is on, as a [`Db`].
pub enum Conn {
    Sqlite(PooledConnection),
    /// Boxed: it is twice the size of SQLite's.
    Postgres(Box<r2d2::PooledConnection<pg::PgManager>>),
}

impl Conn {
    fn db(&self) -> &dyn Db {
        match self {
            Conn::Sqlite(conn) => conn,
            Conn::Postgres(conn) => &***conn,
        }
    }
}

db::delegate_db!(Conn, self => self.db());

impl Store {
    /// Opens the database `config` names: PostgreSQL when `database.url` is
    /// set, else the SQLite file at `database.path`.
    pub fn open_config(config: &crate::config::DatabaseConfig) -> Result<Store, StoreError> {
        if config.url.is_empty() {
            Store::open(&config.path, config.pool_size)
        } else {
            Store::open_postgres(&config.url, config.pool_size)
        }
    }

    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// Fails with a message naming the file when the directory is missing or
    /// read-only, the file is not a latchkey database, or its schema is newer.
    pub fn open(path: &Path, pool_size: u32) -> Result<Store, StoreError> {
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            message: describe_open_error(&e),
        };
        // SQLite would create a new file 0644: create it 0600 first, and
        // its -wal and -shm follow (see files.rs).
        files::create_database(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            message: format!(
                "cannot create the file: {e} (does its directory exist and is it writable?)"
            ),
        })?;
        // Switch the file to WAL once, on one connection, before the pool
        // opens several at once: concurrent switches on a new file race.
        let mut first = Connection::open(path).map_err(open_error)?;
        configure(&mut first).map_err(open_error)?;
        migrate::run(&mut first, path)?;
        // Only now that the file is known to be latchkey's (someone else's
        // database is refused untouched), and while this connection keeps
        // its -wal and -shm in place.
        make_private(path);
        drop(first);

        let manager = SqliteConnectionManager::file(path).with_init(configure);
        // Every connection was checked by `configure`.
        let pool = pool_builder(pool_size)
            .build(manager)
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let reader = Readers::new(path);
        Ok(Store::on(Backend::Sqlite { pool, reader }, pool_size))
    }

    /// Connects to and migrates the PostgreSQL database at `url`.
    pub fn open_postgres(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let manager = pg::PgManager::new(url)?;
        let open_error = |message: String| StoreError::Open {
            path: crate::config::redacted_url(url).into(),
            message,
        };
        // A connection the server closed (a restart) is found broken when
        // it is returned.
        let pool = pool_builder(pool_size)
            .build(manager)
            .map_err(|e| open_error(e.to_string()))?;
        let first = pool.get().map_err(|e| open_error(e.to_string()))?;
        pg::migrate(&first, url, migrate::SCHEMA_VERSION)?;
        drop(first);
        Ok(Store::on(Backend::Postgres { pool }, pool_size))
    }

    fn on(backend: Backend, pool_size: u32) -> Store {
        Store {
            backend,
            permits: Arc::new(Semaphore::new(pool_size as usize)),
            inline_fallbacks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether other latchkey instances may use this database at the same
    /// time (PostgreSQL): state every instance must see, such as the login
    /// limits, then lives in it.
    pub fn shared_by_instances(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// Which engine the store is on.
    pub fn engine(&self) -> db::Engine {
        match self.backend {
            Backend::Sqlite { .. } => db::Engine::Sqlite,
            Backend::Postgres { .. } => db::Engine::Postgres,
        }
    }

    /// Runs `f` with a pooled connection on a blocking thread: the one bridge
    /// from async code to the database.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> Result<T, StoreError> + Send + 'static,
    {
        let permit =
            tokio::time::timeout(CHECKOUT_TIMEOUT, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| StoreError::Saturated)?
                .map_err(|_| StoreError::Saturated)?;
        let backend = self.backend.clone();
        // tokio's blocking pool (the one actix's web::block uses), without
        // tying store/ to actix-web. The PostgreSQL client must run there:
        // it drives a runtime of its own, which panics on an async worker.
        tokio::task::spawn_blocking(move || {
            pg::allow_blocking_here();
            let _permit = permit;
            // Free by now, unless the CLI holds one.
            match backend {
                Backend::Sqlite { pool, .. } => f(&pool.get()?),
                Backend::Postgres { pool } => f(&*pool.get()?),
            }
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs a point read inline when it can answer at once, else through
    /// the pool ([`Store::run`]).
    ///
    /// Only for indexed point reads on the hot path: the token check runs on
    /// every proxied request, and a hop to a blocking thread costs more than
    /// the lookup itself (docs/benchmarks.md). `f` may run twice (inline,
    /// then pooled), so it must only read. Every fallback is counted
    /// ([`Store::inline_fallbacks`]) and logged.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&dyn Db) -> Result<T, StoreError> + Send + 'static,
    {
        if let Backend::Postgres { .. } = self.backend {
            // A round trip either way: no inline path to try first.
            return self.run(move |db| f(db)).await;
        }
        match self.read_now(&f) {
            Ok(value) => Ok(value),
            Err(error) => {
                let count = self.inline_fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
                // Rare by design (SQLITE_BUSY while a checkpoint resets the
                // WAL); a steady stream means the inline path is broken, so
                // say so, at a logarithmic pace rather than per request.
                if count.is_power_of_two() {
                    tracing::warn!(%error, fallbacks = count, "inline read failed; read through the pool");
                } else {
                    tracing::debug!(%error, fallbacks = count, "inline read failed; read through the pool");
                }
                // Boxed: the pooled path's future (a timed permit wait and a
                // blocking task) would otherwise be part of, and moved with,
                // every inline read's future on the hot path.
                Box::pin(self.run(move |conn| f(conn))).await
            }
        }
    }

    /// The SQLite file's inline readers (tests count them).
    #[cfg(test)]
    fn readers(&self) -> &Readers {
        match &self.backend {
            Backend::Sqlite { reader, .. } => reader,
            Backend::Postgres { .. } => panic!("not an SQLite store"),
        }
    }

    /// How many reads [`Store::read`] has sent to the pool since the start.
    pub fn inline_fallbacks(&self) -> u64 {
        self.inline_fallbacks.load(Ordering::Relaxed)
    }

    /// Runs a read inline on this thread's read-only connection
    /// ([`reader::Readers::read_now`]).
    fn read_now<T>(
        &self,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite { reader, .. } => reader.read_now(|conn| f(conn)),
            Backend::Postgres { .. } => Err(StoreError::Task("no inline reads".to_owned())),
        }
    }

    /// For each HTTP worker to hold: closes that worker's inline reader
    /// when the worker drops it ([`ReaderCloser`]).
    pub fn reader_closer(&self) -> ReaderCloser {
        match &self.backend {
            Backend::Sqlite { reader, .. } => ReaderCloser(Some(Arc::clone(reader))),
            Backend::Postgres { .. } => ReaderCloser(None),
        }
    }

    /// A pooled connection for synchronous callers (the administrator's use
    /// cases, the CLI); blocks until one is free.
    pub fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite { pool, .. } => Conn::Sqlite(pool.get()?),
            Backend::Postgres { pool } => Conn::Postgres(Box::new(pool.get()?)),
        })
    }

    /// A pooled SQLite connection, for what only SQLite has (backups, the
    /// tests' fixtures); an error on PostgreSQL.
    pub fn connection(&self) -> Result<PooledConnection, StoreError> {
        match &self.backend {
            Backend::Sqlite { pool, .. } => Ok(pool.get()?),
            Backend::Postgres { .. } => Err(StoreError::Task(
                "this needs the SQLite database; the store is on PostgreSQL".to_owned(),
            )),
        }
    }

    /// Closes the database at shutdown, leaving the file whole and alone.
    ///
    /// SQLite folds the WAL into the file and removes `-wal` and `-shm`
    /// when the last connection closes, if that one can write: so this
    /// waits, up to `wait`, for every other handle on the store (workers,
    /// tasks, `run`s in flight) and every inline reader to be gone, then
    /// checkpoints on a connection of its own, closes the pool, and closes
    /// its own connection last. Returns whether the store was alone; if not
    /// (a request cut off by the shutdown timeout still holds it), the WAL
    /// is still checkpointed, and the files stay until the next start.
    pub async fn close(self, wait: Duration) -> Result<bool, StoreError> {
        // Each clone of the store holds `permits`, and so does each `run`
        // in flight (its permit), whether or not its caller still waits.
        let alone = |store: &Store| {
            Arc::strong_count(&store.permits) == 1
                && match &store.backend {
                    Backend::Sqlite { reader, .. } => reader.open() == 0,
                    Backend::Postgres { .. } => true,
                }
        };
        let deadline = tokio::time::Instant::now() + wait;
        while !alone(&self) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let was_alone = alone(&self);
        let Backend::Sqlite { reader, .. } = &self.backend else {
            // Nothing of PostgreSQL's lives in a file here: closing the
            // pool's connections is all (on a blocking thread: the client
            // drives a runtime of its own).
            tokio::task::spawn_blocking(move || drop(self))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?;
            return Ok(was_alone);
        };
        let path = reader.path().to_owned();
        tokio::task::spawn_blocking(move || {
            // Not a pooled one: taking one would have r2d2 open a
            // replacement on its own thread, which could outlive us.
            let last = Connection::open(&path)?;
            last.busy_timeout(BUSY_TIMEOUT)?;
            last.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            drop(self);
            last.close().map_err(|(_, e)| StoreError::from(e))?;
            Ok(was_alone)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Takes group and other permissions off a database made before latchkey
/// created its files 0600, saying so in one log line; a file whose mode
/// cannot be changed (not ours) is worth a warning, not a refusal to start.
fn make_private(path: &Path) {
    match files::make_private(path) {
        Ok(tightened) if tightened.is_empty() => {}
        Ok(tightened) => {
            let files: Vec<String> = tightened
                .iter()
                .map(|t| format!("{} (was {:04o})", t.path.display(), t.was))
                .collect();
            tracing::warn!(
                "the database files were open to other users; made them owner-only (0600): {}",
                files.join(", ")
            );
        }
        Err(error) => tracing::warn!(
            %error,
            "cannot make {} and its -wal and -shm owner-only (0600); other users may read them",
            path.display()
        ),
    }
}

/// Runs a trivial query: succeeds when the database file answers.
pub fn ping(db: &dyn Db) -> Result<(), StoreError> {
    db.one("SELECT 1", &[], |_| Ok(()))
}

/// Settings every connection gets: WAL, a busy timeout, foreign keys, and
/// `synchronous=NORMAL` (durable at each WAL checkpoint, and a committed
/// transaction survives a process crash, which is what a kill -9 test checks).
fn configure(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Reading the mode first turns "not a database" into an error here,
    // and avoids asking for a lock when the file is already in WAL mode.
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidQuery);
        }
    }
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

fn describe_open_error(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "the file is not an SQLite database".to_owned(),
        Some(ErrorCode::CannotOpen) => {
            "cannot create or open the file (does its directory exist and is it writable?)"
                .to_owned()
        }
        Some(ErrorCode::ReadOnly) => "the file or its directory is read-only".to_owned(),
        _ => match e {
            rusqlite::Error::InvalidQuery => "cannot switch the file to WAL mode".to_owned(),
            other => other.to_string(),
        },
    }
}

/// A fresh store on a temporary file, for unit tests of the store functions.
#[cfg(test)]
pub(crate) fn test_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("test.db"), 2).expect("open test store");
    (dir, store)
}

/// Inserts user `name` (folded as written, hash "x"), for unit tests; returns the id.
#[cfg(test)]
pub(crate) fn test_user(conn: &Connection, name: &str) -> i64 {
    users::insert(
        conn,
        &users::NewUser {
            username: name,
            username_folded: name,
            password_hash: "x",
            email: None,
            display_name: None,
            created_at: 1,
        },
    )
    .expect("insert test user")
}

#[cfg(test)]
mod tests;
