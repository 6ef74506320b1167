//! The audit log (issue 16): every write by a staff account or an API key, and every read of a
//! member's data, leaves exactly one row naming its actor; no secret ever enters it; rows cannot
//! be changed; `tessera audit affected` lists whom a key touched. Retention: inactive members
//! erased by the claimed job, old logs deleted.

use serde_json::{Value, json};
use tessera::storage::{AuditEntry, AuditFilter, Role};

use crate::cli::tessera;
use crate::helpers::{StaffClient, TestApp, TestDb, issue_member};
use crate::on_both_backends;

fn key_id(key: &str) -> String {
    let rest = key.strip_prefix("tsk_").expect("an API key");
    rest.split_once('_')
        .expect("tsk_<id>_<secret>")
        .0
        .to_string()
}

/// Every audit row, oldest first (reads and refusals wait for a flush, done here).
async fn all_rows(app: &TestApp) -> Vec<AuditEntry> {
    app.state.audit.flush(&app.state.store).await.unwrap();
    let mut rows = app
        .state
        .store
        .audit_page(&AuditFilter::default(), None, 10_000)
        .await
        .unwrap();
    rows.reverse();
    rows
}

/// Runs `act`, then asserts it left exactly one new audit row, and returns it.
async fn one_row<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    what: &str,
    act: F,
) -> AuditEntry {
    let before = all_rows(app).await.len();
    act.await;
    let rows = all_rows(app).await;
    assert_eq!(
        rows.len(),
        before + 1,
        "{what}: one audit row, got {:#?}",
        &rows[before..]
    );
    rows.last().unwrap().clone()
}

async fn send(app: &TestApp, key: &str, method: &str, path: &str, body: Option<Value>) -> u16 {
    let mut r = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(key)
        .header("Idempotency-Key", tessera::secret::random_token(8));
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

async fn every_action_leaves_one_row_with_its_actor_and_no_secret(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let admin = app.admin_key.clone();
    let admin_id = key_id(&admin);
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap().to_string();
    let program = member["program_id"].as_str().unwrap().to_string();
    let barcode = member["barcode"].as_str().unwrap().to_string();
    // Issuing the member took three admin writes: program, template, member.
    let rows = all_rows(&app).await;
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [
            "POST /api/v1/programs",
            "POST /api/v1/programs/{program_id}/templates",
            "POST /api/v1/programs/{program_id}/members",
        ]
    );
    assert!(rows.iter().all(|r| r.actor_id == admin_id
        && r.actor_kind == "api_key"
        && r.actor_label == "test admin"
        && r.status == 201
        && r.is_write
        && r.client_ip.as_deref() == Some("127.0.0.1")));
    assert_eq!(rows[2].members, vec![id.clone()], "the member created");

    // A write names its target and the member; a refused one its status.
    let earn = one_row(&app, "earn", async {
        let path = format!("/api/v1/members/{id}/transactions");
        let s = send(
            &app,
            &admin,
            "POST",
            &path,
            Some(json!({"type": "earn", "points": 7})),
        )
        .await;
        assert_eq!(s, 201);
    })
    .await;
    assert_eq!(
        (earn.target_kind.as_deref(), earn.target_id.as_deref()),
        (Some("member"), Some(id.as_str()))
    );
    assert_eq!(earn.action, "POST /api/v1/members/{member_id}/transactions");

    // A new key (its secret shown once) reads the member: a read row under that key.
    let mut secrets = vec![admin.clone()];
    let created = one_row(&app, "create a key", async {
        let (s, key) = app
            .post(
                "/api/v1/api-keys",
                json!({"name": "crm sync", "role": "integration"}),
            )
            .await;
        assert_eq!(s, 201, "{key}");
        secrets.push(key["key"].as_str().unwrap().to_string());
    })
    .await;
    assert_eq!(created.action, "POST /api/v1/api-keys");
    let crm = secrets[1].clone();
    let crm_id = key_id(&crm);
    let read = one_row(&app, "read a member", async {
        assert_eq!(
            send(&app, &crm, "GET", &format!("/api/v1/members/{id}"), None).await,
            200
        );
    })
    .await;
    assert_eq!(
        (
            read.actor_id.as_str(),
            read.actor_label.as_str(),
            read.is_write
        ),
        (crm_id.as_str(), "crm sync", false)
    );
    assert_eq!(read.members, vec![id.clone()]);
    // A lookup by barcode names the member it found, though its path does not.
    let found = one_row(&app, "find by barcode", async {
        let path = format!("/api/v1/members?barcode={barcode}");
        assert_eq!(send(&app, &crm, "GET", &path, None).await, 200);
    })
    .await;
    assert_eq!(found.members, vec![id.clone()]);
    // Reading a program is not member data: no row.
    let before = all_rows(&app).await.len();
    assert_eq!(
        send(
            &app,
            &crm,
            "GET",
            &format!("/api/v1/programs/{program}"),
            None
        )
        .await,
        200
    );
    assert_eq!(all_rows(&app).await.len(), before);
    // A refused write by the integration key (only admins make keys): recorded with its 403.
    let refused = one_row(&app, "refused key", async {
        let body = json!({"name": "mine", "role": "admin"});
        assert_eq!(
            send(&app, &crm, "POST", "/api/v1/api-keys", Some(body)).await,
            403
        );
    })
    .await;
    assert_eq!(
        (refused.status, refused.actor_id.as_str()),
        (403, crm_id.as_str())
    );
    // A refused request's path holds what a client typed: kept out of the log (an e-mail
    // address, a whole key pasted where its id belongs), though the refusal is recorded.
    let probe = one_row(&app, "a probe", async {
        let path = "/api/v1/members/jane.doe%40example.com";
        assert_eq!(send(&app, &crm, "GET", path, None).await, 404);
    })
    .await;
    assert_eq!(
        (probe.status, probe.target_id.clone(), probe.members.len()),
        (404, None, 0)
    );
    let pasted = one_row(&app, "a pasted key", async {
        let path = format!("/api/v1/api-keys/{admin}");
        assert_eq!(send(&app, &admin, "DELETE", &path, None).await, 404);
    })
    .await;
    assert_eq!((pasted.status, pasted.target_id.clone()), (404, None));
    // A request with no valid key has no actor: nothing recorded.
    let before = all_rows(&app).await.len();
    let forged = format!("tsk_{crm_id}_wrongsecret");
    assert_eq!(
        send(&app, &forged, "GET", &format!("/api/v1/members/{id}"), None).await,
        401
    );
    assert_eq!(all_rows(&app).await.len(), before);

    // Staff: sign-in, a barcode lookup (a POST that only reads) and a purchase at the till.
    let cashier = one_row(&app, "staff sign-in", async {
        let c = StaffClient::sign_in(&app, "till@example.com", Role::Cashier).await;
        secrets.push(c.cookie.split_once('=').unwrap().1.to_string());
        secrets.push(c.csrf.clone());
    })
    .await;
    assert_eq!(
        (
            cashier.actor_kind.as_str(),
            cashier.actor_label.as_str(),
            cashier.action.as_str()
        ),
        ("staff", "till@example.com", "POST /staff/login")
    );
    let till = StaffClient::sign_in(&app, "till2@example.com", Role::Cashier).await;
    let lookup = one_row(&app, "scan lookup", async {
        let r = till
            .http
            .post(till.url("/scan/lookup"))
            .header("cookie", &till.cookie)
            .json(&json!({"csrf": till.csrf, "barcode": barcode}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
    assert_eq!(
        (lookup.is_write, lookup.members.clone()),
        (false, vec![id.clone()])
    );
    let sale = one_row(&app, "scan purchase", async {
        let r = till
            .http
            .post(till.url(&format!("/scan/members/{id}/operations")))
            .header("cookie", &till.cookie)
            .json(&json!({"csrf": till.csrf, "kind": "purchase", "amount_minor": 500, "key": "op-audit-0001"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    })
    .await;
    assert_eq!(
        (
            sale.actor_label.as_str(),
            sale.is_write,
            sale.target_id.as_deref()
        ),
        ("till2@example.com", true, Some(id.as_str()))
    );

    // The card's lifecycle and the key's end, each one row.
    for (method, path, status) in [
        ("DELETE", format!("/api/v1/members/{id}/card"), 200),
        ("POST", format!("/api/v1/members/{id}/card/reissue"), 201),
        ("POST", format!("/api/v1/members/{id}/erase"), 200),
        ("DELETE", format!("/api/v1/api-keys/{crm_id}"), 204),
    ] {
        let row = one_row(&app, &path, async {
            assert_eq!(
                send(&app, &admin, method, &path, Some(json!({}))).await,
                status,
                "{path}"
            );
        })
        .await;
        assert_eq!(
            (row.actor_id.as_str(), row.status),
            (admin_id.as_str(), status as i64)
        );
    }

    // The API reads the log back with filters, newest first, in pages.
    let get = |path: String| {
        let app = &app;
        async move {
            let r = app.get_bytes(&path).await;
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let by_crm = get(format!("/api/v1/audit?actor={crm_id}")).await;
    let actions: Vec<&str> = by_crm["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "GET /api/v1/members/{member_id}",
            "POST /api/v1/api-keys",
            "GET /api/v1/members",
            "GET /api/v1/members/{member_id}",
        ],
        "the integration key's requests, newest first"
    );
    let erasures = get("/api/v1/audit?action=erase".into()).await;
    assert_eq!(erasures["items"].as_array().unwrap().len(), 1);
    let on_member = get(format!("/api/v1/audit?target={id}&limit=3")).await;
    assert_eq!(on_member["items"].as_array().unwrap().len(), 3);
    let mut cursor = on_member["next_cursor"].as_str().unwrap().to_string();
    let mut seen = 3;
    loop {
        let page = get(format!("/api/v1/audit?target={id}&limit=3&cursor={cursor}")).await;
        seen += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let touching = all_rows(&app)
        .await
        .into_iter()
        .filter(|r| r.target_id.as_deref() == Some(id.as_str()) || r.members.contains(&id))
        .count();
    assert_eq!(seen, touching, "paging returns every row once");
    let future = get("/api/v1/audit?from=2999-01-01T00:00:00Z".to_string()).await;
    assert_eq!(future["items"], json!([]));
    let r = app.get_bytes("/api/v1/audit?from=yesterday").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        send(&app, &secrets[1], "GET", "/api/v1/audit", None).await,
        401,
        "revoked"
    );
    let marketer = app.key(Role::Marketer).await;
    assert_eq!(
        send(&app, &marketer, "GET", "/api/v1/audit", None).await,
        403
    );

    // No key, token, password, cookie or CSRF token anywhere in the log.
    let pass = app
        .state
        .store
        .get_pass(member["pass"]["serial_number"].as_str().unwrap())
        .await
        .unwrap();
    secrets.push(pass.authentication_token.clone());
    secrets.push("correct horse battery".into());
    let everything = format!("{:?}", all_rows(&app).await);
    let api_dump = get("/api/v1/audit?limit=100".into()).await.to_string();
    for secret in &secrets {
        let tail = secret.rsplit('_').next().unwrap();
        assert!(!everything.contains(tail), "a secret in the audit log");
        assert!(!api_dump.contains(tail), "a secret in the audit API");
    }

    // Append-only, whoever asks.
    for statement in [
        "UPDATE audit_log SET status = 0",
        "DELETE FROM audit_log",
        "DELETE FROM audit_members",
    ] {
        let refused = app.state.store.execute_admin(statement).await;
        assert!(refused.is_err(), "{statement} must be refused");
    }
    assert!(all_rows(&app).await.iter().all(|r| r.status != 0));
}

async fn the_staff_page_lists_the_log_for_admins_only(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let admin = StaffClient::sign_in(&app, "owner@example.com", Role::Admin).await;
    let (s, page) = admin.get(&format!("/staff/audit?target={id}")).await;
    assert_eq!(s, 200);
    assert!(
        page.contains("POST /api/v1/programs/{program_id}/members"),
        "{page}"
    );
    assert!(page.contains("test admin"));
    assert!(
        !page.contains("POST /api/v1/programs/{program_id}/templates"),
        "filtered by target"
    );
    let (s, _) = admin.get("/staff/audit?from=soon").await;
    assert_eq!(s, 400);
    let marketer = StaffClient::sign_in(&app, "mk@example.com", Role::Marketer).await;
    let (s, _) = marketer.get("/staff/audit").await;
    assert_eq!(s, 403);
}

async fn audit_affected_lists_the_members_a_key_touched(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = issue_member(&app, "coffee").await;
    let ada_id = ada["id"].as_str().unwrap();
    let grace = crate::helpers::another_member(&app, &ada).await;
    let grace_id = grace["id"].as_str().unwrap();
    let leaked = app.key(Role::Integration).await;
    // The leaked key read Ada twice and wrote to her once; it never touched Grace.
    for _ in 0..2 {
        assert_eq!(
            send(
                &app,
                &leaked,
                "GET",
                &format!("/api/v1/members/{ada_id}"),
                None
            )
            .await,
            200
        );
    }
    let path = format!("/api/v1/members/{ada_id}/transactions");
    assert_eq!(
        send(
            &app,
            &leaked,
            "POST",
            &path,
            Some(json!({"type": "earn", "points": 3}))
        )
        .await,
        201
    );

    // Reads reach the table with the next flush (within a second); the test does it now.
    all_rows(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = tessera(dir.path())
            .env("TESSERA_DATABASE_URL", &app.state.config.database_url)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let leaked_id = key_id(&leaked);
    let csv = run(&["audit", "affected", "--since", "1h", "--actor", &leaked_id]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "member_id,external_id,first_at,last_at,reads,writes"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].starts_with(&format!("{ada_id},crm-1,")), "{csv}");
    assert!(lines[1].ends_with(",2,1"), "two reads and one write: {csv}");
    // Without an actor: both members (the admin created them).
    let all = run(&["audit", "affected", "--since", "1h"]);
    assert!(all.contains(ada_id) && all.contains(grace_id), "{all}");
    // A period before any of it: nobody.
    let none = run(&[
        "audit",
        "affected",
        "--since",
        "2020-01-01T00:00:00Z",
        "--until",
        "2020-01-02T00:00:00Z",
    ]);
    assert_eq!(none.lines().count(), 1, "{none}");
}

async fn put_retention(app: &TestApp, program: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .put(app.url(&format!("/api/v1/programs/{program}/retention")))
        .bearer_auth(&app.admin_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn member(app: &TestApp, id: &str) -> Value {
    let r = app.get_bytes(&format!("/api/v1/members/{id}")).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

const TWO_YEARS_MS: i64 = 2 * 365 * 86_400_000;

async fn retention_erases_inactive_members_and_keeps_the_rest(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = issue_member(&app, "coffee").await;
    let grace = crate::helpers::another_member(&app, &ada).await;
    let tea = issue_member(&app, "tea").await;
    let coffee = ada["program_id"].as_str().unwrap();
    let (ada_id, grace_id, tea_id) = (
        ada["id"].as_str().unwrap(),
        grace["id"].as_str().unwrap(),
        tea["id"].as_str().unwrap(),
    );
    // Off by default; refused out of range with the field named; set to a year.
    let r = app
        .get_bytes(&format!("/api/v1/programs/{coffee}/retention"))
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"inactive_months": null})
    );
    let (s, e) = put_retention(&app, coffee, json!({"inactive_months": 0})).await;
    assert_eq!(s, 400);
    assert!(
        e.to_string()
            .contains("inactive_months must be between 1 and 600"),
        "{e}"
    );
    let (s, _) = put_retention(&app, coffee, json!({"inactive_months": 12})).await;
    assert_eq!(s, 200);
    let r = app
        .get_bytes(&format!("/api/v1/programs/{coffee}/retention"))
        .await;
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"inactive_months": 12})
    );

    // Everyone joined two years ago; Ada and Tea's member earned then, Grace earned today.
    for (m, points) in [(&ada, 10), (&grace, 5), (&tea, 4)] {
        assert_eq!(
            crate::push::earn(&app, m, &format!("e-{points}"), points).await,
            201
        );
    }
    let store = &app.state.store;
    for id in [ada_id, grace_id, tea_id] {
        store
            .execute_admin(&format!(
                "UPDATE members SET created_at = created_at - {TWO_YEARS_MS} WHERE id = '{id}'"
            ))
            .await
            .unwrap();
    }
    for id in [ada_id, tea_id] {
        store
            .execute_admin(&format!("UPDATE ledger_entries SET created_at = created_at - {TWO_YEARS_MS} WHERE member_id = '{id}'"))
            .await
            .unwrap();
    }

    let round = tessera::jobs::retention_once(&app.state, tessera::domain::now_ms())
        .await
        .expect("the round succeeded");
    assert_eq!(
        round.erased,
        [ada_id.to_string()],
        "only the inactive member of a program with retention"
    );
    let erased = member(&app, ada_id).await;
    assert_eq!(erased["display_name"], "", "{erased}");
    assert_eq!(erased["external_id"], Value::Null);
    assert!(
        erased["pass"]["ended_at"].as_i64().is_some(),
        "the card ended"
    );
    assert_eq!(erased["points"], 10, "the ledger's sums stay");
    assert_eq!(store.ledger_sum(ada_id).await.unwrap(), 10);
    assert_eq!(member(&app, grace_id).await["display_name"], "Grace Hopper");
    assert_eq!(
        member(&app, tea_id).await["display_name"],
        "Ada Lovelace",
        "no retention in tea"
    );
    // The erasure is in the audit log under the job.
    let rows = store
        .audit_page(
            &AuditFilter {
                actor_id: Some("retention".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].actor_kind.as_str(), rows[0].members.clone()),
        ("job", vec![ada_id.to_string()])
    );
    // Erased members are not erased again; turning retention off keeps everyone.
    let again = tessera::jobs::retention_once(&app.state, tessera::domain::now_ms())
        .await
        .unwrap();
    assert!(again.erased.is_empty());
    let (s, _) = put_retention(&app, coffee, json!({"inactive_months": null})).await;
    assert_eq!(s, 200);
    let later = tessera::domain::now_ms() + 10 * TWO_YEARS_MS;
    assert!(
        tessera::jobs::retention_once(&app.state, later)
            .await
            .unwrap()
            .erased
            .is_empty()
    );
}

/// Polls (the fetch log is written once a second) until `check` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn retention_deletes_old_logs(db: TestDb) {
    let (app, standin) = crate::push::app_with_standin(db).await;
    let ada = issue_member(&app, "coffee").await;
    let serial = ada["pass"]["serial_number"].as_str().unwrap().to_string();
    crate::push::register(&app, &ada, "phone", "abcd01").await;
    assert_eq!(crate::push::earn(&app, &ada, "e1", 5).await, 201);
    crate::helpers::eventually("the push", || standin.pushes_to("abcd01").len() == 1).await;
    let store = app.state.store.clone();
    let pass = store.get_pass(&serial).await.unwrap();
    let r = app
        .client
        .get(app.url(&format!(
            "/passkit/v1/passes/{}/{serial}",
            pass.pass_type_identifier
        )))
        .header(
            "Authorization",
            format!("ApplePass {}", pass.authentication_token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until("the fetch time", || {
        let (store, serial) = (store.clone(), serial.clone());
        async move {
            store
                .get_pass(&serial)
                .await
                .unwrap()
                .last_fetched_at
                .is_some()
        }
    })
    .await;
    until("the push outcome", || {
        let (store, serial) = (store.clone(), serial.clone());
        async move {
            store.registrations(&serial).await.unwrap()[0]
                .last_push_at
                .is_some()
        }
    })
    .await;

    // A day later nothing is old enough; past `retention.log_days` (90) both are forgotten.
    let now = tessera::domain::now_ms();
    let round = tessera::jobs::retention_once(&app.state, now + 86_400_000)
        .await
        .unwrap();
    assert_eq!((round.logs.fetch_times, round.logs.push_results), (0, 0));
    let round = tessera::jobs::retention_once(&app.state, now + 91 * 86_400_000)
        .await
        .unwrap();
    assert_eq!((round.logs.fetch_times, round.logs.push_results), (1, 1));
    assert_eq!(store.get_pass(&serial).await.unwrap().last_fetched_at, None);
    let reg = &store.registrations(&serial).await.unwrap()[0];
    assert_eq!(
        (reg.last_push_at, reg.last_push_result.clone()),
        (None, None)
    );
    assert!(round.erased.is_empty(), "no program has a retention");
}

async fn an_import_names_every_member_it_touched(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let ada = issue_member(&app, "coffee").await;
    let program = ada["program_id"].as_str().unwrap();
    // 1,500 rows (past one statement's 1,000 member rows), one of them Ada, already a member.
    let mut csv = String::from("external_id,name\ncrm-1,Ada Lovelace\n");
    for i in 0..1_499 {
        csv += &format!("imp-{i},Member {i}\n");
    }
    let report = app.import_csv(program, csv).await;
    assert_eq!(
        (report["created"].as_i64(), report["unchanged"].as_i64()),
        (Some(1_499), Some(1))
    );
    let rows = all_rows(&app).await;
    let import = rows.last().unwrap();
    assert_eq!(import.action, "POST /api/v1/programs/{program_id}/imports");
    assert_eq!(import.members.len(), 1_500);
    assert!(
        import
            .members
            .contains(&ada["id"].as_str().unwrap().to_string())
    );
}

on_both_backends!(
    an_import_names_every_member_it_touched,
    retention_erases_inactive_members_and_keeps_the_rest,
    retention_deletes_old_logs,
    every_action_leaves_one_row_with_its_actor_and_no_secret,
    the_staff_page_lists_the_log_for_admins_only,
    audit_affected_lists_the_members_a_key_touched,
);
