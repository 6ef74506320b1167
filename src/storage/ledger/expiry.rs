//! Expiring lots whose time has come, one member per change.

use sqlx::Row;

use super::Change;
use crate::ledger::{Entry, EntryKind, Origin};
use crate::storage::{Result, Store, new_id};

impl Store {
    /// Writes `expire` entries for every lot that lapsed by `now`; returns how many members changed.
    pub async fn expire_due(&self, now: i64, max_members: i64) -> Result<usize> {
        let due = sqlx::query(
            "SELECT DISTINCT l.member_id FROM point_lots l JOIN members m ON m.id = l.member_id
             WHERE l.remaining > 0 AND l.expires_at IS NOT NULL AND l.expires_at <= $1 AND m.points > m.held
             LIMIT $2",
        )
        .bind(now)
        .bind(max_members)
        .fetch_all(&self.pool)
        .await?;
        let mut changed = 0;
        for row in due {
            let member_id: String = row.try_get("member_id")?;
            let (_turn, mut tx) = self.write_tx().await?;
            let member = self.lock_member(&mut tx, &member_id, None, false).await?;
            let lapsed = sqlx::query(
                "SELECT id, remaining FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $2
                 ORDER BY earned_at, id",
            )
            .bind(&member_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            // Points an open hold reserves do not lapse under it: the lapsed lots give up at
            // most the available points now (oldest first), and the rest lapse once the hold
            // is released, or are what its capture spends.
            let mut left = member.available();
            let mut takes = Vec::new();
            for r in &lapsed {
                let take = r.try_get::<i64, _>("remaining")?.min(left);
                if take > 0 {
                    takes.push((r.try_get::<String, _>("id")?, take));
                    left -= take;
                }
            }
            let total: i64 = takes.iter().map(|(_, t)| t).sum();
            if total == 0 || total > member.points {
                continue;
            }
            let entry = Entry {
                id: new_id(),
                member_id: member_id.clone(),
                kind: EntryKind::Expire,
                points: -total,
                amount_minor: None,
                origin: Origin::default(),
                reason: Some("points lapsed".into()),
                reverses_entry_id: None,
                created_at: now,
            };
            let change = Change {
                entry: &entry,
                api_key_id: None,
                new_lot: None,
                takes,
                tier: None,
                balance: member.points - total,
                idempotency: None,
            };
            self.write_change(&mut tx, &change, false).await?;
            tx.commit().await?;
            self.metrics.posting("expire");
            self.forget(crate::storage::cache::Stale::Members(vec![member_id]));
            self.committed();
            changed += 1;
        }
        Ok(changed)
    }
}
