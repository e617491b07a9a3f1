//! The effective settings as `key = value` lines, for `latchkey config check`.
//!
//! Written by hand rather than serialized: `Config` has no `Serialize`, and
//! values are shown as they would be written in `config.toml` (durations as
//! `"1h30m"`, ranges as `"10.0.0.0/8"`). A unit test checks that every key of
//! the shipped `config.toml` appears.

use std::time::Duration;

use super::{Config, DomainPattern, RuleConfig, SubjectPattern};

/// Every setting, in `config.toml` order, as (`section.key`, TOML value).
///
/// Secrets are redacted here: `database.url` is shown without its
/// password. A key that holds a secret must never show its value.
pub fn effective_settings(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |key: &str, value: String| out.push((key.to_owned(), value));
    let s = &config.server;
    put("server.listen", quote(&s.listen.to_string()));
    put("server.workers", s.workers.to_string());
    put(
        "server.trusted_proxies",
        list(s.trusted_proxies.iter().map(|n| n.to_string())),
    );
    put("server.shutdown_timeout", duration(s.shutdown_timeout));
    let d = &config.database;
    put("database.path", quote(&d.path.to_string_lossy()));
    let url = if d.url.is_empty() {
        String::new()
    } else {
        super::redacted_url(&d.url)
    };
    put("database.url", quote(&url));
    put("database.pool_size", d.pool_size.to_string());
    let s = &config.session;
    put("session.idle_timeout", duration(s.idle_timeout));
    put("session.max_lifetime", duration(s.max_lifetime));
    put("session.refresh_within", duration(s.refresh_within));
    put("session.cookie_name", quote(&s.cookie_name));
    put("session.cookie_domain", quote(&s.cookie_domain));
    put("session.cookie_secure", s.cookie_secure.to_string());
    let p = &config.password;
    put("password.memory_kib", p.memory_kib.to_string());
    put("password.iterations", p.iterations.to_string());
    put("password.parallelism", p.parallelism.to_string());
    let l = &config.login;
    put("login.max_failures", l.max_failures.to_string());
    put("login.failure_window", duration(l.failure_window));
    put("login.ban_duration", duration(l.ban_duration));
    put("login.default_redirect", quote(&l.default_redirect));
    put(
        "login.allowed_redirect_hosts",
        list(l.allowed_redirect_hosts.iter().cloned()),
    );
    put(
        "access.default_policy",
        quote(config.access.default_policy.as_str()),
    );
    // No rules still shows a line, so their absence is visible too.
    if config.access.rules.is_empty() {
        put("access.rules", "[]".to_owned());
    }
    for (i, rule) in config.access.rules.iter().enumerate() {
        for (name, value) in rule_fields(rule) {
            put(&format!("access.rules[{i}].{name}"), value);
        }
    }
    put(
        "log.level",
        quote(&format!("{:?}", config.log.level).to_lowercase()),
    );
    put(
        "log.format",
        quote(&format!("{:?}", config.log.format).to_lowercase()),
    );
    put("audit.retention", duration(config.audit.retention));
    let metrics = config
        .metrics
        .listen
        .map(|a| a.to_string())
        .unwrap_or_default();
    put("metrics.listen", quote(&metrics));
    out
}

/// The settings as aligned `key = value` lines, one per setting.
pub fn format_settings(settings: &[(String, String)]) -> String {
    let width = settings.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    settings
        .iter()
        .map(|(key, value)| format!("{key:width$} = {value}\n"))
        .collect()
}

fn rule_fields(rule: &RuleConfig) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(domains) = &rule.domains {
        let shown = domains.iter().map(|d| match d {
            DomainPattern::Exact(name) => name.clone(),
            DomainPattern::Subdomains(name) => format!("*.{name}"),
        });
        fields.push(("domains", list(shown)));
    }
    if let Some(paths) = &rule.paths {
        fields.push(("paths", list(paths.iter().map(|p| p.as_str().to_owned()))));
    }
    if let Some(methods) = &rule.methods {
        fields.push((
            "methods",
            list(methods.iter().map(|m| m.as_str().to_owned())),
        ));
    }
    if let Some(networks) = &rule.networks {
        fields.push(("networks", list(networks.iter().map(|n| n.to_string()))));
    }
    if let Some(subjects) = &rule.subjects {
        let shown = subjects.iter().map(|s| match s {
            SubjectPattern::User(name) => format!("user:{name}"),
            SubjectPattern::Group(name) => format!("group:{name}"),
        });
        fields.push(("subjects", list(shown)));
    }
    fields.push(("policy", quote(rule.policy.as_str())));
    fields
}

/// A duration as the config writes it: `"1h30m"`, `"7d"`, `"0s"`.
fn duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return quote("0s");
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            text += &format!("{}{unit}", secs / size);
            secs %= size;
        }
    }
    quote(&text)
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|item| quote(&item)).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::DEFAULTS_TOML;

    fn settings(file: &str) -> Vec<(String, String)> {
        let config = Config::from_sources(Some(file), Path::new("t.toml"), Vec::new()).unwrap();
        effective_settings(&config)
    }

    fn value<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    #[test]
    fn every_key_of_the_shipped_config_is_shown_with_its_default() {
        let shown = effective_settings(&Config::default());
        let defaults: toml::Table = DEFAULTS_TOML.parse().unwrap();
        for (section, keys) in &defaults {
            for (key, default) in keys.as_table().unwrap() {
                let name = format!("{section}.{key}");
                let reparsed: toml::Table =
                    format!("v = {}", value(&shown, &name)).parse().unwrap();
                assert_eq!(reparsed["v"], *default, "{name}");
            }
        }
    }

    #[test]
    fn values_are_shown_as_the_config_would_write_them() {
        let s = settings(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
             [session]\nidle_timeout = \"90m\"\nrefresh_within = \"0s\"\n\
             [login]\ndefault_redirect = \"/a\\\"b\"\n\
             [[access.rules]]\ndomains = [\"*.Example.com\"]\nsubjects = [\"group:admins\"]\npolicy = \"deny\"\n",
        );
        assert_eq!(
            value(&s, "server.trusted_proxies"),
            r#"["10.0.0.0/8", "::1/128"]"#
        );
        assert_eq!(value(&s, "session.idle_timeout"), r#""1h30m""#);
        assert_eq!(value(&s, "session.refresh_within"), r#""0s""#);
        assert_eq!(value(&s, "login.default_redirect"), r#""/a\"b""#);
        assert!(s.iter().all(|(k, _)| k != "access.rules"));
        assert_eq!(value(&settings(""), "access.rules"), "[]");
        assert_eq!(value(&s, "access.rules[0].domains"), r#"["*.example.com"]"#);
        assert_eq!(value(&s, "access.rules[0].subjects"), r#"["group:admins"]"#);
        assert_eq!(value(&s, "access.rules[0].policy"), r#""deny""#);
    }

    #[test]
    fn lines_are_aligned_on_the_equals_sign() {
        let text = format_settings(&[("a".into(), "1".into()), ("long.key".into(), "2".into())]);
        assert_eq!(text, "a        = 1\nlong.key = 2\n");
    }
}
