//! `login_limits`: the brute-force state of one username or one client
//! address, when several instances share the database and so must share
//! their counts and bans (see `auth::limiter`, which decides what a row
//! means; these functions only read and write rows).

use super::db::{params, Db, DbExt};
use super::StoreError;

/// What a row counts: a folded username or a client address as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Username = 0,
    Address = 1,
}

/// One row's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limit {
    /// When each failure still in the window happened, oldest first.
    pub failures: Vec<i64>,
    /// Attempts reserved and not yet settled.
    pub in_flight: i64,
    /// When the latest of them was reserved.
    pub reserved_at: i64,
    pub banned_until: i64,
    /// When the row has nothing left to count; the purge deletes it then.
    pub idle_at: i64,
}

/// The state of `subject`, if it has any.
pub fn find(db: &dyn Db, kind: Kind, subject: &str) -> Result<Option<Limit>, StoreError> {
    db.row(
        "SELECT failures, in_flight, reserved_at, banned_until, idle_at
         FROM login_limits WHERE kind = ?1 AND subject = ?2",
        params![kind as i64, subject],
        |r| {
            Ok(Limit {
                failures: unpack(&r.blob(0)?),
                in_flight: r.int(1)?,
                reserved_at: r.int(2)?,
                banned_until: r.int(3)?,
                idle_at: r.int(4)?,
            })
        },
    )
}

/// Writes the state of `subject`, replacing what it had.
pub fn put(db: &dyn Db, kind: Kind, subject: &str, limit: &Limit) -> Result<(), StoreError> {
    let failures = pack(&limit.failures);
    db.execute(
        "INSERT INTO login_limits
           (kind, subject, failures, in_flight, reserved_at, banned_until, idle_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (kind, subject) DO UPDATE SET
           failures = excluded.failures, in_flight = excluded.in_flight,
           reserved_at = excluded.reserved_at, banned_until = excluded.banned_until,
           idle_at = excluded.idle_at",
        params![
            kind as i64,
            subject,
            &failures[..],
            limit.in_flight,
            limit.reserved_at,
            limit.banned_until,
            limit.idle_at
        ],
    )?;
    Ok(())
}

/// Forgets `subject`: it has nothing left to count.
pub fn delete(db: &dyn Db, kind: Kind, subject: &str) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM login_limits WHERE kind = ?1 AND subject = ?2",
        params![kind as i64, subject],
    )?;
    Ok(())
}

/// How many usernames and how many addresses are banned at `now`.
pub fn count_banned(db: &dyn Db, now: i64) -> Result<(i64, i64), StoreError> {
    db.one(
        "SELECT count(CASE WHEN kind = 0 THEN 1 END), count(CASE WHEN kind = 1 THEN 1 END)
         FROM login_limits WHERE banned_until > ?1",
        params![now],
        |r| Ok((r.int(0)?, r.int(1)?)),
    )
}

/// Deletes the rows with nothing left to count at `now`; returns how many.
pub fn purge_idle(db: &dyn Db, now: i64) -> Result<usize, StoreError> {
    db.execute("DELETE FROM login_limits WHERE idle_at <= ?1", params![now])
}

/// Failure times as stored: 8 bytes each, big-endian.
fn pack(times: &[i64]) -> Vec<u8> {
    times.iter().flat_map(|t| t.to_be_bytes()).collect()
}

/// The inverse of [`pack`]; a trailing partial time (never written by
/// latchkey) is ignored.
fn unpack(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_comes_back_as_written_and_goes_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("l.db"), 1).unwrap();
        let conn = store.connection().unwrap();
        let limit = Limit {
            failures: vec![5, -1, i64::MAX],
            in_flight: 2,
            reserved_at: 7,
            banned_until: 300,
            idle_at: 400,
        };
        put(&*conn, Kind::Address, "192.0.2.1", &limit).unwrap();
        assert_eq!(
            find(&*conn, Kind::Address, "192.0.2.1").unwrap(),
            Some(limit)
        );
        assert_eq!(find(&*conn, Kind::Username, "192.0.2.1").unwrap(), None);
        assert_eq!(count_banned(&*conn, 299).unwrap(), (0, 1));
        assert_eq!(count_banned(&*conn, 300).unwrap(), (0, 0));
        assert_eq!(purge_idle(&*conn, 399).unwrap(), 0);
        assert_eq!(purge_idle(&*conn, 400).unwrap(), 1);
        assert_eq!(find(&*conn, Kind::Address, "192.0.2.1").unwrap(), None);
    }
}
