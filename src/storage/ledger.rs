//! Ledger writes. Each change is one transaction: the entry, the lots it credits or consumes,
//! the member's balance and tier, the pass's `updated_at`, an outbox row and the idempotency
//! record commit together or not at all.
//!
//! Concurrency: SQLite writers are serialised by `BEGIN IMMEDIATE`; on PostgreSQL the member row
//! is locked (`FOR NO KEY UPDATE OF m`, which leaves foreign-key checks on the member free) before its lots are read, so two spends cannot both see the
//! same points. The balance update is guarded in SQL as well (`points + delta >= 0`).

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};

use super::changes::{OUTBOX_SQL, POINTS_CHANGED, bump_member_sql};
use super::{Backend, Result, StorageError, Store, new_id, rows};
use crate::ledger::{
    Entry, EntryKind, Idempotency, Lot, LoyaltyRules, MAX_BALANCE, MAX_POINTS, Operation, Origin,
    Outcome, PointLimits, TierBasis, consume, expiry_at, grouped, refund_points,
};

const DAY_MS: i64 = 86_400_000;

/// The member read on SQLite (a macro so `concat!` can put `BEGIN IMMEDIATE` in front of it).
macro_rules! lock_member_sqlite {
    () => {
        "SELECT m.points, m.tier, p.rules, i.request_hash, i.response
         FROM members m JOIN programs p ON p.id = m.program_id
         LEFT JOIN idempotency_keys i ON i.api_key_id = $2 AND i.key = $3
         WHERE m.id = $1"
    };
}

/// Closes the connection instead of returning it to the pool unless taken out: a SQLite
/// connection left inside `BEGIN IMMEDIATE` must never serve another request.
struct Unfinished(Option<PoolConnection<Any>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

/// Who posts a change: the API key or `staff:<id>` recorded on the entry, and the limits on
/// what they may move.
#[derive(Debug, Clone, Copy, Default)]
pub struct Actor<'a> {
    pub id: Option<&'a str>,
    pub limits: PointLimits,
}

/// A member row with the program's rules, read under the write lock, and the stored result of
/// the idempotency key if it was used before.
struct Locked {
    points: i64,
    /// The tier's id.
    tier: Option<String>,
    rules: LoyaltyRules,
    /// `(request_hash, response)` of an earlier request with the same key.
    earlier: Option<(String, String)>,
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
        let by = Actor {
            id: api_key_id,
            limits: PointLimits::default(),
        };
        self.post_by(member_id, op, origin, by, idempotency, now)
            .await
    }

    /// `post` by an actor whose limits are checked in the same transaction: a retry of a
    /// recorded key is replayed first, then the limits, so a retry is never refused.
    pub async fn post_by(
        &self,
        member_id: &str,
        op: &Operation,
        origin: &Origin,
        by: Actor<'_>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Outcome, bool)> {
        let result = match self
            .post_once(member_id, op, origin, by, idempotency, now)
            .await
        {
            // A concurrent request with the same key committed first; now we find its result.
            Err(StorageError::IdempotencyRace) => {
                self.post_once(member_id, op, origin, by, idempotency, now)
                    .await
            }
            other => other,
        };
        if matches!(result, Ok((_, false))) {
            self.changed.notify_one();
        }
        result
    }

    /// Posts inside the caller's write transaction, without idempotency: for a change that
    /// must commit with another write (a welcome bonus with its member).
    pub(super) async fn post_in_tx(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        member_id: &str,
        op: &Operation,
        origin: &Origin,
        by: Actor<'_>,
        now: i64,
    ) -> Result<Outcome> {
        let args = (member_id, op, origin, by, None, now);
        Ok(self.post_in(tx, false, args).await?.0)
    }

    async fn post_once(
        &self,
        member_id: &str,
        op: &Operation,
        origin: &Origin,
        by: Actor<'_>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Outcome, bool)> {
        let args = (member_id, op, origin, by, idempotency, now);
        let _posting = self.posting();
        match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let (outcome, replayed) = self.post_in(&mut tx, false, args).await?;
                // A replay wrote nothing; dropping the transaction rolls it back.
                if !replayed {
                    tx.commit().await?;
                }
                Ok((outcome, replayed))
            }
            Backend::Sqlite => {
                // BEGIN IMMEDIATE travels with the first read and COMMIT with the write, so a
                // change costs two round trips to SQLite's worker thread instead of four.
                let _turn = self.write_turn().await;
                let mut guard = Unfinished(Some(self.pool.acquire().await?));
                let conn = guard.0.as_mut().expect("connection present");
                let result = self.post_in(conn, true, args).await;
                if !matches!(result, Ok((_, false))) {
                    // A replay or an error: end the transaction; if even that fails, the guard
                    // closes the connection rather than pool it mid-transaction.
                    if sqlx::query("ROLLBACK").execute(&mut **conn).await.is_err() {
                        return result;
                    }
                }
                guard.0.take();
                result
            }
        }
    }

    /// One posting on a connection. `script_tx`: open the transaction in the first read and
    /// commit it in the write (SQLite); otherwise the caller owns the transaction.
    async fn post_in(
        &self,
        conn: &mut AnyConnection,
        script_tx: bool,
        (member_id, op, origin, by, idempotency, now): (
            &str,
            &Operation,
            &Origin,
            Actor<'_>,
            Option<&Idempotency>,
            i64,
        ),
    ) -> Result<(Outcome, bool)> {
        let member = self
            .lock_member(conn, member_id, idempotency, script_tx)
            .await?;
        if let (Some(i), Some((hash, response))) = (idempotency, &member.earlier) {
            if *hash != i.request_hash {
                return Err(StorageError::IdempotencyMismatch);
            }
            let outcome = serde_json::from_str(response)
                .map_err(|e| StorageError::Corrupt(format!("idempotent response: {e}")))?;
            return Ok((outcome, true));
        }
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
                let multiplier = member.rules.multiplier_for(member.tier.as_deref());
                entry.points = member
                    .rules
                    .purchase_points(*amount_minor, multiplier)
                    .map_err(StorageError::Rejected)?;
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
                    .refund_due(conn, member_id, origin, *amount_minor)
                    .await?;
                let take = due.min(member.points);
                uncollected = due - take;
                entry.points = -take;
                entry.amount_minor = Some(*amount_minor);
            }
            Operation::Reverse { entry_id } => {
                entry.points = self.reversal_points(conn, member_id, entry_id).await?;
                entry.reverses_entry_id = Some(entry_id.clone());
            }
        }
        if entry.points.unsigned_abs() > MAX_POINTS as u64 {
            return Err(StorageError::Rejected(format!(
                "points must be between -{} and {}",
                grouped(MAX_POINTS),
                grouped(MAX_POINTS)
            )));
        }
        if entry.points < -member.points {
            return Err(StorageError::Insufficient {
                available: member.points,
            });
        }
        if member.points + entry.points > MAX_BALANCE {
            return Err(StorageError::Rejected(format!(
                "a balance may not exceed {} points",
                grouped(MAX_BALANCE)
            )));
        }
        if op.is_limited() {
            self.check_limits(conn, by, entry.points.abs(), now).await?;
        }
        let takes = if entry.points < 0 {
            lots_to_take(conn, member_id, -entry.points, member.points).await?
        } else {
            Vec::new()
        };
        let promoted = if entry.kind == EntryKind::Earn && entry.points > 0 {
            self.promotion(conn, member_id, &member, &entry, now)
                .await?
        } else {
            None
        };
        let tier = promoted.as_deref().or(member.tier.as_deref());
        let outcome = Outcome {
            balance: member.points + entry.points,
            tier: member.rules.tier_name(tier).map(String::from),
            entry,
            uncollected,
        };
        let change = Change {
            entry: &outcome.entry,
            api_key_id: by.id,
            new_lot: (outcome.entry.points > 0)
                .then(|| member.rules.expiry_days.map(|d| expiry_at(now, d))),
            takes,
            tier: promoted,
            balance: outcome.balance,
            idempotency: idempotency.map(|i| {
                (
                    i,
                    serde_json::to_string(&outcome).expect("outcome serialises"),
                )
            }),
        };
        self.write_change(conn, &change, script_tx).await?;
        Ok((outcome, false))
    }

    /// Refuses a purchase or redemption of `points` past the actor's limits. On PostgreSQL the
    /// actor is locked for the rest of the transaction first, so two postings cannot both count
    /// the day's total without the other; SQLite writers are serialised already.
    async fn check_limits(
        &self,
        conn: &mut AnyConnection,
        by: Actor<'_>,
        points: i64,
        now: i64,
    ) -> Result<()> {
        let (Some(actor), limits) = (by.id, by.limits) else {
            return Ok(());
        };
        if let Some(limit) = limits.per_operation
            && points > limit
        {
            return Err(StorageError::OverLimit {
                limit,
                points,
                moved_today: None,
            });
        }
        let Some(limit) = limits.per_day else {
            return Ok(());
        };
        if self.backend == Backend::Postgres {
            // execute, not fetch: the Any driver cannot decode the function's void result.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tessera-limit:' || $1))")
                .bind(actor)
                .execute(&mut *conn)
                .await?;
        }
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        let moved = rows::int(
            &sqlx::query(
                "SELECT CAST(COALESCE(SUM(ABS(points)), 0) AS BIGINT) AS n FROM ledger_entries
                 WHERE api_key_id = $1 AND created_at >= $2 AND kind IN ('earn', 'redeem')",
            )
            .bind(actor)
            .bind(today)
            .fetch_one(&mut *conn)
            .await?,
            "n",
        )?;
        if moved + points > limit {
            return Err(StorageError::OverLimit {
                limit,
                points,
                moved_today: Some(moved),
            });
        }
        Ok(())
    }

    /// Reads and locks the member with the program's rules and any earlier use of the
    /// idempotency key, in one round trip.
    async fn lock_member(
        &self,
        conn: &mut AnyConnection,
        member_id: &str,
        idempotency: Option<&Idempotency>,
        begin: bool,
    ) -> Result<Locked> {
        let sql = match self.backend {
            Backend::Sqlite if begin => concat!("BEGIN IMMEDIATE;\n", lock_member_sqlite!()),
            Backend::Sqlite => lock_member_sqlite!(),
            Backend::Postgres => {
                "SELECT m.points, m.tier, p.rules, i.request_hash, i.response
                 FROM members m JOIN programs p ON p.id = m.program_id
                 LEFT JOIN idempotency_keys i ON i.api_key_id = $2 AND i.key = $3
                 WHERE m.id = $1 FOR NO KEY UPDATE OF m"
            }
        };
        // fetch_all: with BEGIN in front this is a script, where fetch_optional would stop early.
        let rows = sqlx::query(sql)
            .bind(member_id)
            .bind(idempotency.map(|i| i.api_key_id.as_str()))
            .bind(idempotency.map(|i| i.key.as_str()))
            .fetch_all(&mut *conn)
            .await?;
        let row = rows.last().ok_or(StorageError::NotFound("member"))?;
        let earlier = match row.try_get::<Option<String>, _>("request_hash")? {
            Some(hash) => Some((hash, row.try_get("response")?)),
            None => None,
        };
        Ok(Locked {
            points: row.try_get("points")?,
            tier: row.try_get("tier")?,
            rules: rows::rules(row)?,
            earlier,
        })
    }

    /// Points a refund of `amount_minor` takes back from the purchase `origin.external_ref` names.
    async fn refund_due(
        &self,
        conn: &mut AnyConnection,
        member_id: &str,
        origin: &Origin,
        amount_minor: i64,
    ) -> Result<i64> {
        let reference = origin.external_ref.as_deref().ok_or_else(|| {
            StorageError::Rejected(
                "a refund needs the external_ref of the purchase it refunds".into(),
            )
        })?;
        // Reversed entries no longer count: a reversed purchase has nothing left to refund, and
        // a reversed refund gives its amount back to the allowance.
        let sums = "SELECT CAST(COALESCE(SUM(e.points), 0) AS BIGINT) AS points,
                           CAST(COALESCE(SUM(e.amount_minor), 0) AS BIGINT) AS amount, COUNT(*) AS n
                    FROM ledger_entries e
                    WHERE e.member_id = $1 AND e.external_ref = $2 AND e.kind = $3
                      AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)";
        let purchase = sqlx::query(sums)
            .bind(member_id)
            .bind(reference)
            .bind("earn")
            .fetch_one(&mut *conn)
            .await?;
        if rows::int(&purchase, "n")? == 0 {
            let any = sqlx::query(
                "SELECT 1 AS one FROM ledger_entries WHERE member_id = $1 AND external_ref = $2 AND kind = 'earn'",
            )
            .bind(member_id)
            .bind(reference)
            .fetch_optional(&mut *conn)
            .await?;
            return Err(match any {
                Some(_) => StorageError::Rejected(
                    "that purchase was reversed; there is nothing left to refund".into(),
                ),
                None => StorageError::NotFound("purchase with that external_ref"),
            });
        }
        let refunds = sqlx::query(sums)
            .bind(member_id)
            .bind(reference)
            .bind("refund")
            .fetch_one(&mut *conn)
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
        conn: &mut AnyConnection,
        member_id: &str,
        entry_id: &str,
    ) -> Result<i64> {
        let row = sqlx::query("SELECT * FROM ledger_entries WHERE id = $1 AND member_id = $2")
            .bind(entry_id)
            .bind(member_id)
            .fetch_optional(&mut *conn)
            .await?;
        let original = rows::entry(&row.ok_or(StorageError::NotFound("entry"))?)?;
        if original.kind == EntryKind::Reversal {
            return Err(StorageError::Rejected(
                "a reversal cannot itself be reversed".into(),
            ));
        }
        let reversed = sqlx::query("SELECT 1 FROM ledger_entries WHERE reverses_entry_id = $1")
            .bind(entry_id)
            .fetch_optional(&mut *conn)
            .await?;
        if reversed.is_some() {
            return Err(StorageError::Rejected(format!(
                "entry {entry_id} is already reversed"
            )));
        }
        if original.kind == EntryKind::Earn
            && let Some(reference) = &original.origin.external_ref
        {
            let refunded = sqlx::query(
                "SELECT 1 FROM ledger_entries e WHERE e.member_id = $1 AND e.external_ref = $2 AND e.kind = 'refund'
                 AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)",
            )
                .bind(member_id)
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?;
            if refunded.is_some() {
                return Err(StorageError::Rejected(
                    "this purchase has refunds; refund the rest instead of reversing it".into(),
                ));
            }
        }
        Ok(-original.points)
    }

    /// The tier an earn of `points` moves the member up to, if any. Tiers never move down on
    /// their own, so a member already in the top tier costs no query.
    async fn promotion(
        &self,
        conn: &mut AnyConnection,
        member_id: &str,
        member: &Locked,
        entry: &Entry,
        now: i64,
    ) -> Result<Option<String>> {
        let levels = &member.rules.tiers.levels;
        let rank = |id: Option<&str>| id.and_then(|id| levels.iter().position(|l| l.id == id));
        let current = rank(member.tier.as_deref());
        if levels.is_empty() || current == Some(levels.len() - 1) {
            return Ok(None);
        }
        // The window's total as of before this earn, plus what this earn adds.
        let before = qualifying_total(&mut *conn, member_id, &member.rules, now).await?;
        let added = match member.rules.tiers.basis {
            TierBasis::Points => entry.points,
            TierBasis::Spend => entry.amount_minor.unwrap_or(0),
        };
        let computed = member.rules.tier_for(before + added).map(|t| t.id.clone());
        Ok(if rank(computed.as_deref()) > current {
            computed
        } else {
            None
        })
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
            self.changed.notify_one();
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
    // Refunds count against the total, and a reversal undoes what its entry counted.
    let sql = match rules.tiers.basis {
        TierBasis::Points => {
            "SELECT CAST(COALESCE(SUM(e.points), 0) AS BIGINT) AS total
             FROM ledger_entries e LEFT JOIN ledger_entries o ON o.id = e.reverses_entry_id
             WHERE e.member_id = $1 AND e.created_at >= $2
               AND (e.kind IN ('earn', 'refund') OR o.kind IN ('earn', 'refund'))"
        }
        TierBasis::Spend => {
            "SELECT CAST(COALESCE(SUM(CASE WHEN e.kind = 'earn' THEN e.amount_minor
                                           WHEN e.kind = 'refund' THEN -e.amount_minor
                                           WHEN o.kind = 'earn' THEN -o.amount_minor
                                           ELSE o.amount_minor END), 0) AS BIGINT) AS total
             FROM ledger_entries e LEFT JOIN ledger_entries o ON o.id = e.reverses_entry_id
             WHERE e.member_id = $1 AND e.created_at >= $2
               AND (e.kind IN ('earn', 'refund') OR o.kind IN ('earn', 'refund'))"
        }
    };
    let row: AnyRow = sqlx::query(sql)
        .bind(member_id)
        .bind(since)
        .fetch_one(executor)
        .await?;
    rows::int(&row, "total")
}

/// Everything one change writes, computed before anything is written.
struct Change<'a> {
    entry: &'a Entry,
    api_key_id: Option<&'a str>,
    /// A credit opens a lot, with its expiry.
    new_lot: Option<Option<i64>>,
    /// A debit takes from these lots, oldest first.
    takes: Vec<(String, i64)>,
    /// A promotion to this tier.
    tier: Option<String>,
    /// The balance after the change.
    balance: i64,
    idempotency: Option<(&'a Idempotency, String)>,
}

/// One SQL text with numbered parameters, built from statements that each take the next ones.
#[derive(Default)]
struct Batch {
    statements: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Batch {
    /// Adds a statement whose `?`s take `args` in order, numbered after the ones before.
    fn push(&mut self, sql: &str, args: Vec<Arg>) {
        debug_assert_eq!(sql.matches('?').count(), args.len(), "{sql}");
        let mut parts = sql.split('?');
        let mut out = parts.next().unwrap_or_default().to_string();
        for (i, part) in parts.enumerate() {
            out.push_str(&format!("${}{part}", self.args.len() + i + 1));
        }
        self.args.extend(args);
        self.statements.push(out);
    }
}

fn text(v: impl Into<Option<String>>) -> Arg {
    Arg::Text(v.into())
}

impl Store {
    /// Writes a change in one round trip: the entry, the lots, the pass's `updated_at`, the
    /// outbox row, the idempotency record and last the member's balance, which must land on the
    /// balance the change was computed for. SQLite runs the statements as one script (with
    /// `COMMIT` appended when `commit`); PostgreSQL as one statement of data-modifying CTEs
    /// (foreign keys are checked at its end, so the lot may name the entry written beside it).
    /// A balance below zero violates `CHECK (points >= 0)`, which aborts before any commit.
    async fn write_change(
        &self,
        conn: &mut AnyConnection,
        c: &Change<'_>,
        commit: bool,
    ) -> Result<()> {
        let e = c.entry;
        let now = Arg::Int(Some(e.created_at));
        let mut b = Batch::default();
        b.push(
            "INSERT INTO ledger_entries (id, member_id, kind, points, amount_minor, external_ref, channel, store_id,
                                         partner_id, reason, reverses_entry_id, api_key_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                text(e.id.clone()),
                text(e.member_id.clone()),
                text(e.kind.as_str().to_string()),
                Arg::Int(Some(e.points)),
                Arg::Int(e.amount_minor),
                text(e.origin.external_ref.clone()),
                text(e.origin.channel.clone()),
                text(e.origin.store_id.clone()),
                text(e.origin.partner_id.clone()),
                text(e.reason.clone()),
                text(e.reverses_entry_id.clone()),
                text(c.api_key_id.map(String::from)),
                Arg::Int(Some(e.created_at)),
            ],
        );
        if let Some(expires_at) = c.new_lot {
            b.push(
                "INSERT INTO point_lots (id, member_id, entry_id, points, remaining, earned_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                vec![
                    text(new_id()),
                    text(e.member_id.clone()),
                    text(e.id.clone()),
                    Arg::Int(Some(e.points)),
                    Arg::Int(Some(e.points)),
                    Arg::Int(Some(e.created_at)),
                    Arg::Int(expires_at),
                ],
            );
        }
        for (lot, take) in &c.takes {
            b.push(
                "UPDATE point_lots SET remaining = remaining - ? WHERE id = ?",
                vec![Arg::Int(Some(*take)), text(lot.clone())],
            );
        }
        b.push(
            &bump_member_sql(),
            vec![now, Arg::Int(Some(e.created_at)), text(e.member_id.clone())],
        );
        let payload = serde_json::json!({"entry_id": e.id, "kind": e.kind.as_str(), "points": e.points, "balance": c.balance});
        b.push(
            OUTBOX_SQL,
            vec![
                text(new_id()),
                text(POINTS_CHANGED.to_string()),
                text(e.member_id.clone()),
                text(payload.to_string()),
                Arg::Int(Some(e.created_at)),
            ],
        );
        if let Some((i, response)) = &c.idempotency {
            b.push(
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)",
                vec![
                    text(i.api_key_id.clone()),
                    text(i.key.clone()),
                    text(i.request_hash.clone()),
                    text(response.clone()),
                    Arg::Int(Some(e.created_at)),
                ],
            );
        }
        if self.google_sync() {
            b.push(
                super::google::QUEUE_SQL,
                vec![
                    text(e.member_id.clone()),
                    Arg::Int(Some(e.created_at)),
                    Arg::Int(Some(e.created_at)),
                ],
            );
        }
        b.push(
            // No guard in WHERE: the CHECK (points >= 0) constraint raises an error, which stops a
            // SQLite script before its COMMIT; a WHERE guard would silently update nothing.
            "UPDATE members SET points = points + ?, tier = COALESCE(?, tier) WHERE id = ? RETURNING points",
            vec![Arg::Int(Some(e.points)), text(c.tier.clone()), text(e.member_id.clone())],
        );
        let sql = match self.backend {
            Backend::Sqlite if commit => b.statements.join(";\n") + ";\nCOMMIT",
            Backend::Sqlite => b.statements.join(";\n"),
            Backend::Postgres => {
                let (last, ctes) = b.statements.split_last().expect("a batch has statements");
                let ctes: Vec<String> = ctes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("w{i} AS ({s})"))
                    .collect();
                format!("WITH {}\n{last}", ctes.join(",\n"))
            }
        };
        // Built only from the fixed statements above; every value is a bound parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for arg in b.args {
            query = match arg {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
            };
        }
        // fetch_all, not fetch_optional: on a SQLite script sqlx stops fetch_optional after the
        // first statement's empty result, though every statement runs.
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    if c.idempotency.is_some() && d.message().contains("idempotency") {
                        StorageError::IdempotencyRace
                    } else if e.reverses_entry_id.is_some() {
                        StorageError::Rejected("that entry is already reversed".into())
                    } else {
                        StorageError::Database(err)
                    }
                }
                sqlx::Error::Database(d) if d.is_check_violation() => StorageError::Insufficient {
                    available: c.balance - e.points,
                },
                _ => StorageError::Database(err),
            })?;
        let balance = match rows.last() {
            Some(r) => rows::int(r, "points")?,
            None => {
                return Err(StorageError::Insufficient {
                    available: c.balance - e.points,
                });
            }
        };
        if balance != c.balance {
            return Err(StorageError::Corrupt(format!(
                "balance moved under the write lock: expected {}, found {balance}",
                c.balance
            )));
        }
        Ok(())
    }
}

/// Which lots a debit of `points` takes from, oldest first.
async fn lots_to_take(
    conn: &mut AnyConnection,
    member_id: &str,
    points: i64,
    available: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT id, remaining FROM point_lots WHERE member_id = $1 AND remaining > 0 ORDER BY earned_at, id")
        .bind(member_id)
        .fetch_all(&mut *conn)
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
    consume(&lots, points).ok_or(StorageError::Insufficient { available })
}
