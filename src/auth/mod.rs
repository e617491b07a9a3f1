//! The rules: who is logged in, and for how long.
//!
//! [`Auth`] holds the use cases the HTTP layer calls: logging in
//! ([`login`](Auth::login)), checking tokens, introspection, logout and the
//! session inventory (in `session.rs`). [`Admin`] holds the administrator's
//! use cases (users, sessions, clients, backup; groups in [`groups`]), one
//! call each, for the CLI and any later caller. Sliding expiry ([`expiry`]), disabled users,
//! brute-force limits ([`limiter`]), input limits ([`input`]) and the cost
//! of a failed login are decided here and nowhere else. Database work goes
//! through the [`Store`], password hashing through the bounded [`Hasher`].

pub mod admin;
pub mod audit;
pub mod challenge;
pub mod expiry;
pub mod groups;
pub mod hasher;
pub mod input;
pub mod limiter;
mod login;
pub mod password;
pub mod second_factor;
mod session;
pub mod token;
pub mod totp;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::ops::metrics::{Metrics, Snapshot};
use crate::store::{Store, StoreError};
use expiry::Lifetimes;
use hasher::Hasher;
use limiter::Limiter;
use password::{HashError, PasswordHashing};
use token::{RandomError, Token};

pub use admin::{Admin, AdminError};
pub use challenge::{ChallengeError, CodeChallenge, FormLogin};
pub use login::{Client, NewSession};
pub use session::{Amr, ClientCredentials, Identity, Introspection, SessionRow};

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The password was right, but a credential change (new password,
    /// disable, delete, every session revoked) committed while it was
    /// checked. Answered as [`AuthError::InvalidCredentials`].
    #[error("the credentials changed while the password was checked")]
    CredentialsChanged,
    /// The password was right, and the user has a second factor: a TOTP
    /// code or a recovery code must come with it. No session.
    #[error("a one-time code is required")]
    MfaRequired,
    /// The one-time code was used up by another request after it was
    /// checked. Answered as [`AuthError::InvalidCredentials`].
    #[error("the one-time code was already used")]
    ReplayedCode,
    #[error(
        "no enrollment is pending (or it is over 10 minutes old): start again with POST /me/totp"
    )]
    NoEnrollment,
    #[error("this account has no second factor")]
    NoSecondFactor,
    #[error("a valid token is required")]
    Unauthorized,
    #[error("too many login attempts; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the server is busy")]
    Busy,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("cannot start the password hashing threads")]
    Threads(#[from] std::io::Error),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            // An exhausted connection pool is load, not a fault: answer 503.
            StoreError::Busy(_) | StoreError::Saturated | StoreError::Unavailable(_) => {
                AuthError::Busy
            }
            other => AuthError::Store(other),
        }
    }
}

/// The current time in unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The use cases, shared by every HTTP worker.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    hasher: Hasher,
    passwords: PasswordHashing,
    limiter: Limiter,
    lifetimes: Lifetimes,
    /// Where password hashing times are counted, when metrics are on.
    metrics: Option<Arc<Metrics>>,
    /// Verified against when the username is unknown, so that a miss costs
    /// the same argon2 work as a wrong password (no user enumeration by timing).
    dummy_hash: String,
}

/// Hashing threads: one per core, since argon2 is pure CPU.
fn hashing_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Logins that may wait for a hashing thread; beyond this they get 503.
/// At 20-45 ms a hash, an admitted login waits at most ~0.2 s on an
/// otherwise idle core (longer when token checks take the CPU first).
const HASH_QUEUE_PER_THREAD: usize = 4;

impl Auth {
    /// Builds the use cases on an open store; starts the hashing threads.
    /// `metrics`, when given, receives the password hashing times.
    pub fn new(
        config: &Config,
        store: Store,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Auth, AuthError> {
        let passwords = PasswordHashing::new(&config.password)?;
        let threads = hashing_threads();
        let hasher = Hasher::start(threads, threads * HASH_QUEUE_PER_THREAD)?;
        let dummy_hash = passwords.hash(Token::generate()?.expose())?;
        // Computed on the caller's thread, which does not hash again.
        password::release_work_memory();
        // Instances that share the database share their login limits
        // through it; one alone on its file keeps them in memory.
        let limiter = if store.shared_by_instances() {
            Limiter::shared(&config.login, store.clone())
        } else {
            Limiter::in_memory(&config.login)
        };
        Ok(Auth {
            inner: Arc::new(Inner {
                store,
                hasher,
                passwords,
                limiter,
                lifetimes: Lifetimes::from_config(&config.session),
                metrics,
                dummy_hash,
            }),
        })
    }
}

impl Auth {
    /// The state the metrics report, read now: valid sessions (a count on
    /// a blocking thread; `None` when the database cannot answer), the
    /// hashing pool's places in use, active bans.
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let now = unix_now();
        let sessions = self
            .inner
            .store
            .run(move |conn| crate::store::sessions::count_valid(conn, now))
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot count sessions for /metrics"))
            .ok();
        let (bans_username, bans_address) = self
            .inner
            .limiter
            .active_bans(now)
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot count bans for /metrics"))
            .unwrap_or_default();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Snapshot {
            sessions_active: sessions,
            hash_queue_depth: count(self.inner.hasher.in_use()),
            bans_username: count(bans_username),
            bans_address: count(bans_address),
        }
    }
}
