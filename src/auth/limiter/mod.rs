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
//! Those rules are [`Entry`]'s, whichever of two places keeps the entries:
//! - [`memory`]: one instance alone on its database (SQLite) keeps them in
//!   memory (a restart forgets them), bounded to [`MAX_ENTRIES`] per table.
//! - [`shared`]: instances that share a database (PostgreSQL) keep them in
//!   its `login_limits` table, read and written in one write transaction
//!   per reservation and per settlement, so that a ban made through one
//!   instance refuses on every other at once.

mod memory;
mod shared;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr};

use super::AuthError;
use crate::config::LoginConfig;
use crate::store::Store;

pub use memory::MAX_ENTRIES;

/// The windows of `[login]`, in seconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_failures: u32,
    window_secs: i64,
    ban_secs: i64,
}

/// The state of one key (a username or an address) and the rules on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Entry {
    /// When each failure still inside the window happened, oldest first.
    failures: VecDeque<i64>,
    /// Attempts reserved and not yet settled.
    in_flight: u32,
    /// When the latest of them was reserved.
    reserved_at: i64,
    banned_until: i64,
}

impl Entry {
    /// Forgets the failures that have left the window.
    fn prune(&mut self, limits: &Limits, now: i64) {
        while self
            .failures
            .front()
            .is_some_and(|&at| now - at >= limits.window_secs)
        {
            self.failures.pop_front();
        }
    }

    /// Nothing left to count: the entry can go.
    fn is_idle(&self, now: i64) -> bool {
        self.failures.is_empty() && self.in_flight == 0 && self.banned_until <= now
    }

    /// Takes a place for one attempt, or `Err(seconds to wait)` when the
    /// key is banned or has no place left.
    fn reserve(&mut self, limits: &Limits, now: i64) -> Result<(), u64> {
        self.prune(limits, now);
        if self.banned_until > now {
            return Err(wait_secs(self.banned_until - now));
        }
        let failures = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if failures.saturating_add(self.in_flight) >= limits.max_failures {
            // Attempts in flight settle within a hash's time; failures only
            // as they leave the window.
            let wait = match (self.in_flight, self.failures.front()) {
                (0, Some(&oldest)) => oldest + limits.window_secs - now,
                _ => 1,
            };
            return Err(wait_secs(wait));
        }
        self.in_flight += 1;
        self.reserved_at = now;
        Ok(())
    }

    /// Settles one reservation; true when it started a ban.
    fn settle(&mut self, outcome: Outcome, limits: &Limits, now: i64) -> bool {
        let mut ban_started = false;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.prune(limits, now);
        match outcome {
            Outcome::Failure => {
                self.failures.push_back(now);
                let failures = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
                if failures >= limits.max_failures {
                    ban_started = self.banned_until <= now && limits.ban_secs > 0;
                    self.banned_until = self.banned_until.max(now + limits.ban_secs);
                }
            }
            // Even after an earlier ban has run out: the count is what a
            // right password clears (a running ban admits no attempt at all).
            Outcome::Success => self.failures.clear(),
            Outcome::Abandoned => {}
        }
        ban_started
    }
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

impl Outcome {
    /// What the attempt means for its address: a success on one account
    /// says nothing about the other names tried from it, whose failures stay.
    fn for_address(self) -> Outcome {
        match self {
            Outcome::Success => Outcome::Abandoned,
            other => other,
        }
    }
}

/// Where the entries are kept.
enum Backend {
    Memory(memory::Tables),
    Shared(Store),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Memory(_) => "Memory",
            Backend::Shared(_) => "Shared",
        })
    }
}

/// The login limiter for one server.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    backend: Backend,
}

/// A login attempt holding a place against the limits of its username and
/// address until it is settled with [`Attempt::failed`] or
/// [`Attempt::succeeded`]; dropped unsettled, it is released uncounted.
#[must_use = "an attempt must be settled once the password has been checked"]
#[derive(Debug)]
pub struct Attempt<'l> {
    limiter: &'l Limiter,
    /// The keys holding this attempt's reservation (a key the memory table
    /// had no room for holds none).
    username: Option<String>,
    address: Option<IpAddr>,
}

impl Attempt<'_> {
    /// The password was wrong (or the user unknown or disabled): a failure.
    /// Returns the bans this failure started, for the audit trail.
    pub async fn failed(mut self, now: i64) -> BansStarted {
        self.settle(Outcome::Failure, now).await
    }

    /// The password was right: not a failure, and the username's count is cleared.
    pub async fn succeeded(mut self, now: i64) {
        self.settle(Outcome::Success, now).await;
    }

    async fn settle(&mut self, outcome: Outcome, now: i64) -> BansStarted {
        let (username, address) = (self.username.take(), self.address.take());
        let limiter = self.limiter;
        match &limiter.backend {
            Backend::Memory(tables) => {
                tables.settle(&limiter.limits, username, address, outcome, now)
            }
            Backend::Shared(store) => {
                let settled =
                    shared::settle(store, limiter.limits, username, address, outcome, now);
                settled.await.unwrap_or_else(|error| {
                    // The attempt goes uncounted (a reservation left behind
                    // lapses after a minute): say so, the login is answered anyway.
                    tracing::warn!(%error, "cannot count a login attempt in the database");
                    BansStarted::default()
                })
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.username.is_none() && self.address.is_none() {
            return;
        }
        let (username, address) = (self.username.take(), self.address.take());
        let now = super::unix_now();
        match &self.limiter.backend {
            Backend::Memory(tables) => {
                tables.settle(
                    &self.limiter.limits,
                    username,
                    address,
                    Outcome::Abandoned,
                    now,
                );
            }
            // No waiting in a destructor: the release runs as a task of its
            // own; without a runtime to run it, the reservation lapses.
            Backend::Shared(store) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let (store, limits) = (store.clone(), self.limiter.limits);
                    runtime.spawn(async move {
                        let released =
                            shared::settle(&store, limits, username, address, Outcome::Abandoned, now);
                        if let Err(error) = released.await {
                            tracing::warn!(%error, "cannot release a login attempt in the database");
                        }
                    });
                }
            }
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
    /// A limiter with the windows of `[login]` that keeps its counts in
    /// memory: for a server alone on its database.
    pub fn in_memory(config: &LoginConfig) -> Limiter {
        Limiter {
            limits: Limits::from(config),
            backend: Backend::Memory(memory::Tables::default()),
        }
    }

    /// A limiter that keeps its counts in `store`'s database, shared with
    /// every other instance on it.
    pub fn shared(config: &LoginConfig, store: Store) -> Limiter {
        Limiter {
            limits: Limits::from(config),
            backend: Backend::Shared(store),
        }
    }

    /// How many usernames and how many addresses are banned at `now`: for
    /// a scrape, not for a request (it walks every entry).
    pub async fn active_bans(&self, now: i64) -> Result<(usize, usize), AuthError> {
        match &self.backend {
            Backend::Memory(tables) => Ok(tables.banned(now)),
            Backend::Shared(store) => Ok(shared::banned(store, now).await?),
        }
    }

    /// How long a ban lasts, in seconds.
    pub fn ban_secs(&self) -> i64 {
        self.limits.ban_secs
    }

    /// Reserves a login attempt for `username` and `address`, or
    /// [`AuthError::RateLimited`] when either is banned or has no attempt
    /// left right now.
    ///
    /// `username` should be the folded (case-insensitive) name; `address` is
    /// `None` when the client address is not known reliably. IPv6 addresses
    /// are counted by their /64 (see [`address_key`]).
    pub async fn reserve(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt<'_>, AuthError> {
        let address = address.map(address_key);
        let held = match &self.backend {
            Backend::Memory(tables) => tables.reserve(&self.limits, username, address, now),
            Backend::Shared(store) => {
                shared::reserve(store, self.limits, username, address, now).await?
            }
        };
        let (username, address) =
            held.map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        Ok(Attempt {
            limiter: self,
            username,
            address,
        })
    }
}

impl From<&LoginConfig> for Limits {
    fn from(config: &LoginConfig) -> Limits {
        Limits {
            max_failures: config.max_failures,
            window_secs: secs(config.failure_window),
            ban_secs: secs(config.ban_duration),
        }
    }
}

/// The keys a reservation took, or the seconds to wait.
type Held = Result<(Option<String>, Option<IpAddr>), u64>;

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

/// A wait as `Retry-After` seconds: at least one.
fn wait_secs(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).max(1)
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests;
