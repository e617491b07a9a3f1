//! A real browser through nginx: headless Chromium, driven over WebDriver by
//! chromedriver, logs in on latchkey's page and reaches the protected app.
//!
//! Needs Debian's `chromium`, `chromium-driver` and `nginx` (installed by
//! `.ci/run`); without them the test says so and passes, except under CI.
//! It saves screenshots of the login page, the code page and the
//! enrollment page to `target/` (`login-page.png`, `login-code-page.png`,
//! `account-enroll.png`; the ones in docs/ are copies of them).

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

    /// Sets a cookie for `domain` (the current page must be on it).
    async fn add_cookie(&self, name: &str, value: &str, domain: &str) {
        let cookie = json!({ "name": name, "value": value, "domain": domain, "path": "/" });
        self.call(
            reqwest::Method::POST,
            "/cookie",
            Some(json!({ "cookie": cookie })),
        )
        .await;
    }

    /// Waits (at most 10 s) until the page's source contains `text`.
    async fn wait_for_text(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(Instant::now() < deadline, "{text:?} never showed: {source}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// chromedriver on a free port, and a browser session on a fresh profile;
/// `None` (the test passes, except under CI) without nginx or Chromium.
struct Browser {
    driver: WebDriver,
    nginx: std::path::PathBuf,
    _chromedriver: ChildGuard,
    _profile: tempfile::TempDir,
}

async fn start_browser() -> Option<Browser> {
    let (Some(nginx), Some(chromedriver), Some(_)) = (
        installed("nginx"),
        installed("chromedriver"),
        installed("chromium"),
    ) else {
        return None;
    };
    let driver_port = free_port();
    let chromedriver = ChildGuard(
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
    let driver = WebDriver::start(driver_port, profile.path()).await;
    Some(Browser {
        driver,
        nginx,
        _chromedriver: chromedriver,
        _profile: profile,
    })
}

/// Saves a screenshot of the page shown to `target/<name>`.
async fn save_screenshot(browser: &WebDriver, name: &str) {
    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join(name), &screenshot).unwrap();
}

#[tokio::test]
async fn a_person_logs_in_through_nginx_in_a_real_browser() {
    let Some(started) = start_browser().await else {
        return;
    };
    let latchkey = spawn_latchkey_for_proxy().await;
    latchkey.add_user_with("alice", PASSWORD, Some("alice@example.com"), None);
    let app = spawn_echo_app();
    let (port, _proxy) = start_nginx_for_test(&started.nginx, &latchkey, &app);
    let browser = &started.driver;

    // The protected URL sends the browser to the login page.
    let protected = format!("http://app.example.com:{port}/dashboard?tab=1");
    browser.goto(&protected).await;
    let login_url = browser
        .wait_for_url(|u| u.starts_with(&format!("http://auth.example.com:{port}/login")))
        .await;
    assert!(login_url.contains("rd="), "landed on {login_url}");
    save_screenshot(browser, "login-page.png").await;

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

#[tokio::test]
async fn a_person_enrolls_on_the_account_page_and_logs_in_with_a_code_through_nginx() {
    let Some(started) = start_browser().await else {
        return;
    };
    let rules = "[[access.rules]]\ndomains = [\"app.example.com\"]\npaths = [\"/admin\"]\n\
                 policy = \"two_factor\"\n";
    let latchkey = spawn_latchkey_for_proxy_with_rules(rules).await;
    latchkey.add_user("alice", PASSWORD);
    // A session of another device, from before the factor: password only.
    let older = latchkey.login_token("alice", PASSWORD).await;
    let app = spawn_echo_app();
    let (port, _proxy) = start_nginx_for_test(&started.nginx, &latchkey, &app);
    let browser = &started.driver;
    let admin = format!("http://app.example.com:{port}/admin");
    let login = format!("http://auth.example.com:{port}/login");
    let sign_in = || async {
        browser.wait_for_url(|u| u.starts_with(&login)).await;
        browser.type_into("#username", "alice").await;
        browser.type_into("#password", PASSWORD).await;
        browser.click("button[type=submit]").await;
    };

    // The password, then the rule wants a factor she does not have yet:
    // she is led to the account page.
    browser.goto(&admin).await;
    sign_in().await;
    let account = format!("http://auth.example.com:{port}/account?rd=");
    let landed = browser.wait_for_url(|u| u.starts_with(&account)).await;
    assert!(landed.starts_with(&account), "landed on {landed}");
    browser.type_into("#password", PASSWORD).await;
    browser.click("button[type=submit]").await;
    // The secret is read off the page, as a person types it into an app.
    let page = browser.wait_for_text("id=\"totp-secret\"").await;
    assert!(
        page.contains("<svg class=\"qr\""),
        "the QR code is on the page"
    );
    save_screenshot(browser, "account-enroll.png").await;
    let secret = element_text(&page, "totp-secret").unwrap();
    browser.type_into("#code", &totp_code(&secret, 0)).await;
    browser.click("button[type=submit]").await;
    let page = browser.wait_for_text("id=\"recovery-codes\"").await;
    let recovery = list_items(&page, "recovery-codes");
    assert_eq!(recovery.len(), 10);
    // Enrolling proved a code: Continue reaches the page the rule guards.
    browser.click("#continue").await;
    assert_eq!(browser.wait_for_url(|u| u == admin).await, admin);
    assert!(browser.source().await.contains("\"remote_user\":\"alice\""));

    // Logged out, she signs in with the password, then the code.
    browser.delete_cookies().await;
    browser.goto(&admin).await;
    sign_in().await;
    browser.wait_for_text("name=\"challenge\"").await;
    save_screenshot(browser, "login-code-page.png").await;
    browser.type_into("#totp", &totp_code(&secret, 1)).await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.wait_for_url(|u| u == admin).await, admin);
    assert!(browser.source().await.contains("\"remote_user\":\"alice\""));

    // The older one-factor session is stepped up: asked only for a code
    // (a recovery code here: this step's TOTP code is spent).
    browser.delete_cookies().await;
    let cookie = latchkey.config.session.cookie_name.clone();
    browser.add_cookie(&cookie, &older, ".example.com").await;
    browser.goto(&admin).await;
    browser.wait_for_url(|u| u.starts_with(&login)).await;
    let page = browser.wait_for_text("name=\"challenge\"").await;
    assert!(
        !page.contains("id=\"password\""),
        "no password asked: {page}"
    );
    browser.type_into("#totp", &recovery[0]).await;
    browser.click("button[type=submit]").await;
    assert_eq!(browser.wait_for_url(|u| u == admin).await, admin);
    assert!(browser.source().await.contains("\"remote_user\":\"alice\""));
    assert_eq!(
        latchkey.get_bearer("/me", &older).await.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "the one-factor session was replaced"
    );
    browser.quit().await;
}
