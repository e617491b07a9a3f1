//! Session lifetime arithmetic: pure functions of `now`, in unix seconds.

use crate::config::SessionConfig;

/// The three session durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: i64,
    pub max: i64,
    pub refresh_within: i64,
}

/// What a token check concludes about a stored session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Past `expires_at` or `max_expires_at`.
    Expired,
    /// Valid; `expires_at` is the value after any sliding, `slid` says whether it moved.
    Valid { expires_at: i64, slid: bool },
}

impl Lifetimes {
    /// The lifetimes of `[session]`.
    pub fn from_config(config: &SessionConfig) -> Lifetimes {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
        Lifetimes {
            idle: secs(config.idle_timeout),
            max: secs(config.max_lifetime),
            refresh_within: secs(config.refresh_within),
        }
    }

    /// `(expires_at, max_expires_at)` for a session created at `now`.
    ///
    /// `expires_at` is clamped to `max_expires_at`, so that `expires_at` alone
    /// tells when a row is dead (the purge relies on it).
    pub fn new_session(&self, now: i64) -> (i64, i64) {
        let max_expires_at = now + self.max;
        ((now + self.idle).min(max_expires_at), max_expires_at)
    }

    /// Whether a session is valid at `now`, and its idle expiry after sliding.
    ///
    /// SPEC: valid while `now < expires_at` and `now < max_expires_at`; when
    /// less than `refresh_within` remains, `expires_at` moves to
    /// `min(now + idle_timeout, max_expires_at)`. `refresh_within == 0` never slides.
    pub fn check(&self, now: i64, expires_at: i64, max_expires_at: i64) -> Expiry {
        if now >= expires_at || now >= max_expires_at {
            return Expiry::Expired;
        }
        if expires_at - now < self.refresh_within {
            let slid_to = (now + self.idle).min(max_expires_at);
            if slid_to > expires_at {
                return Expiry::Valid {
                    expires_at: slid_to,
                    slid: true,
                };
            }
        }
        Expiry::Valid {
            expires_at,
            slid: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const L: Lifetimes = Lifetimes {
        idle: HOUR,
        max: 7 * 24 * HOUR,
        refresh_within: HOUR / 2,
    };

    #[test]
    fn a_new_session_expires_after_the_idle_timeout_and_the_max_lifetime() {
        assert_eq!(L.new_session(1000), (1000 + HOUR, 1000 + 7 * 24 * HOUR));
        let short_max = Lifetimes { max: 60, ..L };
        assert_eq!(short_max.new_session(1000), (1060, 1060));
    }

    #[test]
    fn a_session_used_early_does_not_slide() {
        let (exp, max) = L.new_session(0);
        assert_eq!(
            L.check(HOUR / 4, exp, max),
            Expiry::Valid {
                expires_at: exp,
                slid: false
            }
        );
    }

    #[test]
    fn a_session_used_within_refresh_window_slides_by_the_idle_timeout() {
        let (exp, max) = L.new_session(0);
        let now = exp - HOUR / 2 + 1;
        assert_eq!(
            L.check(now, exp, max),
            Expiry::Valid {
                expires_at: now + HOUR,
                slid: true
            }
        );
    }

    #[test]
    fn sliding_never_passes_max_expires_at() {
        let now = 1000;
        let max = now + 600;
        assert_eq!(
            L.check(now, now + 60, max),
            Expiry::Valid {
                expires_at: max,
                slid: true
            }
        );
        // Already at the cap: valid, but nothing to move.
        assert_eq!(
            L.check(now, max, max),
            Expiry::Valid {
                expires_at: max,
                slid: false
            }
        );
    }

    #[test]
    fn expiry_is_exclusive_at_both_limits() {
        assert_eq!(L.check(100, 100, 200), Expiry::Expired);
        assert_eq!(L.check(200, 300, 200), Expiry::Expired);
        assert!(matches!(L.check(99, 100, 200), Expiry::Valid { .. }));
    }

    #[test]
    fn refresh_within_zero_gives_a_fixed_lifetime() {
        let fixed = Lifetimes {
            refresh_within: 0,
            ..L
        };
        let (exp, max) = fixed.new_session(0);
        assert_eq!(
            fixed.check(exp - 1, exp, max),
            Expiry::Valid {
                expires_at: exp,
                slid: false
            }
        );
        assert_eq!(fixed.check(exp, exp, max), Expiry::Expired);
    }
}
