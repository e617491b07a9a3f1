//! SPEC "Users" (r2): credential changes win every race. A login whose
//! password check is in flight while `user passwd`, `user disable`, `user
//! delete`, `session revoke` or `POST /logout?all=true` commits gets 401
//! `invalid_credentials` and leaves no session, and its hash upgrade never
//! overwrites the new password.
//!
//! The race is made, not hoped for: the server (the real binary) hashes with
//! argon2 parameters that make one password check take over a second, the
//! change runs (as another process, on the same file) while the check is in
//! flight, and each test checks that the change had answered before the
//! login did, and that the server refused the login for the change it saw
//! (its log line), not because the login came too late to see the old
//! credentials at all.

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};

use crate::helpers::*;

/// argon2 parameters that make one hash take ~1 s in a debug build (argon2
/// itself is optimised there); the change takes ~10 ms.
const SLOW_MEMORY_KIB: &str = "19456";
const SLOW_ITERATIONS: &str = "120";
/// How long the login runs before the change starts: far longer than it takes
/// to read the user, far shorter than the password check.
const HEAD_START: Duration = Duration::from_millis(150);
/// The reason the server logs for a login that lost to a credential change.
const LOST_TO_A_CHANGE: &str = "the credentials changed while the password was checked";

/// Held by each test here for its whole run: one slow hash at a time, so
/// that they neither crowd out the other tests on a small machine nor
/// slow each other's changes past the window.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `cmd` hashing with the slow parameters.
fn slow(mut cmd: Command) -> Command {
    cmd.env("LATCHKEY_PASSWORD__MEMORY_KIB", SLOW_MEMORY_KIB)
        .env("LATCHKEY_PASSWORD__ITERATIONS", SLOW_ITERATIONS);
    cmd
}

/// A server hashing with the slow parameters, on `sandbox`'s file.
fn slow_server(sandbox: &Sandbox) -> Server {
    Server::spawn(slow(sandbox.serve_command(&["serve"])))
}

/// Creates `name` with a hash of the slow parameters, so that checking
/// their password takes the server over a second.
fn add_slow_user(sandbox: &Sandbox, name: &str, password: &str) -> i64 {
    let cmd = slow(sandbox.command(&["user", "add", name, "--password-stdin"]));
    execute(cmd, Some(format!("{password}\n").as_bytes())).assert_ok();
    sandbox.user_id(name)
}

/// `latchkey ARGS` (cheap hashing) run to success off the async thread.
async fn cli(sandbox: &Sandbox, args: &[&str], stdin: Option<&str>) {
    let cmd = sandbox.command(args);
    let stdin = stdin.map(|s| s.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || execute(cmd, stdin.as_deref()).assert_ok().code)
        .await
        .unwrap();
}

/// Sends a login and, while its password check runs, makes `change`;
/// returns the login's answer after checking that `change` had finished
/// before the login answered.
async fn login_during(
    api: &Api,
    username: &str,
    password: &str,
    change: impl Future<Output = ()>,
) -> Response {
    let started = Instant::now();
    let login = tokio::spawn({
        let api = api.clone();
        let (username, password) = (username.to_owned(), password.to_owned());
        async move {
            let response = api.login(&username, &password).await;
            (response, started.elapsed())
        }
    });
    tokio::time::sleep(HEAD_START).await;
    change.await;
    let changed = started.elapsed();
    let (response, answered) = login.await.unwrap();
    assert!(
        changed < answered,
        "the change took {changed:?}, longer than the login ({answered:?}): no race was made"
    );
    response
}

/// Asserts the 401 of a login that lost the race, and that the server saw
/// the change (rather than the login reading the user after it).
async fn assert_lost_to_the_change(server: &mut Server, response: Response) {
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    server.wait_for_stderr(LOST_TO_A_CHANGE);
}

fn sessions_of(sandbox: &Sandbox, user_id: i64) -> i64 {
    scalar(
        &sandbox.db(),
        "SELECT count(*) FROM sessions WHERE user_id = ?1",
        latchkey::db_params![user_id],
    )
}

#[tokio::test]
async fn a_login_racing_user_passwd_gets_no_session_and_the_new_password_stays() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    let alice = add_slow_user(&sandbox, "alice", "old password");
    let mut server = slow_server(&sandbox);
    let api = server.api();

    let passwd = cli(
        &sandbox,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("new password\n"),
    );
    let response = login_during(&api, "alice", "old password", passwd).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(sessions_of(&sandbox, alice), 0);

    let old = api.login("alice", "old password").await;
    assert_error(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    api.login_token("alice", "new password").await;
}

#[tokio::test]
async fn a_hash_upgrade_racing_user_passwd_never_brings_the_old_password_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    // Made with the cheap parameters: the login verifies it at once, then
    // spends over a second making the upgraded hash.
    let alice = sandbox.add_user("alice", "old password");
    let mut server = slow_server(&sandbox);
    let api = server.api();

    let passwd = cli(
        &sandbox,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("new password\n"),
    );
    let response = login_during(&api, "alice", "old password", passwd).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(sessions_of(&sandbox, alice), 0);
    // The stored hash is still the one `user passwd` made (cheap parameters,
    // the new password), not an upgrade of the old one.
    let hash = sandbox.stored_hash("alice");
    assert!(hash.contains("$m=8,t=1,"), "{hash}");
    let check = latchkey::auth::password::PasswordHashing::new(&cheap_passwords()).unwrap();
    assert!(check.verify(&hash, "new password"));

    let old = api.login("alice", "old password").await;
    assert_error(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    api.login_token("alice", "new password").await;
}

#[tokio::test]
async fn a_login_racing_user_disable_gets_no_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    let alice = add_slow_user(&sandbox, "alice", "pw");
    let mut server = slow_server(&sandbox);
    let api = server.api();

    let disable = cli(&sandbox, &["user", "disable", "alice"], None);
    let response = login_during(&api, "alice", "pw", disable).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(sessions_of(&sandbox, alice), 0);
}

#[tokio::test]
async fn a_login_racing_user_delete_gets_401_not_500() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    add_slow_user(&sandbox, "alice", "pw");
    let mut server = slow_server(&sandbox);
    let api = server.api();

    let delete = cli(&sandbox, &["user", "delete", "alice"], None);
    let response = login_during(&api, "alice", "pw", delete).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(
        scalar::<i64>(&sandbox.db(), "SELECT count(*) FROM sessions", &[]),
        0
    );
}

#[tokio::test]
async fn a_login_racing_session_revoke_gets_no_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    let alice = add_slow_user(&sandbox, "alice", "pw");
    let mut server = slow_server(&sandbox);
    let api = server.api();

    let revoke = cli(&sandbox, &["session", "revoke", "--user", "alice"], None);
    let response = login_during(&api, "alice", "pw", revoke).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(sessions_of(&sandbox, alice), 0);
}

#[tokio::test]
async fn a_login_racing_logout_all_gets_no_session() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sandbox = Sandbox::new();
    let alice = add_slow_user(&sandbox, "alice", "pw");
    let mut server = slow_server(&sandbox);
    let api = server.api();
    let token = api.login_token("alice", "pw").await;

    let logout_all = async {
        let response = api
            .client
            .post(api.url("/logout?all=true"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    };
    let response = login_during(&api, "alice", "pw", logout_all).await;
    assert_lost_to_the_change(&mut server, response).await;
    assert_eq!(sessions_of(&sandbox, alice), 0);
    assert_eq!(
        api.verify_bearer(&token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
