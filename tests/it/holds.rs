//! Holds at checkout (issue 20): reserve, capture, void, expire; once each, on both backends,
//! under concurrent tills.

use std::sync::Arc;

use serde_json::{Value, json};

use tessera::ledger::{EntryKind, HoldState, Operation, Origin};
use tessera::storage::{Actor, NewHold, StorageError, Store};

use reqwest::header::COOKIE;
use tessera::storage::Role;

use crate::helpers::{StaffClient, TestApp, TestDb, issue_member, member_with_rules};
use crate::on_both_backends;

const T0: i64 = 1_800_000_000_000;

/// Balance = entries = lots, 0 <= held <= balance, and held = the open holds' points.
async fn assert_holds_invariants(store: &Store, member_id: &str) -> (i64, i64) {
    let balance = store.get_member(member_id).await.unwrap().points;
    let held = store.held_points(member_id).await.unwrap();
    assert_eq!(store.ledger_sum(member_id).await.unwrap(), balance);
    assert_eq!(store.lots_sum(member_id).await.unwrap(), balance);
    assert!(0 <= held && held <= balance, "held {held} of {balance}");
    assert_eq!(store.open_holds_sum(member_id).await.unwrap(), held);
    (balance, held)
}

async fn member_view(app: &TestApp, id: &str) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/members/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A member with `points` through the API; returns their id.
async fn funded(app: &TestApp, points: i64) -> String {
    let member = issue_member(app, "coffee").await;
    let id = member["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "seed",
            json!({"type": "earn", "points": points}),
        )
        .await;
    assert_eq!(s, 201);
    id
}

async fn hold_capture_and_void_over_http(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let id = funded(&app, 100).await;
    let store = &app.state.store;
    let holds = format!("/api/v1/members/{id}/holds");

    // A hold lowers the available balance, not the balance.
    let (s, hold) = app
        .post_idem(
            &holds,
            "h1",
            json!({"points": 60, "external_ref": "basket-1"}),
        )
        .await;
    assert_eq!(s, 201, "{hold}");
    assert_eq!(
        (hold["state"].as_str(), hold["points"].as_i64()),
        (Some("held"), Some(60))
    );
    let (s, again) = app
        .post_idem(
            &holds,
            "h1",
            json!({"points": 60, "external_ref": "basket-1"}),
        )
        .await;
    assert_eq!(
        (s, &again["id"]),
        (201, &hold["id"]),
        "a retry is the same hold"
    );
    let view = member_view(&app, &id).await;
    assert_eq!(
        (view["points"].as_i64(), view["available_points"].as_i64()),
        (Some(100), Some(40))
    );
    assert_eq!(assert_holds_invariants(store, &id).await, (100, 60));

    // A plain redemption cannot take held points.
    let (s, err) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "r1",
            json!({"type": "redeem", "points": 50}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(err["error"]["details"]["available"], 40);
    // Nor can a second hold.
    let (s, err) = app.post_idem(&holds, "h2", json!({"points": 41})).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (422, Some("insufficient_points"))
    );

    // A partial capture redeems 25 and releases the other 35.
    let hold_id = hold["id"].as_str().unwrap();
    let capture = format!("/api/v1/holds/{hold_id}/capture");
    let (s, over) = app.post_idem(&capture, "c0", json!({"points": 61})).await;
    assert_eq!(s, 422, "{over}");
    let (s, captured) = app.post_idem(&capture, "c1", json!({"points": 25})).await;
    assert_eq!(s, 200, "{captured}");
    assert_eq!(captured["hold"]["state"], "captured");
    assert_eq!(captured["hold"]["captured_points"], 25);
    assert_eq!(captured["transaction"]["balance"], 75);
    assert_eq!(captured["transaction"]["entry"]["type"], "redeem");
    assert_eq!(captured["transaction"]["entry"]["external_ref"], "basket-1");
    // A retry of the capture is the same capture; another capture or a void is refused.
    let (s, retried) = app.post_idem(&capture, "c1", json!({"points": 25})).await;
    assert_eq!((s, &retried), (200, &captured));
    let (s, err) = app.post_idem(&capture, "c2", json!({})).await;
    assert_eq!(
        (s, err["error"]["message"].as_str()),
        (409, Some("this hold is already captured"))
    );
    let (s, _) = app
        .post(&format!("/api/v1/holds/{hold_id}/void"), json!({}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(assert_holds_invariants(store, &id).await, (75, 0));
    let view = member_view(&app, &id).await;
    assert_eq!(view["available_points"], 75);

    // A void releases everything, once; voiding again answers the same hold.
    let (_, hold) = app.post_idem(&holds, "h3", json!({"points": 75})).await;
    let void = format!("/api/v1/holds/{}/void", hold["id"].as_str().unwrap());
    let (s, voided) = app.post(&void, json!({})).await;
    assert_eq!((s, voided["state"].as_str()), (200, Some("voided")));
    let (s, again) = app.post(&void, json!({})).await;
    assert_eq!(
        (s, again["resolved_at"].as_i64()),
        (200, voided["resolved_at"].as_i64())
    );
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/holds/{}/capture", hold["id"].as_str().unwrap()),
            "c3",
            json!({}),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(assert_holds_invariants(store, &id).await, (75, 0));
    let entries = store.list_entries(&id, None, 100).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind, e.points))
            .collect::<Vec<_>>(),
        [(EntryKind::Earn, 100), (EntryKind::Redeem, -25)],
        "holds write no entry; a capture writes one redemption"
    );
}

/// On a controlled clock: an open hold past its expiry is released; one not yet due is not;
/// points lapsing under a hold lapse only from the available part.
async fn holds_expire_on_a_controlled_clock(db: TestDb) {
    let store = db.store().await;
    let rules = tessera::ledger::LoyaltyRules {
        expiry_days: Some(1),
        ..Default::default()
    };
    let m = member_with_rules(&store, rules).await;
    store
        .post(
            &m.id,
            &Operation::EarnPoints { points: 100 },
            &Origin::default(),
            None,
            None,
            T0,
        )
        .await
        .unwrap();
    let hold = |points: i64, expires_at: i64| {
        let store = store.clone();
        let id = m.id.clone();
        async move {
            let new = NewHold {
                points,
                expires_at,
                external_ref: None,
            };
            store
                .create_hold(&id, &new, Actor::default(), None, T0)
                .await
                .unwrap()
                .0
        }
    };
    let early = hold(30, T0 + 60_000).await;
    let late = hold(50, T0 + 3 * 86_400_000).await;
    assert_eq!(store.expire_holds(T0 + 59_999, 100).await.unwrap(), 0);
    assert_eq!(store.expire_holds(T0 + 60_000, 100).await.unwrap(), 1);
    assert_eq!(
        store.get_hold(&early.id).await.unwrap().state,
        HoldState::Expired
    );
    assert_eq!(
        store.get_hold(&late.id).await.unwrap().state,
        HoldState::Held
    );
    assert_eq!(assert_holds_invariants(&store, &m.id).await, (100, 50));
    // An expired hold cannot be captured.
    let err = store
        .capture_hold(&early.id, None, Actor::default(), None, T0 + 70_000)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict(_)), "{err}");

    // Two days on the 100 points have lapsed, but 50 are held: only the other 50 lapse.
    let two_days = T0 + 2 * 86_400_000;
    assert_eq!(store.expire_due(two_days, 100).await.unwrap(), 1);
    assert_eq!(assert_holds_invariants(&store, &m.id).await, (50, 50));
    assert_eq!(
        store.expire_due(two_days, 100).await.unwrap(),
        0,
        "nothing more while held"
    );
    // The capture spends the held (lapsed) points.
    let (c, _) = store
        .capture_hold(&late.id, Some(20), Actor::default(), None, two_days + 1)
        .await
        .unwrap();
    assert_eq!(c.outcome.balance, 30);
    assert_eq!(assert_holds_invariants(&store, &m.id).await, (30, 0));
    // Released, the rest of the lapsed points lapse.
    assert_eq!(store.expire_due(two_days + 2, 100).await.unwrap(), 1);
    assert_eq!(assert_holds_invariants(&store, &m.id).await, (0, 0));
}

/// Tills racing on one member: holds, captures, voids and redemptions at once never make the
/// available balance negative, every hold resolves once, and balance = entries = lots.
async fn racing_tills_never_overdraw_and_resolve_each_hold_once(db: TestDb) {
    let app = Arc::new(TestApp::spawn(db).await);
    let id = funded(&app, 1_000).await;
    let holds = format!("/api/v1/members/{id}/holds");
    let redeem = format!("/api/v1/members/{id}/transactions");
    // 40 clients: each holds 40 then captures 30 of it, or holds and voids, or redeems 40.
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let (app, holds, redeem) = (app.clone(), holds.clone(), redeem.clone());
            tokio::spawn(async move {
                if i % 3 == 2 {
                    let (s, b) = app
                        .post_idem(
                            &redeem,
                            &format!("r{i}"),
                            json!({"type": "redeem", "points": 40}),
                        )
                        .await;
                    assert!(s == 201 || s == 422, "{s} {b}");
                    return (s == 201) as i64 * 40;
                }
                let (s, hold) = app
                    .post_idem(&holds, &format!("h{i}"), json!({"points": 40}))
                    .await;
                if s == 422 {
                    return 0;
                }
                assert_eq!(s, 201, "{hold}");
                let hid = hold["id"].as_str().unwrap();
                if i % 3 == 0 {
                    let (s, b) = app
                        .post_idem(
                            &format!("/api/v1/holds/{hid}/capture"),
                            &format!("c{i}"),
                            json!({"points": 30}),
                        )
                        .await;
                    assert_eq!(s, 200, "{b}");
                    30
                } else {
                    let (s, b) = app
                        .post(&format!("/api/v1/holds/{hid}/void"), json!({}))
                        .await;
                    assert_eq!(s, 200, "{b}");
                    0
                }
            })
        })
        .collect();
    let mut spent = 0;
    for c in clients {
        spent += c.await.unwrap();
    }
    let store = &app.state.store;
    assert_eq!(
        assert_holds_invariants(store, &id).await,
        (1_000 - spent, 0)
    );

    // One hold, captured and voided at once: exactly one wins.
    for round in 0..10 {
        let (s, hold) = app
            .post_idem(&holds, &format!("once-{round}"), json!({"points": 10}))
            .await;
        assert_eq!(s, 201, "{hold}");
        let hid = hold["id"].as_str().unwrap().to_string();
        let capture = {
            let (app, hid) = (app.clone(), hid.clone());
            tokio::spawn(async move {
                app.post_idem(
                    &format!("/api/v1/holds/{hid}/capture"),
                    &format!("cap-{round}"),
                    json!({}),
                )
                .await
                .0
            })
        };
        let void = {
            let (app, hid) = (app.clone(), hid.clone());
            tokio::spawn(async move {
                app.post(&format!("/api/v1/holds/{hid}/void"), json!({}))
                    .await
                    .0
            })
        };
        let outcomes = (capture.await.unwrap(), void.await.unwrap());
        assert!(
            outcomes == (200, 409) || outcomes == (409, 200),
            "{outcomes:?}"
        );
        let state = store.get_hold(&hid).await.unwrap().state;
        assert_eq!(state == HoldState::Captured, outcomes.0 == 200);
    }
    assert_holds_invariants(store, &id).await;
}

/// POSTs one of the cashier page's JSON calls.
async fn till(staff: &StaffClient, path: &str, mut body: Value) -> (u16, Value) {
    body["csrf"] = json!(staff.csrf);
    let r = staff
        .http
        .post(staff.url(path))
        .header(COOKIE, &staff.cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The cashier page pays with points: reserve, then confirm (capture) or cancel (void), within
/// the cashier's limits; a double tap on Confirm pays once.
async fn a_cashier_pays_with_points_or_cancels(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let id = funded(&app, 200).await;
    let store = &app.state.store;
    let cashier = StaffClient::sign_in(&app, "till@example.com", Role::Cashier).await;
    let user = store
        .staff_user_by_email("till@example.com")
        .await
        .unwrap()
        .unwrap();
    store
        .set_staff_limits(&user.id, Some(100), None)
        .await
        .unwrap();
    let (_, page) = cashier.get("/scan").await;
    assert!(page.contains(r#"<label for="pay-points">Pay with points</label>"#));

    let (s, hold) = till(
        &cashier,
        &format!("/scan/members/{id}/holds"),
        json!({"points": 80, "key": "pay-0001-abc"}),
    )
    .await;
    assert_eq!(s, 200, "{hold}");
    let hold_id = hold["hold_id"].as_str().unwrap().to_string();
    let (s, looked) = till(
        &cashier,
        "/scan/lookup",
        json!({"barcode": store.get_member(&id).await.unwrap().barcode}),
    )
    .await;
    assert_eq!(
        (
            s,
            looked["member"]["points"].as_i64(),
            looked["member"]["available"].as_i64()
        ),
        (200, Some(200), Some(120))
    );
    // Confirm, twice (a double tap): one redemption.
    let capture = format!("/scan/holds/{hold_id}/capture");
    let (s, paid) = till(&cashier, &capture, json!({"key": "cap-0001-abc"})).await;
    assert_eq!(
        (s, paid["balance"].as_i64(), paid["available"].as_i64()),
        (200, Some(120), Some(120)),
        "{paid}"
    );
    let (s, again) = till(&cashier, &capture, json!({"key": "cap-0001-abc"})).await;
    assert_eq!((s, &again["entry_id"]), (200, &paid["entry_id"]));
    assert_eq!(assert_holds_invariants(store, &id).await, (120, 0));

    // Cancel releases the points.
    let (_, hold) = till(
        &cashier,
        &format!("/scan/members/{id}/holds"),
        json!({"points": 50, "key": "pay-0002-abc"}),
    )
    .await;
    let (s, voided) = till(
        &cashier,
        &format!("/scan/holds/{}/void", hold["hold_id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_eq!((s, voided["available"].as_i64()), (200, Some(120)));

    // Past the cashier's limit per operation: the capture is refused and the hold stays open.
    let (_, hold) = till(
        &cashier,
        &format!("/scan/members/{id}/holds"),
        json!({"points": 110, "key": "pay-0003-abc"}),
    )
    .await;
    let big = hold["hold_id"].as_str().unwrap().to_string();
    let (s, err) = till(
        &cashier,
        &format!("/scan/holds/{big}/capture"),
        json!({"key": "cap-0003-abc"}),
    )
    .await;
    assert_eq!(s, 403, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("at most 100 points")
    );
    assert_eq!(store.get_hold(&big).await.unwrap().state, HoldState::Held);
    assert_eq!(assert_holds_invariants(store, &id).await, (120, 110));
    // A stranger's session cannot touch it.
    let other = StaffClient::sign_in(&app, "mkt@example.com", Role::Marketer).await;
    let (s, _) = till(&other, &format!("/scan/holds/{big}/void"), json!({})).await;
    assert_eq!(s, 403);
}

on_both_backends!(
    a_cashier_pays_with_points_or_cancels,
    hold_capture_and_void_over_http,
    holds_expire_on_a_controlled_clock,
    racing_tills_never_overdraw_and_resolve_each_hold_once,
);
