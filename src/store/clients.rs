//! The `clients` table: who may call `/introspect`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::db::{params, Db, DbExt};
use super::StoreError;

/// An introspection client as listed (its secret hash stays inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub created_at: i64,
}

/// Adds a client; [`StoreError::Conflict`] when the id exists.
pub fn insert(
    db: &dyn Db,
    id: &str,
    secret_hash: &[u8; 32],
    created_at: i64,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO clients (id, secret_hash, created_at) VALUES (?1, ?2, ?3)",
        params![id, secret_hash, created_at],
    )?;
    Ok(())
}

/// The stored secret hash of a client, if it exists.
pub fn find_secret_hash(db: &dyn Db, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    db.row(
        "SELECT secret_hash FROM clients WHERE id = ?1",
        params![id],
        |r| r.blob(0),
    )
}

/// True when at least one client exists (introspection then needs auth).
pub fn any_exist(db: &dyn Db) -> Result<bool, StoreError> {
    let found = db.row("SELECT 1 FROM clients LIMIT 1", &[], |_| Ok(()))?;
    Ok(found.is_some())
}

/// [`any_exist`] on the database at `path`, opened read-only: `None` when
/// the file does not exist, which is left so (`config check` creates nothing).
pub fn any_exist_in_file(path: &Path) -> Result<Option<bool>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let open_error = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_error)?;
    any_exist(&conn).map(Some).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: format!("cannot read its clients: {e}"),
    })
}

/// [`any_exist`] on the database `config` names, changing nothing: `None`
/// when it does not exist yet (`config check` creates nothing).
pub fn any_exist_in(config: &crate::config::DatabaseConfig) -> Result<Option<bool>, StoreError> {
    if config.url.is_empty() {
        return any_exist_in_file(&config.path);
    }
    match super::pg::connect_existing(&config.url)? {
        Some(conn) => any_exist(&conn).map(Some),
        None => Ok(None),
    }
}

/// Every client, by id.
pub fn list(db: &dyn Db) -> Result<Vec<Client>, StoreError> {
    db.rows("SELECT id, created_at FROM clients ORDER BY id", &[], |r| {
        Ok(Client {
            id: r.text(0)?,
            created_at: r.int(1)?,
        })
    })
}

/// Removes a client; false when it did not exist.
pub fn delete(db: &dyn Db, id: &str) -> Result<bool, StoreError> {
    let changed = db.execute("DELETE FROM clients WHERE id = ?1", params![id])?;
    Ok(changed == 1)
}
