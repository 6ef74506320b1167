//! The Wallet REST API (`google-wallet.md` §3): classes and objects, with Google's error
//! envelope mapped to what the caller should do about it (§7).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::auth::TokenProvider;

pub const API_BASE: &str = "https://walletobjects.googleapis.com/walletobjects/v1";

#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("Google Wallet configuration: {0}")]
    Config(String),
    /// 429, 5xx or no answer: try again later.
    #[error("Google Wallet is unavailable: {0}")]
    Retry(String),
    /// More than three notifications for one card in 24 hours.
    #[error("Google Wallet's notification quota for this card is spent")]
    Quota,
    /// Anything else Google refused; retrying the same request will not help.
    #[error("Google Wallet refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl GoogleError {
    /// A short label for metrics, from a bounded set: the HTTP status, `quota`, `config` or
    /// `unavailable` (no answer).
    pub fn label(&self) -> String {
        match self {
            GoogleError::Config(_) => "config".into(),
            GoogleError::Quota => "quota".into(),
            GoogleError::Rejected { status, .. } => status.to_string(),
            GoogleError::Retry(text) => match text.split(' ').next() {
                Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
                    code.into()
                }
                _ => "unavailable".into(),
            },
        }
    }

    /// The HTTP status when Google refused the request (0: our configuration), `None` for an
    /// outage or the quota, which pass by waiting.
    pub fn refused(&self) -> Option<u16> {
        match self {
            GoogleError::Config(_) => Some(0),
            GoogleError::Rejected { status, .. } => Some(*status),
            GoogleError::Retry(_) | GoogleError::Quota => None,
        }
    }
}

pub struct WalletClient {
    http: reqwest::Client,
    base: String,
    tokens: TokenProvider,
    /// Google allows 20 requests per second: each call waits for its slot.
    gap: Duration,
    next_slot: tokio::sync::Mutex<tokio::time::Instant>,
}

impl WalletClient {
    pub fn new(base: &str, tokens: TokenProvider, requests_per_second: u32) -> WalletClient {
        WalletClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a plain HTTP client"),
            base: base.trim_end_matches('/').to_string(),
            tokens,
            gap: Duration::from_secs(1) / requests_per_second.max(1),
            next_slot: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait_for_slot(&self) {
        let at = {
            let mut next = self.next_slot.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// One call with the current access token; a 401 drops the token and retries once.
    /// Returns the status and the JSON body for 2xx and for 404/409, which callers act on.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), GoogleError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let token = self.tokens.token().await?;
            self.wait_for_slot().await;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token);
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = request
                .send()
                .await
                .map_err(|e| GoogleError::Retry(format!("{method} {path}: {e}")))?;
            let status = response.status().as_u16();
            let json: Value = response.json().await.unwrap_or(Value::Null);
            if status == 401 && attempt == 0 {
                self.tokens.invalidate(&token).await;
                continue;
            }
            return classify(status, json);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Inserts a resource, or replaces it when it exists (409): `kind` is `loyaltyClass` or
    /// `loyaltyObject`. The body is the whole resource, so nothing is left over from before.
    pub async fn upsert(&self, kind: &str, resource: &Value) -> Result<Value, GoogleError> {
        let (status, json) = self
            .call(Method::POST, &format!("/{kind}"), Some(resource))
            .await?;
        if status != 409 {
            return expect_ok(status, json);
        }
        let id = resource["id"].as_str().unwrap_or_default();
        let (status, json) = self
            .call(Method::PUT, &format!("/{kind}/{id}"), Some(resource))
            .await?;
        expect_ok(status, json)
    }

    /// Merges `changes` into object `id` (PATCH): 404 means it was never inserted.
    pub async fn patch(
        &self,
        kind: &str,
        id: &str,
        changes: &Value,
    ) -> Result<(u16, Value), GoogleError> {
        self.call(Method::PATCH, &format!("/{kind}/{id}"), Some(changes))
            .await
    }
}

fn expect_ok(status: u16, json: Value) -> Result<Value, GoogleError> {
    if (200..300).contains(&status) {
        Ok(json)
    } else {
        Err(GoogleError::Rejected {
            status,
            message: message(&json),
        })
    }
}

fn message(json: &Value) -> String {
    json["error"]["message"]
        .as_str()
        .unwrap_or("no error message")
        .to_string()
}

/// Maps a status and Google's error envelope to what to do (§7).
fn classify(status: u16, json: Value) -> Result<(u16, Value), GoogleError> {
    let text = message(&json).to_ascii_lowercase();
    match status {
        200..=299 | 404 | 409 => Ok((status, json)),
        429 | 403 if text.contains("quota") => Err(GoogleError::Quota),
        429 | 500..=599 => Err(GoogleError::Retry(format!("{status} {text}"))),
        _ => Err(GoogleError::Rejected {
            status,
            message: message(&json),
        }),
    }
}
