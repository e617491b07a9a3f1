//! A fuzzer holding the path normaliser to a reference resolver, and the
//! rules to the property that matters: nothing an upstream routes to
//! `/admin` matches a rule that does not cover `/admin`.
//!
//! Replay a failure with `LATCHKEY_FUZZ_SEED=<seed> cargo test --lib fuzz`.

use super::test_rng::Rng;
use super::tests::{get, rules};
use super::{path, Outcome};

/// Segment names the generator composes; "admin" and its look-alikes matter.
const NAMES: &[&str] = &[
    "admin",
    "public",
    "administrator",
    "adm",
    "Admin",
    "a",
    "x y",
    "café",
    "b.c",
    "~u",
    ".",
    "..",
    "",
    "...",
    ".a",
];

/// Pieces that make any path refused, and one name of each refusal.
const HOSTILE: &[&str] = &[
    "%2F", "%2f", "%5C", "%5c", "\\", "%00", "%c0%ae", "%C0%AE", "%ff", "%e9", "%zz", "%4",
    "%252e", "%252F",
];

/// One random rendering of `name` as a client could send it: each byte raw
/// or percent-encoded, in either hex case.
fn encode(rng: &mut Rng, name: &str, out: &mut String) {
    for &byte in name.as_bytes() {
        let must = !byte.is_ascii() || byte == b' ';
        if must || rng.chance(30) {
            let hex = format!("%{byte:02X}");
            out.push_str(&if rng.chance(50) {
                hex.to_lowercase()
            } else {
                hex
            });
        } else {
            out.push(byte as char);
        }
    }
}

/// A random path and what a reference resolver says it means: `None`
/// when it must be refused.
fn generate(rng: &mut Rng) -> (String, Option<String>) {
    let mut raw = String::new();
    let mut names = Vec::new();
    let mut hostile = false;
    let mut ambiguous = false;
    let mut seen_empty = false;
    for _ in 0..=rng.below(7) {
        let name = rng.pick(NAMES);
        raw.push('/');
        encode(rng, name, &mut raw);
        if rng.chance(3) {
            raw.push_str(rng.pick(HOSTILE));
            hostile = true;
        }
        if rng.chance(10) {
            raw.push_str(if rng.chance(50) { ";x" } else { ";a=b" });
            ambiguous |= matches!(name, "." | "..");
        }
        ambiguous |= name == ".." && seen_empty;
        seen_empty |= name.is_empty();
        names.push(name);
    }
    if rng.chance(20) {
        raw.push_str("?q=/../admin%2F");
    }
    if hostile || ambiguous {
        return (raw, None);
    }
    // The reference: the decoded path, slashes merged, then RFC 3986's
    // remove_dot_segments (5.2.4) on the string, as a different algorithm.
    let mut merged = String::from("/");
    merged.push_str(&names.join("/"));
    while merged.contains("//") {
        merged = merged.replace("//", "/");
    }
    (raw, Some(remove_dot_segments(&merged)))
}

fn remove_dot_segments(input: &str) -> String {
    let mut input = input.to_owned();
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or(input.strip_prefix("./")) {
            input = rest.to_owned();
        } else if input.starts_with("/./") || input == "/." {
            input = format!("/{}", &input[if input == "/." { 2 } else { 3 }..]);
        } else if input.starts_with("/../") || input == "/.." {
            input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let end = input[1..].find('/').map_or(input.len(), |i| i + 1);
            output.push_str(&input[..end]);
            input = input[end..].to_owned();
        }
    }
    if output.is_empty() {
        output.push('/');
    }
    output
}

#[test]
fn the_reference_resolver_is_rfc_3986() {
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("/mid/content=5/../6"), "/mid/6");
    assert_eq!(remove_dot_segments("/a/.."), "/");
    assert_eq!(remove_dot_segments("/a/b/."), "/a/b/");
}

#[test]
fn fuzz_nothing_routed_to_admin_matches_a_rule_that_does_not_cover_admin() {
    let r = rules(
        r#"
        [[access.rules]]
        paths = ["/public"]
        policy = "bypass"
        [[access.rules]]
        paths = ["/admin"]
        policy = "deny"
        [[access.rules]]
        paths = ["/administrator"]
        policy = "bypass"
        "#,
    );
    let seed = std::env::var("LATCHKEY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_ac55);
    let mut rng = Rng::new(seed);
    let mut judged = [0usize; 2];
    for case in 0..30_000 {
        let (raw, reference) = generate(&mut rng);
        let normal = path::normalise(&raw).map(|p| p.into_owned()).ok();
        assert_eq!(
            normal, reference,
            "case {case} (seed {seed:#x}): normalise({raw:?})"
        );
        let decision = r.decide(&get(&raw), None);
        let under = |prefix: &str| {
            reference
                .as_deref()
                .is_some_and(|p| p == prefix || p.starts_with(&format!("{prefix}/")))
        };
        if reference.is_none() || under("/admin") {
            assert_eq!(decision.outcome, Outcome::Deny, "case {case}: {raw:?}");
            judged[0] += 1;
        } else {
            let expected = if under("/public") || under("/administrator") {
                Outcome::Bypass
            } else {
                Outcome::NeedsLogin
            };
            assert_eq!(decision.outcome, expected, "case {case}: {raw:?}");
            judged[1] += 1;
        }
    }
    // The generator must reach both sides, or the property says nothing.
    assert!(judged.iter().all(|&n| n > 3_000), "{judged:?}");
}
