//! A randomized sweep of the whole HTTP surface: arbitrary methods, paths,
//! query strings, bodies, content types, credentials and proxy headers, sent
//! with reqwest and, for what reqwest refuses, as raw bytes. It proves that no
//! input gets a 5xx or stops the server answering; that every error is the
//! SPEC's JSON shape (or, for a form login, the HTML form); that only a token
//! the client really holds authenticates; that redirects stay on friendly
//! hosts; that the login page escapes what it echoes; and that a revoked
//! session stays revoked while an untouched one keeps working.
//!
//! Each run sweeps a fixed list of seeds and one from the clock, printed.
//! `FUZZ_SEED=<seed>` replays one seed (decimal or 0x-hex); `FUZZ_REQUESTS`
//! and `FUZZ_SECONDS` lengthen a run. A failure names its seed, the request
//! number and the request as sent.

mod generators;
mod oracle;
mod raw;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey::http::redirect::HostPolicy;
use serde_json::Value;

use crate::helpers::*;
use generators::Fuzzer;
use oracle::check;
use raw::{send, Answer, Request};

/// Swept on every run, so what they once caught stays caught.
const SEEDS: [u64; 4] = [0x1a7c_4b3e, 0xdead_beef_cafe, 0x5eed_0000_0003, 7];
const REQUESTS_PER_SEED: usize = 300;
/// A health and token check between batches catches a server that died or
/// forgot a session close to the request that did it.
const CHECK_EVERY: usize = 50;
/// The whole sweep stays well under the time a debug build can spare for it.
const BUDGET: Duration = Duration::from_secs(12);
/// The largest body the server reads (SPEC: 64 KiB).
const MAX_BODY: usize = latchkey::http::body::MAX_BODY_BYTES;
/// The fuzzer knows alice's password, so some of its logins succeed.
const ALICE_PASSWORD: &str = "alice-password";
/// Never sent by the fuzzer: the sentinel's session must survive every request.
const SENTINEL_PASSWORD: &str = "sentinel-password-never-sent";
/// Markup the fuzzer plants in what the login page echoes.
const MARKUP: &str = "\"'><x-fuzz>";
/// The characters of a token as latchkey issues them (base64url).
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The fuzzer's view of the server under test.
struct World {
    /// `host:port`.
    host: String,
    cookie_name: String,
    /// Every token the fuzzer has been given: the seeded ones and any its
    /// logins returned. Only these may ever authenticate a request.
    held: Vec<String>,
    /// Session ids seen in `GET /sessions` answers.
    session_ids: Vec<i64>,
    /// The introspection client `(id, secret)`, when the seed made one.
    client: Option<(String, String)>,
    /// latchkey's own redirect policy, from the server's configuration.
    hosts: HostPolicy,
}

impl World {
    fn remember(&mut self, token: &str) {
        if !token.is_empty() && !self.held.iter().any(|t| t == token) {
            self.held.push(token.to_owned());
        }
    }

    /// Learns what an answer gives away: new tokens and session ids.
    fn learn(&mut self, answer: &Answer) {
        if answer.status >= 400 {
            return;
        }
        if let Ok(body) = serde_json::from_slice::<Value>(&answer.body) {
            if let Some(token) = body["access_token"].as_str() {
                self.remember(token);
            }
            if let Some(sessions) = body["sessions"].as_array() {
                for id in sessions.iter().filter_map(|s| s["id"].as_i64()) {
                    if !self.session_ids.contains(&id) {
                        self.session_ids.push(id);
                    }
                }
            }
        }
        let prefix = format!("{}=", self.cookie_name);
        for cookie in answer.all("set-cookie") {
            if let Some(token) = cookie
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split(';').next())
            {
                self.remember(token);
            }
        }
    }
}

/// Prints the request in flight if sending it panics (the raw harness
/// panics when the server closes without answering).
struct InFlight<'a>(&'a str);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fuzz: the server gave no answer to:\n{}", self.0);
        }
    }
}

/// Between batches: the server is healthy, the sentinel's untouched session
/// works, and each held token works exactly when its session is stored.
async fn checkpoint(app: &TestApp, world: &World, sentinel: &str) -> Result<(), String> {
    let health = app.client.get(app.url("/healthz")).send().await;
    let health = health.map_err(|e| format!("/healthz did not answer: {e}"))?;
    if health.status() != 200 {
        return Err(format!("/healthz answered {}", health.status()));
    }
    let response = app.verify_bearer(sentinel).await;
    if response.status() != 200 {
        return Err(format!(
            "the sentinel's session, never sent, stopped working: {}",
            response.status()
        ));
    }
    // The seeded tokens and the newest one: enough to catch a session that
    // was revoked but still served, or lost though nobody revoked it.
    let mut tokens: Vec<&String> = world.held.iter().take(2).collect();
    tokens.extend(world.held.last());
    for token in tokens {
        let stored = app.stored_expiry(token).is_some();
        let status = app.verify_bearer(token).await.status().as_u16();
        if status != if stored { 200 } else { 401 } {
            return Err(format!(
                "token {token}: session stored: {stored}, but /verify answers {status}"
            ));
        }
    }
    Ok(())
}

/// How the sweep runs: from the environment, else the defaults.
struct Plan {
    seeds: Vec<u64>,
    requests: usize,
    budget: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let number = |name: &str| -> Option<u64> {
            let text = std::env::var(name).ok()?;
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => text.replace('_', "").parse(),
            };
            Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
        };
        let seeds = match number("FUZZ_SEED") {
            Some(seed) => vec![seed],
            None => {
                let clock = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                let mut seeds = SEEDS.to_vec();
                seeds.push(clock);
                seeds
            }
        };
        Plan {
            seeds,
            requests: number("FUZZ_REQUESTS").map_or(REQUESTS_PER_SEED, |n| n as usize),
            budget: number("FUZZ_SECONDS").map_or(BUDGET, Duration::from_secs),
        }
    }
}

/// What one seed's sweep did.
#[derive(Default)]
struct Tally {
    sent: usize,
    raw: usize,
    /// Refused by actix's HTTP parser, before any application code.
    parser: usize,
    statuses: BTreeMap<u16, usize>,
}

/// Runs one seed against its own server until `deadline`.
async fn sweep(seed: u64, requests: usize, deadline: Instant) -> Tally {
    let mut rng = Rng::new(seed);
    // The seed also picks the server's settings, so each one is replayable.
    let trusted = rng.chance(35);
    let cookie_domain = if rng.chance(35) { ".example.com" } else { "" };
    let allowed_hosts = if rng.chance(50) {
        vec!["app.example.com".to_owned()]
    } else {
        Vec::new()
    };
    let lenient = rng.chance(50);
    let with_client = rng.chance(40);
    let fixed_lifetime = rng.chance(25);
    let app = spawn_app_with(|config| {
        if trusted {
            config.server.trusted_proxies =
                vec![latchkey::config::IpNet::parse("127.0.0.1").unwrap()];
        }
        config.session.cookie_domain = cookie_domain.to_owned();
        config.login.allowed_redirect_hosts = allowed_hosts.clone();
        if lenient {
            // Without this, alice is banned after five failures and the
            // sweep no longer reaches successful logins.
            config.login.max_failures = 1_000_000;
        }
        if fixed_lifetime {
            config.session.refresh_within = Duration::ZERO;
        }
    })
    .await;
    app.add_user_with(
        "alice",
        ALICE_PASSWORD,
        Some("alice@example.com"),
        Some("Alice Zoë"),
    );
    app.add_user("bob", "bob-password");
    app.add_user("sentinel", SENTINEL_PASSWORD);
    let sentinel = app.login_token("sentinel", SENTINEL_PASSWORD).await;
    let alice = app.login_token("alice", ALICE_PASSWORD).await;
    let bob = app.login_token("bob", "bob-password").await;
    let client = with_client.then(|| ("fuzz-proxy".to_owned(), app.add_client("fuzz-proxy")));
    let mut fuzzer = Fuzzer::new(
        rng,
        World {
            host: app.host(),
            cookie_name: app.config.session.cookie_name.clone(),
            held: vec![alice, bob],
            session_ids: Vec::new(),
            client,
            hosts: HostPolicy::from_config(&app.config),
        },
    );
    println!(
        "fuzz: seed {seed:#x}: trusted_proxies {trusted}, cookie_domain {cookie_domain:?}, \
         allowed hosts {allowed_hosts:?}, lenient limits {lenient}, client {with_client}, \
         fixed lifetime {fixed_lifetime}"
    );
    let replay = format!("FUZZ_SEED={seed:#x} cargo test --test api fuzz::");
    let mut tally = Tally::default();
    // Requests share keep-alive connections, as a proxy's would; in a pool of
    // their own, apart from the checkpoints' (a clone would share it).
    let mut client = http_client();
    // A request can leave its connection in a state that trips the next one.
    let mut previous = String::from("(none)");
    for n in 1..=requests {
        if Instant::now() >= deadline {
            println!(
                "fuzz: seed {seed:#x}: time budget spent after {} requests",
                tally.sent
            );
            break;
        }
        let request = fuzzer.request();
        let described = request.describe(&app.host());
        let guard = InFlight(&described);
        let answer = send(&app, &client, &request).await;
        drop(guard);
        tally.sent += 1;
        tally.raw += usize::from(request.raw.is_some());
        let answer = answer.unwrap_or_else(|e| {
            panic!(
                "fuzz: {e}\nseed {seed:#x}, request {n} (replay: {replay})\n{described}\n\
                 --- the request before it {previous}"
            )
        });
        *tally.statuses.entry(answer.status).or_default() += 1;
        tally.parser += usize::from(answer.refused_by_parser());
        if let Err(e) = check(&request, &answer, &fuzzer.world) {
            panic!(
                "fuzz: {e}\nseed {seed:#x}, request {n} (replay: {replay})\n\
                 --- request {described}\n--- answer\n{}",
                answer.describe()
            );
        }
        if answer.refused_by_parser() && request.raw.is_none() {
            // actix closes the connection after a parser-level refusal without
            // saying `Connection: close`; a pooled client may then write the
            // next request into the closed socket. Start with a fresh pool.
            client = http_client();
        }
        fuzzer.world.learn(&answer);
        previous = format!("{described}\n--- its answer\n{}", answer.describe());
        if n % CHECK_EVERY == 0 {
            if let Err(e) = checkpoint(&app, &fuzzer.world, &sentinel).await {
                panic!(
                    "fuzz: {e}\nseed {seed:#x}, after request {n} (replay: {replay})\n\
                     --- the last request {previous}"
                );
            }
        }
    }
    if let Err(e) = checkpoint(&app, &fuzzer.world, &sentinel).await {
        panic!("fuzz: {e}\nseed {seed:#x}, at the end (replay: {replay})");
    }
    if app.engine() == latchkey::store::Engine::Sqlite {
        let integrity: String = app.scalar("PRAGMA integrity_check", &[]);
        assert_eq!(integrity, "ok", "seed {seed:#x}: the database file");
    }
    tally
}

#[tokio::test]
async fn random_requests_to_every_endpoint_never_get_a_5xx_and_the_server_keeps_answering() {
    let plan = Plan::from_env();
    let started = Instant::now();
    let deadline = started + plan.budget;
    let mut total = Tally::default();
    let mut seeds_run = Vec::new();
    for &seed in &plan.seeds {
        if Instant::now() >= deadline {
            println!("fuzz: seed {seed:#x} skipped: time budget spent");
            continue;
        }
        let tally = sweep(seed, plan.requests, deadline).await;
        println!(
            "fuzz: seed {seed:#x}: {} requests ({} raw, {} stopped by the HTTP parser), \
             statuses {:?}",
            tally.sent, tally.raw, tally.parser, tally.statuses
        );
        total.sent += tally.sent;
        total.raw += tally.raw;
        total.parser += tally.parser;
        for (status, count) in tally.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        seeds_run.push(format!("{seed:#x}"));
    }
    println!(
        "fuzz: {} requests ({} raw, {} stopped by the HTTP parser) over seeds [{}] in {:.1?}; \
         statuses {:?}",
        total.sent,
        total.raw,
        total.parser,
        seeds_run.join(", "),
        started.elapsed(),
        total.statuses
    );
    assert!(total.sent > 0, "the time budget allowed no request at all");
}

/// A fuzzer's world without a server, for the tests of the fuzzer itself.
fn offline_world() -> World {
    World {
        host: "127.0.0.1:1".to_owned(),
        cookie_name: "latchkey_session".to_owned(),
        held: vec!["A".repeat(43), "b".repeat(43)],
        session_ids: vec![3],
        client: Some(("proxy".to_owned(), "secret".to_owned())),
        hosts: HostPolicy::from_config(&{
            let mut config = latchkey::Config::default();
            config.session.cookie_domain = ".example.com".to_owned();
            config.login.allowed_redirect_hosts = vec!["partner.example".to_owned()];
            config
        }),
    }
}

#[test]
fn the_same_seed_generates_the_same_requests() {
    // Replaying a seed is only useful if it makes the same requests again.
    let sweep = |seed| {
        let mut fuzzer = Fuzzer::new(Rng::new(seed), offline_world());
        (0..200)
            .map(|_| fuzzer.request().describe("127.0.0.1:1"))
            .collect::<Vec<_>>()
    };
    assert_eq!(sweep(SEEDS[0]), sweep(SEEDS[0]));
    assert_ne!(sweep(SEEDS[0]), sweep(SEEDS[1]));
}

#[test]
fn the_checker_refuses_what_the_spec_forbids() {
    // A fuzzer whose checks pass everything proves nothing: each answer here
    // breaks one rule and must be caught, next to a lawful one that must not.
    let world = offline_world();
    let held = world.held[0].clone();
    let request = |method: &str, target: &str, headers: &[(&str, &str)]| Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: Vec::new(),
        raw: None,
    };
    let answer = |status: u16, headers: &[(&str, &str)], body: &str| Answer {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.as_bytes().to_vec(),
    };
    let json = ("content-type", "application/json");
    let html = ("content-type", "text/html; charset=utf-8");
    let not_found = r#"{"error":"not_found","error_description":"no such endpoint"}"#;
    let unauthorized = r#"{"error":"unauthorized","error_description":"token required"}"#;
    let bearer = format!("Bearer {held}");
    let near_miss = format!("Bearer {held}x");
    let lawful = [
        (
            request("GET", "/nope", &[]),
            answer(404, &[json], not_found),
        ),
        (request("GET", "/verify", &[]), answer(400, &[], "")),
        (request("GET", "/verify", &[]), answer(431, &[], "")),
        (
            request("GET", "/me", &[]),
            answer(401, &[json, ("www-authenticate", "Bearer")], unauthorized),
        ),
        (
            request("GET", "/verify", &[("Authorization", &bearer)]),
            answer(200, &[("remote-user", "alice")], ""),
        ),
        (
            request("POST", "/login", &[]),
            answer(401, &[html], "<form action=\"/login\">&lt;x-fuzz&gt;"),
        ),
        (
            request("GET", "/verify?rd=x", &[]),
            answer(
                302,
                &[("location", "https://app.example.com/login?rd=x")],
                "",
            ),
        ),
    ];
    for (request, answer) in &lawful {
        let verdict = check(request, answer, &world);
        assert!(
            verdict.is_ok(),
            "{} {}: {verdict:?}",
            request.method,
            request.target
        );
    }
    let unlawful = [
        (
            request("GET", "/healthz", &[]),
            answer(500, &[json], not_found),
        ),
        (
            request("GET", "/healthz", &[]),
            answer(503, &[json], not_found),
        ),
        (
            request("GET", "/nope", &[]),
            answer(404, &[("content-type", "text/plain")], "not found"),
        ),
        (
            request("GET", "/nope", &[]),
            answer(404, &[json], r#"{"error":"not_found"}"#),
        ),
        (
            request("GET", "/nope", &[]),
            answer(
                404,
                &[json],
                r#"{"error":"forbidden","error_description":"x"}"#,
            ),
        ),
        (
            request("GET", "/me", &[]),
            answer(401, &[json], unauthorized),
        ),
        (
            request("GET", "/nope", &[]),
            answer(404, &[html], "<form action=\"/login\">"),
        ),
        (
            request("GET", "/verify", &[("Authorization", &near_miss)]),
            answer(200, &[("remote-user", "alice")], ""),
        ),
        (
            request("GET", "/me", &[("Cookie", "latchkey_session=forged")]),
            answer(200, &[json], "{}"),
        ),
        (
            request("GET", "/verify?rd=x", &[]),
            answer(302, &[("location", "https://evil.example/login")], ""),
        ),
        (
            request("POST", "/login", &[]),
            answer(303, &[("location", "//evil.example/")], ""),
        ),
        (
            request("GET", "/login", &[]),
            answer(200, &[html], "<input value=\"\"'><x-fuzz>\">"),
        ),
    ];
    for (request, answer) in &unlawful {
        assert!(
            check(request, answer, &world).is_err(),
            "{} {} answered {} passed the checks",
            request.method,
            request.target,
            answer.status
        );
    }
}
