//! Test harness: a fresh database per test (SQLite file, or a PostgreSQL database created for
//! the test and dropped after it) and a server on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;

use tessera::app::{self, AppState};
use tessera::config::Config;
use tessera::domain::{Member, NewMember, NewProgram};
use tessera::ledger::LoyaltyRules;
use tessera::storage::{Role, Store};
use tokio::sync::oneshot;

pub const PG_ENV: &str = "TESSERA_TEST_POSTGRES_URL";

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>, // (admin url, database name) to drop afterwards
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        TestDb { url, dir, pg: None }
    }

    /// `None` when `TESSERA_TEST_POSTGRES_URL` is not set.
    pub async fn postgres() -> Option<TestDb> {
        let admin = std::env::var(PG_ENV).ok()?;
        let name = format!("tessera_test_{}", tessera::secret::random_token(8));
        let store = Store::connect_without_migrating(&admin)
            .await
            .expect("PostgreSQL reachable");
        store
            .execute_admin(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        store.close().await;
        let (base, _) = admin
            .rsplit_once('/')
            .expect("postgres URL with a database name");
        Some(TestDb {
            url: format!("{base}/{name}"),
            dir: tempfile::tempdir().unwrap(),
            pg: Some((admin, name)),
        })
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a fresh one on its own thread does the async work.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                if let Ok(store) = Store::connect_without_migrating(&admin).await {
                    let _ = store
                        .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    store.close().await;
                }
            })
        })
        .join();
    }
}

/// Runs `$name(db)` once on SQLite and once on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::TestDb::sqlite().await).await
            }
            #[tokio::test]
            async fn postgres() {
                match $crate::helpers::TestDb::postgres().await {
                    Some(db) => super::$name(db).await,
                    None => eprintln!("skipped: {} is not set", $crate::helpers::PG_ENV),
                }
            }
        }
    )*};
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub state: AppState,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Kept so the database outlives the server.
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let data_dir = db.dir.path().join("data");
        let mut config = Config {
            listen: addr,
            database_url: db.url.clone(),
            public_url: format!("http://{addr}"),
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        tweak(&mut config);
        let store = Store::connect(&db.url).await.unwrap();
        let state = AppState::new(config, store.clone()).unwrap();
        let (_, admin_key) =
            tessera::api::auth::create_key(&store, "test admin", Role::Admin, None)
                .await
                .unwrap();
        let workers = app::spawn_workers(&state).unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(app::run(state.clone(), listener, async move {
            let _ = stop_rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            admin_key,
            state,
            data_dir,
            shutdown: Some(stop_tx),
            workers,
            _db: db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn key(&self, role: Role) -> String {
        tessera::api::auth::create_key(&self.state.store, "test", role, None)
            .await
            .unwrap()
            .1
    }

    /// POSTs JSON with the admin key and returns (status, body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.post_as(&self.admin_key, path, body).await
    }

    pub async fn post_as(
        &self,
        key: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// POSTs JSON with the admin key and an `Idempotency-Key`.
    pub async fn post_idem(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_idem_as(&self.admin_key, path, key, body).await
    }

    pub async fn post_idem_as(
        &self,
        api_key: &str,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(api_key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_bytes(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
    }

    /// Downloads a member's `.pkpass` through the API.
    pub async fn member_pass(&self, member: &serde_json::Value) -> reqwest::Response {
        let id = member["id"].as_str().expect("member id");
        self.get_bytes(&format!("/api/v1/members/{id}/pass")).await
    }

    pub fn root_ca(&self) -> PathBuf {
        self.data_dir.join("dev-certs").join("root-ca.pem")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.workers.iter().for_each(|w| w.abort());
    }
}

pub fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

/// A program body for `POST /api/v1/programs`.
pub fn program_body(slug: &str) -> serde_json::Value {
    serde_json::json!({
        "slug": slug,
        "name": "Example Coffee",
        "pass_type_identifier": "pass.com.example.coffee",
        "team_identifier": "ABCDE12345",
        "organization_name": "Example Coffee Ltd",
    })
}

/// A template body with the demo design and images.
pub fn template_body() -> serde_json::Value {
    let images: serde_json::Map<String, serde_json::Value> = tessera::demo::images()
        .into_iter()
        .map(|(kind, bytes)| (kind.name().to_string(), b64(&bytes).into()))
        .collect();
    serde_json::json!({
        "name": "Default",
        "design": serde_json::to_value(tessera::demo::design()).unwrap(),
        "images": images,
    })
}

/// Creates a program, a template and a member through the API; returns the member JSON.
pub async fn issue_member(app: &TestApp, slug: &str) -> serde_json::Value {
    let (s, program) = app.post("/api/v1/programs", program_body(slug)).await;
    assert_eq!(s, 201, "{program}");
    let pid = program["id"].as_str().unwrap();
    let (s, t) = app
        .post(
            &format!("/api/v1/programs/{pid}/templates"),
            template_body(),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, member) = app
        .post(
            &format!("/api/v1/programs/{pid}/members"),
            serde_json::json!({"display_name": "Ada Lovelace", "external_id": "crm-1"}),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    member
}

/// A second member ("Grace Hopper") in the program of `first`, through the API.
pub async fn another_member(app: &TestApp, first: &serde_json::Value) -> serde_json::Value {
    let path = format!(
        "/api/v1/programs/{}/members",
        first["program_id"].as_str().unwrap()
    );
    let (s, member) = app
        .post(&path, serde_json::json!({"display_name": "Grace Hopper"}))
        .await;
    assert_eq!(s, 201, "{member}");
    member
}

/// A program with `rules`, a template and one member, straight through storage.
pub async fn member_with_rules(store: &Store, rules: LoyaltyRules) -> Member {
    let program = store
        .insert_program(&NewProgram {
            slug: "coffee".into(),
            name: "Coffee".into(),
            pass_type_identifier: "pass.com.example.coffee".into(),
            team_identifier: "ABCDE12345".into(),
            organization_name: "Coffee Ltd".into(),
            rules,
        })
        .await
        .unwrap();
    let design = tessera::demo::design().validate().unwrap();
    let template = store
        .insert_template(&program.id, "t", &design, &[])
        .await
        .unwrap();
    let new = NewMember {
        display_name: "Ada".into(),
        external_id: None,
    };
    store
        .insert_member(&program, &template, &new)
        .await
        .unwrap()
        .0
}

/// Waits up to five seconds for `cond`, checking every 20 ms; panics naming `what`.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
