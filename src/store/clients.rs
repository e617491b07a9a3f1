//! The `clients` table: who may call `/introspect`.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::StoreError;

/// An introspection client as listed (its secret hash stays inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    pub created_at: i64,
}

/// Adds a client; [`StoreError::Conflict`] when the id exists.
pub fn insert(
    conn: &Connection,
    id: &str,
    secret_hash: &[u8; 32],
    created_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO clients (id, secret_hash, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![id, &secret_hash[..], created_at])?;
    Ok(())
}

/// The stored secret hash of a client, if it exists.
pub fn find_secret_hash(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT secret_hash FROM clients WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// True when at least one client exists (introspection then needs auth).
pub fn any_exist(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM clients)")?
        .query_row([], |r| r.get(0))?)
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

/// Every client, by id.
pub fn list(conn: &Connection) -> Result<Vec<Client>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, created_at FROM clients ORDER BY id")?;
    let clients = stmt
        .query_map([], |r| {
            Ok(Client {
                id: r.get(0)?,
                created_at: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(clients)
}

/// Removes a client; false when it did not exist.
pub fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("DELETE FROM clients WHERE id = ?1")?
        .execute([id])?;
    Ok(changed == 1)
}
