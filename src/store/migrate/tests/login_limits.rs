//! Version 9: every user, session and factor kept, and `login_limits`,
//! empty and working.

use super::*;

#[test]
fn a_file_from_before_shared_login_limits_keeps_everything_and_gains_the_table() {
    use crate::store::{limits, sessions, totp};
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.db");
    let mut old = file_at(&old_path, 8);
    old.execute_batch(
        "INSERT INTO users (id, username, username_folded, password_hash, created_at)
           VALUES (1, 'alice', 'alice', 'x', 1);
         INSERT INTO sessions
           (lookup_key, token_hash, id, user_id, created_at, expires_at, max_expires_at,
            ip, user_agent, amr)
           VALUES (7, x'0000000000000007000000000000000000000000000000000000000000000000',
                   3, 1, 10, 100, 200, '127.0.0.1', 'a', 3);
         INSERT INTO totp (user_id, secret, last_step, enrolled_at)
           VALUES (1, x'0101010101010101010101010101010101010101', 5, 9);",
    )
    .unwrap();
    migrate_and_compare(&mut old, &old_path, dir.path());

    let mut hash = [0; 32];
    hash[7] = 7;
    let session = sessions::find_by_token_hash(&old, &hash).unwrap().unwrap();
    assert_eq!((session.session_id, session.amr), (3, 3));
    assert_eq!(totp::find(&old, 1).unwrap().unwrap().last_step, 5);
    let limit = limits::Limit {
        failures: vec![1, 2],
        banned_until: 300,
        idle_at: 300,
        ..limits::Limit::default()
    };
    limits::put(&old, limits::Kind::Username, "alice", &limit).unwrap();
    assert_eq!(limits::count_banned(&old, 10).unwrap(), (1, 0));
}
