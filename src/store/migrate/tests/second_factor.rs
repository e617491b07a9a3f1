//! Version 8: every session kept as a password login's, and the second
//! factor's tables, empty and working.

use super::*;

#[test]
fn a_file_from_before_the_second_factor_keeps_its_sessions_as_password_logins() {
    use crate::store::{sessions, totp};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    let mut old = file_at(&old_path, 7);
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'alice', 'alice', 'x', 1);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a');
         INSERT INTO audit (at, event, username, username_folded, source)
           VALUES (5, 'login_ok', 'alice', 'alice', 'http');",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let mut hash = [0; 32];
    hash[7] = 7;
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!((session.session_id, session.amr), (3, 1));
    let audit_rows: i64 = old
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audit_rows, 1);
    assert!(totp::find(&old, 1).unwrap().is_none());
    totp::activate(&old, 1, &[1; 20], 5, 9).unwrap();
    assert!(totp::use_step(&old, 1, 6).unwrap());
    sessions::add_factors(&old, 3, 2).unwrap();
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!(session.amr, 3);
}
