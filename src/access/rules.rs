//! The rule list compiled from `[access]`: each criterion in the form it is
//! matched in, so that judging a request allocates nothing.

use std::fmt;
use std::net::IpAddr;

use super::domain::Domains;
use crate::config::{AccessConfig, IpNet, Policy, RuleConfig, SubjectPattern};

/// The compiled `[access]` section: the ordered rules and the default policy.
#[derive(Debug)]
pub struct Rules {
    pub(super) rules: Box<[Rule]>,
    pub(super) default_policy: Policy,
    /// Some rule states `networks` (see [`Rules::use_networks`]).
    use_networks: bool,
}

/// A criterion a rule states; the one named when a rule does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// `domains`: the host.
    Domains,
    /// `paths`: the normalised path.
    Paths,
    /// `methods`: the method.
    Methods,
    /// `networks`: the client address.
    Networks,
    /// `subjects`: the logged-in user and their groups.
    Subjects,
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Criterion::Domains => "domains",
            Criterion::Paths => "paths",
            Criterion::Methods => "methods",
            Criterion::Networks => "networks",
            Criterion::Subjects => "subjects",
        })
    }
}

/// One compiled rule; `None` is a criterion the rule does not state.
#[derive(Debug)]
pub(super) struct Rule {
    domains: Option<Domains>,
    paths: Option<Box<[Box<str>]>>,
    methods: Option<Box<[Box<str>]>>,
    networks: Option<Box<[IpNet]>>,
    pub(super) subjects: Option<Subjects>,
    pub(super) policy: Policy,
}

/// A rule's `subjects`: the users and groups it names.
#[derive(Debug)]
pub(super) struct Subjects {
    users: Box<[UserName]>,
    groups: Box<[Box<str>]>,
}

/// A `user:` name with the fold the database compares usernames by.
#[derive(Debug)]
struct UserName {
    name: Box<str>,
    /// `str::to_lowercase`, as `auth::input::Username::folded`.
    folded: Box<str>,
}

impl Rules {
    /// Compiles a validated `[access]` section (see [`AccessConfig::validate`]).
    pub fn compile(config: &AccessConfig) -> Rules {
        Rules {
            rules: config.rules.iter().map(Rule::compile).collect(),
            default_policy: config.default_policy,
            use_networks: config.rules.iter().any(|rule| rule.networks.is_some()),
        }
    }

    /// How many rules there are (the default policy not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when only the default policy decides.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The policy used when no rule applies.
    pub fn default_policy(&self) -> Policy {
        self.default_policy
    }

    /// True when some rule states `networks`: only then does a decision
    /// depend on the client address, which `/verify` then resolves.
    pub fn use_networks(&self) -> bool {
        self.use_networks
    }
}

impl Default for Rules {
    /// No rules and `default_policy = "one_factor"`: what no `[access]` means.
    fn default() -> Self {
        Rules::compile(&AccessConfig::default())
    }
}

impl Rule {
    fn compile(config: &RuleConfig) -> Rule {
        let subjects = config.subjects.as_ref().map(|subjects| {
            let mut users = Vec::new();
            let mut groups = Vec::new();
            for subject in subjects {
                match subject {
                    SubjectPattern::User(name) => users.push(UserName {
                        name: name.as_str().into(),
                        folded: name.to_lowercase().into(),
                    }),
                    SubjectPattern::Group(name) => groups.push(name.as_str().into()),
                }
            }
            Subjects {
                users: users.into(),
                groups: groups.into(),
            }
        });
        Rule {
            domains: config.domains.as_deref().map(Domains::compile),
            paths: config
                .paths
                .as_ref()
                .map(|paths| paths.iter().map(|p| p.as_str().into()).collect()),
            methods: config
                .methods
                .as_ref()
                .map(|methods| methods.iter().map(|m| m.as_str().into()).collect()),
            networks: config.networks.as_deref().map(Into::into),
            subjects,
            policy: config.policy,
        }
    }

    /// `Ok` when every criterion but `subjects` matches, else the first that
    /// does not. `host` is without port, `path` normalised.
    pub(super) fn check(
        &self,
        host: &str,
        path: &str,
        method: &str,
        ip: IpAddr,
    ) -> Result<(), Criterion> {
        if let Some(domains) = &self.domains {
            if !domains.matches(host) {
                return Err(Criterion::Domains);
            }
        }
        if let Some(paths) = &self.paths {
            if !paths.iter().any(|prefix| is_under(path, prefix)) {
                return Err(Criterion::Paths);
            }
        }
        if let Some(methods) = &self.methods {
            // HTTP methods are case-sensitive, but some frameworks upper-case
            // them before routing: "post" may well be served as POST.
            if !methods.iter().any(|m| method.eq_ignore_ascii_case(m)) {
                return Err(Criterion::Methods);
            }
        }
        if let Some(networks) = &self.networks {
            if !networks.iter().any(|net| net.contains(ip)) {
                return Err(Criterion::Networks);
            }
        }
        Ok(())
    }
}

impl Subjects {
    /// True when the user, or one of their groups, is named (case ignored).
    pub(super) fn matches(&self, username: &str, groups: &[String]) -> bool {
        self.users.iter().any(|user| user.is(username))
            || self
                .groups
                .iter()
                .any(|named| groups.iter().any(|g| g.eq_ignore_ascii_case(named)))
    }
}

impl UserName {
    fn is(&self, username: &str) -> bool {
        if username.is_ascii() && self.name.is_ascii() {
            username.eq_ignore_ascii_case(&self.name)
        } else {
            // The full Unicode fold allocates; only non-ASCII names pay it.
            username.to_lowercase() == *self.folded
        }
    }
}

/// True when `path` is `prefix` or lies below it: `/admin` covers `/admin`
/// and `/admin/x`, not `/administrator`.
fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_match_on_segment_boundaries() {
        assert!(is_under("/admin", "/admin"));
        assert!(is_under("/admin/", "/admin"));
        assert!(is_under("/admin/users/1", "/admin"));
        assert!(!is_under("/administrator", "/admin"));
        assert!(!is_under("/adm", "/admin"));
        assert!(!is_under("/", "/admin"));
        assert!(!is_under("/ADMIN", "/admin"));
        assert!(!is_under("/x/admin", "/admin"));
        assert!(is_under("/anything", "/"));
        assert!(is_under("/a/b/c", "/a/b"));
        assert!(!is_under("/a/bc", "/a/b"));
    }

    fn subjects(list: &[&str]) -> Subjects {
        let rule = RuleConfig {
            domains: None,
            paths: None,
            methods: None,
            networks: None,
            subjects: Some(
                list.iter()
                    .map(|s| SubjectPattern::parse(s).unwrap())
                    .collect(),
            ),
            policy: Policy::OneFactor,
        };
        Rule::compile(&rule).subjects.unwrap()
    }

    #[test]
    fn subjects_match_users_and_groups_ignoring_case() {
        let s = subjects(&["user:Alice", "group:admins"]);
        let none: &[String] = &[];
        assert!(s.matches("alice", none));
        assert!(s.matches("ALICE", none));
        assert!(!s.matches("alice2", none));
        assert!(!s.matches("bob", none));
        assert!(s.matches("bob", &["users".into(), "Admins".into()]));
        assert!(!s.matches("bob", &["admins2".into(), "admin".into()]));
        // A user named like a group is not in it, and the reverse.
        assert!(!s.matches("admins", none));
        assert!(!subjects(&["group:alice"]).matches("alice", none));
    }

    #[test]
    fn non_ascii_usernames_match_as_the_database_folds_them() {
        let s = subjects(&["user:Ålice", "user:ΟΔΟΣ"]);
        assert!(s.matches("ålice", &[]));
        assert!(s.matches("ÅLICE", &[]));
        assert!(!s.matches("alice", &[]));
        // "ΟΔΟΣ" folds to "οδος" (final sigma): the account "οδοσ" is another one.
        assert!(s.matches("οδος", &[]));
        assert!(!s.matches("οδοσ", &[]));
    }
}
