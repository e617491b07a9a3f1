//! The `audit` table: security events, appended and read in the order
//! they were written, and purged when old.
//!
//! Which events exist and what they carry is decided in `auth::audit`;
//! these functions only write and read rows.

use super::db::{params, Db, DbExt, Row};
use super::StoreError;

/// An event to record, besides the account it is about.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub at: i64,
    pub event: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub source: &'a str,
    pub detail: &'a str,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub at: i64,
    pub event: String,
    pub username: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub source: String,
    pub detail: String,
}

/// Which events to read: all, or those of one account, or since a time.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The folded username.
    pub username_folded: Option<String>,
    /// Only events at or after this unix time.
    pub since: Option<i64>,
}

/// Records an event about the account `username` (as stored, and folded),
/// or about no account.
pub fn insert(
    db: &dyn Db,
    entry: &NewEntry<'_>,
    username: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO audit (at, event, username, username_folded, ip, user_agent, source, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            entry.at,
            entry.event,
            username.map(|(name, _)| name),
            username.map(|(_, folded)| folded),
            entry.ip,
            entry.user_agent,
            entry.source,
            entry.detail,
        ],
    )?;
    Ok(())
}

/// Records an event about user `user_id`, named as the user is stored now:
/// for callers that know the id, not the name (a logout knows its session).
pub fn insert_for_user(db: &dyn Db, entry: &NewEntry<'_>, user_id: i64) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO audit (at, event, username, username_folded, ip, user_agent, source, detail)
         SELECT ?1, ?2, username, username_folded, ?3, ?4, ?5, ?6 FROM users WHERE id = ?7",
        params![
            entry.at,
            entry.event,
            entry.ip,
            entry.user_agent,
            entry.source,
            entry.detail,
            user_id,
        ],
    )?;
    Ok(())
}

/// Up to `limit` events matching `filter` with an id above `after`, oldest
/// first: a page of a listing that may run to millions of rows, read
/// without holding one snapshot for all of it.
pub fn page(
    db: &dyn Db,
    filter: &Filter,
    after: i64,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.rows(
        "SELECT id, at, event, username, ip, user_agent, source, detail FROM audit
         WHERE id > ?1 AND (CAST(?2 AS TEXT) IS NULL OR username_folded = ?2)
           AND (CAST(?3 AS BIGINT) IS NULL OR at >= ?3)
         ORDER BY id LIMIT ?4",
        params![
            after,
            filter.username_folded.as_deref(),
            filter.since,
            limit
        ],
        entry,
    )
}

/// The id just before the first event at or after `since`, where a
/// listing `--since` starts: found on the time index, so that it does
/// not scan the older rows it skips.
pub fn id_before(db: &dyn Db, since: i64) -> Result<i64, StoreError> {
    db.one(
        "SELECT coalesce(min(id) - 1, (SELECT coalesce(max(id), 0) FROM audit))
         FROM audit WHERE at >= ?1",
        params![since],
        |r| r.int(0),
    )
}

/// Deletes up to `limit` of the oldest events before `before`; returns how
/// many. Called in batches, so that each holds the write lock briefly.
pub fn purge_before(db: &dyn Db, before: i64, limit: usize) -> Result<usize, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.execute(
        "DELETE FROM audit WHERE id IN
           (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
        params![before, limit],
    )
}

fn entry(r: &Row<'_>) -> Result<Entry, StoreError> {
    Ok(Entry {
        id: r.int(0)?,
        at: r.int(1)?,
        event: r.text(2)?,
        username: r.opt_text(3)?,
        ip: r.opt_text(4)?,
        user_agent: r.opt_text(5)?,
        source: r.text(6)?,
        detail: r.text(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user};

    fn at(at: i64, event: &str) -> NewEntry<'_> {
        NewEntry {
            at,
            event,
            ip: Some("192.0.2.1"),
            user_agent: Some("ua"),
            source: "http",
            detail: "",
        }
    }

    fn ids(rows: &[Entry]) -> Vec<i64> {
        rows.iter().map(|e| e.id).collect()
    }

    #[test]
    fn events_are_listed_oldest_first_by_user_and_time_in_pages() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        insert(&conn, &at(10, "login_ok"), Some(("alice", "alice"))).unwrap();
        insert(&conn, &at(20, "login_failed"), None).unwrap();
        insert_for_user(&conn, &at(30, "logout"), alice).unwrap();
        insert(&conn, &at(40, "login_ok"), Some(("bob", "bob"))).unwrap();

        let all = page(&conn, &Filter::default(), 0, 100).unwrap();
        assert_eq!(ids(&all), [1, 2, 3, 4]);
        assert_eq!(all[2].username.as_deref(), Some("alice"));
        assert_eq!(all[1].username, None);
        let by_alice = Filter {
            username_folded: Some("alice".to_owned()),
            since: None,
        };
        assert_eq!(ids(&page(&conn, &by_alice, 0, 100).unwrap()), [1, 3]);
        let since = Filter {
            username_folded: None,
            since: Some(25),
        };
        let start = id_before(&conn, 25).unwrap();
        assert_eq!(ids(&page(&conn, &since, start, 100).unwrap()), [3, 4]);
        assert_eq!(ids(&page(&conn, &Filter::default(), 1, 2).unwrap()), [2, 3]);
        // Nothing that recent: the listing starts after the last row.
        assert_eq!(id_before(&conn, 99).unwrap(), 4);
    }

    #[test]
    fn an_event_for_a_user_id_that_is_gone_writes_nothing() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        insert_for_user(&conn, &at(10, "logout"), 42).unwrap();
        assert!(page(&conn, &Filter::default(), 0, 9).unwrap().is_empty());
    }

    #[test]
    fn purging_removes_only_older_rows_a_batch_at_a_time_and_ids_never_repeat() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        for t in [10, 20, 30, 40] {
            insert(&conn, &at(t, "login_failed"), None).unwrap();
        }
        assert_eq!(purge_before(&conn, 35, 2).unwrap(), 2);
        assert_eq!(purge_before(&conn, 35, 2).unwrap(), 1);
        assert_eq!(purge_before(&conn, 35, 2).unwrap(), 0);
        assert_eq!(ids(&page(&conn, &Filter::default(), 0, 9).unwrap()), [4]);
        purge_before(&conn, 99, 9).unwrap();
        insert(&conn, &at(50, "login_ok"), None).unwrap();
        assert_eq!(ids(&page(&conn, &Filter::default(), 0, 9).unwrap()), [5]);
    }
}
