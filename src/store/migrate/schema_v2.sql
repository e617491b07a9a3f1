-- latchkey's schema, version 2, kept as written so that a test can make a
-- version-2 file and migrate it. Times are unix seconds (UTC).

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

-- Logged-in sessions, found by the SHA-256 of their token; the raw token is
-- never stored.
CREATE TABLE sessions (
    -- The hash's first 8 bytes as a big-endian integer: the rowid. A token
    -- check is then one probe of an integer-keyed B-tree, and the indexes
    -- below point at rows by 8 bytes, not by the 32-byte hash (version 1
    -- keyed a WITHOUT ROWID table by the hash: at a million sessions the
    -- file was 29% larger and a lookup 0.7 µs slower). Every query also
    -- compares the full hash; a new token whose key is taken is replaced.
    lookup_key      INTEGER PRIMARY KEY,
    token_hash      BLOB    NOT NULL CHECK (length(token_hash) = 32),
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
);

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
