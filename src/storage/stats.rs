//! Figures for `/metrics`, read when scraped.

use sqlx::Row;

use super::{Result, Store, rows};

/// The background queues as the database holds them.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub outbox_depth: i64,
    /// Creation time (ms) of the oldest outbox row, if any.
    pub outbox_oldest: Option<i64>,
    pub google_pending: i64,
    /// Google syncs that failed at least once and wait for a retry.
    pub google_failing: i64,
    /// Running publish jobs: `(job id, template id, done, total)`.
    pub publish_jobs: Vec<(String, String, i64, i64)>,
}

impl Store {
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE processed_at IS NULL) AS depth,
                    (SELECT MIN(created_at) FROM outbox WHERE processed_at IS NULL) AS oldest,
                    (SELECT COUNT(*) FROM google_pending) AS pending,
                    (SELECT COUNT(*) FROM google_pending WHERE attempts > 0) AS failing",
        )
        .fetch_one(&self.pool)
        .await?;
        let jobs = sqlx::query(
            "SELECT id, template_id, done, total FROM publish_jobs WHERE status = 'running' ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(QueueStats {
            outbox_depth: rows::int(&row, "depth")?,
            outbox_oldest: row.try_get::<Option<i64>, _>("oldest")?,
            google_pending: rows::int(&row, "pending")?,
            google_failing: rows::int(&row, "failing")?,
            publish_jobs: jobs
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("id")?,
                        r.try_get("template_id")?,
                        rows::int(r, "done")?,
                        rows::int(r, "total")?,
                    ))
                })
                .collect::<Result<_>>()?,
        })
    }

    /// This instance's counters (`metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
}
