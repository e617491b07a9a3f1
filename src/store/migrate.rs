//! Schema creation and migration, tracked by `PRAGMA user_version`.
//!
//! A new file gets `schema.sql` whole and is stamped with [`SCHEMA_VERSION`].
//! A later schema change appends its SQL to [`MIGRATIONS`] and updates
//! `schema.sql` to the result, so both paths end at the same schema.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The complete current schema, applied to a new database file.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Steps from version `i + 1` to `i + 2`; empty while version 1 is current.
const MIGRATIONS: &[&str] = &[];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`] in one immediate transaction.
pub fn run(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // Version 0 is either a new file or someone else's database: never
        // write our tables into the latter.
        let tables: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(StoreError::ForeignDatabase {
                path: path.to_owned(),
            });
        }
        tx.execute_batch(SCHEMA)?;
    } else {
        for step in &MIGRATIONS[(found - 1) as usize..] {
            tx.execute_batch(step)?;
        }
    }
    if found != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_the_schema_and_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut conn = Connection::open(&path).unwrap();
        run(&mut conn, &path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Running again on a current file changes nothing.
        run(&mut conn, &path).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = run(&mut conn, &path).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn another_programs_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT)")
            .unwrap();
        assert!(matches!(
            run(&mut conn, &path),
            Err(StoreError::ForeignDatabase { .. })
        ));
    }
}
