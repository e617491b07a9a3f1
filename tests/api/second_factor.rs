//! TOTP against the real server: enrollment, logins with a code or a
//! recovery code, replays and wrong codes, bans, `amr`, `two_factor`
//! rules, removal, new recovery codes and `user totp reset`.

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "alice's password";

/// `METHOD path` with a bearer token and a JSON body.
async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn login_with(app: &TestApp, password: &str, totp: Option<&str>) -> Response {
    let mut body = json!({ "username": "alice", "password": password });
    if let Some(code) = totp {
        body["totp"] = json!(code);
    }
    app.post_json("/login", &body).await
}

async fn token_of(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Alice with a confirmed factor: (her secret, her recovery codes, the
/// token that enrolled, now with `otp`). Her last used step is the current one.
async fn enrolled(app: &TestApp) -> (String, Vec<String>, String) {
    app.add_user("alice", PASSWORD);
    let token = app.login_token("alice", PASSWORD).await;
    let response = call(
        app,
        Method::POST,
        "/me/totp",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap().to_owned();
    let code = totp_code(&secret, 0);
    let response = call(
        app,
        Method::POST,
        "/me/totp/confirm",
        &token,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes, token)
}

#[tokio::test]
async fn enrollment_needs_the_password_and_counts_only_once_confirmed() {
    let app = spawn_app().await;
    app.add_user("alice", PASSWORD);
    let token = app.login_token("alice", PASSWORD).await;
    let begin = |body: Value| call(&app, Method::POST, "/me/totp", &token, body);
    assert_error(
        begin(json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let wrong = begin(json!({ "password": "not it" })).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let response = call(
        &app,
        Method::POST,
        "/me/totp",
        "",
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let body: Value = begin(json!({ "password": PASSWORD }))
        .await
        .json()
        .await
        .unwrap();
    let secret = body["secret"].as_str().unwrap();
    assert_eq!(base32_decode(secret).len(), 20, "a 160-bit secret");
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/latchkey%3Aalice?secret=")
            && uri.contains(secret)
            && uri.contains("issuer=latchkey"),
        "{uri}"
    );
    // Pending: nothing changed yet.
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["totp"], false);
    token_of(login_with(&app, PASSWORD, None).await).await;
    // A wrong code does not confirm it; the right one does.
    let wrong = call(
        &app,
        Method::POST,
        "/me/totp/confirm",
        &token,
        json!({ "code": "000000" }),
    )
    .await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let code = totp_code(secret, 0);
    let response = call(
        &app,
        Method::POST,
        "/me/totp/confirm",
        &token,
        json!({ "code": code }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let codes = body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["totp"], true);
    assert_eq!(me["session"]["amr"], json!(["pwd", "otp"]));
    // Nothing pending any more.
    let again = call(
        &app,
        Method::POST,
        "/me/totp/confirm",
        &token,
        json!({ "code": code }),
    )
    .await;
    assert_error(again, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_login_needs_the_code_only_after_a_correct_password_and_a_code_counts_once() {
    // Room for every wrong attempt below from one address.
    let app = spawn_app_with(|c| c.login.max_failures = 20).await;
    let (secret, recovery, _) = enrolled(&app).await;

    // The second factor is told only to whoever knows the password.
    let wrong = login_with(&app, "not it", None).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let body = assert_error(
        login_with(&app, PASSWORD, None).await,
        StatusCode::UNAUTHORIZED,
        "mfa_required",
    )
    .await;
    assert!(
        body["error_description"].as_str().unwrap().contains("totp"),
        "{body}"
    );
    let next = totp_code(&secret, 1);
    let wrong = login_with(&app, "not it", Some(&next)).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let wrong = login_with(&app, PASSWORD, Some("123456")).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // The step enrollment used is spent; the next one is within the window.
    let replay = login_with(&app, PASSWORD, Some(&totp_code(&secret, 0))).await;
    assert_error(replay, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let token = token_of(login_with(&app, PASSWORD, Some(&next)).await).await;
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["amr"], json!(["pwd", "otp"]));
    let replay = login_with(&app, PASSWORD, Some(&next)).await;
    assert_error(replay, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    // A recovery code, typed in capitals, works once.
    let typed = recovery[3].to_uppercase();
    let token = token_of(login_with(&app, PASSWORD, Some(&typed)).await).await;
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["session"]["amr"], json!(["pwd", "otp"]));
    let again = login_with(&app, PASSWORD, Some(&recovery[3])).await;
    assert_error(again, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let events: Vec<String> = app.audit_trail().into_iter().map(|e| e.event).collect();
    assert!(events.contains(&"totp_enrolled".to_owned()), "{events:?}");
    assert!(
        events.contains(&"recovery_code_used".to_owned()),
        "{events:?}"
    );
    assert!(!app.audit_text().contains(&recovery[3]));
}

#[tokio::test]
async fn wrong_codes_count_toward_the_ban_and_a_missing_code_does_not() {
    let app = spawn_app_with(|c| c.login.max_failures = 3).await;
    let (secret, _, _) = enrolled(&app).await;
    for _ in 0..5 {
        let response = login_with(&app, PASSWORD, None).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "mfa_required").await;
    }
    for code in ["111111", "222222", "333333"] {
        let response = login_with(&app, PASSWORD, Some(code)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let banned = login_with(&app, PASSWORD, Some(&totp_code(&secret, 1))).await;
    assert_eq!(banned.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_two_factor_rule_lets_only_a_session_with_otp_through() {
    let app = spawn_app_from_toml(
        "[session]\ncookie_domain = \".example.com\"\n\
             [[access.rules]]\npaths = [\"/admin\"]\npolicy = \"two_factor\"\n",
    )
    .await;
    app.add_user("bob", "bob's password");
    let bob = app.login_token("bob", "bob's password").await;
    let (secret, _, enrolling) = enrolled(&app).await;
    let with_otp = token_of(login_with(&app, PASSWORD, Some(&totp_code(&secret, 1))).await).await;
    let ask = |token: String, path: &'static str, rd: bool| {
        let app = &app;
        async move {
            let url = if rd {
                // The login page on the host the proxy names.
                "/verify?rd=https%3A%2F%2Fauth.example.com%2Flogin"
            } else {
                "/verify"
            };
            app.client
                .get(app.url(url))
                .bearer_auth(token)
                .header("X-Forwarded-Host", "app.example.com")
                .header("X-Forwarded-Uri", path)
                .header("X-Forwarded-Proto", "https")
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        header(&ask(with_otp.clone(), "/admin", false).await, "remote-user"),
        "alice"
    );
    // Enrolling proved a code: that session has otp too.
    assert_eq!(
        ask(enrolling, "/admin", false).await.status(),
        StatusCode::OK
    );
    // A password-only session is as none there, and fine elsewhere.
    let response = ask(bob.clone(), "/admin", false).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(
        ask(bob.clone(), "/public", false).await.status(),
        StatusCode::OK
    );
    let response = ask(bob, "/admin", true).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = header(&response, "location");
    assert!(
        location.starts_with("https://auth.example.com/login?rd="),
        "{location}"
    );
}

#[tokio::test]
async fn removing_the_factor_and_replacing_recovery_codes_need_the_password_and_a_code() {
    let app = spawn_app().await;
    let (secret, old_codes, token) = enrolled(&app).await;
    let no_code = call(
        &app,
        Method::POST,
        "/me/recovery-codes",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_error(no_code, StatusCode::UNAUTHORIZED, "mfa_required").await;
    let response = call(
        &app,
        Method::POST,
        "/me/recovery-codes",
        &token,
        json!({ "password": PASSWORD, "code": totp_code(&secret, 1) }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let new_codes = body["recovery_codes"].as_array().unwrap();
    assert_eq!(new_codes.len(), 10);
    // The old set is gone.
    let old = login_with(&app, PASSWORD, Some(&old_codes[0])).await;
    assert_error(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let wrong = call(
        &app,
        Method::DELETE,
        "/me/totp",
        &token,
        json!({ "password": "no", "code": "x" }),
    )
    .await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let code = new_codes[0].as_str().unwrap();
    let response = call(
        &app,
        Method::DELETE,
        "/me/totp",
        &token,
        json!({ "password": PASSWORD, "code": code }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    token_of(login_with(&app, PASSWORD, None).await).await;
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["totp"], false);
    let again = call(
        &app,
        Method::DELETE,
        "/me/totp",
        &token,
        json!({ "password": PASSWORD }),
    )
    .await;
    assert_error(again, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[test]
fn user_totp_reset_removes_a_lost_factor_and_ends_the_sessions() {
    let sandbox = Sandbox::new();
    let alice = sandbox.add_user("alice", "pw");
    {
        let conn = sandbox.store_connection();
        latchkey::store::totp::activate(&conn, alice, &[9; 20], 0, 1).unwrap();
    }
    let t = now();
    sandbox.insert_session(1, alice, t, t + 3600);
    let list = sandbox.latchkey(&["user", "list"], None);
    assert!(
        list.stdout.lines().nth(1).unwrap().contains(" yes"),
        "{}",
        list.stdout
    );
    let run = sandbox.latchkey(&["user", "totp", "reset", "ALICE"], None);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "Removed the second factor of \"alice\"; ended 1 session(s).\n"
    );
    assert!(sandbox.session_ids().is_empty());
    let list = sandbox.latchkey(&["user", "list"], None);
    assert!(
        list.stdout.lines().nth(1).unwrap().contains(" no"),
        "{}",
        list.stdout
    );
    let message = sandbox
        .latchkey(&["user", "totp", "reset", "alice"], None)
        .assert_error()
        .to_owned();
    assert_eq!(message, "error: user \"alice\" has no second factor");
    let audit = sandbox.latchkey(&["audit"], None).stdout;
    assert!(audit.contains("totp_reset"), "{audit}");
}

#[tokio::test]
async fn re_enrolling_needs_a_current_code_and_the_old_factor_holds_until_confirmed() {
    let app = spawn_app_with(|c| c.login.max_failures = 20).await;
    let (old_secret, _, token) = enrolled(&app).await;
    let body = json!({ "password": PASSWORD });
    let no_code = call(&app, Method::POST, "/me/totp", &token, body).await;
    assert_error(no_code, StatusCode::UNAUTHORIZED, "mfa_required").await;
    let body = json!({ "password": PASSWORD, "code": totp_code(&old_secret, 1) });
    let response = call(&app, Method::POST, "/me/totp", &token, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let new_secret = response.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_secret, old_secret);
    // Pending: the new app's codes do not log in yet.
    let new_code = login_with(&app, PASSWORD, Some(&totp_code(&new_secret, 0))).await;
    assert_error(new_code, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let old_code = totp_code(&old_secret, 1);
    let replay = login_with(&app, PASSWORD, Some(&old_code)).await;
    // Step +1 was spent by the re-enrollment itself.
    assert_error(replay, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let confirm = json!({ "code": totp_code(&new_secret, 0) });
    let response = call(&app, Method::POST, "/me/totp/confirm", &token, confirm).await;
    assert_eq!(response.status(), StatusCode::OK);
    let old_app = login_with(&app, PASSWORD, Some(&totp_code(&old_secret, 1))).await;
    assert_error(old_app, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    token_of(login_with(&app, PASSWORD, Some(&totp_code(&new_secret, 1))).await).await;
}
