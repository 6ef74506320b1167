//! Webhook deliveries: the signature, the endpoint checks and the worker.
//!
//! Each delivery is a `POST` of the event's JSON (the feed's `EventView`) with
//! `Tessera-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">` under the endpoint's
//! secret, `Tessera-Event-Id` (the same on every attempt, for deduplication) and
//! `Tessera-Event-Type`. A 2xx settles it; anything else (or no answer within
//! `events.delivery_timeout_ms`) is retried with exponential backoff and jitter for
//! `events.retry_hours`, then given up. An endpoint that failed every delivery for
//! `events.disable_after_hours` is disabled.
//!
//! The worker runs on every instance: the fan-out step (events → delivery rows) under the
//! `webhooks` job lease, the deliveries as rows claimed for this instance (`storage::webhooks`),
//! so each event reaches each endpoint once in the normal case and at least once across
//! crashes (a claim whose instance died is taken over when its lease runs out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::config::EventsConfig;
use crate::domain::now_ms;
use crate::storage::Store;
use crate::storage::webhooks::{Attempt, DueDelivery};
use crate::supervisor::Beat;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Tessera-Signature";
/// The event id header (deduplication).
pub const EVENT_ID_HEADER: &str = "Tessera-Event-Id";
/// The event type header.
pub const EVENT_TYPE_HEADER: &str = "Tessera-Event-Type";
/// How old a signature's timestamp may be before a receiver should refuse it (5 minutes).
pub const TOLERANCE_SECONDS: i64 = 300;
/// A new endpoint's secret: `whsec_` and 256 random bits.
pub fn new_secret() -> String {
    format!("whsec_{}", crate::secret::random_token(32))
}

/// The hex HMAC-SHA256 of `"t.body"` under `secret`.
pub fn mac(secret: &str, t: i64, body: &[u8]) -> String {
    let key = PKey::hmac(secret.as_bytes()).expect("an HMAC key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("an HMAC signer");
    signer
        .update(format!("{t}.").as_bytes())
        .expect("hashing in memory");
    signer.update(body).expect("hashing in memory");
    data_encoding::HEXLOWER.encode(&signer.sign_to_vec().expect("signing in memory"))
}

/// The `Tessera-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac(secret, t, body))
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is too old or in the future")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// What a receiver does: checks `header` over `body` with `secret`, refusing a timestamp more
/// than `tolerance` seconds from `now` (unix seconds). Compares in constant time.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - t).abs() > tolerance {
        return Err(VerifyError::Stale);
    }
    let want = mac(secret, t, body);
    if sigs
        .iter()
        .any(|s| s.len() == want.len() && openssl::memcmp::eq(s.as_bytes(), want.as_bytes()))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Checks a receiver URL: absolute `http` or `https` with a host, no credentials, at most
/// 2,000 characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2000 {
        return Err("url must be at most 2000 characters".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url must name a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials; the signature authenticates us".into());
    }
    Ok(())
}

/// The wait before attempt `attempts + 1`: 1 s doubling, at most an hour, plus up to 50%
/// jitter.
pub fn backoff_ms(attempts: i64) -> i64 {
    let exp = 1_000u64
        .saturating_mul(1u64 << attempts.clamp(0, 20))
        .min(3_600_000);
    let mut byte = [0u8; 2];
    openssl::rand::rand_bytes(&mut byte).expect("CSPRNG");
    let jitter = exp / 2 * u16::from_le_bytes(byte) as u64 / u16::MAX as u64;
    (exp + jitter) as i64
}

/// What one `POST` to a receiver gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends deliveries.
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    client: reqwest::Client,
    config: Arc<EventsConfig>,
}

/// Deliveries claimed per round.
const BATCH: i64 = 64;

impl Deliverer {
    pub fn new(store: Store, config: &EventsConfig) -> anyhow::Result<Deliverer> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.delivery_timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(config.delivery_timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tessera-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliverer {
            store,
            client,
            config: Arc::new(config.clone()),
        })
    }

    /// One signed `POST` of `body`.
    pub async fn send(
        &self,
        url: &str,
        secret: &str,
        event_id: &str,
        kind: &str,
        body: Vec<u8>,
    ) -> Sent {
        let t = now_ms() / 1000;
        let started = Instant::now();
        let result = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, t, &body))
            .header(EVENT_ID_HEADER, event_id)
            .header(EVENT_TYPE_HEADER, kind)
            .body(body)
            .send()
            .await;
        let latency_ms = started.elapsed().as_millis() as i64;
        match result {
            Ok(r) => Sent {
                status: Some(r.status().as_u16()),
                error: (!r.status().is_success()).then(|| format!("HTTP {}", r.status())),
                latency_ms,
            },
            // reqwest's error names the URL, which is the integrator's own: no member data.
            Err(e) => Sent {
                status: None,
                error: Some(if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    "could not connect".to_string()
                } else {
                    "request failed".to_string()
                }),
                latency_ms,
            },
        }
    }

    /// A signed `ping` to an endpoint, now; not recorded as a delivery.
    pub async fn ping(&self, webhook_id: &str) -> crate::storage::Result<Sent> {
        let hook = self.store.get_webhook(webhook_id).await?;
        let secret = self.store.webhook_secret(webhook_id).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let body = serde_json::json!({"id": id, "type": "ping", "version": 1, "created_at": now_ms(), "payload": {"webhook_id": webhook_id}});
        Ok(self
            .send(
                &hook.url,
                &secret,
                &id,
                "ping",
                body.to_string().into_bytes(),
            )
            .await)
    }

    /// One round: fan events out (under the `webhooks` lease) and send the due deliveries.
    /// Returns how many deliveries it attempted.
    pub async fn round(&self) -> crate::storage::Result<usize> {
        let now = now_ms();
        if self.store.claim_job("webhooks", now).await? {
            while self.store.fan_out_events(now, 500).await? == 500 {}
        }
        let due = self.store.due_deliveries(now_ms(), BATCH).await?;
        let n = due.len();
        let mut sends = tokio::task::JoinSet::new();
        for d in due {
            let me = self.clone();
            sends.spawn(async move { me.deliver(d).await });
        }
        let mut failed = None;
        while let Some(done) = sends.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(e) => tracing::warn!(error = %e, "a webhook delivery task failed"),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    async fn deliver(&self, d: DueDelivery) -> crate::storage::Result<()> {
        let now = now_ms();
        let retry_until = d.created_at + i64::from(self.config.retry_hours) * 3_600_000;
        let disable_before = now - i64::from(self.config.disable_after_hours) * 3_600_000;
        let Some(event) = &d.event else {
            // Past the events' retention: nothing left to send.
            let gone = Attempt {
                at: now,
                status: None,
                error: Some("the event is no longer kept".into()),
                latency_ms: 0,
                ok: false,
                retry_at: None,
                disable_failing_before: i64::MIN,
            };
            return self.store.settle_delivery(&d, &gone).await;
        };
        let body = serde_json::to_vec(&crate::api::events::EventView::from(event))
            .expect("an event serialises");
        let sent = self
            .send(&d.url, &d.secret, &event.id, &event.kind, body)
            .await;
        let at = now_ms();
        let retry = at + backoff_ms(d.attempts);
        let attempt = Attempt {
            at,
            status: sent.status.map(i64::from),
            ok: sent.ok(),
            error: sent.error,
            latency_ms: sent.latency_ms,
            retry_at: (retry <= retry_until).then_some(retry),
            disable_failing_before: disable_before,
        };
        if !attempt.ok {
            tracing::info!(webhook = %d.webhook_id, delivery = %d.id, attempts = d.attempts + 1,
                status = ?attempt.status, error = ?attempt.error, "a webhook delivery failed");
        }
        self.store.settle_delivery(&d, &attempt).await
    }

    /// Runs rounds until aborted: at once after a full batch, else every `events.poll_ms`.
    pub async fn run(&self, beat: Beat) {
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        loop {
            match self.round().await {
                Ok(n) => {
                    beat.ok();
                    if n as i64 == BATCH {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a webhook round failed; retrying"),
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let body = br#"{"id":"e1"}"#;
        let h = signature("whsec_a", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(verify("whsec_a", &h, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify("whsec_b", &h, body, 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", &h, b"{}", 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify("whsec_a", &h, body, 1_700_000_400, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify("whsec_a", "v1=00", body, 1_700_000_000, 300),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(key "k", "1.b"), as `printf 1.b | openssl dgst -sha256 -hmac k`.
        assert_eq!(
            mac("k", 1, b"b"),
            "2946e37a45bb02a0bf1bf1a7d9219543801fedd301f9f485aebd72c928639bea"
        );
    }

    #[test]
    fn receiver_urls_are_http_or_https() {
        assert!(check_url("https://crm.example/hooks/tessera").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        for bad in [
            "ftp://crm.example/",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "crm.example/hook",
            "https://user:pw@crm.example/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for a in 0..30 {
            let b = backoff_ms(a);
            let exp = (1_000i64 << a.min(20)).min(3_600_000);
            assert!(b >= exp && b <= exp + exp / 2, "{a}: {b}");
        }
    }
}
