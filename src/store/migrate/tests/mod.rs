//! Migration tests: files made by earlier schemas, migrated and compared
//! with a new file.

use super::*;

#[test]
fn a_new_file_gets_the_schema_and_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let mut conn = Connection::open(&path).unwrap();
    run(&mut conn, &path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // Running again on a current file changes nothing.
    run(&mut conn, &path).unwrap();
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let mut conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = run(&mut conn, &path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let mut conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    assert!(matches!(
        run(&mut conn, &path),
        Err(StoreError::ForeignDatabase { .. })
    ));
}

/// Tables, columns, indexes and their columns, as SQLite reports them
/// (the stored CREATE text differs after a rename, the structure must not).
fn structure(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let mut objects = conn
        .prepare("SELECT type, name, tbl_name FROM sqlite_schema ORDER BY name")
        .unwrap();
    let objects: Vec<(String, String, String)> = objects
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name, table) in objects {
        out.push(format!("{kind} {name} on {table}"));
        let pragma = if kind == "table" {
            format!("SELECT cid, name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{name}')")
        } else {
            format!("SELECT seqno, cid, name, 0, 0, 0 FROM pragma_index_info('{name}')")
        };
        let mut stmt = conn.prepare(&pragma).unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "  {:?} {:?} {:?} {:?} {:?} {:?}",
                    r.get_ref(0)?,
                    r.get_ref(1)?,
                    r.get_ref(2)?,
                    r.get_ref(3)?,
                    r.get_ref(4)?,
                    r.get_ref(5)?
                ))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    // The foreign keys of every table, and whether it has a rowid.
    let foreign_keys: Vec<String> = conn
        .prepare(
            "SELECT t.name, t.wr, f.\"table\", f.\"from\", f.\"to\", f.on_delete
             FROM pragma_table_list AS t
             LEFT JOIN pragma_foreign_key_list(t.name) AS f
             WHERE t.schema = 'main' AND t.name NOT LIKE 'sqlite_%'
             ORDER BY t.name, f.\"from\"",
        )
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "table {:?} without rowid {:?} fk {:?} {:?} {:?} {:?}",
                r.get_ref(0)?,
                r.get_ref(1)?,
                r.get_ref(2)?,
                r.get_ref(3)?,
                r.get_ref(4)?,
                r.get_ref(5)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out.extend(foreign_keys);
    out
}

/// Migrates `old` (at `old_path`) and checks it ends where a new file in
/// `dir` starts: the same schema, stamped with [`SCHEMA_VERSION`].
fn migrate_and_compare(old: &mut Connection, old_path: &Path, dir: &Path) {
    run(old, old_path).unwrap();
    let new_path = dir.join("new.db");
    let mut new = Connection::open(&new_path).unwrap();
    run(&mut new, &new_path).unwrap();
    assert_eq!(structure(old), structure(&new));
    let version: i64 = old
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

/// A file as this build would have left it at `version`: schema_v1.sql,
/// then the steps up to `version`.
fn file_at(path: &Path, version: i64) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(include_str!("../schema_v1.sql"))
        .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for step in &MIGRATIONS[..(version - 1) as usize] {
        step(&tx).unwrap();
    }
    tx.commit().unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
    conn
}

#[test]
fn a_file_from_before_credential_versions_keeps_every_user_and_session() {
    use super::super::{sessions, users};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    // The schema before the credential version (step 4).
    let mut old = file_at(&old_path, 3);
    old.execute_batch(
        "INSERT INTO users
           (id, username, username_folded, password_hash, email, display_name, disabled,
            created_at)
           VALUES (1, 'Alice', 'alice', 'hash-a', 'a@example.com', NULL, 0, 5),
                  (2, 'bob', 'bob', 'hash-b', NULL, 'Bob', 1, 6);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let alice = users::find_by_id(&old, 1).unwrap().unwrap();
    assert_eq!(
        (
            alice.username.as_str(),
            alice.password_hash.as_str(),
            alice.email.as_deref(),
            alice.disabled,
            alice.created_at,
            alice.credential_version
        ),
        ("Alice", "hash-a", Some("a@example.com"), false, 5, 0)
    );
    let bob = users::find_by_id(&old, 2).unwrap().unwrap();
    assert_eq!(
        (
            bob.display_name.as_deref(),
            bob.disabled,
            bob.credential_version
        ),
        (Some("Bob"), true, 0)
    );
    let mut hash = [0; 32];
    hash[7] = 7;
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!((session.session_id, session.user_id), (3, 1));
    // The migrated column does its job: a login that read version 0 may
    // finish until the password changes.
    assert!(users::may_log_in(&old, 1, 0).unwrap());
    assert!(users::set_password_hash(&old, 1, "hash-a2").unwrap());
    assert!(!users::may_log_in(&old, 1, 0).unwrap());
}

#[test]
fn a_file_from_before_groups_keeps_every_user_and_session_and_gains_working_groups() {
    use super::super::{groups, sessions, users};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    // The schema before groups (step 5).
    let mut old = file_at(&old_path, 4);
    old.execute_batch(
        "INSERT INTO users
           (id, username, username_folded, password_hash, email, display_name, disabled,
            created_at, credential_version)
           VALUES (1, 'Alice', 'alice', 'hash-a', 'a@example.com', NULL, 0, 5, 3),
                  (2, 'bob', 'bob', 'hash-b', NULL, 'Bob', 1, 6, 0);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let listed: Vec<_> = users::list(&old)
        .unwrap()
        .into_iter()
        .map(|u| (u.id, u.username, u.password_hash, u.credential_version))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "Alice".to_owned(), "hash-a".to_owned(), 3),
            (2, "bob".to_owned(), "hash-b".to_owned(), 0)
        ]
    );
    let mut hash = [0; 32];
    hash[7] = 7;
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!(
        (session.session_id, session.user_id, session.expires_at),
        (3, 1, 100)
    );
    assert!(session.groups.is_empty());
    // The new tables work on the migrated file, cascade included.
    old.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let admins = groups::insert(&old, "Admins", "admins", 9).unwrap();
    assert!(groups::add_member(&old, admins, 1).unwrap());
    assert!(groups::add_member(&old, admins, 2).unwrap());
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!(session.groups, ["Admins"]);
    assert!(users::delete(&old, 2).unwrap());
    assert_eq!(groups::list(&old).unwrap()[0].members, 1);
}

#[test]
fn a_file_from_before_group_names_gets_them_filled_and_kept_by_the_triggers() {
    use super::super::{groups, sessions};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    // The schema before users.group_names (step 6), with memberships.
    let mut old = file_at(&old_path, 5);
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'alice', 'alice', 'x', 1), (2, 'bob', 'bob', 'x', 1);
         INSERT INTO groups (id, name, name_folded, created_at)
           VALUES (1, 'beta', 'beta', 1), (2, 'Alpha', 'alpha', 1), (3, 'gamma', 'gamma', 1);
         INSERT INTO memberships (user_id, group_id) VALUES (1, 1), (1, 2);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let mut hash = [0; 32];
    hash[7] = 7;
    let groups_of_alice = |conn: &Connection| {
        sessions::find_by_token_hash(conn, &hash)
            .unwrap()
            .unwrap()
            .groups
    };
    // Filled from the memberships in the file, sorted ignoring case.
    assert_eq!(groups_of_alice(&old), ["Alpha", "beta"]);
    // Then kept by the triggers: a join, a leave, a cascade.
    old.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    assert!(groups::add_member(&old, 3, 1).unwrap());
    assert_eq!(groups_of_alice(&old), ["Alpha", "beta", "gamma"]);
    assert!(groups::remove_member(&old, 1, 1).unwrap());
    assert_eq!(groups_of_alice(&old), ["Alpha", "gamma"]);
    old.execute_batch("DELETE FROM groups WHERE id = 2")
        .unwrap();
    assert_eq!(groups_of_alice(&old), ["gamma"]);
    old.execute_batch("DELETE FROM groups").unwrap();
    assert!(groups_of_alice(&old).is_empty());
}

#[test]
fn a_version_1_file_migrates_to_the_schema_of_a_new_file_keeping_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("v1.db");
    let mut old = Connection::open(&old_path).unwrap();
    old.execute_batch(include_str!("../schema_v1.sql")).unwrap();
    old.pragma_update(None, "user_version", 1).unwrap();
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'alice', 'alice', 'x', 1), (2, 'bob', 'bob', 'x', 1);
         INSERT INTO sessions VALUES
           (x'0000000000000000000000000000000000000000000000000000000000000001', 7, 1, 10, 100, 200, '127.0.0.1', 'a'),
           (x'ff00000000000000000000000000000000000000000000000000000000000000', 9, 2, 20, 300, 400, '::1', 'b');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let mut first = [0; 32];
    first[31] = 1;
    let mut second = [0; 32];
    second[0] = 0xff;
    let row = super::super::sessions::find_by_token_hash(&old, &first)
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.session_id, row.username.as_str(), row.expires_at),
        (7, "alice", 100)
    );
    let row = super::super::sessions::find_by_token_hash(&old, &second)
        .unwrap()
        .unwrap();
    assert_eq!((row.session_id, row.max_expires_at), (9, 400));
    // Ids go on from the highest kept one, and the cascade still works.
    assert_eq!(insert_test_session(&old, 3, 1), 10);
    old.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM users WHERE id = 2")
        .unwrap();
    let left: i64 = old
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 2);
}

/// Stores a session of `user_id` under a hash of `seed` bytes; returns its id.
fn insert_test_session(conn: &Connection, seed: u8, user_id: i64) -> i64 {
    let session = super::super::sessions::NewSession {
        user_id,
        created_at: 1,
        expires_at: 2,
        max_expires_at: 3,
        ip: "127.0.0.1",
        user_agent: "t",
        amr: 1,
    };
    match super::super::sessions::insert(conn, &[seed; 32], &session).unwrap() {
        super::super::sessions::Inserted::Stored(id) => id,
        taken => panic!("{taken:?}"),
    }
}

#[test]
fn a_version_2_file_migrates_keeping_users_and_sessions_and_ids_go_on_past_the_largest() {
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("v2.db");
    let mut old = Connection::open(&old_path).unwrap();
    old.execute_batch(include_str!("../schema_v2.sql")).unwrap();
    old.pragma_update(None, "user_version", 2).unwrap();
    // Sessions 3 and 7 are left of more (version 2 would hand out 8 next).
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, email, created_at)
           VALUES (1, 'Alice', 'alice', 'hash-a', 'a@example.com', 1),
                  (2, 'bob', 'bob', 'hash-b', NULL, 1);
         INSERT INTO sessions VALUES
           (1, x'0000000000000001000000000000000000000000000000000000000000000000', 3, 1, 10, 100, 200, '127.0.0.1', 'a'),
           (2, x'0000000000000002000000000000000000000000000000000000000000000000', 7, 2, 20, 300, 400, '::1', 'b');
         INSERT INTO clients VALUES ('nginx', zeroblob(32), 5);",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let users = super::super::users::list(&old).unwrap();
    let users: Vec<_> = users
        .iter()
        .map(|u| {
            (
                u.id,
                u.username.as_str(),
                u.email.as_deref(),
                u.password_hash.as_str(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            (1, "Alice", Some("a@example.com"), "hash-a"),
            (2, "bob", None, "hash-b")
        ]
    );
    let mut hash = [0; 32];
    hash[7] = 2;
    let row = super::super::sessions::find_by_token_hash(&old, &hash)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            row.session_id,
            row.username.as_str(),
            row.expires_at,
            row.max_expires_at
        ),
        (7, "bob", 300, 400)
    );
    let clients = super::super::clients::list(&old).unwrap();
    assert_eq!(clients.len(), 1);

    // Deleting the newest kept session does not hand its id out again.
    old.execute("DELETE FROM sessions WHERE id = 7", [])
        .unwrap();
    assert_eq!(insert_test_session(&old, 9, 1), 8);
    old.execute("DELETE FROM sessions WHERE id = 8", [])
        .unwrap();
    assert_eq!(insert_test_session(&old, 10, 2), 9);
}

#[test]
fn a_version_2_file_without_sessions_starts_the_ids_at_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    let mut conn = Connection::open(&path).unwrap();
    conn.execute_batch(include_str!("../schema_v2.sql"))
        .unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'alice', 'alice', 'x', 1);",
    )
    .unwrap();
    run(&mut conn, &path).unwrap();
    assert_eq!(insert_test_session(&conn, 1, 1), 1);
}

mod audit;
mod login_limits;
mod second_factor;
