//! The APNs client against the local stand-in (`tessera::push::standin`).

use openssl::nid::Nid;
use openssl::pkey::PKey;
use tessera::passes::apple::dev_certs::{self, DevAuthority};
use tessera::push::apns::{ApnsClient, PushResult};
pub use tessera::push::standin::StandIn;

#[tokio::test]
async fn pushes_over_http2_with_the_pass_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevAuthority::open_or_create(dir.path()).unwrap();
    let standin = StandIn::start(dir.path()).await;
    let ptid = "pass.com.example.coffee";
    let cert = ca.mint(ptid, "ABCDE12345", "Example").unwrap();
    let key = PKey::private_key_from_pem(
        &std::fs::read(dir.path().join(dev_certs::PASS_KEY_FILE)).unwrap(),
    )
    .unwrap();
    let client =
        ApnsClient::with_certificate(&standin.url(), &cert, &key, Some(&standin.ca)).unwrap();

    assert_eq!(client.push(ptid, "ok1").await, PushResult::Delivered);
    assert_eq!(
        client.push(ptid, "gone").await,
        PushResult::TokenGone("Unregistered".into())
    );
    assert_eq!(
        client.push(ptid, "bad").await,
        PushResult::TokenGone("BadDeviceToken".into())
    );
    assert!(matches!(
        client.push(ptid, "busy").await,
        PushResult::Retry(_)
    ));
    assert_eq!(
        client.push(ptid, "topic").await,
        PushResult::Rejected {
            status: 400,
            reason: "BadTopic".into()
        }
    );
    assert_eq!(client.push(ptid, "ok2").await, PushResult::Delivered);

    let seen = standin.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    let first = &seen[0];
    assert_eq!(first.path, "/3/device/ok1");
    assert_eq!(first.version, "HTTP/2.0");
    assert_eq!(first.topic, ptid, "apns-topic is the pass type identifier");
    assert_eq!(first.body, b"{}", "the body is exactly {{}}");
    assert_eq!(
        first.client_uid, ptid,
        "the Pass Type ID certificate was presented"
    );
    assert_eq!(
        *standin.connections.lock().unwrap(),
        1,
        "one connection, reused for every push"
    );

    // A client without a certificate is refused at the handshake and never heard.
    let bare = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_der(&standin.ca.to_der().unwrap()).unwrap(),
        )
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let refused = bare
        .post(format!("{}/3/device/x", standin.url()))
        .body("{}")
        .send()
        .await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    assert_eq!(standin.seen.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn pushes_with_a_provider_token() {
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use tessera::push::apns::ProviderToken;

    let standin = StandIn::start_with(None).await;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let ec = EcKey::generate(&group).unwrap();
    let p8 = PKey::from_ec_key(ec.clone())
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let token = ProviderToken::new(&p8, "KEY1234567", "ABCDE12345").unwrap();
    let client = ApnsClient::with_token(&standin.url(), token, Some(&standin.ca)).unwrap();
    assert_eq!(
        client.push("pass.com.example.coffee", "ok1").await,
        PushResult::Delivered
    );
    assert_eq!(
        client.push("pass.com.example.coffee", "ok2").await,
        PushResult::Delivered
    );

    let seen = standin.seen.lock().unwrap().clone();
    let jwt = seen[0]
        .authorization
        .strip_prefix("bearer ")
        .expect("a bearer token");
    assert_eq!(
        seen[1].authorization, seen[0].authorization,
        "one token reused, not re-signed per push"
    );
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |p: &str| data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("KEY1234567"))
    );
    assert_eq!(claims["iss"], "ABCDE12345");
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - claims["iat"].as_i64().unwrap();
    assert!((0..60).contains(&age));
    // The ES256 signature: raw r || s over "header.claims", verified with the public key.
    let raw = decode(parts[2]);
    assert_eq!(raw.len(), 64);
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(&raw[..32]).unwrap(),
        BigNum::from_slice(&raw[32..]).unwrap(),
    )
    .unwrap();
    let digest = openssl::sha::sha256(format!("{}.{}", parts[0], parts[1]).as_bytes());
    let public = EcKey::from_public_key(&group, ec.public_key()).unwrap();
    assert!(
        sig.verify(&digest, &public).unwrap(),
        "the signature verifies with the key's public half"
    );
}
