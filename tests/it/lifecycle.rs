//! Card lifecycle (issue 16): ending a card voids it in both wallets, pushes its devices, kills
//! its links and keeps the ledger; a reissued card is a new, verifiable pass and the old one void.

use serde_json::{Value, json};

use crate::google::google_app;
use crate::helpers::{TestApp, TestDb, eventually, issue_member};
use crate::on_both_backends;
use crate::pass_checks::verify_pkpass;
use crate::push::{app_with_standin, earn, register};

/// GETs a URL with no credentials; returns the status.
async fn status_of(app: &TestApp, url: &str) -> u16 {
    app.client.get(url).send().await.unwrap().status().as_u16()
}

/// The pass as the PassKit web service serves it to a device holding `token`, verified with
/// the openssl CLI; returns its pass.json.
async fn fetched_pass(app: &TestApp, pass_type: &str, serial: &str, token: &str) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/passkit/v1/passes/{pass_type}/{serial}")))
        .header("Authorization", format!("ApplePass {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    verify_pkpass(&bytes, &app.root_ca(), dir.path())
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .delete(app.url(path))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app.get_bytes(path).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ending_a_card_voids_it_pushes_it_and_kills_its_links(db: TestDb) {
    let (app, standin) = app_with_standin(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let serial = member["pass"]["serial_number"].as_str().unwrap();
    let pass_type = member["pass"]["pass_type_identifier"].as_str().unwrap();
    let download = member["pass"]["pass_url"].as_str().unwrap().to_string();
    let token = app
        .state
        .store
        .get_pass(serial)
        .await
        .unwrap()
        .authentication_token;
    assert!(
        !download.contains(&token),
        "the download link has its own token, not the PassKit one"
    );
    register(&app, &member, "phone", "abcd01").await;
    assert_eq!(earn(&app, &member, "e1", 25).await, 201);
    eventually("the earn's push", || standin.pushes_to("abcd01").len() == 1).await;
    let (s, link) = app
        .post(&format!("/api/v1/members/{id}/install-link"), json!({}))
        .await;
    assert_eq!(s, 200, "{link}");
    let install = link["url"].as_str().unwrap().to_string();
    assert_eq!(status_of(&app, &download).await, 200);
    assert_eq!(status_of(&app, &install).await, 200);

    let (s, ended) = delete(&app, &format!("/api/v1/members/{id}/card")).await;
    assert_eq!(s, 200, "{ended}");
    assert_eq!(ended["serial_number"], serial);
    assert!(ended["ended_at"].as_i64().is_some(), "{ended}");

    // The device is pushed and fetches a void pass without a barcode.
    eventually("the end's push", || standin.pushes_to("abcd01").len() == 2).await;
    let pass = fetched_pass(&app, pass_type, serial, &token).await;
    assert_eq!(pass["voided"], true, "{pass}");
    assert!(pass.get("barcodes").is_none(), "{pass}");
    // The links are dead; the ledger stays.
    assert_eq!(status_of(&app, &download).await, 404);
    assert_eq!(status_of(&app, &install).await, 404);
    let (s, view) = get(&app, &format!("/api/v1/members/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(view["points"], 25, "{view}");
    assert!(view["pass"]["ended_at"].as_i64().is_some(), "{view}");
    assert_eq!(app.state.store.ledger_sum(id).await.unwrap(), 25);

    // Once the voided pass was fetched, the registration and the device's push token go.
    let updated = app.url(&format!(
        "/passkit/v1/devices/phone/registrations/{pass_type}"
    ));
    for _ in 0..250 {
        if app
            .state
            .store
            .registrations(serial)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        app.state
            .store
            .registrations(serial)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(status_of(&app, &updated).await, 204);

    // Ending it again changes nothing and pushes nothing.
    let before = app.state.store.get_pass(serial).await.unwrap();
    let (s, again) = delete(&app, &format!("/api/v1/members/{id}/card")).await;
    assert_eq!(s, 200);
    assert_eq!(again["ended_at"], ended["ended_at"]);
    assert_eq!(
        app.state.store.get_pass(serial).await.unwrap().updated_at,
        before.updated_at
    );
    assert!(app.state.store.pending_outbox(10).await.unwrap().is_empty());
    // A posting after the end leaves the void pass as it is.
    assert_eq!(earn(&app, &member, "e2", 5).await, 201);
    assert_eq!(
        app.state.store.get_pass(serial).await.unwrap().updated_at,
        before.updated_at
    );
    let (s, _) = delete(&app, "/api/v1/members/nobody/card").await;
    assert_eq!(s, 404);
}

async fn a_reissued_card_is_a_new_pass_and_the_old_one_is_void(db: TestDb) {
    let (app, standin) = app_with_standin(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let old_serial = member["pass"]["serial_number"].as_str().unwrap();
    let pass_type = member["pass"]["pass_type_identifier"].as_str().unwrap();
    let old_download = member["pass"]["pass_url"].as_str().unwrap().to_string();
    let old_barcode = member["barcode"].as_str().unwrap().to_string();
    let old = app.state.store.get_pass(old_serial).await.unwrap();
    register(&app, &member, "old-phone", "abcd01").await;
    assert_eq!(earn(&app, &member, "e1", 40).await, 201);
    eventually("the earn's push", || standin.pushes_to("abcd01").len() == 1).await;
    let (s, link) = app
        .post(&format!("/api/v1/members/{id}/install-link"), json!({}))
        .await;
    assert_eq!(s, 200);
    let old_install = link["url"].as_str().unwrap().to_string();

    let reissue = format!("/api/v1/members/{id}/card/reissue");
    let (s, fresh) = app.post_idem(&reissue, "lost-1", json!({})).await;
    assert_eq!(s, 201, "{fresh}");
    let serial = fresh["serial_number"].as_str().unwrap();
    assert_ne!(serial, old_serial);
    // A retried request returns the same card instead of voiding it.
    let (s, again) = app.post_idem(&reissue, "lost-1", json!({})).await;
    assert_eq!((s, &again["serial_number"]), (201, &fresh["serial_number"]));
    assert_eq!(app.state.store.member_passes(id).await.unwrap().len(), 2);
    assert!(fresh["ended_at"].is_null());
    let new = app.state.store.get_pass(serial).await.unwrap();
    assert_ne!(new.authentication_token, old.authentication_token);
    assert_ne!(new.download_token, old.download_token);
    assert_ne!(new.download_token, new.authentication_token);

    // The new card downloads through its own link and verifies with openssl.
    let download = fresh["pass_url"].as_str().unwrap();
    assert!(download.contains(&new.download_token));
    let r = app.client.get(download).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass["serialNumber"], serial);
    assert_eq!(
        pass["authenticationToken"],
        new.authentication_token.as_str()
    );
    assert!(pass.get("voided").is_none());
    let barcode = pass["barcodes"][0]["message"].as_str().unwrap();
    assert_ne!(barcode, old_barcode, "a new barcode");

    // The old pass is pushed and fetched void; its links are dead, its barcode finds no one.
    eventually("the reissue's push to the old device", || {
        standin.pushes_to("abcd01").len() == 2
    })
    .await;
    let voided = fetched_pass(&app, pass_type, old_serial, &old.authentication_token).await;
    assert_eq!(voided["voided"], true);
    assert!(voided.get("barcodes").is_none());
    assert_eq!(status_of(&app, &old_download).await, 404);
    assert_eq!(status_of(&app, &old_install).await, 404);
    let (s, _) = get(&app, &format!("/api/v1/members?barcode={old_barcode}")).await;
    assert_eq!(s, 404);
    let (s, found) = get(&app, &format!("/api/v1/members?barcode={barcode}")).await;
    assert_eq!(s, 200);
    assert_eq!(found["pass"]["serial_number"], serial);
    assert_eq!(found["points"], 40, "the ledger follows the member");

    // A new install link opens the new card; later changes push the new card's devices only.
    let (_, link) = app
        .post(&format!("/api/v1/members/{id}/install-link"), json!({}))
        .await;
    assert_eq!(status_of(&app, link["url"].as_str().unwrap()).await, 200);
    let member_now = json!({"id": id, "pass": {"serial_number": serial}});
    register(&app, &member_now, "new-phone", "beef02").await;
    assert_eq!(earn(&app, &member, "e2", 5).await, 201);
    eventually("the push to the new phone", || {
        standin.pushes_to("beef02").len() == 1
    })
    .await;
    assert_eq!(
        standin.pushes_to("abcd01").len(),
        2,
        "the old phone hears no more"
    );
}

async fn an_ended_card_is_inactive_on_google_and_a_reissue_is_a_new_object(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let google = app.state.google.as_ref().unwrap();
    let first = google.object_id(id);
    let state_of = |object: &str| -> Option<String> {
        standin.recorded().objects.get(object)?["state"]
            .as_str()
            .map(String::from)
    };
    eventually("the object is written", || state_of(&first).is_some()).await;
    assert_eq!(state_of(&first).as_deref(), Some("ACTIVE"));

    let (s, _) = delete(&app, &format!("/api/v1/members/{id}/card")).await;
    assert_eq!(s, 200);
    eventually("the object goes inactive", || {
        state_of(&first).as_deref() == Some("INACTIVE")
    })
    .await;

    let (s, fresh) = app
        .post(&format!("/api/v1/members/{id}/card/reissue"), json!({}))
        .await;
    assert_eq!(s, 201);
    let second = google.object_id(&format!(
        "{id}-{}",
        fresh["serial_number"].as_str().unwrap()
    ));
    eventually("the new object is written", || {
        state_of(&second).as_deref() == Some("ACTIVE")
    })
    .await;
    assert_eq!(state_of(&first).as_deref(), Some("INACTIVE"));
    let barcode = |object: &str| {
        standin.recorded().objects[object]["barcode"]["value"]
            .as_str()
            .map(String::from)
    };
    assert_ne!(barcode(&first), barcode(&second));
    // The worker records the new object just after Google answered.
    for _ in 0..250 {
        let stored = app.state.store.google_object(id).await.unwrap().unwrap();
        if stored.object_id == second {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the new object was never recorded");
}

on_both_backends!(
    ending_a_card_voids_it_pushes_it_and_kills_its_links,
    a_reissued_card_is_a_new_pass_and_the_old_one_is_void,
    an_ended_card_is_inactive_on_google_and_a_reissue_is_a_new_object,
);

/// Every byte of the database as stored: the SQLite file and its WAL, or a `pg_dump`.
pub fn database_bytes(url: &str) -> Vec<u8> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut bytes = std::fs::read(path).unwrap();
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        bytes
    } else {
        let out = std::process::Command::new("pg_dump")
            .arg("--dbname")
            .arg(url)
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

async fn erasure_leaves_no_personal_data_and_the_points_as_they_were(db: TestDb) {
    use crate::enrollment::{join_form, no_redirects, open_join_page, submit};
    let (app, _standin) = app_with_standin(db).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    open_join_page(&app, program_id).await;
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Zenobia Quillfeather"),
            ("email", "Zenobia.Q@example.org"),
            ("phone", "+44 20 7946 0958"),
            ("birthday", "1990-02-03"),
            ("data_consent", "yes"),
            ("marketing_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let card = r.headers()["location"].to_str().unwrap().to_string();
    let id = card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/members/{id}/transactions");
    let (s, body) = app
        .post_idem(
            &path,
            "goodwill",
            json!({"type": "adjust", "points": 10, "reason": "sorry, Zenobia Quillfeather"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (_, member) = get(&app, &format!("/api/v1/members/{id}")).await;
    register(&app, &member, "zen-phone", "cafe99").await;
    let store = &app.state.store;
    let totals = store.program_totals(program_id).await.unwrap();
    let consents = store.consents(&id).await.unwrap().len();
    assert!(consents >= 2);
    let secrets = [
        "Zenobia",
        "Quillfeather",
        "zenobia.q@example.org",
        "+442079460958",
        "1990-02-03",
    ];
    let url = app.state.config.database_url.clone();
    store.checkpoint().await.unwrap();
    assert!(
        contains(&database_bytes(&url), "Quillfeather"),
        "the check can see a name"
    );

    let (s, erased) = app
        .post(&format!("/api/v1/members/{id}/erase"), json!({}))
        .await;
    assert_eq!(s, 200, "{erased}");
    let removed = &erased["removed"];
    for field in ["display_name", "email", "phone", "birthday"] {
        assert!(
            removed["fields"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{erased}"
        );
    }
    assert_eq!(removed["card_ended"], true);
    assert_eq!(removed["registrations"], 1);
    assert_eq!(removed["devices"], 1);
    assert_eq!(removed["ledger_reasons"], 1);
    assert_eq!(erased["kept"]["consents"], consents as i64);
    assert_eq!(
        erased["kept"]["ledger_entries"], 2,
        "welcome bonus and goodwill"
    );
    assert_eq!(erased["scrubbed"], true);

    // The points stay where they were; the consents stay as proof; the card is void.
    assert_eq!(store.program_totals(program_id).await.unwrap(), totals);
    assert_eq!(store.consents(&id).await.unwrap().len(), consents);
    assert_eq!(store.ledger_sum(&id).await.unwrap(), 35);
    let (_, after) = get(&app, &format!("/api/v1/members/{id}")).await;
    assert_eq!(after["display_name"], "");
    assert_eq!(after["points"], 35);
    assert!(after["pass"]["ended_at"].as_i64().is_some());
    assert_eq!(store.member_contact(&id).await.unwrap(), (None, None, None));

    // Nowhere in the database's bytes.
    let bytes = database_bytes(&url);
    for secret in secrets {
        assert!(
            !contains(&bytes, secret),
            "{secret} is still in the database"
        );
    }
    // No card for an erased member; erasing again is harmless.
    let (s, _) = app
        .post(&format!("/api/v1/members/{id}/card/reissue"), json!({}))
        .await;
    assert_eq!(s, 409);
    let (s, again) = app
        .post(&format!("/api/v1/members/{id}/erase"), json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(again["erased_at"], erased["erased_at"]);
    assert_eq!(again["removed"]["fields"], json!([]));
}

on_both_backends!(erasure_leaves_no_personal_data_and_the_points_as_they_were);

async fn the_export_holds_the_join_the_ledger_the_card_and_the_messages(db: TestDb) {
    use crate::enrollment::{join_form, no_redirects, open_join_page, submit};
    let (app, _standin, _) = google_app(db).await;
    let first = issue_member(&app, "coffee").await;
    open_join_page(&app, first["program_id"].as_str().unwrap()).await;
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Grace Hopper"),
            ("email", "grace@example.org"),
            ("phone", "+1 202 555 0143"),
            ("data_consent", "yes"),
            ("marketing_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let card = r.headers()["location"].to_str().unwrap().to_string();
    let id = card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/members/{id}/transactions");
    let (s, _) = app
        .post_idem(&path, "e1", json!({"type": "earn", "points": 40}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = app
        .post_idem(&path, "r1", json!({"type": "redeem", "points": 15}))
        .await;
    assert_eq!(s, 201);
    let (s, body) = app
        .post_idem(
            &format!("/api/v1/members/{id}/google/messages"),
            "m1",
            json!({"header": "Double points", "body": "All week long"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let (_, member) = get(&app, &format!("/api/v1/members/{id}")).await;
    register(&app, &member, "grace-phone", "feed01").await;

    let (s, export) = get(&app, &format!("/api/v1/members/{id}/export")).await;
    assert_eq!(s, 200, "{export}");
    let profile = &export["profile"];
    assert_eq!(profile["display_name"], "Grace Hopper");
    assert_eq!(profile["email"], "grace@example.org");
    assert_eq!(profile["phone"], "+12025550143");
    assert_eq!(profile["points"], 50, "25 welcome + 40 - 15");
    let consents = export["consents"].as_array().unwrap();
    let data = consents.iter().find(|c| c["kind"] == "data").unwrap();
    assert_eq!(data["granted"], true);
    assert!(!data["text_shown"].as_str().unwrap().is_empty());
    let kinds: Vec<&str> = export["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"earn") && kinds.contains(&"redeem"),
        "{kinds:?}"
    );
    let points: Vec<i64> = export["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["points"].as_i64().unwrap())
        .collect();
    assert!(points.contains(&40) && points.contains(&-15));
    let cards = export["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0]["serial_number"], member["pass"]["serial_number"]);
    assert_eq!(
        cards[0]["devices"][0]["device_library_identifier"],
        "grace-phone"
    );
    let messages = export["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{export}");
    assert_eq!(messages[0]["header"], "Double points");
    assert_eq!(messages[0]["body"], "All week long");

    // A cashier key may not read it.
    let cashier = app.key(tessera::storage::Role::Cashier).await;
    let r = app
        .client
        .get(app.url(&format!("/api/v1/members/{id}/export")))
        .bearer_auth(cashier)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

on_both_backends!(the_export_holds_the_join_the_ledger_the_card_and_the_messages);

/// The account-page link on the back of the member's current card.
async fn account_link(app: &TestApp, member_id: &str) -> String {
    let r = app
        .get_bytes(&format!("/api/v1/members/{member_id}/pass"))
        .await;
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    let field = pass["storeCard"]["backFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "tessera_account")
        .cloned()
        .expect("the back of the card links to the account page");
    field["value"].as_str().unwrap().to_string()
}

async fn withdrawing_on_the_account_page_stops_a_scheduled_message(db: TestDb) {
    use crate::enrollment::{join_form, no_redirects, open_join_page, submit};
    let (app, standin, _) = google_app(db).await;
    let first = issue_member(&app, "coffee").await;
    let other = first["id"].as_str().unwrap().to_string();
    open_join_page(&app, first["program_id"].as_str().unwrap()).await;
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Mary Somerville"),
            ("email", "mary@example.org"),
            ("data_consent", "yes"),
            ("marketing_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let card = r.headers()["location"].to_str().unwrap().to_string();
    let id = card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let google = app.state.google.as_ref().unwrap();
    let (mary, grace) = (google.object_id(&id), google.object_id(&other));
    eventually("both objects are written", || {
        let r = standin.recorded();
        r.objects.contains_key(&mary) && r.objects.contains_key(&grace)
    })
    .await;

    // Google is down: the messages wait in the queue.
    standin.recorded().fail_next = usize::MAX;
    for member in [&id, &other] {
        let (s, body) = app
            .post_idem(
                &format!("/api/v1/members/{member}/google/messages"),
                "offer-1",
                json!({"header": "Double points", "body": "All week long"}),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(body["queued"], 1, "{body}");
    }

    // Mary withdraws marketing on the page the back of her card links to.
    let link = account_link(&app, &id).await;
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Stop marketing messages")
    );
    let r = app
        .client
        .post(&link)
        .form(&[("action", "marketing")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no more marketing messages")
    );
    let consents = app.state.store.consents(&id).await.unwrap();
    let last = consents.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.granted, last.source.as_str()),
        ("marketing", false, "account_page")
    );

    // Google is back: Grace's message goes out, Mary's never does, nor any later one.
    standin.recorded().fail_next = 0;
    // Messages the stand-in added to an object (failed attempts add nothing).
    let added = |object: &str| {
        standin.recorded().objects[object]["messages"]
            .as_array()
            .map_or(0, Vec::len)
    };
    eventually("Grace's message is added", || added(&grace) == 1).await;
    assert_eq!(
        added(&mary),
        0,
        "the withdrawn member's message was never sent"
    );
    assert!(
        app.state
            .store
            .member_messages(&id)
            .await
            .unwrap()
            .is_empty()
    );
    let (s, body) = app
        .post_idem(
            &format!("/api/v1/members/{id}/google/messages"),
            "offer-2",
            json!({"header": "More", "body": "Offers"}),
        )
        .await;
    assert_eq!((s, body["queued"].as_i64()), (202, Some(0)), "{body}");

    // Closing the membership there erases Mary; the link then opens nothing.
    let r = app
        .client
        .post(&link)
        .form(&[("action", "close"), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, member) = get(&app, &format!("/api/v1/members/{id}")).await;
    assert_eq!(member["display_name"], "");
    assert!(member["pass"]["ended_at"].as_i64().is_some());
    let data = app.state.store.consents(&id).await.unwrap();
    assert!(
        data.iter()
            .any(|c| c.kind == "data" && !c.granted && c.source == "account_page")
    );
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 404);
}

async fn withdrawing_through_the_api_records_a_row_and_all_erases(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let path = format!("/api/v1/members/{id}/consents");
    let (s, body) = app
        .post(&path, json!({"scope": "marketing", "note": "by phone"}))
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["recorded"][0]["kind"], "marketing");
    assert_eq!(body["recorded"][0]["granted"], false);
    assert!(
        body["recorded"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("api:")
    );
    assert!(body["erasure"].is_null());
    let (s, _) = app.post(&path, json!({"scope": "everything"})).await;
    assert_eq!(s, 400);
    let (s, body) = app.post(&path, json!({"scope": "all"})).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["erasure"]["removed"]["card_ended"], true);
    let records = app.state.store.consents(id).await.unwrap();
    assert_eq!(
        records.len(),
        3,
        "append-only: marketing, then marketing and data"
    );
    let (_, after) = get(&app, &format!("/api/v1/members/{id}")).await;
    assert_eq!(after["display_name"], "");
}

on_both_backends!(
    withdrawing_on_the_account_page_stops_a_scheduled_message,
    withdrawing_through_the_api_records_a_row_and_all_erases,
);

async fn patch(app: &TestApp, id: &str, etag: Option<&str>, body: Value) -> reqwest::Response {
    let mut r = app
        .client
        .patch(app.url(&format!("/api/v1/members/{id}")))
        .bearer_auth(&app.admin_key)
        .json(&body);
    if let Some(tag) = etag {
        r = r.header("If-Match", tag);
    }
    r.send().await.unwrap()
}

async fn a_member_update_needs_the_current_etag_and_the_card_follows(db: TestDb) {
    let (app, standin) = app_with_standin(db).await;
    let member = issue_member(&app, "coffee").await;
    let id = member["id"].as_str().unwrap();
    let serial = member["pass"]["serial_number"].as_str().unwrap();
    let pass_type = member["pass"]["pass_type_identifier"].as_str().unwrap();
    register(&app, &member, "phone", "abcd01").await;
    let r = app.get_bytes(&format!("/api/v1/members/{id}")).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, "\"0\"");

    let r = patch(&app, id, None, json!({"display_name": "Ada King"})).await;
    assert_eq!(r.status(), 428);
    let r = patch(
        &app,
        id,
        Some(&etag),
        json!({"display_name": "Ada King", "email": "ADA@Example.com",
               "phone": "+44 20 7946 0000", "birthday": "1815-12-10"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let next = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(next, "\"1\"");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["display_name"], "Ada King");
    assert_eq!(
        app.state.store.member_contact(id).await.unwrap(),
        (
            Some("ada@example.com".into()),
            Some("+442079460000".into()),
            Some("1815-12-10".into())
        )
    );
    // The card follows: the device is pushed and fetches the new name.
    eventually("the rename's push", || {
        standin.pushes_to("abcd01").len() == 1
    })
    .await;
    let token = app
        .state
        .store
        .get_pass(serial)
        .await
        .unwrap()
        .authentication_token;
    let pass = fetched_pass(&app, pass_type, serial, &token).await;
    assert!(pass.to_string().contains("Ada King"), "{pass}");

    // A writer holding the old ETag is refused and changes nothing.
    let r = patch(
        &app,
        id,
        Some(&etag),
        json!({"display_name": "Someone Else"}),
    )
    .await;
    assert_eq!(r.status(), 412);
    let (_, now) = get(&app, &format!("/api/v1/members/{id}")).await;
    assert_eq!(now["display_name"], "Ada King");

    // Clearing the e-mail changes nothing the card shows: no new pass version.
    let before = app.state.store.get_pass(serial).await.unwrap().updated_at;
    let r = patch(&app, id, Some(&next), json!({"email": null})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.state.store.member_contact(id).await.unwrap().0, None);
    assert_eq!(
        app.state.store.get_pass(serial).await.unwrap().updated_at,
        before
    );

    let r = patch(&app, id, Some("\"2\""), json!({"email": "not-an-address"})).await;
    assert_eq!(r.status(), 400);
    let other = crate::helpers::another_member(&app, &member).await;
    let r = patch(
        &app,
        other["id"].as_str().unwrap(),
        Some("\"0\""),
        json!({"external_id": "crm-1"}),
    )
    .await;
    assert_eq!(r.status(), 409, "crm-1 is Ada's");
}

on_both_backends!(a_member_update_needs_the_current_etag_and_the_card_follows);
