//! Several instances on one PostgreSQL database (issue 13): every background worker claims its
//! rows, so each change is pushed (and sent to Google) by exactly one instance, and rows held by
//! an instance that died are taken over once its lease runs out.
//!
//! PostgreSQL only: SQLite is one process per database file.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::domain::{NewMember, now_ms};

use crate::apns::StandIn;
use crate::helpers::{TestApp, TestDb, eventually, futures_join_all, issue_member};
use crate::push::{app_with_standin_and, earn};

/// An APNs address that accepts connections and never answers: pushes to it hang.
async fn black_hole() -> String {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Two instances on one fresh PostgreSQL database pushing to one stand-in; `None` when no
/// PostgreSQL is configured.
async fn two_instances(lease_ms: u64) -> Option<(TestApp, TestApp, StandIn)> {
    let db = TestDb::postgres().await?;
    let (a, standin) = app_with_standin_and(db, |c| c.server.worker_lease_ms = lease_ms).await;
    let b = a.peer(like(&a)).await;
    Some((a, b, standin))
}

/// The settings of `app` that a second instance shares: push, Google and leases.
fn like(app: &TestApp) -> impl FnOnce(&mut tessera::config::Config) + use<> {
    let (push, google, server) = (
        app.state.config.push.clone(),
        app.state.config.google.clone(),
        app.state.config.server.clone(),
    );
    move |c| {
        c.push = push;
        c.google = google;
        c.server = server;
    }
}

/// `n` members of one program, each with one registered device (token `holder_token(i)`);
/// returns their ids once the outbox has drained of their creation.
async fn holders(app: &TestApp, n: usize) -> Vec<String> {
    let first = issue_member(app, "coffee").await;
    let store = &app.state.store;
    let program = store
        .get_program(first["program_id"].as_str().unwrap())
        .await
        .unwrap();
    let template = store
        .get_template(first["pass"]["template_id"].as_str().unwrap())
        .await
        .unwrap();
    let new: Vec<NewMember> = (1..n)
        .map(|i| NewMember {
            display_name: format!("M{i}"),
            external_id: None,
        })
        .collect();
    let mut members = vec![(
        first["id"].as_str().unwrap().to_string(),
        first["pass"]["serial_number"].as_str().unwrap().to_string(),
    )];
    members.extend(
        store
            .insert_members_bulk(&program, &template, &new)
            .await
            .unwrap()
            .into_iter()
            .map(|(m, p)| (m.id, p.serial_number)),
    );
    drained(app).await;
    let regs: Vec<(String, String, String)> = members
        .iter()
        .enumerate()
        .map(|(i, (_, serial))| (format!("device-{i}"), holder_token(i), serial.clone()))
        .collect();
    store.register_devices(&regs, now_ms()).await.unwrap();
    members.into_iter().map(|(id, _)| id).collect()
}

fn holder_token(i: usize) -> String {
    format!("{:064x}", 0xa000 + i)
}

/// Waits (at most ten seconds) until no outbox row is left: every push has been settled, so
/// none can arrive later.
async fn drained(app: &TestApp) {
    for _ in 0..500 {
        if app.state.store.pending_outbox(1).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox never drained");
}

/// Pushes the stand-in received, by device token.
fn pushes_by_token(standin: &StandIn) -> HashMap<String, Vec<Instant>> {
    let mut by = HashMap::<String, Vec<Instant>>::new();
    for s in standin.seen.lock().unwrap().iter() {
        let token = s.path.rsplit('/').next().unwrap_or_default().to_string();
        by.entry(token).or_default().push(s.at);
    }
    by
}

fn member(id: &str) -> serde_json::Value {
    json!({ "id": id })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_push_each_change_once() {
    const MEMBERS: usize = 120;
    let Some((a, b, standin)) = two_instances(60_000).await else {
        return;
    };
    let members = holders(&a, MEMBERS).await;
    assert!(standin.seen.lock().unwrap().is_empty());

    // One change per member, half through each instance, all at once.
    let statuses = futures_join_all(members.iter().enumerate().map(|(i, m)| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move { earn(app, &member(m), &format!("one-{i}"), 5).await }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    drained(&a).await;
    let pushes = pushes_by_token(&standin);
    for i in 0..MEMBERS {
        assert_eq!(
            pushes.get(&holder_token(i)).map_or(0, Vec::len),
            1,
            "device {i} is pushed exactly once for one change"
        );
    }
    assert_eq!(pushes.len(), MEMBERS, "no other device was pushed");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_never_push_a_device_more_often_than_its_pass_changed() {
    const MEMBERS: usize = 40;
    const BURST: usize = 5;
    let Some((a, b, standin)) = two_instances(60_000).await else {
        return;
    };
    let members = holders(&a, MEMBERS).await;

    // Each member changes BURST times in a row, alternating between the instances; members at
    // once. The time before each member's last change is kept.
    let last_sent = futures_join_all(members.iter().enumerate().map(|(i, m)| {
        let (a, b) = (&a, &b);
        async move {
            let mut last = Instant::now();
            for k in 0..BURST {
                let app = if (i + k) % 2 == 0 { a } else { b };
                last = Instant::now();
                assert_eq!(earn(app, &member(m), &format!("b-{i}-{k}"), 1).await, 201);
            }
            last
        }
    }))
    .await;
    drained(&a).await;
    let pushes = pushes_by_token(&standin);
    for (i, last) in last_sent.iter().enumerate() {
        let at = pushes.get(&holder_token(i)).cloned().unwrap_or_default();
        assert!(
            (1..=BURST).contains(&at.len()),
            "device {i} pushed {} times for {BURST} changes",
            at.len()
        );
        assert!(
            at.iter().any(|t| t >= last),
            "device {i} is pushed after its last change"
        );
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_job_reaches_each_holder_once_across_instances() {
    const HOLDERS: usize = 600;
    let Some((a, b, standin)) = two_instances(60_000).await else {
        return;
    };
    let members = holders(&a, HOLDERS).await;
    let store = &a.state.store;
    let template_id = store
        .pass_for_member(&members[0])
        .await
        .unwrap()
        .template_id;
    let mut design = tessera::demo::design();
    design.logo_text = Some("Spring".into());
    store.save_draft(&template_id, "T", &design).await.unwrap();
    store
        .publish_template(
            &template_id,
            |d| Ok::<_, ()>(d.design.clone()),
            "t",
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap();
    let job = crate::helpers::publish_finished(store, &template_id).await;
    assert_eq!((job.done, job.total), (HOLDERS as i64, HOLDERS as i64));
    drained(&a).await;
    let pushes = pushes_by_token(&standin);
    for i in 0..HOLDERS {
        assert_eq!(
            pushes.get(&holder_token(i)).map_or(0, Vec::len),
            1,
            "holder {i} is told once"
        );
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_killed_instance_are_pushed_once_by_the_other_after_the_lease() {
    const MEMBERS: usize = 30;
    const LEASE_MS: u64 = 1500;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // Instance A pushes into a black hole: it claims the rows, then its pushes hang.
    let hole_url = black_hole().await;
    let (mut a, standin) = app_with_standin_and(db, move |c| {
        c.server.worker_lease_ms = LEASE_MS;
        c.push.apns_url = Some(hole_url);
    })
    .await;
    let members = holders(&a, MEMBERS).await;
    futures_join_all(members.iter().enumerate().map(|(i, m)| {
        let a = &a;
        async move { assert_eq!(earn(a, &member(m), &format!("k-{i}"), 5).await, 201) }
    }))
    .await;
    let owner = a.state.store.instance_id().to_string();
    let store_a = a.state.store.clone();
    let claimed_by_a = || {
        let (store, owner) = (store_a.clone(), owner.clone());
        async move { store.claimed_rows("outbox", Some(&owner)).await.unwrap() }
    };
    for _ in 0..250 {
        if claimed_by_a().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed mid-dispatch (its first batches hang in the black hole, later rows wait behind
    // them unclaimed): nothing is given back.
    a.kill();
    let killed = Instant::now();
    let held = claimed_by_a().await;
    assert!(held > 0, "A held rows when it died");

    let (shared, url) = (like(&a), standin.url());
    let b = a
        .peer(move |c| {
            shared(c);
            c.push.apns_url = Some(url);
        })
        .await;
    eventually("every device pushed by the surviving instance", || {
        let pushes = pushes_by_token(&standin);
        (0..MEMBERS).all(|i| pushes.contains_key(&holder_token(i)))
    })
    .await;
    drained(&b).await;
    let pushes = pushes_by_token(&standin);
    let mut late = 0;
    for i in 0..MEMBERS {
        let at = &pushes[&holder_token(i)];
        assert_eq!(at.len(), 1, "device {i} pushed once");
        if at[0].duration_since(killed) >= Duration::from_millis(LEASE_MS / 2) {
            late += 1;
        }
    }
    // One change per member: each row A held is one device, pushed only after the lease.
    assert!(
        late >= held,
        "{late} devices pushed after the lease ran out, A held {held} rows"
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_google_change_is_sent_once_across_instances() {
    const MEMBERS: usize = 20;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let (a, google, _key) = crate::google::google_app(db).await;
    let b = a.peer(like(&a)).await;
    let first = issue_member(&a, "coffee").await;
    let mut members = vec![first.clone()];
    for i in 1..MEMBERS {
        let app = if i % 2 == 0 { &a } else { &b };
        let (s, m) = app
            .post(
                &format!(
                    "/api/v1/programs/{}/members",
                    first["program_id"].as_str().unwrap()
                ),
                json!({"display_name": format!("M{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        members.push(m);
    }
    let synced = |store: tessera::storage::Store| async move {
        for _ in 0..500 {
            if store.google_pending_count().await.unwrap() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the Google queue never drained");
    };
    synced(a.state.store.clone()).await;
    let before = google.recorded().calls.len();
    futures_join_all(members.iter().enumerate().map(|(i, m)| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move { assert_eq!(earn(app, m, &format!("g-{i}"), 5).await, 201) }
    }))
    .await;
    synced(a.state.store.clone()).await;
    let calls = google.recorded().calls[before..].to_vec();
    let mut per_object = HashMap::<String, usize>::new();
    for c in calls
        .iter()
        .filter(|c| c.path.starts_with("/loyaltyObject/"))
    {
        *per_object.entry(c.path.clone()).or_default() += 1;
    }
    assert_eq!(per_object.len(), MEMBERS, "{calls:?}");
    assert!(
        per_object.values().all(|n| *n == 1),
        "each change written once: {per_object:?}"
    );
    drop(b);
}

/// A change committed on one instance wakes another instance's dispatcher through PostgreSQL
/// `NOTIFY`, long before its next poll (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_wakes_the_others_workers() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // A does not push at all; B polls every ten minutes.
    let (a, standin) = app_with_standin_and(db, |c| c.push.enabled = Some(false)).await;
    let shared = like(&a);
    let b = a
        .peer(move |c| {
            shared(c);
            c.push.enabled = Some(true);
            c.push.poll_interval_ms = 600_000;
        })
        .await;
    eventually("B listens", || {
        b.state
            .workers
            .snapshot()
            .get("notifications")
            .is_some_and(|w| w.last_ok.is_some())
    })
    .await;
    let members = holders(&a, 3).await;
    for (i, m) in members.iter().enumerate() {
        assert_eq!(earn(&a, &member(m), &format!("n-{i}"), 5).await, 201);
    }
    eventually("B pushed A's changes", || {
        let pushes = pushes_by_token(&standin);
        (0..3).all(|i| pushes.contains_key(&holder_token(i)))
    })
    .await;
    drop(b);
}

/// Throttles hold across instances: barcode lookups with one key, alternating between two
/// instances, get one quota (a burst of 3 at 4 a minute), not one per instance; and failed staff
/// sign-ins counted by one instance make the other wait too.
#[tokio::test]
async fn throttles_hold_across_instances() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = TestApp::spawn_with(db, |c| {
        c.enrollment.lookups_per_minute = 4;
    })
    .await;
    let b = a.peer(like_throttles(&a)).await;
    let member = issue_member(&a, "coffee").await;
    let barcode = member["barcode"].as_str().unwrap();
    let mut ok = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app
            .client
            .get(app.url(&format!("/api/v1/members?barcode={barcode}")))
            .bearer_auth(&a.admin_key)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("lookup {i}: {s}"),
        }
    }
    assert!(
        (3..=4).contains(&ok),
        "one quota across both instances, {ok} of 8 lookups passed"
    );

    // Sign-in attempts (one free) counted on A make B wait; parallel attempts on both
    // instances are each counted before any password is checked; a success clears the account.
    let backoff = |store: &tessera::storage::Store| {
        tessera::ratelimit::Backoff::new(1, Duration::from_secs(60)).shared_on(store)
    };
    let (on_a, on_b) = (backoff(&a.state.store), backoff(&b.state.store));
    let keys = ["account:ops@example.com", "address:192.0.2.1"];
    assert!(on_a.attempt(&keys).await.is_ok(), "one attempt is free");
    assert!(
        on_b.attempt(&keys).await.is_ok(),
        "the second starts the wait"
    );
    let wait = on_a.attempt(&keys[1..]).await.unwrap_err();
    assert!(
        wait <= Duration::from_secs(1) && !wait.is_zero(),
        "{wait:?}"
    );
    on_b.succeed(&Default::default(), &keys[..1], &[]).await;
    let parallel = futures_join_all((0..10).map(|i| {
        let on = if i % 2 == 0 { &on_a } else { &on_b };
        on.attempt(&["account:racer@example.com"])
    }))
    .await;
    assert_eq!(
        parallel.iter().filter(|r| r.is_ok()).count(),
        2,
        "ten parallel guesses on two instances: the free one and the one that starts the wait"
    );
    assert!(
        on_a.attempt(&keys[..1]).await.is_ok(),
        "the success cleared the account"
    );
    assert!(
        on_a.attempt(&keys[1..]).await.is_err(),
        "the address still waits"
    );

    // A correct password takes its own attempt back: at an address past its free attempts, a
    // right sign-in leaves no wait for the next person there.
    let office = ["account:clerk@example.com", "address:203.0.113.9"];
    assert!(on_a.attempt(&office[1..]).await.is_ok(), "a typo, free");
    let right = on_b
        .attempt(&office)
        .await
        .expect("the second attempt runs");
    on_b.succeed(&right, &office[..1], &office[1..]).await;
    assert!(
        on_a.attempt(&["account:colleague@example.com", office[1]])
            .await
            .is_ok(),
        "a colleague at the same address does not wait after a correct sign-in"
    );
}

/// The throttle settings of `app`, for a peer.
fn like_throttles(app: &TestApp) -> impl FnOnce(&mut tessera::config::Config) + use<> {
    let (enrollment, server) = (
        app.state.config.enrollment.clone(),
        app.state.config.server.clone(),
    );
    move |c| {
        c.enrollment = enrollment;
        c.server = server;
    }
}

/// A clean shutdown gives its claims back: the other instance pushes them at once, long before
/// the lease (a minute here) would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_hands_its_rows_over_at_once() {
    const MEMBERS: usize = 10;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let hole_url = black_hole().await;
    let (mut a, standin) = app_with_standin_and(db, move |c| {
        c.server.worker_lease_ms = 60_000;
        c.push.apns_url = Some(hole_url);
    })
    .await;
    let members = holders(&a, MEMBERS).await;
    for (i, m) in members.iter().enumerate() {
        assert_eq!(earn(&a, &member(m), &format!("s-{i}"), 5).await, 201);
    }
    let store_a = a.state.store.clone();
    let owner = store_a.instance_id().to_string();
    for _ in 0..250 {
        if store_a.claimed_rows("outbox", Some(&owner)).await.unwrap() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store_a.claimed_rows("outbox", Some(&owner)).await.unwrap() > 0);
    // What `serve` does on SIGTERM: stop the workers, then give the claims back.
    a.kill();
    store_a.release_leases().await.unwrap();
    assert_eq!(
        store_a.claimed_rows("outbox", Some(&owner)).await.unwrap(),
        0
    );

    let (shared, url) = (like(&a), standin.url());
    let b = a
        .peer(move |c| {
            shared(c);
            c.push.apns_url = Some(url);
        })
        .await;
    // `eventually` gives up after five seconds, far inside the minute's lease.
    eventually("every device pushed at once by the other instance", || {
        let pushes = pushes_by_token(&standin);
        (0..MEMBERS).all(|i| pushes.contains_key(&holder_token(i)))
    })
    .await;
    drained(&b).await;
    let pushes = pushes_by_token(&standin);
    assert!((0..MEMBERS).all(|i| pushes[&holder_token(i)].len() == 1));
    drop(b);
}
