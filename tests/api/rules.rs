//! `/verify` judging with the access rules, against the real server: each
//! policy, anonymous and logged-in and wrong-group requests, the proxied
//! request's host, path and method from both header styles, networks behind
//! a trusted proxy, refused paths, and the three worked examples of
//! `docs/access.md`, run as written there.

use latchkey::Config;
use reqwest::{Method, Response, StatusCode};

use crate::helpers::*;

/// Asserts the 401 "log in first".
async fn assert_needs_login(response: Response) {
    assert!(response.headers().get("remote-user").is_none());
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

/// Asserts 200 with `username`'s identity.
fn assert_allowed(response: &Response, username: &str) {
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    assert_eq!(header(response, "remote-user"), username);
}

/// The TOML block under `### Example: <title>` in docs/access.md.
fn docs_example(title: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/access.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let heading = format!("### Example: {title}\n");
    let (_, section) = doc
        .split_once(&heading)
        .unwrap_or_else(|| panic!("docs/access.md has no {heading:?}"));
    let (_, block) = section.split_once("```toml\n").expect("a TOML block");
    let (toml, _) = block.split_once("```").expect("the end of the block");
    toml.to_owned()
}

fn uri(path: &str) -> [(&'static str, String); 2] {
    [
        ("X-Forwarded-Host", "app.example.com".to_owned()),
        ("X-Forwarded-Uri", path.to_owned()),
    ]
}

/// `/verify` asked about `path` on app.example.com, Traefik-style.
async fn ask(app: &TestApp, token: Option<&str>, path: &str) -> Response {
    let headers = uri(path);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    app.verify_proxied(token, &headers).await
}

const EVERY_POLICY: &str = r#"
[[access.rules]]
paths = ["/open"]
policy = "bypass"

[[access.rules]]
paths = ["/closed"]
policy = "deny"

[[access.rules]]
paths = ["/members"]
policy = "one_factor"
"#;

#[tokio::test]
async fn each_policy_answers_anonymous_and_logged_in_requests_as_the_spec_says() {
    let app = spawn_app_from_toml(EVERY_POLICY).await;
    let (_, token) = app.user_with_token("alice").await;
    for who in [None, Some(token.as_str())] {
        assert_bypass(&ask(&app, who, "/open/page").await);
        assert_forbidden(ask(&app, who, "/closed/page").await).await;
    }
    assert_needs_login(ask(&app, None, "/members").await).await;
    assert_allowed(&ask(&app, Some(&token), "/members").await, "alice");
    // No rule applies: default_policy one_factor.
    assert_needs_login(ask(&app, None, "/elsewhere").await).await;
    assert_allowed(&ask(&app, Some(&token), "/elsewhere").await, "alice");

    for (default, anonymous, logged_in) in [
        ("deny", StatusCode::FORBIDDEN, StatusCode::FORBIDDEN),
        ("bypass", StatusCode::OK, StatusCode::OK),
    ] {
        let app = spawn_app_from_toml(&format!(
            "[access]\ndefault_policy = \"{default}\"\n{EVERY_POLICY}"
        ))
        .await;
        let (_, token) = app.user_with_token("alice").await;
        let response = ask(&app, None, "/elsewhere").await;
        assert_eq!(response.status(), anonymous, "{default}");
        let response = ask(&app, Some(&token), "/elsewhere").await;
        assert_eq!(response.status(), logged_in, "{default}");
        if default == "bypass" {
            assert_bypass(&response);
        }
        assert_allowed(&ask(&app, Some(&token), "/members").await, "alice");
    }
}

#[tokio::test]
async fn a_bypass_answer_carries_every_remote_header_empty_whatever_the_client_sent() {
    let app = spawn_app_from_toml(EVERY_POLICY).await;
    app.add_user_with("alice", "pw", Some("a@example.com"), Some("Alice"));
    app.add_to_group("admins", "alice");
    let token = app.login_token("alice", "pw").await;
    let response = app
        .client
        .get(app.url("/verify"))
        .bearer_auth(&token)
        .header("X-Forwarded-Uri", "/open")
        .header("Remote-User", "mallory")
        .header("Remote-Groups", "admins")
        .send()
        .await
        .unwrap();
    assert_bypass(&response);
    assert_eq!(header(&response, "cache-control"), "no-store");
    // On the wire: each header once, with nothing after the colon.
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: {}\r\nX-Forwarded-Uri: /open\r\nConnection: close\r\n\r\n",
        app.host()
    );
    let raw = app.raw(request.into_bytes()).await;
    assert_eq!(raw.status, 200);
    for name in [
        "Remote-User",
        "Remote-User-Id",
        "Remote-Email",
        "Remote-Name",
        "Remote-Groups",
    ] {
        let values: Vec<_> = raw
            .headers()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .collect();
        assert_eq!(values, [""], "{name} in {}", raw.head);
    }
}

#[tokio::test]
async fn admin_path_example_admits_the_group_denies_others_and_asks_anonymous_to_log_in() {
    let app = spawn_app_from_toml(&docs_example("only admins reach /admin")).await;
    let (_, alice) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    app.add_to_group("admins", "alice");
    app.add_to_group("Dev", "bob");

    let response = ask(&app, Some(&alice), "/admin/users").await;
    assert_allowed(&response, "alice");
    assert_eq!(header(&response, "remote-groups"), "admins");
    assert_forbidden(ask(&app, Some(&bob), "/admin/users").await).await;
    assert_needs_login(ask(&app, None, "/admin/users").await).await;
    assert_allowed(&ask(&app, Some(&bob), "/reports").await, "bob");
    let response = app
        .verify_proxied(
            Some(&bob),
            &[
                ("X-Forwarded-Host", "wiki.example.com"),
                ("X-Forwarded-Uri", "/admin"),
            ],
        )
        .await;
    assert_allowed(&response, "bob");

    // The group is read on every request: bob in admins is let in at once.
    app.add_to_group("admins", "bob");
    assert_allowed(&ask(&app, Some(&bob), "/admin").await, "bob");
}

#[tokio::test]
async fn a_denied_logged_in_user_gets_403_never_the_login_redirect_even_with_rd() {
    let app = spawn_app_with(|c| {
        c.session.cookie_domain = ".example.com".into();
        c.access = Config::from_sources(
            Some(&docs_example("only admins reach /admin")),
            std::path::Path::new("t.toml"),
            std::iter::empty(),
        )
        .unwrap()
        .access;
    })
    .await;
    let (_, bob) = app.user_with_token("bob").await;
    let rd = "/verify?rd=https%3A%2F%2Fauth.example.com%2Flogin";
    let proxied = |request: reqwest::RequestBuilder| {
        request
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "app.example.com")
            .header("X-Forwarded-Uri", "/admin")
    };
    // By bearer and by cookie, as Caddy and Traefik ask.
    let by_bearer = proxied(app.client.get(app.url(rd)).bearer_auth(&bob));
    assert_forbidden(by_bearer.send().await.unwrap()).await;
    let by_cookie = proxied(
        app.client
            .get(app.url(rd))
            .header("Cookie", app.cookie(&bob)),
    );
    assert_forbidden(by_cookie.send().await.unwrap()).await;
    // Anonymous: off to the login page, as before.
    let response = proxied(app.client.get(app.url(rd))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert!(header(&response, "location").starts_with("https://auth.example.com/login?rd="));
}

#[tokio::test]
async fn subjects_match_users_and_groups_ignoring_case() {
    let app = spawn_app_from_toml(
        r#"
[[access.rules]]
paths = ["/team"]
subjects = ["user:ALICE", "group:OPS"]
policy = "one_factor"
[[access.rules]]
paths = ["/team"]
policy = "deny"
"#,
    )
    .await;
    let (_, alice) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    let (_, carol) = app.user_with_token("carol").await;
    app.add_to_group("Ops", "bob");
    app.add_to_group("opsish", "carol");
    assert_allowed(&ask(&app, Some(&alice), "/team").await, "alice");
    assert_allowed(&ask(&app, Some(&bob), "/team/x").await, "bob");
    assert_forbidden(ask(&app, Some(&carol), "/team").await).await;
}

#[tokio::test]
async fn the_method_comes_from_x_forwarded_method_or_x_original_method_or_the_request() {
    let app = spawn_app_from_toml(
        r#"
[[access.rules]]
paths = ["/api"]
methods = ["POST", "DELETE"]
policy = "deny"
"#,
    )
    .await;
    let (_, token) = app.user_with_token("alice").await;
    let verify = |method: Method, headers: &[(&'static str, &'static str)]| {
        let mut request = app
            .client
            .request(method, app.url("/verify"))
            .bearer_auth(&token)
            .header("X-Original-URL", "https://app.example.com/api/items");
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    // Traefik and Caddy style.
    assert_forbidden(
        verify(Method::GET, &[("X-Forwarded-Method", "POST")])
            .await
            .unwrap(),
    )
    .await;
    // nginx style.
    assert_forbidden(
        verify(Method::GET, &[("X-Original-Method", "delete")])
            .await
            .unwrap(),
    )
    .await;
    // The forwarded method wins over the original one and over the request's own.
    let response = verify(
        Method::POST,
        &[("X-Forwarded-Method", "GET"), ("X-Original-Method", "POST")],
    )
    .await
    .unwrap();
    assert_allowed(&response, "alice");
    // Without either header, the request's own method.
    assert_forbidden(verify(Method::DELETE, &[]).await.unwrap()).await;
    assert_allowed(&verify(Method::PUT, &[]).await.unwrap(), "alice");
}

#[tokio::test]
async fn host_and_path_come_from_x_forwarded_headers_or_x_original_url_or_host() {
    let app = spawn_app_from_toml(
        r#"
[[access.rules]]
domains = ["*.example.com"]
paths = ["/admin"]
policy = "deny"
"#,
    )
    .await;
    let (_, token) = app.user_with_token("alice").await;
    let cases: &[(&[(&str, &str)], bool)] = &[
        (
            &[
                ("X-Forwarded-Host", "App.Example.com:8443, proxy.internal"),
                ("X-Forwarded-Uri", "/admin/users?x=1"),
            ],
            true,
        ),
        (
            &[("X-Original-URL", "https://app.example.com./public/../admin")],
            true,
        ),
        // X-Forwarded-* come first.
        (
            &[
                ("X-Forwarded-Host", "other.net"),
                ("X-Original-URL", "https://app.example.com/admin"),
            ],
            false,
        ),
        (
            &[
                ("X-Forwarded-Uri", "/public"),
                ("X-Original-URL", "https://app.example.com/admin"),
            ],
            false,
        ),
        // The host of X-Original-URL with the path of X-Forwarded-Uri.
        (
            &[
                ("X-Forwarded-Uri", "/admin"),
                ("X-Original-URL", "https://app.example.com/public"),
            ],
            true,
        ),
        // Without forwarded headers: Host, and the path "/".
        (&[("Host", "app.example.com")], false),
        (
            &[("Host", "app.example.com"), ("X-Forwarded-Uri", "/admin")],
            true,
        ),
        (&[("X-Forwarded-Uri", "/admin")], false),
    ];
    for (headers, denied) in cases {
        let response = app.verify_proxied(Some(&token), headers).await;
        if *denied {
            assert_forbidden(response).await;
        } else {
            assert_allowed(&response, "alice");
        }
    }
}

/// `/verify` asked about `method /notes` from client `ip`, as the proxy
/// on 127.0.0.1 reports it.
async fn from(app: &TestApp, token: Option<&str>, ip: &str, method: &str) -> Response {
    let headers = [
        ("X-Forwarded-For", ip),
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Uri", "/notes"),
    ];
    app.verify_proxied(token, &headers).await
}

#[tokio::test]
async fn lan_writes_example_matches_networks_on_the_address_a_trusted_proxy_reports() {
    let example = docs_example("writes only from the LAN");
    let app = spawn_app_from_toml(&example).await;
    let (_, alice) = app.user_with_token("alice").await;
    let get_outside = from(&app, Some(&alice), "203.0.113.7", "GET").await;
    assert_allowed(&get_outside, "alice");
    let post_lan = from(&app, Some(&alice), "192.168.1.20", "POST").await;
    assert_allowed(&post_lan, "alice");
    let delete_v6 = from(&app, Some(&alice), "fd00::1:2", "DELETE").await;
    assert_allowed(&delete_v6, "alice");
    let post_outside = from(&app, Some(&alice), "203.0.113.7", "POST").await;
    assert_forbidden(post_outside).await;
    let anonymous = from(&app, None, "192.168.1.20", "POST").await;
    assert_needs_login(anonymous).await;
    // The right-most address the trusted proxy did not add counts, not
    // one a client wrote in front of it.
    let forged = from(&app, Some(&alice), "192.168.1.20, 203.0.113.7", "PUT").await;
    assert_forbidden(forged).await;

    // Without trusted_proxies X-Forwarded-For is ignored: every client is
    // the proxy's own address, and no write is from the LAN.
    let untrusting = example.replace("trusted_proxies = [\"127.0.0.1\", \"::1\"]", "");
    assert_ne!(untrusting, example);
    let app = spawn_app_from_toml(&untrusting).await;
    let (_, alice) = app.user_with_token("alice").await;
    let post_lan = from(&app, Some(&alice), "192.168.1.20", "POST").await;
    assert_forbidden(post_lan).await;
}

#[tokio::test]
async fn a_peer_outside_trusted_proxies_is_judged_by_its_own_request_not_its_headers() {
    let rules = "[[access.rules]]\npaths = [\"/admin\"]\npolicy = \"deny\"\n\
                 [[access.rules]]\npaths = [\"/public\"]\npolicy = \"bypass\"\n";
    // The test client connects from 127.0.0.1, which is not listed here.
    let app = spawn_app_from_toml(&format!(
        "[server]\ntrusted_proxies = [\"10.9.9.9\"]\n{rules}"
    ))
    .await;
    let (_, token) = app.user_with_token("alice").await;
    let forged_public = [
        ("X-Forwarded-Uri", "/public"),
        ("X-Original-URL", "http://app.example.com/public"),
    ];
    assert_needs_login(app.verify_proxied(None, &forged_public).await).await;
    let forged_admin = [("X-Forwarded-Uri", "/admin"), ("X-Forwarded-Method", "GET")];
    assert_allowed(
        &app.verify_proxied(Some(&token), &forged_admin).await,
        "alice",
    );

    // With trusted_proxies empty the same headers are taken as sent.
    let app = spawn_app_from_toml(rules).await;
    assert_bypass(&app.verify_proxied(None, &forged_public).await);
    assert_forbidden(app.verify_proxied(None, &forged_admin).await).await;
}

#[tokio::test]
async fn public_api_example_bypasses_only_its_paths_and_methods() {
    let app = spawn_app_from_toml(&docs_example("a public API")).await;
    let (_, alice) = app.user_with_token("alice").await;
    let api = |method: &'static str, path: &'static str, forged: bool| {
        let mut request = app
            .client
            .get(app.url("/verify"))
            .header("X-Forwarded-Host", "api.example.com")
            .header("X-Forwarded-Method", method)
            .header("X-Forwarded-Uri", path);
        if forged {
            request = request
                .header("Remote-User", "admin")
                .header("Remote-Groups", "admins");
        }
        request
    };
    assert_bypass(&api("GET", "/v1/public/items", false).send().await.unwrap());
    assert_bypass(&api("GET", "/v1/public/items", true).send().await.unwrap());
    assert_bypass(&api("HEAD", "/health", false).send().await.unwrap());
    let logged_in = api("GET", "/v1/public/items", false).bearer_auth(&alice);
    assert_bypass(&logged_in.send().await.unwrap());
    for (method, path) in [
        ("POST", "/v1/public/items"),
        ("GET", "/v1/public/../private"),
        ("GET", "/v1/public/%2e%2e/private"),
        ("GET", "/v1/publicity"),
    ] {
        let response = api(method, path, false).send().await.unwrap();
        assert_needs_login(response).await;
    }
}

#[tokio::test]
async fn hostile_paths_and_unreadable_coordinates_get_403_logged_in_or_not() {
    // No rules at all: the refusal does not depend on them.
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for path in [
        "/public%2F..%2Fadmin",
        "/admin%5cx",
        "/admin\\x",
        "/admin%00.html",
        "/public/%c0%ae%c0%ae/admin",
        "/admin/%zz",
        "/public/%252e%252e/admin",
        "/a/b//../admin",
        "/public/..;/admin",
        "not-a-path",
    ] {
        for who in [None, Some(token.as_str())] {
            let response = app.verify_proxied(who, &[("X-Forwarded-Uri", path)]).await;
            assert_forbidden(response).await;
        }
        let url = format!("https://app.example.com{path}");
        if path.starts_with('/') {
            let response = app
                .verify_proxied(Some(&token), &[("X-Original-URL", &url)])
                .await;
            assert_forbidden(response).await;
        }
    }
    // Raw UTF-8 in the header, and a header sent twice.
    let raw_utf8 = app
        .client
        .get(app.url("/verify"))
        .bearer_auth(&token)
        .header(
            "X-Forwarded-Uri",
            reqwest::header::HeaderValue::from_bytes("/caf\u{e9}".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_forbidden(raw_utf8).await;
    let twice = app
        .client
        .get(app.url("/verify"))
        .bearer_auth(&token)
        .header("X-Forwarded-Uri", "/public")
        .header("X-Forwarded-Uri", "/admin")
        .send()
        .await
        .unwrap();
    assert_forbidden(twice).await;
    // The same path encoded is fine, and a normal path is as before.
    let encoded = app
        .verify_proxied(Some(&token), &[("X-Forwarded-Uri", "/caf%C3%A9")])
        .await;
    assert_allowed(&encoded, "alice");
    let with_rd = app
        .client
        .get(app.url("/verify?rd=%2Flogin"))
        .header("X-Forwarded-Uri", "/admin%2F")
        .send()
        .await
        .unwrap();
    assert_forbidden(with_rd).await;
}

#[tokio::test]
async fn a_path_dressed_up_as_a_public_one_is_judged_as_what_the_app_serves() {
    let app = spawn_app_from_toml(
        "[[access.rules]]\npaths = [\"/public\"]\npolicy = \"bypass\"\n\
         [[access.rules]]\npaths = [\"/admin\"]\npolicy = \"deny\"\n",
    )
    .await;
    let (_, token) = app.user_with_token("alice").await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
        "/%61dmin",
        "/admin;x=1",
        "/public/./../admin/",
    ] {
        assert_forbidden(ask(&app, Some(&token), path).await).await;
        assert_forbidden(ask(&app, None, path).await).await;
    }
    assert_needs_login(ask(&app, None, "/publicity").await).await;
    assert_bypass(&ask(&app, None, "/public/../public/x?y=/admin").await);
}

#[tokio::test]
async fn bypass_and_deny_answer_from_the_rules_alone_without_using_the_session() {
    let app = spawn_app_from_toml(EVERY_POLICY).await;
    let (_, token) = app.user_with_token("alice").await;
    // Close enough to its idle expiry that any use of it slides it.
    let (expires_at, max_expires_at) = (now() + 60, now() + 86_400);
    app.set_session_expiry(&token, expires_at, max_expires_at);
    assert_bypass(&ask(&app, Some(&token), "/open").await);
    assert_forbidden(ask(&app, Some(&token), "/closed").await).await;
    assert_eq!(
        app.stored_expiry(&token),
        Some((expires_at, max_expires_at)),
        "the session was used"
    );
    assert_allowed(&ask(&app, Some(&token), "/members").await, "alice");
    let (slid, _) = app.stored_expiry(&token).unwrap();
    assert!(slid > expires_at + 3000, "the one_factor check slides it");
}
