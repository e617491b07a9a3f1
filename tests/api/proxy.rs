//! Behind real nginx and real Caddy: the configurations in `examples/` run
//! as written (only ports and TLS swapped for loopback ones) in front of
//! latchkey and a small app that echoes the identity headers it receives.
//!
//! The proxies are Debian's `nginx` and `caddy`, installed by `.ci/run`.
//! Where one is missing the test says so and passes, except under CI
//! (`CI` set), where a missing proxy fails the test.

use std::net::SocketAddr;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

/// An HTTP client that reaches `*.example.com:<port>` on loopback.
fn client_for(port: u16) -> reqwest::Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("app.example.com", addr)
        .resolve("auth.example.com", addr)
        .build()
        .unwrap()
}

/// The `name=value` part of the session cookie set by a response.
fn session_cookie(response: &reqwest::Response) -> String {
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    assert!(
        set_cookie.contains("Domain=.example.com"),
        "cookie not shared with subdomains: {set_cookie}"
    );
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The whole journey a browser and an API client make through a proxy.
async fn journey_through(port: u16, latchkey: &TestApp, app: &EchoApp) {
    latchkey.add_user_with(
        "alice",
        PASSWORD,
        Some("alice@example.com"),
        Some("Alice Example"),
    );
    latchkey.add_user("bob", PASSWORD);
    latchkey.add_to_group("Dev", "alice");
    latchkey.add_to_group("admins", "alice");
    let client = client_for(port);
    let original = format!("http://app.example.com:{port}/reports/2026?sort=desc&page=2");

    // No session: off to the login page, with rd pointing back here.
    let response = client
        .get(&original)
        .header("Remote-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let login_page = response.headers()[LOCATION].to_str().unwrap().to_owned();
    let encoded: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
    assert_eq!(
        login_page,
        format!("http://auth.example.com:{port}/login?rd={encoded}")
    );

    // The login page carries rd into its form.
    let page = client.get(&login_page).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "name=\"rd\" value=\"{}\"",
            original.replace('&', "&amp;")
        )),
        "rd not carried into the form:\n{html}"
    );

    // Logging in sends the browser back to the original URL, with the cookie.
    let response = client
        .post(format!("http://auth.example.com:{port}/login"))
        .form(&[
            ("username", "alice"),
            ("password", PASSWORD),
            ("rd", &original),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], original.as_str());
    let cookie = session_cookie(&response);

    // Back at the original URL: the content, and latchkey's identity only,
    // whatever identity the client claims for itself.
    let response = client
        .get(&original)
        .header(COOKIE, &cookie)
        .header("Remote-User", "mallory")
        .header("Remote-User-Id", "0")
        .header("Remote-Email", "mallory@evil.example")
        .header("Remote-Name", "Mallory")
        .header("Remote-Groups", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/reports/2026?sort=desc&page=2");
    assert_eq!(seen["remote_user"], "alice");
    assert_eq!(seen["remote_user_id"], "1");
    assert_eq!(seen["remote_email"], "alice@example.com");
    assert_eq!(seen["remote_name"], "Alice Example");
    assert_eq!(seen["remote_groups"], "admins,Dev");

    // A user without email, display name or group: those headers are
    // absent, not empty and not the client's.
    let response = client
        .post(format!("http://auth.example.com:{port}/login"))
        .form(&[("username", "bob"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let bob_cookie = session_cookie(&response);
    let seen: Value = client
        .get(&original)
        .header(COOKIE, &bob_cookie)
        .header("Remote-Email", "mallory@evil.example")
        .header("Remote-Groups", "admins")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["remote_user"], "bob");
    assert_eq!(seen["remote_email"], Value::Null);
    assert_eq!(seen["remote_name"], Value::Null);
    assert_eq!(seen["remote_groups"], Value::Null);
    assert_eq!(seen["remote_headers"], 2);

    // Logout: protected again at once.
    let response = client
        .post(format!("http://auth.example.com:{port}/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = client
        .get(&original)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);

    // An API client: a bearer token and no cookies.
    let token: Value = client
        .post(format!("http://auth.example.com:{port}/login"))
        .json(&serde_json::json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let response = client
        .get(format!("http://app.example.com:{port}/api/items"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(
        (seen["path"].as_str(), seen["remote_user"].as_str()),
        (Some("/api/items"), Some("alice"))
    );
    let response = client
        .get(format!("http://app.example.com:{port}/api/items"))
        .bearer_auth("not-a-valid-token")
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), StatusCode::OK);

    // The app never saw a Remote-User that a client made up.
    let users = app.seen_users.lock().unwrap().clone();
    assert!(!users.is_empty());
    assert!(
        users.iter().all(|u| u == "alice" || u == "bob"),
        "app saw {users:?}"
    );
}

#[tokio::test]
async fn nginx_auth_request_example_protects_an_app() {
    let Some(nginx) = installed("nginx") else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy().await;
    let app = spawn_echo_app();
    let (port, _proxy) = start_nginx_for_test(&nginx, &latchkey, &app);
    journey_through(port, &latchkey, &app).await;
}

#[tokio::test]
async fn caddy_forward_auth_example_protects_an_app() {
    let Some(caddy) = installed("caddy") else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy().await;
    let app = spawn_echo_app();
    let (port, _proxy) = start_caddy_for_test(&caddy, &latchkey, &app);
    journey_through(port, &latchkey, &app).await;
}
