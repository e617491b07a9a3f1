//! `POST /login` (JSON and form) and `GET /login`: the token and cookie a
//! login hands out, redirects, the HTML form, equal answers for every kind of
//! failure, password limits and upgrades, brute-force limits, and what lands
//! in the database file.

use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const HOUR: i64 = 3600;
const WEEK: i64 = 7 * 24 * HOUR;

/// A `Set-Cookie` value taken apart: `name`, `value`, the attributes other
/// than `Max-Age` (as written), and `Max-Age`.
struct SetCookie {
    name: String,
    value: String,
    attributes: BTreeSet<String>,
    max_age: Option<i64>,
}

fn parse_set_cookie(text: &str) -> SetCookie {
    let mut parts = text.split("; ");
    let (name, value) = parts.next().unwrap().split_once('=').unwrap();
    let mut attributes = BTreeSet::new();
    let mut max_age = None;
    for part in parts {
        match part.strip_prefix("Max-Age=") {
            Some(secs) => {
                assert!(max_age.is_none(), "two Max-Age in {text:?}");
                max_age = Some(secs.parse().unwrap());
            }
            None => assert!(attributes.insert(part.to_owned()), "repeated {part}"),
        }
    }
    SetCookie {
        name: name.to_owned(),
        value: value.to_owned(),
        attributes,
        max_age,
    }
}

fn attrs(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn set_cookie(response: &reqwest::Response) -> SetCookie {
    let all: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(all.len(), 1, "exactly one Set-Cookie: {all:?}");
    parse_set_cookie(all[0].to_str().unwrap())
}

async fn body_text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

#[tokio::test]
async fn json_login_returns_a_bearer_token_with_expiries_from_the_configured_lifetimes() {
    let app = spawn_app().await;
    app.add_user("alice", "correct horse");
    let before = now();
    let response = app.login("alice", "correct horse").await;
    let after = now();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    let keys = keys_of(&body);
    assert_eq!(
        keys,
        BTreeSet::from([
            "access_token",
            "token_type",
            "expires_in",
            "expires_at",
            "max_expires_at"
        ])
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "{token}");
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(URL_SAFE_NO_PAD.decode(token).unwrap().len(), 32);
    assert_eq!(body["token_type"], "Bearer");
    let expires_at = body["expires_at"].as_i64().unwrap();
    let max_expires_at = body["max_expires_at"].as_i64().unwrap();
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(
        (before + HOUR..=after + HOUR).contains(&expires_at),
        "{body}"
    );
    assert!(
        (before + WEEK..=after + WEEK).contains(&max_expires_at),
        "{body}"
    );
    assert!(
        (expires_at - after..=expires_at - before).contains(&expires_in),
        "{body}"
    );
    assert!((HOUR - 2..=HOUR).contains(&expires_in), "{body}");
    // What the database holds agrees with what the client was told.
    assert_eq!(app.stored_expiry(token), Some((expires_at, max_expires_at)));
}

#[tokio::test]
async fn two_logins_get_two_different_tokens() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let a = app.login_token("alice", "pw").await;
    let b = app.login_token("alice", "pw").await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn json_login_sets_the_cookie_with_exactly_the_spec_attributes() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let before = now();
    let response = app.login("alice", "pw").await;
    let after = now();
    let cookie = set_cookie(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(cookie.name, "latchkey_session");
    assert_eq!(cookie.value, body["access_token"].as_str().unwrap());
    // Test servers run with cookie_secure = false and no cookie_domain.
    assert_eq!(
        cookie.attributes,
        attrs(&["Path=/", "HttpOnly", "SameSite=Lax"])
    );
    let max = body["max_expires_at"].as_i64().unwrap();
    let max_age = cookie.max_age.expect("Max-Age");
    assert!((max - after..=max - before).contains(&max_age), "{max_age}");
}

#[tokio::test]
async fn the_cookie_is_secure_and_scoped_to_the_domain_when_configured() {
    let app = spawn_app_with(|c| {
        c.session.cookie_secure = true;
        c.session.cookie_domain = ".example.com".into();
        c.session.cookie_name = "sid".into();
    })
    .await;
    app.add_user("alice", "pw");
    let response = app.login("alice", "pw").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(&response);
    assert_eq!(cookie.name, "sid");
    assert_eq!(
        cookie.attributes,
        attrs(&[
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Domain=.example.com"
        ])
    );
    let max_age = cookie.max_age.unwrap();
    assert!((WEEK - 2..=WEEK).contains(&max_age), "{max_age}");
}

#[tokio::test]
async fn the_cookie_max_age_follows_a_short_max_lifetime() {
    let app = spawn_app_with(|c| {
        c.session.idle_timeout = Duration::from_secs(600);
        c.session.max_lifetime = Duration::from_secs(2 * HOUR as u64);
    })
    .await;
    app.add_user("alice", "pw");
    let response = app.login("alice", "pw").await;
    let max_age = set_cookie(&response).max_age.unwrap();
    let body: Value = response.json().await.unwrap();
    assert!((2 * HOUR - 2..=2 * HOUR).contains(&max_age), "{max_age}");
    assert!(
        (598..=600).contains(&body["expires_in"].as_i64().unwrap()),
        "{body}"
    );
}

#[tokio::test]
async fn form_login_redirects_to_an_allowed_path_with_the_cookie() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let response = app
        .login_form(&[
            ("username", "alice"),
            ("password", "pw"),
            ("rd", "/app?x=1"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/app?x=1");
    let cookie = set_cookie(&response);
    assert_eq!(cookie.name, "latchkey_session");
    assert_eq!(
        cookie.attributes,
        attrs(&["Path=/", "HttpOnly", "SameSite=Lax"])
    );
    let max_age = cookie.max_age.unwrap();
    assert!((WEEK - 2..=WEEK).contains(&max_age), "{max_age}");
    // The cookie it set is a working session.
    let verify = app.get_cookie("/verify", &cookie.value).await;
    assert_eq!(verify.status(), StatusCode::OK);
    assert_eq!(header(&verify, "remote-user"), "alice");
}

#[tokio::test]
async fn form_login_without_rd_goes_to_the_default_redirect() {
    let app = spawn_app_with(|c| c.login.default_redirect = "/home".into()).await;
    app.add_user("alice", "pw");
    let response = app
        .login_form(&[("username", "alice"), ("password", "pw")])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), "/home");
}

#[tokio::test]
async fn form_login_may_redirect_to_the_same_host() {
    let app = spawn_app_with(|c| c.login.default_redirect = "/home".into()).await;
    app.add_user("alice", "pw");
    let rd = format!("{}/dashboard", app.address);
    let response = app
        .login_form(&[("username", "alice"), ("password", "pw"), ("rd", &rd)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&response, "location"), rd);
}

#[tokio::test]
async fn form_login_sends_hostile_rd_values_to_the_default_redirect() {
    let app = spawn_app_with(|c| {
        c.login.default_redirect = "/home".into();
        c.session.cookie_domain = ".example.com".into();
    })
    .await;
    app.add_user("alice", "pw");
    for rd in [
        "//evil.com",
        "https://evil.com",
        "https://evil.com/path",
        "javascript:alert(1)",
        "/\\evil.com",
        "https://example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "data:text/html,hi",
        // Backslashes, which browsers read as slashes.
        "\\\\evil.com",
        "/\\/evil.com",
        "https:\\\\evil.com",
        // Userinfo tricks.
        "https://user:pw@app.example.com/",
        "https://evil.com\\@app.example.com/",
        "https://evil.com#@app.example.com",
        "https://evil.com?@app.example.com",
        // Schemes and whitespace browsers strip.
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "/\t/evil.com",
        "/\n/evil.com",
        "ftp://app.example.com/",
        // Encoded variants (as the form delivers them, after one decoding).
        "%2F%2Fevil.com",
        "https:%2F%2Fevil.com",
        "/%09/evil.com\r\n",
        "https://evil%2Ecom/",
        "https://xn--exmple-cua.com/",
        "evil.com",
    ] {
        let response = app
            .login_form(&[("username", "alice"), ("password", "pw"), ("rd", rd)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "rd {rd}");
        assert_eq!(header(&response, "location"), "/home", "rd {rd}");
    }
}

#[tokio::test]
async fn form_login_may_redirect_to_a_subdomain_of_the_cookie_domain() {
    let app = spawn_app_with(|c| {
        c.login.default_redirect = "/home".into();
        c.session.cookie_domain = ".example.com".into();
    })
    .await;
    app.add_user("alice", "pw");
    for rd in [
        "https://app.example.com/path?q=1",
        "https://deep.sub.example.com/",
        "https://example.com/",
    ] {
        let response = app
            .login_form(&[("username", "alice"), ("password", "pw"), ("rd", rd)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(header(&response, "location"), rd);
    }
}

#[tokio::test]
async fn form_login_may_redirect_to_an_allowed_redirect_host() {
    let app = spawn_app_with(|c| {
        c.login.default_redirect = "/home".into();
        c.login.allowed_redirect_hosts = vec!["partner.org".into()];
    })
    .await;
    app.add_user("alice", "pw");
    let response = app
        .login_form(&[
            ("username", "alice"),
            ("password", "pw"),
            ("rd", "https://partner.org/welcome"),
        ])
        .await;
    assert_eq!(header(&response, "location"), "https://partner.org/welcome");
    // A subdomain of an allowed host is not the host itself.
    let response = app
        .login_form(&[
            ("username", "alice"),
            ("password", "pw"),
            ("rd", "https://evil.partner.org/"),
        ])
        .await;
    assert_eq!(header(&response, "location"), "/home");
}

#[tokio::test]
async fn form_login_rd_to_this_host_must_keep_its_scheme_and_port() {
    let app = spawn_app_with(|c| c.login.default_redirect = "/home".into()).await;
    app.add_user("alice", "pw");
    let port: u16 = app.host().rsplit_once(':').unwrap().1.parse().unwrap();
    for rd in [
        // Another port of this host may be another program.
        format!("http://127.0.0.1:{}/", port + 1),
        "http://127.0.0.1/".to_owned(),
        // latchkey was reached over plain HTTP.
        format!("https://127.0.0.1:{port}/"),
    ] {
        let response = app
            .login_form(&[("username", "alice"), ("password", "pw"), ("rd", &rd)])
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "rd {rd}");
        assert_eq!(header(&response, "location"), "/home", "rd {rd}");
    }
}

/// A form login as a proxy forwards it: with `headers`, from 127.0.0.1.
async fn form_login_location(app: &TestApp, headers: &[(&str, &str)], rd: &str) -> String {
    let mut request = app.client.post(app.url("/login")).form(&[
        ("username", "alice"),
        ("password", "pw"),
        ("rd", rd),
    ]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "rd {rd}");
    header(&response, "location")
}

#[tokio::test]
async fn behind_a_trusted_proxy_rd_to_this_host_keeps_the_forwarded_scheme_and_port() {
    let app = spawn_app_with(|c| {
        c.login.default_redirect = "/home".into();
        c.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await;
    app.add_user("alice", "pw");
    let https = [("Host", "auth.example.com"), ("X-Forwarded-Proto", "https")];
    for (rd, lands) in [
        (
            "https://auth.example.com/app",
            "https://auth.example.com/app",
        ),
        (
            "https://auth.example.com:443/app",
            "https://auth.example.com:443/app",
        ),
        // A downgrade to plain HTTP, and another port.
        ("http://auth.example.com/app", "/home"),
        ("https://auth.example.com:8443/app", "/home"),
    ] {
        assert_eq!(
            form_login_location(&app, &https, rd).await,
            lands,
            "rd {rd}"
        );
    }
    let on_8443 = [
        ("Host", "auth.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "8443"),
    ];
    let rd = "https://auth.example.com:8443/app";
    assert_eq!(form_login_location(&app, &on_8443, rd).await, rd);
    assert_eq!(
        form_login_location(&app, &on_8443, "https://auth.example.com/app").await,
        "/home"
    );
}

#[tokio::test]
async fn forwarded_scheme_from_an_untrusted_peer_does_not_make_rd_https() {
    let app = spawn_app_with(|c| c.login.default_redirect = "/home".into()).await;
    app.add_user("alice", "pw");
    let claims = [
        ("Host", "auth.example.com"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
    ];
    let location = form_login_location(&app, &claims, "https://auth.example.com/app").await;
    assert_eq!(location, "/home");
    let location = form_login_location(&app, &claims, "http://auth.example.com/app").await;
    assert_eq!(location, "http://auth.example.com/app");
}

#[tokio::test]
async fn with_secure_cookies_rd_to_other_friendly_hosts_must_be_https() {
    let app = spawn_app_with(|c| {
        c.login.default_redirect = "/home".into();
        c.login.allowed_redirect_hosts = vec!["partner.org".into()];
        c.session.cookie_domain = ".example.com".into();
        c.session.cookie_secure = true;
    })
    .await;
    app.add_user("alice", "pw");
    for (rd, lands) in [
        ("https://partner.org/welcome", "https://partner.org/welcome"),
        ("https://app.example.com/", "https://app.example.com/"),
        ("http://partner.org/welcome", "/home"),
        ("http://app.example.com/", "/home"),
    ] {
        assert_eq!(form_login_location(&app, &[], rd).await, lands, "rd {rd}");
    }
}

/// A form login of alice carrying `headers`, as a browser would send it.
async fn browser_form_login(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/login"))
        .form(&[("username", "alice"), ("password", "pw")]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_form_login_sent_by_another_site_is_refused_with_403_and_no_cookie() {
    let app = spawn_app_with(|c| c.session.cookie_domain = ".example.com".into()).await;
    app.add_user("alice", "pw");
    for headers in [
        vec![("Origin", "https://evil.example.net")],
        vec![("Origin", "null")],
        vec![("Origin", "not a url")],
        vec![("Sec-Fetch-Site", "cross-site")],
        // A friendly Origin does not outweigh the browser's own verdict.
        vec![
            ("Origin", "https://app.example.com"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let response = browser_form_login(&app, &headers).await;
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{headers:?}"
        );
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let origin = format!("http://{}", app.host());
    for headers in [
        vec![],
        vec![
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![
            ("Origin", "https://app.example.com"),
            ("Sec-Fetch-Site", "same-site"),
        ],
        vec![("Sec-Fetch-Site", "none")],
    ] {
        let response = browser_form_login(&app, &headers).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{headers:?}");
        assert!(
            response.headers().get("set-cookie").is_some(),
            "{headers:?}"
        );
    }
    // A JSON login cannot be sent across sites without CORS: not checked.
    let response = app
        .client
        .post(app.url("/login"))
        .header("Origin", "https://evil.example.net")
        .json(&json!({ "username": "alice", "password": "pw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn failed_form_login_shows_the_form_again_with_a_message_and_rd() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let response = app
        .login_form(&[
            ("username", "alice"),
            ("password", "wrong"),
            ("rd", "/back/here"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "content-type").starts_with("text/html"));
    assert!(response.headers().get("set-cookie").is_none());
    assert!(response.headers().get("location").is_none());
    let page = body_text(response).await;
    assert!(
        page.contains("<form method=\"post\" action=\"/login\""),
        "{page}"
    );
    assert!(page.contains("Incorrect username or password."), "{page}");
    assert!(
        page.contains("<input type=\"hidden\" name=\"rd\" value=\"/back/here\">"),
        "{page}"
    );
    // The name typed is kept; the password never comes back.
    assert!(page.contains("value=\"alice\""), "{page}");
    assert!(!page.contains("wrong"), "{page}");
}

#[tokio::test]
async fn the_login_page_is_a_form_posting_to_login_carrying_rd() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/login?rd=%2Fapp%3Fa%3D1%26b%3D%22x%22"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let page = body_text(response).await;
    assert!(
        page.contains("<form method=\"post\" action=\"/login\""),
        "{page}"
    );
    assert!(page.contains("name=\"username\""));
    assert!(page.contains("name=\"password\" type=\"password\""));
    assert!(page.contains("autocomplete=\"username\""));
    assert!(page.contains("autocomplete=\"current-password\""));
    // rd is carried in a hidden field, HTML-escaped.
    assert!(
        page.contains("<input type=\"hidden\" name=\"rd\" value=\"/app?a=1&amp;b=&quot;x&quot;\">"),
        "{page}"
    );
    assert!(!page.contains("<script"), "works without JavaScript");
}

#[tokio::test]
async fn the_login_page_without_rd_has_no_rd_field() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = body_text(response).await;
    assert!(page.contains("action=\"/login\""));
    assert!(!page.contains("name=\"rd\""), "{page}");
}

#[tokio::test]
async fn the_login_page_sends_protective_headers() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/login")).send().await.unwrap();
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&response, "x-frame-options"), "DENY");
    assert_eq!(header(&response, "referrer-policy"), "same-origin");
    assert_eq!(header(&response, "cache-control"), "no-store");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    // The failure page carries them too.
    let response = app
        .login_form(&[("username", "nobody"), ("password", "x")])
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&response, "x-frame-options"), "DENY");
    assert_eq!(header(&response, "cache-control"), "no-store");
    assert!(response.headers().get("content-security-policy").is_some());
}

#[tokio::test]
async fn unknown_user_wrong_password_and_disabled_user_get_the_same_401() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let bob = app.add_user("bob", "pw");
    app.set_disabled(bob, true);
    let mut answers = Vec::new();
    for (user, password) in [("alice", "wrong"), ("nobody", "pw"), ("bob", "pw")] {
        let response = app.login(user, password).await;
        assert!(response.headers().get("set-cookie").is_none());
        let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
    assert_eq!(
        answers[0].as_object().unwrap().len(),
        2,
        "only error and error_description: {}",
        answers[0]
    );
}

#[tokio::test]
async fn usernames_compare_case_insensitively_and_keep_their_spelling() {
    let app = spawn_app().await;
    app.add_user("Alice", "pw");
    for typed in ["alice", "ALICE", "aLiCe"] {
        let token = app.login_token(typed, "pw").await;
        let response = app.verify_bearer(&token).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "remote-user"), "Alice", "typed {typed}");
        let me: Value = app.get_bearer("/me", &token).await.json().await.unwrap();
        assert_eq!(me["username"], "Alice");
    }
}

#[tokio::test]
async fn a_password_over_1024_bytes_is_refused_with_400() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let response = app.login("alice", &"a".repeat(1025)).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Bytes, not characters: 513 two-byte characters are 1026 bytes.
    let response = app.login("alice", &"é".repeat(513)).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_password_of_exactly_1024_bytes_is_checked_normally() {
    let app = spawn_app().await;
    let long = "p".repeat(1024);
    app.add_user("alice", &long);
    let response = app.login("alice", &"q".repeat(1024)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let response = app.login("alice", &long).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_hash_with_old_parameters_still_verifies_and_is_upgraded_on_login() {
    let app = spawn_app_with(|c| c.password.memory_kib = 16).await;
    let id = app.add_user_hashed_with("alice", "pw", &cheap_passwords());
    let old = app.password_hash(id);
    assert!(old.contains("m=8,"), "{old}");
    assert_eq!(app.login("alice", "pw").await.status(), StatusCode::OK);
    let new = app.password_hash(id);
    assert!(new.starts_with("$argon2id$v=19$m=16,t=1,p=1$"), "{new}");
    // The upgraded hash is of the same password.
    let check = latchkey::auth::password::PasswordHashing::new(&app.config.password).unwrap();
    assert!(check.verify(&new, "pw"));
    assert!(!check.needs_rehash(&new));
    assert_eq!(app.login("alice", "pw").await.status(), StatusCode::OK);
    assert_eq!(app.password_hash(id), new, "no second rehash");
}

#[tokio::test]
async fn a_failed_login_does_not_upgrade_the_hash() {
    let app = spawn_app_with(|c| c.password.memory_kib = 16).await;
    let id = app.add_user_hashed_with("alice", "pw", &cheap_passwords());
    let old = app.password_hash(id);
    assert_eq!(
        app.login("alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.password_hash(id), old);
}

/// Asserts a 429 `too_many_requests` whose `Retry-After` is within the ban.
async fn assert_banned(response: reqwest::Response, ban_secs: u64) {
    let retry: u64 = header(&response, "retry-after").parse().unwrap();
    assert!(
        (ban_secs - 2..=ban_secs).contains(&retry),
        "Retry-After {retry}"
    );
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
}

fn limited(c: &mut latchkey::Config) {
    c.login.max_failures = 3;
    c.login.ban_duration = Duration::from_secs(300);
}

#[tokio::test]
async fn after_max_failures_even_the_right_password_gets_429_with_retry_after() {
    let app = spawn_app_with(limited).await;
    app.add_user("alice", "pw");
    for _ in 0..2 {
        let response = app.login("alice", "wrong").await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let response = app.login("alice", "wrong").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_banned(app.login("alice", "pw").await, 300).await;
    assert_banned(app.login("ALICE", "pw").await, 300).await;
}

#[tokio::test]
async fn the_form_login_is_banned_too_with_retry_after() {
    let app = spawn_app_with(limited).await;
    app.add_user("alice", "pw");
    for _ in 0..3 {
        app.login("alice", "wrong").await;
    }
    let response = app
        .login_form(&[("username", "alice"), ("password", "pw")])
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((298..=300).contains(&retry), "{retry}");
    assert!(response.headers().get("set-cookie").is_none());
    let page = body_text(response).await;
    assert!(page.contains("Too many failed sign-in attempts"), "{page}");
}

const XFF: &str = "X-Forwarded-For";

async fn login_via(app: &TestApp, xff: &str, user: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header(XFF, xff)
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

/// [`limited`], behind a trusted proxy on loopback: each request names its
/// client in `X-Forwarded-For`, so the per-username limit can be seen apart
/// from the per-address one.
fn limited_behind_proxy(c: &mut latchkey::Config) {
    limited(c);
    c.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
}

#[tokio::test]
async fn failures_for_a_username_that_does_not_exist_ban_that_username() {
    let app = spawn_app_with(limited_behind_proxy).await;
    app.add_user("alice", "pw");
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let response = login_via(&app, client, "ghost", "guess").await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    assert_banned(login_via(&app, "198.51.100.4", "ghost", "guess").await, 300).await;
    // Only that name: none of the addresses reached the limit.
    let response = login_via(&app, "198.51.100.1", "alice", "pw").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_ban_on_one_username_leaves_other_usernames_alone() {
    let app = spawn_app_with(limited_behind_proxy).await;
    app.add_user("alice", "pw");
    app.add_user("bob", "pw");
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        login_via(&app, client, "alice", "wrong").await;
    }
    assert_banned(login_via(&app, "198.51.100.4", "alice", "pw").await, 300).await;
    assert_eq!(
        login_via(&app, "198.51.100.1", "bob", "pw").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn failures_across_usernames_from_one_address_ban_the_address() {
    let app = spawn_app_with(limited).await;
    app.add_user("alice", "pw");
    for user in ["u1", "u2", "u3"] {
        let response = app.login(user, "guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // 127.0.0.1 is banned: a fresh username with the right password is refused.
    assert_banned(app.login("alice", "pw").await, 300).await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored_and_the_peer_is_limited() {
    let app = spawn_app_with(limited).await;
    app.add_user("alice", "pw");
    // A fresh made-up address for every guess gains nothing: the peer counts.
    for (user, xff) in [
        ("u1", "203.0.113.1"),
        ("u2", "203.0.113.2"),
        ("u3", "203.0.113.3"),
    ] {
        let response = login_via(&app, xff, user, "guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{user}");
    }
    assert_banned(login_via(&app, "203.0.113.4", "alice", "pw").await, 300).await;
    assert_banned(app.login("alice", "pw").await, 300).await;
}

#[tokio::test]
async fn an_untrusted_peer_sending_forwarded_for_is_logged_once_per_peer_address() {
    let sandbox = Sandbox::new();
    let mut server = Server::start(&sandbox, &["serve"]);
    let api = server.api();
    // Two peers on loopback: 127.0.0.1 and 127.0.0.2.
    let from_second_peer = http_client_builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for client in [
        &api.client,
        &api.client,
        &from_second_peer,
        &from_second_peer,
    ] {
        let response = client
            .post(api.url("/login"))
            .header(XFF, "198.51.100.7")
            .json(&json!({ "username": "nobody", "password": "guess" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    server.wait_for_stderr("peer=127.0.0.2");
    let (_, log) = server.stop();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("server.trusted_proxies"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log:#?}");
    assert!(warnings[0].contains("peer=127.0.0.1"), "{warnings:?}");
    assert!(warnings[1].contains("peer=127.0.0.2"), "{warnings:?}");
    assert!(
        !log.iter().any(|line| line.contains("198.51.100.7")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
    let app = spawn_app_with(limited_behind_proxy).await;
    app.add_user("alice", "pw");
    // Three addresses of one /64, as a client may pick them at will.
    for (user, xff) in [
        ("u1", "2001:db8:1:2::1"),
        ("u2", "2001:db8:1:2:aaaa::5"),
        ("u3", "[2001:db8:1:2:ffff::9]:443"),
    ] {
        let response = login_via(&app, xff, user, "guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{xff}");
    }
    let same_64 = login_via(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", "alice", "pw").await;
    assert_banned(same_64, 300).await;
    let next_64 = login_via(&app, "2001:db8:1:3::1", "alice", "pw").await;
    assert_eq!(next_64.status(), StatusCode::OK);

    for user in ["v1", "v2", "v3"] {
        let response = login_via(&app, "::ffff:203.0.113.9", user, "guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_banned(login_via(&app, "203.0.113.9", "alice", "pw").await, 300).await;
}

/// [`limited`] with a password hash slow enough (a few ms) that parallel
/// logins all arrive while the first ones are still being verified.
fn limited_and_slow(c: &mut latchkey::Config) {
    limited(c);
    c.password.memory_kib = 4096;
    c.password.iterations = 2;
}

/// Sends `logins` (`X-Forwarded-For`, username, password) all at once;
/// returns the statuses, sorted.
async fn at_once(app: &TestApp, logins: &[(String, String, &str)]) -> Vec<u16> {
    let mut requests = tokio::task::JoinSet::new();
    for (xff, user, password) in logins {
        let request = app
            .client
            .post(app.url("/login"))
            .header(XFF, xff)
            .json(&json!({ "username": user, "password": password }));
        requests.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let mut statuses = requests.join_all().await;
    statuses.sort_unstable();
    statuses
}

/// `n` copies of `status`.
fn times(n: usize, status: u16) -> Vec<u16> {
    vec![status; n]
}

#[tokio::test]
async fn parallel_wrong_guesses_for_one_username_verify_at_most_max_failures() {
    let app = spawn_app_with(|c| {
        limited_and_slow(c);
        c.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await;
    app.add_user("alice", "pw");
    // Ten guesses at once, each from its own address: only the username limits.
    let guesses: Vec<_> = (1..=10)
        .map(|i| (format!("198.51.100.{i}"), "alice".to_owned(), "wrong"))
        .collect();
    let statuses = at_once(&app, &guesses).await;
    assert_eq!(statuses, [times(3, 401), times(7, 429)].concat());
    assert_banned(login_via(&app, "198.51.100.99", "alice", "pw").await, 300).await;
}

#[tokio::test]
async fn parallel_wrong_guesses_from_one_address_verify_at_most_max_failures() {
    let app = spawn_app_with(limited_and_slow).await;
    app.add_user("alice", "pw");
    // Ten usernames at once from 127.0.0.1 (the spoofed header is ignored).
    let guesses: Vec<_> = (1..=10)
        .map(|i| (format!("203.0.113.{i}"), format!("user{i}"), "guess"))
        .collect();
    let statuses = at_once(&app, &guesses).await;
    assert_eq!(statuses, [times(3, 401), times(7, 429)].concat());
    assert_banned(app.login("alice", "pw").await, 300).await;
}

#[tokio::test]
async fn a_right_password_releases_its_reservation_and_is_not_a_failure() {
    let app = spawn_app_with(limited_and_slow).await;
    app.add_user("alice", "pw");
    // As many right logins at once as there are places: all succeed.
    let logins: Vec<_> = (0..3)
        .map(|_| ("203.0.113.1".to_owned(), "alice".to_owned(), "pw"))
        .collect();
    assert_eq!(at_once(&app, &logins).await, times(3, 200));
    for user in ["u1", "u2"] {
        assert_eq!(
            app.login(user, "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Two failures counted for 127.0.0.1; right logins do not add to them
    // and leave no place taken behind.
    for _ in 0..5 {
        assert_eq!(app.login("alice", "pw").await.status(), StatusCode::OK);
    }
    assert_eq!(
        app.login("u3", "guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_banned(app.login("alice", "pw").await, 300).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let app = spawn_app_with(|c| {
        limited(c);
        c.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await;
    app.add_user("alice", "pw");
    for user in ["u1", "u2", "u3"] {
        let response = login_via(&app, "203.0.113.9", user, "guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_banned(login_via(&app, "203.0.113.9", "alice", "pw").await, 300).await;
    // The right-most address is the one that counts.
    assert_banned(
        login_via(&app, "198.51.100.1, 203.0.113.9", "alice", "pw").await,
        300,
    )
    .await;
    // Another client behind the same proxy is not banned, nor is the proxy.
    let response = login_via(&app, "203.0.113.10", "alice", "pw").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.login("alice", "pw").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_session_records_the_forwarded_address() {
    let app = spawn_app_with(|c| {
        c.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await;
    app.add_user("alice", "pw");
    let response = login_via(&app, "203.0.113.9", "alice", "pw").await;
    let token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list: Value = app
        .get_bearer("/sessions", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"][0]["ip"], "203.0.113.9");
}

#[tokio::test]
async fn the_raw_token_never_reaches_the_database_file_but_its_sha256_does() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let token = app.login_token("alice", "pw").await;
    // Use it too, so a sliding or lookup path would have written it if it could.
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
    let bytes = app.database_bytes();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(token.as_bytes()),
        "raw token found in the database"
    );
    let decoded = URL_SAFE_NO_PAD.decode(&token).unwrap();
    assert!(!contains(&decoded), "raw token bytes found in the database");
    assert!(contains(&sha256(&token)), "token hash not found");
}

#[tokio::test]
async fn login_needs_both_fields_as_strings() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    for body in [
        json!({ "username": "alice" }),
        json!({ "password": "pw" }),
        json!({ "username": "alice", "password": 1234 }),
        json!({ "username": ["alice"], "password": "pw" }),
        json!({ "username": null, "password": "pw" }),
    ] {
        let response = app.post_json("/login", &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_username_longer_than_64_characters_is_refused_with_400() {
    let app = spawn_app().await;
    let response = app.login(&"x".repeat(65), "pw").await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app.login("", "pw").await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // 64 characters is a valid name, merely unknown here.
    let response = app.login(&"é".repeat(64), "pw").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn the_session_records_the_user_agent_and_address_at_login() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let response = app
        .client
        .post(app.url("/login"))
        .header("User-Agent", "LoginTest/1.0 (X11; Linux)")
        .json(&json!({ "username": "alice", "password": "pw" }))
        .send()
        .await
        .unwrap();
    let token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ip, agent): (String, String) = app.scalar(
        "SELECT ip, user_agent FROM sessions WHERE token_hash = ?1",
        latchkey::db_params![&sha256(&token)[..]],
    );
    assert_eq!(ip, "127.0.0.1");
    assert_eq!(agent, "LoginTest/1.0 (X11; Linux)");
}
