//! The limiter's entries in the database, for instances that share it: a
//! reservation and a settlement are each one write transaction that reads
//! the keys' rows, applies [`Entry`]'s rules and writes them back, so the
//! writers of every instance take turns on the same counts.

use std::net::IpAddr;

use super::{BansStarted, Entry, Held, Limits, Outcome};
use crate::store::db::Db;
use crate::store::limits::{self as table, Kind, Limit};
use crate::store::{Store, StoreError};

/// Reservations older than this are taken for lost (their instance died
/// or lost the database before settling them): a reservation lives for one
/// password hash and two short writes, well under a second.
const RESERVATION_TTL: i64 = 60;

/// Takes a place for `username` and `address` (already a key) in one
/// transaction, or the seconds to wait (and then writes nothing).
pub(super) async fn reserve(
    store: &Store,
    limits: Limits,
    username: &str,
    address: Option<IpAddr>,
    now: i64,
) -> Result<Held, StoreError> {
    let username = username.to_owned();
    store
        .run(move |db| {
            let tx = crate::store::write(db)?;
            let mut by_user = load(&tx, Kind::Username, &username, now)?;
            let mut wait = by_user.reserve(&limits, now).err();
            let mut by_address = None;
            if let Some(address) = address {
                let subject = address.to_string();
                let mut entry = load(&tx, Kind::Address, &subject, now)?;
                wait = wait.max(entry.reserve(&limits, now).err());
                by_address = Some((subject, entry));
            }
            if let Some(wait) = wait {
                // Dropped uncommitted: neither key's place is taken.
                return Ok(Err(wait));
            }
            save(&tx, Kind::Username, &username, &by_user, &limits, now)?;
            if let Some((subject, entry)) = &by_address {
                save(&tx, Kind::Address, subject, entry, &limits, now)?;
            }
            tx.commit()?;
            Ok(Ok((Some(username), address)))
        })
        .await
}

/// Settles the places `username` and `address` hold, in one transaction.
pub(super) async fn settle(
    store: &Store,
    limits: Limits,
    username: Option<String>,
    address: Option<IpAddr>,
    outcome: Outcome,
    now: i64,
) -> Result<BansStarted, StoreError> {
    store
        .run(move |db| {
            let tx = crate::store::write(db)?;
            let mut started = BansStarted::default();
            if let Some(username) = &username {
                let mut entry = load(&tx, Kind::Username, username, now)?;
                started.username = entry.settle(outcome, &limits, now);
                save(&tx, Kind::Username, username, &entry, &limits, now)?;
            }
            if let Some(address) = address {
                let subject = address.to_string();
                let mut entry = load(&tx, Kind::Address, &subject, now)?;
                if entry.settle(outcome.for_address(), &limits, now) {
                    started.address = Some(address);
                }
                save(&tx, Kind::Address, &subject, &entry, &limits, now)?;
            }
            tx.commit()?;
            Ok(started)
        })
        .await
}

/// Usernames and addresses banned at `now`.
pub(super) async fn banned(store: &Store, now: i64) -> Result<(usize, usize), StoreError> {
    let (usernames, addresses) = store.run(move |db| table::count_banned(db, now)).await?;
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    Ok((count(usernames), count(addresses)))
}

/// The entry of `subject` as stored, its lost reservations forgotten.
fn load(db: &dyn Db, kind: Kind, subject: &str, now: i64) -> Result<Entry, StoreError> {
    let Some(row) = table::find(db, kind, subject)? else {
        return Ok(Entry::default());
    };
    let mut entry = Entry {
        failures: row.failures.into(),
        in_flight: u32::try_from(row.in_flight).unwrap_or(0),
        reserved_at: row.reserved_at,
        banned_until: row.banned_until,
    };
    if now - entry.reserved_at >= RESERVATION_TTL {
        entry.in_flight = 0;
    }
    Ok(entry)
}

/// Writes `entry` back, or deletes its row when it has nothing to count.
fn save(
    db: &dyn Db,
    kind: Kind,
    subject: &str,
    entry: &Entry,
    limits: &Limits,
    now: i64,
) -> Result<(), StoreError> {
    if entry.is_idle(now) {
        return table::delete(db, kind, subject);
    }
    // The last moment the row still counts something: its newest failure
    // leaving the window, its ban ending, its reservations lapsing.
    let idle_at = [
        entry
            .failures
            .back()
            .map_or(0, |&at| at + limits.window_secs),
        entry.banned_until,
        if entry.in_flight > 0 {
            entry.reserved_at + RESERVATION_TTL
        } else {
            0
        },
    ]
    .into_iter()
    .max()
    .unwrap_or(now);
    let row = Limit {
        failures: entry.failures.iter().copied().collect(),
        in_flight: i64::from(entry.in_flight),
        reserved_at: entry.reserved_at,
        banned_until: entry.banned_until,
        idle_at,
    };
    table::put(db, kind, subject, &row)
}
