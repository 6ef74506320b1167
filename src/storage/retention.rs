//! Retention: each program's inactivity period, the members past it, and the purge of logs.

use sqlx::Row;

use super::{Result, StorageError, Store};

/// Months as the retention job counts them: the mean Gregorian month.
pub const MONTH_MS: i64 = 2_629_746_000;

/// Ledger entries a member's own doing makes (a purchase, a redemption, a refund of a
/// purchase); expiries, staff adjustments and reversals are not the member's activity.
const ACTIVE_KINDS: &str = "('earn', 'redeem', 'refund')";

/// Rows per purge statement.
const PURGE_BATCH: i64 = 1000;

/// What one purge of logs removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPurge {
    /// Google save and delete callbacks received before the cut-off.
    pub google_events: u64,
    /// Pass download times older than the cut-off, forgotten.
    pub fetch_times: u64,
    /// Push outcomes older than the cut-off, forgotten.
    pub push_results: u64,
    /// Staff sessions past their expiry.
    pub staff_sessions: u64,
}

impl Store {
    /// Sets a program's retention: members inactive for `months` are erased; `None` keeps them.
    pub async fn set_retention(&self, program_id: &str, months: Option<i64>) -> Result<()> {
        let done = sqlx::query("UPDATE programs SET retention_months = $1 WHERE id = $2")
            .bind(months)
            .bind(program_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("program"));
        }
        Ok(())
    }

    /// A program's retention in months (`None`: off).
    pub async fn retention(&self, program_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT retention_months FROM programs WHERE id = $1")
            .bind(program_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("program"))?;
        Ok(row.try_get("retention_months")?)
    }

    /// Up to `limit` members, of programs with a retention, who joined before their program's
    /// period and have had no activity since: no purchase, redemption or refund, no consent
    /// given. Oldest members first; erased members are skipped.
    pub async fn inactive_members(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT m.id FROM programs p
             JOIN members m ON m.program_id = p.id
             WHERE p.retention_months IS NOT NULL AND p.retention_months > 0
               AND m.erased_at IS NULL
               AND m.created_at < $1 - p.retention_months * {MONTH_MS}
               AND NOT EXISTS (SELECT 1 FROM ledger_entries e
                               WHERE e.member_id = m.id AND e.kind IN {ACTIVE_KINDS}
                                 AND e.created_at >= $1 - p.retention_months * {MONTH_MS})
               AND NOT EXISTS (SELECT 1 FROM consents c
                               WHERE c.member_id = m.id AND c.granted = 1
                                 AND c.recorded_at >= $1 - p.retention_months * {MONTH_MS})
             ORDER BY m.created_at, m.id
             LIMIT $2"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        found
            .iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StorageError::from))
            .collect()
    }

    /// Deletes logs older than `before`: Google callbacks, pass download times, push outcomes,
    /// and expired staff sessions; in batches of `PURGE_BATCH` rows, each its own short
    /// transaction, so a till waits for one batch at most.
    pub async fn purge_logs(&self, before: i64, now: i64) -> Result<LogPurge> {
        let statements: [(&'static str, i64); 4] = [
            (
                "DELETE FROM google_events WHERE nonce IN
                   (SELECT nonce FROM google_events WHERE received_at < $1 LIMIT $2)",
                before,
            ),
            (
                "UPDATE passes SET last_fetched_at = NULL WHERE serial_number IN
                   (SELECT serial_number FROM passes WHERE last_fetched_at < $1 LIMIT $2)",
                before,
            ),
            (
                "UPDATE registrations SET last_push_at = NULL, last_push_result = NULL
                 WHERE (device_library_identifier, serial_number) IN
                   (SELECT device_library_identifier, serial_number FROM registrations
                    WHERE last_push_at < $1 LIMIT $2)",
                before,
            ),
            (
                "DELETE FROM staff_sessions WHERE token_hash IN
                   (SELECT token_hash FROM staff_sessions WHERE expires_at <= $1 LIMIT $2)",
                now,
            ),
        ];
        let mut counts = [0u64; 4];
        for (i, (sql, cut)) in statements.iter().enumerate() {
            loop {
                let (_turn, mut tx) = self.write_tx().await?;
                let n = sqlx::query(*sql)
                    .bind(*cut)
                    .bind(PURGE_BATCH)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                counts[i] += n;
                if n < PURGE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(LogPurge {
            google_events: counts[0],
            fetch_times: counts[1],
            push_results: counts[2],
            staff_sessions: counts[3],
        })
    }

    /// Whether any program erases inactive members (the job skips its search otherwise).
    pub async fn any_retention(&self) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM programs WHERE retention_months IS NOT NULL LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }
}
