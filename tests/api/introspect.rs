//! `POST /introspect` (RFC 7662): the active answer's exact shape, the bare
//! `{"active": false}` for every kind of dead token, form and JSON bodies,
//! and HTTP Basic client authentication once a client exists.

use crate::helpers::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn inactive(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    // Exactly this object and nothing more.
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({ "active": false }), "{text}");
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn introspect_as(
    app: &TestApp,
    authorization: Option<&str>,
    token: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/introspect"))
        .form(&[("token", token)]);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_active_token_gets_exactly_the_rfc7662_fields() {
    let app = spawn_app().await;
    let before = now();
    let id = app.add_user_with("alice", "pw", Some("a@example.com"), Some("Alice"));
    let login: Value = app.login("alice", "pw").await.json().await.unwrap();
    let after = now();
    let token = login["access_token"].as_str().unwrap();
    let response = app.introspect(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body: Value = response.json().await.unwrap();
    let iat = body["iat"].as_i64().unwrap();
    assert!((before..=after).contains(&iat), "{body}");
    assert_eq!(
        body,
        json!({
            "active": true,
            "sub": id.to_string(),
            "username": "alice",
            "groups": [],
            "amr": ["pwd"],
            "token_type": "Bearer",
            "iat": iat,
            "exp": login["expires_at"],
        })
    );
}

#[tokio::test]
async fn an_active_answer_lists_the_users_groups_sorted_ignoring_case() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for group in ["zeta", "Admins", "beta.testers"] {
        app.add_to_group(group, "alice");
    }
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(
        body["groups"],
        json!(["Admins", "beta.testers", "zeta"]),
        "{body}"
    );
}

#[tokio::test]
async fn the_username_is_reported_as_created() {
    let app = spawn_app().await;
    app.add_user("MixedCase", "pw");
    let token = app.login_token("mixedcase", "pw").await;
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["username"], "MixedCase");
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_just_inactive() {
    let app = spawn_app().await;
    app.user_with_token("alice").await;
    for token in [
        "A".repeat(43),
        "garbage".to_owned(),
        String::new(),
        "x".repeat(5000),
        "é".repeat(30),
        "'; DROP TABLE sessions; --".to_owned(),
    ] {
        inactive(app.introspect(&token).await).await;
    }
}

#[tokio::test]
async fn expired_tokens_are_inactive() {
    let app = spawn_app().await;
    let (_, idle) = app.user_with_token("alice").await;
    let absolute = app.login_token("alice", "password-of-test").await;
    app.set_session_expiry(&idle, now() - 1, now() + 3600);
    app.set_session_expiry(&absolute, now() + 3600, now() - 1);
    inactive(app.introspect(&idle).await).await;
    inactive(app.introspect(&absolute).await).await;
}

#[tokio::test]
async fn a_revoked_token_is_inactive_as_soon_as_logout_answers() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(
        app.logout_bearer(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    inactive(app.introspect(&token).await).await;
}

#[tokio::test]
async fn a_disabled_users_token_is_inactive() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    app.set_disabled(id, true);
    inactive(app.introspect(&token).await).await;
}

#[tokio::test]
async fn a_deleted_users_token_is_inactive() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    app.delete_user(id);
    inactive(app.introspect(&token).await).await;
}

#[tokio::test]
async fn a_json_body_is_accepted_too() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    let response = app
        .post_json("/introspect", &json!({ "token": token }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], id.to_string());
    let response = app
        .post_json("/introspect", &json!({ "token": "A".repeat(43) }))
        .await;
    inactive(response).await;
}

#[tokio::test]
async fn token_type_hint_is_accepted_and_ignored() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for hint in ["access_token", "refresh_token", "nonsense"] {
        let response = app
            .client
            .post(app.url("/introspect"))
            .form(&[("token", token.as_str()), ("token_type_hint", hint)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
    }
    let response = app
        .post_json(
            "/introspect",
            &json!({ "token": token, "token_type_hint": "access_token" }),
        )
        .await;
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
}

#[tokio::test]
async fn a_missing_token_field_is_400_invalid_request() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/introspect"))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app.post_json("/introspect", &json!({})).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app
        .post_raw(
            "/introspect",
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_token_that_is_not_a_string_is_400_invalid_request() {
    let app = spawn_app().await;
    for token in [json!(123), json!(null), json!(["a"]), json!({ "t": 1 })] {
        let response = app
            .post_json("/introspect", &json!({ "token": token }))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn another_content_type_is_415() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for content_type in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let response = app
            .post_raw(
                "/introspect",
                content_type,
                format!("token={token}").into_bytes(),
            )
            .await;
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
}

#[tokio::test]
async fn with_no_client_registered_introspection_is_open() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // Any credentials or none: nobody to check them against.
    let response = introspect_as(&app, None, &token).await;
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
    let response = introspect_as(&app, Some(&basic("who", "ever")), &token).await;
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
}

/// Asserts a 401 asking for HTTP Basic client credentials.
async fn assert_client_refused(response: reqwest::Response) {
    let challenge = header(&response, "www-authenticate");
    assert!(challenge.starts_with("Basic"), "{challenge}");
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(body.get("active").is_none(), "{body}");
}

#[tokio::test]
async fn once_a_client_exists_callers_without_credentials_get_401_basic() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    app.add_client("proxy");
    assert_client_refused(introspect_as(&app, None, &token).await).await;
    // Even when the token is unknown or missing: nothing is said about it.
    assert_client_refused(introspect_as(&app, None, &"A".repeat(43)).await).await;
    let response = app
        .client
        .post(app.url("/introspect"))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_client_refused(response).await;
    // A bearer token is not client authentication.
    let response = introspect_as(&app, Some(&format!("Bearer {token}")), &token).await;
    assert_client_refused(response).await;
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_client_gets_401_basic() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let secret = app.add_client("proxy");
    let mut altered = secret.clone().into_bytes();
    altered[0] = if altered[0] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for authorization in [
        basic("proxy", &altered),
        basic("proxy", ""),
        basic("proxy", &format!("{secret}x")),
        basic("other", &secret),
        basic("PROXY", &secret),
        "Basic %%%not-base64".to_owned(),
        format!("Basic {}", STANDARD.encode(format!("proxy{secret}"))),
    ] {
        let response = introspect_as(&app, Some(&authorization), &token).await;
        assert_client_refused(response).await;
    }
}

#[tokio::test]
async fn the_right_client_credentials_get_the_answer() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    let secret = app.add_client("proxy");
    let other_secret = app.add_client("gateway");
    let response = introspect_as(&app, Some(&basic("proxy", &secret)), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["sub"], id.to_string());
    // Every client works with its own secret, not another's.
    let response = introspect_as(&app, Some(&basic("gateway", &other_secret)), &token).await;
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);
    let response = introspect_as(&app, Some(&basic("gateway", &secret)), &token).await;
    assert_client_refused(response).await;
    // Authenticated callers still get the bare inactive answer for dead tokens.
    let response = introspect_as(&app, Some(&basic("proxy", &secret)), &"A".repeat(43)).await;
    inactive(response).await;
}

#[tokio::test]
async fn an_authenticated_client_without_a_token_field_gets_400() {
    let app = spawn_app().await;
    let secret = app.add_client("proxy");
    let response = app
        .client
        .post(app.url("/introspect"))
        .header("Authorization", basic("proxy", &secret))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_removed_client_can_no_longer_introspect() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let secret = app.add_client("proxy");
    let kept = app.add_client("gateway");
    app.remove_client("proxy");
    let response = introspect_as(&app, Some(&basic("proxy", &secret)), &token).await;
    assert_client_refused(response).await;
    let response = introspect_as(&app, Some(&basic("gateway", &kept)), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn introspection_with_the_cookie_alone_is_not_introspection() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // The token to inspect is in the body; a cookie does not stand in for it.
    let response = app
        .client
        .post(app.url("/introspect"))
        .header("Cookie", app.cookie(&token))
        .form(&[("token", "A".repeat(43))])
        .send()
        .await
        .unwrap();
    inactive(response).await;
}

#[tokio::test]
async fn a_body_that_arrives_in_parts_is_read_whole() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let padding = "x".repeat(60 * 1024);
    for body in [
        format!("padding={padding}&token={token}"),
        format!("token={token}&padding={padding}"),
    ] {
        let head = format!(
            "POST /introspect HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            app.host(),
            body.len()
        );
        let (first, second) = body.as_bytes().split_at(body.len() / 2);
        let mut first_part = head.into_bytes();
        first_part.extend_from_slice(first);
        let response = app.raw_in_parts(vec![first_part, second.to_vec()]).await;
        assert_eq!(response.status, 200, "{}", response.head);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["username"], "alice");
    }
}
