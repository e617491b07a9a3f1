//! latchkey on PostgreSQL, as several instances behind a load balancer run
//! it: the real binary, on a real PostgreSQL server started by the test
//! (see `helpers::postgres`). Sessions made on one instance hold on all; a
//! logout or a disable on one is refused by the others on their next
//! request; instances starting together migrate once; a PostgreSQL restart
//! gives 503s for a moment and no other error; login failures and bans
//! are counted for all; `db copy` moves a SQLite file over with every
//! password and token intact; a database of the previous schema version
//! is migrated keeping its data.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const PASSWORD: &str = "alice's password";

/// `cmd` on the PostgreSQL database at `url`.
fn on(mut cmd: Command, url: &str) -> Command {
    cmd.env("LATCHKEY_DATABASE__URL", url);
    cmd
}

/// `latchkey ARGS` on `url`, which must succeed.
fn admin(sandbox: &Sandbox, url: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let run = execute(on(sandbox.command(args), url), stdin.map(str::as_bytes));
    run.assert_ok();
    run
}

/// `latchkey user add alice` on `url`, with [`PASSWORD`].
fn add_alice(sandbox: &Sandbox, url: &str) {
    admin(
        sandbox,
        url,
        &["user", "add", "alice", "--password-stdin"],
        Some(PASSWORD),
    );
}

/// An instance of the server on `url`.
fn instance(sandbox: &Sandbox, url: &str) -> Server {
    Server::spawn(on(sandbox.serve_command(&["serve"]), url))
}

/// An instance on `url` that bans a username or an address after three
/// failures within a minute, for five minutes.
fn strict_instance(sandbox: &Sandbox, url: &str) -> Server {
    let mut cmd = on(sandbox.serve_command(&["serve"]), url);
    cmd.env("LATCHKEY_LOGIN__MAX_FAILURES", "3")
        .env("LATCHKEY_LOGIN__FAILURE_WINDOW", "60s")
        .env("LATCHKEY_LOGIN__BAN_DURATION", "300s");
    Server::spawn(cmd)
}

async fn token(api: &Api, user: &str, password: &str) -> String {
    api.login_token(user, password).await
}

async fn active(api: &Api, token: &str) -> bool {
    let body: Value = api.introspect(token).await.json().await.unwrap();
    body["active"] == true
}

#[tokio::test]
async fn instances_on_one_database_share_sessions_and_every_revocation_at_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::new();
    add_alice(&sandbox, &url);
    let (a, b) = (instance(&sandbox, &url), instance(&sandbox, &url));
    let (a, b) = (a.api(), b.api());

    // Made on A, valid on B, with the same identity.
    let t = token(&a, "alice", PASSWORD).await;
    let verified = b.verify_bearer(&t).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(header(&verified, "remote-user"), "alice");
    assert!(active(&b, &t).await);
    // A logout on B is refused on A at its very next request.
    assert_eq!(b.logout_bearer(&t).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(a.verify_bearer(&t).await.status(), StatusCode::UNAUTHORIZED);
    assert!(!active(&a, &t).await);

    // A disable from the command line ends the sessions on every instance.
    let (t1, t2) = (
        token(&a, "alice", PASSWORD).await,
        token(&b, "alice", PASSWORD).await,
    );
    admin(&sandbox, &url, &["user", "disable", "alice"], None);
    for (api, t) in [(&a, &t1), (&b, &t1), (&a, &t2), (&b, &t2)] {
        assert_eq!(
            api.verify_bearer(t).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = a.login("alice", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // The audit trail is one for all.
    let trail = admin(&sandbox, &url, &["audit", "--user", "alice"], None);
    assert!(
        trail.stdout.contains("logout") && trail.stdout.contains("user_disabled"),
        "{}",
        trail.stdout
    );
}

#[tokio::test]
async fn instances_starting_together_migrate_once_and_make_one_initial_admin() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::new();
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let cmd = on(sandbox.serve_command(&["serve"]), &url);
            std::thread::spawn(move || Server::spawn(cmd))
        })
        .collect();
    let servers: Vec<Server> = starting.into_iter().map(|s| s.join().unwrap()).collect();
    for server in &servers {
        let health = server.api().get_bearer("/healthz", "").await;
        assert_eq!(health.status(), StatusCode::OK);
    }
    let name = url.rsplit('/').next().unwrap();
    assert_eq!(
        cluster
            .psql(name, "SELECT count(*) FROM latchkey_schema")
            .trim(),
        "1"
    );
    assert_eq!(
        cluster
            .psql(name, "SELECT version FROM latchkey_schema")
            .trim(),
        "9"
    );
    assert_eq!(cluster.psql(name, "SELECT count(*) FROM users").trim(), "1");
    // Exactly one instance printed an initial admin password.
    let printed = servers
        .into_iter()
        .map(|server| server.stop().0)
        .filter(|stdout| stdout.iter().any(|line| line.contains("password")))
        .count();
    assert_eq!(printed, 1);
}

#[tokio::test]
async fn a_postgresql_restart_under_load_gives_only_brief_503s() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::new();
    add_alice(&sandbox, &url);
    let server = instance(&sandbox, &url);
    let api = server.api();
    let t = token(&api, "alice", PASSWORD).await;
    let load = {
        let (api, t) = (server.api(), t.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let end = Instant::now() + Duration::from_secs(6);
            while Instant::now() < end {
                statuses.push(api.verify_bearer(&t).await.status());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop();
    let health = api.get_bearer("/healthz", "").await;
    assert_eq!(
        health.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "healthz while down"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_again();
    let statuses = load.await.unwrap();
    let unavailable = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| **s != StatusCode::OK && **s != StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(other.is_empty(), "only 200 and 503: {other:?}");
    assert!(unavailable > 0, "the outage was seen");
    // Recovered on its own, well before the load ended.
    let tail = &statuses[statuses.len().saturating_sub(20)..];
    assert!(
        tail.iter().all(|s| *s == StatusCode::OK),
        "recovered: {tail:?}"
    );
    assert_eq!(
        api.get_bearer("/healthz", "").await.status(),
        StatusCode::OK
    );
    let (_, stderr) = server.stop();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
}

#[tokio::test]
async fn db_copy_moves_every_user_and_token_and_refuses_a_second_time() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let sandbox = Sandbox::on_sqlite_file();
    let users = ["alice", "bob", "carol"];
    for user in users {
        sandbox.add_user(user, &format!("{user}'s password"));
    }
    sandbox.latchkey(&["group", "add", "ops"], None).assert_ok();
    sandbox
        .latchkey(&["group", "add-member", "ops", "bob"], None)
        .assert_ok();
    // Sessions made on SQLite, by the server itself.
    let server = Server::start(&sandbox, &["serve"]);
    let mut tokens = Vec::new();
    for user in users {
        tokens.push((
            user,
            token(&server.api(), user, &format!("{user}'s password")).await,
        ));
    }
    server.stop();

    let url = cluster.create_database();
    let copied = execute(sandbox.command(&["db", "copy", "--to", &url]), None);
    copied.assert_ok();
    assert!(
        copied.stdout.contains("users 3") && copied.stdout.contains("sessions 3"),
        "{}",
        copied.stdout
    );
    let again = execute(sandbox.command(&["db", "copy", "--to", &url]), None);
    assert!(again.assert_error().contains("not empty"));

    let pg = instance(&sandbox, &url);
    let api = pg.api();
    for (user, t) in &tokens {
        let verified = api.verify_bearer(t).await;
        assert_eq!(verified.status(), StatusCode::OK, "{user}'s token");
        assert_eq!(header(&verified, "remote-user"), *user);
        let groups = if *user == "bob" { "ops" } else { "" };
        assert_eq!(header(&verified, "remote-groups"), groups);
        token(&api, user, &format!("{user}'s password")).await;
    }
    // New rows get new ids, past the copied ones.
    admin(
        &sandbox,
        &url,
        &["user", "add", "dave", "--password-stdin"],
        Some("dave's password"),
    );
    let listed = admin(&sandbox, &url, &["user", "list"], None);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("4 ") && l.contains("dave")),
        "{}",
        listed.stdout
    );
}

#[tokio::test]
async fn failures_on_every_instance_add_up_and_a_ban_made_through_one_refuses_on_all() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::new();
    for user in ["alice", "bob"] {
        let add = ["user", "add", user, "--password-stdin"];
        admin(&sandbox, &url, &add, Some(PASSWORD));
    }
    let (a, b) = (
        strict_instance(&sandbox, &url),
        strict_instance(&sandbox, &url),
    );
    let (a, b) = (a.api(), b.api());

    // Two wrong passwords through A and one through B: the third failure
    // for alice, wherever it was made.
    for api in [&a, &a, &b] {
        let wrong = api.login("alice", "not her password").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    // Banned on both, even with the right password.
    for api in [&a, &b] {
        let refused = api.login("Alice", PASSWORD).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
        assert!((290..=300).contains(&retry_after), "{retry_after}");
    }
    // The address made those three failures too: it is banned on both,
    // for every name.
    for api in [&a, &b] {
        let refused = api.login("bob", PASSWORD).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // One row per banned key, in the database both read.
    let name = url.rsplit('/').next().unwrap();
    let banned = "SELECT kind, subject FROM login_limits WHERE banned_until > 0 ORDER BY kind";
    assert_eq!(cluster.psql(name, banned), "0|alice\n1|127.0.0.1");
    // Lifting the ban there lifts it on every instance.
    cluster.psql(
        name,
        "UPDATE login_limits SET banned_until = 0, failures = ''::bytea",
    );
    for api in [&a, &b] {
        assert_eq!(api.login("alice", PASSWORD).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_database_of_the_previous_schema_is_migrated_keeping_its_data() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::new();
    add_alice(&sandbox, &url);
    let t = {
        let server = instance(&sandbox, &url);
        token(&server.api(), "alice", PASSWORD).await
    };
    // Version 8 is version 9 without the shared login limits.
    let name = url.rsplit('/').next().unwrap();
    cluster.psql(
        name,
        "DROP TABLE login_limits; UPDATE latchkey_schema SET version = 8",
    );

    let server = strict_instance(&sandbox, &url);
    let api = server.api();
    assert_eq!(
        cluster.psql(name, "SELECT version FROM latchkey_schema"),
        "9"
    );
    assert!(active(&api, &t).await, "the session made at version 8");
    for _ in 0..3 {
        let wrong = api.login("alice", "not her password").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = api.login("alice", PASSWORD).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// `backup` is SQLite's online copy: on PostgreSQL it refuses in one line
/// that says what to use instead, and writes nothing.
#[test]
fn backup_on_postgresql_refuses_and_names_pg_dump() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    let sandbox = Sandbox::on_sqlite_file();
    add_alice(&sandbox, &url);
    let target = sandbox.path("copy.db");
    let target_arg = target.to_str().expect("a UTF-8 temp path");
    let run = execute(on(sandbox.command(&["backup", target_arg]), &url), None);
    let error = run.assert_error();
    assert!(
        error.contains("PostgreSQL") && error.contains("pg_dump"),
        "{error}"
    );
    assert!(!target.exists(), "a backup file was written");
}

/// `config check` on a PostgreSQL database that latchkey has not set up yet
/// says so, names it without the URL's password, and creates nothing; once
/// the schema is there, it reads the clients from that database.
#[test]
fn config_check_reads_the_postgresql_database_and_creates_nothing() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.create_database();
    // The cluster trusts loopback, so the password is never asked for: it
    // is only there to be kept out of the output.
    let with_password = url.replacen("latchkey@", "latchkey:s3cret@", 1);
    let sandbox = Sandbox::on_sqlite_file();
    let check = || {
        let run = execute(
            on(sandbox.command(&["config", "check"]), &with_password),
            None,
        );
        run.assert_ok();
        run
    };

    let run = check();
    assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"));
    assert!(
        run.stderr
            .contains("note: database postgres://latchkey:***@")
            && run.stderr.contains("does not exist yet"),
        "{}",
        run.stderr
    );
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(
        cluster.psql(&url, tables),
        "0",
        "config check created tables"
    );
    assert!(!sandbox.db_path().exists(), "config check created the file");

    add_alice(&sandbox, &url);
    let run = check();
    assert!(
        run.stderr.contains("warning: clients:"),
        "no client in the PostgreSQL database, yet: {}",
        run.stderr
    );
    admin(&sandbox, &url, &["client", "add", "proxy"], None);
    let run = check();
    assert!(!run.stderr.contains("clients"), "{}", run.stderr);
}
