//! `GET /metrics`: Prometheus text exposition (`crate::metrics`), behind
//! `server.metrics_token`, and the middleware that counts every request.

use std::fmt::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::domain::now_ms;
use crate::metrics::family;

/// Counts the request by its route (never the raw path: ids and tokens stay out of labels).
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Only the standard methods become labels: a client's invented ones would grow the
    // label set (and this process's memory) without bound.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => req.method().as_str(),
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    state.store.metrics().request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // An empty token (a `${VAR}` that expanded to nothing) is no token: the endpoint stays off.
    let configured = state.config.server.metrics_token.as_ref();
    let Some(token) = configured.filter(|t| !t.expose().is_empty()) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !crate::secret::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut out = String::new();
    state.store.metrics().render(&mut out);
    match state.store.queue_stats().await {
        Ok(q) => {
            family(
                &mut out,
                "tessera_outbox_depth",
                "gauge",
                "Outbox rows not yet pushed.",
            );
            let _ = writeln!(out, "tessera_outbox_depth {}", q.outbox_depth);
            family(
                &mut out,
                "tessera_outbox_oldest_age_seconds",
                "gauge",
                "Age of the oldest outbox row (0 when empty).",
            );
            let age = q.outbox_oldest.map_or(0, |t| (now_ms() - t).max(0));
            let _ = writeln!(
                out,
                "tessera_outbox_oldest_age_seconds {}",
                age as f64 / 1000.0
            );
            family(
                &mut out,
                "tessera_google_pending",
                "gauge",
                "Members waiting for a Google sync.",
            );
            let _ = writeln!(out, "tessera_google_pending {}", q.google_pending);
            family(
                &mut out,
                "tessera_google_failed",
                "gauge",
                "Google syncs that failed at least once and wait for a retry.",
            );
            let _ = writeln!(out, "tessera_google_failed {}", q.google_failing);
            family(
                &mut out,
                "tessera_publish_job_holders",
                "gauge",
                "Running publish jobs: holders done and in total.",
            );
            for (job, template, done, total) in &q.publish_jobs {
                let _ = writeln!(
                    out,
                    "tessera_publish_job_holders{{job=\"{job}\",template=\"{template}\",state=\"done\"}} {done}\n\
                     tessera_publish_job_holders{{job=\"{job}\",template=\"{template}\",state=\"total\"}} {total}"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics: reading the queues failed"),
    }
    family(
        &mut out,
        "tessera_worker_up",
        "gauge",
        "Whether each background worker runs (1) or waits to restart (0).",
    );
    family(
        &mut out,
        "tessera_worker_restarts_total",
        "counter",
        "Restarts of each background worker.",
    );
    family(
        &mut out,
        "tessera_worker_last_ok_seconds",
        "gauge",
        "When each worker last finished a round (Unix time).",
    );
    for (name, w) in state.workers.snapshot() {
        let _ = writeln!(
            out,
            "tessera_worker_up{{worker=\"{name}\"}} {}\ntessera_worker_restarts_total{{worker=\"{name}\"}} {}",
            u8::from(w.alive),
            w.restarts
        );
        if let Some(t) = w.last_ok {
            let _ = writeln!(
                out,
                "tessera_worker_last_ok_seconds{{worker=\"{name}\"}} {}",
                t as f64 / 1000.0
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
