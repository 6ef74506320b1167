//! The APNs client against a local stand-in that speaks what APNs speaks: HTTP/2 over TLS
//! (ALPN h2 only), a required client certificate, `POST /3/device/<token>`, scripted replies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{AlpnError, Ssl, SslAcceptor, SslMethod, SslVerifyMode, select_next_proto};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use tessera::passes::apple::dev_certs::{self, DevAuthority};
use tessera::push::apns::{ApnsClient, PushResult};

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub version: String,
    pub topic: String,
    pub body: Vec<u8>,
    pub client_uid: String,
    pub authorization: String,
}

pub struct StandIn {
    pub addr: SocketAddr,
    pub ca: X509,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<Mutex<usize>>,
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn server_identity() -> (X509, X509, PKey<Private>) {
    let ca_key = key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "APNs stand-in CA").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let server_key = key();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let subject = subject.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&server_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (ca, b.build(), server_key)
}

/// Replies by device token: `gone`/`dead` 410, `bad`/`bad0` 400 BadDeviceToken, `topic` 400
/// BadTopic, `busy` 429, `5005` 500 the first time and 200 after, anything else 200.
/// `earlier` is how many requests for this token came before.
fn reply(token: &str, earlier: usize) -> (StatusCode, &'static str) {
    match token {
        "gone" | "dead" => (
            StatusCode::GONE,
            r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        ),
        "bad" | "bad0" => (StatusCode::BAD_REQUEST, r#"{"reason":"BadDeviceToken"}"#),
        "5005" if earlier == 0 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"reason":"InternalServerError"}"#,
        ),
        "topic" => (StatusCode::BAD_REQUEST, r#"{"reason":"BadTopic"}"#),
        "busy" => (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"reason":"TooManyRequests"}"#,
        ),
        _ => (StatusCode::OK, ""),
    }
}

impl StandIn {
    /// Starts the stand-in; it requires client certificates issued under `client_ca_dir` (the
    /// dev CA).
    pub async fn start(client_ca_dir: &std::path::Path) -> StandIn {
        Self::start_with(Some(client_ca_dir)).await
    }

    /// With `None`, no client certificate is asked for (token auth).
    pub async fn start_with(client_ca_dir: Option<&std::path::Path>) -> StandIn {
        let (ca, cert, key) = server_identity();
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_certificate(&cert).unwrap();
        acceptor.set_private_key(&key).unwrap();
        if let Some(dir) = client_ca_dir {
            for file in [dev_certs::ROOT_CA_FILE, dev_certs::INTERMEDIATE_FILE] {
                let c = X509::from_pem(&std::fs::read(dir.join(file)).unwrap()).unwrap();
                acceptor.cert_store_mut().add_cert(c).unwrap();
            }
            acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        acceptor.set_alpn_select_callback(|_, client| {
            select_next_proto(b"\x02h2", client).ok_or(AlpnError::ALERT_FATAL)
        });
        let acceptor = Arc::new(acceptor.build());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let connections = Arc::new(Mutex::new(0));
        let (seen2, conns2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let ssl = Ssl::new(acceptor.context()).unwrap();
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                let (seen, conns) = (seen2.clone(), conns2.clone());
                tokio::spawn(async move {
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return; // no client certificate, or not h2: refused
                    }
                    *conns.lock().unwrap() += 1;
                    let uid = tls
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| {
                            c.subject_name()
                                .entries_by_nid(Nid::USERID)
                                .next()
                                .and_then(|e| e.data().to_string().ok())
                        })
                        .unwrap_or_default();
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (seen, uid) = (seen.clone(), uid.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let version = format!("{:?}", req.version());
                                let topic = req
                                    .headers()
                                    .get("apns-topic")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                let authorization = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_string())
                                    .unwrap_or_default();
                                let body =
                                    req.into_body().collect().await.unwrap().to_bytes().to_vec();
                                let token = path.rsplit('/').next().unwrap_or_default().to_string();
                                let (status, text) = {
                                    let mut seen = seen.lock().unwrap();
                                    let earlier = seen.iter().filter(|s| s.path == path).count();
                                    seen.push(Seen {
                                        path,
                                        version,
                                        topic,
                                        body,
                                        client_uid: uid,
                                        authorization,
                                    });
                                    reply(&token, earlier)
                                };
                                let mut r =
                                    Response::new(Full::new(Bytes::from_static(text.as_bytes())));
                                *r.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        StandIn {
            addr,
            ca,
            seen,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Requests seen for one device token.
    pub fn pushes_to(&self, token: &str) -> Vec<Seen> {
        let path = format!("/3/device/{token}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Writes the stand-in's CA for `push.apns_root_certificate`.
    pub fn write_ca(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("apns-standin-ca.pem");
        std::fs::write(&path, self.ca.to_pem().unwrap()).unwrap();
        path
    }
}

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
