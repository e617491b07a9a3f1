//! The `users` table.
//!
//! Names are looked up by their folded key (`username_folded`), which the
//! caller computes: the folding rule is `auth::input::Username`'s.
//!
//! Every credential change (a new password, the disabled flag, all sessions
//! revoked) raises the user's `credential_version` in the same statement or
//! transaction. A login reads the version with the hash and, after the slow
//! password check, creates its session only if [`may_log_in`] still holds in
//! the writing transaction: a change made meanwhile always wins.

use super::db::{params, Db, DbExt, Row};
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
    /// Raised by every credential change; see the module documentation.
    pub credential_version: i64,
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

const COLUMNS: &str =
    "id, username, password_hash, email, display_name, disabled, created_at, credential_version";

fn from_row(row: &Row<'_>) -> Result<User, StoreError> {
    Ok(User {
        id: row.int(0)?,
        username: row.text(1)?,
        password_hash: row.text(2)?,
        email: row.opt_text(3)?,
        display_name: row.opt_text(4)?,
        disabled: row.flag(5)?,
        created_at: row.int(6)?,
        credential_version: row.int(7)?,
    })
}

/// Inserts a user; [`StoreError::Conflict`] when the name is taken in any case.
pub fn insert(db: &dyn Db, user: &NewUser<'_>) -> Result<i64, StoreError> {
    db.one(
        "INSERT INTO users (username, username_folded, password_hash, email, display_name, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![
            user.username,
            user.username_folded,
            user.password_hash,
            user.email,
            user.display_name,
            user.created_at
        ],
        |r| r.int(0),
    )
}

/// Finds a user by the folded key of their name.
pub fn find_by_folded_name(db: &dyn Db, username_folded: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username_folded = ?1");
    db.row(&sql, params![username_folded], from_row)
}

/// Finds a user by id.
pub fn find_by_id(db: &dyn Db, id: i64) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?1");
    db.row(&sql, params![id], from_row)
}

/// Every user, by id.
pub fn list(db: &dyn Db) -> Result<Vec<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY id");
    db.rows(&sql, &[], from_row)
}

/// How many users exist.
pub fn count(db: &dyn Db) -> Result<i64, StoreError> {
    db.one("SELECT count(*) FROM users", &[], |r| r.int(0))
}

/// Sets a new password hash, a credential change (the version goes up);
/// false when the user does not exist.
pub fn set_password_hash(db: &dyn Db, id: i64, hash: &str) -> Result<bool, StoreError> {
    let changed = db.execute(
        "UPDATE users SET password_hash = ?2, credential_version = credential_version + 1
         WHERE id = ?1",
        params![id, hash],
    )?;
    Ok(changed == 1)
}

/// Replaces the hash by a rehash of the same password (new argon2
/// parameters), only while the credentials are still at `seen_version`:
/// an upgrade never overwrites a password set since it was read. Not a
/// change (the version stays); false when nothing was written.
pub fn upgrade_password_hash(
    db: &dyn Db,
    id: i64,
    seen_version: i64,
    hash: &str,
) -> Result<bool, StoreError> {
    let changed = db.execute(
        "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND credential_version = ?2",
        params![id, seen_version, hash],
    )?;
    Ok(changed == 1)
}

/// Sets or clears the disabled flag, a credential change (the version goes
/// up); false when the user does not exist.
pub fn set_disabled(db: &dyn Db, id: i64, disabled: bool) -> Result<bool, StoreError> {
    let changed = db.execute(
        "UPDATE users SET disabled = ?2, credential_version = credential_version + 1
         WHERE id = ?1",
        params![id, disabled],
    )?;
    Ok(changed == 1)
}

/// Records a credential change that touches no column of `users` (every
/// session revoked): a login in flight can then not add a session. False
/// when the user does not exist.
pub fn bump_credential_version(db: &dyn Db, id: i64) -> Result<bool, StoreError> {
    let changed = db.execute(
        "UPDATE users SET credential_version = credential_version + 1 WHERE id = ?1",
        params![id],
    )?;
    Ok(changed == 1)
}

/// True when user `id` exists, is enabled and is still at `seen_version`:
/// a login whose password was checked against that version may create its
/// session. Only meaningful inside the (immediate) transaction that
/// creates it, which no change can interleave with.
pub fn may_log_in(db: &dyn Db, id: i64, seen_version: i64) -> Result<bool, StoreError> {
    let found = db.row(
        "SELECT 1 FROM users WHERE id = ?1 AND credential_version = ?2 AND disabled = 0",
        params![id, seen_version],
        |_| Ok(()),
    )?;
    Ok(found.is_some())
}

/// Deletes a user; their sessions go with them (`ON DELETE CASCADE`).
pub fn delete(db: &dyn Db, id: i64) -> Result<bool, StoreError> {
    let changed = db.execute("DELETE FROM users WHERE id = ?1", params![id])?;
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;
    use rusqlite::Connection;

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
    fn every_credential_change_ends_what_a_login_read_before_it() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let id = insert(&conn, &new_user("alice", "alice")).unwrap();
        let version = |conn: &Connection| find_by_id(conn, id).unwrap().unwrap().credential_version;
        type Change = fn(&dyn Db, i64) -> Result<bool, StoreError>;
        let changes: [(&str, Change); 4] = [
            ("passwd", |c, id| set_password_hash(c, id, "$argon2id$new")),
            ("disable", |c, id| set_disabled(c, id, true)),
            ("enable", |c, id| set_disabled(c, id, false)),
            ("revoke all", bump_credential_version),
        ];
        for (name, change) in changes {
            let seen = version(&conn);
            assert!(change(&conn, id).unwrap(), "{name}");
            assert_eq!(version(&conn), seen + 1, "{name}");
            assert!(
                !may_log_in(&conn, id, seen).unwrap(),
                "{name}: a login from before"
            );
        }
        // At the current version an enabled user may log in, a disabled
        // one not, and a deleted one not at all.
        let seen = version(&conn);
        assert!(may_log_in(&conn, id, seen).unwrap());
        set_disabled(&conn, id, true).unwrap();
        assert!(!may_log_in(&conn, id, version(&conn)).unwrap());
        set_disabled(&conn, id, false).unwrap();
        let seen = version(&conn);
        assert!(delete(&conn, id).unwrap());
        assert!(!may_log_in(&conn, id, seen).unwrap());
        assert!(!bump_credential_version(&conn, id).unwrap());
    }

    #[test]
    fn a_hash_upgrade_never_overwrites_a_password_set_after_it_was_read() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let id = insert(&conn, &new_user("alice", "alice")).unwrap();
        let seen = find_by_id(&conn, id).unwrap().unwrap().credential_version;
        // Unchanged: the upgrade lands and is not itself a change.
        assert!(upgrade_password_hash(&conn, id, seen, "$argon2id$upgraded").unwrap());
        let user = find_by_id(&conn, id).unwrap().unwrap();
        assert_eq!(
            (user.password_hash.as_str(), user.credential_version),
            ("$argon2id$upgraded", seen)
        );
        // A new password in between: the upgrade of the old one is dropped.
        set_password_hash(&conn, id, "$argon2id$new").unwrap();
        assert!(!upgrade_password_hash(&conn, id, seen, "$argon2id$old-upgraded").unwrap());
        assert_eq!(
            find_by_id(&conn, id).unwrap().unwrap().password_hash,
            "$argon2id$new"
        );
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
            amr: 1,
        };
        crate::store::sessions::insert(&conn, &[7; 32], &session).unwrap();
        assert!(delete(&conn, id).unwrap());
        assert!(crate::store::sessions::find_by_token_hash(&conn, &[7; 32])
            .unwrap()
            .is_none());
        assert!(!delete(&conn, id).unwrap());
    }
}
