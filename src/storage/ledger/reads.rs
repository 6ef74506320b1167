//! Ledger reads: standings, entries, the outbox, and purging old idempotency keys.

use sqlx::Row;

use super::{MemberStanding, OutboxRow, qualifying_total};
use crate::ledger::{Entry, LoyaltyRules};
use crate::storage::{Result, Store, rows};

impl Store {
    /// Tier progress and the next expiry, for the member view and the card.
    pub async fn member_standing(
        &self,
        member_id: &str,
        rules: &LoyaltyRules,
        now: i64,
    ) -> Result<MemberStanding> {
        let qualifying = qualifying_total(&self.pool, member_id, rules, now).await?;
        let row = sqlx::query(
            "SELECT MIN(expires_at) AS at, (SELECT held FROM members WHERE id = $1) AS held
             FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at IS NOT NULL",
        )
        .bind(member_id)
        .fetch_one(&self.pool)
        .await?;
        let held = row.try_get::<Option<i64>, _>("held")?.unwrap_or(0);
        let next_expiry = match row.try_get::<Option<i64>, _>("at")? {
            None => None,
            Some(at) => {
                let sum = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) AS points FROM point_lots
                     WHERE member_id = $1 AND remaining > 0 AND expires_at = $2",
                )
                .bind(member_id)
                .bind(at)
                .fetch_one(&self.pool)
                .await?;
                Some((at, rows::int(&sum, "points")?))
            }
        };
        Ok(MemberStanding {
            qualifying,
            next_expiry,
            held,
        })
    }

    /// A member's entries, oldest first, after the cursor `(created_at, id)`.
    pub async fn list_entries(
        &self,
        member_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Entry>> {
        let (at, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM ledger_entries WHERE member_id = $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at, id LIMIT $4",
        )
        .bind(member_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::entry).collect()
    }

    /// Sum of the remaining points of a member's lots (must equal the balance).
    pub async fn lots_sum(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) AS total FROM point_lots WHERE member_id = $1")
            .bind(member_id)
            .fetch_one(&self.pool)
            .await?;
        rows::int(&row, "total")
    }

    /// Outbox rows not yet processed, oldest first (ids are time-ordered).
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, topic, member_id, payload, created_at FROM outbox WHERE processed_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    topic: r.try_get("topic")?,
                    member_id: r.try_get("member_id")?,
                    payload: r.try_get("payload")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Forgets idempotency keys older than `before`; returns how many.
    pub async fn purge_idempotency_keys(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
