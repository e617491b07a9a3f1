//! The session rules: what a stored session row is worth at `now`.
//!
//! [`Lifetimes::evaluate`] is the one evaluation every token check uses
//! (`/verify`, `/introspect`, `/me`, logout-all): pure, in unix seconds.

use super::Identity;
use crate::config::SessionConfig;
use crate::store::sessions::TokenRow;

/// The three session durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: i64,
    pub max: i64,
    pub refresh_within: i64,
}

/// What a token check concludes about a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Expired, or its user is disabled: the token is not valid.
    Invalid,
    /// Valid, and nothing to write.
    Valid(Identity),
    /// Valid, and the idle expiry moved: the caller writes
    /// `identity.expires_at` back.
    Slid(Identity),
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

    /// The session rules applied to a stored row at `now`.
    ///
    /// Valid while the user is not disabled, `now < expires_at` and
    /// `now < max_expires_at`. When less than `refresh_within` remains,
    /// `expires_at` moves to `min(now + idle_timeout, max_expires_at)`;
    /// `refresh_within == 0` never slides (a fixed lifetime).
    pub fn evaluate(&self, row: TokenRow, now: i64) -> Verdict {
        let TokenRow {
            session_id,
            created_at,
            expires_at,
            max_expires_at,
            user_id,
            username,
            email,
            display_name,
            user_disabled,
            user_created_at,
            groups,
            amr,
        } = row;
        if user_disabled || now >= expires_at || now >= max_expires_at {
            return Verdict::Invalid;
        }
        let slid_to = (now + self.idle).min(max_expires_at);
        let slides = expires_at - now < self.refresh_within && slid_to > expires_at;
        let identity = Identity {
            session_id,
            user_id,
            username,
            email,
            display_name,
            user_created_at,
            issued_at: created_at,
            expires_at: if slides { slid_to } else { expires_at },
            max_expires_at,
            groups,
            amr: super::Amr::from_bits(amr),
        };
        if slides {
            Verdict::Slid(identity)
        } else {
            Verdict::Valid(identity)
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

    fn row(expires_at: i64, max_expires_at: i64) -> TokenRow {
        TokenRow {
            session_id: 1,
            created_at: 0,
            expires_at,
            max_expires_at,
            user_id: 2,
            username: "alice".to_owned(),
            email: None,
            display_name: None,
            user_disabled: false,
            user_created_at: 0,
            groups: vec!["admins".to_owned()],
            amr: 1,
        }
    }

    /// `None` when invalid, else the idle expiry after any sliding and
    /// whether it slid.
    fn check(l: Lifetimes, now: i64, expires_at: i64, max: i64) -> Option<(i64, bool)> {
        match l.evaluate(row(expires_at, max), now) {
            Verdict::Invalid => None,
            Verdict::Valid(identity) => Some((identity.expires_at, false)),
            Verdict::Slid(identity) => Some((identity.expires_at, true)),
        }
    }

    #[test]
    fn a_new_session_expires_after_the_idle_timeout_and_the_max_lifetime() {
        assert_eq!(L.new_session(1000), (1000 + HOUR, 1000 + 7 * 24 * HOUR));
        let short_max = Lifetimes { max: 60, ..L };
        assert_eq!(short_max.new_session(1000), (1060, 1060));
    }

    #[test]
    fn a_session_used_early_does_not_slide() {
        let (exp, max) = L.new_session(0);
        assert_eq!(check(L, HOUR / 4, exp, max), Some((exp, false)));
    }

    #[test]
    fn a_session_used_within_refresh_window_slides_by_the_idle_timeout() {
        let (exp, max) = L.new_session(0);
        let now = exp - HOUR / 2 + 1;
        assert_eq!(check(L, now, exp, max), Some((now + HOUR, true)));
    }

    #[test]
    fn sliding_never_passes_max_expires_at() {
        let now = 1000;
        let max = now + 600;
        assert_eq!(check(L, now, now + 60, max), Some((max, true)));
        // Already at the cap: valid, but nothing to move.
        assert_eq!(check(L, now, max, max), Some((max, false)));
    }

    #[test]
    fn expiry_is_exclusive_at_both_limits() {
        assert_eq!(check(L, 100, 100, 200), None);
        assert_eq!(check(L, 200, 300, 200), None);
        assert!(check(L, 99, 100, 200).is_some());
    }

    #[test]
    fn refresh_within_zero_gives_a_fixed_lifetime() {
        let fixed = Lifetimes {
            refresh_within: 0,
            ..L
        };
        let (exp, max) = fixed.new_session(0);
        assert_eq!(check(fixed, exp - 1, exp, max), Some((exp, false)));
        assert_eq!(check(fixed, exp, exp, max), None);
    }

    #[test]
    fn a_disabled_users_session_is_invalid_however_fresh() {
        let (exp, max) = L.new_session(0);
        let disabled = TokenRow {
            user_disabled: true,
            ..row(exp, max)
        };
        assert_eq!(L.evaluate(disabled, 1), Verdict::Invalid);
    }

    #[test]
    fn a_valid_session_carries_its_user_groups_and_times() {
        let Verdict::Valid(identity) = L.evaluate(row(HOUR, 2 * HOUR), 10) else {
            panic!("valid");
        };
        assert_eq!(
            (
                identity.session_id,
                identity.user_id,
                identity.username.as_str()
            ),
            (1, 2, "alice")
        );
        assert_eq!((identity.exp(), identity.max_expires_at), (HOUR, 2 * HOUR));
        assert_eq!(identity.groups, ["admins"]);
    }
}
