//! A member's profile changes (`PATCH /api/v1/members/{id}`): checked against the version the
//! writer read, and when the card shows what changed (name, external id), through
//! `changes::cards_changed` in the same transaction.

use sqlx::Row;

use super::{Result, StorageError, Store, conflict};

/// `MEMBER_CHANGED`: a profile change the card shows.
pub const MEMBER_CHANGED: &str = "member.changed";

/// The fields to change; `None` leaves one as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub birthday: Option<Option<String>>,
}

impl Store {
    /// The member's profile version (the ETag).
    pub async fn member_version(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        Ok(row.try_get("version")?)
    }

    /// Applies `change` if the profile is still at `expected` (else `Stale`); returns the new
    /// version. An erased member's profile cannot be changed.
    pub async fn update_profile(
        &self,
        member_id: &str,
        expected: i64,
        change: &ProfileChange,
        now: i64,
    ) -> Result<i64> {
        let (_turn, mut tx) = self.write_tx().await?;
        let sql = format!(
            "SELECT version, erased_at FROM members WHERE id = $1{}",
            self.for_update()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        let current: i64 = row.try_get("version")?;
        if current != expected {
            return Err(StorageError::Stale {
                what: "member",
                current,
            });
        }
        if row.try_get::<Option<i64>, _>("erased_at")?.is_some() {
            return Err(StorageError::Conflict("this member was erased".into()));
        }
        let (email, email_hash, phone, phone_hash) = match (&change.email, &change.phone) {
            (None, None) => (None, None, None, None),
            (email, phone) => {
                use crate::privacy::Field;
                let ring = self.key_ring()?;
                let e = email.as_ref().and_then(|v| v.as_deref());
                let p = phone.as_ref().and_then(|v| v.as_deref());
                let (email, email_hash) = Self::seal(&ring, Field::Email, member_id, e);
                let (phone, phone_hash) = Self::seal(&ring, Field::Phone, member_id, p);
                (email, email_hash, phone, phone_hash)
            }
        };
        // Each column keeps its value unless the change names it ($k flag 1).
        sqlx::query(
            "UPDATE members SET
               display_name = CASE WHEN $2 = 1 THEN $3 ELSE display_name END,
               external_id  = CASE WHEN $4 = 1 THEN $5 ELSE external_id END,
               email        = CASE WHEN $6 = 1 THEN $7 ELSE email END,
               email_hash   = CASE WHEN $6 = 1 THEN $12 ELSE email_hash END,
               phone        = CASE WHEN $8 = 1 THEN $9 ELSE phone END,
               phone_hash   = CASE WHEN $8 = 1 THEN $13 ELSE phone_hash END,
               birthday     = CASE WHEN $10 = 1 THEN $11 ELSE birthday END,
               version = version + 1
             WHERE id = $1",
        )
        .bind(member_id)
        .bind(change.display_name.is_some() as i64)
        .bind(change.display_name.clone())
        .bind(change.external_id.is_some() as i64)
        .bind(change.external_id.clone().flatten())
        .bind(change.email.is_some() as i64)
        .bind(email)
        .bind(change.phone.is_some() as i64)
        .bind(phone)
        .bind(change.birthday.is_some() as i64)
        .bind(change.birthday.clone().flatten())
        .bind(email_hash)
        .bind(phone_hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict(e, || {
                "a member with this external_id exists already in this program".into()
            })
        })?;
        let fields: Vec<&str> = [
            ("display_name", change.display_name.is_some()),
            ("external_id", change.external_id.is_some()),
            ("email", change.email.is_some()),
            ("phone", change.phone.is_some()),
            ("birthday", change.birthday.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let updated = super::events::NewEvent::new(
            super::events::kinds::MEMBER_UPDATED,
            member_id,
            serde_json::json!({"fields": fields, "version": current + 1}),
        );
        self.record_events(&mut tx, &[updated], now).await?;
        if change.display_name.is_some() || change.external_id.is_some() {
            let payload = serde_json::json!({"version": current + 1}).to_string();
            self.cards_changed(
                &mut tx,
                &[member_id.to_string()],
                MEMBER_CHANGED,
                &payload,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        self.forget(super::cache::Stale::Members(vec![member_id.to_string()]));
        self.committed();
        Ok(current + 1)
    }
}
