//! Expiring lots whose time has come, one member per change.

use sqlx::Row;

use super::Change;
use crate::ledger::{Entry, EntryKind, Origin};
use crate::storage::{Result, Store, new_id};

impl Store {
    /// Writes `expire` entries for every lot that lapsed by `now`; returns how many members changed.
    pub async fn expire_due(&self, now: i64, max_members: i64) -> Result<usize> {
        let due = sqlx::query(
            "SELECT DISTINCT member_id FROM point_lots WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2",
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
                "SELECT id, remaining FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $2",
            )
            .bind(&member_id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let total: i64 = lapsed
                .iter()
                .map(|r| r.try_get::<i64, _>("remaining"))
                .sum::<std::result::Result<_, _>>()?;
            if total == 0 || total > member.points {
                continue;
            }
            let takes = lapsed
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>("id")?,
                        r.try_get::<i64, _>("remaining")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
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
            let outcome = crate::ledger::Outcome {
                balance: member.points - total,
                tier: member
                    .rules
                    .tier_name(member.tier.as_deref())
                    .map(String::from),
                entry: entry.clone(),
                uncollected: 0,
            };
            let events = super::ledger_events(&outcome, member.tier.as_deref(), None, false);
            let change = Change {
                entry: &entry,
                api_key_id: None,
                new_lot: None,
                takes,
                tier: None,
                balance: member.points - total,
                idempotency: None,
                events,
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
