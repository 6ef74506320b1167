//! APNs for Wallet passes (`shared/spec/apple-wallet.md` §6): HTTP/2 over TLS to a configurable
//! base URL (production `https://api.push.apple.com`; the sandbox answers `BadDeviceToken` for
//! Wallet tokens), authenticated with the Pass Type ID certificate, `apns-topic` = the pass type
//! identifier, and a body of exactly `{}`. One client keeps one multiplexed connection.

use std::time::Duration;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Deserialize;

/// Apple's production endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";

/// What a push came to, and what to do about it (§6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// 200: APNs accepted it.
    Delivered,
    /// 410, or 400 `BadDeviceToken`/`DeviceTokenNotForTopic`: delete the registration.
    TokenGone(String),
    /// 429, 5xx, or no answer: try again later, with backoff.
    Retry(String),
    /// Any other refusal (`BadTopic`, 403 certificate problems, ...): a configuration problem;
    /// retrying will not help.
    Rejected { status: u16, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("APNs client identity: {0}")]
    Identity(#[from] openssl::error::ErrorStack),
    #[error("APNs client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

#[derive(Clone)]
pub struct ApnsClient {
    http: reqwest::Client,
    base_url: String,
}

impl ApnsClient {
    /// A client that authenticates with `certificate` and `key` (the Pass Type ID identity) and
    /// trusts the system roots plus `extra_root` (a local stand-in's CA in tests).
    pub fn with_certificate(
        base_url: &str,
        certificate: &X509,
        key: &PKey<Private>,
        extra_root: Option<&X509>,
    ) -> Result<ApnsClient, ApnsError> {
        // reqwest's native-tls identity takes PKCS#12; build one in memory from the PEM parts.
        let p12 = Pkcs12::builder()
            .name("tessera-apns")
            .pkey(key)
            .cert(certificate)
            .build2("")?
            .to_der()?;
        let mut builder = reqwest::Client::builder()
            .identity(reqwest::Identity::from_pkcs12_der(&p12, "")?)
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_while_idle(true)
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(1);
        if let Some(root) = extra_root {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_der(&root.to_der()?)?);
        }
        Ok(ApnsClient {
            http: builder.build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// Sends the empty Wallet push to one device.
    pub async fn push(&self, topic: &str, device_token: &str) -> PushResult {
        let url = format!("{}/3/device/{device_token}", self.base_url);
        let response = self
            .http
            .post(url)
            .header("apns-topic", topic)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return PushResult::Retry(format!("no answer from APNs: {e}")),
        };
        let status = response.status().as_u16();
        if status == 200 {
            return PushResult::Delivered;
        }
        let reason = response
            .json::<ErrorBody>()
            .await
            .ok()
            .and_then(|b| b.reason)
            .unwrap_or_default();
        match status {
            // Key on the status, not the reason string: 410 covers Unregistered and ExpiredToken.
            410 => PushResult::TokenGone(reason),
            400 if reason == "BadDeviceToken" || reason == "DeviceTokenNotForTopic" => {
                PushResult::TokenGone(reason)
            }
            429 | 500..=599 => PushResult::Retry(format!("{status} {reason}")),
            _ => PushResult::Rejected { status, reason },
        }
    }
}
