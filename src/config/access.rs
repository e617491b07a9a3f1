//! `[access]`: the rule list as written, parsed into typed values.
//!
//! Each value is checked here, where the error can name its key
//! (`access.rules[2].paths[0]`); `crate::access` compiles the result into
//! matchers and trusts it. Nothing here matches a request.

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::values::is_host_name;
use super::{ConfigError, IpNet};

/// Longest user or group name a subject may name, in characters.
const MAX_SUBJECT_NAME_CHARS: usize = 64;

/// `[access]`: the ordered rules and the policy used when none applies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub default_policy: Policy,
    pub rules: Vec<RuleConfig>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            default_policy: Policy::OneFactor,
            rules: Vec::new(),
        }
    }
}

/// One `[[access.rules]]` entry: every criterion it states must match.
///
/// An absent criterion matches anything; `policy` is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub domains: Option<Vec<DomainPattern>>,
    pub paths: Option<Vec<PathPrefix>>,
    pub methods: Option<Vec<Method>>,
    pub networks: Option<Vec<IpNet>>,
    pub subjects: Option<Vec<SubjectPattern>>,
    pub policy: Policy,
}

/// What a rule (or the default) asks of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Answer 200 without a session.
    Bypass,
    /// A valid session.
    OneFactor,
    /// A valid session whose login proved a second factor (`amr` has `otp`).
    TwoFactor,
    /// 403, logged in or not.
    Deny,
}

impl Policy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Bypass => "bypass",
            Policy::OneFactor => "one_factor",
            Policy::TwoFactor => "two_factor",
            Policy::Deny => "deny",
        }
    }

    fn parse(text: &str) -> Result<Policy, String> {
        match text {
            "bypass" => Ok(Policy::Bypass),
            "one_factor" => Ok(Policy::OneFactor),
            "two_factor" => Ok(Policy::TwoFactor),
            "deny" => Ok(Policy::Deny),
            other => Err(format!(
                "unknown policy {other:?}; use bypass, one_factor, two_factor or deny"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `domains` entry: a host name, or `*.` and a domain (its subdomains, not itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// This host exactly (lowercase, no trailing dot).
    Exact(String),
    /// Every host below this domain (lowercase, no trailing dot), not the domain itself.
    Subdomains(String),
}

impl DomainPattern {
    /// Parses `"app.example.com"` or `"*.example.com"`; the letter case is dropped.
    pub fn parse(text: &str) -> Result<DomainPattern, String> {
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        // One trailing dot is the DNS root: "example.com." is "example.com".
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard is only allowed as a whole first label, as in \"*.example.com\""
            ));
        }
        if name.contains(':') {
            return Err(format!(
                "{text:?}: leave the port out (ports are ignored when matching)"
            ));
        }
        if !name.is_ascii() {
            return Err(format!(
                "{text:?}: write an internationalised name in its ASCII (xn--) form"
            ));
        }
        if !is_host_name(name) {
            return Err(format!("{text:?} is not a domain name or a \"*.\" pattern"));
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            DomainPattern::Subdomains(name)
        } else {
            DomainPattern::Exact(name)
        })
    }
}

/// A `paths` entry: a path prefix that matches on segment boundaries.
///
/// Written decoded and already normal (no `%`, no `.` or `..` segment, no
/// `//`, no `;`, `?`, `#` or backslash), because requests are compared after
/// normalising. A trailing `/` is dropped: `"/admin/"` is `"/admin"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Parses a prefix such as `"/admin"`; refuses one not written normal.
    pub fn parse(text: &str) -> Result<PathPrefix, String> {
        if !text.starts_with('/') {
            return Err(format!("{text:?} must start with \"/\""));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() || matches!(c, '%' | '?' | '#' | ';' | '\\'))
        {
            return Err(format!(
                "{text:?} holds {c:?}: write the path decoded, without a query, \
                 parameters, backslashes or control characters"
            ));
        }
        let segments: Vec<&str> = text[1..].split('/').collect();
        let (last, inner) = segments.split_last().unwrap_or((&"", &[]));
        if inner.iter().any(|s| matches!(*s, "" | "." | "..")) || matches!(*last, "." | "..") {
            return Err(format!(
                "{text:?} is not a normal path: no empty, \".\" or \"..\" segments"
            ));
        }
        let trimmed = match text.strip_suffix('/') {
            Some(rest) if !rest.is_empty() => rest,
            _ => text,
        };
        Ok(PathPrefix(trimmed.to_owned()))
    }

    /// The prefix: starts with `/`, ends with `/` only when it is `"/"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `methods` entry: an HTTP method token, kept uppercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(String);

impl Method {
    /// Parses a method token such as `"POST"` (any case; kept uppercase).
    pub fn parse(text: &str) -> Result<Method, String> {
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if text.is_empty() || text.len() > 32 || !text.bytes().all(is_tchar) {
            return Err(format!("{text:?} is not an HTTP method such as \"POST\""));
        }
        Ok(Method(text.to_ascii_uppercase()))
    }

    /// The method, uppercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `subjects` entry: `user:NAME` or `group:NAME`, compared ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectPattern {
    /// A username, as written.
    User(String),
    /// A group name, as written.
    Group(String),
}

impl SubjectPattern {
    /// Parses `"user:NAME"` (a valid username) or `"group:NAME"` (a valid group name).
    pub fn parse(text: &str) -> Result<SubjectPattern, String> {
        if let Some(name) = text.strip_prefix("user:") {
            let chars = name.chars().count();
            if chars == 0
                || chars > MAX_SUBJECT_NAME_CHARS
                || name.chars().any(char::is_control)
                || name.trim() != name
            {
                return Err(format!(
                    "{text:?}: a username has 1 to 64 characters, no control characters \
                     and no surrounding spaces"
                ));
            }
            Ok(SubjectPattern::User(name.to_owned()))
        } else if let Some(name) = text.strip_prefix("group:") {
            // The SPEC's group names, which travel in a comma-separated header.
            let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
            if name.is_empty() || name.len() > MAX_SUBJECT_NAME_CHARS || !name.bytes().all(valid) {
                return Err(format!(
                    "{text:?}: a group name has 1 to 64 letters, digits, '.', '_' or '-'"
                ));
            }
            Ok(SubjectPattern::Group(name.to_owned()))
        } else {
            Err(format!("{text:?} must be \"user:NAME\" or \"group:NAME\""))
        }
    }
}

impl AccessConfig {
    /// Refuses rules that parse but cannot mean what they say, naming the
    /// rule by its index (`access.rules[2].subjects`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, rule) in self.rules.iter().enumerate() {
            let bad = |key: &str, message: &str| {
                Err(ConfigError::Key {
                    key: format!("access.rules[{index}].{key}"),
                    message: message.to_owned(),
                })
            };
            let lists = [
                ("domains", rule.domains.as_ref().map(Vec::len)),
                ("paths", rule.paths.as_ref().map(Vec::len)),
                ("methods", rule.methods.as_ref().map(Vec::len)),
                ("networks", rule.networks.as_ref().map(Vec::len)),
                ("subjects", rule.subjects.as_ref().map(Vec::len)),
            ];
            for (key, len) in lists {
                if len == Some(0) {
                    // An empty list would match nothing, which is never
                    // what was meant; absent means "any".
                    return bad(key, "must not be empty; leave the key out to match any");
                }
            }
            if rule.policy == Policy::Bypass && rule.subjects.is_some() {
                return bad(
                    "subjects",
                    "a bypass rule cannot name subjects: bypass answers without a session, \
                     so there is no user to compare",
                );
            }
        }
        Ok(())
    }
}

/// Values of the file that parse through `FromStr`-like functions.
macro_rules! deserialize_with_parse {
    ($($type:ty),*) => {$(
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$type>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_with_parse!(Policy, DomainPattern, PathPrefix, Method, SubjectPattern);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns_are_hosts_or_a_leading_wildcard_label() {
        assert_eq!(
            DomainPattern::parse("App.Example.COM."),
            Ok(DomainPattern::Exact("app.example.com".to_owned()))
        );
        assert_eq!(
            DomainPattern::parse("*.Example.com"),
            Ok(DomainPattern::Subdomains("example.com".to_owned()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "*example.com",
            "**.example.com",
            "example.com:443",
            "exa mple.com",
            "café.example",
            "https://example.com",
            "example..com",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn path_prefixes_must_be_written_normal_and_lose_a_trailing_slash() {
        assert_eq!(PathPrefix::parse("/admin/").unwrap().as_str(), "/admin");
        assert_eq!(PathPrefix::parse("/").unwrap().as_str(), "/");
        assert_eq!(
            PathPrefix::parse("/a b/café").unwrap().as_str(),
            "/a b/café"
        );
        for bad in [
            "", "admin", "/a//b", "//", "/a/./b", "/a/..", "/a%2Fb", "/a?b", "/a#b", "/a;b",
            "/a\\b", "/a\0",
        ] {
            assert!(PathPrefix::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn methods_are_tokens_kept_uppercase() {
        assert_eq!(Method::parse("post").unwrap().as_str(), "POST");
        assert_eq!(Method::parse("PROPFIND").unwrap().as_str(), "PROPFIND");
        for bad in ["", "GET POST", "GET,POST", "Ü"] {
            assert!(Method::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn subjects_name_a_user_or_a_group() {
        assert_eq!(
            SubjectPattern::parse("user:Ålice"),
            Ok(SubjectPattern::User("Ålice".to_owned()))
        );
        assert_eq!(
            SubjectPattern::parse("group:family.photos-2"),
            Ok(SubjectPattern::Group("family.photos-2".to_owned()))
        );
        for bad in [
            "alice",
            "user:",
            "user: alice",
            "group:",
            "group:a,b",
            "group:a b",
            "Group:admins",
            "role:admins",
        ] {
            assert!(SubjectPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_four_policies_parse_and_anything_else_is_refused_naming_them() {
        for policy in [
            Policy::Bypass,
            Policy::OneFactor,
            Policy::TwoFactor,
            Policy::Deny,
        ] {
            assert_eq!(Policy::parse(policy.as_str()), Ok(policy));
        }
        let err = Policy::parse("allow").unwrap_err();
        assert!(
            err.contains("unknown policy") && err.contains("two_factor"),
            "{err}"
        );
    }
}
