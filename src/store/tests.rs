//! The store's own contract: inline reads see every commit before them,
//! never wait for a lock, and snapshots always end.

use super::*;

/// The SQLite connection behind a test's `Db`.
fn sql(db: &dyn Db) -> &Connection {
    db.sqlite().expect("an SQLite store")
}

#[test]
fn an_inline_read_sees_every_commit_made_before_it() {
    let (_dir, store) = test_store();
    let writer = store.connection().unwrap();
    for i in 0..20_i64 {
        writer
            .execute_batch(&format!("PRAGMA user_version = {}", 100 + i))
            .unwrap();
        let seen: i64 = store
            .read_now(|conn| Ok(sql(conn).query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(seen, 100 + i);
    }
}

#[tokio::test]
async fn a_read_the_inline_connection_cannot_answer_goes_through_the_pool_and_is_counted() {
    let (_dir, store) = test_store();
    // Only the read-only inline connection refuses: the pooled one answers.
    let read = |conn: &dyn Db| {
        if sql(conn).is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::Task("inline refused".to_owned()));
        }
        conn.one("SELECT 7", &[], |r| r.int(0))
    };
    assert_eq!(store.read(read).await.unwrap(), 7);
    assert_eq!(store.inline_fallbacks(), 1);
    // A read the inline connection answers is not counted.
    let inline = |conn: &dyn Db| Ok(sql(conn).is_readonly(rusqlite::MAIN_DB)?);
    assert!(store.read(inline).await.unwrap());
    assert_eq!(store.inline_fallbacks(), 1);
}

#[test]
fn an_inline_read_never_waits_for_a_lock_and_cannot_write() {
    let (_dir, store) = test_store();
    let busy_timeout_ms: i64 = store
        .read_now(|conn| Ok(sql(conn).query_row("PRAGMA busy_timeout", [], |r| r.get(0))?))
        .unwrap();
    // A lock conflict comes back at once as SQLITE_BUSY; pooled
    // connections would wait up to BUSY_TIMEOUT.
    assert_eq!(busy_timeout_ms, 0);
    let write = store.read_now(|conn| conn.execute("DELETE FROM clients", &[]));
    assert!(write.is_err(), "the inline connection wrote");
}

#[test]
fn a_snapshot_always_ends_so_the_next_read_sees_new_commits() {
    let (_dir, store) = test_store();
    let writer = store.connection().unwrap();
    let version = |conn: &dyn Db| -> Result<i64, StoreError> {
        conn.one("PRAGMA user_version", &[], |r| r.int(0))
    };
    // A snapshot that fails half-way is rolled back, not left open.
    let failed = store.read_now(|conn| {
        snapshot(conn, |conn| {
            version(conn)?;
            Err::<(), _>(StoreError::Task("fails inside".to_owned()))
        })
    });
    assert!(failed.is_err());
    assert!(store
        .read_now(|conn| Ok(sql(conn).is_autocommit()))
        .unwrap());
    writer.execute_batch("PRAGMA user_version = 7").unwrap();
    let both = store
        .read_now(|conn| snapshot(conn, |conn| Ok((version(conn)?, version(conn)?))))
        .unwrap();
    assert_eq!(both, (7, 7));
    // A reader left inside a transaction is replaced, never reused.
    store
        .read_now(|conn| conn.batch("BEGIN; SELECT count(*) FROM users;"))
        .unwrap();
    writer.execute_batch("PRAGMA user_version = 8").unwrap();
    assert_eq!(store.read_now(version).unwrap(), 8);
}
