//! The audit trail: which security events are recorded, with what, and
//! how the trail is read and trimmed.
//!
//! A use case that changes something records its event in the same
//! transaction as the change (a login's session, a logout's deletion,
//! every administrator command), so that the trail holds exactly what
//! happened. Events with no change of their own (a failed login, a ban
//! starting) are written on their own. Refusals that cost no hash (429,
//! 503) are not written one by one: they come by the thousand in a flood,
//! and the ban that causes them is.
//!
//! Never recorded: a password, token, code or secret, nor a username that
//! no account has (it may be a password typed into the wrong field).

use crate::store::Db;
use std::net::IpAddr;
use std::time::Duration;

use super::admin::{Admin, AdminError};
use super::input::Username;
use super::{unix_now, Auth, AuthError};
use crate::store::audit::{self, Filter, NewEntry};
use crate::store::StoreError;

/// A stored event, as listed.
pub use audit::Entry;

/// Longest User-Agent kept, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;
/// Events deleted per purge statement: each holds the write lock briefly.
const PURGE_BATCH: usize = 1000;
/// Batches per purge round, so that a trail years past its retention is
/// trimmed over several rounds, not in one long burst of writes.
const PURGE_BATCHES_PER_ROUND: usize = 100;
/// The pause between batches, for other writers to go first.
const PURGE_PAUSE: Duration = Duration::from_millis(5);
/// Events per page of a listing.
const LIST_PAGE: usize = 500;

/// What happened. The names are the `event` column and `latchkey audit`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    LoginOk,
    LoginFailed,
    Logout,
    LogoutAll,
    SessionRevoked,
    BanStarted,
    UserAdded,
    PasswordChanged,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    SessionsRevoked,
    SessionsPurged,
    GroupAdded,
    GroupRemoved,
    MemberAdded,
    MemberRemoved,
    ClientAdded,
    ClientRemoved,
    TotpEnrolled,
    TotpRemoved,
    RecoveryCodeUsed,
    RecoveryCodesReplaced,
    TotpReset,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::LoginOk => "login_ok",
            Event::LoginFailed => "login_failed",
            Event::Logout => "logout",
            Event::LogoutAll => "logout_all",
            Event::SessionRevoked => "session_revoked",
            Event::BanStarted => "ban_started",
            Event::UserAdded => "user_added",
            Event::PasswordChanged => "password_changed",
            Event::UserDisabled => "user_disabled",
            Event::UserEnabled => "user_enabled",
            Event::UserDeleted => "user_deleted",
            Event::SessionsRevoked => "sessions_revoked",
            Event::SessionsPurged => "sessions_purged",
            Event::GroupAdded => "group_added",
            Event::GroupRemoved => "group_removed",
            Event::MemberAdded => "member_added",
            Event::MemberRemoved => "member_removed",
            Event::ClientAdded => "client_added",
            Event::ClientRemoved => "client_removed",
            Event::TotpEnrolled => "totp_enrolled",
            Event::TotpRemoved => "totp_removed",
            Event::RecoveryCodeUsed => "recovery_code_used",
            Event::RecoveryCodesReplaced => "recovery_codes_replaced",
            Event::TotpReset => "totp_reset",
        }
    }
}

/// Who sent a request: the address and user agent its events record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub ip: IpAddr,
    /// At most [`MAX_USER_AGENT_CHARS`] characters.
    pub user_agent: String,
}

impl Requester {
    /// `user_agent` is cut to [`MAX_USER_AGENT_CHARS`] characters.
    pub fn new(ip: IpAddr, user_agent: &str) -> Requester {
        Requester {
            ip,
            user_agent: user_agent.chars().take(MAX_USER_AGENT_CHARS).collect(),
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin<'a> {
    Http(&'a Requester),
    Cli,
}

/// The account an event is about.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'a> {
    /// As stored, and folded.
    Named(&'a str, &'a str),
    /// By id, named as the user is stored when the row is written.
    User(i64),
    Nobody,
}

/// Writes one event on `conn` (inside the caller's transaction, if any).
pub(super) fn record(
    conn: &dyn Db,
    event: Event,
    origin: Origin<'_>,
    subject: Subject<'_>,
    detail: &str,
) -> Result<(), StoreError> {
    let (ip, user_agent, source) = match origin {
        Origin::Http(r) => (Some(r.ip.to_string()), Some(r.user_agent.as_str()), "http"),
        Origin::Cli => (None, None, "cli"),
    };
    let entry = NewEntry {
        at: unix_now(),
        event: event.as_str(),
        ip: ip.as_deref(),
        user_agent,
        source,
        detail,
    };
    match subject {
        Subject::Named(name, folded) => audit::insert(conn, &entry, Some((name, folded))),
        Subject::User(id) => audit::insert_for_user(conn, &entry, id),
        Subject::Nobody => audit::insert(conn, &entry, None),
    }
}

impl Auth {
    /// Deletes events older than `retention`, a batch at a time; returns
    /// how many. Run periodically by the server.
    pub async fn purge_audit(&self, retention: Duration) -> Result<usize, AuthError> {
        let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = unix_now().saturating_sub(retention);
        let mut purged = 0;
        for _ in 0..PURGE_BATCHES_PER_ROUND {
            let n = self
                .inner
                .store
                .run(move |conn| audit::purge_before(conn, before, PURGE_BATCH))
                .await?;
            purged += n;
            if n < PURGE_BATCH {
                break;
            }
            tokio::time::sleep(PURGE_PAUSE).await;
        }
        Ok(purged)
    }
}

/// A listing of the trail, read a page at a time, oldest first.
pub struct AuditListing<'a> {
    admin: &'a Admin,
    filter: Filter,
    after: Option<i64>,
}

impl AuditListing<'_> {
    /// The next events; empty at the end.
    pub fn next_page(&mut self) -> Result<Vec<Entry>, AdminError> {
        let conn = self.admin.store.conn()?;
        let after = match self.after {
            Some(after) => after,
            None => match self.filter.since {
                Some(since) => audit::id_before(&conn, since)?,
                None => 0,
            },
        };
        let page = audit::page(&conn, &self.filter, after, LIST_PAGE)?;
        self.after = Some(page.last().map_or(after, |e| e.id));
        Ok(page)
    }
}

impl Admin {
    /// The events about `username` (whether or not the account still
    /// exists), or about anyone; only those at or after `since` (unix
    /// seconds) when given.
    pub fn audit_trail(&self, username: Option<&Username>, since: Option<i64>) -> AuditListing<'_> {
        AuditListing {
            admin: self,
            filter: Filter {
                username_folded: username.map(|u| u.folded().to_owned()),
                since,
            },
            after: None,
        }
    }
}
