//! Ledger writes. Each change is one transaction: the entry, the lots it credits or consumes,
//! the member's balance and tier, the pass's `updated_at`, an outbox row and the idempotency
//! record commit together or not at all.
//!
//! Concurrency: SQLite writers are serialised by `BEGIN IMMEDIATE`; on PostgreSQL the member row
//! is locked (`FOR NO KEY UPDATE OF m`, which leaves foreign-key checks on the member free)
//! before its lots are read, so two spends cannot both see the same points, and the program row
//! `FOR KEY SHARE OF p`, so its rules cannot change under the posting (a rules change locks it
//! `FOR UPDATE`). The balance cannot go below zero: `CHECK (points >= 0)` aborts the write.

mod checks;
mod expiry;
mod holds;
pub use holds::{Captured, NewHold};
mod reads;
mod write;

use checks::qualifying_total;
use write::{Change, lots_to_take};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};

use super::{Backend, Result, StorageError, Store, new_id, rows};
use crate::ledger::{
    Entry, EntryKind, Idempotency, LoyaltyRules, MAX_BALANCE, MAX_POINTS, Operation, Origin,
    Outcome, PointLimits, expiry_at, grouped,
};

const DAY_MS: i64 = 86_400_000;

/// The member read on SQLite (a macro so `concat!` can put `BEGIN IMMEDIATE` in front of it).
macro_rules! lock_member_sqlite {
    () => {
        "SELECT m.points, m.held, m.tier, p.rules, i.request_hash, i.response
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
    /// Points reserved by open holds: spends may take only `points - held`.
    held: i64,
    /// The tier's id.
    tier: Option<String>,
    rules: LoyaltyRules,
    /// `(request_hash, response)` of an earlier request with the same key.
    earlier: Option<(String, String)>,
}

impl Locked {
    /// The points a spend may take: the balance less what open holds reserve.
    fn available(&self) -> i64 {
        self.points - self.held
    }
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
    /// Points reserved by open holds.
    pub held: i64,
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
            // On PostgreSQL the locking read that waited for the same key's first request sees
            // the member as that request left it, but the key's record as it was before (the
            // statement's snapshot): a refusal may be for a request that has already succeeded.
            Err(
                refused @ (StorageError::Insufficient { .. }
                | StorageError::OverLimit { .. }
                | StorageError::Rejected(_)),
            ) => match idempotency {
                Some(i) => match self.recorded(i).await? {
                    Some(replay) => Ok(replay),
                    None => Err(refused),
                },
                None => Err(refused),
            },
            other => other,
        };
        if matches!(result, Ok((_, false))) {
            self.metrics.posting(op.kind().as_str());
            self.forget(crate::storage::cache::Stale::Members(vec![
                member_id.to_owned(),
            ]));
            self.committed();
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
            return replay(i, hash, response);
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
                // Held points are promised to a checkout: a refund takes back only the rest.
                let take = due.min(member.available());
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
        if entry.points < -member.available() {
            return Err(StorageError::Insufficient {
                available: member.available(),
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

    /// Reads and locks the member with the program's rules and any earlier use of the
    /// idempotency key, in one round trip.
    /// The stored outcome of a request with this key, read afresh: `(outcome, true)`, or
    /// `IdempotencyMismatch` when the key was used for another request.
    async fn recorded(&self, i: &Idempotency) -> Result<Option<(Outcome, bool)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
        )
        .bind(&i.api_key_id)
        .bind(&i.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get("request_hash")?;
        let response: String = row.try_get("response")?;
        replay(i, &hash, &response).map(Some)
    }

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
                "SELECT m.points, m.held, m.tier, p.rules, i.request_hash, i.response
                 FROM members m JOIN programs p ON p.id = m.program_id
                 LEFT JOIN idempotency_keys i ON i.api_key_id = $2 AND i.key = $3
                 WHERE m.id = $1 FOR NO KEY UPDATE OF m FOR KEY SHARE OF p"
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
            held: row.try_get("held")?,
            tier: row.try_get("tier")?,
            rules: rows::rules(row)?,
            earlier,
        })
    }
}

/// The stored outcome of an earlier request with the same key: `(outcome, true)`, or
/// `IdempotencyMismatch` when that request was another.
fn replay(i: &Idempotency, hash: &str, response: &str) -> Result<(Outcome, bool)> {
    if hash != i.request_hash {
        return Err(StorageError::IdempotencyMismatch);
    }
    let outcome = serde_json::from_str(response)
        .map_err(|e| StorageError::Corrupt(format!("idempotent response: {e}")))?;
    Ok((outcome, true))
}
