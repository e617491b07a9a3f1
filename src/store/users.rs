//! The `users` table.
//!
//! Names are looked up by their folded key (`username_folded`), which the
//! caller computes: the folding rule is `auth::input::Username`'s.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
}

/// The fields of a user to be created.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub username: &'a str,
    /// The case-insensitive key of `username` (its unique index).
    pub username_folded: &'a str,
    pub password_hash: &'a str,
    pub email: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, username, password_hash, email, display_name, disabled, created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        password_hash: row.get(2)?,
        email: row.get(3)?,
        display_name: row.get(4)?,
        disabled: row.get(5)?,
        created_at: row.get(6)?,
    })
}

/// Inserts a user; [`StoreError::Conflict`] when the name is taken in any case.
pub fn insert(conn: &Connection, user: &NewUser<'_>) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (username, username_folded, password_hash, email, display_name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        user.username,
        user.username_folded,
        user.password_hash,
        user.email,
        user.display_name,
        user.created_at
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Finds a user by the folded key of their name.
pub fn find_by_folded_name(
    conn: &Connection,
    username_folded: &str,
) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username_folded = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([username_folded], from_row)
        .optional()?)
}

/// Finds a user by id.
pub fn find_by_id(conn: &Connection, id: i64) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], from_row)
        .optional()?)
}

/// Every user, by id.
pub fn list(conn: &Connection) -> Result<Vec<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let users = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(users)
}

/// How many users exist.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM users")?
        .query_row([], |r| r.get(0))?)
}

/// Replaces a user's password hash; false when the user does not exist.
pub fn set_password_hash(conn: &Connection, id: i64, hash: &str) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
        .execute(params![id, hash])?;
    Ok(changed == 1)
}

/// Sets or clears the disabled flag; false when the user does not exist.
pub fn set_disabled(conn: &Connection, id: i64, disabled: bool) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
        .execute(params![id, disabled])?;
    Ok(changed == 1)
}

/// Deletes a user; their sessions go with them (`ON DELETE CASCADE`).
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("DELETE FROM users WHERE id = ?1")?
        .execute([id])?;
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn new_user<'a>(name: &'a str, folded: &'a str) -> NewUser<'a> {
        NewUser {
            username: name,
            username_folded: folded,
            password_hash: "$argon2id$stub",
            email: Some("a@example.com"),
            display_name: None,
            created_at: 1000,
        }
    }

    #[test]
    fn usernames_are_unique_ignoring_case_and_keep_their_spelling() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        insert(&conn, &new_user("Alice", "alice")).unwrap();
        assert!(matches!(
            insert(&conn, &new_user("aLICE", "alice")),
            Err(StoreError::Conflict)
        ));
        assert!(insert(&conn, &new_user("ÄLICE", "älice")).is_ok());
        assert!(matches!(
            insert(&conn, &new_user("älice", "älice")),
            Err(StoreError::Conflict)
        ));
        let found = find_by_folded_name(&conn, "alice").unwrap().unwrap();
        assert_eq!(found.username, "Alice");
        assert_eq!(found.email.as_deref(), Some("a@example.com"));
        assert!(find_by_folded_name(&conn, "bob").unwrap().is_none());
    }

    #[test]
    fn deleting_a_user_deletes_their_sessions() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let id = insert(&conn, &new_user("alice", "alice")).unwrap();
        let session = crate::store::sessions::NewSession {
            user_id: id,
            created_at: 1,
            expires_at: 10,
            max_expires_at: 20,
            ip: "127.0.0.1",
            user_agent: "test",
        };
        crate::store::sessions::insert(&conn, &[7; 32], &session).unwrap();
        assert!(delete(&conn, id).unwrap());
        assert!(crate::store::sessions::find_by_token_hash(&conn, &[7; 32])
            .unwrap()
            .is_none());
        assert!(!delete(&conn, id).unwrap());
    }
}
