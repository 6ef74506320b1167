//! API keys: `tsk_<id>_<secret>`. Only a SHA-256 of the secret is stored (the secret is 256
//! random bits, so a slow hash adds nothing); it is compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::AppState;
use crate::ledger::PointLimits;
use crate::secret::{constant_time_eq, random_token, token_hash as hash_secret};
use crate::storage::{Role, StorageError, Store};

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// What the key may move with purchases and redemptions, checked in the ledger's
    /// transaction.
    pub limits: PointLimits,
}

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "a {} key cannot do this; it needs a key with role {}",
                self.role.as_str(),
                allowed.join(" or ")
            )))
        }
    }
}

/// Creates a key and returns `(id, the full key to show once)`. `limits` bound what a cashier
/// key may move in one operation and in a UTC day.
pub async fn create_key(
    store: &Store,
    name: &str,
    role: Role,
    limits: PointLimits,
) -> Result<(String, String), StorageError> {
    let id = random_token(8);
    let secret = random_token(32);
    store
        .insert_api_key(&id, name, role, &hash_secret(&secret), limits)
        .await?;
    Ok((id.clone(), format!("tsk_{id}_{secret}")))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing API key: send Authorization: Bearer <key>")
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <key>"))?;
        let invalid = || ApiError::unauthorized("invalid or revoked API key");
        let (id, secret) = key
            .strip_prefix("tsk_")
            .and_then(|k| k.split_once('_'))
            .ok_or_else(invalid)?;
        let record = state.store.get_api_key(id).await?.ok_or_else(invalid)?;
        if record.revoked
            || !constant_time_eq(
                record.secret_hash.as_bytes(),
                hash_secret(secret).as_bytes(),
            )
        {
            return Err(invalid());
        }
        crate::web::audit::note_actor(
            parts,
            crate::web::audit::AuditActor {
                kind: "api_key",
                id: record.id.clone(),
                label: record.name.clone(),
            },
        );
        Ok(Caller {
            key_id: record.id,
            role: record.role,
            limits: record.limits,
        })
    }
}
