//! Prometheus metrics: the series, counted where things happen, and
//! rendered in the Prometheus text format for the `metrics.listen` listener.
//!
//! Every labelled series is created here, at start, with every value its
//! label can take; the hot paths hold the children in plain fields, so a
//! count is one atomic add (no label lookup, no allocation) and no label
//! can ever hold a username, address, token or rule text: the set of
//! series is fixed whatever the traffic. Gauges that describe state
//! (sessions, bans, the hashing queue) are read when scraped.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label, with a value from a fixed list.
type Label = [(&'static str, &'static str); 1];

/// How a `/verify` ended: the `result` label of `latchkey_verify_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyResult {
    /// 200 with the user's identity.
    Allow,
    /// 401, or 302 to the login page.
    Unauthenticated,
    /// 403: the rules deny it, or the request is unreadable.
    Forbidden,
    /// 200 without a session: a `bypass` rule.
    Bypass,
    /// The check itself failed (503 under overload, 500).
    Error,
}

/// How a `POST /login` ended: the `result` label of `latchkey_login_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok,
    InvalidCredentials,
    /// The password was right and a second factor is needed.
    MfaRequired,
    /// 429: the username or address is banned, or out of attempts.
    Banned,
    /// 503: the hashing queue was full.
    Shed,
    /// 400, 403, 413, 415: refused before any password was looked at.
    BadRequest,
    /// 500.
    Error,
}

/// State read at scrape time, by whoever knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `None` when the database could not be asked: the gauge keeps its
    /// last value, and the rest of the scrape still answers.
    pub sessions_active: Option<i64>,
    pub hash_queue_depth: i64,
    pub bans_username: i64,
    pub bans_address: i64,
}

/// Every series latchkey exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verify: [Counter; 5],
    verify_duration: Histogram,
    login: [Counter; 7],
    introspect_active: Counter,
    introspect_inactive: Counter,
    password_hash_duration: Histogram,
    sessions_active: Gauge,
    hash_queue_depth: Gauge,
    bans_username: Gauge,
    bans_address: Gauge,
}

const VERIFY_RESULTS: [&str; 5] = ["allow", "unauthenticated", "forbidden", "bypass", "error"];
const LOGIN_RESULTS: [&str; 7] = [
    "ok",
    "invalid_credentials",
    "mfa_required",
    "banned",
    "shed",
    "bad_request",
    "error",
];

impl Metrics {
    /// The registry with every series at zero; `version` is the build's.
    pub fn new(version: &'static str) -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");

        let verify_family = Family::<Label, Counter>::default();
        let verify = VERIFY_RESULTS.map(|r| verify_family.get_or_create_owned(&[("result", r)]));
        registry.register("verify", "/verify answers, by result", verify_family);
        // 50 µs to ~0.8 s, doubling: a token check takes tens of
        // microseconds, one waiting for the database up to seconds.
        let verify_duration = Histogram::new(exponential_buckets(50e-6, 2.0, 15));
        registry.register(
            "verify_duration_seconds",
            "Time to answer /verify, in seconds",
            verify_duration.clone(),
        );

        let login_family = Family::<Label, Counter>::default();
        let login = LOGIN_RESULTS.map(|r| login_family.get_or_create_owned(&[("result", r)]));
        registry.register("login", "POST /login answers, by result", login_family);

        let introspect_family = Family::<Label, Counter>::default();
        let introspect_active = introspect_family.get_or_create_owned(&[("active", "true")]);
        let introspect_inactive = introspect_family.get_or_create_owned(&[("active", "false")]);
        registry.register(
            "introspect",
            "POST /introspect answers to authenticated callers, by whether the token was active",
            introspect_family,
        );

        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions neither expired nor revoked",
            sessions_active.clone(),
        );
        let hash_queue_depth = Gauge::default();
        registry.register(
            "hash_queue_depth",
            "Logins holding a place in the password hashing pool (hashing or waiting)",
            hash_queue_depth.clone(),
        );
        // 5 ms to ~1.3 s, doubling: argon2id at the default parameters
        // takes 20-50 ms a hash on one core.
        let password_hash_duration = Histogram::new(exponential_buckets(0.005, 2.0, 9));
        registry.register(
            "password_hash_duration_seconds",
            "Time to verify one password with argon2id, in seconds",
            password_hash_duration.clone(),
        );
        let bans_family = Family::<Label, Gauge>::default();
        let bans_username = bans_family.get_or_create_owned(&[("kind", "username")]);
        let bans_address = bans_family.get_or_create_owned(&[("kind", "address")]);
        registry.register(
            "bans_active",
            "Usernames and client addresses refused for too many failed logins",
            bans_family,
        );
        let build_family = Family::<Label, Gauge>::default();
        build_family.get_or_create(&[("version", version)]).set(1);
        registry.register("build_info", "The running build: always 1", build_family);

        Metrics {
            registry,
            verify,
            verify_duration,
            login,
            introspect_active,
            introspect_inactive,
            password_hash_duration,
            sessions_active,
            hash_queue_depth,
            bans_username,
            bans_address,
        }
    }

    /// Counts a `/verify` answer and how long it took.
    pub fn verify(&self, result: VerifyResult, took: Duration) {
        self.verify[result as usize].inc();
        self.verify_duration.observe(took.as_secs_f64());
    }

    /// Counts a `POST /login` answer.
    pub fn login(&self, result: LoginResult) {
        self.login[result as usize].inc();
    }

    /// Counts an introspection answer.
    pub fn introspect(&self, active: bool) {
        match active {
            true => self.introspect_active.inc(),
            false => self.introspect_inactive.inc(),
        };
    }

    /// Records one password verification's time.
    pub fn password_hashed(&self, took: Duration) {
        self.password_hash_duration.observe(took.as_secs_f64());
    }

    /// Every series in the Prometheus text format, with the gauges set from
    /// `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        if let Some(sessions) = snapshot.sessions_active {
            self.sessions_active.set(sessions);
        }
        self.hash_queue_depth.set(snapshot.hash_queue_depth);
        self.bans_username.set(snapshot.bans_username);
        self.bans_address.set(snapshot.bans_address);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels} value` lines, without comments.
    fn samples(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_labelled_series_exists_from_the_start_at_zero() {
        let text = Metrics::new("1.2.3").render(Snapshot::default());
        for line in [
            "latchkey_verify_total{result=\"allow\"} 0",
            "latchkey_verify_total{result=\"bypass\"} 0",
            "latchkey_login_total{result=\"mfa_required\"} 0",
            "latchkey_introspect_total{active=\"false\"} 0",
            "latchkey_sessions_active 0",
            "latchkey_hash_queue_depth 0",
            "latchkey_bans_active{kind=\"address\"} 0",
            "latchkey_build_info{version=\"1.2.3\"} 1",
            "latchkey_verify_duration_seconds_count 0",
            "latchkey_password_hash_duration_seconds_count 0",
        ] {
            assert!(
                samples(&text).iter().any(|l| l == line),
                "{line} in\n{text}"
            );
        }
        assert!(text.contains("# TYPE latchkey_verify_total counter"));
        assert!(text.contains("# TYPE latchkey_verify_duration_seconds histogram"));
        // The first bucket: 50 µs.
        assert!(text.contains("latchkey_verify_duration_seconds_bucket{le=\"5e-05\"} 0"));
    }

    #[test]
    fn counts_land_on_their_own_label_and_gauges_come_from_the_snapshot() {
        let metrics = Metrics::new("1");
        metrics.verify(VerifyResult::Forbidden, Duration::from_micros(70));
        metrics.verify(VerifyResult::Forbidden, Duration::from_micros(30));
        metrics.login(LoginResult::Shed);
        metrics.introspect(true);
        metrics.password_hashed(Duration::from_millis(30));
        let text = metrics.render(Snapshot {
            sessions_active: Some(12),
            hash_queue_depth: 3,
            bans_username: 1,
            bans_address: 2,
        });
        let lines = samples(&text);
        for line in [
            "latchkey_verify_total{result=\"forbidden\"} 2",
            "latchkey_verify_total{result=\"allow\"} 0",
            "latchkey_verify_duration_seconds_count 2",
            "latchkey_login_total{result=\"shed\"} 1",
            "latchkey_introspect_total{active=\"true\"} 1",
            "latchkey_password_hash_duration_seconds_count 1",
            "latchkey_sessions_active 12",
            "latchkey_hash_queue_depth 3",
            "latchkey_bans_active{kind=\"username\"} 1",
            "latchkey_bans_active{kind=\"address\"} 2",
        ] {
            assert!(lines.iter().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
