//! What a posting checks in its transaction before it writes: limits, refund allowances,
//! reversals and tier promotions.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection};

use super::{Actor, DAY_MS, Locked};
use crate::ledger::{Entry, EntryKind, LoyaltyRules, Origin, TierBasis, refund_points};
use crate::storage::{Backend, Result, StorageError, Store, rows};

impl Store {
    /// Refuses a purchase or redemption of `points` past the actor's limits. On PostgreSQL the
    /// actor is locked for the rest of the transaction first, so two postings cannot both count
    /// the day's total without the other; SQLite writers are serialised already.
    pub(super) async fn check_limits(
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

    /// Points a refund of `amount_minor` takes back from the purchase `origin.external_ref` names.
    pub(super) async fn refund_due(
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
    pub(super) async fn reversal_points(
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
    pub(super) async fn promotion(
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
}

pub(super) async fn qualifying_total<'e, E>(
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
