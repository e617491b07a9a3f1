//! PostgreSQL behind [`Db`]: connections with their prepared statements,
//! the pool that hands them out, and the schema and its version.
//!
//! The `postgres` crate's client is synchronous and drives a tokio runtime
//! of its own: it must only ever be called on a blocking thread (a call on
//! an async worker panics), which `Store::run` guarantees.

use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::db::{Db, Engine, Row, RowInner, Value};
use super::StoreError;
use crate::config::redacted_url;

/// The schema of a new database, PostgreSQL's twin of `schema.sql`.
const SCHEMA: &str = include_str!("../../schema_pg.sql");

/// The steps from each version PostgreSQL databases were made at (the
/// backend arrived at version 8) to the next, as the SQLite migrations in
/// `store::migrate` take a file; `schema_pg.sql` is where they end.
const MIGRATIONS: &[(i64, &str)] = &[(
    8,
    "CREATE TABLE login_limits (
        kind            BIGINT  NOT NULL CHECK (kind IN (0, 1)),
        subject         TEXT    COLLATE \"C\" NOT NULL,
        failures        BYTEA   NOT NULL,
        in_flight       BIGINT  NOT NULL,
        reserved_at     BIGINT  NOT NULL,
        banned_until    BIGINT  NOT NULL,
        idle_at         BIGINT  NOT NULL,
        PRIMARY KEY (kind, subject)
     );
     CREATE INDEX login_limits_by_idle ON login_limits (idle_at);",
)];
/// The session-level advisory lock held while migrating, so that instances
/// starting together migrate once: "lk-migr" in ASCII.
const MIGRATION_LOCK: i64 = 0x006c_6b2d_6d69_6772;
/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Set by [`allow_blocking_here`] on a thread of tokio's blocking pool,
    /// where a runtime's handle is current too, yet blocking (and so the
    /// client's own runtime) is allowed.
    static MAY_BLOCK: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as one of tokio's blocking pool (`Store::run` calls it
/// first thing there): the client may be called on it directly. Without the
/// mark, every query would take the detour of a thread of its own, which
/// cost PostgreSQL's `/verify` most of its CPU (see docs/benchmarks.md).
pub(super) fn allow_blocking_here() {
    MAY_BLOCK.with(|may| may.set(true));
}

/// Whether a call here must move to a thread of its own: a tokio runtime
/// runs on this thread, and it is not a blocking-pool one.
fn on_async_thread() -> bool {
    !MAY_BLOCK.with(Cell::get) && tokio::runtime::Handle::try_current().is_ok()
}

/// One connection and the statements prepared on it.
///
/// Usable from any thread, a runtime's included: a call made on an async
/// thread is carried out on a short-lived thread of its own (the server's
/// request paths never do this: `Store::run` calls from the blocking pool;
/// the start-up checks and tests' fixtures may).
pub struct PgConnection {
    /// `None` only while being dropped.
    client: Mutex<Option<Client>>,
    statements: Mutex<HashMap<String, Statement>>,
}

impl PgConnection {
    fn new(client: Client) -> PgConnection {
        PgConnection {
            client: Mutex::new(Some(client)),
            statements: Mutex::default(),
        }
    }

    /// Runs `f` with the client, off any runtime's thread.
    fn with_client<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let call = || {
            // Plain data only: a poisoned lock still guards a whole client.
            let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            match client.as_mut() {
                Some(client) => f(client),
                None => Err(StoreError::Task("the connection is closed".to_owned())),
            }
        };
        if !on_async_thread() {
            return call();
        }
        std::thread::scope(|scope| {
            scope
                .spawn(call)
                .join()
                .unwrap_or_else(|_| Err(StoreError::Task("a database call panicked".to_owned())))
        })
    }

    /// Runs `f` with the client, the prepared form of `sql` and `params`.
    fn with_statement<T: Send>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&mut Client, &Statement, &[&(dyn ToSql + Sync)]) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.with_client(|client| {
            let statement = self.statement(client, sql)?;
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            f(client, &statement, &params)
        })
    }

    /// The prepared form of `sql` (`?N` rewritten to `$N`), prepared once
    /// per connection.
    fn statement(&self, client: &mut Client, sql: &str) -> Result<Statement, StoreError> {
        let mut statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(statement) = statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&dollar_params(sql))?;
        statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // Closing talks to the server through the client's own runtime,
        // which cannot run on a thread that runs one already.
        if let Some(client) = client {
            if on_async_thread() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

impl Db for PgConnection {
    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        let changed = self.with_statement(sql, params, |client, statement, params| {
            Ok(client.execute(statement, params)?)
        })?;
        Ok(usize::try_from(changed).unwrap_or(usize::MAX))
    }

    fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let rows = self.with_statement(sql, params, |client, statement, params| {
            Ok(client.query(statement, params)?)
        })?;
        for row in &rows {
            each(&Row(RowInner::Postgres(row)))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.with_client(|client| Ok(client.batch_execute(sql)?))
    }

    fn engine(&self) -> Engine {
        Engine::Postgres
    }
}

/// `?1` → `$1`, outside quoted strings (the store's SQL has no `?` in them,
/// but a literal must never be rewritten).
fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Int(v) | Value::OptInt(Some(v)) => match *ty {
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::OptInt(None) | Value::OptText(None) => Ok(IsNull::Yes),
            Value::Text(v) | Value::OptText(Some(v)) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, by the inner types' own checks.
        true
    }

    postgres::types::to_sql_checked!();
}

/// Reads an integer column of any width.
pub(super) fn int(row: &postgres::Row, i: usize) -> Result<Option<i64>, StoreError> {
    let ty = row
        .columns()
        .get(i)
        .map(|c| c.type_().clone())
        .ok_or_else(|| StoreError::Task(format!("no column {i}")))?;
    Ok(match ty {
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from),
        _ => row.try_get::<_, Option<i64>>(i)?,
    })
}

/// A connection to the latchkey database at `url` that changes nothing
/// (no migration): `None` when latchkey has made no schema there yet.
pub fn connect_existing(url: &str) -> Result<Option<PgConnection>, StoreError> {
    use r2d2::ManageConnection;
    let conn = PgManager::new(url)?
        .connect()
        .map_err(|e| StoreError::Open {
            path: redacted_url(url).into(),
            message: e.to_string(),
        })?;
    let made = conn.with_client(|client| {
        let row = client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables
                            WHERE schemaname = current_schema() AND tablename = 'latchkey_schema')",
            &[],
        )?;
        Ok(row.try_get::<_, bool>(0)?)
    })?;
    Ok(made.then_some(conn))
}

/// Makes pooled connections to one database URL.
pub struct PgManager {
    config: postgres::Config,
}

impl PgManager {
    pub fn new(url: &str) -> Result<PgManager, StoreError> {
        let mut config: postgres::Config =
            url.parse().map_err(|e: postgres::Error| StoreError::Open {
                path: redacted_url(url).into(),
                message: format!("not a PostgreSQL URL: {e}"),
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(PgManager { config })
    }
}

impl r2d2::ManageConnection for PgManager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection::new(self.config.connect(NoTls)?))
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), postgres::Error> {
        match conn.client.get_mut().unwrap_or_else(|p| p.into_inner()) {
            Some(client) => client.simple_query("").map(drop),
            None => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        conn.client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(Client::is_closed)
    }
}

/// Brings the database to `version` under the migration lock: an empty
/// database gets the schema whole; a newer one is refused; a database with
/// tables but no latchkey version is someone else's and left alone.
pub fn migrate(conn: &PgConnection, url: &str, version: i64) -> Result<(), StoreError> {
    conn.with_client(|client| {
        // Session-level: held across the transaction below, released at
        // the end (and by PostgreSQL itself if this process dies).
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let result = migrate_locked(client, url, version);
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        result?;
        unlocked?;
        Ok(())
    })
}

fn migrate_locked(client: &mut Client, url: &str, version: i64) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    let has_version_table: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables
                            WHERE schemaname = current_schema() AND tablename = 'latchkey_schema')",
            &[],
        )?
        .get(0);
    if has_version_table {
        let found: i64 = tx
            .query_one("SELECT version FROM latchkey_schema", &[])?
            .get(0);
        if found > version {
            return Err(StoreError::NewerSchema {
                path: redacted_url(url).into(),
                found,
                supported: version,
            });
        }
        for step in found..version {
            let Some((_, sql)) = MIGRATIONS.iter().find(|(from, _)| *from == step) else {
                return Err(StoreError::Open {
                    path: redacted_url(url).into(),
                    message: format!(
                        "schema version {found} has no migration to {version} on PostgreSQL"
                    ),
                });
            };
            tx.batch_execute(sql)?;
        }
        if found < version {
            tx.execute("UPDATE latchkey_schema SET version = $1", &[&version])?;
        }
        return Ok(tx.commit()?);
    }
    let tables: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
            &[],
        )?
        .get(0);
    if tables > 0 {
        return Err(StoreError::ForeignDatabase {
            path: redacted_url(url).into(),
        });
    }
    tx.batch_execute(SCHEMA)?;
    tx.batch_execute("CREATE TABLE latchkey_schema (version BIGINT NOT NULL)")?;
    tx.execute(
        "INSERT INTO latchkey_schema (version) VALUES ($1)",
        &[&version],
    )?;
    Ok(tx.commit()?)
}

/// Whether a PostgreSQL error is the server (or the way to it) being
/// unavailable, rather than a statement's fault: answered 503.
pub fn unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // The server is shutting down, starting up, or out of connections.
        Some(db) => matches!(db.code().code(), "57P01" | "57P02" | "57P03" | "53300"),
        // No database answer at all: the connection itself failed.
        None => e.source().is_some_and(|s| s.is::<std::io::Error>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_dollar_numbers_outside_literals() {
        assert_eq!(
            dollar_params("SELECT '?1' WHERE a = ?1 AND b = ?12"),
            "SELECT '?1' WHERE a = $1 AND b = $12"
        );
    }
}
