//! Staff accounts and their web sessions.

use sqlx::Row;

use super::{Result, Role, StorageError, Store, new_id};

/// A staff account; the password hash never leaves the storage and staff layers.
#[derive(Debug, Clone)]
pub struct StaffUser {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    /// Cashier limits on the scan page: points one operation, and one UTC day, may move.
    pub max_points_per_operation: Option<i64>,
    pub max_points_per_day: Option<i64>,
}

/// A live session: who it belongs to and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct StaffSession {
    pub user: StaffUser,
    pub csrf_token: String,
    pub expires_at: i64,
}

fn user(r: &sqlx::any::AnyRow) -> Result<StaffUser> {
    let role: String = r.try_get("role")?;
    Ok(StaffUser {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        role: role.parse().map_err(StorageError::Corrupt)?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
        disabled_at: r.try_get("disabled_at")?,
        max_points_per_operation: r.try_get("max_points_per_operation")?,
        max_points_per_day: r.try_get("max_points_per_day")?,
    })
}

impl Store {
    /// Adds a staff account; the e-mail address is stored lower-cased and must be new.
    pub async fn insert_staff_user(
        &self,
        email: &str,
        role: Role,
        password_hash: &str,
        now: i64,
    ) -> Result<StaffUser> {
        let email = email.trim().to_lowercase();
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO staff_users (id, email, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&id)
        .bind(&email)
        .bind(role.as_str())
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StorageError::Conflict(format!(
                "a staff account for {email} already exists"
            )));
        }
        Ok(StaffUser {
            id,
            email,
            role,
            password_hash: password_hash.into(),
            created_at: now,
            disabled_at: None,
            max_points_per_operation: None,
            max_points_per_day: None,
        })
    }

    /// Sets a staff account's cashier limits (`None`: no limit).
    pub async fn set_staff_limits(
        &self,
        user_id: &str,
        per_operation: Option<i64>,
        per_day: Option<i64>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE staff_users SET max_points_per_operation = $2, max_points_per_day = $3 WHERE id = $1",
        )
        .bind(user_id)
        .bind(per_operation)
        .bind(per_day)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("staff account"));
        }
        Ok(())
    }

    /// The enabled account signing in as `email` (any case).
    pub async fn staff_user_by_email(&self, email: &str) -> Result<Option<StaffUser>> {
        let row = sqlx::query("SELECT * FROM staff_users WHERE email = $1 AND disabled_at IS NULL")
            .bind(email.trim().to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user).transpose()
    }

    pub async fn insert_staff_session(
        &self,
        token_hash: &str,
        user_id: &str,
        csrf_token: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        // Expired sessions go as new ones come: no separate sweeper.
        sqlx::query("DELETE FROM staff_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO staff_sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unexpired session with this token hash, if its account is still enabled.
    pub async fn staff_session(&self, token_hash: &str, now: i64) -> Result<Option<StaffSession>> {
        let row = sqlx::query(
            "SELECT u.*, s.csrf_token, s.expires_at FROM staff_sessions s
             JOIN staff_users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| {
                Ok(StaffSession {
                    user: user(r)?,
                    csrf_token: r.try_get("csrf_token")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .transpose()
    }

    pub async fn delete_staff_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM staff_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
