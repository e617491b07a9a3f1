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
    pub fn failed(mut self, now: i64) {
        self.settle(Outcome::Failure, now);
    }

    /// The password was right: not a failure, and the username's count is cleared.
    pub fn succeeded(mut self, now: i64) {
        self.settle(Outcome::Success, now);
    }

    fn settle(&mut self, outcome: Outcome, now: i64) {
        let limiter = self.limiter;
        if let Some(username) = self.username.take() {
            limiter.by_username.settle(&username, outcome, limiter, now);
        }
        if let Some(address) = self.address.take() {
            // A success on one account says nothing about the other names
            // tried from this address: its failures stay.
            let outcome = match outcome {
                Outcome::Success => Outcome::Abandoned,
                other => other,
            };
            limiter.by_address.settle(&address, outcome, limiter, now);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.username.is_some() || self.address.is_some() {
            self.settle(Outcome::Abandoned, super::unix_now());
        }
    }
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

    fn settle<Q>(&self, key: &Q, outcome: Outcome, limits: &Limiter, now: i64)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        // Entries with a reservation are never evicted; absent is a bug
        // elsewhere, and nothing to count.
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.prune(limits.window_secs, now);
        match outcome {
            Outcome::Failure => {
                entry.failures.push_back(now);
                let failures = u32::try_from(entry.failures.len()).unwrap_or(u32::MAX);
                if failures >= limits.max_failures {
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter() -> Limiter {
        Limiter::new(&LoginConfig {
            max_failures: 3,
            failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
            ..LoginConfig::default()
        })
    }

    const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn fail(l: &Limiter, name: &str, address: Option<IpAddr>, now: i64) {
        l.reserve(name, address, now).unwrap().failed(now);
    }

    #[test]
    fn the_nth_failure_in_the_window_bans_for_the_ban_duration() {
        let l = limiter();
        fail(&l, "alice", None, 100);
        fail(&l, "alice", None, 110);
        l.reserve("alice", None, 120).unwrap().failed(120);
        assert_eq!(l.reserve("alice", None, 120).err(), Some(300));
        assert_eq!(l.reserve("alice", None, 419).err(), Some(1));
        assert!(l.reserve("alice", None, 420).is_ok());
        assert!(l.reserve("bob", None, 130).is_ok());
    }

    #[test]
    fn the_window_slides_rather_than_starting_over() {
        let l = limiter();
        fail(&l, "alice", None, 0);
        fail(&l, "alice", None, 59);
        fail(&l, "alice", None, 61);
        // Two failures within the last minute: one more is allowed.
        fail(&l, "alice", None, 62);
        assert_eq!(l.reserve("alice", None, 62).err(), Some(300));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = limiter();
        fail(&l, "alice", None, 0);
        fail(&l, "alice", None, 30);
        fail(&l, "alice", None, 91);
        assert!(l.reserve("alice", None, 91).is_ok());
    }

    #[test]
    fn reservations_in_flight_count_against_the_limit() {
        let l = limiter();
        let held: Vec<_> = (0..3)
            .map(|_| l.reserve("alice", None, 10).unwrap())
            .collect();
        // All three places are taken: a fourth attempt waits for one.
        assert_eq!(l.reserve("alice", None, 10).err(), Some(1));
        let mut held = held.into_iter();
        held.next().unwrap().succeeded(11);
        let fourth = l.reserve("alice", None, 11).unwrap();
        drop(held);
        drop(fourth);
        // Released uncounted: the full allowance is back.
        for _ in 0..2 {
            fail(&l, "alice", None, 12);
        }
        assert!(l.reserve("alice", None, 12).is_ok());
    }

    #[test]
    fn a_refusal_on_one_key_gives_back_the_place_on_the_other() {
        let l = limiter();
        for name in ["a", "b", "c"] {
            fail(&l, name, ADDR, 0);
        }
        assert_eq!(l.reserve("d", ADDR, 1).err(), Some(299));
        // "d" holds no place after the refusal.
        assert!(l.by_username.lock().get("d").is_none());
        assert!(l.reserve("d", None, 1).is_ok());
    }

    #[test]
    fn one_address_is_banned_across_usernames() {
        let l = limiter();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            fail(&l, name, ADDR, i as i64);
        }
        assert_eq!(l.reserve("d", ADDR, 3).err(), Some(299));
        assert!(l.reserve("d", None, 3).is_ok());
    }

    #[test]
    fn an_ipv6_address_is_counted_by_its_64_prefix() {
        let l = limiter();
        for (i, ip) in ["2001:db8::1", "2001:db8::2:3", "2001:db8::ffff:1"]
            .iter()
            .enumerate()
        {
            fail(&l, &format!("u{i}"), Some(ip.parse().unwrap()), 0);
        }
        let same_64 = Some("2001:db8::abcd".parse().unwrap());
        assert_eq!(l.reserve("x", same_64, 1).err(), Some(299));
        let next_64 = Some("2001:db8:0:1::1".parse().unwrap());
        assert!(l.reserve("x", next_64, 1).is_ok());
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn success_clears_counted_failures_of_the_username_but_not_of_the_address() {
        let l = limiter();
        fail(&l, "alice", ADDR, 0);
        fail(&l, "alice", ADDR, 1);
        l.reserve("alice", ADDR, 2).unwrap().succeeded(2);
        fail(&l, "alice", None, 3);
        assert!(l.reserve("alice", None, 3).is_ok());
        // The address still has its two failures: one more bans it.
        fail(&l, "bob", ADDR, 4);
        assert_eq!(l.reserve("carol", ADDR, 4).err(), Some(300));
    }

    #[test]
    fn success_after_an_expired_ban_clears_the_count() {
        let l = Limiter::new(&LoginConfig {
            max_failures: 2,
            failure_window: Duration::from_secs(600),
            ban_duration: Duration::from_secs(60),
            ..LoginConfig::default()
        });
        fail(&l, "alice", None, 0);
        fail(&l, "alice", None, 1);
        assert!(l.reserve("alice", None, 30).is_err());
        // The ban is over but both failures are still in the window.
        assert_eq!(l.reserve("alice", None, 61).err(), Some(539));
        let l2 = Limiter::new(&LoginConfig {
            max_failures: 3,
            failure_window: Duration::from_secs(600),
            ban_duration: Duration::from_secs(60),
            ..LoginConfig::default()
        });
        for at in 0..3 {
            fail(&l2, "alice", None, at);
        }
        // Once the oldest failure has left the window, a login may succeed,
        // and it clears the rest: two new failures do not ban again.
        l2.reserve("alice", None, 600).unwrap().succeeded(600);
        fail(&l2, "alice", None, 601);
        fail(&l2, "alice", None, 602);
        assert!(l2.reserve("alice", None, 603).is_ok());
    }

    #[test]
    fn settled_entries_with_nothing_to_count_are_dropped() {
        let l = limiter();
        l.reserve("alice", ADDR, 0).unwrap().succeeded(0);
        drop(l.reserve("bob", ADDR, 0).unwrap());
        assert!(l.by_username.lock().is_empty());
        assert!(l.by_address.lock().is_empty());
    }

    #[test]
    fn a_full_table_drops_stale_entries_first() {
        let l = limiter();
        {
            let mut entries = l.by_username.lock();
            for i in 0..MAX_ENTRIES {
                entries.insert(
                    format!("old{i}"),
                    Entry {
                        failures: VecDeque::from([0]),
                        ..Entry::default()
                    },
                );
            }
            entries.insert(
                "banned".into(),
                Entry {
                    banned_until: 5000,
                    ..Entry::default()
                },
            );
        }
        fail(&l, "new", None, 1000);
        let entries = l.by_username.lock();
        assert!(entries.len() <= 2, "{}", entries.len());
        assert!(entries.contains_key("banned") && entries.contains_key("new"));
    }

    #[test]
    fn a_table_full_of_bans_leaves_new_keys_uncounted_and_intact() {
        let l = limiter();
        {
            let mut entries = l.by_username.lock();
            for i in 0..MAX_ENTRIES {
                entries.insert(
                    format!("banned{i}"),
                    Entry {
                        banned_until: 5000,
                        ..Entry::default()
                    },
                );
            }
        }
        let attempt = l.reserve("new", None, 1000).unwrap();
        assert!(attempt.username.is_none());
        attempt.failed(1000);
        assert_eq!(l.by_username.lock().len(), MAX_ENTRIES);
    }
}
