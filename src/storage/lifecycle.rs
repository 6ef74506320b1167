//! A card's lifecycle: ending it (the pass voided) and reissuing it under a new serial, and the
//! sweep that drops registrations of ended passes once their devices have the voided pass.
//!
//! Both changes go through `changes::cards_changed` in their own transaction, before the pass is
//! marked ended: the ended pass moves to a new version (so `GET pass` serves it voided), one
//! outbox row pushes its devices (the dispatcher pushes an ended pass's devices for changes up to
//! its end), and Google is queued (the object goes inactive). The ledger is not touched.

use sqlx::Row;

use super::changes::{CARD_ENDED, CARD_REISSUED};
use super::members::{insert_pass, new_pass};
use super::{Result, StorageError, Store, rows};
use crate::domain::Pass;
use crate::secret::random_barcode;

impl Store {
    /// Ends the member's card. Returns the ended pass and whether this call ended it (`false`:
    /// it had ended already, and nothing was written).
    pub async fn end_card(&self, member_id: &str, now: i64) -> Result<(Pass, bool)> {
        let (_turn, mut tx) = self.write_tx().await?;
        self.lock_for_lifecycle(&mut tx, member_id).await?;
        let ended =
            sqlx::query("SELECT 1 AS one FROM passes WHERE member_id = $1 AND ended_at IS NULL")
                .bind(member_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if ended {
            let payload = serde_json::json!({"ended_at": now}).to_string();
            self.cards_changed(&mut tx, &[member_id.to_string()], CARD_ENDED, &payload, now)
                .await?;
            sqlx::query(
                "UPDATE passes SET ended_at = $1 WHERE member_id = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(member_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if ended {
            self.forget(super::cache::Stale::Members(vec![member_id.to_string()]));
            self.committed();
        }
        Ok((self.pass_for_member(member_id).await?, ended))
    }

    /// Reissues the member's card for a lost or shared one: the live pass (if any) is ended as
    /// by `end_card`, the member gets a new barcode, and a new pass (new serial, PassKit token
    /// and download token) on the same template. Returns the new pass and the ended serial.
    /// With an idempotency key `(api key id, key)`, a retry returns the pass the first request
    /// made (and `None`) instead of reissuing again.
    pub async fn reissue_card(
        &self,
        member_id: &str,
        now: i64,
        idempotency: Option<(&str, &str)>,
    ) -> Result<(Pass, Option<String>)> {
        let (_turn, mut tx) = self.write_tx().await?;
        if self.lock_for_lifecycle(&mut tx, member_id).await?.is_some() {
            return Err(StorageError::Conflict(
                "this member was erased; an erased member gets no card".into(),
            ));
        }
        let request = format!("reissue:{member_id}");
        if let Some((api_key, key)) = idempotency {
            let done = sqlx::query(
                "SELECT request_hash, response FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
            )
            .bind(api_key)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(done) = done {
                if done.try_get::<String, _>("request_hash")? != request {
                    return Err(StorageError::IdempotencyMismatch);
                }
                let serial: String = done.try_get("response")?;
                drop(tx);
                return Ok((self.get_pass(&serial).await?, None));
            }
        }
        let current = sqlx::query(
            "SELECT * FROM passes WHERE member_id = $1
             ORDER BY CASE WHEN ended_at IS NULL THEN 0 ELSE 1 END, created_at DESC, serial_number LIMIT 1",
        )
        .bind(member_id)
        .fetch_optional(&mut *tx)
        .await?;
        let current = rows::pass(&current.ok_or(StorageError::NotFound("pass"))?)?;
        let old = current
            .ended_at
            .is_none()
            .then(|| current.serial_number.clone());
        let fresh = new_pass(
            member_id,
            &current.template_id,
            &current.pass_type_identifier,
            now,
        );
        let payload =
            serde_json::json!({"ended_serial": old, "serial_number": fresh.serial_number})
                .to_string();
        // The old pass's version moves and its devices are pushed; the queue row sends Google
        // the new object (and the old one inactive).
        self.cards_changed(
            &mut tx,
            &[member_id.to_string()],
            CARD_REISSUED,
            &payload,
            now,
        )
        .await?;
        sqlx::query("UPDATE passes SET ended_at = $1 WHERE member_id = $2 AND ended_at IS NULL")
            .bind(now)
            .bind(member_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE members SET barcode = $1 WHERE id = $2")
            .bind(random_barcode(16))
            .bind(member_id)
            .execute(&mut *tx)
            .await?;
        insert_pass(&mut tx, &fresh).await?;
        if let Some((api_key, key)) = idempotency {
            // The member's lock serialises retries of one reissue; the key's record commits
            // with the new card.
            sqlx::query(
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(api_key)
            .bind(key)
            .bind(&request)
            .bind(&fresh.serial_number)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                super::conflict(e, || {
                    "this Idempotency-Key is in use by another request".into()
                })
            })?;
        }
        tx.commit().await?;
        self.forget(super::cache::Stale::Members(vec![member_id.to_string()]));
        self.committed();
        Ok((fresh, old))
    }

    /// Locks the member's row for a lifecycle change (404 when there is none); returns when
    /// the member was erased. On SQLite the write transaction already holds the write lock.
    async fn lock_for_lifecycle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        member_id: &str,
    ) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT erased_at FROM members WHERE id = $1{}",
            self.for_update()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        Ok(row.try_get("erased_at")?)
    }

    /// Drops the registrations (and devices left with none) of ended passes whose devices have
    /// the voided pass: it was downloaded after it ended and every registration was pushed since
    /// the end; or it ended before `ended_before` however that went. At most `limit` passes per
    /// call; returns the registrations dropped.
    pub async fn drop_ended_registrations(&self, ended_before: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(
            "SELECT p.serial_number FROM passes p
             WHERE p.ended_at IS NOT NULL
               AND EXISTS (SELECT 1 FROM registrations r WHERE r.serial_number = p.serial_number)
               AND (p.ended_at < $1
                    OR (p.last_fetched_at >= p.ended_at
                        AND NOT EXISTS (SELECT 1 FROM registrations r
                                        WHERE r.serial_number = p.serial_number
                                          AND (r.last_push_at IS NULL OR r.last_push_at < p.ended_at))))
             ORDER BY p.ended_at LIMIT $2",
        )
        .bind(ended_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if done.is_empty() {
            return Ok(0);
        }
        let serials: Vec<String> = done
            .iter()
            .map(|r| r.try_get("serial_number"))
            .collect::<std::result::Result<_, _>>()?;
        let marks = (1..=serials.len())
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (_turn, mut tx) = self.write_tx().await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT device_library_identifier FROM registrations WHERE serial_number IN ({marks})"
        )));
        for s in &serials {
            q = q.bind(s);
        }
        let devices: Vec<String> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("device_library_identifier"))
            .collect::<std::result::Result<_, _>>()?;
        let binds: Vec<&str> = serials.iter().map(String::as_str).collect();
        let shifted = (2..serials.len() + 2)
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        super::cockpit::record_wallet_events(
            &mut tx,
            "remove",
            crate::domain::now_ms(),
            &format!("r.serial_number IN ({shifted})"),
            &binds,
        )
        .await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM registrations WHERE serial_number IN ({marks})"
        )));
        for s in &serials {
            q = q.bind(s);
        }
        let dropped = q.execute(&mut *tx).await?.rows_affected();
        for device in &devices {
            sqlx::query(
                "DELETE FROM devices WHERE device_library_identifier = $1
                 AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_library_identifier = $1)",
            )
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.forget(super::cache::Stale::Devices(devices));
        Ok(dropped)
    }
}
