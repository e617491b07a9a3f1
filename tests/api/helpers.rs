//! The test harness: a real latchkey on port 0 with its own temp database.

use std::net::TcpListener;
use std::path::PathBuf;

use latchkey::auth::admin::{Admin, NewUser};
use latchkey::auth::input::{ClientId, Password, ProfileField, Username};
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

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// No redirects followed, no cookie store: tests see exactly what was sent.
    pub client: reqwest::Client,
    pub config: Config,
    pub db_path: PathBuf,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
}

/// Starts a server on the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after `adjust` has changed the test defaults.
///
/// Test defaults: own temp database, one worker, cheap argon2, cookies
/// without `Secure` (tests speak plain HTTP). Everything else is SPEC default.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.database.path = dir.path().join("latchkey.db");
    config.server.workers = 1;
    config.password = cheap_passwords();
    config.session.cookie_secure = false;
    adjust(&mut config);
    config.validate().expect("test config is valid");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = latchkey::build(&config, listener).expect("server builds");
    let address = format!("http://{}", app.local_addr());
    let handle = app.handle();
    tokio::spawn(app.run());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    TestApp {
        address,
        client,
        db_path: config.database.path.clone(),
        config,
        handle,
        _dir: dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the workers; the temp dir goes when the struct does.
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A direct connection to the server's database file, for seeding and
    /// for checking what is stored.
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.db_path).expect("open test db");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn
    }

    /// Creates a user with the server's password parameters; returns the id.
    pub fn add_user(&self, name: &str, password: &str) -> i64 {
        self.add_user_with(name, password, None, None)
    }

    pub fn add_user_with(
        &self,
        name: &str,
        password: &str,
        email: Option<&str>,
        display_name: Option<&str>,
    ) -> i64 {
        self.insert_user(name, password, &self.config.password, email, display_name)
    }

    /// Creates a user whose hash is made with `passwords`; returns the id.
    fn insert_user(
        &self,
        name: &str,
        password: &str,
        passwords: &PasswordConfig,
        email: Option<&str>,
        display_name: Option<&str>,
    ) -> i64 {
        let admin = self.admin(passwords);
        let profile = |v: Option<&str>| v.map(|v| ProfileField::parse(v).unwrap());
        admin
            .add_user(&NewUser {
                username: Username::parse(name).unwrap(),
                password: Password::parse_new(password.to_owned()).unwrap(),
                email: profile(email),
                display_name: profile(display_name),
            })
            .expect("insert user")
    }

    /// The admin use cases on this app's database, hashing with `passwords`.
    pub fn admin(&self, passwords: &PasswordConfig) -> Admin {
        let store = Store::open(&self.db_path, 1).expect("open store");
        Admin::new(store, passwords).unwrap()
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

    /// Creates a user and logs them in; returns (user id, token).
    pub async fn user_with_token(&self, name: &str) -> (i64, String) {
        let id = self.add_user(name, "password-of-test");
        (id, self.login_token(name, "password-of-test").await)
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

    /// Sets a session's expiries directly in the database, to test expiry
    /// without waiting.
    pub fn set_session_expiry(&self, token: &str, expires_at: i64, max_expires_at: i64) {
        let hash = sha256(token);
        let changed = self
            .db()
            .execute(
                "UPDATE sessions SET expires_at = ?2, max_expires_at = ?3 WHERE token_hash = ?1",
                rusqlite::params![&hash[..], expires_at, max_expires_at],
            )
            .unwrap();
        assert_eq!(changed, 1, "no session for that token");
    }

    /// `(expires_at, max_expires_at)` of a token's session as stored.
    pub fn stored_expiry(&self, token: &str) -> Option<(i64, i64)> {
        let hash = sha256(token);
        self.db()
            .query_row(
                "SELECT expires_at, max_expires_at FROM sessions WHERE token_hash = ?1",
                [&hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    }
}

/// SHA-256 of a token, as the server stores it.
pub fn sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
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
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "body {body}");
    assert!(body["error_description"].is_string(), "body {body}");
    body
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    latchkey::auth::unix_now()
}

/// What a raw HTTP/1.1 exchange returned: status, head (status line and
/// headers, as text) and body bytes (not de-chunked).
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

impl TestApp {
    /// `host:port` of the server, as a `Host` header names it.
    pub fn host(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    /// `Cookie` header value carrying `token` in the session cookie.
    pub fn cookie(&self, token: &str) -> String {
        format!("{}={token}", self.config.session.cookie_name)
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

    /// `POST /login` with a form body.
    pub async fn login_form(&self, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url("/login"))
            .form(fields)
            .send()
            .await
            .expect("request")
    }

    /// Creates a user whose hash is made with `passwords` rather than the
    /// server's parameters; returns the id.
    pub fn add_user_hashed_with(
        &self,
        name: &str,
        password: &str,
        passwords: &PasswordConfig,
    ) -> i64 {
        self.insert_user(name, password, passwords, None, None)
    }

    /// The stored PHC password hash of user `id`.
    pub fn password_hash(&self, id: i64) -> String {
        self.db()
            .query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// Sets a user's `disabled` flag directly in the database.
    pub fn set_disabled(&self, id: i64, disabled: bool) {
        let changed = self
            .db()
            .execute(
                "UPDATE users SET disabled = ?2 WHERE id = ?1",
                rusqlite::params![id, disabled],
            )
            .unwrap();
        assert_eq!(changed, 1, "no user {id}");
    }

    /// The public session id of a token's session.
    pub fn session_id(&self, token: &str) -> i64 {
        let hash = sha256(token);
        self.db()
            .query_row(
                "SELECT id FROM sessions WHERE token_hash = ?1",
                [&hash[..]],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// Creates an introspection client as `latchkey client add` does; returns its secret.
    pub fn add_client(&self, id: &str) -> String {
        self.admin(&self.config.password)
            .add_client(&ClientId::parse(id).unwrap())
            .unwrap()
            .expose()
            .to_owned()
    }

    /// Sends `request` byte for byte over a new TCP connection and reads the
    /// answer until the server closes it (send `Connection: close`). For
    /// what reqwest will not send: chunked bodies, malformed headers.
    pub async fn raw(&self, request: Vec<u8>) -> RawResponse {
        self.raw_in_parts(vec![request]).await
    }

    /// [`TestApp::raw`], with a 50 ms pause between the parts: the server
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

/// The value of header `name` of a response, as text (panics if absent).
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}
