//! `POST /logout` and `POST /logout?all=true`: revocation that takes effect
//! at once everywhere, the cleared cookie, idempotence, and the cross-site
//! `Origin` check for cookie-authenticated requests.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Asserts the token is refused by every endpoint that checks one.
async fn assert_token_dead(app: &TestApp, token: &str) {
    let verify = app.verify_bearer(token).await;
    assert_error(verify, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let me = app.get_bearer("/me", token).await;
    assert_error(me, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let sessions = app.get_bearer("/sessions", token).await;
    assert_error(sessions, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let cookie = app.get_cookie("/verify", token).await;
    assert_eq!(cookie.status(), StatusCode::UNAUTHORIZED);
    let introspect = app.introspect(token).await;
    assert_eq!(introspect.status(), StatusCode::OK);
    assert_eq!(
        introspect.json::<Value>().await.unwrap(),
        json!({ "active": false })
    );
}

async fn assert_token_alive(app: &TestApp, token: &str) {
    assert_eq!(app.verify_bearer(token).await.status(), StatusCode::OK);
    let introspect: Value = app.introspect(token).await.json().await.unwrap();
    assert_eq!(introspect["active"], true);
}

async fn logout_cookie(app: &TestApp, token: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/logout"))
        .header("Cookie", app.cookie(token));
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn bearer_logout_answers_204_clears_the_cookie_and_kills_the_token_at_once() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // Use it first, so any cache would have seen it as valid.
    assert_token_alive(&app, &token).await;
    let response = app.logout_bearer(&token).await;
    assert_logged_out(&app, &response);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_token_dead(&app, &token).await;
    assert_eq!(
        app.stored_expiry(&token),
        None,
        "the session row is deleted"
    );
}

#[tokio::test]
async fn logout_leaves_the_users_other_sessions_alone() {
    let app = spawn_app().await;
    let (_, first) = app.user_with_token("alice").await;
    let second = app.login_token("alice", "password-of-test").await;
    app.logout_bearer(&first).await;
    assert_token_dead(&app, &first).await;
    assert_token_alive(&app, &second).await;
}

#[tokio::test]
async fn logout_with_the_cookie_revokes_the_cookies_token() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = logout_cookie(&app, &token, None).await;
    assert_logged_out(&app, &response);
    assert_token_dead(&app, &token).await;
}

#[tokio::test]
async fn the_cleared_cookie_keeps_the_configured_attributes() {
    let app = spawn_app_with(|c| {
        c.session.cookie_secure = true;
        c.session.cookie_domain = ".example.com".into();
    })
    .await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app.logout_bearer(&token).await;
    assert_logged_out(&app, &response);
    let cookie = header(&response, "set-cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("; Domain=.example.com"), "{cookie}");
}

#[tokio::test]
async fn logout_is_idempotent_for_unknown_garbage_and_missing_tokens() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // Twice the same token.
    assert_logged_out(&app, &app.logout_bearer(&token).await);
    assert_logged_out(&app, &app.logout_bearer(&token).await);
    // Well-formed but unknown, and garbage.
    let unknown = "A".repeat(43);
    assert_logged_out(&app, &app.logout_bearer(&unknown).await);
    assert_logged_out(&app, &app.logout_bearer("not a token at all").await);
    // No token.
    let response = app.client.post(app.url("/logout")).send().await.unwrap();
    assert_logged_out(&app, &response);
    // Garbage in the cookie.
    let response = logout_cookie(&app, "%%%garbage", None).await;
    assert_logged_out(&app, &response);
}

#[tokio::test]
async fn logout_of_an_expired_token_answers_204() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    app.set_session_expiry(&token, now() - 10, now() + 3600);
    assert_logged_out(&app, &app.logout_bearer(&token).await);
}

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_user_and_only_theirs() {
    let app = spawn_app().await;
    let (_, a1) = app.user_with_token("alice").await;
    let a2 = app.login_token("alice", "password-of-test").await;
    let a3 = app.login_token("ALICE", "password-of-test").await;
    let (_, b1) = app.user_with_token("bob").await;
    let response = app
        .client
        .post(app.url("/logout?all=true"))
        .bearer_auth(&a2)
        .send()
        .await
        .unwrap();
    assert_logged_out(&app, &response);
    for token in [&a1, &a2, &a3] {
        assert_token_dead(&app, token).await;
    }
    assert_token_alive(&app, &b1).await;
}

#[tokio::test]
async fn logout_all_works_with_the_cookie() {
    let app = spawn_app().await;
    let (_, a1) = app.user_with_token("alice").await;
    let a2 = app.login_token("alice", "password-of-test").await;
    let response = app
        .client
        .post(app.url("/logout?all=true"))
        .header("Cookie", app.cookie(&a1))
        .send()
        .await
        .unwrap();
    assert_logged_out(&app, &response);
    assert_token_dead(&app, &a2).await;
}

#[tokio::test]
async fn logout_all_needs_a_valid_token() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let all = app.url("/logout?all=true");
    let response = app.client.post(&all).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for bad in ["A".repeat(43), "garbage".to_owned()] {
        let response = app
            .client
            .post(&all)
            .bearer_auth(&bad)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // An expired token is not valid either, and its user's sessions stay.
    let other = app.login_token("alice", "password-of-test").await;
    app.set_session_expiry(&token, now() - 1, now() + 3600);
    let response = app
        .client
        .post(&all)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_token_alive(&app, &other).await;
}

#[tokio::test]
async fn cookie_logout_from_another_sites_origin_is_forbidden_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = logout_cookie(&app, &token, Some("https://evil.com")).await;
    assert!(response.headers().get("set-cookie").is_none());
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_token_alive(&app, &token).await;
    // `null` (a sandboxed or privacy-stripped origin) is not this site either.
    let response = logout_cookie(&app, &token, Some("null")).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_token_alive(&app, &token).await;
}

#[tokio::test]
async fn cookie_logout_all_from_another_sites_origin_is_forbidden() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app
        .client
        .post(app.url("/logout?all=true"))
        .header("Cookie", app.cookie(&token))
        .header("Origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_token_alive(&app, &token).await;
}

#[tokio::test]
async fn cookie_logout_from_the_same_origin_is_allowed() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = logout_cookie(&app, &token, Some(&app.address)).await;
    assert_logged_out(&app, &response);
    assert_token_dead(&app, &token).await;
}

#[tokio::test]
async fn cookie_logout_from_a_subdomain_of_the_cookie_domain_is_allowed() {
    let app = spawn_app_with(|c| c.session.cookie_domain = ".example.com".into()).await;
    let (_, token) = app.user_with_token("alice").await;
    let response = logout_cookie(&app, &token, Some("https://app.example.com")).await;
    assert_logged_out(&app, &response);
    assert_token_dead(&app, &token).await;
}

#[tokio::test]
async fn bearer_logout_is_not_subject_to_the_origin_check() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(&token)
        .header("Origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_logged_out(&app, &response);
    assert_token_dead(&app, &token).await;
}

#[tokio::test]
async fn a_revoked_token_stays_revoked_under_repeated_use() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for _ in 0..5 {
        assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
    }
    app.logout_bearer(&token).await;
    for _ in 0..5 {
        assert_eq!(
            app.verify_bearer(&token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn a_session_deleted_by_another_process_is_refused_on_the_very_next_request() {
    // The CLI and other connections write to the same file; nothing may
    // serve a token from memory after its row is gone.
    let app = spawn_app().await;
    let (user, _) = app.user_with_token("alice").await;
    let other_process = app.db();
    for _ in 0..25 {
        let token = app.login_token("alice", "password-of-test").await;
        assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
        assert_eq!(app.introspect(&token).await.status(), StatusCode::OK);
        delete_sessions_of(&other_process, user);
        assert_eq!(
            app.verify_bearer(&token).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let body: Value = app.introspect(&token).await.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "active": false }));
    }
}
