//! Staff sign-in for the web UI: sessions, CSRF, sign-out, and `tessera user create`.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tessera::storage::Role;

use crate::helpers::{TestApp, TestDb, csrf_field};
use crate::on_both_backends;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value the response sets for cookie `name`, and the whole `Set-Cookie` line.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let line = v.to_str().unwrap().to_string();
        let (pair, _) = line.split_once(';').unwrap_or((&line, ""));
        let (k, val) = pair.split_once('=')?;
        (k == name).then(|| (val.to_string(), line.clone()))
    })
}

async fn staff_sign_in_and_out(db: TestDb) {
    let app = TestApp::spawn(db).await;
    tessera::web::staff::create_user(
        &app.state.store,
        "Ada@Example.com",
        Role::Marketer,
        "correct horse battery",
    )
    .await
    .unwrap();
    let http = client();

    // Signed out: the staff pages send you to the sign-in form.
    let r = http.get(app.url("/staff")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/staff/login");

    let r = http.get(app.url("/staff/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (csrf_cookie, _) = set_cookie(&r, "tessera_csrf").expect("a CSRF cookie");
    let page = r.text().await.unwrap();
    assert_eq!(csrf_field(&page), csrf_cookie);
    assert!(
        page.contains(r#"<label for="email">"#),
        "inputs are labelled"
    );

    let login = |email: &'static str, password: &'static str, csrf: String| {
        let (http, url, cookie) = (
            http.clone(),
            app.url("/staff/login"),
            format!("tessera_csrf={csrf_cookie}"),
        );
        async move {
            http.post(url)
                .header(COOKIE, cookie)
                .form(&[("email", email), ("password", password), ("csrf", &csrf)])
                .send()
                .await
                .unwrap()
        }
    };
    // A form that did not come from our page: refused before the password is looked at.
    let r = login("ada@example.com", "correct horse battery", "forged".into()).await;
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "tessera_session").is_none());

    // Wrong password and unknown account look the same; the e-mail typed is kept.
    for (email, password) in [
        ("ada@example.com", "wrong horse battery"),
        ("nobody@example.com", "correct horse battery"),
    ] {
        let r = login(email, password, csrf_cookie.clone()).await;
        assert_eq!(r.status(), 401);
        assert!(set_cookie(&r, "tessera_session").is_none());
        let page = r.text().await.unwrap();
        assert!(page.contains("Wrong e-mail or password."), "{page}");
        assert!(page.contains(&format!(r#"value="{email}""#)), "input kept");
    }

    // The right password (any case of the e-mail) starts a session.
    let r = login(
        "ADA@example.com",
        "correct horse battery",
        csrf_cookie.clone(),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/staff");
    let (session, line) = set_cookie(&r, "tessera_session").expect("a session cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Lax"),
        "{line}"
    );
    assert!(session.len() >= 50, "256 random bits");
    // The database keeps a hash of the cookie, not the cookie.
    assert!(
        app.state
            .store
            .staff_session(&session, tessera::domain::now_ms())
            .await
            .unwrap()
            .is_none()
    );

    let cookie = format!("tessera_session={session}");
    let home = || async {
        http.get(app.url("/staff"))
            .header(COOKIE, cookie.clone())
            .send()
            .await
            .unwrap()
    };
    let r = home().await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("ada@example.com") && page.contains("marketer"),
        "{page}"
    );
    let csrf = csrf_field(&page);

    let logout = |token: String| {
        let (http, url, cookie) = (http.clone(), app.url("/staff/logout"), cookie.clone());
        async move {
            http.post(url)
                .header(COOKIE, cookie)
                .form(&[("csrf", token)])
                .send()
                .await
                .unwrap()
        }
    };
    // A cross-site form without the session's token changes nothing.
    assert_eq!(logout("forged".into()).await.status(), 403);
    assert_eq!(home().await.status(), 200, "still signed in");

    let r = logout(csrf).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/staff/login");
    let (cleared, _) = set_cookie(&r, "tessera_session").expect("the cookie is cleared");
    assert_eq!(cleared, "");
    // The old cookie no longer works, even if the browser kept it.
    assert_eq!(home().await.status(), 303);
}

on_both_backends!(staff_sign_in_and_out);

#[test]
fn user_create_checks_its_input_and_refuses_duplicates() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], password: &str| {
        let mut child = crate::cli::tessera(dir.path())
            .args(["user", "create"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(&["--email", "root@example.com", "--role", "admin"], "short");
    assert!(!ok && err.contains("at least 12 characters"), "{err}");
    let (ok, err) = run(
        &["--email", "bot@example.com", "--role", "integration"],
        "long enough password",
    );
    assert!(!ok && err.contains("integration is for API keys"), "{err}");
    let (ok, err) = run(
        &["--email", "root@example.com", "--role", "admin"],
        "long enough password",
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("created admin account root@example.com"),
        "{err}"
    );
    let (ok, err) = run(
        &["--email", "ROOT@example.com", "--role", "cashier"],
        "another long password",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
}
