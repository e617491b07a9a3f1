//! Behind real nginx and real Caddy: the configurations in `examples/` run
//! as written (only ports and TLS swapped for loopback ones) in front of
//! latchkey and a small app that echoes the identity headers it receives.
//!
//! The proxies are Debian's `nginx` and `caddy`, installed by `.ci/run`.
//! Where one is missing the test says so and passes, except under CI
//! (`CI` set), where a missing proxy fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

/// The upstream app: answers every request with the path and the identity
/// headers it received, and remembers every `Remote-User` it ever saw.
pub struct EchoApp {
    pub addr: SocketAddr,
    pub seen_users: Arc<Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub fn spawn_echo_app() -> EchoApp {
    let seen_users = Arc::new(Mutex::new(Vec::new()));
    let seen = web::Data::from(Arc::clone(&seen_users));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(seen.clone())
            .default_service(web::to(echo))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    EchoApp {
        addr,
        seen_users,
        handle,
    }
}

async fn echo(req: HttpRequest, seen: web::Data<Mutex<Vec<String>>>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(user) = header("remote-user") {
        seen.lock().unwrap().push(user);
    }
    HttpResponse::Ok().json(serde_json::json!({
        "path": req.uri().to_string(),
        "remote_user": header("remote-user"),
        "remote_user_id": header("remote-user-id"),
        "remote_email": header("remote-email"),
        "remote_name": header("remote-name"),
        "remote_headers": req.headers().keys().filter(|k| k.as_str().starts_with("remote-")).count(),
    }))
}

/// A proxy process, killed (by its own PID) when dropped.
pub struct ProxyProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The path of an installed program, or `None` (a failure under CI).
pub fn installed(program: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed; .ci/run installs it"
        );
        eprintln!("skipping: {program} is not installed (apt-get install {program})");
    }
    found
}

/// A free loopback port for a proxy to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port` (at most 15 s).
fn wait_for_port(port: u16, proxy: &ProxyProcess) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "proxy did not start listening; its log:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces `from` with `to` in an example, failing if `from` is absent:
/// a changed example must fail this test, not silently test something else.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example no longer contains {from:?}"
    );
    text.replace(from, to)
}

fn example(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("examples").join(path)).unwrap()
}

fn start_nginx(nginx: &Path, port: u16, latchkey: &str, app: SocketAddr) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut site = example("nginx/latchkey.conf");
    site = swap(
        &site,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port};"),
    );
    site = site
        .lines()
        .filter(|line| !line.trim_start().starts_with("ssl_certificate"))
        .collect::<Vec<_>>()
        .join("\n");
    site = swap(
        &site,
        "server 127.0.0.1:8080;",
        &format!("server {latchkey};"),
    );
    site = swap(&site, "server 127.0.0.1:3000;", &format!("server {app};"));
    site = swap(
        &site,
        "https://auth.example.com/login",
        &format!("http://auth.example.com:{port}/login"),
    );
    let prefix = dir.path();
    std::fs::write(prefix.join("site.conf"), site).unwrap();
    let temp = prefix.join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let log = prefix.join("error.log");
    let main = format!(
        "daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} warn;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
           fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
           include {site};\n}}\n",
        pid = prefix.join("nginx.pid").display(),
        log = log.display(),
        t = temp.display(),
        site = prefix.join("site.conf").display(),
    );
    std::fs::write(prefix.join("nginx.conf"), main).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = ProxyProcess {
        child,
        log,
        _dir: dir,
    };
    wait_for_port(port, &proxy);
    proxy
}

fn start_caddy(caddy: &Path, port: u16, latchkey: &str, app: SocketAddr) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let mut site = example("caddy/Caddyfile");
    site = swap(
        &site,
        "\nauth.example.com {",
        &format!("\nhttp://auth.example.com:{port} {{"),
    );
    site = swap(
        &site,
        "\napp.example.com {",
        &format!("\nhttp://app.example.com:{port} {{"),
    );
    site = swap(&site, "127.0.0.1:8080", latchkey);
    site = swap(&site, "127.0.0.1:3000", &app.to_string());
    site = swap(
        &site,
        "https://auth.example.com/login",
        &format!("http://auth.example.com:{port}/login"),
    );
    let prefix = dir.path();
    let global = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}\n}}\n",
        prefix.join("data").display()
    );
    std::fs::write(prefix.join("Caddyfile"), global + &site).unwrap();
    let log = prefix.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(prefix.join("Caddyfile"))
        .env("HOME", prefix)
        .env("XDG_DATA_HOME", prefix.join("data"))
        .env("XDG_CONFIG_HOME", prefix.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let proxy = ProxyProcess {
        child,
        log,
        _dir: dir,
    };
    wait_for_port(port, &proxy);
    proxy
}

/// latchkey configured as `examples/latchkey.toml` says for a proxy on
/// loopback, but over plain HTTP.
async fn spawn_latchkey_for_proxy() -> TestApp {
    spawn_app_with(|config| {
        config.session.cookie_domain = ".example.com".into();
        config.session.cookie_secure = false;
        config.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
    })
    .await
}

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

    // A user without email or display name: those headers are absent, not
    // empty and not the client's.
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
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["remote_user"], "bob");
    assert_eq!(seen["remote_email"], Value::Null);
    assert_eq!(seen["remote_name"], Value::Null);
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

/// nginx running `examples/nginx/latchkey.conf` in front of `latchkey` and
/// `app`, on a free port; returns the port and the process guard.
pub fn start_nginx_for_test(
    nginx: &Path,
    latchkey: &TestApp,
    app: &EchoApp,
) -> (u16, ProxyProcess) {
    let port = free_port();
    let latchkey_addr = latchkey.address.trim_start_matches("http://");
    (port, start_nginx(nginx, port, latchkey_addr, app.addr))
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
    let port = free_port();
    let latchkey_addr = latchkey.address.trim_start_matches("http://");
    let _proxy = start_caddy(&caddy, port, latchkey_addr, app.addr);
    journey_through(port, &latchkey, &app).await;
}
