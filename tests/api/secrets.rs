//! Tests: secrets. The real binary, logging at its most verbose (`trace`),
//! goes through a whole session of use; afterwards no password, token,
//! token hash or client secret appears anywhere in its log, in either log
//! format, and no raw token or secret in the database file.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{execute, parse_json_log, scalar, sha256, Run, Sandbox, Server};

const COOKIE: &str = "latchkey_session";
const PASSWORD: &str = "Tr0ub4dor&3 alice's right password";
const WRONG_PASSWORD: &str = "hunter2 alice's wrong password";
/// A wrong password shaped like a token: a logger that masks "passwords" but
/// prints things that look like ids would leak it.
const WRONG_TOKEN_LIKE_PASSWORD: &str = "q7ZK2vR9xLm4Tn8WcB1yHs6Jd3Fp0GaE5uNiOkYrXe0";
/// Not a token of this server, but a client's credential all the same.
const GARBAGE_TOKEN: &str = "Zm9vYmFyYmF6cXV4LWdhcmJhZ2UtdG9rZW4tZm9yLWxvZ3M";

/// The two `log.format`s.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// `latchkey ARGS` in `sandbox`, logging at `trace` in `format`, to completion.
fn latchkey_traced(sandbox: &Sandbox, format: Format, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = sandbox.command(args);
    cmd.env("RUST_LOG", "trace")
        .env("LATCHKEY_LOG__FORMAT", format.name());
    let run = execute(cmd, stdin.map(str::as_bytes));
    run.assert_ok();
    run
}

/// `latchkey serve` in `sandbox`, logging at `trace` in `format`.
fn traced_server(sandbox: &Sandbox, format: Format) -> Server {
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("RUST_LOG", "trace")
        .env("LATCHKEY_LOG__FORMAT", format.name());
    Server::spawn(cmd)
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("request")
}

/// Every form in which a secret could plausibly be written out: as is, and
/// for tokens and client secrets their SHA-256 (what the database holds) in
/// hex of either case and in each base64 flavour.
fn forms(secret: &str, hashed: bool) -> Vec<String> {
    // As is, and as a quoted field would escape it (Debug in text, JSON).
    let json = serde_json::to_string(secret).unwrap();
    let debug = format!("{secret:?}");
    let mut forms = vec![
        secret.to_owned(),
        json[1..json.len() - 1].to_owned(),
        debug[1..debug.len() - 1].to_owned(),
    ];
    if hashed {
        let hash = sha256(secret);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            forms.push(engine.encode(hash));
        }
    }
    forms
}

#[tokio::test]
async fn no_password_token_token_hash_or_client_secret_is_ever_logged_even_at_trace() {
    no_secret_is_logged_through_a_whole_session(Format::Text).await;
}

#[tokio::test]
async fn no_secret_is_logged_in_the_json_format_either() {
    no_secret_is_logged_through_a_whole_session(Format::Json).await;
}

async fn no_secret_is_logged_through_a_whole_session(format: Format) {
    let sandbox = Sandbox::new();
    // On an empty database, so that serve creates admin and prints its password.
    let mut server = traced_server(&sandbox, format);
    let admin_password = server.admin_password();
    let api = server.api();
    let http = &api.client;

    // The administrator's side, beside the running server and also at trace.
    let user_add = latchkey_traced(
        &sandbox,
        format,
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    let client_add = latchkey_traced(&sandbox, format, &["client", "add", "proxy"], None);
    let client_secret = client_add.stdout.trim_end().to_owned();
    assert_eq!(client_secret.len(), 43, "{client_add:#?}");
    let basic = STANDARD.encode(format!("proxy:{client_secret}"));
    let wrong_basic = STANDARD.encode(format!("proxy:{WRONG_TOKEN_LIKE_PASSWORD}"));

    let admin_token = api.login_token("admin", &admin_password).await;
    let json_login = api.login_token("alice", PASSWORD).await;
    let form = send(http.post(server.url("/login")).form(&[
        ("username", "alice"),
        ("password", PASSWORD),
        ("rd", "/after/login?x=1"),
    ]))
    .await;
    assert_eq!(form.status(), StatusCode::SEE_OTHER);
    let cookie = form
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let form_login = cookie
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .expect("the session cookie")
        .to_owned();

    // Failures are where loggers like to say what was tried.
    for password in [WRONG_PASSWORD, WRONG_TOKEN_LIKE_PASSWORD] {
        let wrong = send(
            http.post(server.url("/login"))
                .json(&json!({ "username": "alice", "password": password })),
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let wrong_form = send(http.post(server.url("/login")).form(&[
        ("username", "alice"),
        ("password", WRONG_PASSWORD),
        ("rd", "/after/login"),
    ]))
    .await;
    assert_eq!(wrong_form.status(), StatusCode::UNAUTHORIZED);

    let verify = send(http.get(server.url("/verify")).bearer_auth(&json_login)).await;
    assert_eq!(verify.status(), StatusCode::OK);
    let verify = send(
        http.get(server.url("/verify"))
            .header("Cookie", format!("{COOKIE}={form_login}")),
    )
    .await;
    assert_eq!(verify.status(), StatusCode::OK);

    let introspect = send(
        http.post(server.url("/introspect"))
            .header("Authorization", format!("Basic {basic}"))
            .form(&[("token", json_login.as_str())]),
    )
    .await;
    assert_eq!(introspect.status(), StatusCode::OK);
    let body: Value = introspect.json().await.unwrap();
    assert_eq!(body["active"], true, "{body}");
    let rejected = send(
        http.post(server.url("/introspect"))
            .header("Authorization", format!("Basic {wrong_basic}"))
            .form(&[("token", json_login.as_str())]),
    )
    .await;
    assert_eq!(rejected.status(), StatusCode::UNAUTHORIZED);

    let me = send(http.get(server.url("/me")).bearer_auth(&json_login)).await;
    assert_eq!(me.status(), StatusCode::OK);
    let sessions: Value = send(http.get(server.url("/sessions")).bearer_auth(&json_login))
        .await
        .json()
        .await
        .unwrap();
    let other = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .expect("the form login's session")["id"]
        .as_i64()
        .unwrap();
    let deleted = send(
        http.delete(server.url(&format!("/sessions/{other}")))
            .bearer_auth(&json_login),
    )
    .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let verify = send(
        http.get(server.url("/verify"))
            .header("Cookie", format!("{COOKIE}={form_login}")),
    )
    .await;
    assert_eq!(verify.status(), StatusCode::UNAUTHORIZED);

    let logout = send(http.post(server.url("/logout")).bearer_auth(&json_login)).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let last_login = api.login_token("alice", PASSWORD).await;
    let logout_all = send(
        http.post(server.url("/logout?all=true"))
            .header("Cookie", format!("{COOKIE}={last_login}")),
    )
    .await;
    assert_eq!(logout_all.status(), StatusCode::NO_CONTENT);

    for path in ["/verify", "/me", "/sessions"] {
        let garbage = send(http.get(server.url(path)).bearer_auth(GARBAGE_TOKEN)).await;
        assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let garbage = send(
        http.post(server.url("/introspect"))
            .header("Authorization", format!("Basic {basic}"))
            .form(&[("token", GARBAGE_TOKEN)]),
    )
    .await;
    assert_eq!(garbage.status(), StatusCode::OK);

    let (stdout, log_lines) = server.stop();
    let (stdout, log) = (stdout.join("\n"), log_lines.join("\n"));

    // An empty or silent log would pass everything below: make sure it is
    // the verbose log of this very session.
    assert!(log.contains("latchkey listening on"), "{log}");
    match format {
        Format::Text => {
            assert!(
                log.contains("login user=\"alice\""),
                "no login logged: {log}"
            );
            assert!(
                log.contains("login refused"),
                "no failed login logged: {log}"
            );
            assert!(
                log.contains("TRACE") || log.contains("DEBUG"),
                "RUST_LOG=trace did not make the log verbose: {log}"
            );
        }
        Format::Json => {
            let lines = parse_json_log(&log_lines);
            let logged = |message: &str| lines.iter().any(|l| l["message"] == message);
            assert!(
                lines
                    .iter()
                    .any(|l| l["message"] == "login" && l["user"] == "alice"),
                "no login logged: {log}"
            );
            assert!(logged("login refused"), "no failed login logged: {log}");
            assert!(
                lines
                    .iter()
                    .any(|l| l["level"] == "trace" || l["level"] == "debug"),
                "RUST_LOG=trace did not make the log verbose: {log}"
            );
        }
    }

    // Printed once on purpose, on stdout, and never logged.
    assert_eq!(
        stdout.matches(admin_password.as_str()).count(),
        1,
        "{stdout}"
    );

    let passwords = [
        PASSWORD,
        WRONG_PASSWORD,
        WRONG_TOKEN_LIKE_PASSWORD,
        admin_password.as_str(),
    ];
    let tokens = [
        admin_token.as_str(),
        json_login.as_str(),
        form_login.as_str(),
        last_login.as_str(),
        GARBAGE_TOKEN,
    ];
    let mut secrets: Vec<(&str, String)> = Vec::new();
    for password in passwords {
        secrets.extend(forms(password, false).into_iter().map(|f| ("password", f)));
    }
    for token in tokens {
        secrets.extend(forms(token, true).into_iter().map(|f| ("token", f)));
    }
    secrets.extend(
        forms(&client_secret, true)
            .into_iter()
            .map(|f| ("client secret", f)),
    );
    secrets.push(("Basic credentials", basic.clone()));
    secrets.push(("Basic credentials", wrong_basic.clone()));

    for (kind, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a {kind} is in the server log: {secret:?}\n{log}"
        );
        if *secret != admin_password {
            assert!(
                !stdout.contains(secret.as_str()),
                "a {kind} is on stdout: {secret:?}\n{stdout}"
            );
        }
    }
    // The admin commands print only what they must: the secret once, on stdout.
    for (kind, secret) in &secrets {
        let printed = |text: &str| text.contains(secret.as_str());
        assert!(
            !printed(&user_add.stdout) && !printed(&user_add.stderr),
            "{kind} by user add"
        );
        assert!(
            !printed(&client_add.stderr),
            "{kind} on client add's stderr"
        );
        if *secret != client_secret {
            assert!(
                !printed(&client_add.stdout),
                "{kind} on client add's stdout"
            );
        }
    }

    // The hashes searched for above are really the ones the server stores.
    let db = sandbox.db();
    let stored: i64 = scalar(
        &db,
        "SELECT count(*) FROM sessions WHERE token_hash = ?1",
        latchkey::db_params![&sha256(&admin_token)[..]],
    );
    assert_eq!(
        stored, 1,
        "the admin's session is stored under another hash"
    );
    let stored: Vec<u8> = scalar(
        &db,
        "SELECT secret_hash FROM clients WHERE id = 'proxy'",
        &[],
    );
    assert_eq!(stored, sha256(&client_secret));
    drop(db);

    // SPEC: only hashes are stored; the raw values never touch the file.
    let bytes = sandbox.database_bytes();
    assert!(!bytes.is_empty());
    for secret in tokens
        .iter()
        .chain(&passwords)
        .chain([&client_secret.as_str()])
    {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} is in the database file"
        );
    }
}

/// Typed into the username field by mistake: shaped like a password, and a
/// valid username as far as the rules go.
const PASSWORD_AS_USERNAME: &str = "Xk9#vLq2!pass-typed-as-username";

#[tokio::test]
async fn a_failed_login_logs_the_address_and_only_an_existing_username() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", PASSWORD);
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("RUST_LOG", "trace")
        .env("LATCHKEY_LOGIN__MAX_FAILURES", "4");
    let server = Server::spawn(cmd);
    let http = &server.api().client;
    let login = |username: &'static str, password: &'static str| {
        http.post(server.url("/login"))
            .json(&json!({ "username": username, "password": password }))
    };

    // An account that exists may be named.
    let wrong = send(login("alice", WRONG_PASSWORD)).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // The mistyped name, as JSON and as a form, until the fourth failure
    // bans the address; the banned attempt is refused (and logged) too.
    for _ in 0..2 {
        let wrong = send(login(PASSWORD_AS_USERNAME, "alice")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let form = send(
        http.post(server.url("/login"))
            .form(&[("username", PASSWORD_AS_USERNAME), ("password", "alice")]),
    )
    .await;
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    let banned = send(login(PASSWORD_AS_USERNAME, "alice")).await;
    assert_eq!(banned.status(), StatusCode::TOO_MANY_REQUESTS);

    let (_, log) = server.stop();
    let log = log.join("\n");
    assert!(
        !log.contains(PASSWORD_AS_USERNAME),
        "a username that is no account is in the log:\n{log}"
    );
    let refusals: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("login refused"))
        .collect();
    assert_eq!(refusals.len(), 5, "{log}");
    assert!(
        refusals.iter().all(|line| line.contains("ip=127.0.0.1")),
        "a refusal without the client address:\n{log}"
    );
    assert!(
        refusals[0].contains("user=\"alice\""),
        "the existing account is not named:\n{log}"
    );
    assert!(
        refusals[1..].iter().all(|line| !line.contains("user=")),
        "a name that is no account was logged:\n{log}"
    );
}
