//! Error answers: every error is the SPEC's JSON shape with
//! `Content-Type: application/json` (unknown routes, wrong methods, bad
//! bodies, oversized bodies, odd headers), no input produces a 5xx, and
//! `/healthz` reports the database.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KIB_64: usize = 64 * 1024;

#[tokio::test]
async fn healthz_answers_200_status_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
    let response = app.client.head(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/login/extra"),
        (Method::GET, "/verify/"),
        (Method::DELETE, "/sessions/1/x"),
        (Method::DELETE, "/sessions/"),
        (Method::GET, "/%ff%fe"),
        (Method::GET, "/../../etc/passwd"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::PUT, "/me"),
        (Method::POST, "/me"),
        (Method::GET, "/logout"),
        (Method::DELETE, "/logout"),
        (Method::GET, "/introspect"),
        (Method::PUT, "/login"),
        (Method::DELETE, "/login"),
        (Method::POST, "/sessions"),
        (Method::GET, "/sessions/1"),
        (Method::POST, "/healthz"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let app = spawn_app().await;
    for path in ["/login", "/introspect"] {
        for body in [
            &b"{"[..],
            b"{\"username\":",
            b"{\"username\": \"a\", }",
            b"{}x",
            b"nul",
            b"'single'",
            b"",
            b"\xef\xbb\xbf{}",
        ] {
            let response = app.post_raw(path, "application/json", body.to_vec()).await;
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_400_invalid_request() {
    let app = spawn_app().await;
    for path in ["/login", "/introspect"] {
        for body in ["[]", "[{\"token\":\"x\"}]", "\"x\"", "null", "42", "true"] {
            let response = app
                .post_raw(path, "application/json", body.as_bytes().to_vec())
                .await;
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
    }
}

#[tokio::test]
async fn non_string_fields_are_400_invalid_request() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    for body in [
        json!({ "username": "alice", "password": 1 }),
        json!({ "username": 1, "password": "pw" }),
        json!({ "username": "alice", "password": true }),
        json!({ "username": "alice", "password": { "p": "pw" } }),
        json!({ "username": "alice", "password": null }),
    ] {
        let response = app.post_json("/login", &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = app.post_json("/introspect", &json!({ "token": 7 })).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn missing_fields_are_400_invalid_request() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({ "username": "alice" }),
        json!({ "password": "pw" }),
        json!({ "user": "alice", "pass": "pw" }),
    ] {
        let response = app.post_json("/login", &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = app.post_json("/introspect", &json!({ "tok": "x" })).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn an_empty_body_is_400_not_a_crash() {
    let app = spawn_app().await;
    for path in ["/login", "/introspect"] {
        let response = app.post_raw(path, "application/json", Vec::new()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = app
        .post_raw(
            "/introspect",
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // A browser's empty form gets the form back, not a stack trace.
    let response = app
        .post_raw("/login", "application/x-www-form-urlencoded", Vec::new())
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(header(&response, "content-type").starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("action=\"/login\""));
}

#[tokio::test]
async fn an_unsupported_media_type_is_415() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    for content_type in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=abc",
        "application/jsonx",
        "json",
        "",
    ] {
        for path in ["/login", "/introspect"] {
            let response = app
                .post_raw(
                    path,
                    content_type,
                    br#"{"username":"alice","password":"pw","token":"x"}"#.to_vec(),
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
}

#[tokio::test]
async fn media_type_parameters_and_case_are_accepted() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json;charset=UTF-8",
    ] {
        let response = app
            .post_raw(
                "/login",
                content_type,
                br#"{"username":"alice","password":"pw"}"#.to_vec(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
    }
}

/// A JSON login body of exactly `len` bytes, padded with an ignored field.
fn login_body_of(len: usize) -> Vec<u8> {
    padded_login_body("pw", len)
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_accepted_and_one_byte_more_is_413() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let response = app
        .post_raw("/login", "application/json", login_body_of(KIB_64))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .post_raw("/login", "application/json", login_body_of(KIB_64 + 1))
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn a_body_over_64_kib_with_content_length_is_413_on_every_route() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let big = vec![b'a'; KIB_64 + 1];
    for (method, path, content_type) in [
        (Method::POST, "/login", "application/json"),
        (Method::POST, "/login", "application/x-www-form-urlencoded"),
        (
            Method::POST,
            "/introspect",
            "application/x-www-form-urlencoded",
        ),
        (Method::POST, "/introspect", "text/plain"),
        (Method::POST, "/logout", "application/json"),
        (Method::POST, "/verify", "application/octet-stream"),
        (Method::GET, "/me", "application/json"),
        (Method::DELETE, "/sessions/1", "application/json"),
        (Method::POST, "/nowhere", "application/json"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("Content-Type", content_type)
            .bearer_auth(&token)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}"
        );
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    // Refused before reading: the token was not logged out.
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_huge_declared_length_is_413_without_sending_the_body() {
    let app = spawn_app().await;
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000000\r\nConnection: close\r\n\r\n{{",
        app.host()
    );
    let response = app.raw(request.into_bytes()).await;
    assert_eq!(response.status, 413, "{}", response.head);
    assert!(response
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
}

/// `body` as a chunked request to `path`, in 1 KiB chunks.
fn chunked_request(host: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let sizes = vec![1024; body.len().div_ceil(1024)];
    request.extend_from_slice(&chunked_body(body, &sizes));
    request
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let host = app.host();
    for (path, content_type, body) in [
        ("/login", "application/json", login_body_of(KIB_64 + 1)),
        ("/login", "application/json", login_body_of(KIB_64 * 4)),
        ("/introspect", "application/x-www-form-urlencoded", {
            let mut body = b"token=".to_vec();
            body.resize(KIB_64 + 100, b'a');
            body
        }),
        ("/introspect", "application/json", vec![b' '; KIB_64 + 1]),
        // Routes that never read a body refuse an oversized one all the same.
        ("/logout", "application/json", vec![b' '; KIB_64 + 1]),
        ("/verify", "text/plain", vec![b'x'; KIB_64 * 2]),
        ("/no/such/route", "text/plain", vec![b'x'; KIB_64 + 1]),
    ] {
        let response = app
            .raw(chunked_request(&host, path, content_type, &body))
            .await;
        assert_eq!(response.status, 413, "{path}: {}", response.head);
        assert!(response
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"));
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"], "payload_too_large");
    }
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_is_read_normally() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    let request = chunked_request(
        &app.host(),
        "/login",
        "application/json",
        &login_body_of(KIB_64),
    );
    let response = app.raw(request).await;
    assert_eq!(response.status, 200, "{}", response.head);
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test]
async fn invalid_utf8_in_a_form_is_not_a_crash() {
    let app = spawn_app().await;
    app.add_user("alice", "pw");
    for body in [
        &b"token=%FF%FE%FD"[..],
        b"token=\xff\xfe",
        b"\xff=\xff&token=\xc3",
    ] {
        let response = app
            .post_raw(
                "/introspect",
                "application/x-www-form-urlencoded",
                body.to_vec(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "active": false })
        );
    }
    for body in [
        &b"username=%FF&password=pw"[..],
        b"username=alice&password=\xff\xfe",
    ] {
        let response = app
            .post_raw("/login", "application/x-www-form-urlencoded", body.to_vec())
            .await;
        // A login that fails: the form again, 401.
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(header(&response, "content-type").starts_with("text/html"));
    }
}

#[tokio::test]
async fn invalid_utf8_in_json_is_400_invalid_request() {
    let app = spawn_app().await;
    for (path, body) in [
        (
            "/login",
            &b"{\"username\":\"\xff\",\"password\":\"pw\"}"[..],
        ),
        ("/introspect", b"{\"token\":\"\xc3\x28\"}"),
    ] {
        let response = app.post_raw(path, "application/json", body.to_vec()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let app = spawn_app().await;
    let mut body = "[".repeat(30_000);
    body.push_str(&"]".repeat(30_000));
    let response = app
        .post_raw("/introspect", "application/json", body.into_bytes())
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let body = format!(
        "{{\"token\":{}{}}}",
        "{\"a\":".repeat(5_000),
        "1}".repeat(5_000)
    );
    let response = app
        .post_raw("/introspect", "application/json", body.into_bytes())
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_very_long_bearer_token_is_a_plain_401() {
    let app = spawn_app().await;
    for len in [44, 1000, 16 * 1024, 60 * 1024] {
        let response = app.verify_bearer(&"a".repeat(len)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = app.get_cookie("/me", &"a".repeat(len)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

/// A raw `GET path` carrying one header with arbitrary bytes.
async fn raw_get_with(app: &TestApp, path: &str, name: &str, value: &[u8]) -> RawResponse {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{name}: ", app.host()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    app.raw(request).await
}

fn assert_raw_error(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.head);
    assert!(
        response
            .header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{}",
        response.head
    );
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"], code);
    assert!(body["error_description"].is_string());
}

#[tokio::test]
async fn non_ascii_cookies_and_authorization_headers_are_a_plain_401() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let cookie = app.cookie(&token);
    for (name, value) in [
        ("Cookie", b"latchkey_session=\xc3\xa9t\xc3\xa9".to_vec()),
        ("Cookie", b"latchkey_session=\xff\xfe\xfd".to_vec()),
        ("Authorization", b"Bearer \xc3\xa9\xff".to_vec()),
        ("Authorization", b"\xff\xfe".to_vec()),
        // A valid cookie next to garbage in the same header is not rescued
        // by guessing: the header is not text.
        ("Cookie", [cookie.as_bytes(), b"; x=\xff"].concat()),
    ] {
        for path in ["/verify", "/me", "/sessions"] {
            let response = raw_get_with(&app, path, name, &value).await;
            assert_raw_error(&response, 401, "unauthorized");
        }
    }
    let response = raw_get_with(&app, "/verify", "Cookie", cookie.as_bytes()).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn odd_authorization_headers_are_a_plain_401() {
    let app = spawn_app().await;
    app.user_with_token("alice").await;
    for value in [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "Basic",
        "Token abc",
        "bearer\tabc",
        "Negotiate YII=",
    ] {
        let response = raw_get_with(&app, "/me", "Authorization", value.as_bytes()).await;
        assert!(response.status < 500, "{value:?}: {}", response.head);
        assert_raw_error(&response, 401, "unauthorized");
    }
}

#[tokio::test]
async fn a_non_text_content_type_is_415_not_a_crash() {
    let app = spawn_app().await;
    let mut request = format!(
        "POST /introspect HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json",
        app.host()
    )
    .into_bytes();
    request.push(0xff);
    request.extend_from_slice(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    let response = app.raw(request).await;
    assert_raw_error(&response, 415, "unsupported_media_type");
}

#[tokio::test]
async fn headers_too_large_for_the_server_get_a_4xx_and_the_server_lives_on() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let huge = raw_get_with(&app, "/verify", "X-Big", &vec![b'a'; 1_000_000]).await;
    assert!((400..500).contains(&huge.status), "{}", huge.head);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let request = format!(
        "GET /verify HTTP/1.1\r\nHost: {}\r\n{many}Connection: close\r\n\r\n",
        app.host()
    );
    let response = app.raw(request.into_bytes()).await;
    assert!((400..500).contains(&response.status), "{}", response.head);
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_http_framing_gets_a_4xx_and_the_server_lives_on() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let host = app.host();
    for request in [
        format!("POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!"),
        format!("POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\nConnection: close\r\n\r\n"),
        format!("POST /login HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"),
        format!("GET /verify HTTP/1.1\r\nHost: {host}\r\nBad Header\r\nConnection: close\r\n\r\n"),
        format!("GET /verify HTTP/1.1\r\nHost: {host}\r\nCookie: a\0b\r\nConnection: close\r\n\r\n"),
    ] {
        let response = app.raw(request.clone().into_bytes()).await;
        assert!(
            (400..500).contains(&response.status),
            "{request:?}: {}",
            response.head
        );
    }
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn odd_query_strings_are_not_a_crash() {
    let app = spawn_app().await;
    for path in [
        "/verify?rd=%ff%fe",
        "/verify?rd=",
        "/verify?rd",
        "/verify?rd=%",
        "/verify?rd=http://[::1",
        "/verify?&&&==&rd=&rd=//x",
        "/login?rd=%ff",
        "/login?rd=%",
        "/logout?all=%ff",
    ] {
        let method = if path.starts_with("/logout") {
            Method::POST
        } else {
            Method::GET
        };
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().as_u16() < 500,
            "{path}: {}",
            response.status()
        );
        assert!(response.status() != StatusCode::FOUND, "{path} redirected");
    }
}

#[tokio::test]
async fn no_combination_of_method_route_body_and_type_gives_a_5xx() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let bodies: [&[u8]; 8] = [
        b"",
        b"{}",
        b"[]",
        b"\xff\xfe\x00",
        b"token=x&username=alice&password=pw&rd=//evil",
        br#"{"username":"alice","password":"pw","token":"x"}"#,
        b"null",
        b"%%%&&&===",
    ];
    let content_types = [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("application/json; charset=latin1"),
        Some(";;;"),
    ];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let paths = [
        "/login",
        "/logout",
        "/logout?all=true",
        "/introspect",
        "/verify",
        "/me",
        "/sessions",
        "/sessions/1",
        "/healthz",
    ];
    for method in &methods {
        for path in paths {
            for body in bodies {
                for content_type in content_types {
                    let mut request = app
                        .client
                        .request(method.clone(), app.url(path))
                        .body(body.to_vec());
                    // Authenticated too, where that cannot end the session.
                    if !path.starts_with("/logout") && !path.starts_with("/sessions/") {
                        request = request.bearer_auth(&token);
                    }
                    if let Some(content_type) = content_type {
                        request = request.header("Content-Type", content_type);
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let described = format!("{method} {path} {content_type:?} {body:?}");
                    assert!(status.as_u16() < 500, "{described}: {status}");
                    if status.is_client_error() {
                        let content_type = header(&response, "content-type");
                        let html_login = path == "/login" && content_type.starts_with("text/html");
                        assert!(
                            html_login || content_type.starts_with("application/json"),
                            "{described}: {content_type}"
                        );
                        if !html_login {
                            let body: Value = response.json().await.unwrap();
                            assert!(body["error"].is_string(), "{described}: {body}");
                            assert!(body["error_description"].is_string());
                        }
                    }
                }
            }
        }
    }
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_errors_carry_only_error_and_error_description() {
    let app = spawn_app().await;
    let responses = [
        app.client.get(app.url("/nope")).send().await.unwrap(),
        app.client.put(app.url("/me")).send().await.unwrap(),
        app.client.get(app.url("/me")).send().await.unwrap(),
        app.post_raw("/login", "text/plain", b"x".to_vec()).await,
        app.post_raw("/introspect", "application/json", b"[".to_vec())
            .await,
    ];
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "{status}: {body}");
        assert!(!body["error_description"].as_str().unwrap().is_empty());
    }
}
