//! Browser tests in headless Chromium (see `browser`): staff sign-in and the card designer.
//! Screenshots land in `target/tmp/screenshots/`.

use serde_json::json;
use tessera::passes::apple::images::sample_png;
use tessera::storage::Role;

use crate::browser::{Browser, artifacts};
use crate::helpers::{TestApp, TestDb, another_member, issue_member, template_body};

const PASSWORD: &str = "correct horse battery";

async fn sign_in(b: &Browser, app: &TestApp, email: &str, password: &str) {
    b.goto(&app.url("/staff/login")).await;
    b.type_into("#email", email).await;
    b.type_into("#password", password).await;
    b.click("button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_wrong_passwords_and_forged_forms() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    tessera::web::staff::create_user(
        &app.state.store,
        "mara@example.com",
        Role::Marketer,
        PASSWORD,
    )
    .await
    .unwrap();

    sign_in(&b, &app, "mara@example.com", "not the password").await;
    b.wait_for(
        "the refusal",
        "return document.querySelector('.error') !== null",
    )
    .await;
    assert_eq!(b.text(".error").await, "Wrong e-mail or password.");
    assert_eq!(
        b.js("return document.querySelector('#email').value", json!([]))
            .await,
        "mara@example.com"
    );
    assert!(b.url().await.ends_with("/staff/login"));

    // A form whose CSRF token is not ours is refused before the password is looked at.
    b.goto(&app.url("/staff/login")).await;
    b.js(
        "document.querySelector('input[name=csrf]').value = 'forged'",
        json!([]),
    )
    .await;
    b.type_into("#email", "mara@example.com").await;
    b.type_into("#password", PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_for(
        "the CSRF refusal",
        "return document.body.innerText.includes('this form expired')",
    )
    .await;

    sign_in(&b, &app, "mara@example.com", PASSWORD).await;
    b.wait_for(
        "the staff page",
        "return document.querySelector('#who') !== null",
    )
    .await;
    assert_eq!(b.text("#who").await, "mara@example.com");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketer_designs_previews_and_publishes_in_a_browser() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let program_id = member["program_id"].as_str().unwrap().to_string();
    tessera::web::staff::create_user(
        &app.state.store,
        "mara@example.com",
        Role::Marketer,
        PASSWORD,
    )
    .await
    .unwrap();
    sign_in(&b, &app, "mara@example.com", PASSWORD).await;
    b.wait_for(
        "the staff page",
        "return document.querySelector('#who') !== null",
    )
    .await;

    // Programs → the program → a new template.
    b.click("a[href='/staff/programs']").await;
    b.click(&format!("a[href='/staff/programs/{program_id}']"))
        .await;
    b.type_into("#t-name", "Spring").await;
    b.click("section[aria-labelledby=new-template] button[type=submit]")
        .await;
    b.wait_for(
        "the designer",
        "return document.querySelector('#design') !== null",
    )
    .await;
    assert!(b.text("h1").await.contains("not published yet"));

    // Upload an icon and a logo; the preview shows the logo without a reload.
    let dir = tempfile::tempdir().unwrap();
    for (kind, png) in [
        ("icon", sample_png(300, 300, [200, 40, 40])),
        ("logo", sample_png(480, 150, [250, 250, 250])),
    ] {
        let path = dir.path().join(format!("{kind}.png"));
        std::fs::write(&path, png).unwrap();
        b.type_into(&format!("#img-{kind}"), path.to_str().unwrap())
            .await;
        b.click(&format!("form.upload[data-kind={kind}] button:not([name])"))
            .await;
        b.wait_for(
            &format!("the {kind} upload"),
            &format!(
                "return document.querySelector('#img-{kind}-state').textContent === 'In the draft.'"
            ),
        )
        .await;
    }
    b.wait_for("the logo in the preview", "const i = document.querySelector('#apple-card img.ac-logo'); return !!i && i.complete && i.naturalWidth > 0").await;
    assert_eq!(
        b.js(
            "return document.querySelector('#google-card img.g-logo') !== null",
            json!([])
        )
        .await,
        true
    );

    // A field edit shows in both previews as it is typed.
    b.clear("[name='primary_fields.0.label']").await;
    b.type_into("[name='primary_fields.0.label']", "STARS")
        .await;
    b.wait_for("the preview", "return document.querySelector('#apple-card .pf.primary .pf-label').textContent === 'STARS'").await;
    assert_eq!(b.text("#google-card .g-label").await, "STARS");
    b.clear("#logo_text").await;
    b.type_into("#logo_text", "Spring Coffee").await;
    b.wait_for("the logo text", "return document.querySelector('#apple-card .ac-logo-text').textContent === 'Spring Coffee'").await;

    // Three more secondary fields make five with the auxiliary one: an inline error, live.
    for i in 1..4 {
        b.type_into(
            &format!("[name='secondary_fields.{i}.label']"),
            &format!("EXTRA {i}"),
        )
        .await;
        b.type_into(&format!("[name='secondary_fields.{i}.value']"), "x")
            .await;
    }
    b.wait_for(
        "the inline error",
        "const c = document.querySelector('[data-checks=secondary_fields]'); return c.innerText.includes('at most 4 secondary+auxiliary fields, got 5')",
    )
    .await;
    b.screenshot("designer-inline-error").await;
    for i in 1..4 {
        b.clear(&format!("[name='secondary_fields.{i}.label']"))
            .await;
        b.clear(&format!("[name='secondary_fields.{i}.value']"))
            .await;
    }
    b.wait_for(
        "the error to clear",
        "return !document.querySelector('[data-checks=secondary_fields]').innerText.includes('at most 4')",
    )
    .await;

    // Accessibility: every input is labelled, Tab moves through the form, and at phone
    // width nothing is wider than the screen.
    let unlabelled = b
        .js(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')].filter(e => e.labels.length === 0).map(e => e.name || e.id)",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "inputs without a label");
    b.js("document.querySelector('#name').focus()", json!([]))
        .await;
    b.keys("\u{E004}").await;
    assert_eq!(
        b.js("return document.activeElement.id", json!([])).await,
        "description"
    );
    b.keys("\u{E004}").await;
    assert_eq!(
        b.js("return document.activeElement.id", json!([])).await,
        "logo_text"
    );
    b.set_window(390, 844).await;
    b.wait_for(
        "no horizontal scrolling at phone width",
        "return document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    b.screenshot("designer-phone").await;
    b.set_window(1280, 1000).await;

    // The preview's barcode is the sample member's code, drawn by the server: what a scanner
    // reads off the screen, in each 2D format. (A Code 128 of our 24-character codes is 309
    // modules with its quiet zones, more than the 320 px preview card holds at one pixel a
    // module, so the preview narrows it; the card page's Code 128 is decoded instead, in
    // `on_android_without_google_...`.)
    let sample = tessera::domain::template::checks::sample_substitutions("", 0).barcode;
    for (format, theirs) in [
        ("qr", rxing::BarcodeFormat::QR_CODE),
        ("aztec", rxing::BarcodeFormat::AZTEC),
        ("pdf417", rxing::BarcodeFormat::PDF_417),
    ] {
        b.js(
            "const s = document.querySelector('#barcode_format'); s.value = arguments[0]; s.dispatchEvent(new Event('change', {bubbles: true}));",
            json!([format]),
        )
        .await;
        b.wait_for(
            &format!("the {format} preview"),
            &format!("return document.querySelector('#apple-card .code-real[data-format={format}] svg') !== null"),
        )
        .await;
        let png = b
            .element_png(&format!("#apple-card .code-real[data-format={format}]"))
            .await;
        std::fs::write(artifacts().join(format!("designer-{format}.png")), &png).unwrap();
        assert_eq!(scan(&png, theirs), sample, "the {format} preview");
    }
    b.js(
        "const s = document.querySelector('#barcode_format'); s.value = 'qr'; s.dispatchEvent(new Event('change', {bubbles: true}));",
        json!([]),
    )
    .await;

    // Publish: the new version is live and its holders are told in the background.
    b.screenshot("designer").await;
    b.click("#publish").await;
    b.wait_for("the publish notice", "const n = document.querySelector('#notice'); return !!n && n.textContent.includes('Version 1 published')").await;
    b.screenshot("designer-published").await;
    let template = app
        .state
        .store
        .latest_template(&program_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(template.name, "Spring");
    assert_eq!(
        template.design.primary_fields[0].label.as_deref(),
        Some("STARS")
    );
    assert_eq!(template.design.logo_text.as_deref(), Some("Spring Coffee"));
    assert_eq!(template.design.secondary_fields.len(), 1);
    b.quit().await;
}

/// The join form in a browser: an error keeps what was typed; joining with consent leads to
/// the card page with the Apple Wallet link, the Google Wallet link and a QR code (a desktop
/// browser gets all three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_joins_with_consent_and_gets_the_card_links() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let (app, _google, _) = crate::google::google_app(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    crate::enrollment::open_join_page(&app, member["program_id"].as_str().unwrap()).await;

    b.goto(&app.url("/join/coffee")).await;
    b.type_into("#name", "Grace Hopper").await;
    b.type_into("#email", "grace@example.com").await;
    b.type_into("#phone", "+1 212 555 0100").await;
    b.click("#join").await;
    b.wait_for(
        "the form error",
        "return document.querySelector('#form-error') !== null",
    )
    .await;
    assert_eq!(
        b.js("return document.querySelector('#name').value", json!([]))
            .await,
        "Grace Hopper"
    );
    assert_eq!(
        b.js("return document.querySelector('#email').value", json!([]))
            .await,
        "grace@example.com"
    );
    assert!(
        b.text("body")
            .await
            .contains("please agree to the processing of your data")
    );
    assert_eq!(
        b.js(
            "return document.querySelector('#marketing_consent').checked",
            json!([])
        )
        .await,
        false,
        "the marketing box is never ticked for the customer"
    );
    b.screenshot("join-error").await;

    b.click("#data_consent").await;
    b.click("#join").await;
    b.wait_for(
        "the card page",
        "return document.querySelector('#apple') !== null",
    )
    .await;
    let apple = b
        .js("return document.querySelector('#apple').href", json!([]))
        .await;
    assert!(
        apple.as_str().unwrap().contains(".pkpass?token="),
        "{apple}"
    );
    let google = b
        .js("return document.querySelector('#google').href", json!([]))
        .await;
    assert!(google.as_str().unwrap().contains("/save/"), "{google}");
    assert!(
        b.js(
            "return document.querySelector('#qr svg') !== null",
            json!([])
        )
        .await
        .as_bool()
        .unwrap()
    );
    b.screenshot("join-card").await;

    let url = b.url().await;
    let member_id = url
        .rsplit("/card/")
        .next()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let consents = app.state.store.consents(&member_id).await.unwrap();
    assert_eq!(
        consents
            .iter()
            .map(|c| (c.kind.as_str(), c.granted))
            .collect::<Vec<_>>(),
        [("data", true), ("marketing", false)]
    );
    // The Apple link downloads the signed pass.
    let r = app
        .client
        .get(apple.as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.pkpass");

    // Joining again as Grace, by e-mail and then by phone with another address, leads to no
    // card: the same page without a link, and Grace's consents stay hers.
    for (email, phone) in [
        ("GRACE@example.com", ""),
        ("someone@example.net", "+12125550100"),
    ] {
        b.goto(&app.url("/join/coffee")).await;
        b.type_into("#name", "Not Grace").await;
        b.type_into("#email", email).await;
        b.type_into("#phone", phone).await;
        b.click("#data_consent").await;
        b.click("#marketing_consent").await;
        b.click("#join").await;
        b.wait_for(
            "the already-a-member page",
            "return document.querySelector('#already') !== null",
        )
        .await;
        let links = b
            .js(
                "return Array.from(document.querySelectorAll('a')).map(a => a.href).join(' ')",
                json!([]),
            )
            .await;
        let links = links.as_str().unwrap();
        assert!(
            !links.contains("/card/") && !links.contains(".pkpass"),
            "{links}"
        );
        assert!(!b.url().await.contains("/card/"));
        assert!(b.text("body").await.contains("ask at the till"));
    }
    b.screenshot("join-again").await;
    assert_eq!(app.state.store.consents(&member_id).await.unwrap().len(), 2);
    b.quit().await;
}

/// The cashier page in a browser: find a card by its typed code, record a purchase after
/// confirming, see the new balance; a double-clicked and a re-sent operation post once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_records_a_purchase_once_in_a_browser() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap().to_string();
    let barcode = app
        .state
        .store
        .get_member(&member_id)
        .await
        .unwrap()
        .barcode;
    tessera::web::staff::create_user(&app.state.store, "cas@example.com", Role::Cashier, PASSWORD)
        .await
        .unwrap();
    sign_in(&b, &app, "cas@example.com", PASSWORD).await;
    b.wait_for(
        "the staff page",
        "return document.querySelector('#who') !== null",
    )
    .await;
    b.click("a[href='/scan']").await;
    b.type_into("#barcode", &barcode).await;
    b.click("#find").await;
    b.wait_for("the member", "return !document.querySelector('#member').hidden && document.querySelector('#member-name').textContent === 'Ada Lovelace'").await;
    assert_eq!(b.text("#member-points").await, "0");

    b.type_into("#amount", "12.34").await;
    b.click("#record-purchase").await;
    b.wait_for(
        "the confirmation",
        "return !document.querySelector('#confirm').hidden",
    )
    .await;
    assert!(b.text("#confirm-text").await.contains("12.34"));
    // A double tap: both clicks land before the answer.
    b.js(
        "const y = document.querySelector('#confirm-yes'); y.click(); y.click();",
        json!([]),
    )
    .await;
    b.wait_for(
        "the new balance",
        "return document.querySelector('#op-msg').textContent.includes('New balance: 12')",
    )
    .await;
    assert_eq!(b.text("#member-points").await, "12");
    b.screenshot("scan-purchase").await;

    // The same operation sent twice at once, as a retry after a dropped answer would be.
    let statuses = b
        .js(
            "const [id, csrf] = arguments; const body = JSON.stringify({csrf, kind: 'purchase', amount_minor: 500, key: 'retry-0001-xyz'});
             const send = () => fetch(`/scan/members/${id}/operations`, {method: 'POST', headers: {'content-type': 'application/json'}, body}).then(r => r.status);
             return Promise.all([send(), send()]);",
            json!([member_id, b.js("return document.querySelector('#scan').dataset.csrf", json!([])).await]),
        )
        .await;
    let mut statuses: Vec<i64> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 201], "one posting and one replay");
    let store = &app.state.store;
    assert_eq!(store.ledger_sum(&member_id).await.unwrap(), 17);
    let entries = store.list_entries(&member_id, None, 100).await.unwrap();
    assert_eq!(entries.len(), 2, "two operations, each posted once");
    b.quit().await;
}

/// What a till's scanner reads off a screenshot: rxing's reader over its grey levels.
fn scan(png: &[u8], format: rxing::BarcodeFormat) -> String {
    let img = image::load_from_memory(png).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    rxing::helpers::detect_in_luma(img.into_raw(), w, h, Some(format))
        .unwrap_or_else(|e| panic!("no {format:?} found in the screenshot: {e}"))
        .getText()
        .to_string()
}

const ANDROID: &str = "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36";

/// An Android phone, Google Wallet not configured: the card page offers the `.pkpass` file and
/// says how to open it, shows the balance, and shows a code a scanner reads as the member's
/// (a QR code, and the bars of a template that asks for Code 128).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_android_without_google_the_card_page_offers_the_pass_file_and_a_code_that_scans() {
    let Some(b) = Browser::start_as(Some(ANDROID)).await else {
        return;
    };
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    assert!(app.state.google.is_none());
    let ada = issue_member(&app, "coffee").await;
    let (s, earned) = app
        .post_idem(
            &format!(
                "/api/v1/members/{}/transactions",
                ada["id"].as_str().unwrap()
            ),
            "earn-1",
            json!({"type": "earn", "points": 75}),
        )
        .await;
    assert_eq!(s, 201, "{earned}");
    // A later template in Code 128: the next member's card is drawn in bars.
    let mut bars = template_body();
    bars["name"] = json!("Bars");
    bars["design"]["barcode"]["format"] = json!("code128");
    let (s, t) = app
        .post(
            &format!(
                "/api/v1/programs/{}/templates",
                ada["program_id"].as_str().unwrap()
            ),
            bars,
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let grace = another_member(&app, &ada).await;

    let expires = tessera::domain::now_ms() / 1000 + 3600;
    for (member, format, theirs, balance) in [
        (&ada, "qr", rxing::BarcodeFormat::QR_CODE, "75"),
        (&grace, "code128", rxing::BarcodeFormat::CODE_128, "0"),
    ] {
        let id = member["id"].as_str().unwrap();
        let code = app.state.store.get_member(id).await.unwrap().barcode;
        b.goto(&app.url(&format!("/card/{}", app.state.links.sign(id, expires))))
            .await;
        b.wait_for(
            "the card page",
            "return document.querySelector('#barcode svg') !== null",
        )
        .await;
        assert_eq!(b.text("#balance").await, balance);
        assert_eq!(
            b.js(
                "return document.querySelector('#barcode .symbol').dataset.format",
                json!([])
            )
            .await,
            format
        );
        // The pass file, with how to open it on Android; no Google button.
        assert!(b.text("#apple").await.contains(".pkpass"));
        assert!(b.text("#android-help").await.contains("wallet app"));
        assert_eq!(
            b.js("return document.querySelector('#google')", json!([]))
                .await,
            serde_json::Value::Null
        );
        let href = b
            .js("return document.querySelector('#apple').href", json!([]))
            .await;
        let r = app.client.get(href.as_str().unwrap()).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/vnd.apple.pkpass");

        let png = b.element_png("#barcode .symbol").await;
        std::fs::write(artifacts().join(format!("card-android-{format}.png")), &png).unwrap();
        assert_eq!(scan(&png, theirs), code, "the {format} on the card page");
    }
    b.screenshot("card-android").await;
    b.quit().await;
}
