//! Brute-force limits: login attempts counted per username and per client address.
//!
//! A login reserves an [`Attempt`] against both keys *before* its password
//! is hashed, and settles it afterwards: a wrong password turns the
//! reservation into a failure, a right one releases it. A key admits a new
//! reservation only while its failures within the last `failure_window`
//! (a sliding window) plus its unsettled reservations stay below
//! `max_failures`, so however many requests arrive at once, no more than
//! `max_failures` wrong passwords are verified for one key in any window.
//! The failure that reaches `max_failures` bans the key for `ban_duration`.
//!
//! State lives in memory (a restart forgets it) behind a `std::sync::Mutex`
//! per table that is never held across an `.await`, nor together with the
//! other table's.
//!
//! Memory is bounded: each table holds at most [`MAX_ENTRIES`] keys, and a
//! key at most `max_failures` failure times. When a table is full, entries
//! with nothing left to count are dropped first, then entries that only
//! count failures; active bans and unsettled reservations are kept. A key
//! that finds no room is not counted.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use crate::config::LoginConfig;

/// Most keys tracked per table (usernames; addresses).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
struct Entry {
    /// When each failure still inside the window happened, oldest first.
    failures: VecDeque<i64>,
    /// Attempts reserved and not yet settled.
    in_flight: u32,
    banned_until: i64,
}

impl Entry {
    /// Forgets the failures that have left the window.
    fn prune(&mut self, window_secs: i64, now: i64) {
        while self
            .failures
            .front()
            .is_some_and(|&at| now - at >= window_secs)
        {
            self.failures.pop_front();
        }
    }

    /// Nothing left to count: the entry can go.
    fn is_idle(&self, now: i64) -> bool {
        self.failures.is_empty() && self.in_flight == 0 && self.banned_until <= now
    }
}

#[derive(Debug)]
struct Table<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

/// The login limiter for one server.
#[derive(Debug)]
pub struct Limiter {
    max_failures: u32,
    window_secs: i64,
    ban_secs: i64,
    by_username: Table<String>,
    by_address: Table<IpAddr>,
}

/// What a settled attempt turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A wrong password (or unknown or disabled user): counted.
    Failure,
    /// The right password: not counted, and the username's failures are forgotten.
    Success,
    /// Never finished (store error, pool full, client gone): not counted.
    Abandoned,
}

/// A login attempt holding a place against the limits of its username and
/// address until it is settled with [`Attempt::failed`] or
/// [`Attempt::succeeded`]; dropped unsettled, it is released uncounted.
#[must_use = "an attempt must be settled once the password has been checked"]
#[derive(Debug)]
pub struct Attempt<'l> {
    limiter: &'l Limiter,
    /// The keys whose tables hold this attempt's reservation.
    username: Option<String>,
    address: Option<IpAddr>,
}

impl Attempt<'_> {
    /// The password was wrong (or the user unknown or disabled): a failure.
    /// Returns the bans this failure started, for the audit trail.
    pub fn failed(mut self, now: i64) -> BansStarted {
        self.settle(Outcome::Failure, now)
    }

    /// The password was right: not a failure, and the username's count is cleared.
    pub fn succeeded(mut self, now: i64) {
        self.settle(Outcome::Success, now);
    }

    fn settle(&mut self, outcome: Outcome, now: i64) -> BansStarted {
        let limiter = self.limiter;
        let mut started = BansStarted::default();
        if let Some(username) = self.username.take() {
            started.username = limiter.by_username.settle(&username, outcome, limiter, now);
        }
        if let Some(address) = self.address.take() {
            // A success on one account says nothing about the other names
            // tried from this address: its failures stay.
            let outcome = match outcome {
                Outcome::Success => Outcome::Abandoned,
                other => other,
            };
            if limiter.by_address.settle(&address, outcome, limiter, now) {
                started.address = Some(address);
            }
        }
        started
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.username.is_some() || self.address.is_some() {
            self.settle(Outcome::Abandoned, super::unix_now());
        }
    }
}

/// The bans a failure started (a key already banned starts none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BansStarted {
    /// The username is banned from now on.
    pub username: bool,
    /// The address, as counted ([`address_key`]), is banned from now on.
    pub address: Option<IpAddr>,
}

impl Limiter {
    /// A limiter with the windows of `[login]`.
    pub fn new(config: &LoginConfig) -> Limiter {
        Limiter {
            max_failures: config.max_failures,
            window_secs: secs(config.failure_window),
            ban_secs: secs(config.ban_duration),
            by_username: Table::new(),
            by_address: Table::new(),
        }
    }

    /// How many usernames and how many addresses are banned at `now`.
    /// Walks both tables (at most [`MAX_ENTRIES`] each): for a scrape, not
    /// for a request.
    pub fn active_bans(&self, now: i64) -> (usize, usize) {
        (self.by_username.banned(now), self.by_address.banned(now))
    }

    /// How long a ban lasts, in seconds.
    pub fn ban_secs(&self) -> i64 {
        self.ban_secs
    }

    /// Reserves a login attempt for `username` and `address`, or
    /// `Err(seconds to wait)` when either is banned or has no attempt left
    /// right now.
    ///
    /// `username` should be the folded (case-insensitive) name; `address` is
    /// `None` when the client address is not known reliably. IPv6 addresses
    /// are counted by their /64 (see [`address_key`]).
    pub fn reserve(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt<'_>, u64> {
        let address = address.map(address_key);
        let by_user = self.by_username.reserve(username, self, now);
        let by_address = address.map(|a| self.by_address.reserve(&a, self, now));
        let mut attempt = Attempt {
            limiter: self,
            username: matches!(by_user, Ok(true)).then(|| username.to_owned()),
            address: address.filter(|_| matches!(by_address, Some(Ok(true)))),
        };
        let wait = [by_user.err(), by_address.and_then(Result::err)]
            .into_iter()
            .flatten()
            .max();
        match wait {
            None => Ok(attempt),
            Some(wait) => {
                // Refused on one key: give back the place taken on the other.
                attempt.settle(Outcome::Abandoned, now);
                Err(wait)
            }
        }
    }
}

/// The key an address is counted under: an IPv6 address by its /64 (one
/// subscriber's network, where each machine may pick addresses at will),
/// an IPv4-mapped IPv6 address as the IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every change is one small step), so a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries banned at `now`.
    fn banned(&self, now: i64) -> usize {
        self.lock()
            .values()
            .filter(|e| e.banned_until > now)
            .count()
    }

    /// Takes a place for `key`: `Ok(true)` when taken, `Ok(false)` when the
    /// table is full of entries that must stay (the key goes uncounted),
    /// `Err(seconds)` when the key is banned or has no place left.
    fn reserve<Q>(&self, key: &Q, limits: &Limiter, now: i64) -> Result<bool, u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = self.lock();
        if !entries.contains_key(key) && entries.len() >= MAX_ENTRIES {
            evict(&mut entries, limits.window_secs, now);
            if entries.len() >= MAX_ENTRIES {
                return Ok(false);
            }
        }
        let entry = entries.entry(key.to_owned()).or_default();
        entry.prune(limits.window_secs, now);
        if entry.banned_until > now {
            return Err(wait_secs(entry.banned_until - now));
        }
        let failures = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
        if failures.saturating_add(entry.in_flight) >= limits.max_failures {
            // Attempts in flight settle within a hash's time; failures only
            // as they leave the window.
            let wait = match (entry.in_flight, entry.failures.front()) {
                (0, Some(&oldest)) => oldest + limits.window_secs - now,
                _ => 1,
            };
            return Err(wait_secs(wait));
        }
        entry.in_flight += 1;
        Ok(true)
    }

    /// Settles one reservation of `key`; true when it started a ban.
    fn settle<Q>(&self, key: &Q, outcome: Outcome, limits: &Limiter, now: i64) -> bool
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
        let mut ban_started = false;
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.prune(limits.window_secs, now);
        match outcome {
            Outcome::Failure => {
                entry.failures.push_back(now);
                let failures = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
                if failures >= limits.max_failures {
                    ban_started = entry.banned_until <= now && limits.ban_secs > 0;
                    entry.banned_until = entry.banned_until.max(now + limits.ban_secs);
                }
            }
            // Even after an earlier ban has run out: the count is what a
            // right password clears (a running ban admits no attempt at all).
            Outcome::Success => entry.failures.clear(),
            Outcome::Abandoned => {}
        }
        if entry.is_idle(now) {
            entries.remove(key);
        }
        ban_started
    }
}

fn evict<K>(entries: &mut HashMap<K, Entry>, window_secs: i64, now: i64) {
    entries.retain(|_, e| {
        e.prune(window_secs, now);
        !e.is_idle(now)
    });
    if entries.len() >= MAX_ENTRIES {
        entries.retain(|_, e| e.banned_until > now || e.in_flight > 0);
    }
}

/// A wait as `Retry-After` seconds: at least one.
fn wait_secs(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).max(1)
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests;
