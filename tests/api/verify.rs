//! `/verify`, the forward-auth endpoint: every method, identity headers,
//! bearer before cookie, the 401 a proxy acts on, and the `?rd=` redirect
//! to the login page built from the proxy's forwarded headers.

use crate::helpers::*;
use reqwest::{Method, StatusCode};

/// Asserts the 401 `unauthorized` answer with `WWW-Authenticate: Bearer`.
async fn assert_unauthorized(response: reqwest::Response) {
    assert!(response.headers().get("location").is_none());
    assert!(response.headers().get("remote-user").is_none());
    let challenge = header(&response, "www-authenticate");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn every_method_with_a_bearer_token_gets_200_and_the_identity_headers() {
    let app = spawn_app().await;
    let id = app.add_user_with(
        "alice",
        "pw",
        Some("alice@example.com"),
        Some("Alice Liddell"),
    );
    let token = app.login_token("alice", "pw").await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] {
        let response = app
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/verify"),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(header(&response, "remote-user"), "alice", "{method}");
        assert_eq!(header(&response, "remote-user-id"), id.to_string());
        assert_eq!(header(&response, "remote-email"), "alice@example.com");
        assert_eq!(header(&response, "remote-name"), "Alice Liddell");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "{method} has a body"
        );
    }
}

#[tokio::test]
async fn head_verify_answers_with_headers_and_no_body() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    // Raw, to see what is really on the wire after the head.
    let request = format!(
        "HEAD /verify HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        app.host()
    );
    let response = app.raw(request.into_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("remote-user").as_deref(), Some("alice"));
    assert_eq!(
        response.header("remote-user-id"),
        Some(id.to_string()),
        "{}",
        response.head
    );
    assert!(response.body.is_empty(), "{:?}", response.body);
}

#[tokio::test]
async fn the_email_and_name_headers_are_absent_when_the_user_has_none() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("bob").await;
    let response = app.verify_bearer(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "remote-user"), "bob");
    assert_eq!(header(&response, "remote-user-id"), id.to_string());
    assert!(response.headers().get("remote-email").is_none());
    assert!(response.headers().get("remote-name").is_none());
}

#[tokio::test]
async fn only_the_profile_fields_a_user_has_are_sent() {
    let app = spawn_app().await;
    app.add_user_with("carol", "pw", None, Some("Carol"));
    let token = app.login_token("carol", "pw").await;
    let response = app.verify_bearer(&token).await;
    assert_eq!(header(&response, "remote-name"), "Carol");
    assert!(response.headers().get("remote-email").is_none());
}

#[tokio::test]
async fn non_ascii_names_are_sent_as_utf8() {
    let app = spawn_app().await;
    app.add_user_with("zoë", "pw", None, Some("Zoë Ångström"));
    let token = app.login_token("ZOË", "pw").await;
    let response = app.verify_bearer(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["remote-user"].as_bytes(),
        "zoë".as_bytes()
    );
    assert_eq!(
        response.headers()["remote-name"].as_bytes(),
        "Zoë Ångström".as_bytes()
    );
}

#[tokio::test]
async fn remote_groups_lists_the_users_groups_sorted_ignoring_case_comma_separated() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for group in ["ops", "Admins", "beta.testers", "z_9-x"] {
        app.add_to_group(group, "alice");
    }
    app.user_with_token("bob").await;
    app.add_to_group("bobs", "bob");
    let response = app.verify_bearer(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "remote-groups"),
        "Admins,beta.testers,ops,z_9-x"
    );
    assert_eq!(
        response.headers().get_all("remote-groups").iter().count(),
        1
    );
    // The cookie gets the same answer.
    let response = app.get_cookie("/verify", &token).await;
    assert_eq!(
        header(&response, "remote-groups"),
        "Admins,beta.testers,ops,z_9-x"
    );
}

#[tokio::test]
async fn remote_groups_is_present_and_empty_for_a_user_in_no_group() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    app.user_with_token("bob").await;
    app.add_to_group("admins", "bob");
    // Even when the request claims groups of its own: the answer always
    // carries the header, so a proxy copying it overwrites the claim.
    let response = app
        .client
        .get(app.url("/verify"))
        .bearer_auth(&token)
        .header("Remote-Groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let groups: Vec<_> = response.headers().get_all("remote-groups").iter().collect();
    assert_eq!(groups, [""]);
}

#[tokio::test]
async fn a_membership_change_is_seen_by_the_next_verify() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let groups = |response: reqwest::Response| header(&response, "remote-groups");
    assert_eq!(groups(app.verify_bearer(&token).await), "");
    app.add_to_group("admins", "alice");
    assert_eq!(groups(app.verify_bearer(&token).await), "admins");
    app.add_to_group("Dev", "alice");
    assert_eq!(groups(app.verify_bearer(&token).await), "admins,Dev");
    let admin = app.admin();
    let name = |n: &str| latchkey::auth::input::GroupName::parse(n).unwrap();
    let alice = latchkey::auth::input::Username::parse("alice").unwrap();
    admin.remove_member(&name("admins"), &alice).unwrap();
    assert_eq!(groups(app.verify_bearer(&token).await), "Dev");
    admin.remove_group(&name("dev")).unwrap();
    assert_eq!(groups(app.verify_bearer(&token).await), "");
}

#[tokio::test]
async fn the_identity_answer_is_not_cacheable() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app.verify_bearer(&token).await;
    assert_eq!(header(&response, "cache-control"), "no-store");
}

#[tokio::test]
async fn the_session_cookie_is_accepted() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    let response = app.get_cookie("/verify", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "remote-user"), "alice");
    assert_eq!(header(&response, "remote-user-id"), id.to_string());
    // Among other cookies, too, on a POST.
    let response = app
        .client
        .post(app.url("/verify"))
        .header(
            "Cookie",
            format!("theme=dark; {}; lang=en", app.cookie(&token)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_custom_cookie_name_is_read() {
    let app = spawn_app_with(|c| c.session.cookie_name = "sso".into()).await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app
        .client
        .get(app.url("/verify"))
        .header("Cookie", format!("sso={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .get(app.url("/verify"))
        .header("Cookie", format!("latchkey_session={token}"))
        .send()
        .await
        .unwrap();
    assert_unauthorized(response).await;
}

#[tokio::test]
async fn no_token_gets_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let response = app
            .client
            .request(method, app.url("/verify"))
            .send()
            .await
            .unwrap();
        assert_unauthorized(response).await;
    }
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    app.user_with_token("alice").await;
    for bad in [
        "garbage".to_owned(),
        "A".repeat(43),
        "A".repeat(44),
        "a b c".to_owned(),
    ] {
        assert_unauthorized(app.verify_bearer(&bad).await).await;
        assert_unauthorized(app.get_cookie("/verify", &bad).await).await;
    }
    // A header that is not a bearer one.
    let response = app
        .client
        .get(app.url("/verify"))
        .header("Authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    assert_unauthorized(response).await;
}

#[tokio::test]
async fn the_bearer_header_takes_precedence_over_the_cookie() {
    let app = spawn_app().await;
    let (_, alice) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    // A valid cookie does not rescue a bad bearer token.
    let response = app
        .client
        .get(app.url("/verify"))
        .bearer_auth("garbage-token")
        .header("Cookie", app.cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_unauthorized(response).await;
    // With both valid, the bearer's user is the one reported.
    let response = app
        .client
        .get(app.url("/verify"))
        .bearer_auth(&bob)
        .header("Cookie", app.cookie(&alice))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "remote-user"), "bob");
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app
        .client
        .get(app.url("/verify"))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// `GET /verify?rd=<login_url>` as a proxy would send it, with `headers`.
async fn verify_rd(
    app: &TestApp,
    login_url: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
) -> reqwest::Response {
    let rd: String = url::form_urlencoded::byte_serialize(login_url.as_bytes()).collect();
    let mut request = app.client.get(app.url(&format!("/verify?rd={rd}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn shared_domain(c: &mut latchkey::Config) {
    c.session.cookie_domain = ".example.com".into();
}

#[tokio::test]
async fn with_rd_an_unauthenticated_request_is_redirected_to_the_login_page_with_the_original_url()
{
    let app = spawn_app_with(shared_domain).await;
    let response = verify_rd(
        &app,
        "https://auth.example.com/login",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Forwarded-Uri", "/a/b?c=d&e=f g"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        header(&response, "location"),
        "https://auth.example.com/login?rd=https%3A%2F%2Fapp.example.com%2Fa%2Fb%3Fc%3Dd%26e%3Df+g"
    );
    assert!(response.headers().get("remote-user").is_none());
}

#[tokio::test]
async fn with_rd_the_original_url_may_come_from_x_original_url() {
    let app = spawn_app_with(shared_domain).await;
    let response = verify_rd(
        &app,
        "https://auth.example.com/login",
        &[("X-Original-URL", "https://wiki.example.com/page?id=7")],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        header(&response, "location"),
        "https://auth.example.com/login?rd=https%3A%2F%2Fwiki.example.com%2Fpage%3Fid%3D7"
    );
}

#[tokio::test]
async fn with_rd_a_login_url_that_has_a_query_gets_rd_appended() {
    let app = spawn_app_with(shared_domain).await;
    let response = verify_rd(
        &app,
        "https://auth.example.com/login?theme=dark",
        &[
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Forwarded-Uri", "/"),
        ],
        None,
    )
    .await;
    assert_eq!(
        header(&response, "location"),
        "https://auth.example.com/login?theme=dark&rd=http%3A%2F%2Fapp.example.com%2F"
    );
}

#[tokio::test]
async fn with_rd_a_login_path_on_the_same_host_is_allowed() {
    let app = spawn_app().await;
    let response = verify_rd(
        &app,
        "/login",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.internal"),
            ("X-Forwarded-Uri", "/x"),
        ],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        header(&response, "location"),
        "/login?rd=https%3A%2F%2Fapp.internal%2Fx"
    );
}

#[tokio::test]
async fn with_rd_an_invalid_or_expired_token_is_redirected_too() {
    let app = spawn_app_with(shared_domain).await;
    let (_, token) = app.user_with_token("alice").await;
    app.set_session_expiry(&token, now() - 1, now() + 3600);
    let response = verify_rd(&app, "https://auth.example.com/login", &[], Some(&token)).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let response = verify_rd(&app, "https://auth.example.com/login", &[], Some("junk")).await;
    assert_eq!(response.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn with_rd_an_authenticated_request_still_gets_200() {
    let app = spawn_app_with(shared_domain).await;
    let (_, token) = app.user_with_token("alice").await;
    let response = verify_rd(&app, "https://auth.example.com/login", &[], Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "remote-user"), "alice");
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn with_rd_to_a_host_that_is_not_allowed_the_answer_is_401_not_a_redirect() {
    let app = spawn_app_with(shared_domain).await;
    for login_url in [
        "https://evil.com/login",
        "//evil.com/login",
        "javascript:alert(1)",
        "https://example.com.evil.com/login",
        "\\\\evil.com/login",
        "/\\evil.com/login",
        "https://app.example.com@evil.com/login",
        "https://evil.com\\@app.example.com/login",
        "/\t/evil.com",
        "data:text/html,hi",
    ] {
        let response = verify_rd(
            &app,
            login_url,
            &[("X-Forwarded-Host", "app.example.com")],
            None,
        )
        .await;
        assert_unauthorized(response).await;
    }
}

#[tokio::test]
async fn with_rd_a_login_host_in_allowed_redirect_hosts_is_allowed() {
    let app =
        spawn_app_with(|c| c.login.allowed_redirect_hosts = vec!["sso.corp.net".into()]).await;
    let response = verify_rd(
        &app,
        "https://sso.corp.net/login",
        &[("X-Original-URL", "https://app.corp.net/")],
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        header(&response, "location"),
        "https://sso.corp.net/login?rd=https%3A%2F%2Fapp.corp.net%2F"
    );
}
