//! The rules: who is logged in, and for how long.
//!
//! [`Auth`] holds the use cases the HTTP layer calls (login, token check,
//! introspection, logout, session inventory). Sliding expiry, disabled users,
//! brute-force limits and the cost of a failed login are decided here and
//! nowhere else. Database work goes through [`Store::run`], password hashing
//! through the bounded [`Hasher`].

pub mod expiry;
pub mod hasher;
pub mod limiter;
pub mod password;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::store::{self, clients, sessions, users, Store, StoreError, TransactionBehavior};
use expiry::{Expiry, Lifetimes};
use hasher::Hasher;
use limiter::Limiter;
use password::{HashError, PasswordHashing};
use token::{RandomError, Token, TokenHash};

/// Longest username, in characters (SPEC: 1–64).
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest User-Agent kept for the session inventory, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("a valid token is required")]
    Unauthorized,
    #[error("too many failed logins; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the server is busy")]
    Busy,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("cannot start the password hashing threads")]
    Threads(#[from] std::io::Error),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            // An exhausted connection pool is load, not a fault: answer 503.
            StoreError::Busy(_) | StoreError::Saturated => AuthError::Busy,
            other => AuthError::Store(other),
        }
    }
}

/// Checks the SPEC's username rule: 1–64 characters, no control characters,
/// no leading or trailing whitespace.
pub fn check_username(name: &str) -> Result<(), &'static str> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err("a username has 1 to 64 characters");
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err("a username has no control characters and no surrounding spaces");
    }
    Ok(())
}

/// Checks an optional email or display name: short, one line, printable.
pub fn check_profile_field(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
        return Err("must be 1 to 256 characters without control characters");
    }
    Ok(())
}

/// The current time in unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where a login comes from.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client address recorded with the session.
    pub ip: IpAddr,
    /// The address the per-address limit counts, when it is known reliably.
    pub limited_address: Option<IpAddr>,
    pub user_agent: String,
}

/// A session just created by a login.
pub struct NewSession {
    pub token: Token,
    pub session_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
}

/// The user and session behind a valid token, after any sliding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub session_id: i64,
    pub user_id: i64,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_created_at: i64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
}

impl Identity {
    /// When the token stops being valid if unused: RFC 7662 `exp`.
    pub fn exp(&self) -> i64 {
        self.expires_at.min(self.max_expires_at)
    }
}

/// HTTP Basic credentials presented by an introspection caller.
pub struct ClientCredentials {
    pub id: String,
    pub secret: String,
}

/// The answer to an introspection request.
pub enum Introspection {
    /// Clients exist and the caller is not one of them.
    ClientRejected,
    Inactive,
    Active(Identity),
}

/// A session as listed to its owner.
pub use sessions::SessionRow;

/// The use cases, shared by every HTTP worker.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hasher: Hasher,
    passwords: PasswordHashing,
    limiter: Limiter,
    lifetimes: Lifetimes,
    /// Verified against when the username is unknown, so that a miss costs
    /// the same argon2 work as a wrong password (no user enumeration by timing).
    dummy_hash: String,
}

/// Hashing threads: one per core, since argon2 is pure CPU.
fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Logins that may wait for a hashing thread; beyond this they get 503.
/// At 20-45 ms a hash, an admitted login waits at most ~0.2 s on an
/// otherwise idle core (longer when token checks take the CPU first).
const HASH_QUEUE_PER_THREAD: usize = 4;

impl Auth {
    /// Builds the use cases on an open store; starts the hashing threads.
    pub fn new(config: &Config, store: Store) -> Result<Auth, AuthError> {
        let passwords = PasswordHashing::new(&config.password)?;
        let threads = hashing_threads();
        let hasher = Hasher::start(threads, threads * HASH_QUEUE_PER_THREAD)?;
        let dummy_hash = passwords.hash(Token::generate()?.expose())?;
        // Computed on the caller's thread, which does not hash again.
        password::release_work_memory();
        Ok(Auth {
            inner: Arc::new(Inner {
                store,
                hasher,
                passwords,
                limiter: Limiter::new(&config.login),
                lifetimes: Lifetimes::from_config(&config.session),
                dummy_hash,
            }),
        })
    }

    /// Logs a user in with a password and creates a session.
    ///
    /// Unknown user, wrong password and disabled user all give
    /// [`AuthError::InvalidCredentials`] after the same argon2 work. Callers
    /// check the input limits ([`check_username`], `MAX_PASSWORD_BYTES`) first.
    pub async fn login(
        &self,
        username: &str,
        password: String,
        client: Client,
    ) -> Result<NewSession, AuthError> {
        let inner = &self.inner;
        let folded = users::fold(username);
        inner
            .limiter
            .check(&folded, client.limited_address, unix_now())
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        // A place in the hashing pool first: when the pool is full the login
        // is refused before it costs a database lookup.
        let slot = inner.hasher.reserve().map_err(|_| AuthError::Busy)?;

        let name = username.to_owned();
        let user = inner
            .store
            .run(move |conn| users::find_by_name(conn, &name))
            .await?;

        let stored_hash = user
            .as_ref()
            .map_or_else(|| inner.dummy_hash.clone(), |u| u.password_hash.clone());
        let passwords = inner.passwords.clone();
        let (matches, upgraded_hash) = inner
            .hasher
            .run(slot, move || {
                let matches = passwords.verify(&stored_hash, &password);
                // Parameters changed since this hash was made: upgrade it now,
                // while the password is at hand.
                let upgraded = (matches && passwords.needs_rehash(&stored_hash))
                    .then(|| passwords.hash(&password).ok())
                    .flatten();
                (matches, upgraded)
            })
            .await
            .map_err(|_| AuthError::Busy)?;

        let user = match user {
            Some(user) if matches && !user.disabled => user,
            _ => {
                inner
                    .limiter
                    .record_failure(&folded, client.limited_address, unix_now());
                return Err(AuthError::InvalidCredentials);
            }
        };
        inner.limiter.record_success(&folded);

        // A session is stored under its hash's first 64 bits (schema.sql):
        // should a new token share them with a stored one (odds 2^-64 per
        // stored session), the second candidate is used.
        let candidates = [Token::generate()?, Token::generate()?];
        let hashes = candidates.each_ref().map(Token::hash);
        let lifetimes = inner.lifetimes;
        let user_agent: String = client
            .user_agent
            .chars()
            .take(MAX_USER_AGENT_CHARS)
            .collect();
        let ip = client.ip.to_string();
        let (chosen, session_id, created_at, expires_at, max_expires_at) = inner
            .store
            .run(move |conn| {
                let now = unix_now();
                let (expires_at, max_expires_at) = lifetimes.new_session(now);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let Some(hash) = &upgraded_hash {
                    users::set_password_hash(&tx, user.id, hash)?;
                }
                let session = sessions::NewSession {
                    token_hash: &hashes[0].0,
                    user_id: user.id,
                    created_at: now,
                    expires_at,
                    max_expires_at,
                    ip: &ip,
                    user_agent: &user_agent,
                };
                let (chosen, id) = insert_first_free(&tx, &hashes, session)?;
                tx.commit()?;
                Ok((chosen, id, now, expires_at, max_expires_at))
            })
            .await?;
        let [first, second] = candidates;
        let token = if chosen == 0 { first } else { second };
        Ok(NewSession {
            token,
            session_id,
            created_at,
            expires_at,
            max_expires_at,
        })
    }

    /// The identity behind a token, sliding its expiry; `None` when the token
    /// is malformed, unknown, expired, or its user is disabled.
    pub async fn check_token(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        match TokenHash::of_token(token) {
            Some(hash) => self.check_hash(hash).await,
            None => Ok(None),
        }
    }

    /// The token check proper: one inline read, and a write only on the
    /// rare use that slides the expiry.
    async fn check_hash(&self, hash: TokenHash) -> Result<Option<Identity>, AuthError> {
        match self
            .read(move |conn| sessions::find_by_token_hash(conn, &hash.0))
            .await?
        {
            Some(row) => self.settle(hash, row).await,
            None => Ok(None),
        }
    }

    /// Applies the session rules to a row read for `hash`, writing the slid
    /// expiry when it moved.
    async fn settle(
        &self,
        hash: TokenHash,
        row: sessions::TokenRow,
    ) -> Result<Option<Identity>, AuthError> {
        let Some((identity, slid)) = judge(row, self.inner.lifetimes, unix_now()) else {
            return Ok(None);
        };
        if slid {
            let expires_at = identity.expires_at;
            self.inner
                .store
                .run(move |conn| sessions::extend(conn, &hash.0, expires_at))
                .await?;
        }
        Ok(Some(identity))
    }

    /// A read through [`Store::read_now`] (inline, on the worker), or through
    /// the pool when the inline read cannot answer at once.
    async fn read<T, F>(&self, f: F) -> Result<T, AuthError>
    where
        T: Send + 'static,
        F: Fn(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match self.inner.store.read_now(&f) {
            Ok(value) => Ok(value),
            Err(_) => Ok(self.inner.store.run(move |conn| f(conn)).await?),
        }
    }

    /// RFC 7662: authenticates the caller when clients exist, then checks the token.
    pub async fn introspect(
        &self,
        credentials: Option<ClientCredentials>,
        token: &str,
    ) -> Result<Introspection, AuthError> {
        let hash = TokenHash::of_token(token);
        // The client check and the token lookup in one inline read, in one
        // snapshot.
        let (allowed, row) = self
            .read(move |conn| {
                store::snapshot(conn, |conn| {
                    let allowed =
                        !clients::any_exist(conn)? || client_is_known(conn, credentials.as_ref())?;
                    let row = match (&hash, allowed) {
                        (Some(hash), true) => sessions::find_by_token_hash(conn, &hash.0)?,
                        _ => None,
                    };
                    Ok((allowed, row))
                })
            })
            .await?;
        if !allowed {
            return Ok(Introspection::ClientRejected);
        }
        match (hash, row) {
            (Some(hash), Some(row)) => Ok(match self.settle(hash, row).await? {
                Some(identity) => Introspection::Active(identity),
                None => Introspection::Inactive,
            }),
            _ => Ok(Introspection::Inactive),
        }
    }

    /// Revokes one token; revoking an unknown token is not an error.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let Some(hash) = TokenHash::of_token(token) else {
            return Ok(());
        };
        self.inner
            .store
            .run(move |conn| sessions::delete_by_token_hash(conn, &hash.0))
            .await?;
        Ok(())
    }

    /// Revokes every session of the token's user; [`AuthError::Unauthorized`]
    /// when the token is not valid.
    pub async fn logout_everywhere(&self, token: &str) -> Result<usize, AuthError> {
        let hash = TokenHash::of_token(token).ok_or(AuthError::Unauthorized)?;
        let lifetimes = self.inner.lifetimes;
        self.inner
            .store
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(identity) = check_hash_in(&tx, &hash, lifetimes, unix_now())? else {
                    return Ok(None);
                };
                let revoked = sessions::delete_for_user(&tx, identity.user_id)?;
                tx.commit()?;
                Ok(Some(revoked))
            })
            .await?
            .ok_or(AuthError::Unauthorized)
    }

    /// The user's valid sessions, newest first.
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<SessionRow>, AuthError> {
        Ok(self
            .inner
            .store
            .run(move |conn| sessions::list_valid(conn, Some(user_id), unix_now()))
            .await?)
    }

    /// Revokes the user's own session `session_id`; false when it is not theirs.
    pub async fn revoke_session(&self, user_id: i64, session_id: i64) -> Result<bool, AuthError> {
        Ok(self
            .inner
            .store
            .run(move |conn| sessions::delete_by_id(conn, user_id, session_id))
            .await?)
    }

    /// Deletes expired sessions; run periodically by the server.
    pub async fn purge_expired(&self) -> Result<usize, AuthError> {
        Ok(self
            .inner
            .store
            .run(|conn| sessions::purge_expired(conn, unix_now()))
            .await?)
    }

    /// True when a trivial query succeeds: the database is reachable.
    pub async fn healthy(&self) -> bool {
        self.inner
            .store
            .run(|conn| crate::store::ping(conn))
            .await
            .is_ok()
    }
}

/// Applies the session rules to a stored row at `now`: the identity after
/// any sliding, and whether `expires_at` slid (and must be written).
fn judge(row: sessions::TokenRow, lifetimes: Lifetimes, now: i64) -> Option<(Identity, bool)> {
    if row.user_disabled {
        return None;
    }
    let Expiry::Valid { expires_at, slid } =
        lifetimes.check(now, row.expires_at, row.max_expires_at)
    else {
        return None;
    };
    let identity = Identity {
        session_id: row.session_id,
        user_id: row.user_id,
        username: row.username,
        email: row.email,
        display_name: row.display_name,
        user_created_at: row.user_created_at,
        issued_at: row.created_at,
        expires_at,
        max_expires_at: row.max_expires_at,
    };
    Some((identity, slid))
}

/// Looks a token hash up and applies the session rules inside one unit of
/// database work (a transaction of the caller's), sliding if due.
fn check_hash_in(
    conn: &rusqlite::Connection,
    hash: &TokenHash,
    lifetimes: Lifetimes,
    now: i64,
) -> Result<Option<Identity>, StoreError> {
    let Some(row) = sessions::find_by_token_hash(conn, &hash.0)? else {
        return Ok(None);
    };
    let Some((identity, slid)) = judge(row, lifetimes, now) else {
        return Ok(None);
    };
    if slid {
        sessions::extend(conn, &hash.0, identity.expires_at)?;
    }
    Ok(Some(identity))
}

/// True when `credentials` name a stored client and carry its secret.
fn client_is_known(
    conn: &rusqlite::Connection,
    credentials: Option<&ClientCredentials>,
) -> Result<bool, StoreError> {
    let Some(credentials) = credentials else {
        return Ok(false);
    };
    let presented = TokenHash::of_secret(&credentials.secret);
    Ok(match clients::find_secret_hash(conn, &credentials.id)? {
        // Constant-time: the comparison time says nothing about the secret.
        Some(stored) => presented.matches(&stored),
        None => false,
    })
}

/// Inserts `session` under the first of `hashes` whose lookup key is free;
/// returns which one it was and the session id. Conflict when none is.
fn insert_first_free(
    conn: &rusqlite::Connection,
    hashes: &[TokenHash],
    session: sessions::NewSession<'_>,
) -> Result<(usize, i64), StoreError> {
    for (i, hash) in hashes.iter().enumerate() {
        let candidate = sessions::NewSession {
            token_hash: &hash.0,
            ..session
        };
        if let Some(id) = sessions::insert(conn, &candidate)? {
            return Ok((i, id));
        }
    }
    Err(StoreError::Conflict)
}

/// A freshly created introspection client: its id and the secret shown once.
pub struct NewClient {
    pub id: String,
    pub secret: Token,
}

/// Creates an introspection client with a random secret; only its hash is stored.
pub fn add_client(conn: &rusqlite::Connection, id: &str) -> Result<NewClient, AuthError> {
    let secret = Token::generate()?;
    clients::insert(conn, id, &secret.hash().0, unix_now())?;
    Ok(NewClient {
        id: id.to_owned(),
        secret,
    })
}

/// Creates user `admin` with a random password when there are no users at all.
///
/// Returns the password, to be shown once; `None` when users already exist.
pub fn create_initial_admin(
    conn: &mut rusqlite::Connection,
    passwords: &PasswordHashing,
) -> Result<Option<Token>, AuthError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    if users::count(&tx)? > 0 {
        return Ok(None);
    }
    let password = Token::generate()?;
    let hash = passwords.hash(password.expose())?;
    users::insert(
        &tx,
        &users::NewUser {
            username: "admin",
            password_hash: &hash,
            email: None,
            display_name: None,
            created_at: unix_now(),
        },
    )?;
    tx.commit().map_err(StoreError::from)?;
    Ok(Some(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_have_1_to_64_chars_without_controls_or_edge_spaces() {
        assert!(check_username("a").is_ok());
        assert!(check_username(&"é".repeat(64)).is_ok());
        assert!(check_username("Jane Doe").is_ok());
        for bad in ["", " alice", "alice ", "al\nice", "al\u{0}ice"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_username(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_new_session_takes_the_next_candidate_when_its_lookup_key_is_taken() {
        let (_dir, store) = crate::store::test_store();
        let conn = store.connection().unwrap();
        let user = users::insert(
            &conn,
            &users::NewUser {
                username: "alice",
                password_hash: "x",
                email: None,
                display_name: None,
                created_at: 1,
            },
        )
        .unwrap();
        let taken = TokenHash([9; 32]);
        let mut twin = [9; 32];
        twin[31] = 0; // shares the first 64 bits with `taken`
        let free = TokenHash([3; 32]);
        let session = sessions::NewSession {
            token_hash: &taken.0,
            user_id: user,
            created_at: 1,
            expires_at: 10,
            max_expires_at: 20,
            ip: "127.0.0.1",
            user_agent: "test",
        };
        assert_eq!(insert_first_free(&conn, &[taken], session).unwrap(), (0, 1));
        let candidates = [TokenHash(twin), free];
        assert_eq!(
            insert_first_free(&conn, &candidates, session).unwrap(),
            (1, 2)
        );
        assert!(sessions::find_by_token_hash(&conn, &free.0)
            .unwrap()
            .is_some());
        assert!(matches!(
            insert_first_free(&conn, &[TokenHash(twin)], session),
            Err(StoreError::Conflict)
        ));
    }
}
