//! Tests: the log. With `log.format = "json"` every line the real binary
//! writes is one JSON object with `timestamp`, `level`, `message` and the
//! event's fields, and lines about a request carry that request's id;
//! `log.level` decides how much is written, and `RUST_LOG`, when it names a
//! level, overrides it.

use reqwest::StatusCode;
use serde_json::{Map, Value};

use crate::helpers::{parse_json_log, Sandbox, Server};

const PASSWORD: &str = "correct horse battery staple";
/// Typed into the username field by mistake; no such account.
const NO_ACCOUNT: &str = "nobody-at-all";

/// The lines whose `message` is `message`.
fn with_message<'l>(lines: &'l [Map<String, Value>], message: &str) -> Vec<&'l Map<String, Value>> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test]
async fn every_line_of_a_json_format_run_is_one_object_and_request_lines_carry_their_id() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", PASSWORD);
    let mut cmd = sandbox.serve_command(&["serve"]);
    // From the config keys alone (no RUST_LOG): the most verbose level, so
    // that the lines of actix and of every layer are in the run.
    cmd.env("LATCHKEY_LOG__FORMAT", "json")
        .env("LATCHKEY_LOG__LEVEL", "trace");
    let server = Server::spawn(cmd);
    let api = server.api();
    let http = &api.client;

    let token = api.login_token("alice", PASSWORD).await;
    let wrong = api.login("alice", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let form = http
        .post(server.url("/login"))
        .form(&[("username", NO_ACCOUNT), ("password", "x\"y\\z\nw")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    let bad = http
        .post(server.url("/login"))
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let verify = http
        .get(server.url("/verify"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), StatusCode::OK);
    let anonymous = http.get(server.url("/verify")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let missing = http.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let logout = http
        .post(server.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let (stdout, stderr) = server.stop();
    assert!(stdout.is_empty(), "{stdout:#?}");
    // Every line, whoever wrote it (latchkey, actix, the `log` crate bridge).
    let lines = parse_json_log(&stderr);

    // It is the verbose log of this very run.
    let listening = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("latchkey listening on http://"))
        })
        .expect("the listening line");
    assert_eq!(listening["level"], "info");
    assert!(!listening.contains_key("request_id"), "{listening:?}");
    assert!(
        lines.iter().any(|l| l["level"] == "trace"),
        "log.level = \"trace\" wrote no trace line: {stderr:#?}"
    );

    let logins = with_message(&lines, "login");
    assert_eq!(logins.len(), 1, "{stderr:#?}");
    assert_eq!(logins[0]["user"], "alice");
    assert_eq!(logins[0]["ip"], "127.0.0.1");
    assert_eq!(logins[0]["level"], "info");
    let refusals = with_message(&lines, "login refused");
    assert_eq!(refusals.len(), 2, "{stderr:#?}");
    assert_eq!(refusals[0]["user"], "alice");
    assert!(!refusals[1].contains_key("user"), "{:?}", refusals[1]);
    assert!(refusals.iter().all(|l| l["ip"] == "127.0.0.1"));

    // One id per request, on each of its lines, a different one each time.
    let ids: Vec<u64> = logins
        .iter()
        .chain(&refusals)
        .map(|l| {
            l.get("request_id")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("no request_id on {l:?}"))
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

/// `latchkey serve` with `log.level = level` (and `RUST_LOG` when given);
/// returns the log of a start and one failed login.
async fn log_of_a_run(level: &str, rust_log: Option<&str>) -> Vec<String> {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", PASSWORD);
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("LATCHKEY_LOG__LEVEL", level);
    if let Some(value) = rust_log {
        cmd.env("RUST_LOG", value);
    }
    let server = Server::spawn(cmd);
    let wrong = server.api().login("alice", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    server.stop().1
}

fn has_level(log: &[String], level: &str) -> bool {
    log.iter().any(|line| line.contains(&format!(" {level} ")))
}

#[tokio::test]
async fn log_level_sets_the_verbosity_and_rust_log_overrides_it_only_with_a_level_name() {
    // log.level alone.
    let trace = log_of_a_run("trace", None).await;
    assert!(has_level(&trace, "TRACE"), "{trace:#?}");
    let info = log_of_a_run("info", None).await;
    assert!(
        !has_level(&info, "TRACE") && !has_level(&info, "DEBUG"),
        "{info:#?}"
    );
    // A text line about a request ends with its id.
    let refused = info
        .iter()
        .find(|l| l.contains("login refused"))
        .expect("the failed login");
    assert!(
        refused.contains(" INFO login refused user=\"alice\" ip=127.0.0.1")
            && refused
                .rsplit_once(" request_id=")
                .is_some_and(|(_, id)| id.parse::<u64>().is_ok()),
        "{refused}"
    );

    // RUST_LOG naming a level wins, both ways.
    let quieted = log_of_a_run("trace", Some("info")).await;
    assert!(!has_level(&quieted, "TRACE"), "{quieted:#?}");
    let raised = log_of_a_run("info", Some("trace")).await;
    assert!(has_level(&raised, "TRACE"), "{raised:#?}");

    // Anything else in RUST_LOG (per-module filters) is ignored, and said so.
    let ignored = log_of_a_run("trace", Some("actix_web=info")).await;
    assert!(has_level(&ignored, "TRACE"), "{ignored:#?}");
    assert!(
        ignored
            .iter()
            .any(|l| l.contains(" WARN ")
                && l.contains("RUST_LOG=\"actix_web=info\" is not a level")),
        "{ignored:#?}"
    );
}
