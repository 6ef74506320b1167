//! The `deploy/` example (issue 13): two instances on one PostgreSQL database behind nginx with
//! TLS at the proxy, run from the very files in `deploy/` with only addresses and paths swapped.
//!
//! Needs nginx (`apt install nginx`) and PostgreSQL; skipped without them unless
//! `TESSERA_REQUIRE_NGINX` is set (CI sets it).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use serde_json::json;

use crate::helpers::{TestDb, eventually, issue_member};
use crate::push::{app_with_standin_and, register};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// nginx in the foreground with its own prefix; stopped on drop (SIGTERM: the master stops
/// its workers too, which SIGKILL would leave running).
struct Nginx(Child, PathBuf);

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.1.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TESSERA_REQUIRE_NGINX").is_none(),
            "nginx is required (TESSERA_REQUIRE_NGINX is set): apt install nginx"
        );
        eprintln!("skipped: nginx is not installed");
    }
    found
}

/// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

/// `deploy/nginx/tessera.conf` with the test's upstreams, port and certificate, inside a
/// minimal main configuration.
fn start_nginx(dir: &Path, upstreams: [&str; 2], port: u16) -> Nginx {
    let shipped = std::fs::read_to_string(format!("{DEPLOY}/nginx/tessera.conf")).unwrap();
    let (cert, key) = certificate(dir);
    let swaps = [
        ("127.0.0.1:8081", upstreams[0].to_string()),
        ("127.0.0.1:8082", upstreams[1].to_string()),
        (
            "listen 443 ssl http2;",
            format!("listen 127.0.0.1:{port} ssl http2;"),
        ),
        ("/etc/tessera/tls/fullchain.pem", cert.display().to_string()),
        ("/etc/tessera/tls/privkey.pem", key.display().to_string()),
    ];
    let mut conf = shipped.clone();
    for (from, to) in &swaps {
        assert!(
            conf.contains(from),
            "deploy/nginx/tessera.conf no longer has {from:?}"
        );
        conf = conf.replace(from, to);
    }
    std::fs::write(dir.join("tessera.conf"), conf).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_processes 1;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           include {d}/tessera.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let test = Command::new(nginx_binary().unwrap())
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = Command::new(nginx_binary().unwrap())
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Nginx(child, dir.to_path_buf())
}

/// A client that connects from `from` (a loopback address of its own) and trusts any
/// certificate (the test's own, self-signed).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(from.parse::<IpAddr>().unwrap()))
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// The shipped shared configuration is one Tessera accepts, with the proxy trusted.
#[test]
fn the_shipped_configuration_loads() {
    let config = tessera::config::Config::load(Some(Path::new(&format!("{DEPLOY}/tessera.toml"))))
        .expect("deploy/tessera.toml is a valid configuration");
    assert_eq!(
        config.server.trusted_proxies,
        vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(config.database_url.starts_with("postgres://"));
    let unit = std::fs::read_to_string(format!("{DEPLOY}/systemd/tessera@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/tessera --config /etc/tessera/tessera.toml serve")
    );
    for env in ["tessera-a.env", "tessera-b.env"] {
        let text = std::fs::read_to_string(format!("{DEPLOY}/{env}")).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("TESSERA_LISTEN=127.0.0.1:808")),
            "{env}"
        );
    }
}

/// Through nginx over TLS: both instances answer, a change is pushed once, and the throttles
/// count each client (not the proxy), shared by both instances, whatever X-Forwarded-For a
/// client forges.
#[tokio::test]
async fn two_instances_behind_nginx() {
    if nginx_binary().is_none() {
        return;
    }
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let settings = |c: &mut tessera::config::Config| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.server.device_logs_per_minute = 2;
        c.server.metrics_token = Some(tessera::secret::Secret::new("metrics-token-for-the-test"));
    };
    let (a, standin) = app_with_standin_and(db, settings).await;
    let (push, google) = (a.state.config.push.clone(), a.state.config.google.clone());
    let b = a
        .peer(move |c| {
            settings(c);
            c.push = push;
            c.google = google;
        })
        .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let upstreams = [
        a.base.trim_start_matches("http://"),
        b.base.trim_start_matches("http://"),
    ];
    let nginx = start_nginx(dir.path(), upstreams, port);
    let proxy = format!("https://127.0.0.1:{port}");
    let client = client_from("127.0.0.2");
    let mut last = None;
    for _ in 0..200 {
        match client.get(format!("{proxy}/healthz")).send().await {
            Ok(r) if r.status().is_success() => {
                last = None;
                break;
            }
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        last.is_none(),
        "nginx answers /healthz over TLS: {last:?}\n{}",
        nginx.log()
    );

    // Round robin: each instance served some of these.
    for _ in 0..6 {
        let r = client.get(format!("{proxy}/healthz")).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    for app in [&a, &b] {
        let text = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth("metrics-token-for-the-test")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("tessera_http_requests_total")
                    && l.contains("route=\"/healthz\"")),
            "{} served none of the proxied requests:\n{text}",
            app.base
        );
    }
    assert_eq!(
        client
            .get(format!("{proxy}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "the proxy does not serve /metrics"
    );

    // A change made through the proxy is pushed to the device once.
    let member = issue_member(&a, "coffee").await;
    register(&b, &member, "dev-behind-nginx", TOKEN).await;
    let earn_through_proxy = || {
        client
            .post(format!(
                "{proxy}/api/v1/members/{}/transactions",
                member["id"].as_str().unwrap()
            ))
            .bearer_auth(&a.admin_key)
            .header("Idempotency-Key", "behind-nginx-1")
            .json(&json!({"type": "earn", "points": 4}))
            .send()
    };
    let first = earn_through_proxy().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    eventually("the device was pushed", || {
        !standin.pushes_to(TOKEN).is_empty()
    })
    .await;
    // The retry reaches the other instance (round robin) and replays the first answer.
    let again = earn_through_proxy().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    let balance = a
        .state
        .store
        .get_member(member["id"].as_str().unwrap())
        .await
        .unwrap()
        .points;
    assert_eq!(balance, 4, "credited once");

    // Device logs: 2 a minute per client. 127.0.0.2 spends its quota across both instances,
    // and a forged X-Forwarded-For does not buy it a new one; 127.0.0.3 still has its own.
    let log = |c: reqwest::Client, forged: Option<&'static str>| {
        let url = format!("{proxy}/passkit/v1/log");
        async move {
            let mut r = c.post(url).json(&json!({"logs": ["behind nginx"]}));
            if let Some(f) = forged {
                r = r.header("X-Forwarded-For", f);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(log(client.clone(), None).await);
    }
    assert!(
        statuses.contains(&429),
        "the quota holds across instances: {statuses:?}"
    );
    assert_eq!(
        log(client.clone(), Some("198.51.100.7")).await,
        429,
        "a forged X-Forwarded-For is not believed"
    );
    assert_eq!(
        log(client_from("127.0.0.3"), None).await,
        200,
        "another client has its own"
    );
    drop(b);
}

const TOKEN: &str = "ddeeff00112233445566778899aabbccddeeff00112233445566778899aabbcc";
