//! Logging in with a password: the limiter, the hash, and the new session.

use crate::store::Db;
use std::net::IpAddr;

use super::audit::{self, Event, Origin, Requester, Subject};
use super::input::{Password, Username};
use super::limiter::{Attempt, BansStarted};
use super::token::{RandomError, Token};
use super::{totp, unix_now, Amr, Auth, AuthError};
use crate::store::sessions::{self, Inserted};
use crate::store::totp as totp_store;
use crate::store::users::{self, User};
use crate::store::StoreError;

/// Tokens drawn for one login before giving up. A draw is refused only when
/// its hash's first 64 bits are taken (odds 2^-64 per stored session), so
/// a second draw already never happens in practice.
const MAX_DRAWS: usize = 4;

/// Where a login comes from.
#[derive(Debug, Clone)]
pub struct Client {
    /// The address and user agent recorded with the session and its audit rows.
    pub requester: Requester,
    /// The address the per-address limit counts, when it is known reliably.
    pub limited_address: Option<IpAddr>,
}

/// A session just created by a login, with the times its answer reports.
pub struct NewSession {
    pub token: Token,
    pub session_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    /// The factors the login proved.
    pub amr: Amr,
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
    ///
    /// For a user with a second factor, `one_time` must hold a TOTP code or
    /// a recovery code: without it a correct password gives
    /// [`AuthError::MfaRequired`] (and nothing is counted), a wrong code
    /// [`AuthError::InvalidCredentials`] counted as a failure. Whether a
    /// user has a factor is never told before the password is right.
    pub async fn login(
        &self,
        username: &Username,
        password: Password,
        one_time: Option<String>,
        client: Client,
    ) -> Result<NewSession, AuthError> {
        let checked = self.check_password(username, password, &client).await?;
        // The password is right. A second factor, if the user has one, next.
        let proof = match (&checked.factor, one_time.as_deref()) {
            (None, _) => Proof::PasswordOnly,
            // Not a failure, and not a success either: a success would clear
            // the username's failures, and wrong codes must keep counting.
            (Some(_), None) => return Err(AuthError::MfaRequired),
            (Some(factor), Some(code)) => match second_factor_proof(factor, code, unix_now()) {
                Some(proof) => proof,
                None => {
                    let reason = "wrong one-time code";
                    let PasswordChecked { attempt, user, .. } = checked;
                    return Err(self
                        .wrong_code(attempt, &user, client.requester, reason)
                        .await);
                }
            },
        };
        let second = SecondStep {
            proof,
            upgraded_hash: checked.upgraded_hash,
            replaces: None,
        };
        self.finish_login(checked.attempt, checked.user, second, client)
            .await
    }

    /// The password half of a login: the limiter, the hashing pool, one
    /// argon2 verification whether or not the user exists. A wrong password
    /// (or an unknown or disabled user) is counted, logged and audited here.
    pub(super) async fn check_password(
        &self,
        username: &Username,
        password: Password,
        client: &Client,
    ) -> Result<PasswordChecked<'_>, AuthError> {
        let inner = &self.inner;
        let folded = username.folded();
        // The attempt is reserved before the hash, so that parallel guesses
        // cannot all be verified before the first failure is counted. It is
        // released uncounted if the login ends before the password is known.
        let attempt = inner
            .limiter
            .reserve(folded, client.limited_address, unix_now())
            .await?;
        // A place in the hashing pool next: when the pool is full the login
        // is refused before it costs a database lookup.
        let slot = inner.hasher.reserve().map_err(|_| AuthError::Busy)?;

        let key = folded.to_owned();
        // The user and their factor in one read (one snapshot).
        let (user, factor) = inner
            .store
            .run(move |conn| {
                crate::store::snapshot(conn, |conn| {
                    let Some(user) = users::find_by_folded_name(conn, &key)? else {
                        return Ok((None, None));
                    };
                    let factor = totp_store::find(conn, user.id)?;
                    Ok((Some(user), factor))
                })
            })
            .await?;

        let stored_hash = user
            .as_ref()
            .map_or_else(|| inner.dummy_hash.clone(), |u| u.password_hash.clone());
        let passwords = inner.passwords.clone();
        let metrics = inner.metrics.clone();
        let (matches, upgraded_hash) = inner
            .hasher
            .run(slot, move || {
                let password = password.expose();
                let started = std::time::Instant::now();
                let matches = passwords.verify(&stored_hash, password);
                if let Some(metrics) = metrics {
                    metrics.password_hashed(started.elapsed());
                }
                // Parameters changed since this hash was made: upgrade it now,
                // while the password is at hand.
                let upgraded = (matches && passwords.needs_rehash(&stored_hash))
                    .then(|| passwords.hash(password).ok())
                    .flatten();
                (matches, upgraded)
            })
            .await
            .map_err(|_| AuthError::Busy)?;

        match user {
            Some(user) if matches && !user.disabled => Ok(PasswordChecked {
                attempt,
                user,
                factor,
                upgraded_hash,
            }),
            _ => {
                let bans = attempt.failed(unix_now()).await;
                let account = user
                    .as_ref()
                    .map(|u| (u.username.clone(), folded.to_owned()));
                let reason = match &user {
                    None => "unknown user",
                    Some(u) if u.disabled && matches => "account disabled",
                    Some(u) if u.disabled => "wrong password; account disabled",
                    Some(_) => "wrong password",
                };
                log_failure(
                    account.as_ref().map(|(name, _)| name.as_str()),
                    client.requester.ip,
                );
                self.record_failure(account, client.requester.clone(), reason, bans)
                    .await;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// A wrong one-time code after the right password (or for a step-up):
    /// counted, audited, and answered as a wrong password is.
    pub(super) async fn wrong_code(
        &self,
        attempt: Attempt<'_>,
        user: &User,
        requester: Requester,
        reason: &'static str,
    ) -> AuthError {
        let bans = attempt.failed(unix_now()).await;
        let account = (user.username.clone(), user.username.to_lowercase());
        log_failure(Some(&user.username), requester.ip);
        self.record_failure(Some(account), requester, reason, bans)
            .await;
        AuthError::InvalidCredentials
    }

    /// The login's one write: the session, made only while the user's
    /// credentials are those checked and the one-time code is unused.
    pub(super) async fn finish_login(
        &self,
        attempt: Attempt<'_>,
        user: User,
        second: SecondStep,
        client: Client,
    ) -> Result<NewSession, AuthError> {
        let inner = &self.inner;
        let lifetimes = inner.lifetimes;
        let requester = client.requester.clone();
        let (user_id, credential_version) = (user.id, user.credential_version);
        let created = inner
            .store
            .run(move |conn| {
                let now = unix_now();
                let (mut expires_at, mut max_expires_at) = lifetimes.new_session(now);
                if let Some(replaced) = &second.replaces {
                    // A step-up proves a code, not the password again: the
                    // new session ends no later than the one it replaces.
                    max_expires_at = max_expires_at.min(replaced.max_expires_at);
                    expires_at = expires_at.min(max_expires_at);
                    if max_expires_at <= now {
                        return Ok(Err(AuthError::CredentialsChanged));
                    }
                }
                let ip = requester.ip.to_string();
                let fields = sessions::NewSession {
                    user_id,
                    created_at: now,
                    expires_at,
                    max_expires_at,
                    ip: &ip,
                    user_agent: &requester.user_agent,
                    amr: second.proof.amr().bits(),
                };
                let checked = Checked {
                    credential_version,
                    upgraded_hash: second.upgraded_hash.as_deref(),
                    requester: &requester,
                    proof: second.proof,
                    replaces_session: second.replaces.map(|r| r.session_id),
                };
                Ok(create_session(conn, &checked, fields, Token::generate))
            })
            .await?;
        match &created {
            Err(AuthError::ReplayedCode) => {
                // A code (or recovery code) used up by another request
                // since it was checked here: a wrong code after all.
                let reason = "one-time code already used";
                return Err(self
                    .wrong_code(attempt, &user, client.requester, reason)
                    .await);
            }
            Err(AuthError::CredentialsChanged) => {
                attempt.succeeded(unix_now()).await;
                let account = (user.username.clone(), user.username.to_lowercase());
                let reason = "the credentials changed during the check";
                self.record_failure(
                    Some(account),
                    client.requester,
                    reason,
                    BansStarted::default(),
                )
                .await;
            }
            Ok(_) => attempt.succeeded(unix_now()).await,
            // A store error: released uncounted when `attempt` drops.
            Err(_) => {}
        }
        created
    }

    /// Records a failed login, and the bans it started, in one transaction
    /// of their own. A failure to write is logged, not answered: the login
    /// is refused either way.
    async fn record_failure(
        &self,
        account: Option<(String, String)>,
        requester: Requester,
        reason: &'static str,
        bans: BansStarted,
    ) {
        let ban_secs = self.inner.limiter.ban_secs();
        let written = self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                let origin = Origin::Http(&requester);
                let subject = match &account {
                    Some((name, folded)) => Subject::Named(name, folded),
                    None => Subject::Nobody,
                };
                audit::record(&tx, Event::LoginFailed, origin, subject, reason)?;
                if bans.username {
                    // The name typed is kept only when an account has it.
                    let detail = match account {
                        Some(_) => format!("username refused for {ban_secs}s"),
                        None => format!("a username no account has refused for {ban_secs}s"),
                    };
                    audit::record(&tx, Event::BanStarted, origin, subject, &detail)?;
                }
                if let Some(address) = bans.address {
                    let counted = match address {
                        IpAddr::V4(_) => address.to_string(),
                        IpAddr::V6(_) => format!("{address}/64"),
                    };
                    let detail = format!("address {counted} refused for {ban_secs}s");
                    audit::record(&tx, Event::BanStarted, origin, Subject::Nobody, &detail)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, "cannot write a failed login to the audit trail");
        }
    }
}

/// A password checked right, with what the second step needs.
pub(super) struct PasswordChecked<'a> {
    /// Counted as a success or a failure once the login ends.
    pub attempt: Attempt<'a>,
    pub user: User,
    /// The user's second factor, when they have one.
    pub factor: Option<totp_store::Factor>,
    /// The password hashed again with the current parameters, when they changed.
    pub upgraded_hash: Option<String>,
}

/// What a login's write needs besides the user.
pub(super) struct SecondStep {
    pub proof: Proof,
    pub upgraded_hash: Option<String>,
    /// For a step-up: the one-factor session the new one replaces.
    pub replaces: Option<Replaced>,
}

/// The session a step-up replaces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replaced {
    pub session_id: i64,
    pub max_expires_at: i64,
}

/// What the second factor proved, to be made good in the login's
/// transaction: a TOTP step not used before, or a recovery code not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    /// The user has no second factor.
    PasswordOnly,
    /// A TOTP code of this step.
    Step(i64),
    /// A recovery code with this hash.
    RecoveryCode([u8; 32]),
}

impl Proof {
    fn amr(self) -> Amr {
        match self {
            Proof::PasswordOnly => Amr::PASSWORD,
            Proof::Step(_) | Proof::RecoveryCode(_) => Amr::PASSWORD_AND_OTP,
        }
    }
}

/// What `code` proves against `factor` at `now`: a TOTP step later than
/// the last one used, or a well-formed recovery code (whether it is one of
/// the user's is for the transaction to find). `None` for a wrong code.
pub(super) fn second_factor_proof(
    factor: &totp_store::Factor,
    code: &str,
    now: i64,
) -> Option<Proof> {
    if totp::looks_like_code(code) {
        let secret = totp::Secret::from_bytes(&factor.secret)?;
        return secret
            .matching_step(code, now, factor.last_step)
            .map(Proof::Step);
    }
    totp::recovery_code_hash(code).map(|hash| Proof::RecoveryCode(hash.0))
}

/// What the password check saw and made: the user's credential version,
/// read with the hash, and the hash upgraded to the current parameters.
struct Checked<'a> {
    credential_version: i64,
    upgraded_hash: Option<&'a str>,
    /// Who logged in, for the audit row written with the session.
    requester: &'a Requester,
    /// The second factor, used up in the same transaction.
    proof: Proof,
    /// For a step-up: the session deleted in the same transaction.
    replaces_session: Option<i64>,
}

/// The login's one write, in one immediate transaction: the hash upgrade
/// and the session, only while the credentials are those the password was
/// checked against. A change (or delete) that committed in between wins.
fn create_session(
    conn: &dyn Db,
    checked: &Checked<'_>,
    session: sessions::NewSession<'_>,
    draw: impl FnMut() -> Result<Token, RandomError>,
) -> Result<NewSession, AuthError> {
    let tx = crate::store::write(conn)?;
    // No change can commit between this check and the commit below: the
    // transaction holds the write lock from its start.
    if !users::may_log_in(&tx, session.user_id, checked.credential_version)? {
        return Err(AuthError::CredentialsChanged);
    }
    let origin = Origin::Http(checked.requester);
    let user = Subject::User(session.user_id);
    // The conditional writes that refuse a replay: a step, or a recovery
    // code, is used once even by two logins checking it at the same time.
    match checked.proof {
        Proof::PasswordOnly => {}
        Proof::Step(step) => {
            if !totp_store::use_step(&tx, session.user_id, step)? {
                return Err(AuthError::ReplayedCode);
            }
        }
        Proof::RecoveryCode(hash) => {
            if !totp_store::use_recovery_code(&tx, session.user_id, &hash)? {
                return Err(AuthError::ReplayedCode);
            }
            let left = totp_store::recovery_codes_left(&tx, session.user_id)?;
            let detail = format!("{left} recovery code(s) left");
            audit::record(&tx, Event::RecoveryCodeUsed, origin, user, &detail)?;
        }
    }
    if let Some(id) = checked.replaces_session {
        // Revoked (or logged out) since the code page was shown: the
        // step-up has nothing left to step up.
        if !sessions::delete_by_id(&tx, session.user_id, id)? {
            return Err(AuthError::CredentialsChanged);
        }
    }
    if let Some(hash) = checked.upgraded_hash {
        users::upgrade_password_hash(&tx, session.user_id, checked.credential_version, hash)?;
    }
    let created = insert_session(&tx, draw, session)?;
    let detail = match (checked.proof, checked.replaces_session) {
        (Proof::PasswordOnly, _) => "",
        (Proof::Step(_), None) => "password and TOTP code",
        (Proof::RecoveryCode(_), None) => "password and recovery code",
        (Proof::Step(_), Some(_)) => "step-up with a TOTP code",
        (Proof::RecoveryCode(_), Some(_)) => "step-up with a recovery code",
    };
    audit::record(&tx, Event::LoginOk, origin, user, detail)?;
    tx.commit()?;
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
    conn: &dyn Db,
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
                amr: Amr::from_bits(session.amr),
            });
        }
    }
    Err(AuthError::Store(StoreError::Conflict))
}

#[cfg(test)]
mod tests;
