use super::*;

fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_sources(file, Path::new("test.toml"), env)
}

#[test]
fn the_shipped_config_toml_is_exactly_the_defaults() {
    assert_eq!(load(Some(DEFAULTS_TOML), &[]).unwrap(), Config::default());
}

#[test]
fn no_file_means_defaults() {
    assert_eq!(load(None, &[]).unwrap(), Config::default());
}

#[test]
fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
    let file =
        "[server]\nlisten = \"127.0.0.1:7000\"\nworkers = 3\n[session]\nidle_timeout = \"2h\"\n";
    let config = load(
        Some(file),
        &[
            ("LATCHKEY_SERVER__LISTEN", "0.0.0.0:9000"),
            ("LATCHKEY_SESSION__COOKIE_SECURE", "false"),
            (
                "LATCHKEY_SERVER__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\", \"::1\"]",
            ),
            ("OTHER_VARIABLE", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(config.server.workers, 3);
    assert_eq!(config.session.idle_timeout, Duration::from_secs(7200));
    assert!(!config.session.cookie_secure);
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert_eq!(
        config.session.max_lifetime,
        SessionConfig::default().max_lifetime
    );
}

#[test]
fn unknown_keys_are_refused_naming_the_key() {
    let err = load(Some("[session]\nidle_timout = \"1h\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_timout"), "{err}");
    let err = load(Some("[sesion]\n"), &[]).unwrap_err().to_string();
    assert!(err.contains("sesion"), "{err}");
    let err = load(None, &[("LATCHKEY_SERVER__LISTN", "x")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LATCHKEY_SERVER__LISTN") && err.contains("server.listn"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let cases = [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nworkers = \"four\"\n", "server.workers"),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
            "server.trusted_proxies",
        ),
        ("[session]\nidle_timeout = \"10\"\n", "session.idle_timeout"),
        ("[session]\ncookie_name = \"a b\"\n", "session.cookie_name"),
        ("[database]\npool_size = 0\n", "database.pool_size"),
        (
            "[login]\ndefault_redirect = \"https://evil.example\"\n",
            "login.default_redirect",
        ),
        ("[password]\nmemory_kib = 1\n", "password"),
        (
            "[server]\nshutdown_timeout = \"10\"\n",
            "server.shutdown_timeout",
        ),
        ("[log]\nlevel = \"verbose\"\n", "log.level"),
        ("[log]\nlevel = \"INFO\"\n", "log.level"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[log]\ncolour = true\n", "log.colour"),
    ];
    for (file, key) in cases {
        let err = load(Some(file), &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{file:?} gave {err:?}");
        assert!(!err.contains('\n'), "multi-line error {err:?}");
    }
    let err = load(None, &[("LATCHKEY_DATABASE__POOL_SIZE", "many")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("LATCHKEY_DATABASE__POOL_SIZE"), "{err}");
}

#[test]
fn log_settings_come_from_the_file_and_the_environment() {
    let file = "[log]\nlevel = \"debug\"\n";
    let config = load(Some(file), &[("LATCHKEY_LOG__FORMAT", "json")]).unwrap();
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(load(None, &[]).unwrap().log, LogConfig::default());
    let err = load(None, &[("LATCHKEY_LOG__LEVEL", "loud")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("log.level") && err.contains("loud"), "{err}");
}

#[test]
fn the_shutdown_timeout_is_a_duration_zero_included() {
    let config = load(Some("[server]\nshutdown_timeout = \"30s\"\n"), &[]).unwrap();
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    let config = load(None, &[("LATCHKEY_SERVER__SHUTDOWN_TIMEOUT", "0s")]).unwrap();
    assert_eq!(config.server.shutdown_timeout, Duration::ZERO);
    assert_eq!(
        load(None, &[]).unwrap().server.shutdown_timeout,
        Duration::from_secs(10)
    );
}

#[test]
fn syntax_errors_name_the_file_and_line_on_one_line() {
    let err = load(Some("[server]\nlisten = \n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("test.toml") && err.contains("line 2"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn the_audit_retention_is_at_least_an_hour_or_zero_for_forever() {
    assert_eq!(
        Config::default().audit.purge_after(),
        Some(Duration::from_secs(90 * 86_400))
    );
    let config = load(None, &[("LATCHKEY_AUDIT__RETENTION", "0s")]).unwrap();
    assert_eq!(config.audit.purge_after(), None);
    let config = load(Some("[audit]\nretention = \"1h\"\n"), &[]).unwrap();
    assert_eq!(config.audit.purge_after(), Some(Duration::from_secs(3600)));
    let err = load(Some("[audit]\nretention = \"59m\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.retention") && err.contains("1h"),
        "{err}"
    );
}

#[test]
fn the_metrics_listener_is_off_by_default_and_an_address_when_set() {
    assert_eq!(Config::default().metrics.listen, None);
    let config = load(None, &[("LATCHKEY_METRICS__LISTEN", "127.0.0.1:9464")]).unwrap();
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    let config = load(Some("[metrics]\nlisten = \"[::1]:0\"\n"), &[]).unwrap();
    assert_eq!(config.metrics.listen, Some("[::1]:0".parse().unwrap()));
    let err = load(Some("[metrics]\nlisten = \"localhost\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.listen") && err.contains("localhost"),
        "{err}"
    );
}

#[test]
fn a_database_password_never_reaches_a_message() {
    let shown = redacted_url("postgres://latchkey:s3cret@db.example:5432/auth");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("db.example"));
    // Not a URL at all: the key is named, the text is not repeated.
    assert_eq!(redacted_url("s3cret"), "the database.url");
}
