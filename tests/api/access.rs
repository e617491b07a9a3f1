//! Tests: access rules through the real binary: refused configs, `access
//! check`, and `SIGHUP` reloading the rules of a running server.

use crate::helpers::{assert_bypass, http_client, Api, Sandbox, Server};

const RULES: &str = r#"
[[access.rules]]
paths = ["/public"]
policy = "bypass"

[[access.rules]]
domains = ["*.example.com"]
paths = ["/admin"]
methods = ["POST"]
networks = ["10.0.0.0/8"]
policy = "deny"
"#;

#[test]
fn serve_refuses_bad_rules_naming_the_rule_and_the_key() {
    let sandbox = Sandbox::new();
    let cases = [
        (
            "[[access.rules]]\npolicy = \"deny\"\n[[access.rules]]\npaths = [\"admin\"]\npolicy = \"deny\"\n",
            "access.rules[1].paths",
        ),
        (
            "[[access.rules]]\nsubjects = [\"group:admins\"]\npolicy = \"bypass\"\n",
            "access.rules[0].subjects",
        ),
        (
            "[[access.rules]]\ndomains = [\"a.*.example.com\"]\npolicy = \"deny\"\n",
            "access.rules[0].domains",
        ),
        (
            "[[access.rules]]\nnetworks = [\"10.0.0.0/99\"]\npolicy = \"deny\"\n",
            "access.rules[0].networks",
        ),
        ("[[access.rules]]\npolicy = \"maybe\"\n", "access.rules[0].policy"),
        ("[[access.rules]]\nplicy = \"deny\"\n", "plicy"),
    ];
    for (text, key) in cases {
        std::fs::write(sandbox.path("bad.toml"), text).unwrap();
        let run = sandbox.latchkey(&["--config", "bad.toml", "serve"], None);
        let message = run.assert_error();
        assert!(message.contains(key), "{text:?} gave {message:?}");
    }
}

#[test]
fn access_check_judges_two_factor_rules_by_the_sessions_factors() {
    let sandbox = Sandbox::new();
    sandbox.add_user("alice", "pw");
    std::fs::write(
        sandbox.path("2fa.toml"),
        "[[access.rules]]\npaths = [\"/admin\"]\npolicy = \"two_factor\"\n",
    )
    .unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            "2fa.toml",
            "access",
            "check",
            "https://a.example.com/admin",
        ];
        args.extend_from_slice(extra);
        let run = sandbox.latchkey(&args, None);
        run.assert_ok();
        run.stdout
    };
    let password_only = check(&["--user", "alice"]);
    assert!(
        password_only.contains("with a password-only session")
            && password_only.contains("decision  log in first")
            && password_only.contains("no session whose login proved a second factor"),
        "{password_only}"
    );
    let with_otp = check(&["--user", "alice", "--otp"]);
    assert!(
        with_otp.contains("proved a second factor") && with_otp.contains("decision  allow"),
        "{with_otp}"
    );
    let message = sandbox
        .latchkey(
            &[
                "--config",
                "2fa.toml",
                "access",
                "check",
                "https://a.example.com/",
                "--otp",
            ],
            None,
        )
        .assert_error()
        .to_owned();
    assert!(message.contains("--user"), "{message}");
}

#[test]
fn access_check_prints_the_decision_and_the_rules_passed_over() {
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.path("config.toml"), RULES).unwrap();
    let run = sandbox.latchkey(
        &[
            "access",
            "check",
            "https://App.Example.com:8443/public/%2e%2e/admin/users?x=1",
            "--method",
            "POST",
            "--ip",
            "10.1.2.3",
        ],
        None,
    );
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "request   POST app.example.com /admin/users from 10.1.2.3, without a session\n\
         rule 0    does not apply: its paths do not match\n\
         decision  deny (403 forbidden)\n\
         because   rule 1 applies; its policy is deny\n"
    );

    let run = sandbox.latchkey(&["access", "check", "http://app.example.com/admin"], None);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "request   GET app.example.com /admin from an unknown address (0.0.0.0; give --ip), without a session",
            "rule 0    does not apply: its paths do not match",
            "rule 1    does not apply: its methods do not match",
            "decision  log in first (401, or 302 to the login page)",
            "because   no rule applies; default_policy is one_factor, and the request has no session",
        ]
    );

    let run = sandbox.latchkey(&["access", "check", "http://h.example/public;x"], None);
    assert!(run.stdout.contains("decision  bypass"), "{}", run.stdout);

    let run = sandbox.latchkey(
        &["access", "check", "http://h.example/public%2F..%2Fadmin"],
        None,
    );
    assert!(
        run.stdout.contains("decision  deny (403 forbidden)")
            && run.stdout.contains("refused before any rule")
            && run.stdout.contains("%2F"),
        "{}",
        run.stdout
    );
}

#[test]
fn access_check_judges_a_user_with_their_groups_from_the_database() {
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.path("config.toml"),
        "[[access.rules]]\npaths = [\"/admin\"]\nsubjects = [\"group:admins\"]\npolicy = \"one_factor\"\n\
         [[access.rules]]\npaths = [\"/admin\"]\npolicy = \"deny\"\n",
    )
    .unwrap();
    for name in ["alice", "bob", "carol"] {
        sandbox.add_user(name, "pw-of-the-test");
    }
    for args in [
        &["group", "add", "Admins"][..],
        &["group", "add", "dev"],
        &["group", "add-member", "admins", "alice"],
        &["group", "add-member", "dev", "alice"],
        &["group", "add-member", "admins", "carol"],
        &["user", "disable", "carol"],
    ] {
        sandbox.latchkey(args, None).assert_ok();
    }
    let check = |user: &str| {
        let url = "https://app.example.com/admin/users";
        let run = sandbox.latchkey(
            &["access", "check", url, "--ip", "10.0.0.1", "--user", user],
            None,
        );
        run.assert_ok();
        run.stdout
    };
    assert_eq!(
        check("alice"),
        "request   GET app.example.com /admin/users from 10.0.0.1, as user \"alice\", in groups Admins,dev, with a password-only session\n\
         decision  allow (200 with the user's Remote-* headers)\n\
         because   rule 0 applies; its policy is one_factor\n"
    );
    assert_eq!(
        check("BOB"),
        "request   GET app.example.com /admin/users from 10.0.0.1, as user \"bob\", in no group, with a password-only session\n\
         rule 0    does not apply: its subjects do not match\n\
         decision  deny (403 forbidden)\n\
         because   rule 1 applies; its policy is deny\n"
    );
    // The groups are read each time: bob in admins is let in.
    sandbox
        .latchkey(&["group", "add-member", "admins", "bob"], None)
        .assert_ok();
    assert!(check("bob").contains("decision  allow"), "{}", check("bob"));
    // A disabled user has no session for /verify to judge.
    let carol = check("carol");
    assert!(
        carol.contains("for user \"carol\", who is disabled")
            && carol.contains("decision  log in first"),
        "{carol}"
    );
    let run = sandbox.latchkey(
        &[
            "access",
            "check",
            "https://app.example.com/",
            "--user",
            "dave",
        ],
        None,
    );
    assert_eq!(run.assert_error(), "error: no user \"dave\"");
}

#[test]
fn access_check_refuses_what_is_not_a_url_or_an_address() {
    let sandbox = Sandbox::new();
    let run = sandbox.latchkey(&["access", "check", "app.example.com/admin"], None);
    assert!(run
        .assert_error()
        .contains("not an http:// or https:// URL"));
    let run = sandbox.latchkey(
        &["access", "check", "http://h/", "--ip", "10.0.0.300"],
        None,
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("'--ip <ADDR>'"), "{run:#?}");
    sandbox
        .latchkey(&["access", "check"], None)
        .assert_usage_error();
}

/// Sends `SIGHUP` to the server, as `kill -HUP` would.
#[cfg(target_os = "linux")]
fn hang_up(server: &Server) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(server.pid() as i32).expect("a real process id");
    kill_process(pid, Signal::HUP).expect("send SIGHUP");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn sighup_reloads_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let sandbox = Sandbox::new();
    let config = sandbox.path("latchkey.toml");
    std::fs::write(&config, RULES).unwrap();
    let mut server = Server::start(&sandbox, &["--config", "latchkey.toml"]);
    server.wait_for_stderr("access rules loaded (2 rules, default_policy one_factor)");

    let third = "\n[[access.rules]]\npaths = [\"/x\"]\npolicy = \"deny\"\n";
    std::fs::write(&config, format!("{RULES}{third}")).unwrap();
    hang_up(&server);
    server.wait_for_stderr("access rules reloaded (3 rules)");

    // Another section's bad value is not read: only the rules reload.
    let broken_rule = "\n[[access.rules]]\npaths = [\"/ok\"]\npolicy = \"deny\"\n\
                       [[access.rules]]\npaths = [\"no-slash\"]\npolicy = \"deny\"\n";
    std::fs::write(
        &config,
        format!("[session]\nidle_timeout = \"1h\"\n{RULES}{broken_rule}"),
    )
    .unwrap();
    hang_up(&server);
    let error = server.wait_for_stderr("access rules not reloaded");
    assert!(
        error.contains("access.rules[3].paths")
            && error.contains("the 3 rules loaded before stay in force"),
        "{error}"
    );

    // The server lives on, and still reloads a good file.
    let health = http_client()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    std::fs::write(&config, "[access]\ndefault_policy = \"deny\"\n").unwrap();
    hang_up(&server);
    server.wait_for_stderr("access rules reloaded (0 rules)");
}

/// A config whose rule 0 decides `/x` (`deny` or `bypass`), followed by
/// `fillers` rules that never apply: `fillers` makes each reload's log line
/// unique ("reloaded (N rules)").
#[cfg(target_os = "linux")]
fn reload_config(x_policy: &str, fillers: usize) -> String {
    let mut text = format!("[[access.rules]]\npaths = [\"/x\"]\npolicy = \"{x_policy}\"\n");
    for i in 0..fillers {
        text.push_str(&format!(
            "[[access.rules]]\npaths = [\"/filler-{i}\"]\npolicy = \"deny\"\n"
        ));
    }
    text
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn requests_during_reloads_see_the_old_decision_or_the_new_never_another() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let sandbox = Sandbox::new();
    let config = sandbox.path("latchkey.toml");
    std::fs::write(&config, reload_config("deny", 0)).unwrap();
    let mut server = Server::start(&sandbox, &["--config", "latchkey.toml"]);
    server.wait_for_stderr("access rules loaded (1 rules");

    // /verify for /x, without pause, from a thread of its own (this one
    // blocks reading the server's log): 403 under `deny`, the bypass answer
    // under `bypass`. A request judged by no list, half a list or the
    // default would get the 401 of default_policy one_factor.
    let stop = Arc::new(AtomicBool::new(false));
    let api = server.api();
    let looping = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                // Four at a time, so that some are in flight at each swap.
                let askers: Vec<_> = (0..4)
                    .map(|_| tokio::spawn(ask_until(api.clone(), Arc::clone(&stop))))
                    .collect();
                let mut seen = (0, 0);
                for asker in askers {
                    let (denied, bypassed) = asker.await.expect("no request failed");
                    seen = (seen.0 + denied, seen.1 + bypassed);
                }
                seen
            })
        })
    };

    let api = server.api();
    for round in 1..=20 {
        let policy = if round % 2 == 0 { "deny" } else { "bypass" };
        if round == 7 {
            // A bad file in the middle: the list of round 6 stays.
            std::fs::write(
                &config,
                "[[access.rules]]\npaths = [\"x\"]\npolicy = \"deny\"\n",
            )
            .unwrap();
            hang_up(&server);
            server.wait_for_stderr("access rules not reloaded");
            let response = api.verify_proxied(None, &[("X-Forwarded-Uri", "/x")]).await;
            assert_eq!(response.status(), 403, "round 6's deny stays");
        }
        std::fs::write(&config, reload_config(policy, round)).unwrap();
        hang_up(&server);
        server.wait_for_stderr(&format!("access rules reloaded ({} rules)", round + 1));
        // From the log line on, every request sees the new list.
        let response = api.verify_proxied(None, &[("X-Forwarded-Uri", "/x")]).await;
        match policy {
            "deny" => assert_eq!(response.status(), 403, "round {round}"),
            _ => assert_bypass(&response),
        }
        // Let the askers run on this list for a moment before the next swap.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (denied, bypassed) = looping.join().expect("no request failed");
    assert!(
        denied > 0 && bypassed > 0,
        "{denied} denied, {bypassed} bypassed"
    );
}

/// Asks `/verify` about `/x` until `stop`; counts the 403s and the bypass
/// answers, and panics on any other answer.
#[cfg(target_os = "linux")]
async fn ask_until(api: Api, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (u32, u32) {
    let mut seen = (0, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let response = api.verify_proxied(None, &[("X-Forwarded-Uri", "/x")]).await;
        match response.status().as_u16() {
            403 => seen.0 += 1,
            200 => {
                assert_bypass(&response);
                seen.1 += 1;
            }
            other => panic!("a request during a reload got {other}: {response:?}"),
        }
    }
    seen
}
