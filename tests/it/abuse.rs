//! Hostile input and abuse (issue 14): rejoining never hands over a card.

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

async fn rejoining_emails_the_card_link_to_the_members_own_address(db: TestDb) {
    let Some(sink) = SmtpSink::start().await else {
        return;
    };
    let port = sink.port;
    let app = TestApp::spawn_with(db, |c| {
        c.email.host = Some("127.0.0.1".into());
        c.email.port = port;
        c.email.tls = SmtpTls::None;
        c.email.from = Some("Coffee <cards@coffee.example>".into());
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
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let http = no_redirects();
    let (csrf, _) = join_form(&app, &http).await;
    let join = |fields: &'static [(&'static str, &'static str)]| {
        let (app, http, csrf) = (&app, &http, csrf.clone());
        async move { submit(app, http, &csrf, fields).await }
    };
    let r = join(&[
        ("name", "Ada Lovelace"),
        ("email", "ada@example.com"),
        ("phone", "+31 20 123 4567"),
        ("data_consent", "yes"),
    ])
    .await;
    assert_eq!(r.status(), 303, "a new member gets their card");
    let card = r.headers()[LOCATION].to_str().unwrap().to_string();
    let member_id = card["/card/".len()..]
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let r = join(&[
        ("name", "Bob"),
        ("phone", "+44 20 7946 0000"),
        ("data_consent", "yes"),
    ])
    .await;
    assert_eq!(r.status(), 303);
    let store = &app.state.store;
    let consents_before = store.consents(&member_id).await.unwrap();

    // A phone-only member, Ada by e-mail, Ada by phone with a stranger's e-mail: one page.
    let mut pages = Vec::new();
    for fields in [
        &[
            ("name", "Eve"),
            ("phone", "+442079460000"),
            ("data_consent", "yes"),
        ][..],
        &[
            ("name", "Eve"),
            ("email", "ADA@example.com"),
            ("data_consent", "yes"),
            ("marketing_consent", "yes"),
        ],
        &[
            ("name", "Eve"),
            ("email", "eve@evil.example"),
            ("phone", "+31201234567"),
            ("data_consent", "yes"),
        ],
    ] {
        let r = join(fields).await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(!html.contains("/card/") && !html.contains("/passes/"));
        assert!(
            html.contains("we have sent your card link to the e-mail address you registered with")
        );
        pages.push(html);
    }
    assert!(pages.iter().all(|p| *p == pages[0]));

    eventually("two messages at the sink", || sink.messages().len() == 2).await;
    for message in sink.messages() {
        assert!(message.contains("To: ada@example.com"), "{message}");
        assert!(!message.contains("evil.example"));
        assert!(message.contains("Your Coffee card") || message.contains("Coffee"));
        // The link opens Ada's card.
        let link = card_link(&message);
        assert!(
            link.starts_with(&app.url(&format!("/card/{member_id}."))),
            "{link}"
        );
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
    assert_eq!(store.consents(&member_id).await.unwrap(), consents_before);
    assert_eq!(
        store.get_member(&member_id).await.unwrap().display_name,
        "Ada Lovelace"
    );
}

on_both_backends!(rejoining_emails_the_card_link_to_the_members_own_address);
