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

    /// `None` (and a note that the test was skipped) when `TESSERA_TEST_POSTGRES_URL` is not
    /// set.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin) = std::env::var(PG_ENV) else {
            eprintln!("skipped: {PG_ENV} is not set");
            return None;
        };
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
                if let Some(db) = $crate::helpers::TestDb::postgres().await {
                    super::$name(db).await
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
    /// Kept so the database outlives the server (`None` for a `peer`, which shares it).
    _db: Option<TestDb>,
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let (url, data_dir) = (db.url.clone(), db.dir.path().join("data"));
        Self::spawn_on(Some(db), url, data_dir, tweak).await
    }

    /// Another instance (its own store, workers and listener) on this one's database and data
    /// folder, as a second server on one PostgreSQL database. Drop it before `self`.
    pub async fn peer(&self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let url = self.state.config.database_url.clone();
        Self::spawn_on(None, url, self.data_dir.clone(), tweak).await
    }

    async fn spawn_on(
        db: Option<TestDb>,
        url: String,
        data_dir: PathBuf,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let mut config = Config {
            listen: addr,
            database_url: url.clone(),
            public_url: format!("http://{addr}"),
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        tweak(&mut config);
        let store = Store::connect(&url).await.unwrap();
        let state = AppState::new(config, store.clone()).unwrap();
        let (_, admin_key) =
            tessera::api::auth::create_key(&store, "test admin", Role::Admin, Default::default())
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

    /// Stops this instance as a crash would: its workers are aborted mid-round and nothing is
    /// given back (claims stay until their lease runs out), and it stops serving.
    pub fn kill(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.workers.iter().for_each(|w| w.abort());
    }

    pub async fn key(&self, role: Role) -> String {
        tessera::api::auth::create_key(&self.state.store, "test", role, Default::default())
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

    /// Imports a CSV into a program through the API with the admin key; asserts 200 and returns
    /// the report.
    pub async fn import_csv(&self, program_id: &str, csv: String) -> serde_json::Value {
        let r = self
            .client
            .post(self.url(&format!("/api/v1/programs/{program_id}/imports")))
            .bearer_auth(&self.admin_key)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
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

/// A program with the dev identity's ids, default rules and this slug.
pub fn new_program(slug: &str) -> NewProgram {
    NewProgram {
        slug: slug.into(),
        name: "Coffee".into(),
        pass_type_identifier: "pass.com.example.coffee".into(),
        team_identifier: "ABCDE12345".into(),
        organization_name: "Coffee Ltd".into(),
        rules: LoyaltyRules::default(),
    }
}

/// A program with `rules`, a template and one member, straight through storage.
pub async fn member_with_rules(store: &Store, rules: LoyaltyRules) -> Member {
    let program = store
        .insert_program(&NewProgram {
            rules,
            ..new_program("coffee")
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

/// Waits until the template's newest publish job is done (the server's publish worker runs
/// it); returns the job.
pub async fn publish_finished(store: &Store, template_id: &str) -> tessera::storage::PublishJob {
    for _ in 0..500 {
        if let Some(job) = store.latest_publish_job(template_id).await.unwrap()
            && job.status == "done"
        {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for the publish job of template {template_id}");
}

/// A signed-in staff member's HTTP session: the session cookie and the CSRF token its forms
/// carry. Redirects are not followed, so tests see them.
pub struct StaffClient {
    pub http: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
    base: String,
}

/// The hidden `csrf` field of a page.
pub fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

impl StaffClient {
    /// Creates a staff account and signs it in through the sign-in form.
    pub async fn sign_in(app: &TestApp, email: &str, role: Role) -> StaffClient {
        const PASSWORD: &str = "correct horse battery";
        tessera::web::staff::create_user(&app.state.store, email, role, PASSWORD)
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(app.url("/staff/login")).send().await.unwrap();
        let pre = page.text().await.unwrap();
        let csrf = csrf_field(&pre);
        let r = http
            .post(app.url("/staff/login"))
            .header("cookie", format!("tessera_csrf={csrf}"))
            .form(&[("email", email), ("password", PASSWORD), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "signed in");
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .find(|c| c.starts_with("tessera_session="))
            .expect("a session cookie");
        let mut client = StaffClient {
            http,
            cookie,
            csrf: String::new(),
            base: app.base.clone(),
        };
        let (_, home) = client.get("/staff").await;
        client.csrf = csrf_field(&home);
        client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POSTs a form with this session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a form made of `pairs` as they are (no CSRF token added).
    pub async fn post_pairs(&self, path: &str, pairs: &[(String, String)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(pairs)
            .send()
            .await
            .unwrap()
    }
}

/// Every named input of the form with id `form_id` on `html`, as a browser would submit it
/// unchanged (text inputs, selects' selected options, checked checkboxes, textareas).
pub fn form_fields(html: &str, form_id: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!(r#"<form id="{form_id}""#))
        .expect("the form");
    let end = start + html[start..].find("</form>").unwrap();
    let form = &html[start..end];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!(" {name}=\"");
        let at = tag.find(&key)? + key.len();
        Some(unescape(tag[at..].split('"').next().unwrap()))
    };
    let mut out = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find('<') {
        rest = &rest[at..];
        let tag_end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..tag_end];
        if tag.starts_with("<input") {
            if let Some(name) = attr(tag, "name") {
                let kind = attr(tag, "type").unwrap_or_default();
                if kind == "checkbox" {
                    if tag.contains(" checked") {
                        out.push((name, "on".into()));
                    }
                } else if kind != "file" {
                    out.push((name, attr(tag, "value").unwrap_or_default()));
                }
            }
        } else if tag.starts_with("<textarea") {
            if let Some(name) = attr(tag, "name") {
                let body = &rest[tag_end + 1..];
                out.push((name, unescape(&body[..body.find("</textarea>").unwrap()])));
            }
        } else if tag.starts_with("<select")
            && let Some(name) = attr(tag, "name")
        {
            let body = &rest[tag_end..rest.find("</select>").unwrap()];
            let chosen = body
                .split("<option")
                .skip(1)
                .find(|o| o.contains(" selected"))
                .or_else(|| body.split("<option").nth(1))
                .and_then(|o| attr(o, "value"))
                .unwrap_or_default();
            out.push((name, chosen));
        }
        rest = &rest[1..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Sets (or adds) `name` in submitted form pairs.
pub fn set_field(pairs: &mut Vec<(String, String)>, name: &str, value: &str) {
    match pairs.iter_mut().find(|(k, _)| k == name) {
        Some(p) => p.1 = value.to_string(),
        None => pairs.push((name.to_string(), value.to_string())),
    }
}

/// Cashier limits: per operation, per UTC day.
pub fn limits(per_operation: Option<i64>, per_day: Option<i64>) -> tessera::ledger::PointLimits {
    tessera::ledger::PointLimits {
        per_operation,
        per_day,
    }
}

/// Polls all `futures` concurrently on this task and returns their outputs in order.
pub async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// `n` members named `M0`, `M1`, … with their passes on `template`, in bulk.
pub async fn add_holders(
    store: &Store,
    program: &tessera::domain::Program,
    template: &tessera::domain::Template,
    n: usize,
) -> Vec<(tessera::domain::Member, tessera::domain::Pass)> {
    let new: Vec<tessera::domain::NewMember> = (0..n)
        .map(|i| tessera::domain::NewMember {
            display_name: format!("M{i}"),
            external_id: None,
        })
        .collect();
    store
        .insert_members_bulk(program, template, &new)
        .await
        .unwrap()
}
