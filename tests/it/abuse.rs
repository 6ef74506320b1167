//! Hostile input and abuse (issue 14): rejoining never hands over a card, bad bytes and
//! over-long values are refused, slow clients are dropped, floods are throttled.

use reqwest::header::LOCATION;
use tessera::config::SmtpTls;

use crate::enrollment::{join_form, no_redirects, open_join_page, submit};
use crate::helpers::{TestApp, TestDb, eventually, issue_member};
use crate::on_both_backends;
use crate::smtp::SmtpSink;

/// The `/card/` link in a received message.
fn card_link(message: &str) -> String {
    let at = message.find("http://").expect("a link in the message");
    message[at..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap()
        .to_string()
}

/// The messages at `sink` addressed to `to`.
fn to(sink: &SmtpSink, to: &str) -> Vec<String> {
    sink.messages()
        .into_iter()
        .filter(|m| m.contains(&format!("To: {to}")))
        .collect()
}

/// The member id in a `/card/<member id>.<expiry>.<mac>` location or link.
fn card_member(link: &str) -> String {
    let at = link.find("/card/").expect("a card link") + "/card/".len();
    link[at..].split('.').next().unwrap().to_string()
}

async fn joining_with_an_email_is_confirmed_and_never_tells_or_hands_over_a_card(db: TestDb) {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let port = sink.port;
    let app = TestApp::spawn_with(db, |c| {
        c.email.host = Some("127.0.0.1".into());
        c.email.port = port;
        c.email.tls = SmtpTls::None;
        c.email.from = Some("Coffee <cards@coffee.example>".into());
        c.email.card_links_per_hour = 2;
        c.enrollment.joins_per_minute = 1000;
    })
    .await;
    let first = issue_member(&app, "coffee").await;
    let program_id = first["program_id"].as_str().unwrap();
    open_join_page(&app, program_id).await;
    // E-mail optional, so a member may have a phone only.
    let r = app
        .client
        .put(app.url(&format!("/api/v1/programs/{program_id}/enrollment")))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({
            "privacy_policy_url": crate::enrollment::POLICY, "email": "optional", "phone": "optional",
            "welcome_bonus": 25,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let store = &app.state.store;
    let members_before = store.program_totals(program_id).await.unwrap()[0];
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let join = |fields: &'static [(&'static str, &'static str)]| {
        let (app, http, csrf) = (&app, &http, csrf.clone());
        async move { submit(app, http, &csrf, fields).await }
    };

    // A stranger who types Ada's address first gets no card and makes no member: the page
    // says "check your e-mail", and the link goes to Ada.
    let r = join(&[
        ("name", "Mallory"),
        ("email", "ada@example.com"),
        ("phone", "+31 20 123 4567"),
        ("data_consent", "yes"),
    ])
    .await;
    assert_eq!(r.status(), 200, "no card before the address is confirmed");
    let stranger_page = r.text().await.unwrap();
    assert!(
        stranger_page.contains("Check your e-mail") && stranger_page.contains("ada@example.com")
    );
    assert!(!stranger_page.contains("/card/") && !stranger_page.contains("/passes/"));
    eventually("the confirmation at Ada's address", || {
        !to(&sink, "ada@example.com").is_empty()
    })
    .await;
    assert_eq!(
        store.program_totals(program_id).await.unwrap()[0],
        members_before
    );
    let confirmation = to(&sink, "ada@example.com").remove(0);
    assert!(!confirmation.contains("Mallory"), "nothing typed is sent");
    assert!(card_link(&confirmation).starts_with(&app.url("/join/coffee/confirm/")));

    // Ada ignores it and joins herself; her own link makes her card.
    let r = join(&[
        ("name", "Ada Lovelace"),
        ("email", "ada@example.com"),
        ("phone", "+31 20 123 4567"),
        ("data_consent", "yes"),
    ])
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        stranger_page,
        "the same page, whoever typed it"
    );
    eventually("Ada's own confirmation", || {
        to(&sink, "ada@example.com").len() == 2
    })
    .await;
    let link = to(&sink, "ada@example.com")
        .into_iter()
        .map(|m| card_link(&m))
        .find(|l| *l != card_link(&confirmation))
        .unwrap();

    // Opening the link changes nothing (a mail scanner may fetch it); the button makes the card.
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Get my card") && page.contains("Ada Lovelace"),
        "{page}"
    );
    assert_eq!(
        store.program_totals(program_id).await.unwrap()[0],
        members_before
    );
    let r = http.post(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let card = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        card.starts_with("/card/") && card.ends_with("?welcome=1"),
        "{card}"
    );
    let ada = card_member(&card);
    let member = store.get_member(&ada).await.unwrap();
    assert_eq!(
        (member.points, member.display_name.as_str()),
        (25, "Ada Lovelace")
    );
    // A second click finds the same member: no second member, no second bonus.
    let r = http.post(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let again = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(card_member(&again), ada);
    assert!(!again.contains("welcome"));
    assert_eq!(store.get_member(&ada).await.unwrap().points, 25);
    assert_eq!(
        store.program_totals(program_id).await.unwrap()[0],
        members_before + 1
    );
    // A forged or foreign token opens nothing.
    let forged = format!("{}x", &link[..link.len() - 1]);
    assert_eq!(http.post(&forged).send().await.unwrap().status(), 404);

    // A phone-only join cannot be confirmed: a new member gets their card at once.
    let r = join(&[
        ("name", "Bob"),
        ("phone", "+44 20 7946 0000"),
        ("data_consent", "yes"),
    ])
    .await;
    assert_eq!(r.status(), 303);
    let consents_before = store.consents(&ada).await.unwrap();
    let mails_before = sink.messages().len();

    // Ada's address again, a new address, and Ada's phone with a stranger's address: one page
    // but for the address shown back; the card link goes only to Ada's own address.
    let mut pages = Vec::new();
    for (fields, typed) in [
        (
            &[
                ("name", "Eve"),
                ("email", "ADA@example.com"),
                ("data_consent", "yes"),
                ("marketing_consent", "yes"),
            ][..],
            "ada@example.com",
        ),
        (
            &[
                ("name", "Eve"),
                ("email", "nobody@example.com"),
                ("data_consent", "yes"),
            ],
            "nobody@example.com",
        ),
        (
            &[
                ("name", "Eve"),
                ("email", "eve@evil.example"),
                ("phone", "+31201234567"),
                ("data_consent", "yes"),
            ],
            "eve@evil.example",
        ),
    ] {
        let r = join(fields).await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(!html.contains("/card/") && !html.contains("/passes/"));
        pages.push(html.replace(typed, "ADDRESS"));
    }
    assert!(pages.iter().all(|p| *p == pages[0]), "{pages:#?}");

    // Two card links for Ada (her budget is 2 an hour), one confirmation for the new address,
    // nothing for the stranger.
    eventually("three more messages", || {
        sink.messages().len() >= mails_before + 3
    })
    .await;
    let links: Vec<String> = to(&sink, "ada@example.com")
        .into_iter()
        .filter(|m| m.contains("/card/"))
        .collect();
    assert_eq!(links.len(), 2, "email.card_links_per_hour = 2");
    for message in &links {
        let link = card_link(message);
        assert_eq!(card_member(&link), ada);
        let html = app
            .client
            .get(&link)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Ada Lovelace") && html.contains("/passes/"),
            "{html}"
        );
    }
    assert_eq!(to(&sink, "nobody@example.com").len(), 1);
    assert!(to(&sink, "eve@evil.example").is_empty());
    assert_eq!(store.consents(&ada).await.unwrap(), consents_before);
    assert_eq!(
        store.program_totals(program_id).await.unwrap()[0],
        members_before + 2
    );
    // The stranger's link, opened by Ada, is Ada's card: the address is hers either way.
    let r = http.post(card_link(&confirmation)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(card_member(r.headers()[LOCATION].to_str().unwrap()), ada);
}

on_both_backends!(joining_with_an_email_is_confirmed_and_never_tells_or_hands_over_a_card);

/// Sends `req` and returns (status, body text).
async fn answer(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn control_characters_and_overlong_values_are_refused_naming_the_field(db: TestDb) {
    let app = TestApp::spawn_with(db, |c| c.enrollment.joins_per_minute = 1000).await;
    let member = issue_member(&app, "coffee").await;
    let program_id = member["program_id"].as_str().unwrap().to_string();
    let member_id = member["id"].as_str().unwrap().to_string();
    open_join_page(&app, &program_id).await;
    let store = &app.state.store;
    let totals = store.program_totals(&program_id).await.unwrap();
    let pass = store.pass_for_member(&member_id).await.unwrap();
    let ptid = &pass.pass_type_identifier;
    let http = no_redirects();

    // Path parameters of each public route family, named by the route.
    for (path, field) in [
        (format!("/passkit/v1/passes/{ptid}/a%00b"), "serial"),
        (
            format!("/passkit/v1/devices/d%01/registrations/{ptid}"),
            "device",
        ),
        ("/join/a%00b".to_string(), "slug"),
        ("/join/a%00b/qr.png".to_string(), "slug"),
        ("/passes/a%00b.pkpass?token=x".to_string(), "file"),
        (
            format!("/passes/{}.pkpass?token=a%00b", pass.serial_number),
            "token",
        ),
        (format!("/api/v1/members/{member_id}%00"), "member_id"),
        ("/api/v1/members?barcode=a%00b".to_string(), "barcode"),
        (
            format!("/api/v1/members?barcode={}", "7".repeat(600)),
            "barcode",
        ),
    ] {
        let (status, body) = answer(http.get(app.url(&path)).bearer_auth(&app.admin_key)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(field), "{path} names {field}: {body}");
        if path.starts_with("/api/") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["details"][0]["field"], field, "{body}");
        }
    }
    let (status, body) = answer(
        http.get(app.url("/api/v1/members?barcode=X"))
            .bearer_auth(&app.admin_key),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Join form and staff sign-in.
    let (csrf, _) = join_form(&app, &http).await;
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Ada\0"),
            ("email", "a@example.com"),
            ("data_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("name must not contain control characters")
    );
    let r = submit(
        &app,
        &http,
        &csrf,
        &[
            ("name", "Ada"),
            ("email", "a@example.com\u{7}"),
            ("data_consent", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let (status, body) = answer(
        http.post(app.url("/staff/login"))
            .header(reqwest::header::COOKIE, "tessera_csrf=abc")
            .form(&[
                ("email", "x\0@example.com"),
                ("password", "whatever"),
                ("csrf", "abc"),
            ]),
    )
    .await;
    assert_eq!(
        (status, body.contains("email must not contain")),
        (400, true),
        "{body}"
    );
    let long_password = "p".repeat(2000);
    let (status, body) = answer(
        http.post(app.url("/staff/login"))
            .header(reqwest::header::COOKIE, "tessera_csrf=abc")
            .form(&[
                ("email", "x@example.com"),
                ("password", long_password.as_str()),
                ("csrf", "abc"),
            ]),
    )
    .await;
    assert_eq!(
        (status, body.contains("at most 1024")),
        (400, true),
        "{body}"
    );

    // API JSON fields, with the field in the error's details.
    let members = format!("/api/v1/programs/{program_id}/members");
    let transactions = format!("/api/v1/members/{member_id}/transactions");
    for (path, body, field) in [
        (
            &members,
            serde_json::json!({"display_name": "A\u{0}da"}),
            "display_name",
        ),
        (
            &members,
            serde_json::json!({"display_name": "Ada", "external_id": "x\u{0}"}),
            "external_id",
        ),
        (
            &members,
            serde_json::json!({"display_name": "A".repeat(201)}),
            "display_name",
        ),
        (
            &transactions,
            serde_json::json!({"type": "earn", "points": 5, "external_ref": "r\u{0}1"}),
            "external_ref",
        ),
        (
            &transactions,
            serde_json::json!({"type": "earn", "points": 5, "store_id": "s".repeat(201)}),
            "store_id",
        ),
    ] {
        let (status, v) = app.post_idem(path, "k1", body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["details"][0]["field"], field, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{v}"
        );
    }
    // A 20 MB template name.
    let mut template = crate::helpers::template_body();
    template["name"] = "n".repeat(20 * 1024 * 1024).into();
    let (status, v) = app
        .post(
            &format!("/api/v1/programs/{program_id}/templates"),
            template,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["details"][0]["field"], "name");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 200 characters"),
        "{v}"
    );

    // Nothing above changed a row; Ada's balance and the templates are as they were.
    assert_eq!(store.program_totals(&program_id).await.unwrap(), totals);
    assert_eq!(store.ledger_sum(&member_id).await.unwrap(), 0);
    assert_eq!(store.list_templates(&program_id).await.unwrap().len(), 1);

    // A CSV row with NUL is reported by line; the rest goes in.
    let csv = "external_id,name\nc1,Ada\nc2,Gr\0ace\nc3,Linus\n";
    let r = app
        .client
        .post(app.url(&format!("/api/v1/programs/{program_id}/imports")))
        .bearer_auth(&app.admin_key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("name must not contain control characters")
    );
}

on_both_backends!(control_characters_and_overlong_values_are_refused_naming_the_field);

/// Reads from `stream` until the server closes it; returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn idle_slow_header_and_slow_body_clients_are_dropped_within_their_timeouts() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.idle_timeout_ms = 300;
        c.server.header_read_timeout_ms = 800;
        c.server.body_read_timeout_ms = 500;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let within = |started: Instant, low: u64, high: u64| {
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(low) && took < Duration::from_millis(high),
            "closed after {took:?}, expected {low}..{high} ms"
        );
    };

    // An idle socket: closed after the idle timeout.
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    read_until_closed(&mut idle).await;
    within(started, 250, 2000);

    // A kept-alive socket after one answered request: closed after the idle timeout too.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answered = read_until_closed(&mut kept).await;
    assert!(answered.starts_with("HTTP/1.1 204"), "{answered}");
    within(started, 250, 2000);

    // Headers trickled a byte every 50 ms: bytes keep it from being idle, but the whole head
    // must arrive within the header-read timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = slow.split();
    let closed = async {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let _ = rd.read_to_end(&mut buf).await;
    };
    let trickle = async {
        wr.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticker.tick().await;
            if wr.write_all(b"x").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! { () = closed => {}, () = trickle => {} }
    within(started, 750, 3000);

    // A body trickled a byte every 50 ms: 408 once the body-read timeout has passed.
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!(
            "POST /api/v1/programs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
            app.admin_key
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = body.split();
    let answer = async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let n = rd.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let trickle = async {
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticker.tick().await;
            if wr.write_all(b" ").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let answer = tokio::select! { a = answer => a, () = trickle => unreachable!() };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    within(started, 450, 3000);
}

/// The check the README names: `/healthz` answers while 2,000 idle sockets are open.
#[tokio::test]
async fn healthz_answers_while_2000_idle_sockets_are_open() {
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.idle_timeout_ms = 120_000;
        c.server.header_read_timeout_ms = 120_000;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .get(app.url("/healthz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eprintln!(
        "/healthz with 2,000 idle sockets open: {:?}",
        started.elapsed()
    );
    // The idle sockets were all accepted and are still open.
    let mut probe = [0u8; 1];
    for s in &idle {
        assert!(
            matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        );
    }
}

#[tokio::test]
async fn fifty_wrong_passwords_are_throttled_and_the_right_one_works_after_the_delay() {
    use tessera::storage::Role;
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.sign_in_free_attempts = 3;
        c.server.sign_in_max_delay_seconds = 1;
    })
    .await;
    tessera::web::staff::create_user(
        &app.state.store,
        "till@example.com",
        Role::Cashier,
        "the right password",
    )
    .await
    .unwrap();
    let http = no_redirects();
    let sign_in = |password: &'static str| {
        http.post(app.url("/staff/login"))
            .header(reqwest::header::COOKIE, "tessera_csrf=abc")
            .form(&[
                ("email", "till@example.com"),
                ("password", password),
                ("csrf", "abc"),
            ])
            .send()
    };
    let (mut refused, mut throttled) = (0, 0);
    for _ in 0..50 {
        let r = sign_in("a wrong password").await.unwrap();
        match r.status().as_u16() {
            401 => refused += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    eprintln!("50 wrong passwords: {refused} checked (401), {throttled} throttled (429)");
    assert!(
        refused >= 3 && throttled >= 35,
        "{refused} checked, {throttled} throttled"
    );

    // Straight after, even the right password waits; once the delay has passed it works.
    let r = sign_in("the right password").await.unwrap();
    assert_eq!(r.status(), 429, "throttled while the delay runs");
    let mut status = 429;
    for _ in 0..10 {
        let r = sign_in("the right password").await.unwrap();
        status = r.status().as_u16();
        if status != 429 {
            break;
        }
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    assert_eq!(status, 303, "the right password works after the delay");
}

/// A running `tessera serve` whose log goes to a file.
struct Served {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_binary(envs: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("server.log");
    let mut cmd = crate::cli::tessera(dir.path());
    cmd.arg("serve")
        .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("TESSERA_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let served = Served {
        child: cmd.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{}/healthz", served.base)).send().await
            && r.status() == 204
        {
            return served;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "tessera serve did not come up: {}",
        std::fs::read_to_string(&served.log).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_forged_device_log_line_arrives_escaped_on_one_line_and_a_flood_is_throttled() {
    let served = serve_binary(&[("TESSERA_SERVER__DEVICE_LOGS_PER_MINUTE", "12")]).await;
    let client = reqwest::Client::new();
    let forged = "fetch failed\n2026-12-03T08:00:00.000000Z ERROR tessera: FORGED admin login\r";
    let r = client
        .post(format!("{}/passkit/v1/log", served.base))
        .json(&serde_json::json!({"logs": [forged]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("the device line in the log", || {
        std::fs::read_to_string(&served.log)
            .unwrap()
            .contains("device log")
    })
    .await;
    let log = std::fs::read_to_string(&served.log).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("device log") && lines[0].contains(r"fetch failed\n2026"),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-03T08:00:00.000000Z")),
        "{log}"
    );
    assert!(!log.contains('\r'), "no control characters reach the log");
    // Other control characters are refused before the handler (see `web::guard`).
    let r = client
        .post(format!("{}/passkit/v1/log", served.base))
        .json(&serde_json::json!({"logs": ["\u{1b}[2K"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A flood from one address: past the quota (a burst of 3) it answers 429 and logs nothing.
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = client
            .post(format!("{}/passkit/v1/log", served.base))
            .json(&serde_json::json!({"logs": vec![format!("flood {i}"); 100]}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 25, "{statuses:?}");
    let log = std::fs::read_to_string(&served.log).unwrap();
    let flood_lines = log.lines().filter(|l| l.contains("flood ")).count();
    assert!(
        flood_lines <= 5 * 20,
        "at most 20 lines per accepted request, got {flood_lines}"
    );
}

#[test]
fn database_secrets_and_keys_are_private_and_concurrent_first_migrations_are_safe() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            crate::cli::tessera(dir.path())
                .arg("migrate")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = crate::cli::tessera(dir.path())
        .arg("demo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    for file in [
        "tessera.db",
        "link-secret",
        "dev-certs/root-ca.key",
        "dev-certs/wwdr-dev.key",
        "dev-certs/pass.key",
    ] {
        let path = data.join(file);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is {:o}", mode & 0o777);
    }
}

#[tokio::test]
async fn a_request_past_its_timeout_answers_408_and_qr_pngs_are_rendered_once_per_size() {
    use std::time::Instant;
    // A 4,000-pixel QR code takes far longer than 10 ms to render in a test build.
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.request_timeout_ms = 10;
    })
    .await;
    app.state
        .store
        .insert_program(&crate::helpers::new_program("coffee"))
        .await
        .unwrap();
    let r = app
        .client
        .get(app.url("/join/coffee/qr.png?size=4000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);

    let app = TestApp::spawn(TestDb::sqlite().await).await;
    app.state
        .store
        .insert_program(&crate::helpers::new_program("coffee"))
        .await
        .unwrap();
    let png = |size: u32| {
        let r = app
            .client
            .get(app.url(&format!("/join/coffee/qr.png?size={size}")));
        async move {
            let started = Instant::now();
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            (r.bytes().await.unwrap(), started.elapsed())
        }
    };
    let (first, rendered) = png(1901).await;
    let (again, cached) = png(2000).await;
    assert_eq!(first, again, "1901 px rounds up to the cached 2000 px PNG");
    eprintln!("QR 2000 px: rendered in {rendered:?}, from the cache in {cached:?}");
    assert!(cached < rendered, "{cached:?} vs {rendered:?}");
    let r = app
        .client
        .get(app.url("/join/coffee/qr.png?size=4001"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// `POST /passkit/v1/log` `n` times with these `X-Forwarded-For` values; the statuses.
async fn device_logs(app: &crate::helpers::TestApp, forwarded: &[String]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for xff in forwarded {
        let r = app
            .client
            .post(app.url("/passkit/v1/log"))
            .header("X-Forwarded-For", xff)
            .json(&serde_json::json!({"logs": ["hello"]}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

/// A forged `X-Forwarded-For` from a peer that is not a trusted proxy is ignored: the throttle
/// counts the peer. Behind a trusted proxy each forwarded client has its own quota.
#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    use crate::helpers::{TestApp, TestDb};
    let forged: Vec<String> = (0..10).map(|i| format!("203.0.113.{i}")).collect();
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.device_logs_per_minute = 1;
        c.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let statuses = device_logs(&app, &forged).await;
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 8,
        "a new forged address per request does not escape the throttle: {statuses:?}"
    );

    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.server.device_logs_per_minute = 1;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let statuses = device_logs(&app, &forged).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "behind a trusted proxy, ten clients: {statuses:?}"
    );
    let one = vec!["198.51.100.1".to_string(); 10];
    let statuses = device_logs(&app, &one).await;
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 8,
        "one client behind the proxy is throttled: {statuses:?}"
    );
}
