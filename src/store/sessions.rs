//! The `sessions` table: rows found by the SHA-256 of their token, stored
//! under its first 64 bits ([`lookup_key`]).
//!
//! Whether a row is still valid is decided in `auth`; these functions only
//! read and write rows.

use rusqlite::OptionalExtension;

use super::db::{params, Db, DbExt, Row};
use super::StoreError;

/// The fields of a session to be created, besides its token hash.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub ip: &'a str,
    pub user_agent: &'a str,
    /// The factors the login proved (bits: 1 password, 2 one-time code).
    pub amr: i64,
}

/// A session row with the user it belongs to: what a token check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub session_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub user_id: i64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_disabled: bool,
    pub user_created_at: i64,
    /// The user's group names, in folded-name order (see `store::groups`).
    pub groups: Vec<String>,
    /// The factors the session's login proved (see [`NewSession::amr`]).
    pub amr: i64,
}

/// A session row as listed in an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub ip: String,
    pub user_agent: String,
}

/// The rowid a token hash is stored under: its first 8 bytes, big-endian.
pub fn lookup_key(token_hash: &[u8; 32]) -> i64 {
    let mut first = [0; 8];
    first.copy_from_slice(&token_hash[..8]);
    i64::from_be_bytes(first)
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored, with this public id.
    Stored(i64),
    /// Nothing stored: a session already has this hash's [`lookup_key`]
    /// (odds of 2^-64 per stored session). The caller draws another token.
    KeyTaken,
}

/// Inserts a session found by `token_hash`, under its [`lookup_key`].
pub fn insert(
    db: &dyn Db,
    token_hash: &[u8; 32],
    session: &NewSession<'_>,
) -> Result<Inserted, StoreError> {
    // The id is one past the highest ever handed out; the trigger on
    // `sessions` moves the counter in this same statement, which holds the
    // write lock, so two inserts cannot pick the same id and a deleted id
    // never comes back. A conflicting insert stores nothing and takes no id.
    let id = db.row(
        "INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent, amr)
         VALUES (?1, ?2, (SELECT last_id + 1 FROM session_counter), ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (lookup_key) DO NOTHING
         RETURNING id",
        params![
            lookup_key(token_hash),
            token_hash,
            session.user_id,
            session.created_at,
            session.expires_at,
            session.max_expires_at,
            session.ip,
            session.user_agent,
            session.amr,
        ],
        |r| r.int(0),
    )?;
    Ok(id.map_or(Inserted::KeyTaken, Inserted::Stored))
}

/// Looks a token hash up, with its user and the user's groups: one
/// statement, so one snapshot, and one primary-key probe per table (the
/// groups are a range of the memberships key; none costs one probe).
pub fn find_by_token_hash(
    db: &dyn Db,
    token_hash: &[u8; 32],
) -> Result<Option<TokenRow>, StoreError> {
    // The names come sorted and joined by commas, which no group name may
    // hold, in a column that triggers keep (schema.sql): a subquery that
    // sorted memberships here cost more than the rest of the lookup.
    const SQL: &str = "SELECT s.id, s.created_at, s.expires_at, s.max_expires_at,
                u.id, u.username, u.email, u.display_name, u.disabled, u.created_at,
                u.group_names, s.amr
         FROM sessions AS s JOIN users AS u ON u.id = s.user_id
         WHERE s.lookup_key = ?1 AND s.token_hash = ?2";
    let key = lookup_key(token_hash);
    // SQLite's own path: rusqlite's row, read in place, is what the inline
    // reader's speed is measured on (docs/benchmarks.md).
    if let Some(conn) = db.sqlite() {
        return Ok(conn
            .prepare_cached(SQL)?
            .query_row(rusqlite::params![key, &token_hash[..]], |r| {
                Ok(TokenRow {
                    session_id: r.get(0)?,
                    created_at: r.get(1)?,
                    expires_at: r.get(2)?,
                    max_expires_at: r.get(3)?,
                    user_id: r.get(4)?,
                    username: r.get(5)?,
                    email: r.get(6)?,
                    display_name: r.get(7)?,
                    user_disabled: r.get(8)?,
                    user_created_at: r.get(9)?,
                    groups: split_groups(r.get_ref(10)?.as_str()?),
                    amr: r.get(11)?,
                })
            })
            .optional()?);
    }
    db.row(SQL, params![key, token_hash], |r| {
        Ok(TokenRow {
            session_id: r.int(0)?,
            created_at: r.int(1)?,
            expires_at: r.int(2)?,
            max_expires_at: r.int(3)?,
            user_id: r.int(4)?,
            username: r.text(5)?,
            email: r.opt_text(6)?,
            display_name: r.opt_text(7)?,
            user_disabled: r.flag(8)?,
            user_created_at: r.int(9)?,
            groups: split_groups(&r.text(10)?),
            amr: r.int(11)?,
        })
    })
}

/// The group names of `users.group_names`; empty is none.
fn split_groups(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        return Vec::new();
    }
    joined.split(',').map(str::to_owned).collect()
}

/// Moves a session's idle expiry forward; never moves it back.
pub fn extend(db: &dyn Db, token_hash: &[u8; 32], expires_at: i64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE sessions SET expires_at = ?3
         WHERE lookup_key = ?1 AND token_hash = ?2 AND expires_at < ?3",
        params![lookup_key(token_hash), token_hash, expires_at],
    )?;
    Ok(())
}

/// Adds the factor bits `amr` to session `id`'s (a code proved at
/// enrollment counts for the session that proved it).
pub fn add_factors(db: &dyn Db, id: i64, amr: i64) -> Result<(), StoreError> {
    db.execute(
        "UPDATE sessions SET amr = amr | ?2 WHERE id = ?1",
        params![id, amr],
    )?;
    Ok(())
}

/// The absolute expiry of session `id` of `user_id`, if it is still valid
/// at `now`.
pub fn max_expires_at_if_valid(
    db: &dyn Db,
    user_id: i64,
    id: i64,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    // expires_at <= max_expires_at holds for every row (see purge_expired).
    db.row(
        "SELECT max_expires_at FROM sessions WHERE id = ?1 AND user_id = ?2 AND expires_at > ?3",
        params![id, user_id, now],
        |r| r.int(0),
    )
}

/// Deletes session `id`; false when there was none.
pub fn delete(db: &dyn Db, id: i64) -> Result<bool, StoreError> {
    let changed = db.execute("DELETE FROM sessions WHERE id = ?1", params![id])?;
    Ok(changed == 1)
}

/// Deletes the session with this token hash; returns its user's id, or
/// `None` when there was none.
pub fn delete_by_token_hash(db: &dyn Db, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
    db.row(
        "DELETE FROM sessions WHERE lookup_key = ?1 AND token_hash = ?2 RETURNING user_id",
        params![lookup_key(token_hash), token_hash],
        |r| r.int(0),
    )
}

/// Deletes session `id` if it belongs to `user_id`; false otherwise.
pub fn delete_by_id(db: &dyn Db, user_id: i64, id: i64) -> Result<bool, StoreError> {
    let changed = db.execute(
        "DELETE FROM sessions WHERE id = ?1 AND user_id = ?2",
        params![id, user_id],
    )?;
    Ok(changed == 1)
}

/// Deletes every session of a user and returns how many there were.
pub fn delete_for_user(db: &dyn Db, user_id: i64) -> Result<usize, StoreError> {
    db.execute("DELETE FROM sessions WHERE user_id = ?1", params![user_id])
}

/// Deletes sessions whose idle or absolute expiry has passed.
pub fn purge_expired(db: &dyn Db, now: i64) -> Result<usize, StoreError> {
    // expires_at <= max_expires_at holds for every row (auth clamps it), so
    // this one indexed condition covers both expiries.
    db.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])
}

/// How many sessions are unexpired at `now`.
pub fn count_valid(db: &dyn Db, now: i64) -> Result<i64, StoreError> {
    // expires_at <= max_expires_at holds for every row (see purge_expired):
    // one range of the expiry index.
    db.one(
        "SELECT count(*) FROM sessions WHERE expires_at > ?1",
        params![now],
        |r| r.int(0),
    )
}

/// Unexpired sessions, newest first; of one user, or of everyone.
pub fn list_valid(
    db: &dyn Db,
    user_id: Option<i64>,
    now: i64,
) -> Result<Vec<SessionRow>, StoreError> {
    db.rows(
        "SELECT s.id, s.user_id, u.username, s.created_at, s.expires_at, s.max_expires_at,
                s.ip, s.user_agent
         FROM sessions AS s JOIN users AS u ON u.id = s.user_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR s.user_id = ?1) AND s.expires_at > ?2 AND s.max_expires_at > ?2
         ORDER BY s.created_at DESC, s.id DESC",
        params![user_id, now],
        session_row,
    )
}

fn session_row(r: &Row<'_>) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: r.int(0)?,
        user_id: r.int(1)?,
        username: r.text(2)?,
        created_at: r.int(3)?,
        expires_at: r.int(4)?,
        max_expires_at: r.int(5)?,
        ip: r.text(6)?,
        user_agent: r.text(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{groups, test_store, test_user};
    use rusqlite::Connection;

    fn setup(conn: &Connection) -> i64 {
        test_user(conn, "alice")
    }

    fn insert_at(
        conn: &Connection,
        hash: &[u8; 32],
        user_id: i64,
        created_at: i64,
        expires_at: i64,
    ) -> Inserted {
        let session = NewSession {
            user_id,
            created_at,
            expires_at,
            max_expires_at: expires_at + 100,
            ip: "127.0.0.1",
            user_agent: "ua",
            amr: 1,
        };
        insert(conn, hash, &session).unwrap()
    }

    #[test]
    fn ids_count_up_and_rows_are_found_by_token_hash() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        assert_eq!(
            insert_at(&conn, &[1; 32], user, 10, 50),
            Inserted::Stored(1)
        );
        assert_eq!(
            insert_at(&conn, &[2; 32], user, 20, 50),
            Inserted::Stored(2)
        );
        let row = find_by_token_hash(&conn, &[2; 32]).unwrap().unwrap();
        assert_eq!((row.session_id, row.username.as_str()), (2, "alice"));
        assert!(find_by_token_hash(&conn, &[3; 32]).unwrap().is_none());
    }

    #[test]
    fn a_token_row_carries_the_users_groups_in_folded_order() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        let other = test_user(&conn, "bob");
        insert_at(&conn, &[1; 32], user, 10, 50);
        assert!(find_by_token_hash(&conn, &[1; 32])
            .unwrap()
            .unwrap()
            .groups
            .is_empty());
        for name in ["ops", "Admins", "beta"] {
            let id = groups::insert(&conn, name, &name.to_ascii_lowercase(), 1).unwrap();
            groups::add_member(&conn, id, user).unwrap();
        }
        let id = groups::insert(&conn, "bobs", "bobs", 1).unwrap();
        groups::add_member(&conn, id, other).unwrap();
        let row = find_by_token_hash(&conn, &[1; 32]).unwrap().unwrap();
        assert_eq!(row.groups, ["Admins", "beta", "ops"]);
    }

    #[test]
    fn a_deleted_id_is_never_handed_out_again_and_a_taken_key_takes_no_id() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        insert_at(&conn, &[1; 32], user, 10, 50);
        insert_at(&conn, &[2; 32], user, 10, 50);
        // The newest session, then every session, goes.
        assert_eq!(delete_by_token_hash(&conn, &[2; 32]).unwrap(), Some(user));
        assert_eq!(
            insert_at(&conn, &[3; 32], user, 10, 50),
            Inserted::Stored(3)
        );
        assert_eq!(delete_for_user(&conn, user).unwrap(), 2);
        assert_eq!(
            insert_at(&conn, &[4; 32], user, 10, 50),
            Inserted::Stored(4)
        );
        // A hash whose lookup key is taken stores nothing and spends no id.
        let mut twin = [4; 32];
        twin[31] = 0;
        assert_eq!(insert_at(&conn, &twin, user, 10, 50), Inserted::KeyTaken);
        assert_eq!(
            insert_at(&conn, &[5; 32], user, 10, 50),
            Inserted::Stored(5)
        );
    }

    #[test]
    fn extend_only_moves_expiry_forward() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        insert_at(&conn, &[1; 32], user, 10, 50);
        extend(&conn, &[1; 32], 40).unwrap();
        assert_eq!(
            find_by_token_hash(&conn, &[1; 32])
                .unwrap()
                .unwrap()
                .expires_at,
            50
        );
        extend(&conn, &[1; 32], 80).unwrap();
        assert_eq!(
            find_by_token_hash(&conn, &[1; 32])
                .unwrap()
                .unwrap()
                .expires_at,
            80
        );
    }

    #[test]
    fn purge_and_listing_skip_expired_rows_and_list_newest_first() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        insert_at(&conn, &[1; 32], user, 10, 50);
        insert_at(&conn, &[2; 32], user, 20, 150);
        insert_at(&conn, &[3; 32], user, 30, 150);
        let ids: Vec<i64> = list_valid(&conn, Some(user), 60)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [3, 2]);
        assert_eq!(count_valid(&conn, 60).unwrap(), 2);
        assert_eq!(purge_expired(&conn, 60).unwrap(), 1);
        assert!(find_by_token_hash(&conn, &[1; 32]).unwrap().is_none());
    }

    #[test]
    fn a_session_is_deleted_by_id_only_for_its_own_user() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        let Inserted::Stored(id) = insert_at(&conn, &[1; 32], user, 10, 50) else {
            panic!("the key was free");
        };
        assert!(!delete_by_id(&conn, user + 1, id).unwrap());
        assert!(delete_by_id(&conn, user, id).unwrap());
        assert_eq!(delete_by_token_hash(&conn, &[1; 32]).unwrap(), None);
    }

    #[test]
    fn a_hash_sharing_the_lookup_key_is_neither_stored_nor_matched() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let user = setup(&conn);
        let stored = [5; 32];
        let mut twin = [5; 32];
        twin[31] = 6; // same first 8 bytes, another hash
        assert_eq!(lookup_key(&stored), lookup_key(&twin));
        assert_eq!(insert_at(&conn, &stored, user, 10, 50), Inserted::Stored(1));
        assert_eq!(insert_at(&conn, &twin, user, 10, 50), Inserted::KeyTaken);
        // The twin finds nothing and cannot extend or delete the stored row.
        assert!(find_by_token_hash(&conn, &twin).unwrap().is_none());
        extend(&conn, &twin, 90).unwrap();
        assert_eq!(delete_by_token_hash(&conn, &twin).unwrap(), None);
        let row = find_by_token_hash(&conn, &stored).unwrap().unwrap();
        assert_eq!((row.session_id, row.expires_at), (1, 50));
    }
}
