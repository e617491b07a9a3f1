//! A real latchkey in this process on port 0 with its own temp database
//! ([`TestApp`]: a SQLite file, or a PostgreSQL database when
//! `LATCHKEY_TEST_BACKEND=postgres`, see `helpers::postgres`), and the
//! HTTP calls tests make to any latchkey, this one or the real binary
//! ([`Api`]), down to raw bytes on a TCP connection.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::OnceLock;

use latchkey::config::{Config, PasswordConfig};
use latchkey::store::Store;
use reqwest::{Response, StatusCode};
use serde_json::Value;

/// Cheapest argon2id parameters argon2 accepts: tests measure behaviour, not cost.
pub fn cheap_passwords() -> PasswordConfig {
    PasswordConfig {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    }
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    latchkey::auth::unix_now()
}

/// How tests build HTTP clients: no redirects followed, no cookie store, no
/// proxy from the environment. Tests see exactly what was sent.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// A client from [`http_client_builder`].
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("http client")
}

/// The HTTP side of a running latchkey, wherever it runs: one method per
/// endpoint call the tests share, and raw exchanges for what reqwest will
/// not send.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// From [`http_client`].
    pub client: reqwest::Client,
}

impl Api {
    /// Talks to the latchkey at `address` (`http://host:port`).
    pub fn new(address: String) -> Api {
        Api {
            address,
            client: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `host:port` of the server, as a `Host` header names it.
    pub fn host(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    /// `POST /login` with a JSON body.
    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/login"))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("request")
    }

    /// Logs in and returns the access token; panics unless the login succeeds.
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "login of {username} failed"
        );
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `POST /login` with a form body.
    pub async fn login_form(&self, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url("/login"))
            .form(fields)
            .send()
            .await
            .expect("request")
    }

    /// `GET <path>` with a bearer token.
    pub async fn get_bearer(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `GET /verify` with a bearer token.
    pub async fn verify_bearer(&self, token: &str) -> Response {
        self.get_bearer("/verify", token).await
    }

    /// `GET /verify` as a proxy asks it: the proxied request described in
    /// `headers` (`X-Forwarded-Uri`, `X-Original-URL`, …), with the user's
    /// bearer token when there is one.
    pub async fn verify_proxied(&self, token: Option<&str>, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.get(self.url("/verify"));
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// `POST /introspect` with a form body `token=<token>`.
    pub async fn introspect(&self, token: &str) -> Response {
        self.client
            .post(self.url("/introspect"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("request")
    }

    /// `POST /logout` with a bearer token.
    pub async fn logout_bearer(&self, token: &str) -> Response {
        self.client
            .post(self.url("/logout"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// `POST <path>` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST <path>` with `body` sent as is under `content_type`.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.client
            .post(self.url(path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// Sends `request` byte for byte over a new TCP connection and reads the
    /// answer until the server closes it (send `Connection: close`). For
    /// what reqwest will not send: chunked bodies, malformed headers.
    pub async fn raw(&self, request: Vec<u8>) -> RawResponse {
        self.raw_in_parts(vec![request]).await
    }

    /// [`Api::raw`], with a 50 ms pause between the parts: the server
    /// reads them in separate chunks.
    pub async fn raw_in_parts(&self, parts: Vec<Vec<u8>>) -> RawResponse {
        let addr = self.host();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                // The server may answer (413) and close before reading it all.
                let _ = stream.write_all(part);
            }
            let mut bytes = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    Err(_) if !bytes.is_empty() => break,
                    Err(e) => panic!("reading the raw response: {e}"),
                }
            }
            let split = bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a complete response head");
            let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status code");
            RawResponse {
                status,
                head,
                body: bytes[split + 4..].to_vec(),
            }
        })
        .await
        .unwrap()
    }
}

/// A running server and what a test needs to talk to it; its [`Api`] is
/// reached through it (`app.login(..)`, `app.client`, `app.address`).
pub struct TestApp {
    api: Api,
    /// `http://127.0.0.1:<port>` of `/metrics`, when `metrics.listen` is set.
    pub metrics_address: Option<String>,
    pub config: Config,
    /// The SQLite file (unused on PostgreSQL: `config.database.url` is set).
    pub db_path: PathBuf,
    /// The store the fixtures write through, opened on first use.
    pub(super) fixtures: OnceLock<Store>,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Starts a server on the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `adjust` has changed the test defaults.
///
/// Test defaults: own temp database (a SQLite file, or a new PostgreSQL
/// database under `LATCHKEY_TEST_BACKEND=postgres`), one worker, cheap
/// argon2, cookies without `Secure` (tests speak plain HTTP). Everything
/// else is SPEC default.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(Config::default(), adjust).await
}

/// Starts a server on the configuration file text `toml` (every section it
/// holds, read as `latchkey --config` would read it), with the test
/// defaults of [`spawn_app_with`] for the database, workers, argon2 and
/// cookies.
pub async fn spawn_app_from_toml(toml: &str) -> TestApp {
    let config = Config::from_sources(
        Some(toml),
        std::path::Path::new("test.toml"),
        std::iter::empty(),
    )
    .unwrap_or_else(|e| panic!("the test config does not load: {e}\n{toml}"));
    spawn_app_on(config, |_| {}).await
}

async fn spawn_app_on(mut config: Config, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    config.database.path = dir.path().join("latchkey.db");
    if super::postgres::on_postgres() {
        config.database.url = super::postgres::shared_cluster().create_database();
    }
    config.server.workers = 1;
    config.password = cheap_passwords();
    config.session.cookie_secure = false;
    adjust(&mut config);
    config.validate().expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = latchkey::build(&config, listener).expect("server builds");
    let address = format!("http://{}", app.local_addr());
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    let handle = app.handle();
    tokio::spawn(app.run());
    TestApp {
        api: Api::new(address),
        metrics_address,
        db_path: config.database.path.clone(),
        fixtures: OnceLock::new(),
        config,
        handle,
        _dir: dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the workers; the temp dir goes when the struct does.
        drop(self.handle.stop(false));
        if !self.config.database.url.is_empty() {
            // Its connections (the server's, the fixtures') are ended with it.
            super::postgres::shared_cluster().drop_database(&self.config.database.url);
        }
    }
}

impl TestApp {
    /// Creates a user and logs them in; returns (user id, token).
    pub async fn user_with_token(&self, name: &str) -> (i64, String) {
        let id = self.add_user(name, "password-of-test");
        (id, self.login_token(name, "password-of-test").await)
    }

    /// `Cookie` header value carrying `token` in the session cookie.
    pub fn cookie(&self, token: &str) -> String {
        format!("{}={token}", self.config.session.cookie_name)
    }

    /// `POST <path>` with a form body and the session cookie.
    pub async fn post_form_cookie(
        &self,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        self.client
            .post(self.url(path))
            .header("Cookie", self.cookie(token))
            .form(fields)
            .send()
            .await
            .expect("request")
    }

    /// The session token a response's `Set-Cookie` hands out.
    pub fn cookie_token(&self, response: &Response) -> Option<String> {
        let prefix = format!("{}=", self.config.session.cookie_name);
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&prefix)?
                    .split(';')
                    .next()
                    .map(str::to_owned)
            })
            .filter(|token| !token.is_empty())
    }

    /// `GET <path>` with the session cookie.
    pub async fn get_cookie(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("Cookie", self.cookie(token))
            .send()
            .await
            .expect("request")
    }
}

/// Asserts the SPEC's JSON error shape and code, and returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    // An error answers one request: no cache may keep it for the next.
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "an error without Cache-Control: no-store"
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "body {body}");
    assert!(body["error_description"].is_string(), "body {body}");
    body
}

/// Asserts a `/verify` answer of a `bypass` rule: 200, and every
/// `Remote-*` header present once and empty (whatever the request claimed).
pub fn assert_bypass(response: &Response) {
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    for name in [
        "remote-user",
        "remote-user-id",
        "remote-email",
        "remote-name",
        "remote-groups",
    ] {
        let values: Vec<_> = response.headers().get_all(name).iter().collect();
        assert_eq!(values, [""], "{name} in {response:?}");
    }
}

/// Asserts a `/verify` 403 `forbidden`: never a redirect, never an identity.
pub async fn assert_forbidden(response: Response) {
    assert!(response.headers().get("location").is_none(), "{response:?}");
    assert!(
        response.headers().get("remote-user").is_none(),
        "{response:?}"
    );
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
}

/// The value of header `name` of a response, as text (panics if absent).
/// Asserts a 204 that clears the session cookie (/logout, or a browser
/// deleting its own session).
pub fn assert_logged_out(app: &TestApp, response: &Response) {
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cookie = header(response, "set-cookie");
    let name = &app.config.session.cookie_name;
    assert!(cookie.starts_with(&format!("{name}=;")), "{cookie}");
    assert!(cookie.contains("; Max-Age=0"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
}

pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The keys of a JSON object (panics if `value` is not one).
pub fn keys_of(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// A JSON login body for alice of exactly `len` bytes, padded with a field
/// the server ignores.
pub fn padded_login_body(password: &str, len: usize) -> Vec<u8> {
    let head = format!(r#"{{"username":"alice","password":"{password}","pad":""#);
    let tail = br#""}"#;
    let mut body = head.into_bytes();
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

/// `body` as a chunked transfer coding: chunks of `sizes` (each at least one
/// byte), then the rest in one chunk, then the last chunk.
pub fn chunked_body(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// What a raw HTTP/1.1 exchange returned: status, head (status line and
/// headers, as text) and body bytes (not de-chunked).
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Every header line as `(name, value)`, trimmed, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.head.lines().skip(1).filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim(), value.trim()))
        })
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_owned())
    }
}
