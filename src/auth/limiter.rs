//! Brute-force limits: failed logins counted per username and per client address.
//!
//! After `max_failures` failures for one key within `failure_window`, the key
//! is banned for `ban_duration`; every attempt during the ban is refused with
//! the seconds left. State lives in memory (a restart forgets it) behind a
//! `std::sync::Mutex` that is never held across an `.await`.
//!
//! Memory is bounded: each table holds at most [`MAX_ENTRIES`] keys. When a
//! table is full, entries whose window and ban are over are dropped first,
//! then entries that only count failures; active bans are kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::config::LoginConfig;

/// Most keys tracked per table (usernames; addresses).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    window_start: i64,
    failures: u32,
    banned_until: i64,
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

    /// `Err(seconds)` while the username or the address is banned.
    ///
    /// `username` should be the folded (case-insensitive) name; `address` is
    /// `None` when the client address is not known reliably.
    pub fn check(&self, username: &str, address: Option<IpAddr>, now: i64) -> Result<(), u64> {
        let user_wait = self.by_username.ban_left(username, now);
        let addr_wait = address.map_or(0, |a| self.by_address.ban_left(&a, now));
        match user_wait.max(addr_wait) {
            0 => Ok(()),
            wait => Err(wait),
        }
    }

    /// Counts a failed login against both keys.
    pub fn record_failure(&self, username: &str, address: Option<IpAddr>, now: i64) {
        self.by_username.fail(username, self, now);
        if let Some(address) = address {
            self.by_address.fail(&address, self, now);
        }
    }

    /// Forgets the failures of a username after a successful login.
    pub fn record_success(&self, username: &str) {
        self.by_username.forget(username);
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
        // (they are plain values), so a poisoned map is still sound.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ban_left<Q>(&self, key: &Q, now: i64) -> u64
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock()
            .get(key)
            .map_or(0, |e| u64::try_from(e.banned_until - now).unwrap_or(0))
    }

    fn fail<Q>(&self, key: &Q, limits: &Limiter, now: i64)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut entries = self.lock();
        if !entries.contains_key(key) && entries.len() >= MAX_ENTRIES {
            evict(&mut entries, limits.window_secs, now);
            if entries.len() >= MAX_ENTRIES {
                return; // full of active bans: new keys go uncounted
            }
        }
        let entry = entries.entry(key.to_owned()).or_default();
        if now - entry.window_start >= limits.window_secs {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= limits.max_failures {
            entry.banned_until = now + limits.ban_secs;
            entry.failures = 0;
            entry.window_start = now;
        }
    }

    fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|e| e.banned_until == 0) {
            entries.remove(key);
        }
    }
}

fn evict<K>(entries: &mut HashMap<K, Entry>, window_secs: i64, now: i64) {
    entries.retain(|_, e| e.banned_until > now || now - e.window_start < window_secs);
    if entries.len() >= MAX_ENTRIES {
        entries.retain(|_, e| e.banned_until > now);
    }
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

    #[test]
    fn the_nth_failure_in_the_window_bans_for_the_ban_duration() {
        let l = limiter();
        l.record_failure("alice", None, 100);
        l.record_failure("alice", None, 110);
        assert_eq!(l.check("alice", None, 120), Ok(()));
        l.record_failure("alice", None, 120);
        assert_eq!(l.check("alice", None, 120), Err(300));
        assert_eq!(l.check("alice", None, 419), Err(1));
        assert_eq!(l.check("alice", None, 420), Ok(()));
        assert_eq!(l.check("bob", None, 130), Ok(()));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = limiter();
        l.record_failure("alice", None, 0);
        l.record_failure("alice", None, 30);
        l.record_failure("alice", None, 61);
        assert_eq!(l.check("alice", None, 61), Ok(()));
    }

    #[test]
    fn one_address_is_banned_across_usernames() {
        let l = limiter();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            l.record_failure(name, ADDR, i as i64);
        }
        assert_eq!(l.check("d", ADDR, 3), Err(299));
        assert_eq!(l.check("d", None, 3), Ok(()));
    }

    #[test]
    fn success_clears_counted_failures_but_not_a_ban() {
        let l = limiter();
        l.record_failure("alice", None, 0);
        l.record_failure("alice", None, 1);
        l.record_success("alice");
        l.record_failure("alice", None, 2);
        assert_eq!(l.check("alice", None, 2), Ok(()));
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
                        window_start: 0,
                        failures: 1,
                        banned_until: 0,
                    },
                );
            }
            entries.insert(
                "banned".into(),
                Entry {
                    window_start: 1000,
                    failures: 0,
                    banned_until: 5000,
                },
            );
        }
        l.record_failure("new", None, 1000);
        let entries = l.by_username.lock();
        assert!(entries.len() <= 2, "{}", entries.len());
        assert!(entries.contains_key("banned") && entries.contains_key("new"));
    }
}
