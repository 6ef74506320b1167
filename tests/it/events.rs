//! Events for the CRM (issue 19): the catalogue written in each change's own transaction,
//! the pull feed in order and resumable, and signed webhook deliveries (a receiver stand-in
//! verifies every signature), across retries, restarts and two instances.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::header::COOKIE;
use serde_json::{Value, json};
use tessera::storage::Role;

use crate::helpers::{StaffClient, TestApp, TestDb, another_member, issue_member, program_body};
use crate::on_both_backends;
use crate::push::register;

/// Polls a condition (which may `.await`) every 20 ms for up to 15 s.
macro_rules! until {
    ($what:expr, $cond:expr) => {{
        let mut met = false;
        for _ in 0..750 {
            if $cond {
                met = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(met, "timed out waiting for {}", $what);
    }};
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Every event of the feed from the start, page by page of `page`.
async fn feed(app: &TestApp, query: &str, page: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let (s, body) = get(
            app,
            &format!("/api/v1/events?limit={page}&after={after}{query}"),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        after = body["next_cursor"].as_str().unwrap().to_string();
        let n = items.len();
        out.extend(items);
        if n < page {
            return out;
        }
    }
}

/// The feed once it shows `n` events: on PostgreSQL an event shows once every transaction
/// older than it ended, and other tests' transactions run on the same server.
async fn settled(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    until!("the feed to settle", {
        events = feed(app, query, 3).await;
        events.len() >= n
    });
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

async fn post_tx(app: &TestApp, member: &str, key: &str, body: Value) -> Value {
    let (s, out) = app
        .post_idem(&format!("/api/v1/members/{member}/transactions"), key, body)
        .await;
    assert_eq!(s, 201, "{out}");
    out
}

/// A program with the demo rules (tiers at 500 and 2,000 points), a template and a member.
async fn demo_member(app: &TestApp) -> Value {
    let mut p = program_body("coffee");
    p["rules"] = serde_json::to_value(tessera::demo::rules()).unwrap();
    let (s, program) = app.post("/api/v1/programs", p).await;
    assert_eq!(s, 201, "{program}");
    let pid = program["id"].as_str().unwrap();
    let (s, t) = app
        .post(
            &format!("/api/v1/programs/{pid}/templates"),
            crate::helpers::template_body(),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, member) = app
        .post(
            &format!("/api/v1/programs/{pid}/members"),
            json!({"display_name": "Ada", "external_id": "crm-7"}),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    member
}

async fn every_change_writes_its_event_and_the_feed_replays_them_in_order(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = demo_member(&app).await;
    let id = member["id"].as_str().unwrap();
    let pid = member["program_id"].as_str().unwrap();

    post_tx(&app, id, "e1", json!({"type": "earn", "points": 300})).await;
    let promoted = post_tx(&app, id, "e2", json!({"type": "earn", "points": 250})).await;
    assert_eq!(promoted["tier"], "Silver");
    post_tx(&app, id, "r1", json!({"type": "redeem", "points": 100})).await;
    let adjusted = post_tx(
        &app,
        id,
        "a1",
        json!({"type": "adjust", "points": -10, "reason": "typo"}),
    )
    .await;
    let entry = adjusted["entry"]["id"].as_str().unwrap();
    post_tx(
        &app,
        id,
        "v1",
        json!({"type": "reversal", "entry_id": entry}),
    )
    .await;
    // Lapsed points: the expiry job's write, as of a year and a day later.
    let later = tessera::domain::now_ms() + 367 * 86_400_000;
    assert_eq!(app.state.store.expire_due(later, 10).await.unwrap(), 1);

    // A profile change, a device installing and removing the card.
    let etag = app
        .get_bytes(&format!("/api/v1/members/{id}"))
        .await
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/members/{id}")))
        .bearer_auth(&app.admin_key)
        .header("If-Match", etag)
        .json(&json!({"display_name": "Ada King"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    register(&app, &member, "phone", "abcd01").await;
    let pass = app
        .state
        .store
        .get_pass(member["pass"]["serial_number"].as_str().unwrap())
        .await
        .unwrap();
    let r = app
        .client
        .delete(app.url(&format!(
            "/passkit/v1/devices/phone/registrations/{}/{}",
            pass.pass_type_identifier, pass.serial_number
        )))
        .header(
            "Authorization",
            format!("ApplePass {}", pass.authentication_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A cashier scans the card.
    let cashier = StaffClient::sign_in(&app, "cas@example.com", Role::Cashier).await;
    let r = cashier
        .http
        .post(cashier.url("/scan/lookup"))
        .header(COOKIE, &cashier.cookie)
        .json(&json!({"csrf": cashier.csrf, "barcode": member["barcode"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Marketing withdrawn, then an erasure.
    let (s, body) = app
        .post(
            &format!("/api/v1/members/{id}/consents"),
            json!({"scope": "marketing"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = app
        .post(&format!("/api/v1/members/{id}/erase"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    // An import creates members too.
    app.import_csv(
        pid,
        "external_id,name,email,phone,points\ncrm-100,Grace,,,40\n".into(),
    )
    .await;

    let events = settled(&app, "", 16).await;
    assert_eq!(
        types(&events),
        [
            "member.created",
            "points.earned",
            "tier.changed",
            "points.earned",
            "tier.changed",
            "points.redeemed",
            "points.adjusted",
            "points.reversed",
            "points.expired",
            "member.updated",
            "card.installed",
            "card.removed",
            "scan.performed",
            "consent.changed",
            "member.erased",
            "member.created",
        ],
        "{events:#?}"
    );
    // Ids are unique, every event names the program and the schema version.
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids.len(), events.len());
    assert!(
        events
            .iter()
            .all(|e| e["program_id"] == pid && e["version"] == 1)
    );
    // The payloads' balances follow the ledger, entry by entry.
    let (s, ledger) = get(
        &app,
        &format!("/api/v1/members/{id}/transactions?limit=100"),
    )
    .await;
    assert_eq!(s, 200, "{ledger}");
    let mut entries: Vec<Value> = ledger["items"].as_array().unwrap().clone();
    entries.sort_by_key(|e| (e["created_at"].as_i64(), e["id"].as_str().map(String::from)));
    let points_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("points."))
        .collect();
    let mut balance = 0;
    for (e, entry) in points_events.iter().zip(&entries) {
        balance += entry["points"].as_i64().unwrap();
        assert_eq!(e["payload"]["entry_id"], entry["id"], "{e}");
        assert_eq!(e["payload"]["points"], entry["points"]);
        assert_eq!(e["payload"]["balance"], balance, "{e}");
    }
    assert_eq!(points_events.len(), entries.len());
    assert_eq!(events[4]["payload"]["tier"], "Silver");
    assert_eq!(events[4]["payload"]["tier_id"], "silver");
    assert_eq!(events[4]["payload"]["balance"], 550);
    assert_eq!(events[3]["payload"]["tier"], "Silver");
    assert_eq!(events[2]["payload"]["tier_id"], "bronze");
    assert_eq!(events[2]["payload"]["from_tier_id"], Value::Null);
    assert_eq!(events[9]["payload"]["fields"], json!(["display_name"]));
    assert_eq!(events[10]["payload"]["wallet"], "apple");
    assert_eq!(events[12]["payload"]["balance"], balance);
    assert_eq!(events[13]["payload"]["granted"], false);
    assert_eq!(events[14]["member_id"], id);
    assert_eq!(events[15]["payload"]["source"], "import");
    assert_eq!(events[15]["payload"]["balance"], 40);
    // The erasure took the external id out of the earlier event.
    assert_eq!(events[0]["payload"], json!({"erased": true}));
    assert!(!serde_json::to_string(&events).unwrap().contains("crm-7"));

    // Resuming from any event's cursor returns exactly the rest; a type filter only those.
    let (_, page) = get(
        &app,
        &format!(
            "/api/v1/events?after={}&limit=500",
            events[7]["cursor"].as_str().unwrap()
        ),
    )
    .await;
    let rest: Vec<Value> = page["items"].as_array().unwrap().clone();
    assert_eq!(rest, events[8..].to_vec());
    let earned = feed(&app, "&types=points.earned,tier.changed", 2).await;
    assert_eq!(
        types(&earned),
        [
            "points.earned",
            "tier.changed",
            "points.earned",
            "tier.changed"
        ]
    );
    // The feed's refusals name the problem.
    for (q, needle) in [
        ("after=nope", "cursor"),
        ("limit=501", "at most 500"),
        ("types=points.stolen", "unknown event type"),
    ] {
        let (s, body) = get(&app, &format!("/api/v1/events?{q}")).await;
        assert_eq!(s, 400, "{q}");
        assert!(body.to_string().contains(needle), "{q}: {body}");
    }
    // A cashier key may not read the feed.
    let cashier_key = app.key(Role::Cashier).await;
    let r = app
        .client
        .get(app.url("/api/v1/events"))
        .bearer_auth(cashier_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// A ledger write that fails in its last statement (a trigger refuses the balance) rolls back
/// with its event: the feed never shows it.
async fn a_rolled_back_ledger_change_writes_no_event(db: TestDb) {
    let postgres = db.url.starts_with("postgres");
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let store = &app.state.store;
    if postgres {
        store
            .execute_admin(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.points = 13 THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            )
            .await
            .unwrap();
        store
            .execute_admin(
                "CREATE TRIGGER boom BEFORE UPDATE ON members FOR EACH ROW EXECUTE FUNCTION boom()",
            )
            .await
            .unwrap();
    } else {
        store
            .execute_admin(
                "CREATE TRIGGER boom BEFORE UPDATE ON members WHEN NEW.points = 13
                 BEGIN SELECT RAISE(ABORT, 'boom'); END",
            )
            .await
            .unwrap();
    }
    post_tx(&app, id, "ok", json!({"type": "earn", "points": 10})).await;
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "fails",
            json!({"type": "earn", "points": 3}),
        )
        .await;
    assert_eq!(s, 500);
    post_tx(&app, id, "ok2", json!({"type": "earn", "points": 5})).await;
    let events = settled(&app, "&types=points.earned", 2).await;
    let balances: Vec<&Value> = events.iter().map(|e| &e["payload"]["balance"]).collect();
    assert_eq!(balances, [&json!(10), &json!(15)]);
    assert_eq!(store.ledger_sum(id).await.unwrap(), 15);

    // Kept `events.retention_days` (30): the retention job deletes them after that, not before.
    let all = settled(&app, "", 3).await.len() as u64;
    let now = tessera::domain::now_ms();
    let round = tessera::jobs::retention_once(&app.state, now + 29 * 86_400_000)
        .await
        .unwrap();
    assert_eq!(round.events, 0);
    let round = tessera::jobs::retention_once(&app.state, now + 31 * 86_400_000)
        .await
        .unwrap();
    assert_eq!(round.events, all);
    assert!(feed(&app, "", 10).await.is_empty());
}

on_both_backends!(
    every_change_writes_its_event_and_the_feed_replays_them_in_order,
    a_rolled_back_ledger_change_writes_no_event,
    webhooks_are_signed_retried_with_the_same_id_and_logged,
    deliveries_pending_when_the_server_dies_are_sent_after_restart,
    an_endpoint_failing_for_long_is_disabled,
);

/// The ordering trap on PostgreSQL: a transaction that took its place first (its xid) and
/// commits last must not be skipped by a reader that already moved past a later one.
#[tokio::test]
async fn a_late_commit_is_never_skipped_by_a_cursor() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let url = db.url.clone();
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap().to_string();
    let start = settled(&app, "", 1).await;
    let cursor = start.last().unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_string();

    // T1 begins and takes its transaction id, as a slow writer would.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut t1 = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *t1)
        .await
        .unwrap();
    // T2, a posting, begins and commits meanwhile.
    post_tx(&app, &id, "t2", json!({"type": "earn", "points": 2})).await;
    let (_, page) = get(&app, &format!("/api/v1/events?after={cursor}")).await;
    assert_eq!(
        page["items"],
        json!([]),
        "T2 waits until every older transaction ended"
    );
    assert_eq!(page["next_cursor"], cursor.as_str());
    // T1 writes its event now (a larger seq than T2's, a smaller xid) and commits.
    sqlx::query(
        "INSERT INTO events (id, type, version, program_id, member_id, payload, created_at, xid)
         SELECT 't1-event', 'points.earned', 1, program_id, id, '{}', 0, pg_current_xact_id()::text::bigint
         FROM members WHERE id = $1",
    )
    .bind(&id)
    .execute(&mut *t1)
    .await
    .unwrap();
    t1.commit().await.unwrap();

    let mut page = Value::Null;
    until!("both events", {
        page = get(&app, &format!("/api/v1/events?after={cursor}")).await.1;
        page["items"].as_array().unwrap().len() >= 2
    });
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["id"], "t1-event", "commit order of transactions");
    assert_eq!(items[1]["payload"]["points"], 2);
    let (_, rest) = get(
        &app,
        &format!(
            "/api/v1/events?after={}",
            items[0]["cursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap()[0], items[1]);
    pool.close().await;
}

/// What the receiver stand-in got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn event_id(&self) -> String {
        self.headers["tessera-event-id"]
            .to_str()
            .unwrap()
            .to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    /// Verifies the signature as a receiver would, now.
    fn verify(&self, secret: &str) -> Result<(), tessera::webhooks::VerifyError> {
        let header = self.headers["tessera-signature"].to_str().unwrap();
        let now = tessera::domain::now_ms() / 1000;
        tessera::webhooks::verify(secret, header, &self.body, now, 300)
    }
}

/// A local receiver: records every request and answers the scripted statuses, then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    /// Answer this to everything once the script ran out (200 when 0).
    fallback: Arc<std::sync::atomic::AtomicU16>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let me = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    me.got.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    let next = me.script.lock().unwrap().pop_front();
                    let status = next.unwrap_or(
                        match me.fallback.load(std::sync::atomic::Ordering::SeqCst) {
                            0 => 200,
                            s => s,
                        },
                    );
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }
    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
    fn of_type(&self, kind: &str) -> Vec<Received> {
        self.got()
            .into_iter()
            .filter(|r| r.headers["tessera-event-type"] == kind)
            .collect()
    }
}

async fn create_hook(app: &TestApp, url: &str, events: Value) -> (String, String) {
    let (s, hook) = app
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "events": events, "description": "CRM"}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    (
        hook["id"].as_str().unwrap().to_string(),
        hook["secret"].as_str().unwrap().to_string(),
    )
}

fn fast(c: &mut tessera::config::Config) {
    c.events.poll_ms = 20;
    c.events.delivery_timeout_ms = 2_000;
}

async fn webhooks_are_signed_retried_with_the_same_id_and_logged(db: TestDb) {
    let app = TestApp::spawn_with(db, fast).await;
    let receiver = Receiver::start().await;
    // Refusals name the problem.
    for (body, needle) in [
        (json!({"url": "ftp://crm.example/x"}), "http or https"),
        (json!({"url": "not a url"}), "not a URL"),
        (
            json!({"url": "https://crm.example/", "events": ["points.stolen"]}),
            "points.stolen",
        ),
    ] {
        let (s, out) = app.post("/api/v1/webhooks", body.clone()).await;
        assert!(s == 400 || s == 422, "{body}: {s} {out}");
        assert!(out.to_string().contains(needle), "{out}");
    }
    let (hook, secret) = create_hook(&app, &receiver.url, json!(["points.earned"])).await;
    let (_, list) = get(&app, "/api/v1/webhooks").await;
    assert_eq!(list["items"][0]["id"], hook.as_str());
    assert!(list["items"][0].get("secret").is_none(), "shown once only");

    // The first attempt is answered 500, the second 200: the same event id comes twice.
    receiver.script.lock().unwrap().push_back(500);
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    post_tx(&app, id, "e1", json!({"type": "earn", "points": 7})).await;
    until!("the retry", receiver.got().len() >= 2);
    let got = receiver.got();
    assert_eq!(
        got.len(),
        2,
        "only the wanted type, delivered once after the retry"
    );
    assert_eq!(got[0].event_id(), got[1].event_id());
    assert_eq!(got[1].json()["id"], got[1].event_id().as_str());
    assert_eq!(got[1].json()["type"], "points.earned");
    assert_eq!(got[1].json()["payload"]["balance"], 7);
    for r in &got {
        assert_eq!(r.verify(&secret), Ok(()));
        assert_eq!(
            r.verify("whsec_wrong"),
            Err(tessera::webhooks::VerifyError::Mismatch)
        );
        // Replayed ten minutes later, the same request is refused as old.
        let header = r.headers["tessera-signature"].to_str().unwrap();
        let later = tessera::domain::now_ms() / 1000 + 600;
        assert_eq!(
            tessera::webhooks::verify(&secret, header, &r.body, later, 300),
            Err(tessera::webhooks::VerifyError::Stale)
        );
    }
    // The delivery log tells it.
    let log_path = format!("/api/v1/webhooks/{hook}/deliveries");
    until!("the log", {
        get(&app, &log_path).await.1["items"][0]["status"] == "delivered"
    });
    let (_, log) = get(&app, &log_path).await;
    let d = &log["items"][0];
    assert_eq!(d["attempts"], 2, "{log}");
    assert_eq!(d["last_status"], 200);
    assert!(d["latency_ms"].as_i64().is_some());
    assert_eq!(d["event_id"], got[0].event_id().as_str());

    // A ping is signed and answered; a redelivery sends the event again with its id.
    let (s, ping) = app
        .post(&format!("/api/v1/webhooks/{hook}/ping"), json!({}))
        .await;
    assert_eq!(s, 200, "{ping}");
    assert_eq!(ping["ok"], true);
    let pings = receiver.of_type("ping");
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].verify(&secret), Ok(()));
    let event_id = got[0].event_id();
    let (s, out) = app
        .post(
            &format!("/api/v1/webhooks/{hook}/redeliver"),
            json!({"event_id": event_id}),
        )
        .await;
    assert_eq!(s, 202, "{out}");
    until!("the redelivery", {
        receiver.of_type("points.earned").len() == 3
    });
    assert_eq!(receiver.of_type("points.earned")[2].event_id(), event_id);
    // A replay from an hour ago sends every wanted event again.
    post_tx(&app, id, "e2", json!({"type": "earn", "points": 1})).await;
    until!("the second event", {
        receiver.of_type("points.earned").len() == 4
    });
    let (s, out) = app
        .post(
            &format!("/api/v1/webhooks/{hook}/replay"),
            json!({"from": "1h"}),
        )
        .await;
    assert_eq!(s, 202, "{out}");
    assert_eq!(out["queued"], 2);
    until!("the replay", {
        receiver.of_type("points.earned").len() == 6
    });

    // Deleting the endpoint stops its deliveries.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{hook}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = get(&app, &format!("/api/v1/webhooks/{hook}")).await;
    assert_eq!(s, 404);
}

async fn an_endpoint_failing_for_long_is_disabled(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| {
        fast(c);
        c.events.disable_after_hours = 0;
    })
    .await;
    let failing = Receiver::start().await;
    failing
        .fallback
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let (hook, _) = create_hook(&app, &failing.url, json!([])).await;
    issue_member(&app, "coffee").await;
    let path = format!("/api/v1/webhooks/{hook}");
    until!("the endpoint disabled", {
        !get(&app, &path).await.1["disabled_at"].is_null()
    });
    let (_, shown) = get(&app, &path).await;
    assert!(shown["failing_since"].as_i64().is_some(), "{shown}");
    // Staff admins see the notice on their home page.
    let admin = StaffClient::sign_in(&app, "admin@example.com", Role::Admin).await;
    let (s, home) = admin.get("/staff").await;
    assert_eq!(s, 200);
    assert!(home.contains("disabled-webhooks"), "{home}");
    assert!(
        home.contains(&format!("CRM (127.0.0.1, id {hook})")),
        "{home}"
    );
    let tries = failing.got().len();
    assert!(tries >= 2, "failed twice before it was disabled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        failing.got().len(),
        tries,
        "nothing goes to a disabled endpoint"
    );
    // Enabled again, its pending delivery goes out.
    failing
        .fallback
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let (s, body) = app.post(&format!("{path}/enable"), json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["disabled_at"].is_null());
    until!("the delivery", {
        get(&app, &format!("{path}/deliveries")).await.1["items"][0]["status"] == "delivered"
    });
}

/// The receiver is down while the server runs (every attempt 503); the server dies with the
/// delivery pending; a new server on the database delivers it once the receiver is back.
async fn deliveries_pending_when_the_server_dies_are_sent_after_restart(db: TestDb) {
    let tweak = |c: &mut tessera::config::Config| {
        fast(c);
        c.server.worker_lease_ms = 1_000;
    };
    let mut app = TestApp::spawn_with(db, tweak).await;
    let receiver = Receiver::start().await;
    receiver
        .fallback
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let (hook, secret) = create_hook(&app, &receiver.url, json!(["points.earned"])).await;
    let member = issue_member(&app, "coffee").await;
    post_tx(
        &app,
        member["id"].as_str().unwrap(),
        "e1",
        json!({"type": "earn", "points": 4}),
    )
    .await;
    until!("a failed attempt", !receiver.got().is_empty());
    app.kill();
    let tried = receiver.got().len();
    receiver
        .fallback
        .store(200, std::sync::atomic::Ordering::SeqCst);

    let next = app.peer(tweak).await;
    until!("the delivery after the restart", {
        receiver.got().last().is_some_and(|r| {
            r.headers
                .get("tessera-event-type")
                .is_some_and(|t| t == "points.earned")
        }) && get(&next, &format!("/api/v1/webhooks/{hook}/deliveries"))
            .await
            .1["items"][0]["status"]
            == "delivered"
    });
    let got = receiver.got();
    assert!(got.len() > tried);
    let ids: std::collections::HashSet<String> = got.iter().map(Received::event_id).collect();
    assert_eq!(ids.len(), 1, "one event, the same id on every attempt");
    assert_eq!(got.last().unwrap().verify(&secret), Ok(()));
    drop(next);
}

/// Two instances on one PostgreSQL database, both running the webhook worker: each event
/// reaches each endpoint once.
#[tokio::test]
async fn two_instances_deliver_each_event_to_each_endpoint_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let app = TestApp::spawn_with(db, fast).await;
    let peer = app.peer(fast).await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    create_hook(&app, &a.url, json!([])).await;
    create_hook(&peer, &b.url, json!(["points.earned"])).await;
    let member = issue_member(&app, "coffee").await;
    let other = another_member(&peer, &member).await;
    let mut posts = Vec::new();
    for i in 0..20 {
        let (target, m) = if i % 2 == 0 {
            (&app, &member)
        } else {
            (&peer, &other)
        };
        let path = format!("/api/v1/members/{}/transactions", m["id"].as_str().unwrap());
        posts.push(async move {
            let (s, _) = target
                .post_idem(
                    &path,
                    &format!("k{i}"),
                    json!({"type": "earn", "points": 1}),
                )
                .await;
            assert_eq!(s, 201);
        });
    }
    crate::helpers::futures_join_all(posts.into_iter()).await;
    // Receiver a wants everything: 2 members created and 20 earnings; b the earnings.
    until!("every delivery", {
        a.got().len() >= 22 && b.got().len() >= 20
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (r, n) in [(&a, 22), (&b, 20)] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for got in r.got() {
            *seen.entry(got.event_id()).or_default() += 1;
        }
        assert_eq!(seen.len(), n);
        assert!(seen.values().all(|c| *c == 1), "each once: {seen:?}");
    }
    drop(peer);
}
