//! Every change a card shows reaches the card: rules, names and tier renames through publish
//! jobs to Apple and Google; refunds and reversals in allowances and tier totals; checked
//! arithmetic; cashier limits inside the ledger transaction; supervised workers.

use std::time::Duration;

use axum::http::header::COOKIE;
use serde_json::{Value, json};
use tessera::ledger::{Operation, Origin};
use tessera::storage::{Role, StorageError};

use crate::google::google_app;
use crate::helpers::{
    StaffClient, TestApp, TestDb, eventually, futures_join_all, issue_member, limits,
    publish_finished,
};
use crate::on_both_backends;

/// Every holder's card has a `template.changed` outbox row newer than `since`.
async fn told(app: &TestApp, member_id: &str, since: i64) -> bool {
    app.state
        .store
        .pending_outbox(10_000)
        .await
        .unwrap()
        .iter()
        .any(|r| {
            r.topic == "template.changed"
                && r.member_id.as_deref() == Some(member_id)
                && r.created_at >= since
        })
}

/// Waits until the Google stand-in holds `member`'s object with `check` true of it.
async fn google_object(
    standin: &tessera::google::standin::GoogleStandIn,
    check: impl Fn(&Value) -> bool,
) {
    eventually("the Google object to follow", || {
        standin.recorded().objects.values().any(&check)
    })
    .await;
}

async fn rules_names_and_tier_renames_reach_every_card(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let program_id = member["program_id"].as_str().unwrap();
    let template = member["pass"]["template_id"].as_str().unwrap();
    let rules_path = format!("/api/v1/programs/{program_id}/rules");
    let put_rules = |rules: Value| {
        let r = app
            .client
            .put(app.url(&rules_path))
            .bearer_auth(&app.admin_key)
            .json(&rules)
            .send();
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };

    // Tiers sent without ids get them (their names) and keep them from then on.
    let (s, program) = put_rules(json!({
        "earn": {"points": 1, "per_minor": 100},
        "tiers": {"window_days": 365, "levels": [
            {"name": "Bronze", "threshold": 0},
            {"name": "Silver", "threshold": 100, "multiplier_milli": 1500},
        ]},
    }))
    .await;
    assert_eq!(s, 200, "{program}");
    let levels = &program["rules"]["tiers"]["levels"];
    assert_eq!(
        (levels[0]["id"].as_str(), levels[1]["id"].as_str()),
        (Some("Bronze"), Some("Silver"))
    );
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "e1",
            json!({"type": "earn", "points": 150}),
        )
        .await;
    assert_eq!(s, 201);
    google_object(&standin, |o| {
        o["secondaryLoyaltyPoints"]["balance"]["string"] == "Silver"
    })
    .await;

    // A tier rename (same id) and an expiry change: every holder's pass changes and is
    // queued for a push, and Google shows the new name.
    let before = app
        .state
        .store
        .pass_for_member(id)
        .await
        .unwrap()
        .updated_at;
    let since = tessera::domain::now_ms();
    let (s, program) = put_rules(json!({
        "earn": {"points": 1, "per_minor": 100},
        "expiry_days": 90,
        "tiers": {"window_days": 365, "levels": [
            {"id": "Bronze", "name": "Bronze", "threshold": 0},
            {"id": "Silver", "name": "Argent", "threshold": 100, "multiplier_milli": 1500},
        ]},
    }))
    .await;
    assert_eq!(s, 200, "{program}");
    publish_finished(&app.state.store, template).await;
    assert!(
        app.state
            .store
            .pass_for_member(id)
            .await
            .unwrap()
            .updated_at
            > before
    );
    assert!(
        told(&app, id, since).await,
        "the holder is queued for a push"
    );
    google_object(&standin, |o| {
        o["secondaryLoyaltyPoints"]["balance"]["string"] == "Argent"
    })
    .await;
    let view: Value = app
        .client
        .get(app.url(&format!("/api/v1/members/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["tier"].as_str(), view["tier_id"].as_str()),
        (Some("Argent"), Some("Silver"))
    );
    // The renamed tier keeps its multiplier: 10.00 earns 10 x 1.5.
    let (s, b) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "e2",
            json!({"type": "earn", "amount_minor": 1000}),
        )
        .await;
    assert_eq!(
        (s, b["entry"]["points"].as_i64(), b["tier"].as_str()),
        (201, Some(15), Some("Argent")),
        "{b}"
    );

    // A client that drops the ids and renames again keeps the tier by position; rules that
    // drop a tier members hold are refused.
    let (s, program) = put_rules(json!({
        "earn": {"points": 1, "per_minor": 100},
        "tiers": {"window_days": 365, "levels": [
            {"name": "Bronze", "threshold": 0},
            {"name": "Silver Plus", "threshold": 100, "multiplier_milli": 1500},
        ]},
    }))
    .await;
    assert_eq!(s, 200, "{program}");
    assert_eq!(program["rules"]["tiers"]["levels"][1]["id"], "Silver");
    let (s, refused) = put_rules(
        json!({"tiers": {"window_days": 365, "levels": [{"name": "Bronze", "threshold": 0}]}}),
    )
    .await;
    assert_eq!(s, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hold tier id \"Silver\""),
        "{refused}"
    );
    publish_finished(&app.state.store, template).await;

    // A program rename: the pass changes, the push is queued, and Google's class follows.
    let before = app
        .state
        .store
        .pass_for_member(id)
        .await
        .unwrap()
        .updated_at;
    let since = tessera::domain::now_ms();
    tessera::service::programs::rename(&app.state.store, program_id, "Bean Club", "Beans Ltd")
        .await
        .unwrap();
    publish_finished(&app.state.store, template).await;
    assert!(
        app.state
            .store
            .pass_for_member(id)
            .await
            .unwrap()
            .updated_at
            > before
    );
    assert!(told(&app, id, since).await);
    eventually("the Google class to follow the rename", || {
        standin
            .recorded()
            .classes
            .values()
            .any(|c| c["programName"] == "Bean Club" && c["issuerName"] == "Beans Ltd")
    })
    .await;
}

on_both_backends!(rules_names_and_tier_renames_reach_every_card);

/// Reversed entries leave refund allowances and tier totals: a reversed purchase has nothing
/// to refund, a reversed refund gives its amount back, and refunds count against tiers.
async fn reversals_and_refunds_in_allowances_and_tiers(db: TestDb) {
    let store = db.store().await;
    let m = crate::helpers::member_with_rules(&store, tessera::demo::rules()).await;
    let mut at = tessera::domain::now_ms();
    let mut post = async |op: Operation, reference: &str| {
        at += 1;
        let origin = Origin {
            external_ref: Some(reference.into()),
            ..Origin::default()
        };
        store.post(&m.id, &op, &origin, None, None, at).await
    };
    let purchase = |amount_minor| Operation::EarnPurchase { amount_minor };
    let refund = |amount_minor| Operation::Refund { amount_minor };

    let (earned, _) = post(purchase(10_000), "r1").await.unwrap();
    assert_eq!(earned.entry.points, 100);
    post(
        Operation::Reverse {
            entry_id: earned.entry.id.clone(),
        },
        "r1",
    )
    .await
    .unwrap();
    let refused = post(refund(5_000), "r1").await;
    assert!(
        matches!(&refused, Err(StorageError::Rejected(why)) if why.contains("reversed")),
        "{refused:?}"
    );

    post(purchase(10_000), "r2").await.unwrap();
    let (half, _) = post(refund(5_000), "r2").await.unwrap();
    assert_eq!(half.entry.points, -50);
    post(
        Operation::Reverse {
            entry_id: half.entry.id.clone(),
        },
        "r2",
    )
    .await
    .unwrap();
    // The reversed refund no longer counts: the whole amount may be refunded again.
    let (all, _) = post(refund(10_000), "r2").await.unwrap();
    assert_eq!(all.entry.points, -100);
    assert!(
        post(refund(1), "r2").await.is_err(),
        "nothing is left to refund"
    );
    assert_eq!(store.get_member(&m.id).await.unwrap().points, 0);
    assert_eq!(store.ledger_sum(&m.id).await.unwrap(), 0);
    assert_eq!(store.lots_sum(&m.id).await.unwrap(), 0);

    // Tier totals: the reversed purchase and the refunded one count nothing; a new 30.00
    // purchase counts 30.
    post(purchase(3_000), "r3").await.unwrap();
    let rules = tessera::demo::rules();
    let standing = store.member_standing(&m.id, &rules, at).await.unwrap();
    assert_eq!(standing.qualifying, 30);
    let mut spend = rules.clone();
    spend.tiers.basis = tessera::ledger::TierBasis::Spend;
    let standing = store.member_standing(&m.id, &spend, at).await.unwrap();
    assert_eq!(standing.qualifying, 3_000);
}

on_both_backends!(reversals_and_refunds_in_allowances_and_tiers);

/// Inputs whose arithmetic would overflow get 400 or 422 and write nothing.
async fn overflowing_inputs_are_refused(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let program_id = member["program_id"].as_str().unwrap();
    let path = format!("/api/v1/members/{id}/transactions");
    let counts = app.state.store.counts().await.unwrap();
    for (key, body, status, says) in [
        (
            "o1",
            json!({"type": "adjust", "points": i64::MIN, "reason": "x"}),
            400,
            "between -1,000,000,000 and 1,000,000,000",
        ),
        (
            "o2",
            json!({"type": "adjust", "points": i64::MAX, "reason": "x"}),
            400,
            "between -1,000,000,000 and 1,000,000,000",
        ),
        (
            "o3",
            json!({"type": "earn", "points": 10_000_000_000i64}),
            400,
            "between 1 and 1,000,000,000",
        ),
        (
            "o4",
            json!({"type": "earn", "amount_minor": i64::MAX}),
            400,
            "amount_minor must be between 1 and",
        ),
        (
            "o5",
            json!({"type": "redeem", "points": -5}),
            400,
            "points must be between 1",
        ),
    ] {
        let (s, b) = app.post_idem(&path, key, body).await;
        assert_eq!(s, status, "{key}: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(says),
            "{key}: {b}"
        );
    }
    // The richest rule the validator allows, on the largest amount: 10^19 points, refused.
    let rules_path = format!("/api/v1/programs/{program_id}/rules");
    let put = |rules: Value| {
        app.client
            .put(app.url(&rules_path))
            .bearer_auth(&app.admin_key)
            .json(&rules)
            .send()
    };
    let r = put(json!({"earn": {"points": 1_000_000, "per_minor": 1},
        "tiers": {"window_days": 365, "levels": [{"name": "Top", "threshold": 0, "multiplier_milli": 10_000}]}}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let (s, b) = app
        .post_idem(
            &path,
            "o6",
            json!({"type": "earn", "amount_minor": 1_000_000_000_000i64}),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1,000,000,000"),
        "{b}"
    );
    let r = put(
        json!({"tiers": {"window_days": 365, "levels": [{"name": "X", "threshold": i64::MAX}]}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        app.state.store.counts().await.unwrap(),
        counts,
        "nothing was written"
    );
    assert_eq!(app.state.store.get_member(id).await.unwrap().points, 0);
}

on_both_backends!(overflowing_inputs_are_refused);

/// 20 purchases of 400 points at once by a cashier limited to 5,000 a day, through an API key
/// and through `/scan`: exactly 12 go through (4,800 points), the rest are refused.
async fn daily_limits_hold_under_concurrent_purchases(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap().to_string();
    let moved = || {
        let store = app.state.store.clone();
        let id = id.clone();
        async move {
            let entries = store.list_entries(&id, None, 1000).await.unwrap();
            entries.iter().map(|e| e.points).sum::<i64>()
        }
    };

    let (_, key) = tessera::api::auth::create_key(
        &app.state.store,
        "till",
        Role::Cashier,
        limits(Some(500), Some(5_000)),
    )
    .await
    .unwrap();
    let path = format!("/api/v1/members/{id}/transactions");
    let posts = (0..20).map(|i| {
        let (app, key, path) = (&app, key.clone(), path.clone());
        async move {
            app.post_idem_as(
                &key,
                &path,
                &format!("k{i}"),
                json!({"type": "earn", "amount_minor": 40_000}),
            )
            .await
        }
    });
    let answers = futures_join_all(posts).await;
    let ok = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 403).collect();
    assert_eq!((ok, refused.len()), (12, 8), "{answers:?}");
    assert_eq!(refused[0].1["error"]["code"], "over_limit");
    assert_eq!(moved().await, 4_800);
    // The per-operation limit applies to purchases too: 600 points in one go.
    let (s, b) = app
        .post_idem_as(
            &key,
            &path,
            "big",
            json!({"type": "earn", "amount_minor": 60_000}),
        )
        .await;
    assert_eq!(s, 403, "{b}");

    let cashier = StaffClient::sign_in(&app, "cas@example.com", Role::Cashier).await;
    let user = app
        .state
        .store
        .staff_user_by_email("cas@example.com")
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .set_staff_limits(&user.id, Some(500), Some(5_000))
        .await
        .unwrap();
    let ops = (0..20).map(|i| {
        let cashier = &cashier;
        let id = id.clone();
        async move {
            let r = cashier
                .http
                .post(cashier.url(&format!("/scan/members/{id}/operations")))
                .header(COOKIE, &cashier.cookie)
                .json(&json!({"csrf": cashier.csrf, "kind": "purchase", "amount_minor": 40_000, "key": format!("scan-op-{i:04}")}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    let statuses = futures_join_all(ops).await;
    let ok = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(
        (ok, statuses.iter().filter(|s| **s == 403).count()),
        (12, 8),
        "{statuses:?}"
    );
    assert_eq!(moved().await, 9_600);
    assert_eq!(app.state.store.ledger_sum(&id).await.unwrap(), 9_600);
}

on_both_backends!(daily_limits_hold_under_concurrent_purchases);

/// A worker that panics is restarted, and the next change is still pushed; `/readyz` says so.
#[tokio::test]
async fn a_panicking_worker_is_restarted() {
    let (app, standin) = crate::push::app_with_standin(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let token = format!("{:064x}", 0xaa11);
    crate::push::register(&app, &member, "dev1", &token).await;
    let ready = || async {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, body) = ready().await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["workers"]["push"]["alive"], true);
    assert!(body["workers"]["push"]["last_ok"].is_i64(), "{body}");

    app.state.workers.make_panic("push");
    let mut restarted = json!(null);
    for _ in 0..500 {
        let (_, body) = ready().await;
        if body["workers"]["push"]["restarts"] == 1 && body["workers"]["push"]["alive"] == true {
            restarted = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        restarted["workers"]["push"]["last_failure"]
            .as_str()
            .unwrap_or_default()
            .contains("made to panic"),
        "{restarted}"
    );
    assert_eq!(crate::push::earn(&app, &member, "after", 5).await, 201);
    eventually("the change after the restart to be pushed", || {
        standin
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path == format!("/3/device/{token}"))
    })
    .await;
    assert_eq!(ready().await.0, 200);
    // Liveness stays cheap: no database work.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

/// Tills earning while a rules change republishes every holder's card: on PostgreSQL the
/// publish steps lock their members first, in id order, as postings do, so no earn dies in
/// a deadlock (40P01) or waits out a lock timeout; every earn lands once and every card changes.
async fn earns_during_a_publish_all_land(db: TestDb) {
    const HOLDERS: usize = 2_000;
    const EARNS: usize = 60;
    let app = TestApp::spawn(db).await;
    let first = issue_member(&app, "busy").await;
    let program_id = first["program_id"].as_str().unwrap();
    let template_id = first["pass"]["template_id"].as_str().unwrap();
    let store = &app.state.store;
    let program = store.get_program(program_id).await.unwrap();
    let template = store.get_template(template_id).await.unwrap();
    let holders = crate::helpers::add_holders(store, &program, &template, HOLDERS).await;

    let since = tessera::domain::now_ms();
    let r = app
        .client
        .put(app.url(&format!("/api/v1/programs/{program_id}/rules")))
        .bearer_auth(&app.admin_key)
        .json(&json!({"earn": {"points": 1, "per_minor": 100}, "expiry_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Two earns on each of 30 members spread over the holders, all at once with the job.
    let targets: Vec<&str> = (0..EARNS)
        .map(|k| holders[(k % 30) * (HOLDERS / 30)].0.id.as_str())
        .collect();
    let results = futures_join_all(targets.iter().enumerate().map(|(k, id)| {
        let path = format!("/api/v1/members/{id}/transactions");
        let app = &app;
        async move {
            // Fixed points and purchases (7.00 earns 7 under the new rules) alike.
            let body = if k % 2 == 0 {
                json!({"type": "earn", "points": 7})
            } else {
                json!({"type": "earn", "amount_minor": 700, "external_ref": format!("r{k}")})
            };
            app.post_idem(&path, &format!("busy-{k}"), body).await
        }
    }))
    .await;
    for (s, body) in &results {
        assert_eq!(*s, 201, "{body}");
    }
    publish_finished(store, template_id).await;
    assert_eq!(
        store
            .passes_changed_since(template_id, since)
            .await
            .unwrap(),
        HOLDERS as i64 + 1,
        "every card changed"
    );
    for id in targets.iter().take(30) {
        let member = store.get_member(id).await.unwrap();
        assert_eq!(member.points, 14, "two earns of 7 each");
        assert_eq!(store.ledger_sum(id).await.unwrap(), 14);
    }
}
on_both_backends!(earns_during_a_publish_all_land);

/// A PostgreSQL session holding a member's row lock, so that requests queue behind it on
/// purpose; `waiting` counts the database's sessions blocked on a lock.
struct MemberLock(sqlx::PgConnection);

impl MemberLock {
    async fn hold(url: &str, member_id: &str) -> MemberLock {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT 1 FROM members WHERE id = $1 FOR UPDATE")
            .bind(member_id)
            .execute(&mut conn)
            .await
            .unwrap();
        MemberLock(conn)
    }

    /// Returns once `n` other sessions wait on a lock (polled: a wait for a state, not a
    /// sleep in place of one).
    async fn until_waiting(&mut self, n: i64) {
        for _ in 0..500 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut self.0)
            .await
            .unwrap();
            if waiting >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT wait_event_type, wait_event, query FROM pg_stat_activity WHERE datname = current_database()",
        )
        .fetch_all(&mut self.0)
        .await
        .unwrap();
        panic!("{n} sessions never waited on the member's lock: {seen:#?}");
    }

    async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.0).await.unwrap();
    }
}

/// PostgreSQL: retries of one request that queue on the member's lock behind the first one are
/// replayed, even where a new request would now be refused (the day's limit used up, the
/// balance spent).
#[tokio::test]
async fn retries_queued_behind_the_first_request_are_replayed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "queued").await;
    let id = member["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/members/{id}/transactions");
    let (_, cashier) = tessera::api::auth::create_key(
        &app.state.store,
        "till",
        Role::Cashier,
        limits(None, Some(400)),
    )
    .await
    .unwrap();
    let same_request = |key: String, idem: &'static str, body: Value| {
        let (app, path) = (&app, path.clone());
        async move { app.post_idem_as(&key, &path, idem, body).await }
    };
    for (key, idem, body) in [
        // An earn of the whole day's limit, then a redemption of the whole balance.
        (&cashier, "day", json!({"type": "earn", "points": 400})),
        (
            &app.admin_key,
            "all",
            json!({"type": "redeem", "points": 400}),
        ),
    ] {
        let mut lock = MemberLock::hold(&url, &id).await;
        let answers = {
            let tries = (0..6).map(|_| same_request(key.clone(), idem, body.clone()));
            let answers = futures_join_all(tries);
            tokio::pin!(answers);
            tokio::select! {
                // Two queued on the lock are enough: the second runs after the first commits.
                _ = lock.until_waiting(2) => {}
                _ = &mut answers => panic!("the requests did not wait for the member's lock"),
            }
            lock.release().await;
            answers.await
        };
        for (s, body) in &answers {
            assert_eq!(*s, 201, "every retry replays the first answer: {body}");
        }
        let first = &answers[0].1;
        assert!(
            answers
                .iter()
                .all(|(_, b)| b["entry"]["id"] == first["entry"]["id"])
        );
    }
    let entries = app.state.store.list_entries(&id, None, 100).await.unwrap();
    assert_eq!(entries.len(), 2, "one earn and one redemption: {entries:?}");
    assert_eq!(app.state.store.get_member(&id).await.unwrap().points, 0);
}

/// PostgreSQL: a rules change that drops a tier cannot commit while a posting promotes a
/// member to it under the old rules: either the posting sees the new rules, or the change
/// sees the promotion and is refused. Members never hold a tier the rules lack.
#[tokio::test]
async fn a_rules_change_and_a_promotion_cannot_cross() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "tiers").await;
    let id = member["id"].as_str().unwrap().to_string();
    let program_id = member["program_id"].as_str().unwrap();
    let put_rules = |levels: Value| {
        let r = app
            .client
            .put(app.url(&format!("/api/v1/programs/{program_id}/rules")))
            .bearer_auth(&app.admin_key)
            .json(&json!({"earn": {"points": 1, "per_minor": 100},
                          "tiers": {"window_days": 365, "levels": levels}}))
            .send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let silver = json!({"id": "silver", "name": "Silver", "threshold": 0});
    let gold = json!({"id": "gold", "name": "Gold", "threshold": 1000, "multiplier_milli": 2000});
    assert_eq!(put_rules(json!([silver.clone(), gold])).await, 200);
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "silver",
            json!({"type": "earn", "points": 1}),
        )
        .await;
    assert_eq!(s, 201);

    let mut lock = MemberLock::hold(&url, &id).await;
    let path = format!("/api/v1/members/{id}/transactions");
    let earn = app.post_idem(&path, "gold", json!({"type": "earn", "points": 1000}));
    tokio::pin!(earn);
    tokio::select! {
        _ = lock.until_waiting(1) => {}
        _ = &mut earn => panic!("the earn did not wait for the member's lock"),
    }
    let change = put_rules(json!([silver]));
    tokio::pin!(change);
    // The change either commits now (the earn has not locked the program yet) or waits for
    // the earn; either way the holder lets go next.
    let changed = tokio::select! {
        s = &mut change => Some(s),
        _ = lock.until_waiting(2) => None,
    };
    lock.release().await;
    let (earned, _) = earn.await;
    let changed = match changed {
        Some(s) => s,
        None => change.await,
    };
    assert_eq!(earned, 201);
    let program = app.state.store.get_program(program_id).await.unwrap();
    let member = app.state.store.get_member(&id).await.unwrap();
    let tier = member.tier.as_deref().expect("a tier");
    assert!(
        program.rules.tier(Some(tier)).is_some(),
        "the member holds {tier:?}, which the rules lack (rules change answered {changed})"
    );
    match changed {
        200 => assert_eq!(tier, "silver"),
        422 => assert_eq!(tier, "gold"),
        other => panic!("the rules change answered {other}"),
    }
}
