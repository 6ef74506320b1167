//! Reads for a member's data export (the right of access): every pass they were issued, the
//! messages sent to their card and Google's save/delete events.

use sqlx::Row;

use super::{Result, Store, rows};
use crate::domain::Pass;

/// A message queued or sent to a member's Google card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub message_id: String,
    pub header: String,
    pub body: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// Google's report that the holder saved or deleted the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletEvent {
    pub event_type: String,
    pub received_at: i64,
}

impl Store {
    /// Every pass the member was issued, oldest first (ended ones included).
    pub async fn member_passes(&self, member_id: &str) -> Result<Vec<Pass>> {
        let rows = sqlx::query(
            "SELECT * FROM passes WHERE member_id = $1 ORDER BY created_at, serial_number",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::pass).collect()
    }

    /// Messages to the member's Google card, oldest first.
    pub async fn member_messages(&self, member_id: &str) -> Result<Vec<SentMessage>> {
        let rows = sqlx::query(
            "SELECT message_id, header, body, created_at, sent_at FROM google_messages
             WHERE member_id = $1 ORDER BY created_at, message_id",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SentMessage {
                    message_id: r.try_get("message_id")?,
                    header: r.try_get("header")?,
                    body: r.try_get("body")?,
                    created_at: r.try_get("created_at")?,
                    sent_at: r.try_get("sent_at")?,
                })
            })
            .collect()
    }

    /// Google's save/delete events for the member's card, oldest first.
    pub async fn member_wallet_events(&self, member_id: &str) -> Result<Vec<WalletEvent>> {
        let rows = sqlx::query(
            "SELECT event_type, received_at FROM google_events WHERE member_id = $1
             ORDER BY received_at, nonce",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WalletEvent {
                    event_type: r.try_get("event_type")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// How many times each member's card was reissued (passes beyond the first), for members
    /// that have passes: install links are signed for it.
    pub async fn card_generations(
        &self,
        member_ids: &[String],
    ) -> Result<std::collections::HashMap<String, i64>> {
        let mut out = std::collections::HashMap::new();
        for chunk in member_ids.chunks(500) {
            let marks = (1..=chunk.len())
                .map(|k| format!("${k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT member_id, COUNT(*) AS n FROM passes WHERE member_id IN ({marks}) GROUP BY member_id"
            )));
            for m in chunk {
                q = q.bind(m);
            }
            for r in q.fetch_all(&self.pool).await? {
                let n: i64 = r.try_get("n")?;
                out.insert(r.try_get("member_id")?, n - 1);
            }
        }
        Ok(out)
    }

    /// When the member was erased, if they were.
    pub async fn member_erased_at(&self, member_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT erased_at FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(super::StorageError::NotFound("member"))?;
        Ok(row.try_get("erased_at")?)
    }
}
