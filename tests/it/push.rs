//! Ledger change → outbox → APNs push, end to end against the HTTP/2 TLS stand-in.

use std::time::Duration;

use serde_json::json;
use tessera::passes::apple::dev_certs::DevAuthority;

use crate::apns::StandIn;
use crate::helpers::{TestApp, TestDb, another_member, eventually, issue_member};
use crate::on_both_backends;

/// An app whose dispatcher pushes to a fresh stand-in, retrying fast.
pub async fn app_with_standin(db: TestDb) -> (TestApp, StandIn) {
    app_with_standin_and(db, |_| {}).await
}

/// `app_with_standin` with more settings.
pub async fn app_with_standin_and(
    db: TestDb,
    tweak: impl FnOnce(&mut tessera::config::Config),
) -> (TestApp, StandIn) {
    let certs = db.dir.path().join("data").join("dev-certs");
    DevAuthority::open_or_create(&certs).unwrap();
    let standin = StandIn::start(&certs).await;
    let ca = standin.write_ca(db.dir.path());
    let url = standin.url();
    let app = TestApp::spawn_with(db, move |c| {
        c.push.apns_url = Some(url);
        c.push.apns_root_certificate = Some(ca);
        c.push.retry_base_ms = 50;
        c.push.poll_interval_ms = 50;
        tweak(c);
    })
    .await;
    (app, standin)
}

/// Registers `device` with push token `token` for the member's pass through the web service.
pub async fn register(app: &TestApp, member: &serde_json::Value, device: &str, token: &str) {
    let pass = app
        .state
        .store
        .get_pass(member["pass"]["serial_number"].as_str().unwrap())
        .await
        .unwrap();
    let url = app.url(&format!(
        "/passkit/v1/devices/{device}/registrations/{}/{}",
        pass.pass_type_identifier, pass.serial_number
    ));
    let r = app
        .client
        .post(url)
        .header(
            "Authorization",
            format!("ApplePass {}", pass.authentication_token),
        )
        .json(&json!({ "pushToken": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

pub async fn earn(app: &TestApp, member: &serde_json::Value, key: &str, points: i64) -> u16 {
    let path = format!(
        "/api/v1/members/{}/transactions",
        member["id"].as_str().unwrap()
    );
    app.post_idem(&path, key, json!({"type": "earn", "points": points}))
        .await
        .0
}

async fn an_earn_pushes_each_device_once(db: TestDb) {
    let (app, standin) = app_with_standin(db).await;
    let member = issue_member(&app, "coffee").await;
    register(&app, &member, "phone", "abcd01").await;
    register(&app, &member, "old-phone", "dead").await;
    assert_eq!(earn(&app, &member, "e1", 25).await, 201);

    eventually("a push to the phone", || {
        standin.pushes_to("abcd01").len() == 1
    })
    .await;
    let push = &standin.pushes_to("abcd01")[0];
    assert_eq!(
        push.topic,
        member["pass"]["pass_type_identifier"].as_str().unwrap()
    );
    assert_eq!(push.body, b"{}");
    assert_eq!(push.version, "HTTP/2.0");
    // 410 from APNs removed the old phone's registration.
    let serial = member["pass"]["serial_number"].as_str().unwrap();
    for _ in 0..100 {
        if app.state.store.registrations(serial).await.unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = app.state.store.registrations(serial).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].device_library_identifier, "phone");

    // Nothing more is pushed: not twice for one change, not for a refused change.
    let path = format!(
        "/api/v1/members/{}/transactions",
        member["id"].as_str().unwrap()
    );
    let (s, _) = app
        .post_idem(&path, "r1", json!({"type": "redeem", "points": 1000}))
        .await;
    assert_eq!(s, 422);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(standin.pushes_to("abcd01").len(), 1);
    assert!(
        app.state.store.pending_outbox(10).await.unwrap().is_empty(),
        "the outbox is drained"
    );

    // The admin view shows the device, its last push, and that the pass was never fetched.
    let view: serde_json::Value = app
        .client
        .get(app.url(&format!(
            "/api/v1/members/{}/passes",
            member["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pass = &view["items"][0];
    assert_eq!(pass["devices"][0]["device_library_identifier"], "phone");
    assert_eq!(pass["devices"][0]["last_push_result"], "delivered");
    assert!(pass["devices"][0]["last_push_at"].is_i64());
    assert!(
        pass["last_fetched_at"].is_null(),
        "pushed but never fetched"
    );
}

on_both_backends!(an_earn_pushes_each_device_once);

#[tokio::test]
async fn a_failed_push_is_retried_until_delivered() {
    let (app, standin) = app_with_standin(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    register(&app, &member, "phone", "5005").await;
    assert_eq!(earn(&app, &member, "e1", 5).await, 201);
    // The stand-in answers 500 first, then 200.
    eventually("a retried push", || standin.pushes_to("5005").len() == 2).await;
    for _ in 0..50 {
        if app.state.store.pending_outbox(10).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox row was not finished after a successful retry");
}

/// A change committed while no dispatcher runs (the server died between commit and push) is
/// pushed by the next process that starts on the same database.
#[tokio::test]
async fn a_push_survives_a_restart() {
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let certs = db.dir.path().join("data").join("dev-certs");
    DevAuthority::open_or_create(&certs).unwrap();
    let standin = StandIn::start(&certs).await;
    let ca = standin.write_ca(db.dir.path());
    // First process: push is off (development identity, no APNs URL).
    let first = TestApp::spawn(db).await;
    let member = issue_member(&first, "coffee").await;
    register(&first, &member, "phone", "abcd02").await;
    assert_eq!(earn(&first, &member, "e1", 5).await, 201);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        first.state.store.pending_outbox(10).await.unwrap().len(),
        1,
        "committed, not pushed"
    );
    assert!(standin.pushes_to("abcd02").is_empty());

    // Second process on the same database, with push on.
    let mut config = (*first.state.config).clone();
    config.database_url = url;
    config.push.apns_url = Some(standin.url());
    config.push.apns_root_certificate = Some(ca);
    let store = tessera::storage::Store::connect(&config.database_url)
        .await
        .unwrap();
    let second = tessera::app::AppState::new(config, store).unwrap();
    let workers = tessera::app::spawn_workers(&second).unwrap();
    eventually("the push after restart", || {
        standin.pushes_to("abcd02").len() == 1
    })
    .await;
    workers.iter().for_each(|w| w.abort());
}

/// More changes than one dispatcher batch, committed at once: the pipeline reads past its
/// cursor while earlier batches are in flight, and still pushes every device exactly once.
async fn a_burst_larger_than_a_batch_pushes_each_device_once(db: TestDb) {
    const MEMBERS: usize = 2300;
    let (app, standin) = app_with_standin(db).await;
    let first = issue_member(&app, "coffee").await;
    let store = &app.state.store;
    let program = store
        .get_program(first["program_id"].as_str().unwrap())
        .await
        .unwrap();
    let template = store
        .get_template(first["pass"]["template_id"].as_str().unwrap())
        .await
        .unwrap();
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let new = tessera::domain::NewMember {
            display_name: format!("M{i}"),
            external_id: None,
        };
        let (member, pass) = store
            .insert_member(&program, &template, &new)
            .await
            .unwrap();
        let token = format!("{:064x}", 0xb000 + i);
        store
            .register_device(&format!("device-{i}"), &token, &pass.serial_number, 1)
            .await
            .unwrap();
        members.push(member.id);
    }
    // Two changes for some members: still one push each (coalesced within a batch), or at
    // most two when the changes fall in different batches.
    for (i, m) in members.iter().enumerate() {
        for _ in 0..(1 + (i % 7 == 0) as usize) {
            store
                .post(
                    m,
                    &tessera::ledger::Operation::EarnPoints { points: 1 },
                    &tessera::ledger::Origin::default(),
                    None,
                    None,
                    tessera::domain::now_ms(),
                )
                .await
                .unwrap();
        }
    }
    for _ in 0..500 {
        if store.pending_outbox(1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.pending_outbox(1).await.unwrap().is_empty(),
        "outbox drained"
    );
    let seen = standin.seen.lock().unwrap().clone();
    let mut per_token = std::collections::HashMap::<String, usize>::new();
    for s in &seen {
        *per_token.entry(s.path.clone()).or_default() += 1;
    }
    assert_eq!(per_token.len(), MEMBERS, "every device was pushed");
    for (i, _) in members.iter().enumerate() {
        let n = per_token[&format!("/3/device/{:064x}", 0xb000 + i)];
        let most = if i % 7 == 0 { 2 } else { 1 };
        assert!((1..=most).contains(&n), "device {i} pushed {n} times");
    }
}

on_both_backends!(a_burst_larger_than_a_batch_pushes_each_device_once);

/// Changing a template's image changes every card on it: each holder's device is pushed.
async fn a_template_change_pushes_every_holder(db: TestDb) {
    let (app, standin) = app_with_standin(db).await;
    let first = issue_member(&app, "coffee").await;
    let second = another_member(&app, &first).await;
    register(&app, &first, "phone-1", "abcd11").await;
    register(&app, &second, "phone-2", "abcd12").await;
    let template_id = first["pass"]["template_id"].as_str().unwrap();
    let r = app
        .client
        .put(app.url(&format!("/api/v1/templates/{template_id}/images/logo")))
        .bearer_auth(&app.admin_key)
        .body(tessera::passes::apple::images::sample_png(
            320,
            100,
            [1, 200, 3],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("a push to each holder", || {
        standin.pushes_to("abcd11").len() == 1 && standin.pushes_to("abcd12").len() == 1
    })
    .await;
}

on_both_backends!(a_template_change_pushes_every_holder);
