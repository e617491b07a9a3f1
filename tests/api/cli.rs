//! Tests: cli. The real `latchkey` binary, run as an administrator would,
//! each test in its own temporary directory with its own database.

use std::path::Path;
use std::process::Command;

use latchkey::auth::password::PasswordHashing;
use latchkey::cli::format_utc;
use reqwest::StatusCode;
use rusqlite::Connection;
use serde_json::Value;

use crate::helpers::{
    cheap_passwords, column, execute, http_client, now, scalar, sha256, through_shell, Sandbox,
    Server, ADMIN_PASSWORD_PREFIX,
};

const USER_HEADER: &str = "ID  USERNAME  EMAIL  DISPLAY NAME  STATUS  CREATED  TOTP  GROUPS";
const SESSION_HEADER: &str = "ID  USER  CREATED  EXPIRES  IP  USER AGENT";
const CLIENT_HEADER: &str = "ID  CREATED";
const GROUP_HEADER: &str = "NAME  MEMBERS  CREATED";
const MEMBER_HEADER: &str = "ID  USERNAME";

/// The whitespace-separated words of each line: table rows without padding.
fn words(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|line| line.split_whitespace().collect())
        .collect()
}

fn hashing() -> PasswordHashing {
    PasswordHashing::new(&cheap_passwords()).unwrap()
}

/// Waits for the first-start message and returns the admin password in it.
fn wait_for_admin_password(server: &mut Server) -> String {
    let password = server.admin_password();
    assert_eq!(password.len(), 43, "{password:?}");
    assert!(
        password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{password:?}"
    );
    password
}

// ---------------------------------------------------------------------------
// user add

#[test]
fn user_add_reads_the_password_from_stdin_without_its_newline() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(
        &["user", "add", "alice", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    run.assert_ok();
    assert_eq!(run.stdout, "Created user \"alice\" (id 1).\n");
    assert_eq!(run.stderr, "");

    let hash = sandbox.stored_hash("alice");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(hashing().verify(&hash, "correct horse battery"));
    assert!(!hashing().verify(&hash, "correct horse battery\n"));
}

#[test]
fn user_add_strips_a_windows_line_ending_and_accepts_a_password_without_newline() {
    let sandbox = Sandbox::new();
    sandbox
        .latchkey(
            &["user", "add", "crlf", "--password-stdin"],
            Some("pw-one\r\n"),
        )
        .assert_ok();
    sandbox
        .latchkey(&["user", "add", "eof", "--password-stdin"], Some("pw-two"))
        .assert_ok();
    assert!(hashing().verify(&sandbox.stored_hash("crlf"), "pw-one"));
    assert!(hashing().verify(&sandbox.stored_hash("eof"), "pw-two"));
}

#[test]
fn user_add_stores_email_and_display_name_and_user_list_shows_them() {
    let sandbox = Sandbox::new();
    sandbox
        .latchkey(
            &[
                "user",
                "add",
                "alice",
                "--email",
                "alice@example.com",
                "--display-name",
                "Alice Liddell",
                "--password-stdin",
            ],
            Some("pw\n"),
        )
        .assert_ok();
    sandbox.add_user("Bob", "pw");
    sandbox
        .latchkey(&["user", "disable", "bob"], None)
        .assert_ok();

    let (email, display_name): (Option<String>, Option<String>) = scalar(
        &sandbox.db(),
        "SELECT email, display_name FROM users WHERE username = 'alice'",
        &[],
    );
    assert_eq!(email.as_deref(), Some("alice@example.com"));
    assert_eq!(display_name.as_deref(), Some("Alice Liddell"));

    let created = |name: &str| -> String {
        let t: i64 = scalar(
            &sandbox.db(),
            "SELECT created_at FROM users WHERE username = ?1",
            latchkey::db_params![name],
        );
        format_utc(t)
    };
    let run = sandbox.latchkey(&["user", "list"], None);
    run.assert_ok();
    let expected = [
        "ID  USERNAME  EMAIL              DISPLAY NAME   STATUS    CREATED               TOTP  GROUPS"
            .to_owned(),
        format!(
            "1   alice     alice@example.com  Alice Liddell  active    {}  no",
            created("alice")
        ),
        format!(
            "2   Bob                                         disabled  {}  no",
            created("Bob")
        ),
    ]
    .join("\n")
        + "\n";
    assert_eq!(run.stdout, expected);
    assert_eq!(run.stderr, "");
}

#[test]
fn user_add_refuses_a_name_that_differs_only_in_case() {
    let sandbox = Sandbox::new();
    sandbox.add_user("Alice", "first");
    let run = sandbox.latchkey(
        &["user", "add", "alice", "--password-stdin"],
        Some("second\n"),
    );
    assert_eq!(run.assert_error(), "error: user \"alice\" already exists");
    assert_eq!(sandbox.user_count(), 1);
    assert!(hashing().verify(&sandbox.stored_hash("Alice"), "first"));
}

#[test]
fn user_add_refuses_invalid_usernames_and_profile_fields() {
    let sandbox = Sandbox::new();
    let long = "a".repeat(65);
    let cases: [(&[&str], &str); 5] = [
        (&["user", "add", ""], "invalid username \"\""),
        (&["user", "add", &long], "invalid username"),
        (&["user", "add", " padded"], "invalid username"),
        (&["user", "add", "carol", "--email", ""], "--email"),
        (
            &["user", "add", "carol", "--display-name", "two\nlines"],
            "--display-name",
        ),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        args.push("--password-stdin");
        let run = sandbox.latchkey(&args, Some("pw\n"));
        let message = run.assert_error();
        assert!(message.contains(expected), "{args:?}: {message}");
    }
    assert_eq!(sandbox.user_count(), 0);

    // 64 characters is the longest name allowed.
    let longest = "b".repeat(64);
    sandbox.add_user(&longest, "pw");
    assert_eq!(sandbox.user_count(), 1);
}

#[test]
fn user_add_refuses_an_empty_password() {
    let sandbox = Sandbox::new();
    for stdin in ["\n", ""] {
        let run = sandbox.latchkey(&["user", "add", "alice", "--password-stdin"], Some(stdin));
        assert_eq!(run.assert_error(), "error: the password is empty");
    }
    assert_eq!(sandbox.user_count(), 0);
}

#[test]
fn user_add_refuses_a_password_over_1024_bytes() {
    let sandbox = Sandbox::new();
    for length in [1025, 100_000] {
        let password = format!("{}\n", "p".repeat(length));
        let run = sandbox.latchkey(
            &["user", "add", "alice", "--password-stdin"],
            Some(&password),
        );
        assert_eq!(
            run.assert_error(),
            "error: the password is longer than 1024 bytes",
            "{length} bytes"
        );
    }
    assert_eq!(sandbox.user_count(), 0);

    let longest = "p".repeat(1024);
    sandbox.add_user("alice", &longest);
    assert!(hashing().verify(&sandbox.stored_hash("alice"), &longest));
}

#[test]
fn user_add_without_password_stdin_and_without_a_terminal_says_to_use_it() {
    let sandbox = Sandbox::new();
    let cmd = sandbox.command(&["user", "add", "alice"]);
    // Run without a controlling terminal even when the tests have one, so
    // the prompt cannot open /dev/tty.
    let cmd = if std::fs::File::open("/dev/tty").is_ok() {
        let mut detached = Command::new("setsid");
        detached
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(sandbox.dir());
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => detached.env(name, value),
                None => detached.env_remove(name),
            };
        }
        detached
    } else {
        cmd
    };
    let run = execute(cmd, None);
    let message = run.assert_error();
    assert!(message.contains("--password-stdin"), "{message}");
    assert_eq!(sandbox.user_count(), 0);
}

// ---------------------------------------------------------------------------
// user passwd, list, disable, enable, delete

#[test]
fn user_passwd_changes_the_password_and_ends_the_users_sessions() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "old password");
    let bob = sandbox.add_user("bob", "bobs password");
    let t = now();
    sandbox.insert_session(1, alice, t, t + 3600);
    sandbox.insert_session(2, alice, t, t + 3600);
    sandbox.insert_session(3, bob, t, t + 3600);

    let run = sandbox.latchkey(
        &["user", "passwd", "ALICE", "--password-stdin"],
        Some("new password\n"),
    );
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "Changed the password of \"alice\"; ended 2 session(s).\n"
    );
    assert_eq!(run.stderr, "");

    let hash = sandbox.stored_hash("alice");
    assert!(hashing().verify(&hash, "new password"));
    assert!(!hashing().verify(&hash, "old password"));
    assert!(hashing().verify(&sandbox.stored_hash("bob"), "bobs password"));
    assert_eq!(sandbox.session_ids(), vec![3]);
}

#[test]
fn user_passwd_refuses_an_empty_password_and_keeps_the_old_one() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "old password");
    let run = sandbox.latchkey(&["user", "passwd", "alice", "--password-stdin"], Some("\n"));
    assert_eq!(run.assert_error(), "error: the password is empty");
    assert!(hashing().verify(&sandbox.stored_hash("alice"), "old password"));
}

#[test]
fn user_list_on_a_fresh_database_prints_only_the_header() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["user", "list"], None);
    run.assert_ok();
    assert_eq!(run.stdout, format!("{USER_HEADER}\n"));
    assert_eq!(run.stderr, "");
}

#[test]
fn a_listing_whose_reader_has_gone_ends_quietly_with_status_0() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    for args in [
        &["user", "list"][..],
        &["session", "list"],
        &["client", "list"],
        &["group", "list"],
        &["audit"],
        &["audit", "--json"],
    ] {
        // `| true` has exited before latchkey writes: its first line meets
        // a pipe with no reader, as `latchkey user list | head -0` would.
        let shell = through_shell(
            &sandbox.command(args),
            "( sleep 0.3; \"$0\" \"$@\"; echo \"latchkey exited $?\" >&2 ) | true; exit 0",
        );
        let run = execute(shell, None);
        assert_eq!(run.stderr, "latchkey exited 0\n", "{args:?}");
    }
}

#[test]
fn user_disable_and_enable_flip_the_status_and_disable_ends_sessions() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("bob", "pw");
    let t = now();
    sandbox.insert_session(1, alice, t, t + 3600);
    sandbox.insert_session(2, bob, t, t + 3600);
    let status = || -> Vec<String> {
        let run = sandbox.latchkey(&["user", "list"], None);
        run.assert_ok();
        words(&run.stdout)
            .iter()
            .skip(1)
            .map(|row| format!("{} {}", row[1], row[2]))
            .collect()
    };
    assert_eq!(status(), ["alice active", "bob active"]);

    let run = sandbox.latchkey(&["user", "disable", "Alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Disabled \"alice\"; ended 1 session(s).\n");
    assert_eq!(status(), ["alice disabled", "bob active"]);
    assert_eq!(sandbox.session_ids(), vec![2]);

    let run = sandbox.latchkey(&["user", "enable", "alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Enabled \"alice\".\n");
    assert_eq!(status(), ["alice active", "bob active"]);
}

#[test]
fn user_delete_removes_the_user_and_their_sessions_only() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("bob", "pw");
    let t = now();
    sandbox.insert_session(1, alice, t, t + 3600);
    sandbox.insert_session(2, alice, t - 7200, t - 3600);
    sandbox.insert_session(3, bob, t, t + 3600);

    let run = sandbox.latchkey(&["user", "delete", "alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Deleted \"alice\" and their sessions.\n");
    assert_eq!(run.stderr, "");

    let users: Vec<String> = column(&sandbox.db(), "SELECT username FROM users");
    assert_eq!(users, ["bob"]);
    assert_eq!(sandbox.session_ids(), vec![3]);
}

#[test]
fn user_commands_on_an_unknown_user_fail() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    let commands: [&[&str]; 7] = [
        &["user", "passwd", "ghost", "--password-stdin"],
        &["user", "disable", "ghost"],
        &["user", "enable", "ghost"],
        &["user", "delete", "ghost"],
        &["session", "list", "--user", "ghost"],
        &["session", "revoke", "--user", "ghost"],
        &["user", "delete", "alic"],
    ];
    for args in commands {
        let run = sandbox.latchkey(args, Some("pw\n"));
        let message = run.assert_error();
        assert!(
            message.starts_with("error: no user \""),
            "{args:?}: {message}"
        );
    }
    assert_eq!(sandbox.user_count(), 1);
}

// ---------------------------------------------------------------------------
// session list, revoke, purge

#[test]
fn session_list_shows_valid_sessions_newest_first_and_filters_by_user() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("bob", "pw");
    let t = now();
    sandbox.insert_session_full(
        11,
        alice,
        t - 100,
        t + 3600,
        t + 86_400,
        "10.0.0.1",
        "curl/8.5",
    );
    sandbox.insert_session_full(12, bob, t - 50, t + 1800, t + 7200, "10.0.0.2", "Firefox");
    // Expired: idle timeout passed; and absolute lifetime passed.
    sandbox.insert_session_full(13, alice, t - 9000, t - 10, t + 600, "10.0.0.3", "old");
    sandbox.insert_session_full(14, bob, t - 9000, t - 1, t - 1, "10.0.0.4", "older");

    let run = sandbox.latchkey(&["session", "list"], None);
    run.assert_ok();
    assert_eq!(run.stderr, "");
    let row = |id: &str, user: &str, created: i64, until: i64, ip: &str, agent: &str| {
        format!(
            "{id} {user} {} {} {ip} {agent}",
            format_utc(created),
            format_utc(until)
        )
    };
    let rows: Vec<String> = words(&run.stdout).iter().map(|w| w.join(" ")).collect();
    assert_eq!(
        rows,
        [
            SESSION_HEADER
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            row("12", "bob", t - 50, t + 1800, "10.0.0.2", "Firefox"),
            row("11", "alice", t - 100, t + 3600, "10.0.0.1", "curl/8.5"),
        ]
    );

    let run = sandbox.latchkey(&["session", "list", "--user", "ALICE"], None);
    run.assert_ok();
    let rows: Vec<String> = words(&run.stdout).iter().map(|w| w.join(" ")).collect();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(
        rows[1],
        row("11", "alice", t - 100, t + 3600, "10.0.0.1", "curl/8.5")
    );

    // Listing deletes nothing.
    assert_eq!(sandbox.session_ids(), vec![11, 12, 13, 14]);
}

#[test]
fn session_list_shows_the_absolute_expiry_when_it_comes_first() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let t = now();
    sandbox.insert_session_full(1, alice, t, t + 3600, t + 60, "10.0.0.1", "ua");
    let run = sandbox.latchkey(&["session", "list"], None);
    run.assert_ok();
    let rows = words(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    let shown = format!("{} {}", rows[1][4], rows[1][5]);
    assert_eq!(shown, format_utc(t + 60));
}

#[test]
fn session_revoke_ends_every_session_of_one_user() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("bob", "pw");
    let t = now();
    sandbox.insert_session(1, alice, t, t + 3600);
    sandbox.insert_session(2, alice, t, t + 3600);
    sandbox.insert_session(3, bob, t, t + 3600);

    let run = sandbox.latchkey(&["session", "revoke", "--user", "Alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Ended 2 session(s) of \"alice\".\n");
    assert_eq!(run.stderr, "");
    assert_eq!(sandbox.session_ids(), vec![3]);

    let run = sandbox.latchkey(&["session", "list", "--user", "alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, format!("{SESSION_HEADER}\n"));

    let run = sandbox.latchkey(&["session", "revoke", "--user", "alice"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Ended 0 session(s) of \"alice\".\n");
}

#[test]
fn session_purge_deletes_expired_sessions_only() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("bob", "pw");
    let t = now();
    sandbox.insert_session(1, alice, t - 7200, t - 3600);
    sandbox.insert_session(2, alice, t - 600, t + 3600);
    sandbox.insert_session(3, bob, t - 7200, t - 1);
    sandbox.insert_session(4, bob, t - 10, t + 60);

    let run = sandbox.latchkey(&["session", "purge"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Deleted 2 expired session(s).\n");
    assert_eq!(run.stderr, "");
    assert_eq!(sandbox.session_ids(), vec![2, 4]);

    let run = sandbox.latchkey(&["session", "purge"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Deleted 0 expired session(s).\n");
    assert_eq!(sandbox.session_ids(), vec![2, 4]);
}

// ---------------------------------------------------------------------------
// client add, list, remove

#[test]
fn client_add_prints_the_secret_alone_on_stdout_and_stores_only_its_hash() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["client", "add", "nginx"], None);
    run.assert_ok();
    let secret = run
        .stdout
        .strip_suffix('\n')
        .expect("one line on stdout")
        .to_owned();
    assert_eq!(secret.len(), 43, "{:?}", run.stdout);
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url: {secret:?}"
    );
    assert_eq!(
        run.stderr,
        "Created client \"nginx\". Its secret follows; it is shown only this once:\n"
    );

    let stored: Vec<u8> = scalar(
        &sandbox.db(),
        "SELECT secret_hash FROM clients WHERE id = 'nginx'",
        &[],
    );
    assert_eq!(stored, sha256(&secret));
    let bytes = sandbox.database_bytes();
    assert!(!bytes.is_empty());
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is in the database file"
    );

    // Each client gets its own secret.
    let other = sandbox.latchkey(&["client", "add", "traefik"], None);
    other.assert_ok();
    assert_ne!(other.stdout, run.stdout);
}

#[test]
fn client_add_refuses_a_duplicate_and_an_invalid_id() {
    let sandbox = Sandbox::new();
    sandbox
        .latchkey(&["client", "add", "nginx"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["client", "add", "nginx"], None);
    assert_eq!(run.assert_error(), "error: client \"nginx\" already exists");

    let long = "c".repeat(65);
    for bad in ["a:b", "", "a b", &long] {
        let run = sandbox.latchkey(&["client", "add", bad], None);
        let message = run.assert_error();
        assert!(message.contains("invalid client id"), "{bad:?}: {message}");
    }
    let count: i64 = scalar(&sandbox.db(), "SELECT count(*) FROM clients", &[]);
    assert_eq!(count, 1);
}

#[test]
fn client_list_and_remove() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["client", "list"], None);
    run.assert_ok();
    assert_eq!(run.stdout, format!("{CLIENT_HEADER}\n"));

    for id in ["nginx", "traefik.internal"] {
        sandbox.latchkey(&["client", "add", id], None).assert_ok();
    }
    let created = |id: &str| -> String {
        let t: i64 = scalar(
            &sandbox.db(),
            "SELECT created_at FROM clients WHERE id = ?1",
            latchkey::db_params![id],
        );
        format_utc(t)
    };
    let run = sandbox.latchkey(&["client", "list"], None);
    run.assert_ok();
    assert_eq!(run.stderr, "");
    let ids: Vec<String> = words(&run.stdout).iter().map(|w| w.join(" ")).collect();
    assert_eq!(
        ids,
        [
            "ID CREATED".to_owned(),
            format!("nginx {}", created("nginx")),
            format!("traefik.internal {}", created("traefik.internal")),
        ]
    );
    // The secret is never listed.
    assert!(!run.stdout.contains("secret"), "{}", run.stdout);

    let run = sandbox.latchkey(&["client", "remove", "nginx"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Removed client \"nginx\".\n");
    let run = sandbox.latchkey(&["client", "list"], None);
    run.assert_ok();
    assert_eq!(words(&run.stdout).len(), 2, "{}", run.stdout);
    assert!(!run.stdout.contains("nginx"), "{}", run.stdout);

    let run = sandbox.latchkey(&["client", "remove", "nginx"], None);
    assert_eq!(run.assert_error(), "error: no client \"nginx\"");
    let run = sandbox.latchkey(&["client", "remove", "ghost"], None);
    assert_eq!(run.assert_error(), "error: no client \"ghost\"");
}

#[test]
fn client_remove_refuses_the_last_client_unless_forced_since_introspect_would_open() {
    let sandbox = Sandbox::new();
    for id in ["nginx", "caddy"] {
        sandbox.latchkey(&["client", "add", id], None).assert_ok();
    }
    // Not the last one: removed, with --force or without, and no warning.
    let run = sandbox.latchkey(&["client", "remove", "caddy", "--force"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Removed client \"caddy\".\n");
    assert_eq!(run.stderr, "");

    let run = sandbox.latchkey(&["client", "remove", "nginx"], None);
    let message = run.assert_error();
    for needed in ["\"nginx\"", "last", "/introspect", "anyone", "--force"] {
        assert!(message.contains(needed), "{needed:?} in {message:?}");
    }
    let listed: i64 = scalar(&sandbox.db(), "SELECT count(*) FROM clients", &[]);
    assert_eq!(listed, 1, "the refused removal kept the client");
    // An unknown client is unknown, forced or not.
    let run = sandbox.latchkey(&["client", "remove", "ghost", "--force"], None);
    assert_eq!(run.assert_error(), "error: no client \"ghost\"");

    let run = sandbox.latchkey(&["client", "remove", "nginx", "--force"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Removed client \"nginx\".\n");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr.starts_with("warning: ") && run.stderr.contains("/introspect is now open"),
        "{run:#?}"
    );
    let listed: i64 = scalar(&sandbox.db(), "SELECT count(*) FROM clients", &[]);
    assert_eq!(listed, 0);
}

#[tokio::test]
async fn a_refused_removal_of_the_last_client_keeps_introspect_closed() {
    let sandbox = Sandbox::new();
    sandbox
        .latchkey(&["client", "add", "nginx"], None)
        .assert_ok();
    let server = Server::start(&sandbox, &["serve"]);
    let introspect = || async {
        http_client()
            .post(server.url("/introspect"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(introspect().await, StatusCode::UNAUTHORIZED);
    sandbox
        .latchkey(&["client", "remove", "nginx"], None)
        .assert_error();
    assert_eq!(introspect().await, StatusCode::UNAUTHORIZED);
    sandbox
        .latchkey(&["client", "remove", "nginx", "--force"], None)
        .assert_ok();
    assert_eq!(introspect().await, StatusCode::OK);
    server.stop();
}

// ---------------------------------------------------------------------------
// group add, remove, list, members, add-member, remove-member

/// The `created_at` of group `name` as `group list` prints it.
fn group_created(sandbox: &Sandbox, name: &str) -> String {
    let t: i64 = scalar(
        &sandbox.db(),
        "SELECT created_at FROM groups WHERE name = ?1",
        latchkey::db_params![name],
    );
    format_utc(t)
}

/// `(username, groups cell)` of each `user list` row: the GROUPS column
/// is the last, empty for a user in no group.
fn groups_in_user_list(sandbox: &Sandbox) -> Vec<(String, String)> {
    let run = sandbox.latchkey(&["user", "list"], None);
    run.assert_ok();
    let mut lines = run.stdout.lines();
    let header = lines.next().unwrap();
    let at = header.find("GROUPS").unwrap();
    lines
        .map(|line| {
            let username = line.split_whitespace().nth(1).unwrap().to_owned();
            (username, line.get(at..).unwrap_or("").to_owned())
        })
        .collect()
}

fn membership_count(sandbox: &Sandbox) -> i64 {
    scalar(&sandbox.db(), "SELECT count(*) FROM memberships", &[])
}

#[test]
fn group_add_list_and_remove_sorted_ignoring_case_with_member_counts() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    let run = sandbox.latchkey(&["group", "list"], None);
    run.assert_ok();
    assert_eq!(run.stdout, format!("{GROUP_HEADER}\n"));

    for name in ["dev", "Admins", "beta.testers"] {
        let run = sandbox.latchkey(&["group", "add", name], None);
        run.assert_ok();
        assert_eq!(run.stdout, format!("Created group {name:?}.\n"));
        assert_eq!(run.stderr, "");
    }
    sandbox
        .latchkey(&["group", "add-member", "admins", "alice"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["group", "list"], None);
    run.assert_ok();
    let expected = [
        "NAME          MEMBERS  CREATED".to_owned(),
        format!(
            "Admins        1        {}",
            group_created(&sandbox, "Admins")
        ),
        format!(
            "beta.testers  0        {}",
            group_created(&sandbox, "beta.testers")
        ),
        format!("dev           0        {}", group_created(&sandbox, "dev")),
    ]
    .join("\n")
        + "\n";
    assert_eq!(run.stdout, expected);

    let run = sandbox.latchkey(&["group", "remove", "ADMINS"], None);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "Removed group \"Admins\"; it had 1 member(s).\n"
    );
    let run = sandbox.latchkey(&["group", "list"], None);
    let names: Vec<&str> = words(&run.stdout).iter().skip(1).map(|w| w[0]).collect();
    assert_eq!(names, ["beta.testers", "dev"]);
    // The user stays.
    assert_eq!(sandbox.user_count(), 1);
}

#[test]
fn group_add_refuses_a_name_taken_in_any_case_and_names_outside_the_rules() {
    let sandbox = Sandbox::new();
    sandbox
        .latchkey(&["group", "add", "Admins"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["group", "add", "admins"], None);
    assert_eq!(run.assert_error(), "error: group \"admins\" already exists");

    let long = "g".repeat(65);
    let rule = "a group name has 1 to 64 characters, each A-Z, a-z, 0-9, '.', '_' or '-'";
    for bad in [
        "",
        "a,b",
        "a b",
        " admins",
        "zoë",
        "ops\nteam",
        "a;b",
        &long,
    ] {
        let run = sandbox.latchkey(&["group", "add", bad], None);
        assert_eq!(
            run.assert_error(),
            format!("error: invalid group name {bad:?}: {rule}")
        );
    }
    let names: Vec<String> = column(&sandbox.db(), "SELECT name FROM groups");
    assert_eq!(names, ["Admins"]);
    sandbox
        .latchkey(&["group", "add", &"g".repeat(64)], None)
        .assert_ok();
}

#[test]
fn add_member_and_remove_member_change_group_members_and_user_list() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    let bob = sandbox.add_user("Bob", "pw");
    sandbox.add_user("carol", "pw");
    for name in ["ops", "Admins", "beta"] {
        sandbox.latchkey(&["group", "add", name], None).assert_ok();
    }
    let run = sandbox.latchkey(&["group", "add-member", "ADMINS", "bob"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Added \"Bob\" to group \"Admins\".\n");
    assert_eq!(run.stderr, "");
    for group in ["ops", "admins", "beta"] {
        sandbox
            .latchkey(&["group", "add-member", group, "alice"], None)
            .assert_ok();
    }

    let run = sandbox.latchkey(&["group", "members", "admins"], None);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!("ID  USERNAME\n{alice:<2}  alice\n{bob:<2}  Bob\n")
    );
    let run = sandbox.latchkey(&["group", "members", "beta"], None);
    assert_eq!(
        words(&run.stdout),
        [vec!["ID", "USERNAME"], vec!["1", "alice"]]
    );
    // Groups in user list: sorted ignoring case, joined as in Remote-Groups.
    assert_eq!(
        groups_in_user_list(&sandbox),
        [
            ("alice".to_owned(), "Admins,beta,ops".to_owned()),
            ("Bob".to_owned(), "Admins".to_owned()),
            ("carol".to_owned(), String::new()),
        ]
    );

    let run = sandbox.latchkey(&["group", "remove-member", "admins", "ALICE"], None);
    run.assert_ok();
    assert_eq!(run.stdout, "Removed \"alice\" from group \"Admins\".\n");
    let run = sandbox.latchkey(&["group", "members", "Admins"], None);
    assert_eq!(run.stdout, format!("{MEMBER_HEADER}\n{bob}   Bob\n"));
    assert_eq!(groups_in_user_list(&sandbox)[0].1, "beta,ops");
    sandbox
        .latchkey(&["group", "remove-member", "admins", "bob"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["group", "members", "admins"], None);
    assert_eq!(run.stdout, format!("{MEMBER_HEADER}\n"));
}

#[test]
fn group_commands_name_what_is_wrong_on_one_line_and_change_nothing() {
    let sandbox = Sandbox::new();
    sandbox.add_user("bob", "pw");
    sandbox.add_user("carol", "pw");
    sandbox
        .latchkey(&["group", "add", "admins"], None)
        .assert_ok();
    sandbox
        .latchkey(&["group", "add-member", "admins", "bob"], None)
        .assert_ok();
    let cases: [(&[&str], &str); 10] = [
        (
            &["group", "add-member", "Admins", "BOB"],
            "user \"bob\" is already in group \"admins\"",
        ),
        (
            &["group", "remove-member", "admins", "carol"],
            "user \"carol\" is not in group \"admins\"",
        ),
        (
            &["group", "add-member", "ghosts", "bob"],
            "no group \"ghosts\"",
        ),
        (
            &["group", "add-member", "admins", "ghost"],
            "no user \"ghost\"",
        ),
        (
            &["group", "remove-member", "ghosts", "bob"],
            "no group \"ghosts\"",
        ),
        (
            &["group", "remove-member", "admins", "ghost"],
            "no user \"ghost\"",
        ),
        (&["group", "members", "ghosts"], "no group \"ghosts\""),
        (&["group", "remove", "ghosts"], "no group \"ghosts\""),
        // A name no group can have is simply not found.
        (&["group", "members", "a,b"], "no group \"a,b\""),
        (&["group", "add-member", "admins", ""], "no user \"\""),
    ];
    for (args, message) in cases {
        let run = sandbox.latchkey(args, None);
        assert_eq!(run.assert_error(), format!("error: {message}"), "{args:?}");
    }
    assert_eq!(membership_count(&sandbox), 1);
    let names: Vec<String> = column(&sandbox.db(), "SELECT name FROM groups");
    assert_eq!(names, ["admins"]);
}

#[test]
fn deleting_a_user_or_a_group_removes_their_memberships() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    sandbox.add_user("bob", "pw");
    for group in ["admins", "dev"] {
        sandbox.latchkey(&["group", "add", group], None).assert_ok();
        for user in ["alice", "bob"] {
            sandbox
                .latchkey(&["group", "add-member", group, user], None)
                .assert_ok();
        }
    }
    assert_eq!(membership_count(&sandbox), 4);

    sandbox
        .latchkey(&["user", "delete", "alice"], None)
        .assert_ok();
    assert_eq!(membership_count(&sandbox), 2);
    let run = sandbox.latchkey(&["group", "members", "dev"], None);
    assert_eq!(
        words(&run.stdout),
        [vec!["ID", "USERNAME"], vec!["2", "bob"]]
    );
    let run = sandbox.latchkey(&["group", "list"], None);
    let counts: Vec<(&str, &str)> = words(&run.stdout)
        .iter()
        .skip(1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert_eq!(counts, [("admins", "1"), ("dev", "1")]);

    sandbox
        .latchkey(&["group", "remove", "admins"], None)
        .assert_ok();
    assert_eq!(membership_count(&sandbox), 1);
    assert_eq!(
        groups_in_user_list(&sandbox),
        [("bob".to_owned(), "dev".to_owned())]
    );
    // A new user with the deleted one's name, and a new group with the
    // removed one's name, start with nothing from before.
    sandbox.add_user("alice", "pw");
    sandbox
        .latchkey(&["group", "add", "admins"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["group", "members", "admins"], None);
    assert_eq!(run.stdout, format!("{MEMBER_HEADER}\n"));
    assert_eq!(
        groups_in_user_list(&sandbox)[1],
        ("alice".to_owned(), String::new())
    );
}

#[tokio::test]
async fn a_membership_change_while_serving_is_seen_by_the_next_verify() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    sandbox
        .latchkey(&["group", "add", "admins"], None)
        .assert_ok();
    let server = Server::start(&sandbox, &["serve"]);
    let api = server.api();
    let token = api.login_token("alice", "pw").await;
    let groups = |response: &reqwest::Response| {
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["remote-groups"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(groups(&api.verify_bearer(&token).await), "");
    sandbox
        .latchkey(&["group", "add-member", "admins", "alice"], None)
        .assert_ok();
    assert_eq!(groups(&api.verify_bearer(&token).await), "admins");
    sandbox.latchkey(&["group", "add", "Dev"], None).assert_ok();
    sandbox
        .latchkey(&["group", "add-member", "dev", "alice"], None)
        .assert_ok();
    assert_eq!(groups(&api.verify_bearer(&token).await), "admins,Dev");
    sandbox
        .latchkey(&["group", "remove", "admins"], None)
        .assert_ok();
    assert_eq!(groups(&api.verify_bearer(&token).await), "Dev");
    sandbox
        .latchkey(&["group", "remove-member", "dev", "alice"], None)
        .assert_ok();
    assert_eq!(groups(&api.verify_bearer(&token).await), "");
    server.stop();
}

// ---------------------------------------------------------------------------
// backup

/// Usernames in a database file, by id.
fn usernames_in(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).expect("open the backup");
    let check: String = scalar(&conn, "PRAGMA integrity_check", &[]);
    assert_eq!(check, "ok");
    column(&conn, "SELECT username FROM users ORDER BY id")
}

#[test]
fn backup_writes_a_standalone_sqlite_copy() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    sandbox.add_user("bob", "pw");
    std::fs::create_dir(sandbox.path("backups")).unwrap();
    let target = sandbox.path("backups/copy.db");

    let run = sandbox.latchkey(&["backup", target.to_str().unwrap()], None);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!("Backed up the database to {}.\n", target.display())
    );
    assert_eq!(run.stderr, "");
    assert_eq!(usernames_in(&target), ["alice", "bob"]);

    let conn = Connection::open(&target).unwrap();
    let mode: String = scalar(&conn, "PRAGMA journal_mode", &[]);
    assert_eq!(mode, "delete", "a backup needs no -wal beside it");
    drop(conn);
    let files: Vec<String> = std::fs::read_dir(sandbox.path("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["copy.db"], "no temporary file left behind");

    // A relative path is relative to the current directory; an existing
    // backup is replaced.
    sandbox.add_user("carol", "pw");
    sandbox
        .latchkey(&["backup", "backups/copy.db"], None)
        .assert_ok();
    assert_eq!(usernames_in(&target), ["alice", "bob", "carol"]);
}

#[test]
fn backup_into_a_missing_directory_fails() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    let target = sandbox.path("missing/copy.db");
    let run = sandbox.latchkey(&["backup", target.to_str().unwrap()], None);
    let message = run.assert_error();
    assert!(
        message.contains(&target.display().to_string()),
        "names the target: {message}"
    );
    assert!(!sandbox.path("missing").exists());
}

#[tokio::test]
async fn backup_works_while_the_server_is_running() {
    let sandbox = Sandbox::on_sqlite_file();
    let server = Server::start(&sandbox, &["serve"]);

    // Admin commands work beside the running server, and it sees their effect.
    sandbox.add_user("carol", "carols password");
    let response = server.api().login("carol", "carols password").await;
    assert_eq!(response.status(), StatusCode::OK);

    let target = sandbox.path("snapshot.db");
    let run = sandbox.latchkey(&["backup", "snapshot.db"], None);
    run.assert_ok();
    assert_eq!(usernames_in(&target), ["admin", "carol"]);
    let sessions: i64 = scalar(
        &Connection::open(&target).unwrap(),
        "SELECT count(*) FROM sessions",
        &[],
    );
    assert_eq!(sessions, 1, "carol's login is in the copy");

    let health = http_client()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop();
}

// ---------------------------------------------------------------------------
// usage errors

#[test]
fn bad_usage_exits_2_with_the_usage_on_stderr() {
    let sandbox = Sandbox::new();
    let cases: [&[&str]; 12] = [
        &["frobnicate"],
        &["user", "add"],
        &["user", "list", "--bogus"],
        &["--bogus"],
        &["session", "revoke"],
        &["client"],
        &["backup"],
        &["group"],
        &["group", "add"],
        &["group", "add-member", "admins"],
        &["group", "remove-member", "admins"],
        &["group", "rename", "a", "b"],
    ];
    for args in cases {
        let run = sandbox.latchkey(args, None);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.contains("Usage: latchkey"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = sandbox.latchkey(&["frobnicate"], None);
    run.assert_usage_error();
    assert!(run.stderr.contains("'frobnicate'"), "{}", run.stderr);
    let run = sandbox.latchkey(&["user", "add"], None);
    run.assert_usage_error();
    assert!(run.stderr.contains("<NAME>"), "{}", run.stderr);
    let run = sandbox.latchkey(&["user", "list", "--bogus"], None);
    run.assert_usage_error();
    assert!(run.stderr.contains("'--bogus'"), "{}", run.stderr);

    // Bad usage touches nothing.
    assert!(!sandbox.db_path().exists());
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["--help"], None);
    run.assert_ok();
    assert!(run.stdout.contains("Usage: latchkey"), "{}", run.stdout);
    for command in ["serve", "user", "session", "client", "group", "backup"] {
        assert!(run.stdout.contains(command), "{command}: {}", run.stdout);
    }
    assert_eq!(run.stderr, "");

    let run = sandbox.latchkey(&["--version"], None);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!("latchkey {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(!sandbox.db_path().exists());
}

// ---------------------------------------------------------------------------
// configuration

#[test]
fn a_missing_config_file_named_with_config_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["--config", "nope.toml", "user", "list"], None);
    let cause = std::fs::read_to_string(sandbox.path("nope.toml")).unwrap_err();
    assert_eq!(
        run.assert_error(),
        format!("error: cannot read config file nope.toml: {cause}")
    );
    assert!(!sandbox.db_path().exists());
}

#[test]
fn config_file_is_read_from_config_or_the_current_directory_and_env_overrides_it() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("custom.toml"),
        "[database]\npath = \"from-custom.db\"\n",
    )
    .unwrap();
    std::fs::write(
        sandbox.path("config.toml"),
        "[database]\npath = \"from-default.db\"\n",
    )
    .unwrap();

    // ./config.toml when --config is not given.
    execute(sandbox.bare_command(&["user", "list"]), None).assert_ok();
    assert!(sandbox.path("from-default.db").exists());

    // --config, before or after the subcommand.
    for args in [
        &["--config", "custom.toml", "client", "list"][..],
        &["client", "list", "--config", "custom.toml"][..],
    ] {
        std::fs::remove_file(sandbox.path("from-custom.db")).ok();
        execute(sandbox.bare_command(args), None).assert_ok();
        assert!(sandbox.path("from-custom.db").exists(), "{args:?}");
    }

    // The environment overrides the file.
    let mut cmd = sandbox.bare_command(&["--config", "custom.toml", "session", "purge"]);
    cmd.env("LATCHKEY_DATABASE__PATH", "from-env.db");
    execute(cmd, None).assert_ok();
    assert!(sandbox.path("from-env.db").exists());
}

#[test]
fn an_unknown_config_key_is_refused_naming_the_key() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("config.toml"),
        "[session]\nidle_timout = \"1h\"\n",
    )
    .unwrap();
    let run = sandbox.latchkey(&["user", "list"], None);
    let message = run.assert_error();
    assert!(
        message.starts_with("error: config key `session.idle_timout`: unknown field `idle_timout`"),
        "{message}"
    );

    std::fs::write(sandbox.path("other.toml"), "[sesion]\n").unwrap();
    let run = sandbox.latchkey(&["--config", "other.toml", "user", "list"], None);
    let message = run.assert_error();
    assert!(message.contains("sesion"), "{message}");
    assert!(!sandbox.db_path().exists());
}

#[test]
fn a_bad_config_value_is_refused_naming_the_key() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&["user", "list"]);
    cmd.env("LATCHKEY_SERVER__WORKERS", "many");
    let run = execute(cmd, None);
    assert_eq!(
        run.assert_error(),
        "error: environment variable LATCHKEY_SERVER__WORKERS: \"many\" is not a valid value for `server.workers`"
    );

    let mut cmd = sandbox.command(&["user", "list"]);
    cmd.env("LATCHKEY_SESSION__IDLE_TIMEOUT", "10");
    let run = execute(cmd, None);
    let message = run.assert_error();
    assert!(message.contains("session.idle_timeout"), "{message}");

    std::fs::write(sandbox.path("bad.toml"), "[server]\nworkers = \"four\"\n").unwrap();
    let run = sandbox.latchkey(&["--config", "bad.toml", "serve"], None);
    let message = run.assert_error();
    assert!(message.contains("server.workers"), "{message}");

    std::fs::write(sandbox.path("broken.toml"), "[server]\nlisten = \n").unwrap();
    let run = sandbox.latchkey(&["--config", "broken.toml", "user", "list"], None);
    let message = run.assert_error();
    assert!(
        message.contains("broken.toml") && message.contains("line 2"),
        "{message}"
    );
    assert!(!sandbox.db_path().exists());
}

#[test]
fn without_any_config_the_defaults_apply() {
    let sandbox = Sandbox::new();
    assert!(!sandbox.path("config.toml").exists());
    let run = execute(sandbox.bare_command(&["user", "list"]), None);
    run.assert_ok();
    assert_eq!(run.stdout, format!("{USER_HEADER}\n"));
    assert_eq!(run.stderr, "");
    // The default database path, relative to the current directory.
    assert!(sandbox.path("latchkey.db").exists());
}

// ---------------------------------------------------------------------------
// the database file

#[test]
fn every_command_creates_and_migrates_the_database() {
    let sandbox = Sandbox::on_sqlite_file();
    let commands: [&[&str]; 8] = [
        &["user", "list"],
        &["user", "add", "alice", "--password-stdin"],
        &["session", "list"],
        &["session", "purge"],
        &["client", "list"],
        &["group", "list"],
        &["audit"],
        &["backup", "copy.db"],
    ];
    for (i, args) in commands.iter().enumerate() {
        let db = sandbox.path(&format!("fresh-{i}.db"));
        let mut cmd = sandbox.command(args);
        cmd.env("LATCHKEY_DATABASE__PATH", &db);
        execute(cmd, Some(b"pw\n")).assert_ok();
        let conn = Connection::open(&db).unwrap();
        let version: i64 = scalar(&conn, "PRAGMA user_version", &[]);
        assert_eq!(
            version,
            latchkey::store::migrate::SCHEMA_VERSION,
            "{args:?}"
        );
        let tables: Vec<String> = column(
            &conn,
            "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name",
        );
        assert_eq!(
            tables,
            [
                "audit",
                "clients",
                "groups",
                "login_challenges",
                "login_limits",
                "memberships",
                "recovery_codes",
                "session_counter",
                "sessions",
                "sqlite_sequence",
                "totp",
                "totp_pending",
                "users"
            ],
            "{args:?}"
        );
    }
    // And running again on an existing, current database changes nothing.
    let mut cmd = sandbox.command(&["user", "list"]);
    cmd.env("LATCHKEY_DATABASE__PATH", sandbox.path("fresh-1.db"));
    let run = execute(cmd, None);
    run.assert_ok();
    assert!(run.stdout.contains("alice"), "{}", run.stdout);
}

#[test]
fn a_database_in_a_missing_directory_is_an_error_naming_the_path() {
    let sandbox = Sandbox::on_sqlite_file();
    let db = sandbox.path("missing/latchkey.db");
    for args in [&["user", "list"][..], &["serve"][..]] {
        let mut cmd = sandbox.command(args);
        cmd.env("LATCHKEY_DATABASE__PATH", &db)
            .env("LATCHKEY_SERVER__LISTEN", "127.0.0.1:0");
        let run = execute(cmd, None);
        let message = run.assert_error();
        assert!(
            message.contains(&format!("cannot open database {}", db.display())),
            "{args:?}: {message}"
        );
    }
    assert!(!sandbox.path("missing").exists());
}

#[test]
fn a_database_where_nothing_may_be_written_is_an_error_naming_the_path() {
    // /proc refuses new files even to root, so this holds in CI (as root),
    // where a chmod-ed directory would not.
    let sandbox = Sandbox::on_sqlite_file();
    for args in [&["user", "list"][..], &["serve"][..]] {
        let mut cmd = sandbox.command(args);
        cmd.env("LATCHKEY_DATABASE__PATH", "/proc/latchkey-test.db")
            .env("LATCHKEY_SERVER__LISTEN", "127.0.0.1:0");
        let run = execute(cmd, None);
        let message = run.assert_error();
        assert!(
            message.contains("cannot open database /proc/latchkey-test.db")
                && message.contains("writable"),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn a_config_file_that_cannot_be_read_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("config.toml")).unwrap();
    for args in [&["user", "list"][..], &["serve"][..]] {
        // Read implicitly from the current directory, and named explicitly.
        for explicit in [false, true] {
            let mut all_args = args.to_vec();
            let named = sandbox.path("config.toml");
            let named = named.to_str().unwrap();
            if explicit {
                all_args.splice(0..0, ["--config", named]);
            }
            let run = execute(sandbox.command(&all_args), None);
            let message = run.assert_error();
            assert!(
                message.contains("cannot read config file") && message.contains("config.toml"),
                "{all_args:?}: {message}"
            );
        }
    }
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_unchanged() {
    let sandbox = Sandbox::on_sqlite_file();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    std::fs::write(sandbox.db_path(), &garbage).unwrap();
    for args in [&["user", "list"][..], &["serve"][..]] {
        let mut cmd = sandbox.command(args);
        cmd.env("LATCHKEY_SERVER__LISTEN", "127.0.0.1:0");
        let run = execute(cmd, None);
        let message = run.assert_error();
        assert!(
            message.contains(&sandbox.db_path().display().to_string())
                && message.contains("not an SQLite database"),
            "{args:?}: {message}"
        );
    }
    assert_eq!(std::fs::read(sandbox.db_path()).unwrap(), garbage);
    let files: Vec<String> = std::fs::read_dir(sandbox.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["latchkey.db"], "nothing created beside it");
}

#[test]
fn a_database_from_a_newer_latchkey_is_refused_naming_its_version() {
    let sandbox = Sandbox::on_sqlite_file();
    Connection::open(sandbox.db_path())
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let run = sandbox.latchkey(&["user", "list"], None);
    let message = run.assert_error();
    assert!(
        message.contains("version 99")
            && message.contains(&sandbox.db_path().display().to_string()),
        "{message}"
    );
    let tables: i64 = scalar(
        &sandbox.db(),
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
        &[],
    );
    assert_eq!(tables, 0, "no tables written into it");
}

#[test]
fn another_programs_sqlite_database_is_refused() {
    let sandbox = Sandbox::on_sqlite_file();
    Connection::open(sandbox.db_path())
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    let run = sandbox.latchkey(&["user", "list"], None);
    let message = run.assert_error();
    assert!(
        message.contains(&sandbox.db_path().display().to_string()),
        "{message}"
    );
    let body: String = scalar(&sandbox.db(), "SELECT body FROM notes", &[]);
    assert_eq!(body, "keep me");
    let users: i64 = scalar(
        &sandbox.db(),
        "SELECT count(*) FROM sqlite_schema WHERE name = 'users'",
        &[],
    );
    assert_eq!(users, 0);
}

// ---------------------------------------------------------------------------
// serve

#[tokio::test]
async fn serve_creates_admin_on_an_empty_database_and_prints_the_password_once() {
    let sandbox = Sandbox::new();
    let mut server = Server::start(&sandbox, &["serve"]);
    let password = wait_for_admin_password(&mut server);

    let response = server.api().login("admin", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let me: Value = server
        .api()
        .get_bearer("/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "admin");
    let wrong = server.api().login("admin", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let (stdout, stderr) = server.stop();
    // Printed once, with a note on how to change it; never logged.
    assert_eq!(stdout.len(), 2, "{stdout:#?}");
    assert_eq!(stdout[0], format!("{ADMIN_PASSWORD_PREFIX}{password}"));
    assert!(stdout[1].contains("user passwd admin"), "{stdout:#?}");
    assert!(
        !stderr.iter().any(|l| l.contains(&password)),
        "the password is logged: {stderr:#?}"
    );

    // A second start on the same database prints no password, and the
    // printed one still works.
    let server = Server::start(&sandbox, &["serve"]);
    let response = server.api().login("admin", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (stdout, _) = server.stop();
    assert_eq!(stdout, Vec::<String>::new());
    assert_eq!(sandbox.user_count(), 1);
}

#[tokio::test]
async fn serve_does_not_create_admin_when_users_exist() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "alices password");
    let server = Server::start(&sandbox, &["serve"]);
    let response = server.api().login("alice", "alices password").await;
    assert_eq!(response.status(), StatusCode::OK);
    let (stdout, _) = server.stop();
    assert_eq!(stdout, Vec::<String>::new());
    let admins: i64 = scalar(
        &sandbox.db(),
        "SELECT count(*) FROM users WHERE username = 'admin'",
        &[],
    );
    assert_eq!(admins, 0);
}

#[tokio::test]
async fn no_command_means_serve() {
    let sandbox = Sandbox::new();
    let mut server = Server::start(&sandbox, &[]);
    let password = wait_for_admin_password(&mut server);
    let response = server.api().login("admin", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let health = http_client()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop();
}

#[tokio::test]
async fn user_passwd_while_serving_locks_out_the_old_password_and_session() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "old password");
    let server = Server::start(&sandbox, &["serve"]);
    let response = server.api().login("alice", "old password").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();

    let run = sandbox.latchkey(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("new password\n"),
    );
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "Changed the password of \"alice\"; ended 1 session(s).\n"
    );

    let verify = server.api().verify_bearer(&token).await;
    assert_eq!(verify.status(), StatusCode::UNAUTHORIZED);
    let old = server.api().login("alice", "old password").await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = server.api().login("alice", "new password").await;
    assert_eq!(new.status(), StatusCode::OK);
    server.stop();
}

#[tokio::test]
async fn serve_warns_about_an_open_introspect_and_once_about_untrusted_forwarding() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &["serve"]);
    // Two logins through what looks like a proxy that is not trusted.
    for _ in 0..2 {
        let response = http_client()
            .post(server.url("/login"))
            .header("X-Forwarded-For", "203.0.113.7")
            .json(&serde_json::json!({ "username": "nobody", "password": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let (_, stderr) = server.stop();
    let count = |needle: &str| stderr.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("no introspection clients exist"), 1, "{stderr:#?}");
    assert_eq!(count("server.trusted_proxies"), 1, "{stderr:#?}");

    // With a client, introspection is closed and nothing is said about it.
    sandbox
        .latchkey(&["client", "add", "proxy"], None)
        .assert_ok();
    let (_, stderr) = Server::start(&sandbox, &["serve"]).stop();
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("no introspection clients")),
        "{stderr:#?}"
    );
}

// ---------------------------------------------------------------------------
// config check

/// The `key = value` lines of `config check`, as (key, value) pairs.
fn settings_listed(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|line| {
            let (key, value) = line.split_once(" = ").unwrap_or_else(|| panic!("{line:?}"));
            (key.trim_end().to_owned(), value.to_owned())
        })
        .collect()
}

fn setting(stdout: &str, key: &str) -> String {
    settings_listed(stdout)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{key} not listed in {stdout}"))
        .1
}

/// The `warning: ` lines on stderr, by the key each names first.
fn warned_keys(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("warning: "))
        .filter_map(|rest| rest.split_once(':').map(|(key, _)| key))
        .collect()
}

#[test]
fn config_check_prints_every_effective_setting_and_creates_no_database() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("config.toml"),
        "[session]\nidle_timeout = \"2h\"\n[server]\nworkers = 2\n",
    )
    .unwrap();
    let mut cmd = sandbox.bare_command(&["config", "check"]);
    cmd.env("LATCHKEY_SERVER__WORKERS", "3");
    let run = execute(cmd, None);
    run.assert_ok();
    // Every key of the shipped config.toml, each once.
    let defaults: toml::Table = latchkey::config::DEFAULTS_TOML.parse().unwrap();
    let listed = settings_listed(&run.stdout);
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            let name = format!("{section}.{key}");
            assert_eq!(
                listed.iter().filter(|(k, _)| *k == name).count(),
                1,
                "{name} in {}",
                run.stdout
            );
        }
    }
    assert_eq!(setting(&run.stdout, "session.idle_timeout"), "\"2h\"");
    // The environment wins over the file, as for `serve`.
    assert_eq!(setting(&run.stdout, "server.workers"), "3");
    assert_eq!(setting(&run.stdout, "session.max_lifetime"), "\"7d\"");
    // Defaults (loopback, secure cookie) warn about nothing; the missing
    // database is noted, not created.
    assert!(warned_keys(&run.stderr).is_empty(), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("note: database latchkey.db does not exist yet"),
        "{}",
        run.stderr
    );
    for name in ["latchkey.db", "latchkey.db-wal", "latchkey.db-shm"] {
        assert!(!sandbox.path(name).exists(), "{name} was created");
    }
}

#[test]
fn config_check_refuses_an_unknown_key_naming_it() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("bad.toml"),
        "[session]\nidle_timout = \"1h\"\n",
    )
    .unwrap();
    let run = sandbox.latchkey(&["--config", "bad.toml", "config", "check"], None);
    let message = run.assert_error();
    assert!(
        message.starts_with("error: config key `session.idle_timout`"),
        "{message}"
    );
    let mut cmd = sandbox.command(&["config", "check"]);
    cmd.env("LATCHKEY_SESSION__COOKIE_SECURE", "maybe");
    let message = execute(cmd, None).assert_error().to_owned();
    assert!(
        message.contains("LATCHKEY_SESSION__COOKIE_SECURE"),
        "{message}"
    );
    assert!(!sandbox.db_path().exists());
}

#[test]
fn config_check_warns_about_likely_mistakes_and_still_exits_0() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("public.toml"),
        "[server]\nlisten = \"0.0.0.0:9000\"\n\
         [session]\ncookie_secure = false\ncookie_domain = \".co.uk\"\n",
    )
    .unwrap();
    let run = sandbox.latchkey(&["--config", "public.toml", "config", "check"], None);
    run.assert_ok();
    assert_eq!(
        warned_keys(&run.stderr),
        [
            "session.cookie_secure",
            "session.cookie_domain",
            "server.trusted_proxies"
        ],
        "{}",
        run.stderr
    );
    assert_eq!(setting(&run.stdout, "server.listen"), "\"0.0.0.0:9000\"");

    // A single-label cookie domain is a public suffix too; trusted proxies
    // set and a secure cookie silence the other two.
    let mut cmd = sandbox.command(&["--config", "public.toml", "config", "check"]);
    cmd.env("LATCHKEY_SESSION__COOKIE_DOMAIN", ".internal")
        .env("LATCHKEY_SESSION__COOKIE_SECURE", "true")
        .env("LATCHKEY_SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\"]");
    let run = execute(cmd, None);
    run.assert_ok();
    assert_eq!(
        warned_keys(&run.stderr),
        ["session.cookie_domain"],
        "{}",
        run.stderr
    );
}

#[test]
fn config_check_warns_when_the_database_has_no_introspection_client() {
    let sandbox = Sandbox::new();
    sandbox.latchkey(&["client", "list"], None).assert_ok();
    let run = sandbox.latchkey(&["config", "check"], None);
    run.assert_ok();
    assert_eq!(warned_keys(&run.stderr), ["clients"], "{}", run.stderr);
    assert!(!run.stderr.contains("note:"), "{}", run.stderr);

    sandbox
        .latchkey(&["client", "add", "proxy"], None)
        .assert_ok();
    let run = sandbox.latchkey(&["config", "check"], None);
    run.assert_ok();
    assert_eq!(run.stderr, "");
}
