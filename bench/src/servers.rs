//! The servers under test and how they are started: the hidden modes the
//! bench re-executes itself in (`__serve`: latchkey as `latchkey serve` runs
//! it; `__baseline`: a bare actix-web route), starting one on a fresh
//! config, waiting until it serves, and the preflight that checks every
//! request a scenario sends gets the answer it assumes.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use anyhow::{anyhow, bail, Context, Result};
use latchkey::auth::totp::{step_of, Secret};
use latchkey::auth::unix_now;
use latchkey::config::Policy;
use latchkey::Config;

use crate::process::{last_line, pinned, ChildGuard};
use crate::seed::user_name;
use crate::{Ctx, ACCESS_RULES, MAX_FAILURES, PASSWORD, SERVER_CORE, WRONG_PASSWORD};

/// The line a server child prints once it listens.
const LISTENING_PREFIX: &str = "LISTENING ";

/// latchkey, through the same calls as `latchkey serve`, on 127.0.0.1:<any>.
pub fn serve(config_path: &Path) -> Result<()> {
    let config = latchkey::cli::load_config(Some(config_path))?;
    let (listener, port) = bind_loopback()?;
    actix_web::rt::System::new().block_on(async move {
        let app = latchkey::build(&config, listener)?;
        announce(port)?;
        app.run().await.context("latchkey server failed")
    })
}

/// The baseline: a bare actix-web server, one worker, one route.
pub fn baseline() -> Result<()> {
    let (listener, port) = bind_loopback()?;
    actix_web::rt::System::new().block_on(async move {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().route("/json", web::get().to(bare_json))
        })
        .workers(1)
        .listen(listener)?
        .run();
        announce(port)?;
        server.await.context("baseline server failed")
    })
}

async fn bare_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// A listener on 127.0.0.1 at a port the kernel picks, and that port.
fn bind_loopback() -> Result<(TcpListener, u16)> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Tells the parent which port was bound.
fn announce(port: u16) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LISTENING_PREFIX}{port}")?;
    out.flush()?;
    Ok(())
}

/// A running server child; killed and reaped when dropped.
pub struct Server {
    child: ChildGuard,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Fails with the server's last log line when it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.0.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the server exited ({status}): {}", log_tail(&self.log)),
            Err(e) => Err(e).context("cannot check on the server process"),
        }
    }
}

/// What a latchkey under test serves with, besides its database.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeWith {
    pub access_rules: Rules,
    /// A `metrics.listen` listener, so every answer is counted.
    pub metrics: bool,
}

/// The `[access]` section of a latchkey under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rules {
    /// None: the default policy (`one_factor`) judges every request.
    #[default]
    None,
    /// [`ACCESS_RULES`] rules, the one that applies the last.
    Realistic,
    /// One rule with this policy over every path, and `deny` by default.
    One(Policy),
}

/// Where a latchkey under test keeps its data.
#[derive(Debug, Clone, Copy)]
pub enum DbTarget<'a> {
    /// An SQLite file (`database.path`).
    File(&'a Path),
    /// A PostgreSQL database (`database.url`).
    Url(&'a str),
}

/// Starts latchkey on `db`, or the baseline when `db` is `None`; `name`
/// names its config and log files in the work directory, so that several
/// instances can run at once.
pub fn start_server(
    ctx: &Ctx,
    db: Option<DbTarget<'_>>,
    with: ServeWith,
    name: &str,
) -> Result<Server> {
    let log = ctx.work.join(format!("{name}.log"));
    let log_file =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = pinned(ctx, SERVER_CORE, &ctx.exe);
    match db {
        Some(db) => {
            let config = ctx.work.join(format!("{name}.toml"));
            fs::write(&config, server_config_toml(db, with))
                .with_context(|| format!("cannot write {}", config.display()))?;
            command.arg("__serve").arg("--config").arg(&config);
        }
        None => {
            command.arg("__baseline");
        }
    }
    without_latchkey_variables(&mut command);
    let mut child = ChildGuard(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start the server process")?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the server's stdout is not piped"))?;
    // Reads the port line, then drains stdout until the server exits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        lines.for_each(drop);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("the server did not start within 60 s: {}", log_tail(&log))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            bail!("the server exited at start: {}", log_tail(&log))
        }
    };
    let port: u16 = line
        .strip_prefix(LISTENING_PREFIX)
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?;
    let mut server = Server {
        child,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        log,
    };
    wait_until_serving(&mut server, db.is_some())?;
    Ok(server)
}

/// Polls the health route until it answers 200, for at most 10 s.
fn wait_until_serving(server: &mut Server, latchkey: bool) -> Result<()> {
    let path = if latchkey { "/healthz" } else { "/json" };
    let request = http_request("GET", path, &[], "");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        server.check_alive()?;
        match http(server.addr, &request) {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) if Instant::now() >= deadline => {
                bail!("the server answers {path} with {status}, not 200")
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context("the server did not answer within 10 s")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The config is the file alone: no LATCHKEY_* variable may change it.
pub fn without_latchkey_variables(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .starts_with(latchkey::config::ENV_PREFIX)
        {
            command.env_remove(name);
        }
    }
}

fn server_config_toml(db: DbTarget<'_>, with: ServeWith) -> String {
    let database = match db {
        DbTarget::File(path) => format!("path = {}", toml_string(&path.to_string_lossy())),
        DbTarget::Url(url) => format!("url = {}", toml_string(url)),
    };
    let mut config = format!(
        "# Written by latchkey-bench for one run.\n\
         [server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [database]\n{database}\n\
         [login]\nmax_failures = {MAX_FAILURES}\n"
    );
    if with.metrics {
        config.push_str("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    }
    match with.access_rules {
        Rules::None => {}
        Rules::Realistic => config.push_str(&access_rules_toml()),
        Rules::One(policy) => {
            let _ = write!(
                config,
                "[access]\ndefault_policy = \"deny\"\n\
                 [[access.rules]]\npaths = [\"/\"]\npolicy = \"{}\"\n",
                policy.as_str()
            );
        }
    }
    config
}

/// [`ACCESS_RULES`] rules as a self-hoster with a dozen apps might write
/// them, none of which applies to the bench's requests (`GET /verify` for
/// host 127.0.0.1) but the last: each fails on a different criterion
/// (domain, wildcard domain, path, method, network), so every kind of
/// matcher runs before the last rule lets the session through.
fn access_rules_toml() -> String {
    let mut out = String::from("[access]\ndefault_policy = \"deny\"\n");
    for i in 0..ACCESS_RULES - 1 {
        out.push_str("[[access.rules]]\n");
        let _ = match i % 5 {
            0 => writeln!(out, "domains = [\"app{i}.example.com\"]"),
            1 => writeln!(
                out,
                "domains = [\"*.apps{i}.example.com\", \"apps{i}.example.com\"]"
            ),
            2 => writeln!(out, "paths = [\"/app{i}\", \"/api/v{i}\"]"),
            3 => writeln!(out, "methods = [\"POST\", \"PUT\", \"DELETE\"]"),
            _ => writeln!(out, "networks = [\"10.{i}.0.0/16\"]"),
        };
        out.push_str(if i % 2 == 0 {
            "policy = \"deny\"\n"
        } else {
            "policy = \"bypass\"\n"
        });
    }
    out.push_str("[[access.rules]]\npaths = [\"/\"]\npolicy = \"one_factor\"\n");
    out
}

/// A TOML basic string.
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks that every request the scenarios send gets the answer they assume;
/// returns the token of the password login it made (a password-only session).
pub fn preflight_latchkey(addr: SocketAddr, valid: &str, unknown: &str) -> Result<String> {
    let hint = "(if this is the cached large database, delete target/bench-cache/ to reseed)";
    let bearer = format!("Bearer {valid}");
    let (status, _) = http(
        addr,
        &http_request("GET", "/verify", &[("Authorization", &bearer)], ""),
    )?;
    if status != 200 {
        bail!("GET /verify with a seeded bearer token answered {status}, not 200 {hint}");
    }
    let cookie = format!("{}={valid}", Config::default().session.cookie_name);
    let (status, _) = http(
        addr,
        &http_request("GET", "/verify", &[("Cookie", &cookie)], ""),
    )?;
    if status != 200 {
        bail!("GET /verify with a seeded session cookie answered {status}, not 200");
    }
    for (token, active) in [(valid, true), (unknown, false)] {
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let (status, body) = http(
            addr,
            &http_request("POST", "/introspect", &form, &format!("token={token}")),
        )?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("POST /introspect answered {status} with {body:?}"))?;
        if status != 200 || answer["active"] != serde_json::Value::Bool(active) {
            bail!("POST /introspect answered {status} {body}, expected \"active\": {active}");
        }
    }
    let json = [("Content-Type", "application/json")];
    let mut password_only = None;
    for (password, expected) in [(PASSWORD, 200), (WRONG_PASSWORD, 401)] {
        let body = format!(
            r#"{{"username":"{}","password":"{password}"}}"#,
            user_name(0)
        );
        let (status, answer) = http(addr, &http_request("POST", "/login", &json, &body))?;
        if status != expected {
            bail!("POST /login answered {status} {answer}, expected {expected}");
        }
        if status == 200 {
            password_only = Some(access_token(&answer)?);
        }
    }
    let bearer = format!("Bearer {unknown}");
    let (status, _) = http(
        addr,
        &http_request("POST", "/logout", &[("Authorization", &bearer)], ""),
    )?;
    if status != 204 {
        bail!("POST /logout answered {status}, not 204");
    }
    password_only.ok_or_else(|| anyhow!("no password login answered 200"))
}

/// Under one `one_factor` or `two_factor` rule: a password-only session
/// must get 200 and 401 respectively, so the rule is the one judging (the
/// load's own sessions, which answered 200 above, then did prove a code
/// where one was needed).
pub fn preflight_factor_rule(addr: SocketAddr, password_only: &str, policy: Policy) -> Result<()> {
    let expected = match policy {
        Policy::TwoFactor => 401,
        _ => 200,
    };
    let bearer = format!("Bearer {password_only}");
    let (status, _) = http(
        addr,
        &http_request("GET", "/verify", &[("Authorization", &bearer)], ""),
    )?;
    if status != expected {
        bail!(
            "GET /verify with a password-only session under one {} rule answered {status}, \
             not {expected}",
            policy.as_str()
        );
    }
    Ok(())
}

/// A TOTP user kept out of the load logs in with the current code (200),
/// without a code (401, `mfa_required`) and with the same code again (401:
/// a replay), so the load's 200s can only be first uses of a step.
pub fn preflight_totp_login(addr: SocketAddr, username: &str, secret: &Secret) -> Result<()> {
    let json = [("Content-Type", "application/json")];
    let code = format!("{:06}", secret.code(step_of(unix_now())));
    let with_code =
        format!(r#"{{"username":"{username}","password":"{PASSWORD}","totp":"{code}"}}"#);
    let without = format!(r#"{{"username":"{username}","password":"{PASSWORD}"}}"#);
    for (body, expected, what) in [
        (&with_code, 200, "the current TOTP code"),
        (&without, 401, "no TOTP code"),
        (&with_code, 401, "a TOTP code already used"),
    ] {
        let (status, answer) = http(addr, &http_request("POST", "/login", &json, body))?;
        if status != expected {
            bail!("POST /login with {what} answered {status} {answer}, expected {expected}");
        }
    }
    Ok(())
}

/// The `access_token` of a JSON login answer.
fn access_token(answer: &str) -> Result<String> {
    let answer: serde_json::Value = serde_json::from_str(answer)
        .with_context(|| format!("POST /login answered 200 with {answer:?}"))?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("POST /login answered 200 without an access_token: {answer}"))
}

pub fn preflight_baseline(addr: SocketAddr) -> Result<()> {
    let (status, body) = http(addr, &http_request("GET", "/json", &[], ""))?;
    if status != 200 || body != r#"{"status":"ok"}"# {
        bail!("the baseline answered GET /json with {status} {body:?}");
    }
    Ok(())
}

/// An HTTP/1.1 request that closes its connection.
fn http_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    if method == "POST" || !body.is_empty() {
        let _ = write!(request, "Content-Length: {}\r\n", body.len());
    }
    request.push_str("\r\n");
    request.push_str(body);
    request
}

/// Sends one request; returns the status and the body (as text).
fn http(addr: SocketAddr, request: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("no complete answer from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer from {addr}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    match last_line(&text) {
        "" => format!("nothing in {}", log.display()),
        line => line.to_owned(),
    }
}
