//! API keys: roles, hashed secrets, and the limits of cashier keys.

use std::str::FromStr;

use super::{Result, StorageError, Store, rows};
use crate::domain::now_ms;

/// API key roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Marketer,
    Cashier,
    Integration,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketer => "marketer",
            Role::Cashier => "cashier",
            Role::Integration => "integration",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "marketer" => Ok(Role::Marketer),
            "cashier" => Ok(Role::Cashier),
            "integration" => Ok(Role::Integration),
            other => Err(format!(
                "unknown role {other:?}; roles are admin, marketer, cashier, integration"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub revoked: bool,
    /// What the key may move with purchases and redemptions (cashier keys).
    pub limits: crate::ledger::PointLimits,
}

impl Store {
    pub async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        role: Role,
        secret_hash: &str,
        limits: crate::ledger::PointLimits,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at, max_points, max_points_per_day)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
            .bind(id)
            .bind(name)
            .bind(role.as_str())
            .bind(secret_hash)
            .bind(now_ms())
            .bind(limits.per_operation)
            .bind(limits.per_day)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::api_key).transpose()
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::api_key).collect()
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("active API key"));
        }
        Ok(())
    }
}
