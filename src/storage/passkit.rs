//! Device registrations for the Apple PassKit web service.

use sqlx::Row;

use super::{Result, Store, rows};

/// A device registered for a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub device_library_identifier: String,
    pub push_token: String,
    pub created_at: i64,
    pub last_push_at: Option<i64>,
    /// `delivered`, `retry: ...` or `rejected: ...`.
    pub last_push_result: Option<String>,
}

impl Store {
    /// Upserts the device and its push token, then registers it for the pass. Returns `true`
    /// when the registration is new (201) and `false` when it existed (200).
    pub async fn register_device(
        &self,
        device: &str,
        push_token: &str,
        serial: &str,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO devices (device_library_identifier, push_token, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (device_library_identifier) DO UPDATE SET push_token = excluded.push_token, updated_at = excluded.updated_at",
        )
        .bind(device)
        .bind(push_token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO registrations (device_library_identifier, serial_number, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (device_library_identifier, serial_number) DO NOTHING",
        )
        .bind(device)
        .bind(serial)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Removes a registration, and the device once it holds no registrations [UPD].
    pub async fn unregister_device(&self, device: &str, serial: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "DELETE FROM registrations WHERE device_library_identifier = $1 AND serial_number = $2",
        )
        .bind(device)
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM devices WHERE device_library_identifier = $1
             AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_library_identifier = $1)",
        )
        .bind(device)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Serials of the passes of one type the device is registered for, with their change times,
    /// changed after `since` when given.
    pub async fn updated_serials(
        &self,
        device: &str,
        pass_type_identifier: &str,
        since: Option<i64>,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT p.serial_number, p.updated_at FROM registrations r
             JOIN passes p ON p.serial_number = r.serial_number
             WHERE r.device_library_identifier = $1 AND p.pass_type_identifier = $2 AND p.updated_at > $3
             ORDER BY p.updated_at, p.serial_number",
        )
        .bind(device)
        .bind(pass_type_identifier)
        .bind(since.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("serial_number")?, rows::int(r, "updated_at")?)))
            .collect()
    }

    /// Notes that Wallet downloaded the pass.
    pub async fn mark_fetched(&self, serial: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE passes SET last_fetched_at = $2 WHERE serial_number = $1")
            .bind(serial)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The devices registered for a pass, for push fan-out and the admin view.
    pub async fn registrations(&self, serial: &str) -> Result<Vec<Registration>> {
        let rows = sqlx::query(
            "SELECT d.device_library_identifier, d.push_token, r.created_at, r.last_push_at, r.last_push_result FROM registrations r
             JOIN devices d ON d.device_library_identifier = r.device_library_identifier
             WHERE r.serial_number = $1 ORDER BY r.created_at, d.device_library_identifier",
        )
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Registration {
                    device_library_identifier: r.try_get("device_library_identifier")?,
                    push_token: r.try_get("push_token")?,
                    created_at: r.try_get("created_at")?,
                    last_push_at: r.try_get("last_push_at")?,
                    last_push_result: r.try_get("last_push_result")?,
                })
            })
            .collect()
    }
}

/// An outbox row due for delivery, with its retry count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueChange {
    pub id: String,
    pub member_id: Option<String>,
    pub attempts: i64,
}

impl Store {
    /// Outbox rows due by `now`, oldest first.
    pub async fn due_outbox(&self, now: i64, limit: i64) -> Result<Vec<DueChange>> {
        let rows = sqlx::query(
            "SELECT id, member_id, attempts FROM outbox WHERE processed_at IS NULL AND available_at <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueChange {
                    id: r.try_get("id")?,
                    member_id: r.try_get("member_id")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Forgets delivered outbox rows.
    pub async fn finish_outbox(&self, ids: &[String]) -> Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Schedules outbox rows again at `available_at` after a failed delivery.
    pub async fn retry_outbox(&self, ids: &[String], available_at: i64, error: &str) -> Result<()> {
        for id in ids {
            sqlx::query("UPDATE outbox SET attempts = attempts + 1, available_at = $2, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(available_at)
                .bind(error)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Records the outcome of the last push to a device for a pass.
    pub async fn record_push(
        &self,
        device: &str,
        serial: &str,
        result: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE registrations SET last_push_at = $3, last_push_result = $4
             WHERE device_library_identifier = $1 AND serial_number = $2",
        )
        .bind(device)
        .bind(serial)
        .bind(now)
        .bind(result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
