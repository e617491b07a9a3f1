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

/// The rule of the README's nginx walk-through (step 5), as written there:
/// `/admin` on app.example.com for the group `admins` only.
fn readme_rule() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (_, step) = readme
        .split_once("**Keep `/admin` to the admins**")
        .expect("the README's rule step");
    let (_, block) = step.split_once("```toml\n").expect("its TOML block");
    let (block, _) = block.split_once("```").expect("the end of the block");
    block
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("   ").unwrap_or(line)))
        .collect()
}

/// Access rules for the app behind the proxy: the README's `/admin` rule,
/// `/public` without a login, and no POST to `/api`.
fn app_rules() -> String {
    readme_rule()
        + r#"
[[access.rules]]
paths = ["/public"]
policy = "bypass"

[[access.rules]]
paths = ["/api"]
methods = ["POST"]
policy = "deny"
"#
}

/// Every identity header, as a client would forge them.
const FORGED: [(&str, &str); 5] = [
    ("Remote-User", "mallory"),
    ("Remote-User-Id", "0"),
    ("Remote-Email", "mallory@evil.example"),
    ("Remote-Name", "Mallory"),
    ("Remote-Groups", "admins"),
];

/// `method url` through the proxy, with the `Remote-*` headers forged and
/// the bearer `token` when given.
async fn forged_request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = client.request(method, url);
    for (name, value) in FORGED {
        request = request.header(name, value);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// What the app answered: its echo of the request it received.
async fn app_saw(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    response.json().await.expect("the app's echo")
}

/// The identity headers as the app received them; none forged may pass.
fn assert_identity_seen(seen: &Value, user: Option<&str>, groups: Option<&str>) {
    // Absent, not empty: the examples drop the empty headers of a bypass.
    let absent = |field: &str| assert!(seen[field].is_null(), "{field} reached the app: {seen}");
    match user {
        Some(user) => assert_eq!(seen["remote_user"], user, "{seen}"),
        None => {
            for field in [
                "remote_user",
                "remote_user_id",
                "remote_email",
                "remote_name",
            ] {
                absent(field);
            }
        }
    }
    match groups {
        Some(groups) => assert_eq!(seen["remote_groups"], groups, "{seen}"),
        None => absent("remote_groups"),
    }
    let text = seen.to_string();
    assert!(
        !text.contains("mallory") && !text.contains("Mallory"),
        "{text}"
    );
}

/// The rules of [`app_rules`], through a proxy on `port`.
async fn rules_through(port: u16, latchkey: &TestApp, app: &EchoApp) {
    use reqwest::Method;
    latchkey.add_user("alice", PASSWORD);
    latchkey.add_user("bob", PASSWORD);
    latchkey.add_to_group("admins", "alice");
    let client = client_for(port);
    let url = |path: &str| format!("http://app.example.com:{port}{path}");
    let token = |name: &'static str| {
        let client = client.clone();
        async move {
            let body: Value = client
                .post(format!("http://auth.example.com:{port}/login"))
                .json(&serde_json::json!({ "username": name, "password": PASSWORD }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let alice = token("alice").await;
    let bob = token("bob").await;

    // /admin: alice (admins) in, with her real groups; bob refused, whatever
    // groups he claims; anonymous sent to log in.
    let response = forged_request(&client, Method::GET, &url("/admin/panel"), Some(&alice)).await;
    let seen = app_saw(response).await;
    assert_eq!(seen["path"], "/admin/panel");
    assert_identity_seen(&seen, Some("alice"), Some("admins"));
    let response = forged_request(&client, Method::GET, &url("/admin/panel"), Some(&bob)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = forged_request(&client, Method::GET, &url("/admin"), None).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(response.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with(&format!("http://auth.example.com:{port}/login?rd=")));

    // A client describing another request in the headers the rules read
    // is not believed: the proxy says what the request is.
    let disguised = client
        .get(url("/admin/panel"))
        .bearer_auth(&bob)
        .header("X-Forwarded-Uri", "/public")
        .header("X-Forwarded-Host", "elsewhere.example.net")
        .header("X-Original-URL", "http://app.example.com/public")
        .send()
        .await
        .unwrap();
    assert_eq!(disguised.status(), StatusCode::FORBIDDEN);
    // Nor by naming another host in Host than in the request line.
    let raw = Api::new(format!("http://127.0.0.1:{port}"))
        .raw(
            format!(
                "GET http://app.example.com:{port}/admin/panel HTTP/1.1\r\n\
                 Host: elsewhere.example.net\r\nAuthorization: Bearer {bob}\r\n\
                 Connection: close\r\n\r\n"
            )
            .into_bytes(),
        )
        .await;
    assert_eq!(raw.status, 403, "{}", raw.head);

    // /public: no login page, and no identity at all reaches the app, not
    // even a logged-in user's, and never a forged one.
    for who in [None, Some(alice.as_str())] {
        let response = forged_request(&client, Method::GET, &url("/public/page?x=1"), who).await;
        let seen = app_saw(response).await;
        assert_eq!(seen["path"], "/public/page?x=1");
        assert_identity_seen(&seen, None, None);
    }
    // Elsewhere, a user's own identity replaces the forged one.
    let response = forged_request(&client, Method::GET, &url("/reports"), Some(&bob)).await;
    assert_identity_seen(&app_saw(response).await, Some("bob"), None);

    // The POST-only rule: the method is the client's, not the check's GET.
    let response = forged_request(&client, Method::GET, &url("/api/items"), Some(&bob)).await;
    assert_eq!(app_saw(response).await["method"], "GET");
    for token in [&bob, &alice] {
        let response = forged_request(&client, Method::POST, &url("/api/items"), Some(token)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let response = forged_request(&client, Method::PUT, &url("/api/items"), Some(&bob)).await;
    assert_eq!(app_saw(response).await["method"], "PUT");

    let users = app.seen_users.lock().unwrap().clone();
    assert!(
        users.iter().all(|u| u == "alice" || u == "bob"),
        "app saw {users:?}"
    );
}

#[tokio::test]
async fn nginx_example_applies_the_access_rules() {
    let Some(nginx) = installed("nginx") else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy_with_rules(&app_rules()).await;
    let app = spawn_echo_app();
    let (port, _proxy) = start_nginx_for_test(&nginx, &latchkey, &app);
    rules_through(port, &latchkey, &app).await;
}

#[tokio::test]
async fn caddy_example_applies_the_access_rules() {
    let Some(caddy) = installed("caddy") else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy_with_rules(&app_rules()).await;
    let app = spawn_echo_app();
    let (port, _proxy) = start_caddy_for_test(&caddy, &latchkey, &app);
    rules_through(port, &latchkey, &app).await;
}

#[test]
fn traefik_example_sends_the_check_what_the_rules_read() {
    let config = traefik_dynamic_config();
    let http = &config["http"];
    let auth = &http["middlewares"]["latchkey-auth"]["forwardAuth"];
    let address = auth["address"].as_str().expect("forwardAuth.address");
    assert!(
        address.starts_with("http://127.0.0.1:8080/verify?rd=https://auth.example.com/login"),
        "{address}"
    );
    // false: Traefik writes X-Forwarded-Method, -Host, -Uri and -For from
    // the request itself, replacing any a client sent, and the rules read
    // those. true would pass a client's own through.
    assert_eq!(auth["trustForwardHeader"], false, "{auth}");
    // Traefik forwards every request header unless this list names some:
    // then the token's must be among them.
    if let Some(forwarded) = auth.get("authRequestHeaders") {
        for needed in ["Authorization", "Cookie"] {
            assert!(
                forwarded.as_array().unwrap().iter().any(|h| h == needed),
                "{forwarded}"
            );
        }
    }
    let copied: Vec<&str> = auth["authResponseHeaders"]
        .as_array()
        .expect("authResponseHeaders")
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    for header in [
        "Remote-User",
        "Remote-User-Id",
        "Remote-Email",
        "Remote-Name",
        "Remote-Groups",
    ] {
        assert!(copied.contains(&header), "{header} not copied: {copied:?}");
    }
    let routers = &http["routers"];
    assert_eq!(routers["app"]["rule"], "Host(`app.example.com`)");
    assert_eq!(
        routers["app"]["middlewares"],
        serde_json::json!(["latchkey-auth"])
    );
    // latchkey's own host behind its own check would need a login to log in.
    assert_eq!(routers["latchkey"]["rule"], "Host(`auth.example.com`)");
    assert!(routers["latchkey"].get("middlewares").is_none());
    assert_eq!(
        http["services"]["latchkey"]["loadBalancer"]["servers"][0]["url"],
        "http://127.0.0.1:8080"
    );
}
