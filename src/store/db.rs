//! The one seam between the store's SQL and a database engine.
//!
//! The table modules (`users`, `sessions`, …) write their statements once,
//! against [`Db`]: positional parameters (`?1`, `?2`, …) given as
//! [`Value`]s, and rows read by column index through [`Row`]. Only `Db`'s
//! implementations know the engine. The SQL they share is the common
//! ground of SQLite and PostgreSQL (`RETURNING`, `ON CONFLICT`, 64-bit
//! integers, byte strings); what differs (schema, migrations, locking, the
//! hot token read) lives beside each engine, not in the table modules.
//!
//! SQLite connections, transactions and pooled connections are all `Db`s,
//! so a caller holding any of them passes it as it is.

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, Transaction};

use super::{PooledConnection, StoreError};

/// A statement parameter. Borrowed: passing one copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    /// A nullable integer column's value.
    OptInt(Option<i64>),
    Text(&'a str),
    /// A nullable text column's value.
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

/// Flags are stored as 0 or 1: the same column type on every engine.
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::OptInt(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Value::OptText(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Value<'a> {
    fn from(v: &'a [u8; N]) -> Self {
        Value::Blob(v)
    }
}

/// Parameters from a list of values of mixed types: `params![id, name]`.
#[macro_export]
macro_rules! db_params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($value)),*][..]
    };
}
pub use crate::db_params as params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Int(v) | Value::OptInt(Some(v)) => ToSqlOutput::from(v),
            Value::OptInt(None) | Value::OptText(None) => ToSqlOutput::from(rusqlite::types::Null),
            Value::Text(v) | Value::OptText(Some(v)) => ToSqlOutput::from(v),
            Value::Blob(v) => ToSqlOutput::from(v),
        })
    }
}

/// A row of a query's answer, read by column index.
pub struct Row<'a>(pub(super) RowInner<'a>);

pub(super) enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Task(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(row) => Ok(row.get(i)?),
            RowInner::Postgres(row) => super::pg::int(row, i),
        }
    }

    /// A 0/1 flag.
    pub fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.int(i)? != 0)
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match &self.0 {
            RowInner::Sqlite(row) => Ok(row.get(i)?),
            RowInner::Postgres(row) => Ok(row.try_get(i)?),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(row) => Ok(row.get(i)?),
            RowInner::Postgres(row) => Ok(row.try_get(i)?),
        }
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(row) => Ok(row.get(i)?),
            RowInner::Postgres(row) => Ok(row.try_get(i)?),
        }
    }
}

/// The database engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Where statements run: a connection, or a transaction on one.
pub trait Db {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError>;

    /// Runs a query and hands each row of its answer to `each`, in order.
    fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs statements that take no parameters and answer nothing
    /// (transaction control, schema changes).
    fn batch(&self, sql: &str) -> Result<(), StoreError>;

    fn engine(&self) -> Engine;

    /// The SQLite connection behind this `Db`, for the one read that is
    /// each engine's own: the token check's (see `sessions::find_by_token_hash`).
    fn sqlite(&self) -> Option<&Connection> {
        None
    }
}

/// A write transaction: every change in it lands together or not at all,
/// and no other write interleaves with it (SQLite: `BEGIN IMMEDIATE`, the
/// database's one write lock; PostgreSQL: a transaction-scoped advisory
/// lock every writer takes first). Rolled back when dropped uncommitted.
pub struct Tx<'d> {
    db: &'d dyn Db,
    open: bool,
}

/// The advisory lock key every PostgreSQL write transaction takes, so that
/// writers serialize as they do on SQLite: "latchkey" in ASCII.
pub const WRITE_LOCK: i64 = 0x6c61_7463_686b_6579;

/// Begins a write transaction on `db`.
pub fn write(db: &dyn Db) -> Result<Tx<'_>, StoreError> {
    match db.engine() {
        Engine::Sqlite => db.batch("BEGIN IMMEDIATE")?,
        Engine::Postgres => {
            db.batch("BEGIN")?;
            let tx = Tx { db, open: true };
            tx.db.query(
                "SELECT pg_advisory_xact_lock(?1)",
                &[Value::Int(WRITE_LOCK)],
                &mut |_| Ok(()),
            )?;
            return Ok(tx);
        }
    }
    Ok(Tx { db, open: true })
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        match self.db.engine() {
            // Through the statement cache: snapshots end here on the hot path.
            Engine::Sqlite => self.db.execute("COMMIT", &[]).map(drop),
            Engine::Postgres => self.db.batch("COMMIT"),
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing more can be done about a failed rollback here: the
            // connection is dropped from the pool's point of view when the
            // engine reports it broken.
            let _ = self.db.batch("ROLLBACK");
        }
    }
}

delegate_db!(Tx<'_>, self => self.db);

/// Runs several reads in one read-only transaction: they see one snapshot
/// (and on SQLite the WAL read lock, two `fcntl` calls, is taken once
/// instead of per statement). The transaction always ends, also when `f`
/// fails or panics (then it is rolled back).
pub fn snapshot<T>(
    db: &dyn Db,
    f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match db.engine() {
        // Through the statement cache: this runs on the hot path.
        Engine::Sqlite => {
            db.execute("BEGIN", &[])?;
        }
        Engine::Postgres => db.batch("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?,
    }
    let tx = Tx { db, open: true };
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Reading answers: one row, maybe one, or all.
pub trait DbExt: Db {
    /// The first row of the answer, or `None`.
    fn row<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut read = Some(read);
        let mut found = None;
        self.query(sql, params, &mut |row| {
            if let Some(read) = read.take() {
                found = Some(read(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The first row of an answer that always has one (`count(*)`, …).
    fn one<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.row(sql, params, read)?
            .ok_or_else(|| StoreError::Task(format!("no row from {sql:?}")))
    }

    /// Every row of the answer.
    fn rows<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut read: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut all = Vec::new();
        self.query(sql, params, &mut |row| {
            all.push(read(row)?);
            Ok(())
        })?;
        Ok(all)
    }
}

impl<D: Db + ?Sized> DbExt for D {}

impl Db for Connection {
    fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))?)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.execute_batch(sql)?)
    }

    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn sqlite(&self) -> Option<&Connection> {
        Some(self)
    }

    fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            each(&Row(RowInner::Sqlite(row)))?;
        }
        Ok(())
    }
}

/// `Db` for a type that stands for another `Db`: every call goes to
/// `$inner`, an expression of `self`.
macro_rules! delegate_db {
    ($ty:ty, $this:ident => $inner:expr) => {
        impl $crate::store::db::Db for $ty {
            fn execute(&$this, sql: &str, params: &[$crate::store::db::Value<'_>]) -> Result<usize, $crate::store::StoreError> {
                let db: &dyn $crate::store::db::Db = $inner;
                db.execute(sql, params)
            }

            fn query(
                &$this,
                sql: &str,
                params: &[$crate::store::db::Value<'_>],
                each: &mut dyn FnMut(&$crate::store::db::Row<'_>) -> Result<(), $crate::store::StoreError>,
            ) -> Result<(), $crate::store::StoreError> {
                let db: &dyn $crate::store::db::Db = $inner;
                db.query(sql, params, each)
            }

            fn batch(&$this, sql: &str) -> Result<(), $crate::store::StoreError> {
                let db: &dyn $crate::store::db::Db = $inner;
                db.batch(sql)
            }

            fn engine(&$this) -> $crate::store::db::Engine {
                let db: &dyn $crate::store::db::Db = $inner;
                db.engine()
            }

            fn sqlite(&$this) -> Option<&rusqlite::Connection> {
                let db: &dyn $crate::store::db::Db = $inner;
                db.sqlite()
            }
        }
    };
}
pub(super) use delegate_db;

// A transaction, or a connection from the pool, is its connection.
delegate_db!(Transaction<'_>, self => &**self);
delegate_db!(PooledConnection, self => &**self);
// A boxed Db (a connection of either engine, chosen at run time) is its Db.
delegate_db!(Box<dyn Db>, self => &**self);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    #[test]
    fn values_of_every_kind_go_in_and_come_back() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let db: &dyn Db = &conn;
        db.execute(
            "CREATE TEMP TABLE t (i INTEGER, oi INTEGER, s TEXT, os TEXT, b BLOB)",
            &[],
        )
        .unwrap();
        let none: Option<&str> = None;
        let changed = db
            .execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5), (?6, NULL, 'x', ?7, x'00')",
                params![
                    7i64,
                    None::<i64>,
                    "text",
                    none,
                    &[1u8, 2][..],
                    true,
                    Some("y")
                ],
            )
            .unwrap();
        assert_eq!(changed, 2);
        let rows = db
            .rows("SELECT i, oi, s, os, b FROM t ORDER BY i DESC", &[], |r| {
                Ok((
                    r.int(0)?,
                    r.opt_int(1)?,
                    r.text(2)?,
                    r.opt_text(3)?,
                    r.blob(4)?,
                ))
            })
            .unwrap();
        assert_eq!(
            rows,
            [
                (7, None, "text".to_owned(), None, vec![1, 2]),
                (1, None, "x".to_owned(), Some("y".to_owned()), vec![0]),
            ]
        );
        let flag = db.one("SELECT 1", &[], |r| r.flag(0)).unwrap();
        assert!(flag);
        assert_eq!(db.row("SELECT 1 WHERE 0", &[], |r| r.int(0)).unwrap(), None);
    }
}
