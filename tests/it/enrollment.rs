//! Joining, install links, QR codes, throttles, the CSV import and the cashier endpoints, over
//! HTTP.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE, USER_AGENT};
use serde_json::json;
use tessera::storage::Role;

use crate::helpers::{StaffClient, TestApp, TestDb, csrf_field, issue_member};
use crate::on_both_backends;

pub const POLICY: &str = "https://coffee.example/privacy";

/// Opens the program's join page: a privacy policy, a welcome bonus, birthday optional.
pub async fn open_join_page(app: &TestApp, program_id: &str) {
    let r = app
        .client
        .put(app.url(&format!("/api/v1/programs/{program_id}/enrollment")))
        .bearer_auth(&app.admin_key)
        .json(&json!({
            "privacy_policy_url": POLICY,
            "policy_version": "2026-11",
            "birthday": "optional",
            "welcome_bonus": 25,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GETs the join page; returns its CSRF token (also its cookie) and the HTML.
pub async fn join_form(app: &TestApp, http: &reqwest::Client) -> (String, String) {
    let r = http.get(app.url("/join/coffee")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get(SET_COOKIE).is_some());
    let html = r.text().await.unwrap();
    (csrf_field(&html), html)
}

pub async fn submit(
    app: &TestApp,
    http: &reqwest::Client,
    csrf: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    submit_with_cookie(app, http, csrf, csrf, fields).await
}

/// Submits the join form with `field` as its CSRF field and `cookie` as the browser's cookie.
async fn submit_with_cookie(
    app: &TestApp,
    http: &reqwest::Client,
    cookie: &str,
    field: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("csrf", field)];
    form.extend_from_slice(fields);
    http.post(app.url("/join/coffee"))
        .header(COOKIE, format!("tessera_join={cookie}"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn joining_records_consent_and_never_hands_over_a_members_card(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.enrollment.joins_per_minute = 1000).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    let http = no_redirects();

    let r = http.get(app.url("/join/coffee")).send().await.unwrap();
    assert_eq!(r.status(), 404, "closed until a privacy policy is set");
    open_join_page(&app, program_id).await;
    let (csrf, page) = join_form(&app, &http).await;
    assert!(page.contains(POLICY), "the consents link to the policy");
    let marketing = &page[page.find(r#"id="marketing_consent""#).unwrap()..];
    assert!(
        !marketing[..marketing.find('>').unwrap()].contains("checked"),
        "never pre-ticked"
    );

    // Errors name the inputs and keep what was typed.
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Ada Lovelace"),
            ("email", "ada@"),
            ("birthday", "1815-12-10"),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"value="Ada Lovelace""#) && page.contains(r#"value="ada@""#));
    assert!(page.contains("please enter an e-mail address such as"));
    assert!(page.contains("please agree to the processing of your data"));

    // A forged form is refused.
    let r = submit_with_cookie(
        &app,
        &http,
        &csrf,
        "forged",
        &[
            ("name", "X"),
            ("email", "x@example.com"),
            ("data_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);

    // Joining: consent as shown, marketing unticked, the welcome bonus, the card page.
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Ada Lovelace"),
            ("email", "Ada@Example.com"),
            ("phone", "+31 20 123 4567"),
            ("data_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let card = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(card.starts_with("/card/"), "{card}");
    let member_id = card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let store = &app.state.store;
    let member = store.get_member(&member_id).await.unwrap();
    assert_eq!(
        (member.display_name.as_str(), member.points),
        ("Ada Lovelace", 25)
    );
    assert_eq!(
        store.member_contact(&member_id).await.unwrap(),
        (
            Some("ada@example.com".into()),
            Some("+31201234567".into()),
            None
        )
    );
    let settings = store.program_enrollment(program_id).await.unwrap();
    let consents = store.consents(&member_id).await.unwrap();
    let shown: Vec<_> = consents
        .iter()
        .map(|c| {
            (
                c.kind.as_str(),
                c.granted,
                c.policy_version.as_str(),
                c.text_shown.as_str(),
                c.policy_url.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "data",
                true,
                "2026-11",
                settings.data_consent_text.as_str(),
                Some(POLICY)
            ),
            (
                "marketing",
                false,
                "2026-11",
                settings.marketing_consent_text.as_deref().unwrap(),
                Some(POLICY)
            ),
        ]
    );
    assert!(page_text_includes(&app, &card, "Ada Lovelace").await);

    // The card page leads with what the device can add.
    let pass = store.pass_for_member(&member_id).await.unwrap();
    let pass_link = format!(
        "/passes/{}.pkpass?token={}",
        pass.serial_number, pass.download_token
    );
    // Without Google Wallet, Android gets the `.pkpass` file too, with how to open it.
    for (ua, apple, qr) in [
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1",
            true,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 15) Chrome/130 Mobile",
            true,
            false,
        ),
        ("Mozilla/5.0 (X11; Linux x86_64) Chrome/130", true, true),
    ] {
        let html = http
            .get(app.url(&card))
            .header(USER_AGENT, ua)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(html.contains(&pass_link), apple, "{ua}");
        assert_eq!(html.contains(r#"id="qr""#), qr, "{ua}");
        assert_eq!(
            html.contains(r#"id="android-help""#),
            ua.contains("Android"),
            "{ua}"
        );
        // The card itself: balance, the code as a QR code and in text, the welcome bonus.
        assert!(html.contains(r#"<dd id="balance">25</dd>"#), "{ua}");
        assert!(html.contains(r#"id="barcode""#) && html.contains("<svg"));
        assert!(html.contains(&member.barcode), "{ua}");
        assert!(
            html.contains("welcome bonus of 25 points"),
            "the join lands on ?welcome: {card}"
        );
        assert!(
            !html.contains(r#"id="google""#),
            "no Google button without Google Wallet"
        );
    }

    // Joining again with the same e-mail (any case), or only the same phone, finds Ada but
    // never hands over her card: no duplicate, no second bonus, no link, no pass, the same page
    // either way, and the visitor's consent choices are not recorded against her.
    let (csrf, _) = join_form(&app, &http).await;
    let mut pages = Vec::new();
    for fields in [
        &[
            ("name", "A. Lovelace"),
            ("email", "ADA@example.COM"),
            ("data_consent", "yes"),
            ("marketing_consent", "yes"),
        ][..],
        &[
            ("name", "Ada"),
            ("email", "other@example.com"),
            ("phone", "+31201234567"),
            ("data_consent", "yes"),
        ],
    ] {
        let r = submit(&app, &http, &csrf, fields).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get(LOCATION).is_none());
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("/card/") && !html.contains("/passes/"),
            "{html}"
        );
        assert!(!html.contains(&pass.authentication_token) && !html.contains(&member.barcode));
        assert!(html.contains("If you are already a member, please ask at the till"));
        pages.push(html);
    }
    assert_eq!(pages[0], pages[1], "the same page whatever matched");
    let member = store.get_member(&member_id).await.unwrap();
    assert_eq!(member.points, 25, "the welcome bonus is credited once");
    assert_eq!(member.display_name, "Ada Lovelace");
    assert_eq!(store.ledger_sum(&member_id).await.unwrap(), 25);
    let after = store.consents(&member_id).await.unwrap();
    assert_eq!(
        after.len(),
        2,
        "the visitor's consent choices are not Ada's"
    );
    assert!(!after[1].granted, "marketing stays as Ada answered it");
    let api = app
        .client
        .get(app.url(&format!("/api/v1/members/{member_id}/consents")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(
        body["consents"][1]["text_shown"],
        settings.marketing_consent_text.clone().unwrap()
    );
    assert_eq!(body["consents"][1]["granted"], false);

    // A different customer is a new member.
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Grace"),
            ("email", "grace@example.com"),
            ("data_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(!r.headers()[LOCATION].to_str().unwrap().contains(&member_id));
}

on_both_backends!(joining_records_consent_and_never_hands_over_a_members_card);

async fn page_text_includes(app: &TestApp, path: &str, text: &str) -> bool {
    let html = app
        .client
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    html.contains(text)
}

#[tokio::test]
async fn install_links_are_signed_and_expire() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let first = issue_member(&app, "coffee").await;
    let id = first["id"].as_str().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/members/{id}/install-link")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let url = body["url"].as_str().unwrap();
    let now = tessera::domain::now_ms() / 1000;
    let expires = body["expires_at"].as_i64().unwrap();
    assert!(
        (expires - now - 30 * 86_400).abs() < 5,
        "30 days by default"
    );
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Ada Lovelace"));
    let tampered = url.replace(&format!(".{expires}."), &format!(".{}.", expires + 1));
    assert_eq!(
        app.client.get(&tampered).send().await.unwrap().status(),
        404
    );
    let expired = app.state.links.sign(id, now - 1);
    let r = app
        .client
        .get(app.url(&format!("/card/{expired}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn join_qr_codes_for_print() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    issue_member(&app, "coffee").await;
    let r = app
        .client
        .get(app.url("/join/coffee/qr.svg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().starts_with("<?xml"));
    let r = app
        .client
        .get(app.url("/join/coffee/qr.png?size=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert!(
        img.width() >= 2000 && img.width() == img.height(),
        "{}",
        img.width()
    );
    assert_eq!(
        app.client
            .get(app.url("/join/coffee/qr.png?size=90000"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        app.client
            .get(app.url("/join/nope/qr.svg"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn hammering_the_join_page_and_guessing_barcodes_is_throttled() {
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.enrollment.joins_per_minute = 4;
        c.enrollment.lookups_per_minute = 4;
    })
    .await;
    let first = issue_member(&app, "coffee").await;
    open_join_page(&app, first["program_id"].as_str().unwrap()).await;
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let email = format!("guess{i}@example.com");
        let r = submit(
            &app,
            &http,
            &csrf,
            &[("name", "G"), ("email", &email), ("data_consent", "yes")],
        )
        .await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
    }
    assert_eq!(
        statuses,
        [303, 303, 303, 429, 429, 429],
        "a burst of 3, then throttled"
    );

    // Barcode guessing through the API: throttled per key.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = app
            .client
            .get(app.url(&format!("/api/v1/members?barcode=GUESS{i}")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 429, 429]);

    // And through the scan page: throttled per staff account.
    let cashier = StaffClient::sign_in(&app, "cas@example.com", Role::Cashier).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = cashier
            .http
            .post(cashier.url("/scan/lookup"))
            .header(COOKIE, &cashier.cookie)
            .json(&json!({"csrf": cashier.csrf, "barcode": format!("GUESS{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 429, 429]);
}

/// A cashier's operation over the scan endpoints.
async fn operate(
    staff: &StaffClient,
    member: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut body = body;
    body["csrf"] = json!(staff.csrf);
    let r = staff
        .http
        .post(staff.url(&format!("/scan/members/{member}/operations")))
        .header(COOKIE, &staff.cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn a_cashier_earns_and_redeems_once_per_operation_within_limits(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let first = issue_member(&app, "coffee").await;
    let member = first["id"].as_str().unwrap();
    let barcode = app.state.store.get_member(member).await.unwrap().barcode;
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
        .set_staff_limits(&user.id, Some(50), Some(80))
        .await
        .unwrap();

    let (s, page) = cashier.get("/scan").await;
    assert_eq!(s, 200);
    assert!(
        !page.contains(r#"href="/staff/programs""#),
        "cashiers are not shown the designer"
    );
    let r = cashier
        .http
        .post(cashier.url("/scan/lookup"))
        .header(COOKIE, &cashier.cookie)
        .json(&json!({"csrf": cashier.csrf, "barcode": barcode}))
        .send()
        .await
        .unwrap();
    let found: serde_json::Value = r.json().await.unwrap();
    assert_eq!(found["member"]["name"], "Ada Lovelace");
    assert_eq!(found["member"]["points"], 0);

    // A purchase of 12.34 earns 12 points (1 per 100 minor units); the same key again is a
    // replay, not a second purchase.
    let purchase = json!({"kind": "purchase", "amount_minor": 1234, "key": "op-0001-abcdef"});
    let (s, b) = operate(&cashier, member, purchase.clone()).await;
    assert_eq!(
        (s, b["points"].as_i64(), b["balance"].as_i64()),
        (201, Some(12), Some(12)),
        "{b}"
    );
    let (s, b) = operate(&cashier, member, purchase).await;
    assert_eq!(
        (s, b["balance"].as_i64(), b["replayed"].as_bool()),
        (200, Some(12), Some(true))
    );
    assert_eq!(app.state.store.ledger_sum(member).await.unwrap(), 12);

    // Limits: 50 points per operation, 80 a day, with a message that says which.
    let (s, b) = operate(
        &cashier,
        member,
        json!({"kind": "purchase", "amount_minor": 6000, "key": "op-0002-abcdef"}),
    )
    .await;
    assert_eq!(s, 403);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("at most 50 points in one operation"),
        "{b}"
    );
    let (s, _) = operate(
        &cashier,
        member,
        json!({"kind": "purchase", "amount_minor": 4900, "key": "op-0003-abcdef"}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = operate(
        &cashier,
        member,
        json!({"kind": "redeem", "points": 30, "key": "op-0004-abcdef"}),
    )
    .await;
    assert_eq!(s, 403, "12 + 49 moved, 30 more passes 80");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("at most 80 points a day"),
        "{b}"
    );
    assert!(
        b["error"].as_str().unwrap().contains("61 moved today"),
        "{b}"
    );
    let (s, b) = operate(
        &cashier,
        member,
        json!({"kind": "redeem", "points": 19, "key": "op-0005-abcdef"}),
    )
    .await;
    assert_eq!((s, b["balance"].as_i64()), (201, Some(42)));
    // A retry of a recorded operation is replayed even at the limit.
    let (s, _) = operate(
        &cashier,
        member,
        json!({"kind": "redeem", "points": 19, "key": "op-0005-abcdef"}),
    )
    .await;
    assert_eq!(s, 200);

    // Not enough points, and a marketer, are refused with reasons.
    app.state
        .store
        .set_staff_limits(&user.id, None, None)
        .await
        .unwrap();
    let (s, b) = operate(
        &cashier,
        member,
        json!({"kind": "redeem", "points": 500, "key": "op-0006-abcdef"}),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("the card has 42 points")
    );
    let marketer = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;
    let (s, _) = operate(
        &marketer,
        member,
        json!({"kind": "redeem", "points": 1, "key": "op-0007-abcdef"}),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(app.state.store.ledger_sum(member).await.unwrap(), 42);
}

on_both_backends!(a_cashier_earns_and_redeems_once_per_operation_within_limits);

/// The CSV import: a correct balance for every member, bad rows by line, links for all, and a
/// second run that changes nothing. One request carries 100,000 rows here, so the request
/// timeout is raised from its 60 s default: on a loaded 2-core machine the debug build can
/// need longer (`tessera import` is the tool for files this size).
async fn import_members(db: TestDb, n: usize) {
    let app = TestApp::spawn_with(db, |c| c.server.request_timeout_ms = 600_000).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap().to_string();
    let mut csv = String::from("external_id,name,email,phone,points\n");
    let mut bad = Vec::new();
    let mut expected = 0i64;
    for i in 0..n {
        let line = i as u64 + 2;
        if i % 997 == 13 {
            csv.push_str(&format!("p{i},Member {i},broken-email,,10\n"));
            bad.push(line);
        } else if i % 1499 == 7 {
            csv.push_str(&format!("p{i},Member {i},,,-5\n"));
            bad.push(line);
        } else {
            let points = (i % 500) as i64;
            expected += points;
            csv.push_str(&format!("p{i},Member {i},m{i}@example.com,,{points}\n"));
        }
    }
    let post = || async {
        let r = app
            .client
            .post(app.url(&format!("/api/v1/programs/{program_id}/imports")))
            .bearer_auth(&app.admin_key)
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()
    };
    let report = post().await;
    let good = (n - bad.len()) as i64;
    assert_eq!(report["created"].as_i64(), Some(good));
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, bad, "bad rows by line");
    assert_eq!(report["links"].as_array().unwrap().len() as i64, good);
    let store = &app.state.store;
    // Ada from issue_member had no points; every balance is the sum of its entries and lots.
    assert_eq!(
        store.program_totals(&program_id).await.unwrap(),
        [good + 1, expected, expected, expected]
    );
    for i in [0usize, 1, 499, n - 1] {
        if bad.contains(&(i as u64 + 2)) {
            continue;
        }
        let m = store
            .find_member_by_external_id(&program_id, &format!("p{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.points, (i % 500) as i64);
        assert_eq!(store.ledger_sum(&m.id).await.unwrap(), m.points);
    }
    let link = report["links"][0]["url"].as_str().unwrap();
    assert_eq!(app.client.get(link).send().await.unwrap().status(), 200);

    let again = post().await;
    assert_eq!(
        (again["created"].as_i64(), again["unchanged"].as_i64()),
        (Some(0), Some(good))
    );
    assert_eq!(
        store.program_totals(&program_id).await.unwrap(),
        [good + 1, expected, expected, expected]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_100_000_members_on_sqlite() {
    import_members(TestDb::sqlite().await, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_members_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        import_members(db, 10_000).await;
    }
}

/// Admins open and configure the join page from the program page.
#[tokio::test]
async fn admins_configure_the_join_page_on_the_program_page() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    let admin = StaffClient::sign_in(&app, "root@example.com", Role::Admin).await;
    let (_, page) = admin.get(&format!("/staff/programs/{program_id}")).await;
    assert!(page.contains("Closed until a privacy policy is set"));
    let path = format!("/staff/programs/{program_id}/enrollment");
    let fields = |bonus: &'static str| {
        vec![
            ("ask.name", "required"),
            ("ask.email", "absent"),
            ("ask.phone", "required"),
            ("ask.birthday", "optional"),
            ("privacy_policy_url", POLICY),
            ("policy_version", "3"),
            ("data_consent_text", "I agree."),
            ("marketing_consent_text", ""),
            ("welcome_bonus", bonus),
        ]
    };
    let r = admin.post(&path, &fields("lots")).await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("welcome_bonus must be between 0 and")
    );
    let r = admin.post(&path, &fields("10")).await;
    assert_eq!(r.status(), 303);
    let s = app
        .state
        .store
        .program_enrollment(program_id)
        .await
        .unwrap();
    assert_eq!(
        (s.email.name(), s.phone.name(), s.welcome_bonus),
        ("absent", "required", 10)
    );
    assert_eq!(
        s.marketing_consent_text, None,
        "an empty text shows no marketing box"
    );
    let page = app
        .client
        .get(app.url("/join/coffee"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"id="phone""#) && !page.contains(r#"id="email""#));
    assert!(!page.contains("marketing_consent"));
    let marketer = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;
    assert_eq!(marketer.post(&path, &fields("10")).await.status(), 403);
}
