//! `/metrics`: its own listener only when `metrics.listen` is set, the
//! series the SPEC names, counts that follow the traffic, and a set of
//! series that no traffic can grow.

use std::collections::BTreeSet;

use reqwest::StatusCode;

use crate::helpers::*;

const RULES: &str = r#"
[metrics]
listen = "127.0.0.1:0"

[[access.rules]]
paths = ["/open"]
policy = "bypass"

[[access.rules]]
paths = ["/closed"]
policy = "deny"
"#;

async fn spawn_with_metrics() -> TestApp {
    spawn_app_from_toml(RULES).await
}

/// The scrape's text.
async fn scrape(app: &TestApp) -> String {
    let address = app.metrics_address.as_ref().expect("metrics.listen is set");
    let response = app
        .client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (
                series.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}

fn value(text: &str, series: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .1
}

fn series_set(text: &str) -> BTreeSet<String> {
    samples(text).into_iter().map(|(s, _)| s).collect()
}

#[tokio::test]
async fn without_metrics_listen_there_is_no_listener_and_the_main_one_never_serves_it() {
    let app = spawn_app().await;
    assert!(app.metrics_address.is_none());
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    let app = spawn_with_metrics().await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    // And the metrics listener serves nothing else.
    let address = app.metrics_address.clone().unwrap();
    for path in ["/verify", "/login", "/metrics/x", "/"] {
        let response = app
            .client
            .get(format!("{address}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_scrape_has_every_series_the_spec_names() {
    let app = spawn_with_metrics().await;
    let text = scrape(&app).await;
    for line in [
        "# TYPE latchkey_verify_total counter",
        "# TYPE latchkey_verify_duration_seconds histogram",
        "# TYPE latchkey_login_total counter",
        "# TYPE latchkey_introspect_total counter",
        "# TYPE latchkey_sessions_active gauge",
        "# TYPE latchkey_hash_queue_depth gauge",
        "# TYPE latchkey_password_hash_duration_seconds histogram",
        "# TYPE latchkey_bans_active gauge",
        "# TYPE latchkey_build_info gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(
            &text,
            &format!("latchkey_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );
    for result in ["allow", "unauthenticated", "forbidden", "bypass"] {
        value(
            &text,
            &format!("latchkey_verify_total{{result=\"{result}\"}}"),
        );
    }
    for result in [
        "ok",
        "invalid_credentials",
        "mfa_required",
        "banned",
        "shed",
        "bad_request",
    ] {
        value(
            &text,
            &format!("latchkey_login_total{{result=\"{result}\"}}"),
        );
    }
    // The first bucket is 50 µs.
    let first_bucket = text
        .lines()
        .find(|l| l.starts_with("latchkey_verify_duration_seconds_bucket"))
        .unwrap();
    let le: f64 = first_bucket
        .split_once("le=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(le, _)| le.parse().unwrap())
        .unwrap();
    assert_eq!(le, 50e-6, "{first_bucket}");
}

#[tokio::test]
async fn counts_follow_the_traffic_and_no_traffic_adds_a_series() {
    let app = spawn_with_metrics().await;
    let before = scrape(&app).await;
    let series_before = series_set(&before);

    let alice = app.add_user("alice", "right-password");
    let token = app.login_token("alice", "right-password").await;
    app.login("alice", "wrong-password").await;
    app.login("nobody-\u{1F600}-203.0.113.9", "x").await;
    app.post_raw("/login", "text/plain", b"x".to_vec()).await;
    app.login_form(&[("username", "alice")]).await;
    let headers = |path: &'static str| {
        vec![
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Forwarded-Uri", path),
            ("X-Forwarded-For", "198.51.100.23"),
        ]
    };
    app.verify_proxied(Some(&token), &headers("/members")).await;
    app.verify_proxied(Some(&token), &headers("/members/2"))
        .await;
    app.verify_proxied(None, &headers("/members")).await;
    app.verify_proxied(Some("forged-token-value"), &headers("/x"))
        .await;
    app.verify_proxied(None, &headers("/open/a")).await;
    app.verify_proxied(Some(&token), &headers("/closed")).await;
    app.verify_proxied(None, &headers("/%2e%2e/closed")).await;
    app.introspect(&token).await;
    app.introspect("no-such-token").await;
    app.introspect("another").await;

    let after = scrape(&app).await;
    assert_eq!(
        series_set(&after),
        series_before,
        "the set of series changed"
    );
    let count = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(count("latchkey_verify_total{result=\"allow\"}"), 2.0);
    assert_eq!(
        count("latchkey_verify_total{result=\"unauthenticated\"}"),
        2.0
    );
    assert_eq!(count("latchkey_verify_total{result=\"bypass\"}"), 1.0);
    assert_eq!(count("latchkey_verify_total{result=\"forbidden\"}"), 2.0);
    assert_eq!(count("latchkey_verify_duration_seconds_count"), 7.0);
    assert_eq!(count("latchkey_login_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        count("latchkey_login_total{result=\"invalid_credentials\"}"),
        2.0
    );
    assert_eq!(count("latchkey_login_total{result=\"bad_request\"}"), 2.0);
    assert_eq!(count("latchkey_password_hash_duration_seconds_count"), 3.0);
    assert_eq!(count("latchkey_introspect_total{active=\"true\"}"), 1.0);
    assert_eq!(count("latchkey_introspect_total{active=\"false\"}"), 2.0);
    assert_eq!(value(&after, "latchkey_sessions_active"), 1.0);
    assert_eq!(value(&after, "latchkey_hash_queue_depth"), 0.0);
    for secret in [
        token.as_str(),
        "alice",
        "203.0.113.9",
        "198.51.100.23",
        "forged",
        "/members",
    ] {
        assert!(!after.contains(secret), "the metrics name {secret:?}");
    }
    app.delete_user(alice);
    assert_eq!(value(&scrape(&app).await, "latchkey_sessions_active"), 0.0);
}

#[tokio::test]
async fn bans_and_refusals_are_counted_as_such() {
    let app =
        spawn_app_from_toml("[metrics]\nlisten = \"127.0.0.1:0\"\n[login]\nmax_failures = 2\n")
            .await;
    app.add_user("bob", "right-password");
    for _ in 0..2 {
        app.login("bob", "wrong").await;
    }
    for _ in 0..3 {
        assert_eq!(
            app.login("bob", "right-password").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let text = scrape(&app).await;
    assert_eq!(value(&text, "latchkey_login_total{result=\"banned\"}"), 3.0);
    assert_eq!(
        value(
            &text,
            "latchkey_login_total{result=\"invalid_credentials\"}"
        ),
        2.0
    );
    assert_eq!(value(&text, "latchkey_bans_active{kind=\"username\"}"), 1.0);
    assert_eq!(value(&text, "latchkey_bans_active{kind=\"address\"}"), 1.0);
}

#[tokio::test]
async fn the_server_announces_the_metrics_address_and_a_taken_port_is_one_clear_error() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("LATCHKEY_METRICS__LISTEN", "127.0.0.1:0");
    let mut server = Server::spawn(cmd);
    let line = server.wait_for_stderr("metrics listening on http://");
    let address = line
        .split_once("metrics listening on ")
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    assert!(address.ends_with("/metrics"), "{line}");
    let body = http_client()
        .get(&address)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("latchkey_build_info"), "{body}");
    // A stop ends the metrics listener too, and still exits 0.
    #[cfg(target_os = "linux")]
    {
        server.signal(rustix::process::Signal::TERM);
        let (code, _, stderr) = server.wait_for_exit();
        assert_eq!(code, 0, "{stderr:#?}");
        assert!(http_client().get(&address).send().await.is_err());
    }
    #[cfg(not(target_os = "linux"))]
    drop(server);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = sandbox.serve_command(&["serve"]);
    cmd.env("LATCHKEY_METRICS__LISTEN", format!("127.0.0.1:{port}"));
    let run = execute(cmd, None);
    let message = run.assert_error();
    assert!(
        message.contains("metrics.listen") && message.contains(&port.to_string()),
        "{message}"
    );
}
