//! Tests: shutdown. `SIGTERM` and `SIGINT` stop the real binary
//! gracefully: new connections are refused at once, a login in flight is
//! still answered and its session is in the file, the database is closed
//! (no `-wal` or `-shm` left), and the exit status is 0.
//! `server.shutdown_timeout` bounds that wait; `SIGQUIT` does not wait.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use rustix::process::Signal;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::helpers::{Api, Sandbox, Server};

const PASSWORD: &str = "correct horse battery staple";
/// argon2 passes over the SPEC's 19 MiB for a hash of about 1.5 s here
/// (~10 ms a pass; argon2 is optimised even in debug builds).
const SLOW: u32 = 150;
/// About 3.5 s: longer than a zero shutdown timeout takes to cut it off.
const SLOWER: u32 = 350;

/// A sandbox with `alice`, her password hashed cheaply, and a server on
/// it that hashes with `iterations`: her login then re-hashes her password
/// at that cost (an upgrade to the new parameters) before it answers, so
/// it is slow, and only the server's start and the login pay for it.
fn slow_login_server(iterations: u32, env: &[(&str, &str)]) -> (Sandbox, Server) {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", PASSWORD);
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("LATCHKEY_PASSWORD__MEMORY_KIB", "19456")
        .env("LATCHKEY_PASSWORD__ITERATIONS", iterations.to_string());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let server = Server::spawn(cmd);
    (sandbox, server)
}

/// Starts alice's login on a connection the server has already accepted
/// (so that it cannot be lost in the listen backlog), and returns it once
/// it is surely in flight.
async fn login_in_flight(api: &Api) -> JoinHandle<reqwest::Result<Response>> {
    let health = api.client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    health.text().await.unwrap(); // back to the pool, to be reused
    let (client, url) = (api.client.clone(), api.url("/login"));
    let login = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({ "username": "alice", "password": PASSWORD }))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !login.is_finished(),
        "the login was too fast to be caught in flight"
    );
    login
}

/// Waits until connecting to `address` is refused (at most 5 s).
async fn refused(address: SocketAddr) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
                _ => {
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "new connections are still accepted"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    })
    .await
    .unwrap();
}

/// `session list --user alice`, after the server is gone: her sessions.
fn sessions_of_alice(sandbox: &Sandbox) -> Vec<String> {
    let run = sandbox.latchkey(&["session", "list", "--user", "alice"], None);
    run.assert_ok();
    run.stdout.lines().skip(1).map(str::to_owned).collect()
}

fn address(server: &Server) -> SocketAddr {
    server.api().host().parse().expect("a loopback address")
}

async fn a_login_in_flight_is_answered_and_kept_when_the_server_stops_on(signal: Signal) {
    // Far more than the login needs, even on a busy machine where the
    // hashing threads (SCHED_IDLE) wait for every other process.
    let (sandbox, server) =
        slow_login_server(SLOW, &[("LATCHKEY_SERVER__SHUTDOWN_TIMEOUT", "60s")]);
    let api = server.api();
    let login = login_in_flight(&api).await;

    server.signal(signal);
    refused(address(&server)).await;
    assert!(
        !login.is_finished(),
        "the login finished before the listener closed: nothing was in flight"
    );
    let response = login
        .await
        .unwrap()
        .expect("the login in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string(), "{body}");

    let (code, _, log) = server.wait_for_exit();
    assert_eq!(code, 0, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("received; no new connections, waiting up to 60s")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("database closed")),
        "{log:#?}"
    );
    // Closed cleanly, the last user of the file: SQLite folded the WAL in.
    for suffix in ["-wal", "-shm"] {
        let path = sandbox.path(&format!("latchkey.db{suffix}"));
        assert!(!path.exists(), "{} was left behind", path.display());
    }
    // The answered login's session is in the file.
    let sessions = sessions_of_alice(&sandbox);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert!(
        sessions[0].contains("alice") && sessions[0].contains("127.0.0.1"),
        "{sessions:#?}"
    );
}

#[tokio::test]
async fn sigterm_refuses_new_connections_answers_the_login_in_flight_and_exits_0() {
    a_login_in_flight_is_answered_and_kept_when_the_server_stops_on(Signal::TERM).await;
}

#[tokio::test]
async fn sigint_is_as_graceful_as_sigterm() {
    a_login_in_flight_is_answered_and_kept_when_the_server_stops_on(Signal::INT).await;
}

#[tokio::test]
async fn a_request_still_running_at_the_shutdown_timeout_is_cut_off_and_the_exit_is_still_0() {
    let (sandbox, server) =
        slow_login_server(SLOWER, &[("LATCHKEY_SERVER__SHUTDOWN_TIMEOUT", "0s")]);
    let login = login_in_flight(&server.api()).await;
    server.signal(Signal::TERM);
    let (code, _, log) = server.wait_for_exit();
    assert_eq!(code, 0, "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("waiting up to 0s")),
        "{log:#?}"
    );
    // The default 10 s would have let it finish; "0s" did not.
    assert!(
        login.await.unwrap().is_err(),
        "the login was answered after all"
    );
    assert!(sessions_of_alice(&sandbox).is_empty());
}

#[tokio::test]
async fn sigquit_exits_at_once_without_waiting_for_the_login_in_flight() {
    let (sandbox, server) = slow_login_server(SLOW, &[]);
    let login = login_in_flight(&server.api()).await;
    server.signal(Signal::QUIT);
    let (code, _, log) = server.wait_for_exit();
    assert_eq!(code, 0, "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("SIGQUIT received; exiting")),
        "{log:#?}"
    );
    assert!(
        login.await.unwrap().is_err(),
        "the login was answered after all"
    );
    assert!(sessions_of_alice(&sandbox).is_empty());
}
