-- latchkey's schema, version 9: applied to a new database file at start.
-- Older files are brought here by the migrations in src/store/migrate/,
-- which track PRAGMA user_version. Times are unix seconds (UTC).

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
    created_at      INTEGER NOT NULL,
    -- Goes up with every credential change (password, disabled flag, all
    -- sessions revoked). A login reads it with the hash and creates its
    -- session only if it is unchanged, in the same transaction: a login
    -- whose password check overlapped a change gets no session.
    credential_version INTEGER NOT NULL DEFAULT 0,
    -- The user's group names, sorted by folded name, joined by commas (no
    -- group name holds one): what Remote-Groups sends. Kept by the
    -- triggers on memberships below, so that the token check reads one
    -- column instead of sorting memberships on every request (which cost
    -- more than the rest of the lookup; docs/benchmarks.md).
    group_names     TEXT    NOT NULL DEFAULT ''
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
    -- not a credential. Taken from session_counter: never reused.
    id              INTEGER NOT NULL UNIQUE,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL,
    -- Idle expiry: slides forward on use, never past max_expires_at.
    expires_at      INTEGER NOT NULL,
    -- Absolute expiry, fixed at login.
    max_expires_at  INTEGER NOT NULL,
    -- Client address and User-Agent at login, for the inventory.
    ip              TEXT    NOT NULL,
    user_agent      TEXT    NOT NULL,
    -- The factors the login proved, as bits: 1 password, 2 one-time code
    -- (a TOTP code or a recovery code). Reported as `amr`.
    amr             INTEGER NOT NULL DEFAULT 1
);

-- A user's sessions: inventory, logout-all, user deletion.
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
-- The background purge: expires_at <= max_expires_at always holds, so
-- expires_at alone finds every expired row.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- The highest session id ever handed out, in its one row. A new session
-- takes the next one, so an id is never reused, not even after the newest
-- session is deleted (max(id) + 1, as version 2 did, hands a deleted id to
-- the next login: an inventory, a log line or an audit entry naming it would
-- then point at someone else's session).
CREATE TABLE session_counter (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_id         INTEGER NOT NULL
);
INSERT INTO session_counter (id, last_id) VALUES (1, 0);

-- The counter moves in the very statement that stores a session, so no
-- caller can forget it, and an insert that stores nothing (ON CONFLICT DO
-- NOTHING) takes no id.
CREATE TRIGGER session_counter_follows AFTER INSERT ON sessions
BEGIN
    UPDATE session_counter SET last_id = max(last_id, NEW.id);
END;

-- RFC 7662 introspection clients (HTTP Basic id + secret).
CREATE TABLE clients (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- SHA-256 of the random secret; the secret is shown once at creation.
    secret_hash     BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created_at      INTEGER NOT NULL
);

-- Named sets of users, for access rules, Remote-Groups, /me and /introspect.
CREATE TABLE groups (
    id              INTEGER PRIMARY KEY,
    -- As typed at creation. Only A-Z a-z 0-9 . _ -: names travel joined by
    -- commas in the Remote-Groups header, so none may hold a comma, a space
    -- or anything a header would mangle (auth::input::GroupName checks the
    -- same; this keeps a row written by any other means out).
    name            TEXT    NOT NULL
                    CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9._-]*'),
    -- Lowercased name: the unique key (ASCII, so lower() folds it all) and
    -- the order groups are listed and sent in.
    name_folded     TEXT    NOT NULL UNIQUE CHECK (name_folded = lower(name)),
    created_at      INTEGER NOT NULL
);

-- Who is in which group. Deleting a user or a group deletes its rows.
-- Keyed by user first: the token check reads one user's groups on every
-- request (sessions::find_by_token_hash), a range of this key.
CREATE TABLE memberships (
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id        INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, group_id)
) WITHOUT ROWID;

-- A group's members: `group members`, member counts, group deletion.
CREATE INDEX memberships_by_group ON memberships (group_id);

-- Users.group_names follows every membership change, whatever makes it
-- (a command, a cascade from a deleted user or group).
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
END;

-- The audit trail: one row per security event (logins, logouts, revocations,
-- bans, every administrator change). Never a password, token, code or secret.
-- Not tied to users by a foreign key: a row outlives the account it names.
CREATE TABLE audit (
    -- AUTOINCREMENT: ids only go up, even after the oldest rows are purged,
    -- so the id order is the order events were written in.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    -- What happened: login_ok, login_failed, logout, ... (auth::audit::Event).
    event           TEXT    NOT NULL,
    -- The account the event is about, as stored then; NULL when there is
    -- none (a login for a name that no account has: what was typed is not
    -- kept, since it may be a password typed into the wrong field).
    username        TEXT,
    username_folded TEXT,
    -- Whoever made the request, for events that came over HTTP.
    ip              TEXT,
    user_agent      TEXT,
    -- Where the event came from: an HTTP request or the command line.
    source          TEXT    NOT NULL CHECK (source IN ('http', 'cli')),
    -- A short sentence: why a login failed, what a command changed.
    detail          TEXT    NOT NULL DEFAULT ''
);

-- `latchkey audit --since`, and the background purge of old rows.
CREATE INDEX audit_by_time ON audit (at);
-- `latchkey audit --user`.
CREATE INDEX audit_by_user ON audit (username_folded, id);

-- A user's confirmed second factor: the TOTP secret, and the last time
-- step a code was accepted for (a step is never accepted twice).
CREATE TABLE totp (
    user_id         INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- 160 random bits. Kept as is: codes are computed from it. The file is
    -- owner-only (0600), and the secret leaves the server only at enrollment.
    secret          BLOB    NOT NULL CHECK (length(secret) = 20),
    last_step       INTEGER NOT NULL,
    enrolled_at     INTEGER NOT NULL
);

-- An enrollment begun and not yet confirmed with a code: it changes nothing
-- until then, and a new one replaces it.
CREATE TABLE totp_pending (
    user_id         INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret          BLOB    NOT NULL CHECK (length(secret) = 20),
    created_at      INTEGER NOT NULL
);

-- Single-use recovery codes, by the SHA-256 of their normal form.
CREATE TABLE recovery_codes (
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash       BLOB    NOT NULL CHECK (length(code_hash) = 32),
    PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;

-- The second page of a form login: a password checked, a code still to
-- come. Found by the SHA-256 of a random value the page carries; used once,
-- and dead after five minutes.
CREATE TABLE login_challenges (
    challenge_hash  BLOB    PRIMARY KEY CHECK (length(challenge_hash) = 32),
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The user's credential_version when the password was checked: a
    -- change since then (a new password, a disable) voids the challenge.
    credential_version INTEGER NOT NULL,
    -- The one-factor session a step-up replaces, or NULL after a password.
    replaces_session INTEGER,
    expires_at      INTEGER NOT NULL
) WITHOUT ROWID;

-- Brute-force counts and bans per username and per client address, for
-- instances that share the database (PostgreSQL): a ban made through one
-- refuses on all. One instance alone keeps this state in memory and leaves
-- the table empty. What a row means is decided in src/auth/limiter/.
CREATE TABLE login_limits (
    -- 0: a folded username; 1: a client address as counted (IPv6 by /64).
    kind            INTEGER NOT NULL CHECK (kind IN (0, 1)),
    subject         TEXT    NOT NULL,
    -- The failures still in the window: 8-byte big-endian unix times, oldest first.
    failures        BLOB    NOT NULL,
    -- Attempts reserved and not yet settled, and when the latest was made
    -- (reservations a minute old belong to an instance that died).
    in_flight       INTEGER NOT NULL,
    reserved_at     INTEGER NOT NULL,
    banned_until    INTEGER NOT NULL,
    -- When the row has nothing left to count: the purge deletes it then.
    idle_at         INTEGER NOT NULL,
    PRIMARY KEY (kind, subject)
) WITHOUT ROWID;
CREATE INDEX login_limits_by_idle ON login_limits (idle_at);
