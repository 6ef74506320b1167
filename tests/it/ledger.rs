//! The points ledger through storage and through the REST API, on SQLite and PostgreSQL.

use std::sync::Arc;

use serde_json::{Value, json};

use tessera::ledger::{EntryKind, LoyaltyRules, Operation, Origin};
use tessera::storage::{Role, StorageError, Store};

use crate::helpers::{TestApp, TestDb, issue_member, limits, member_with_rules};
use crate::on_both_backends;

const DAY: i64 = 86_400_000;
/// A fixed clock far from "now", so expiry and tier windows are deterministic.
const T0: i64 = 1_800_000_000_000;

fn purchase(reference: &str) -> Origin {
    Origin {
        external_ref: Some(reference.into()),
        channel: Some("pos".into()),
        store_id: Some("s1".into()),
        partner_id: None,
    }
}

/// Balance = sum of entries = sum of lots, and never below zero.
async fn assert_invariants(store: &Store, member_id: &str) -> i64 {
    let balance = store.get_member(member_id).await.unwrap().points;
    assert!(balance >= 0);
    assert_eq!(
        store.ledger_sum(member_id).await.unwrap(),
        balance,
        "balance = sum of entries"
    );
    assert_eq!(
        store.lots_sum(member_id).await.unwrap(),
        balance,
        "balance = sum of lots"
    );
    balance
}

async fn earn_redeem_refund_reverse_and_tiers(db: TestDb) {
    let store = db.store().await;
    let m = member_with_rules(&store, tessera::demo::rules()).await;
    let post = |op: Operation, origin: Origin, at: i64| {
        let store = store.clone();
        let id = m.id.clone();
        async move { store.post(&id, &op, &origin, None, None, at).await }
    };
    // 1 point per 100 minor units: a 450.00 purchase earns 450 points, Bronze.
    let (o, _) = post(
        Operation::EarnPurchase {
            amount_minor: 45_000,
        },
        purchase("order-1"),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        (o.entry.points, o.balance, o.tier.as_deref()),
        (450, 450, Some("Bronze"))
    );
    assert_eq!(o.entry.origin.store_id.as_deref(), Some("s1"));
    // 100 more crosses 500: Silver, which earns 1.2x from the next purchase on.
    let (o, _) = post(
        Operation::EarnPurchase {
            amount_minor: 10_000,
        },
        purchase("order-2"),
        T0 + 1,
    )
    .await
    .unwrap();
    assert_eq!((o.balance, o.tier.as_deref()), (550, Some("Silver")));
    let (o, _) = post(
        Operation::EarnPurchase {
            amount_minor: 10_000,
        },
        purchase("order-3"),
        T0 + 2,
    )
    .await
    .unwrap();
    assert_eq!(o.entry.points, 120, "Silver earns 1.2x");

    // Redeeming more than the balance writes nothing and names what is available.
    let before = store.list_entries(&m.id, None, 100).await.unwrap().len();
    let err = post(
        Operation::Redeem { points: 10_000 },
        Origin::default(),
        T0 + 3,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StorageError::Insufficient { available: 670 }),
        "{err}"
    );
    assert_eq!(
        store.list_entries(&m.id, None, 100).await.unwrap().len(),
        before
    );

    // Refund half of order-1: takes back half of its 450 points; the other half later.
    let (o, _) = post(
        Operation::Refund {
            amount_minor: 22_500,
        },
        purchase("order-1"),
        T0 + 4,
    )
    .await
    .unwrap();
    assert_eq!((o.entry.points, o.balance), (-225, 445));
    let err = post(
        Operation::Refund {
            amount_minor: 22_501,
        },
        purchase("order-1"),
        T0 + 5,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StorageError::Rejected(_)),
        "refunding more than the purchase: {err}"
    );
    let (o, _) = post(
        Operation::Refund {
            amount_minor: 22_500,
        },
        purchase("order-1"),
        T0 + 6,
    )
    .await
    .unwrap();
    assert_eq!(o.entry.points, -225, "never more than was earned in total");
    let err = post(
        Operation::Refund { amount_minor: 1 },
        purchase("order-404"),
        T0 + 7,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StorageError::NotFound(_)), "{err}");

    // Spend most of it, then refund order-3: only what is left can be taken back.
    let (o, _) = post(Operation::Redeem { points: 200 }, Origin::default(), T0 + 8)
        .await
        .unwrap();
    assert_eq!(o.balance, 20);
    let (o, _) = post(
        Operation::Refund {
            amount_minor: 10_000,
        },
        purchase("order-3"),
        T0 + 9,
    )
    .await
    .unwrap();
    assert_eq!((o.entry.points, o.uncollected, o.balance), (-20, 100, 0));

    // Reversals undo one entry once; a reversal is not reversible itself.
    let (earned, _) = post(
        Operation::EarnPoints { points: 70 },
        Origin::default(),
        T0 + 10,
    )
    .await
    .unwrap();
    let (redeem, _) = post(Operation::Redeem { points: 30 }, Origin::default(), T0 + 11)
        .await
        .unwrap();
    let (rev, _) = post(
        Operation::Reverse {
            entry_id: redeem.entry.id.clone(),
        },
        Origin::default(),
        T0 + 12,
    )
    .await
    .unwrap();
    assert_eq!((rev.entry.points, rev.balance), (30, 70));
    assert_eq!(rev.entry.kind, EntryKind::Reversal);
    let again = post(
        Operation::Reverse {
            entry_id: redeem.entry.id.clone(),
        },
        Origin::default(),
        T0 + 13,
    )
    .await;
    assert!(matches!(again, Err(StorageError::Rejected(_))));
    let meta = post(
        Operation::Reverse {
            entry_id: rev.entry.id.clone(),
        },
        Origin::default(),
        T0 + 14,
    )
    .await;
    assert!(matches!(meta, Err(StorageError::Rejected(_))));
    let (o, _) = post(
        Operation::Reverse {
            entry_id: earned.entry.id.clone(),
        },
        Origin::default(),
        T0 + 15,
    )
    .await
    .unwrap();
    assert_eq!(o.balance, 0);
    let refunded = post(
        Operation::Reverse {
            entry_id: "nope".into(),
        },
        Origin::default(),
        T0 + 16,
    )
    .await;
    assert!(matches!(refunded, Err(StorageError::NotFound(_))));

    // Tiers never move down on their own. Members hold the tier's id.
    assert_eq!(
        store.get_member(&m.id).await.unwrap().tier.as_deref(),
        Some("silver")
    );
    assert_invariants(&store, &m.id).await;
}

async fn points_expire_oldest_first(db: TestDb) {
    let store = db.store().await;
    let rules = LoyaltyRules {
        expiry_days: Some(30),
        ..Default::default()
    };
    let m = member_with_rules(&store, rules.clone()).await;
    let earn = |points, at| {
        let store = store.clone();
        let id = m.id.clone();
        async move {
            store
                .post(
                    &id,
                    &Operation::EarnPoints { points },
                    &Origin::default(),
                    None,
                    None,
                    at,
                )
                .await
                .unwrap()
        }
    };
    earn(100, T0).await;
    earn(50, T0 + 10 * DAY).await;
    // Spending 80 takes from the oldest lot: 20 of the first and all 50 of the second are left.
    store
        .post(
            &m.id,
            &Operation::Redeem { points: 80 },
            &Origin::default(),
            None,
            None,
            T0 + 11 * DAY,
        )
        .await
        .unwrap();

    let standing = store
        .member_standing(&m.id, &rules, T0 + 11 * DAY)
        .await
        .unwrap();
    let (at, points) = standing.next_expiry.unwrap();
    assert_eq!(points, 20);
    assert!(
        at > T0 + 30 * DAY && at <= T0 + 32 * DAY,
        "end of the UTC day 30 days on"
    );

    assert_eq!(
        store.expire_due(T0 + 20 * DAY, 100).await.unwrap(),
        0,
        "nothing lapsed yet"
    );
    assert_eq!(store.expire_due(T0 + 32 * DAY, 100).await.unwrap(), 1);
    let entries = store.list_entries(&m.id, None, 100).await.unwrap();
    let expire = entries
        .iter()
        .find(|e| e.kind == EntryKind::Expire)
        .unwrap();
    assert_eq!(expire.points, -20);
    assert_eq!(assert_invariants(&store, &m.id).await, 50);
    assert_eq!(
        store.expire_due(T0 + 32 * DAY, 100).await.unwrap(),
        0,
        "expiring twice writes nothing"
    );
    store.expire_due(T0 + 60 * DAY, 100).await.unwrap();
    assert_eq!(assert_invariants(&store, &m.id).await, 0);
    assert_eq!(
        store
            .member_standing(&m.id, &rules, T0 + 60 * DAY)
            .await
            .unwrap()
            .next_expiry,
        None
    );
}

/// 50 concurrent clients redeem 30 points each from a balance of 1,000 through the API:
/// exactly 33 succeed, the rest get 422, and the ledger agrees with the balance.
async fn concurrent_redeems_never_overdraw(db: TestDb) {
    let app = Arc::new(TestApp::spawn(db).await);
    let member = issue_member(&app, "coffee").await;
    let path = format!(
        "/api/v1/members/{}/transactions",
        member["id"].as_str().unwrap()
    );
    let (s, _) = app
        .post_idem(&path, "seed", json!({"type": "earn", "points": 1000}))
        .await;
    assert_eq!(s, 201);
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            let path = path.clone();
            tokio::spawn(async move {
                app.post_idem(
                    &path,
                    &format!("redeem-{i}"),
                    json!({"type": "redeem", "points": 30}),
                )
                .await
            })
        })
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for c in clients {
        let (status, body) = c.await.unwrap();
        match status {
            201 => accepted += 1,
            422 => {
                assert_eq!(body["error"]["code"], "insufficient_points");
                assert!(body["error"]["details"]["available"].as_i64().unwrap() < 30);
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((accepted, refused), (33, 17));
    let id = member["id"].as_str().unwrap();
    assert_eq!(assert_invariants(&app.state.store, id).await, 10);
    let entries = app.state.store.list_entries(id, None, 100).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == EntryKind::Redeem)
            .count(),
        33
    );
}

async fn idempotent_retries_credit_once(db: TestDb) {
    let app = Arc::new(TestApp::spawn(db).await);
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/members/{id}/transactions");
    let body = json!({"type": "earn", "amount_minor": 12_345, "external_ref": "order-9"});
    let (s1, first) = app.post_idem(&path, "pos-42", body.clone()).await;
    let (s2, second) = app.post_idem(&path, "pos-42", body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "a retry returns the original result");
    assert_eq!(first["balance"], 123);

    // Same key, other body: 409, nothing written.
    let (s, err) = app
        .post_idem(
            &path,
            "pos-42",
            json!({"type": "earn", "amount_minor": 99_999}),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    // Keys are scoped per API client: another key may use the same Idempotency-Key.
    let other = app.key(Role::Integration).await;
    let (s, _) = app
        .post_idem_as(&other, &path, "pos-42", body.clone())
        .await;
    assert_eq!(s, 201);
    assert_eq!(assert_invariants(&app.state.store, &id).await, 246);

    // Ten concurrent retries of one new request write one entry.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            let path = path.clone();
            tokio::spawn(async move {
                app.post_idem(&path, "burst", json!({"type": "earn", "points": 5}))
                    .await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, 201, "{b}");
        ids.insert(b["entry"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "every retry got the same entry");
    assert_eq!(assert_invariants(&app.state.store, &id).await, 251);
}

on_both_backends!(
    earn_redeem_refund_reverse_and_tiers,
    points_expire_oldest_first,
    concurrent_redeems_never_overdraw,
    idempotent_retries_credit_once,
);

/// Every error case answers in the one error shape and changes nothing.
#[tokio::test]
async fn transaction_errors_change_nothing() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let path = format!("/api/v1/members/{id}/transactions");
    let (s, _) = app
        .post_idem(&path, "seed", json!({"type": "earn", "points": 100}))
        .await;
    assert_eq!(s, 201);
    let entries = || async {
        app.state
            .store
            .list_entries(id, None, 100)
            .await
            .unwrap()
            .len()
    };
    let before = entries().await;

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"type": "earn", "points": 0}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "earn", "points": -5}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "redeem", "points": 1_000_000_000_001i64}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "earn", "amount_minor": 1e30}),
            400,
            "invalid_body",
        ),
        (
            json!({"type": "earn", "amount_minor": 100, "points": 1}),
            400,
            "validation_failed",
        ),
        (json!({"type": "redeem"}), 400, "validation_failed"),
        (
            json!({"type": "refund", "amount_minor": 100}),
            400,
            "validation_failed",
        ),
        (
            json!({"type": "adjust", "points": 5}),
            400,
            "validation_failed",
        ),
        (json!({"type": "reversal"}), 400, "validation_failed"),
        (
            json!({"type": "teleport", "points": 1}),
            400,
            "invalid_body",
        ),
        (
            json!({"type": "earn", "points": 1, "colour": "red"}),
            400,
            "invalid_body",
        ),
        (
            json!({"type": "redeem", "points": 101}),
            422,
            "insufficient_points",
        ),
        (
            json!({"type": "refund", "amount_minor": 5, "external_ref": "nope"}),
            404,
            "not_found",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let (s, err) = app
            .post_idem(&path, &format!("bad-{i}"), body.clone())
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} -> {err}"
        );
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (s, err) = app
        .post_idem(
            "/api/v1/members/nope/transactions",
            "x",
            json!({"type": "earn", "points": 1}),
        )
        .await;
    assert_eq!((s, err["error"]["code"].as_str()), (404, Some("not_found")));

    // No Idempotency-Key, bad JSON, no API key, wrong role, the cashier's limit.
    let (s, err) = app.post(&path, json!({"type": "earn", "points": 1})).await;
    assert_eq!(s, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    let r = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin_key)
        .header("Idempotency-Key", "j")
        .header("content-type", "application/json")
        .body("{\"type\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url(&path))
        .header("Idempotency-Key", "k")
        .json(&json!({"type": "earn", "points": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let marketer = app.key(Role::Marketer).await;
    let (s, err) = app
        .post_idem_as(&marketer, &path, "m", json!({"type": "earn", "points": 1}))
        .await;
    assert_eq!((s, err["error"]["code"].as_str()), (403, Some("forbidden")));
    let (_, cashier) = tessera::api::auth::create_key(
        &app.state.store,
        "till 3",
        Role::Cashier,
        limits(Some(50), None),
    )
    .await
    .unwrap();
    let (s, err) = app
        .post_idem_as(
            &cashier,
            &path,
            "c1",
            json!({"type": "redeem", "points": 51}),
        )
        .await;
    assert_eq!(s, 403, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 50 points")
    );
    let (s, _) = app
        .post_idem_as(
            &cashier,
            &path,
            "c2",
            json!({"type": "adjust", "points": 5, "reason": "x"}),
        )
        .await;
    assert_eq!(s, 403, "cashiers cannot adjust");
    assert_eq!(entries().await, before, "no error wrote an entry");

    let (s, ok) = app
        .post_idem_as(
            &cashier,
            &path,
            "c3",
            json!({"type": "redeem", "points": 50}),
        )
        .await;
    assert_eq!((s, ok["balance"].as_i64()), (201, Some(50)));
}

#[tokio::test]
async fn member_views_pages_and_keys() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let (_, program) = app
        .post("/api/v1/programs", {
            let mut p = crate::helpers::program_body("coffee");
            p["rules"] = serde_json::to_value(tessera::demo::rules()).unwrap();
            p
        })
        .await;
    let pid = program["id"].as_str().unwrap();
    assert_eq!(program["rules"]["tiers"]["levels"][1]["name"], "Silver");
    let (s, _) = app
        .post(
            &format!("/api/v1/programs/{pid}/templates"),
            crate::helpers::template_body(),
        )
        .await;
    assert_eq!(s, 201);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, m) = app
            .post(
                &format!("/api/v1/programs/{pid}/members"),
                json!({"display_name": format!("M{i}"), "external_id": format!("crm-{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let path = format!("/api/v1/members/{}/transactions", ids[0]);
    app.post_idem(
        &path,
        "a",
        json!({"type": "earn", "amount_minor": 30_000, "external_ref": "o1"}),
    )
    .await;
    app.post_idem(&path, "b", json!({"type": "redeem", "points": 100}))
        .await;

    let get = |p: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url(&p))
                .bearer_auth(&app.admin_key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let view = get(format!("/api/v1/members/{}", ids[0])).await;
    assert_eq!(view["points"], 200);
    assert_eq!(view["tier"], "Bronze");
    assert_eq!(view["tier_progress"]["next_tier"], "Silver");
    assert_eq!(view["tier_progress"]["to_next_tier"], 200);
    assert_eq!(view["next_expiry"]["points"], 200);
    assert!(view["next_expiry"]["date"].as_str().unwrap().len() == 10);

    let found =
        get("/api/v1/members?barcode=".to_string() + view["barcode"].as_str().unwrap()).await;
    assert_eq!(found["id"], ids[0]);
    let found = get(format!(
        "/api/v1/members?program_id={pid}&external_id=crm-3"
    ))
    .await;
    assert_eq!(found["id"], ids[3]);
    let r = app
        .client
        .get(app.url("/api/v1/members?barcode=NOPE"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Pages of 2 walk all five members once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p = format!("/api/v1/programs/{pid}/members?limit=2");
        if let Some(c) = &cursor {
            p += &format!("&cursor={c}");
        }
        let page = get(p).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let tx = get(format!("/api/v1/members/{}/transactions?limit=1", ids[0])).await;
    assert_eq!(tx["items"][0]["type"], "earn");
    assert_eq!(tx["items"][0]["external_ref"], "o1");
    assert!(tx["next_cursor"].is_string());
    let passes = get(format!("/api/v1/members/{}/passes", ids[0])).await;
    assert!(
        passes["items"][0]["pass_url"]
            .as_str()
            .unwrap()
            .contains("/passes/")
    );
    let bad = app
        .client
        .get(app.url(&format!("/api/v1/programs/{pid}/members?limit=500")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Program rules can change (the tiers members hold stay); invalid rules are refused by name.
    let mut rules = serde_json::to_value(tessera::demo::rules()).unwrap();
    rules["earn"]["points"] = json!(2);
    rules["expiry_days"] = json!(null);
    let rules_url = app.url(&format!("/api/v1/programs/{pid}/rules"));
    let r = app
        .client
        .put(&rules_url)
        .bearer_auth(&app.admin_key)
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.put(&rules_url).bearer_auth(&app.admin_key)
        .json(&json!({"earn": {"points": 2, "per_minor": 100}, "tiers": {"window_days": 365, "levels": []}}))
        .send().await.unwrap();
    assert_eq!(r.status(), 422, "a member holds a tier these rules drop");
    let r = app
        .client
        .put(app.url(&format!("/api/v1/programs/{pid}/rules")))
        .bearer_auth(&app.admin_key)
        .json(&json!({"earn": {"points": 1, "per_minor": 0}, "tiers": {"window_days": 365}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // API keys through the API: created (shown once), listed without secrets, revoked.
    let (s, key) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "till 1", "role": "cashier", "max_points": 200}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let secret = key["key"].as_str().unwrap();
    let listed = get("/api/v1/api-keys".into()).await;
    assert!(
        !listed
            .to_string()
            .contains(secret.rsplit('_').next().unwrap()),
        "secrets never listed"
    );
    let (s, _) = app
        .post_idem_as(secret, &path, "t1", json!({"type": "earn", "points": 5}))
        .await;
    assert_eq!(s, 201);
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap())))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = app
        .post_idem_as(secret, &path, "t2", json!({"type": "earn", "points": 5}))
        .await;
    assert_eq!(s, 401);
    let (s, _) = app
        .post("/api/v1/api-keys", json!({"name": "x", "role": "wizard"}))
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn every_change_writes_one_outbox_row_and_bumps_the_pass() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let m = member_with_rules(&store, LoyaltyRules::default()).await;
    let pass = store.pass_for_member(&m.id).await.unwrap();
    store
        .post(
            &m.id,
            &Operation::EarnPoints { points: 10 },
            &Origin::default(),
            None,
            None,
            pass.updated_at + 5,
        )
        .await
        .unwrap();
    let after = store.pass_for_member(&m.id).await.unwrap();
    // At least the change's time, and in a later whole second than the version before.
    assert!(after.updated_at >= pass.updated_at + 5);
    assert!(after.updated_at / 1000 > pass.updated_at / 1000);
    assert_eq!(store.pending_outbox(10).await.unwrap().len(), 1);
    // A refused change leaves no outbox row.
    let _ = store
        .post(
            &m.id,
            &Operation::Redeem { points: 11 },
            &Origin::default(),
            None,
            None,
            after.updated_at + 1,
        )
        .await;
    assert_eq!(store.pending_outbox(10).await.unwrap().len(), 1);
}
