//! The card designer over HTTP: drafts, checks, uploads, publishing as a background job,
//! versions, archiving; and publishing to 10,000 holders against the APNs stand-in.

use std::time::Duration;

use tessera::domain::now_ms;
use tessera::passes::apple::images::sample_png;
use tessera::storage::Role;

use crate::helpers::{
    StaffClient, TestApp, TestDb, eventually, form_fields, issue_member, set_field,
};
use crate::on_both_backends;

/// Uploads an image into the template's draft as the page's script does (JSON answer).
async fn upload(
    staff: &StaffClient,
    template: &str,
    kind: &str,
    bytes: Vec<u8>,
) -> (u16, serde_json::Value) {
    let form = reqwest::multipart::Form::new()
        .text("csrf", staff.csrf.clone())
        .text("kind", kind.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("x.png"),
        );
    let r = staff
        .http
        .post(staff.url(&format!("/staff/templates/{template}/images")))
        .header("cookie", &staff.cookie)
        .header("accept", "application/json")
        .multipart(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The check messages a designer page shows, for failure messages.
fn checks_on(page: &str) -> String {
    page.split("<p class=\"check ")
        .skip(1)
        .map(|p| p.split("</p>").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The id in the `Location` of a redirect to `/staff/templates/{id}`.
fn template_location(r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap();
    loc.strip_prefix("/staff/templates/")
        .expect(loc)
        .to_string()
}

async fn a_marketer_designs_and_publishes_a_template(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    let old_template = first["pass"]["template_id"].as_str().unwrap().to_string();
    let staff = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;

    let (s, page) = staff.get(&format!("/staff/programs/{program_id}")).await;
    assert_eq!(s, 200);
    assert!(page.contains("Default"), "the API's template is listed");

    // A new template starts unpublished: new members still get the old one.
    let r = staff
        .post(
            &format!("/staff/programs/{program_id}/templates"),
            &[("name", "Spring")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let id = template_location(&r);
    let (s, page) = staff.get(&format!("/staff/templates/{id}")).await;
    assert_eq!(s, 200);
    assert!(page.contains("not published yet"));
    assert!(
        page.contains("an icon is required"),
        "the missing icon is shown before publishing"
    );
    let store = &app.state.store;
    assert_eq!(
        store.latest_template(program_id).await.unwrap().unwrap().id,
        old_template
    );

    // Publishing without an icon is refused, and nothing changes.
    let mut form = form_fields(&page, "design");
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}/publish"), &form)
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Not published"));
    assert_eq!(store.get_template(&id).await.unwrap().version, 0);

    // Uploads: a bad one is refused by name; a good icon renders every size, Google's too.
    let (s, body) = upload(&staff, &id, "logo", b"GIF89a not an image".to_vec()).await;
    assert_eq!(s, 422);
    assert_eq!(
        body["errors"][0],
        "logo must be PNG or JPEG, at most 5 MB; this is neither"
    );
    let (s, body) = upload(&staff, &id, "icon", sample_png(300, 300, [200, 40, 40])).await;
    assert_eq!(s, 200, "{body}");
    let names = store.template_draft(&id).await.unwrap().image_names;
    for n in ["icon.png", "icon@2x.png", "icon@3x.png", "google/logo.png"] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }

    // The preview draws the sample member's real code in every format, the back of the Apple
    // card and Google's details view.
    let (_, preview) = staff.get(&format!("/staff/templates/{id}")).await;
    for format in ["qr", "pdf417", "aztec", "code128"] {
        assert!(
            preview.contains(&format!(r#"<template id="sample-barcode-{format}"><svg"#)),
            "{format}"
        );
    }
    assert!(preview.contains(r#"id="apple-back""#) && preview.contains(r#"id="google-details""#));

    // Text as dark as the background (1.0:1) is an error, which blocks publishing.
    let mut dark = form.clone();
    let background = dark
        .iter()
        .find(|(k, _)| k == "color_background")
        .unwrap()
        .1
        .clone();
    set_field(&mut dark, "color_foreground", &background);
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}/check"), &dark)
        .await;
    let checks: serde_json::Value = r.json().await.unwrap();
    let contrast = checks["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "colors.foreground")
        .expect("a contrast finding");
    assert_eq!(contrast["severity"], "error", "{contrast}");
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}/publish"), &dark)
        .await;
    assert_eq!(r.status(), 422, "unreadable text is not published");
    assert_eq!(store.get_template(&id).await.unwrap().version, 0);

    // Live checks: a fifth secondary+auxiliary field is an error at the secondary fields.
    for i in 1..4 {
        set_field(
            &mut form,
            &format!("secondary_fields.{i}.label"),
            &format!("S{i}"),
        );
        set_field(&mut form, &format!("secondary_fields.{i}.value"), "x");
    }
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}/check"), &form)
        .await;
    assert_eq!(r.status(), 200);
    let checks: serde_json::Value = r.json().await.unwrap();
    let found = checks["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["slot"] == "secondary_fields");
    assert_eq!(
        found.expect("a secondary_fields finding")["message"],
        "a storeCard may have at most 4 secondary+auxiliary fields, got 5"
    );
    // Saving keeps the draft, error and all; the page shows the error at its input.
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}"), &form)
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let at = page.find(r#"data-checks="secondary_fields""#).unwrap();
    assert!(page[at..at + 300].contains("at most 4 secondary+auxiliary fields"));
    assert_eq!(
        store
            .template_draft(&id)
            .await
            .unwrap()
            .design
            .secondary_fields
            .len(),
        4
    );

    // Fix it, retitle the points, translate, and publish.
    let mut form = form_fields(&page, "design");
    for i in 1..4 {
        set_field(&mut form, &format!("secondary_fields.{i}.label"), "");
        set_field(&mut form, &format!("secondary_fields.{i}.value"), "");
    }
    set_field(&mut form, "primary_fields.0.label", "STARS");
    set_field(&mut form, "tr_lang.0", "de");
    let r = staff
        .post_pairs(&format!("/staff/templates/{id}/publish"), &form)
        .await;
    let page = r.text().await.unwrap();
    assert!(page.contains("Version 1 published"), "{}", checks_on(&page));
    let t = store.get_template(&id).await.unwrap();
    assert_eq!(
        (t.version, t.design.primary_fields[0].label.as_deref()),
        (1, Some("STARS"))
    );
    assert!(!store.template_draft(&id).await.unwrap().has_draft);
    assert_eq!(
        store.template_versions(&id).await.unwrap()[0]
            .published_by
            .as_deref(),
        Some("mara@example.com")
    );

    // The newest published template is the one new members get; archiving takes it back.
    assert_eq!(
        store.latest_template(program_id).await.unwrap().unwrap().id,
        id
    );
    let r = staff
        .post(
            &format!("/staff/templates/{id}/archive"),
            &[("archived", "1")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        store.latest_template(program_id).await.unwrap().unwrap().id,
        old_template
    );
    staff
        .post(
            &format!("/staff/templates/{id}/archive"),
            &[("archived", "0")],
        )
        .await;

    // A second version, then restore the first into the draft and publish it as v3.
    let (_, page) = staff.get(&format!("/staff/templates/{id}")).await;
    let mut form = form_fields(&page, "design");
    set_field(&mut form, "primary_fields.0.label", "BEANS");
    let page = staff
        .post_pairs(&format!("/staff/templates/{id}/publish"), &form)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Version 2 published"));
    let r = staff
        .post(&format!("/staff/templates/{id}/versions/1/restore"), &[])
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"value="STARS""#),
        "the restored design is in the form"
    );
    let form = form_fields(&page, "design");
    let page = staff
        .post_pairs(&format!("/staff/templates/{id}/publish"), &form)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Version 3 published"));
    let t = store.get_template(&id).await.unwrap();
    assert_eq!(
        (t.version, t.design.primary_fields[0].label.as_deref()),
        (3, Some("STARS"))
    );

    // Duplicating makes an unpublished copy with the same design and images.
    let r = staff
        .post(&format!("/staff/templates/{id}/duplicate"), &[])
        .await;
    let copy = template_location(&r);
    let d = store.template_draft(&copy).await.unwrap();
    assert_eq!(
        (d.template.version, d.template.name.as_str()),
        (0, "Copy of Spring")
    );
    assert_eq!(d.design, t.design);
    assert!(d.image_names.iter().any(|n| n == "icon@3x.png"));

    // Translations: a German label, in the copy's draft.
    let (_, page) = staff.get(&format!("/staff/templates/{copy}")).await;
    let mut form = form_fields(&page, "design");
    let k = form
        .iter()
        .find(|(n, v)| n.starts_with("tr_src.") && v == "STARS")
        .map(|(n, _)| n["tr_src.".len()..].to_string())
        .expect("STARS is translatable");
    set_field(&mut form, "tr_lang.0", "de");
    set_field(&mut form, &format!("tr.0.{k}"), "STERNE");
    assert_eq!(
        staff
            .post_pairs(&format!("/staff/templates/{copy}"), &form)
            .await
            .status(),
        200
    );

    // A real signed sample of the draft.
    let r = staff
        .http
        .get(app.url(&format!("/staff/templates/{copy}/sample.pkpass")))
        .header("cookie", &staff.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.pkpass");
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pass = crate::pass_checks::verify_pkpass(&bytes, &app.root_ca(), dir.path());
    assert_eq!(pass["storeCard"]["primaryFields"][0]["label"], "STARS");
    assert_eq!(
        pass["storeCard"]["secondaryFields"][0]["value"],
        "Alexandra Whitfield"
    );
}

on_both_backends!(a_marketer_designs_and_publishes_a_template);

/// Renaming a program changes what every card shows, so every holder is told.
async fn renaming_a_program_tells_every_holder(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    let template = first["pass"]["template_id"].as_str().unwrap();
    let marketer = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;
    let r = marketer
        .post(
            &format!("/staff/programs/{program_id}"),
            &[("name", "X"), ("organization_name", "Y")],
        )
        .await;
    assert_eq!(r.status(), 403, "only admins edit programs");
    let admin = StaffClient::sign_in(&app, "root@example.com", Role::Admin).await;
    let r = admin
        .post(
            &format!("/staff/programs/{program_id}"),
            &[("name", " "), ("organization_name", "Y")],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("name must not be empty"));
    let before = app
        .state
        .store
        .get_pass(first["pass"]["serial_number"].as_str().unwrap())
        .await
        .unwrap();
    let r = admin
        .post(
            &format!("/staff/programs/{program_id}"),
            &[("name", "Bean Club"), ("organization_name", "Beans Ltd")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let p = app.state.store.get_program(program_id).await.unwrap();
    assert_eq!(
        (p.name.as_str(), p.organization_name.as_str()),
        ("Bean Club", "Beans Ltd")
    );
    let job = app
        .state
        .store
        .latest_publish_job(template)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.total, 1);
    let store = app.state.store.clone();
    let serial = before.serial_number.clone();
    for _ in 0..100 {
        if store.get_pass(&serial).await.unwrap().updated_at > before.updated_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.get_pass(&serial).await.unwrap().updated_at > before.updated_at,
        "the holder's pass changed"
    );
}

on_both_backends!(renaming_a_program_tells_every_holder);

/// Staff who are not designers, and forms without the session's token, are refused.
async fn the_designer_refuses_cashiers_and_forged_forms(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let first = issue_member(&app, "coffee").await;
    let template = first["pass"]["template_id"].as_str().unwrap();
    let cashier = StaffClient::sign_in(&app, "cas@example.com", Role::Cashier).await;
    let (s, _) = cashier.get(&format!("/staff/templates/{template}")).await;
    assert_eq!(s, 403);
    let marketer = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;
    let (_, page) = marketer.get(&format!("/staff/templates/{template}")).await;
    let mut form = form_fields(&page, "design");
    set_field(&mut form, "csrf", "forged");
    set_field(&mut form, "primary_fields.0.label", "HACKED");
    let r = marketer
        .post_pairs(&format!("/staff/templates/{template}/publish"), &form)
        .await;
    assert_eq!(r.status(), 403);
    let t = app.state.store.get_template(template).await.unwrap();
    assert_eq!(
        (t.version, t.design.primary_fields[0].label.as_deref()),
        (1, Some("POINTS"))
    );
    assert!(
        !app.state
            .store
            .template_draft(template)
            .await
            .unwrap()
            .has_draft
    );
}

on_both_backends!(the_designer_refuses_cashiers_and_forged_forms);

/// A publish job is resumable: progress lives in its row, so a new process picks it up where
/// the last one stopped and every holder's pass is marked changed and pushed exactly once.
async fn a_publish_job_resumes_after_a_restart(db: TestDb) {
    let url = db.url.clone();
    let store = db.store().await;
    let program = store
        .insert_program(&crate::helpers::new_program("coffee"))
        .await
        .unwrap();
    let template = store
        .insert_template(&program.id, "T", &tessera::demo::design(), &[])
        .await
        .unwrap();
    let holders = crate::helpers::add_holders(&store, &program, &template, 250).await;
    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut design = tessera::demo::design();
    design.logo_text = Some("Spring".into());
    store.save_draft(&template.id, "T", &design).await.unwrap();
    let (published, job) = store
        .publish_template(
            &template.id,
            |d| Ok::<_, ()>(d.design.clone()),
            "t",
            now_ms(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (published.version, job.total, job.status.as_str()),
        (2, 250, "running")
    );
    let step = store.publish_step(&job.id, 100, now_ms()).await.unwrap();
    assert_eq!((step.done, step.status.as_str()), (100, "running"));
    store.close().await;

    // "Restart": a new connection, and the job runs to its end.
    let store = tessera::storage::Store::connect(&url).await.unwrap();
    let job = store.running_publish_jobs().await.unwrap().remove(0);
    let mut last = job;
    while last.status == "running" {
        last = store.publish_step(&last.id, 100, now_ms()).await.unwrap();
    }
    assert_eq!(
        (last.done, last.total, last.status.as_str()),
        (250, 250, "done")
    );
    for (_, pass) in &holders {
        let p = store.get_pass(&pass.serial_number).await.unwrap();
        assert!(p.updated_at > before, "every pass is marked changed");
    }
    let outbox = store.pending_outbox(10_000).await.unwrap();
    let mut members: Vec<_> = outbox.iter().filter_map(|o| o.member_id.clone()).collect();
    members.sort();
    let mut want: Vec<_> = holders.iter().map(|(m, _)| m.id.clone()).collect();
    want.sort();
    assert_eq!(members, want, "one push row per holder, none twice");
}

on_both_backends!(a_publish_job_resumes_after_a_restart);

/// Publishing to 10,000 holders: a background job, and each registered device gets exactly
/// one push from the APNs stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_ten_thousand_holders_pushes_each_device_once() {
    const HOLDERS: usize = 10_000;
    let (app, standin) = crate::push::app_with_standin(TestDb::sqlite().await).await;
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
    let mut serials: Vec<String> =
        crate::helpers::add_holders(store, &program, &template, HOLDERS - 1)
            .await
            .into_iter()
            .map(|(_, p)| p.serial_number)
            .collect();
    serials.push(first["pass"]["serial_number"].as_str().unwrap().to_string());
    let regs: Vec<(String, String, String)> = serials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                format!("device-{i}"),
                format!("{:064x}", 0xd000 + i),
                s.clone(),
            )
        })
        .collect();
    store.register_devices(&regs, now_ms()).await.unwrap();

    let staff = StaffClient::sign_in(&app, "mara@example.com", Role::Marketer).await;
    let (_, page) = staff
        .get(&format!("/staff/templates/{}", template.id))
        .await;
    let mut form = form_fields(&page, "design");
    set_field(&mut form, "logo_text", "Spring Coffee");
    let started = std::time::Instant::now();
    let r = staff
        .post_pairs(&format!("/staff/templates/{}/publish", template.id), &form)
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "publishing answers at once; the holders are told in the background"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("updating 10000 cards"), "{}", &page[..2000]);
    let job = store
        .latest_publish_job(&template.id)
        .await
        .unwrap()
        .unwrap();

    for _ in 0..1200 {
        let j = store.publish_job(&job.id).await.unwrap();
        if j.status == "done" && store.pending_outbox(1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = store.publish_job(&job.id).await.unwrap();
    assert_eq!(
        (j.done, j.total, j.status.as_str()),
        (HOLDERS as i64, HOLDERS as i64, "done")
    );
    let (s, progress) = staff.get(&format!("/staff/publish-jobs/{}", job.id)).await;
    assert_eq!(s, 200);
    assert!(progress.contains(r#""done":10000"#), "{progress}");
    eventually("every device pushed", || {
        standin.seen.lock().unwrap().len() >= HOLDERS
    })
    .await;
    // Nothing more arrives late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = standin.seen.lock().unwrap().clone();
    let mut per_token = std::collections::HashMap::<String, usize>::new();
    for s in &seen {
        *per_token.entry(s.path.clone()).or_default() += 1;
    }
    assert_eq!(per_token.len(), HOLDERS, "every device was pushed");
    assert!(
        per_token.values().all(|n| *n == 1),
        "no device was pushed twice"
    );
}
