//! The PassKit cache (issue 13): `GET pass` and `GET registrations` are answered from memory,
//! and never stale: every write forgets what it changed before any push can go out, on this
//! instance at once and on the others when their `NOTIFY` arrives.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDb, eventually, futures_join_all, issue_member};
use crate::on_both_backends;
use crate::push::{earn, register};

const TOKEN: &str = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233";

struct Device<'a> {
    app: &'a TestApp,
    id: &'a str,
    pass_type: String,
    serial: String,
    auth: String,
}

impl Device<'_> {
    async fn on<'a>(app: &'a TestApp, member: &Value, id: &'a str) -> Device<'a> {
        let pass = app
            .state
            .store
            .get_pass(member["pass"]["serial_number"].as_str().unwrap())
            .await
            .unwrap();
        Device {
            app,
            id,
            pass_type: pass.pass_type_identifier,
            serial: pass.serial_number,
            auth: format!("ApplePass {}", pass.authentication_token),
        }
    }

    /// `GET registrations` since `tag`: the status and the body (`Null` for 204).
    async fn list(&self, tag: Option<&str>) -> (u16, Value) {
        let mut url = self.app.url(&format!(
            "/passkit/v1/devices/{}/registrations/{}",
            self.id, self.pass_type
        ));
        if let Some(t) = tag {
            url += &format!("?passesUpdatedSince={t}");
        }
        let r = self.app.client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let body = if status == 200 {
            r.json().await.unwrap()
        } else {
            Value::Null
        };
        (status, body)
    }

    /// `GET pass`: the status and `Last-Modified`.
    async fn fetch(&self, since: Option<&str>) -> (u16, String) {
        let mut r = self
            .app
            .client
            .get(self.app.url(&format!(
                "/passkit/v1/passes/{}/{}",
                self.pass_type, self.serial
            )))
            .header("Authorization", &self.auth);
        if let Some(s) = since {
            r = r.header("If-Modified-Since", s);
        }
        let r = r.send().await.unwrap();
        let modified = r
            .headers()
            .get("last-modified")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), modified)
    }

    async fn unregister(&self) {
        let r = self
            .app
            .client
            .delete(self.app.url(&format!(
                "/passkit/v1/devices/{}/registrations/{}/{}",
                self.id, self.pass_type, self.serial
            )))
            .header("Authorization", &self.auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

async fn live(app: &TestApp) {
    let store = app.state.store.clone();
    eventually("the PassKit cache is live", move || {
        store.passkit_cache_live()
    })
    .await;
}

/// Moves a pass's version behind the store's back (no forgetting, no `NOTIFY`): what a cached
/// answer would miss.
async fn touch_behind_the_back(db_url: &str, serial: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(db_url).await.unwrap();
    sqlx::query("UPDATE passes SET updated_at = updated_at + 3000 WHERE serial_number = $1")
        .bind(serial)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Answers come from memory (a change made behind the store's back is not seen), and every
/// change made through the store is: an earn, an unregistration, a registration.
async fn answers_from_memory_and_forgets_each_change(db: TestDb) {
    let app = TestApp::spawn(db).await;
    live(&app).await;
    let member = issue_member(&app, "coffee").await;
    let device = Device::on(&app, &member, "dev-cache").await;
    register(&app, &member, device.id, TOKEN).await;

    let (status, body) = device.list(None).await;
    assert_eq!(status, 200);
    let tag = body["lastUpdated"].as_str().unwrap().to_string();
    let (status, modified) = device.fetch(None).await;
    assert_eq!(status, 200);
    assert_eq!(device.fetch(Some(&modified)).await.0, 304);

    touch_behind_the_back(&app.state.config.database_url, &device.serial).await;
    assert_eq!(
        device.list(Some(&tag)).await.0,
        204,
        "answered from memory: a write that bypassed the store is not seen"
    );
    assert_eq!(device.fetch(Some(&modified)).await.0, 304);

    assert_eq!(earn(&app, &member, "cache-earn-1", 5).await, 201);
    let (status, body) = device.list(Some(&tag)).await;
    assert_eq!(status, 200, "the earn is listed at once");
    assert_eq!(body["serialNumbers"], json!([device.serial]));
    let (status, newer) = device.fetch(Some(&modified)).await;
    assert_eq!(status, 200, "the earned pass is served at once");
    assert_ne!(newer, modified);

    device.unregister().await;
    assert_eq!(device.list(None).await.0, 204, "unregistered at once");
    register(&app, &member, device.id, TOKEN).await;
    assert_eq!(device.list(None).await.0, 200, "registered again at once");
}

/// Readers racing writers: whatever a reader read before a change committed is never kept, so
/// the first request after each change sees it.
async fn a_read_racing_a_change_is_never_kept(db: TestDb) {
    let app = TestApp::spawn(db).await;
    live(&app).await;
    let member = issue_member(&app, "coffee").await;
    let device = Device::on(&app, &member, "dev-race").await;
    register(&app, &member, device.id, TOKEN).await;
    let store = app.state.store.clone();
    for round in 0..30 {
        let (_, body) = device.list(None).await;
        let tag = body["lastUpdated"].as_str().unwrap().to_string();
        let (_, modified) = device.fetch(None).await;
        let readers = futures_join_all((0..8).map(|_| async {
            device.list(None).await;
            device.fetch(None).await;
        }));
        let key = format!("race-{round}");
        let (_, status) = tokio::join!(readers, earn(&app, &member, &key, 1));
        assert_eq!(status, 201);
        assert_eq!(
            store.passkit_pass(&device.serial).await.unwrap().updated_at,
            sqlx_version(&app.state.config.database_url, &device.serial).await,
            "round {round}: the store answers the committed version"
        );
        assert_eq!(
            device.list(Some(&tag)).await.0,
            200,
            "round {round}: listed"
        );
        assert_eq!(
            device.fetch(Some(&modified)).await.0,
            200,
            "round {round}: served"
        );
    }
}

async fn sqlx_version(db_url: &str, serial: &str) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(db_url).await.unwrap();
    let row = sqlx::query("SELECT updated_at FROM passes WHERE serial_number = $1")
        .bind(serial)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    row.try_get("updated_at").unwrap()
}

on_both_backends!(
    answers_from_memory_and_forgets_each_change,
    a_read_racing_a_change_is_never_kept
);

/// Two instances on one PostgreSQL database: B answers from memory, and forgets what A changed
/// when A's `NOTIFY` arrives (without it B would answer the old version forever, as a change
/// behind the store's back shows above).
#[tokio::test]
async fn another_instance_forgets_what_this_one_changed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = TestApp::spawn(db).await;
    let b = a.peer(|_| {}).await;
    live(&a).await;
    live(&b).await;
    let member = issue_member(&a, "coffee").await;
    let at_b = Device::on(&b, &member, "dev-b").await;
    register(&a, &member, at_b.id, TOKEN).await;
    let (status, body) = at_b.list(None).await;
    assert_eq!(status, 200);
    let tag = body["lastUpdated"].as_str().unwrap().to_string();
    let (_, modified) = at_b.fetch(None).await;
    assert_eq!(
        at_b.fetch(Some(&modified)).await.0,
        304,
        "B caches the pass"
    );

    assert_eq!(earn(&a, &member, "peer-earn", 3).await, 201);
    for _ in 0..500 {
        if at_b.list(Some(&tag)).await.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, body) = at_b.list(Some(&tag)).await;
    assert_eq!(status, 200, "B lists A's change");
    assert_eq!(body["serialNumbers"], json!([at_b.serial]));
    assert_eq!(
        at_b.fetch(Some(&modified)).await.0,
        200,
        "B serves A's change"
    );
    drop(b);
}
