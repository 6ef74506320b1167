//! Google Wallet loyalty cards (`shared/spec/google-wallet.md`): a LoyaltyClass per template, a
//! LoyaltyObject per member, kept current by the sync worker; skinny save links.
//!
//! Off unless `[google]` names an issuer id and a service-account key. Every Google URL is
//! configuration, so tests run `standin` instead of Google.

pub mod auth;
pub mod callback;
pub mod client;
pub mod jwt;
pub mod model;
#[cfg(feature = "test-support")]
pub mod standin;
pub mod sync;

use std::sync::Arc;

use anyhow::Context;

pub use auth::{Credentials, TokenProvider};
pub use client::{GoogleError, WalletClient};

use crate::config::GoogleConfig;

/// The Google side of the app, present when configured.
pub struct Google {
    pub config: GoogleConfig,
    pub issuer_id: String,
    pub credentials: Arc<Credentials>,
    pub client: WalletClient,
    pub callbacks: callback::CallbackVerifier,
}

impl Google {
    pub fn from_config(config: &GoogleConfig) -> anyhow::Result<Option<Google>> {
        let (Some(issuer), Some(key)) = (&config.issuer_id, &config.service_account_key) else {
            return Ok(None);
        };
        anyhow::ensure!(
            !issuer.is_empty() && issuer.bytes().all(|b| b.is_ascii_digit()),
            "google.issuer_id must be the numeric issuer id from the Google Pay & Wallet Console"
        );
        let json = std::fs::read(key)
            .with_context(|| format!("reading the Google service-account key {}", key.display()))?;
        let credentials = Arc::new(Credentials::from_json(&json, config.token_uri.as_deref())?);
        let tokens = TokenProvider::new(credentials.clone());
        Ok(Some(Google {
            client: WalletClient::new(&config.api_base, tokens, config.requests_per_second),
            callbacks: callback::CallbackVerifier::new(
                &config.callback_keys_url,
                &config.callback_sender_id,
                issuer,
            ),
            issuer_id: issuer.clone(),
            credentials,
            config: config.clone(),
        }))
    }

    /// `<issuer>.<suffix>`, with characters Google refuses replaced by `_` [§3.2].
    pub fn resource_id(&self, suffix: &str) -> String {
        let clean: String = suffix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}.{clean}", self.issuer_id)
    }

    pub fn class_id(&self, template_id: &str) -> String {
        self.resource_id(&format!("tessera-t-{template_id}"))
    }

    pub fn object_id(&self, member_id: &str) -> String {
        self.resource_id(&format!("tessera-m-{member_id}"))
    }

    /// The "Add to Google Wallet" link for an object already inserted: a skinny `savetowallet`
    /// JWT carrying only ids, so it stays short and never tries to create what exists [§4].
    pub fn save_url(&self, class_id: &str, object_id: &str) -> Result<String, GoogleError> {
        let claims = serde_json::json!({
            "iss": self.credentials.client_email,
            "aud": "google",
            "typ": "savetowallet",
            "iat": time::OffsetDateTime::now_utc().unix_timestamp(),
            "origins": self.config.origins,
            "payload": {"loyaltyObjects": [{"id": object_id, "classId": class_id}]},
        });
        let token = self.credentials.sign(&claims)?;
        Ok(format!("{}{token}", self.config.save_url_base))
    }
}
