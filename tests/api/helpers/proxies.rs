//! Real reverse proxies in front of latchkey: nginx and Caddy running the
//! configurations in `examples/` (only ports and TLS swapped for loopback
//! ones), the small upstream app they protect, and what starting any
//! helper process on a port needs (`installed`, free ports, waiting for one).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use latchkey::config::AccessConfig;

use super::app::{spawn_app_with, TestApp};
use super::process::ChildGuard;

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
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "remote_user": header("remote-user"),
        "remote_user_id": header("remote-user-id"),
        "remote_email": header("remote-email"),
        "remote_name": header("remote-name"),
        "remote_groups": header("remote-groups"),
        "remote_headers": req.headers().keys().filter(|k| k.as_str().starts_with("remote-")).count(),
    }))
}

/// A proxy process, killed (by its own PID) when dropped.
pub struct ProxyProcess {
    _child: ChildGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `command`, which logs to `log` and keeps its files in `dir`,
    /// and waits for it to listen on `port`.
    fn start(
        mut command: Command,
        port: u16,
        log: PathBuf,
        dir: tempfile::TempDir,
    ) -> ProxyProcess {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = ProxyProcess {
            _child: ChildGuard(child),
            log,
            _dir: dir,
        };
        wait_for_port(port, || {
            format!("proxy did not start listening; its log:\n{}", proxy.log())
        });
        proxy
    }

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

/// A free loopback port for a helper process to listen on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on loopback `port` (at most
/// 15 s); past that, fails saying `what_went_wrong()`.
pub fn wait_for_port(port: u16, what_went_wrong: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{}", what_went_wrong());
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
    let mut nginx = Command::new(nginx);
    nginx
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg(&log)
        .stderr(Stdio::null());
    ProxyProcess::start(nginx, port, log, dir)
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
    let mut caddy = Command::new(caddy);
    caddy
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(prefix.join("Caddyfile"))
        .env("HOME", prefix)
        .env("XDG_DATA_HOME", prefix.join("data"))
        .env("XDG_CONFIG_HOME", prefix.join("config"))
        .stderr(std::fs::File::create(&log).unwrap());
    ProxyProcess::start(caddy, port, log, dir)
}

/// latchkey configured as `examples/latchkey.toml` says for a proxy on
/// loopback, but over plain HTTP.
pub async fn spawn_latchkey_for_proxy() -> TestApp {
    spawn_latchkey_for_proxy_with_rules("").await
}

/// [`spawn_latchkey_for_proxy`] with the access rules in `toml` (an
/// `[access]` section and `[[access.rules]]`, as a config file holds them).
pub async fn spawn_latchkey_for_proxy_with_rules(toml: &str) -> TestApp {
    let access =
        AccessConfig::from_sources(Some(toml), Path::new("rules.toml"), std::iter::empty())
            .unwrap_or_else(|e| panic!("the test rules do not load: {e}"));
    spawn_app_with(|config| {
        config.session.cookie_domain = ".example.com".into();
        config.session.cookie_secure = false;
        config.server.trusted_proxies = vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
        config.access = access;
    })
    .await
}

/// nginx running `examples/nginx/latchkey.conf` in front of `latchkey` and
/// `app`, on a free port; returns the port and the process guard.
pub fn start_nginx_for_test(
    nginx: &Path,
    latchkey: &TestApp,
    app: &EchoApp,
) -> (u16, ProxyProcess) {
    let port = free_port();
    (port, start_nginx(nginx, port, &latchkey.host(), app.addr))
}

/// Caddy running `examples/caddy/Caddyfile` in front of `latchkey` and
/// `app`, on a free port; returns the port and the process guard.
pub fn start_caddy_for_test(
    caddy: &Path,
    latchkey: &TestApp,
    app: &EchoApp,
) -> (u16, ProxyProcess) {
    let port = free_port();
    (port, start_caddy(caddy, port, &latchkey.host(), app.addr))
}

/// `examples/traefik/dynamic.yml` as a JSON value (no Traefik binary runs
/// in the tests; this is what they check the example's shape on).
pub fn traefik_dynamic_config() -> serde_json::Value {
    read_simple_yaml(&example("traefik/dynamic.yml"))
}

/// The subset of YAML the Traefik example is written in: block maps and
/// lists (a list item may open a map), `[a, b]` flow lists, `{}`, plain and
/// double-quoted scalars, `true`/`false`, comments. Anything else panics,
/// so a change to the example this reader cannot follow fails the test
/// rather than passing it unread.
pub fn read_simple_yaml(text: &str) -> serde_json::Value {
    let mut lines: Vec<(usize, &str)> = text
        .lines()
        .filter_map(|line| {
            let line = without_comment(line).trim_end();
            let content = line.trim_start();
            (!content.is_empty()).then(|| (line.len() - content.len(), content))
        })
        .collect();
    assert!(lines.iter().all(|(_, l)| !l.contains('\t')), "tabs in YAML");
    let mut at = 0;
    let indent = lines.first().map_or(0, |l| l.0);
    let value = yaml_block(&mut lines, &mut at, indent);
    assert_eq!(at, lines.len(), "YAML not read from {:?} on", lines.get(at));
    value
}

fn without_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

fn yaml_block(lines: &mut Vec<(usize, &str)>, at: &mut usize, indent: usize) -> serde_json::Value {
    if lines[*at].1.starts_with("- ") {
        let mut items = Vec::new();
        while *at < lines.len() && lines[*at].0 == indent && lines[*at].1.starts_with("- ") {
            let item = &lines[*at].1[2..];
            if item.contains(": ") || item.ends_with(':') {
                // "- key: value" opens a map two columns in.
                lines[*at] = (indent + 2, item);
                items.push(yaml_block(lines, at, indent + 2));
            } else {
                items.push(yaml_scalar(item));
                *at += 1;
            }
        }
        return serde_json::Value::Array(items);
    }
    let mut map = serde_json::Map::new();
    while *at < lines.len() && lines[*at].0 == indent && !lines[*at].1.starts_with("- ") {
        let (key, rest) = lines[*at]
            .1
            .split_once(':')
            .unwrap_or_else(|| panic!("not `key: value`: {:?}", lines[*at]));
        *at += 1;
        let value = if rest.trim().is_empty() {
            let child = lines
                .get(*at)
                .map(|l| l.0)
                .filter(|&child| child > indent)
                .unwrap_or_else(|| panic!("nothing under {key:?}"));
            yaml_block(lines, at, child)
        } else {
            yaml_scalar(rest.trim())
        };
        assert!(
            map.insert(key.trim().to_owned(), value).is_none(),
            "{key:?} twice"
        );
    }
    assert!(
        *at == lines.len() || lines[*at].0 < indent,
        "unexpected indentation at {:?}",
        lines[*at]
    );
    serde_json::Value::Object(map)
}

fn yaml_scalar(text: &str) -> serde_json::Value {
    use serde_json::Value;
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner.strip_suffix('"').expect("a closing quote");
        assert!(!inner.contains(['\\', '"']), "escapes in {text:?}");
        return Value::String(inner.to_owned());
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').expect("a closing bracket");
        return Value::Array(inner.split(',').map(|i| yaml_scalar(i.trim())).collect());
    }
    match text {
        "{}" => Value::Object(serde_json::Map::new()),
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            assert!(
                !text.starts_with(['{', '\'', '&', '*', '!', '|', '>']),
                "YAML this reader does not follow: {text:?}"
            );
            Value::String(text.to_owned())
        }
    }
}
