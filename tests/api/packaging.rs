//! Tests: packaging. `examples/systemd/latchkey.service` is a unit a
//! self-hoster can install as is: `systemd-analyze verify` has nothing to
//! say about it and `systemd-analyze security` rates it well (where
//! systemd-analyze is installed; CI installs it), and its shape, parsed
//! here whatever is installed, is what docs/operations.md promises.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use latchkey::config::Config;

use crate::helpers::{execute, installed};

const UNIT: &str = include_str!("../../examples/systemd/latchkey.service");
const EXAMPLE_CONFIG: &str = include_str!("../../examples/latchkey.toml");
/// Where the unit runs latchkey from.
const INSTALLED_BINARY: &str = "/usr/local/bin/latchkey";

/// The unit's settings: `(section, key)` to the values, in order (a key
/// may be given more than once). Comments and blank lines are skipped.
fn settings(unit: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut settings: BTreeMap<_, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "no continued lines: {line}");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        settings
            .entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    settings
}

/// The one value of `[Service] key`.
fn service<'s>(settings: &'s BTreeMap<(String, String), Vec<String>>, key: &str) -> &'s str {
    match settings.get(&("Service".to_owned(), key.to_owned())) {
        Some(values) if values.len() == 1 => &values[0],
        other => panic!("[Service] {key}: expected one value, found {other:?}"),
    }
}

#[test]
fn the_systemd_unit_runs_serve_as_its_own_user_hardened_with_reload_and_a_long_enough_stop() {
    let settings = settings(UNIT);
    // A dedicated, unprivileged user.
    let user = service(&settings, "User");
    assert_eq!(user, "latchkey");
    assert_eq!(service(&settings, "Group"), "latchkey");
    assert!(!settings.contains_key(&("Service".into(), "DynamicUser".into())));
    // Its state in /var/lib/latchkey, the rest read-only, no privileges.
    assert_eq!(service(&settings, "StateDirectory"), "latchkey");
    assert_eq!(service(&settings, "StateDirectoryMode"), "0700");
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_eq!(service(&settings, key), value, "[Service] {key}");
    }
    // SIGHUP reloads the access rules.
    assert_eq!(service(&settings, "ExecReload"), "/bin/kill -HUP $MAINPID");
    // The server, on the config the docs install.
    let start: Vec<&str> = service(&settings, "ExecStart").split(' ').collect();
    assert_eq!(
        start,
        [
            INSTALLED_BINARY,
            "--config",
            "/etc/latchkey/config.toml",
            "serve"
        ]
    );
    // latchkey takes those arguments (`--help` after them: nothing runs).
    let mut help = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    help.args(&start[1..]).arg("--help");
    execute(help, None).assert_ok();
    // systemd waits longer than latchkey's graceful stop before SIGKILL.
    let stop = service(&settings, "TimeoutStopSec");
    let stop = latchkey::config::parse_duration(stop).expect("TimeoutStopSec in seconds");
    assert!(
        stop > Config::default().server.shutdown_timeout,
        "TimeoutStopSec={stop:?} does not outlast server.shutdown_timeout"
    );
    // The example config keeps its database in the unit's state directory.
    let example = Config::from_sources(
        Some(EXAMPLE_CONFIG),
        Path::new("examples/latchkey.toml"),
        std::iter::empty(),
    )
    .unwrap();
    assert!(
        example.database.path.starts_with("/var/lib/latchkey"),
        "{:?} is outside StateDirectory",
        example.database.path
    );
    assert_eq!(
        settings.get(&("Install".into(), "WantedBy".into())),
        Some(&vec!["multi-user.target".to_owned()])
    );
}

#[test]
fn systemd_analyze_finds_nothing_to_say_about_the_unit_and_rates_its_exposure_ok() {
    let Some(analyze) = installed("systemd-analyze") else {
        return;
    };
    // verify checks that the program exists: point it at the one built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("latchkey.service");
    let text = UNIT.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_latchkey"));
    std::fs::write(&unit, text).unwrap();

    let mut verify = Command::new(&analyze);
    verify.arg("verify").arg(&unit).current_dir(dir.path());
    let run = execute(verify, None);
    // It exits 0 on an unknown key or a bad value too, but says so.
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stderr, "",
        "systemd-analyze verify complained: {run:#?}"
    );

    let mut security = Command::new(&analyze);
    security
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .current_dir(dir.path());
    let run = execute(security, None);
    if run.code != 0 && run.stderr.contains("offline") {
        eprintln!("skipping the exposure rating: this systemd-analyze has no --offline");
        return;
    }
    let exposure: f64 = run
        .stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for latchkey.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {run:#?}"));
    // 0 is the best, 10 an unprotected service; systemd calls < 2 "OK".
    assert!(exposure < 2.0, "exposure {exposure}: {}", run.stdout);
}
