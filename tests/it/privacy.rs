//! E-mail and phone sealed at rest (issue 16 item 7): never plain in the database's bytes, yet
//! readable through the API and found by the join page's returning-customer match; `tessera
//! keys rotate` keeps every member so and leaves no value under the old key; values an earlier
//! version stored plain are sealed on upgrade.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tessera::privacy::KeyRing;

use crate::cli::tessera;
use crate::enrollment::{join_form, no_redirects, open_join_page, submit};
use crate::helpers::{TestApp, TestDb, issue_member};
use crate::lifecycle::{contains, database_bytes};
use crate::on_both_backends;

/// A member the tests make: name, e-mail (as typed), phone (as typed), and both normalised.
struct Person {
    id: String,
    email: String,
    phone: Option<String>,
}

/// Joins through the join page; returns the new member's id.
async fn join(app: &TestApp, name: &str, email: &str, phone: &str) -> String {
    let http = no_redirects();
    let (csrf, _) = join_form(app, &http).await;
    let mut fields = vec![("name", name), ("email", email), ("data_consent", "yes")];
    if !phone.is_empty() {
        fields.push(("phone", phone));
    }
    let r = submit(app, &http, &csrf, &fields).await;
    assert_eq!(r.status(), 303, "{email} joins as a new member");
    let card = r.headers()["location"].to_str().unwrap().to_string();
    card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string()
}

/// Whether the join page's returning-customer match finds a member by this e-mail (typed in
/// another case) or phone: the "already a member" page, and no new member.
async fn found(app: &TestApp, email: &str, phone: &str) -> bool {
    let before = app.state.store.counts().await.unwrap()[2];
    let http = no_redirects();
    let (csrf, _) = join_form(app, &http).await;
    let email = email.to_uppercase();
    let mut fields = vec![("name", "Someone"), ("data_consent", "yes")];
    if !email.is_empty() {
        fields.push(("email", &email));
    }
    if !phone.is_empty() {
        fields.push(("phone", phone));
    }
    let r = submit(app, &http, &csrf, &fields).await;
    let status = r.status().as_u16();
    let html = r.text().await.unwrap();
    let returning = status == 200 && html.contains("If you are already a member");
    let after = app.state.store.counts().await.unwrap()[2];
    assert_eq!(returning, before == after, "{status}: a new member or none");
    returning
}

/// The member's e-mail and phone as the export (`GET /api/v1/members/{id}/export`) shows them.
async fn exported(app: &TestApp, id: &str) -> (Value, Value) {
    let r = app.get_bytes(&format!("/api/v1/members/{id}/export")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    (
        body["profile"]["email"].clone(),
        body["profile"]["phone"].clone(),
    )
}

async fn assert_readable_and_found(app: &TestApp, people: &[Person]) {
    for p in people {
        assert_eq!(
            exported(app, &p.id).await,
            (json!(p.email), json!(p.phone)),
            "{} reads back",
            p.id
        );
        assert!(found(app, &p.email, "").await, "{} is found", p.email);
    }
}

/// Imports `n` members with e-mails (and every other one a phone) through the API.
async fn import(app: &TestApp, program_id: &str, tag: &str, n: usize) -> Vec<Person> {
    let mut csv = String::from("external_id,name,email,phone,points\n");
    for i in 0..n {
        let phone = if i % 2 == 0 {
            format!("+4930{:07}", 1_000_000 + i)
        } else {
            String::new()
        };
        csv.push_str(&format!(
            "{tag}-{i},Member {i},{tag}.{i}@example.net,{phone},{i}\n"
        ));
    }
    let report = app.import_csv(program_id, csv).await;
    assert_eq!(report["created"].as_u64(), Some(n as u64), "{report}");
    let store = &app.state.store;
    let mut people = Vec::new();
    for i in 0..n {
        let m = store
            .find_member_by_external_id(program_id, &format!("{tag}-{i}"))
            .await
            .unwrap()
            .unwrap();
        people.push(Person {
            id: m.id,
            email: format!("{tag}.{i}@example.net"),
            phone: (i % 2 == 0).then(|| format!("+4930{:07}", 1_000_000 + i)),
        });
    }
    people
}

fn many_joins(c: &mut tessera::config::Config) {
    c.enrollment.joins_per_minute = 10_000;
}

async fn sealed_contacts_are_readable_found_and_nowhere_plain(db: TestDb) {
    let app = TestApp::spawn_with(db, many_joins).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    open_join_page(&app, program_id).await;
    let id = join(
        &app,
        "Ottilie Brandvold",
        "Ottilie.B@Example.org",
        "+47 22 33 44 55",
    )
    .await;
    let mut people = vec![Person {
        id: id.clone(),
        email: "ottilie.b@example.org".into(),
        phone: Some("+4722334455".into()),
    }];
    people.extend(import(&app, program_id, "imp", 6).await);
    // A profile change seals the new address too.
    let r = app
        .get_bytes(&format!("/api/v1/members/{}", people[1].id))
        .await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = app
        .client
        .patch(app.url(&format!("/api/v1/members/{}", people[1].id)))
        .bearer_auth(&app.admin_key)
        .header("If-Match", etag)
        .json(&json!({"email": "Wenceslas.Quarrington@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    people[1].email = "wenceslas.quarrington@example.com".into();

    assert_readable_and_found(&app, &people).await;
    assert!(
        found(&app, "someone.else@example.org", "+47 22 33 44 55").await,
        "found by the phone"
    );
    assert!(!found(&app, "nobody@example.org", "").await);

    app.state.store.checkpoint().await.unwrap();
    let bytes = database_bytes(&app.state.config.database_url);
    assert!(contains(&bytes, "Brandvold"), "the check sees the name");
    for p in &people {
        assert!(
            !contains(&bytes, &p.email),
            "{} is in the database",
            p.email
        );
        if let Some(phone) = &p.phone {
            assert!(!contains(&bytes, phone), "{phone} is in the database");
        }
    }
    assert!(!contains(&bytes, "4722334455"), "the phone's digits");
}

/// A key file made by `tessera keys new` (which makes it when missing).
fn keys_new(dir: &Path, file: &Path) -> Vec<String> {
    let out = tessera(dir)
        .args(["keys", "new"])
        .env("TESSERA_PRIVACY__KEY_FILE", file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ring_ids(file)
}

fn ring_ids(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let ring = KeyRing::parse(&text).unwrap();
    ring.ids().into_iter().map(String::from).collect()
}

/// `tessera keys rotate` with this database and key file; its JSON report.
fn keys_rotate(dir: &Path, url: &str, file: Option<&Path>, data_dir: &Path) -> Value {
    let mut c = tessera(dir);
    c.args(["keys", "rotate"])
        .env("TESSERA_DATABASE_URL", url)
        .env("TESSERA_DATA_DIR", data_dir);
    if let Some(file) = file {
        c.env("TESSERA_PRIVACY__KEY_FILE", file);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn rotating_keeps_every_member_readable_and_found(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("privacy-key");
    let first_key = keys_new(dir.path(), &file);
    assert_eq!(first_key.len(), 1);
    let with_file = |file: PathBuf| {
        move |c: &mut tessera::config::Config| {
            many_joins(c);
            c.privacy.key_file = Some(file);
        }
    };
    let mut old = TestApp::spawn_with(db, with_file(file.clone())).await;
    let first = issue_member(&old, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap().to_string();
    // A webhook's signing secret is sealed by the ring too, and rotated with the members.
    let (s, hook) = old
        .post(
            "/api/v1/webhooks",
            json!({"url": "https://crm.example/hook"}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    open_join_page(&old, &program_id).await;
    let mut people = vec![Person {
        id: join(&old, "Ada", "ada@example.org", "+31 20 123 4567").await,
        email: "ada@example.org".into(),
        phone: Some("+31201234567".into()),
    }];
    people.extend(import(&old, &program_id, "old", 1_200).await);

    // A new key in front of the ring; the servers restart with it (one stands for all).
    let ring = keys_new(dir.path(), &file);
    assert_eq!(ring, [ring[0].clone(), first_key[0].clone()]);
    assert_ne!(ring[0], first_key[0]);
    let app = old.peer(with_file(file.clone())).await;
    old.kill();
    // Before the rotation, old values read and match through the old key.
    assert_readable_and_found(&app, &people[..3]).await;
    let id = join(&app, "Grace", "grace@example.org", "").await;
    people.push(Person {
        id,
        email: "grace@example.org".into(),
        phone: None,
    });

    let url = app.state.config.database_url.clone();
    let report = keys_rotate(dir.path(), &url, Some(&file), &app.data_dir);
    assert_eq!(report["key"], json!(ring[0]));
    assert_eq!(report["left"], 0, "{report}");
    assert_eq!(
        report["members"], 1_201,
        "every member under the old key: {report}"
    );
    assert_eq!(report["were_plain"], 0);
    let again = keys_rotate(dir.path(), &url, Some(&file), &app.data_dir);
    assert_eq!((&again["members"], &again["left"]), (&json!(0), &json!(0)));

    // The old key leaves the ring: every member still reads and matches.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.lines().next().unwrap()).unwrap();
    assert_eq!(ring_ids(&file), [ring[0].clone()]);
    let new = app.peer(with_file(file.clone())).await;
    assert_eq!(
        new.state
            .store
            .webhook_secret(hook["id"].as_str().unwrap())
            .await
            .unwrap(),
        hook["secret"].as_str().unwrap()
    );
    assert_readable_and_found(&new, &people[..40]).await;
    assert_readable_and_found(&new, &people[people.len() - 5..]).await;
    let mut sampled = 0;
    for p in people.iter().step_by(97) {
        assert_eq!(exported(&new, &p.id).await.0, json!(p.email));
        sampled += 1;
    }
    assert!(sampled > 10);

    new.state.store.checkpoint().await.unwrap();
    let bytes = database_bytes(&url);
    assert!(contains(&bytes, &format!("v1.{}.", ring[0])));
    assert!(
        !contains(&bytes, &format!("v1.{}.", first_key[0])),
        "a value under the old key is left"
    );
    drop(new);
    drop(app);
}

/// Rewinds the schema to before migration 0016, with the members' contacts plain as an earlier
/// version stored them: the plain indexes back, the hash columns and the migration's record
/// gone.
async fn as_before_the_upgrade(app: &TestApp, people: &[Person]) {
    let store = &app.state.store;
    for p in people {
        let phone = p
            .phone
            .as_ref()
            .map_or("NULL".to_string(), |p| format!("'{p}'"));
        store
            .execute_admin(&format!(
                "UPDATE members SET email = '{}', phone = {phone} WHERE id = '{}'",
                p.email, p.id
            ))
            .await
            .unwrap();
    }
    for statement in [
        "DROP INDEX members_email_hash",
        "DROP INDEX members_phone_hash",
        "ALTER TABLE members DROP COLUMN email_hash",
        "ALTER TABLE members DROP COLUMN phone_hash",
        "CREATE INDEX members_email ON members(program_id, email)",
        "CREATE INDEX members_phone ON members(program_id, phone)",
        "DELETE FROM _sqlx_migrations WHERE version = 16",
    ] {
        store.execute_admin(statement).await.unwrap();
    }
    store.checkpoint().await.unwrap();
}

async fn an_upgrade_seals_what_was_stored_plain(db: TestDb) {
    let mut app = TestApp::spawn_with(db, many_joins).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap().to_string();
    open_join_page(&app, &program_id).await;
    let mut people = vec![Person {
        id: join(&app, "Ada", "ada.legacy@example.org", "+31 20 765 4321").await,
        email: "ada.legacy@example.org".into(),
        phone: Some("+31207654321".into()),
    }];
    people.extend(import(&app, &program_id, "plain", 700).await);
    app.kill();
    as_before_the_upgrade(&app, &people).await;
    let url = app.state.config.database_url.clone();
    let bytes = database_bytes(&url);
    assert!(
        contains(&bytes, "ada.legacy@example.org") && contains(&bytes, "@example.net"),
        "the old version's plain text is there to begin with"
    );

    // The upgrade: migration 0016, then the values sealed (here by `tessera keys rotate`; a
    // server does the same at its start, see `serve_seals_plain_values_before_it_listens`).
    let dir = tempfile::tempdir().unwrap();
    let report = keys_rotate(dir.path(), &url, None, &app.data_dir);
    assert_eq!(report["were_plain"], 701, "{report}");
    assert_eq!(report["left"], 0);

    let after = app.peer(many_joins).await;
    assert_readable_and_found(&after, &people[..20]).await;
    for p in people.iter().step_by(50) {
        assert_eq!(
            exported(&after, &p.id).await,
            (json!(p.email), json!(p.phone))
        );
    }
    after.state.store.checkpoint().await.unwrap();
    // One scan for each: every imported address ends in @example.net.
    let bytes = database_bytes(&url);
    for plain in [
        "ada.legacy@example.org",
        "+31207654321",
        "@example.net",
        "+49301",
    ] {
        assert!(!contains(&bytes, plain), "{plain} is still plain");
    }
    // PostgreSQL keeps replaced rows in the table's pages until they are rewritten: the
    // members table's own data file holds no plain value either (`pg_dump` would not show it).
    if url.starts_with("postgres") {
        let path = std::process::Command::new("psql")
            .args([
                url.as_str(),
                "-Atc",
                "SELECT current_setting('data_directory') || '/' || pg_relation_filepath('members')",
            ])
            .output()
            .expect("psql");
        let path = String::from_utf8(path.stdout).unwrap();
        let file = std::fs::read(path.trim()).expect("the members table's data file");
        assert!(!file.is_empty());
        for plain in ["ada.legacy@example.org", "@example.net"] {
            assert!(
                !contains(&file, plain),
                "{plain} is still in the table's pages"
            );
        }
    }
}

on_both_backends!(
    sealed_contacts_are_readable_found_and_nowhere_plain,
    rotating_keeps_every_member_readable_and_found,
    an_upgrade_seals_what_was_stored_plain,
);

/// `tessera serve` seals what an earlier version stored plain before it takes a request, and
/// refuses a key ring that lacks the key of a sealed value.
#[tokio::test]
async fn serve_seals_plain_values_before_it_listens() {
    use std::io::BufRead;
    let db = TestDb::sqlite().await;
    let mut app = TestApp::spawn_with(db, many_joins).await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap().to_string();
    let people = import(&app, &program_id, "srv", 30).await;
    app.kill();
    as_before_the_upgrade(&app, &people).await;
    let url = app.state.config.database_url.clone();

    let mut server = tessera(app.data_dir.parent().unwrap())
        .arg("serve")
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .env("TESSERA_DATABASE_URL", &url)
        .env("TESSERA_DATA_DIR", &app.data_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Vec::new();
    for line in std::io::BufReader::new(server.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push(line.clone());
        if line.contains("tessera listening") {
            break;
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    // Without the terminal colours around field names.
    let log = log.join("\n");
    let mut plain = String::new();
    let mut rest = log.as_str();
    while let Some(at) = rest.find('\x1b') {
        plain.push_str(&rest[..at]);
        rest = rest[at..].split_once('m').map_or("", |(_, r)| r);
    }
    plain.push_str(rest);
    let log = plain;
    let sealed = log
        .find("sealed the e-mail addresses and phone numbers")
        .expect(&log);
    assert!(sealed < log.find("tessera listening").expect(&log), "{log}");
    assert!(log.contains("members=30"), "{log}");

    // A server given another ring (a lost key file) refuses to start, naming the key it lacks.
    let data_dir = app.data_dir.clone();
    let key = std::fs::read_to_string(data_dir.join("privacy-key")).unwrap();
    let id = KeyRing::parse(&key).unwrap().current().to_string();
    let out = tessera(app.data_dir.parent().unwrap())
        .arg("serve")
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .env("TESSERA_DATABASE_URL", &url)
        .env("TESSERA_DATA_DIR", &data_dir)
        .env("TESSERA_PRIVACY__KEY", KeyRing::new_key().expose())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("sealed with key {id}, which the key ring")),
        "{stderr}"
    );

    let after = app.peer(many_joins).await;
    for p in &people {
        assert_eq!(
            exported(&after, &p.id).await,
            (json!(p.email), json!(p.phone))
        );
    }
    after.state.store.checkpoint().await.unwrap();
    let bytes = database_bytes(&url);
    for plain in ["@example.net", "+49301"] {
        assert!(!contains(&bytes, plain), "{plain} is still plain");
    }
}
