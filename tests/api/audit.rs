//! The audit trail: what the server and the commands record, what they
//! never record, `latchkey audit` and its JSON lines, and the retention purge.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use latchkey::auth::audit::Entry;

const UA: &str = "audit-test/1.0";

/// `event user ip detail` of each row: what an operator reads.
fn summary(rows: &[Entry]) -> Vec<String> {
    rows.iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e.event,
                e.username.as_deref().unwrap_or("-"),
                e.ip.as_deref().unwrap_or("-"),
                e.detail
            )
            .trim_end()
            .to_owned()
        })
        .collect()
}

async fn login_as_browser(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header("User-Agent", UA)
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn token_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logins_logouts_and_revocations_are_recorded_with_address_and_user_agent() {
    let app = spawn_app().await;
    app.add_user("Alice", "right-password");

    let first = token_of(login_as_browser(&app, "alice", "right-password").await).await;
    let response = login_as_browser(&app, "ALICE", "wrong-password").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // A name no account has: recorded without the name, which may be a
    // password typed into the wrong field.
    let response = login_as_browser(&app, "hunter2-typed-as-name", "x").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let second = token_of(login_as_browser(&app, "alice", "right-password").await).await;
    let third = token_of(login_as_browser(&app, "alice", "right-password").await).await;

    let response = app
        .client
        .post(app.url("/logout"))
        .header("User-Agent", UA)
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Logging out a token that is already gone records nothing more.
    assert_eq!(
        app.logout_bearer(&first).await.status(),
        StatusCode::NO_CONTENT
    );
    let third_id = app.session_id(&third);
    let response = app
        .client
        .delete(app.url(&format!("/sessions/{third_id}")))
        .header("User-Agent", UA)
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .client
        .post(app.url("/logout?all=true"))
        .header("User-Agent", UA)
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let rows = app.audit_trail();
    assert_eq!(
        summary(&rows),
        [
            "login_ok Alice 127.0.0.1".to_owned(),
            "login_failed Alice 127.0.0.1 wrong password".to_owned(),
            "login_failed - 127.0.0.1 unknown user".to_owned(),
            "login_ok Alice 127.0.0.1".to_owned(),
            "login_ok Alice 127.0.0.1".to_owned(),
            "logout Alice 127.0.0.1".to_owned(),
            format!("session_revoked Alice 127.0.0.1 session {third_id}"),
            "logout_all Alice 127.0.0.1 1 session(s) ended".to_owned(),
        ]
    );
    assert!(rows.iter().all(|e| e.source == "http"));
    assert!(rows.iter().all(|e| e.user_agent.as_deref() == Some(UA)));
    assert!(rows
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    let stored = app.audit_text();
    for secret in [
        "right-password",
        "wrong-password",
        "hunter2",
        &first,
        &second,
        &third,
    ] {
        assert!(!stored.contains(secret), "the audit trail holds {secret:?}");
    }
}

#[tokio::test]
async fn a_disabled_account_and_a_ban_are_recorded_but_the_refusals_of_a_ban_are_not() {
    let app = spawn_app_with(|c| c.login.max_failures = 2).await;
    let bob = app.add_user("bob", "right-password");
    app.set_disabled(bob, true);
    let response = app.login("bob", "right-password").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let response = app.login("bob", "wrong").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // Banned now, by name and by address: these cost no hash and add no row.
    for _ in 0..5 {
        let response = app.login("bob", "right-password").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let ban = app.config.login.ban_duration.as_secs();
    assert_eq!(
        summary(&app.audit_trail()),
        [
            "login_failed bob 127.0.0.1 account disabled".to_owned(),
            "login_failed bob 127.0.0.1 wrong password; account disabled".to_owned(),
            format!("ban_started bob 127.0.0.1 username refused for {ban}s"),
            format!("ban_started - 127.0.0.1 address 127.0.0.1 refused for {ban}s"),
        ]
    );
}

#[tokio::test]
async fn a_ban_on_a_name_no_account_has_does_not_record_the_name() {
    let app = spawn_app_with(|c| c.login.max_failures = 1).await;
    let response = app.login("typed-password-in-name", "x").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let rows = app.audit_trail();
    assert_eq!(rows.len(), 3, "{:?}", summary(&rows));
    assert!(rows[1].detail.contains("a username no account has"));
    assert!(!app.audit_text().contains("typed-password-in-name"));
}

/// `latchkey audit --json` on the sandbox's database, one object per line.
fn audit_json(sandbox: &Sandbox, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let run = sandbox.latchkey(&all, None);
    run.assert_ok();
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn events(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| {
            let user = v["user"].as_str().unwrap_or("-");
            format!("{} {user}", v["event"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn every_command_line_change_is_recorded_and_listed_oldest_first() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "first-password");
    let stdin = Some("second-password\n");
    for (args, input) in [
        (&["user", "passwd", "alice", "--password-stdin"][..], stdin),
        (&["user", "disable", "alice"], None),
        (&["user", "enable", "alice"], None),
        (&["group", "add", "ops"], None),
        (&["group", "add-member", "ops", "alice"], None),
        (&["group", "remove-member", "ops", "alice"], None),
        (&["group", "remove", "ops"], None),
        (&["client", "add", "proxy"], None),
        (&["client", "remove", "proxy", "--force"], None),
        (&["session", "revoke", "--user", "alice"], None),
        (&["session", "purge"], None),
        (&["user", "delete", "alice"], None),
    ] {
        sandbox.latchkey(args, input).assert_ok();
    }
    // A refused command changes nothing and records nothing.
    sandbox
        .latchkey(&["user", "delete", "alice"], None)
        .assert_error();

    let lines = audit_json(&sandbox, &[]);
    assert_eq!(
        events(&lines),
        [
            "user_added alice",
            "password_changed alice",
            "user_disabled alice",
            "user_enabled alice",
            "group_added -",
            "member_added alice",
            "member_removed alice",
            "group_removed -",
            "client_added -",
            "client_removed -",
            "sessions_revoked alice",
            "sessions_purged -",
            "user_deleted alice",
        ]
    );
    for line in &lines {
        assert_eq!(line["source"], "cli");
        assert_eq!(line["ip"], Value::Null);
        let keys: Vec<&str> = keys_of(line).into_iter().collect();
        assert_eq!(
            keys,
            [
                "at",
                "detail",
                "event",
                "id",
                "ip",
                "source",
                "time",
                "user",
                "user_agent"
            ]
        );
        let time = line["time"].as_str().unwrap();
        assert!(
            time.len() == 20 && time.ends_with('Z') && &time[10..11] == "T",
            "{time}"
        );
    }
    assert_eq!(lines[4]["detail"], "group \"ops\"");
    assert_eq!(
        lines[9]["detail"],
        "client \"proxy\", the last one: /introspect answers anyone"
    );
    let text = sandbox.latchkey(&["audit"], None).stdout;
    for secret in ["first-password", "second-password"] {
        assert!(!text.contains(secret));
    }
    // The account is gone; its events are not.
    let about_alice = audit_json(&sandbox, &["--user", "ALICE"]);
    assert_eq!(about_alice.len(), 8);
    assert!(about_alice.iter().all(|v| v["user"] == "alice"));
    assert_eq!(audit_json(&sandbox, &["--since", "1h"]).len(), lines.len());
    assert!(audit_json(&sandbox, &["--user", "nobody"]).is_empty());
}

#[test]
fn the_text_listing_has_a_header_and_one_line_per_event() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw-123456");
    let run = sandbox.latchkey(&["audit"], None);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with("TIME") && lines[0].ends_with("DETAIL"));
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&fields[2..], ["user_added", "cli", "alice", "-"]);
}

#[test]
fn bad_audit_arguments_get_one_line_naming_them() {
    let sandbox = Sandbox::new();
    let message = sandbox
        .latchkey(&["audit", "--since", "yesterday"], None)
        .assert_error()
        .to_owned();
    assert!(message.contains("--since"), "{message}");
    let message = sandbox
        .latchkey(&["audit", "--user", " leading-space"], None)
        .assert_error()
        .to_owned();
    assert!(message.contains("--user"), "{message}");
}

#[test]
fn the_server_purges_events_older_than_the_retention_and_keeps_the_rest() {
    use latchkey::store::audit::{self, NewEntry};
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw-123456");
    let now = now();
    {
        let conn = sandbox.store_connection();
        for (age, event) in [
            (3 * 3600, "old_one"),
            (2 * 3600, "old_two"),
            (1800, "recent"),
        ] {
            let entry = NewEntry {
                at: now - age,
                event,
                ip: None,
                user_agent: None,
                source: "cli",
                detail: "",
            };
            audit::insert(&conn, &entry, None).unwrap();
        }
    }
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("LATCHKEY_AUDIT__RETENTION", "1h");
    let server = Server::spawn(cmd);
    // The first purge runs as the server starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<String> = column(&sandbox.db(), "SELECT event FROM audit ORDER BY id");
        if left.len() == 2 || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(left, ["user_added", "recent"]);
    drop(server);
}
