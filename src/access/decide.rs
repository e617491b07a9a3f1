//! Judging one proxied request: the first rule that applies decides, else
//! the default policy; and the same walk, explained, for `access check`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use super::domain::host_name;
use super::path::{normalise, PathRefused};
use super::rules::{Criterion, Rules};
use crate::config::Policy;

/// The request the proxy asks about, as `/verify` reads it from the
/// forwarded headers (the path raw, as the client sent it).
#[derive(Debug, Clone, Copy)]
pub struct ProxiedRequest<'a> {
    /// May carry a port and a trailing dot; both are ignored.
    pub host: &'a str,
    /// Normalised here; the query is ignored.
    pub path: &'a str,
    /// Compared ignoring ASCII case.
    pub method: &'a str,
    /// The client address, as logins resolve it.
    pub ip: IpAddr,
}

/// The logged-in user behind a request with a valid session.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The username (any case).
    pub username: &'a str,
    /// The user's group names (any case, any order).
    pub groups: &'a [String],
    /// The session's login proved a second factor: `two_factor` is met.
    pub two_factor: bool,
}

/// What to answer, which rule said so (`None`: the default policy or a
/// refused path), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Index into `access.rules`, counted from 0 as config errors count.
    pub rule: Option<usize>,
    pub why: Why,
}

/// The answer `/verify` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 without a session; every `Remote-*` header present and empty.
    Bypass,
    /// 401, or the 302 to the login page: there is no valid session.
    NeedsLogin,
    /// 200 with the user's identity headers.
    Allow,
    /// 403 `forbidden`, logged in or not.
    Deny,
}

/// Why the outcome is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The path has no normal form; no rule was tried.
    UnsafePath(PathRefused),
    /// The rule's policy (or `default_policy`, when `rule` is `None`) decided.
    Policy(Policy),
    /// The rule names subjects and the request has no session: log in first.
    SubjectsNeedLogin,
}

/// A rule tried and passed over, with the first criterion that did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Index into `access.rules`.
    pub rule: usize,
    /// The first criterion of the rule that did not match.
    pub criterion: Criterion,
}

/// A decision with the walk that led to it, for `latchkey access check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The host compared with `domains` (lowercase, without port or trailing dot).
    pub host: String,
    /// The path compared with `paths`, or why it was refused.
    pub path: Result<String, PathRefused>,
    /// The rules passed over, in order.
    pub skipped: Vec<Skipped>,
    /// What [`Rules::decide`] answers for the same request.
    pub decision: Decision,
}

impl Rules {
    /// Judges `request`, for `subject` when it has a valid session.
    ///
    /// Allocates nothing unless the path needs normalising (or a `user:`
    /// subject and the username are not both ASCII).
    pub fn decide(&self, request: &ProxiedRequest<'_>, subject: Option<&Subject<'_>>) -> Decision {
        self.walk(request, subject, |_| {}).0
    }

    /// [`Rules::decide`], with the rules passed over and the values compared.
    pub fn explain(
        &self,
        request: &ProxiedRequest<'_>,
        subject: Option<&Subject<'_>>,
    ) -> Explanation {
        let mut skipped = Vec::new();
        let (decision, path) = self.walk(request, subject, |s| skipped.push(s));
        Explanation {
            host: host_name(request.host).to_ascii_lowercase(),
            path: path.map(Cow::into_owned),
            skipped,
            decision,
        }
    }

    /// The one walk down the rules, telling `on_skip` each rule passed over.
    fn walk<'r>(
        &self,
        request: &ProxiedRequest<'r>,
        subject: Option<&Subject<'_>>,
        mut on_skip: impl FnMut(Skipped),
    ) -> (Decision, Result<Cow<'r, str>, PathRefused>) {
        let path = match normalise(request.path) {
            Ok(path) => path,
            Err(refused) => {
                let decision = Decision {
                    outcome: Outcome::Deny,
                    rule: None,
                    why: Why::UnsafePath(refused),
                };
                return (decision, Err(refused));
            }
        };
        let host = host_name(request.host);
        let decision = 'walk: {
            for (index, rule) in self.rules.iter().enumerate() {
                if let Err(criterion) = rule.check(host, &path, request.method, request.ip) {
                    on_skip(Skipped {
                        rule: index,
                        criterion,
                    });
                    continue;
                }
                if let Some(subjects) = &rule.subjects {
                    match subject {
                        // Whether this rule is the user's cannot be known
                        // without a user: the search ends here.
                        None => {
                            break 'walk Decision {
                                outcome: Outcome::NeedsLogin,
                                rule: Some(index),
                                why: Why::SubjectsNeedLogin,
                            }
                        }
                        Some(s) if !subjects.matches(s.username, s.groups) => {
                            on_skip(Skipped {
                                rule: index,
                                criterion: Criterion::Subjects,
                            });
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                break 'walk apply(rule.policy, Some(index), subject);
            }
            apply(self.default_policy, None, subject)
        };
        (decision, Ok(path))
    }
}

fn apply(policy: Policy, rule: Option<usize>, subject: Option<&Subject<'_>>) -> Decision {
    let outcome = match (policy, subject) {
        (Policy::Bypass, _) => Outcome::Bypass,
        (Policy::OneFactor, Some(_)) => Outcome::Allow,
        (Policy::TwoFactor, Some(s)) if s.two_factor => Outcome::Allow,
        // A session without the factor counts as none for this request:
        // the login page then asks for the code (step-up).
        (Policy::OneFactor | Policy::TwoFactor, _) => Outcome::NeedsLogin,
        (Policy::Deny, _) => Outcome::Deny,
    };
    Decision {
        outcome,
        rule,
        why: Why::Policy(policy),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Bypass => "bypass (200 without a session, Remote-* headers empty)",
            Outcome::NeedsLogin => "log in first (401, or 302 to the login page)",
            Outcome::Allow => "allow (200 with the user's Remote-* headers)",
            Outcome::Deny => "deny (403 forbidden)",
        })
    }
}

impl fmt::Display for Decision {
    /// Why, in a sentence: "rule 2 applies; its policy is deny".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rule, self.why) {
            (_, Why::UnsafePath(refused)) => {
                write!(f, "the path is refused before any rule is tried: {refused}")
            }
            (Some(rule), Why::SubjectsNeedLogin) => write!(
                f,
                "rule {rule} applies and names subjects; without a session the user \
                 cannot be compared with them"
            ),
            (None, Why::SubjectsNeedLogin) => f.write_str("a rule names subjects"),
            (Some(rule), Why::Policy(policy)) => {
                write!(f, "rule {rule} applies; its policy is {policy}")?;
                no_session_note(f, self.outcome, policy)
            }
            (None, Why::Policy(policy)) => {
                write!(f, "no rule applies; default_policy is {policy}")?;
                no_session_note(f, self.outcome, policy)
            }
        }
    }
}

fn no_session_note(f: &mut fmt::Formatter<'_>, outcome: Outcome, policy: Policy) -> fmt::Result {
    match (outcome, policy) {
        (Outcome::NeedsLogin, Policy::OneFactor) => f.write_str(", and the request has no session"),
        (Outcome::NeedsLogin, Policy::TwoFactor) => {
            f.write_str(", and the request has no session whose login proved a second factor")
        }
        _ => Ok(()),
    }
}
