//! The Apple PassKit web service, status by status, as Wallet calls it.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, issue_member};
use crate::on_both_backends;
use crate::pass_checks::verify_pkpass;

const PUSH_TOKEN: &str = "0f8e2d3c4b5a69788796a5b4c3d2e1f00f8e2d3c4b5a69788796a5b4c3d2e1f0";

struct Card {
    member_id: String,
    serial: String,
    token: String,
    pass_type: String,
}

async fn card(app: &TestApp) -> Card {
    card_in(app, "coffee").await
}

/// A card in a new program with this slug.
async fn card_in(app: &TestApp, slug: &str) -> Card {
    let member = issue_member(app, slug).await;
    let pass = app
        .state
        .store
        .get_pass(member["pass"]["serial_number"].as_str().unwrap())
        .await
        .unwrap();
    Card {
        member_id: member["id"].as_str().unwrap().into(),
        serial: pass.serial_number,
        token: pass.authentication_token,
        pass_type: pass.pass_type_identifier,
    }
}

impl Card {
    fn registration(&self, app: &TestApp, device: &str) -> String {
        app.url(&format!(
            "/passkit/v1/devices/{device}/registrations/{}/{}",
            self.pass_type, self.serial
        ))
    }
    fn pass_url(&self, app: &TestApp) -> String {
        app.url(&format!(
            "/passkit/v1/passes/{}/{}",
            self.pass_type, self.serial
        ))
    }
    fn auth(&self) -> String {
        format!("ApplePass {}", self.token)
    }
    /// Registers `device` for this pass, as Wallet does (201).
    async fn register(&self, app: &TestApp, device: &str) {
        let r = app
            .client
            .post(self.registration(app, device))
            .header("Authorization", self.auth())
            .json(&json!({"pushToken": PUSH_TOKEN}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    /// Earns `points` through the store with the clock reading `at`.
    async fn earn_at(&self, app: &TestApp, points: i64, at: i64) {
        let op = tessera::ledger::Operation::EarnPoints { points };
        app.state
            .store
            .post(&self.member_id, &op, &Default::default(), None, None, at)
            .await
            .unwrap();
    }
}

async fn earn(app: &TestApp, c: &Card, key: &str, points: i64) {
    let (s, b) = app
        .post_idem(
            &format!("/api/v1/members/{}/transactions", c.member_id),
            key,
            json!({"type": "earn", "points": points}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

async fn registration_lifecycle(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let c = card(&app).await;
    let http = &app.client;
    let body = json!({ "pushToken": PUSH_TOKEN });

    // 201 when new, 200 when already registered (the push token is updated).
    let r = http
        .post(c.registration(&app, "dev1"))
        .header("Authorization", c.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(c.registration(&app, "dev1"))
        .header("Authorization", c.auth())
        .json(&json!({"pushToken": "abcdef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let regs = app.state.store.registrations(&c.serial).await.unwrap();
    assert_eq!((regs.len(), regs[0].push_token.as_str()), (1, "abcdef"));

    // 401 for a wrong token, an unknown serial, the wrong pass type, or no Authorization.
    let wrong = format!("ApplePass {}x", c.token);
    let r = http
        .post(c.registration(&app, "dev2"))
        .header("Authorization", wrong.as_str())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let unknown = app.url(&format!(
        "/passkit/v1/devices/dev2/registrations/{}/nosuchserial",
        c.pass_type
    ));
    let r = http
        .post(unknown)
        .header("Authorization", c.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let other_type = app.url(&format!(
        "/passkit/v1/devices/dev2/registrations/pass.com.other/{}",
        c.serial
    ));
    let r = http
        .post(other_type)
        .header("Authorization", c.auth())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(c.registration(&app, "dev2"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(c.registration(&app, "dev2"))
        .header("Authorization", format!("Bearer {}", c.token))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // 400 for a malformed body or push token; nothing registered.
    for bad in ["{not json", "{}", "{\"pushToken\": \"not hex!\"}"] {
        let r = http
            .post(c.registration(&app, "dev2"))
            .header("Authorization", c.auth())
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(
        app.state
            .store
            .registrations(&c.serial)
            .await
            .unwrap()
            .len(),
        1
    );

    // DELETE: 401 with a wrong token, then 200; the device goes with its last registration.
    let r = http
        .delete(c.registration(&app, "dev1"))
        .header("Authorization", wrong.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .delete(c.registration(&app, "dev1"))
        .header("Authorization", c.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        app.state
            .store
            .registrations(&c.serial)
            .await
            .unwrap()
            .is_empty()
    );
    let list = app.url(&format!(
        "/passkit/v1/devices/dev1/registrations/{}",
        c.pass_type
    ));
    assert_eq!(http.get(list).send().await.unwrap().status(), 204);
}

async fn updates_flow_from_earn_to_fetch(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let c = card(&app).await;
    let http = &app.client;
    let list = |since: Option<&str>| {
        let mut url = app.url(&format!(
            "/passkit/v1/devices/dev1/registrations/{}",
            c.pass_type
        ));
        if let Some(s) = since {
            url += &format!("?passesUpdatedSince={s}");
        }
        http.get(url).send()
    };
    // Nothing registered: 204.
    assert_eq!(list(None).await.unwrap().status(), 204);
    let r = http
        .post(c.registration(&app, "dev1"))
        .header("Authorization", c.auth())
        .json(&json!({"pushToken": PUSH_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Without a tag: every registered pass, and lastUpdated as a JSON string.
    let r = list(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serialNumbers"], json!([c.serial]));
    let tag = body["lastUpdated"]
        .as_str()
        .expect("lastUpdated is a string")
        .to_string();
    // Asking again with the tag just given: nothing changed, 204 (no margin, no repeats).
    assert_eq!(list(Some(&tag)).await.unwrap().status(), 204);
    assert_eq!(list(Some("yesterday")).await.unwrap().status(), 200);

    // The pass itself, with Last-Modified of its own change time; 304 when unchanged.
    let r = http
        .get(c.pass_url(&app))
        .header("Authorization", c.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.pkpass");
    let last_modified = r.headers()["last-modified"].to_str().unwrap().to_string();
    let pass = app.state.store.get_pass(&c.serial).await.unwrap();
    assert_eq!(
        last_modified,
        tessera::api::http_date(pass.updated_at).unwrap()
    );
    assert!(
        app.state.fetches.pending(&c.serial).is_some(),
        "the fetch is recorded"
    );
    app.state.fetches.flush(&app.state.store).await.unwrap();
    let stored = app.state.store.get_pass(&c.serial).await.unwrap();
    assert!(stored.last_fetched_at.is_some(), "and written on flush");
    let first = r.bytes().await.unwrap();
    let r = http
        .get(c.pass_url(&app))
        .header("Authorization", c.auth())
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Signing time has one-second resolution: a second later a rebuilt pass would differ, the
    // cached one does not.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = http
        .get(c.pass_url(&app))
        .header("Authorization", c.auth())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        first, again,
        "an unchanged pass is served from its signed bytes"
    );

    // A balance change, in the same second as the download: the list names the pass again
    // with a new tag, that tag lists nothing, and the pass shows the change.
    earn(&app, &c, "e1", 40).await;
    let r = list(Some(&tag)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serialNumbers"], json!([c.serial]));
    let new_tag = body["lastUpdated"].as_str().unwrap();
    assert_ne!(new_tag, tag);
    assert_eq!(list(Some(new_tag)).await.unwrap().status(), 204);
    let r = http
        .get(c.pass_url(&app))
        .header("Authorization", c.auth())
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "changed since If-Modified-Since");
    let newer = r.headers()["last-modified"].to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pass_json = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass_json["storeCard"]["primaryFields"][0]["value"], 40);
    assert_eq!(
        pass_json["authenticationToken"],
        c.token.as_str(),
        "the token never changes"
    );
    let r = http
        .get(c.pass_url(&app))
        .header("Authorization", c.auth())
        .header("If-Modified-Since", newer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Wrong token on the pass: 401.
    let r = http
        .get(c.pass_url(&app))
        .header("Authorization", "ApplePass nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

on_both_backends!(registration_lifecycle, updates_flow_from_earn_to_fetch);

/// Two changes in the same second: the device that fetched after the first gets 200 and the
/// newest pass when it asks with the first `Last-Modified`, then 304 with the second; and the
/// Wallet round (list with the old tag, list with the new tag, fetch) ends in 204 and 304.
async fn same_second_changes_reach_the_device(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let c = card(&app).await;
    let http = &app.client;
    c.register(&app, "dev1").await;
    let list = app.url(&format!(
        "/passkit/v1/devices/dev1/registrations/{}",
        c.pass_type
    ));
    let list_since = |tag: String| http.get(format!("{list}?passesUpdatedSince={tag}")).send();
    let fetch = |since: Option<String>| {
        let mut r = http.get(c.pass_url(&app)).header("Authorization", c.auth());
        if let Some(s) = since {
            r = r.header("If-Modified-Since", s);
        }
        r.send()
    };
    // Both changes carry the very same clock reading: one second, one millisecond even.
    let at = tessera::domain::now_ms();
    c.earn_at(&app, 7, at).await;
    let body: Value = http.get(&list).send().await.unwrap().json().await.unwrap();
    let first_tag = body["lastUpdated"].as_str().unwrap().to_string();
    let r = fetch(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let first_modified = r.headers()["last-modified"].to_str().unwrap().to_string();

    c.earn_at(&app, 7, at).await;
    let r = list_since(first_tag.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "the second change is listed");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serialNumbers"], json!([c.serial]));
    let second_tag = body["lastUpdated"].as_str().unwrap().to_string();
    assert_ne!(second_tag, first_tag);
    let r = fetch(Some(first_modified.clone())).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "not 304: the pass changed since {first_modified}"
    );
    let second_modified = r.headers()["last-modified"].to_str().unwrap().to_string();
    assert_ne!(second_modified, first_modified);
    let dir = tempfile::tempdir().unwrap();
    let pass_json = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass_json["storeCard"]["primaryFields"][0]["value"], 14);
    assert_eq!(list_since(second_tag).await.unwrap().status(), 204);
    assert_eq!(fetch(Some(second_modified)).await.unwrap().status(), 304);
}

/// A device holds two cards. A change to one, stamped earlier than a change to the other but
/// committed after the device listed, is still listed: the tag records each pass's version.
async fn late_commits_are_not_missed(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let a = card(&app).await;
    let b = card_in(&app, "tea").await;
    for c in [&a, &b] {
        c.register(&app, "dev1").await;
    }
    let list = app.url(&format!(
        "/passkit/v1/devices/dev1/registrations/{}",
        a.pass_type
    ));
    let now = tessera::domain::now_ms();
    a.earn_at(&app, 1, now + 10_000).await;
    let body: Value = app
        .client
        .get(&list)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tag = body["lastUpdated"].as_str().unwrap().to_string();
    // A transaction that read its clock before A's change commits only now.
    b.earn_at(&app, 1, now + 5_000).await;
    let r = app
        .client
        .get(format!("{list}?passesUpdatedSince={tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the late commit is listed");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serialNumbers"], json!([b.serial]));
}

on_both_backends!(
    same_second_changes_reach_the_device,
    late_commits_are_not_missed
);

#[tokio::test]
async fn device_logs_are_accepted_within_limits() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let url = app.url("/passkit/v1/log");
    let r = app
        .client
        .post(&url)
        .json(&json!({"logs": ["Register task encountered error: Authentication failure"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.post(&url).body("{nope").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let huge = json!({"logs": ["x".repeat(70 * 1024)]});
    let r = app.client.post(&url).json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
}
