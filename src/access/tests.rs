//! The rules as a whole: order, subjects, every policy, refused paths,
//! config errors and reload.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::config::{AccessConfig, Policy};

pub(super) fn rules(toml: &str) -> Rules {
    let config = AccessConfig::from_sources(Some(toml), Path::new("test.toml"), [])
        .unwrap_or_else(|e| panic!("{e}"));
    Rules::compile(&config)
}

fn request<'a>(host: &'a str, path: &'a str, method: &'a str, ip: &str) -> ProxiedRequest<'a> {
    ProxiedRequest {
        host,
        path,
        method,
        ip: ip.parse::<IpAddr>().unwrap(),
    }
}

pub(super) fn get(path: &str) -> ProxiedRequest<'_> {
    request("app.example.com", path, "GET", "192.0.2.1")
}

const NO_GROUPS: &[String] = &[];

fn user<'a>(username: &'a str, groups: &'a [String]) -> Subject<'a> {
    Subject {
        username,
        groups,
        two_factor: false,
    }
}

/// (outcome, rule) for an anonymous request and for `alice` (no groups).
fn both(rules: &Rules, req: &ProxiedRequest<'_>) -> [(Outcome, Option<usize>); 2] {
    let alice = user("alice", NO_GROUPS);
    [rules.decide(req, None), rules.decide(req, Some(&alice))].map(|d| (d.outcome, d.rule))
}

#[test]
fn without_rules_the_default_policy_decides() {
    let default = Rules::default();
    assert_eq!(
        both(&default, &get("/")),
        [(Outcome::NeedsLogin, None), (Outcome::Allow, None)]
    );
    let open = rules("[access]\ndefault_policy = \"bypass\"\n");
    assert_eq!(
        both(&open, &get("/x")),
        [(Outcome::Bypass, None), (Outcome::Bypass, None)]
    );
    let closed = rules("[access]\ndefault_policy = \"deny\"\n");
    assert_eq!(
        both(&closed, &get("/x")),
        [(Outcome::Deny, None), (Outcome::Deny, None)]
    );
}

#[test]
fn every_policy_answers_anonymous_and_logged_in_requests_as_the_spec_says() {
    let r = rules(
        r#"
        [[access.rules]]
        paths = ["/public"]
        policy = "bypass"
        [[access.rules]]
        paths = ["/app"]
        policy = "one_factor"
        [[access.rules]]
        paths = ["/secret"]
        policy = "deny"
        "#,
    );
    assert_eq!(
        both(&r, &get("/public/a")),
        [(Outcome::Bypass, Some(0)), (Outcome::Bypass, Some(0))]
    );
    assert_eq!(
        both(&r, &get("/app")),
        [(Outcome::NeedsLogin, Some(1)), (Outcome::Allow, Some(1))]
    );
    assert_eq!(
        both(&r, &get("/secret/x")),
        [(Outcome::Deny, Some(2)), (Outcome::Deny, Some(2))]
    );
    assert_eq!(
        both(&r, &get("/other")),
        [(Outcome::NeedsLogin, None), (Outcome::Allow, None)]
    );
}

#[test]
fn the_first_rule_that_applies_decides() {
    let r = rules(
        r#"
        [[access.rules]]
        paths = ["/admin/public"]
        policy = "bypass"
        [[access.rules]]
        paths = ["/admin"]
        policy = "deny"
        [[access.rules]]
        paths = ["/admin/public/more"]
        policy = "one_factor"
        "#,
    );
    assert_eq!(r.decide(&get("/admin/public/more"), None).rule, Some(0));
    assert_eq!(r.decide(&get("/admin/x"), None).outcome, Outcome::Deny);
    assert_eq!(r.decide(&get("/administrator"), None).rule, None);
}

#[test]
fn a_rule_applies_only_when_every_criterion_it_states_matches() {
    let r = rules(
        r#"
        [[access.rules]]
        domains = ["*.example.com"]
        paths = ["/api"]
        methods = ["POST", "delete"]
        networks = ["10.0.0.0/8", "2001:db8::/32"]
        policy = "deny"
        "#,
    );
    let applies =
        |host, path, method, ip| r.decide(&request(host, path, method, ip), None).rule == Some(0);
    assert!(applies("app.example.com", "/api/x", "POST", "10.1.2.3"));
    assert!(applies(
        "APP.example.com:443",
        "/api",
        "DELETE",
        "2001:db8::5"
    ));
    assert!(applies("a.example.com", "/api", "post", "::ffff:10.0.0.1"));
    assert!(!applies("example.com", "/api", "POST", "10.1.2.3"));
    assert!(!applies("app.example.com", "/apis", "POST", "10.1.2.3"));
    assert!(!applies("app.example.com", "/api", "GET", "10.1.2.3"));
    assert!(!applies("app.example.com", "/api", "POST", "192.168.1.1"));
}

#[test]
fn subjects_pick_users_and_groups_and_anonymous_requests_must_log_in_first() {
    let r = rules(
        r#"
        [[access.rules]]
        paths = ["/admin"]
        subjects = ["group:admins", "user:carol"]
        policy = "one_factor"
        [[access.rules]]
        paths = ["/admin"]
        policy = "deny"
        [[access.rules]]
        paths = ["/family"]
        subjects = ["group:family"]
        policy = "deny"
        "#,
    );
    let admins = ["Admins".to_owned()];
    let family = ["family".to_owned()];
    let alice = user("alice", &admins);
    let bob = user("bob", NO_GROUPS);
    let carol = user("Carol", NO_GROUPS);
    let dave = user("dave", &family);
    let admin = get("/admin/users");
    assert_eq!(r.decide(&admin, Some(&alice)).outcome, Outcome::Allow);
    assert_eq!(r.decide(&admin, Some(&carol)).outcome, Outcome::Allow);
    // Bob is not named: rule 0 does not apply to him, rule 1 does.
    let bobs = r.decide(&admin, Some(&bob));
    assert_eq!((bobs.outcome, bobs.rule), (Outcome::Deny, Some(1)));
    // Nobody logged in: the search ends at rule 0 with "log in first",
    // not with rule 1's 403.
    let anonymous = r.decide(&admin, None);
    assert_eq!(
        anonymous,
        Decision {
            outcome: Outcome::NeedsLogin,
            rule: Some(0),
            why: Why::SubjectsNeedLogin
        }
    );
    // A deny rule with subjects: its users get 403, others the default.
    assert_eq!(
        r.decide(&get("/family"), Some(&dave)).outcome,
        Outcome::Deny
    );
    assert_eq!(
        r.decide(&get("/family"), Some(&bob)).outcome,
        Outcome::Allow
    );
    assert_eq!(r.decide(&get("/family"), None).outcome, Outcome::NeedsLogin);
}

#[test]
fn a_refused_path_is_denied_whatever_the_rules_say() {
    let r = rules("[access]\ndefault_policy = \"bypass\"\n");
    for path in [
        "/a%2Fb",
        "/a%5Cb",
        "/a\\b",
        "/a%00",
        "/%c0%ae%c0%ae/",
        "/%zz",
    ] {
        let alice = user("alice", NO_GROUPS);
        for subject in [None, Some(&alice)] {
            let d = r.decide(&get(path), subject);
            assert_eq!(d.outcome, Outcome::Deny, "{path:?}");
            assert!(matches!(d.why, Why::UnsafePath(_)), "{path:?}");
        }
    }
}

#[test]
fn paths_are_compared_normalised() {
    let r = rules(
        "[[access.rules]]\npaths = [\"/public\"]\npolicy = \"bypass\"\n\
         [[access.rules]]\npaths = [\"/admin\"]\npolicy = \"deny\"\n",
    );
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
        "/%61dmin/x",
        "/admin;x",
        "/public;x/../admin/",
        "/admin?/public",
    ] {
        assert_eq!(r.decide(&get(path), None).rule, Some(1), "{path:?}");
    }
    // Case-sensitive: the app decides what /ADMIN is.
    assert_eq!(r.decide(&get("/ADMIN"), None).rule, None);
}

#[test]
fn an_explanation_names_each_rule_passed_over_and_why() {
    let r = rules(
        r#"
        [[access.rules]]
        domains = ["other.example.com"]
        policy = "deny"
        [[access.rules]]
        paths = ["/admin"]
        subjects = ["group:admins"]
        policy = "one_factor"
        [[access.rules]]
        methods = ["POST"]
        policy = "deny"
        [[access.rules]]
        paths = ["/admin"]
        policy = "deny"
        "#,
    );
    let bob = user("bob", NO_GROUPS);
    let e = r.explain(&get("/x/../admin/"), Some(&bob));
    assert_eq!(e.host, "app.example.com");
    assert_eq!(e.path.as_deref(), Ok("/admin/"));
    assert_eq!(
        e.skipped,
        [
            Skipped {
                rule: 0,
                criterion: Criterion::Domains
            },
            Skipped {
                rule: 1,
                criterion: Criterion::Subjects
            },
            Skipped {
                rule: 2,
                criterion: Criterion::Methods
            },
        ]
    );
    assert_eq!(e.decision, r.decide(&get("/x/../admin/"), Some(&bob)));
    assert_eq!(e.decision.to_string(), "rule 3 applies; its policy is deny");
    let anonymous = r.explain(&get("/admin"), None).decision;
    assert!(anonymous
        .to_string()
        .contains("rule 1 applies and names subjects"));
    let default = r.explain(&get("/y"), None).decision;
    assert_eq!(
        default.to_string(),
        "no rule applies; default_policy is one_factor, and the request has no session"
    );
    let refused = r.explain(&get("/a%2fb"), None);
    assert_eq!(refused.path, Err(PathRefused::EncodedSlash));
    assert!(refused.decision.to_string().contains("encoded \"/\""));
}

#[test]
fn config_errors_name_the_rule_by_index_and_the_key() {
    let cases = [
        ("paths = [\"admin\"]", "access.rules[1].paths"),
        ("paths = []", "access.rules[1].paths"),
        ("domains = [\"*.*.example.com\"]", "access.rules[1].domains"),
        (
            "domains = [\"a.example.com:80\"]",
            "access.rules[1].domains",
        ),
        ("networks = [\"10.0.0.0/33\"]", "access.rules[1].networks"),
        ("networks = [\"ten\"]", "access.rules[1].networks"),
        ("methods = [\"GET POST\"]", "access.rules[1].methods"),
        ("subjects = [\"admins\"]", "access.rules[1].subjects"),
        ("pathz = [\"/x\"]", "access.rules[1]"),
    ];
    for (line, key) in cases {
        let text = format!(
            "[[access.rules]]\npolicy = \"deny\"\n[[access.rules]]\npolicy = \"deny\"\n{line}\n"
        );
        let err = AccessConfig::from_sources(Some(&text), Path::new("t.toml"), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{line:?} gave {err:?}");
        assert!(!err.contains('\n'), "{err:?}");
    }
    let err = |text: &str| {
        AccessConfig::from_sources(Some(text), Path::new("t.toml"), [])
            .unwrap_err()
            .to_string()
    };
    let e = err("[[access.rules]]\npaths = [\"/x\"]\npolicy = \"allow\"\n");
    assert!(
        e.contains("access.rules[0].policy") && e.contains("unknown policy"),
        "{e}"
    );
    let e = err("[[access.rules]]\npaths = [\"/x\"]\n");
    assert!(e.contains("access.rules[0]") && e.contains("policy"), "{e}");
    let e = err("[[access.rules]]\nsubjects = [\"user:a\"]\npolicy = \"bypass\"\n");
    assert!(
        e.contains("access.rules[0].subjects") && e.contains("bypass"),
        "{e}"
    );
    let e = err("[[access.rules]]\npolicy = \"three_factor\"\n");
    assert!(
        e.contains("access.rules[0].policy") && e.contains("unknown policy"),
        "{e}"
    );
    let e = err("[access]\ndefault_policy = \"allow\"\n");
    assert!(
        e.contains("access.default_policy") && e.contains("unknown policy"),
        "{e}"
    );
    let e = err("[access]\ndefualt_policy = \"deny\"\n");
    assert!(e.contains("defualt_policy"), "{e}");
}

#[test]
fn rules_come_from_the_environment_too() {
    let env = [
        (
            "LATCHKEY_ACCESS__RULES".to_owned(),
            r#"[{paths = ["/admin"], policy = "deny"}]"#.to_owned(),
        ),
        (
            "LATCHKEY_ACCESS__DEFAULT_POLICY".to_owned(),
            "bypass".to_owned(),
        ),
    ];
    let config = AccessConfig::from_sources(None, Path::new("t.toml"), env).unwrap();
    let r = Rules::compile(&config);
    assert_eq!(r.decide(&get("/admin"), None).outcome, Outcome::Deny);
    assert_eq!(r.default_policy(), Policy::Bypass);
    let bad = [(
        "LATCHKEY_ACCESS__RULES".to_owned(),
        r#"[{paths = ["/admin"], policy = "nope"}]"#.to_owned(),
    )];
    let err = AccessConfig::from_sources(None, Path::new("t.toml"), bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("access.rules[0].policy"), "{err}");
}

#[test]
fn a_reload_swaps_the_whole_list_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let deny_admin = "[[access.rules]]\npaths = [\"/admin\"]\npolicy = \"deny\"\n";
    std::fs::write(&file, deny_admin).unwrap();
    let shared = SharedRules::new(Rules::default());
    let before = shared.current();
    assert_eq!(shared.reload(&file, true).unwrap(), 1);
    // A reader that began before the reload still holds the list it had.
    assert_eq!(
        before.decide(&get("/admin"), None).outcome,
        Outcome::NeedsLogin
    );
    assert_eq!(
        shared.current().decide(&get("/admin"), None).outcome,
        Outcome::Deny
    );

    // Only [access] is read: another section's bad value waits for a restart.
    std::fs::write(
        &file,
        format!("[server]\nworkers = \"many\"\n{deny_admin}{deny_admin}"),
    )
    .unwrap();
    assert_eq!(shared.reload(&file, true).unwrap(), 2);

    std::fs::write(
        &file,
        "[[access.rules]]\npaths = [\"admin\"]\npolicy = \"bypass\"\n",
    )
    .unwrap();
    let err = shared.reload(&file, true).unwrap_err().to_string();
    assert!(err.contains("access.rules[0].paths"), "{err}");
    assert_eq!(shared.current().len(), 2);
    assert_eq!(
        shared.current().decide(&get("/admin"), None).outcome,
        Outcome::Deny
    );

    std::fs::remove_file(&file).unwrap();
    assert!(shared.reload(&file, true).is_err());
    assert_eq!(shared.current().len(), 2);
}
