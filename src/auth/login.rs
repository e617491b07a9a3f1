//! Logging in with a password: the limiter, the hash, and the new session.

use std::net::IpAddr;

use rusqlite::Connection;

use super::input::{Password, Username};
use super::token::{RandomError, Token};
use super::{unix_now, Auth, AuthError};
use crate::store::sessions::{self, Inserted};
use crate::store::{users, StoreError, TransactionBehavior};

/// Longest User-Agent kept for the session inventory, in characters.
const MAX_USER_AGENT_CHARS: usize = 256;
/// Tokens drawn for one login before giving up. A draw is refused only when
/// its hash's first 64 bits are taken (odds 2^-64 per stored session), so
/// a second draw already never happens in practice.
const MAX_DRAWS: usize = 4;

/// Where a login comes from.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client address recorded with the session.
    pub ip: IpAddr,
    /// The address the per-address limit counts, when it is known reliably.
    pub limited_address: Option<IpAddr>,
    pub user_agent: String,
}

/// A session just created by a login, with the times its answer reports.
pub struct NewSession {
    pub token: Token,
    pub session_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
}

impl NewSession {
    /// Seconds until the idle expiry: the login answer's `expires_in`.
    pub fn expires_in(&self) -> i64 {
        self.expires_at - self.created_at
    }

    /// Seconds until the absolute expiry: the cookie's `Max-Age`.
    pub fn max_age(&self) -> i64 {
        self.max_expires_at - self.created_at
    }
}

impl Auth {
    /// Logs a user in with a password and creates a session.
    ///
    /// Unknown user, wrong password and disabled user all give
    /// [`AuthError::InvalidCredentials`] after the same argon2 work. A
    /// credential change that commits while the password is checked wins:
    /// [`AuthError::CredentialsChanged`], and no session (SPEC "Users").
    pub async fn login(
        &self,
        username: &Username,
        password: Password,
        client: Client,
    ) -> Result<NewSession, AuthError> {
        let inner = &self.inner;
        let folded = username.folded();
        // The attempt is reserved before the hash, so that parallel guesses
        // cannot all be verified before the first failure is counted. It is
        // released uncounted if the login ends before the password is known.
        let attempt = inner
            .limiter
            .reserve(folded, client.limited_address, unix_now())
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        // A place in the hashing pool next: when the pool is full the login
        // is refused before it costs a database lookup.
        let slot = inner.hasher.reserve().map_err(|_| AuthError::Busy)?;

        let key = folded.to_owned();
        let user = inner
            .store
            .run(move |conn| users::find_by_folded_name(conn, &key))
            .await?;

        let stored_hash = user
            .as_ref()
            .map_or_else(|| inner.dummy_hash.clone(), |u| u.password_hash.clone());
        let passwords = inner.passwords.clone();
        let (matches, upgraded_hash) = inner
            .hasher
            .run(slot, move || {
                let password = password.expose();
                let matches = passwords.verify(&stored_hash, password);
                // Parameters changed since this hash was made: upgrade it now,
                // while the password is at hand.
                let upgraded = (matches && passwords.needs_rehash(&stored_hash))
                    .then(|| passwords.hash(password).ok())
                    .flatten();
                (matches, upgraded)
            })
            .await
            .map_err(|_| AuthError::Busy)?;

        let user = match user {
            Some(user) if matches && !user.disabled => user,
            _ => {
                attempt.failed(unix_now());
                log_failure(user.as_ref().map(|u| u.username.as_str()), client.ip);
                return Err(AuthError::InvalidCredentials);
            }
        };
        attempt.succeeded(unix_now());

        let lifetimes = inner.lifetimes;
        let user_agent: String = client
            .user_agent
            .chars()
            .take(MAX_USER_AGENT_CHARS)
            .collect();
        let ip = client.ip.to_string();
        inner
            .store
            .run(move |conn| {
                let now = unix_now();
                let (expires_at, max_expires_at) = lifetimes.new_session(now);
                let fields = sessions::NewSession {
                    user_id: user.id,
                    created_at: now,
                    expires_at,
                    max_expires_at,
                    ip: &ip,
                    user_agent: &user_agent,
                };
                let checked = Checked {
                    credential_version: user.credential_version,
                    upgraded_hash: upgraded_hash.as_deref(),
                };
                Ok(create_session(conn, &checked, fields, Token::generate))
            })
            .await?
    }
}

/// What the password check saw and made: the user's credential version,
/// read with the hash, and the hash upgraded to the current parameters.
struct Checked<'a> {
    credential_version: i64,
    upgraded_hash: Option<&'a str>,
}

/// The login's one write, in one immediate transaction: the hash upgrade
/// and the session, only while the credentials are those the password was
/// checked against. A change (or delete) that committed in between wins.
fn create_session(
    conn: &mut Connection,
    checked: &Checked<'_>,
    session: sessions::NewSession<'_>,
    draw: impl FnMut() -> Result<Token, RandomError>,
) -> Result<NewSession, AuthError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::from)?;
    // No change can commit between this check and the commit below: the
    // transaction holds the write lock from its start.
    if !users::may_log_in(&tx, session.user_id, checked.credential_version)? {
        return Err(AuthError::CredentialsChanged);
    }
    if let Some(hash) = checked.upgraded_hash {
        users::upgrade_password_hash(&tx, session.user_id, checked.credential_version, hash)?;
    }
    let created = insert_session(&tx, draw, session)?;
    tx.commit().map_err(StoreError::from)?;
    Ok(created)
}

/// Logs a failed login: always the client address, and the account's name
/// only when it exists. What was typed is never logged, since a password
/// typed into the username field would land in the log.
fn log_failure(existing_user: Option<&str>, ip: IpAddr) {
    let reason = AuthError::InvalidCredentials;
    match existing_user {
        Some(user) => tracing::info!(user, %ip, reason = %reason, "login refused"),
        None => tracing::info!(%ip, reason = %reason, "login refused"),
    }
}

/// Stores `session` under a freshly drawn token, drawing again while the
/// store reports the token's lookup key taken.
fn insert_session(
    conn: &Connection,
    mut draw: impl FnMut() -> Result<Token, RandomError>,
    session: sessions::NewSession<'_>,
) -> Result<NewSession, AuthError> {
    for _ in 0..MAX_DRAWS {
        let token = draw()?;
        if let Inserted::Stored(session_id) = sessions::insert(conn, &token.hash().0, &session)? {
            return Ok(NewSession {
                token,
                session_id,
                created_at: session.created_at,
                expires_at: session.expires_at,
                max_expires_at: session.max_expires_at,
            });
        }
    }
    Err(AuthError::Store(StoreError::Conflict))
}

#[cfg(test)]
mod tests;
