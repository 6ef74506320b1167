//! Ledger writes. Each change is one transaction: the entry, the lots it credits or consumes,
//! the member's balance and tier, the pass's `updated_at`, an outbox row and the idempotency
//! record commit together or not at all.
//!
//! Concurrency: SQLite writers are serialised by `BEGIN IMMEDIATE`; on PostgreSQL the member row
//! is locked (`FOR UPDATE OF m`) before its lots are read, so two spends cannot both see the
//! same points. The balance update is guarded in SQL as well (`points + delta >= 0`).

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, Result, StorageError, Store, new_id, rows};
use crate::ledger::{
    Entry, EntryKind, Idempotency, Lot, LoyaltyRules, Operation, Origin, Outcome, TierBasis,
    consume, expiry_at, refund_points,
};

const DAY_MS: i64 = 86_400_000;

/// A member row with the program's rules, read under the write lock.
struct Locked {
    points: i64,
    tier: Option<String>,
    rules: LoyaltyRules,
}

/// A change announced for push and webhooks, written in the change's own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: String,
    pub topic: String,
    pub member_id: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

/// What the member view shows beside the balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStanding {
    /// Points or spend counted toward tiers in the rolling window.
    pub qualifying: i64,
    /// The earliest expiry and the points lapsing then.
    pub next_expiry: Option<(i64, i64)>,
}

impl Store {
    /// Applies `op` to a member's points. With `idempotency`, a retry of the same request returns
    /// the stored outcome (`true` in the pair) instead of writing again; the same key with a
    /// different request is `IdempotencyMismatch`.
    pub async fn post(
        &self,
        member_id: &str,
        op: &Operation,
        origin: &Origin,
        api_key_id: Option<&str>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Outcome, bool)> {
        match self
            .post_once(member_id, op, origin, api_key_id, idempotency, now)
            .await
        {
            // A concurrent request with the same key committed first; now we find its result.
            Err(StorageError::IdempotencyRace) => {
                self.post_once(member_id, op, origin, api_key_id, idempotency, now)
                    .await
            }
            other => other,
        }
    }

    async fn post_once(
        &self,
        member_id: &str,
        op: &Operation,
        origin: &Origin,
        api_key_id: Option<&str>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Outcome, bool)> {
        let mut tx = self.write_tx().await?;
        if let Some(i) = idempotency {
            let row = sqlx::query("SELECT request_hash, response FROM idempotency_keys WHERE api_key_id = $1 AND key = $2")
                .bind(&i.api_key_id)
                .bind(&i.key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                if row.try_get::<String, _>("request_hash")? != i.request_hash {
                    return Err(StorageError::IdempotencyMismatch);
                }
                let response: String = row.try_get("response")?;
                let outcome = serde_json::from_str(&response)
                    .map_err(|e| StorageError::Corrupt(format!("idempotent response: {e}")))?;
                return Ok((outcome, true));
            }
        }
        let member = self.lock_member(&mut tx, member_id).await?;
        let mut entry = Entry {
            id: new_id(),
            member_id: member_id.into(),
            kind: op.kind(),
            points: 0,
            amount_minor: None,
            origin: origin.clone(),
            reason: None,
            reverses_entry_id: None,
            created_at: now,
        };
        let mut uncollected = 0;
        match op {
            Operation::EarnPurchase { amount_minor } => {
                let multiplier = member
                    .tier
                    .as_deref()
                    .and_then(|t| member.rules.tiers.levels.iter().find(|l| l.name == t))
                    .map_or(1000, |l| l.multiplier_milli);
                entry.points = member.rules.purchase_points(*amount_minor, multiplier);
                entry.amount_minor = Some(*amount_minor);
            }
            Operation::EarnPoints { points } => entry.points = *points,
            Operation::Redeem { points } => entry.points = -points,
            Operation::Adjust { points, reason } => {
                entry.points = *points;
                entry.reason = Some(reason.clone());
            }
            Operation::Refund { amount_minor } => {
                let due = self
                    .refund_due(&mut tx, member_id, origin, *amount_minor)
                    .await?;
                let take = due.min(member.points);
                uncollected = due - take;
                entry.points = -take;
                entry.amount_minor = Some(*amount_minor);
            }
            Operation::Reverse { entry_id } => {
                entry.points = self.reversal_points(&mut tx, member_id, entry_id).await?;
                entry.reverses_entry_id = Some(entry_id.clone());
            }
        }
        if entry.points < -member.points {
            return Err(StorageError::Insufficient {
                available: member.points,
            });
        }
        insert_entry(&mut tx, &entry, api_key_id).await?;
        if entry.points > 0 {
            let expires_at = member.rules.expiry_days.map(|d| expiry_at(now, d));
            insert_lot(&mut tx, &entry, expires_at).await?;
        } else if entry.points < 0 {
            take_from_lots(&mut tx, member_id, -entry.points, member.points).await?;
        }
        let mut tier = member.tier.clone();
        if !member.rules.tiers.levels.is_empty() && entry.points != 0 {
            tier = self.promote(&mut tx, member_id, &member, now).await?;
        }
        let balance = finish_change(&mut tx, &entry, now).await?;
        let outcome = Outcome {
            entry,
            balance,
            tier,
            uncollected,
        };
        if let Some(i) = idempotency {
            let response = serde_json::to_string(&outcome).expect("outcome serialises");
            sqlx::query("INSERT INTO idempotency_keys (api_key_id, key, request_hash, response, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&i.api_key_id)
                .bind(&i.key)
                .bind(&i.request_hash)
                .bind(response)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => StorageError::IdempotencyRace,
                    _ => StorageError::Database(e),
                })?;
        }
        tx.commit().await?;
        Ok((outcome, false))
    }

    async fn lock_member(
        &self,
        tx: &mut Transaction<'static, Any>,
        member_id: &str,
    ) -> Result<Locked> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT m.points, m.tier, p.rules FROM members m JOIN programs p ON p.id = m.program_id WHERE m.id = $1"
            }
            Backend::Postgres => {
                "SELECT m.points, m.tier, p.rules FROM members m JOIN programs p ON p.id = m.program_id WHERE m.id = $1 FOR UPDATE OF m"
            }
        };
        let row = sqlx::query(sql)
            .bind(member_id)
            .fetch_optional(&mut **tx)
            .await?;
        let row = row.ok_or(StorageError::NotFound("member"))?;
        Ok(Locked {
            points: row.try_get("points")?,
            tier: row.try_get("tier")?,
            rules: rows::rules(&row)?,
        })
    }

    /// Points a refund of `amount_minor` takes back from the purchase `origin.external_ref` names.
    async fn refund_due(
        &self,
        tx: &mut Transaction<'static, Any>,
        member_id: &str,
        origin: &Origin,
        amount_minor: i64,
    ) -> Result<i64> {
        let reference = origin.external_ref.as_deref().ok_or_else(|| {
            StorageError::Rejected(
                "a refund needs the external_ref of the purchase it refunds".into(),
            )
        })?;
        let sums = "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS points,
                           CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS amount, COUNT(*) AS n
                    FROM ledger_entries WHERE member_id = $1 AND external_ref = $2 AND kind = $3";
        let purchase = sqlx::query(sums)
            .bind(member_id)
            .bind(reference)
            .bind("earn")
            .fetch_one(&mut **tx)
            .await?;
        if rows::int(&purchase, "n")? == 0 {
            return Err(StorageError::NotFound("purchase with that external_ref"));
        }
        let refunds = sqlx::query(sums)
            .bind(member_id)
            .bind(reference)
            .bind("refund")
            .fetch_one(&mut **tx)
            .await?;
        refund_points(
            rows::int(&purchase, "points")?,
            rows::int(&purchase, "amount")?,
            rows::int(&refunds, "amount")?,
            -rows::int(&refunds, "points")?,
            amount_minor,
        )
        .map_err(StorageError::Rejected)
    }

    /// The points a reversal of `entry_id` moves: the opposite of the entry's.
    async fn reversal_points(
        &self,
        tx: &mut Transaction<'static, Any>,
        member_id: &str,
        entry_id: &str,
    ) -> Result<i64> {
        let row = sqlx::query("SELECT * FROM ledger_entries WHERE id = $1 AND member_id = $2")
            .bind(entry_id)
            .bind(member_id)
            .fetch_optional(&mut **tx)
            .await?;
        let original = rows::entry(&row.ok_or(StorageError::NotFound("entry"))?)?;
        if original.kind == EntryKind::Reversal {
            return Err(StorageError::Rejected(
                "a reversal cannot itself be reversed".into(),
            ));
        }
        let reversed = sqlx::query("SELECT 1 FROM ledger_entries WHERE reverses_entry_id = $1")
            .bind(entry_id)
            .fetch_optional(&mut **tx)
            .await?;
        if reversed.is_some() {
            return Err(StorageError::Rejected(format!(
                "entry {entry_id} is already reversed"
            )));
        }
        if original.kind == EntryKind::Earn
            && let Some(reference) = &original.origin.external_ref
        {
            let refunded = sqlx::query("SELECT 1 FROM ledger_entries WHERE member_id = $1 AND external_ref = $2 AND kind = 'refund'")
                .bind(member_id)
                .bind(reference)
                .fetch_optional(&mut **tx)
                .await?;
            if refunded.is_some() {
                return Err(StorageError::Rejected(
                    "this purchase has refunds; refund the rest instead of reversing it".into(),
                ));
            }
        }
        Ok(-original.points)
    }

    /// Moves the member up when the rolling window's total reaches a higher tier; never down.
    async fn promote(
        &self,
        tx: &mut Transaction<'static, Any>,
        member_id: &str,
        member: &Locked,
        now: i64,
    ) -> Result<Option<String>> {
        let qualifying = qualifying_total(&mut **tx, member_id, &member.rules, now).await?;
        let levels = &member.rules.tiers.levels;
        let rank = |name: Option<&str>| name.and_then(|n| levels.iter().position(|l| l.name == n));
        let computed = member.rules.tier_for(qualifying).map(|t| t.name.clone());
        if rank(computed.as_deref()) > rank(member.tier.as_deref()) {
            sqlx::query("UPDATE members SET tier = $2 WHERE id = $1")
                .bind(member_id)
                .bind(&computed)
                .execute(&mut **tx)
                .await?;
            return Ok(computed);
        }
        Ok(member.tier.clone())
    }

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
            let mut tx = self.write_tx().await?;
            let member = self.lock_member(&mut tx, &member_id).await?;
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
            for lot in &lapsed {
                sqlx::query("UPDATE point_lots SET remaining = 0 WHERE id = $1")
                    .bind(lot.try_get::<String, _>("id")?)
                    .execute(&mut *tx)
                    .await?;
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
            insert_entry(&mut tx, &entry, None).await?;
            finish_change(&mut tx, &entry, now).await?;
            tx.commit().await?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Tier progress and the next expiry, for the member view and the card.
    pub async fn member_standing(
        &self,
        member_id: &str,
        rules: &LoyaltyRules,
        now: i64,
    ) -> Result<MemberStanding> {
        let qualifying = qualifying_total(&self.pool, member_id, rules, now).await?;
        let row = sqlx::query(
            "SELECT MIN(expires_at) AS at FROM point_lots WHERE member_id = $1 AND remaining > 0 AND expires_at IS NOT NULL",
        )
        .bind(member_id)
        .fetch_one(&self.pool)
        .await?;
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

    /// Outbox rows not yet processed, oldest first.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, topic, member_id, payload, created_at FROM outbox WHERE processed_at IS NULL ORDER BY created_at, id LIMIT $1",
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

async fn qualifying_total<'e, E>(
    executor: E,
    member_id: &str,
    rules: &LoyaltyRules,
    now: i64,
) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let since = now - rules.tiers.window_days as i64 * DAY_MS;
    let sql = match rules.tiers.basis {
        TierBasis::Points => {
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS total FROM ledger_entries
             WHERE member_id = $1 AND kind = 'earn' AND created_at >= $2"
        }
        TierBasis::Spend => {
            "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'earn' THEN amount_minor ELSE -amount_minor END), 0) AS BIGINT) AS total
             FROM ledger_entries WHERE member_id = $1 AND kind IN ('earn', 'refund') AND amount_minor IS NOT NULL AND created_at >= $2"
        }
    };
    let row: AnyRow = sqlx::query(sql)
        .bind(member_id)
        .bind(since)
        .fetch_one(executor)
        .await?;
    rows::int(&row, "total")
}

async fn insert_entry(
    tx: &mut Transaction<'static, Any>,
    e: &Entry,
    api_key_id: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ledger_entries (id, member_id, kind, points, amount_minor, external_ref, channel, store_id,
                                     partner_id, reason, reverses_entry_id, api_key_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&e.id)
    .bind(&e.member_id)
    .bind(e.kind.as_str())
    .bind(e.points)
    .bind(e.amount_minor)
    .bind(&e.origin.external_ref)
    .bind(&e.origin.channel)
    .bind(&e.origin.store_id)
    .bind(&e.origin.partner_id)
    .bind(&e.reason)
    .bind(&e.reverses_entry_id)
    .bind(api_key_id)
    .bind(e.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StorageError::Rejected("that entry is already reversed".into())
        }
        _ => StorageError::Database(err),
    })?;
    Ok(())
}

async fn insert_lot(
    tx: &mut Transaction<'static, Any>,
    e: &Entry,
    expires_at: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO point_lots (id, member_id, entry_id, points, remaining, earned_at, expires_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(&e.member_id)
    .bind(&e.id)
    .bind(e.points)
    .bind(e.created_at)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Consumes `points` from the member's lots, oldest first.
async fn take_from_lots(
    tx: &mut Transaction<'static, Any>,
    member_id: &str,
    points: i64,
    available: i64,
) -> Result<()> {
    let rows = sqlx::query("SELECT id, remaining FROM point_lots WHERE member_id = $1 AND remaining > 0 ORDER BY earned_at, id")
        .bind(member_id)
        .fetch_all(&mut **tx)
        .await?;
    let lots: Vec<Lot> = rows
        .iter()
        .map(|r| {
            Ok(Lot {
                id: r.try_get("id")?,
                remaining: r.try_get("remaining")?,
            })
        })
        .collect::<Result<_>>()?;
    let takes = consume(&lots, points).ok_or(StorageError::Insufficient { available })?;
    for (lot_id, take) in takes {
        sqlx::query("UPDATE point_lots SET remaining = remaining - $2 WHERE id = $1")
            .bind(lot_id)
            .bind(take)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Moves the balance by the entry's points (guarded against going below zero), marks the
/// member's passes changed and announces the change in the outbox. Returns the new balance.
async fn finish_change(tx: &mut Transaction<'static, Any>, e: &Entry, now: i64) -> Result<i64> {
    let updated =
        sqlx::query("UPDATE members SET points = points + $2 WHERE id = $1 AND points + $2 >= 0")
            .bind(&e.member_id)
            .bind(e.points)
            .execute(&mut **tx)
            .await?;
    if updated.rows_affected() == 0 {
        return Err(StorageError::Insufficient { available: 0 });
    }
    sqlx::query("UPDATE passes SET updated_at = $2 WHERE member_id = $1")
        .bind(&e.member_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT points FROM members WHERE id = $1")
        .bind(&e.member_id)
        .fetch_one(&mut **tx)
        .await?;
    let balance = rows::int(&row, "points")?;
    let payload = serde_json::json!({"entry_id": e.id, "kind": e.kind.as_str(), "points": e.points, "balance": balance});
    sqlx::query("INSERT INTO outbox (id, topic, member_id, payload, created_at) VALUES ($1, 'member.points_changed', $2, $3, $4)")
        .bind(new_id())
        .bind(&e.member_id)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(balance)
}
