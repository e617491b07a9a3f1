//! Schema creation and migration, tracked by `PRAGMA user_version`.
//!
//! A new file gets `schema.sql` whole and is stamped with [`SCHEMA_VERSION`].
//! A later schema change appends a step to [`MIGRATIONS`] and updates
//! `schema.sql` to the result, so both paths end at the same schema (a test
//! checks that they do).

use std::path::Path;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::sessions::lookup_key;
use super::StoreError;

/// The complete current schema, applied to a new database file.
pub const SCHEMA: &str = include_str!("../../../schema.sql");

/// One step, from version `i + 1` to `i + 2` for `MIGRATIONS[i]`.
type Migration = fn(&Transaction<'_>) -> Result<(), StoreError>;

/// Every step since version 1, in order.
const MIGRATIONS: &[Migration] = &[
    sessions_keyed_by_integer,
    session_ids_never_reused,
    users_credential_version,
    groups_and_memberships,
    users_group_names,
    audit_trail,
    second_factor,
    login_limits,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Version 2: `sessions` becomes a rowid table keyed by the first 64 bits of
/// the token hash (see schema.sql for why). Every session is kept.
fn sessions_keyed_by_integer(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE sessions_v2 (
            lookup_key      INTEGER PRIMARY KEY,
            token_hash      BLOB    NOT NULL CHECK (length(token_hash) = 32),
            id              INTEGER NOT NULL UNIQUE,
            user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at      INTEGER NOT NULL,
            expires_at      INTEGER NOT NULL,
            max_expires_at  INTEGER NOT NULL,
            ip              TEXT    NOT NULL,
            user_agent      TEXT    NOT NULL
        );",
    )?;
    {
        let mut read = tx.prepare(
            "SELECT token_hash, id, user_id, created_at, expires_at, max_expires_at, ip, user_agent
             FROM sessions",
        )?;
        // A version-1 hash that shares its first 64 bits with another (odds
        // ~n^2 / 2^65) fails the step, and the whole migration rolls back.
        let mut write = tx.prepare(
            "INSERT INTO sessions_v2
               (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
                ip, user_agent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            let hash: [u8; 32] = row.get(0)?;
            write.execute(params![
                lookup_key(&hash),
                &hash[..],
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, String>(6)?,
                row.get::<_, String>(7)?,
            ])?;
        }
    }
    tx.execute_batch(
        "DROP TABLE sessions;
         ALTER TABLE sessions_v2 RENAME TO sessions;
         CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
         CREATE INDEX sessions_by_expiry ON sessions (expires_at);",
    )?;
    Ok(())
}

/// Version 3: session ids come from a counter that only goes up (see
/// schema.sql), started at the largest id in the file. Ids that version 2
/// handed out and then deleted above that are not known any more: only
/// ids from here on are guaranteed never to repeat.
fn session_ids_never_reused(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE session_counter (
            id              INTEGER PRIMARY KEY CHECK (id = 1),
            last_id         INTEGER NOT NULL
         );
         INSERT INTO session_counter (id, last_id)
           SELECT 1, ifnull(max(id), 0) FROM sessions;
         CREATE TRIGGER session_counter_follows AFTER INSERT ON sessions
         BEGIN
             UPDATE session_counter SET last_id = max(last_id, NEW.id);
         END;",
    )?;
    Ok(())
}

/// Version 4: adds `users.credential_version`, which a login compares before it
/// creates its session (see schema.sql). Every user starts at 0, and every
/// session is kept: a session that exists was made before any change.
fn users_credential_version(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;",
    )?;
    Ok(())
}

/// Version 5: adds `groups` and `memberships` (see schema.sql). Nothing
/// existing changes: every user and session is kept, in no group.
fn groups_and_memberships(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE groups (
            id              INTEGER PRIMARY KEY,
            name            TEXT    NOT NULL
                            CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9._-]*'),
            name_folded     TEXT    NOT NULL UNIQUE CHECK (name_folded = lower(name)),
            created_at      INTEGER NOT NULL
         );
         CREATE TABLE memberships (
            user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            group_id        INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
            PRIMARY KEY (user_id, group_id)
         ) WITHOUT ROWID;
         CREATE INDEX memberships_by_group ON memberships (group_id);",
    )?;
    Ok(())
}

/// Version 6: `users.group_names`, the sorted, comma-joined names the token
/// check reads, kept by triggers on `memberships` (see schema.sql) and
/// filled here from the memberships already in the file.
fn users_group_names(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "ALTER TABLE users ADD COLUMN group_names TEXT NOT NULL DEFAULT '';
         UPDATE users SET group_names = ifnull(
             (SELECT group_concat(g.name, ',' ORDER BY g.name_folded)
              FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
              WHERE m.user_id = users.id), '');
         CREATE TRIGGER group_names_on_join AFTER INSERT ON memberships
         BEGIN
             UPDATE users SET group_names = ifnull(
                 (SELECT group_concat(g.name, ',' ORDER BY g.name_folded)
                  FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
                  WHERE m.user_id = NEW.user_id), '')
             WHERE id = NEW.user_id;
         END;
         CREATE TRIGGER group_names_on_leave AFTER DELETE ON memberships
         BEGIN
             UPDATE users SET group_names = ifnull(
                 (SELECT group_concat(g.name, ',' ORDER BY g.name_folded)
                  FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
                  WHERE m.user_id = OLD.user_id), '')
             WHERE id = OLD.user_id;
         END;",
    )?;
    Ok(())
}

/// Version 7: the `audit` table (see schema.sql). Nothing existing
/// changes; the trail starts empty.
fn audit_trail(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE audit (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            at              INTEGER NOT NULL,
            event           TEXT    NOT NULL,
            username        TEXT,
            username_folded TEXT,
            ip              TEXT,
            user_agent      TEXT,
            source          TEXT    NOT NULL CHECK (source IN ('http', 'cli')),
            detail          TEXT    NOT NULL DEFAULT ''
         );
         CREATE INDEX audit_by_time ON audit (at);
         CREATE INDEX audit_by_user ON audit (username_folded, id);",
    )?;
    Ok(())
}

/// Version 8: the second factor (see schema.sql): `sessions.amr`, every
/// existing session a password login's (1); `totp`, `totp_pending`,
/// `recovery_codes` and `login_challenges`, empty.
fn second_factor(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "ALTER TABLE sessions ADD COLUMN amr INTEGER NOT NULL DEFAULT 1;
         CREATE TABLE totp (
            user_id         INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            secret          BLOB    NOT NULL CHECK (length(secret) = 20),
            last_step       INTEGER NOT NULL,
            enrolled_at     INTEGER NOT NULL
         );
         CREATE TABLE totp_pending (
            user_id         INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            secret          BLOB    NOT NULL CHECK (length(secret) = 20),
            created_at      INTEGER NOT NULL
         );
         CREATE TABLE recovery_codes (
            user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            code_hash       BLOB    NOT NULL CHECK (length(code_hash) = 32),
            PRIMARY KEY (user_id, code_hash)
         ) WITHOUT ROWID;
         CREATE TABLE login_challenges (
            challenge_hash  BLOB    PRIMARY KEY CHECK (length(challenge_hash) = 32),
            user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            credential_version INTEGER NOT NULL,
            replaces_session INTEGER,
            expires_at      INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// Version 9: `login_limits`, empty: the brute-force state instances on
/// one database share (one instance alone keeps it in memory).
fn login_limits(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute_batch(
        "CREATE TABLE login_limits (
            kind            INTEGER NOT NULL CHECK (kind IN (0, 1)),
            subject         TEXT    NOT NULL,
            failures        BLOB    NOT NULL,
            in_flight       INTEGER NOT NULL,
            reserved_at     INTEGER NOT NULL,
            banned_until    INTEGER NOT NULL,
            idle_at         INTEGER NOT NULL,
            PRIMARY KEY (kind, subject)
         ) WITHOUT ROWID;
         CREATE INDEX login_limits_by_idle ON login_limits (idle_at);",
    )?;
    Ok(())
}

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
            step(&tx)?;
        }
    }
    if found != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
