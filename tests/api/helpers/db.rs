//! Database fixtures: rows are written through the store's own functions
//! (`latchkey::store::{users, sessions, clients}`, `latchkey::auth`), on a
//! connection configured as the server's (foreign keys on, so a deleted
//! user's sessions go with them), so that every row keeps the store's
//! invariants. Reads go through the store's functions too where one exists;
//! what a test checks as an outside observer stays plain SQL in the test.
//!
//! The fixtures work on either engine (they take `&dyn Db`, and the
//! plain-SQL reads, [`TestApp::scalar`], are written in the SQL both
//! speak). A [`Sandbox`] on a SQLite file is read with plain rusqlite,
//! nothing of latchkey's in between; one on PostgreSQL through latchkey's
//! own connection.

use std::path::Path;

use latchkey::auth::admin::Admin;
use latchkey::auth::admin::AdminError;
use latchkey::auth::input::{ClientId, GroupName, Username};
use latchkey::auth::password::PasswordHashing;
use latchkey::config::PasswordConfig;
use latchkey::store::db::{Db, DbExt, Engine, Row, Value};
use latchkey::store::sessions::Inserted;
use latchkey::store::{clients, sessions, users, Conn, PooledConnection, Store, StoreError};
use rusqlite::Connection;

use super::app::TestApp;
use super::process::Sandbox;

/// SHA-256 of a token, computed here rather than by latchkey: what the
/// server must store and look sessions up by.
pub fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A plain connection to a database file, for reading what is stored.
pub fn open_db(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the database");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// The first row of a plain-SQL read (`?1`... parameters): how a test
/// looks at what is stored as an outside observer. On a rusqlite
/// [`Connection`] nothing of latchkey's is in between; on a [`Sandbox`] or
/// [`TestApp`] database, only the engine's own driver.
pub fn scalar<T: Column>(db: &dyn Db, sql: &str, params: &[Value<'_>]) -> T {
    db.one(sql, params, |r| T::read(r, 0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of every row of a plain-SQL read, in order.
pub fn column<T: Column>(db: &dyn Db, sql: &str) -> Vec<T> {
    db.rows(sql, &[], |r| T::read(r, 0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A connection from latchkey's own [`Store`] on `path`, as the server and
/// the CLI write through, for writing fixtures.
pub fn store_connection(path: &Path) -> PooledConnection {
    Store::open(path, 1)
        .expect("open store")
        .connection()
        .expect("a store connection")
}

/// The bytes of the database file and of any -wal/-shm/-journal beside it.
pub fn database_bytes(db_path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = db_path.to_owned().into_os_string();
        path.push(suffix);
        if let Ok(mut content) = std::fs::read(&path) {
            bytes.append(&mut content);
        }
    }
    bytes
}

/// Creates a user whose hash is made with `passwords`; returns the id.
pub fn insert_user(
    conn: &dyn Db,
    name: &str,
    password: &str,
    passwords: &PasswordConfig,
    email: Option<&str>,
    display_name: Option<&str>,
) -> i64 {
    let hash = PasswordHashing::new(passwords)
        .unwrap()
        .hash(password)
        .unwrap();
    let username = Username::parse(name).expect("a valid test username");
    users::insert(
        conn,
        &users::NewUser {
            username: name,
            username_folded: username.folded(),
            password_hash: &hash,
            email,
            display_name,
            created_at: latchkey::auth::unix_now(),
        },
    )
    .expect("insert user")
}

/// Ends every session of `user_id` as the CLI does; returns how many.
pub fn delete_sessions_of(conn: &dyn Db, user_id: i64) -> usize {
    sessions::delete_for_user(conn, user_id).expect("delete sessions")
}

/// Stores `session` through `sessions::insert` under public id `id`; its
/// token hash is 32 bytes of that id.
///
/// The store hands out each id once, counting up, so the ids below `id`
/// still to be handed out are spent by storing and deleting the session
/// again until its turn comes. Panics if `id` was handed out already.
pub fn insert_session(conn: &dyn Db, id: i64, session: &sessions::NewSession<'_>) {
    let wanted = id;
    let hash = [u8::try_from(wanted).expect("small id"); 32];
    loop {
        let Inserted::Stored(id) = sessions::insert(conn, &hash, session).expect("insert session")
        else {
            panic!("the lookup key of session {wanted} is taken");
        };
        if id == wanted {
            break;
        }
        assert!(id < wanted, "session id {wanted} was handed out already");
        assert!(sessions::delete_by_token_hash(conn, &hash)
            .unwrap()
            .is_some());
    }
}

/// A stored session's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
}

/// The times of the session stored under `token_hash`, if there is one.
pub fn session_times(conn: &dyn Db, token_hash: &[u8; 32]) -> Option<SessionTimes> {
    sessions::find_by_token_hash(conn, token_hash)
        .expect("look the session up")
        .map(|row| SessionTimes {
            created_at: row.created_at,
            expires_at: row.expires_at,
            max_expires_at: row.max_expires_at,
        })
}

/// Rewrites the times of the session stored under `token_hash`: how tests
/// let time pass without waiting.
///
/// The one raw-SQL write of the harness: no store function moves a
/// session's times back (`sessions::extend` only ever moves `expires_at`
/// forward, as the server must). The row is keyed exactly as the store keys
/// it, by `lookup_key` and `token_hash`.
pub fn rewrite_session_times(conn: &dyn Db, token_hash: &[u8; 32], times: SessionTimes) {
    let changed = conn
        .execute(
            "UPDATE sessions SET created_at = ?3, expires_at = ?4, max_expires_at = ?5
             WHERE lookup_key = ?1 AND token_hash = ?2",
            latchkey::db_params![
                sessions::lookup_key(token_hash),
                &token_hash[..],
                times.created_at,
                times.expires_at,
                times.max_expires_at
            ],
        )
        .unwrap();
    assert_eq!(changed, 1, "no session for that token");
}

/// A value a plain-SQL read returns, on either engine.
pub trait Column: Sized {
    fn read(row: &Row<'_>, i: usize) -> Result<Self, StoreError>;
}

/// `Column` for a type through the `Row` getter that reads it.
macro_rules! column_through {
    ($($ty:ty => $getter:ident),* $(,)?) => {$(
        impl Column for $ty {
            fn read(row: &Row<'_>, i: usize) -> Result<Self, StoreError> {
                row.$getter(i)
            }
        }
    )*};
}

column_through! {
    i64 => int,
    Option<i64> => opt_int,
    String => text,
    Option<String> => opt_text,
    Vec<u8> => blob,
}

impl<A: Column, B: Column> Column for (A, B) {
    fn read(row: &Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok((A::read(row, i)?, B::read(row, i + 1)?))
    }
}

impl TestApp {
    /// The store the fixtures write through: latchkey's own, on the
    /// server's database, as another process (the CLI) would open it.
    pub fn store(&self) -> &Store {
        self.fixtures.get_or_init(|| {
            Store::open_config(&latchkey::config::DatabaseConfig {
                pool_size: 2,
                ..self.config.database.clone()
            })
            .expect("open the test database")
        })
    }

    /// Which engine the server runs on.
    pub fn engine(&self) -> Engine {
        self.store().engine()
    }

    /// A connection through latchkey's own store on the server's database,
    /// as another process (the CLI) would have: for reading what is stored
    /// and for writing fixtures.
    pub fn db(&self) -> Conn {
        self.store().conn().expect("a database connection")
    }

    /// The first row of a plain-SQL read (`?1`... parameters, SQL both
    /// engines speak), as an outside observer looks at what is stored.
    pub fn scalar<T: Column>(&self, sql: &str, params: &[Value<'_>]) -> T {
        scalar(&self.db(), sql, params)
    }

    /// The first column of every row of a plain-SQL read, in order.
    pub fn column<T: Column>(&self, sql: &str) -> Vec<T> {
        column(&self.db(), sql)
    }

    /// Everything the server's database holds, as bytes: the SQLite file
    /// and any -wal/-shm beside it, or on PostgreSQL every value of every
    /// column (byte strings as their bytes, the rest as text), for checking
    /// that a secret is not among them.
    pub fn database_bytes(&self) -> Vec<u8> {
        if self.engine() == Engine::Sqlite {
            return database_bytes(&self.db_path);
        }
        postgres_bytes(&self.db())
    }

    /// Creates a user with the server's password parameters; returns the id.
    pub fn add_user(&self, name: &str, password: &str) -> i64 {
        self.add_user_with(name, password, None, None)
    }

    pub fn add_user_with(
        &self,
        name: &str,
        password: &str,
        email: Option<&str>,
        display_name: Option<&str>,
    ) -> i64 {
        let conn = self.db();
        insert_user(
            &conn,
            name,
            password,
            &self.config.password,
            email,
            display_name,
        )
    }

    /// Creates a user whose hash is made with `passwords` rather than the
    /// server's parameters; returns the id.
    pub fn add_user_hashed_with(
        &self,
        name: &str,
        password: &str,
        passwords: &PasswordConfig,
    ) -> i64 {
        insert_user(&self.db(), name, password, passwords, None, None)
    }

    /// The stored PHC password hash of user `id`.
    pub fn password_hash(&self, id: i64) -> String {
        users::find_by_id(&self.db(), id)
            .unwrap()
            .expect("the user exists")
            .password_hash
    }

    /// Sets a user's `disabled` flag, as `latchkey user disable` does.
    pub fn set_disabled(&self, id: i64, disabled: bool) {
        let changed = users::set_disabled(&self.db(), id, disabled).unwrap();
        assert!(changed, "no user {id}");
    }

    /// Deletes a user (and so their sessions), as `latchkey user delete` does.
    pub fn delete_user(&self, id: i64) {
        let deleted = users::delete(&self.db(), id).unwrap();
        assert!(deleted, "no user {id}");
    }

    /// The administrator's use cases on the server's database, as the CLI
    /// (another process) has them.
    pub fn admin(&self) -> Admin {
        Admin::new(self.store().clone(), &self.config.password).unwrap()
    }

    /// Puts `user` in `group`, creating the group first if it does not
    /// exist, as `latchkey group add` and `group add-member` do.
    pub fn add_to_group(&self, group: &str, user: &str) {
        let admin = self.admin();
        let group = GroupName::parse(group).expect("a valid test group name");
        match admin.add_group(&group) {
            Ok(()) | Err(AdminError::GroupExists(_)) => {}
            Err(e) => panic!("add group {group}: {e}"),
        }
        let user = Username::parse(user).expect("a valid test username");
        admin.add_member(&group, &user).expect("add the member");
    }

    /// Creates an introspection client as `latchkey client add` does; returns its secret.
    pub fn add_client(&self, id: &str) -> String {
        self.admin()
            .add_client(&ClientId::parse(id).unwrap())
            .unwrap()
            .expose()
            .to_owned()
    }

    /// Removes an introspection client, as `latchkey client remove` does.
    pub fn remove_client(&self, id: &str) {
        let removed = clients::delete(&self.db(), id).unwrap();
        assert!(removed, "no client {id:?}");
    }

    /// The whole audit trail, oldest first, as `latchkey audit` reads it.
    pub fn audit_trail(&self) -> Vec<latchkey::auth::audit::Entry> {
        let admin = self.admin();
        let mut listing = admin.audit_trail(None, None);
        let mut all = Vec::new();
        loop {
            let page = listing.next_page().expect("read the audit trail");
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Every text stored in the audit table, joined: for checking that no
    /// secret is among them.
    pub fn audit_text(&self) -> String {
        self.column::<String>(
            "SELECT event || ' ' || coalesce(username, '') || ' ' || coalesce(username_folded, '')
                    || ' ' || coalesce(ip, '') || ' ' || coalesce(user_agent, '') || ' ' || source
                    || ' ' || detail FROM audit ORDER BY id",
        )
        .join("\n")
    }

    /// Deletes expired sessions, as the server's background task does.
    pub fn purge_expired_sessions(&self) -> usize {
        sessions::purge_expired(&self.db(), latchkey::auth::unix_now()).expect("purge the test db")
    }

    /// The public session id of a token's session.
    pub fn session_id(&self, token: &str) -> i64 {
        sessions::find_by_token_hash(&self.db(), &sha256(token))
            .unwrap()
            .expect("a session for that token")
            .session_id
    }

    /// `(expires_at, max_expires_at)` of a token's session as stored.
    pub fn stored_expiry(&self, token: &str) -> Option<(i64, i64)> {
        session_times(&self.db(), &sha256(token)).map(|t| (t.expires_at, t.max_expires_at))
    }

    /// Sets a session's expiries, to test expiry without waiting.
    pub fn set_session_expiry(&self, token: &str, expires_at: i64, max_expires_at: i64) {
        self.change_session_times(token, |times| SessionTimes {
            expires_at,
            max_expires_at,
            ..times
        });
    }

    /// Moves a session's creation `seconds` into the past.
    pub fn backdate_session(&self, token: &str, seconds: i64) {
        self.change_session_times(token, |times| SessionTimes {
            created_at: times.created_at - seconds,
            ..times
        });
    }

    fn change_session_times(&self, token: &str, change: impl FnOnce(SessionTimes) -> SessionTimes) {
        let conn = self.db();
        let hash = sha256(token);
        let times = session_times(&conn, &hash).expect("no session for that token");
        rewrite_session_times(&conn, &hash, change(times));
    }
}

impl Sandbox {
    /// A connection to the sandbox's database, for checking what is
    /// stored: a plain rusqlite connection to the file (nothing of
    /// latchkey's in between: the file may be anyone's), or latchkey's own
    /// on the sandbox's PostgreSQL database.
    pub fn db(&self) -> Box<dyn Db> {
        match self.postgres_store() {
            Some(store) => Box::new(store.conn().expect("a database connection")),
            None => Box::new(open_db(&self.db_path())),
        }
    }

    /// A connection through latchkey's own store, for writing fixtures.
    pub fn store_connection(&self) -> Box<dyn Db> {
        match self.postgres_store() {
            Some(store) => Box::new(store.conn().expect("a database connection")),
            None => Box::new(store_connection(&self.db_path())),
        }
    }

    /// Everything the sandbox's database holds, as bytes, as
    /// [`TestApp::database_bytes`] reads it.
    pub fn database_bytes(&self) -> Vec<u8> {
        match self.database_url() {
            Some(_) => postgres_bytes(&self.db()),
            None => database_bytes(&self.db_path()),
        }
    }

    pub fn user_id(&self, name: &str) -> i64 {
        users::find_by_folded_name(&self.db(), Username::parse(name).unwrap().folded())
            .unwrap()
            .expect("user exists")
            .id
    }

    pub fn user_count(&self) -> i64 {
        users::count(&self.db()).unwrap()
    }

    /// The stored PHC password hash of user `name`.
    pub fn stored_hash(&self, name: &str) -> String {
        users::find_by_folded_name(&self.db(), Username::parse(name).unwrap().folded())
            .unwrap()
            .expect("user exists")
            .password_hash
    }

    /// Stores session `id` of `user_id`, with an absolute expiry an hour
    /// after the idle one, from 192.0.2.1 by "test-agent".
    pub fn insert_session(&self, id: i64, user_id: i64, created_at: i64, expires_at: i64) {
        self.insert_session_full(
            id,
            user_id,
            created_at,
            expires_at,
            expires_at + 3600,
            "192.0.2.1",
            "test-agent",
        );
    }

    /// Stores session `id` with every field given.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_session_full(
        &self,
        id: i64,
        user_id: i64,
        created_at: i64,
        expires_at: i64,
        max_expires_at: i64,
        ip: &str,
        user_agent: &str,
    ) {
        let session = sessions::NewSession {
            user_id,
            created_at,
            expires_at,
            max_expires_at,
            ip,
            user_agent,
            amr: 1,
        };
        insert_session(&self.store_connection(), id, &session);
    }

    /// Ids of the stored session rows, expired ones too, ascending.
    pub fn session_ids(&self) -> Vec<i64> {
        column(&self.db(), "SELECT id FROM sessions ORDER BY id")
    }
}

/// Every value of every column of the PostgreSQL database `db` is on, as
/// bytes: byte strings as their bytes, the rest as text.
fn postgres_bytes(db: &dyn Db) -> Vec<u8> {
    let columns: Vec<(String, String)> = db
        .rows(
            "SELECT table_name::text, column_name::text || ' ' || data_type::text
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
            |r| <(String, String)>::read(r, 0),
        )
        .expect("list the columns");
    let mut bytes = Vec::new();
    for (table, column_and_type) in columns {
        let (name, data_type) = column_and_type.split_once(' ').expect("name and type");
        let select = format!("SELECT \"{name}\" FROM \"{table}\" WHERE \"{name}\" IS NOT NULL");
        let values: Vec<Vec<u8>> = if data_type == "bytea" {
            column(db, &select)
        } else {
            let as_text = select.replacen(&format!("\"{name}\""), &format!("\"{name}\"::text"), 1);
            let text: Vec<String> = column(db, &as_text);
            text.into_iter().map(String::into_bytes).collect()
        };
        for value in values {
            bytes.extend(value);
            bytes.push(b'\n');
        }
    }
    bytes
}
