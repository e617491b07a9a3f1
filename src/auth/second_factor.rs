//! The owner's second-factor use cases: enroll a TOTP factor (begin, then
//! confirm with a code), remove it, and replace the recovery codes; and
//! the administrator's reset of a lost factor.
//!
//! Every change needs the password, checked like a login's (the
//! brute-force limits count a wrong one, and a wrong code), and, once a
//! factor exists, a current code or a recovery code as well. A change
//! raises the user's credential version in its transaction, so a login
//! whose password check overlaps it makes no session (SPEC "Users").

use crate::store::Db;

use super::admin::{find_user, Admin, AdminError, UserChange};
use super::audit::{self, Event, Origin, Requester, Subject};
use super::input::{Password, Username};
use super::limiter::Attempt;
use super::token::TokenHash;
use super::totp::{self, Secret};
use super::{unix_now, Auth, AuthError, Identity};
use crate::store::totp as totp_store;
use crate::store::{sessions, users, StoreError};

/// How long an enrollment may wait for its confirming code.
const ENROLLMENT_SECS: i64 = 10 * 60;
/// The issuer shown in authenticator apps.
const ISSUER: &str = "latchkey";

/// An enrollment begun: what the authenticator app needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Base32, for typing into the app.
    pub secret: String,
    /// `otpauth://totp/latchkey:<user>?…`, for a QR code.
    pub otpauth_uri: String,
}

/// What the owner proved besides the password: nothing (no factor yet),
/// or a code to be used up with the change.
enum Owner {
    NoFactor,
    Code(Proof),
}

/// What the owner presents for a change: the password, a code, and who
/// asks (whose address the limits count).
struct OwnerProof<'a> {
    password: Password,
    code: Option<String>,
    requester: &'a Requester,
}

#[derive(Clone, Copy)]
enum Proof {
    Step(i64),
    RecoveryCode([u8; 32]),
}

impl Auth {
    /// Whether the user has a confirmed second factor.
    pub async fn has_second_factor(&self, user_id: i64) -> Result<bool, AuthError> {
        Ok(self
            .inner
            .store
            .run(move |conn| Ok(totp_store::find(conn, user_id)?.is_some()))
            .await?)
    }

    /// Starts an enrollment: a new secret, stored as pending (it counts
    /// for nothing until confirmed); a factor already in place stays until
    /// then. Needs the password, and a code when a factor exists.
    pub async fn begin_enrollment(
        &self,
        identity: &Identity,
        password: Password,
        code: Option<String>,
        requester: &Requester,
    ) -> Result<Enrollment, AuthError> {
        let secret = Secret::generate()?;
        let stored = secret.as_bytes().to_vec();
        let proof = OwnerProof {
            password,
            code,
            requester,
        };
        self.change_as_owner(identity, proof, false, move |tx, user_id| {
            totp_store::set_pending(tx, user_id, &stored, unix_now())
        })
        .await?;
        Ok(Enrollment {
            secret: secret.base32(),
            otpauth_uri: secret.otpauth_uri(ISSUER, &identity.username),
        })
    }

    /// The enrollment begun and not yet confirmed (nor over 10 minutes
    /// old), to show again after a wrong confirming code.
    pub async fn pending_enrollment(
        &self,
        identity: &Identity,
    ) -> Result<Option<Enrollment>, AuthError> {
        let user_id = identity.user_id;
        let pending = self
            .inner
            .store
            .run(move |conn| totp_store::pending(conn, user_id))
            .await?;
        let Some((secret, created_at)) = pending else {
            return Ok(None);
        };
        if unix_now() - created_at > ENROLLMENT_SECS {
            return Ok(None);
        }
        Ok(Secret::from_bytes(&secret).map(|secret| Enrollment {
            secret: secret.base32(),
            otpauth_uri: secret.otpauth_uri(ISSUER, &identity.username),
        }))
    }

    /// Confirms the pending enrollment with a code from the new secret: it
    /// becomes the user's factor, with 10 new recovery codes (returned,
    /// to be shown once), and the session that proved it gains `otp`.
    pub async fn confirm_enrollment(
        &self,
        identity: &Identity,
        code: &str,
        requester: &Requester,
    ) -> Result<Vec<String>, AuthError> {
        let attempt = self.reserve_attempt(identity, requester).await?;
        let codes = totp::recovery_codes()?;
        let hashes = recovery_code_hashes(&codes);
        let (user_id, session_id) = (identity.user_id, identity.session_id);
        let (code, who) = (code.to_owned(), requester.clone());
        let confirmed = self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                let now = unix_now();
                let Some((secret, created_at)) = totp_store::pending(&tx, user_id)? else {
                    return Ok(Err(AuthError::NoEnrollment));
                };
                let secret = Secret::from_bytes(&secret).ok_or_else(|| {
                    StoreError::Task("a stored TOTP secret is not 20 bytes".into())
                })?;
                if now - created_at > ENROLLMENT_SECS {
                    return Ok(Err(AuthError::NoEnrollment));
                }
                let Some(step) = secret.matching_step(&code, now, 0) else {
                    return Ok(Err(AuthError::InvalidCredentials));
                };
                totp_store::activate(&tx, user_id, secret.as_bytes(), step, now)?;
                totp_store::replace_recovery_codes(&tx, user_id, &hashes)?;
                users::bump_credential_version(&tx, user_id)?;
                sessions::add_factors(&tx, session_id, super::Amr::PASSWORD_AND_OTP.bits())?;
                let origin = Origin::Http(&who);
                audit::record(&tx, Event::TotpEnrolled, origin, Subject::User(user_id), "")?;
                tx.commit()?;
                Ok(Ok(()))
            })
            .await?;
        match confirmed {
            Ok(()) => {
                attempt.succeeded(unix_now()).await;
                Ok(codes)
            }
            Err(AuthError::InvalidCredentials) => {
                attempt.failed(unix_now()).await;
                Err(AuthError::InvalidCredentials)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the user's factor and recovery codes. Needs the password
    /// and a code (or a recovery code).
    pub async fn remove_second_factor(
        &self,
        identity: &Identity,
        password: Password,
        code: Option<String>,
        requester: &Requester,
    ) -> Result<(), AuthError> {
        let who = requester.clone();
        let proof = OwnerProof {
            password,
            code,
            requester,
        };
        self.change_as_owner(identity, proof, true, move |tx, user_id| {
            totp_store::remove(tx, user_id)?;
            users::bump_credential_version(tx, user_id)?;
            let origin = Origin::Http(&who);
            audit::record(tx, Event::TotpRemoved, origin, Subject::User(user_id), "")
        })
        .await
    }

    /// Replaces the recovery codes with 10 new ones (returned, to be shown
    /// once). Needs the password and a code (or a recovery code).
    pub async fn replace_recovery_codes(
        &self,
        identity: &Identity,
        password: Password,
        code: Option<String>,
        requester: &Requester,
    ) -> Result<Vec<String>, AuthError> {
        let codes = totp::recovery_codes()?;
        let hashes = recovery_code_hashes(&codes);
        let who = requester.clone();
        let proof = OwnerProof {
            password,
            code,
            requester,
        };
        self.change_as_owner(identity, proof, true, move |tx, user_id| {
            totp_store::replace_recovery_codes(tx, user_id, &hashes)?;
            let origin = Origin::Http(&who);
            let subject = Subject::User(user_id);
            audit::record(tx, Event::RecoveryCodesReplaced, origin, subject, "")
        })
        .await?;
        Ok(codes)
    }

    /// Proves the owner ([`Auth::prove_owner`]), then runs `change` in one
    /// immediate transaction that also uses up the owner's code, so a code
    /// raced by another request counts for one of them only. `needs_factor`:
    /// a user without one gets [`AuthError::NoSecondFactor`].
    async fn change_as_owner(
        &self,
        identity: &Identity,
        proof: OwnerProof<'_>,
        needs_factor: bool,
        change: impl FnOnce(&dyn Db, i64) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), AuthError> {
        let OwnerProof {
            password,
            code,
            requester,
        } = proof;
        let (attempt, owner) = self
            .prove_owner(identity, password, code, requester)
            .await?;
        if needs_factor && matches!(owner, Owner::NoFactor) {
            // Released uncounted: the password was right.
            drop(attempt);
            return Err(AuthError::NoSecondFactor);
        }
        let user_id = identity.user_id;
        let who = requester.clone();
        let done = self
            .inner
            .store
            .run(move |conn| {
                let tx = crate::store::write(conn)?;
                if !use_proof(&tx, user_id, &owner)? {
                    return Ok(false);
                }
                if let Owner::Code(Proof::RecoveryCode(_)) = owner {
                    let left = totp_store::recovery_codes_left(&tx, user_id)?;
                    let detail = format!("{left} recovery code(s) left");
                    let (origin, user) = (Origin::Http(&who), Subject::User(user_id));
                    audit::record(&tx, Event::RecoveryCodeUsed, origin, user, &detail)?;
                }
                change(&tx, user_id)?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if done {
            attempt.succeeded(unix_now()).await;
            Ok(())
        } else {
            // The code was used up by another request meanwhile: a wrong
            // code after all.
            attempt.failed(unix_now()).await;
            Err(AuthError::InvalidCredentials)
        }
    }

    /// A place against the brute-force limits of the user's name and the
    /// requester's address, as a login takes one.
    async fn reserve_attempt(
        &self,
        identity: &Identity,
        requester: &Requester,
    ) -> Result<Attempt<'_>, AuthError> {
        let folded = identity.username.to_lowercase();
        self.inner
            .limiter
            .reserve(&folded, Some(requester.ip), unix_now())
            .await
    }

    /// Checks the password (one argon2 verification, on the hashing pool)
    /// and, when the user has a factor, the code. A wrong one is counted
    /// as a login failure; a missing code is [`AuthError::MfaRequired`].
    async fn prove_owner(
        &self,
        identity: &Identity,
        password: Password,
        code: Option<String>,
        requester: &Requester,
    ) -> Result<(Attempt<'_>, Owner), AuthError> {
        let inner = &self.inner;
        let attempt = self.reserve_attempt(identity, requester).await?;
        let slot = inner.hasher.reserve().map_err(|_| AuthError::Busy)?;
        let user_id = identity.user_id;
        let (user, factor) = inner
            .store
            .run(move |conn| {
                crate::store::snapshot(conn, |conn| {
                    Ok((
                        users::find_by_id(conn, user_id)?,
                        totp_store::find(conn, user_id)?,
                    ))
                })
            })
            .await?;
        let Some(user) = user else {
            return Err(AuthError::Unauthorized);
        };
        let passwords = inner.passwords.clone();
        let stored_hash = user.password_hash;
        let matches = inner
            .hasher
            .run(slot, move || {
                passwords.verify(&stored_hash, password.expose())
            })
            .await
            .map_err(|_| AuthError::Busy)?;
        if !matches {
            attempt.failed(unix_now()).await;
            return Err(AuthError::InvalidCredentials);
        }
        let Some(factor) = factor else {
            return Ok((attempt, Owner::NoFactor));
        };
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            return Err(AuthError::MfaRequired);
        };
        let proof = if totp::looks_like_code(&code) {
            Secret::from_bytes(&factor.secret)
                .and_then(|s| s.matching_step(&code, unix_now(), factor.last_step))
                .map(Proof::Step)
        } else {
            totp::recovery_code_hash(&code).map(|h: TokenHash| Proof::RecoveryCode(h.0))
        };
        match proof {
            Some(proof) => Ok((attempt, Owner::Code(proof))),
            None => {
                attempt.failed(unix_now()).await;
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}

/// Uses up the owner's code in the change's transaction; false when
/// another request used it first (a replay).
fn use_proof(conn: &dyn Db, user_id: i64, owner: &Owner) -> Result<bool, StoreError> {
    match owner {
        Owner::NoFactor => Ok(true),
        Owner::Code(Proof::Step(step)) => totp_store::use_step(conn, user_id, *step),
        Owner::Code(Proof::RecoveryCode(hash)) => {
            totp_store::use_recovery_code(conn, user_id, hash)
        }
    }
}

/// The hashes recovery `codes` are stored by.
fn recovery_code_hashes(codes: &[String]) -> Vec<[u8; 32]> {
    codes
        .iter()
        .filter_map(|c| totp::recovery_code_hash(c))
        .map(|h| h.0)
        .collect()
}

impl Admin {
    /// Removes a user's lost factor (and recovery codes) and ends their
    /// sessions: the next login asks for the password alone.
    pub fn reset_second_factor(&self, username: &Username) -> Result<UserChange, AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let user = find_user(&tx, username)?;
        if !totp_store::remove(&tx, user.id)? {
            return Err(AdminError::NoSecondFactor(user.username));
        }
        users::bump_credential_version(&tx, user.id)?;
        let sessions_ended = sessions::delete_for_user(&tx, user.id)?;
        let detail = format!("{sessions_ended} session(s) ended");
        let subject = Subject::Named(&user.username, username.folded());
        audit::record(&tx, Event::TotpReset, Origin::Cli, subject, &detail)?;
        tx.commit()?;
        Ok(UserChange {
            username: user.username,
            sessions_ended,
        })
    }
}
