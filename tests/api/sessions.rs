//! Session semantics (idle and absolute expiry, sliding, users that vanish
//! or are disabled) and the token owner's endpoints `/me`, `GET /sessions`
//! and `DELETE /sessions/{id}`. Expiry is tested by moving the stored times,
//! never by waiting.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const HOUR: i64 = 3600;

/// Asserts every endpoint treats `token` as invalid.
async fn assert_invalid_everywhere(app: &TestApp, token: &str) {
    for path in ["/verify", "/me", "/sessions"] {
        let response = app.get_bearer(path, token).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = app.get_cookie(path, token).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path} by cookie"
        );
    }
    let introspect: Value = app.introspect(token).await.json().await.unwrap();
    assert_eq!(introspect, json!({ "active": false }));
}

async fn me(app: &TestApp, token: &str) -> Value {
    let response = app.get_bearer("/me", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn login_with_agent(app: &TestApp, user: &str, agent: &str) -> String {
    let response = app
        .client
        .post(app.url("/login"))
        .header("User-Agent", agent)
        .json(&json!({ "username": user, "password": "password-of-test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn list_sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_bearer("/sessions", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

async fn delete_session(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/sessions/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_past_its_idle_expiry_is_invalid_everywhere() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    app.set_session_expiry(&token, now() - 1, now() + 7 * 24 * HOUR);
    assert_invalid_everywhere(&app, &token).await;
}

#[tokio::test]
async fn a_session_past_its_absolute_expiry_is_invalid_everywhere() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    app.set_session_expiry(&token, now() + HOUR, now() - 1);
    assert_invalid_everywhere(&app, &token).await;
}

#[tokio::test]
async fn a_session_is_invalid_from_the_second_it_expires() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // valid while now < expires_at: at expires_at it is over.
    app.set_session_expiry(&token, now(), now() + HOUR);
    assert_invalid_everywhere(&app, &token).await;
    let (_, token) = app.user_with_token("bob").await;
    app.set_session_expiry(&token, now() + HOUR, now());
    assert_invalid_everywhere(&app, &token).await;
}

#[tokio::test]
async fn using_an_expired_session_does_not_bring_it_back() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let (expired, max) = (now() - 5, now() + HOUR);
    app.set_session_expiry(&token, expired, max);
    app.get_bearer("/me", &token).await;
    app.verify_bearer(&token).await;
    let stored = app.stored_expiry(&token);
    assert!(
        stored.is_none() || stored == Some((expired, max)),
        "{stored:?}"
    );
}

#[tokio::test]
async fn a_session_used_within_refresh_within_slides_to_the_idle_timeout() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let max = now() + 7 * 24 * HOUR;
    app.set_session_expiry(&token, now() + 60, max);
    let before = now();
    let body = me(&app, &token).await;
    let after = now();
    let (expires_at, stored_max) = app.stored_expiry(&token).unwrap();
    assert!(
        (before + HOUR..=after + HOUR).contains(&expires_at),
        "{expires_at}"
    );
    assert_eq!(stored_max, max, "max_expires_at never moves");
    // /me reports the expiry after sliding.
    assert_eq!(body["session"]["expires_at"], expires_at);
    assert_eq!(body["session"]["max_expires_at"], max);
}

#[tokio::test]
async fn sliding_happens_on_verify_and_introspect_too() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let max = now() + 7 * 24 * HOUR;
    app.set_session_expiry(&token, now() + 60, max);
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
    let (slid, _) = app.stored_expiry(&token).unwrap();
    assert!(slid >= now() + HOUR - 2, "verify did not slide: {slid}");

    app.set_session_expiry(&token, now() + 60, max);
    let introspect: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(introspect["active"], true);
    let (slid, _) = app.stored_expiry(&token).unwrap();
    assert!(slid >= now() + HOUR - 2, "introspect did not slide: {slid}");
    assert_eq!(introspect["exp"], slid);
}

#[tokio::test]
async fn sliding_never_passes_max_expires_at() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let max = now() + 600;
    app.set_session_expiry(&token, now() + 60, max);
    let body = me(&app, &token).await;
    assert_eq!(app.stored_expiry(&token), Some((max, max)));
    assert_eq!(body["session"]["expires_at"], max);
    assert_eq!(body["session"]["max_expires_at"], max);
}

#[tokio::test]
async fn a_session_with_more_than_refresh_within_left_does_not_slide() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // Fresh from login: an hour left, refresh_within is 30 minutes.
    let fresh = app.stored_expiry(&token).unwrap();
    me(&app, &token).await;
    app.verify_bearer(&token).await;
    assert_eq!(app.stored_expiry(&token), Some(fresh));
    // 40 minutes left: still more than 30.
    let (expires_at, max) = (now() + 40 * 60, now() + 7 * 24 * HOUR);
    app.set_session_expiry(&token, expires_at, max);
    let body = me(&app, &token).await;
    assert_eq!(app.stored_expiry(&token), Some((expires_at, max)));
    assert_eq!(body["session"]["expires_at"], expires_at);
}

#[tokio::test]
async fn refresh_within_zero_never_slides() {
    let app = spawn_app_with(|c| c.session.refresh_within = Duration::ZERO).await;
    let (_, token) = app.user_with_token("alice").await;
    let (expires_at, max) = (now() + 5, now() + 7 * 24 * HOUR);
    app.set_session_expiry(&token, expires_at, max);
    let body = me(&app, &token).await;
    app.verify_bearer(&token).await;
    let introspect: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(app.stored_expiry(&token), Some((expires_at, max)));
    assert_eq!(body["session"]["expires_at"], expires_at);
    assert_eq!(introspect["exp"], expires_at);
}

#[tokio::test]
async fn introspect_exp_is_the_earlier_expiry_after_sliding() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    // Slides, capped at max: exp is max.
    let max = now() + 600;
    app.set_session_expiry(&token, now() + 60, max);
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["exp"], max);
    // No sliding, idle expiry first: exp is expires_at.
    let (expires_at, max) = (now() + 3000, now() + 7 * 24 * HOUR);
    app.set_session_expiry(&token, expires_at, max);
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["exp"], expires_at);
    // Rows where the absolute expiry comes first (max_lifetime shorter than
    // idle_timeout): exp is max_expires_at.
    let (expires_at, max) = (now() + 3000, now() + 2000);
    app.set_session_expiry(&token, expires_at, max);
    let body: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(body["exp"], max);
}

#[tokio::test]
async fn a_max_lifetime_shorter_than_the_idle_timeout_bounds_the_session() {
    let app = spawn_app_with(|c| c.session.max_lifetime = Duration::from_secs(600)).await;
    let (_, token) = app.user_with_token("alice").await;
    let body = me(&app, &token).await;
    let max = body["session"]["max_expires_at"].as_i64().unwrap();
    assert!((now() + 598..=now() + 600).contains(&max), "{body}");
    let introspect: Value = app.introspect(&token).await.json().await.unwrap();
    assert_eq!(introspect["exp"], max);
}

#[tokio::test]
async fn me_describes_the_user_and_the_session() {
    let app = spawn_app().await;
    let before = now();
    let id = app.add_user_with("alice", "pw", Some("alice@example.com"), Some("Alice L."));
    let response = app.login("alice", "pw").await;
    let login: Value = response.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap();
    let response = app.get_bearer("/me", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    let created_at = body["created_at"].as_i64().unwrap();
    assert!((before..=now()).contains(&created_at), "{body}");
    assert_eq!(
        body,
        json!({
            "id": id,
            "username": "alice",
            "email": "alice@example.com",
            "display_name": "Alice L.",
            "created_at": created_at,
            "groups": [],
            "totp": false,
            "session": {
                "expires_at": login["expires_at"],
                "max_expires_at": login["max_expires_at"],
                "amr": ["pwd"],
            },
        })
    );
}

#[tokio::test]
async fn me_has_null_email_and_display_name_when_the_user_has_none() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("bob").await;
    let body = me(&app, &token).await;
    assert_eq!(body["id"], id);
    assert_eq!(body["username"], "bob");
    assert!(body["email"].is_null(), "{body}");
    assert!(body["display_name"].is_null(), "{body}");
    let keys = keys_of(&body);
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "username",
            "email",
            "display_name",
            "created_at",
            "groups",
            "totp",
            "session"
        ])
    );
}

#[tokio::test]
async fn me_lists_the_users_groups_as_created_sorted_ignoring_case() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for group in ["ops", "Admins", "beta"] {
        app.add_to_group(group, "alice");
    }
    app.user_with_token("bob").await;
    app.add_to_group("bobs-only", "bob");
    let body = me(&app, &token).await;
    assert_eq!(body["groups"], json!(["Admins", "beta", "ops"]), "{body}");
    // A change counts from the next request on.
    app.admin()
        .remove_group(&latchkey::auth::input::GroupName::parse("BETA").unwrap())
        .unwrap();
    let body = me(&app, &token).await;
    assert_eq!(body["groups"], json!(["Admins", "ops"]), "{body}");
}

#[tokio::test]
async fn me_works_with_the_cookie() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app.get_cookie("/me", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["username"], "alice");
}

#[tokio::test]
async fn me_without_a_valid_token_is_401() {
    let app = spawn_app().await;
    app.user_with_token("alice").await;
    let response = app.client.get(app.url("/me")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app.get_bearer("/me", &"A".repeat(43)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn sessions_lists_the_users_sessions_newest_first_marking_the_current_one() {
    let app = spawn_app().await;
    app.add_user("alice", "password-of-test");
    let before = now();
    let first = login_with_agent(&app, "alice", "Agent/1").await;
    let second = login_with_agent(&app, "alice", "Agent/2").await;
    let third = login_with_agent(&app, "alice", "Agent/3 (Linux; x86_64)").await;
    let after = now();
    let list = list_sessions(&app, &second).await;
    assert_eq!(list.len(), 3, "{list:?}");
    let ids: Vec<i64> = list.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert_eq!(
        ids,
        [
            app.session_id(&third),
            app.session_id(&second),
            app.session_id(&first)
        ]
    );
    let agents: Vec<&str> = list
        .iter()
        .map(|s| s["user_agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["Agent/3 (Linux; x86_64)", "Agent/2", "Agent/1"]);
    let current: Vec<bool> = list
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [false, true, false]);
    for (session, token) in list.iter().zip([&third, &second, &first]) {
        let keys = keys_of(session);
        assert_eq!(
            keys,
            BTreeSet::from([
                "id",
                "created_at",
                "expires_at",
                "max_expires_at",
                "ip",
                "user_agent",
                "current"
            ])
        );
        assert_eq!(session["ip"], "127.0.0.1");
        let created_at = session["created_at"].as_i64().unwrap();
        assert!((before..=after).contains(&created_at));
        let (expires_at, max) = app.stored_expiry(token).unwrap();
        assert_eq!(session["expires_at"], expires_at);
        assert_eq!(session["max_expires_at"], max);
    }
    // Asked with another token, `current` moves.
    let list = list_sessions(&app, &first).await;
    let current: Vec<bool> = list
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [false, false, true]);
}

#[tokio::test]
async fn sessions_lists_newest_first_by_creation_time() {
    let app = spawn_app().await;
    let (_, older) = app.user_with_token("alice").await;
    let newer = app.login_token("alice", "password-of-test").await;
    // Make the order by time unmistakable (ids would say the same).
    app.backdate_session(&older, 100);
    let list = list_sessions(&app, &older).await;
    assert_eq!(list[0]["id"], app.session_id(&newer));
    assert_eq!(list[1]["id"], app.session_id(&older));
}

#[tokio::test]
async fn sessions_leaves_out_expired_sessions() {
    let app = spawn_app().await;
    let (_, current) = app.user_with_token("alice").await;
    let idle_expired = app.login_token("alice", "password-of-test").await;
    let max_expired = app.login_token("alice", "password-of-test").await;
    app.set_session_expiry(&idle_expired, now() - 1, now() + HOUR);
    app.set_session_expiry(&max_expired, now() + HOUR, now() - 1);
    let list = list_sessions(&app, &current).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], app.session_id(&current));
    assert_eq!(list[0]["current"], true);
}

#[tokio::test]
async fn sessions_leaves_out_other_users_sessions() {
    let app = spawn_app().await;
    let (_, alice) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    app.login_token("bob", "password-of-test").await;
    let list = list_sessions(&app, &alice).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], app.session_id(&alice));
    assert_eq!(list_sessions(&app, &bob).await.len(), 2);
}

#[tokio::test]
async fn sessions_works_with_the_cookie() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app.get_cookie("/sessions", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sessions"][0]["current"], true);
}

#[tokio::test]
async fn deleting_one_of_ones_sessions_revokes_that_token_only() {
    let app = spawn_app().await;
    let (_, keep) = app.user_with_token("alice").await;
    let revoke = app.login_token("alice", "password-of-test").await;
    let id = app.session_id(&revoke);
    let response = delete_session(&app, &keep, &id.to_string()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_invalid_everywhere(&app, &revoke).await;
    assert_eq!(app.verify_bearer(&keep).await.status(), StatusCode::OK);
    let list = list_sessions(&app, &keep).await;
    assert_eq!(list.len(), 1);
    // Gone means gone: a second delete is 404.
    let response = delete_session(&app, &keep, &id.to_string()).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_session_id_is_never_handed_out_twice_not_even_after_the_newest_is_deleted() {
    let app = spawn_app().await;
    let (_, keep) = app.user_with_token("alice").await;
    let mut handed_out = vec![app.session_id(&keep)];
    let newest = app.login_token("alice", "password-of-test").await;
    handed_out.push(app.session_id(&newest));

    // The newest session deleted through the inventory...
    let response = delete_session(&app, &keep, &handed_out[1].to_string()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let next = app.login_token("alice", "password-of-test").await;
    let id = app.session_id(&next);
    assert!(
        handed_out.iter().all(|&old| id > old),
        "id {id} after {handed_out:?}"
    );
    handed_out.push(id);

    // ...or by logging out: its id stays spent either way.
    assert_eq!(
        app.logout_bearer(&next).await.status(),
        StatusCode::NO_CONTENT
    );
    let last = app.login_token("alice", "password-of-test").await;
    let id = app.session_id(&last);
    assert!(
        handed_out.iter().all(|&old| id > old),
        "id {id} after {handed_out:?}"
    );
    // The inventory shows the two live sessions under their own ids.
    let ids: Vec<i64> = list_sessions(&app, &keep)
        .await
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id, handed_out[0]]);
}

#[tokio::test]
async fn deleting_the_current_session_logs_the_caller_out() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let id = app.session_id(&token);
    let response = delete_session(&app, &token, &id.to_string()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_invalid_everywhere(&app, &token).await;
}

#[tokio::test]
async fn deleting_another_users_session_is_404_and_leaves_it_alone() {
    let app = spawn_app().await;
    let (_, alice) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    let bobs = app.session_id(&bob);
    let response = delete_session(&app, &alice, &bobs.to_string()).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.verify_bearer(&bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_session_that_does_not_exist_is_a_json_404() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    for id in [
        "999999",
        "0",
        "-1",
        "abc",
        "1.5",
        "99999999999999999999999",
        "%20",
    ] {
        let response = delete_session(&app, &token, id).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_session_endpoints_need_a_valid_token() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let id = app.session_id(&token);
    let response = app.client.get(app.url("/sessions")).send().await.unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app
        .client
        .delete(app.url(&format!("/sessions/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = delete_session(&app, "garbage", &id.to_string()).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cookie_authenticated_session_deletion_from_another_site_is_forbidden() {
    let app = spawn_app().await;
    let (_, keep) = app.user_with_token("alice").await;
    let target = app.login_token("alice", "password-of-test").await;
    let id = app.session_id(&target);
    let response = app
        .client
        .delete(app.url(&format!("/sessions/{id}")))
        .header("Cookie", app.cookie(&keep))
        .header("Origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.verify_bearer(&target).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_browser_deleting_its_own_session_gets_the_cookie_cleared_and_others_keep_theirs() {
    let app = spawn_app().await;
    let (_, current) = app.user_with_token("alice").await;
    let other = app.login_token("alice", "password-of-test").await;
    let delete_by_cookie = |id: i64| {
        app.client
            .delete(app.url(&format!("/sessions/{id}")))
            .header("Cookie", app.cookie(&current))
            .header("Origin", app.address.clone())
            .send()
    };
    // Another of the user's sessions: that browser's cookie stays.
    let response = delete_by_cookie(app.session_id(&other)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("set-cookie").is_none());
    // Its own: the dead cookie is cleared, as /logout does.
    let response = delete_by_cookie(app.session_id(&current)).await.unwrap();
    assert_logged_out(&app, &response);
    assert_eq!(
        app.verify_bearer(&current).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_bearer_caller_deleting_its_own_session_gets_no_cookie_change() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let response = app
        .client
        .delete(app.url(&format!("/sessions/{}", app.session_id(&token))))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn a_session_id_is_not_a_token() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("alice").await;
    let id = app.session_id(&token).to_string();
    assert_eq!(
        app.verify_bearer(&id).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_cookie("/me", &id).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let introspect: Value = app.introspect(&id).await.json().await.unwrap();
    assert_eq!(introspect, json!({ "active": false }));
    // Nor is the stored hash, in any spelling.
    let hash = sha256(&token);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash);
    for not_a_token in [hex, b64] {
        assert_eq!(
            app.verify_bearer(&not_a_token).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn deleting_the_user_invalidates_their_tokens() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    app.delete_user(id);
    assert_invalid_everywhere(&app, &token).await;
    assert_eq!(app.verify_bearer(&bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_disabled_users_existing_tokens_stop_working() {
    let app = spawn_app().await;
    let (id, token) = app.user_with_token("alice").await;
    let (_, bob) = app.user_with_token("bob").await;
    assert_eq!(app.verify_bearer(&token).await.status(), StatusCode::OK);
    app.set_disabled(id, true);
    assert_invalid_everywhere(&app, &token).await;
    assert_eq!(app.verify_bearer(&bob).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn expired_rows_still_in_the_file_are_never_served_and_a_purge_keeps_valid_ones() {
    let app = spawn_app().await;
    let (_, valid) = app.user_with_token("alice").await;
    let expired = app.login_token("alice", "password-of-test").await;
    app.set_session_expiry(&expired, now() - 10, now() - 10);
    // The row is there (the purge runs every minute), and still refused.
    assert!(app.stored_expiry(&expired).is_some());
    assert_invalid_everywhere(&app, &expired).await;
    assert_eq!(list_sessions(&app, &valid).await.len(), 1);
    // What the background task runs, against the live file.
    let purged = app.purge_expired_sessions();
    assert_eq!(purged, 1);
    assert_eq!(app.stored_expiry(&expired), None);
    assert_eq!(app.verify_bearer(&valid).await.status(), StatusCode::OK);
}
