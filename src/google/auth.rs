//! Service-account credentials and OAuth2 access tokens through the JWT-bearer grant
//! (RFC 7523, `google-wallet.md` §2): cached, refreshed once for all waiting callers a minute
//! before expiry, and dropped when the API answers 401.

use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::GoogleError;
use super::jwt;

pub const SCOPE: &str = "https://www.googleapis.com/auth/wallet_object.issuer";
pub const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Refresh this long before Google's expiry.
const MARGIN: Duration = Duration::from_secs(60);

/// The parts of a service account's JSON key file that are used.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    private_key_id: String,
    token_uri: Option<String>,
}

pub struct Credentials {
    pub client_email: String,
    pub key_id: String,
    pub token_uri: String,
    key: PKey<Private>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_email", &self.client_email)
            .field("key_id", &self.key_id)
            .field("token_uri", &self.token_uri)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads a service-account JSON key; `token_uri` overrides the key's own (tests).
    pub fn from_json(json: &[u8], token_uri: Option<&str>) -> Result<Credentials, GoogleError> {
        let file: KeyFile = serde_json::from_slice(json).map_err(|e| {
            GoogleError::Config(format!(
                "the service-account key must be Google's JSON key file ({e})"
            ))
        })?;
        let key = PKey::private_key_from_pem(file.private_key.as_bytes()).map_err(|_| {
            GoogleError::Config("the service-account key's private_key is not a PEM key".into())
        })?;
        Ok(Credentials {
            client_email: file.client_email,
            key_id: file.private_key_id,
            token_uri: token_uri
                .map(String::from)
                .or(file.token_uri)
                .unwrap_or_else(|| TOKEN_URI.into()),
            key,
        })
    }

    /// Signs `claims` as an RS256 JWT with the service account's key and key id.
    pub fn sign(&self, claims: &Value) -> Result<String, GoogleError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        jwt::sign_rs256(&self.key, &header, claims)
            .map_err(|e| GoogleError::Config(format!("signing with the service-account key: {e}")))
    }

    /// The grant's assertion: `aud` is the token URI, valid for an hour, no `sub`.
    fn assertion(&self) -> Result<String, GoogleError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.sign(&json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        }))
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// Access tokens for one service account. The lock is held across a refresh, so callers that
/// arrive meanwhile wait for that one refresh instead of starting their own.
pub struct TokenProvider {
    credentials: std::sync::Arc<Credentials>,
    http: reqwest::Client,
    current: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenProvider {
    pub fn new(credentials: std::sync::Arc<Credentials>) -> TokenProvider {
        TokenProvider {
            credentials,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a plain HTTP client"),
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn token(&self) -> Result<String, GoogleError> {
        let mut current = self.current.lock().await;
        if let Some((token, until)) = current.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &self.credentials.assertion()?),
        ];
        let response = self
            .http
            .post(&self.credentials.token_uri)
            .form(&form)
            .send()
            .await
            .map_err(|e| GoogleError::Retry(format!("token endpoint unreachable: {e}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(if status == 429 || status >= 500 {
                GoogleError::Retry(format!("token endpoint answered {status}"))
            } else {
                // invalid_grant: a wrong key, clock skew, or a disabled account.
                GoogleError::Rejected {
                    status,
                    message: format!("the token endpoint refused the service account: {body}"),
                }
            });
        }
        let t: TokenResponse = response
            .json()
            .await
            .map_err(|e| GoogleError::Retry(format!("token endpoint answer: {e}")))?;
        let until = Instant::now() + Duration::from_secs(t.expires_in).saturating_sub(MARGIN);
        *current = Some((t.access_token.clone(), until));
        Ok(t.access_token)
    }

    /// Drops `token` after the API refused it, unless a newer one replaced it already.
    pub async fn invalidate(&self, token: &str) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(t, _)| t == token) {
            *current = None;
        }
    }
}
