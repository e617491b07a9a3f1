-- latchkey's schema, version 1: applied to a new database file at start.
-- Later changes go through migrations in src/store/migrate.rs, which track
-- PRAGMA user_version. Times are unix seconds (UTC).

-- People and programs that log in.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    -- As typed at creation: shown in Remote-User and /me.
    username        TEXT    NOT NULL,
    -- Lowercased username: the unique key that makes names case-insensitive
    -- (SQLite's NOCASE folds ASCII only).
    username_folded TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string; carries its own parameters and salt.
    password_hash   TEXT    NOT NULL,
    email           TEXT,
    display_name    TEXT,
    -- 1 = may not log in; every session of a disabled user is invalid.
    disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at      INTEGER NOT NULL
);

-- Logged-in sessions. Keyed by the SHA-256 of the token, WITHOUT ROWID, so
-- a token check is a single B-tree lookup whatever the table size; the raw
-- token is never stored.
CREATE TABLE sessions (
    token_hash      BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    -- Public handle for the session inventory (GET/DELETE /sessions); it is
    -- not a credential.
    id              INTEGER NOT NULL UNIQUE,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    -- Idle expiry: slides forward on use, never past max_expires_at.
    expires_at      INTEGER NOT NULL,
    -- Absolute expiry, fixed at login.
    max_expires_at  INTEGER NOT NULL,
    -- Client address and User-Agent at login, for the inventory.
    ip              TEXT    NOT NULL,
    user_agent      TEXT    NOT NULL
) WITHOUT ROWID;

-- A user's sessions: inventory, logout-all, user deletion.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
-- The background purge: expires_at <= max_expires_at always holds, so
-- expires_at alone finds every expired row.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- RFC 7662 introspection clients (HTTP Basic id + secret).
CREATE TABLE clients (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- SHA-256 of the random secret; the secret is shown once at creation.
    secret_hash     BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created_at      INTEGER NOT NULL
);
