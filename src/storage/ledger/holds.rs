//! Holds: points reserved for a checkout. Each step is one transaction under the member's write
//! lock (the same lock as postings), so holds, captures, voids, expiries and spends on one member
//! are serialised: the available balance (`points - held`) never goes below zero, and a hold
//! resolves once. `members.held` moves with every open and release, in the same transaction; a
//! capture releases the whole hold and posts a redemption of the captured points through the
//! posting path (oldest lots first), so balance = entries = lots holds as before. Every step
//! changes what the card shows (`{{available}}`) and goes through `storage::changes`.

use sqlx::{Any, Row, Transaction};

use super::Actor;
use crate::ledger::{
    Hold, HoldState, Idempotency, MAX_POINTS, Operation, Origin, Outcome, grouped,
};
use crate::storage::changes::POINTS_CHANGED;
use crate::storage::{Result, StorageError, Store, new_id, rows};

/// A new hold as asked.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub points: i64,
    pub expires_at: i64,
    pub external_ref: Option<&'a str>,
}

/// What a capture did: the hold as resolved and the redemption it posted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Captured {
    pub hold: Hold,
    pub outcome: Outcome,
}

const HOLD_COLUMNS: &str = "id, member_id, points, state, captured, entry_id, external_ref, created_at, expires_at, resolved_at";

fn hold_from(r: &sqlx::any::AnyRow) -> Result<Hold> {
    let state: String = r.try_get("state")?;
    Ok(Hold {
        id: r.try_get("id")?,
        member_id: r.try_get("member_id")?,
        points: rows::int(r, "points")?,
        state: HoldState::parse(&state)
            .ok_or_else(|| StorageError::Corrupt(format!("a hold in state {state:?}")))?,
        captured: r.try_get("captured")?,
        entry_id: r.try_get("entry_id")?,
        external_ref: r.try_get("external_ref")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        resolved_at: r.try_get("resolved_at")?,
    })
}

impl Store {
    /// Reserves `new.points` of the member's available points until `new.expires_at`. With
    /// `idempotency`, a retry returns the first hold (`true`) and reserves nothing more.
    pub async fn create_hold(
        &self,
        member_id: &str,
        new: &NewHold<'_>,
        by: Actor<'_>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Hold, bool)> {
        match self
            .create_hold_once(member_id, new, by, idempotency, now)
            .await
        {
            // The same key's first request committed while this one waited: replay it.
            Err(StorageError::IdempotencyRace | StorageError::Insufficient { .. })
                if idempotency.is_some() =>
            {
                let i = idempotency.expect("checked");
                match self.recorded_response(i).await? {
                    Some(response) => Ok((parse_response(&response)?, true)),
                    None => {
                        self.create_hold_once(member_id, new, by, idempotency, now)
                            .await
                    }
                }
            }
            other => other,
        }
    }

    async fn create_hold_once(
        &self,
        member_id: &str,
        new: &NewHold<'_>,
        by: Actor<'_>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Hold, bool)> {
        if !(1..=MAX_POINTS).contains(&new.points) {
            return Err(StorageError::Rejected(format!(
                "a hold reserves between 1 and {} points",
                grouped(MAX_POINTS)
            )));
        }
        let (_turn, mut tx) = self.write_tx().await?;
        let member = self
            .lock_member(&mut tx, member_id, idempotency, false)
            .await?;
        if let (Some(i), Some((hash, response))) = (idempotency, &member.earlier) {
            if *hash != i.request_hash {
                return Err(StorageError::IdempotencyMismatch);
            }
            return Ok((parse_response(response)?, true));
        }
        if new.points > member.available() {
            return Err(StorageError::Insufficient {
                available: member.available(),
            });
        }
        let hold = Hold {
            id: new_id(),
            member_id: member_id.to_string(),
            points: new.points,
            state: HoldState::Held,
            captured: None,
            entry_id: None,
            external_ref: new.external_ref.map(String::from),
            created_at: now,
            expires_at: new.expires_at,
            resolved_at: None,
        };
        sqlx::query(
            "INSERT INTO holds (id, member_id, points, state, external_ref, api_key_id, created_at, expires_at)
             VALUES ($1, $2, $3, 'held', $4, $5, $6, $7)",
        )
        .bind(&hold.id)
        .bind(member_id)
        .bind(hold.points)
        .bind(&hold.external_ref)
        .bind(by.id)
        .bind(now)
        .bind(hold.expires_at)
        .execute(&mut *tx)
        .await?;
        self.move_held(&mut tx, member_id, hold.points).await?;
        if let Some(i) = idempotency {
            let response = serde_json::to_string(&hold).expect("a hold serialises");
            record_key(&mut tx, i, &response, now).await?;
        }
        self.hold_changed(&mut tx, &hold, now).await?;
        tx.commit().await?;
        self.after_hold_change(member_id);
        Ok((hold, false))
    }

    /// Captures up to the held points (all of them when `points` is `None`): one transaction
    /// releases the hold and posts a redemption of the captured points, within `by`'s limits.
    /// A hold already captured, voided or expired is a `Conflict`; with `idempotency`, a retry of
    /// the capture returns its first result (`true`).
    pub async fn capture_hold(
        &self,
        hold_id: &str,
        points: Option<i64>,
        by: Actor<'_>,
        idempotency: Option<&Idempotency>,
        now: i64,
    ) -> Result<(Captured, bool)> {
        let member_id = self.hold_member(hold_id).await?;
        let (_turn, mut tx) = self.write_tx().await?;
        let member = self
            .lock_member(&mut tx, &member_id, idempotency, false)
            .await?;
        if let (Some(i), Some((hash, response))) = (idempotency, &member.earlier) {
            if *hash != i.request_hash {
                return Err(StorageError::IdempotencyMismatch);
            }
            return Ok((parse_response(response)?, true));
        }
        let hold = self.hold_in(&mut tx, hold_id).await?;
        if hold.state != HoldState::Held {
            // A retry that queued behind its own first capture finds the key recorded now.
            if let Some(i) = idempotency {
                drop(tx);
                if let Some(response) = self.recorded_response(i).await? {
                    return Ok((parse_response(&response)?, true));
                }
            }
            return Err(StorageError::Conflict(hold.resolved_error()));
        }
        let take = points.unwrap_or(hold.points);
        if !(1..=hold.points).contains(&take) {
            return Err(StorageError::Rejected(format!(
                "a capture takes between 1 and the {} points held",
                grouped(hold.points)
            )));
        }
        self.move_held(&mut tx, &member_id, -hold.points).await?;
        let origin = Origin {
            external_ref: hold.external_ref.clone(),
            channel: Some("hold".into()),
            ..Origin::default()
        };
        let outcome = self
            .post_in(
                &mut tx,
                false,
                (
                    &member_id,
                    &Operation::Redeem { points: take },
                    &origin,
                    by,
                    None,
                    now,
                ),
            )
            .await?
            .0;
        let done = sqlx::query(
            "UPDATE holds SET state = 'captured', captured = $2, entry_id = $3, resolved_at = $4
             WHERE id = $1 AND state = 'held'",
        )
        .bind(hold_id)
        .bind(take)
        .bind(&outcome.entry.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StorageError::Corrupt(
                "a hold changed under its member's lock".into(),
            ));
        }
        let captured = Captured {
            hold: Hold {
                state: HoldState::Captured,
                captured: Some(take),
                entry_id: Some(outcome.entry.id.clone()),
                resolved_at: Some(now),
                ..hold
            },
            outcome,
        };
        if let Some(i) = idempotency {
            let response = serde_json::to_string(&captured).expect("a capture serialises");
            record_key(&mut tx, i, &response, now).await?;
        }
        tx.commit().await?;
        self.metrics.posting("redeem");
        self.after_hold_change(&member_id);
        Ok((captured, false))
    }

    /// Voids an open hold, releasing its points. Voiding a voided hold returns it unchanged
    /// (a retried void is harmless); a captured or expired hold is a `Conflict`.
    pub async fn void_hold(&self, hold_id: &str, now: i64) -> Result<Hold> {
        match self
            .release_hold(hold_id, HoldState::Voided, None, now)
            .await?
        {
            Some(hold) => Ok(hold),
            None => Err(StorageError::NotFound("hold")),
        }
    }

    /// Releases holds open past their expiry at `now`, at most `max`; returns how many.
    pub async fn expire_holds(&self, now: i64, max: i64) -> Result<usize> {
        let due = sqlx::query(
            "SELECT id FROM holds WHERE state = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(max)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = 0;
        for row in due {
            let id: String = row.try_get("id")?;
            match self
                .release_hold(&id, HoldState::Expired, Some(now), now)
                .await
            {
                Ok(Some(_)) => expired += 1,
                // Captured or voided since it was read.
                Ok(None) | Err(StorageError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Moves an open hold to `state` (voided, or expired when `due_by` is its deadline) and
    /// releases its points. `None` when expiring a hold no longer due or open.
    async fn release_hold(
        &self,
        hold_id: &str,
        state: HoldState,
        due_by: Option<i64>,
        now: i64,
    ) -> Result<Option<Hold>> {
        let member_id = self.hold_member(hold_id).await?;
        let (_turn, mut tx) = self.write_tx().await?;
        self.lock_member(&mut tx, &member_id, None, false).await?;
        let hold = self.hold_in(&mut tx, hold_id).await?;
        if hold.state != HoldState::Held {
            return match (due_by, hold.state == state) {
                (Some(_), _) => Ok(None),
                (None, true) => Ok(Some(hold)),
                (None, false) => Err(StorageError::Conflict(hold.resolved_error())),
            };
        }
        if due_by.is_some_and(|t| hold.expires_at > t) {
            return Ok(None);
        }
        sqlx::query("UPDATE holds SET state = $2, resolved_at = $3 WHERE id = $1")
            .bind(hold_id)
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.move_held(&mut tx, &member_id, -hold.points).await?;
        let hold = Hold {
            state,
            resolved_at: Some(now),
            ..hold
        };
        self.hold_changed(&mut tx, &hold, now).await?;
        tx.commit().await?;
        self.after_hold_change(&member_id);
        Ok(Some(hold))
    }

    pub async fn get_hold(&self, hold_id: &str) -> Result<Hold> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1"
        )))
        .bind(hold_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound("hold"))?;
        hold_from(&row)
    }

    /// The points a member's open holds reserve (`members.held`).
    pub async fn held_points(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT held FROM members WHERE id = $1")
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        rows::int(&row, "held")
    }

    /// The points of a member's open holds, summed from the holds themselves (what
    /// `members.held` must equal).
    pub async fn open_holds_sum(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS total FROM holds WHERE member_id = $1 AND state = 'held'",
        )
        .bind(member_id)
        .fetch_one(&self.pool)
        .await?;
        rows::int(&row, "total")
    }

    async fn hold_member(&self, hold_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT member_id FROM holds WHERE id = $1")
            .bind(hold_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("hold"))?;
        Ok(row.try_get("member_id")?)
    }

    /// The hold as it is under its member's lock, which every writer of holds takes first.
    async fn hold_in(&self, tx: &mut Transaction<'static, Any>, hold_id: &str) -> Result<Hold> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1"
        )))
        .bind(hold_id)
        .fetch_one(&mut **tx)
        .await?;
        hold_from(&row)
    }

    /// `held += by`; the database refuses a held total below zero or above the balance.
    async fn move_held(
        &self,
        tx: &mut Transaction<'static, Any>,
        member_id: &str,
        by: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE members SET held = held + $2 WHERE id = $1")
            .bind(member_id)
            .bind(by)
            .execute(&mut **tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d)
                    if d.is_check_violation() || d.message().contains("held points") =>
                {
                    StorageError::Corrupt(format!("held points out of range: {d}"))
                }
                _ => StorageError::Database(e),
            })?;
        Ok(())
    }

    /// The card shows the available balance: a new pass version, an outbox row, a Google sync.
    async fn hold_changed(
        &self,
        tx: &mut Transaction<'static, Any>,
        hold: &Hold,
        now: i64,
    ) -> Result<()> {
        let payload = serde_json::json!({"hold_id": hold.id, "state": hold.state.as_str(), "points": hold.points});
        self.cards_changed(
            tx,
            std::slice::from_ref(&hold.member_id),
            POINTS_CHANGED,
            &payload.to_string(),
            now,
        )
        .await
    }

    fn after_hold_change(&self, member_id: &str) {
        self.forget(crate::storage::cache::Stale::Members(vec![
            member_id.to_owned(),
        ]));
        self.committed();
    }

    /// The response recorded for an idempotency key, read afresh.
    async fn recorded_response(&self, i: &Idempotency) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE api_key_id = $1 AND key = $2",
        )
        .bind(&i.api_key_id)
        .bind(&i.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get("request_hash")?;
        if hash != i.request_hash {
            return Err(StorageError::IdempotencyMismatch);
        }
        Ok(Some(row.try_get("response")?))
    }
}

async fn record_key(
    tx: &mut Transaction<'static, Any>,
    i: &Idempotency,
    response: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&i.api_key_id)
    .bind(&i.key)
    .bind(&i.request_hash)
    .bind(response)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StorageError::IdempotencyRace,
        _ => StorageError::Database(e),
    })?;
    Ok(())
}

fn parse_response<T: serde::de::DeserializeOwned>(response: &str) -> Result<T> {
    serde_json::from_str(response).map_err(|_| {
        StorageError::Rejected("this Idempotency-Key was used for another kind of request".into())
    })
}
