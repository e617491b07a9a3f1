use super::*;
use std::time::Duration;

fn limiter() -> Limiter {
    Limiter::new(&LoginConfig {
        max_failures: 3,
        failure_window: Duration::from_secs(60),
        ban_duration: Duration::from_secs(300),
        ..LoginConfig::default()
    })
}

const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

fn fail(l: &Limiter, name: &str, address: Option<IpAddr>, now: i64) {
    l.reserve(name, address, now).unwrap().failed(now);
}

#[test]
fn the_nth_failure_in_the_window_bans_for_the_ban_duration() {
    let l = limiter();
    fail(&l, "alice", None, 100);
    fail(&l, "alice", None, 110);
    l.reserve("alice", None, 120).unwrap().failed(120);
    assert_eq!(l.reserve("alice", None, 120).err(), Some(300));
    assert_eq!(l.reserve("alice", None, 419).err(), Some(1));
    assert!(l.reserve("alice", None, 420).is_ok());
    assert!(l.reserve("bob", None, 130).is_ok());
}

#[test]
fn the_window_slides_rather_than_starting_over() {
    let l = limiter();
    fail(&l, "alice", None, 0);
    fail(&l, "alice", None, 59);
    fail(&l, "alice", None, 61);
    // Two failures within the last minute: one more is allowed.
    fail(&l, "alice", None, 62);
    assert_eq!(l.reserve("alice", None, 62).err(), Some(300));
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let l = limiter();
    fail(&l, "alice", None, 0);
    fail(&l, "alice", None, 30);
    fail(&l, "alice", None, 91);
    assert!(l.reserve("alice", None, 91).is_ok());
}

#[test]
fn reservations_in_flight_count_against_the_limit() {
    let l = limiter();
    let held: Vec<_> = (0..3)
        .map(|_| l.reserve("alice", None, 10).unwrap())
        .collect();
    // All three places are taken: a fourth attempt waits for one.
    assert_eq!(l.reserve("alice", None, 10).err(), Some(1));
    let mut held = held.into_iter();
    held.next().unwrap().succeeded(11);
    let fourth = l.reserve("alice", None, 11).unwrap();
    drop(held);
    drop(fourth);
    // Released uncounted: the full allowance is back.
    for _ in 0..2 {
        fail(&l, "alice", None, 12);
    }
    assert!(l.reserve("alice", None, 12).is_ok());
}

#[test]
fn a_refusal_on_one_key_gives_back_the_place_on_the_other() {
    let l = limiter();
    for name in ["a", "b", "c"] {
        fail(&l, name, ADDR, 0);
    }
    assert_eq!(l.reserve("d", ADDR, 1).err(), Some(299));
    // "d" holds no place after the refusal.
    assert!(l.by_username.lock().get("d").is_none());
    assert!(l.reserve("d", None, 1).is_ok());
}

#[test]
fn one_address_is_banned_across_usernames() {
    let l = limiter();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        fail(&l, name, ADDR, i as i64);
    }
    assert_eq!(l.reserve("d", ADDR, 3).err(), Some(299));
    assert!(l.reserve("d", None, 3).is_ok());
}

#[test]
fn an_ipv6_address_is_counted_by_its_64_prefix() {
    let l = limiter();
    for (i, ip) in ["2001:db8::1", "2001:db8::2:3", "2001:db8::ffff:1"]
        .iter()
        .enumerate()
    {
        fail(&l, &format!("u{i}"), Some(ip.parse().unwrap()), 0);
    }
    let same_64 = Some("2001:db8::abcd".parse().unwrap());
    assert_eq!(l.reserve("x", same_64, 1).err(), Some(299));
    let next_64 = Some("2001:db8:0:1::1".parse().unwrap());
    assert!(l.reserve("x", next_64, 1).is_ok());
    assert_eq!(
        address_key("::ffff:192.0.2.1".parse().unwrap()),
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn success_clears_counted_failures_of_the_username_but_not_of_the_address() {
    let l = limiter();
    fail(&l, "alice", ADDR, 0);
    fail(&l, "alice", ADDR, 1);
    l.reserve("alice", ADDR, 2).unwrap().succeeded(2);
    fail(&l, "alice", None, 3);
    assert!(l.reserve("alice", None, 3).is_ok());
    // The address still has its two failures: one more bans it.
    fail(&l, "bob", ADDR, 4);
    assert_eq!(l.reserve("carol", ADDR, 4).err(), Some(300));
}

#[test]
fn success_after_an_expired_ban_clears_the_count() {
    let l = Limiter::new(&LoginConfig {
        max_failures: 2,
        failure_window: Duration::from_secs(600),
        ban_duration: Duration::from_secs(60),
        ..LoginConfig::default()
    });
    fail(&l, "alice", None, 0);
    fail(&l, "alice", None, 1);
    assert!(l.reserve("alice", None, 30).is_err());
    // The ban is over but both failures are still in the window.
    assert_eq!(l.reserve("alice", None, 61).err(), Some(539));
    let l2 = Limiter::new(&LoginConfig {
        max_failures: 3,
        failure_window: Duration::from_secs(600),
        ban_duration: Duration::from_secs(60),
        ..LoginConfig::default()
    });
    for at in 0..3 {
        fail(&l2, "alice", None, at);
    }
    // Once the oldest failure has left the window, a login may succeed,
    // and it clears the rest: two new failures do not ban again.
    l2.reserve("alice", None, 600).unwrap().succeeded(600);
    fail(&l2, "alice", None, 601);
    fail(&l2, "alice", None, 602);
    assert!(l2.reserve("alice", None, 603).is_ok());
}

#[test]
fn settled_entries_with_nothing_to_count_are_dropped() {
    let l = limiter();
    l.reserve("alice", ADDR, 0).unwrap().succeeded(0);
    drop(l.reserve("bob", ADDR, 0).unwrap());
    assert!(l.by_username.lock().is_empty());
    assert!(l.by_address.lock().is_empty());
}

#[test]
fn a_full_table_drops_stale_entries_first() {
    let l = limiter();
    {
        let mut entries = l.by_username.lock();
        for i in 0..MAX_ENTRIES {
            entries.insert(
                format!("old{i}"),
                Entry {
                    failures: VecDeque::from([0]),
                    ..Entry::default()
                },
            );
        }
        entries.insert(
            "banned".into(),
            Entry {
                banned_until: 5000,
                ..Entry::default()
            },
        );
    }
    fail(&l, "new", None, 1000);
    let entries = l.by_username.lock();
    assert!(entries.len() <= 2, "{}", entries.len());
    assert!(entries.contains_key("banned") && entries.contains_key("new"));
}

#[test]
fn a_table_full_of_bans_leaves_new_keys_uncounted_and_intact() {
    let l = limiter();
    {
        let mut entries = l.by_username.lock();
        for i in 0..MAX_ENTRIES {
            entries.insert(
                format!("banned{i}"),
                Entry {
                    banned_until: 5000,
                    ..Entry::default()
                },
            );
        }
    }
    let attempt = l.reserve("new", None, 1000).unwrap();
    assert!(attempt.username.is_none());
    attempt.failed(1000);
    assert_eq!(l.by_username.lock().len(), MAX_ENTRIES);
}

#[test]
fn a_failure_says_which_bans_it_started_once_each() {
    let l = limiter();
    let v6: IpAddr = "2001:db8::1:2".parse().unwrap();
    let none = BansStarted::default();
    // Two names from one /64: the third failure bans that address, and
    // the name whose third failure it is.
    assert_eq!(l.reserve("alice", Some(v6), 10).unwrap().failed(10), none);
    assert_eq!(l.reserve("alice", Some(v6), 11).unwrap().failed(11), none);
    let third = l.reserve("bob", Some(v6), 12).unwrap().failed(12);
    assert_eq!(
        third,
        BansStarted {
            username: false,
            address: Some("2001:db8::".parse().unwrap()),
        }
    );
    let other: IpAddr = "192.0.2.7".parse().unwrap();
    let banned = l.reserve("alice", Some(other), 13).unwrap().failed(13);
    assert_eq!(
        banned,
        BansStarted {
            username: true,
            address: None,
        }
    );
    // A success is never a ban.
    l.reserve("carol", Some(other), 14).unwrap().succeeded(14);
}

#[test]
fn a_zero_ban_duration_starts_no_ban() {
    let l = Limiter::new(&LoginConfig {
        max_failures: 1,
        ban_duration: Duration::ZERO,
        ..LoginConfig::default()
    });
    assert_eq!(
        l.reserve("alice", None, 10).unwrap().failed(10),
        BansStarted::default()
    );
}

#[test]
fn active_bans_are_counted_per_table_until_they_end() {
    let l = limiter();
    for now in [1, 2, 3] {
        fail(&l, "alice", ADDR, now);
    }
    fail(&l, "bob", None, 4);
    assert_eq!(l.active_bans(4), (1, 1));
    assert_eq!(l.active_bans(3 + 300), (0, 0));
}
