use super::*;
use crate::store::db::DbExt;
use crate::store::{test_store, test_user};

fn fields(user_id: i64) -> sessions::NewSession<'static> {
    sessions::NewSession {
        user_id,
        created_at: 1,
        expires_at: 10,
        max_expires_at: 20,
        ip: "127.0.0.1",
        user_agent: "test",
        amr: 1,
    }
}

fn requester() -> Requester {
    Requester::new([192, 0, 2, 9].into(), "test")
}

/// `event username ip` of every audit row, oldest first.
fn audit_events(conn: &dyn Db) -> Vec<String> {
    let filter = crate::store::audit::Filter::default();
    crate::store::audit::page(conn, &filter, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| {
            let user = e.username.unwrap_or_default();
            format!("{} {user} {}", e.event, e.ip.unwrap_or_default())
        })
        .collect()
}

fn session_count(conn: &dyn Db) -> i64 {
    conn.one("SELECT count(*) FROM sessions", &[], |r| r.int(0))
        .unwrap()
}

#[test]
fn a_login_with_unchanged_credentials_stores_its_session_and_upgrade() {
    let (_dir, store) = test_store();
    let conn = store.connection().unwrap();
    let alice = test_user(&conn, "alice");
    let read = users::find_by_id(&conn, alice).unwrap().unwrap();
    let checked = Checked {
        credential_version: read.credential_version,
        upgraded_hash: Some("$argon2id$upgraded"),
        requester: &requester(),
        proof: Proof::PasswordOnly,
        replaces_session: None,
    };
    let created = create_session(&conn, &checked, fields(alice), Token::generate).unwrap();
    assert!(sessions::find_by_token_hash(&conn, &created.token.hash().0)
        .unwrap()
        .is_some());
    let user = users::find_by_id(&conn, alice).unwrap().unwrap();
    assert_eq!(user.password_hash, "$argon2id$upgraded");
    // The upgrade is no change: a second login that read before it still lands.
    assert_eq!(user.credential_version, read.credential_version);
    create_session(&conn, &checked, fields(alice), Token::generate).unwrap();
    assert_eq!(session_count(&conn), 2);
    // Each with its audit row, written in the same transaction.
    assert_eq!(
        audit_events(&conn),
        ["login_ok alice 192.0.2.9", "login_ok alice 192.0.2.9"]
    );
}

#[test]
fn a_credential_change_after_the_check_leaves_no_session_and_no_upgrade() {
    type Change = fn(&dyn crate::store::db::Db, i64) -> Result<bool, StoreError>;
    let changes: [(&str, Change); 4] = [
        ("passwd", |c, id| {
            users::set_password_hash(c, id, "$argon2id$new")
        }),
        ("disable", |c, id| users::set_disabled(c, id, true)),
        ("revoke all", users::bump_credential_version),
        ("delete", users::delete),
    ];
    for (name, change) in changes {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        // The login reads the user, then the change commits during its check.
        let read = users::find_by_id(&conn, alice).unwrap().unwrap();
        assert!(change(&conn, alice).unwrap(), "{name}");
        let checked = Checked {
            credential_version: read.credential_version,
            upgraded_hash: Some("$argon2id$old-upgraded"),
            requester: &requester(),
            proof: Proof::PasswordOnly,
            replaces_session: None,
        };
        let result = create_session(&conn, &checked, fields(alice), Token::generate);
        assert!(
            matches!(result, Err(AuthError::CredentialsChanged)),
            "{name}: {:?}",
            result.err()
        );
        assert_eq!(session_count(&conn), 0, "{name}");
        assert!(audit_events(&conn).is_empty(), "{name}");
        if let Some(user) = users::find_by_id(&conn, alice).unwrap() {
            assert_ne!(user.password_hash, "$argon2id$old-upgraded", "{name}");
        }
    }
}

#[test]
fn a_login_draws_another_token_when_the_store_reports_its_key_taken() {
    let (_dir, store) = test_store();
    let conn = store.connection().unwrap();
    let user_id = test_user(&conn, "alice");
    let session = sessions::NewSession {
        user_id,
        created_at: 1,
        expires_at: 10,
        max_expires_at: 20,
        ip: "127.0.0.1",
        user_agent: "test",
        amr: 1,
    };
    let taken = Token::generate().unwrap();
    let free = Token::generate().unwrap();
    let first = insert_session(&conn, || Ok(taken.clone()), session).unwrap();
    assert_eq!(first.session_id, 1);

    // The next draw repeats the stored token (so its key is taken):
    // the login draws again and stores the second token.
    let mut draws = vec![free.clone(), taken.clone()];
    let second = insert_session(&conn, || Ok(draws.pop().unwrap()), session).unwrap();
    assert!(second.token == free);
    assert_eq!(
        (second.session_id, second.expires_in(), second.max_age()),
        (2, 9, 19)
    );
    assert!(sessions::find_by_token_hash(&conn, &free.hash().0)
        .unwrap()
        .is_some());

    // A store that never has a free key ends in a conflict, not a loop.
    let stuck = insert_session(&conn, || Ok(taken.clone()), session);
    assert!(matches!(
        stuck,
        Err(AuthError::Store(crate::store::StoreError::Conflict))
    ));
}
