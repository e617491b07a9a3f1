//! Using a session: the token check (`/verify`, `/me`), introspection,
//! logout and the owner's session inventory.
//!
//! Every check reads the row and hands it to `Lifetimes::evaluate`; a
//! check that slides the expiry writes it back in [`Auth::settle`].

use super::audit::{self, Event, Origin, Requester, Subject};
use super::expiry::Verdict;
use super::token::TokenHash;
use super::{unix_now, Auth, AuthError};
use crate::store::sessions::{self, TokenRow};
use crate::store::totp as totp_store;
use crate::store::Db;
use crate::store::{self, clients, users, StoreError};

/// A session as listed to its owner.
pub use sessions::SessionRow;

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
    /// The user's group names as created, sorted case-insensitively (by
    /// their lowercase form; names are ASCII, so that order is plain), read
    /// in the same statement as the session: a membership change counts
    /// from the next check on.
    pub groups: Vec<String>,
    /// The factors the session's login proved.
    pub amr: Amr,
}

/// The factors a session's login proved, as RFC 8176 names them: `pwd`,
/// and `otp` after a TOTP code or a recovery code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amr(i64);

impl Amr {
    /// A password alone.
    pub const PASSWORD: Amr = Amr(1);
    /// A password and a one-time code.
    pub const PASSWORD_AND_OTP: Amr = Amr(1 | Amr::OTP_BIT);
    const OTP_BIT: i64 = 2;

    /// As stored in `sessions.amr`.
    pub fn from_bits(bits: i64) -> Amr {
        Amr(bits)
    }

    pub fn bits(self) -> i64 {
        self.0
    }

    /// True when a one-time code was proved: what `two_factor` needs.
    pub fn has_otp(self) -> bool {
        self.0 & Amr::OTP_BIT != 0
    }

    /// The names, in a fixed order: `["pwd"]` or `["pwd", "otp"]`.
    pub fn names(self) -> Vec<&'static str> {
        [(1, "pwd"), (Amr::OTP_BIT, "otp")]
            .into_iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| name)
            .collect()
    }
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

impl Auth {
    /// The identity behind a token, sliding its expiry; `None` when the token
    /// is malformed, unknown, expired, or its user is disabled.
    pub async fn check_token(&self, token: &str) -> Result<Option<Identity>, AuthError> {
        let Some(hash) = TokenHash::of_token(token) else {
            return Ok(None);
        };
        let row = self
            .inner
            .store
            .read(move |conn| sessions::find_by_token_hash(conn, &hash.0))
            .await?;
        self.settle(hash, row).await
    }

    /// RFC 7662: authenticates the caller when clients exist, then checks the token.
    pub async fn introspect(
        &self,
        credentials: Option<ClientCredentials>,
        token: &str,
    ) -> Result<Introspection, AuthError> {
        let hash = TokenHash::of_token(token);
        // The client check and the token lookup in one read, in one snapshot.
        let (allowed, row) = self
            .inner
            .store
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
        let identity = match hash {
            Some(hash) => self.settle(hash, row).await?,
            None => None,
        };
        Ok(identity.map_or(Introspection::Inactive, Introspection::Active))
    }

    /// Applies the session rules to the row read for `hash`, writing the
    /// idle expiry back when it slid.
    async fn settle(
        &self,
        hash: TokenHash,
        row: Option<TokenRow>,
    ) -> Result<Option<Identity>, AuthError> {
        let Some(row) = row else {
            return Ok(None);
        };
        match self.inner.lifetimes.evaluate(row, unix_now()) {
            Verdict::Invalid => Ok(None),
            Verdict::Valid(identity) => Ok(Some(identity)),
            Verdict::Slid(identity) => {
                let expires_at = identity.expires_at;
                // Boxed: a slide happens about once per `refresh_within` per
                // session, and the unboxed write would grow every check's future.
                Box::pin(
                    self.inner
                        .store
                        .run(move |conn| sessions::extend(conn, &hash.0, expires_at)),
                )
                .await?;
                Ok(Some(identity))
            }
        }
    }

    /// Revokes one token; revoking an unknown token is not an error.
    pub async fn logout(&self, token: &str, requester: Requester) -> Result<(), AuthError> {
        let Some(hash) = TokenHash::of_token(token) else {
            return Ok(());
        };
        self.inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                if let Some(user_id) = sessions::delete_by_token_hash(&tx, &hash.0)? {
                    let origin = Origin::Http(&requester);
                    audit::record(&tx, Event::Logout, origin, Subject::User(user_id), "")?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Revokes every session of the token's user; [`AuthError::Unauthorized`]
    /// when the token is not valid.
    pub async fn logout_everywhere(
        &self,
        token: &str,
        requester: Requester,
    ) -> Result<usize, AuthError> {
        let hash = TokenHash::of_token(token).ok_or(AuthError::Unauthorized)?;
        let lifetimes = self.inner.lifetimes;
        self.inner
            .store
            .run(move |conn| {
                // The check and the deletion in one transaction: a token
                // revoked in between cannot end the other sessions.
                let tx = crate::store::write(conn)?;
                let user_id = match sessions::find_by_token_hash(&tx, &hash.0)?
                    .map(|row| lifetimes.evaluate(row, unix_now()))
                {
                    Some(Verdict::Valid(identity) | Verdict::Slid(identity)) => identity.user_id,
                    None | Some(Verdict::Invalid) => return Ok(None),
                };
                // A login of this user still checking its password must
                // not add a session after this: it compares the version.
                users::bump_credential_version(&tx, user_id)?;
                let revoked = sessions::delete_for_user(&tx, user_id)?;
                let detail = format!("{revoked} session(s) ended");
                let origin = Origin::Http(&requester);
                audit::record(
                    &tx,
                    Event::LogoutAll,
                    origin,
                    Subject::User(user_id),
                    &detail,
                )?;
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
    pub async fn revoke_session(
        &self,
        user_id: i64,
        session_id: i64,
        requester: Requester,
    ) -> Result<bool, AuthError> {
        Ok(self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                if !sessions::delete_by_id(&tx, user_id, session_id)? {
                    return Ok(false);
                }
                let detail = format!("session {session_id}");
                let origin = Origin::Http(&requester);
                audit::record(
                    &tx,
                    Event::SessionRevoked,
                    origin,
                    Subject::User(user_id),
                    &detail,
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?)
    }

    /// Deletes expired sessions and dead login challenges (and login limits
    /// with nothing left to count); returns how many sessions and
    /// challenges. Run periodically by the server.
    pub async fn purge_expired(&self) -> Result<(usize, usize), AuthError> {
        Ok(self
            .inner
            .store
            .run(|conn| {
                let now = unix_now();
                let sessions = sessions::purge_expired(conn, now)?;
                crate::store::limits::purge_idle(conn, now)?;
                Ok((sessions, totp_store::purge_challenges(conn, now)?))
            })
            .await?)
    }

    /// True when a trivial query succeeds: the database is reachable.
    pub async fn healthy(&self) -> bool {
        self.inner.store.run(|conn| store::ping(conn)).await.is_ok()
    }
}

/// True when `credentials` name a stored client and carry its secret.
fn client_is_known(
    conn: &dyn Db,
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
