//! The one storage step for "a change a card shows". In the change's own transaction the
//! holders' passes move to a new version, one outbox row per holder is written for the push
//! dispatcher, and (with Google on) the members are queued for a Google sync. Ledger postings,
//! expiry, publish jobs (template publishes, image changes, rules changes, program renames) and
//! new members all go through it, so no change can reach one wallet and not the other.
//!
//! **Pass versions only move forward.** A pass's new `updated_at` is the later of the writer's
//! now and the start of the second after its current version, computed by the UPDATE itself
//! under the row lock. Writers with skewed clocks, two changes in one second, or a publish job
//! racing a till all leave a strictly larger version whose `Last-Modified` second is strictly
//! later, so a device holding any earlier version always gets 200 and the newest pass.

use sqlx::{Any, Transaction};

use super::{Result, Store, google, new_id};

/// The version a changed pass moves to; both `?`s take the writer's now in milliseconds.
const NEXT_VERSION: &str =
    "CASE WHEN ? > (updated_at / 1000 + 1) * 1000 THEN ? ELSE (updated_at / 1000 + 1) * 1000 END";

/// Bumps one member's live pass (an ended pass shows nothing new); `?`s: now, now, member id.
pub(super) fn bump_member_sql() -> String {
    format!(
        "UPDATE passes SET updated_at = {NEXT_VERSION} WHERE member_id = ? AND ended_at IS NULL"
    )
}

/// One outbox row; `?`s: id, topic, member id, payload, created_at.
pub(super) const OUTBOX_SQL: &str =
    "INSERT INTO outbox (id, topic, member_id, payload, created_at) VALUES (?, ?, ?, ?, ?)";

/// Outbox topics.
pub const POINTS_CHANGED: &str = "member.points_changed";
pub const TEMPLATE_CHANGED: &str = "template.changed";
pub const CARD_ENDED: &str = "card.ended";
pub const CARD_REISSUED: &str = "card.reissued";

/// Members per statement (a few parameters each, far under both backends' limits).
const CHUNK: usize = 400;

impl Store {
    /// What these members' cards show changed (`topic`, with `payload` for every row): their
    /// live passes move to a new version, each gets an outbox row, and Google is queued, in `tx`.
    /// The caller wakes the dispatcher after commit (`Store::changes`).
    pub(super) async fn cards_changed(
        &self,
        tx: &mut Transaction<'static, Any>,
        members: &[String],
        topic: &str,
        payload: &str,
        now: i64,
    ) -> Result<()> {
        for chunk in members.chunks(CHUNK) {
            if self.backend == super::Backend::Postgres {
                // Lock order: the member rows first, in id order, as every posting does (it
                // locks its member before it writes the pass, outbox and Google rows). Without
                // it a publish step (pass, then Google row) and a posting (whose one statement
                // writes in no set order) could each hold what the other waits for.
                let mut ids: Vec<&String> = chunk.iter().collect();
                ids.sort();
                let marks = (0..ids.len())
                    .map(|k| format!("${}", 1 + k))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT id FROM members WHERE id IN ({marks}) ORDER BY id FOR NO KEY UPDATE"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for m in ids {
                    q = q.bind(m);
                }
                q.fetch_all(&mut **tx).await?;
            }
            let marks = (0..chunk.len())
                .map(|k| format!("${}", 3 + k))
                .collect::<Vec<_>>()
                .join(", ");
            let version = NEXT_VERSION.replacen('?', "$1", 1).replacen('?', "$2", 1);
            let sql = format!(
                "UPDATE passes SET updated_at = {version} WHERE member_id IN ({marks}) AND ended_at IS NULL"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(now);
            for m in chunk {
                q = q.bind(m);
            }
            q.execute(&mut **tx).await?;

            let values = (0..chunk.len())
                .map(|k| format!("(${}, $1, ${}, $2, $3)", 4 + 2 * k, 5 + 2 * k))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO outbox (id, topic, member_id, payload, created_at) VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(topic)
                .bind(payload)
                .bind(now);
            for m in chunk {
                q = q.bind(new_id()).bind(m);
            }
            q.execute(&mut **tx).await?;
        }
        self.queue_google(tx, members.iter().map(String::as_str), now)
            .await
    }

    /// With Google on, queues these members for a Google sync in the caller's transaction.
    pub(super) async fn queue_google<'a>(
        &self,
        tx: &mut Transaction<'static, Any>,
        members: impl Iterator<Item = &'a str>,
        now: i64,
    ) -> Result<()> {
        if !self.google_sync() {
            return Ok(());
        }
        for m in members {
            sqlx::query(sqlx::AssertSqlSafe(google::numbered(google::QUEUE_SQL)))
                .bind(m)
                .bind(now)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}
