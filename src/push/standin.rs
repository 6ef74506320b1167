//! A local stand-in for APNs that speaks what APNs speaks: HTTP/2 over TLS (ALPN h2 only), an
//! optional required client certificate, `POST /3/device/<token>`, replies scripted by token.
//! Tests and `tessera bench push` run against it, since Apple's servers are out of reach.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

use crate::passes::apple::dev_certs;

#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request arrived.
    pub at: Instant,
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
    PKey::from_rsa(Rsa::generate(2048).expect("stand-in set-up")).expect("stand-in set-up")
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn server_identity() -> (X509, X509, PKey<Private>) {
    let ca_key = key();
    let mut name = X509NameBuilder::new().expect("stand-in set-up");
    name.append_entry_by_text("CN", "APNs stand-in CA")
        .expect("stand-in set-up");
    let name = name.build();
    let mut b = X509::builder().expect("stand-in set-up");
    b.set_version(2).expect("stand-in set-up");
    b.set_subject_name(&name).expect("stand-in set-up");
    b.set_issuer_name(&name).expect("stand-in set-up");
    b.set_pubkey(&ca_key).expect("stand-in set-up");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("stand-in set-up"))
        .expect("stand-in set-up");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("stand-in set-up"))
        .expect("stand-in set-up");
    b.append_extension(
        BasicConstraints::new()
            .critical()
            .ca()
            .build()
            .expect("stand-in set-up"),
    )
    .expect("stand-in set-up");
    b.sign(&ca_key, MessageDigest::sha256())
        .expect("stand-in set-up");
    let ca = b.build();

    let server_key = key();
    let mut subject = X509NameBuilder::new().expect("stand-in set-up");
    subject
        .append_entry_by_text("CN", "127.0.0.1")
        .expect("stand-in set-up");
    let subject = subject.build();
    let mut b = X509::builder().expect("stand-in set-up");
    b.set_version(2).expect("stand-in set-up");
    b.set_subject_name(&subject).expect("stand-in set-up");
    b.set_issuer_name(ca.subject_name())
        .expect("stand-in set-up");
    b.set_pubkey(&server_key).expect("stand-in set-up");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("stand-in set-up"))
        .expect("stand-in set-up");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("stand-in set-up"))
        .expect("stand-in set-up");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&b.x509v3_context(Some(&ca), None))
        .expect("stand-in set-up");
    b.append_extension(san).expect("stand-in set-up");
    b.sign(&ca_key, MessageDigest::sha256())
        .expect("stand-in set-up");
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
        let mut acceptor =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("stand-in set-up");
        acceptor.set_certificate(&cert).expect("stand-in set-up");
        acceptor.set_private_key(&key).expect("stand-in set-up");
        if let Some(dir) = client_ca_dir {
            for file in [dev_certs::ROOT_CA_FILE, dev_certs::INTERMEDIATE_FILE] {
                let c = X509::from_pem(&std::fs::read(dir.join(file)).expect("stand-in set-up"))
                    .expect("stand-in set-up");
                acceptor
                    .cert_store_mut()
                    .add_cert(c)
                    .expect("stand-in set-up");
            }
            acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        acceptor.set_alpn_select_callback(|_, client| {
            select_next_proto(b"\x02h2", client).ok_or(AlpnError::ALERT_FATAL)
        });
        let acceptor = Arc::new(acceptor.build());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("stand-in set-up");
        let addr = listener.local_addr().expect("stand-in set-up");
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let connections = Arc::new(Mutex::new(0));
        let (seen2, conns2) = (seen.clone(), connections.clone());
        let counts2 = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                // As APNs does: without it, small replies wait on delayed ACKs (~40 ms).
                let _ = tcp.set_nodelay(true);
                let ssl = Ssl::new(acceptor.context()).expect("stand-in set-up");
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("stand-in set-up");
                let (seen, conns, counts) = (seen2.clone(), conns2.clone(), counts2.clone());
                tokio::spawn(async move {
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return; // no client certificate, or not h2: refused
                    }
                    *conns.lock().expect("stand-in set-up") += 1;
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
                            let (seen, uid, counts) = (seen.clone(), uid.clone(), counts.clone());
                            async move {
                                let path = req.uri().path().to_string();
                                let version = format!("{:?}", req.version());
                                let topic = req
                                    .headers()
                                    .get("apns-topic")
                                    .map(|v| v.to_str().expect("stand-in set-up").to_string())
                                    .unwrap_or_default();
                                let authorization = req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().expect("stand-in set-up").to_string())
                                    .unwrap_or_default();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .expect("stand-in set-up")
                                    .to_bytes()
                                    .to_vec();
                                let token = path.rsplit('/').next().unwrap_or_default().to_string();
                                let (status, text) = {
                                    let mut seen = seen.lock().expect("stand-in set-up");
                                    // A counter per path: scanning `seen` would make the sink
                                    // slower the more it has received, and measure itself.
                                    let earlier = {
                                        let mut counts = counts.lock().expect("stand-in set-up");
                                        let n = counts.entry(path.clone()).or_insert(0);
                                        *n += 1;
                                        *n - 1
                                    };
                                    seen.push(Seen {
                                        at: Instant::now(),
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
            .expect("stand-in set-up")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    /// Writes the stand-in's CA for `push.apns_root_certificate`.
    pub fn write_ca(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("apns-standin-ca.pem");
        std::fs::write(&path, self.ca.to_pem().expect("stand-in set-up")).expect("stand-in set-up");
        path
    }
}
