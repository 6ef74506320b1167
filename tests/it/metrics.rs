//! `GET /metrics`: behind its token, in Prometheus's text format, with requests, postings,
//! pushes, the queues and the workers.

use crate::helpers::{TestApp, TestDb, eventually, issue_member};
use crate::on_both_backends;
use crate::push::{app_with_standin_and, earn, register};

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut req = app.client.get(app.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metrics_need_their_token_and_count_what_happened(db: TestDb) {
    let (app, standin) = app_with_standin_and(db, |c| {
        c.server.metrics_token = Some(tessera::secret::Secret::new("scrape-me"));
    })
    .await;
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("wrong")).await.0, 401);
    let member = issue_member(&app, "coffee").await;
    register(&app, &member, "phone", "abcd01").await;
    assert_eq!(earn(&app, &member, "m1", 25).await, 201);
    eventually("the push", || standin.pushes_to("abcd01").len() == 1).await;
    // Counted before it is settled: once the outbox is empty, the counter is there.
    for _ in 0..250 {
        if app.state.store.pending_outbox(1).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Invented methods are counted as "other", never as labels of their own.
    for method in ["FLOOD1", "FLOOD2"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client.request(m, app.url("/x")).send().await.unwrap();
    }

    let (status, text) = scrape(&app, Some("scrape-me")).await;
    assert_eq!(status, 200);
    assert!(!text.contains("FLOOD"), "{text}");
    assert!(
        text.contains(r#"route="unmatched",method="other",status="#),
        "{text}"
    );
    for line in [
        r#"tessera_http_requests_total{route="/api/v1/members/{member_id}/transactions",method="POST",status="201"} 1"#,
        r#"tessera_http_request_duration_seconds_count{route="/api/v1/members/{member_id}/transactions"} 1"#,
        r#"tessera_ledger_postings_total{kind="earn"} 1"#,
        r#"tessera_worker_up{worker="push"} 1"#,
        "# TYPE tessera_http_request_duration_seconds histogram",
        "tessera_google_pending 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // The push was counted, and the queue is empty.
    assert!(
        text.contains(r#"tessera_pushes_total{outcome="sent",reason=""} 1"#),
        "{text}"
    );
    assert!(text.contains("tessera_outbox_depth 0"), "{text}");
}

on_both_backends!(metrics_need_their_token_and_count_what_happened);

#[tokio::test]
async fn without_a_token_there_is_no_metrics_endpoint() {
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    assert_eq!(scrape(&app, Some("anything")).await.0, 404);
    // An empty token (an unset variable in a unit file) is no token, not an open door.
    let (app, _) = app_with_standin_and(TestDb::sqlite().await, |c| {
        c.server.metrics_token = Some(tessera::secret::Secret::new(""));
    })
    .await;
    assert_eq!(scrape(&app, None).await.0, 404);
    assert_eq!(scrape(&app, Some("")).await.0, 404);
}
