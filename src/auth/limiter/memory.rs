//! The limiter's entries in memory, for a server alone on its database.
//!
//! One `std::sync::Mutex` per table, never held across an `.await` nor
//! together with the other table's. Memory is bounded: each table holds at
//! most [`MAX_ENTRIES`] keys, and a key at most `max_failures` failure
//! times. When a table is full, entries with nothing left to count are
//! dropped first, then entries that only count failures; active bans and
//! unsettled reservations are kept. A key that finds no room is not counted.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use super::{BansStarted, Entry, Held, Limits, Outcome};

/// Most keys tracked per table (usernames; addresses).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub(super) struct Table<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

/// Usernames and addresses.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub(super) by_username: Table<String>,
    pub(super) by_address: Table<IpAddr>,
}

impl Tables {
    /// Takes a place for `username` and `address` (already a key), or the
    /// seconds to wait; a refusal on one key takes no place on the other.
    pub(super) fn reserve(
        &self,
        limits: &Limits,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Held {
        let by_user = self.by_username.reserve(username, limits, now);
        let by_address = address.map(|a| self.by_address.reserve(&a, limits, now));
        let username = matches!(by_user, Ok(true)).then(|| username.to_owned());
        let address = address.filter(|_| matches!(by_address, Some(Ok(true))));
        let wait = [by_user.err(), by_address.and_then(Result::err)]
            .into_iter()
            .flatten()
            .max();
        match wait {
            None => Ok((username, address)),
            Some(wait) => {
                // Refused on one key: give back the place taken on the other.
                self.settle(limits, username, address, Outcome::Abandoned, now);
                Err(wait)
            }
        }
    }

    /// Settles the places `username` and `address` hold.
    pub(super) fn settle(
        &self,
        limits: &Limits,
        username: Option<String>,
        address: Option<IpAddr>,
        outcome: Outcome,
        now: i64,
    ) -> BansStarted {
        let mut started = BansStarted::default();
        if let Some(username) = username {
            started.username = self.by_username.settle(&username, outcome, limits, now);
        }
        if let Some(address) = address {
            if self
                .by_address
                .settle(&address, outcome.for_address(), limits, now)
            {
                started.address = Some(address);
            }
        }
        started
    }

    /// Usernames and addresses banned at `now`.
    pub(super) fn banned(&self, now: i64) -> (usize, usize) {
        (self.by_username.banned(now), self.by_address.banned(now))
    }
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every change is one small step), so a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn banned(&self, now: i64) -> usize {
        self.lock()
            .values()
            .filter(|e| e.banned_until > now)
            .count()
    }

    /// Takes a place for `key`: `Ok(true)` when taken, `Ok(false)` when the
    /// table is full of entries that must stay (the key goes uncounted),
    /// `Err(seconds)` when the key is banned or has no place left.
    fn reserve<Q>(&self, key: &Q, limits: &Limits, now: i64) -> Result<bool, u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = self.lock();
        if !entries.contains_key(key) && entries.len() >= MAX_ENTRIES {
            evict(&mut entries, limits, now);
            if entries.len() >= MAX_ENTRIES {
                return Ok(false);
            }
        }
        let entry = entries.entry(key.to_owned()).or_default();
        let reserved = entry.reserve(limits, now);
        if entry.is_idle(now) {
            entries.remove(key);
        }
        reserved.map(|()| true)
    }

    /// Settles one reservation of `key`; true when it started a ban.
    fn settle<Q>(&self, key: &Q, outcome: Outcome, limits: &Limits, now: i64) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        // Entries with a reservation are never evicted; absent is a bug
        // elsewhere, and nothing to count.
        let Some(entry) = entries.get_mut(key) else {
            return false;
        };
        let ban_started = entry.settle(outcome, limits, now);
        if entry.is_idle(now) {
            entries.remove(key);
        }
        ban_started
    }
}

fn evict<K>(entries: &mut HashMap<K, Entry>, limits: &Limits, now: i64) {
    entries.retain(|_, e| {
        e.prune(limits, now);
        !e.is_idle(now)
    });
    if entries.len() >= MAX_ENTRIES {
        entries.retain(|_, e| e.banned_until > now || e.in_flight > 0);
    }
}
