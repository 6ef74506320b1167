//! Prometheus metrics, written in the text exposition format by hand (a few counters and one
//! histogram family do not justify a metrics crate and its dependency tree on 2 cores).
//!
//! Counters live in memory per instance (`Metrics`, held by the `Store` so the storage layer,
//! the dispatcher and the HTTP layer all reach it); database figures (outbox depth, Google queue,
//! publish jobs) are read when scraped. `GET /metrics` answers only with
//! `Authorization: Bearer <server.metrics_token>`, and is absent (404) without a token.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// route → latency.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// entry kind → postings committed.
    postings: Mutex<BTreeMap<&'static str, u64>>,
    /// (outcome, reason) → pushes: `sent`, `failed` (token gone, refused), `retrying`.
    pushes: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// (what: `class`, `object`, `message`; reason: HTTP status, `quota`, `config`,
    /// `unavailable`) → failed Google calls.
    google_failures: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Audit rows that could not be written.
    audit_failures: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics poisoned")
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut latency = self.latency.lock().expect("metrics poisoned");
        let h = latency.entry(route.to_string()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn posting(&self, kind: &'static str) {
        *self
            .postings
            .lock()
            .expect("metrics poisoned")
            .entry(kind)
            .or_default() += 1;
    }

    /// One push's outcome: `sent`, `failed` or `retrying`, with APNs's reason.
    pub fn push(&self, outcome: &'static str, reason: &str) {
        *self
            .pushes
            .lock()
            .expect("metrics poisoned")
            .entry((outcome, reason.to_string()))
            .or_default() += 1;
    }

    /// One failed Google sync: of a `class`, an `object` or a `message`, with the reason's label
    /// (`GoogleError::label`).
    pub fn google_failure(&self, what: &'static str, reason: &str) {
        *self
            .google_failures
            .lock()
            .expect("metrics poisoned")
            .entry((what, reason.to_string()))
            .or_default() += 1;
    }

    /// An audit row that could not be written (the action it records happened).
    pub fn audit_failed(&self) {
        self.audit_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counters in the text exposition format.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "tessera_http_requests_total",
            "counter",
            "HTTP requests by route, method and status.",
        );
        for ((route, method, status), n) in self.requests.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(
                out,
                "tessera_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        family(
            out,
            "tessera_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route.",
        );
        for (route, h) in self.latency.lock().expect("metrics poisoned").iter() {
            let route = escape(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tessera_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "tessera_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 tessera_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 tessera_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        family(
            out,
            "tessera_ledger_postings_total",
            "counter",
            "Ledger postings committed by this instance, by entry kind.",
        );
        for (kind, n) in self.postings.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(out, "tessera_ledger_postings_total{{kind=\"{kind}\"}} {n}");
        }
        family(
            out,
            "tessera_pushes_total",
            "counter",
            "APNs pushes by this instance: sent, failed or retrying, by reason.",
        );
        for ((outcome, reason), n) in self.pushes.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(
                out,
                "tessera_pushes_total{{outcome=\"{outcome}\",reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        family(
            out,
            "tessera_google_sync_failures_total",
            "counter",
            "Failed Google Wallet writes by this instance: class, object or message, by reason.",
        );
        for ((what, reason), n) in self
            .google_failures
            .lock()
            .expect("metrics poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "tessera_google_sync_failures_total{{what=\"{what}\",reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        family(
            out,
            "tessera_audit_failures_total",
            "counter",
            "Audit log rows this instance could not write.",
        );
        let _ = writeln!(
            out,
            "tessera_audit_failures_total {}",
            self.audit_failures
                .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// `# HELP` and `# TYPE` of a family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::default();
        m.request("/a/{id}", "GET", 200, Duration::from_millis(3));
        m.request("/a/{id}", "GET", 200, Duration::from_millis(300));
        m.push("retrying", "429 \"TooMany\"");
        m.posting("earn");
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            r#"tessera_http_requests_total{route="/a/{id}",method="GET",status="200"} 2"#
        ));
        assert!(out.contains(
            r#"tessera_http_request_duration_seconds_bucket{route="/a/{id}",le="0.005"} 1"#
        ));
        assert!(out.contains(
            r#"tessera_http_request_duration_seconds_bucket{route="/a/{id}",le="+Inf"} 2"#
        ));
        assert!(
            out.contains(r#"tessera_pushes_total{outcome="retrying",reason="429 \"TooMany\""} 1"#)
        );
        assert!(out.contains(r#"tessera_ledger_postings_total{kind="earn"} 1"#));
    }
}
