//! A real browser through nginx: headless Chromium, driven over WebDriver by
//! chromedriver, logs in on latchkey's page and reaches the protected app.
//!
//! Needs Debian's `chromium`, `chromium-driver` and `nginx` (installed by
//! `.ci/run`); without them the test says so and passes, except under CI.
//! It saves a screenshot of the login page to `target/login-page.png`
//! (docs/login-page.png is a copy of it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

/// The W3C WebDriver wire protocol, as much of it as these tests use.
struct WebDriver {
    http: reqwest::Client,
    session: String,
    base: String,
}

/// The key under which WebDriver returns element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    async fn start(driver_port: u16, user_data_dir: &Path) -> WebDriver {
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{driver_port}");
        // Flags as this machine's Chromium needs them: no sandbox as root,
        // and no background networking (the network is closed).
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=480,720",
            "--host-resolver-rules=MAP *.example.com 127.0.0.1",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", user_data_dir.display()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        WebDriver {
            http,
            session,
            base,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            answer["value"]["error"].is_null(),
            "WebDriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn url(&self) -> String {
        let value = self.call(reqwest::Method::GET, "/url", None).await;
        value.as_str().unwrap().to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let value = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        value[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        value.as_str().unwrap().to_owned()
    }

    async fn source(&self) -> String {
        let value = self.call(reqwest::Method::GET, "/source", None).await;
        value.as_str().unwrap().to_owned()
    }

    async fn screenshot(&self) -> Vec<u8> {
        let value = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap()
    }

    async fn delete_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// Waits (at most 10 s) until the current URL satisfies `done`.
    async fn wait_for_url(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if done(&url) || Instant::now() > deadline {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(&self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }
}

#[tokio::test]
async fn a_person_logs_in_through_nginx_in_a_real_browser() {
    let (Some(nginx), Some(chromedriver), Some(_)) = (
        installed("nginx"),
        installed("chromedriver"),
        installed("chromium"),
    ) else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy().await;
    latchkey.add_user_with("alice", PASSWORD, Some("alice@example.com"), None);
    let app = spawn_echo_app();
    let (port, _proxy) = start_nginx_for_test(&nginx, &latchkey, &app);

    let driver_port = free_port();
    let _driver = ChildGuard(
        Command::new(chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(driver_port, || "chromedriver did not start".to_owned());
    let profile = tempfile::tempdir().unwrap();
    let browser = WebDriver::start(driver_port, profile.path()).await;

    // The protected URL sends the browser to the login page.
    let protected = format!("http://app.example.com:{port}/dashboard?tab=1");
    browser.goto(&protected).await;
    let login_url = browser
        .wait_for_url(|u| u.starts_with(&format!("http://auth.example.com:{port}/login")))
        .await;
    assert!(login_url.contains("rd="), "landed on {login_url}");
    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("login-page.png"), &screenshot).unwrap();

    // Type the credentials, submit: back at the protected content.
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    let landed = browser.wait_for_url(|u| u == protected).await;
    assert_eq!(landed, protected);
    let content = browser.source().await;
    assert!(
        content.contains("\"remote_user\":\"alice\""),
        "page: {content}"
    );

    // A wrong password shows the error on the form, not which field was wrong.
    browser.delete_cookies().await;
    browser.goto(&protected).await;
    browser
        .wait_for_url(|u| u.starts_with(&format!("http://auth.example.com:{port}/login")))
        .await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", "not the password").await;
    browser.click("button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.source().await.contains("role=\"alert\"") {
        assert!(Instant::now() < deadline, "no error message shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        browser.text_of(".error").await,
        "Incorrect username or password."
    );
    browser.quit().await;
}
