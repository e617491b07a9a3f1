//! A browser login's second page. After the right password, a user with a
//! second factor gets a challenge instead of a session; the code page
//! carries it, and a right code trades it for the session. A step-up (a
//! one-factor session meeting a `two_factor` rule) gets one too, tied to
//! the session it will replace.
//!
//! A challenge is a random token stored only as its SHA-256, used once
//! (taken from the table whatever the code), and dead after
//! [`CHALLENGE_SECS`]. A wrong code is a failed login for the limits, and
//! gets a new challenge with the same deadline, so the password is not
//! asked again within it.

use super::input::{Password, Username};
use super::login::{second_factor_proof, PasswordChecked, Proof, Replaced, SecondStep};
use super::token::{Token, TokenHash};
use super::{unix_now, Auth, AuthError, Client, Identity, NewSession};
use crate::store::totp::{self as totp_store, Challenge, Factor};
use crate::store::users::{self, User};
use crate::store::Db;
use crate::store::{sessions, StoreError};

/// How long the code page waits for its code.
pub const CHALLENGE_SECS: i64 = 5 * 60;

/// A challenge just made: the token the code page carries.
pub struct CodeChallenge {
    token: Token,
    pub expires_at: i64,
}

impl CodeChallenge {
    /// The text for the page's hidden field.
    pub fn expose(&self) -> &str {
        self.token.expose()
    }
}

/// How the password step of a browser login ended well.
pub enum FormLogin {
    /// No second factor: logged in.
    Session(NewSession),
    /// The code page next.
    CodeNeeded(CodeChallenge),
}

/// Why a code page's answer made no session.
pub enum ChallengeError {
    /// Unknown, used up, past its deadline, or its user or session changed
    /// since: start again from the password.
    Expired,
    /// A wrong (or replayed) code, counted: the page again, with this
    /// challenge in place of the spent one.
    WrongCode(CodeChallenge),
    /// Refused before the code was looked at (limits, load), or a fault.
    Refused(AuthError),
}

impl From<AuthError> for ChallengeError {
    fn from(e: AuthError) -> Self {
        ChallengeError::Refused(e)
    }
}

impl From<StoreError> for ChallengeError {
    fn from(e: StoreError) -> Self {
        ChallengeError::Refused(e.into())
    }
}

/// A challenge taken from the table, with what its answer is checked against.
struct Taken {
    challenge: Challenge,
    user: User,
    factor: Factor,
    /// For a step-up, the session it replaces, still valid.
    replaces: Option<Replaced>,
}

impl Auth {
    /// The password step of a browser login: as [`Auth::login`], except
    /// that a user with a second factor gets a challenge for the code page.
    /// Showing that page is neither a failure nor a success for the limits.
    pub async fn login_form(
        &self,
        username: &Username,
        password: Password,
        client: Client,
    ) -> Result<FormLogin, AuthError> {
        let checked = self.check_password(username, password, &client).await?;
        let PasswordChecked {
            attempt,
            user,
            factor,
            upgraded_hash,
        } = checked;
        if factor.is_none() {
            let second = SecondStep {
                proof: Proof::PasswordOnly,
                upgraded_hash,
                replaces: None,
            };
            return self
                .finish_login(attempt, user, second, client)
                .await
                .map(FormLogin::Session);
        }
        let challenge = Challenge {
            user_id: user.id,
            credential_version: user.credential_version,
            replaces_session: None,
            expires_at: unix_now() + CHALLENGE_SECS,
        };
        let issued = self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                if let Some(hash) = &upgraded_hash {
                    let (id, version) = (challenge.user_id, challenge.credential_version);
                    users::upgrade_password_hash(&tx, id, version, hash)?;
                }
                let issued = issue(&tx, &challenge)?;
                tx.commit()?;
                Ok(issued)
            })
            .await?;
        // `attempt` drops here, released uncounted.
        Ok(FormLogin::CodeNeeded(issued?))
    }

    /// A challenge for stepping `identity`'s one-factor session up to one
    /// with `otp`, or `None` when its user has no factor (the session is
    /// as good as it gets; enrollment is the way on).
    pub async fn begin_step_up(
        &self,
        identity: &Identity,
    ) -> Result<Option<CodeChallenge>, AuthError> {
        let (user_id, session_id) = (identity.user_id, identity.session_id);
        let deadline = (unix_now() + CHALLENGE_SECS).min(identity.max_expires_at);
        let issued = self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                let Some(user) = users::find_by_id(&tx, user_id)? else {
                    return Ok(None);
                };
                if totp_store::find(&tx, user_id)?.is_none() {
                    return Ok(None);
                }
                let challenge = Challenge {
                    user_id,
                    credential_version: user.credential_version,
                    replaces_session: Some(session_id),
                    expires_at: deadline,
                };
                let issued = issue(&tx, &challenge)?;
                tx.commit()?;
                Ok(Some(issued))
            })
            .await?;
        Ok(issued.transpose()?)
    }

    /// The code page's answer: a right code trades the challenge for a
    /// session with `otp` (for a step-up, in place of the one-factor one).
    pub async fn answer_challenge(
        &self,
        challenge: &str,
        code: &str,
        client: Client,
    ) -> Result<NewSession, ChallengeError> {
        let Some(hash) = TokenHash::of_token(challenge) else {
            return Err(ChallengeError::Expired);
        };
        let taken = self
            .inner
            .store
            .run(move |conn| take(conn, &hash.0, unix_now()))
            .await?;
        let Some(Taken {
            challenge,
            user,
            factor,
            replaces,
        }) = taken
        else {
            return Err(ChallengeError::Expired);
        };
        let attempt = self
            .inner
            .limiter
            .reserve(
                &user.username.to_lowercase(),
                client.limited_address,
                unix_now(),
            )
            .await?;
        let Some(proof) = second_factor_proof(&factor, code, unix_now()) else {
            self.wrong_code(attempt, &user, client.requester, "wrong one-time code")
                .await;
            return Err(self.reissue(challenge).await);
        };
        let second = SecondStep {
            proof,
            upgraded_hash: None,
            replaces,
        };
        match self.finish_login(attempt, user, second, client).await {
            Ok(session) => Ok(session),
            // Replayed: counted as a wrong code by `finish_login`.
            Err(AuthError::InvalidCredentials) => Err(self.reissue(challenge).await),
            Err(AuthError::CredentialsChanged) => Err(ChallengeError::Expired),
            Err(e) => Err(ChallengeError::Refused(e)),
        }
    }

    /// A fresh challenge in place of `spent`, with its deadline.
    async fn reissue(&self, spent: Challenge) -> ChallengeError {
        let issued = self.inner.store.run(move |conn| issue(conn, &spent)).await;
        match issued {
            Ok(Ok(challenge)) => ChallengeError::WrongCode(challenge),
            Ok(Err(e)) => ChallengeError::Refused(e.into()),
            Err(e) => ChallengeError::Refused(e.into()),
        }
    }
}

/// Stores `challenge` under a new random token.
fn issue(
    conn: &dyn Db,
    challenge: &Challenge,
) -> Result<Result<CodeChallenge, super::token::RandomError>, StoreError> {
    let token = match Token::generate() {
        Ok(token) => token,
        Err(e) => return Ok(Err(e)),
    };
    totp_store::insert_challenge(conn, &token.hash().0, challenge)?;
    Ok(Ok(CodeChallenge {
        token,
        expires_at: challenge.expires_at,
    }))
}

/// Takes the challenge found by `hash` and reads what its answer needs, in
/// one transaction. `None` when the challenge is unknown or dead, or when
/// what it was made for is gone: the user disabled, deleted or with new
/// credentials, the factor removed, the replaced session ended.
fn take(conn: &dyn Db, hash: &[u8; 32], now: i64) -> Result<Option<Taken>, StoreError> {
    let tx = crate::store::write(conn)?;
    let taken = take_in(&tx, hash, now)?;
    tx.commit()?;
    Ok(taken)
}

fn take_in(tx: &dyn Db, hash: &[u8; 32], now: i64) -> Result<Option<Taken>, StoreError> {
    let Some(challenge) = totp_store::take_challenge(tx, hash, now)? else {
        return Ok(None);
    };
    let Some(user) = users::find_by_id(tx, challenge.user_id)? else {
        return Ok(None);
    };
    if user.disabled || user.credential_version != challenge.credential_version {
        return Ok(None);
    }
    let Some(factor) = totp_store::find(tx, user.id)? else {
        return Ok(None);
    };
    let replaces = match challenge.replaces_session {
        None => None,
        Some(id) => match sessions::max_expires_at_if_valid(tx, user.id, id, now)? {
            Some(max_expires_at) => Some(Replaced {
                session_id: id,
                max_expires_at,
            }),
            None => return Ok(None),
        },
    };
    Ok(Some(Taken {
        challenge,
        user,
        factor,
        replaces,
    }))
}
