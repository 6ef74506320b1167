//! Google's save and delete callbacks (`google-wallet.md` §6): ECv2SigningOnly verification
//! (a root key from the configured keys URL signs an intermediate key, which signs the
//! message), expiry checks, and the parsed event. Replays are refused by the caller, on the
//! nonce.

use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;
use serde::Deserialize;

const PROTOCOL: &str = "ECv2SigningOnly";
pub const KEYS_URL: &str = "https://pay.google.com/gp/m/issuer/keys";
pub const SENDER_ID: &str = "GooglePayPasses";
/// Root keys are fetched again after this long at most.
const KEYS_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    #[error("malformed callback: {0}")]
    Malformed(String),
    #[error("callback signature does not verify: {0}")]
    Signature(&'static str),
    #[error("callback expired: {0}")]
    Expired(&'static str),
    #[error("callback for another issuer")]
    WrongIssuer,
    #[error("Google's callback keys are unavailable: {0}")]
    Keys(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    signature: String,
    intermediate_signing_key: IntermediateKey,
    protocol_version: String,
    signed_message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntermediateKey {
    signed_key: String,
    signatures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedKey {
    key_value: String,
    key_expiration: String,
}

/// A verified event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub class_id: String,
    pub object_id: String,
    /// `save` or `del`.
    pub event_type: String,
    pub exp_time_millis: i64,
    pub nonce: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootKey {
    key_value: String,
    protocol_version: String,
    key_expiration: Option<String>,
}

#[derive(Deserialize)]
struct RootKeys {
    keys: Vec<RootKey>,
}

pub struct CallbackVerifier {
    keys_url: String,
    sender_id: String,
    issuer_id: String,
    http: reqwest::Client,
    roots: tokio::sync::Mutex<Option<(Vec<PKey<Public>>, Instant)>>,
}

/// `u32 little-endian length || bytes`, the scheme's length-value encoding.
fn lv(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend((p.len() as u32).to_le_bytes());
        out.extend(p.as_bytes());
    }
    out
}

fn b64(s: &str) -> Result<Vec<u8>, CallbackError> {
    data_encoding::BASE64
        .decode(s.as_bytes())
        .map_err(|_| CallbackError::Malformed("bad base64".into()))
}

fn public_key(b64_der: &str) -> Result<PKey<Public>, CallbackError> {
    PKey::public_key_from_der(&b64(b64_der)?)
        .map_err(|_| CallbackError::Malformed("a key is not a DER public key".into()))
}

/// ECDSA P-256 / SHA-256 over `data`, DER signature in base64.
fn verifies(key: &PKey<Public>, data: &[u8], signature_b64: &str) -> bool {
    let Ok(signature) = b64(signature_b64) else {
        return false;
    };
    Verifier::new(MessageDigest::sha256(), key)
        .and_then(|mut v| {
            v.update(data)?;
            v.verify(&signature)
        })
        .unwrap_or(false)
}

fn millis(s: &str) -> Result<i64, CallbackError> {
    s.parse()
        .map_err(|_| CallbackError::Malformed("an expiration is not a number".into()))
}

impl CallbackVerifier {
    pub fn new(keys_url: &str, sender_id: &str, issuer_id: &str) -> CallbackVerifier {
        CallbackVerifier {
            keys_url: keys_url.into(),
            sender_id: sender_id.into(),
            issuer_id: issuer_id.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client"),
            roots: tokio::sync::Mutex::new(None),
        }
    }

    /// Google's current ECv2SigningOnly root keys, cached until the earliest expires (at most a
    /// day).
    async fn roots(&self, now_ms: i64) -> Result<Vec<PKey<Public>>, CallbackError> {
        let mut cached = self.roots.lock().await;
        if let Some((keys, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(keys.clone());
        }
        let fetched: RootKeys = self
            .http
            .get(&self.keys_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| CallbackError::Keys(e.to_string()))?
            .json()
            .await
            .map_err(|e| CallbackError::Keys(e.to_string()))?;
        let mut keys = Vec::new();
        let mut ttl = KEYS_TTL;
        for k in fetched.keys {
            if k.protocol_version != PROTOCOL {
                continue;
            }
            let expires = k.key_expiration.as_deref().map(millis).transpose()?;
            if expires.is_some_and(|e| e <= now_ms) {
                continue;
            }
            if let Some(e) = expires {
                ttl = ttl.min(Duration::from_millis((e - now_ms) as u64));
            }
            keys.push(public_key(&k.key_value)?);
        }
        *cached = Some((keys.clone(), Instant::now() + ttl));
        Ok(keys)
    }

    /// Verifies a callback body and returns its event.
    pub async fn verify(&self, body: &[u8], now_ms: i64) -> Result<Event, CallbackError> {
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        if envelope.protocol_version != PROTOCOL {
            return Err(CallbackError::Malformed(format!(
                "protocolVersion must be {PROTOCOL}"
            )));
        }
        let intermediate = &envelope.intermediate_signing_key;
        let signed_key_data = lv(&[&self.sender_id, PROTOCOL, &intermediate.signed_key]);
        let roots = self.roots(now_ms).await?;
        let trusted = roots.iter().any(|root| {
            intermediate
                .signatures
                .iter()
                .any(|s| verifies(root, &signed_key_data, s))
        });
        if !trusted {
            return Err(CallbackError::Signature(
                "no root key signed the intermediate key",
            ));
        }
        let key: SignedKey = serde_json::from_str(&intermediate.signed_key)
            .map_err(|e| CallbackError::Malformed(e.to_string()))?;
        if millis(&key.key_expiration)? <= now_ms {
            return Err(CallbackError::Expired("the intermediate signing key"));
        }
        let message_data = lv(&[
            &self.sender_id,
            &self.issuer_id,
            PROTOCOL,
            &envelope.signed_message,
        ]);
        if !verifies(
            &public_key(&key.key_value)?,
            &message_data,
            &envelope.signature,
        ) {
            return Err(CallbackError::Signature("the message signature"));
        }
        let event: Event = serde_json::from_str(&envelope.signed_message)
            .map_err(|e| CallbackError::Malformed(e.to_string()))?;
        if event.exp_time_millis <= now_ms {
            return Err(CallbackError::Expired("the message"));
        }
        if event.class_id.split('.').next() != Some(self.issuer_id.as_str()) {
            return Err(CallbackError::WrongIssuer);
        }
        Ok(event)
    }
}

/// Builds signed callbacks the way Google does, for tests and the stand-in.
pub mod signing {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::sign::Signer;
    use serde_json::{Value, json};

    pub fn p256() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
        PKey::from_ec_key(EcKey::generate(&group).expect("an EC key")).expect("an EC key")
    }

    /// The base64 DER public key, as Google publishes it.
    pub fn public_b64(key: &PKey<Private>) -> String {
        data_encoding::BASE64.encode(&key.public_key_to_der().expect("DER"))
    }

    pub fn sign(key: &PKey<Private>, data: &[u8]) -> String {
        let mut s = Signer::new(MessageDigest::sha256(), key).expect("a signer");
        s.update(data).expect("signing");
        data_encoding::BASE64.encode(&s.sign_to_vec().expect("signing"))
    }

    /// A callback body: `message` signed by `intermediate` (valid until `key_expiration`),
    /// whose key is signed by `root`.
    pub fn callback(
        root: &PKey<Private>,
        intermediate: &PKey<Private>,
        key_expiration: i64,
        sender_id: &str,
        recipient_id: &str,
        message: &Value,
    ) -> Value {
        let signed_key = json!({"keyValue": public_b64(intermediate), "keyExpiration": key_expiration.to_string()}).to_string();
        let signed_message = message.to_string();
        let key_sig = sign(root, &super::lv(&[sender_id, super::PROTOCOL, &signed_key]));
        let msg_sig = sign(
            intermediate,
            &super::lv(&[sender_id, recipient_id, super::PROTOCOL, &signed_message]),
        );
        json!({
            "signature": msg_sig,
            "intermediateSigningKey": {"signedKey": signed_key, "signatures": [key_sig]},
            "protocolVersion": super::PROTOCOL,
            "signedMessage": signed_message,
        })
    }
}
