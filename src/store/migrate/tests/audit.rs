//! Version 7: the audit trail arrives empty beside everything kept.

use super::*;

#[test]
fn a_file_from_before_the_audit_trail_keeps_everything_and_records_from_then_on() {
    use crate::store::{audit, sessions, users};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    let mut old = file_at(&old_path, 6);
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'Alice', 'alice', 'hash-a', 1), (2, 'bob', 'bob', 'hash-b', 1);
         INSERT INTO groups (id, name, name_folded, created_at) VALUES (1, 'ops', 'ops', 1);
         INSERT INTO memberships (user_id, group_id) VALUES (1, 1);
         INSERT INTO clients (id, secret_hash, created_at)
           VALUES ('proxy', zeroblob(32), 1);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let names: Vec<String> = users::list(&old)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["Alice", "bob"]);
    let mut hash = [0; 32];
    hash[7] = 7;
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!(
        (session.session_id, session.groups),
        (3, vec!["ops".to_owned()])
    );
    let filter = audit::Filter::default();
    assert!(audit::page(&old, &filter, 0, 9).unwrap().is_empty());
    // The new table works on the migrated file.
    let entry = audit::NewEntry {
        at: 20,
        event: "logout",
        ip: Some("127.0.0.1"),
        user_agent: Some("a"),
        source: "http",
        detail: "",
    };
    audit::insert_for_user(&old, &entry, 1).unwrap();
    let rows = audit::page(&old, &filter, 0, 9).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].username.as_deref(), Some("Alice"));
}
