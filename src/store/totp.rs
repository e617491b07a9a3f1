//! The second factor's tables: `totp` (confirmed secrets and their last
//! accepted step), `totp_pending` (enrollments not yet confirmed),
//! `recovery_codes` (hashed, single use) and `login_challenges` (the
//! hashed, single-use state between a form login's two pages).
//!
//! What a code is worth is decided in `auth::totp`; these functions only
//! read and write rows.

use std::collections::HashSet;

use super::db::{params, Db, DbExt};
use super::StoreError;

/// A confirmed factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub secret: Vec<u8>,
    pub last_step: i64,
}

/// A form login waiting for its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub user_id: i64,
    pub credential_version: i64,
    /// The one-factor session a step-up replaces.
    pub replaces_session: Option<i64>,
    /// When the challenge dies, and the code page with it.
    pub expires_at: i64,
}

/// Live challenges kept per user: the newest ones, so that a few open tabs
/// all work but reloading a page cannot grow the table without bound.
const MAX_CHALLENGES_PER_USER: i64 = 10;

/// The user's confirmed factor, if any.
pub fn find(db: &dyn Db, user_id: i64) -> Result<Option<Factor>, StoreError> {
    db.row(
        "SELECT secret, last_step FROM totp WHERE user_id = ?1",
        params![user_id],
        |r| {
            Ok(Factor {
                secret: r.blob(0)?,
                last_step: r.int(1)?,
            })
        },
    )
}

/// Records `step` as used, if it is later than the last one: false when
/// another request used it (or a later one) first, or there is no factor.
/// This conditional write is what refuses a replay, also between two
/// requests checking the same code at once.
pub fn use_step(db: &dyn Db, user_id: i64, step: i64) -> Result<bool, StoreError> {
    let changed = db.execute(
        "UPDATE totp SET last_step = ?2 WHERE user_id = ?1 AND last_step < ?2",
        params![user_id, step],
    )?;
    Ok(changed == 1)
}

/// Starts (or restarts) an enrollment with `secret`.
pub fn set_pending(db: &dyn Db, user_id: i64, secret: &[u8], now: i64) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO totp_pending (user_id, secret, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
                                             created_at = excluded.created_at",
        params![user_id, secret, now],
    )?;
    Ok(())
}

/// The enrollment under way: its secret and when it began.
pub fn pending(db: &dyn Db, user_id: i64) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    db.row(
        "SELECT secret, created_at FROM totp_pending WHERE user_id = ?1",
        params![user_id],
        |r| Ok((r.blob(0)?, r.int(1)?)),
    )
}

/// Makes `secret` the user's factor (replacing any), with `last_step`
/// used already, and ends the enrollment.
pub fn activate(
    db: &dyn Db,
    user_id: i64,
    secret: &[u8],
    last_step: i64,
    now: i64,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO totp (user_id, secret, last_step, enrolled_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
             last_step = excluded.last_step, enrolled_at = excluded.enrolled_at",
        params![user_id, secret, last_step, now],
    )?;
    db.execute(
        "DELETE FROM totp_pending WHERE user_id = ?1",
        params![user_id],
    )?;
    Ok(())
}

/// Removes the user's factor, enrollment and recovery codes; false when
/// there was no factor. (Also done by the foreign-key cascade when the
/// user goes; deleted explicitly for connections without it.)
pub fn remove(db: &dyn Db, user_id: i64) -> Result<bool, StoreError> {
    let removed = db.execute("DELETE FROM totp WHERE user_id = ?1", params![user_id])?;
    for table in [
        "DELETE FROM totp_pending WHERE user_id = ?1",
        "DELETE FROM recovery_codes WHERE user_id = ?1",
        "DELETE FROM login_challenges WHERE user_id = ?1",
    ] {
        db.execute(table, params![user_id])?;
    }
    Ok(removed == 1)
}

/// Replaces the user's recovery codes with `hashes`.
pub fn replace_recovery_codes(
    db: &dyn Db,
    user_id: i64,
    hashes: &[[u8; 32]],
) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM recovery_codes WHERE user_id = ?1",
        params![user_id],
    )?;
    for hash in hashes {
        db.execute(
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
            params![user_id, hash],
        )?;
    }
    Ok(())
}

/// Uses up a recovery code: false when the user has no such code (left).
pub fn use_recovery_code(db: &dyn Db, user_id: i64, hash: &[u8; 32]) -> Result<bool, StoreError> {
    let deleted = db.execute(
        "DELETE FROM recovery_codes WHERE user_id = ?1 AND code_hash = ?2",
        params![user_id, hash],
    )?;
    Ok(deleted == 1)
}

/// How many recovery codes the user has left.
pub fn recovery_codes_left(db: &dyn Db, user_id: i64) -> Result<i64, StoreError> {
    db.one(
        "SELECT count(*) FROM recovery_codes WHERE user_id = ?1",
        params![user_id],
        |r| r.int(0),
    )
}

/// The ids of every user with a confirmed factor.
pub fn enrolled_users(db: &dyn Db) -> Result<HashSet<i64>, StoreError> {
    let ids = db.rows("SELECT user_id FROM totp", &[], |r| r.int(0))?;
    Ok(ids.into_iter().collect())
}

/// Stores a challenge found by `hash`, keeping only the user's newest
/// [`MAX_CHALLENGES_PER_USER`].
pub fn insert_challenge(
    db: &dyn Db,
    hash: &[u8; 32],
    challenge: &Challenge,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO login_challenges
           (challenge_hash, user_id, credential_version, replaces_session, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            hash,
            challenge.user_id,
            challenge.credential_version,
            challenge.replaces_session,
            challenge.expires_at
        ],
    )?;
    db.execute(
        "DELETE FROM login_challenges WHERE user_id = ?1 AND challenge_hash NOT IN
           (SELECT challenge_hash FROM login_challenges WHERE user_id = ?1
            ORDER BY expires_at DESC LIMIT ?2)",
        params![challenge.user_id, MAX_CHALLENGES_PER_USER],
    )?;
    Ok(())
}

/// Takes the challenge found by `hash`: it is deleted whatever comes next
/// (single use), and returned only if it was still alive at `now`.
pub fn take_challenge(
    db: &dyn Db,
    hash: &[u8; 32],
    now: i64,
) -> Result<Option<Challenge>, StoreError> {
    let taken = db.row(
        "DELETE FROM login_challenges WHERE challenge_hash = ?1
         RETURNING user_id, credential_version, replaces_session, expires_at",
        params![hash],
        |r| {
            Ok(Challenge {
                user_id: r.int(0)?,
                credential_version: r.int(1)?,
                replaces_session: r.opt_int(2)?,
                expires_at: r.int(3)?,
            })
        },
    )?;
    Ok(taken.filter(|challenge| now < challenge.expires_at))
}

/// Deletes challenges dead at `now`.
pub fn purge_challenges(db: &dyn Db, now: i64) -> Result<usize, StoreError> {
    db.execute(
        "DELETE FROM login_challenges WHERE expires_at <= ?1",
        params![now],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user};

    #[test]
    fn a_step_is_used_once_and_never_an_earlier_one() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        assert!(!use_step(&conn, alice, 5).unwrap(), "no factor yet");
        set_pending(&conn, alice, &[7; 20], 1).unwrap();
        assert!(
            find(&conn, alice).unwrap().is_none(),
            "pending is not active"
        );
        activate(&conn, alice, &[7; 20], 10, 2).unwrap();
        assert!(pending(&conn, alice).unwrap().is_none());
        assert_eq!(find(&conn, alice).unwrap().unwrap().last_step, 10);
        assert!(!use_step(&conn, alice, 10).unwrap());
        assert!(!use_step(&conn, alice, 9).unwrap());
        assert!(use_step(&conn, alice, 11).unwrap());
        assert!(!use_step(&conn, alice, 11).unwrap());
    }

    #[test]
    fn a_recovery_code_is_used_once_and_a_new_set_replaces_the_old() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        let bob = test_user(&conn, "bob");
        replace_recovery_codes(&conn, alice, &[[1; 32], [2; 32]]).unwrap();
        assert!(!use_recovery_code(&conn, bob, &[1; 32]).unwrap());
        assert!(use_recovery_code(&conn, alice, &[1; 32]).unwrap());
        assert!(!use_recovery_code(&conn, alice, &[1; 32]).unwrap());
        assert_eq!(recovery_codes_left(&conn, alice).unwrap(), 1);
        replace_recovery_codes(&conn, alice, &[[3; 32]]).unwrap();
        assert!(!use_recovery_code(&conn, alice, &[2; 32]).unwrap());
        activate(&conn, alice, &[7; 20], 0, 2).unwrap();
        assert_eq!(enrolled_users(&conn).unwrap(), HashSet::from([alice]));
        assert!(remove(&conn, alice).unwrap());
        assert_eq!(recovery_codes_left(&conn, alice).unwrap(), 0);
        assert!(!remove(&conn, alice).unwrap());
    }

    #[test]
    fn a_challenge_is_taken_once_and_only_while_alive() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        let challenge = Challenge {
            user_id: alice,
            credential_version: 3,
            replaces_session: Some(9),
            expires_at: 100,
        };
        insert_challenge(&conn, &[1; 32], &challenge).unwrap();
        insert_challenge(&conn, &[2; 32], &challenge).unwrap();
        assert_eq!(
            take_challenge(&conn, &[1; 32], 99).unwrap(),
            Some(challenge.clone())
        );
        assert_eq!(take_challenge(&conn, &[1; 32], 99).unwrap(), None);
        // Dead: gone, and not returned.
        assert_eq!(take_challenge(&conn, &[2; 32], 100).unwrap(), None);
        let dead = Challenge {
            replaces_session: None,
            expires_at: 50,
            ..challenge
        };
        insert_challenge(&conn, &[3; 32], &dead).unwrap();
        assert_eq!(purge_challenges(&conn, 60).unwrap(), 1);
    }

    #[test]
    fn a_user_keeps_only_their_newest_challenges() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        let bob = test_user(&conn, "bob");
        let challenge = |user_id, expires_at| Challenge {
            user_id,
            credential_version: 0,
            replaces_session: None,
            expires_at,
        };
        insert_challenge(&conn, &[200; 32], &challenge(bob, 1_000)).unwrap();
        for i in 0..15u8 {
            insert_challenge(&conn, &[i; 32], &challenge(alice, 1_000 + i64::from(i))).unwrap();
        }
        // The five oldest of alice's are gone; bob's is untouched.
        for i in 0..5u8 {
            assert_eq!(take_challenge(&conn, &[i; 32], 0).unwrap(), None, "{i}");
        }
        for i in 5..15u8 {
            assert!(take_challenge(&conn, &[i; 32], 0).unwrap().is_some(), "{i}");
        }
        assert!(take_challenge(&conn, &[200; 32], 0).unwrap().is_some());
    }
}
