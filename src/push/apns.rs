//! APNs for Wallet passes (`shared/spec/apple-wallet.md` §6): HTTP/2 over TLS to a configurable
//! base URL (production `https://api.push.apple.com`; the sandbox answers `BadDeviceToken` for
//! Wallet tokens), authenticated with the Pass Type ID certificate, `apns-topic` = the pass type
//! identifier, and a body of exactly `{}`. One client keeps one multiplexed connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::sign::Signer;

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
    /// Token auth: signs the provider token sent as `authorization: bearer`.
    token: Option<Arc<ProviderToken>>,
}

/// An APNs provider token (ES256 JWT) signed with a `.p8` key, re-signed before Apple's one-hour
/// limit and no more often than every 20 minutes (more makes APNs answer
/// `TooManyProviderTokenUpdates`).
pub struct ProviderToken {
    key: PKey<Private>,
    key_id: String,
    team_id: String,
    current: Mutex<Option<(i64, String)>>,
}

/// Re-sign after this many seconds: inside Apple's 60-minute validity, past its 20-minute floor.
const TOKEN_LIFETIME_SECS: i64 = 50 * 60;

impl ProviderToken {
    /// `p8_pem` is the `.p8` file Apple issues (a PKCS#8 P-256 key).
    pub fn new(p8_pem: &[u8], key_id: &str, team_id: &str) -> Result<ProviderToken, ApnsError> {
        let key = PKey::private_key_from_pem(p8_pem)?;
        Ok(ProviderToken {
            key,
            key_id: key_id.into(),
            team_id: team_id.into(),
            current: Mutex::new(None),
        })
    }

    /// The current token, signing a new one when it is due.
    pub fn bearer(&self) -> Result<String, ApnsError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut current = self.current.lock().expect("token lock poisoned");
        if let Some((issued, token)) = current.as_ref()
            && now - issued < TOKEN_LIFETIME_SECS
        {
            return Ok(token.clone());
        }
        let token = self.sign(now)?;
        *current = Some((now, token.clone()));
        Ok(token)
    }

    /// Forgets the current token, after APNs called it expired or invalid.
    pub fn reset(&self) {
        *self.current.lock().expect("token lock poisoned") = None;
    }

    fn sign(&self, issued_at: i64) -> Result<String, ApnsError> {
        let b64 = |bytes: &[u8]| data_encoding::BASE64URL_NOPAD.encode(bytes);
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id});
        let claims = serde_json::json!({"iss": self.team_id, "iat": issued_at});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(input.as_bytes())?;
        // OpenSSL gives a DER ECDSA signature; JWS wants r and s as 32 bytes each.
        let der = signer.sign_to_vec()?;
        let sig = EcdsaSig::from_der(&der)?;
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{input}.{}", b64(&raw)))
    }
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
        let identity = reqwest::Identity::from_pkcs12_der(&p12, "")?;
        Self::build(base_url, Some(identity), None, extra_root)
    }

    /// A client that authenticates with a provider token instead of a certificate. It works only
    /// for pass types of the key's own team (§6.1).
    pub fn with_token(
        base_url: &str,
        token: ProviderToken,
        extra_root: Option<&X509>,
    ) -> Result<ApnsClient, ApnsError> {
        Self::build(base_url, None, Some(Arc::new(token)), extra_root)
    }

    /// One HTTP/2 connection kept alive between bursts, as APNs asks of providers.
    fn build(
        base_url: &str,
        identity: Option<reqwest::Identity>,
        token: Option<Arc<ProviderToken>>,
        extra_root: Option<&X509>,
    ) -> Result<ApnsClient, ApnsError> {
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_while_idle(true)
            .timeout(Duration::from_secs(20))
            // A push is a few hundred bytes: send it now, not after the previous one's ACK.
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1);
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        if let Some(root) = extra_root {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_der(&root.to_der()?)?);
        }
        Ok(ApnsClient {
            http: builder.build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Sends the empty Wallet push to one device.
    pub async fn push(&self, topic: &str, device_token: &str) -> PushResult {
        let url = format!("{}/3/device/{device_token}", self.base_url);
        let mut request = self.http.post(url);
        if let Some(token) = &self.token {
            match token.bearer() {
                Ok(jwt) => request = request.header("authorization", format!("bearer {jwt}")),
                Err(e) => {
                    return PushResult::Rejected {
                        status: 0,
                        reason: format!("signing the provider token: {e}"),
                    };
                }
            }
        }
        let response = request
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
            // A stale or refused token: sign a fresh one and try again later.
            403 if self.token.is_some()
                && (reason == "ExpiredProviderToken" || reason == "InvalidProviderToken") =>
            {
                if let Some(t) = &self.token {
                    t.reset();
                }
                PushResult::Retry(format!("{status} {reason}"))
            }
            _ => PushResult::Rejected { status, reason },
        }
    }
}
