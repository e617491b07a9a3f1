//! Timing-sensitive tests: failed logins cost the same whatever the cause,
//! and a login flood neither slows token checks nor grows memory.
//!
//! They live in their own test binary because cargo runs test binaries one
//! after another: no other test competes for the CPU while these measure.
//! Within the binary a lock runs them one at a time. Every figure compared
//! is measured in the same run (ratios, not absolute times), and the SPEC's
//! realistic argon2 parameters are used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The integration tests' own harness, shared rather than copied; this
// binary uses only part of it.
#[path = "api/helpers/mod.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helpers::*;
use latchkey::config::PasswordConfig;
use reqwest::StatusCode;

/// One measuring test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, pct: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * pct / 100).min(samples.len() - 1)]
}

async fn spawn_realistic_app() -> TestApp {
    spawn_app_with(|config| {
        config.password = PasswordConfig::default();
        config.server.workers = 2;
        // These tests measure cost, not the brute-force limits.
        config.login.max_failures = 1_000_000;
    })
    .await
}

async fn timed_login(app: &TestApp, username: &str, password: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    let status = app.login(username, password).await.status();
    (status, started.elapsed())
}

#[tokio::test]
async fn unknown_user_wrong_password_and_disabled_user_take_the_same_time() {
    let _serial = SERIAL.lock().await;
    let app = spawn_realistic_app().await;
    app.add_user("alice", "alice's password");
    let carol = app.add_user("carol", "carol's password");
    app.set_disabled(carol, true);
    // Warm up connections and caches.
    timed_login(&app, "alice", "warm-up").await;

    let (mut unknown, mut wrong, mut disabled) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..11 {
        // Interleaved, so drifting machine load hits all three alike.
        let (s1, t1) = timed_login(&app, &format!("nobody-{i}"), "some password").await;
        let (s2, t2) = timed_login(&app, "alice", "not alice's password").await;
        let (s3, t3) = timed_login(&app, "carol", "carol's password").await;
        for status in [s1, s2, s3] {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        unknown.push(t1);
        wrong.push(t2);
        disabled.push(t3);
    }
    let medians = [median(unknown), median(wrong), median(disabled)];
    println!(
        "median failed login: unknown {:?}, wrong password {:?}, disabled {:?}",
        medians[0], medians[1], medians[2]
    );
    let fastest = medians.iter().min().unwrap().as_secs_f64();
    let slowest = medians.iter().max().unwrap().as_secs_f64();
    // Skipping argon2 for one case would make it ~40 ms (a whole hash) faster.
    assert!(
        slowest / fastest < 1.35,
        "failed logins differ in time: {medians:?}"
    );
}

/// `latchkey serve` on a fresh database with SPEC-default argon2 and two
/// workers, after `latchkey user add` of each of `users`.
fn start_realistic_server(sandbox: &Sandbox, users: &[(&str, &str)]) -> Server {
    for (name, password) in users {
        sandbox.add_user(name, password);
    }
    let mut serve = sandbox.serve_command(&["serve"]);
    serve
        .env("LATCHKEY_SERVER__WORKERS", "2")
        .env("LATCHKEY_LOGIN__MAX_FAILURES", "1000000");
    Server::spawn(serve)
}

/// Resident memory of a process (`VmRSS` in `/proc/<pid>/status`), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn timed_verifies(api: &Api, token: &str, count: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let response = api.verify_bearer(token).await;
        assert_eq!(response.status(), StatusCode::OK);
        times.push(started.elapsed());
    }
    times
}

#[tokio::test]
async fn a_login_flood_gets_fast_503s_while_token_checks_stay_fast_and_memory_bounded() {
    let _serial = SERIAL.lock().await;
    let sandbox = Sandbox::with_spec_passwords();
    let server = start_realistic_server(&sandbox, &[("alice", "alice's password")]);
    let api = server.api();
    let (client, address) = (api.client.clone(), api.address.clone());
    let token = api.login_token("alice", "alice's password").await;

    // Token checks on an idle server.
    let idle = timed_verifies(&api, &token, 300).await;
    let rss_before = rss_kib(server.pid());

    // The flood: far more concurrent logins than the hashing pool can take,
    // keeping both hashing threads busy all along. Each flooder retries about
    // 100 ms after a 503, a tenth of the Retry-After it is given: this tests
    // that hashing cannot starve token checks. (The server also paces its
    // refusals; a raw request-rate flood is for the proxy to limit, see
    // docs/security.md and the benchmark's flood row.)
    const FLOODERS: usize = 96;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for i in 0..FLOODERS {
        let (client, address, stop) = (client.clone(), address.clone(), Arc::clone(&stop));
        flooders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client
                    .post(format!("{address}/login"))
                    .json(&serde_json::json!({ "username": "alice", "password": format!("guess {i}") }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let retry_after = response.headers().contains_key("retry-after");
                answers.push((status, started.elapsed(), retry_after));
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    // Jittered, so the flooders do not move in lockstep.
                    let jitter = (i as u64 * 37) % 50;
                    tokio::time::sleep(Duration::from_millis(75 + jitter)).await;
                }
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The same token checks, during the flood, sampling the server's memory.
    let mut peak_rss = rss_before;
    let mut flooded = Vec::new();
    let flood_ends = Instant::now() + Duration::from_secs(2);
    while Instant::now() < flood_ends {
        flooded.extend(timed_verifies(&api, &token, 50).await);
        peak_rss = peak_rss.max(rss_kib(server.pid()));
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for flooder in flooders {
        answers.extend(flooder.await.unwrap());
    }

    let count = |wanted: StatusCode| answers.iter().filter(|(s, _, _)| *s == wanted).count();
    let (hashed, shed) = (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::SERVICE_UNAVAILABLE),
    );
    let shed_times: Vec<Duration> = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .map(|(_, took, _)| *took)
        .collect();
    let (idle_p50, idle_p90) = (median(idle.clone()), percentile(idle, 90));
    let (flood_p50, flood_p90) = (median(flooded.clone()), percentile(flooded, 90));
    let growth_mib = peak_rss.saturating_sub(rss_before) / 1024;
    println!(
        "logins: {hashed} hashed and refused (401), {shed} shed (503, p50 {:?}, p90 {:?}); \
         /verify p50/p90 idle {idle_p50:?}/{idle_p90:?}, flooded {flood_p50:?}/{flood_p90:?}; \
         server RSS {} MiB idle, +{growth_mib} MiB at peak",
        median(shed_times.clone()),
        percentile(shed_times.clone(), 90),
        rss_before / 1024,
    );

    assert_eq!(
        hashed + shed,
        answers.len(),
        "answers other than 401 and 503"
    );
    assert!(hashed > 0, "no login was hashed at all");
    // Beyond what the pool can take, the excess is turned away at once...
    assert!(
        shed > hashed,
        "the flood was not shed: {shed} shed, {hashed} hashed"
    );
    assert!(
        answers
            .iter()
            .all(|(s, _, retry)| *s != StatusCode::SERVICE_UNAVAILABLE || *retry),
        "503 without Retry-After"
    );
    // Fast: the server's 10 ms pace plus scheduling, never the wait for a
    // hash (an admitted login can wait for five of them, ~200 ms).
    assert!(
        percentile(shed_times, 90) < Duration::from_millis(50),
        "shedding is not fast"
    );
    // ...token checks stay close to their idle speed...
    assert!(
        flood_p50 < idle_p50 * 2 + Duration::from_millis(1),
        "/verify slowed from {idle_p50:?} to {flood_p50:?} under the flood"
    );
    // ...and memory stays bounded: argon2 needs 19 MiB per hashing thread
    // (one per core) and a waiting login a few bytes.
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        growth_mib < 19 * 2 * cores + 32,
        "memory grew by {growth_mib} MiB under the flood"
    );
}
