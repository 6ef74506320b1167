//! Google Wallet against the local stand-in: the token grant, classes and objects, live
//! balance updates within the notification budget, and save links.

use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::{Value, json};
use tessera::google::standin::GoogleStandIn;
use tessera::google::{Credentials, TokenProvider, WalletClient};

use crate::helpers::{TestApp, TestDb, another_member, eventually, futures_join_all, issue_member};
use crate::on_both_backends;

pub(crate) const ISSUER: &str = "3388000000012345678";
pub(crate) const EMAIL: &str = "tessera@test-project.iam.gserviceaccount.com";

/// A service-account key pair and its JSON key file in `dir`.
pub(crate) fn service_account(dir: &std::path::Path) -> (PKey<Private>, std::path::PathBuf) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let path = dir.join("service-account.json");
    let file = json!({
        "type": "service_account",
        "client_email": EMAIL,
        "private_key": pem,
        "private_key_id": "key-1",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    std::fs::write(&path, file.to_string()).unwrap();
    (key, path)
}

pub(crate) fn public(key: &PKey<Private>) -> PKey<openssl::pkey::Public> {
    PKey::public_key_from_pem(&key.public_key_to_pem().unwrap()).unwrap()
}

pub async fn google_app(db: TestDb) -> (TestApp, GoogleStandIn, PKey<Private>) {
    let (key, path) = service_account(db.dir.path());
    let standin = GoogleStandIn::start(public(&key), EMAIL, ISSUER, 3600).await;
    let (token_url, api, keys) = (standin.token_url(), standin.api_base(), standin.keys_url());
    let app = TestApp::spawn_with(db, move |c| {
        c.google.issuer_id = Some(ISSUER.into());
        c.google.service_account_key = Some(path);
        c.google.token_uri = Some(token_url);
        c.google.api_base = api;
        c.google.poll_interval_ms = 20;
        c.google.retry_base_ms = 20;
        c.google.requests_per_second = 1000;
        c.google.callback_keys_url = keys;
    })
    .await;
    (app, standin, key)
}

/// Waits until the worker has recorded the member's object (it does so just after Google
/// answered, so the stand-in can hold it a moment earlier).
async fn synced(app: &TestApp, member_id: &str) {
    for _ in 0..250 {
        if app
            .state
            .store
            .google_object(member_id)
            .await
            .unwrap()
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the object of {member_id} was never recorded");
}

fn object_balance(standin: &GoogleStandIn, id: &str) -> Option<i64> {
    standin.recorded().objects.get(id)?["loyaltyPoints"]["balance"]["int"].as_i64()
}

async fn an_earn_reaches_google_and_the_fourth_notice_is_silent(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    // Joining writes the class and the object, without a notification.
    eventually("the object", || {
        object_balance(&standin, &object_id) == Some(0)
    })
    .await;
    {
        let r = standin.recorded();
        let object = &r.objects[&object_id];
        let class_id = object["classId"].as_str().unwrap();
        assert_eq!(r.classes[class_id]["reviewStatus"], "APPROVED");
        assert_eq!(object["state"], "ACTIVE");
        assert_eq!(
            object["barcode"]["value"], member["barcode"],
            "same code as the Apple card"
        );
        assert_eq!(object["accountName"], "Ada Lovelace");
    }
    let path = format!("/api/v1/members/{member_id}/transactions");
    let mut balance = 0;
    for (i, points) in [10, 20, 30, 40].into_iter().enumerate() {
        let (s, _) = app
            .post_idem(
                &path,
                &format!("e{i}"),
                json!({"type": "earn", "points": points}),
            )
            .await;
        assert_eq!(s, 201);
        balance += points;
        eventually("the new balance at Google", || {
            object_balance(&standin, &object_id) == Some(balance)
        })
        .await;
        let r = standin.recorded();
        let patch = r
            .calls
            .iter()
            .rev()
            .find(|c| c.method == "PATCH" && c.path.ends_with(&object_id))
            .unwrap();
        let expected = (i < 3).then(|| "NOTIFY_ON_UPDATE".to_string());
        assert_eq!(patch.notify, expected, "update {} of 4", i + 1);
    }
    let notifying = standin
        .recorded()
        .calls
        .iter()
        .filter(|c| c.notify.is_some())
        .count();
    assert_eq!(
        notifying, 3,
        "our own count kept within the budget: no refused attempt"
    );
    assert_eq!(
        standin.recorded().token_requests,
        1,
        "one access token, cached"
    );
    // The worker forgets the pending row right after Google's answer: wait for that too.
    let mut pending = 1;
    for _ in 0..100 {
        pending = app.state.store.google_pending_count().await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending, 0, "the queue drains");
}

on_both_backends!(an_earn_reaches_google_and_the_fourth_notice_is_silent);

#[tokio::test]
async fn google_outages_are_retried_until_the_card_is_current() {
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    standin.recorded().fail_next = 3;
    let member = issue_member(&app, "coffee").await;
    let object_id = format!("{ISSUER}.tessera-m-{}", member["id"].as_str().unwrap());
    eventually("the object after 503s", || {
        object_balance(&standin, &object_id) == Some(0)
    })
    .await;
    assert!(
        standin.recorded().calls.len() > 3,
        "the failed calls were made"
    );

    // Google counts a notification we did not (another server, a message): the notifying
    // update is refused on quota and goes out silently, so the balance is still current.
    standin
        .recorded()
        .notifications
        .insert(object_id.clone(), 3);
    let path = format!(
        "/api/v1/members/{}/transactions",
        member["id"].as_str().unwrap()
    );
    let (s, _) = app
        .post_idem(&path, "e1", json!({"type": "earn", "points": 5}))
        .await;
    assert_eq!(s, 201);
    eventually("the balance despite the quota", || {
        object_balance(&standin, &object_id) == Some(5)
    })
    .await;
    let r = standin.recorded();
    let patches: Vec<_> = r.calls.iter().filter(|c| c.method == "PATCH").collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[0].notify.as_deref(), Some("NOTIFY_ON_UPDATE"));
    assert_eq!(patches[1].notify, None);
}

#[tokio::test]
async fn the_save_link_is_a_short_signed_jwt_with_ids_only() {
    let (app, standin, key) = google_app(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let r = app
        .client
        .get(app.url(&format!("/api/v1/members/{member_id}/google")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let card: Value = r.json().await.unwrap();
    let object_id = card["object_id"].as_str().unwrap();
    assert_eq!(object_id, format!("{ISSUER}.tessera-m-{member_id}"));
    assert!(
        standin.recorded().objects.contains_key(object_id),
        "the object exists before the link is handed out"
    );
    let url = card["save_url"].as_str().unwrap();
    let jwt = url
        .strip_prefix("https://pay.google.com/gp/v/save/")
        .expect("Google's save URL");
    assert!(jwt.len() < 1800, "{} characters", jwt.len());
    let (header, claims) = tessera::google::jwt::verify_rs256(&public(&key), jwt).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["aud"], "google");
    assert_eq!(claims["typ"], "savetowallet");
    assert!(claims["origins"].is_array());
    let objects = claims["payload"]["loyaltyObjects"].as_array().unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["id"], object_id);
    let keys: Vec<&String> = objects[0].as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| *k == "id" || *k == "classId"),
        "ids only: {keys:?}"
    );

    // And the openssl CLI agrees that the service account signed it.
    let dir = tempfile::tempdir().unwrap();
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    std::fs::write(dir.path().join("input"), input).unwrap();
    std::fs::write(
        dir.path().join("sig"),
        data_encoding::BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("pub.pem"), key.public_key_to_pem().unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig",
            "input",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn without_google_the_card_endpoint_says_so() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let r = app
        .client
        .get(app.url(&format!(
            "/api/v1/members/{}/google",
            member["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "google_not_configured");
}

#[tokio::test]
async fn access_tokens_are_cached_shared_and_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, path) = service_account(dir.path());
    // expires_in 61 s with a 60 s margin: the token is stale after a second.
    let standin = GoogleStandIn::start(public(&key), EMAIL, ISSUER, 61).await;
    let credentials = std::sync::Arc::new(
        Credentials::from_json(&std::fs::read(&path).unwrap(), Some(&standin.token_url())).unwrap(),
    );
    let client = WalletClient::new(
        &standin.api_base(),
        TokenProvider::new(credentials.clone()),
        1000,
    );
    let missing = format!("/loyaltyClass/{ISSUER}.nothing");
    let get = || client.call(reqwest::Method::GET, &missing, None);
    // Ten concurrent callers, one grant.
    let results = futures_join_all((0..10).map(|_| get())).await;
    assert!(results.iter().all(|r| matches!(r, Ok((404, _)))));
    assert_eq!(standin.recorded().token_requests, 1);
    // A token the API no longer accepts: 401, one refresh, the call succeeds.
    standin.revoke_tokens();
    assert!(matches!(get().await, Ok((404, _))));
    assert_eq!(standin.recorded().token_requests, 2);
    // Past its lifetime (minus the margin) the token is refreshed before use.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(get().await, Ok((404, _))));
    assert_eq!(standin.recorded().token_requests, 3);

    // A key the endpoint does not know: refused, with a message that says so.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_path) = service_account(other_dir.path());
    let stranger = Credentials::from_json(
        &std::fs::read(&other_path).unwrap(),
        Some(&standin.token_url()),
    )
    .unwrap();
    let err = TokenProvider::new(std::sync::Arc::new(stranger))
        .token()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refused the service account"),
        "{err}"
    );
}

/// Save and delete callbacks: verified, recorded once per nonce, and every forgery refused.
#[tokio::test]
async fn callbacks_are_verified_recorded_once_and_forgeries_refused() {
    use tessera::google::callback::signing::{callback, p256, public_b64};
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    eventually("the object", || {
        standin.recorded().objects.contains_key(&object_id)
    })
    .await;
    synced(&app, member_id).await;
    let class_id = standin.recorded().objects[&object_id]["classId"]
        .as_str()
        .unwrap()
        .to_string();

    let (root, intermediate) = (p256(), p256());
    let now = tessera::domain::now_ms();
    let later = (now + 3_600_000).to_string();
    standin.recorded().root_keys = json!({"keys": [
        {"keyValue": public_b64(&root), "protocolVersion": "ECv2SigningOnly", "keyExpiration": later},
    ]});
    let message = |event: &str, nonce: &str, exp: i64| {
        json!({"classId": class_id, "objectId": object_id, "eventType": event,
               "expTimeMillis": exp, "count": 1, "nonce": nonce})
    };
    let post = |body: Value| {
        let (client, url) = (app.client.clone(), app.url("/google/callback"));
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let saved = || async {
        let r = app
            .client
            .get(app.url(&format!("/api/v1/members/{member_id}/google")))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["saved"].clone()
    };
    assert_eq!(saved().await, Value::Null, "no callback yet");

    let hour = now + 3_600_000;
    let good = callback(
        &root,
        &intermediate,
        hour,
        "GooglePayPasses",
        ISSUER,
        &message("save", "n1", hour),
    );
    assert_eq!(post(good.clone()).await.0, 200);
    assert_eq!(saved().await, json!(true));
    // Google may deliver twice: the replay is acknowledged and changes nothing.
    assert_eq!(post(good).await.0, 200);
    let events = app
        .state
        .store
        .google_event_count(&object_id)
        .await
        .unwrap();
    assert_eq!(events, 1);

    let forged = [
        (
            "wrong sender",
            callback(
                &root,
                &intermediate,
                hour,
                "SomeoneElse",
                ISSUER,
                &message("del", "n2", hour),
            ),
        ),
        (
            "wrong recipient",
            callback(
                &root,
                &intermediate,
                hour,
                "GooglePayPasses",
                "999",
                &message("del", "n3", hour),
            ),
        ),
        (
            "expired key",
            callback(
                &root,
                &intermediate,
                now - 1,
                "GooglePayPasses",
                ISSUER,
                &message("del", "n4", hour),
            ),
        ),
        (
            "expired message",
            callback(
                &root,
                &intermediate,
                hour,
                "GooglePayPasses",
                ISSUER,
                &message("del", "n5", now - 1),
            ),
        ),
        (
            "unknown root",
            callback(
                &p256(),
                &intermediate,
                hour,
                "GooglePayPasses",
                ISSUER,
                &message("del", "n6", hour),
            ),
        ),
        ("tampered", {
            let mut b = callback(
                &root,
                &intermediate,
                hour,
                "GooglePayPasses",
                ISSUER,
                &message("save", "n7", hour),
            );
            b["signedMessage"] = message("del", "n7", hour).to_string().into();
            b
        }),
    ];
    for (what, body) in forged {
        let (status, text) = post(body).await;
        assert_eq!(status, 400, "{what}: {text}");
    }
    assert_eq!(saved().await, json!(true), "no forged delete took effect");
    assert_eq!(
        app.state
            .store
            .google_event_count(&object_id)
            .await
            .unwrap(),
        1
    );

    // A genuine delete is recorded.
    let del = callback(
        &root,
        &intermediate,
        hour,
        "GooglePayPasses",
        ISSUER,
        &message("del", "n8", hour),
    );
    assert_eq!(post(del).await.0, 200);
    assert_eq!(saved().await, json!(false));
    // The save and the delete are the card's events, once each (not the replay, no forgery).
    let events = app
        .state
        .store
        .events_after(
            Default::default(),
            &["card.installed".into(), "card.removed".into()],
            10,
        )
        .await
        .unwrap();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.payload["wallet"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("card.installed", "google"), ("card.removed", "google")]
    );
    assert!(events.iter().all(|e| e.member_id == member_id));
}

#[tokio::test]
async fn callback_roots_of_another_protocol_are_not_trusted() {
    use tessera::google::callback::signing::{callback, p256, public_b64};
    use tessera::google::callback::{CallbackError, CallbackVerifier};
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = service_account(dir.path());
    let standin = GoogleStandIn::start(public(&key), EMAIL, ISSUER, 3600).await;
    let (root, intermediate) = (p256(), p256());
    let now = tessera::domain::now_ms();
    standin.recorded().root_keys = json!({"keys": [
        {"keyValue": public_b64(&root), "protocolVersion": "ECv1", "keyExpiration": (now + 3_600_000).to_string()},
    ]});
    let verifier = CallbackVerifier::new(&standin.keys_url(), "GooglePayPasses", ISSUER);
    let body = callback(
        &root,
        &intermediate,
        now + 3_600_000,
        "GooglePayPasses",
        ISSUER,
        &json!({"classId": format!("{ISSUER}.c"), "objectId": format!("{ISSUER}.o"),
                "eventType": "save", "expTimeMillis": now + 3_600_000, "nonce": "x"}),
    );
    let err = verifier
        .verify(body.to_string().as_bytes(), now)
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Signature(_)), "{err}");
}

#[tokio::test]
async fn the_demo_card_carries_a_google_save_link_when_google_is_configured() {
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    let card = tessera::demo::seed(&app.state).await.unwrap();
    let url = card.google_save_url.expect("a Google link");
    assert!(
        url.starts_with("https://pay.google.com/gp/v/save/"),
        "{url}"
    );
    let object_id = format!("{ISSUER}.tessera-m-{}", card.member_id);
    assert!(standin.recorded().objects.contains_key(&object_id));
    let json = serde_json::to_value(
        tessera::demo::seed(&TestApp::spawn(TestDb::sqlite().await).await.state)
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        json.get("google_save_url").is_none(),
        "absent without Google"
    );
}

/// Marketers' messages: to every card of a template and to one card, once per request
/// however often it is retried, notifying only while a card's budget lasts.
#[tokio::test]
async fn messages_reach_every_card_once_within_the_budget() {
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    let first = issue_member(&app, "coffee").await;
    let second = another_member(&app, &first).await;
    let ids: Vec<String> = [&first, &second]
        .iter()
        .map(|m| format!("{ISSUER}.tessera-m-{}", m["id"].as_str().unwrap()))
        .collect();
    eventually("both objects", || {
        let r = standin.recorded();
        ids.iter().all(|id| r.objects.contains_key(id))
    })
    .await;
    // Grace's card has had its three notifications today.
    let store = &app.state.store;
    synced(&app, second["id"].as_str().unwrap()).await;
    let grace = second["id"].as_str().unwrap();
    let mut object = store.google_object(grace).await.unwrap().unwrap();
    for _ in 0..3 {
        object.synced_at += 1;
        store
            .record_google_object(grace, &object, true)
            .await
            .unwrap();
    }

    let template = first["pass"]["template_id"].as_str().unwrap();
    let send = |path: String, key: &'static str| {
        let (client, url, admin) = (app.client.clone(), app.url(&path), app.admin_key.clone());
        async move {
            let r = client
                .post(url)
                .bearer_auth(admin)
                .header("Idempotency-Key", key)
                .json(&json!({"header": "Double points", "body": "All weekend, on every coffee."}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let to_all = format!("/api/v1/templates/{template}/google/messages");
    let (s, body) = send(to_all.clone(), "weekend-1").await;
    assert_eq!((s, body["queued"].as_u64()), (202, Some(2)), "{body}");
    let (s, again) = send(to_all, "weekend-1").await;
    assert_eq!(
        (s, again["queued"].as_u64()),
        (202, Some(0)),
        "a retry queues nothing"
    );
    assert_eq!(again["message_id"], body["message_id"]);

    let messages = |id: &str| {
        standin.recorded().objects[id]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually("the message on both cards", || {
        ids.iter().all(|id| messages(id).len() == 1)
    })
    .await;
    assert_eq!(messages(&ids[0])[0]["messageType"], "TEXT_AND_NOTIFY");
    assert_eq!(
        messages(&ids[1])[0]["messageType"],
        "TEXT",
        "budget spent: silent"
    );
    assert_eq!(messages(&ids[0])[0]["header"], "Double points");

    let to_one = format!(
        "/api/v1/members/{}/google/messages",
        first["id"].as_str().unwrap()
    );
    let (s, body) = send(to_one, "ada-1").await;
    assert_eq!((s, body["queued"].as_u64()), (202, Some(1)), "{body}");
    eventually("a second message for Ada", || messages(&ids[0]).len() == 2).await;
    assert_eq!(messages(&ids[1]).len(), 1, "Grace got no second message");

    let (s, bad) = send(format!("/api/v1/members/{grace}/google/messages"), "x").await;
    assert_eq!(s, 202, "{bad}");
    let r = app
        .client
        .post(app.url(&format!("/api/v1/members/{grace}/google/messages")))
        .bearer_auth(&app.admin_key)
        .header("Idempotency-Key", "y")
        .json(&json!({"header": "", "body": "no title"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The class at the stand-in carries Google's colour format, localized names and the program
/// logo made from the logo upload (transparent outside Google's 15 % safe margin, where the
/// icon's rendition would be opaque to the edge).
async fn the_class_speaks_googles_formats_and_shows_the_uploaded_logo(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let object_id = format!("{ISSUER}.tessera-m-{}", member["id"].as_str().unwrap());
    eventually("the object", || {
        object_balance(&standin, &object_id) == Some(0)
    })
    .await;
    let class = {
        let r = standin.recorded();
        let class_id = r.objects[&object_id]["classId"]
            .as_str()
            .unwrap()
            .to_string();
        r.classes[&class_id].clone()
    };
    let colour = tessera::domain::color::Rgb::parse(&tessera::demo::design().colors.background)
        .unwrap()
        .hex();
    assert_eq!(class["hexBackgroundColor"], colour.as_str());
    assert_eq!(class["programName"], "Example Coffee");
    assert_eq!(
        class["localizedProgramName"]["defaultValue"],
        json!({"language": "en", "value": "Example Coffee"})
    );
    assert_eq!(
        class["localizedIssuerName"]["defaultValue"]["value"],
        "Example Coffee Ltd"
    );
    let uri = class["programLogo"]["sourceUri"]["uri"].as_str().unwrap();
    let path = uri
        .split_once("/google/")
        .map(|(_, p)| format!("/google/{p}"))
        .unwrap();
    let response = app.get_bytes(&path).await;
    assert_eq!(response.status(), 200, "{path}");
    let logo = image::load_from_memory(&response.bytes().await.unwrap())
        .unwrap()
        .to_rgba8();
    assert_eq!(logo.dimensions(), (660, 660));
    assert_eq!(
        logo.get_pixel(5, 5)[3],
        0,
        "the logo upload, with Google's margin"
    );
    // The wide logo, made from the same upload, is sent and served.
    let wide = class["wideProgramLogo"]["sourceUri"]["uri"]
        .as_str()
        .expect("a wideProgramLogo");
    let path = wide
        .split_once("/google/")
        .map(|(_, p)| format!("/google/{p}"))
        .unwrap();
    let response = app.get_bytes(&path).await;
    assert_eq!(response.status(), 200, "{path}");
    let wide = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((wide.width(), wide.height()), (1280, 400));
}

on_both_backends!(the_class_speaks_googles_formats_and_shows_the_uploaded_logo);

/// The member's Google status from the API.
async fn google_status(app: &TestApp, member_id: &str) -> Value {
    let r = app
        .get_bytes(&format!("/api/v1/members/{member_id}/google"))
        .await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls the member's Google status until `cond` holds; returns it.
async fn status_until(
    app: &TestApp,
    member_id: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..250 {
        let status = google_status(app, member_id).await;
        if cond(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metrics_text(app: &TestApp) -> String {
    let mut out = String::new();
    app.state.store.metrics().render(&mut out);
    out
}

/// A change Google refuses (400) is recorded on the member's row, shown in the API and counted;
/// it would wait an hour, but the member's next change brings the card forward at once.
async fn a_refused_card_catches_up_on_its_next_change(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    synced(&app, member_id).await;
    let path = format!("/api/v1/members/{member_id}/transactions");

    standin.recorded().refuse_next = 1;
    let (s, _) = app
        .post_idem(&path, "e1", json!({"type": "earn", "points": 10}))
        .await;
    assert_eq!(s, 201);
    let failing = status_until(&app, member_id, "the refusal in the API", |s| {
        s["last_error"].as_str().is_some()
    })
    .await;
    assert_eq!(failing["pending"], true, "{failing}");
    assert_eq!(failing["attempts"], 1);
    assert!(
        failing["last_error"].as_str().unwrap().contains("(400)"),
        "{failing}"
    );
    assert!(
        failing["next_attempt_at"].as_i64().unwrap() > tessera::domain::now_ms() + 1_800_000,
        "alone, a refused card waits: {failing}"
    );
    assert_eq!(object_balance(&standin, &object_id), Some(0));
    assert!(
        metrics_text(&app)
            .contains("tessera_google_sync_failures_total{what=\"object\",reason=\"400\"} 1"),
        "{}",
        metrics_text(&app)
    );

    let (s, _) = app
        .post_idem(&path, "e2", json!({"type": "earn", "points": 5}))
        .await;
    assert_eq!(s, 201);
    eventually("the card brought forward by the change", || {
        object_balance(&standin, &object_id) == Some(15)
    })
    .await;
    let caught_up = status_until(&app, member_id, "the cleared status", |s| {
        s["pending"] == false
    })
    .await;
    assert_eq!(caught_up["last_error"], Value::Null, "{caught_up}");
    assert_eq!(caught_up["synced_points"], 15);
    let pass = app.state.store.pass_for_member(member_id).await.unwrap();
    assert_eq!(caught_up["synced_version"], pass.updated_at, "{caught_up}");
}

on_both_backends!(a_refused_card_catches_up_on_its_next_change);

/// A class Google no longer has (404 on the object's write) is created again, then the object.
#[tokio::test]
async fn a_class_google_lost_is_created_again() {
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    synced(&app, member_id).await;
    let class_id = {
        let mut r = standin.recorded();
        let class_id = r.objects[&object_id]["classId"]
            .as_str()
            .unwrap()
            .to_string();
        r.classes.remove(&class_id).expect("the class was written");
        class_id
    };
    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{member_id}/transactions"),
            "e1",
            json!({"type": "earn", "points": 7}),
        )
        .await;
    assert_eq!(s, 201);
    eventually("the object after the class came back", || {
        object_balance(&standin, &object_id) == Some(7)
    })
    .await;
    let r = standin.recorded();
    assert_eq!(r.classes[&class_id]["reviewStatus"], "APPROVED");
    let inserts = r
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/loyaltyClass")
        .count();
    assert_eq!(inserts, 2, "inserted at join and again after the loss");
}

/// Posts a message to one member's card with the admin key.
async fn message(app: &TestApp, member_id: &str, key: &str, header: &str) {
    let (s, body) = app
        .post_idem(
            &format!("/api/v1/members/{member_id}/google/messages"),
            key,
            json!({"header": header, "body": "Something to read."}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
}

fn add_message_calls(standin: &GoogleStandIn) -> usize {
    standin
        .recorded()
        .calls
        .iter()
        .filter(|c| c.path.ends_with("/addMessage"))
        .count()
}

/// Eleven messages leave Google's ten, the oldest gone; a message Google refuses is tried
/// `MESSAGE_ATTEMPTS` times, then given up and shown in the API, and later ones still go out.
#[tokio::test]
async fn messages_keep_googles_limit_and_refused_ones_stop() {
    let (app, standin, _) = google_app(TestDb::sqlite().await).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    synced(&app, member_id).await;
    let headers = |standin: &GoogleStandIn| -> Vec<String> {
        standin.recorded().objects[&object_id]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["header"].as_str().unwrap().to_string())
            .collect()
    };
    for i in 0..11 {
        message(&app, member_id, &format!("k{i}"), &format!("Message {i}")).await;
        let expected = format!("Message {i}");
        eventually("the message on the card", || {
            headers(&standin).contains(&expected)
        })
        .await;
    }
    let on_card = headers(&standin);
    assert_eq!(on_card.len(), 10, "{on_card:?}");
    assert!(
        !on_card.contains(&"Message 0".to_string()),
        "the oldest went"
    );

    standin.recorded().refuse_messages = true;
    let before = add_message_calls(&standin);
    message(&app, member_id, "refused", "Refused").await;
    let status = status_until(&app, member_id, "the message given up", |s| {
        s["failed_messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    })
    .await;
    assert!(
        status["failed_messages"][0]["error"]
            .as_str()
            .unwrap()
            .contains("(400)"),
        "{status}"
    );
    assert_eq!(
        add_message_calls(&standin) - before,
        tessera::google::sync::MESSAGE_ATTEMPTS as usize
    );
    standin.recorded().refuse_messages = false;
    message(&app, member_id, "after", "After").await;
    eventually("the next message", || {
        headers(&standin).contains(&"After".to_string())
    })
    .await;
    assert_eq!(
        add_message_calls(&standin) - before,
        tessera::google::sync::MESSAGE_ATTEMPTS as usize + 1,
        "the refused message was not tried again"
    );
    assert!(!headers(&standin).contains(&"Refused".to_string()));
    assert!(
        metrics_text(&app)
            .contains("tessera_google_sync_failures_total{what=\"message\",reason=\"400\"} 5")
    );
}

/// A program's notification policy: small earns update the card silently, a large one and a
/// redemption notify.
async fn the_programs_policy_picks_the_notifying_changes(db: TestDb) {
    let (app, standin, _) = google_app(db).await;
    let member = issue_member(&app, "coffee").await;
    let member_id = member["id"].as_str().unwrap();
    let program_id = member["program_id"].as_str().unwrap();
    let object_id = format!("{ISSUER}.tessera-m-{member_id}");
    synced(&app, member_id).await;
    let policy_path = format!("/api/v1/programs/{program_id}/google/notifications");
    let default = app.get_bytes(&policy_path).await;
    assert_eq!(default.status(), 200);
    assert_eq!(
        default.json::<Value>().await.unwrap(),
        json!({"on_redemption": true, "on_tier_change": true, "min_points": 1})
    );
    let r = app
        .client
        .put(app.url(&policy_path))
        .bearer_auth(&app.admin_key)
        .json(&json!({"on_redemption": true, "on_tier_change": false, "min_points": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = app
        .client
        .put(app.url(&policy_path))
        .bearer_auth(&app.admin_key)
        .json(&json!({"on_redemption": true, "on_tier_change": false, "min_points": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let path = format!("/api/v1/members/{member_id}/transactions");
    for (i, (body, balance, notifies)) in [
        (json!({"type": "earn", "points": 10}), 10, false),
        (json!({"type": "earn", "points": 60}), 70, true),
        (json!({"type": "redeem", "points": 5}), 65, true),
        (json!({"type": "earn", "points": 1}), 66, false),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, answer) = app.post_idem(&path, &format!("p{i}"), body).await;
        assert_eq!(s, 201, "{answer}");
        eventually("the balance at Google", || {
            object_balance(&standin, &object_id) == Some(balance)
        })
        .await;
        let r = standin.recorded();
        let patch = r
            .calls
            .iter()
            .rev()
            .find(|c| c.method == "PATCH" && c.path.ends_with(&object_id))
            .unwrap();
        assert_eq!(patch.notify.is_some(), notifies, "change {i}");
    }
}

on_both_backends!(the_programs_policy_picks_the_notifying_changes);

/// A try that fails while a newer change was queued does not touch that change's row: the
/// change stays due at once with no failure counted (the retry matches on `queued_at`, as the
/// clean-up does); a try of the newest change that fails is recorded and backs off.
async fn a_failed_try_leaves_a_newer_change_due(db: TestDb) {
    let store = db.store().await;
    let member = crate::helpers::member_with_rules(&store, Default::default()).await;
    let mine = |due: Vec<tessera::storage::GooglePending>| {
        due.into_iter().find(|p| p.member_id == member.id)
    };
    store.queue_google_sync(&member.id, 1_000).await.unwrap();
    let first = mine(store.google_due(2_000, 10).await.unwrap()).unwrap();
    // The member changes while the sync is in flight; then that sync meets an outage.
    store.queue_google_sync(&member.id, 2_500).await.unwrap();
    store
        .google_retry(&first, 600_000, "Google answered 503", None)
        .await
        .unwrap();
    let newer = mine(store.google_due(3_000, 10).await.unwrap()).expect("the newer change is due");
    assert_eq!((newer.queued_at, newer.attempts), (2_500, 0));
    let status = store.google_sync_status(&member.id).await.unwrap();
    assert_eq!((status.attempts, status.last_error), (0, None));

    // The newest change failing is recorded, and waits for its retry.
    store
        .google_retry(&newer, 600_000, "Google answered 503", None)
        .await
        .unwrap();
    assert_eq!(mine(store.google_due(3_000, 10).await.unwrap()), None);
    let status = store.google_sync_status(&member.id).await.unwrap();
    assert_eq!(status.attempts, 1);
    assert_eq!(status.last_error.as_deref(), Some("Google answered 503"));
    assert_eq!(status.next_attempt_at, Some(600_000));
}

on_both_backends!(a_failed_try_leaves_a_newer_change_due);
