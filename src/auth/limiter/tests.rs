//! The rules, checked on both backends: each `both!` test runs once on a
//! limiter in memory and once on one keeping its entries in a database.

use super::*;
use std::time::Duration;

/// A database for the shared backend; kept alive by the test.
struct SharedDb {
    _dir: tempfile::TempDir,
    store: Store,
}

fn shared_db() -> SharedDb {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("limits.db"), 2).unwrap();
    SharedDb { _dir: dir, store }
}

fn config(max_failures: u32, window: u64, ban: u64) -> LoginConfig {
    LoginConfig {
        max_failures,
        failure_window: Duration::from_secs(window),
        ban_duration: Duration::from_secs(ban),
        ..LoginConfig::default()
    }
}

const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

async fn fail(l: &Limiter, name: &str, address: Option<IpAddr>, now: i64) {
    l.reserve(name, address, now)
        .await
        .unwrap()
        .failed(now)
        .await;
}

/// The wait a refusal asks for, or `None` when the attempt was admitted
/// (and then released).
async fn wait(l: &Limiter, name: &str, address: Option<IpAddr>, now: i64) -> Option<u64> {
    match l.reserve(name, address, now).await {
        Ok(mut attempt) => {
            attempt.settle(Outcome::Abandoned, now).await;
            None
        }
        Err(AuthError::RateLimited { retry_after }) => Some(retry_after),
        Err(e) => panic!("{e}"),
    }
}

/// Runs `$body` with `$l` bound to a limiter of `$config`, on each backend.
macro_rules! both {
    ($name:ident, $config:expr, |$l:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn in_memory() {
                let $l = Limiter::in_memory(&$config);
                $body
            }

            #[tokio::test]
            async fn shared() {
                let db = shared_db();
                let $l = Limiter::shared(&$config, db.store.clone());
                $body
            }
        }
    };
}

both!(
    the_nth_failure_in_the_window_bans_for_the_ban_duration,
    config(3, 60, 300),
    |l| {
        fail(&l, "alice", None, 100).await;
        fail(&l, "alice", None, 110).await;
        fail(&l, "alice", None, 120).await;
        assert_eq!(wait(&l, "alice", None, 120).await, Some(300));
        assert_eq!(wait(&l, "alice", None, 419).await, Some(1));
        assert_eq!(wait(&l, "alice", None, 420).await, None);
        assert_eq!(wait(&l, "bob", None, 130).await, None);
    }
);

both!(
    the_window_slides_rather_than_starting_over,
    config(3, 60, 300),
    |l| {
        fail(&l, "alice", None, 0).await;
        fail(&l, "alice", None, 59).await;
        fail(&l, "alice", None, 61).await;
        // Two failures within the last minute: one more is allowed.
        fail(&l, "alice", None, 62).await;
        assert_eq!(wait(&l, "alice", None, 62).await, Some(300));
    }
);

both!(
    failures_outside_the_window_do_not_add_up,
    config(3, 60, 300),
    |l| {
        fail(&l, "alice", None, 0).await;
        fail(&l, "alice", None, 30).await;
        fail(&l, "alice", None, 91).await;
        assert_eq!(wait(&l, "alice", None, 91).await, None);
    }
);

both!(
    reservations_in_flight_count_against_the_limit,
    config(3, 60, 300),
    |l| {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(l.reserve("alice", None, 10).await.unwrap());
        }
        // All three places are taken: a fourth attempt waits for one.
        assert_eq!(wait(&l, "alice", None, 10).await, Some(1));
        held.pop().unwrap().succeeded(11).await;
        let mut fourth = l.reserve("alice", None, 11).await.unwrap();
        for mut attempt in held {
            attempt.settle(Outcome::Abandoned, 11).await;
        }
        fourth.settle(Outcome::Abandoned, 11).await;
        // Released uncounted: the full allowance is back.
        for _ in 0..2 {
            fail(&l, "alice", None, 12).await;
        }
        assert_eq!(wait(&l, "alice", None, 12).await, None);
    }
);

both!(
    a_refusal_on_one_key_gives_back_the_place_on_the_other,
    config(3, 60, 300),
    |l| {
        for name in ["a", "b", "c"] {
            fail(&l, name, ADDR, 0).await;
        }
        assert_eq!(wait(&l, "d", ADDR, 1).await, Some(299));
        // "d" holds no place after the refusal: all three are free.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(l.reserve("d", None, 1).await.unwrap());
        }
        for mut attempt in held {
            attempt.settle(Outcome::Abandoned, 1).await;
        }
    }
);

both!(
    one_address_is_banned_across_usernames,
    config(3, 60, 300),
    |l| {
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            fail(&l, name, ADDR, i as i64).await;
        }
        assert_eq!(wait(&l, "d", ADDR, 3).await, Some(299));
        assert_eq!(wait(&l, "d", None, 3).await, None);
    }
);

both!(
    an_ipv6_address_is_counted_by_its_64_prefix,
    config(3, 60, 300),
    |l| {
        for (i, ip) in ["2001:db8::1", "2001:db8::2:3", "2001:db8::ffff:1"]
            .iter()
            .enumerate()
        {
            fail(&l, &format!("u{i}"), Some(ip.parse().unwrap()), 0).await;
        }
        let same_64 = Some("2001:db8::abcd".parse().unwrap());
        assert_eq!(wait(&l, "x", same_64, 1).await, Some(299));
        let next_64 = Some("2001:db8:0:1::1".parse().unwrap());
        assert_eq!(wait(&l, "x", next_64, 1).await, None);
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
);

both!(
    success_clears_counted_failures_of_the_username_but_not_of_the_address,
    config(3, 60, 300),
    |l| {
        fail(&l, "alice", ADDR, 0).await;
        fail(&l, "alice", ADDR, 1).await;
        l.reserve("alice", ADDR, 2)
            .await
            .unwrap()
            .succeeded(2)
            .await;
        fail(&l, "alice", None, 3).await;
        assert_eq!(wait(&l, "alice", None, 3).await, None);
        // The address still has its two failures: one more bans it.
        fail(&l, "bob", ADDR, 4).await;
        assert_eq!(wait(&l, "carol", ADDR, 4).await, Some(300));
    }
);

both!(
    a_ban_over_leaves_the_failures_still_in_the_window,
    config(2, 600, 60),
    |l| {
        fail(&l, "alice", None, 0).await;
        fail(&l, "alice", None, 1).await;
        assert!(wait(&l, "alice", None, 30).await.is_some());
        // The ban is over but both failures are still in the window.
        assert_eq!(wait(&l, "alice", None, 61).await, Some(539));
    }
);

both!(
    success_after_an_expired_ban_clears_the_count,
    config(3, 600, 60),
    |l| {
        for at in 0..3 {
            fail(&l, "alice", None, at).await;
        }
        // Once the oldest failure has left the window, a login may succeed,
        // and it clears the rest: two new failures do not ban again.
        l.reserve("alice", None, 600)
            .await
            .unwrap()
            .succeeded(600)
            .await;
        fail(&l, "alice", None, 601).await;
        fail(&l, "alice", None, 602).await;
        assert_eq!(wait(&l, "alice", None, 603).await, None);
    }
);

both!(
    a_failure_says_which_bans_it_started_once_each,
    config(3, 60, 300),
    |l| {
        let v6: IpAddr = "2001:db8::1:2".parse().unwrap();
        let none = BansStarted::default();
        let failed = |name: &'static str, ip: IpAddr, now: i64| {
            let l = &l;
            async move {
                l.reserve(name, Some(ip), now)
                    .await
                    .unwrap()
                    .failed(now)
                    .await
            }
        };
        // Two names from one /64: the third failure bans that address, and
        // the name whose third failure it is.
        assert_eq!(failed("alice", v6, 10).await, none);
        assert_eq!(failed("alice", v6, 11).await, none);
        let third = failed("bob", v6, 12).await;
        assert_eq!(
            third,
            BansStarted {
                username: false,
                address: Some("2001:db8::".parse().unwrap()),
            }
        );
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let banned = failed("alice", other, 13).await;
        assert_eq!(
            banned,
            BansStarted {
                username: true,
                address: None,
            }
        );
    }
);

both!(a_zero_ban_duration_starts_no_ban, config(1, 60, 0), |l| {
    let attempt = l.reserve("alice", None, 10).await.unwrap();
    assert_eq!(attempt.failed(10).await, BansStarted::default());
});

both!(
    active_bans_are_counted_per_table_until_they_end,
    config(3, 60, 300),
    |l| {
        for now in [1, 2, 3] {
            fail(&l, "alice", ADDR, now).await;
        }
        fail(&l, "bob", None, 4).await;
        assert_eq!(l.active_bans(4).await.unwrap(), (1, 1));
        assert_eq!(l.active_bans(3 + 300).await.unwrap(), (0, 0));
    }
);

both!(
    an_attempt_dropped_unsettled_is_released_uncounted,
    config(1, 60, 300),
    |l| {
        drop(l.reserve("alice", ADDR, 10).await.unwrap());
        // The shared backend releases on a task of its own: let it run.
        for _ in 0..100 {
            if wait(&l, "alice", ADDR, 10).await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped attempt still holds its place");
    }
);

fn memory(l: &Limiter) -> &memory::Tables {
    match &l.backend {
        Backend::Memory(tables) => tables,
        Backend::Shared(_) => unreachable!("a memory limiter"),
    }
}

#[tokio::test]
async fn settled_entries_with_nothing_to_count_are_dropped() {
    let l = Limiter::in_memory(&config(3, 60, 300));
    l.reserve("alice", ADDR, 0)
        .await
        .unwrap()
        .succeeded(0)
        .await;
    drop(l.reserve("bob", ADDR, 0).await.unwrap());
    assert!(memory(&l).by_username.lock().is_empty());
    assert!(memory(&l).by_address.lock().is_empty());
}

#[tokio::test]
async fn shared_rows_with_nothing_to_count_are_deleted() {
    let db = shared_db();
    let l = Limiter::shared(&config(3, 60, 300), db.store.clone());
    l.reserve("alice", ADDR, 0)
        .await
        .unwrap()
        .succeeded(0)
        .await;
    fail(&l, "bob", None, 0).await;
    let conn = db.store.connection().unwrap();
    let rows: Vec<String> =
        crate::store::db::DbExt::rows(&*conn, "SELECT subject FROM login_limits", &[], |r| {
            r.text(0)
        })
        .unwrap();
    assert_eq!(rows, ["bob"]);
    // Past its window, the purge takes it.
    assert_eq!(crate::store::limits::purge_idle(&*conn, 59).unwrap(), 0);
    assert_eq!(crate::store::limits::purge_idle(&*conn, 60).unwrap(), 1);
}

#[tokio::test]
async fn a_reservation_an_instance_left_behind_lapses_after_a_minute() {
    let db = shared_db();
    let l = Limiter::shared(&config(1, 600, 300), db.store.clone());
    // Held and never settled, as by an instance that died mid-login.
    std::mem::forget(l.reserve("alice", None, 100).await.unwrap());
    assert_eq!(wait(&l, "alice", None, 159).await, Some(1));
    assert_eq!(wait(&l, "alice", None, 160).await, None);
}

#[tokio::test]
async fn a_full_table_drops_stale_entries_first() {
    let l = Limiter::in_memory(&config(3, 60, 300));
    {
        let mut entries = memory(&l).by_username.lock();
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
    fail(&l, "new", None, 1000).await;
    let entries = memory(&l).by_username.lock();
    assert!(entries.len() <= 2, "{}", entries.len());
    assert!(entries.contains_key("banned") && entries.contains_key("new"));
}

#[tokio::test]
async fn a_table_full_of_bans_leaves_new_keys_uncounted_and_intact() {
    let l = Limiter::in_memory(&config(3, 60, 300));
    {
        let mut entries = memory(&l).by_username.lock();
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
    let attempt = l.reserve("new", None, 1000).await.unwrap();
    assert!(attempt.username.is_none());
    attempt.failed(1000).await;
    assert_eq!(memory(&l).by_username.lock().len(), MAX_ENTRIES);
}
