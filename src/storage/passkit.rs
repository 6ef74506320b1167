//! Device registrations for the Apple PassKit web service.

use sqlx::Row;

use super::{Result, Store, rows};

/// A device registered for a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub device_library_identifier: String,
    pub push_token: String,
    pub created_at: i64,
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
            "SELECT d.device_library_identifier, d.push_token, r.created_at FROM registrations r
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
                })
            })
            .collect()
    }
}
