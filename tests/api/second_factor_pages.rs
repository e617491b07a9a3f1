//! The second factor in a browser, without JavaScript: the form login's
//! code page, the step-up of a one-factor session on the login page, and
//! `/account` (enroll with a QR code, recovery codes, removal).

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "alice's password";
/// Rules needing a second factor under /admin, on hosts sharing the cookie.
const RULES: &str = "[session]\ncookie_domain = \".example.com\"\n\
     [[access.rules]]\npaths = [\"/admin\"]\npolicy = \"two_factor\"\n";
const ADMIN_URL: &str = "https://app.example.com/admin";

/// Enrolls alice through the JSON API with `token`; returns her secret.
/// The current step is then used.
async fn enroll(app: &TestApp, token: &str) -> String {
    let begin = app
        .client
        .post(app.url("/me/totp"))
        .bearer_auth(token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let body: Value = begin.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap().to_owned();
    let confirm = app
        .client
        .post(app.url("/me/totp/confirm"))
        .bearer_auth(token)
        .json(&json!({ "code": totp_code(&secret, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), StatusCode::OK);
    secret
}

/// A 6-digit code that is none of the three the server accepts now.
fn wrong_code(secret: &str) -> String {
    let right: Vec<String> = (-1..=1).map(|o| totp_code(secret, o)).collect();
    (0..4)
        .map(|i| format!("{:06}", 123_456 + i))
        .find(|code| !right.contains(code))
        .unwrap()
}

/// The page's challenge; fails the test when the page has none.
async fn challenge_of(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let page = response.text().await.unwrap();
    let challenge =
        field_value(&page, "challenge").unwrap_or_else(|| panic!("no challenge in {page}"));
    (status, challenge)
}

async fn answer(app: &TestApp, challenge: &str, code: &str, rd: &str) -> Response {
    app.login_form(&[("challenge", challenge), ("totp", code), ("rd", rd)])
        .await
}

async fn amr_of(app: &TestApp, token: &str) -> Value {
    let me: Value = app.get_bearer("/me", token).await.json().await.unwrap();
    me["session"]["amr"].clone()
}

#[tokio::test]
async fn a_form_login_asks_for_the_code_on_a_second_page_with_single_use_state() {
    let app = spawn_app().await;
    app.add_user("alice", PASSWORD);
    let secret = enroll(&app, &app.login_token("alice", PASSWORD).await).await;
    let first = app
        .login_form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", "/after"),
        ])
        .await;
    assert_eq!(app.cookie_token(&first), None, "no session before the code");
    assert_eq!(header(&first, "cache-control"), "no-store");
    let page = first.text().await.unwrap();
    let challenge = field_value(&page, "challenge").expect("the code page");
    assert_eq!(field_value(&page, "rd").as_deref(), Some("/after"));
    assert!(page.contains("autocomplete=\"one-time-code\""));
    assert!(
        !page.contains("type=\"password\""),
        "the password is not asked again"
    );
    // Stored only as its hash, dead in five minutes.
    let (hash, expires_at): (Vec<u8>, i64) = app.scalar(
        "SELECT challenge_hash, expires_at FROM login_challenges",
        &[],
    );
    assert_eq!(hash, sha256(&challenge));
    assert!(
        (now() + 295..=now() + 300).contains(&expires_at),
        "{expires_at}"
    );

    // A wrong code: 401, the page again with a new challenge; the old one is spent.
    let (status, next) =
        challenge_of(answer(&app, &challenge, &wrong_code(&secret), "/after").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_ne!(next, challenge);
    let spent = answer(&app, &challenge, &totp_code(&secret, 1), "/after").await;
    assert_eq!(spent.status(), StatusCode::UNAUTHORIZED);
    let page = spent.text().await.unwrap();
    assert!(
        page.contains("name=\"password\""),
        "back to the password: {page}"
    );
    let expires: i64 = app.scalar("SELECT expires_at FROM login_challenges", &[]);
    assert_eq!(expires, expires_at, "a new challenge keeps the deadline");

    // The right code: the session, with otp, and the redirect.
    let done = answer(&app, &next, &totp_code(&secret, 1), "/after").await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&done, "location"), "/after");
    let token = app.cookie_token(&done).expect("the session cookie");
    assert_eq!(amr_of(&app, &token).await, json!(["pwd", "otp"]));
    let again = answer(&app, &next, &totp_code(&secret, 1), "/after").await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.cookie_token(&again), None);
    let left: i64 = app.scalar("SELECT count(*) FROM login_challenges", &[]);
    assert_eq!(left, 0);

    let audit = app.audit_text();
    assert!(audit.contains("wrong one-time code"), "{audit}");
    assert!(audit.contains("password and TOTP code"), "{audit}");
    assert!(!audit.contains(&challenge) && !audit.contains(&next));
}

#[tokio::test]
async fn wrong_codes_on_the_code_page_count_toward_the_ban() {
    let app = spawn_app_with(|c| c.login.max_failures = 3).await;
    app.add_user("alice", PASSWORD);
    let secret = enroll(&app, &app.login_token("alice", PASSWORD).await).await;
    let first = app
        .login_form(&[("username", "alice"), ("password", PASSWORD)])
        .await;
    let (status, mut challenge) = challenge_of(first).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        let (status, next) =
            challenge_of(answer(&app, &challenge, &wrong_code(&secret), "/").await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        challenge = next;
    }
    let banned = answer(&app, &challenge, &totp_code(&secret, 1), "/").await;
    assert_eq!(banned.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&banned, "retry-after").is_empty());
    assert_eq!(app.cookie_token(&banned), None);
    // The password page is banned too: the ban is the username's.
    let response = app.login("alice", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_one_factor_session_sent_back_by_a_two_factor_rule_is_stepped_up() {
    let app = spawn_app_from_toml(RULES).await;
    app.add_user("alice", PASSWORD);
    // A session from before the factor existed: password only.
    let old = app.login_token("alice", PASSWORD).await;
    let logged_out = app.login_token("alice", PASSWORD).await;
    let (_, old_max) = app.stored_expiry(&old).unwrap();
    let secret = enroll(&app, &app.login_token("alice", PASSWORD).await).await;
    assert_eq!(amr_of(&app, &old).await, json!(["pwd"]));
    let login_page = |rd: &'static str, token: String| {
        let app = &app;
        async move {
            let path = format!("/login?rd={}", encode(rd));
            app.get_cookie(&path, &token).await.text().await.unwrap()
        }
    };
    // Only where the rule wants more than the session has.
    let page = login_page(ADMIN_URL, old.clone()).await;
    let challenge = field_value(&page, "challenge").expect("the step-up page");
    assert!(!page.contains("name=\"password\""));
    for plain in [
        login_page("https://app.example.com/public", old.clone()).await,
        login_page(ADMIN_URL, "no-such-session".into()).await,
    ] {
        assert!(plain.contains("name=\"password\"") && !plain.contains("challenge"));
    }
    let stored: Option<i64> = app.scalar("SELECT replaces_session FROM login_challenges", &[]);
    assert_eq!(stored, Some(app.session_id(&old)));

    let done = answer(&app, &challenge, &totp_code(&secret, 1), ADMIN_URL).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&done, "location"), ADMIN_URL);
    let stepped = app.cookie_token(&done).unwrap();
    assert_ne!(stepped, old, "a new token: the one-factor one is replaced");
    assert_eq!(amr_of(&app, &stepped).await, json!(["pwd", "otp"]));
    assert_eq!(
        app.get_bearer("/me", &old).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let verify = |token: String| {
        let app = &app;
        async move {
            let headers = [
                ("X-Forwarded-Host", "app.example.com"),
                ("X-Forwarded-Uri", "/admin"),
                ("X-Forwarded-Proto", "https"),
            ];
            app.verify_proxied(Some(&token), &headers).await.status()
        }
    };
    assert_eq!(verify(stepped.clone()).await, StatusCode::OK);
    // A step-up proves a code, not the password: it ends no later than the
    // session it replaced would have.
    let (_, stepped_max) = app.stored_expiry(&stepped).unwrap();
    assert!(stepped_max <= old_max, "{stepped_max} > {old_max}");

    // The step-up of a session logged out meanwhile makes nothing.
    let page = login_page(ADMIN_URL, logged_out.clone()).await;
    let challenge = field_value(&page, "challenge").expect("the step-up page");
    assert_eq!(
        app.logout_bearer(&logged_out).await.status(),
        StatusCode::NO_CONTENT
    );
    let late = answer(&app, &challenge, &totp_code(&secret, 1), ADMIN_URL).await;
    assert_eq!(late.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.cookie_token(&late), None);
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_user_without_a_factor_is_led_to_enrollment_on_the_account_page_and_back() {
    let app = spawn_app_from_toml(RULES).await;
    app.add_user("alice", PASSWORD);
    let done = app
        .login_form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", ADMIN_URL),
        ])
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let token = app.cookie_token(&done).unwrap();
    // Sent back by the rule: to enrollment, carrying where it was going.
    let back = app
        .get_cookie(&format!("/login?rd={}", encode(ADMIN_URL)), &token)
        .await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    let account_path = header(&back, "location");
    assert_eq!(account_path, format!("/account?rd={}", encode(ADMIN_URL)));

    let page = app.get_cookie(&account_path, &token).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(header(&page, "cache-control"), "no-store");
    let page = page.text().await.unwrap();
    assert_eq!(
        element_text(&page, "account-user").as_deref(),
        Some("alice")
    );
    assert!(page.contains("action=\"/account/totp\""), "{page}");
    assert!(
        !page.contains("id=\"continue\""),
        "not before the factor is there"
    );

    let form = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let (app, token) = (&app, token.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = app.post_form_cookie(path, &token, &fields).await;
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };
    let rd = || ("rd", ADMIN_URL.to_owned());
    let (status, _) = form("/account/totp", vec![("password", "wrong".into()), rd()]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, page) = form("/account/totp", vec![("password", PASSWORD.into()), rd()]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<svg class=\"qr\""), "an inline SVG QR code");
    assert!(!page.contains("<script"));
    let secret = element_text(&page, "totp-secret").expect("the secret, for typing");
    assert_eq!(base32_decode(&secret).len(), 20);
    let uri = element_text(&page, "totp-uri").unwrap();
    assert!(uri.starts_with("otpauth://totp/latchkey%3Aalice?secret=") && uri.contains(&secret));

    // A wrong code shows the same secret again; the right one turns it on.
    let (status, page) = form(
        "/account/totp/confirm",
        vec![("code", wrong_code(&secret)), rd()],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(element_text(&page, "totp-secret"), Some(secret.clone()));
    let code = totp_code(&secret, 0);
    let (status, page) = form("/account/totp/confirm", vec![("code", code), rd()]).await;
    assert_eq!(status, StatusCode::OK);
    let codes = list_items(&page, "recovery-codes");
    assert_eq!(codes.len(), 10, "{page}");
    assert!(
        page.contains(&format!("href=\"{ADMIN_URL}\"")),
        "continue to where it was going"
    );
    // The session that enrolled proved a code: the rule lets it through.
    let headers = [
        ("X-Forwarded-Host", "app.example.com"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Proto", "https"),
    ];
    let verify = app.verify_proxied(Some(&token), &headers).await;
    assert_eq!(verify.status(), StatusCode::OK);
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["totp"], true);

    // New recovery codes, then removal, each with the password and a code.
    let (status, _) = form(
        "/account/recovery-codes",
        vec![("password", PASSWORD.into())],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a code is needed too");
    let proof = |code: &str| vec![("password", PASSWORD.to_owned()), ("code", code.to_owned())];
    let (status, page) = form("/account/recovery-codes", proof(&codes[0])).await;
    assert_eq!(status, StatusCode::OK);
    let new_codes = list_items(&page, "recovery-codes");
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !codes.contains(c)));
    let (status, _) = form("/account/totp/remove", proof(&codes[1])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old codes are gone");
    let (status, page) = form("/account/totp/remove", proof(&new_codes[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Two-step verification is off."), "{page}");
    let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
    assert_eq!(me["totp"], false);
    let events: Vec<String> = app.audit_trail().into_iter().map(|e| e.event).collect();
    for event in [
        "totp_enrolled",
        "recovery_code_used",
        "recovery_codes_replaced",
        "totp_removed",
    ] {
        assert!(events.iter().any(|e| e == event), "{event} in {events:?}");
    }
}

#[tokio::test]
async fn the_account_page_needs_a_session_and_refuses_other_sites() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app.client.get(app.url("/account")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/login?rd=%2Faccount");
    let response = app
        .post_form_cookie(
            "/account/totp",
            "not-a-session",
            &[("password", "password-of-test")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    for site in [
        ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let response = app
            .client
            .post(app.url("/account/totp"))
            .header("Cookie", app.cookie(&token))
            .header(site.0, site.1)
            .form(&[("password", "password-of-test")])
            .send()
            .await
            .unwrap();
        assert_forbidden_json(response).await;
    }
    let pending: i64 = app.scalar("SELECT count(*) FROM totp_pending", &[]);
    assert_eq!(pending, 0, "nothing was begun");
}

async fn assert_forbidden_json(response: Response) {
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
}
