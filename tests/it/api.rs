//! The HTTP API and the public pass link, end to end.

use serde_json::{Value, json};
use tessera::passes::apple::images::sample_png;
use tessera::storage::Role;

use crate::helpers::{TestApp, TestDb, b64, issue_member, program_body, template_body};
use crate::on_both_backends;
use crate::pass_checks::verify_pkpass;

async fn issues_a_pass_that_openssl_verifies(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let serial = member["pass"]["serial_number"].as_str().unwrap();
    assert!(serial.len() >= 26, "128-bit serial");
    assert!(
        member["barcode"].as_str().unwrap().len() >= 26,
        "128-bit barcode"
    );

    // Through the authenticated API...
    let r = app.member_pass(&member).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.pkpass");
    assert!(r.headers().contains_key("last-modified"));
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass["serialNumber"], serial);
    assert_eq!(pass["passTypeIdentifier"], "pass.com.example.coffee");
    assert_eq!(pass["teamIdentifier"], "ABCDE12345");
    assert_eq!(pass["organizationName"], "Example Coffee Ltd");
    assert_eq!(pass["webServiceURL"], format!("{}/passkit", app.base));
    assert_eq!(pass["barcodes"][0]["message"], member["barcode"]);
    assert_eq!(
        pass["storeCard"]["secondaryFields"][0]["value"],
        "Ada Lovelace"
    );
    assert_eq!(pass["storeCard"]["primaryFields"][0]["value"], 0);

    // ...and through the plain link a customer opens, which shows the current balance.
    let (s, earned) = app
        .post_idem(
            &format!(
                "/api/v1/members/{}/transactions",
                member["id"].as_str().unwrap()
            ),
            "earn-1",
            json!({"type": "earn", "points": 75}),
        )
        .await;
    assert_eq!(s, 201, "{earned}");
    let link = member["pass"]["pass_url"].as_str().unwrap();
    let r = app.client.get(link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass["storeCard"]["primaryFields"][0]["value"], 75);
    assert_eq!(
        pass["storeCard"]["primaryFields"][0]["changeMessage"],
        "You now have %@ points"
    );

    // A wrong token and an unknown serial look the same.
    let wrong = link.replace("token=", "token=x");
    assert_eq!(app.client.get(wrong).send().await.unwrap().status(), 404);
    let unknown = app.url("/passes/nosuchserial.pkpass?token=abc");
    assert_eq!(app.client.get(unknown).send().await.unwrap().status(), 404);
}

async fn replacing_an_image_makes_a_new_version(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let template_id = member["pass"]["template_id"].as_str().unwrap();
    let before = app
        .state
        .store
        .pass_for_member(member["id"].as_str().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let r = app
        .client
        .put(app.url(&format!("/api/v1/templates/{template_id}/images/logo")))
        .bearer_auth(&app.admin_key)
        .body(sample_png(320, 100, [1, 200, 3]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["version"], 2);
    let job = crate::helpers::publish_finished(&app.state.store, template_id).await;
    assert_eq!((job.version, job.done), (2, 1));
    let after = app
        .state
        .store
        .pass_for_member(member["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        after.updated_at > before.updated_at,
        "passes on the template are marked changed"
    );

    // The pass now carries the new logo, never a cached old one.
    let r = app.member_pass(&member).await;
    let dir = tempfile::tempdir().unwrap();
    verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    let logo = std::fs::read(dir.path().join("logo.png")).unwrap();
    let img = image::load_from_memory(&logo).unwrap().to_rgba8();
    assert_eq!(img.get_pixel(0, 0).0, [1, 200, 3, 255]);
}

on_both_backends!(
    issues_a_pass_that_openssl_verifies,
    replacing_an_image_makes_a_new_version
);

/// Posts `body` to a fresh program's templates and asserts a 400 naming `expected`, with
/// nothing stored.
async fn rejected_template(app: &TestApp, pid: &str, body: Value, expected: &str) {
    let before = app.state.store.counts().await.unwrap();
    let (s, err) = app
        .post(&format!("/api/v1/programs/{pid}/templates"), body)
        .await;
    assert_eq!(s, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(expected),
        "expected {expected:?} in {message:?}"
    );
    assert!(
        err["error"]["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(
        app.state.store.counts().await.unwrap(),
        before,
        "a rejected request stored something"
    );
}

#[tokio::test]
async fn bad_templates_get_clear_errors_and_store_nothing() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let (_, program) = app.post("/api/v1/programs", program_body("coffee")).await;
    let pid = program["id"].as_str().unwrap();

    let mut b = template_body();
    b["design"]["colors"]["background"] = json!("blue");
    rejected_template(
        &app,
        pid,
        b,
        "colors.background must be a colour like #3c414c or rgb(60, 65, 76), got \"blue\"",
    )
    .await;

    let mut b = template_body();
    let f = |k: &str| json!({"key": k, "value": "x"});
    b["design"]["secondary_fields"] = json!([f("a"), f("b"), f("c")]);
    b["design"]["auxiliary_fields"] = json!([f("d"), f("e")]);
    rejected_template(
        &app,
        pid,
        b,
        "a storeCard may have at most 4 secondary+auxiliary fields, got 5",
    )
    .await;

    let mut b = template_body();
    b["design"]["back_fields"] = json!([f("points")]);
    rejected_template(&app, pid, b, "field key \"points\" is used twice").await;

    let mut b = template_body();
    b["design"]["primary_fields"][0]["change_message"] = json!("New balance");
    rejected_template(
        &app,
        pid,
        b,
        "changeMessage of field \"points\" must contain %@",
    )
    .await;

    let mut b = template_body();
    b["images"]["logo"] = json!(b64(b"GIF89a\x01\x00\x01\x00"));
    rejected_template(&app, pid, b, "logo must be PNG or JPEG, at most 5 MB").await;

    let mut b = template_body();
    let mut huge = sample_png(200, 200, [1, 1, 1]);
    huge.resize(5 * 1024 * 1024 + 1, 0);
    b["images"]["strip"] = json!(b64(&huge));
    rejected_template(
        &app,
        pid,
        b,
        "strip must be PNG or JPEG, at most 5 MB; got 5242881 bytes",
    )
    .await;

    let mut b = template_body();
    b["images"].as_object_mut().unwrap().remove("icon");
    rejected_template(&app, pid, b, "images.icon is required").await;

    let mut b = template_body();
    b["images"]["icon"] = json!("not base64!");
    rejected_template(&app, pid, b, "images.icon is not valid base64").await;

    // Several problems are all reported at once.
    let mut b = template_body();
    b["design"]["colors"]["label"] = json!("#12");
    b["design"]["primary_fields"][0]["change_message"] = json!("x");
    let (s, err) = app
        .post(&format!("/api/v1/programs/{pid}/templates"), b)
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err["error"]["details"].as_array().unwrap().len(),
        2,
        "{err}"
    );
}

#[tokio::test]
async fn unknown_ids_bad_json_and_roles() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let before = app.state.store.counts().await.unwrap();

    let (s, err) = app
        .post("/api/v1/programs/nope/templates", template_body())
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    assert_eq!(err["error"]["message"], "program not found");
    let (s, _) = app
        .post(
            "/api/v1/programs/nope/members",
            json!({"display_name": "A"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        app.get_bytes("/api/v1/members/nope/pass").await.status(),
        404
    );

    let r = app
        .client
        .post(app.url("/api/v1/programs"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_json");

    let mut bad = program_body("x");
    bad["colour"] = json!("red");
    let (s, err) = app.post("/api/v1/programs", bad).await;
    assert_eq!(s, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{err}"
    );

    let mut bad = program_body("x");
    bad["team_identifier"] = json!("abc");
    let (s, err) = app.post("/api/v1/programs", bad).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (400, Some("validation_failed"))
    );

    let r = app
        .client
        .post(app.url("/api/v1/programs"))
        .json(&program_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, _) = app
        .post_as("tsk_abc_def", "/api/v1/programs", program_body("x"))
        .await;
    assert_eq!(s, 401);
    let cashier = app.key(Role::Cashier).await;
    let (s, err) = app
        .post_as(&cashier, "/api/v1/programs", program_body("x"))
        .await;
    assert_eq!(s, 403);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a key with role admin")
    );

    // A revoked key stops working.
    let marketer = app.key(Role::Marketer).await;
    let id = marketer.split('_').nth(1).unwrap();
    app.state.store.revoke_api_key(id).await.unwrap();
    let (s, _) = app
        .post_as(&marketer, "/api/v1/programs/x/templates", template_body())
        .await;
    assert_eq!(s, 401);

    assert_eq!(app.state.store.counts().await.unwrap(), before);

    // A duplicate slug is a conflict, and a member without a template is refused by name.
    let (s, p) = app.post("/api/v1/programs", program_body("dup")).await;
    assert_eq!(s, 201);
    let (s, _) = app.post("/api/v1/programs", program_body("dup")).await;
    assert_eq!(s, 409);
    let pid = p["id"].as_str().unwrap();
    let (s, err) = app
        .post(
            &format!("/api/v1/programs/{pid}/members"),
            json!({"display_name": "A"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no card template yet")
    );
}

#[tokio::test]
async fn a_configured_identity_refuses_programs_it_cannot_sign() {
    let db = TestDb::sqlite().await;
    let certs = db.dir.path().join("certs");
    let ca = tessera::passes::apple::dev_certs::DevAuthority::open_or_create(&certs).unwrap();
    let cert = ca
        .write_pass_certificate("pass.com.example.coffee", "ABCDE12345")
        .unwrap();
    let app = TestApp::spawn_with(db, |c| {
        c.apple.certificate = Some(cert.clone());
        c.apple.private_key = Some(certs.join("pass.key"));
        c.apple.wwdr_certificate = Some(certs.join("wwdr-dev.pem"));
    })
    .await;
    assert!(!app.state.cards.signers().is_dev());

    let mut other = program_body("other");
    other["pass_type_identifier"] = json!("pass.com.example.other");
    let (s, err) = app.post("/api/v1/programs", other).await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match the signing certificate")
    );

    let member = issue_member(&app, "coffee").await;
    let r = app.member_pass(&member).await;
    let dir = tempfile::tempdir().unwrap();
    verify_pkpass(
        &r.bytes().await.unwrap(),
        &certs.join("root-ca.pem"),
        dir.path(),
    );
}

#[tokio::test]
async fn demo_seeding_is_idempotent_and_pages_answer() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let first = tessera::demo::seed(&app.state).await.unwrap();
    let second = tessera::demo::seed(&app.state).await.unwrap();
    assert_eq!(first.serial, second.serial);
    assert_eq!(first.member_id, second.member_id);
    assert_eq!(app.state.store.counts().await.unwrap(), [1, 1, 1, 1]);
    let member = app.state.store.get_member(&first.member_id).await.unwrap();
    assert_eq!(
        member.points,
        app.state.store.ledger_sum(&member.id).await.unwrap()
    );
    assert!(member.points > 0);

    let r = app.client.get(&first.pass_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(
        pass["storeCard"]["primaryFields"][0]["value"],
        member.points
    );

    let home = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("development identity"),
        "home page warns about dev signing"
    );
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}
