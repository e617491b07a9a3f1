//! The administrator's use cases: users, sessions, introspection clients
//! and backups, one call each (groups are in `groups.rs`).
//!
//! The CLI parses its arguments into [`super::input`] types, calls one
//! method and prints the answer; a later caller (an admin API, a reload
//! signal) calls the same methods. Each change is one transaction, and a
//! change that ends access (a new password, a disabled user) ends the
//! user's sessions in that same transaction and raises their credential
//! version, so that a login whose password check overlaps it gets no
//! session either (`store::users`).
//!
//! The methods block (SQLite, and argon2 for passwords): call them from a
//! thread that may block, never from an async worker.

use crate::store::Db;
use std::path::Path;

use super::audit::{self, Event, Origin, Subject};
use super::input::{ClientId, Password, ProfileField, Username};
use super::password::{self, HashError, PasswordHashing};
use super::token::{RandomError, Token};
use super::unix_now;
use crate::config::PasswordConfig;
use crate::store::{self, backup, clients, groups, sessions, users, Engine, Store, StoreError};

/// Why an admin use case did not succeed; the text is a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no group {0:?}")]
    NoSuchGroup(String),
    #[error("group {0:?} already exists")]
    GroupExists(String),
    #[error("user {user:?} is already in group {group:?}")]
    AlreadyMember { user: String, group: String },
    #[error("user {user:?} is not in group {group:?}")]
    NotMember { user: String, group: String },
    #[error("user {0:?} has no second factor")]
    NoSecondFactor(String),
    #[error("no client {0:?}")]
    NoSuchClient(String),
    #[error("client {0:?} already exists")]
    ClientExists(String),
    #[error(
        "client {0:?} is the last introspection client: without it /introspect \
         would answer anyone"
    )]
    LastClient(String),
    #[error(
        "backup copies the SQLite file, and this database is PostgreSQL (database.url): \
         back it up with pg_dump"
    )]
    BackupOnPostgres,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A user to create.
pub struct NewUser {
    pub username: Username,
    pub password: Password,
    pub email: Option<ProfileField>,
    pub display_name: Option<ProfileField>,
}

/// A user as listed to the administrator (the password hash stays inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
    /// The user's group names, sorted case-insensitively.
    pub groups: Vec<String>,
    /// Whether the user has a confirmed second factor (TOTP).
    pub totp: bool,
}

/// What a change to one user did: the name as stored, and the sessions it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub username: String,
    pub sessions_ended: usize,
}

/// An introspection client as listed.
pub use clients::Client;
/// A session as listed to the administrator.
pub use sessions::SessionRow;

/// The administrator's use cases over one database.
pub struct Admin {
    pub(super) store: Store,
    passwords: PasswordHashing,
}

impl Admin {
    /// The use cases over `store`, hashing new passwords with `config`.
    pub fn new(store: Store, config: &PasswordConfig) -> Result<Admin, AdminError> {
        Ok(Admin {
            store,
            passwords: PasswordHashing::new(config)?,
        })
    }

    /// Creates user `admin` with a random password when there are no users
    /// at all; returns that password, to be shown once.
    pub fn create_initial_admin(&self) -> Result<Option<Token>, AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        if users::count(&tx)? > 0 {
            return Ok(None);
        }
        let password = Token::generate()?;
        let hash = self.hash(password.expose())?;
        let username = Username::parse("admin").expect("\"admin\" is a valid username");
        insert_user(&tx, &username, &hash, None, None)?;
        let detail = "the initial administrator, created on an empty database";
        record(&tx, Event::UserAdded, named(&username), detail)?;
        tx.commit()?;
        Ok(Some(password))
    }

    /// Fails with [`AdminError::UserExists`] when the name is taken (in any
    /// case): lets a caller refuse before asking for a password.
    pub fn ensure_name_free(&self, username: &Username) -> Result<(), AdminError> {
        let conn = self.store.conn()?;
        match users::find_by_folded_name(&conn, username.folded())? {
            Some(_) => Err(AdminError::UserExists(username.to_string())),
            None => Ok(()),
        }
    }

    /// Fails with [`AdminError::NoSuchUser`] unless the user exists: lets a
    /// caller refuse before asking for a password.
    pub fn ensure_user_exists(&self, username: &Username) -> Result<(), AdminError> {
        let conn = self.store.conn()?;
        find_user(&conn, username).map(drop)
    }

    /// Creates a user; returns the new id.
    pub fn add_user(&self, user: &NewUser) -> Result<i64, AdminError> {
        let hash = self.hash(user.password.expose())?;
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let id = insert_user(
            &tx,
            &user.username,
            &hash,
            user.email.as_ref(),
            user.display_name.as_ref(),
        )
        .map_err(|e| match e {
            StoreError::Conflict => AdminError::UserExists(user.username.to_string()),
            other => other.into(),
        })?;
        record(&tx, Event::UserAdded, named(&user.username), "")?;
        tx.commit()?;
        Ok(id)
    }

    /// Sets a user's password and ends their sessions: a new password is
    /// usually the answer to a leak.
    pub fn set_password(
        &self,
        username: &Username,
        password: &Password,
    ) -> Result<UserChange, AdminError> {
        let hash = self.hash(password.expose())?;
        self.change_user(username, Event::PasswordChanged, |tx, id| {
            users::set_password_hash(tx, id, &hash)?;
            sessions::delete_for_user(tx, id)
        })
    }

    /// Stops a user from logging in, and ends their sessions now rather than
    /// when they expire.
    pub fn disable_user(&self, username: &Username) -> Result<UserChange, AdminError> {
        self.change_user(username, Event::UserDisabled, |tx, id| {
            users::set_disabled(tx, id, true)?;
            sessions::delete_for_user(tx, id)
        })
    }

    /// Lets a disabled user log in again (old sessions stay ended).
    pub fn enable_user(&self, username: &Username) -> Result<UserChange, AdminError> {
        self.change_user(username, Event::UserEnabled, |tx, id| {
            users::set_disabled(tx, id, false)?;
            Ok(0)
        })
    }

    /// Deletes a user; their sessions and group memberships go with them.
    pub fn delete_user(&self, username: &Username) -> Result<UserChange, AdminError> {
        self.change_user(username, Event::UserDeleted, |tx, id| {
            let sessions = sessions::delete_for_user(tx, id)?;
            groups::remove_user_from_all(tx, id)?;
            crate::store::totp::remove(tx, id)?;
            users::delete(tx, id)?;
            Ok(sessions)
        })
    }

    /// Every user with their groups, by id.
    pub fn users(&self) -> Result<Vec<UserInfo>, AdminError> {
        let conn = self.store.conn()?;
        // One snapshot: a user deleted in between is not listed with groups
        // from before.
        let (users, mut groups, enrolled) = store::snapshot(&conn, |conn| {
            Ok((
                users::list(conn)?,
                groups::names_by_user(conn)?,
                crate::store::totp::enrolled_users(conn)?,
            ))
        })?;
        Ok(users
            .into_iter()
            .map(|u| UserInfo {
                groups: groups.remove(&u.id).unwrap_or_default(),
                totp: enrolled.contains(&u.id),
                id: u.id,
                username: u.username,
                email: u.email,
                display_name: u.display_name,
                disabled: u.disabled,
                created_at: u.created_at,
            })
            .collect())
    }

    /// Valid sessions, newest first; of one user, or of everyone.
    pub fn sessions(&self, username: Option<&Username>) -> Result<Vec<SessionRow>, AdminError> {
        let conn = self.store.conn()?;
        let user_id = match username {
            Some(name) => Some(find_user(&conn, name)?.id),
            None => None,
        };
        Ok(sessions::list_valid(&conn, user_id, unix_now())?)
    }

    /// Ends every session of a user, and any login still checking their
    /// password (it finds the credential version moved on).
    pub fn revoke_sessions(&self, username: &Username) -> Result<UserChange, AdminError> {
        self.change_user(username, Event::SessionsRevoked, |tx, id| {
            users::bump_credential_version(tx, id)?;
            sessions::delete_for_user(tx, id)
        })
    }

    /// Deletes expired sessions now; returns how many.
    pub fn purge_sessions(&self) -> Result<usize, AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let purged = sessions::purge_expired(&tx, unix_now())?;
        let detail = format!("{purged} expired session(s) deleted");
        record(&tx, Event::SessionsPurged, Subject::Nobody, &detail)?;
        tx.commit()?;
        Ok(purged)
    }

    /// Creates an introspection client with a random secret, returned to be
    /// shown once; only its hash is stored.
    pub fn add_client(&self, id: &ClientId) -> Result<Token, AdminError> {
        let secret = Token::generate()?;
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        clients::insert(&tx, id.as_str(), &secret.hash().0, unix_now()).map_err(|e| match e {
            StoreError::Conflict => AdminError::ClientExists(id.to_string()),
            other => other.into(),
        })?;
        let detail = format!("client {:?}", id.as_str());
        record(&tx, Event::ClientAdded, Subject::Nobody, &detail)?;
        tx.commit()?;
        Ok(secret)
    }

    /// Every introspection client, by id.
    pub fn clients(&self) -> Result<Vec<Client>, AdminError> {
        let conn = self.store.conn()?;
        Ok(clients::list(&conn)?)
    }

    /// Removes an introspection client; refuses ([`AdminError::LastClient`])
    /// to remove the last one unless `force`, since `/introspect` then
    /// answers anyone. Returns true when no client is left.
    pub fn remove_client(&self, id: &str, force: bool) -> Result<bool, AdminError> {
        let conn = self.store.conn()?;
        // One immediate transaction: two removals at once cannot each see
        // the other's client left and together empty the table.
        let tx = crate::store::write(&conn)?;
        if !clients::delete(&tx, id)? {
            return Err(AdminError::NoSuchClient(id.to_owned()));
        }
        let none_left = !clients::any_exist(&tx)?;
        if none_left && !force {
            // Dropping the transaction rolls the delete back.
            return Err(AdminError::LastClient(id.to_owned()));
        }
        let detail = match none_left {
            true => format!("client {id:?}, the last one: /introspect answers anyone"),
            false => format!("client {id:?}"),
        };
        record(&tx, Event::ClientRemoved, Subject::Nobody, &detail)?;
        tx.commit()?;
        Ok(none_left)
    }

    /// Writes a consistent copy of the database to `dest`, even while
    /// serving: a new file, mode 0600, renamed over `dest`.
    pub fn backup(&self, dest: &Path) -> Result<(), AdminError> {
        // SQLite's online backup; PostgreSQL has pg_dump for this.
        if self.store.engine() != Engine::Sqlite {
            return Err(AdminError::BackupOnPostgres);
        }
        // The name of the private staging directory beside `dest`: from the
        // CSPRNG, so nobody can plant a file or link under it beforehand.
        let nonce = Token::generate()?;
        let conn = self.store.connection()?;
        Ok(backup::backup_to(&conn, dest, nonce.expose())?)
    }

    /// Finds the user and runs `change` on their id in one immediate
    /// transaction, recorded as `event`; `change` returns the number of
    /// sessions it ended.
    fn change_user(
        &self,
        username: &Username,
        event: Event,
        change: impl FnOnce(&dyn Db, i64) -> Result<usize, StoreError>,
    ) -> Result<UserChange, AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let user = find_user(&tx, username)?;
        let sessions_ended = change(&tx, user.id)?;
        let detail = match sessions_ended {
            0 => String::new(),
            n => format!("{n} session(s) ended"),
        };
        // Named, not by id: a deleted user's row is gone by now.
        let subject = Subject::Named(&user.username, username.folded());
        record(&tx, event, subject, &detail)?;
        tx.commit()?;
        Ok(UserChange {
            username: user.username,
            sessions_ended,
        })
    }

    /// An argon2id hash made on this thread, whose working memory is then
    /// freed: admin callers hash once, not all day.
    fn hash(&self, password: &str) -> Result<String, HashError> {
        let hash = self.passwords.hash(password);
        password::release_work_memory();
        hash
    }
}

pub(super) fn find_user(conn: &dyn Db, username: &Username) -> Result<users::User, AdminError> {
    users::find_by_folded_name(conn, username.folded())?
        .ok_or_else(|| AdminError::NoSuchUser(username.to_string()))
}

/// Records an administrator's change, made on the command line.
pub(super) fn record(
    conn: &dyn Db,
    event: Event,
    subject: Subject<'_>,
    detail: &str,
) -> Result<(), StoreError> {
    audit::record(conn, event, Origin::Cli, subject, detail)
}

/// The user an event is about, by the name given.
pub(super) fn named(username: &Username) -> Subject<'_> {
    Subject::Named(username.as_str(), username.folded())
}

fn insert_user(
    conn: &dyn Db,
    username: &Username,
    password_hash: &str,
    email: Option<&ProfileField>,
    display_name: Option<&ProfileField>,
) -> Result<i64, StoreError> {
    users::insert(
        conn,
        &users::NewUser {
            username: username.as_str(),
            username_folded: username.folded(),
            password_hash,
            email: email.map(ProfileField::as_str),
            display_name: display_name.map(ProfileField::as_str),
            created_at: unix_now(),
        },
    )
}
