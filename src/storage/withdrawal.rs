//! Consent withdrawal: a new consent row (rows are never updated) and, for marketing, every
//! message not yet sent to the member's card dropped in the same transaction. Marketing goes
//! only to members whose latest marketing answer is not a refusal (`MARKETING_ALLOWED`).

use super::{Result, StorageError, Store, new_id};
use crate::storage::ConsentRecord;

/// SQL condition: the member `$m` has not refused or withdrawn marketing since they last
/// agreed to it. Members with no marketing answer at all (created by an integration, which
/// holds its own consent) are not excluded.
pub(super) fn marketing_allowed(member: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM consents c WHERE c.member_id = {member} AND c.kind = 'marketing' AND c.granted = 0
           AND NOT EXISTS (SELECT 1 FROM consents g WHERE g.member_id = c.member_id AND g.kind = 'marketing'
                           AND g.granted = 1 AND g.recorded_at > c.recorded_at))"
    )
}

impl Store {
    /// Records `withdrawals` (consent rows with `granted` false) for the member and drops the
    /// messages not yet sent to their card; returns how many were dropped.
    pub async fn withdraw_consents(
        &self,
        member_id: &str,
        withdrawals: &[ConsentRecord],
    ) -> Result<u64> {
        let (_turn, mut tx) = self.write_tx().await?;
        let sql = format!("SELECT id FROM members WHERE id = $1{}", self.for_update());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        for c in withdrawals {
            sqlx::query(
                "INSERT INTO consents (id, member_id, kind, granted, policy_version, policy_url, text_shown, source, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(new_id())
            .bind(member_id)
            .bind(&c.kind)
            .bind(c.granted as i64)
            .bind(&c.policy_version)
            .bind(&c.policy_url)
            .bind(&c.text_shown)
            .bind(&c.source)
            .bind(c.recorded_at)
            .execute(&mut *tx)
            .await?;
        }
        let dropped =
            sqlx::query("DELETE FROM google_messages WHERE member_id = $1 AND sent_at IS NULL")
                .bind(member_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let events: Vec<_> = withdrawals
            .iter()
            .map(|c| {
                super::events::NewEvent::new(
                    super::events::kinds::CONSENT_CHANGED,
                    member_id,
                    serde_json::json!({"kind": c.kind, "granted": c.granted, "source": c.source}),
                )
            })
            .collect();
        let now = withdrawals
            .iter()
            .map(|c| c.recorded_at)
            .max()
            .unwrap_or_else(crate::domain::now_ms);
        self.record_events(&mut tx, &events, now).await?;
        tx.commit().await?;
        Ok(dropped)
    }

    /// Whether marketing may reach the member (see `marketing_allowed`).
    pub async fn marketing_allowed(&self, member_id: &str) -> Result<bool> {
        let sql = format!(
            "SELECT 1 AS one FROM members WHERE id = $1 AND {}",
            marketing_allowed("members.id")
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }
}
